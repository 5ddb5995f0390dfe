"""Chain verification at streaming speed on PostgreSQL.

`dues.ledger.verify_ledger_chain` walks every entry through SQLAlchemy rows and
names the first one that does not fit; exact, but most of its time goes into row
machinery, not hashing. On PostgreSQL this module first runs a quick pass: one
statement streamed through a server-side cursor straight from asyncpg (no
SQLAlchemy rows), each entry with its postings already gathered into arrays, and
the two SHA-256s rebuilt from the same canonical JSON as `dues.ledger` in a tight
loop. It checks what `dues.ledger._flaw` checks (the link to the previous entry's
hash, the seq, at least two balanced postings, the content hash, the chain hash)
and the head, entries beyond it and postings without an entry. When it finds
nothing wrong the chain is intact; when it finds anything at all, or anything
fails, the Python walk runs and gives the authoritative answer, naming the first
broken entry.

Why "nothing wrong" can be trusted: the JSON text is built here by hand, with the
keys in sorted order, strings escaped by the json module's own encoder and the
lines sorted as `content_hash` sorts them, so it is what `json.dumps` gives for
the same values; and even if it ever differed, it is still a faithful (one value,
one text) JSON encoding of the *current* values, so a hash that matches the stored
one means the values are those that were hashed (barring a SHA-256 collision). A
false alarm would only make the walk run; a missed change is not possible.
SQLite ledgers are small: there it always walks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from hashlib import sha256
from json.encoder import encode_basestring as _s  # what json.dumps(ensure_ascii=False) escapes strings with

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from dues.ledger import LedgerChainReport, verify_ledger_chain
from migrations.helpers import GENESIS

_HEAD = text("SELECT last_seq, last_hash, (SELECT count(*) FROM posting) AS postings,"
             " (SELECT count(*) FROM journal_entry WHERE seq > last_seq) AS beyond FROM ledger_head WHERE id = 1")
# Postings gathered per entry by one aggregate (their order does not matter: content_hash sorts them).
_WALK = """
SELECT e.id, e.seq, e.idempotency_key, e.kind, e.description, e.effective_date, e.posted_at,
       e.created_by_user_id, e.member_id, e.reverses_entry_id, e.content_hash, e.prev_hash, e.hash,
       l.accounts, l.currencies, l.amounts
  FROM journal_entry e
  LEFT JOIN (SELECT entry_id, array_agg(account_id) AS accounts, array_agg(currency) AS currencies,
                    array_agg(amount_minor) AS amounts
               FROM posting GROUP BY entry_id) l ON l.entry_id = e.id
 WHERE e.seq <= $1
 ORDER BY e.seq
"""
_CONTENT = ('{"created_by_user_id":%s,"description":%s,"effective_date":"%s","key":%s,"kind":%s,"lines":[%s],'
            '"member_id":%s,"reverses_entry_id":%s}')


def _balanced(currencies: list[str], amounts: list[int]) -> bool:
    totals: dict[str, int] = {}
    for currency, amount in zip(currencies, amounts):
        totals[currency] = totals.get(currency, 0) + amount
    return not any(totals.values())


async def _quick_pass(session: AsyncSession, *, progress=None, batch: int = 20000) -> int | None:
    """How many entries the chain holds when every check passes; None at the first doubt."""
    last_seq, last_hash, posting_count, beyond = (await session.execute(_HEAD)).one()
    if beyond:
        return None
    codes = dict((await session.execute(text("SELECT id, code FROM ledger_account"))).all())
    quoted = {code: _s(code) for code in codes.values()}
    driver = (await (await session.connection()).get_raw_connection()).driver_connection  # asyncpg, in our transaction
    utc, content_text, null = dt.UTC, _CONTENT, "null"
    prev_hash, prev_seq, postings = GENESIS, 0, 0

    def fits(rows) -> bool:
        nonlocal prev_hash, prev_seq, postings
        for (entry_id, seq, key, kind, description, effective_date, posted_at, created_by, member_id, reverses,
             stored_content, stored_prev, stored_hash, accounts, currencies, amounts) in rows:
            if stored_prev != prev_hash or seq != prev_seq + 1 or accounts is None or len(accounts) < 2:
                return False
            if not (sum(amounts) == 0 and min(currencies) == max(currencies) or _balanced(currencies, amounts)):
                return False
            lines = sorted(zip([codes.get(a, f"#{a}") for a in accounts], currencies, amounts))  # as content_hash
            body = ",".join([f"[{quoted.get(code) or _s(code)},{_s(currency)},{amount}]"
                             for code, currency, amount in lines])
            content = sha256((content_text % (
                null if created_by is None else int(created_by), _s(description), effective_date.isoformat(), _s(key),
                _s(kind), body, null if member_id is None else int(member_id),
                null if reverses is None else _s(reverses))).encode()).hexdigest()
            if content != stored_content:
                return False
            # Both hashes are hex by now (prev_hash is GENESIS or a hash checked here), and isoformat needs no escaping.
            link = sha256(f'["{prev_hash}","{content}",{seq},{_s(entry_id)},'
                          f'"{posted_at.astimezone(utc).isoformat(timespec="microseconds")}"]'.encode()).hexdigest()
            if link != stored_hash:
                return False
            prev_hash, prev_seq, postings = stored_hash, seq, postings + len(accounts)
        return True

    cursor = await driver.cursor(_WALK, last_seq)
    pending = asyncio.ensure_future(cursor.fetch(batch))
    try:
        while rows := await pending:
            # Ask for the next batch before hashing this one: the database reads on while Python hashes.
            pending = asyncio.ensure_future(cursor.fetch(batch))
            await asyncio.sleep(0)
            if not fits(rows):
                return None
            if progress:
                progress(prev_seq)
    finally:
        await asyncio.gather(pending, return_exceptions=True)  # leave the connection idle for the walk
    if (prev_seq, prev_hash) != (last_seq, last_hash) or postings != posting_count:
        return None
    return prev_seq


async def verify_ledger(session: AsyncSession, *, progress=None) -> LedgerChainReport:
    """The ledger's chain verified (see the module docstring): fast on PostgreSQL, exact everywhere."""
    if session.get_bind().dialect.name == "postgresql":
        try:
            checked = await _quick_pass(session, progress=progress)
        except (ValueError, TypeError, AttributeError):  # an oddly shaped value: let the walk name it
            checked = None
        if checked is not None:
            return LedgerChainReport(checked)
    return await verify_ledger_chain(session, progress=progress)
