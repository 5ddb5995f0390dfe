"""The database itself keeps the books, on SQLite and PostgreSQL, whatever
client writes to it: raw SQL cannot update or delete entries or postings, post
an unbalanced entry, or add postings to an entry that is already posted."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.dues.conftest import cash_lines, post, verify

HASH = "f" * 64


@pytest.fixture
async def posted(services, chart, collectors) -> list:
    return [await post(services, key=f"cash:r{i}", lines=cash_lines(collectors[0], 100 * i)) for i in (1, 2)]


async def rows(services) -> list[tuple]:
    async with services.engine.connect() as conn:
        return [tuple(r) for table in ("journal_entry", "posting") for r in
                (await conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))).all()]


async def refused(services, *statements: tuple[str, dict]) -> str:
    """Run the statements in one raw transaction; return the database's refusal."""
    with pytest.raises(DBAPIError) as refusal:
        async with services.engine.connect() as conn:
            try:
                for sql, params in statements:
                    await conn.execute(text(sql), params)
                await conn.commit()
            except DBAPIError:
                # SQLite keeps the transaction open after a COMMIT refused by a deferred foreign key, and
                # SQLAlchemy returns the connection to the pool without a rollback: discard it instead.
                await conn.invalidate()
                raise
    return str(refusal.value)


def postings(entry_id: str, *lines: tuple[int, int, str]) -> list[tuple[str, dict]]:
    return [("INSERT INTO posting (entry_id, account_id, amount_minor, currency) VALUES (:e, :a, :m, :c)",
             {"e": entry_id, "a": account, "m": amount, "c": currency}) for account, amount, currency in lines]


def header(entry_id: str, seq: int = 99, key: str | None = None) -> tuple[str, dict]:
    return ("INSERT INTO journal_entry (id, idempotency_key, kind, description, effective_date, posted_at, "
            "content_hash, prev_hash, hash, seq) VALUES (:id, :key, 'cash_payment', '', '2025-04-01', "
            "CURRENT_TIMESTAMP, :h, :h, :h, :seq)", {"id": entry_id, "key": key or entry_id, "h": HASH, "seq": seq})


@pytest.mark.parametrize("sql", [
    "UPDATE journal_entry SET description = 'changed' WHERE id = :first",
    "UPDATE journal_entry SET hash = prev_hash",
    "DELETE FROM journal_entry WHERE id = :first",
    "DELETE FROM journal_entry",
    "UPDATE posting SET amount_minor = amount_minor * 10 WHERE entry_id = :first",
    "UPDATE posting SET entry_id = :second WHERE entry_id = :first",
    "DELETE FROM posting WHERE entry_id = :first",
    "DELETE FROM posting",
])
async def test_update_and_delete_are_refused(sql, posted, services):
    before = await rows(services)
    message = await refused(services, (sql, {"first": posted[0].id, "second": posted[1].id}))
    assert "is append-only" in message
    assert await rows(services) == before
    assert (await verify(services)).intact


@pytest.mark.parametrize("table", ["journal_entry", "posting"])
async def test_emptying_a_table_is_refused(table, posted, services, backend):
    # SQLite has no TRUNCATE; its equivalent is a DELETE without WHERE.
    sql = f"TRUNCATE {table} CASCADE" if backend == "postgresql" else f"DELETE FROM {table}"
    assert "is append-only" in await refused(services, (sql, {}))
    assert (await verify(services)).checked == 2


@pytest.mark.parametrize("lines,why", [
    ([(1, 10000, "INR"), (2, -5000, "INR")], "do not sum to zero"),
    ([(1, 10000, "INR")], "at least two postings"),
    ([], "at least two postings"),
    ([(1, 10000, "INR"), (2, -10000, "INR"), (3, 1, "INR")], "do not sum to zero"),
])
async def test_unbalanced_entry_is_refused(lines, why, services, chart):
    ids = [chart["cash:office"], chart["dues_income"], chart["card_fees"]]
    entry_id = str(uuid.uuid4())
    message = await refused(services, *postings(entry_id, *[(ids[a - 1], m, c) for a, m, c in lines]),
                            header(entry_id))
    assert "journal entry is unbalanced" in message and why in message
    assert await rows(services) == []


