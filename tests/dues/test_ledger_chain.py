"""Tamper evidence: when someone with database access gets round the triggers
(drops them on SQLite, disables them on PostgreSQL) and changes the books,
verify_ledger_chain finds the change and names the entry where the chain breaks."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select, text

from dues import ledger
from dues.models import JournalEntry
from dues.money import Money
from tests.dues.conftest import as_attacker, cash_lines, post, verify

ENTRIES = 6


@pytest.fixture
async def chain(services, chart, collectors, members) -> list[JournalEntry]:
    return [await post(services, key=f"cash:r{i}", lines=cash_lines(collectors[i % 2], 100 + i), actor=collectors[0],
                       member_id=members[i % 2], description=f"dues {i}") for i in range(ENTRIES)]


async def test_intact_and_empty_chains_verify(services, chart):
    assert (await verify(services)) == ledger.LedgerChainReport(0)
    for i in range(3):
        await post(services, key=f"k{i}", lines=[("bank", Money(5)), ("dues_income", Money(-5))])
    report = await verify(services)
    assert report.intact and report.checked == 3 and report.broken_entry_id is None


@pytest.mark.parametrize("sql", [
    "UPDATE journal_entry SET description = 'dues 2 (waived)' WHERE id = :id",
    "UPDATE journal_entry SET kind = 'waiver' WHERE id = :id",
    "UPDATE journal_entry SET member_id = NULL WHERE id = :id",
    "UPDATE journal_entry SET created_by_user_id = NULL WHERE id = :id",
    "UPDATE journal_entry SET idempotency_key = 'cash:r99' WHERE id = :id",
    "UPDATE journal_entry SET effective_date = '2024-01-01' WHERE id = :id",
    "UPDATE journal_entry SET posted_at = '2024-01-01 00:00:00.000000' WHERE id = :id",
    "UPDATE journal_entry SET hash = content_hash WHERE id = :id",
    # Both sides of the entry, so it still balances: only the hash can tell.
    "UPDATE posting SET amount_minor = amount_minor * 10 WHERE entry_id = :id",
    "UPDATE posting SET account_id = (SELECT id FROM ledger_account WHERE code = 'bank') "
    "WHERE entry_id = :id AND amount_minor > 0",
    "UPDATE posting SET amount_minor = amount_minor + 1 WHERE entry_id = :id AND amount_minor > 0",
    "DELETE FROM posting WHERE entry_id = :id",
])
async def test_an_altered_entry_is_found_and_named(sql, chain, services, backend):
    victim = chain[2]
    if "posted_at" in sql and backend == "postgresql":
        sql = sql.replace("'2024-01-01 00:00:00.000000'", "posted_at + interval '1 microsecond'")
    await as_attacker(services, (sql, {"id": victim.id}))
    report = await verify(services)
    assert (report.broken_entry_id, report.broken_seq, report.checked) == (victim.id, victim.seq, 2)
    assert not report.intact and "altered" in report.reason


async def test_a_posting_slipped_into_a_posted_entry_is_found(chain, services, chart):
    victim = chain[3]
    await as_attacker(services, *[
        ("INSERT INTO posting (entry_id, account_id, amount_minor, currency) VALUES (:e, :a, :m, 'INR')",
         {"e": victim.id, "a": chart[code], "m": amount}) for code, amount in [("bank", 700), ("dues_income", -700)]])
    assert (await verify(services)).broken_entry_id == victim.id


async def test_rehashing_the_altered_entry_breaks_the_next_link(chain, services):
    """Recomputing the altered entry's own hashes does not help: the next entry points at the old hash."""
    victim = chain[1]
    async with services.reader() as db:
        lines = [(code, m.currency, m.amount_minor * 10) for code, m in await ledger.entry_lines(db, victim.id)]
    forged_content = ledger.content_hash(key=victim.idempotency_key, kind=victim.kind, description=victim.description,
                                         effective_date=victim.effective_date,
                                         created_by_user_id=victim.created_by_user_id, member_id=victim.member_id,
                                         reverses_entry_id=None, lines=lines)
    forged = ledger.chain_hash(prev_hash=victim.prev_hash, content_hash=forged_content, seq=victim.seq,
                               entry_id=victim.id, posted_at=victim.posted_at)
    await as_attacker(services,
                      ("UPDATE posting SET amount_minor = amount_minor * 10 WHERE entry_id = :id", {"id": victim.id}),
                      ("UPDATE journal_entry SET content_hash = :c, hash = :h WHERE id = :id",
                       {"c": forged_content, "h": forged, "id": victim.id}))
    report = await verify(services)
    assert report.broken_entry_id == chain[2].id and "previous-hash link" in report.reason


@pytest.mark.parametrize("position", [0, 3])
async def test_a_removed_entry_is_found(position, chain, services):
    victim = chain[position]
    await as_attacker(services, ("DELETE FROM posting WHERE entry_id = :id", {"id": victim.id}),
                      ("DELETE FROM journal_entry WHERE id = :id", {"id": victim.id}))
    report = await verify(services)
    assert report.broken_entry_id == chain[position + 1].id and "removed" in report.reason
    assert report.checked == position


async def test_a_removed_last_entry_is_found(chain, services):
    victim = chain[-1]
    await as_attacker(services, ("DELETE FROM posting WHERE entry_id = :id", {"id": victim.id}),
                      ("DELETE FROM journal_entry WHERE id = :id", {"id": victim.id}))
    report = await verify(services)
    assert report.broken_seq == victim.seq and report.checked == ENTRIES - 1 and "cut short" in report.reason


