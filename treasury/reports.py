"""The treasurer's reports, as plain query functions over the ledger (and the dues
tables for expectations): trial balance, income and expenditure by month, fund
balances, arrears ageing, collection rate, a member's statement, and the cash each
collector holds. They read only; the route audits the view and renders it.

Branch filter: an entry belongs to a branch when its member does, or, for an entry
without a member, when it moves cash held by a collector of that branch (a
hand-over, a cash shortfall). Entries with neither (card fees, payouts to the bank,
office transfers, welfare and crisis payouts without a member) appear only in the
union-wide view. Every entry balances on its own, so a branch's trial balance
still sums to zero.

Everything is summed by the database; sums come back as Decimal on PostgreSQL and
are turned into exact ints here.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dues.ledger import COLLECTOR_CASH_PREFIX
from dues.models import CashPayment, DuesAccount, DuesPlan, DuesRate, JournalEntry, LedgerAccount, Posting
from dues.money import DEFAULT_CURRENCY
from dues.services import (MEMBER_CREDIT_ACCOUNTS, STANDARD_PLAN, compute_standing, month_index, month_label,
                           paid_total_query)
from union.models import Branch, Member, Role, RoleGrant, User

FUNDS = ("general_fund", "welfare_fund", "crisis_fund")
DUES_INCOME = ("dues_income", "joining_fee_income")
# Ageing buckets: (label, least months behind, most months behind or None).
AGEING_BUCKETS = (("0", 0, 0), ("1", 1, 1), ("2", 2, 2), ("3", 3, 3), ("4-6", 4, 6), ("7-12", 7, 12),
                  ("13+", 13, None))


def month_of(session: AsyncSession, column):
    """'YYYY-MM' of a date column, on either database."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(column, "YYYY-MM")
    return func.substr(column, 1, 7)


def months_between(start: dt.date, end: dt.date) -> list[str]:
    return [month_label(m) for m in range(month_index(start), month_index(end) + 1)]


def month_bounds(month: str) -> tuple[dt.date, dt.date]:
    year, mon = int(month[:4]), int(month[5:7])
    first = dt.date(year, mon, 1)
    following = dt.date(year + (mon == 12), mon % 12 + 1, 1)
    return first, following - dt.timedelta(days=1)


# ---------------------------------------------------------------- branch filter


async def collector_branches(session: AsyncSession) -> dict[int, int | None]:
    """Each collector's branch (None: a collector for every branch, or in several)."""
    found: dict[int, set] = defaultdict(set)
    for user_id, branch_id in await session.execute(
            select(RoleGrant.user_id, RoleGrant.branch_id).where(RoleGrant.role == str(Role.collector))):
        found[user_id].add(branch_id)
    return {uid: (next(iter(b)) if len(b) == 1 else None) for uid, b in found.items()}


async def branch_entry_ids(session: AsyncSession, branch_id: int):
    """A subquery of the ids of the entries that belong to a branch (see the module docstring)."""
    collectors = [uid for uid, b in (await collector_branches(session)).items() if b == branch_id]
    codes = [f"{COLLECTOR_CASH_PREFIX}{uid}" for uid in collectors]
    members_of_branch = select(Member.id).where(Member.branch_id == branch_id)
    by_member = JournalEntry.member_id.in_(members_of_branch)
    if not codes:
        return select(JournalEntry.id).where(by_member)
    by_cash = and_(JournalEntry.member_id.is_(None), select(Posting.id).join(
        LedgerAccount, LedgerAccount.id == Posting.account_id).where(
        Posting.entry_id == JournalEntry.id, LedgerAccount.code.in_(codes)).exists())
    return select(JournalEntry.id).where(or_(by_member, by_cash))


# ---------------------------------------------------------------- trial balance


@dataclass(frozen=True)
class AccountBalance:
    code: str
    name: str
    type: str
    currency: str
    balance_minor: int  # debit positive, credit negative

    def as_json(self) -> dict:
        return {"code": self.code, "name": self.name, "balance_minor": self.balance_minor,
                "currency": self.currency}


