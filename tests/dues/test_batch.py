"""Group commit of cash payments (dues.services.record_cash_payments, dues.batch.PaymentBatcher):
each request of a batch gets its own outcome, the same error the single path gives it, and
nothing half-posted; the ledger and audit chains verify after batches; concurrent submissions
through the committer post each payment exactly once; a batch whose write fails falls back to
one transaction per request; the statements of a batch do not grow with its size."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.exc import IntegrityError

from dues import batch as batch_module
from dues import joining, ledger
from dues.batch import BatcherClosed, PaymentBatcher
from dues.errors import PeriodClosed
from dues.models import CashPayment, DuesPlan, JournalEntry, Posting
from dues.money import Money
from dues.services import PaymentRequest, record_cash_payment, record_cash_payments
from tests.helpers import quick_user
from tests.union.test_policy import enrol
from treasury.models import AccountingPeriod
from union import accounts, audit
from union.errors import Conflict, NotFound
from union.models import AuditEvent

TODAY = dt.date.today()


async def principal(services, user):
    async with services.reader() as db:
        return await accounts.principal_for(db, user, "session")


@pytest.fixture
async def world(services, branches):
    """Two Bengaluru members and one in Mysuru; two Bengaluru collectors and one in Mysuru."""
    made = {"a": await enrol(services, "Asha Batch", "BLR"), "b": await enrol(services, "Bina Batch", "BLR"),
            "c": await enrol(services, "Chitra Batch", "MYS")}
    for name, branch in (("col1", "BLR"), ("col2", "BLR"), ("colm", "MYS")):
        made[name] = await principal(services, await quick_user(services, f"batch-{name}", ["collector"], branch))
    return made


def req(world, member, collector="col1", amount=10000, receipt="R-1", **kw) -> PaymentRequest:
    member_no = world[member].member_no if member in world else member
    return PaymentRequest(member_no=member_no, amount=Money(amount) if isinstance(amount, int) else amount,
                          receipt_no=receipt, collector=world[collector], today=kw.pop("today", TODAY), **kw)


async def counts(services) -> tuple[int, int, int, int]:
    async with services.reader() as db:
        found = [(await db.execute(select(func.count()).select_from(t))).scalar_one()
                 for t in (JournalEntry, Posting, CashPayment)]
        found.append((await db.execute(select(func.count()).select_from(AuditEvent)
                                       .where(AuditEvent.action == "dues.cash_payment"))).scalar_one())
    return tuple(found)


async def chains_intact(services) -> None:
    async with services.reader() as db:
        report = await ledger.verify_ledger_chain(db)
        assert report.intact, report
        trail = await audit.verify_chain(db)
        assert trail.intact, trail


async def single_path_error(services, request: PaymentRequest) -> Exception:
    """What record_cash_payment raises for the request (rolled back)."""
    async with services.sessions() as db:
        with pytest.raises(Exception) as caught:
            await record_cash_payment(session=db, member_no=request.member_no, amount=request.amount,
                                      receipt_no=request.receipt_no, collector=request.collector,
                                      months=request.months, currency=request.currency, today=request.today)
        await db.rollback()
    return caught.value


def same_error(got, expected) -> None:
    assert type(got) is type(expected)
    assert (got.message, got.field, got.status_code) == (expected.message, expected.field, expected.status_code)


async def test_each_request_gets_its_own_outcome(services, world):
    async with services.sessions() as db:
        await record_cash_payment(session=db, member_no=world["a"].member_no, amount=Money(10000),
                                  receipt_no="R-OLD", collector=world["col1"], today=TODAY)
        await db.commit()
    before = await counts(services)
    requests = [
        req(world, "a", receipt="R-1", months=1),  # good
        req(world, "b", amount=5000, receipt="R-1"),  # the same receipt again, within the batch
        req(world, "a", receipt="R-OLD"),  # a receipt already in the database
        req(world, "BLR-99999", receipt="R-2"),  # no such member
        req(world, "c", receipt="R-3"),  # another branch's member
        req(world, "a", amount=Money(0), receipt="R-4"),  # a bad amount
        req(world, "b", collector="col2", amount=5000, receipt="R-1"),  # another collector's receipt book: good
        req(world, " " + world["b"].member_no.lower(), amount=3000, receipt=" R-5 "),  # good, written loosely
    ]
    async with services.sessions() as db:
        outcomes = await record_cash_payments(db, requests)
        await db.commit()
    assert [o.ok for o in outcomes] == [True, False, False, False, False, False, True, True]
    for outcome in outcomes:
        if not outcome.ok:
            same_error(outcome.error, await single_path_error(services, outcome.request))
    assert isinstance(outcomes[1].error, Conflict) and isinstance(outcomes[2].error, Conflict)
    assert isinstance(outcomes[3].error, NotFound) and isinstance(outcomes[4].error, NotFound)
    assert await counts(services) == (before[0] + 3, before[1] + 6, before[2] + 3, before[3] + 3)

    async with services.reader() as db:
        payments = {p.id: p for p in (await db.execute(select(CashPayment))).scalars()}
        for outcome in (outcomes[0], outcomes[6], outcomes[7]):
            stored = payments[outcome.payment.id]
            assert (stored.member_id, stored.amount_minor, stored.receipt_no, stored.months, stored.entry_id) == (
                outcome.payment.member_id, outcome.payment.amount_minor, outcome.payment.receipt_no,
                outcome.payment.months, outcome.entry_id)
            entry = await db.get(JournalEntry, stored.entry_id)
            collector_id = outcome.request.collector.user.id
            assert entry.idempotency_key == f"cash:{collector_id}:{stored.receipt_no}"
            assert entry.description == (f"Cash dues from member {outcome.member.member_no}, "
                                         f"receipt {stored.receipt_no}")
            assert await ledger.entry_lines(db, entry.id) == [
                (f"cash:collector:{collector_id}", Money(stored.amount_minor)),
                ("dues_income", Money(-stored.amount_minor))]
            event_row = (await db.execute(select(AuditEvent).where(
                AuditEvent.action == "dues.cash_payment",
                AuditEvent.detail.contains(f'"payment_id":{stored.id},')))).scalar_one()
            assert json.loads(event_row.detail) == {
                "payment_id": stored.id, "amount_minor": stored.amount_minor, "currency": "INR",
                "receipt_no": stored.receipt_no, "entry_id": entry.id}
            assert (event_row.actor_user_id, event_row.target_type, event_row.target_id) == (
                collector_id, "member", outcome.member.member_no)
        assert payments[outcomes[7].payment.id].receipt_no == "R-5"
        # In request order along the chain.
        seqs = [(await db.get(JournalEntry, o.entry_id)).seq for o in (outcomes[0], outcomes[6], outcomes[7])]
        assert seqs == sorted(seqs) and seqs[-1] - seqs[0] == 2
    await chains_intact(services)

    # The batch after it sees the batch's receipts; single payments and batches interleave on one chain.
    async with services.sessions() as db:
        again = await record_cash_payments(db, [req(world, "b", receipt="R-1"), req(world, "b", receipt="R-6")])
        await record_cash_payment(session=db, member_no=world["b"].member_no, amount=Money(100), receipt_no="R-7",
                                  collector=world["col1"], today=TODAY)
        await db.commit()
    assert isinstance(again[0].error, Conflict) and again[1].ok
    await chains_intact(services)


async def test_a_batch_with_no_good_request_writes_nothing(services, world):
    async with services.sessions() as db:
        outcomes = await record_cash_payments(db, [req(world, "c"), req(world, "BLR-0"), req(world, "a", amount=-5)])
        await db.commit()
    assert not any(o.ok for o in outcomes)
    assert await counts(services) == (0, 0, 0, 0)


async def test_joining_fee_is_taken_once_within_a_batch(services, world):
    async with services.sessions() as db:
        await db.execute(update(DuesPlan).where(DuesPlan.code == "standard").values(joining_fee_minor=5000))
        await db.commit()
    requests = [req(world, "a", amount=3000, receipt="J-1"),  # does not cover the fee: refused
                req(world, "a", amount=15000, receipt="J-2"),  # the fee and Rs 100 of dues
                req(world, "a", amount=10000, receipt="J-3"),  # the fee is paid now: all dues
                req(world, "b", amount=5000, receipt="J-4")]  # exactly the fee
    expected = await single_path_error(services, requests[0])
    async with services.sessions() as db:
        outcomes = await record_cash_payments(db, requests)
        await db.commit()
    same_error(outcomes[0].error, expected)
    assert [o.ok for o in outcomes] == [False, True, True, True]
    async with services.reader() as db:
        assert await joining.joining_fee_paid(db, world["a"].id) == 5000
        assert await joining.joining_fee_paid(db, world["b"].id) == 5000
        cash = f"cash:collector:{world['col1'].user.id}"
        assert await ledger.entry_lines(db, outcomes[1].entry_id) == [
            (cash, Money(15000)), ("joining_fee_income", Money(-5000)), ("dues_income", Money(-10000))]
        assert await ledger.entry_lines(db, outcomes[2].entry_id) == [(cash, Money(10000)),
                                                                       ("dues_income", Money(-10000))]
        assert await ledger.entry_lines(db, outcomes[3].entry_id) == [(cash, Money(5000)),
                                                                       ("joining_fee_income", Money(-5000))]
    await chains_intact(services)


async def test_concurrent_submissions_post_each_payment_once(services, world):
    """Forty callers at once, some with the same receipt, through two committers (as two processes)
    sharing the database: every receipt is posted once, the repeats get a Conflict."""
    first, second = PaymentBatcher(services.sessions), PaymentBatcher(services.sessions)
    plan = [(first if n % 2 else second, req(world, "ab"[n % 2], collector=("col1", "col2")[n % 3 == 0],
                                               amount=1000 + n, receipt=f"C-{n % 30}"))
            for n in range(40)]

    async def submit(batcher, request):
        try:
            return await batcher.submit(request)
        except Conflict as exc:
            return exc

    results = await asyncio.gather(*(submit(b, r) for b, r in plan))
    await first.close()
    await second.close()
    posted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, Conflict) and r.field == "receipt_no" for r in refused)
    keys = {(r.collector.user.id, r.receipt_no) for _b, r in plan}
    assert len(posted) == len(keys) and len(refused) == len(plan) - len(keys)
    async with services.reader() as db:
        stored = (await db.execute(select(CashPayment.collector_user_id, CashPayment.receipt_no))).all()
    assert sorted(stored) == sorted(keys)
    assert sorted(p.payment.id for p in posted) == sorted({p.payment.id for p in posted})
    assert first.batches + second.batches < len(plan)  # grouped: fewer transactions than payments
    assert await counts(services) == (len(keys), 2 * len(keys), len(keys), len(keys))
    await chains_intact(services)


async def test_a_failed_batch_falls_back_to_one_by_one(services, world, monkeypatch):
    """The batch's write fails after writing (as a race caught by a unique constraint would): it is
    rolled back whole, then each request is posted in its own transaction."""
    real = batch_module.record_cash_payments

    async def failing(session, requests):
        outcomes = await real(session, requests)
        if len(requests) > 1:
            raise IntegrityError("INSERT", {}, Exception("simulated race"))
        return outcomes

    monkeypatch.setattr(batch_module, "record_cash_payments", failing)
    batcher = PaymentBatcher(services.sessions)
    requests = [req(world, "a", receipt="F-1"), req(world, "c", receipt="F-2"), req(world, "b", receipt="F-3"),
                req(world, "a", receipt="F-1")]
    results = await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
    await batcher.close()
    assert batcher.fallbacks == 1
    assert results[0].payment.receipt_no == "F-1" and results[2].payment.receipt_no == "F-3"
    assert isinstance(results[1], NotFound) and isinstance(results[3], Conflict)
    assert await counts(services) == (2, 4, 2, 2)
    await chains_intact(services)


async def test_a_closed_month_fails_its_payment_alone(services, world):
    async with services.sessions() as db:
        db.add(AccountingPeriod(month="2025-01"))
        await db.commit()
    batcher = PaymentBatcher(services.sessions)
    requests = [req(world, "a", receipt="P-1"), req(world, "b", receipt="P-2", today=dt.date(2025, 1, 15)),
                req(world, "b", receipt="P-3")]
    results = await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
    await batcher.close()
    assert isinstance(results[1], PeriodClosed) and results[1].field == "effective_date"
    assert results[0].payment.receipt_no == "P-1" and results[2].payment.receipt_no == "P-3"
    assert await counts(services) == (2, 4, 2, 2)
    await chains_intact(services)


async def test_close_finishes_what_is_queued_then_refuses(services, world):
    batcher = PaymentBatcher(services.sessions)
    tasks = [asyncio.create_task(batcher.submit(req(world, "a", receipt=f"Q-{n}"))) for n in range(5)]
    await asyncio.sleep(0)  # the callers are queued
    await batcher.close()
    assert all(outcome.ok for outcome in await asyncio.gather(*tasks))
    with pytest.raises(BatcherClosed):
        await batcher.submit(req(world, "a", receipt="Q-9"))
    assert await counts(services) == (5, 10, 5, 5)


async def test_statements_do_not_grow_with_the_batch(services, world):
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        seen.append(statement)

    async with services.sessions() as db:  # the chart and the collector's cash account exist from here on
        await record_cash_payment(session=db, member_no=world["a"].member_no, amount=Money(100), receipt_no="S-0",
                                  collector=world["col1"], today=TODAY)
        await db.commit()
    engine = services.writer.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        sizes = {}
        for n, size in enumerate((1, 12)):
            seen.clear()
            async with services.sessions() as db:
                outcomes = await record_cash_payments(db, [req(world, "ab"[i % 2], receipt=f"S-{n + 1}-{i}")
                                                           for i in range(size)])
                await db.commit()
            assert all(o.ok for o in outcomes)
            sizes[size] = len(seen)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert sizes[1] == sizes[12], sizes
    await chains_intact(services)


async def test_api_payments_at_once_go_through_the_committer(web, services, branches, make_token):
    member = await enrol(services, "Devi Batch", "BLR")
    user = await quick_user(services, "batch-api", ["collector"], "BLR")
    token = await make_token(user)

    def body(receipt):
        return {"member_no": member.member_no, "amount_minor": 10000, "currency": "INR", "receipt_no": receipt}

    responses = await asyncio.gather(*(web.api("POST", "/api/dues/payments", token=token, json=body(f"W-{n % 6}"))
                                       for n in range(8)))
    assert sorted(r.status_code for r in responses) == [201] * 6 + [409] * 2
    for r in responses:
        if r.status_code == 201:
            assert r.json()["member_no"] == member.member_no and r.json()["standing"]["currency"] == "INR"
    assert await counts(services) == (6, 12, 6, 6)
    await chains_intact(services)


async def test_each_caller_gets_its_error_in_its_own_language(services, world):
    """The writer task records everyone's requests: each error is still in its caller's language."""
    from union import i18n

    batcher = PaymentBatcher(services.sessions)

    async def submit(language, request):
        i18n.set_language(language)  # this caller's task only
        try:
            await batcher.submit(request)
        except NotFound as exc:
            return exc.message

    messages = await asyncio.gather(submit("en", req(world, "BLR-0", receipt="L-1")),
                                    submit("kn", req(world, "BLR-0", receipt="L-2")),
                                    submit("te", req(world, "c", receipt="L-3")))
    await batcher.close()
    assert messages == ["No member with that number.", "ಆ ಸಂಖ್ಯೆಯ ಸದಸ್ಯೆ ಯಾರೂ ಇಲ್ಲ.", "ఆ సంఖ్యతో ఏ సభ్యులూ లేరు."]


async def test_a_caller_that_gives_up_before_its_batch_posts_nothing(services, world):
    batcher = PaymentBatcher(services.sessions)
    tasks = [asyncio.create_task(batcher.submit(req(world, "a", receipt=f"X-{n}"))) for n in range(3)]
    await asyncio.sleep(0)  # queued, the writer not started yet
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await batcher.close()
    assert isinstance(results[1], asyncio.CancelledError)
    assert results[0].payment.receipt_no == "X-0" and results[2].payment.receipt_no == "X-2"
    async with services.reader() as db:
        assert sorted((await db.execute(select(CashPayment.receipt_no))).scalars()) == ["X-0", "X-2"]
    assert await counts(services) == (2, 4, 2, 2)
    await chains_intact(services)


@pytest.mark.parametrize("backend", ["postgresql"])  # the quick pass runs on PostgreSQL only
async def test_batched_postings_keep_the_order_the_quick_chain_check_reads(services, world, monkeypatch):
    """treasury.chainsql reads postings in id order and expects each entry's postings right after the
    previous entry's: batches posted at once must keep that, or every verification falls back to the
    slow walk."""
    from treasury import chainsql

    batchers = [PaymentBatcher(services.sessions), PaymentBatcher(services.sessions)]
    await asyncio.gather(*(batchers[n % 2].submit(req(world, "ab"[n % 2], amount=500 + n, receipt=f"Q-{n}"))
                           for n in range(24)))
    for b in batchers:
        await b.close()
    monkeypatch.setattr(chainsql, "PARALLEL_FROM", 0)
    monkeypatch.setattr(chainsql, "WORKERS", 3)

    async def no_walk(*a, **kw):
        raise AssertionError("the quick pass doubted an intact chain")
    monkeypatch.setattr(chainsql, "verify_ledger_chain", no_walk)
    async with services.reader() as db:
        report = await chainsql.verify_ledger(db)
    assert report.intact and report.checked == 24


async def test_callers_that_pay_again_as_soon_as_answered_are_all_served(services, world, monkeypatch):
    """Eight collectors each paying a run of payments, the next as soon as the last is answered (as the
    benchmark does): the writer keeps its session while callers keep coming and gives it back between
    runs; nobody is left waiting when a caller queues while the session closes, a failed batch does
    not spoil the session for the next one, and each audit event names its own payment."""
    real = batch_module.record_cash_payments
    failures = [1]

    async def fails_once(session, requests):
        outcomes = await real(session, requests)
        if failures and len(requests) > 1:
            failures.pop()
            raise IntegrityError("INSERT", {}, Exception("simulated race"))
        return outcomes

    monkeypatch.setattr(batch_module, "record_cash_payments", fails_once)
    batcher = PaymentBatcher(services.sessions)

    async def collector(run: int, n: int) -> list:
        return [await batcher.submit(req(world, "ab"[(n + k) % 2], collector=("col1", "col2")[n % 2],
                                         amount=100 + k, receipt=f"R-{run}-{n}-{k}")) for k in range(3)]

    for run in range(2):  # a second run after the writer has stopped
        results = await asyncio.wait_for(asyncio.gather(*(collector(run, n) for n in range(8))), timeout=60)
        assert all(outcome.ok for run in results for outcome in run)
    await batcher.close()
    assert batcher.fallbacks == 1 and batcher.batches < 96
    async with services.reader() as db:
        stored = dict((await db.execute(select(CashPayment.id, CashPayment.receipt_no))).all())
        named = [json.loads(detail) for detail in (await db.execute(
            select(AuditEvent.detail).where(AuditEvent.action == "dues.cash_payment"))).scalars()]
    assert len(stored) == 48 and len(set(stored.values())) == 48
    assert sorted((d["payment_id"], d["receipt_no"]) for d in named) == sorted(stored.items())
    assert await counts(services) == (48, 96, 48, 48)
    await chains_intact(services)


async def test_heads_read_earlier_in_the_session_do_not_go_stale(services, world):
    """A transaction that appends to both chains before and after its cash payments (the payments move
    the heads without the ORM on PostgreSQL): both chains still verify."""
    async with services.sessions() as db:
        await ledger.ensure_accounts(db)
        await audit.record(db, action="test.before", actor=world["col1"].user)
        await ledger.post_entry(db, key="before", kind="transfer", description="before", effective_date=TODAY,
                                lines=[("bank", Money(700)), ("general_fund", Money(-700))])
        await record_cash_payments(db, [req(world, "a", receipt="H-1"), req(world, "b", receipt="H-2")])
        await audit.record(db, action="test.after", actor=world["col1"].user)
        await ledger.post_entry(db, key="after", kind="transfer", description="after", effective_date=TODAY,
                                lines=[("bank", Money(300)), ("general_fund", Money(-300))])
        await db.commit()
    assert await counts(services) == (4, 8, 2, 2)
    await chains_intact(services)


async def test_an_entry_posted_without_its_payment_is_completed_not_posted_twice(services, world):
    """An entry already under a payment's idempotency key without its payment row (a crash between the
    two, in an older version): the same payment gets its payment row on that entry, with no second
    entry; a different payment under the same receipt number is an idempotency conflict."""
    from dues.errors import IdempotencyConflict

    collector, member = world["col1"], world["a"]
    async with services.sessions() as db:
        await ledger.ensure_accounts(db)
        cash = await ledger.collector_cash_account(db, collector.user.id)
        entry = await ledger.post_entry(
            db, key=f"cash:{collector.user.id}:E-1", kind="cash_payment",
            lines=[(cash.code, Money(10000)), ("dues_income", Money(-10000))],
            description=f"Cash dues from member {member.member_no}, receipt E-1", effective_date=TODAY,
            actor=collector.user, member_id=member.id)
        await db.commit()
    async with services.sessions() as db:
        (other,) = await record_cash_payments(db, [req(world, "a", amount=20000, receipt="E-1")])
        await db.rollback()
    assert isinstance(other.error, IdempotencyConflict)
    async with services.sessions() as db:
        (outcome,) = await record_cash_payments(db, [req(world, "a", amount=10000, receipt="E-1")])
        await db.commit()
    assert outcome.ok and outcome.entry_id == entry.id and outcome.payment.entry_id == entry.id
    assert await counts(services) == (1, 2, 1, 1)
    await chains_intact(services)
