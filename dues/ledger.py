"""The double-entry ledger: the standard chart of accounts, posting balanced,
idempotent, hash-chained journal entries, reversing them, balances, and walking
the chain to find tampering.

Every rupee the union takes in or pays out is a journal entry of two or more
postings (debit positive, credit negative) that sum to zero per currency. The
services here validate before writing, flush and never commit: the route or
job that calls them owns the transaction. The database refuses what slips past
them (triggers of migration 0003; see dues.models).

Idempotency: each entry carries a unique key. Posting a key again with the same
content (kind, description, effective date, actor, member, reversed entry,
lines) returns the original entry; with other content it is an
IdempotencyConflict. The key is looked up after the chain head is locked, so a
concurrent poster of the same key that committed while we waited is seen.

Tamper evidence: `content_hash` is the SHA-256 of a canonical JSON of the
content; `hash` chains it to the previous entry's hash together with the
entry's seq, id and posting time, so no stored column of an entry or its
postings can change without `verify_ledger_chain` naming the entry. The head
row (`ledger_head`) holds the newest seq and hash and is locked while posting
(SELECT ... FOR UPDATE on PostgreSQL; SQLite transactions are BEGIN IMMEDIATE),
so the chain never forks.

Many entries at once (the group commit of cash payments, dues.services.record_cash_payments):
`prepare_entry` checks and content-hashes each as post_entry does, the caller locks the head
once, and `append_entries` chains them in order with the same hashing functions and writes
their postings and headers in one multi-row statement each.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from dues.errors import (AlreadyReversed, CurrencyMismatch, IdempotencyConflict, InvalidAmount, InvalidEntry,
                         PeriodClosed, UnbalancedEntry, UnknownAccount, UnknownEntry)
from dues.models import AccountType, EntryKind, JournalEntry, LedgerAccount, LedgerHead, Posting, new_entry_id
from dues.money import DEFAULT_CURRENCY, Money
from union.models import utcnow
from union.i18n import _
from migrations.helpers import GENESIS  # one definition for code and schema

COLLECTOR_CASH_PREFIX = "cash:collector:"
# What the database says when an entry is dated in a closed month (migrations/versions/0008_treasury.py).
PERIOD_CLOSED_MESSAGE = "journal entry falls in a closed accounting period"

# The standard chart. Funds are equity: what the members' money is set aside for.
STANDARD_ACCOUNTS: tuple[tuple[str, str, AccountType], ...] = (
    ("cash:office", "Cash in the office safe", AccountType.asset),
    ("bank", "Bank account", AccountType.asset),
    ("stripe", "Balance held at Stripe", AccountType.asset),
    ("dues_receivable", "Dues charged and not yet paid", AccountType.asset),
    ("dues_income", "Members' dues", AccountType.income),
    ("joining_fee_income", "Joining fees", AccountType.income),
    ("refunds", "Dues refunded", AccountType.expense),
    ("disputes", "Card payments disputed (chargebacks)", AccountType.expense),
    ("dues_waived", "Dues waived (holidays and hardship)", AccountType.expense),
    ("card_fees", "Card processing fees", AccountType.expense),
    ("cash_over_short", "Cash counted over or short at hand-over", AccountType.expense),
    ("general_fund", "General fund", AccountType.equity),
    ("welfare_fund", "Welfare fund", AccountType.equity),
    ("crisis_fund", "Crisis fund", AccountType.equity),
)

Line = tuple[str, Money]  # (account code, signed amount: debit positive, credit negative)
_RawLine = tuple[str, str, int]  # (account code, currency, amount_minor) as stored, before any validation


# ---------------------------------------------------------------- accounts


def _insert_ignoring_duplicates(session: AsyncSession):
    """INSERT ... ON CONFLICT (code) DO NOTHING: two transactions creating one account both succeed."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(LedgerAccount).on_conflict_do_nothing(index_elements=["code"])


async def _existing_accounts(session: AsyncSession, codes: Iterable[str]) -> dict[str, LedgerAccount]:
    return {a.code: a for a in (await session.execute(
        select(LedgerAccount).where(LedgerAccount.code.in_(set(codes))))).scalars()}