async def test_balance_is_checked_per_currency(services, chart):
    """+100 INR and -100 USD sum to zero only if you forget that they are different money."""
    async with services.engine.connect() as conn:
        await conn.execute(text("INSERT INTO ledger_account (code, name, type, currency, created_at) "
                                "VALUES ('bank:usd', 'USD account', 'asset', 'USD', CURRENT_TIMESTAMP)"))
        usd = (await conn.execute(text("SELECT id FROM ledger_account WHERE code = 'bank:usd'"))).scalar_one()
        await conn.commit()
    entry_id = str(uuid.uuid4())
    message = await refused(services, *postings(entry_id, (chart["bank"], 100, "INR"), (usd, -100, "USD")),
                            header(entry_id))
    assert "do not sum to zero" in message


async def test_adding_postings_to_a_posted_entry_is_refused(posted, services, chart):
    # Even a balanced pair: the entry was sealed when its header went in.
    message = await refused(services, *postings(posted[0].id, (chart["bank"], 500, "INR"),
                                                (chart["dues_income"], -500, "INR")))
    assert "journal entry is sealed" in message
    assert (await verify(services)).intact


async def test_postings_whose_header_never_comes_fail_at_commit(services, chart):
    message = await refused(services, *postings(str(uuid.uuid4()), (chart["bank"], 500, "INR"),
                                                (chart["dues_income"], -500, "INR")))
    assert "FOREIGN KEY" in message.upper()
    assert await rows(services) == []


async def test_posting_in_another_currency_than_its_account_is_refused(services, chart):
    entry_id = str(uuid.uuid4())
    message = await refused(services, *postings(entry_id, (chart["bank"], 500, "USD"),
                                                (chart["dues_income"], -500, "USD")), header(entry_id))
    assert "posting currency differs" in message


async def test_zero_posting_is_refused(services, chart):
    entry_id = str(uuid.uuid4())
    message = await refused(services, *postings(entry_id, (chart["bank"], 500, "INR"), (chart["card_fees"], 0, "INR"),
                                                (chart["dues_income"], -500, "INR")), header(entry_id))
    assert "ck_posting_amount_nonzero" in message or "CHECK constraint failed" in message


async def test_a_balanced_raw_insert_in_the_right_order_is_accepted(services, chart):
    """The triggers refuse what is wrong, not raw SQL as such (what the chain then says: test_ledger_chain)."""
    entry_id = str(uuid.uuid4())
    async with services.engine.connect() as conn:
        for sql, params in [*postings(entry_id, (chart["bank"], 500, "INR"), (chart["dues_income"], -500, "INR")),
                            header(entry_id)]:
            await conn.execute(text(sql), params)
        await conn.commit()
    assert len(await rows(services)) == 3


@pytest.mark.parametrize("change", ["code = 'bank2'", "currency = 'USD'"])
async def test_an_account_keeps_its_code_and_currency(change, services, chart):
    """Entries hash the code and were checked against the currency; the name may change."""
    message = await refused(services, (f"UPDATE ledger_account SET {change} WHERE code = 'bank'", {}))
    assert "ledger account code and currency cannot change" in message
    async with services.engine.connect() as conn:
        await conn.execute(text("UPDATE ledger_account SET name = 'State Bank', code = code WHERE code = 'bank'"))
        await conn.commit()
        assert (await conn.execute(text("SELECT name FROM ledger_account WHERE code = 'bank'"))).scalar_one() \
            == "State Bank"


@pytest.mark.parametrize("sql", [
    "DELETE FROM ledger_account WHERE code = 'dues_income'",
    "DELETE FROM ledger_account",
])
async def test_an_account_with_postings_cannot_be_deleted(sql, posted, services):
    """The postings' foreign key keeps the account (an account without postings may go)."""
    before = await rows(services)
    message = await refused(services, (sql, {}))
    assert "FOREIGN KEY" in message.upper()
    assert await rows(services) == before
    async with services.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM ledger_account WHERE code = 'dues_income'"))) \
            .scalar_one() == 1
    assert (await verify(services)).intact
