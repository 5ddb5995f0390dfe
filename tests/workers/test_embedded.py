"""Embedded mode (no Redis): a nudge runs the work at once on the event loop, and
the sweeper loop finishes work whose nudge was lost."""

from __future__ import annotations

import contextlib

import asyncio
import datetime as dt

from tests.workers.effects import (CHAIN, EFFECT, GATES, TIMER, Gate, add_work, load_by_key, commit_then_die,
                                   effects, wait_until_state)
from union import jobs
from union.models import utcnow
from workers.embedded import EmbeddedJobs


@contextlib.asynccontextmanager
async def running_embedded(services, *, sweep_interval: float, timer_interval: float = 1.0):
    """The runner wired in as `build_services` does in embedded mode (it is `services.jobs`)."""
    runner = EmbeddedJobs(services, sweep_interval=sweep_interval, timer_interval=timer_interval)
    previous, services.jobs = services.jobs, runner
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()
        services.jobs = previous


async def test_work_whose_writer_died_before_the_nudge_is_finished_by_the_sweeper(services):
    async with running_embedded(services, sweep_interval=0.1):
        work_id = await commit_then_die(services, 1)
        await wait_until_state(services, work_id, "done", timeout=5)
    assert await effects(services, 1) == 1


async def test_nudge_runs_the_work_at_once(services):
    # The first sweep is an hour away, so only the nudge can do this work.
    async with running_embedded(services, sweep_interval=3600) as runner:
        async with services.sessions() as session:
            work = await jobs.schedule(session, kind=EFFECT, key="nudged", payload={"n": 1})
            await jobs.commit_and_nudge(session, runner, [work])
        row = await wait_until_state(services, work.id, "done", timeout=5)
    assert row.attempts == 1
    assert await effects(services, 1) == 1


async def test_nudging_the_same_work_twice_has_one_effect(services):
    async with running_embedded(services, sweep_interval=3600) as runner:
        work = await add_work(services, 1)
        # Two consumers take the two nudges at once; a done row cannot be claimed again,
        # so the count below is final even if the loser is still finishing.
        await runner.nudge([work.id, work.id])
        await wait_until_state(services, work.id, "done", timeout=5)
    assert await effects(services, 1) == 1


async def test_follow_up_work_a_job_schedules_is_nudged_after_its_commit(services):
    async with running_embedded(services, sweep_interval=3600) as runner:
        work = await add_work(services, 1, kind=CHAIN)
        await runner.nudge([work.id])
        await wait_until_state(services, work.id, "done", timeout=5)
        follow_up = await load_by_key(services, f"{EFFECT}:1")
        await wait_until_state(services, follow_up.id, "done", timeout=5)
    assert await effects(services, 1) == 1


async def test_a_timer_runs_at_its_time_while_every_consumer_is_busy(services):
    """Acknowledgement deadlines do not wait behind queued work: with all four consumers holding a job and
    the sweep an hour away, a timer nudged for a moment later is claimed by the timer loop."""
    gates = {n: Gate() for n in range(101, 105)}
    GATES.update(gates)
    try:
        async with running_embedded(services, sweep_interval=3600) as runner:
            held = [await add_work(services, n) for n in gates]
            await runner.nudge([w.id for w in held])
            for gate in gates.values():
                await asyncio.wait_for(gate.entered.wait(), timeout=5)
            async with services.sessions() as session:
                work = await jobs.schedule(session, kind=TIMER, key="timer:1", payload={"n": 1},
                                           due_at=utcnow() + dt.timedelta(milliseconds=200))
                await jobs.commit_and_nudge(session, runner, [work])
            await wait_until_state(services, work.id, "done", timeout=5)
            assert await effects(services, 1, kind=TIMER) == 1
            assert [await effects(services, n) for n in gates] == [0, 0, 0, 0]  # still held
            for gate in gates.values():
                gate.release.set()
            for w in held:
                await wait_until_state(services, w.id, "done", timeout=5)
    finally:
        for n in gates:
            GATES.pop(n, None)
    assert await effects(services, 1, kind=TIMER) == 1


async def test_a_due_timer_nobody_nudged_is_run_by_the_timer_loop(services):
    """A deadline whose process died before its timer fired: the timer loop finds the row on its own
    (the sweep is an hour away)."""
    async with running_embedded(services, sweep_interval=3600, timer_interval=0.1):
        work = await add_work(services, 2, kind=TIMER, due_at=utcnow() + dt.timedelta(milliseconds=100))
        await wait_until_state(services, work.id, "done", timeout=5)
    assert await effects(services, 2, kind=TIMER) == 1