async def trial_balance(session: AsyncSession, *, as_of: dt.date | None = None,
                        branch_id: int | None = None) -> list[AccountBalance]:
    """Every account's signed balance from the entries dated on or before `as_of`, by code."""
    sums = select(Posting.account_id, func.sum(Posting.amount_minor).label("total"))
    needs_date = False
    if as_of is not None:
        # The join to the entries is needed only when some entry is dated after as_of.
        latest = (await session.execute(select(func.max(JournalEntry.effective_date)))).scalar()
        needs_date = latest is not None and latest > as_of
    if needs_date:
        sums = sums.join(JournalEntry, JournalEntry.id == Posting.entry_id).where(JournalEntry.effective_date <= as_of)
    if branch_id is not None:
        sums = sums.where(Posting.entry_id.in_(await branch_entry_ids(session, branch_id)))
    sums = sums.group_by(Posting.account_id).subquery()
    rows = await session.execute(
        select(LedgerAccount.code, LedgerAccount.name, LedgerAccount.type, LedgerAccount.currency, sums.c.total)
        .outerjoin(sums, sums.c.account_id == LedgerAccount.id).order_by(LedgerAccount.code))
    return [AccountBalance(code, name, kind, currency, int(total or 0)) for code, name, kind, currency, total in rows]