async def _accounts_by_code(session: AsyncSession, codes: Iterable[str]) -> dict[str, LedgerAccount]:
    wanted = set(codes)
    found = await _existing_accounts(session, wanted)
    missing = sorted(wanted - found.keys())
    if missing:
        raise UnknownAccount(f"no ledger account {', '.join(missing)}", field="account")
    return found


async def ensure_accounts(session: AsyncSession, currency: str = DEFAULT_CURRENCY) -> dict[str, LedgerAccount]:
    """Create the standard chart where missing (idempotent, safe under concurrency); return it by code."""
    codes = [code for code, _, _ in STANDARD_ACCOUNTS]
    found = await _existing_accounts(session, codes)
    if len(found) == len(codes):  # the usual case: one look-up, no write
        return found
    await session.execute(_insert_ignoring_duplicates(session), [
        {"code": code, "name": name, "type": str(kind), "currency": currency}
        for code, name, kind in STANDARD_ACCOUNTS])
    return await _accounts_by_code(session, codes)


async def collector_cash_account(session: AsyncSession, user_id: int,
                                 currency: str = DEFAULT_CURRENCY) -> LedgerAccount:
    """The account of cash a collector has taken and not yet handed over, created on first use."""
    code = f"{COLLECTOR_CASH_PREFIX}{int(user_id)}"
    found = await _existing_accounts(session, [code])
    if code in found:
        return found[code]
    await session.execute(_insert_ignoring_duplicates(session), [
        {"code": code, "name": f"Cash held by collector #{int(user_id)}", "type": str(AccountType.asset),
         "currency": currency}])
    return (await _accounts_by_code(session, [code]))[code]


async def ensure_chart_and_cash(session: AsyncSession, user_ids: Iterable[int],
                                currency: str = DEFAULT_CURRENCY) -> dict:
    """The standard chart and the cash accounts of these collectors: rows (id, code, currency) by code, in
    one look-up when they all exist (the usual case); what is missing is created as `ensure_accounts`
    and `collector_cash_account` create it (idempotent, safe under concurrency)."""
    cash = {f"{COLLECTOR_CASH_PREFIX}{int(user_id)}": int(user_id) for user_id in user_ids}
    chart = [code for code, _, _ in STANDARD_ACCOUNTS]

    async def look_up() -> dict:
        return {row.code: row for row in (await session.execute(
            select(LedgerAccount.id, LedgerAccount.code, LedgerAccount.currency)
            .where(LedgerAccount.code.in_({*chart, *cash})))).all()}

    found = await look_up()
    if len(found) == len(chart) + len(cash):
        return found
    if any(code not in found for code in chart):
        await ensure_accounts(session, currency)
    missing = [code for code in cash if code not in found]
    if missing:
        await session.execute(_insert_ignoring_duplicates(session), [
            {"code": code, "name": f"Cash held by collector #{cash[code]}", "type": str(AccountType.asset),
             "currency": currency} for code in missing])
    found = await look_up()
    if len(found) != len(chart) + len(cash):
        raise UnknownAccount(f"no ledger account {', '.join(sorted({*chart, *cash} - found.keys()))}", field="account")
    return found


# ---------------------------------------------------------------- hashing


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(*, key: str, kind: str, description: str, effective_date: dt.date,
                 created_by_user_id: int | None, member_id: int | None, reverses_entry_id: str | None,
                 lines: Iterable[_RawLine]) -> str:
    """SHA-256 of what an entry says. Lines are sorted, so their order does not matter."""
    return hashlib.sha256(_canonical({
        "key": key, "kind": kind, "description": description, "effective_date": effective_date.isoformat(),
        "created_by_user_id": created_by_user_id, "member_id": member_id, "reverses_entry_id": reverses_entry_id,
        "lines": sorted([code, currency, amount] for code, currency, amount in lines),
    })).hexdigest()


