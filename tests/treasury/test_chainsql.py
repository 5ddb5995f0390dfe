"""The fast chain check (treasury.chainsql): on PostgreSQL the database re-hashes every
entry; it must agree with Python's hashing for any text (quotes, backslashes, control
characters, Kannada, emoji), and whatever it finds wrong is named by the Python walk."""

from __future__ import annotations

import datetime as dt

import pytest

from dues import ledger
from dues.money import Money
from tests.dues.conftest import as_attacker
from tests.treasury.conftest import post
from treasury import chainsql

TRICKY = ['plain', 'quote " and \\ backslash', "new\nline\ttab\r\x01\x1f\x7f", "ಕನ್ನಡ ದಾಖಲೆ", "emoji 🙂 / slash",
          "\u2028 line separator", ""]


@pytest.fixture
async def tricky_chain(services, people, april):
    entries = []
    for i, description in enumerate(TRICKY):
        entries.append(await post(services, key=f"tricky:{i}:{description}", kind="transfer",
                                  lines=[("bank", Money(100 + i)), ("general_fund", Money(-100 - i))],
                                  description=description, effective_date=dt.date(2025, 4, 21),
                                  actor=people.treasurer, member_id=april.members["B"].id))
    async with services.sessions() as db:
        entries.append(await ledger.reverse_entry(db, entry_id=entries[0].id, key="tricky:undo", reason="oops",
                                                  actor=people.treasurer, effective_date=dt.date(2025, 4, 22)))
        await db.commit()
    return entries


async def test_the_database_hashes_like_python(services, tricky_chain, backend, monkeypatch):
    if backend == "postgresql":
        async def no_walk(*a, **kw):
            raise AssertionError("the fast check fell back to the Python walk on an intact chain")
        monkeypatch.setattr(chainsql, "verify_ledger_chain", no_walk)
    async with services.reader() as db:
        report = await chainsql.verify_ledger(db)
    assert report.intact and report.checked == 9 + len(TRICKY) + 1


@pytest.mark.parametrize("sql", [
    "UPDATE journal_entry SET description = 'changed' WHERE id = :id",
    "UPDATE posting SET amount_minor = amount_minor * 2 WHERE entry_id = :id",
    "UPDATE journal_entry SET member_id = NULL WHERE id = :id",
    "DELETE FROM posting WHERE entry_id = :id AND amount_minor < 0",
])
async def test_a_change_is_found_and_named(services, tricky_chain, sql):
    victim = tricky_chain[3]
    await as_attacker(services, (sql, {"id": victim.id}))
    async with services.reader() as db:
        report = await chainsql.verify_ledger(db)
    assert (report.broken_entry_id, report.broken_seq) == (victim.id, victim.seq) and not report.intact


async def test_a_cut_tail_is_found(services, tricky_chain):
    last = tricky_chain[-1]
    await as_attacker(services, ("DELETE FROM posting WHERE entry_id = :id", {"id": last.id}),
                      ("DELETE FROM journal_entry WHERE id = :id", {"id": last.id}))
    async with services.reader() as db:
        report = await chainsql.verify_ledger(db)
    assert not report.intact and "cut short" in report.reason


# ---------------------------------------------------------------- the pass cut into ranges (worker processes)

from sqlalchemy import select  # noqa: E402

from dues.models import JournalEntry  # noqa: E402


# The quick pass runs on PostgreSQL only (SQLite always walks): these tests are not parametrized over SQLite.
ONLY_POSTGRESQL = pytest.mark.parametrize("backend", ["postgresql"])


@pytest.fixture
def in_ranges(backend, monkeypatch):
    """Every chain verified by worker processes, three ranges; records whether the walk had to run."""
    monkeypatch.setattr(chainsql, "PARALLEL_FROM", 0)
    monkeypatch.setattr(chainsql, "WORKERS", 3)
    walked = []
    walk = chainsql.verify_ledger_chain

    async def spy(*a, **kw):
        walked.append(True)
        return await walk(*a, **kw)
    monkeypatch.setattr(chainsql, "verify_ledger_chain", spy)
    return walked


async def by_seq(services) -> list:
    async with services.reader() as db:
        return list((await db.execute(select(JournalEntry).order_by(JournalEntry.seq))).scalars())


@ONLY_POSTGRESQL
async def test_ranges_verify_an_intact_chain_without_the_walk(services, tricky_chain, in_ranges):
    seen = []
    async with services.reader() as db:
        report = await chainsql.verify_ledger(db, progress=seen.append)
    assert report.intact and report.checked == 17 and not in_ranges
    assert seen and seen[-1] == 17  # progress summed over the ranges


@pytest.mark.parametrize("victim_seq", [1, 8, 17])  # in the first, a middle and the last of three ranges
@pytest.mark.parametrize("sql", [
    "UPDATE journal_entry SET description = 'changed' WHERE id = :id",
    "UPDATE posting SET amount_minor = amount_minor * 2 WHERE entry_id = :id",
    "UPDATE journal_entry SET posted_at = posted_at + interval '1 microsecond' WHERE id = :id",
])
@ONLY_POSTGRESQL
async def test_ranges_hand_a_change_to_the_walk(services, tricky_chain, in_ranges, victim_seq, sql):
    victim = (await by_seq(services))[victim_seq - 1]
    await as_attacker(services, (sql, {"id": victim.id}))
    async with services.reader() as db:
        report = await chainsql.verify_ledger(db)
    assert (report.broken_seq, report.broken_entry_id) == (victim.seq, victim.id) and in_ranges


