"""A month of the union's money (tests/treasury/conftest.py `april`): cash and card dues,
a refund, a collector's shortfall at hand-over, welfare set aside and paid. The reports
must give exactly the trial balance, fund balances and member statements the
bookkeeping implies, union-wide and for one branch."""

from __future__ import annotations

import datetime as dt

from treasury import reports

END = dt.date(2025, 4, 30)


def balances(rows) -> dict[str, int]:
    return {r.code: r.balance_minor for r in rows if r.balance_minor}


async def test_trial_balance_of_the_month(services, april):
    async with services.reader() as db:
        rows = await reports.trial_balance(db, as_of=END)
    assert balances(rows) == {
        april.entries["c2"]: 10000,  # the Mysuru collector still holds Rs 100
        "cash:office": 29500 + 20000 - 15000,
        "stripe": 10000 - 300 - 10000,
        "dues_income": -50000,
        "card_fees": 300,
        "refunds": 10000,
        "cash_over_short": 500,
        "welfare_fund": -5000,
    }
    assert sum(r.balance_minor for r in rows) == 0
    assert {r.code for r in rows} >= {"bank", "general_fund", "crisis_fund", april.entries["c1"]}  # zero rows too


async def test_trial_balance_as_of_an_earlier_day_leaves_later_entries_out(services, april):
    async with services.reader() as db:
        rows = await reports.trial_balance(db, as_of=dt.date(2025, 4, 4))
        before = await reports.trial_balance(db, as_of=dt.date(2025, 3, 31))
    assert balances(rows) == {april.entries["c1"]: 30000, "dues_income": -30000}
    assert balances(before) == {}


async def test_trial_balance_of_one_branch(services, april, branches):
    async with services.reader() as db:
        blr = await reports.trial_balance(db, as_of=END, branch_id=branches["BLR"].id)
        mys = await reports.trial_balance(db, as_of=END, branch_id=branches["MYS"].id)
    # Bengaluru: its members' entries and its collector's hand-over; not the card fee (no member).
    assert balances(blr) == {"dues_income": -40000, "refunds": 10000, "cash:office": 29500, "cash_over_short": 500}
    assert balances(mys) == {april.entries["c2"]: 10000, "dues_income": -10000, "welfare_fund": 15000,
                             "cash:office": -15000}
    assert sum(r.balance_minor for r in blr) == 0 and sum(r.balance_minor for r in mys) == 0


async def test_fund_balances(services, april):
    async with services.reader() as db:
        funds = await reports.fund_balances(db, as_of=END)
    assert funds.funds == {"general_fund": 0, "welfare_fund": 5000, "crisis_fund": 0}
    assert funds.undistributed == 50000 - 300 - 10000 - 500
    assert funds.cash_and_bank == 10000 + 34500 - 300
    assert funds.cash_and_bank == sum(funds.funds.values()) + funds.undistributed


async def test_member_statements(services, april):
    async with services.reader() as db:
        statements = {name: await reports.member_statement(db, member_id=m.id) for name, m in april.members.items()}
        a_may = await reports.member_statement(db, member_id=april.members["A"].id, start=dt.date(2025, 4, 11))
    as_rows = {name: (opening, [(ln.date.isoformat(), ln.kind, ln.credit_minor, ln.balance_minor) for ln in lines])
               for name, (opening, lines) in statements.items()}
    assert as_rows == {
        "A": (0, [("2025-04-03", "cash_payment", 10000, 10000), ("2025-04-10", "card_payment", 10000, 20000),
                  ("2025-04-12", "refund", -10000, 10000)]),
        "B": (0, [("2025-04-04", "cash_payment", 20000, 20000)]),
        "C": (0, [("2025-04-05", "cash_payment", 10000, 10000)]),  # the welfare payout is not dues
    }
    opening, lines = a_may
    assert opening == 20000 and [ln.credit_minor for ln in lines] == [-10000]


async def test_income_and_expenditure(services, april):
    async with services.reader() as db:
        months = await reports.income_expenditure_by_month(db, start=dt.date(2025, 3, 1), end=END)
    march, month = months
    assert (march.month, march.dues_in, march.net) == ("2025-03", 0, 0)
    assert (month.month, month.dues_in, month.refunds, month.card_fees, month.cash_short, month.welfare_out,
            month.crisis_costs) == ("2025-04", 50000, 10000, 300, 500, 15000, 0)
    assert month.net == 50000 - 10000 - 300 - 500 - 15000


async def test_arrears_ageing_and_collection(services, april, settings):
    async with services.reader() as db:
        ageing = await reports.arrears_ageing(db, today=dt.date(2025, 6, 15), grace_months=2)
        by_branch, by_collector = await reports.collection_rate(db, start=APRIL_FIRST, end=END)
        monthly = await reports.monthly_collection(db, start=APRIL_FIRST, end=dt.date(2025, 5, 31))
    rows = {r.branch_code: ({k: v for k, v in r.buckets.items() if v}, r.arrears_minor) for r in ageing}
    # A paid April (behind May, June), B April and May, C April.
    assert rows == {"BLR": ({"1": 1, "2": 1}, 20000 + 10000), "MYS": ({"2": 1}, 20000)}
    assert [(r.label, r.expected_minor, r.collected_minor) for r in by_branch] == [
        ("BLR", 20000, 10000 + 20000 + 10000 - 10000), ("MYS", 10000, 10000)]
    assert [(r.label, r.branch_code, r.collected_minor, r.payments) for r in by_collector] == [
        ("colblr", "BLR", 30000, 2), ("colmys", "MYS", 10000, 1)]
    assert [(m.month, m.expected_minor, m.collected_minor, m.paying_members) for m in monthly] == [
        ("2025-04", 30000, 40000, 3), ("2025-05", 30000, 0, 0)]


APRIL_FIRST = dt.date(2025, 4, 1)


async def test_cash_held_by_collectors(services, april):
    async with services.reader() as db:
        held = await reports.collector_cash_held(db, as_of=END)
        early = await reports.collector_cash_held(db, as_of=dt.date(2025, 4, 14))
    assert [(h.username, h.held_minor, h.oldest_since, h.days_held(END)) for h in held] == [
        ("colmys", 10000, dt.date(2025, 4, 5), 25), ("colblr", 0, None, None)]
    assert [(h.username, h.held_minor, h.oldest_since) for h in early] == [
        ("colblr", 30000, dt.date(2025, 4, 3)), ("colmys", 10000, dt.date(2025, 4, 5))]