def chain_hash(*, prev_hash: str, content_hash: str, seq: int, entry_id: str, posted_at: dt.datetime) -> str:
    """SHA-256 linking an entry to the one before it. It also covers the columns that differ between
    an entry and its idempotent replay (seq, id, time), which content_hash must leave out."""
    return hashlib.sha256(_canonical(
        [prev_hash, content_hash, seq, entry_id, posted_at.astimezone(dt.UTC).isoformat(timespec="microseconds")]
    )).hexdigest()


def _entry_content_hash(entry: JournalEntry, lines: Iterable[_RawLine]) -> str:
    return content_hash(key=entry.idempotency_key, kind=entry.kind, description=entry.description,
                        effective_date=entry.effective_date, created_by_user_id=entry.created_by_user_id,
                        member_id=entry.member_id, reverses_entry_id=entry.reverses_entry_id, lines=lines)


def _entry_chain_hash(entry: JournalEntry) -> str:
    return chain_hash(prev_hash=entry.prev_hash, content_hash=entry.content_hash, seq=entry.seq,
                      entry_id=entry.id, posted_at=entry.posted_at)


# ---------------------------------------------------------------- posting


def _unbalanced_currencies(lines: Iterable[_RawLine]) -> list[str]:
    totals: dict[str, int] = defaultdict(int)
    for _code, currency, amount in lines:
        totals[currency] += amount
    return sorted(currency for currency, total in totals.items() if total != 0)


def _checked_lines(lines: Sequence[Line]) -> list[_RawLine]:
    raw: list[_RawLine] = []
    for line in lines:
        if not (isinstance(line, tuple) and len(line) == 2 and isinstance(line[0], str) and line[0]):
            raise InvalidEntry(f"a line is (account code, Money), not {line!r}", field="lines")
        code, money = line
        if not isinstance(money, Money):
            raise InvalidAmount(f"the amount for {code} must be Money, not {money!r}", field="lines")
        if money.amount_minor == 0:
            raise InvalidAmount(f"the amount for {code} is zero", field="lines")
        raw.append((code, money.currency, money.amount_minor))
    if len(raw) < 2:
        raise UnbalancedEntry("an entry needs at least two postings", field="lines")
    unbalanced = _unbalanced_currencies(raw)
    if unbalanced:
        raise UnbalancedEntry(f"postings do not sum to zero in {', '.join(unbalanced)}", field="lines")
    return raw


def _check_header(*, key: object, kind: object, description: object, effective_date: object) -> None:
    if not isinstance(key, str) or not 0 < len(key) <= 200:
        raise InvalidEntry("an idempotency key of 1 to 200 characters is required", field="key")
    if not isinstance(kind, str) or not 0 < len(kind) <= 32:
        raise InvalidEntry("an entry kind of 1 to 32 characters is required", field="kind")
    if not isinstance(description, str) or len(description) > 500:
        raise InvalidEntry("a description is text of at most 500 characters", field="description")
    # A datetime is a date too, but a time of day would change the hash and the day it counts in.
    if not isinstance(effective_date, dt.date) or isinstance(effective_date, dt.datetime):
        raise InvalidEntry("the effective date must be a date", field="effective_date")


async def lock_head(session: AsyncSession) -> LedgerHead:
    """Lock the chain head for the rest of the transaction: every posting waits for it, so a caller that
    must check a balance before posting (a payout from a fund) locks it first and the check stays true."""
    # populate_existing: a head loaded in an earlier transaction of this session must not be trusted.
    return (await session.execute(
        select(LedgerHead).where(LedgerHead.id == 1).with_for_update().execution_options(populate_existing=True)
    )).scalar_one()


async def _check_reversible(session: AsyncSession, entry_id: str) -> None:
    if await session.get(JournalEntry, entry_id) is None:
        raise UnknownEntry(f"no journal entry {entry_id}", field="reverses")
    reversal = (await session.execute(
        select(JournalEntry.id).where(JournalEntry.reverses_entry_id == entry_id))).scalar_one_or_none()
    if reversal is not None:
        raise AlreadyReversed(f"entry {entry_id} was already reversed by {reversal}", field="reverses")


