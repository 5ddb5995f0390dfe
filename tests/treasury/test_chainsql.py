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
