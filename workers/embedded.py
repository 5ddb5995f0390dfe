"""The embedded job runner: the arq jobs' functions run in-process on the event
loop when no Redis is configured. A nudge goes on an asyncio queue; a sweeper
loop catches whatever a lost nudge or a crash left behind.

Timers (union.jobs.TIMER_KINDS: acknowledgement deadlines) have their own loop:
a nudge for a later time also wakes it then, and it claims the due timer rows
itself, so a deadline never waits behind the pushes and intake work queued
before it. Without a wake-up (a restart, a lost timer) it looks every
`timer_interval` seconds; the rows stay the truth (DESIGN §3)."""

from __future__ import annotations

import asyncio
import logging

from union import jobs
from union.models import utcnow

log = logging.getLogger("union.workers")


class EmbeddedJobs:
    def __init__(self, services, *, sweep_interval: float = 5.0, concurrency: int = 4, timer_interval: float = 1.0):
        self.services = services
        self.sweep_interval = sweep_interval
        self.concurrency = concurrency
        self.timer_interval = timer_interval
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._wake: asyncio.Event | None = None

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
        # The timer loop wakes then too: if the row is a deadline it claims it at once, ahead of the queue.
        self._timers.add(loop.call_later(delay, self._wake_timers))

    def _wake_timers(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._consume(), name=f"union-job-{i}") for i in range(self.concurrency)]
        self._wake = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._timers_forever(), name="union-timers"))
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

    async def _timers_forever(self) -> None:
        wake = self._wake
        while True:
            try:
                await asyncio.wait_for(wake.wait(), timeout=self.timer_interval)
            except TimeoutError:
                pass
            wake.clear()
            await jobs.drain_due_timers(self.services)

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
