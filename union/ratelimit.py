"""Fixed-window rate limits: in Redis when configured (shared by every web
process), in process memory when embedded (there is only one process)."""

from __future__ import annotations

import time
from typing import Protocol


class RateLimiter(Protocol):
    async def hit(self, key: str, *, limit: int, window: int) -> bool:
        """Count one attempt; True while the key is within its limit."""


class LocalRateLimiter:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}

    async def hit(self, key: str, *, limit: int, window: int) -> bool:
        slot = int(time.time() // window)
        if len(self._counts) > 100_000:  # drop old windows; keeps memory bounded under a flood
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= slot}
        count = self._counts.get((key, slot), 0) + 1
        self._counts[(key, slot)] = count
        return count <= limit


class RedisRateLimiter:
    def __init__(self, redis) -> None:
        self._redis = redis

    async def hit(self, key: str, *, limit: int, window: int) -> bool:
        slot = int(time.time() // window)
        name = f"union:rl:{key}:{slot}"
        pipe = self._redis.pipeline()
        pipe.incr(name)
        pipe.expire(name, window + 5)
        count, _ = await pipe.execute()
        return int(count) <= limit
