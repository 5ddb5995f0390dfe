"""arq on Redis: the worker settings (`union worker`) and the queue the web
processes nudge. Jobs carry ids only and are serialised as JSON, never pickle:
whoever can write to Redis must not be able to run code here.

A worker sweeps once at start-up (so `union worker --burst` finishes whatever is
overdue and exits) and then every `sweep_interval_seconds` from an arq cron job.

Timers (union.jobs.TIMER_KINDS: acknowledgement deadlines) do not wait in arq's
queue behind the pushes and intake work enqueued before them: a loop in the
worker claims the due timer rows itself every TIMER_POLL seconds (the deferred
arq job of the same row then finds it done). Several workers may run the loop:
a row is claimed by one of them only.
"""

from __future__ import annotations

import asyncio
import json
import logging

from arq import cron
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import default_queue_name

from union import jobs

log = logging.getLogger("union.workers")

TIMER_POLL = 0.1  # seconds between two looks for due timer rows (one indexed query)


def _dumps(value) -> bytes:
    return json.dumps(value).encode()


def _loads(data: bytes):
    return json.loads(data)


SERIALIZERS = {"job_serializer": _dumps, "job_deserializer": _loads}


def due_job_id(queue_name: str, work_id: int) -> str:
    """One arq job id per row: a second nudge while one is queued is a no-op.

    arq job ids are global in Redis, not per queue, so the queue is part of it:
    two deployments (or two test runs) sharing a Redis must not swallow each
    other's nudges for rows that happen to have the same id.
    """
    return f"{queue_name}:due:{work_id}"


class ArqJobs:
    """The nudging side (web processes, and the worker for work its jobs schedule):
    nudges go to Redis for any worker to pick up."""

    def __init__(self, pool: ArqRedis, *, queue_name: str = default_queue_name, owns_pool: bool = True):
        self.pool = pool
        self.queue_name = queue_name
        self.owns_pool = owns_pool

    @classmethod
    async def connect(cls, redis_url: str, *, queue_name: str = default_queue_name) -> ArqJobs:
        pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=queue_name, **SERIALIZERS)
        return cls(pool, queue_name=queue_name)

    async def nudge(self, work_ids: list[int], *, at=None) -> None:
        for work_id in work_ids:
            # A deferred job for rows due later; its id differs from the immediate one so
            # that a later "now" nudge of the same row is not swallowed by it.
            job_id = due_job_id(self.queue_name, work_id) + (f":at:{at.timestamp():.3f}" if at else "")
            await self.pool.enqueue_job("run_due_work", work_id, _job_id=job_id, _queue_name=self.queue_name,
                                        _defer_until=at)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        if self.owns_pool:
            await self.pool.aclose()


async def run_due_work(ctx, work_id: int) -> str:
    return await jobs.run_due_work(ctx["services"], int(work_id))


async def sweep_due_work(ctx) -> int:
    return await jobs.sweep(ctx["services"])


async def hourly_scheduling(ctx) -> None:
    """This month's dues reminder row and the Stripe catch-up chain exist (idempotent)."""
    from workers.periodic import ensure_scheduled_work

    await ensure_scheduled_work(ctx["services"])


async def timers_forever(services, *, poll: float = TIMER_POLL) -> None:
    while True:
        await jobs.drain_due_timers(services)
        await asyncio.sleep(poll)


async def on_startup(ctx) -> None:
    from union.services import build_services

    services = await build_services(ctx["settings"], jobs_backend="none")
    # Work that a job schedules is nudged through the worker's own Redis pool,
    # which arq opens and closes itself.
    services.jobs = ArqJobs(ctx["redis"], queue_name=ctx["queue_name"], owns_pool=False)
    ctx["services"] = services
    # Sweep here rather than with the cron's run_at_startup: a burst worker then
    # finishes what is overdue before it looks at the queue, and exits when the
    # queue is empty instead of waiting on cron jobs it keeps enqueueing itself.
    try:
        swept = await jobs.sweep(services)
    except Exception:  # the cron sweeps try again; a worker that cannot start helps nobody
        log.exception("start-up sweep failed")
        swept = 0
    if swept:
        log.info("start-up sweep completed %s overdue due-work rows", swept)
    ctx["timers"] = asyncio.create_task(timers_forever(services), name="union-timers")


async def on_shutdown(ctx) -> None:
    timers = ctx.pop("timers", None)
    if timers is not None:
        timers.cancel()
        await asyncio.gather(timers, return_exceptions=True)
    if "services" in ctx:
        await ctx["services"].close()


def worker_settings(settings, *, queue_name: str = default_queue_name) -> dict:
    """Keyword arguments for arq.Worker, built from our settings.

    `queue_name` must match the ArqJobs that nudge this worker; tests give each
    worker its own queue so they never run each other's jobs.
    """
    import workers.registry  # noqa: F401 - registers every domain's due-work handlers

    if not settings.redis_url:
        raise ValueError("the arq worker needs UNION_REDIS_URL")
    every = max(1, int(settings.sweep_interval_seconds))
    return dict(
        functions=[run_due_work],
        # unique: with several workers on one queue, each tick sweeps once. The
        # name carries the queue because arq derives the cron's job id from it.
        cron_jobs=[cron(sweep_due_work, name=f"cron:{queue_name}:sweep_due_work",
                        second=set(range(0, 60, every)), unique=True),
                   cron(hourly_scheduling, name=f"cron:{queue_name}:hourly_scheduling", minute=7, second=0,
                        unique=True)],
        queue_name=queue_name,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        ctx={"settings": settings, "queue_name": queue_name},
        keep_result=60,
        max_tries=5,
        # arq looks for new jobs every 0.5 s by default: too slow for an alert that must go now.
        poll_delay=0.05,
        # On SIGINT/SIGTERM let running jobs finish (a push half sent) before shutting down.
        job_completion_wait=10,
        **SERIALIZERS,
    )
