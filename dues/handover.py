"""Cash hand-overs: a collector gives the cash they hold to a treasurer.

The cash a collector holds is the balance of their ledger account
`cash:collector:<user id>`. A hand-over needs both people:

1. the collector proposes it, naming the treasurer and the amount they counted
   (that is the collector's confirmation); the ledger position (`as_of_seq`) is
   pinned, and the expected amount is the account's balance up to it;
2. the treasurer counts the cash and confirms the same amount. Then one entry
   moves it: Dr cash:office (counted) / Cr cash:collector:<id> (expected), and
   any difference to `cash_over_short` (a shortage is a debit, an excess a credit).

A payment the collector takes after proposing is not part of this hand-over (its
entry comes after the pinned position): it stays in the collector's account for
the next one, so nothing is lost or counted short. A collector has at most one
open hand-over (a unique column), can cancel it until it is confirmed, and cannot
confirm their own hand-over as treasurer. Both confirmations are audited.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dues.cash_ops_models import CashHandover, HandoverStatus
from dues.errors import InvalidAmount
from dues.ledger import COLLECTOR_CASH_PREFIX, collector_cash_account, ensure_accounts, lock_head, post_entry
from dues.models import EntryKind, JournalEntry, LedgerAccount, LedgerHead, Posting
from dues.money import DEFAULT_CURRENCY, Money, format_money
from union import audit
from union.errors import Conflict, Forbidden, InvalidInput, NotFound
from union.i18n import _
from union.models import Role, RoleGrant, User, utcnow
from union.policy import Principal

MAX_HANDOVER_MINOR = 1_000_000_000  # Rs 1,00,00,000: a typing-slip guard, far above a year of a big branch


def cash_account_code(user_id: int) -> str:
    return f"{COLLECTOR_CASH_PREFIX}{int(user_id)}"


async def cash_held(session: AsyncSession, user_id: int, *, up_to_seq: int | None = None,
                    currency: str = DEFAULT_CURRENCY) -> Money:
    """The collector's cash balance (debit positive), over entries up to `up_to_seq` if given."""
    query = (select(func.coalesce(func.sum(Posting.amount_minor), 0))
             .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
             .where(LedgerAccount.code == cash_account_code(user_id)))
    if up_to_seq is not None:
        query = query.join(JournalEntry, JournalEntry.id == Posting.entry_id).where(JournalEntry.seq <= up_to_seq)
    return Money(int((await session.execute(query)).scalar_one()), currency)


def _check_count(counted: object, currency: str) -> Money:
    if not isinstance(counted, Money):
        raise InvalidAmount(_("The amount must be a whole number of paise."), field="counted")
    if counted.currency != currency:
        raise InvalidAmount(_("Dues are paid in %(currency)s.", currency=currency), field="counted")
    if counted.amount_minor < 0 or counted.amount_minor > MAX_HANDOVER_MINOR:
        raise InvalidAmount(_("Enter the amount you counted, for example 1500 or 1500.50."), field="counted")
    return counted


async def treasurers(session: AsyncSession, *, exclude_user_id: int | None = None) -> list[User]:
    query = (select(User).join(RoleGrant, RoleGrant.user_id == User.id)
             .where(RoleGrant.role == Role.treasurer, User.is_active.is_(True)).distinct().order_by(User.username))
    return [u for u in (await session.execute(query)).scalars() if u.id != exclude_user_id]


async def open_handover(session: AsyncSession, collector_id: int) -> CashHandover | None:
    return (await session.execute(select(CashHandover).where(
        CashHandover.open_collector_id == collector_id))).scalar_one_or_none()


async def propose(session: AsyncSession, *, collector: Principal, treasurer_username: object, counted: Money,
                  currency: str = DEFAULT_CURRENCY) -> CashHandover:
    """The collector's side: hand the counted cash to a treasurer. Flushes, never commits."""
    if not collector.has(Role.collector):
        raise Forbidden(_("Only collectors hand over cash."))
    counted = _check_count(counted, currency)
    if not isinstance(treasurer_username, str) or not treasurer_username.strip():
        raise InvalidInput(_("Choose the treasurer who receives the cash."), field="treasurer")
    treasurer = (await session.execute(select(User).where(
        User.username == treasurer_username.strip(), User.is_active.is_(True)))).scalar_one_or_none()
    if treasurer is None or treasurer.id not in {u.id for u in await treasurers(session)}:
        raise NotFound(_("No treasurer with that name."), field="treasurer")
    collector_id = collector.user.id
    if treasurer.id == collector_id:
        raise InvalidInput(_("You cannot hand cash over to yourself."), field="treasurer")
    if await open_handover(session, collector_id) is not None:
        raise Conflict(_("You already have a hand-over waiting for the treasurer. Cancel it first."),
                       field="treasurer")
    await ensure_accounts(session, currency)
    await collector_cash_account(session, collector_id, currency)
    # The chain position pins which payments this hand-over covers (those before it).
    head = await lock_head(session)
    expected = await cash_held(session, collector_id, up_to_seq=head.last_seq, currency=currency)
    if expected.amount_minor == 0 and counted.amount_minor == 0:
        raise InvalidAmount(_("You hold no cash to hand over."), field="counted")
    handover = CashHandover(collector_user_id=collector_id, treasurer_user_id=treasurer.id,
                            expected_minor=expected.amount_minor, counted_minor=counted.amount_minor,
                            currency=currency, as_of_seq=head.last_seq, open_collector_id=collector_id,
                            confirmed_by_collector_at=utcnow())
    session.add(handover)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(_("You already have a hand-over waiting for the treasurer. Cancel it first."),
                       field="treasurer") from None
    await audit.record(session, action="dues.handover_proposed", actor=collector.user, target_type="cash_handover",
                       target_id=handover.id,
                       detail={"treasurer_user_id": treasurer.id, "expected_minor": expected.amount_minor,
                               "counted_minor": counted.amount_minor, "currency": currency,
                               "as_of_seq": head.last_seq})
    return handover