async def test_swapped_entries_are_found(chain, services):
    a, b = chain[1], chain[2]
    await as_attacker(services, ("UPDATE journal_entry SET seq = -1 WHERE id = :id", {"id": a.id}),
                      ("UPDATE journal_entry SET seq = :s WHERE id = :id", {"s": a.seq, "id": b.id}),
                      ("UPDATE journal_entry SET seq = :s WHERE id = :id", {"s": b.seq, "id": a.id}))
    report = await verify(services)
    assert report.broken_entry_id == b.id and report.checked == 1


async def test_an_entry_added_behind_the_ledgers_back_is_found(chain, services, chart):
    """A balanced entry inserted by raw SQL passes the triggers, but it is not in the chain."""
    for seq, expect in [(ENTRIES + 5, "beyond the chain head"), (ENTRIES + 1, "beyond the chain head")]:
        forged = str(uuid.uuid4())
        await as_attacker(services, *[
            ("INSERT INTO posting (entry_id, account_id, amount_minor, currency) VALUES (:e, :a, :m, 'INR')",
             {"e": forged, "a": chart[code], "m": amount}) for code, amount in [("bank", 900), ("dues_income", -900)]
        ], ("INSERT INTO journal_entry (id, idempotency_key, kind, description, effective_date, posted_at, "
            "content_hash, prev_hash, hash, seq) VALUES (:id, :id, 'cash_payment', '', '2025-04-01', "
            "CURRENT_TIMESTAMP, :h, :h, :h, :seq)", {"id": forged, "h": chain[-1].hash, "seq": seq}))
        report = await verify(services)
        assert (report.broken_entry_id, report.broken_seq) == (forged, seq) and expect in report.reason
        await as_attacker(services, ("DELETE FROM posting WHERE entry_id = :id", {"id": forged}),
                          ("DELETE FROM journal_entry WHERE id = :id", {"id": forged}))
    # The head moved to cover a forged entry: its hashes do not fit.
    await as_attacker(services, ("UPDATE ledger_head SET last_seq = last_seq + 1", {}))
    assert "cut short" in (await verify(services)).reason


async def test_postings_left_without_their_entry_are_found(chain, services, chart, backend):
    orphan = str(uuid.uuid4())
    insert = text("INSERT INTO posting (entry_id, account_id, amount_minor, currency) VALUES (:e, :a, 500, 'INR')")
    async with services.engine.connect() as conn:
        if backend == "sqlite":
            # The pragma is a no-op inside a transaction, and every SQLAlchemy transaction begins one: use the driver.
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute("PRAGMA foreign_keys = OFF")
            await conn.execute(insert, {"e": orphan, "a": chart["bank"]})
        else:
            await conn.execute(text("ALTER TABLE posting DISABLE TRIGGER ALL"))  # foreign keys are triggers too
            await conn.execute(insert, {"e": orphan, "a": chart["bank"]})
            await conn.execute(text("ALTER TABLE posting ENABLE TRIGGER ALL"))
        await conn.commit()
        await conn.invalidate()  # never hand a connection without foreign keys back to the pool
    report = await verify(services)
    assert report.broken_entry_id == orphan and report.checked == ENTRIES and "without an entry" in report.reason


async def test_an_unreadable_value_is_named_not_a_crash(chain, services, backend):
    victim = chain[4]
    if backend == "sqlite":  # SQLite columns take any text
        sql = "UPDATE journal_entry SET effective_date = 'not a date' WHERE id = :id"
    else:  # PostgreSQL keeps a date a date; the nearest attack is a shifted one
        sql = "UPDATE journal_entry SET effective_date = effective_date + 1 WHERE id = :id"
    await as_attacker(services, (sql, {"id": victim.id}))
    report = await verify(services)
    assert (report.broken_entry_id, report.broken_seq) == (victim.id, victim.seq) and not report.intact


async def test_verification_beside_a_concurrent_writer_stays_intact(chain, services, collectors):
    """Entries committed while the walk runs are past the head it read first: not a false alarm."""
    async def keep_posting():
        for i in range(10):
            await post(services, key=f"live:{i}", lines=cash_lines(collectors[0], 1 + i))

    async def keep_verifying():
        reports = []
        for _ in range(10):
            reports.append(await verify(services))
            await asyncio.sleep(0)
        return reports

    _, reports = await asyncio.gather(keep_posting(), keep_verifying())
    assert all(r.intact for r in reports), [r for r in reports if not r.intact]
    assert (await verify(services)).checked == ENTRIES + 10


async def test_stored_hashes_are_what_the_ledger_computes(chain, services):
    """The published hash functions are the ones the chain uses (the treasurer's checkpoints rely on them)."""
    async with services.reader() as db:
        entry = (await db.execute(select(JournalEntry).where(JournalEntry.seq == 3))).scalar_one()
        lines = [(code, m.currency, m.amount_minor) for code, m in await ledger.entry_lines(db, entry.id)]
    assert entry.content_hash == ledger.content_hash(
        key=entry.idempotency_key, kind=entry.kind, description=entry.description,
        effective_date=entry.effective_date, created_by_user_id=entry.created_by_user_id,
        member_id=entry.member_id, reverses_entry_id=entry.reverses_entry_id, lines=lines)
    assert entry.hash == ledger.chain_hash(prev_hash=entry.prev_hash, content_hash=entry.content_hash,
                                           seq=entry.seq, entry_id=entry.id, posted_at=entry.posted_at)
    assert entry.prev_hash == chain[1].hash
