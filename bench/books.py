"""Treasurer's books benchmark (issue 6): the trial balance and the ledger's chain
verification over N journal entries (default 1,000,000), each beside a plain SQL
aggregate over the same tables in the same run.

    .venv/bin/python bench/books.py                  # 1,000,000 entries on PostgreSQL
    .venv/bin/python bench/books.py --entries 100000 # a smaller run
    .venv/bin/python bench/books.py --keep           # keep the database afterwards
    .venv/bin/python bench/books.py --one-process    # also the chain check without worker processes

Everything runs on 127.0.0.1 against a throw-away PostgreSQL database (created,
migrated, dropped). Benchmarks are run by hand (DESIGN §8): nothing here asserts
a time; the figures are printed with the machine they ran on.

Data: N cash-dues entries over three years (two postings each: a collector's cash
account and dues_income), with valid content and chain hashes computed by
dues.ledger's own functions, so `verify_ledger_chain` must find the chain intact.
They are loaded with COPY with the session in replica mode (the ledger's row
triggers are skipped: they would check each entry's balance one by one, and the
data is balanced by construction), then ANALYZEd.

Timed three times each (the best and the median are printed), the Python walk once:
  trial balance (today)        treasury.reports.trial_balance(as_of=today): every account's balance
  trial balance (mid-range)    the same as of a date in the middle (needs the join to the entries)
  plain SQL: sum by account    SELECT account_id, sum(amount_minor) FROM posting GROUP BY account_id
  plain SQL: sum by account,   the same joined to journal_entry with effective_date <= the date
    as of mid-range
  chain verification           treasury.chainsql.verify_ledger, what `union audit verify` runs: the
                               chain cut into seq ranges, each verified by a worker process (entries
                               and postings streamed by COPY in one exported snapshot, every entry
                               re-hashed), the ranges stitched; links, seqs, balance, head checked
  (--one-process) the same     treasury.chainsql with WORKERS = 1: the same pass in the benchmark's
    in one process             own process, on the session's connection (what smaller ledgers get)
  (--walk) Python walk         dues.ledger.verify_ledger_chain: every entry re-hashed in Python
  plain SQL: read the chain    SELECT count(*), sum(amount_minor) over journal_entry JOIN posting
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PG_ADMIN = os.environ.get("UNION_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
GENESIS = "0" * 64


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GB"
    except OSError:
        pass
    return f"{platform.node()} · {os.cpu_count()} CPUs ({cpu}) · {mem} RAM · Python {platform.python_version()}"


def generate(n: int, collector_accounts: list[tuple[int, str]], income_id: int):
    """(entries, postings) as COPY records, with valid hashes."""
    from dues.ledger import chain_hash, content_hash

    start = dt.date.today() - dt.timedelta(days=3 * 365)
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    entries, postings = [], []
    prev = GENESIS
    for i in range(1, n + 1):
        entry_id = str(uuid.uuid4())
        account_id, code = collector_accounts[i % len(collector_accounts)]
        amount = 5000 + (i % 20) * 500
        day = start + dt.timedelta(days=(i * 1095) // n)
        key = f"bench:{i}"
        description = f"Cash dues, receipt {i}"
        digest = content_hash(key=key, kind="cash_payment", description=description, effective_date=day,
                              created_by_user_id=None, member_id=None, reverses_entry_id=None,
                              lines=[(code, "INR", amount), ("dues_income", "INR", -amount)])
        posted_at = base + dt.timedelta(microseconds=i * 7)
        link = chain_hash(prev_hash=prev, content_hash=digest, seq=i, entry_id=entry_id, posted_at=posted_at)
        entries.append((entry_id, key, "cash_payment", description, day, posted_at.replace(tzinfo=None), None, None,
                        None, digest, prev, link, i))
        postings.append((entry_id, account_id, amount, "INR"))
        postings.append((entry_id, income_id, -amount, "INR"))
        prev = link
    return entries, postings, prev


async def load(url: str, n: int) -> dt.date:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        accounts = [(f"cash:collector:{k}", f"Cash held by collector #{k}") for k in range(1, 41)]
        from dues.ledger import STANDARD_ACCOUNTS

        for code, name, kind in STANDARD_ACCOUNTS:
            await conn.execute("INSERT INTO ledger_account (code, name, type, currency, created_at) "
                               "VALUES ($1, $2, $3, 'INR', now()) ON CONFLICT DO NOTHING", code, name, str(kind))
        for code, name in accounts:
            await conn.execute("INSERT INTO ledger_account (code, name, type, currency, created_at) "
                               "VALUES ($1, $2, 'asset', 'INR', now())", code, name)
        ids = {r["code"]: r["id"] for r in await conn.fetch("SELECT id, code FROM ledger_account")}
        t0 = time.perf_counter()
        entries, postings, head = generate(n, [(ids[c], c) for c, _ in accounts], ids["dues_income"])
        print(f"  generated {n:,} entries with their hashes in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        await conn.execute("SET session_replication_role = replica")
        await conn.copy_records_to_table("posting", records=postings,
                                         columns=["entry_id", "account_id", "amount_minor", "currency"])
        await conn.copy_records_to_table("journal_entry", records=entries, columns=[
            "id", "idempotency_key", "kind", "description", "effective_date", "posted_at", "created_by_user_id",
            "member_id", "reverses_entry_id", "content_hash", "prev_hash", "hash", "seq"])
        await conn.execute("UPDATE ledger_head SET last_seq = $1, last_hash = $2 WHERE id = 1", n, head)
        await conn.execute("SET session_replication_role = origin")
        await conn.execute("ANALYZE")
        print(f"  loaded by COPY in {time.perf_counter() - t0:.1f} s", flush=True)
        return entries[n // 2][4]
    finally:
        await conn.close()


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the chain check's worker processes)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


async def timed(label: str, fn, repeat: int = 3) -> tuple[str, list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), _cpu()
        result = await fn()
        times.append((time.perf_counter() - t0, _cpu() - c0))
    return label, times, result


async def measure(url: str, mid: dt.date, repeat: int, walk: bool, one_process: bool = False) -> list:
    from sqlalchemy import text

    from dues.ledger import verify_ledger_chain
    from treasury.chainsql import verify_ledger
    from treasury.reports import trial_balance
    from union.db import make_engine, make_sessionmaker

    engine = make_engine(url)
    reader = make_sessionmaker(engine, read_only=True)
    rows = []

    async def tb(as_of):
        async with reader() as db:
            found = await trial_balance(db, as_of=as_of)
        assert sum(r.balance_minor for r in found) == 0
        return found

    async def sql(statement, params=None):
        async with reader() as db:
            return (await db.execute(text(statement), params or {})).all()

    async def fast_verify():
        async with reader() as db:
            report = await verify_ledger(db)
        assert report.intact, report
        return report

    async def one_process_verify():
        from treasury import chainsql

        workers, chainsql.WORKERS = chainsql.WORKERS, 1
        try:
            return await fast_verify()
        finally:
            chainsql.WORKERS = workers

    async def verify():
        async with reader() as db:
            report = await verify_ledger_chain(db)
        assert report.intact, report
        return report

    try:
        rows.append(await timed("trial balance (today)", lambda: tb(dt.date.today()), repeat))
        rows.append(await timed("plain SQL: sum by account", lambda: sql(
            "SELECT account_id, sum(amount_minor) FROM posting GROUP BY account_id"), repeat))
        rows.append(await timed(f"trial balance (as of {mid})", lambda: tb(mid), repeat))
        rows.append(await timed(f"plain SQL: sum by account as of {mid}", lambda: sql(
            "SELECT p.account_id, sum(p.amount_minor) FROM posting p JOIN journal_entry e ON e.id = p.entry_id "
            "WHERE e.effective_date <= :d GROUP BY p.account_id", {"d": mid}), repeat))
        rows.append(await timed("chain verification (union audit verify: chainsql)", fast_verify, repeat))
        if one_process:
            rows.append(await timed("chain verification (chainsql, one process)", one_process_verify, 1))
        if walk:
            rows.append(await timed("chain verification (Python walk: verify_ledger_chain)", verify, 1))  # long
        rows.append(await timed("plain SQL: read the chain (count, sum)", lambda: sql(
            "SELECT count(*), sum(p.amount_minor), max(e.seq) FROM journal_entry e JOIN posting p "
            "ON p.entry_id = e.id"), repeat))
    finally:
        await engine.dispose()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--walk", action="store_true", help="also time the pure-Python walk (minutes at 1,000,000)")
    parser.add_argument("--one-process", action="store_true",
                        help="also time the quick pass without worker processes (once)")
    args = parser.parse_args()

    import asyncpg

    from union.db import migrate

    name = f"union_bench_books_{uuid.uuid4().hex[:8]}"
    admin = PG_ADMIN

    async def admin_exec(sql):
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    print(f"Treasurer's books benchmark · {args.entries:,} journal entries ({2 * args.entries:,} postings) · "
          f"PostgreSQL")
    print(f"Machine: {machine()}")
    asyncio.run(admin_exec(f"CREATE DATABASE {name}"))
    base = admin.rsplit("/", 1)[0]
    url = base.replace("postgresql://", "postgresql+asyncpg://") + "/" + name
    try:
        migrate(url)
        mid = asyncio.run(load(base + "/" + name, args.entries))
        rows = asyncio.run(measure(url, mid, args.repeat, args.walk, args.one_process))
    finally:
        if not args.keep:
            asyncio.run(admin_exec(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    print()
    print(f"  {'what':<52}{'best':>9}{'median':>9}{'cpu':>9}")
    for label, times, _ in rows:
        walls = [wall for wall, _cpu_s in times]
        print(f"  {label:<52}{min(walls):>8.2f}s{statistics.median(walls):>8.2f}s{min(times)[1]:>8.2f}s")
    print("  (wall-clock seconds, from the benchmark process through SQLAlchemy/asyncpg; cpu: of the best run, "
          "this process and its worker processes, not the database's; targets: trial balance <= 2 s, "
          "chain verification <= 10 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
