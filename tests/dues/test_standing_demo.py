"""The demo's dues history (dues/demo.py) gives every page something true to show:
a realistic mix of standings (mostly paid up, some ahead, some in grace, some
lapsed, a few new), cash receipts spread over the last year and dated on the
day the cash was taken, each taken by a collector of the member's branch, and
books that add up. Plus properties of the pure payment plan it follows."""

from __future__ import annotations

import datetime as dt
import random

from hypothesis import given, settings as hsettings, strategies as st
from sqlalchemy import func, select

from dues import ledger
from dues.demo import load_dues_demo, plan_payments
from dues.models import CashPayment, JournalEntry
from dues.services import month_index, paid_total
from dues.standing_bulk import count_by_status, standings_for
from union.models import Member, RoleGrant

TODAY = dt.date.today()
N = 120


async def test_demo_history_gives_a_realistic_mix(services, branches):
    rng = random.Random(11)
    async with services.sessions() as db:
        for i in range(N):
            branch = branches["BLR"] if i % 3 else branches["MYS"]
            # Like union/demo.py: joined any day in the last eight years, a few this month.
            joined = TODAY.replace(day=1) if i % 15 == 0 else TODAY - dt.timedelta(days=rng.randrange(0, 8 * 365))
            db.add(Member(member_no=f"{branch.code}-{i + 1:05d}", working_name=f"Demo {i}", branch_id=branch.id,
                          joined_on=joined))
        await db.commit()

    said: list[str] = []
    await load_dues_demo(services, random.Random(2006), said.append)
    assert said[-1].startswith(f"Dues history: {N}/{N} members")

    async with services.reader() as db:
        standings = await standings_for(db, today=TODAY, grace_months=services.settings.grace_months)
        counts = count_by_status(standings.values())
        # Mostly paid up, and every other kind there to see.
        assert counts["current"] >= 0.55 * N, counts
        assert counts["grace"] >= 0.04 * N and counts["lapsed"] >= 0.04 * N, counts
        ahead = [s for s in standings.values() if s.paid_through and s.paid_through > f"{TODAY:%Y-%m}"]
        assert len(ahead) >= 0.04 * N

        payments = list((await db.execute(select(CashPayment))).scalars())
        members = {m.id: m for m in (await db.execute(select(Member))).scalars()}
        assert len(payments) >= N  # a year of history, not one payment each
        # Those who joined this month and have not paid yet are new (about half of those who joined).
        unpaid = {m.id for m in members.values() if m.joined_on.replace(day=1) == TODAY.replace(day=1)} \
            - {p.member_id for p in payments}
        assert counts["new"] == len(unpaid) and all(standings[i].status == "new" for i in unpaid)
        days = [p.created_at.date() for p in payments]
        assert min(days) >= TODAY - dt.timedelta(days=366) and max(days) <= TODAY
        assert len({(d.year, d.month) for d in days}) >= 11  # spread over the year
        grants = {(g.user_id, g.branch_id) for g in (await db.execute(
            select(RoleGrant).where(RoleGrant.role == "collector"))).scalars()}
        for p in payments:
            entry = await db.get(JournalEntry, p.entry_id)
            assert entry.effective_date == p.created_at.date()  # the receipt's day is the books' day
            assert entry.member_id == p.member_id
            assert (p.collector_user_id, members[p.member_id].branch_id) in grants
            assert p.created_at.date() >= members[p.member_id].joined_on
        # What standing counts is exactly the cash the collectors took (no card or waivers in this step).
        taken: dict[int, int] = {}
        for p in payments:
            taken[p.member_id] = taken.get(p.member_id, 0) + p.amount_minor
        for member_id in list(taken)[:40]:
            assert await paid_total(db, member_id) == taken[member_id]
        books = await ledger.balances(db)
        assert books["dues_income"].amount_minor == -sum(taken.values())
        assert (await ledger.verify_ledger_chain(db)).intact
        assert (await db.execute(select(func.count()).select_from(JournalEntry))).scalar_one() == len(payments)


@hsettings(max_examples=300, deadline=None)
@given(joined=st.dates(min_value=dt.date(2015, 1, 1), max_value=dt.date(2026, 12, 31)),
       today=st.dates(min_value=dt.date(2024, 1, 1), max_value=dt.date(2027, 12, 31)), seed=st.integers(0, 10**6))
def test_payment_plan_is_contiguous_from_joining_and_dated_in_the_past_year(joined, today, seed):
    if joined > today:
        joined = today
    payments = plan_payments(random.Random(seed), joined=joined, today=today)
    if not payments:
        return
    join, now = month_index(joined), month_index(today)
    assert payments[0][0] == join  # no gap at the start
    for (f1, l1, d1), (f2, l2, d2) in zip(payments, payments[1:]):
        assert f2 == l1 + 1 and d1 <= d2  # contiguous, in order
    for first, last, day in payments:
        assert first <= last
        assert joined <= day <= today
        assert month_index(day) >= now - 11  # within the last twelve months
