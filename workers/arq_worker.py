"""arq on Redis: the worker settings (`union worker`) and the queue the web
processes nudge. Jobs carry ids only and are serialised as JSON, never pickle:
whoever can write to Redis must not be able to run code here."""

from __future__ import annotations

import json

from arq import cron
from arq.connections import RedisSettings, create_pool

from union import jobs


def _dumps(value) -> bytes:
    return json.dumps(value).encode()


def _loads(data: bytes):
    return json.loads(data)


SERIALIZERS = {"job_serializer": _dumps, "job_deserializer": _loads}


class ArqJobs:
    """The web side: nudges go to Redis for any worker to pick up."""

    def __init__(self, pool):
        self.pool = pool

    @classmethod
    async def connect(cls, redis_url: str) -> ArqJobs:
        return cls(await create_pool(RedisSettings.from_dsn(redis_url), **SERIALIZERS))

    async def nudge(self, work_ids: list[int]) -> None:
        for work_id in work_ids:
            # A fixed job id per row: a second nudge while one is queued is a no-op.
            await self.pool.enqueue_job("run_due_work", work_id, _job_id=f"due:{work_id}")

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self.pool.aclose()


async def run_due_work(ctx, work_id: int) -> str:
    return await jobs.run_due_work(ctx["services"], int(work_id))


async def sweep_due_work(ctx) -> int:
    return await jobs.sweep(ctx["services"])


async def on_startup(ctx) -> None:
    from union.services import build_services

    ctx["services"] = await build_services(ctx["settings"], jobs_backend="none")


async def on_shutdown(ctx) -> None:
    await ctx["services"].close()


def worker_settings(settings) -> dict:
    """Keyword arguments for arq.Worker, built from our settings."""
    import workers.registry  # noqa: F401 - registers every domain's due-work handlers

    every = max(1, int(settings.sweep_interval_seconds))
    return dict(
        functions=[run_due_work],
        cron_jobs=[cron(sweep_due_work, second=set(range(0, 60, every)), unique=True, run_at_startup=True)],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        ctx={"settings": settings},
        keep_result=60,
        max_tries=5,
        **SERIALIZERS,
    )