async def post_entry(session: AsyncSession, *, key: str, kind: str, lines: Sequence[Line], description: str,
                     effective_date: dt.date, actor=None, member_id: int | None = None,
                     reverses: str | None = None) -> JournalEntry:
    """Post one balanced entry (or return the one already posted under `key` with the same content).

    `lines` are (account code, Money): debit positive, credit negative. Flushes, never commits."""
    kind = str(kind)  # an EntryKind is stored and hashed as its plain value
    _check_header(key=key, kind=kind, description=description, effective_date=effective_date)
    raw = _checked_lines(lines)
    actor_id = getattr(actor, "id", None)
    digest = content_hash(key=key, kind=kind, description=description, effective_date=effective_date,
                          created_by_user_id=actor_id, member_id=member_id, reverses_entry_id=reverses, lines=raw)

    head = await lock_head(session)
    existing = (await session.execute(
        select(JournalEntry).where(JournalEntry.idempotency_key == key))).scalar_one_or_none()
    if existing is not None:
        if existing.content_hash != digest:
            raise IdempotencyConflict(f"idempotency key {key!r} was used for a different entry", field="key")
        return existing

    accounts = await _accounts_by_code(session, (code for code, _, _ in raw))
    for code, currency, _amount in raw:
        if accounts[code].currency != currency:
            raise CurrencyMismatch(f"account {code} is kept in {accounts[code].currency}, not {currency}",
                                   field="lines")
    if reverses is not None:
        await _check_reversible(session, reverses)

    entry = JournalEntry(idempotency_key=key, kind=kind, description=description, effective_date=effective_date,
                         created_by_user_id=actor_id, member_id=member_id, reverses_entry_id=reverses,
                         content_hash=digest, prev_hash=head.last_hash, hash="", seq=head.last_seq + 1)
    entry.hash = _entry_chain_hash(entry)
    # Postings before their header: the header's insert trigger checks that they balance, then seals them.
    await session.execute(insert(Posting), [
        {"entry_id": entry.id, "account_id": accounts[code].id, "amount_minor": amount, "currency": currency}
        for code, currency, amount in raw])
    session.add(entry)
    head.last_seq = entry.seq
    head.last_hash = entry.hash
    try:
        await session.flush()
    except DBAPIError as exc:
        # The database refuses an entry dated in a closed month (migration 0008's trigger).
        if PERIOD_CLOSED_MESSAGE in str(exc):
            raise PeriodClosed(_("%(month)s is closed: post a correction in an open month.",
                                 month=effective_date.strftime("%Y-%m")), field="effective_date") from None
        raise
    return entry


@dataclass
class PreparedEntry:
    """An entry checked and content-hashed in Python, not yet chained nor written (see `append_entries`):
    `row` holds journal_entry's columns, `raw` its lines as stored."""
    row: dict
    raw: list[_RawLine]

    @property
    def id(self) -> str:
        return self.row["id"]


def prepare_entry(*, key: str, kind: str, lines: Sequence[Line], description: str, effective_date: dt.date,
                  actor=None, member_id: int | None = None) -> PreparedEntry:
    """What post_entry checks and hashes before it takes the head, for many entries posted at once.
    Raises the same errors as post_entry for a bad header or bad lines."""
    kind = str(kind)
    _check_header(key=key, kind=kind, description=description, effective_date=effective_date)
    raw = _checked_lines(lines)
    actor_id = getattr(actor, "id", None)
    digest = content_hash(key=key, kind=kind, description=description, effective_date=effective_date,
                          created_by_user_id=actor_id, member_id=member_id, reverses_entry_id=None, lines=raw)
    return PreparedEntry({"id": new_entry_id(), "idempotency_key": key, "kind": kind, "description": description,
                          "effective_date": effective_date, "created_by_user_id": actor_id, "member_id": member_id,
                          "reverses_entry_id": None, "content_hash": digest}, raw)


