"""Member standing: the rules as a table (new, current, grace boundary, lapsed,
partial payments, advance payments, a rate change, exempt), hypothesis
properties of the pure computation, and the standing loaded from the database
(plan, exemption, cash payments) through GET /api/members/{member_no}/standing."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from hypothesis import given, settings as hsettings, strategies as st

from dues.models import DuesAccount, DuesPlan
from dues import services as dues_services
from dues.services import StandingStatus, compute_standing, standing
from union.models import Member

D = dt.date
STANDARD = [(D(2000, 1, 1), 10000)]
TODAY = D(2025, 6, 15)


def calc(joined, paid, *, rates=STANDARD, today=TODAY, grace=2, exempt=False):
    return compute_standing(joined_on=joined, today=today, rates=rates, paid_minor=paid, grace_months=grace,
                            exempt=exempt)


@pytest.mark.parametrize("joined, paid, status, paid_through, arrears", [
    # Joined this month, nothing paid yet: new.
    (D(2025, 6, 3), 0, "new", None, 10000),
    # Joined this month and paid this month: current.
    (D(2025, 6, 3), 10000, "current", "2025-06", 0),
    # Joined in April, paid April..June: current.
    (D(2025, 4, 1), 30000, "current", "2025-06", 0),
    # Paid April and May, June not yet: one month behind, grace.
    (D(2025, 4, 1), 20000, "grace", "2025-05", 10000),
    # Grace boundary: exactly two months behind (May, June) is still grace...
    (D(2025, 4, 1), 10000, "grace", "2025-04", 20000),
    # ...three months behind is lapsed.
    (D(2025, 3, 1), 10000, "lapsed", "2025-03", 30000),
    (D(2025, 1, 1), 0, "lapsed", None, 60000),
    # Joined last month, paid nothing: two months behind, grace (not new any more).
    (D(2025, 5, 20), 0, "grace", None, 20000),
    # Partial payments accumulate: 150 rupees cover April and half of May.
    (D(2025, 4, 1), 15000, "grace", "2025-04", 15000),
    # Advance: a year paid from April covers through next March.
    (D(2025, 4, 1), 120000, "current", "2026-03", 0),
])
def test_standing_table(joined, paid, status, paid_through, arrears):
    s = calc(joined, paid)
    assert (s.status, s.paid_through, s.arrears_minor, s.currency) == (status, paid_through, arrears, "INR")


def test_partial_payment_tops_up_to_a_whole_month():
    assert calc(D(2025, 4, 1), 25000).paid_through == "2025-05"  # April, May, half of June
    assert calc(D(2025, 4, 1), 25000 + 5000).paid_through == "2025-06"  # the other half of June lands


def test_rate_change_mid_way_uses_the_rate_in_force_each_month():
    rates = [(D(2000, 1, 1), 10000), (D(2025, 5, 1), 15000)]
    # April at 100, May and June at 150 = 400 owed.
    s = calc(D(2025, 4, 1), 0, rates=rates)
    assert s.arrears_minor == 40000
    assert calc(D(2025, 4, 1), 40000, rates=rates).status == "current"
    # 250 pays April (100) and May (150); June not covered.
    s = calc(D(2025, 4, 1), 25000, rates=rates)
    assert (s.paid_through, s.arrears_minor, s.status) == ("2025-05", 15000, "grace")
    # A change dated mid-month applies from the next month.
    mid = [(D(2000, 1, 1), 10000), (D(2025, 5, 15), 15000)]
    assert calc(D(2025, 4, 1), 0, rates=mid).arrears_minor == 10000 + 10000 + 15000


def test_exempt_overrides_everything():
    s = calc(D(2020, 1, 1), 0, exempt=True)
    assert (s.status, s.arrears_minor) == ("exempt", 0)


def test_grace_months_setting():
    assert calc(D(2025, 4, 1), 10000, grace=1).status == "lapsed"
    assert calc(D(2025, 4, 1), 10000, grace=0).status == "lapsed"
    assert calc(D(2025, 4, 1), 20000, grace=0).status == "lapsed"
    assert calc(D(2025, 4, 1), 30000, grace=0).status == "current"


def test_free_months_do_not_count_as_paid_for_ever():
    s = calc(D(2025, 4, 1), 0, rates=[(D(2000, 1, 1), 0)])
    assert (s.status, s.paid_through, s.arrears_minor) == ("current", "2025-06", 0)


dates = st.dates(min_value=D(2015, 1, 1), max_value=D(2030, 12, 31))
rate_lists = st.lists(st.tuples(dates, st.integers(0, 50000)), min_size=1, max_size=4)


@hsettings(max_examples=300, deadline=None)
@given(joined=dates, today=dates, rates=rate_lists, paid=st.integers(0, 5_000_000),
       extra=st.integers(1, 500_000), grace=st.integers(0, 6))
def test_adding_a_payment_never_moves_paid_through_back_and_arrears_never_negative(
        joined, today, rates, paid, extra, grace):
    before = calc(joined, paid, rates=rates, today=today, grace=grace)
    after = calc(joined, paid + extra, rates=rates, today=today, grace=grace)
    assert before.arrears_minor >= 0 and after.arrears_minor >= 0
    assert after.arrears_minor <= before.arrears_minor
    if before.paid_through is not None:
        assert after.paid_through is not None and after.paid_through >= before.paid_through
    order = ["lapsed", "grace", "new", "current"]
    # More money never makes the status worse ("new" only turns into "current").
    if before.status != "new":
        assert order.index(after.status) >= order.index(before.status)
    assert after.status in {s.value for s in StandingStatus}


def month_by_month(*, joined_on, today, rates, paid_minor, grace_months, exempt=False):
    """The first implementation of compute_standing, one month at a time: the reference the
    stretch-at-a-time walk (fast enough for 100,000 members) must agree with."""
    import bisect

    from dues.services import MAX_ADVANCE_MONTHS, month_index, month_label

    ordered = sorted(rates)
    starts = [month_index(start) if start.day == 1 else month_index(start) + 1 for start, _ in ordered]

    def rate(month):
        return ordered[max(bisect.bisect_right(starts, month) - 1, 0)][1]

    join, now = month_index(joined_on), month_index(today)
    remaining, month = max(paid_minor, 0), join
    while month <= max(now, join) + MAX_ADVANCE_MONTHS:
        due = rate(month)
        if (due == 0 and month > now) or due > remaining:
            break
        remaining -= due
        month += 1
    paid_through = month - 1 if month > join else None
    arrears = max(sum(rate(m) for m in range(join, now + 1)) - max(paid_minor, 0), 0)
    behind = now - (paid_through if paid_through is not None else join - 1)
    if exempt:
        status, arrears = "exempt", 0
    elif join >= now and paid_minor <= 0:
        status = "new"
    elif behind <= 0:
        status = "current"
    elif behind <= grace_months:
        status = "grace"
    else:
        status = "lapsed"
    return status, (month_label(paid_through) if paid_through is not None else None), arrears


# Rates cluster in a few months so that several start in one month, mid-month starts and zero rates occur.
clustered_dates = st.builds(D, st.integers(2023, 2026), st.integers(1, 12), st.sampled_from([1, 1, 2, 15, 28]))
any_rates = st.lists(st.tuples(st.one_of(dates, clustered_dates), st.sampled_from([0, 1, 5000, 10000, 15000])
                               | st.integers(0, 50000)), min_size=1, max_size=5)


@hsettings(max_examples=600, deadline=None)
@given(joined=st.one_of(dates, clustered_dates), today=st.one_of(dates, clustered_dates), rates=any_rates,
       paid=st.one_of(st.integers(-10000, 0), st.integers(0, 100_000), st.integers(0, 50_000_000)),
       grace=st.integers(0, 6), exempt=st.booleans())
def test_the_fast_walk_agrees_with_the_month_by_month_walk(joined, today, rates, paid, grace, exempt):
    fast = calc(joined, paid, rates=rates, today=today, grace=grace, exempt=exempt)
    assert (fast.status, fast.paid_through, fast.arrears_minor) == month_by_month(
        joined_on=joined, today=today, rates=rates, paid_minor=paid, grace_months=grace, exempt=exempt)


def test_advance_payment_at_a_tiny_rate_stops_at_the_advance_limit():
    s = calc(D(2025, 4, 1), 10**9, rates=[(D(2000, 1, 1), 1)])
    assert s.paid_through == month_by_month(joined_on=D(2025, 4, 1), today=TODAY, rates=[(D(2000, 1, 1), 1)],
                                            paid_minor=10**9, grace_months=2)[1] == "2125-06"


# --- Loaded from the database -----------------------------------------------------


async def test_standing_from_the_database_uses_plan_and_exemption(services, branches):
    async with services.sessions() as db:
        m = Member(member_no="BLR-00077", working_name="Plan", branch_id=branches["BLR"].id, joined_on=D(2025, 4, 1))
        db.add(m)
        await db.flush()
        s = await standing(db, member=m, today=TODAY, grace_months=2)
        assert (s.status, s.arrears_minor) == ("lapsed", 30000)  # standard plan by default
        from sqlalchemy import select

        concessional = (await db.execute(select(DuesPlan).where(DuesPlan.code == "concessional"))).scalar_one()
        account = DuesAccount(member_id=m.id, plan_id=concessional.id)
        db.add(account)
        await db.flush()
        s = await standing(db, member=m, today=TODAY, grace_months=2)
        assert s.arrears_minor == 15000
        account.exempt = True
        await db.flush()
        s = await standing(db, member=m, today=TODAY, grace_months=2)
        assert s.as_json() == {"status": "exempt", "paid_through": None, "arrears_minor": 0, "currency": "INR"}
        await db.commit()


async def test_rate_change_applies_from_a_coming_month_only(services):
    from dues.errors import InvalidAmount
    from dues.models import DuesPlan, DuesRate
    from union.errors import Conflict, InvalidInput, NotFound
    from union.models import AuditEvent

    today = dt.date(2026, 11, 29)
    async with services.sessions() as db:
        rate = await dues_services.change_rate(db, plan_code="standard", monthly_minor=12000,
                                               effective_from=dt.date(2027, 1, 1), today=today)
        await db.commit()
    assert (rate.monthly_minor, rate.effective_from) == (12000, dt.date(2027, 1, 1))
    for kw, error in [({"plan_code": "gold"}, NotFound), ({"monthly_minor": -1}, InvalidAmount),
                      ({"monthly_minor": 1.5}, InvalidAmount),
                      ({"effective_from": dt.date(2026, 11, 1)}, InvalidInput),  # this month: already due
                      ({"effective_from": dt.date(2027, 2, 15)}, InvalidInput),
                      ({"effective_from": dt.date(2027, 1, 1)}, Conflict)]:
        async with services.sessions() as db:
            args = {"plan_code": "standard", "monthly_minor": 15000, "effective_from": dt.date(2027, 3, 1)} | kw
            with pytest.raises(error):
                await dues_services.change_rate(db, today=today, **args)
            await db.rollback()
    async with services.reader() as db:
        plan = (await db.execute(select(DuesPlan).where(DuesPlan.code == "standard"))).scalar_one()
        rates = [(r.effective_from, r.monthly_minor) for r in (await db.execute(
            select(DuesRate).where(DuesRate.plan_id == plan.id).order_by(DuesRate.effective_from))).scalars()]
        audited = (await db.execute(select(AuditEvent).where(AuditEvent.action == "dues.rate_changed"))).scalars().all()
    assert rates == [(dt.date(2000, 1, 1), 10000), (dt.date(2027, 1, 1), 12000)]
    assert len(audited) == 1 and audited[0].target_id == "standard"
    # Months before the change keep the old rate: a member paid up at Rs 100 stays so until January.
    standing = dues_services.compute_standing(joined_on=dt.date(2026, 12, 1), today=dt.date(2027, 1, 15),
                                              rates=rates, paid_minor=10000 + 12000, grace_months=2)
    assert standing.paid_through == "2027-01"


def test_cli_sets_a_coming_rate_and_refuses_a_past_one(settings, services):
    from tests.conftest import run_cli
    from tests.union.test_accounts import cli_env

    env = cli_env(settings)
    r = run_cli("dues", "rate", "--plan", "concessional", "--monthly-minor", "6000", "--from", "2099-01-01", env=env)
    assert r.returncode == 0 and "6000 INR" in r.stdout and "2099-01-01" in r.stdout
    r = run_cli("dues", "rate", "--plan", "concessional", "--monthly-minor", "6000", "--from", "2001-01-01", env=env)
    assert r.returncode == 1 and "first day of a coming month" in r.stdout
    r = run_cli("dues", "rate", "--plan", "concessional", "--monthly-minor", "6000", "--from", "soon", env=env)
    assert r.returncode == 1 and "YYYY-MM-DD" in r.stdout