def totals_by_currency(rows: list[AccountBalance]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        totals[row.currency] += row.balance_minor
    return dict(totals)


# ---------------------------------------------------------------- fund balances


@dataclass
class FundBalances:
    as_of: dt.date | None
    funds: dict[str, int]  # fund code -> balance (credit positive: what the fund holds)
    undistributed: int  # income less expenditure not yet moved into a fund
    cash_and_bank: int  # everything the union holds (asset accounts)
    currency: str = DEFAULT_CURRENCY


async def fund_balances(session: AsyncSession, *, as_of: dt.date | None = None,
                        branch_id: int | None = None) -> FundBalances:
    rows = await trial_balance(session, as_of=as_of, branch_id=branch_id)
    funds = {code: 0 for code in FUNDS}
    undistributed = assets = 0
    for row in rows:
        if row.code in funds:
            funds[row.code] = -row.balance_minor
        elif row.type in ("income", "expense"):
            undistributed -= row.balance_minor
        elif row.type == "asset":
            assets += row.balance_minor
    return FundBalances(as_of, funds, undistributed, assets)


# ---------------------------------------------------------------- income and expenditure


@dataclass
class MonthFlows:
    month: str
    dues_in: int = 0
    refunds: int = 0  # refunds and card disputes
    waived: int = 0
    welfare_out: int = 0
    welfare_by_scheme: dict[str, int] = field(default_factory=dict)
    crisis_costs: int = 0
    card_fees: int = 0
    cash_short: int = 0  # cash counted short at hand-over (negative: over)
    other_expenses: int = 0

    @property
    def net(self) -> int:
        return (self.dues_in - self.refunds - self.welfare_out - self.crisis_costs - self.card_fees
                - self.cash_short - self.other_expenses)


async def income_expenditure_by_month(session: AsyncSession, *, start: dt.date, end: dt.date,
                                      branch_id: int | None = None) -> list[MonthFlows]:
    """Dues in, refunds, welfare out (by scheme), crisis costs, card fees and cash short, month by month.

    Welfare out and crisis costs are what was paid out of those funds (debits to welfare_fund and
    crisis_fund in entries that are not transfers between funds or allocations to them)."""
    month = month_of(session, JournalEntry.effective_date).label("month")
    query = (select(month, LedgerAccount.code, LedgerAccount.type, JournalEntry.kind,
                    func.sum(Posting.amount_minor).label("total"))
             .join(Posting, Posting.entry_id == JournalEntry.id)
             .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
             .where(JournalEntry.effective_date >= start, JournalEntry.effective_date <= end,
                    or_(LedgerAccount.type.in_(("income", "expense")), LedgerAccount.code.in_(FUNDS)))
             .group_by(month, LedgerAccount.code, LedgerAccount.type, JournalEntry.kind))
    if branch_id is not None:
        query = query.where(JournalEntry.id.in_(await branch_entry_ids(session, branch_id)))
    flows = {m: MonthFlows(m) for m in months_between(start, end)}
    for m, code, kind_of_account, entry_kind, total in await session.execute(query):
        row, total = flows[m], int(total or 0)
        if code in DUES_INCOME:
            if entry_kind == "waiver":
                row.waived -= total
            else:
                row.dues_in -= total
        elif code in ("refunds", "disputes"):
            row.refunds += total
        elif code == "dues_waived":
            pass  # counted as waived above (the credit side); not money out
        elif code == "card_fees":
            row.card_fees += total
        elif code == "cash_over_short":
            row.cash_short += total
        elif code == "welfare_fund" and entry_kind not in ("transfer", "allocation"):
            row.welfare_out += total
        elif code == "crisis_fund" and entry_kind not in ("transfer", "allocation"):
            row.crisis_costs += total
        elif kind_of_account == "expense":
            row.other_expenses += total
    await _welfare_by_scheme(session, flows, start=start, end=end, branch_id=branch_id)
    return list(flows.values())


async def _welfare_by_scheme(session: AsyncSession, flows: dict[str, MonthFlows], *, start: dt.date, end: dt.date,
                             branch_id: int | None) -> None:
    """Welfare paid out by scheme code: payouts (welfare.models.WelfarePayout) and their reversals."""
    try:
        from welfare.models import WelfarePayout, WelfareScheme
    except ImportError:  # the welfare domain is not installed
        return
    month = month_of(session, JournalEntry.effective_date).label("month")
    query = (select(month, WelfareScheme.code, func.sum(Posting.amount_minor))
             .select_from(JournalEntry)
             .join(WelfarePayout, or_(WelfarePayout.entry_id == JournalEntry.id,
                                      WelfarePayout.entry_id == JournalEntry.reverses_entry_id))
             .join(WelfareScheme, WelfareScheme.id == WelfarePayout.scheme_id)
             .join(Posting, Posting.entry_id == JournalEntry.id)
             .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
             .where(LedgerAccount.code == "welfare_fund", JournalEntry.effective_date >= start,
                    JournalEntry.effective_date <= end)
             .group_by(month, WelfareScheme.code))
    if branch_id is not None:
        query = query.where(JournalEntry.id.in_(await branch_entry_ids(session, branch_id)))
    for m, code, total in await session.execute(query):
        if int(total or 0):
            flows[m].welfare_by_scheme[code] = flows[m].welfare_by_scheme.get(code, 0) + int(total)


# ---------------------------------------------------------------- standing in bulk


@dataclass
class _Plan:
    rates: list[tuple[dt.date, int]]
    currency: str

    def rate_for(self, month: int) -> int:
        starts = [month_index(s) if s.day == 1 else month_index(s) + 1 for s, _ in self.rates]
        at = bisect.bisect_right(starts, month) - 1
        return self.rates[max(at, 0)][1]


async def _plans(session: AsyncSession) -> tuple[dict[int, _Plan], int]:
    plans: dict[int, _Plan] = {}
    for plan_id, start, monthly, currency in await session.execute(
            select(DuesRate.plan_id, DuesRate.effective_from, DuesRate.monthly_minor, DuesRate.currency)
            .order_by(DuesRate.plan_id, DuesRate.effective_from)):
        plans.setdefault(plan_id, _Plan([], currency)).rates.append((start, int(monthly)))
    standard = (await session.execute(select(DuesPlan.id).where(DuesPlan.code == STANDARD_PLAN))).scalar_one()
    return plans, standard


@dataclass
class MemberDues:
    member_id: int
    branch_id: int
    joined_on: dt.date
    plan: _Plan
    exempt: bool
    paid_minor: int


async def members_dues(session: AsyncSession, *, branch_id: int | None = None) -> list[MemberDues]:
    """Every member with plan, exemption and total paid: four queries whatever the number of members."""
    plans, standard = await _plans(session)
    accounts = {m: (p, e) for m, p, e in await session.execute(
        select(DuesAccount.member_id, DuesAccount.plan_id, DuesAccount.exempt))}
    paid_q = paid_total_query()
    query = select(Member.id, Member.branch_id, Member.joined_on)
    if branch_id is not None:
        query = query.where(Member.branch_id == branch_id)
        paid_q = paid_q.where(JournalEntry.member_id.in_(select(Member.id).where(Member.branch_id == branch_id)))
    paid = {m: int(c) for m, c in await session.execute(paid_q)}
    out = []
    for member_id, member_branch, joined_on in await session.execute(query.order_by(Member.id)):
        plan_id, exempt = accounts.get(member_id, (standard, False))
        out.append(MemberDues(member_id, member_branch, joined_on, plans[plan_id], bool(exempt),
                              paid.get(member_id, 0)))
    return out


def months_behind(dues: MemberDues, *, today: dt.date, grace_months: int):
    """(the member's standing, whole months behind: 0 when paid up or ahead)."""
    standing = compute_standing(joined_on=dues.joined_on, today=today, rates=dues.plan.rates,
                                paid_minor=dues.paid_minor, grace_months=grace_months, exempt=dues.exempt,
                                currency=dues.plan.currency)
    if standing.paid_through is None:
        behind = month_index(today) - month_index(dues.joined_on) + 1
    else:
        year, mon = standing.paid_through.split("-")
        behind = month_index(today) - (int(year) * 12 + int(mon) - 1)
    return standing, max(behind, 0)


@dataclass
class AgeingRow:
    branch_code: str
    branch_name: str
    buckets: dict[str, int]  # bucket label -> members
    exempt: int = 0
    arrears_minor: int = 0


async def arrears_ageing(session: AsyncSession, *, today: dt.date, grace_months: int,
                         branch_id: int | None = None) -> list[AgeingRow]:
    """Members by months behind on dues, by branch (exempt members counted apart)."""
    branches = {b.id: b for b in (await session.execute(select(Branch).order_by(Branch.code))).scalars()}
    rows = {bid: AgeingRow(b.code, b.name, {label: 0 for label, _, _ in AGEING_BUCKETS})
            for bid, b in branches.items() if branch_id is None or bid == branch_id}
    for dues in await members_dues(session, branch_id=branch_id):
        row = rows[dues.branch_id]
        if dues.exempt:
            row.exempt += 1
            continue
        standing, behind = months_behind(dues, today=today, grace_months=grace_months)
        for label, least, most in AGEING_BUCKETS:
            if behind >= least and (most is None or behind <= most):
                row.buckets[label] += 1
                break
        row.arrears_minor += standing.arrears_minor
    return list(rows.values())


# ---------------------------------------------------------------- collection rate


@dataclass
class CollectionRow:
    label: str  # branch code, or collector username
    branch_code: str
    expected_minor: int
    collected_minor: int
    waived_minor: int = 0
    payments: int = 0

    @property
    def rate(self) -> float | None:
        due = self.expected_minor - self.waived_minor
        return None if due <= 0 else self.collected_minor / due


def _expected(dues: MemberDues, first: int, last: int) -> int:
    if dues.exempt:
        return 0
    return sum(dues.plan.rate_for(m) for m in range(max(first, month_index(dues.joined_on)), last + 1))


async def collection_rate(session: AsyncSession, *, start: dt.date, end: dt.date,
                          branch_id: int | None = None) -> tuple[list[CollectionRow], list[CollectionRow]]:
    """(by branch, by collector) for the months from `start` to `end`.

    Expected: each member's dues for the months of the range they were members (exempt members owe
    nothing). Collected: dues credited in the range (cash, card), less refunds and disputes; waived
    dues are taken off what was expected. By collector: the cash each collector took in the range,
    against what their branch expected."""
    branches = {b.id: b for b in (await session.execute(select(Branch).order_by(Branch.code))).scalars()}
    first, last = month_index(start), month_index(end)
    expected: dict[int, int] = defaultdict(int)
    for dues in await members_dues(session, branch_id=branch_id):
        expected[dues.branch_id] += _expected(dues, first, last)
    credit = -func.sum(Posting.amount_minor)
    query = (select(Member.branch_id, JournalEntry.kind, credit.label("credit"))
             .select_from(JournalEntry).join(Member, Member.id == JournalEntry.member_id)
             .join(Posting, Posting.entry_id == JournalEntry.id)
             .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
             .where(LedgerAccount.code.in_(MEMBER_CREDIT_ACCOUNTS), JournalEntry.effective_date >= start,
                    JournalEntry.effective_date <= end)
             .group_by(Member.branch_id, JournalEntry.kind))
    if branch_id is not None:
        query = query.where(Member.branch_id == branch_id)
    collected: dict[int, int] = defaultdict(int)
    waived: dict[int, int] = defaultdict(int)
    for bid, kind, amount in await session.execute(query):
        (waived if kind == "waiver" else collected)[bid] += int(amount or 0)
    by_branch = [CollectionRow(b.code, b.code, expected.get(bid, 0), collected.get(bid, 0), waived.get(bid, 0))
                 for bid, b in branches.items() if branch_id is None or bid == branch_id]

    cash = (select(CashPayment.collector_user_id, Member.branch_id, func.sum(CashPayment.amount_minor),
                   func.count(CashPayment.id))
            .join(JournalEntry, JournalEntry.id == CashPayment.entry_id)
            .join(Member, Member.id == CashPayment.member_id)
            .where(JournalEntry.effective_date >= start, JournalEntry.effective_date <= end)
            .group_by(CashPayment.collector_user_id, Member.branch_id))
    if branch_id is not None:
        cash = cash.where(Member.branch_id == branch_id)
    names = dict((await session.execute(select(User.id, User.username))).all())
    by_collector = []
    for uid, bid, amount, count in await session.execute(cash):
        by_collector.append(CollectionRow(names.get(uid, f"#{uid}"), branches[bid].code, expected.get(bid, 0),
                                          int(amount or 0), waived.get(bid, 0), int(count)))
    by_collector.sort(key=lambda r: (r.branch_code, r.label))
    return by_branch, by_collector


# ---------------------------------------------------------------- member statement


@dataclass
class StatementLine:
    date: dt.date
    kind: str
    description: str
    credit_minor: int  # toward the member's dues (refunds negative)
    balance_minor: int  # running total paid toward dues
    entry_id: str


async def member_statement(session: AsyncSession, *, member_id: int, start: dt.date | None = None,
                           end: dt.date | None = None) -> tuple[int, list[StatementLine]]:
    """(opening total paid before `start`, the lines from `start` to `end`) of what the member paid
    toward dues: cash, card, waivers, less refunds and disputes, with reversals, in date order."""
    credit = -func.sum(Posting.amount_minor)
    query = (select(JournalEntry.id, JournalEntry.effective_date, JournalEntry.kind, JournalEntry.description,
                    JournalEntry.seq, credit.label("credit"))
             .join(Posting, Posting.entry_id == JournalEntry.id)
             .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
             .where(JournalEntry.member_id == member_id, LedgerAccount.code.in_(MEMBER_CREDIT_ACCOUNTS))
             .group_by(JournalEntry.id, JournalEntry.effective_date, JournalEntry.kind, JournalEntry.description,
                       JournalEntry.seq)
             .order_by(JournalEntry.effective_date, JournalEntry.seq))
    opening, running, lines = 0, 0, []
    for entry_id, day, kind, description, _seq, amount in await session.execute(query):
        amount = int(amount or 0)
        if end is not None and day > end:
            break
        running += amount
        if start is not None and day < start:
            opening = running
            continue
        lines.append(StatementLine(day, kind, description, amount, running, entry_id))
    return opening, lines


# ---------------------------------------------------------------- cash held by collectors


@dataclass
class CashHeld:
    user_id: int
    username: str
    branch_code: str
    held_minor: int
    oldest_since: dt.date | None  # the day of the oldest cash not yet handed over
    currency: str = DEFAULT_CURRENCY

    def days_held(self, today: dt.date) -> int | None:
        return None if self.oldest_since is None else (today - self.oldest_since).days


async def collector_cash_held(session: AsyncSession, *, as_of: dt.date | None = None,
                              branch_id: int | None = None) -> list[CashHeld]:
    """What each collector holds and since when: hand-overs take the oldest cash first."""
    accounts = (await session.execute(
        select(LedgerAccount.id, LedgerAccount.code, LedgerAccount.currency)
        .where(LedgerAccount.code.like(f"{COLLECTOR_CASH_PREFIX}%")))).all()
    if not accounts:
        return []
    branch_of = await collector_branches(session)
    codes = dict((await session.execute(select(Branch.id, Branch.code))).all())
    names = dict((await session.execute(select(User.id, User.username))).all())
    out = []
    for account_id, code, currency in accounts:
        uid = int(code[len(COLLECTOR_CASH_PREFIX):])
        if branch_id is not None and branch_of.get(uid) != branch_id:
            continue
        moves = (select(JournalEntry.effective_date, Posting.amount_minor)
                 .join(JournalEntry, JournalEntry.id == Posting.entry_id).where(Posting.account_id == account_id))
        if as_of is not None:
            moves = moves.where(JournalEntry.effective_date <= as_of)
        credits = int((await session.execute(
            select(func.coalesce(func.sum(-Posting.amount_minor), 0)).join(
                JournalEntry, JournalEntry.id == Posting.entry_id).where(
                Posting.account_id == account_id, Posting.amount_minor < 0,
                *( [JournalEntry.effective_date <= as_of] if as_of is not None else [])))).scalar() or 0)
        held, oldest, consumed = 0, None, 0
        async for day, amount in await session.stream(
                moves.where(Posting.amount_minor > 0).order_by(JournalEntry.effective_date, JournalEntry.seq)):
            consumed += amount
            if consumed > credits and oldest is None:
                oldest = day
        held = consumed - credits
        out.append(CashHeld(uid, names.get(uid, f"#{uid}"), codes.get(branch_of.get(uid), ""), held,
                            oldest if held > 0 else None, currency))
    out.sort(key=lambda c: (-c.held_minor, c.username))
    return out


__all__ = ["trial_balance", "fund_balances", "income_expenditure_by_month", "arrears_ageing", "collection_rate",
           "member_statement", "collector_cash_held"]


# ---------------------------------------------------------------- month by month collection


@dataclass
class MonthCollection:
    month: str
    expected_minor: int
    collected_minor: int
    waived_minor: int
    paying_members: int

    @property
    def rate(self) -> float | None:
        due = self.expected_minor - self.waived_minor
        return None if due <= 0 else self.collected_minor / due


async def monthly_collection(session: AsyncSession, *, start: dt.date, end: dt.date,
                             branch_id: int | None = None) -> list[MonthCollection]:
    """Expected and collected dues for each month of the range (see collection_rate)."""
    months = months_between(start, end)
    first = month_index(start)
    rows = {m: MonthCollection(m, 0, 0, 0, 0) for m in months}
    for dues in await members_dues(session, branch_id=branch_id):
        if dues.exempt:
            continue
        for i, m in enumerate(months):
            if first + i >= month_index(dues.joined_on):
                rows[m].expected_minor += dues.plan.rate_for(first + i)
    month = month_of(session, JournalEntry.effective_date).label("month")
    is_waiver = case((JournalEntry.kind == "waiver", 1), else_=0).label("waiver")
    query = (select(month, is_waiver, -func.sum(Posting.amount_minor),
                    func.count(func.distinct(JournalEntry.member_id)))
             .join(Posting, Posting.entry_id == JournalEntry.id)
             .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
             .where(LedgerAccount.code.in_(MEMBER_CREDIT_ACCOUNTS), JournalEntry.member_id.is_not(None),
                    JournalEntry.effective_date >= start, JournalEntry.effective_date <= end)
             .group_by(month, is_waiver))
    if branch_id is not None:
        query = query.where(JournalEntry.member_id.in_(select(Member.id).where(Member.branch_id == branch_id)))
    for m, waiver, amount, members in await session.execute(query):
        if waiver:
            rows[m].waived_minor += int(amount or 0)
        else:
            rows[m].collected_minor += int(amount or 0)
            rows[m].paying_members += int(members)
    return list(rows.values())


# ---------------------------------------------------------------- the members' summary


@dataclass
class MemberSummary:
    """One month's books for every member to read: totals and counts only, nothing about any one person."""

    month: str
    closed: bool
    flows: MonthFlows
    collection: MonthCollection
    funds: FundBalances
    members_total: int


async def member_summary(session: AsyncSession, *, month: str, closed: bool) -> MemberSummary:
    start, end = month_bounds(month)
    flows = (await income_expenditure_by_month(session, start=start, end=end))[0]
    collection = (await monthly_collection(session, start=start, end=end))[0]
    funds = await fund_balances(session, as_of=end)
    total = (await session.execute(select(func.count(Member.id)).where(Member.joined_on <= end))).scalar() or 0
    return MemberSummary(month, closed, flows, collection, funds, int(total))
