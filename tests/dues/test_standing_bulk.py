"""Standing of many members at once (dues.standing_bulk.standings_for) against the
per-member standing (dues.services.standing) on a varied set of members: joined at
different times, both plans, exempt, paid nothing, partly, exactly, ahead, by cash,
by card, with a refund, a reversal and a waiver, and a rate change on the standard
plan; for every member, a given subset, and in chunks; with a constant number of
queries however many members there are."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import event, select

from dues import ledger, standing_bulk
from dues.models import DuesAccount, DuesPlan, DuesRate, EntryKind
from dues.money import Money
from dues.services import standing
from dues.standing_bulk import count_by_status, standings_for
from tests.dues.conftest import post
from union.models import Member

D = dt.date
TODAY = D(2025, 6, 15)
GRACE = 2


async def make_members(services, branches, count: int, *, start: int = 0) -> list[int]:
    """`count` members with varied joining dates, plans, exemptions and payments; returns their ids."""
    async with services.sessions() as db:
        plans = {p.code: p.id for p in (await db.execute(select(DuesPlan))).scalars()}
        made = []
        for i in range(start, start + count):
            joined = D(2023 + i % 3, 1 + i * 5 % 12, 1 + i * 7 % 28)
            if i % 11 == 0:
                joined = TODAY  # joins this month
            member = Member(member_no=f"BLR-{70000 + i:05d}", working_name=f"Bulk {i}", branch_id=branches["BLR"].id,
                            joined_on=joined)
            db.add(member)
            await db.flush()
            if i % 4 == 1:
                db.add(DuesAccount(member_id=member.id, plan_id=plans["concessional"], exempt=(i % 8 == 5)))
            elif i % 13 == 2:
                db.add(DuesAccount(member_id=member.id, plan_id=plans["standard"], exempt=True))
            made.append(member)
        await ledger.ensure_accounts(db)
        await ledger.collector_cash_account(db, 0)
        await db.commit()
    for i, member in zip(range(start, start + count), made):
        # Nothing, all months due, some ahead, one or two behind, many behind, a month and a half behind;
        # in one to three payments.
        due = (TODAY.year - member.joined_on.year) * 12 + TODAY.month - member.joined_on.month + 1
        monthly = 5000 if i % 4 == 1 else 12000
        months = [0, due, due + 3, due - 1, due - 2, due - 6][i % 6] + (0.5 if i % 12 == 5 else 0)
        amount = max(int(months * monthly), 0) // (1 + i % 3)
        for n in range(1 + i % 3):
            if amount:
                await post(services, key=f"bulk:{i}:{n}", kind=EntryKind.cash_payment, member_id=member.id,
                           lines=[("cash:collector:0", Money(amount)), ("dues_income", Money(-amount))])
        if i % 5 == 3:  # a card payment, part of it refunded
            await post(services, key=f"bulk:card:{i}", kind=EntryKind.card_payment, member_id=member.id,
                       lines=[("stripe", Money(25000)), ("dues_income", Money(-25000))])
            await post(services, key=f"bulk:refund:{i}", kind=EntryKind.refund, member_id=member.id,
                       lines=[("refunds", Money(10000)), ("stripe", Money(-10000))])
        if i % 7 == 4:  # a payment entered by mistake and reversed
            wrong = await post(services, key=f"bulk:wrong:{i}", kind=EntryKind.cash_payment, member_id=member.id,
                               lines=[("cash:collector:0", Money(90000)), ("dues_income", Money(-90000))])
            async with services.sessions() as db:
                await ledger.reverse_entry(db, entry_id=wrong.id, key=f"bulk:rev:{i}", reason="wrong member",
                                           actor=None, effective_date=TODAY)
                await db.commit()
        if i % 9 == 6:  # two months waived
            await post(services, key=f"bulk:waive:{i}", kind=EntryKind.waiver, member_id=member.id,
                       lines=[("dues_waived", Money(20000)), ("dues_income", Money(-20000))])
    # Entries without a member never count for anyone.
    await post(services, key=f"bulk:office:{start}", kind=EntryKind.handover,
               lines=[("cash:office", Money(5000)), ("cash:collector:0", Money(-5000))])
    return [m.id for m in made]


async def one_by_one(services, ids) -> dict:
    async with services.reader() as db:
        return {member_id: await standing(db, member=await db.get(Member, member_id), today=TODAY,
                                          grace_months=GRACE) for member_id in ids}


@pytest.fixture
async def rate_change(services):
    """The standard plan goes up to ₹120 from 15 May 2024 (so from June 2024)."""
    async with services.sessions() as db:
        plan = (await db.execute(select(DuesPlan).where(DuesPlan.code == "standard"))).scalar_one()
        db.add(DuesRate(plan_id=plan.id, monthly_minor=12000, currency="INR", effective_from=D(2024, 5, 15)))
        await db.commit()


async def test_bulk_standing_equals_per_member_standing(services, branches, rate_change):
    ids = await make_members(services, branches, 60)
    expected = await one_by_one(services, ids)
    async with services.reader() as db:
        everyone = await standings_for(db, today=TODAY, grace_months=GRACE)
        some = await standings_for(db, today=TODAY, grace_months=GRACE, member_ids=ids[::7] + [10**9])
    assert everyone == expected
    assert some == {i: expected[i] for i in ids[::7]}  # an unknown id is left out
    # The set really is varied: every status, partial months, advance payments.
    counts = count_by_status(everyone.values())
    assert all(counts[s] > 0 for s in ("new", "current", "grace", "lapsed", "exempt")), counts
    assert any(s.paid_through and s.paid_through > "2025-06" for s in everyone.values())
    assert sum(counts.values()) == 60


async def test_chunks_give_the_same_answer(services, branches, monkeypatch):
    ids = await make_members(services, branches, 25)
    async with services.reader() as db:
        whole = await standings_for(db, today=TODAY, grace_months=GRACE, member_ids=ids)
        monkeypatch.setattr(standing_bulk, "CHUNK", 4)
        chunked = await standings_for(db, today=TODAY, grace_months=GRACE, member_ids=reversed(ids))
    assert chunked == whole and len(whole) == 25


async def test_grace_months_are_applied(services, branches):
    ids = await make_members(services, branches, 30)
    async with services.reader() as db:
        strict = await standings_for(db, today=TODAY, grace_months=0)
        lenient = await standings_for(db, today=TODAY, grace_months=6)
    assert count_by_status(strict.values())["grace"] == 0
    assert count_by_status(lenient.values())["grace"] > count_by_status(strict.values())["grace"]
    for member_id in ids:
        assert strict[member_id].paid_through == lenient[member_id].paid_through


async def test_a_constant_number_of_queries(services, branches):
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    await make_members(services, branches, 10)
    event.listen(services.engine.sync_engine, "before_cursor_execute", count)
    try:
        async with services.reader() as db:
            await standings_for(db, today=TODAY, grace_months=GRACE)
        few = len(statements)
        await make_members(services, branches, 40, start=10)
        statements.clear()
        async with services.reader() as db:
            result = await standings_for(db, today=TODAY, grace_months=GRACE)
        many = len(statements)
    finally:
        event.remove(services.engine.sync_engine, "before_cursor_execute", count)
    assert len(result) == 50
    assert few == many
    assert sum(1 for s in statements if s.lstrip().upper().startswith("SELECT")) == 5
