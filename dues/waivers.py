"""Dues holidays and hardship waivers, granted by an office bearer with a reason.

A waiver of N months from a month books those months' dues, at the plan's rate in
force in each month, as paid by the union: Dr dues_waived / Cr dues_income on an
entry carrying the member's id. Standing therefore counts the months as covered
(it credits payments to the earliest unpaid months, like any payment), and the
books show what the waiver cost. Revoking posts the reversing entry. The reason
may tell of illness or hardship: it is encrypted (services.vault) and never put in
the audit log or the ledger. Grant and revocation are audited.

Standing never blocks crisis help: nothing in crisis/ consults dues.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dues.cash_ops_models import DuesWaiver, WaiverKind
from dues.ledger import ensure_accounts, post_entry, reverse_entry
from dues.models import DuesRate, EntryKind
from dues.money import Money
from union import audit
from union.crypto import Vault
from union.errors import Conflict, Forbidden, InvalidInput, NotFound
from union.i18n import _
from union.models import Member, Role, utcnow
from union.policy import Principal

MAX_WAIVER_MONTHS = 24
MAX_REASON = 500
_MONTH = re.compile(r"(\d{4})-(\d{2})")


def parse_month(text: object) -> dt.date:
    match = _MONTH.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 2000:
        raise InvalidInput(_("Give the first month as YYYY-MM, for example 2025-06."), field="from_month")
    return dt.date(int(match.group(1)), int(match.group(2)), 1)


def _months(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WAIVER_MONTHS:
        raise InvalidInput(_("Months must be a whole number from 1 to %(count)d.", count=MAX_WAIVER_MONTHS),
                           field="months")
    return value


def _reason(value: object) -> str:
    text = " ".join(value.split()) if isinstance(value, str) else ""
    if not text:
        raise InvalidInput(_("A reason is required."), field="reason")
    if len(text) > MAX_REASON:
        raise InvalidInput(_("The reason may be at most %(count)d characters.", count=MAX_REASON), field="reason")
    return text


def _add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


async def waiver_amount(session: AsyncSession, *, member: Member, from_month: dt.date, months: int) -> Money:
    """The dues of those months at the rate in force on each month's first day (the standing rule)."""
    from dues.services import member_plan

    plan, _account = await member_plan(session, member)
    rates = (await session.execute(select(DuesRate.effective_from, DuesRate.monthly_minor, DuesRate.currency)
                                   .where(DuesRate.plan_id == plan.id).order_by(DuesRate.effective_from))).all()
    if not rates:
        raise InvalidInput(_("The member's plan has no rate."), field="months")
    total = 0
    for i in range(months):
        first = _add_months(from_month, i)
        in_force = [r for r in rates if r.effective_from <= first] or [rates[0]]
        total += int(in_force[-1].monthly_minor)
    return Money(total, rates[-1].currency)


def _check_office_bearer(principal: Principal, member: Member) -> None:
    if not principal.has(Role.office_bearer, member.branch_id):
        raise Forbidden(_("Only an office bearer of the member's branch can grant or revoke waivers."))


async def grant(session: AsyncSession, *, member: Member, kind: object, from_month: object, months: object,
                reason: object, principal: Principal, vault: Vault, today: dt.date | None = None) -> DuesWaiver:
    """Grant a dues holiday or hardship waiver. Validates everything first; flushes, never commits."""
    _check_office_bearer(principal, member)
    if kind not in (WaiverKind.holiday, WaiverKind.hardship):
        raise InvalidInput(_("Choose a dues holiday or a hardship waiver."), field="kind")
    first = parse_month(from_month)
    count = _months(months)
    text = _reason(reason)
    joined = dt.date(member.joined_on.year, member.joined_on.month, 1)
    if first < joined:
        raise InvalidInput(_("A waiver cannot start before the member joined."), field="from_month")
    today = today or dt.date.today()
    if first > _add_months(dt.date(today.year, today.month, 1), MAX_WAIVER_MONTHS):
        raise InvalidInput(_("A waiver can start at most %(count)d months ahead.", count=MAX_WAIVER_MONTHS),
                           field="from_month")
    amount = await waiver_amount(session, member=member, from_month=first, months=count)
    waiver = DuesWaiver(member_id=member.id, kind=str(kind), from_month=first, months=count,
                        amount_minor=amount.amount_minor, currency=amount.currency, reason_enc=vault.encrypt(text),
                        granted_by_user_id=principal.user.id)
    session.add(waiver)
    await session.flush()
    if amount.amount_minor:
        await ensure_accounts(session, amount.currency)
        entry = await post_entry(
            session, key=f"waiver:{waiver.id}", kind=EntryKind.waiver,
            lines=[("dues_waived", amount), ("dues_income", -amount)],
            description=f"Dues {kind} for member {member.member_no}: {count} months from {first:%Y-%m}",
            effective_date=today, actor=principal.user, member_id=member.id)
        waiver.entry_id = entry.id
        session.add(waiver)
        await session.flush()
    await audit.record(session, action="dues.waiver_granted", actor=principal.user, target_type="member",
                       target_id=member.member_no,
                       detail={"waiver_id": waiver.id, "kind": str(kind), "from_month": f"{first:%Y-%m}",
                               "months": count, "amount_minor": amount.amount_minor, "entry_id": waiver.entry_id})
    return waiver


async def revoke(session: AsyncSession, *, member: Member, waiver_id: object, reason: object, principal: Principal,
                 vault: Vault, today: dt.date | None = None) -> DuesWaiver:
    """Revoke a waiver: the reversing entry takes the months' credit back. Flushes, never commits."""
    _check_office_bearer(principal, member)
    waiver = await session.get(DuesWaiver, int(waiver_id)) if str(waiver_id).isdigit() else None
    if waiver is None or waiver.member_id != member.id:
        raise NotFound(_("No such waiver."), field="id")
    text = _reason(reason)
    if waiver.revoked_at is not None:
        raise Conflict(_("This waiver was already revoked."), field="id")
    if waiver.entry_id:
        reversal = await reverse_entry(session, entry_id=waiver.entry_id, key=f"waiver-revoke:{waiver.id}",
                                       reason=f"Waiver {waiver.id} revoked", actor=principal.user,
                                       effective_date=today or dt.date.today())
        waiver.revoke_entry_id = reversal.id
    waiver.revoked_at = utcnow()
    waiver.revoked_by_user_id = principal.user.id
    waiver.revoke_reason_enc = vault.encrypt(text)
    session.add(waiver)
    await session.flush()
    await audit.record(session, action="dues.waiver_revoked", actor=principal.user, target_type="member",
                       target_id=member.member_no,
                       detail={"waiver_id": waiver.id, "entry_id": waiver.revoke_entry_id})
    return waiver


async def member_waivers(session: AsyncSession, member_id: int) -> list[DuesWaiver]:
    return list((await session.execute(select(DuesWaiver).where(DuesWaiver.member_id == member_id)
                                       .order_by(DuesWaiver.id.desc()))).scalars())