def currency_mismatch(prepared: PreparedEntry, accounts: dict) -> CurrencyMismatch | None:
    """post_entry's account check for a prepared entry (`accounts`: rows with id and currency by code):
    an unknown account raises, a posting in another currency than its account's is returned (the
    caller decides whether it fails one entry or all)."""
    missing = sorted({code for code, _, _ in prepared.raw} - accounts.keys())
    if missing:
        raise UnknownAccount(f"no ledger account {', '.join(missing)}", field="account")
    for code, currency, _amount in prepared.raw:
        if accounts[code].currency != currency:
            return CurrencyMismatch(f"account {code} is kept in {accounts[code].currency}, not {currency}",
                                    field="lines")
    return None


def chain_entries(last_seq: int, last_hash: str, prepared: Sequence[PreparedEntry]) -> tuple[int, str]:
    """Number and chain the entries after the head (locked by the caller), in order: the same seq and
    hashes post_entry would give them one after the other. Returns the new head (seq, hash)."""
    for item in prepared:
        row = item.row
        row["prev_hash"], row["seq"] = last_hash, last_seq + 1
        row["posted_at"] = utcnow()  # taken with the head locked, as post_entry does
        row["hash"] = chain_hash(prev_hash=row["prev_hash"], content_hash=row["content_hash"], seq=row["seq"],
                                 entry_id=row["id"], posted_at=row["posted_at"])
        last_seq, last_hash = row["seq"], row["hash"]
    return last_seq, last_hash


def posting_rows(prepared: Sequence[PreparedEntry], accounts: dict) -> list[dict]:
    """The posting rows of prepared entries (`accounts`: rows with id by code)."""
    return [{"entry_id": item.id, "account_id": accounts[code].id, "amount_minor": amount, "currency": currency}
            for item in prepared for code, currency, amount in item.raw]


@contextlib.contextmanager
def period_closed_refusal(prepared: Sequence[PreparedEntry]):
    """Turns the database's refusal of an entry dated in a closed month (migration 0008's trigger)
    into PeriodClosed naming the entries' months."""
    try:
        yield
    except DBAPIError as exc:
        if PERIOD_CLOSED_MESSAGE in str(exc):
            months = sorted({item.row["effective_date"].strftime("%Y-%m") for item in prepared})
            raise PeriodClosed(_("%(month)s is closed: post a correction in an open month.",
                                 month=", ".join(months)), field="effective_date") from None
        raise


async def append_entries(session: AsyncSession, head: tuple[int, str], prepared: Sequence[PreparedEntry],
                         accounts: dict) -> None:
    """Write many entries at once after `head` (last_seq, last_hash), read with the head locked
    (`lock_head`): chain them, insert every posting in one statement, the headers in another, and
    move the head. `accounts`: rows with id by code. Flushes, never commits. An entry dated in a
    closed month makes the database refuse the lot (PeriodClosed)."""
    if not prepared:
        return
    last_seq, last_hash = chain_entries(*head, prepared)
    # Core statements on the session's connection: the ORM's unit of work costs more than the SQL here.
    conn = await session.connection()
    # Postings before their headers: each header's insert trigger checks that they balance, then seals them.
    await conn.execute(insert(Posting.__table__), posting_rows(prepared, accounts))
    with period_closed_refusal(prepared):
        await conn.execute(insert(JournalEntry.__table__), [item.row for item in prepared])
    # An ORM UPDATE: the head object in this session's identity map moves too (no stale head for post_entry).
    await session.execute(update(LedgerHead).where(LedgerHead.id == 1).values(last_seq=last_seq, last_hash=last_hash)
                          .execution_options(synchronize_session="evaluate"))


async def entry_lines(session: AsyncSession, entry_id: str) -> list[Line]:
    """An entry's postings as (account code, Money), in the order they were posted."""
    rows = await session.execute(
        select(LedgerAccount.code, Posting.amount_minor, Posting.currency)
        .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
        .where(Posting.entry_id == entry_id).order_by(Posting.id))
    return [(code, Money(amount, currency)) for code, amount, currency in rows]


