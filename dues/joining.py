"""Joining fees: a plan may ask a one-time fee (`dues_plan.joining_fee_minor`, 0 = none,
in `joining_fee_currency`, INR by default). It is booked from the member's first cash
or card payment: the same journal entry gets an extra line, Cr joining_fee_income, and
only the rest of the payment is credited to dues_income (and so counts toward standing).
A card Checkout opened while the fee is owed asks for the months and the fee.

"First" means: the member's entries have no net credit to joining_fee_income yet (a
reversed fee is owed again). The check runs with the ledger head locked, so two
collectors taking a member's first payment at the same moment book the fee once.
A first cash payment smaller than the fee is refused: nothing is posted. A card payment
that arrived is never refused: it pays as much of the fee as it covers.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dues.errors import InvalidAmount
from dues.ledger import Line
from dues.models import DuesAccount, DuesPlan, JournalEntry, LedgerAccount, Posting
from dues.money import Money, format_money
from union.i18n import _
from union.models import Member

JOINING_FEE_ACCOUNT = "joining_fee_income"


async def plan_joining_fee(session: AsyncSession, member: Member) -> Money | None:
    """The joining fee of the member's plan (the standard plan without a dues account), or None."""
    plan_id = (await session.execute(
        select(DuesAccount.plan_id).where(DuesAccount.member_id == member.id))).scalar_one_or_none()
    query = select(DuesPlan.joining_fee_minor, DuesPlan.joining_fee_currency)
    query = query.where(DuesPlan.id == plan_id) if plan_id else query.where(DuesPlan.code == "standard")
    return fee_of((await session.execute(query)).first())


async def joining_fee_paid(session: AsyncSession, member_id: int) -> int:
    """Net joining fee booked for the member, in minor units (credit positive)."""
    return (await joining_fees_paid(session, [member_id]))[member_id]


def fee_lines(*, fee: Money | None, paid_minor: int | None, cash_account: str, amount: Money) -> list[Line]:
    """The lines of a cash payment's entry given the plan's fee and the fee already booked for the
    member (None: not looked up, because no fee applies). Raises InvalidAmount when the payment does
    not cover a fee still owed. Shared by the single payment and the batch (dues.services)."""
    if fee is None or fee.currency != amount.currency or (paid_minor or 0) >= fee.amount_minor:
        return [(cash_account, amount), ("dues_income", -amount)]
    if amount < fee:
        raise InvalidAmount(_("The first payment must include the joining fee of %(fee)s.",
                              fee=format_money(fee)), field="amount_minor")
    lines: list[Line] = [(cash_account, amount), (JOINING_FEE_ACCOUNT, -fee)]
    if amount > fee:
        lines.append(("dues_income", -(amount - fee)))
    return lines


def fee_of(plan_row) -> Money | None:
    """A plan's joining fee from a row with joining_fee_minor and joining_fee_currency, or None."""
    if plan_row is None or not plan_row.joining_fee_minor:
        return None
    return Money(int(plan_row.joining_fee_minor), plan_row.joining_fee_currency)


async def joining_fees_paid(session: AsyncSession, member_ids) -> dict[int, int]:
    """Net joining fee booked for each of the members (credit positive), in one statement."""
    ids = sorted(set(member_ids))
    if not ids:
        return {}
    rows = (await session.execute(
        select(JournalEntry.member_id, func.coalesce(-func.sum(Posting.amount_minor), 0))
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
        .where(LedgerAccount.code == JOINING_FEE_ACCOUNT, JournalEntry.member_id.in_(ids))
        .group_by(JournalEntry.member_id))).all()
    found = {member_id: int(total) for member_id, total in rows}
    return {member_id: found.get(member_id, 0) for member_id in ids}


async def fee_owed(session: AsyncSession, member: Member) -> Money | None:
    """What the member still owes of her plan's joining fee, or None."""
    fee = await plan_joining_fee(session, member)
    if fee is None:
        return None
    owed = fee.amount_minor - await joining_fee_paid(session, member.id)
    return Money(owed, fee.currency) if owed > 0 else None


async def card_payment_lines(session: AsyncSession, *, member: Member, account: str, amount: Money) -> list[Line]:
    """The lines of a card payment's entry: Dr `account` / Cr joining_fee_income for as much of the
    fee as the member still owes and the payment covers, the rest Cr dues_income. Unlike cash it never
    refuses: the money has arrived (a Checkout includes the fee owed when it was opened). The caller
    holds the ledger head (`lock_head`), so the fee check stays true until its entry is posted."""
    owed = await fee_owed(session, member)
    part = min(owed.amount_minor, amount.amount_minor) if owed and owed.currency == amount.currency else 0
    lines: list[Line] = [(account, amount)]
    if part:
        lines.append((JOINING_FEE_ACCOUNT, -Money(part, amount.currency)))
    if amount.amount_minor > part:
        lines.append(("dues_income", -Money(amount.amount_minor - part, amount.currency)))
    return lines