async def _get(session: AsyncSession, handover_id: object) -> CashHandover:
    handover = await session.get(CashHandover, int(handover_id)) if str(handover_id).isdigit() else None
    if handover is None:
        raise NotFound(_("No such hand-over."), field="id")
    return handover


async def cancel(session: AsyncSession, *, handover_id: object, collector: Principal) -> CashHandover:
    """The collector withdraws a hand-over the treasurer has not confirmed."""
    handover = await _get(session, handover_id)
    if handover.collector_user_id != collector.user.id:
        raise NotFound(_("No such hand-over."), field="id")
    done = await session.execute(
        update(CashHandover).where(CashHandover.id == handover.id, CashHandover.status == HandoverStatus.proposed)
        .values(status=HandoverStatus.cancelled, open_collector_id=None, cancelled_at=utcnow())
        .execution_options(synchronize_session=False))
    if done.rowcount != 1:
        raise Conflict(_("This hand-over is already closed."), field="id")
    await session.refresh(handover)
    await audit.record(session, action="dues.handover_cancelled", actor=collector.user, target_type="cash_handover",
                       target_id=handover.id)
    return handover


async def confirm(session: AsyncSession, *, handover_id: object, treasurer: Principal, counted: Money,
                  today: dt.date | None = None) -> CashHandover:
    """The treasurer's side: confirm the count; posts the hand-over entry. Flushes, never commits."""
    handover = await _get(session, handover_id)
    if not treasurer.has(Role.treasurer) or handover.treasurer_user_id != treasurer.user.id:
        raise NotFound(_("No such hand-over."), field="id")
    if treasurer.user.id == handover.collector_user_id:
        raise Forbidden(_("A collector cannot confirm their own hand-over."))
    counted = _check_count(counted, handover.currency)
    if counted.amount_minor != handover.counted_minor:
        raise Conflict(_("You counted %(counted)s but the collector declared %(declared)s. Count the cash "
                         "together again; the collector can cancel and start a new hand-over.",
                         counted=format_money(counted),
                         declared=format_money(Money(handover.counted_minor, handover.currency))),
                       field="counted")
    # Close it first with a conditional write: two confirmations (or a cancel) at once, one wins.
    now = utcnow()
    closed = await session.execute(
        update(CashHandover).where(CashHandover.id == handover.id, CashHandover.status == HandoverStatus.proposed)
        .values(status=HandoverStatus.completed, open_collector_id=None, confirmed_by_treasurer_at=now)
        .execution_options(synchronize_session=False))
    if closed.rowcount != 1:
        raise Conflict(_("This hand-over is already closed."), field="id")
    await session.refresh(handover)
    # Recomputed under the ledger lock, up to the pinned position: the same as when proposed unless an
    # entry before it was reversed meanwhile (then the books follow the ledger, not the old figure).
    await lock_head(session)
    expected = await cash_held(session, handover.collector_user_id, up_to_seq=handover.as_of_seq,
                               currency=handover.currency)
    difference = expected.amount_minor - counted.amount_minor  # > 0: short, < 0: over
    lines = []
    if counted.amount_minor:
        lines.append(("cash:office", counted))
    if expected.amount_minor:
        lines.append((cash_account_code(handover.collector_user_id), -expected))
    if difference:
        lines.append(("cash_over_short", Money(difference, handover.currency)))
    entry = await post_entry(
        session, key=f"handover:{handover.id}", kind=EntryKind.handover, lines=lines,
        description=f"Cash handed over by collector #{handover.collector_user_id} to treasurer "
                    f"#{handover.treasurer_user_id} (hand-over {handover.id})",
        effective_date=today or dt.date.today(), actor=treasurer.user)
    handover.entry_id = entry.id
    handover.expected_minor = expected.amount_minor
    session.add(handover)
    await session.flush()
    await audit.record(session, action="dues.handover_confirmed", actor=treasurer.user, target_type="cash_handover",
                       target_id=handover.id,
                       detail={"collector_user_id": handover.collector_user_id, "expected_minor": expected.amount_minor,
                               "counted_minor": counted.amount_minor, "difference_minor": difference,
                               "entry_id": entry.id})
    return handover


async def collector_handovers(session: AsyncSession, collector_id: int, limit: int = 20) -> list[CashHandover]:
    return list((await session.execute(
        select(CashHandover).where(CashHandover.collector_user_id == collector_id)
        .order_by(CashHandover.id.desc()).limit(limit))).scalars())


async def treasurer_handovers(session: AsyncSession, treasurer_id: int, limit: int = 50) -> list[CashHandover]:
    return list((await session.execute(
        select(CashHandover).where(CashHandover.treasurer_user_id == treasurer_id)
        .order_by((CashHandover.status == HandoverStatus.proposed).desc(), CashHandover.id.desc())
        .limit(limit))).scalars())


async def head_seq(session: AsyncSession) -> int:
    return (await session.execute(select(LedgerHead.last_seq).where(LedgerHead.id == 1))).scalar_one()
