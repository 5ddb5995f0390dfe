"""Test-only due work whose effect is a real row (an audit event), and helpers to
read outcomes from the database.

Importing this registers the test kinds; the `union worker` subprocess test
imports it in the worker process too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time

from sqlalchemy import func, select, update

from union import audit
from union.jobs import commit_and_nudge, due_handler, schedule
from union.models import AuditEvent, DueWork, utcnow

EFFECT = "test.effect"
FAILS = "test.fails"
CHAIN = "test.chain"
TIMER = "test.timer"  # a kind whose due time must be kept (union.jobs.TIMER_KINDS), like a deadline


class Gate:
    """Holds a handler mid-job, as a slow or dying worker would."""

    def __init__(self):
        self.entered = asyncio.Event()
        self.release = asyncio.Event()


# Payload "n" -> gate. Empty unless a test is holding a job.
GATES: dict[int, Gate] = {}


@due_handler(EFFECT)
async def record_effect(session, services, payload: dict) -> None:
    gate = GATES.get(payload["n"])
    if gate is not None:
        gate.entered.set()
        # Held before any write: on SQLite the one writer stays free for whoever takes over.
        await gate.release.wait()
    await audit.record(session, action=EFFECT, target_id=payload["n"])


@due_handler(TIMER, timer=True)
async def record_timer(session, services, payload: dict) -> None:
    await audit.record(session, action=TIMER, target_id=payload["n"])


@due_handler(FAILS)
async def always_fail(session, services, payload: dict) -> None:
    raise RuntimeError("boom")


@due_handler(CHAIN)
async def schedule_the_effect(session, services, payload: dict) -> list[DueWork]:
    """Work that leads to more work: the effect is scheduled as follow-up work and
    handed back, for the runner to nudge once this transaction commits."""
    return [await schedule(session, kind=EFFECT, key=f"{EFFECT}:{payload['n']}", payload={"n": payload["n"]})]


async def add_work(services, n: int, *, kind: str = EFFECT, max_attempts: int = 8,
                   due_at: dt.datetime | None = None) -> DueWork:
    """Schedule and commit one row without nudging anyone: only a sweeper (or, for a timer, the timer
    loop) will find it."""
    async with services.sessions() as session:
        work = await schedule(session, kind=kind, key=f"{kind}:{n}", payload={"n": n}, max_attempts=max_attempts,
                              due_at=due_at)
        await session.commit()
    return work


class HangingQueue:
    """A job queue whose nudge never gets through, like a Redis that stopped answering."""

    def __init__(self):
        self.reached = asyncio.Event()

    async def nudge(self, work_ids: list[int]) -> None:
        self.reached.set()
        await asyncio.Event().wait()


async def commit_then_die(services, n: int) -> int:
    """Schedule work the way domains do, then kill the writer after its commit and
    before its nudge reaches the queue. Returns the row's id."""
    queue = HangingQueue()
    async with services.sessions() as session:
        work = await schedule(session, kind=EFFECT, key=f"{EFFECT}:{n}", payload={"n": n})
        writer = asyncio.create_task(commit_and_nudge(session, queue, [work]))
        await asyncio.wait_for(queue.reached.wait(), timeout=5)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    assert writer.cancelled()
    return work.id


async def effects(services, n: int, *, kind: str = EFFECT) -> int:
    """How many times the effect of work `n` (of kind EFFECT or TIMER) happened."""
    async with services.sessions() as session:
        return (await session.execute(
            select(func.count()).select_from(AuditEvent)
            .where(AuditEvent.action == kind, AuditEvent.target_id == str(n))
        )).scalar_one()


async def load(services, work_id: int) -> DueWork:
    async with services.sessions() as session:
        return (await session.execute(select(DueWork).where(DueWork.id == work_id))).scalar_one()


async def load_by_key(services, key: str) -> DueWork:
    async with services.sessions() as session:
        return (await session.execute(select(DueWork).where(DueWork.key == key))).scalar_one()


async def backdate(services, work_id: int, *columns: str) -> None:
    """Move the named time columns (due_at, lease_until) one second into the past."""
    past = utcnow() - dt.timedelta(seconds=1)
    async with services.sessions() as session:
        await session.execute(update(DueWork).where(DueWork.id == work_id).values({c: past for c in columns}))
        await session.commit()


async def wait_until_state(services, work_id: int, state: str, *, timeout: float = 5.0) -> DueWork:
    """Poll the row until it reaches `state`; fail with what it looks like after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        work = await load(services, work_id)
        if work.state == state:
            return work
        if time.monotonic() > deadline:
            raise AssertionError(f"due work {work_id} is {work.state!r} (attempts {work.attempts}, "
                                 f"last error {work.last_error!r}) after {timeout}s, not {state!r}")
        await asyncio.sleep(0.05)
