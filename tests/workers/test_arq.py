"""Production mode: arq workers on a real Redis, built from `worker_settings`.

Each test has its own arq queue (and job ids carry the queue), so tests running
at the same time against one Redis never run each other's jobs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from arq.jobs import Job
from arq.worker import Worker
from redis.asyncio import Redis

from tests.conftest import REDIS_URL, need, redis_available
from tests.workers.effects import (CHAIN, EFFECT, TIMER, add_work, commit_then_die, effects, load, load_by_key,
                                   wait_until_state)
from union import jobs
from union.models import utcnow
from workers.arq_worker import ArqJobs, due_job_id, worker_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def redis():
    need(redis_available(), "Redis on 127.0.0.1:6379")
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def queue(redis):
    """A queue name of this test's own; its keys are removed afterwards."""
    name = f"union-test:{uuid.uuid4().hex}"
    yield name
    async for key in redis.scan_iter(match=f"*{name}*"):
        await redis.delete(key)


@pytest.fixture
def arq_settings(settings):
    return settings.model_copy(update={"redis_url": REDIS_URL})


async def _wait(check, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_worker(settings, queue: str, *, periodic_sweeps: bool = True):
    """An arq worker as `union worker` builds it, running until the block ends.

    Yields once the worker has polled its queue, so its start-up sweep is over:
    whatever the test schedules afterwards is done by a job or the cron sweep.
    """
    options = worker_settings(settings, queue_name=queue)
    if not periodic_sweeps:
        options["cron_jobs"] = []
    worker = Worker(**options, handle_signals=False)
    running = asyncio.create_task(worker.async_run())

    async def has_polled() -> bool:
        if running.done():
            running.result()  # start-up failed: show why
        return worker._pool is not None and bool(await worker.pool.exists(worker.health_check_key))

    try:
        await _wait(has_polled, "the worker to start")
        yield worker
    finally:
        worker.allow_pick_jobs = False  # finish what it holds, take nothing new
        await _wait(lambda: _all_done(worker), "the worker's jobs to finish")
        await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def _all_done(worker: Worker) -> bool:
    return all(task.done() for task in worker.tasks.values())


async def test_work_whose_writer_died_before_the_nudge_is_finished_by_the_cron_sweep(services, arq_settings, queue):
    async with running_worker(arq_settings, queue):
        work_id = await commit_then_die(services, 1)
        # The cron sweeps every second (sweep_interval_seconds=0.2 rounds up to 1).
        await wait_until_state(services, work_id, "done", timeout=5)
    assert await effects(services, 1) == 1


async def test_nudge_is_run_by_a_worker_job(services, arq_settings, queue):
    arq_jobs = await ArqJobs.connect(REDIS_URL, queue_name=queue)
    try:
        # No cron sweeps, and the start-up sweep is over: only the nudge's job can do this.
        async with running_worker(arq_settings, queue, periodic_sweeps=False):
            async with services.sessions() as session:
                work = await jobs.schedule(session, kind=EFFECT, key="nudged", payload={"n": 1})
                await jobs.commit_and_nudge(session, arq_jobs, [work])
            row = await wait_until_state(services, work.id, "done", timeout=5)
            job = Job(due_job_id(queue, work.id), arq_jobs.pool, _queue_name=queue,
                      _deserializer=arq_jobs.pool.job_deserializer)
            assert await job.result(timeout=5) == "done"
    finally:
        await arq_jobs.stop()
    assert row.attempts == 1
    assert await effects(services, 1) == 1


async def test_follow_up_work_a_job_schedules_is_nudged_by_the_worker(services, arq_settings, queue):
    arq_jobs = await ArqJobs.connect(REDIS_URL, queue_name=queue)
    try:
        async with running_worker(arq_settings, queue, periodic_sweeps=False):
            work = await add_work(services, 1, kind=CHAIN)
            await arq_jobs.nudge([work.id])
            await wait_until_state(services, work.id, "done", timeout=5)
            # No sweeps: only the worker's own nudge, after the first job's commit, can run this.
            follow_up = await load_by_key(services, f"{EFFECT}:1")
            await wait_until_state(services, follow_up.id, "done", timeout=5)
    finally:
        await arq_jobs.stop()
    assert await effects(services, 1) == 1


async def test_a_due_timer_is_claimed_by_the_worker_timer_loop(services, arq_settings, queue):
    """Deadlines do not wait in arq's queue: with no nudge and no cron sweep, the worker's timer loop
    runs a timer row when it comes due."""
    async with running_worker(arq_settings, queue, periodic_sweeps=False):
        work = await add_work(services, 7, kind=TIMER, due_at=utcnow() + dt.timedelta(milliseconds=200))
        await wait_until_state(services, work.id, "done", timeout=5)
    assert await effects(services, 7, kind=TIMER) == 1


async def test_job_in_redis_is_json_holding_only_the_row_id(redis, queue):
    arq_jobs = await ArqJobs.connect(REDIS_URL, queue_name=queue)
    try:
        await arq_jobs.nudge([42])
        await arq_jobs.nudge([42])  # a second nudge while one is queued adds nothing
    finally:
        await arq_jobs.stop()

    job_id = due_job_id(queue, 42)
    assert await redis.zrange(queue, 0, -1) == [job_id.encode()]
    raw = await redis.get(f"arq:job:{job_id}")
    assert raw.startswith(b"{")  # JSON; a pickle would start with b"\x80"
    job = json.loads(raw)
    assert set(job) == {"t", "f", "a", "k", "et"}  # arq's envelope: try, function, args, kwargs, enqueue time
    assert (job["f"], job["a"], job["k"]) == ("run_due_work", [42], {})


async def test_union_worker_burst_finishes_overdue_work_and_exits(services, settings, redis):
    # Committed while no worker ran, and never nudged: `union worker --burst` must
    # find it, do it, and exit.
    work = await add_work(services, 1)
    env = {
        **os.environ,
        "UNION_DATABASE_URL": settings.database_url,
        "UNION_REDIS_URL": REDIS_URL,
        "UNION_DATA_DIR": str(settings.data_dir),
        "UNION_ENCRYPTION_KEYS": settings.encryption_keys,
        "UNION_HASH_KEY": settings.hash_key,
        "UNION_SECRET_KEY": settings.secret_key,
    }
    # The real CLI entry point; the test's due-work kinds are imported first so the
    # worker process knows them.
    program = ("import sys, tests.workers.effects; from union.cli import main; "
               "sys.exit(main(['worker', '--burst']))")
    worker = await asyncio.create_subprocess_exec(sys.executable, "-c", program, cwd=ROOT, env=env,
                                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = await asyncio.wait_for(worker.communicate(), timeout=60)

    assert worker.returncode == 0, output.decode()
    row = await load(services, work.id)
    assert (row.state, row.attempts) == ("done", 1), output.decode()
    assert await effects(services, 1) == 1
