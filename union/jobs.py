"""Due work: "the database is the truth, jobs are only nudges" (DESIGN §3).

Work that must happen is a `duework` row with a due time, written in the same
transaction as the change that needs it. After commit, the caller nudges the job
queue (arq on Redis, or the embedded runner) to run it at once; a sweeper finds
due rows that nobody finished and runs them. A row is claimed with a conditional
UPDATE and completed in the same transaction as its handler's database effects,
so running the same job twice has one effect.

Handlers are registered by kind with `@due_handler("kind")` in each domain's
`tasks.py`; they receive (session, services, payload) and must not commit.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from union.models import DueState, DueWork, utcnow

log = logging.getLogger("union.jobs")

Handler = Callable[[AsyncSession, object, dict], Awaitable[None]]
HANDLERS: dict[str, Handler] = {}

LEASE = dt.timedelta(minutes=2)


def due_handler(kind: str):
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn

    return register


class JobQueue(Protocol):
    async def nudge(self, work_ids: list[int]) -> None:
        """Ask for these due-work rows to be run soon. Losing a nudge only delays the work."""


async def schedule(session: AsyncSession, *, kind: str, key: str, payload: dict | None = None,
                   due_at: dt.datetime | None = None, max_attempts: int = 8) -> DueWork:
    """Add a due-work row in the caller's transaction; the same key twice returns the first row.

    Payloads carry ids only, never sensitive values.
    """
    if kind not in HANDLERS:
        raise ValueError(f"no handler registered for due work of kind {kind!r}")
    existing = (await session.execute(select(DueWork).where(DueWork.key == key))).scalar_one_or_none()
    if existing:
        return existing
    work = DueWork(kind=kind, key=key, payload=json.dumps(payload or {}), due_at=due_at or utcnow(),
                   max_attempts=max_attempts)
    session.add(work)
    await session.flush()
    return work


def _backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(300, 2 ** attempts))


async def run_due_work(services, work_id: int) -> str:
    """Claim and run one row. Returns what happened: done, retry, failed, skipped."""
    now = utcnow()
    async with services.sessions() as session:
        claimed = await session.execute(
            update(DueWork)
            .where(DueWork.id == work_id)
            .where(or_(
                (DueWork.state == DueState.pending) & (DueWork.due_at <= now),
                (DueWork.state == DueState.running) & (DueWork.lease_until < now),
            ))
            .values(state=DueState.running, lease_until=now + LEASE, attempts=DueWork.attempts + 1)
        )
        await session.commit()
        if claimed.rowcount != 1:
            return "skipped"  # done already, not yet due, or someone else holds it
        work = (await session.execute(select(DueWork).where(DueWork.id == work_id))).scalar_one()
        attempt = work.attempts
    handler = HANDLERS.get(work.kind)
    try:
        if handler is None:
            raise LookupError(f"no handler for {work.kind!r}")
        async with services.sessions() as session:
            await handler(session, services, json.loads(work.payload))
            finished = await session.execute(
                update(DueWork)
                .where(DueWork.id == work_id, DueWork.state == DueState.running, DueWork.attempts == attempt)
                .values(state=DueState.done, done_at=utcnow(), lease_until=None, last_error=None)
            )
            if finished.rowcount != 1:
                # Our lease ran out and another runner took over: drop our effects.
                await session.rollback()
                return "skipped"
            await session.commit()
        return "done"
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the row and retried
        log.warning("due work %s (%s) attempt %s failed: %s", work_id, work.kind, attempt, type(exc).__name__)
        gave_up = attempt >= work.max_attempts
        async with services.sessions() as session:
            await session.execute(
                update(DueWork)
                .where(DueWork.id == work_id, DueWork.state == DueState.running, DueWork.attempts == attempt)
                .values(state=DueState.failed if gave_up else DueState.pending,
                        due_at=utcnow() + _backoff(attempt), lease_until=None,
                        last_error=f"{type(exc).__name__}: {exc}"[:2000])
            )
            await session.commit()
        return "failed" if gave_up else "retry"


async def due_ids(services, *, limit: int = 200) -> list[int]:
    now = utcnow()
    async with services.sessions() as session:
        rows = await session.execute(
            select(DueWork.id)
            .where(or_(
                (DueWork.state == DueState.pending) & (DueWork.due_at <= now),
                (DueWork.state == DueState.running) & (DueWork.lease_until < now),
            ))
            .order_by(DueWork.due_at)
            .limit(limit)
        )
        return list(rows.scalars())


async def sweep(services, *, limit: int = 200) -> int:
    """Run every due row nobody finished; returns how many were completed."""
    done = 0
    for work_id in await due_ids(services, limit=limit):
        if await run_due_work(services, work_id) == "done":
            done += 1
    return done
