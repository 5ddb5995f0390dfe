"""Closing an accounting month, and corrections by reversing entries.

Rule for closing (README, "Treasurer's books"): a month can be closed once it
has ended. If its reconciliation still shows differences (bank lines not
matched, ledger bank entries not on a statement, card or cash differences),
closing needs the treasurer's explicit confirmation and a note saying why; the
count of differences left is kept with the period. A closed month stays closed
(the database refuses UPDATE and DELETE of `accounting_period`), and the
database refuses any journal entry dated in it, on both engines. Mistakes found
later are corrected by a reversing entry, with a reason, dated in an open month.

Closing locks the ledger head (as every posting does), so no posting into the
month can slip in while it closes, and signs a checkpoint of both chain heads.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dues.ledger import lock_head, reverse_entry
from treasury.checkpoint import make_checkpoint
from treasury.errors import AlreadyClosed, InvalidPeriod, NotReconciled
from treasury.models import AccountingPeriod, LedgerCheckpoint
from treasury.reconcile import Differences, month_differences
from treasury.reports import month_bounds
from union import audit
from union.errors import InvalidInput
from union.i18n import _

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
MAX_NOTE = 1000


def check_month(text: object) -> str:
    if not isinstance(text, str) or not MONTH.match(text.strip()):
        raise InvalidPeriod(_("Give the month as YYYY-MM, for example 2025-04."), field="month")
    return text.strip()


async def closed_months(session: AsyncSession) -> list[AccountingPeriod]:
    return list((await session.execute(select(AccountingPeriod).order_by(AccountingPeriod.month.desc()))).scalars())


async def is_closed(session: AsyncSession, month: str) -> bool:
    return (await session.execute(select(AccountingPeriod.id).where(AccountingPeriod.month == month))).first() is not None


async def differences(session: AsyncSession, month: str) -> Differences:
    start, end = month_bounds(check_month(month))
    return await month_differences(session, start=start, end=end)


async def close_month(session: AsyncSession, *, month: object, actor, today: dt.date, note: str = "",
                      confirm: bool = False, key) -> tuple[AccountingPeriod, LedgerCheckpoint]:
    """Close a month and sign a checkpoint of the chain heads. Flushes, never commits."""
    month = check_month(month)
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        raise InvalidInput(_("The note may have at most %(count)d characters.", count=MAX_NOTE), field="note")
    _start, end = month_bounds(month)
    if end >= today:
        raise InvalidPeriod(_("%(month)s has not ended yet: a month can be closed from the first day of the next.",
                              month=month), field="month")
    await lock_head(session)  # no posting into the month while it closes
    if await is_closed(session, month):
        raise AlreadyClosed(_("%(month)s is already closed.", month=month), field="month")
    left = await differences(session, month)
    if left.total and not (confirm and note):
        details = "; ".join(f"{label}: {count}" for label, count in left.items)
        raise NotReconciled(_("%(month)s is not reconciled (%(details)s). Reconcile it, or confirm and say why in "
                              "the note.", month=month, details=details), field="confirm")
    period = AccountingPeriod(month=month, closed_by_user_id=getattr(actor, "id", None), reconciled_note=note,
                              open_differences=left.total)
    session.add(period)
    await session.flush()
    await audit.record(session, action="treasury.period_closed", actor=actor, target_type="period",
                       target_id=month, detail={"open_differences": left.total})
    checkpoint = await make_checkpoint(session, month=month, actor=actor, key=key)
    return period, checkpoint


async def correct_entry(session: AsyncSession, *, entry_id: object, reason: object, actor, today: dt.date):
    """Reverse an entry, dated today (an open month), with the treasurer's reason."""
    if not isinstance(entry_id, str) or not entry_id.strip():
        raise InvalidInput(_("Give the id of the entry to reverse."), field="entry_id")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput(_("A correction needs a reason."), field="reason")
    if len(reason.strip()) > 500:
        raise InvalidInput(_("The reason may have at most %(count)d characters.", count=500), field="reason")
    entry_id = entry_id.strip()
    reversal = await reverse_entry(session, entry_id=entry_id, key=f"correction:{entry_id}", reason=reason.strip(),
                                   actor=actor, effective_date=today)
    await audit.record(session, action="treasury.correction", actor=actor, target_type="journal_entry",
                       target_id=entry_id, detail={"reversal": reversal.id})
    return reversal
