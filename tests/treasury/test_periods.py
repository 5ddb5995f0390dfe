"""Period close: a closed month refuses postings on both databases, through the ledger
service (a clear PeriodClosed) and through raw SQL (the trigger of migration 0008);
corrections are reversing entries in an open month; closing follows the rule (ended
month, reconciled or confirmed with a note) and changes nothing when refused."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from dues import ledger
from dues.errors import PeriodClosed
from dues.money import Money
from tests.treasury.conftest import post
from treasury import checkpoint, periods
from treasury.errors import AlreadyClosed, InvalidPeriod, NotReconciled
from treasury.models import AccountingPeriod, LedgerCheckpoint

MAY_2 = dt.date(2025, 5, 2)


async def close(services, people, month="2025-04", *, today=MAY_2, note="", confirm=False):
    async with services.sessions() as db:
        result = await periods.close_month(db, month=month, actor=people.treasurer, today=today, note=note,
                                           confirm=confirm, key=checkpoint.signing_key(services.settings))
        await db.commit()
        return result


async def count(services, model) -> int:
    async with services.reader() as db:
        return (await db.execute(select(func.count()).select_from(model))).scalar_one()


async def test_a_closed_month_refuses_postings_through_the_ledger(services, people):
    first = await post(services, key="k1", kind="transfer", lines=[("bank", Money(500)), ("general_fund", Money(-500))],
                       description="before", effective_date=dt.date(2025, 4, 20))
    period, cp = await close(services, people, note="no bank account yet", confirm=True)
    assert (period.month, period.open_differences) == ("2025-04", 1)  # the bank entry is on no statement
    assert (cp.month, cp.ledger_seq, cp.ledger_hash) == ("2025-04", first.seq, first.hash)

    with pytest.raises(PeriodClosed) as refused:
        await post(services, key="k2", kind="transfer", lines=[("bank", Money(1)), ("general_fund", Money(-1))],
                   description="late", effective_date=dt.date(2025, 4, 30))
    assert "2025-04 is closed" in refused.value.message and refused.value.status_code == 409
    async with services.reader() as db:
        assert (await db.get(ledger.LedgerHead, 1)).last_seq == first.seq  # nothing was posted

    # The correction: a reversing entry, with a reason, in the open month.
    async with services.sessions() as db:
        reversal = await periods.correct_entry(db, entry_id=first.id, reason="posted to the wrong fund",
                                               actor=people.treasurer, today=dt.date(2025, 5, 3))
        await db.commit()
    assert (reversal.effective_date, reversal.reverses_entry_id, reversal.description) == (
        dt.date(2025, 5, 3), first.id, "posted to the wrong fund")
    async with services.reader() as db:
        assert (await ledger.balances(db, accounts=["bank"]))["bank"].amount_minor == 0
        # A reversal dated in the closed month is refused like any posting.
    with pytest.raises(PeriodClosed):
        async with services.sessions() as db:
            await ledger.reverse_entry(db, entry_id=reversal.id, key="undo", reason="x", actor=None,
                                       effective_date=dt.date(2025, 4, 2))


async def test_a_closed_month_refuses_a_raw_sql_insert(services, people, backend):
    """Whoever writes to the database directly: the trigger refuses the entry header."""
    await close(services, people)
    async with services.reader() as db:
        bank = (await db.execute(text("SELECT id FROM ledger_account WHERE code = 'bank'"))).scalar_one()
        fund = (await db.execute(text("SELECT id FROM ledger_account WHERE code = 'general_fund'"))).scalar_one()
    entry_id = str(uuid.uuid4())
    with pytest.raises(DBAPIError) as refused:
        async with services.sessions() as db:
            for account, amount in ((bank, 700), (fund, -700)):
                await db.execute(text("INSERT INTO posting (entry_id, account_id, amount_minor, currency) "
                                      "VALUES (:e, :a, :m, 'INR')"), {"e": entry_id, "a": account, "m": amount})
            await db.execute(text(
                "INSERT INTO journal_entry (id, idempotency_key, kind, description, effective_date, posted_at, "
                "content_hash, prev_hash, hash, seq) VALUES (:id, 'raw', 'transfer', '', :d, :p, 'x', 'x', 'x', 1)"),
                {"id": entry_id, "d": dt.date(2025, 4, 15), "p": dt.datetime(2025, 5, 3, tzinfo=dt.UTC)})
            await db.commit()
    assert ledger.PERIOD_CLOSED_MESSAGE in str(refused.value)
    async with services.reader() as db:
        assert (await db.execute(text("SELECT count(*) FROM journal_entry"))).scalar_one() == 0
    # The same insert dated in May goes in (so it was the closed month that refused it).
    async with services.sessions() as db:
        for account, amount in ((bank, 700), (fund, -700)):
            await db.execute(text("INSERT INTO posting (entry_id, account_id, amount_minor, currency) "
                                  "VALUES (:e, :a, :m, 'INR')"), {"e": entry_id, "a": account, "m": amount})
        await db.execute(text(
            "INSERT INTO journal_entry (id, idempotency_key, kind, description, effective_date, posted_at, "
            "content_hash, prev_hash, hash, seq) VALUES (:id, 'raw', 'transfer', '', :d, :p, 'x', 'x', 'x', 1)"),
            {"id": entry_id, "d": dt.date(2025, 5, 15), "p": dt.datetime(2025, 5, 3, tzinfo=dt.UTC)})
        await db.commit()


async def test_a_closed_month_stays_closed(services, people):
    await close(services, people)
    for sql in ("UPDATE accounting_period SET month = '2025-03'", "DELETE FROM accounting_period",
                "DELETE FROM ledger_checkpoint"):
        with pytest.raises(DBAPIError):
            async with services.sessions() as db:
                await db.execute(text(sql))
                await db.commit()
    with pytest.raises(AlreadyClosed):
        await close(services, people)
    assert await count(services, AccountingPeriod) == 1 and await count(services, LedgerCheckpoint) == 1


@pytest.mark.parametrize("month,today,error", [
    ("2025-05", MAY_2, InvalidPeriod),  # not ended
    ("2025-04", dt.date(2025, 4, 30), InvalidPeriod),  # its last day
    ("2025-13", MAY_2, InvalidPeriod),
    ("April", MAY_2, InvalidPeriod),
])
async def test_a_month_that_cannot_be_closed_changes_nothing(services, people, month, today, error):
    with pytest.raises(error):
        await close(services, people, month, today=today)
    assert await count(services, AccountingPeriod) == 0 and await count(services, LedgerCheckpoint) == 0


async def test_differences_need_confirmation_and_a_note(services, people, april):
    # April has a card payment booked without a card record, and no statement for... nothing at the bank.
    with pytest.raises(NotReconciled) as refused:
        await close(services, people)
    assert "not reconciled" in refused.value.message
    with pytest.raises(NotReconciled):
        await close(services, people, confirm=True)  # a confirmation needs its note
    assert await count(services, AccountingPeriod) == 0
    period, _cp = await close(services, people, confirm=True, note="card records arrive with the card module")
    assert period.open_differences >= 1 and period.reconciled_note.startswith("card records")


async def test_an_empty_reconciled_month_closes_without_confirmation(services, people):
    period, cp = await close(services, people)
    assert (period.open_differences, cp.ledger_seq) == (0, 0)
    async with services.reader() as db:
        assert await periods.is_closed(db, "2025-04") and not await periods.is_closed(db, "2025-05")
