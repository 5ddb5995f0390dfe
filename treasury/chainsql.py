"""Chain verification at database speed on PostgreSQL.

`dues.ledger.verify_ledger_chain` re-hashes every entry in Python: exact, but about
a quarter of a millisecond per entry (minutes for a million). On PostgreSQL this
module first lets the database rebuild every entry's canonical JSON and hash it
(`sha256`), and check the links, the sequence, the balance of the postings, the
head, and postings without an entry, in one pass. When it finds nothing wrong the
chain is intact; when it finds anything at all, the Python walk runs and gives the
authoritative answer, naming the first broken entry.

Why "nothing wrong" can be trusted: each entry's stored hash was made from
Python's canonical JSON of its content. The database's text here is also valid
JSON of the *current* content (PostgreSQL's to_json escapes strings validly); if
the two hashes agree, the two texts are equal (barring a SHA-256 collision), and
equal JSON texts decode to equal values, so the current content is what was
hashed. If the database's escaping of some exotic text ever differed from
Python's, the hashes would differ and the Python walk would decide: a false alarm
is possible, a missed change is not. SQLite has no sha256: it always walks.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from dues.ledger import LedgerChainReport, verify_ledger_chain
from migrations.helpers import GENESIS

_CHECK = text(f"""
WITH head AS (SELECT last_seq, last_hash FROM ledger_head WHERE id = 1),
lines AS (
    SELECT p.entry_id, count(*) AS n,
           string_agg('[' || to_json(a.code)::text || ',' || to_json(p.currency)::text || ',' || p.amount_minor::text
                      || ']', ',' ORDER BY a.code COLLATE "C", p.currency COLLATE "C", p.amount_minor) AS body
      FROM posting p LEFT JOIN ledger_account a ON a.id = p.account_id
     GROUP BY p.entry_id),
unbalanced AS (
    SELECT DISTINCT entry_id FROM (SELECT entry_id FROM posting GROUP BY entry_id, currency
                                    HAVING sum(amount_minor) <> 0) u),
walk AS (
    SELECT e.seq, e.hash, e.prev_hash, e.content_hash,
           lag(e.hash) OVER (ORDER BY e.seq) AS prev_actual, lag(e.seq) OVER (ORDER BY e.seq) AS prev_seq,
           coalesce(l.n, 0) AS n, (u.entry_id IS NOT NULL) AS unbalanced,
           encode(sha256(convert_to(
               '{{"created_by_user_id":' || coalesce(e.created_by_user_id::text, 'null')
               || ',"description":' || to_json(e.description)::text
               || ',"effective_date":"' || to_char(e.effective_date, 'YYYY-MM-DD')
               || '","key":' || to_json(e.idempotency_key)::text
               || ',"kind":' || to_json(e.kind)::text
               || ',"lines":[' || coalesce(l.body, '') || ']'
               || ',"member_id":' || coalesce(e.member_id::text, 'null')
               || ',"reverses_entry_id":' || coalesce(to_json(e.reverses_entry_id)::text, 'null') || '}}',
               'UTF8')), 'hex') AS computed_content,
           encode(sha256(convert_to(
               '["' || e.prev_hash || '","' || e.content_hash || '",' || e.seq::text || ',"' || e.id || '","'
               || to_char(e.posted_at, 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00"]', 'UTF8')), 'hex') AS computed_chain
      FROM journal_entry e
      LEFT JOIN lines l ON l.entry_id = e.id
      LEFT JOIN unbalanced u ON u.entry_id = e.id
     WHERE e.seq <= (SELECT last_seq FROM head))
SELECT
    (SELECT count(*) FROM walk) AS checked,
    (SELECT min(seq) FROM walk
      WHERE prev_hash <> coalesce(prev_actual, '{GENESIS}') OR seq <> coalesce(prev_seq, 0) + 1 OR n < 2
         OR unbalanced OR computed_content <> content_hash OR computed_chain <> hash) AS first_flaw,
    (SELECT hash FROM walk ORDER BY seq DESC LIMIT 1) AS last_hash,
    (SELECT max(seq) FROM walk) AS last_seq,
    (SELECT last_seq FROM head) AS head_seq, (SELECT last_hash FROM head) AS head_hash,
    (SELECT count(*) FROM journal_entry WHERE seq > (SELECT last_seq FROM head)) AS beyond,
    (SELECT count(*) FROM posting p WHERE NOT EXISTS (SELECT 1 FROM journal_entry e WHERE e.id = p.entry_id))
        AS orphans
""")


async def verify_ledger(session: AsyncSession, *, progress=None) -> LedgerChainReport:
    """The ledger's chain verified (see the module docstring): fast on PostgreSQL, exact everywhere."""
    if session.get_bind().dialect.name != "postgresql":
        return await verify_ledger_chain(session, progress=progress)
    row = (await session.execute(_CHECK)).one()
    clean = (row.first_flaw is None and not row.beyond and not row.orphans
             and (row.last_seq or 0) == row.head_seq and (row.last_hash or GENESIS) == row.head_hash)
    if clean:
        return LedgerChainReport(int(row.checked))
    return await verify_ledger_chain(session, progress=progress)
