"""Dues posting benchmark (dues issue): cash payments posted per second through the
service layer, with p50/p99 latency per payment, printed beside a raw-SQL insert of
the same rows on the same machine in the same run; and standing recomputed for
100,000 members at once.

    .venv/bin/python bench/dues_posting.py                   # everything (10-20 minutes on 2 busy cores)
    .venv/bin/python bench/dues_posting.py --quick           # smoke run (small numbers)
    .venv/bin/python bench/dues_posting.py --only sqlite     # or postgres, standing (comma-separated)

Everything runs on 127.0.0.1. Nothing here asserts a time (DESIGN §8); the figures
are printed with the machine they ran on. Targets from the issue: >= 500 payments/s
on SQLite (synchronous=FULL), >= 800/s on PostgreSQL with 8 concurrent writers,
p99 < 25 ms; standing for 100,000 members in <= 10 s.

Posting. Each measurement gets its own fresh database (a file in a temporary folder,
or a throw-away PostgreSQL database), built by the migrations, with one branch,
one collector per writer and --members members. W writers (asyncio tasks) share P
payments: writer w is collector w, with its own receipt book, and pays its list in
order, one payment at a time. A payment is what POST /dues/collect does with the
database: `PaymentBatcher.submit` (dues.batch), the process's group committer,
which posts whatever is waiting (up to 64) in one transaction with
`dues.services.record_cash_payments`, commits once and answers each caller — the
members looked up, the receipt numbers checked, the chart and the collectors' cash
accounts read with the chain head locked, the journal entries (hash-chained) with
their postings, the payment rows and the audit events, in a constant number of
statements per batch. Latency is from the submit to its answer (the commit done),
so with W > 1 it includes waiting for the batch before. In these rows members have
no phone number; "with SMS receipts" gives every member one, so each payment also
schedules its SMS receipt (a notice row and its due-work row, in the same
transaction, as POST /dues/collect does; the SMS jobs themselves are not run). "one per transaction
(before)" is `dues.services.record_cash_payment` in its own session and
transaction per payment, as the routes posted before group commit (--no-single
leaves it out). The first 5 % of payments are a warm-up and are not counted. "cpu
ms" is the CPU time of the benchmark process per payment (Python, the event loop
and the driver's threads; not the PostgreSQL server's): on a shared machine it
says more about the cost of the code than the wall-clock figures do. "stmt/pay"
is SQL statements per payment (SQLAlchemy's before_cursor_execute: a multi-row
INSERT or an executemany counts once), "pay/txn" payments per committed
transaction.

  SQLite: the app's engine (WAL, BEGIN IMMEDIATE, one write connection) with
  PRAGMA synchronous=FULL (the app's default is NORMAL), at 1 writer and at 8.
  PostgreSQL: asyncpg, a pool of W connections, 8 writers.

Raw SQL, the floor: the same payments, the same number of writers and the same
engine settings, writing the same rows in one transaction per payment with
hand-written Core statements and nothing else: advance the ledger head (UPDATE ...
RETURNING, which also takes its lock), insert the two postings, the entry header
(the database's balance trigger still runs), the payment, the audit event (INSERT
... RETURNING) and update the audit head. No look-ups, no validation, no ORM,
placeholder hashes. "Raw SQL, batched like the service" writes the same rows
through the same kind of group committer: one transaction for whatever is waiting,
each table in one multi-row statement (on SQLite, INSERT ... RETURNING of several
rows goes one row at a time, as SQLAlchemy cannot learn their order otherwise).
service/raw is the cost of the service layer.

Standing: a fresh database (SQLite, and PostgreSQL when it answers) with N members
(default 100,000) joined over the last four years, about one in seven on the
concessional plan, a few exempt, and a year of cash history in one or two entries
each (about 70 % paid up, some ahead, some one or two months behind, some lapsed),
bulk-inserted with Core statements (placeholder hashes: the chain is not walked
here). Then `dues.standing_bulk.standings_for` (5 queries, compute_standing per
member in Python) is timed three times, in a read-only session, as a report would
call it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.http_floor import PG_ADMIN, _pg, machine  # noqa: E402

T0 = time.monotonic()
TODAY = dt.date.today()
HASH = "0" * 64


def say(*args) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s]", *args, flush=True)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (as the other benches); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- Databases -------------------------------------------------------------------------

class Database:
    """A fresh migrated database: a SQLite file in `workdir` or a throw-away PostgreSQL database."""

    def __init__(self, kind: str, workdir: Path, label: str):
        self.kind, self.label = kind, label
        if kind == "sqlite":
            self.url = f"sqlite+aiosqlite:///{(workdir / f'{uuid.uuid4().hex[:8]}.db').resolve()}"
            self.pg_name = None
        else:
            self.pg_name = f"union_bench_{uuid.uuid4().hex[:10]}"
            self.url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + self.pg_name

    def __enter__(self) -> Database:
        from union.db import migrate

        if self.pg_name:
            asyncio.run(_pg(f"CREATE DATABASE {self.pg_name}"))
        migrate(self.url)
        return self

    def __exit__(self, *exc) -> None:
        if self.pg_name:
            asyncio.run(_pg(f"DROP DATABASE IF EXISTS {self.pg_name} WITH (FORCE)"))

    def engine(self, *, writers: int):
        from union.db import make_engine

        if self.kind == "sqlite":
            # The app's write engine (one connection, BEGIN IMMEDIATE, WAL), synchronous=FULL.
            return make_engine(self.url, synchronous="FULL", single_writer=True)
        return make_engine(self.url, pool_size=max(writers, 1))


# --- Seeding ---------------------------------------------------------------------------

@dataclass
class World:
    branch_id: int
    collectors: list  # union.models.User, one per writer
    member_nos: list[str]
    member_ids: dict[str, int]
    accounts: dict[str, int]  # ledger account id by code


async def seed_people(engine, *, collectors: int, members: int, rng: random.Random, phones: bool = False) -> World:
    """One branch, `collectors` collectors, `members` members (Core inserts), the standard chart. phones:
    every member has a phone number (a placeholder ciphertext: the SMS jobs are not run here)."""
    from sqlalchemy import insert, select

    from dues import ledger
    from union import accounts
    from union.db import make_sessionmaker
    from union.models import Branch, Member

    sessions = make_sessionmaker(engine)
    async with sessions() as db:
        branch = Branch(code="BLR", name="Bengaluru", lat=12.97, lon=77.59)
        db.add(branch)
        await db.flush()
        users = [await accounts.create_user(db, username=f"bench-collector-{i}", password=None,
                                            roles=["collector"], branch_code="BLR") for i in range(collectors)]
        chart = {code: a.id for code, a in (await ledger.ensure_accounts(db)).items()}
        for user in users:
            account = await ledger.collector_cash_account(db, user.id)
            chart[account.code] = account.id
        await db.commit()
        branch_id = branch.id
    nos = [f"BLR-{i:06d}" for i in range(1, members + 1)]
    for start in range(0, members, 5000):
        async with engine.begin() as conn:
            await conn.execute(insert(Member), [
                {"member_no": no, "working_name": f"Member {no[4:]}", "branch_id": branch_id, "language": "kn",
                 "joined_on": TODAY - dt.timedelta(days=rng.randint(0, 4 * 365)),
                 "phone_enc": "placeholder-ciphertext" if phones else None,
                 "created_at": dt.datetime.now(dt.UTC)} for no in nos[start:start + 5000]])
    async with engine.connect() as conn:
        ids = dict((await conn.execute(select(Member.member_no, Member.id))).all())
    return World(branch_id, users, nos, ids, chart)


# --- Posting -----------------------------------------------------------------------------

@dataclass
class Run:
    label: str
    writers: int
    payments: int
    seconds: float
    latencies: list[float]
    cpu: float  # CPU seconds of this process (event loop and driver threads) over the counted payments
    statements: int = 0  # SQL statements sent over the counted payments (before_cursor_execute)
    batches: int = 0  # transactions that wrote them (group commit: fewer than payments)

    @property
    def rate(self) -> float:
        return self.payments / self.seconds if self.seconds else float("nan")


def payment_plan(world: World, count: int, writers: int, rng: random.Random) -> list[list[tuple[str, int, str]]]:
    """Per writer: (member_no, amount_minor, receipt_no) in order. Amounts are one to twelve months."""
    plan: list[list[tuple[str, int, str]]] = [[] for _ in range(writers)]
    for n in range(count):
        plan[n % writers].append((rng.choice(world.member_nos), rng.choice([5000, 10000]) * rng.randint(1, 12),
                                  f"B-{n:07d}"))
    return plan


class Counter:
    """SQL statements sent through an engine (SQLAlchemy's before_cursor_execute: one per round trip,
    an executemany or a multi-row INSERT counting once), and transactions committed."""

    def __init__(self, engine):
        from sqlalchemy import event

        self.statements = self.commits = 0
        self._engine = engine.sync_engine

        def statement(*_args, **_kw):
            self.statements += 1

        def commit(*_args, **_kw):
            self.commits += 1

        self._hooks = [("before_cursor_execute", statement), ("commit", commit)]
        for name, fn in self._hooks:
            event.listen(self._engine, name, fn)

    def snapshot(self) -> tuple[int, int]:
        return self.statements, self.commits


class GroupCommitter:
    """The raw floor's group commit, like dues.batch.PaymentBatcher: callers submit, one writer task
    takes everything queued (up to `cap`) and writes it with `write(items)` in one transaction."""

    def __init__(self, write, cap: int = 64):
        self.write, self.cap = write, cap
        self.waiting: list = []
        self.task: asyncio.Task | None = None

    async def submit(self, item) -> None:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((item, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self.drain())
        await future

    async def drain(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting[:self.cap], self.waiting[self.cap:]
            try:
                await self.write([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the bench fails loudly in check_posted
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for _, future in batch:
                future.set_result(None)


async def run_writers(label: str, writers: int, plan, pay, *, warmup: float = 0.05,
                      counter: Counter | None = None) -> Run:
    """Each writer pays its list in order; the first `warmup` share of each list is not counted."""
    latencies: list[list[float]] = [[] for _ in range(writers)]
    counted_at: list[tuple[int, int]] = []
    skip = [int(len(p) * warmup) for p in plan]
    ready = asyncio.Event()
    counted_start: list[float] = []
    cpu_start: list[float] = []

    async def writer(w: int) -> None:
        for i, payment in enumerate(plan[w]):
            if i == skip[w]:
                counted_start.append(time.perf_counter())
                if len(counted_start) == writers:
                    cpu_start.append(time.process_time())
                    if counter is not None:
                        counted_at.append(counter.snapshot())
                    ready.set()
                await ready.wait()  # every writer is warm before the clock starts
            started = time.perf_counter()
            await pay(w, *payment)
            if i >= skip[w]:
                latencies[w].append(time.perf_counter() - started)

    await asyncio.gather(*(writer(w) for w in range(writers)))
    ended, cpu_end = time.perf_counter(), time.process_time()
    flat = [x for per in latencies for x in per]
    run = Run(label, writers, len(flat), ended - max(counted_start), flat, cpu_end - cpu_start[0])
    if counter is not None and counted_at:
        run.statements = counter.statements - counted_at[0][0]
        run.batches = counter.commits - counted_at[0][1]
    return run


async def service_run(db: Database, *, writers: int, payments: int, members: int, seed: int,
                      batched: bool = True, phones: bool = False) -> Run:
    """batched: through dues.batch.PaymentBatcher, as the routes post (group commit); otherwise
    dues.services.record_cash_payment in its own transaction per payment (the path before it).
    phones: every member has a phone, so each payment also schedules its SMS receipt."""
    from dues.batch import PaymentBatcher
    from dues.money import Money
    from dues.services import PaymentRequest, record_cash_payment
    from union.db import make_sessionmaker
    from union.models import Role
    from union.policy import Principal

    engine = db.engine(writers=writers)
    try:
        rng = random.Random(seed)
        world = await seed_people(engine, collectors=writers, members=members, rng=rng, phones=phones)
        plan = payment_plan(world, payments, writers, rng)
        sessions = make_sessionmaker(engine)
        principals = [Principal(user=u, grants={Role.collector: {world.branch_id}}) for u in world.collectors]
        batcher = PaymentBatcher(sessions)
        counter = Counter(engine)

        async def pay_batched(w: int, member_no: str, amount: int, receipt_no: str) -> None:
            await batcher.submit(PaymentRequest(member_no=member_no, amount=Money(amount, "INR"),
                                                receipt_no=receipt_no, collector=principals[w], today=TODAY))

        async def pay_alone(w: int, member_no: str, amount: int, receipt_no: str) -> None:
            async with sessions() as session:
                await record_cash_payment(session=session, member_no=member_no, amount=Money(amount, "INR"),
                                          receipt_no=receipt_no, collector=principals[w], today=TODAY)
                await session.commit()

        label = "service, group commit" if batched else "service, one per transaction (before)"
        label += ", with SMS receipts" if phones else ""
        run = await run_writers(f"{label} ({db.label})", writers, plan, pay_batched if batched else pay_alone,
                                counter=counter)
        await batcher.close()
        await check_posted(engine, payments)
        if batched:
            await check_chains(engine)
        if phones:
            await check_receipts(engine, payments)
        return run
    finally:
        await engine.dispose()


async def check_chains(engine) -> None:
    """The group commit's entries and audit events chain as the single path's do."""
    from dues.ledger import verify_ledger_chain
    from union.audit import verify_chain
    from union.db import make_sessionmaker

    async with make_sessionmaker(engine)() as session:
        ledger, audit = await verify_ledger_chain(session), await verify_chain(session)
    if not (ledger.intact and audit.intact):
        raise SystemExit(f"the run broke a chain: ledger {ledger}, audit {audit}")


async def raw_run(db: Database, *, writers: int, payments: int, members: int, seed: int,
                  batched: bool = False) -> Run:
    from sqlalchemy import insert, update

    from dues.models import CashPayment, JournalEntry, LedgerHead, Posting
    from union.models import AuditEvent, AuditHead

    engine = db.engine(writers=writers)
    try:
        rng = random.Random(seed)
        world = await seed_people(engine, collectors=writers, members=members, rng=rng)
        plan = payment_plan(world, payments, writers, rng)
        income = world.accounts["dues_income"]
        counter = Counter(engine)

        def rows(w: int, member_no: str, amount: int, receipt_no: str, seq: int):
            collector = world.collectors[w]
            member_id = world.member_ids[member_no]
            entry_id, now = str(uuid.uuid4()), dt.datetime.now(dt.UTC)
            postings = [
                {"entry_id": entry_id, "account_id": world.accounts[f"cash:collector:{collector.id}"],
                 "amount_minor": amount, "currency": "INR"},
                {"entry_id": entry_id, "account_id": income, "amount_minor": -amount, "currency": "INR"}]
            entry = dict(id=entry_id, idempotency_key=f"cash:{collector.id}:{receipt_no}", kind="cash_payment",
                         description=f"Cash dues from member {member_no}, receipt {receipt_no}", effective_date=TODAY,
                         posted_at=now, created_by_user_id=collector.id, member_id=member_id, content_hash=HASH,
                         prev_hash=HASH, hash=HASH, seq=seq)
            payment = dict(member_id=member_id, collector_user_id=collector.id, amount_minor=amount, currency="INR",
                           receipt_no=receipt_no, entry_id=entry_id, created_at=now)
            event = dict(at=now, actor_user_id=collector.id, actor=collector.username, action="dues.cash_payment",
                         target_type="member", target_id=member_no, prev_hash=HASH, hash=HASH)
            return postings, entry, payment, event

        def head(n: int):
            return (update(LedgerHead).where(LedgerHead.id == 1)
                    .values(last_seq=LedgerHead.last_seq + n, last_hash=HASH).returning(LedgerHead.last_seq))

        async def pay(w: int, member_no: str, amount: int, receipt_no: str) -> None:
            async with engine.begin() as conn:
                seq = (await conn.execute(head(1))).scalar_one()
                postings, entry, payment, event = rows(w, member_no, amount, receipt_no, seq)
                await conn.execute(insert(Posting), postings)
                await conn.execute(insert(JournalEntry).values(**entry))
                payment_id = (await conn.execute(insert(CashPayment).values(**payment)
                                                 .returning(CashPayment.id))).scalar_one()
                event_id = (await conn.execute(insert(AuditEvent).values(
                    **event, detail=f'{{"payment_id":{payment_id}}}').returning(AuditEvent.id))).scalar_one()
                await conn.execute(update(AuditHead).where(AuditHead.id == 1).values(last_id=event_id, last_hash=HASH))

        async def write_batch(items) -> None:
            """The same rows for a batch, in the fewest statements: the floor of the group commit."""
            async with engine.begin() as conn:
                last = (await conn.execute(head(len(items)))).scalar_one()
                made = [rows(*item, seq=last - len(items) + n) for n, item in enumerate(items, start=1)]
                await conn.execute(insert(Posting), [p for postings, _, _, _ in made for p in postings])
                await conn.execute(insert(JournalEntry), [entry for _, entry, _, _ in made])
                payment_ids = (await conn.execute(
                    insert(CashPayment).returning(CashPayment.id, sort_by_parameter_order=True),
                    [payment for _, _, payment, _ in made])).scalars().all()
                event_ids = (await conn.execute(
                    insert(AuditEvent).returning(AuditEvent.id, sort_by_parameter_order=True),
                    [event | {"detail": f'{{"payment_id":{pid}}}'} for (_, _, _, event), pid
                     in zip(made, payment_ids)])).scalars().all()
                await conn.execute(update(AuditHead).where(AuditHead.id == 1)
                                   .values(last_id=event_ids[-1], last_hash=HASH))

        committer = GroupCommitter(write_batch)

        async def pay_batched(w: int, member_no: str, amount: int, receipt_no: str) -> None:
            await committer.submit((w, member_no, amount, receipt_no))

        label = "raw SQL, batched like the service" if batched else "raw SQL, the same rows"
        run = await run_writers(f"{label} ({db.label})", writers, plan, pay_batched if batched else pay,
                                counter=counter)
        await check_posted(engine, payments)
        return run
    finally:
        await engine.dispose()


async def check_receipts(engine, payments: int) -> None:
    """Every payment of a member with a phone has its SMS receipt scheduled: a notice and its due work."""
    from sqlalchemy import func, select

    from dues.cash_ops_models import DuesNotice
    from union.models import DueWork

    async with engine.connect() as conn:
        notices = (await conn.execute(select(func.count()).select_from(DuesNotice))).scalar_one()
        works = (await conn.execute(select(func.count()).select_from(DueWork)
                                    .where(DueWork.key.like("dues-notice:%")))).scalar_one()
    if (notices, works) != (payments, payments):
        raise SystemExit(f"the run lost receipts: {notices} notices, {works} due work rows for {payments} payments")


async def check_posted(engine, payments: int) -> None:
    """Every payment made it: as many payments as planned, two postings each, balanced books."""
    from sqlalchemy import func, select

    from dues.models import CashPayment, Posting

    async with engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(CashPayment))).scalar_one()
        postings, total = (await conn.execute(select(func.count(), func.coalesce(func.sum(Posting.amount_minor), 0))
                                              .select_from(Posting))).one()
    if (count, postings, int(total)) != (payments, 2 * payments, 0):
        raise SystemExit(f"the run lost payments: {count} payments, {postings} postings, total {total}")


# --- Standing ------------------------------------------------------------------------------

async def seed_history(engine, world: World, rng: random.Random) -> dict[str, int]:
    """Plans, exemptions and a year of cash history for every member (Core inserts). Returns what was made."""
    from sqlalchemy import insert, select

    from dues.models import DuesAccount, DuesPlan, JournalEntry, Posting
    from union.models import Member

    async with engine.connect() as conn:
        plans = dict((await conn.execute(select(DuesPlan.code, DuesPlan.id))).all())
        joined = dict((await conn.execute(select(Member.id, Member.joined_on))).all())
    cash = world.accounts[f"cash:collector:{world.collectors[0].id}"]
    income = world.accounts["dues_income"]
    made = {"entries": 0, "accounts": 0}
    ids = sorted(world.member_ids.values())
    for start in range(0, len(ids), 5000):
        accounts, postings, entries = [], [], []
        for member_id in ids[start:start + 5000]:
            monthly = 10000
            if rng.random() < 0.15:
                monthly = 5000
                exempt = rng.random() < 0.02
                accounts.append({"member_id": member_id, "plan_id": plans["concessional"], "exempt": exempt,
                                 "exempt_reason": "hardship" if exempt else "", "updated_at": dt.datetime.now(dt.UTC)})
            j = joined[member_id]
            due = (TODAY.year - j.year) * 12 + TODAY.month - j.month + 1
            pattern = rng.random()
            months = (due if pattern < 0.70 else due + rng.randint(1, 3) if pattern < 0.78
                      else due - rng.randint(1, 2) if pattern < 0.90 else due - rng.randint(3, 12))
            if months <= 0:
                continue
            # Most of it paid before the last year, the rest in one or two payments in it.
            parts = [months * monthly] if rng.random() < 0.5 else [months * monthly // 2, months * monthly
                                                                  - months * monthly // 2]
            for amount in parts:
                if amount <= 0:
                    continue
                entry_id = str(uuid.uuid4())
                postings += [{"entry_id": entry_id, "account_id": cash, "amount_minor": amount, "currency": "INR"},
                             {"entry_id": entry_id, "account_id": income, "amount_minor": -amount, "currency": "INR"}]
                entries.append({"id": entry_id, "idempotency_key": f"hist:{entry_id}", "kind": "cash_payment",
                                "description": "", "effective_date": TODAY - dt.timedelta(days=rng.randint(0, 365)),
                                "posted_at": dt.datetime.now(dt.UTC), "member_id": member_id, "content_hash": HASH,
                                "prev_hash": HASH, "hash": HASH, "seq": 0})
        async with engine.begin() as conn:
            seq = made["entries"]
            for n, e in enumerate(entries, start=1):
                e["seq"] = seq + n
            if accounts:
                await conn.execute(insert(DuesAccount), accounts)
            if postings:
                await conn.execute(insert(Posting), postings)  # postings before their headers
                await conn.execute(insert(JournalEntry), entries)
        made["entries"] += len(entries)
        made["accounts"] += len(accounts)
    return made


async def standing_run(db: Database, *, members: int, seed: int, repeats: int = 3) -> dict:
    from dues.standing_bulk import count_by_status, standings_for
    from union.db import make_engine, make_sessionmaker

    engine = db.engine(writers=2)
    reader_engine = make_engine(db.url) if db.kind == "sqlite" else engine
    try:
        rng = random.Random(seed)
        say(f"standing: {members:,} members into {db.label} …")
        world = await seed_people(engine, collectors=1, members=members, rng=rng)
        made = await seed_history(engine, world, rng)
        say(f"standing: {made['entries']:,} entries, {made['accounts']:,} dues accounts; timing …")
        reader = make_sessionmaker(reader_engine, read_only=True)
        times, result = [], {}
        for _ in range(repeats):
            started = time.perf_counter()
            async with reader() as session:
                result = await standings_for(session, today=TODAY, grace_months=2)
            times.append(time.perf_counter() - started)
        return {"label": db.label, "members": len(result), "entries": made["entries"], "times": times,
                "counts": count_by_status(result.values())}
    finally:
        if reader_engine is not engine:
            await reader_engine.dispose()
        await engine.dispose()


# --- Main ------------------------------------------------------------------------------------

def postgres_answers() -> bool:
    try:
        asyncio.run(_pg("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=1500, help="payments per measurement (default 1500)")
    parser.add_argument("--members", type=int, default=2000, help="members in each posting database (default 2000)")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers (default 8)")
    parser.add_argument("--standing-members", type=int, default=100_000, help="members for the standing run")
    parser.add_argument("--only", default="sqlite,postgres,standing",
                        help="comma-separated: sqlite, postgres, standing")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small numbers, to check the bench works")
    parser.add_argument("--no-single", action="store_true",
                        help="leave out the one-payment-per-transaction service row (the path before group commit)")
    args = parser.parse_args()
    if args.quick:
        args.payments, args.members, args.standing_members = 200, 200, 5000
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    pg = postgres_answers()
    workdir = Path(tempfile.mkdtemp(prefix="union-bench-dues-"))
    runs: list[tuple[Run, ...]] = []
    standings: list[dict] = []
    notes: list[str] = []
    try:
        configs = []
        if "sqlite" in only:
            configs += [("sqlite", 1), ("sqlite", args.writers)]
        if "postgres" in only:
            if pg:
                configs.append(("postgresql", args.writers))
            else:
                notes.append("PostgreSQL did not answer at " + PG_ADMIN + ": its runs were skipped.")
        for kind, writers in configs:
            group = []
            variants = [("service, group commit", service_run, {"batched": True}),
                        ("service, group commit, with SMS receipts", service_run, {"batched": True, "phones": True})]
            if not args.no_single:
                variants.append(("service, one per transaction", service_run, {"batched": False}))
            variants += [("raw", raw_run, {}), ("raw, batched", raw_run, {"batched": True})]
            for what, fn, options in variants:
                label = (f"{'SQLite, synchronous=FULL' if kind == 'sqlite' else 'PostgreSQL'}, "
                         f"{writers} writer{'s' if writers > 1 else ''}")
                with Database(kind, workdir, label) as db:
                    say(f"{what}: {args.payments:,} payments, {db.label} …")
                    group.append(asyncio.run(fn(db, writers=writers, payments=args.payments, members=args.members,
                                                seed=args.seed, **options)))
            runs.append(tuple(group))
        if "standing" in only:
            for kind in ("sqlite", "postgresql"):
                if kind == "postgresql" and not pg:
                    continue
                with Database(kind, workdir, "SQLite" if kind == "sqlite" else "PostgreSQL") as db:
                    standings.append(asyncio.run(standing_run(db, members=args.standing_members, seed=args.seed)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print("Dues posting benchmark,", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    for key, value in machine().items():
        print(f"  {key}: {value}")
    if runs:
        print()
        print(f"Posting {args.payments:,} cash payments (first 5 % warm-up, not counted), {args.members:,} members:")
        header = (f"  {'what':<66}{'payments/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'cpu ms':>9}"
                  f"{'stmt/pay':>9}{'pay/txn':>8}")
        print(header)
        print("  " + "-" * (len(header) - 2))
        for group in runs:
            for run in group:
                lat = [x * 1000 for x in run.latencies]
                print(f"  {run.label:<66}{run.rate:>11.0f}{pct(lat, 0.50):>9.2f}{pct(lat, 0.99):>9.2f}"
                      f"{max(lat):>9.2f}{run.cpu / run.payments * 1000:>9.2f}"
                      f"{run.statements / run.payments:>9.2f}{run.payments / max(run.batches, 1):>8.1f}")
            service, raw = group[0], next(r for r in group if r.label.startswith("raw SQL, the same rows"))
            batched_raw = group[-1]
            for name, floor in (("service/raw", raw), ("service/raw batched", batched_raw)):
                print(f"  {'  ' + name:<66}{service.rate / floor.rate:>11.2f}"
                      f"{pct(service.latencies, .5) / pct(floor.latencies, .5):>9.2f}"
                      f"{pct(service.latencies, .99) / pct(floor.latencies, .99):>9.2f}{'':>9}"
                      f"{service.cpu / service.payments / (floor.cpu / floor.payments):>9.2f}")
    if runs:
        print("  cpu ms: CPU time of the benchmark process per payment (Python, event loop, driver threads;"
              " not the PostgreSQL server's)")
        print("  stmt/pay: SQL statements per payment (a multi-row INSERT is one); pay/txn: payments per"
              " committed transaction")
    for s in standings:
        print()
        times = ", ".join(f"{t:.2f}" for t in s["times"])
        print(f"Standing of {s['members']:,} members ({s['entries']:,} ledger entries), {s['label']}: "
              f"{times} s (median {statistics.median(s['times']):.2f} s)")
        print("  " + ", ".join(f"{k} {v:,}" for k, v in s["counts"].items()))
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
