"""The ledger services: validation before anything is written, idempotency keys
(also under concurrent double posting), reversals, balances, the chart of
accounts, and a chain that never forks under concurrent writers."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import func, select

from dues import ledger
from dues.errors import (AlreadyReversed, CurrencyMismatch, IdempotencyConflict, InvalidAmount, InvalidEntry,
                         UnbalancedEntry, UnknownAccount, UnknownEntry)
from dues.models import JournalEntry, LedgerAccount, Posting
from dues.money import Money
from tests.dues.conftest import DAY, cash_lines, post, verify


async def count(services, model) -> int:
    async with services.reader() as db:
        return (await db.execute(select(func.count()).select_from(model))).scalar_one()


async def test_posting_an_entry(services, chart, collectors, members):
    collector = collectors[0]
    entry = await post(services, key="cash:r1", lines=cash_lines(collector, 150), actor=collector,
                       member_id=members[0], description="April dues")
    assert entry.seq == 1 and entry.prev_hash == "0" * 64 and len(entry.hash) == 64
    assert (entry.created_by_user_id, entry.member_id, entry.kind) == (collector.id, members[0], "cash_payment")
    async with services.reader() as db:
        assert await ledger.entry_lines(db, entry.id) == cash_lines(collector, 150)
        balances = await ledger.balances(db)
    assert balances[f"cash:collector:{collector.id}"] == Money(15000)
    assert balances["dues_income"] == Money(-15000)
    assert sum(m.amount_minor for m in balances.values()) == 0
    assert (await verify(services)).intact


async def test_same_key_same_content_returns_the_original(services, chart, collectors):
    first = await post(services, key="cash:r1", lines=cash_lines(collectors[0], 150), actor=collectors[0])
    again = await post(services, key="cash:r1", lines=cash_lines(collectors[0], 150), actor=collectors[0])
    # The order of the lines is not part of the content.
    reordered = await post(services, key="cash:r1", lines=cash_lines(collectors[0], 150)[::-1], actor=collectors[0])
    assert first.id == again.id == reordered.id and first.hash == again.hash
    assert await count(services, JournalEntry) == 1 and await count(services, Posting) == 2
    assert (await verify(services)).checked == 1


@pytest.mark.parametrize("change", [
    {"lines": "more"}, {"lines": "other collector"}, {"description": "May dues"},
    {"effective_date": dt.date(2025, 5, 1)}, {"kind": "card_payment"}, {"actor": None}, {"member": 1},
])
async def test_same_key_other_content_is_a_conflict(change, services, chart, collectors, members):
    original = dict(key="cash:r1", lines=cash_lines(collectors[0], 150), actor=collectors[0])
    await post(services, **original)
    replay = dict(original)
    for name, value in change.items():
        if name == "lines":
            replay["lines"] = cash_lines(collectors[0], 151) if value == "more" else cash_lines(collectors[1], 150)
        elif name == "member":
            replay["member_id"] = members[value]
        else:
            replay[name] = value
    with pytest.raises(IdempotencyConflict):
        await post(services, **replay)
    assert await count(services, JournalEntry) == 1


@pytest.mark.parametrize("writers", [2, 6])
async def test_concurrent_double_post_of_one_key_posts_once(writers, services, chart, collectors):
    """Each writer has its own session and transaction (on SQLite they queue for the write lock)."""
    results = await asyncio.gather(*(post(services, key="stripe:evt_1", lines=cash_lines(collectors[0], 300))
                                     for _ in range(writers)))
    assert len({entry.id for entry in results}) == 1
    assert await count(services, JournalEntry) == 1 and await count(services, Posting) == 2
    assert (await verify(services)).intact


async def test_concurrent_writers_never_fork_the_chain(services, chart, collectors):
    results = await asyncio.gather(*(post(services, key=f"cash:r{i}", lines=cash_lines(collectors[i % 2], 100 + i))
                                     for i in range(8)))
    assert sorted(entry.seq for entry in results) == list(range(1, 9))
    report = await verify(services)
    assert report.intact and report.checked == 8


async def test_a_session_reused_across_transactions_sees_the_moved_head(services, chart, collectors):
    """Sessions keep objects after commit; the head must still be re-read, or the chain would fork."""
    async with services.sessions() as first:
        await ledger.post_entry(first, key="a", kind="cash_payment", lines=cash_lines(collectors[0], 1),
                                description="", effective_date=DAY)
        await first.commit()
        await post(services, key="b", lines=cash_lines(collectors[0], 2))  # another writer moves the head
        entry = await ledger.post_entry(first, key="c", kind="cash_payment", lines=cash_lines(collectors[0], 3),
                                        description="", effective_date=DAY)
        await first.commit()
    assert entry.seq == 3
    assert (await verify(services)).intact


@pytest.mark.parametrize("lines,error", [
    ([("bank", Money(100))], UnbalancedEntry),
    ([], UnbalancedEntry),
    ([("bank", Money(100)), ("dues_income", Money(-99))], UnbalancedEntry),
    ([("bank", Money(100)), ("dues_income", Money(-100)), ("bank", Money(0))], InvalidAmount),
    ([("bank", 100), ("dues_income", -100)], InvalidAmount),
    ([("bank", Money(100)), ("nowhere", Money(-100))], UnknownAccount),
    ([("bank", Money(100, "USD")), ("dues_income", Money(-100, "USD"))], CurrencyMismatch),
    ([("bank", Money(100)), ("dues_income", Money(-100, "USD")), ("dues_income", Money(100, "USD")),
      ("card_fees", Money(-100))], CurrencyMismatch),
    ([("bank", Money(100)), ("", Money(-100))], InvalidEntry),
])
async def test_bad_lines_are_refused_before_anything_is_written(lines, error, services, chart):
    with pytest.raises(error):
        await post(services, key="bad", lines=lines)
    assert await count(services, JournalEntry) == 0 and await count(services, Posting) == 0


@pytest.mark.parametrize("header", [{"key": ""}, {"key": "k" * 201}, {"kind": ""},
                                    {"effective_date": dt.datetime(2025, 4, 1, tzinfo=dt.UTC)},
                                    {"effective_date": "2025-04-01"}, {"description": "x" * 501}])
async def test_bad_headers_are_refused(header, services, chart, collectors):
    with pytest.raises(InvalidEntry):
        await post(services, **{"key": "k", "lines": cash_lines(collectors[0], 1), **header})
    assert await count(services, JournalEntry) == 0


async def test_reversal_restores_balances_once(services, chart, collectors, members):
    original = await post(services, key="cash:r1", lines=cash_lines(collectors[0], 150), member_id=members[0])
    async with services.sessions() as db:
        reversal = await ledger.reverse_entry(db, entry_id=original.id, key="fix:r1", reason="wrong member",
                                              actor=collectors[1], effective_date=DAY)
        await db.commit()
    assert (reversal.reverses_entry_id, reversal.kind, reversal.member_id) == (original.id, "reversal", members[0])
    async with services.sessions() as db:
        # A replay under the same key is the same reversal, not a second one.
        again = await ledger.reverse_entry(db, entry_id=original.id, key="fix:r1", reason="wrong member",
                                           actor=collectors[1], effective_date=DAY)
        assert again.id == reversal.id
        with pytest.raises(AlreadyReversed):
            await ledger.reverse_entry(db, entry_id=original.id, key="fix:r1-again", reason="twice",
                                       actor=collectors[1])
        with pytest.raises(UnknownEntry):
            await ledger.reverse_entry(db, entry_id="no-such-entry", key="fix:x", reason="x", actor=None)
        with pytest.raises(InvalidEntry):
            await ledger.reverse_entry(db, entry_id=original.id, key="fix:y", reason=" ", actor=None)
        assert set((await ledger.balances(db)).values()) == {Money(0)}
        # A reversal can itself be reversed (the original stands again).
        await ledger.reverse_entry(db, entry_id=reversal.id, key="fix:fix:r1", reason="it was right", actor=None)
        assert (await ledger.balances(db, accounts=["dues_income"]))["dues_income"] == Money(-15000)
        await db.commit()
    assert (await verify(services)).checked == 3


async def test_posting_that_claims_to_reverse_an_unknown_entry_is_refused(services, chart, collectors):
    with pytest.raises(UnknownEntry):
        await post(services, key="k", lines=cash_lines(collectors[0], 1), reverses="no-such-entry")


async def test_balances_as_of_a_date_and_for_some_accounts(services, chart, collectors):
    cash = f"cash:collector:{collectors[0].id}"
    await post(services, key="march", lines=cash_lines(collectors[0], 100), effective_date=dt.date(2025, 3, 31))
    await post(services, key="april", lines=cash_lines(collectors[0], 50), effective_date=dt.date(2025, 4, 1))
    async with services.reader() as db:
        assert (await ledger.balances(db, as_of=dt.date(2025, 3, 31)))[cash] == Money(10000)
        assert (await ledger.balances(db, as_of=dt.date(2025, 4, 1)))[cash] == Money(15000)
        assert (await ledger.balances(db, as_of=dt.date(2025, 1, 1)))[cash] == Money(0)
        assert await ledger.balances(db, accounts=[cash, "bank"]) == {cash: Money(15000), "bank": Money(0)}
        with pytest.raises(UnknownAccount):
            await ledger.balances(db, accounts=["bank", "nowhere"])


async def test_chart_is_idempotent_and_safe_to_create_concurrently(services):
    async def create():
        async with services.sessions() as db:
            await ledger.ensure_accounts(db)
            account = await ledger.collector_cash_account(db, 7)
            await db.commit()
            return account.id

    ids = await asyncio.gather(create(), create(), create())
    assert len(set(ids)) == 1
    assert await count(services, LedgerAccount) == len(ledger.STANDARD_ACCOUNTS) + 1
    async with services.reader() as db:
        account = (await db.execute(select(LedgerAccount).where(LedgerAccount.code == "cash:collector:7"))).scalar_one()
    assert (account.type, account.currency) == ("asset", "INR")
