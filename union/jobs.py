"""Due work: "the database is the truth, jobs are only nudges" (DESIGN §3).

Work that must happen is a `duework` row with a due time, written in the same
transaction as the change that needs it. After commit, the caller nudges the job
queue (arq on Redis, or the embedded runner) to run it at once; a sweeper finds
due rows that nobody finished and runs them. A row is claimed with a conditional
UPDATE and completed in the same transaction as its handler's database effects,
so running the same job twice has one effect.

Handlers are registered by kind with `@due_handler("kind")` in each domain's
`tasks.py`; they receive (session, services, payload) and must not commit. A
handler may return the due work it scheduled; the runner nudges it after commit.

A domain's write path is: `work = await schedule(session, ...)` next to its own
changes, then `await commit_and_nudge(session, services.jobs, [work])`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from sqlalchemy import case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from union.models import DueState, DueWork, utcnow

log = logging.getLogger("union.jobs")

# Returns the follow-up due work it scheduled (or None).
Handler = Callable[[AsyncSession, object, dict], Awaitable[Iterable[DueWork] | None]]
HANDLERS: dict[str, Handler] = {}
# Kinds whose due time is a promise to someone (an acknowledgement deadline): the runners claim them
# before other due work and give them their own loop, so they never wait behind pushes and intake.
TIMER_KINDS: set[str] = set()

LEASE = dt.timedelta(minutes=2)


def due_handler(kind: str, *, timer: bool = False):
    """Register the handler of a kind of due work; timer=True: its due time must be kept (TIMER_KINDS)."""
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        if timer:
            TIMER_KINDS.add(kind)
        return fn

    return register


class JobQueue(Protocol):
    async def nudge(self, work_ids: list[int], *, at: dt.datetime | None = None) -> None:
        """Ask for these due-work rows to be run now (or at `at`). Losing a nudge only delays the work."""


DEFAULT_MAX_ATTEMPTS = 8


async def schedule(session: AsyncSession, *, kind: str, key: str, payload: dict | None = None,
                   due_at: dt.datetime | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                   fresh: bool = False) -> DueWork:
    """Add a due-work row in the caller's transaction; the same key twice returns the first row.

    Payloads carry ids only, never sensitive values.

    fresh=True: the key names a row created in this very transaction (e.g. `offer-sms:<new offer id>`),
    so no earlier row can hold it: no look-up, and no flush of its own; the row is inserted with the
    caller's next flush (commit_and_nudge flushes rows that have no id yet; PostgreSQL takes them in one
    multi-row INSERT).
    A key that exists after all still fails loudly on the unique constraint.
    """
    if kind not in HANDLERS:
        raise ValueError(f"no handler registered for due work of kind {kind!r}")
    if not fresh:
        existing = (await session.execute(select(DueWork).where(DueWork.key == key))).scalar_one_or_none()
        if existing:
            return existing
    work = DueWork(kind=kind, key=key, payload=json.dumps(payload or {}), due_at=due_at or utcnow(),
                   max_attempts=max_attempts)
    session.add(work)
    if not fresh:
        await session.flush()
    return work


def _backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(300, 2 ** attempts))


def _is_due(now: dt.datetime):
    """Pending and due, or claimed by a runner whose lease ran out (it crashed or hung)."""
    return or_(
        (DueWork.state == DueState.pending) & (DueWork.due_at <= now),
        (DueWork.state == DueState.running) & (DueWork.lease_until < now),
    )


async def commit_and_nudge(session: AsyncSession, queue: JobQueue | None, works: Iterable[DueWork]) -> None:
    """Commit the caller's transaction, then ask `queue` (usually `services.jobs`) to run `works`.

    The nudge comes after the commit so a job never looks for a row that is not
    there yet. Rows due later are nudged for their due time (an acknowledgement
    deadline must fire on time, not at the next sweep). A nudge that fails (Redis
    down) is logged and swallowed: the rows are committed and the sweeper will run
    them, so the caller's request succeeds. Without a queue (the CLI, or the
    worker's own services) the sweeper runs them.
    """
    works = list(works)
    if any(work.id is None for work in works):  # scheduled with fresh=True and not flushed yet
        await session.flush()
    timed = [(work.id, work.due_at) for work in works]
    await session.commit()
    if not timed or queue is None:
        return
    now = utcnow()
    due_now = [work_id for work_id, due_at in timed if due_at <= now]
    later = [(work_id, due_at) for work_id, due_at in timed if due_at > now]
    try:
        if due_now:
            await queue.nudge(due_now)
        for work_id, due_at in later:
            await queue.nudge([work_id], at=due_at)
    except Exception as exc:  # noqa: BLE001 - losing a nudge only delays the work until the next sweep
        log.warning("could not nudge due work %s (%s: %s); the sweeper will run it",
                    [w for w, _ in timed], type(exc).__name__, exc)


async def run_due_work(services, work_id: int) -> str:
    """Claim and run one row. Returns what happened: done, retry, failed, skipped."""
    now = utcnow()
    async with services.sessions() as session:
        claimed = (await session.execute(
            update(DueWork)
            .where(DueWork.id == work_id, _is_due(now))
            .values(state=DueState.running, lease_until=now + LEASE, attempts=DueWork.attempts + 1)
            .returning(DueWork.kind, DueWork.payload, DueWork.attempts, DueWork.max_attempts)
            .execution_options(synchronize_session=False)
        )).one_or_none()
        await session.commit()
    if claimed is None:
        return "skipped"  # done already, not yet due, or someone else holds it
    kind, payload, attempt, max_attempts = claimed
    # Later writes are fenced on the attempt number: if our lease runs out and
    # another runner claims the row, it bumps attempts and our writes match nothing.
    still_ours = (DueWork.id == work_id, DueWork.state == DueState.running, DueWork.attempts == attempt)
    handler = HANDLERS.get(kind)
    try:
        if handler is None:
            raise LookupError(f"no handler for {kind!r}")
        async with services.sessions() as session:
            follow_ups = await handler(session, services, json.loads(payload))
            finished = await session.execute(
                update(DueWork).where(*still_ours)
                .values(state=DueState.done, done_at=utcnow(), lease_until=None, last_error=None)
            )
            if finished.rowcount != 1:
                # Another runner took over: drop our effects, its run counts.
                await session.rollback()
                return "skipped"
            await commit_and_nudge(session, services.jobs, follow_ups or [])
        return "done"
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the row and retried
        log.warning("due work %s (%s) attempt %s failed: %s", work_id, kind, attempt, type(exc).__name__)
        gave_up = attempt >= max_attempts
        async with services.sessions() as session:
            recorded = await session.execute(
                update(DueWork).where(*still_ours)
                .values(state=DueState.failed if gave_up else DueState.pending,
                        due_at=utcnow() + _backoff(attempt), lease_until=None,
                        last_error=f"{type(exc).__name__}: {exc}"[:2000])
            )
            await session.commit()
        if recorded.rowcount != 1:
            return "skipped"  # another runner took over; its outcome stands
        return "failed" if gave_up else "retry"


def _reader(services):
    """A read-only session (on SQLite it does not take the one write lock) where the services have one."""
    return getattr(services, "reader", None) or services.sessions


async def due_ids(services, *, limit: int = 200, kinds: Iterable[str] | None = None) -> list[int]:
    """Due rows, oldest due first; timer kinds (TIMER_KINDS) before the rest. `kinds`: only these."""
    query = select(DueWork.id).where(_is_due(utcnow()))
    if kinds is not None:
        query = query.where(DueWork.kind.in_(sorted(kinds))).order_by(DueWork.due_at)
    elif TIMER_KINDS:
        query = query.order_by(case((DueWork.kind.in_(sorted(TIMER_KINDS)), 0), else_=1), DueWork.due_at)
    else:
        query = query.order_by(DueWork.due_at)
    async with _reader(services)() as session:
        return list((await session.execute(query.limit(limit))).scalars())


async def sweep(services, *, limit: int = 200) -> int:
    """Run every due row nobody finished, timers first; returns how many were completed."""
    done = 0
    for work_id in await due_ids(services, limit=limit):
        if await run_due_work(services, work_id) == "done":
            done += 1
    return done


async def drain_due_timers(services) -> None:
    """Claim and run due timer rows until none is left (more may come due meanwhile). A failure is
    logged: the rows stay due, and the next pass (or a sweep) retries them. The runners' timer loops."""
    try:
        while await run_due_timers(services):
            pass
    except Exception:  # noqa: BLE001
        log.exception("timer pass failed")


async def run_due_timers(services, *, limit: int = 50, concurrency: int = 4) -> int:
    """One pass of a runner's timer loop: claim and run the due rows of TIMER_KINDS (a few at a time),
    whatever else is queued. A nudge of the same row that comes later finds it done (skipped)."""
    if not TIMER_KINDS:
        return 0
    ids = await due_ids(services, limit=limit, kinds=TIMER_KINDS)
    if not ids:
        return 0
    gate = asyncio.Semaphore(concurrency)

    async def one(work_id: int) -> bool:
        async with gate:
            return await run_due_work(services, work_id) == "done"

    return sum(await asyncio.gather(*(one(w) for w in ids)))
