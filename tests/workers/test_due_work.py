"""Due work run directly: one effect however often a job runs, retries with
backoff, takeover after a dead or slow runner's lease, and a lost nudge that
the sweeper makes good."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from arq.connections import ArqRedis
from sqlalchemy import func, select

from tests.workers.effects import EFFECT, FAILS, GATES, TIMER, Gate, add_work, backdate, effects, load
from union import jobs
from union.models import DueWork, utcnow
from workers.arq_worker import ArqJobs


async def test_same_job_twice_in_a_row_has_one_effect(services):
    work = await add_work(services, 1)

    assert await jobs.run_due_work(services, work.id) == "done"
    assert await jobs.run_due_work(services, work.id) == "skipped"

    assert await effects(services, 1) == 1
    row = await load(services, work.id)
    assert (row.state, row.attempts, row.lease_until) == ("done", 1, None)
    assert row.done_at is not None


async def test_same_job_twice_at_once_has_one_effect(services):
    work = await add_work(services, 1)

    outcomes = await asyncio.gather(jobs.run_due_work(services, work.id), jobs.run_due_work(services, work.id))

    assert sorted(outcomes) == ["done", "skipped"]
    assert await effects(services, 1) == 1
    row = await load(services, work.id)
    assert (row.state, row.attempts) == ("done", 1)


async def test_scheduling_the_same_key_twice_keeps_one_row(services):
    first = await add_work(services, 1)
    second = await add_work(services, 1)

    assert second.id == first.id
    async with services.sessions() as session:
        rows = (await session.execute(select(func.count()).select_from(DueWork))).scalar_one()
    assert rows == 1


async def test_failing_handler_backs_off_then_gives_up_after_max_attempts(services):
    work = await add_work(services, 1, kind=FAILS, max_attempts=2)
    before = utcnow()

    assert await jobs.run_due_work(services, work.id) == "retry"
    row = await load(services, work.id)
    assert (row.state, row.attempts, row.lease_until) == ("pending", 1, None)
    assert row.last_error == "RuntimeError: boom"
    assert row.due_at >= before + dt.timedelta(seconds=2)  # backoff after the first attempt

    # Not due again until the backoff has passed, whoever asks.
    assert await jobs.run_due_work(services, work.id) == "skipped"
    assert await jobs.sweep(services) == 0
    assert (await load(services, work.id)).attempts == 1

    await backdate(services, work.id, "due_at")
    assert await jobs.run_due_work(services, work.id) == "failed"
    row = await load(services, work.id)
    assert (row.state, row.attempts, row.last_error) == ("failed", 2, "RuntimeError: boom")

    # A failed row waits for a person; sweeps leave it alone.
    await backdate(services, work.id, "due_at")
    assert await jobs.sweep(services) == 0
    assert (await load(services, work.id)).attempts == 2


async def test_work_of_a_runner_killed_mid_job_is_rerun_once_its_lease_expires(services):
    work = await add_work(services, 1)
    GATES[1] = gate = Gate()
    try:
        dying = asyncio.create_task(jobs.run_due_work(services, work.id))
        await asyncio.wait_for(gate.entered.wait(), timeout=5)
        dying.cancel()  # the worker process dies here: no error recorded, lease still held
        with contextlib.suppress(asyncio.CancelledError):
            await dying
    finally:
        del GATES[1]
    row = await load(services, work.id)
    assert (row.state, row.attempts) == ("running", 1)
    assert row.lease_until > utcnow()

    assert await jobs.sweep(services) == 0  # the lease still protects it
    await backdate(services, work.id, "lease_until")
    assert await jobs.sweep(services) == 1

    row = await load(services, work.id)
    assert (row.state, row.attempts) == ("done", 2)
    assert await effects(services, 1) == 1


async def test_slow_runner_overtaken_after_its_lease_loses_its_effects(services):
    work = await add_work(services, 1)
    GATES[1] = gate = Gate()
    slow = asyncio.create_task(jobs.run_due_work(services, work.id))
    try:
        await asyncio.wait_for(gate.entered.wait(), timeout=5)
    finally:
        del GATES[1]  # whoever takes over is not held

    await backdate(services, work.id, "lease_until")
    assert await jobs.sweep(services) == 1
    gate.release.set()

    assert await slow == "skipped"
    assert await effects(services, 1) == 1
    row = await load(services, work.id)
    assert (row.state, row.attempts) == ("done", 2)


async def test_nudge_failing_because_redis_is_down_is_logged_and_the_sweeper_does_the_work(services, caplog):
    # Nothing listens on port 1: every enqueue fails to connect, as with Redis down.
    dead_redis = ArqJobs(ArqRedis.from_url("redis://127.0.0.1:1/0"))
    try:
        with caplog.at_level(logging.WARNING, logger="union.jobs"):
            async with services.sessions() as session:
                work = await jobs.schedule(session, kind=EFFECT, key="redis-down", payload={"n": 1})
                await jobs.commit_and_nudge(session, dead_redis, [work])  # must not raise
    finally:
        await dead_redis.stop()
    assert "the sweeper will run it" in caplog.text

    row = await load(services, work.id)
    assert (row.state, row.attempts) == ("pending", 0)  # committed, and nobody ran it yet
    assert await jobs.sweep(services) == 1
    assert (await load(services, work.id)).state == "done"
    assert await effects(services, 1) == 1


async def test_due_timers_are_claimed_before_other_due_work(services):
    """A sweep (and a runner's timer loop) takes due deadlines first, whatever else is older."""
    older = await add_work(services, 1, due_at=utcnow() - dt.timedelta(minutes=5))
    timer = await add_work(services, 2, kind=TIMER, due_at=utcnow() - dt.timedelta(seconds=1))
    later = await add_work(services, 3, kind=TIMER, due_at=utcnow() + dt.timedelta(hours=1))
    assert await jobs.due_ids(services) == [timer.id, older.id]
    assert await jobs.due_ids(services, limit=1) == [timer.id]
    assert await jobs.run_due_timers(services) == 1
    assert (await load(services, timer.id)).state == "done" and (await load(services, older.id)).state == "pending"
    assert (await load(services, later.id)).state == "pending"
    assert await effects(services, 2, kind=TIMER) == 1
