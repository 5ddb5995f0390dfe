"""Migration 0003 on a brand-new empty database (SQLite and PostgreSQL): up
from 0002 makes the ledger tables, triggers and the chain's genesis head; down
to 0002 removes every one of them and leaves the rest alone; up again works and
the database refuses unbalanced and changed entries once more."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from migrations.helpers import GENESIS
from tests.union.test_migrations import _run, empty_database, functions, tables, triggers  # noqa: F401
from union.db import downgrade, migrate

LEDGER_TABLES = {"ledger_account", "journal_entry", "posting", "ledger_head"}
LEDGER_FUNCTIONS = {"journal_entry_append_only", "posting_append_only", "journal_entry_check_balanced",
                    "posting_check_open", "ledger_account_refuse_change"}


def ledger_triggers(url: str) -> set[str]:
    return {t for t in triggers(url) if t.startswith(("journal_entry_", "posting_", "ledger_account_"))}


def expected_triggers(url: str) -> set[str]:
    if url.startswith("sqlite"):
        return {"journal_entry_no_update", "journal_entry_no_delete", "posting_no_update", "posting_no_delete",
                "journal_entry_balanced", "posting_sealed", "ledger_account_fixed"}
    return {"journal_entry_no_change", "journal_entry_no_truncate", "posting_no_change", "posting_no_truncate",
            "journal_entry_balanced", "posting_sealed", "ledger_account_fixed"}


def what_the_database_refuses(connection) -> list[str]:
    """Try an unbalanced entry, then a balanced one and an UPDATE of it; return the refusals."""
    refusals = []
    connection.execute(text("INSERT INTO ledger_account (code, name, type, currency, created_at) VALUES "
                            "('bank', 'Bank', 'asset', 'INR', CURRENT_TIMESTAMP), "
                            "('dues_income', 'Dues', 'income', 'INR', CURRENT_TIMESTAMP)"))
    accounts = dict(connection.execute(text("SELECT code, id FROM ledger_account")).all())

    def post(entry_id: str, amounts: tuple[int, int], seq: int) -> None:
        for code, amount in zip(("bank", "dues_income"), amounts):
            connection.execute(text("INSERT INTO posting (entry_id, account_id, amount_minor, currency) "
                                    "VALUES (:e, :a, :m, 'INR')"), {"e": entry_id, "a": accounts[code], "m": amount})
        connection.execute(text(
            "INSERT INTO journal_entry (id, idempotency_key, kind, description, effective_date, posted_at, "
            "content_hash, prev_hash, hash, seq) VALUES (:id, :id, 'test', '', '2025-04-01', CURRENT_TIMESTAMP, "
            "'', '', '', :seq)"), {"id": entry_id, "seq": seq})

    for attempt in (lambda: post(str(uuid.uuid4()), (100, -50), 1),
                    lambda: (post(entry := str(uuid.uuid4()), (100, -100), 2),
                             connection.execute(text("UPDATE journal_entry SET description = 'x' WHERE id = :id"),
                                                {"id": entry}))):
        savepoint = connection.begin_nested()
        try:
            attempt()
        except Exception as exc:  # noqa: BLE001 - the message is what matters
            savepoint.rollback()
            refusals.append(str(exc).split("\n")[0])
        else:
            savepoint.commit()
    connection.rollback()
    return refusals


def test_0003_up_down_up_on_a_fresh_database(empty_database):  # noqa: F811
    url = empty_database
    migrate(url, "0002")
    before = tables(url)
    assert not LEDGER_TABLES & before and ledger_triggers(url) == set()

    migrate(url, "0003")
    assert tables(url) == before | LEDGER_TABLES
    assert ledger_triggers(url) == expected_triggers(url)
    if not url.startswith("sqlite"):
        assert LEDGER_FUNCTIONS <= functions(url)
    head = _run(url, lambda c: [tuple(r) for r in c.execute(text("SELECT id, last_seq, last_hash FROM ledger_head"))])
    assert head == [(1, 0, GENESIS)]
    refusals = _run(url, what_the_database_refuses)
    assert len(refusals) == 2
    assert "journal entry is unbalanced" in refusals[0] and "journal_entry is append-only" in refusals[1]

    downgrade(url, "0002")
    assert tables(url) == before
    assert ledger_triggers(url) == set()
    assert not LEDGER_FUNCTIONS & functions(url)
    assert "auditevent" in tables(url)  # the rest of the schema is untouched
    assert _run(url, lambda c: c.execute(text("SELECT version_num FROM alembic_version")).scalar_one()) == "0002"

    migrate(url, "0003")
    assert tables(url) == before | LEDGER_TABLES and ledger_triggers(url) == expected_triggers(url)
    assert len(_run(url, what_the_database_refuses)) == 2
