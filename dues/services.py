"""Dues services: recording cash a collector took, and a member's standing.

Plans and rates live in the database (migration 0004 seeds "standard", Rs 100 a
month, and "concessional", Rs 50). A member's `DuesAccount` is optional: without
one the member is on the standard plan and not exempt. The standard chart of
ledger accounts and each collector's cash account are created lazily here, on
the first payment (both idempotent and safe under concurrency).

Services validate before they write, flush and never commit: the route owns the
transaction. Standing is computed by `compute_standing`, a pure function of the
rates, the joining date, the total paid and today, so it can be tested as a
table and with hypothesis; `standing` only loads its inputs.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dues.errors import CurrencyMismatch, InvalidAmount
from dues import joining
from dues.ledger import collector_cash_account, ensure_accounts, post_entry
from dues.models import (CashPayment, DuesAccount, DuesPlan, DuesRate, EntryKind, JournalEntry, LedgerAccount,
                         Posting)
from dues.money import DEFAULT_CURRENCY, Money
from union import audit, members
from union.errors import Conflict, InvalidInput, NotFound
from union.i18n import _
from union.models import Member, Role
from union.policy import Principal, can_see_member

STANDARD_PLAN = "standard"
# Rs 1,00,000 in paise: far above any month's dues; a bigger "payment" is a typing slip.
MAX_CASH_PAYMENT_MINOR = 10_000_000
MAX_MONTHS = 120
MAX_RECEIPT_LENGTH = 40
# How far ahead an advance payment may be counted (stops the walk when a rate is zero or tiny).
MAX_ADVANCE_MONTHS = 1200


class StandingStatus(StrEnum):
    new = "new"
    current = "current"
    grace = "grace"
    lapsed = "lapsed"
    exempt = "exempt"


@dataclass(frozen=True)
class Standing:
    status: StandingStatus
    paid_through: str | None  # "YYYY-MM"
    arrears_minor: int
    currency: str

    def as_json(self) -> dict:
        return {"status": str(self.status), "paid_through": self.paid_through,
                "arrears_minor": self.arrears_minor, "currency": self.currency}


# ---------------------------------------------------------------- standing (pure)


def month_index(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


def month_label(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def compute_standing(*, joined_on: dt.date, today: dt.date, rates: Sequence[tuple[dt.date, int]],
                     paid_minor: int, grace_months: int, exempt: bool = False,
                     currency: str = DEFAULT_CURRENCY) -> Standing:
    """A member's standing from the plan's rates [(effective_from, monthly_minor)], the total paid.

    Months are due from the joining month through the current month, each at the rate in force on
    its first day (before the first rate: the first rate). Payments cover months in order from the
    joining month; what is left over after the last whole month is a partial payment toward the
    next; anything beyond the current month covers future months (advance payment)."""
    if not rates:
        raise ValueError("a plan needs at least one rate")
    ordered = sorted(rates)
    starts = [month_index(start) if start.day == 1 else month_index(start) + 1 for start, _ in ordered]

    def segment(month: int) -> tuple[int, int | None]:
        """The rate in force in `month` and the first month after it at another rate (None: never)."""
        at = bisect.bisect_right(starts, month)
        # Before the first rate: the first rate. starts[at] is the first start after `month`.
        return ordered[max(at - 1, 0)][1], (starts[at] if at < len(starts) else None)

    join, now = month_index(joined_on), month_index(today)
    # Walk whole stretches at one rate rather than month by month (100,000 members in a bulk recompute).
    remaining, month = max(paid_minor, 0), join
    limit = max(now, join) + MAX_ADVANCE_MONTHS
    while month <= limit:
        due, next_start = segment(month)
        end = limit + 1 if next_start is None else min(next_start, limit + 1)
        if due == 0:
            if month > now:
                break  # free months ahead would otherwise count as paid for ever
            month = min(end, now + 1)
            continue
        covered = min(remaining // due, end - month)
        remaining -= covered * due
        month += covered
        if month < end:
            break  # not enough left for the next month
    paid_through = month - 1 if month > join else None

    owed, month = 0, join
    while month <= now:
        due, next_start = segment(month)
        end = now + 1 if next_start is None else min(next_start, now + 1)
        owed += due * (end - month)
        month = end
    arrears = max(owed - max(paid_minor, 0), 0)
    behind = now - (paid_through if paid_through is not None else join - 1)

    if exempt:
        status, arrears = StandingStatus.exempt, 0
    elif join >= now and paid_minor <= 0:
        status = StandingStatus.new
    elif behind <= 0:
        status = StandingStatus.current
    elif behind <= grace_months:
        status = StandingStatus.grace
    else:
        status = StandingStatus.lapsed
    return Standing(status=status, paid_through=month_label(paid_through) if paid_through is not None else None,
                    arrears_minor=arrears, currency=currency)


# ---------------------------------------------------------------- standing (loading)


async def member_plan(session: AsyncSession, member: Member) -> tuple[DuesPlan, DuesAccount | None]:
    account = (await session.execute(
        select(DuesAccount).where(DuesAccount.member_id == member.id))).scalar_one_or_none()
    if account is not None:
        plan = await session.get(DuesPlan, account.plan_id)
    else:
        plan = (await session.execute(select(DuesPlan).where(DuesPlan.code == STANDARD_PLAN))).scalar_one()
    return plan, account


# Accounts whose postings on a member's entries make up what the member has paid toward dues: credits
# to dues income (cash, card, waivers) less refunds and disputes; reversals cancel themselves out.
MEMBER_CREDIT_ACCOUNTS = ("dues_income", "refunds", "disputes")


def paid_total_query():
    """SELECT member_id, credit: what each member has paid toward dues, from the ledger."""
    return (select(JournalEntry.member_id, func.coalesce(-func.sum(Posting.amount_minor), 0).label("credit"))
            .join(Posting, Posting.entry_id == JournalEntry.id)
            .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
            .where(LedgerAccount.code.in_(MEMBER_CREDIT_ACCOUNTS), JournalEntry.member_id.is_not(None))
            .group_by(JournalEntry.member_id))


async def paid_total(session: AsyncSession, member_id: int) -> int:
    row = (await session.execute(paid_total_query().where(JournalEntry.member_id == member_id))).first()
    # PostgreSQL sums bigints as numeric: int() is exact.
    return int(row.credit) if row else 0


async def standing(session: AsyncSession, *, member: Member, today: dt.date, grace_months: int) -> Standing:
    plan, account = await member_plan(session, member)
    rates = (await session.execute(
        select(DuesRate.effective_from, DuesRate.monthly_minor, DuesRate.currency)
        .where(DuesRate.plan_id == plan.id).order_by(DuesRate.effective_from))).all()
    currency = rates[-1].currency if rates else DEFAULT_CURRENCY
    return compute_standing(joined_on=member.joined_on, today=today,
                            rates=[(r.effective_from, int(r.monthly_minor)) for r in rates],
                            paid_minor=await paid_total(session, member.id), grace_months=grace_months,
                            exempt=bool(account and account.exempt), currency=currency)


async def change_rate(session: AsyncSession, *, plan_code: str, monthly_minor: object, effective_from: dt.date,
                      today: dt.date, currency: str = DEFAULT_CURRENCY, actor=None) -> DuesRate:
    """A new monthly amount for a plan from the first day of a coming month. Months already due keep
    the rate that was in force then, so the date may not be in the past (that would rewrite arrears)."""
    plan = (await session.execute(select(DuesPlan).where(DuesPlan.code == plan_code))).scalar_one_or_none()
    if plan is None:
        raise NotFound(_("No dues plan %(code)s.", code=plan_code), field="plan")
    if isinstance(monthly_minor, bool) or not isinstance(monthly_minor, int) or not 0 <= monthly_minor <= MAX_CASH_PAYMENT_MINOR:
        raise InvalidAmount(_("The amount must be a whole number of paise."), field="monthly_minor")
    if effective_from.day != 1 or month_index(effective_from) <= month_index(today):
        raise InvalidInput(_("A new rate starts on the first day of a coming month."), field="effective_from")
    if (await session.execute(select(DuesRate.id).where(DuesRate.plan_id == plan.id,
                                                        DuesRate.effective_from == effective_from))).first():
        raise Conflict(_("This plan already has a rate from that day."), field="effective_from")
    rate = DuesRate(plan_id=plan.id, monthly_minor=monthly_minor, currency=currency, effective_from=effective_from)
    session.add(rate)
    await session.flush()
    await audit.record(session, action="dues.rate_changed", actor=actor, target_type="dues_plan", target_id=plan.code,
                       detail={"monthly_minor": monthly_minor, "currency": currency,
                               "effective_from": effective_from.isoformat()})
    return rate


async def member_payments(session: AsyncSession, member_id: int) -> list[CashPayment]:
    return list((await session.execute(
        select(CashPayment).where(CashPayment.member_id == member_id)
        .order_by(CashPayment.created_at.desc(), CashPayment.id.desc()))).scalars())


# ---------------------------------------------------------------- cash


def _check_amount(amount: object, currency: str) -> Money:
    if not isinstance(amount, Money):
        raise InvalidAmount(_("The amount must be a whole number of paise."), field="amount_minor")
    if amount.currency != currency:
        raise CurrencyMismatch(_("Dues are paid in %(currency)s.", currency=currency), field="currency")
    if amount.amount_minor <= 0:
        raise InvalidAmount(_("The amount must be more than zero."), field="amount_minor")
    if amount.amount_minor > MAX_CASH_PAYMENT_MINOR:
        raise InvalidAmount(_("The amount is too large for one cash payment."), field="amount_minor")
    return amount


def check_receipt_no(receipt_no: object) -> str:
    if isinstance(receipt_no, int) and not isinstance(receipt_no, bool):
        receipt_no = str(receipt_no)
    if not isinstance(receipt_no, str) or not receipt_no.strip() or len(receipt_no.strip()) > MAX_RECEIPT_LENGTH:
        raise InvalidInput(_("A receipt number is required (at most %(count)d characters).",
                             count=MAX_RECEIPT_LENGTH), field="receipt_no")
    return receipt_no.strip()


def check_months(months: object) -> int | None:
    if months is None:
        return None
    if isinstance(months, bool) or not isinstance(months, int) or not 1 <= months <= MAX_MONTHS:
        raise InvalidInput(_("Months must be a whole number from 1 to %(count)d.", count=MAX_MONTHS), field="months")
    return months


async def _receipt_used(session: AsyncSession, collector_id: int, receipt_no: str) -> bool:
    return (await session.execute(select(CashPayment.id).where(
        CashPayment.collector_user_id == collector_id, CashPayment.receipt_no == receipt_no))).first() is not None


def _reused(receipt_no: str) -> Conflict:
    return Conflict(_("Receipt number %(receipt_no)s was already used in your receipt book.", receipt_no=receipt_no),
                    field="receipt_no")


async def record_cash_payment(*, session: AsyncSession, member_no: object, amount: Money, receipt_no: object,
                              collector: Principal, months: object = None, currency: str = DEFAULT_CURRENCY,
                              today: dt.date | None = None) -> CashPayment:
    """Record cash a collector took: Dr cash:collector:<id> / Cr dues_income, and the payment row.

    Everything is checked before anything is written; a receipt number the collector already
    used is a Conflict (409) and posts nothing. Flushes, never commits."""
    amount = _check_amount(amount, currency)
    receipt_no = check_receipt_no(receipt_no)
    months = check_months(months)
    if not isinstance(member_no, str) or not member_no.strip():
        raise InvalidInput(_("A member number is required."), field="member_no")
    member = await members.get_member(session, member_no=member_no, principal=collector)
    if not collector.has(Role.collector, member.branch_id):
        # Like an unknown number: a collector cannot learn that a member exists in another branch.
        raise NotFound(_("No member with that number."), field="member_no")
    collector_id = collector.user.id
    if await _receipt_used(session, collector_id, receipt_no):
        raise _reused(receipt_no)

    await ensure_accounts(session, currency)
    cash = await collector_cash_account(session, collector_id, currency)
    # The joining fee, when the member's plan has one and it is still owed, comes out of this payment.
    lines = await joining.payment_lines(session, member=member, cash_account=cash.code, amount=amount)
    entry = await post_entry(
        session, key=f"cash:{collector_id}:{receipt_no}", kind=EntryKind.cash_payment,
        lines=lines,
        description=f"Cash dues from member {member.member_no}, receipt {receipt_no}",
        effective_date=today or dt.date.today(), actor=collector.user, member_id=member.id)
    # A concurrent request with the same receipt committed while we waited for the ledger head:
    # post_entry returned its entry (same content), which already has its payment.
    if (await session.execute(select(CashPayment.id).where(CashPayment.entry_id == entry.id))).first():
        raise _reused(receipt_no)
    payment = CashPayment(member_id=member.id, collector_user_id=collector_id, amount_minor=amount.amount_minor,
                          currency=amount.currency, months=months, receipt_no=receipt_no, entry_id=entry.id)
    session.add(payment)
    try:
        await session.flush()
    except IntegrityError:
        raise _reused(receipt_no) from None
    await audit.record(session, action="dues.cash_payment", actor=collector.user, target_type="member",
                       target_id=member.member_no,
                       detail={"payment_id": payment.id, "amount_minor": amount.amount_minor,
                               "currency": amount.currency, "receipt_no": receipt_no, "entry_id": entry.id})
    return payment


async def get_payment(session: AsyncSession, *, payment_id: int, principal: Principal) -> tuple[CashPayment, Member]:
    """A payment the principal may see: the collector who took it, staff who may see the member,
    the member themself, or a treasurer. Otherwise it does not exist (404)."""
    payment = await session.get(CashPayment, payment_id)
    member = await session.get(Member, payment.member_id) if payment else None
    if payment is None or member is None or not (
            payment.collector_user_id == principal.user.id or principal.has(Role.treasurer)
            or can_see_member(principal, member)):
        raise NotFound(_("No such receipt."), field="id")
    return payment, member
