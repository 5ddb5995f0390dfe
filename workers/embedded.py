"""The embedded job runner: the arq jobs' functions run in-process on the event
loop when no Redis is configured. A nudge goes on an asyncio queue; a sweeper
loop catches whatever a lost nudge or a crash left behind."""

from __future__ import annotations

import asyncio
import logging

from union import jobs
from union.models import utcnow

log = logging.getLogger("union.workers")


class EmbeddedJobs:
    def __init__(self, services, *, sweep_interval: float = 5.0, concurrency: int = 4):
        self.services = services
        self.sweep_interval = sweep_interval
        self.concurrency = concurrency
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._timers: set[asyncio.TimerHandle] = set()

    async def nudge(self, work_ids: list[int], *, at=None) -> None:
        if at is None:
            for work_id in work_ids:
                self._queue.put_nowait(work_id)
            return
        delay = max(0.0, (at - utcnow()).total_seconds())
        loop = asyncio.get_running_loop()
        self._timers = {t for t in self._timers if not t.cancelled() and t.when() > loop.time()}
        # A timer in this process; if the process dies first, the sweeper runs the row.
        for work_id in work_ids:
            self._timers.add(loop.call_later(delay, self._queue.put_nowait, work_id))

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._consume(), name=f"union-job-{i}") for i in range(self.concurrency)]
        self._tasks.append(asyncio.create_task(self._sweep_forever(), name="union-sweeper"))
        self._tasks.append(asyncio.create_task(self._hourly_forever(), name="union-hourly"))

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _consume(self) -> None:
        while True:
            work_id = await self._queue.get()
            try:
                await jobs.run_due_work(self.services, work_id)
            except Exception:  # the row stays due; the sweeper retries it
                log.exception("embedded job %s crashed", work_id)

    async def _hourly_forever(self) -> None:
        """Like the arq cron: make sure the self-rescheduling rows exist (idempotent), hourly."""
        from workers.periodic import ensure_scheduled_work

        while True:
            await asyncio.sleep(min(self.sweep_interval, 5.0))  # let start-up (and migrations) finish first
            await ensure_scheduled_work(self.services)
            await asyncio.sleep(3600)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await jobs.sweep(self.services)
            except Exception:
                log.exception("sweeper pass failed")
