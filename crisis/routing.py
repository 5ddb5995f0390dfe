"""Optional travel-time re-ranking: the OSRM table API over httpx, with a short
timeout and a fall back to great-circle order when it is slow or down."""

from __future__ import annotations

import asyncio
import logging

import httpx

log = logging.getLogger("crisis.routing")


class OsrmRouting:
    def __init__(self, client: httpx.AsyncClient, base_url: str, *, timeout: float = 1.0, top: int = 5):
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.top = top

    async def durations(self, origin: tuple[float, float], points: list[tuple[float, float]]) -> list[float | None]:
        """Seconds from each point to the origin (teams travel to the caller)."""
        coords = ";".join(f"{lon:.6f},{lat:.6f}" for lat, lon in [origin, *points])
        url = f"{self.base_url}/table/v1/driving/{coords}"
        sources = ";".join(str(i) for i in range(1, len(points) + 1))
        # httpx's timeout bounds each read, not the whole answer: a server that trickles bytes would hold
        # dispatch (and, on SQLite, the write lock of the help request) for as long as it liked.
        async with asyncio.timeout(self.timeout):
            response = await self.client.get(url, params={"sources": sources, "destinations": "0"},
                                             timeout=self.timeout)
        response.raise_for_status()
        data = response.json()
        if data.get("code") != "Ok":
            raise ValueError(f"OSRM answered {data.get('code')}")
        return [row[0] for row in data["durations"]]

    async def rerank(self, lat: float, lon: float, candidates: list, *, now, stale_after) -> list:
        """Re-order the nearest few candidates by travel time; the rest keep their order."""
        head, tail = candidates[: self.top], candidates[self.top:]
        try:
            seconds = await self.durations((lat, lon), [c.team.position(now, stale_after)[:2] for c in head])
        except (httpx.HTTPError, TimeoutError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.warning("routing unavailable (%s); keeping great-circle order", type(exc).__name__)
            return candidates
        for candidate, eta in zip(head, seconds):
            candidate.eta_seconds = int(eta) if eta is not None else None
        head.sort(key=lambda c: (c.eta_seconds is None, c.eta_seconds if c.eta_seconds is not None else 0,
                                 c.distance_km))
        return head + tail