async def reverse_entry(session: AsyncSession, *, entry_id: str, key: str, reason: str, actor,
                        effective_date: dt.date | None = None) -> JournalEntry:
    """Post the negation of an entry, dated `effective_date` (default: today, an open period).

    A replay under the same key returns the reversal already posted, provided the effective date is
    the same: pass it explicitly where a replay may come on another day."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidEntry("a reversal needs a reason", field="reason")
    original = await session.get(JournalEntry, entry_id)
    if original is None:
        raise UnknownEntry(f"no journal entry {entry_id}", field="entry_id")
    lines = await entry_lines(session, entry_id)
    return await post_entry(session, key=key, kind=EntryKind.reversal, lines=[(code, -m) for code, m in lines],
                            description=reason, effective_date=effective_date or dt.date.today(), actor=actor,
                            member_id=original.member_id, reverses=original.id)


# ---------------------------------------------------------------- balances


async def balances(session: AsyncSession, *, as_of: dt.date | None = None,
                   accounts: Iterable[str] | None = None) -> dict[str, Money]:
    """Signed balance of each account (debit positive), summed by the database; entries dated after
    `as_of` are left out. Accounts without postings are included at zero."""
    sums = select(Posting.account_id, func.sum(Posting.amount_minor).label("total")).group_by(Posting.account_id)
    if as_of is not None:
        sums = sums.join(JournalEntry, JournalEntry.id == Posting.entry_id).where(JournalEntry.effective_date <= as_of)
    sums = sums.subquery()
    query = (select(LedgerAccount.code, LedgerAccount.currency, sums.c.total)
             .outerjoin(sums, sums.c.account_id == LedgerAccount.id).order_by(LedgerAccount.code))
    wanted = None if accounts is None else set(accounts)
    if wanted is not None:
        query = query.where(LedgerAccount.code.in_(wanted))
    # PostgreSQL sums bigints as numeric (a Decimal): int() is exact for whole numbers.
    found = {code: Money(int(total or 0), currency) for code, currency, total in await session.execute(query)}
    if wanted is not None and wanted - found.keys():
        raise UnknownAccount(f"no ledger account {', '.join(sorted(wanted - found.keys()))}", field="account")
    return found


# ---------------------------------------------------------------- verification


@dataclass
class LedgerChainReport:
    checked: int
    broken_seq: int | None = None
    broken_entry_id: str | None = None
    reason: str = ""

    @property
    def intact(self) -> bool:
        return not self.reason


_WALK_COLUMNS = (JournalEntry.id, JournalEntry.seq, JournalEntry.idempotency_key, JournalEntry.kind,
                 JournalEntry.description, JournalEntry.effective_date, JournalEntry.posted_at,
                 JournalEntry.created_by_user_id, JournalEntry.member_id, JournalEntry.reverses_entry_id,
                 JournalEntry.content_hash, JournalEntry.prev_hash, JournalEntry.hash)


def _flaw(entry, lines: list[_RawLine], *, prev_hash: str, prev_seq: int) -> str:
    """Why this entry does not fit the chain, or "" when it does."""
    if entry.prev_hash != prev_hash:
        return "previous-hash link broken (an entry before it was removed or altered)"
    if entry.seq != prev_seq + 1:
        return "sequence broken (an entry before it was removed or renumbered)"
    if len(lines) < 2 or _unbalanced_currencies(lines):
        return "postings do not balance (the entry's postings were altered)"
    if _entry_content_hash(entry, lines) != entry.content_hash:
        return "content does not match its hash (the entry or its postings were altered)"
    if _entry_chain_hash(entry) != entry.hash:
        return "hash does not match (the entry was altered)"
    return ""


async def _first_unreadable(session: AsyncSession, *, after_seq: int) -> tuple[int | None, str | None]:
    """The first entry after `after_seq` whose stored values do not load."""
    keys = (await session.execute(select(JournalEntry.seq, JournalEntry.id).where(JournalEntry.seq > after_seq)
                                  .order_by(JournalEntry.seq))).all()
    for seq, entry_id in keys:
        try:
            (await session.execute(select(*_WALK_COLUMNS).where(JournalEntry.id == entry_id))).one()
            (await session.execute(select(Posting.amount_minor).where(Posting.entry_id == entry_id))).all()
        except (ValueError, TypeError):
            return seq, entry_id
    return tuple(keys[0]) if keys else (after_seq + 1, None)  # never report an unreadable chain as intact


async def verify_ledger_chain(session: AsyncSession, *, progress=None, batch: int = 5000) -> LedgerChainReport:
    """Walk every entry in seq order with its postings; report the first that does not fit.

    Streams (constant memory at any ledger size). Detects a changed column of an entry or posting,
    a removed, added or reordered entry, a cut-off tail, an entry outside the chain, and postings
    left without an entry. An attacker who rewrites every entry after a change, and the head, is
    caught only by a checkpoint of the head kept outside the database (the treasurer's signed
    checkpoints). Safe beside concurrent posting: it checks the chain up to the head it read first."""
    # One statement, one snapshot: every posting counted here belongs to an entry at or below this head,
    # because an entry, its postings and the head move in one transaction.
    last_seq, last_hash, posting_count = (await session.execute(
        select(LedgerHead.last_seq, LedgerHead.last_hash, select(func.count()).select_from(Posting).scalar_subquery())
        .where(LedgerHead.id == 1))).one()
    codes = dict((await session.execute(select(LedgerAccount.id, LedgerAccount.code))).all())
    query = (select(*_WALK_COLUMNS, Posting.account_id, Posting.currency, Posting.amount_minor)
             .outerjoin(Posting, Posting.entry_id == JournalEntry.id).where(JournalEntry.seq <= last_seq)
             .order_by(JournalEntry.seq, Posting.id).execution_options(yield_per=batch))
    prev_hash, prev_seq, checked, postings = GENESIS, 0, 0, 0
    entry, lines = None, []

    def close_entry() -> str:
        nonlocal prev_hash, prev_seq, checked, postings
        flaw = _flaw(entry, lines, prev_hash=prev_hash, prev_seq=prev_seq)
        if not flaw:
            prev_hash, prev_seq, checked, postings = entry.hash, entry.seq, checked + 1, postings + len(lines)
            if progress and checked % 10000 == 0:
                progress(checked)
        return flaw

    result = await session.stream(query)
    try:
        # By partition, not row by row: each async step is a greenlet switch, which cost more than the hashing.
        async for partition in result.partitions(batch):
            for row in partition:
                if entry is not None and row.id != entry.id:
                    if flaw := close_entry():
                        await result.close()
                        return LedgerChainReport(checked, entry.seq, entry.id, flaw)
                    lines = []
                entry = row
                if row.account_id is not None:  # an entry without postings still gets checked (and fails)
                    lines.append((codes.get(row.account_id, f"#{row.account_id}"), row.currency, row.amount_minor))
    except (ValueError, TypeError):
        # A stored value no longer parses (e.g. a date overwritten with text on SQLite): still name the entry.
        await result.close()
        seq, entry_id = await _first_unreadable(session, after_seq=prev_seq)
        return LedgerChainReport(checked, seq, entry_id, "a stored value cannot be read (the entry was altered)")
    if entry is not None and (flaw := close_entry()):
        return LedgerChainReport(checked, entry.seq, entry.id, flaw)

    if (prev_seq, prev_hash) != (last_seq, last_hash):
        return LedgerChainReport(checked, last_seq, None, "the newest entries are missing (the chain was cut short)")
    beyond = (await session.execute(
        select(JournalEntry.seq, JournalEntry.id)
        .where(JournalEntry.seq > select(LedgerHead.last_seq).where(LedgerHead.id == 1).scalar_subquery())
        .order_by(JournalEntry.seq).limit(1))).first()
    if beyond is not None:
        return LedgerChainReport(checked, beyond.seq, beyond.id, "entry beyond the chain head (added behind the ledger's back)")
    if postings != posting_count:
        orphan = (await session.execute(
            select(Posting.entry_id).where(~select(JournalEntry.id).where(JournalEntry.id == Posting.entry_id)
                                           .exists()).limit(1))).scalar_one_or_none()
        return LedgerChainReport(checked, None, orphan, "postings without an entry (an entry was removed)")
    return LedgerChainReport(checked)