@pytest.mark.parametrize("removed_seq", [5, 6, 11, 12])  # the last and the first entry of a range
@ONLY_POSTGRESQL
async def test_ranges_find_an_entry_removed_at_a_boundary(services, tricky_chain, in_ranges, removed_seq):
    entries = await by_seq(services)
    removed = entries[removed_seq - 1]
    await as_attacker(services, ("DELETE FROM posting WHERE entry_id = :id", {"id": removed.id}),
                      ("DELETE FROM journal_entry WHERE id = :id", {"id": removed.id}))
    async with services.reader() as db:
        report = await chainsql.verify_ledger(db)
    assert not report.intact and report.broken_seq == removed_seq + 1 and in_ranges


@ONLY_POSTGRESQL
async def test_ranges_find_a_posting_moved_to_another_entry(services, tricky_chain, in_ranges):
    entries = await by_seq(services)
    await as_attacker(services, ("UPDATE posting SET entry_id = :to WHERE id = (SELECT max(id) FROM posting "
                                 "WHERE entry_id = :from)", {"from": entries[6].id, "to": entries[2].id}))
    async with services.reader() as db:
        report = await chainsql.verify_ledger(db)
    assert report.broken_seq == 3 and in_ranges


@ONLY_POSTGRESQL
async def test_ranges_find_an_orphan_posting(services, tricky_chain, in_ranges):
    await as_attacker(services, ("SET session_replication_role = replica", {}),  # foreign keys off too
                      ("INSERT INTO posting (entry_id, account_id, amount_minor, currency) "
                                 "SELECT 'no-such-entry', account_id, 5, currency FROM posting LIMIT 1", {}))
    async with services.reader() as db:
        report = await chainsql.verify_ledger(db)
    assert not report.intact and "without an entry" in report.reason and in_ranges


@pytest.mark.parametrize("size", [0, 1, 2, 3])  # fewer entries than ranges, down to an empty ledger
@ONLY_POSTGRESQL
async def test_ranges_small_chains(services, people, in_ranges, size):
    from tests.treasury.conftest import post as post_entry

    for i in range(size):
        lines = [("bank", Money(10 + i)), ("general_fund", Money(-10 - i))]
        if i == 2:  # three lines, sorted as content_hash sorts them
            lines = [("general_fund", Money(-12)), ("bank", Money(5)), ("cash:office", Money(7))]
        await post_entry(services, key=f"small:{i}", kind="transfer", description=f"small {i}", lines=lines,
                         effective_date=dt.date(2025, 4, 21), actor=people.treasurer)
    async with services.reader() as db:
        report = await chainsql.verify_ledger(db)
    assert report.intact and report.checked == size and not in_ranges
    if size == 3:  # a change in the entry of three lines is found too
        victim = (await by_seq(services))[2]
        await as_attacker(services, ("UPDATE posting SET amount_minor = 8 WHERE entry_id = :id AND amount_minor = 7",
                                     {"id": victim.id}),
                          ("UPDATE posting SET amount_minor = 4 WHERE entry_id = :id AND amount_minor = 5",
                           {"id": victim.id}))
        async with services.reader() as db:
            report = await chainsql.verify_ledger(db)
        assert (report.broken_seq, report.broken_entry_id) == (3, victim.id) and in_ranges


@ONLY_POSTGRESQL
async def test_ranges_fall_back_to_this_process_when_workers_cannot_connect(services, tricky_chain, in_ranges,
                                                                           monkeypatch):
    monkeypatch.setattr(chainsql, "_worker_dsn", lambda session: "postgresql://nobody@127.0.0.1:1/none")
    async with services.reader() as db:
        report = await chainsql.verify_ledger(db)
    assert report.intact and report.checked == 17 and not in_ranges


@ONLY_POSTGRESQL
async def test_ranges_leave_no_process_behind_when_cancelled(services, tricky_chain, in_ranges, monkeypatch):
    import asyncio

    started = []
    real = asyncio.create_subprocess_exec

    async def spawn(*a, **kw):
        process = await real(*a, **kw)
        started.append(process)
        if len(started) == 2:
            task.cancel()  # while the workers run
        return process
    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn)

    async def verify():
        async with services.reader() as db:
            return await chainsql.verify_ledger(db)
    task = asyncio.ensure_future(verify())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(started) >= 2 and all(process.returncode is not None for process in started)


def test_copy_text_and_iso_times_are_read_exactly():
    assert chainsql._unescape(r"a\\b\tc\nd\re\bf\fg\vh") == "a\\b\tc\nd\re\bf\fg\vh"
    with pytest.raises(chainsql._Doubt):
        chainsql._unescape(r"octal \101")
    cases = {"2024-01-01 00:00:00+00": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
             "2024-01-01 12:34:56.5+00": dt.datetime(2024, 1, 1, 12, 34, 56, 500000, tzinfo=dt.UTC),
             "0999-12-31 23:59:59.000001+00": dt.datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=dt.UTC)}
    for text_, value in cases.items():
        assert chainsql._text_time(text_) == value.isoformat(timespec="microseconds")
    for odd in ["0044-03-15 12:00:00+00 BC", "10000-01-01 00:00:00+00", "infinity", "2024-01-01 00:00:00+05:30"]:
        with pytest.raises(chainsql._Doubt):
            chainsql._text_time(odd)
    assert chainsql._text_day("0999-01-02") == dt.date(999, 1, 2).isoformat()
    for odd in ["0044-03-15 BC", "10000-01-01", "infinity"]:
        with pytest.raises(chainsql._Doubt):
            chainsql._text_day(odd)
