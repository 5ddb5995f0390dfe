"""Reconciliation: the ledger against the bank statement, against Stripe, and
collectors' hand-overs against their receipts.

Card: the ledger's `stripe` account against Stripe's balance transactions and
payouts of a date range, fetched through the SDK (see card_reconciliation).

Bank: the treasurer imports the bank's statement as CSV (columns date,
description, amount, reference; a header row; amounts in rupees, money in
positive and out negative; dates YYYY-MM-DD or DD/MM/YYYY). Every row is checked
first: one bad row refuses the whole file with a message per row, and nothing is
stored. The same file twice is refused. Each line is then matched to a ledger
entry that moved the same amount through the `bank` account within
BANK_MATCH_DAYS days, preferring an entry whose key or description holds the
line's reference; a line with no candidate, or several and no reference to tell
them apart, is left for the treasurer to match by hand.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dues.models import JournalEntry, LedgerAccount, Posting
from dues.money import DEFAULT_CURRENCY, Money, format_money
from treasury.errors import BankCsvInvalid, MatchRefused
from treasury.models import BankImport, BankLine
from union import audit
from union.errors import Conflict, NotFound
from union.i18n import _
from union.models import utcnow

BANK_MATCH_DAYS = 3
MAX_LINES = 20_000
MAX_AMOUNT_MINOR = 10_000_000_000  # Rs 10 crore: beyond that a line is a typing slip
COLUMNS = ("date", "description", "amount", "reference")
_AMOUNT = re.compile(r"^[+-]?\d{1,12}(\.\d{1,2})?$")


# ---------------------------------------------------------------- bank: parsing


@dataclass(frozen=True)
class ParsedLine:
    line_no: int
    booked_on: dt.date
    description: str
    amount_minor: int
    reference: str


def _parse_date(text: str) -> dt.date:
    text = text.strip()
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(text)


def _parse_amount(text: str) -> int:
    cleaned = text.strip().replace(",", "")
    if not _AMOUNT.match(cleaned):
        raise ValueError(text)
    try:
        minor = int((Decimal(cleaned) * 100).to_integral_exact())
    except InvalidOperation:
        raise ValueError(text) from None
    if minor == 0 or abs(minor) > MAX_AMOUNT_MINOR:
        raise ValueError(text)
    return minor


def parse_bank_csv(data: bytes) -> list[ParsedLine]:
    """Every line of the statement, or BankCsvInvalid listing every bad row (nothing is half-read)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BankCsvInvalid(_("The file is not UTF-8 text. Save the statement as CSV (UTF-8) and try again."),
                             field="file") from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error:
        raise BankCsvInvalid(_("The file is not a CSV file."), field="file") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise BankCsvInvalid(_("The file is empty."), field="file")
    header = [cell.strip().lower() for cell in rows[0]]
    if header != list(COLUMNS):
        raise BankCsvInvalid(_("The first row must be the column names: %(columns)s.", columns=",".join(COLUMNS)),
                             field="file")
    if len(rows) - 1 > MAX_LINES:
        raise BankCsvInvalid(_("A statement may have at most %(count)d lines.", count=MAX_LINES), field="file")
    lines, problems = [], []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(COLUMNS):
            problems.append(_("Row %(row)d: expected %(want)d columns, found %(got)d.", row=number,
                              want=len(COLUMNS), got=len(row)))
            continue
        date_text, description, amount_text, reference = (cell.strip() for cell in row)
        try:
            booked_on = _parse_date(date_text)
        except ValueError:
            problems.append(_("Row %(row)d: %(value)s is not a date (use YYYY-MM-DD).", row=number,
                              value=date_text[:20] or '""'))
            continue
        try:
            amount = _parse_amount(amount_text)
        except ValueError:
            problems.append(_("Row %(row)d: %(value)s is not an amount in rupees (like 1500.00 or -200).",
                              row=number, value=amount_text[:20] or '""'))
            continue
        if len(reference) > 100 or len(description) > 500:
            problems.append(_("Row %(row)d: the description or reference is too long.", row=number))
            continue
        lines.append(ParsedLine(number, booked_on, description, amount, reference))
    if problems:
        raise BankCsvInvalid(_("The statement was not imported: %(count)d rows are wrong.", count=len(problems)),
                             problems=problems, field="file")
    if not lines:
        raise BankCsvInvalid(_("The statement has no lines."), field="file")
    return lines


# ---------------------------------------------------------------- bank: importing and matching


def _bank_entries_query():
    """(entry id, date, amount through the bank, key, description) of entries that moved the bank account."""
    return (select(JournalEntry.id, JournalEntry.effective_date, func.sum(Posting.amount_minor).label("amount"),
                   JournalEntry.idempotency_key, JournalEntry.description)
            .join(Posting, Posting.entry_id == JournalEntry.id)
            .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
            .where(LedgerAccount.code == "bank")
            .group_by(JournalEntry.id, JournalEntry.effective_date, JournalEntry.idempotency_key,
                      JournalEntry.description))


async def _candidates(session: AsyncSession, line: BankLine | ParsedLine, taken: set[str]) -> list:
    day = line.booked_on
    query = _bank_entries_query().where(
        JournalEntry.effective_date >= day - dt.timedelta(days=BANK_MATCH_DAYS),
        JournalEntry.effective_date <= day + dt.timedelta(days=BANK_MATCH_DAYS))
    rows = [r for r in await session.execute(query) if int(r.amount) == line.amount_minor and r.id not in taken]
    return rows


async def _matched_entry_ids(session: AsyncSession) -> set[str]:
    return set((await session.execute(select(BankLine.entry_id).where(BankLine.entry_id.is_not(None)))).scalars())


def _pick(line, candidates: list):
    if line.reference:
        ref = line.reference.lower()
        by_ref = [c for c in candidates if ref in c.idempotency_key.lower() or ref in (c.description or "").lower()]
        if len(by_ref) == 1:
            return by_ref[0]
        if by_ref:
            candidates = by_ref
    if len(candidates) == 1:
        return candidates[0]
    # Several with nothing to tell them apart: the nearest date, if only one is nearest.
    if candidates:
        nearest = min(abs((c.effective_date - line.booked_on).days) for c in candidates)
        closest = [c for c in candidates if abs((c.effective_date - line.booked_on).days) == nearest]
        if len(closest) == 1:
            return closest[0]
    return None


@dataclass
class ImportResult:
    bank_import: BankImport
    matched: int
    unmatched: int


async def import_bank_statement(session: AsyncSession, *, data: bytes, actor, vault) -> ImportResult:
    """Check, store and auto-match a statement. Flushes, never commits."""
    parsed = parse_bank_csv(data)
    digest = hashlib.sha256(data).hexdigest()
    if (await session.execute(select(BankImport.id).where(BankImport.sha256 == digest))).first():
        raise Conflict(_("This statement was already imported."), field="file")
    bank_import = BankImport(sha256=digest, imported_by_user_id=getattr(actor, "id", None), line_count=len(parsed))
    session.add(bank_import)
    await session.flush()
    taken = await _matched_entry_ids(session)
    matched = 0
    now = utcnow()
    for p in parsed:
        line = BankLine(import_id=bank_import.id, line_no=p.line_no, booked_on=p.booked_on,
                        amount_minor=p.amount_minor, currency=DEFAULT_CURRENCY, reference=p.reference,
                        description_enc=vault.encrypt(p.description))
        choice = _pick(p, await _candidates(session, p, taken))
        if choice is not None:
            line.entry_id, line.matched_how, line.matched_at = choice.id, "auto", now
            taken.add(choice.id)
            matched += 1
        session.add(line)
    await session.flush()
    await audit.record(session, action="treasury.bank_import", actor=actor, target_type="bank_import",
                       target_id=bank_import.id, detail={"lines": len(parsed), "matched": matched})
    return ImportResult(bank_import, matched, len(parsed) - matched)


async def match_bank_line(session: AsyncSession, *, line_id: int, entry_id: str | None, actor) -> BankLine:
    """Match a line to an entry by hand (or, with entry_id None, undo its match)."""
    line = await session.get(BankLine, line_id)
    if line is None:
        raise NotFound(_("No such bank statement line."), field="line_id")
    if entry_id is None:
        previous, line.entry_id, line.matched_how, line.matched_at, line.matched_by_user_id = (
            line.entry_id, None, "", None, None)
        await session.flush()
        await audit.record(session, action="treasury.bank_unmatch", actor=actor, target_type="bank_line",
                           target_id=line.id, detail={"entry_id": previous})
        return line
    entry_id = entry_id.strip()
    found = (await session.execute(_bank_entries_query().where(JournalEntry.id == entry_id))).first()
    if found is None:
        raise MatchRefused(_("That entry did not move money through the bank account."), field="entry_id")
    if int(found.amount) != line.amount_minor:
        raise MatchRefused(_("That entry moved a different amount through the bank."), field="entry_id")
    other = (await session.execute(select(BankLine.id).where(BankLine.entry_id == entry_id,
                                                             BankLine.id != line.id))).first()
    if other is not None:
        raise MatchRefused(_("That entry is already matched to another bank line."), field="entry_id")
    line.entry_id, line.matched_how, line.matched_at = entry_id, "manual", utcnow()
    line.matched_by_user_id = getattr(actor, "id", None)
    await session.flush()
    await audit.record(session, action="treasury.bank_match", actor=actor, target_type="bank_line",
                       target_id=line.id, detail={"entry_id": entry_id})
    return line


@dataclass
class BankView:
    unmatched_lines: list = field(default_factory=list)  # (BankLine, description, [candidate rows])
    matched_lines: list = field(default_factory=list)  # (BankLine, description)
    unmatched_entries: list = field(default_factory=list)  # ledger bank entries without a line


async def bank_reconciliation(session: AsyncSession, *, vault, start: dt.date, end: dt.date) -> BankView:
    view = BankView()
    taken = await _matched_entry_ids(session)
    lines = (await session.execute(select(BankLine).where(BankLine.booked_on >= start, BankLine.booked_on <= end)
                                   .order_by(BankLine.booked_on, BankLine.id))).scalars().all()
    for line in lines:
        description = vault.decrypt(line.description_enc) or ""
        if line.entry_id is None:
            view.unmatched_lines.append((line, description, await _candidates(session, line, taken)))
        else:
            view.matched_lines.append((line, description))
    entries = await session.execute(_bank_entries_query().where(
        JournalEntry.effective_date >= start, JournalEntry.effective_date <= end)
        .order_by(JournalEntry.effective_date))
    view.unmatched_entries = [e for e in entries if e.id not in taken]
    return view


# ---------------------------------------------------------------- differences by month (for closing)


@dataclass
class Differences:
    """What is left to reconcile in a month: counts by kind, with a few words each."""

    items: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.items)


# Other reconciliations (card, cash) add themselves here: async (session, start, end) -> [(label, count)].
DIFFERENCE_SOURCES: list = []


async def month_differences(session: AsyncSession, *, start: dt.date, end: dt.date) -> Differences:
    result = Differences()
    unmatched_lines = (await session.execute(select(func.count(BankLine.id)).where(
        BankLine.booked_on >= start, BankLine.booked_on <= end, BankLine.entry_id.is_(None)))).scalar() or 0
    if unmatched_lines:
        result.items.append((_("bank statement lines not matched to the ledger"), int(unmatched_lines)))
    taken = await _matched_entry_ids(session)
    bank_entries = [e.id for e in await session.execute(_bank_entries_query().where(
        JournalEntry.effective_date >= start, JournalEntry.effective_date <= end)) if e.id not in taken]
    if bank_entries:
        result.items.append((_("ledger entries through the bank not found on a bank statement"), len(bank_entries)))
    for source in DIFFERENCE_SOURCES:
        result.items.extend((label, n) for label, n in await source(session, start, end) if n)
    return result


# ---------------------------------------------------------------- card: ledger against Stripe

CARD_MATCH_DAYS = 7  # a ledger entry dated this near a Stripe transaction outside the range is not "missing"
_IN_CHUNK = 500


@dataclass
class CardDifference:
    kind: str  # "stripe_only" (in Stripe, not in the ledger), "ledger_only", "mismatch", "in_transit"
    reference: str  # the Stripe object (ch_, re_, dp_, po_ ...) or the ledger entry
    day: dt.date
    stripe_minor: int | None
    ledger_minor: int | None
    text: str


@dataclass
class PayoutRow:
    id: str
    created: dt.date
    arrival: dt.date
    amount_minor: int
    currency: str
    status: str
    ledger_minor: int | None  # what the ledger moved from `stripe` to `bank` for it (positive)

    @property
    def matched(self) -> bool:
        return self.status == "paid" and self.ledger_minor == self.amount_minor


@dataclass
class CardCheck:
    checked: int = 0  # card payments compared with their card records
    differences: list[str] = field(default_factory=list)
    unavailable: str = ""
    compared_with_stripe: bool = False
    stripe_transactions: int = 0  # Stripe balance transactions of the range
    matched: int = 0  # of which agree with the ledger
    rows: list[CardDifference] = field(default_factory=list)  # the Stripe comparison's differences
    payouts: list[PayoutRow] = field(default_factory=list)

    def add(self, row: CardDifference) -> None:
        self.rows.append(row)
        self.differences.append(row.text)


def _entry_amounts_query(keys: list[str], account: str):
    return (select(JournalEntry.idempotency_key, func.sum(Posting.amount_minor))
            .join(Posting, Posting.entry_id == JournalEntry.id)
            .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
            .where(JournalEntry.idempotency_key.in_(keys), LedgerAccount.code == account)
            .group_by(JournalEntry.idempotency_key))


def _stripe_entries_query():
    """(entry id, key, reversed entry, date, amount through `stripe`) of entries that moved the Stripe account."""
    return (select(JournalEntry.id, JournalEntry.idempotency_key, JournalEntry.reverses_entry_id,
                   JournalEntry.effective_date, func.sum(Posting.amount_minor).label("amount"))
            .join(Posting, Posting.entry_id == JournalEntry.id)
            .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
            .where(LedgerAccount.code == "stripe")
            .group_by(JournalEntry.id, JournalEntry.idempotency_key, JournalEntry.reverses_entry_id,
                      JournalEntry.effective_date))


def _chunks(items: list, size: int = _IN_CHUNK):
    for i in range(0, len(items), size):
        yield items[i:i + size]


async def _stripe_ledger(session: AsyncSession, *, start: dt.date, end: dt.date, keys: set[str]):
    """The ledger's side: amount through `stripe` by Stripe key (an entry and any reversal of it together),
    for the given keys and for every entry dated in the range; and the keys of the entries dated in it
    (an entry with no Stripe key counts under "entry:<id>")."""
    rows: dict[str, object] = {}
    for r in await session.execute(_stripe_entries_query().where(JournalEntry.effective_date >= start,
                                                                  JournalEntry.effective_date <= end)):
        rows[r.id] = r
    in_range_ids = set(rows)
    for chunk in _chunks(sorted(keys)):
        for r in await session.execute(_stripe_entries_query().where(JournalEntry.idempotency_key.in_(chunk))):
            rows[r.id] = r
    # Reversals of those entries (a treasurer's correction), wherever dated, and the originals of reversals.
    for chunk in _chunks(sorted(rows)):
        for r in await session.execute(_stripe_entries_query().where(JournalEntry.reverses_entry_id.in_(chunk))):
            rows[r.id] = r
    missing = sorted({r.reverses_entry_id for r in rows.values() if r.reverses_entry_id} - set(rows))
    original_key = {}
    for chunk in _chunks(missing):
        original_key.update((await session.execute(select(JournalEntry.id, JournalEntry.idempotency_key)
                                                    .where(JournalEntry.id.in_(chunk)))).all())

    def key_of(r) -> str:
        if r.reverses_entry_id:
            original = rows.get(r.reverses_entry_id)
            key = original.idempotency_key if original is not None else original_key.get(r.reverses_entry_id)
            return key if key and key.startswith("stripe:") else f"entry:{r.reverses_entry_id}"
        return r.idempotency_key if r.idempotency_key.startswith("stripe:") else f"entry:{r.id}"

    amounts: dict[str, int] = {}
    in_range: dict[str, dt.date] = {}
    for r in rows.values():
        key = key_of(r)
        amounts[key] = amounts.get(key, 0) + int(r.amount)
        if r.id in in_range_ids:
            in_range[key] = min(in_range.get(key, r.effective_date), r.effective_date)
    return amounts, in_range


def _expected(txn: dict) -> list[tuple[str, int, str]] | None:
    """What the card service books for one Stripe balance transaction: (ledger key, amount through
    `stripe`, what it is), or None when it books nothing for this type."""
    kind, source, amount, fee = txn.get("type"), txn.get("source") or "", int(txn.get("amount") or 0), \
        int(txn.get("fee") or 0)
    if isinstance(source, dict):
        source = source.get("id") or ""
    if kind in ("charge", "payment") and source:
        lines = [(f"stripe:charge:{source}:payment", amount, _("card payment %(ref)s", ref=source))]
        if fee:
            lines.append((f"stripe:charge:{source}:fee", -fee, _("Stripe's fee on %(ref)s", ref=source)))
        return lines
    if kind in ("refund", "payment_refund") and source:
        return [(f"stripe:refund:{source}", amount, _("refund %(ref)s", ref=source))]
    if kind == "adjustment" and source.startswith("dp_"):
        key = f"stripe:dispute:{source}:" + ("withdrawn" if amount < 0 else "reinstated")
        what = _("dispute %(ref)s", ref=source) if amount < 0 else _("dispute %(ref)s won", ref=source)
        lines = [(key, amount, what)]
        if fee:
            lines.append((f"{key}:fee", -fee, _("Stripe's fee on dispute %(ref)s", ref=source)))
        return lines
    if kind == "payout" and source:
        return [(f"stripe:payout:{source}", amount, _("payout %(ref)s", ref=source))]
    return None


def _ts(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())


def _amount(minor: int | None) -> str:
    return "-" if minor is None else format_money(Money(int(minor)))


async def _card_records(session: AsyncSession, check: CardCheck, *, start: dt.date, end: dt.date, CardPayment):
    """The ledger against the card records (no Stripe needed): each successful card payment's booking
    (payment into `stripe`, fee out of it) and ledger card payments without a record."""
    payments = (await session.execute(select(CardPayment).join(JournalEntry, JournalEntry.id == CardPayment.entry_id)
                                      .where(CardPayment.charge_id.is_not(None), JournalEntry.effective_date >= start,
                                             JournalEntry.effective_date <= end)
                                      .order_by(CardPayment.id))).scalars().all()
    keys = [f"stripe:charge:{p.charge_id}:payment" for p in payments]
    fee_keys = [f"stripe:charge:{p.charge_id}:fee" for p in payments]
    booked = {k: int(v) for k, v in await session.execute(_entry_amounts_query(keys, "stripe"))} if keys else {}
    fees = {k: -int(v) for k, v in await session.execute(_entry_amounts_query(fee_keys, "stripe"))} if keys else {}
    for p in payments:
        check.checked += 1
        gross = booked.get(f"stripe:charge:{p.charge_id}:payment")
        fee = fees.get(f"stripe:charge:{p.charge_id}:fee", 0)
        if gross != p.amount_minor:
            check.differences.append(_("Card payment %(id)s: the ledger booked %(booked)s, the card record says "
                                       "%(recorded)s.", id=p.id, booked=gross if gross is not None else "-",
                                       recorded=p.amount_minor))
        if fee != p.fee_minor:
            check.differences.append(_("Card payment %(id)s: the ledger booked a fee of %(booked)s, the card record "
                                       "says %(recorded)s.", id=p.id, booked=fee, recorded=p.fee_minor))
    recorded = set((await session.execute(select(CardPayment.entry_id).where(
        CardPayment.entry_id.is_not(None)))).scalars())
    orphans = (await session.execute(select(JournalEntry.id, JournalEntry.idempotency_key).where(
        JournalEntry.kind == "card_payment", JournalEntry.effective_date >= start,
        JournalEntry.effective_date <= end))).all()
    for entry_id, key in orphans:
        if entry_id not in recorded:
            check.differences.append(_("Ledger entry %(entry)s (%(key)s) books a card payment with no card record.",
                                       entry=entry_id, key=key))


async def _against_stripe(session: AsyncSession, check: CardCheck, *, start: dt.date, end: dt.date, billing):
    """The ledger's `stripe` account against Stripe's balance transactions and payouts of the range."""
    try:
        txns = await billing.list_balance_transactions(
            created_gte=_ts(start - dt.timedelta(days=CARD_MATCH_DAYS)),
            created_lt=_ts(end + dt.timedelta(days=1 + CARD_MATCH_DAYS)))
        payouts = await billing.list_payouts(created_gte=_ts(start), created_lt=_ts(end + dt.timedelta(days=1)))
    except Exception:  # noqa: BLE001 - an unreachable Stripe is reported, not raised
        check.unavailable = _("Stripe could not be reached: only the ledger and the card records were compared.")
        return
    check.compared_with_stripe = True
    status_of = {p["id"]: p.get("status") for p in payouts}
    day_of = {t["id"]: dt.datetime.fromtimestamp(int(t.get("created") or 0), dt.UTC).date() for t in txns}
    expected = {t["id"]: _expected(t) for t in txns}
    keys = {key for lines in expected.values() for key, _a, _w in lines or []}
    keys |= {f"stripe:payout:{p['id']}" for p in payouts}
    amounts, in_range = await _stripe_ledger(session, start=start, end=end, keys=keys)
    for txn in sorted(txns, key=lambda t: (int(t.get("created") or 0), t["id"])):
        day = day_of[txn["id"]]
        if not start <= day <= end:
            continue
        check.stripe_transactions += 1
        lines = expected[txn["id"]]
        if lines is None:
            check.add(CardDifference(
                "stripe_only", txn["id"], day, int(txn.get("net") or 0), None,
                _("Stripe balance transaction %(ref)s (%(type)s, %(amount)s on %(day)s) is not in the ledger.",
                  ref=txn["id"], type=txn.get("type") or "?", amount=_amount(txn.get("net")), day=day.isoformat())))
            continue
        fee = int(txn.get("fee") or 0)
        if fee and not any(key.endswith(":fee") for key, _a, _w in lines):
            check.add(CardDifference(
                "stripe_only", txn["id"], day, -fee, None,
                _("Stripe took a fee of %(amount)s on %(ref)s (%(type)s) that the ledger does not book.",
                  amount=_amount(fee), ref=txn.get("source") or txn["id"], type=txn.get("type"))))
        agreed = True
        for key, amount, what in lines:
            booked = amounts.get(key)
            if booked is None:
                agreed = False
                pending = (txn.get("type") == "payout"
                           and status_of.get(txn.get("source")) in ("pending", "in_transit"))
                check.add(CardDifference(
                    "in_transit" if pending else "stripe_only", key.split(":")[2], day, amount, None,
                    _("%(what)s (%(amount)s on %(day)s) is on its way to the bank: the ledger books it when it "
                      "arrives.", what=what, amount=_amount(amount), day=day.isoformat()) if pending else
                    _("Stripe has %(what)s (%(amount)s on %(day)s); the ledger does not.", what=what,
                      amount=_amount(amount), day=day.isoformat())))
            elif booked != amount:
                agreed = False
                check.add(CardDifference(
                    "mismatch", key.split(":")[2], day, amount, booked,
                    _("%(what)s: Stripe says %(stripe)s, the ledger booked %(ledger)s.", what=what,
                      stripe=_amount(amount), ledger=_amount(booked))))
        check.matched += agreed
    known = {key for lines in expected.values() for key, _a, _w in lines or []}
    for key, day in sorted(in_range.items(), key=lambda kv: (kv[1], kv[0])):
        if key in known or not amounts.get(key):
            continue  # Stripe has it (perhaps a few days outside the range), or it nets to nothing
        ref = key.split(":")[2] if key.startswith("stripe:") else key.removeprefix("entry:")
        check.add(CardDifference(
            "ledger_only", ref, day, None, amounts[key],
            _("The ledger moved %(amount)s through the Stripe account on %(day)s (%(key)s); Stripe has no such "
              "balance transaction.", amount=_amount(amounts[key]), day=day.isoformat(), key=key)))
    for p in sorted(payouts, key=lambda p: (int(p.get("created") or 0), p["id"])):
        booked = amounts.get(f"stripe:payout:{p['id']}")
        row = PayoutRow(p["id"], _day(p.get("created")), _day(p.get("arrival_date") or p.get("created")),
                        int(p.get("amount") or 0), str(p.get("currency") or "inr").upper(), str(p.get("status")),
                        -booked if booked is not None else None)
        check.payouts.append(row)
        if row.status == "paid" and row.ledger_minor is None and not any(d.reference == p["id"] for d in check.rows):
            check.add(CardDifference("stripe_only", p["id"], row.arrival, -row.amount_minor, None,
                                     _("Payout %(ref)s of %(amount)s reached the bank on %(day)s; the ledger does "
                                       "not have it.", ref=p["id"], amount=_amount(row.amount_minor),
                                       day=row.arrival.isoformat())))


def _day(timestamp) -> dt.date:
    return dt.datetime.fromtimestamp(int(timestamp or 0), dt.UTC).date()


async def card_reconciliation(session: AsyncSession, *, start: dt.date, end: dt.date, billing=None) -> CardCheck:
    """Card payments of the range: the ledger against the card records (always) and, when Stripe (or its
    stand-in) is given and answers, the ledger's `stripe` account against Stripe's balance transactions
    and payouts of the range (through the SDK): each transaction must be booked under its key with the
    same amount (a charge as the payment and Stripe's fee, a refund, a dispute withdrawal or
    reinstatement, a payout to the bank); each ledger movement of the account dated in the range must
    be in Stripe (within CARD_MATCH_DAYS of the range). Every difference is listed."""
    try:
        from dues.card_models import CardPayment
    except ImportError:  # card payments not installed
        return CardCheck(unavailable=_("Card payments are not set up."))
    check = CardCheck()
    await _card_records(session, check, start=start, end=end, CardPayment=CardPayment)
    if billing is not None:
        await _against_stripe(session, check, start=start, end=end, billing=billing)
    return check


# ---------------------------------------------------------------- cash: hand-overs against receipts


@dataclass
class HandoverRow:
    collector: str
    day: dt.date
    receipts_minor: int  # receipts written since the collector's previous hand-over
    expected_minor: int  # the collector's cash balance in the ledger at the hand-over
    counted_minor: int

    @property
    def difference_minor(self) -> int:
        return self.counted_minor - self.receipts_minor


@dataclass
class CashCheck:
    rows: list[HandoverRow] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    unavailable: str = ""


async def cash_reconciliation(session: AsyncSession, *, start: dt.date, end: dt.date,
                              branch_id: int | None = None) -> CashCheck:
    """Each completed hand-over of the range against the receipts the collector wrote since their
    previous hand-over (cash_payment rows posted in between, by ledger seq). A hand-over counted
    short or over, or whose ledger expectation differs from the receipts, is a difference."""
    try:
        from dues.cash_ops_models import CashHandover
    except ImportError:
        return CashCheck(unavailable=_("Cash hand-overs are not set up."))
    from dues.models import CashPayment
    from treasury.reports import collector_branches
    from union.models import User

    check = CashCheck()
    names = dict((await session.execute(select(User.id, User.username))).all())
    branch_of = await collector_branches(session) if branch_id is not None else {}
    handovers = (await session.execute(
        select(CashHandover, JournalEntry.effective_date, JournalEntry.seq)
        .join(JournalEntry, JournalEntry.id == CashHandover.entry_id)
        .where(CashHandover.status == "completed").order_by(CashHandover.collector_user_id, JournalEntry.seq))).all()
    previous: dict[int, int] = {}
    for handover, day, _seq in handovers:
        collector = handover.collector_user_id
        since = previous.get(collector, 0)
        previous[collector] = handover.as_of_seq
        if not start <= day <= end or (branch_id is not None and branch_of.get(collector) != branch_id):
            continue
        receipts = (await session.execute(
            select(func.coalesce(func.sum(CashPayment.amount_minor), 0))
            .join(JournalEntry, JournalEntry.id == CashPayment.entry_id)
            .where(CashPayment.collector_user_id == collector, JournalEntry.seq > since,
                   JournalEntry.seq <= handover.as_of_seq))).scalar()
        row = HandoverRow(names.get(collector, f"#{collector}"), day, int(receipts or 0), int(handover.expected_minor),
                          int(handover.counted_minor))
        check.rows.append(row)
        if row.difference_minor:
            check.differences.append(_("%(collector)s handed over %(counted)s on %(day)s against receipts of "
                                       "%(receipts)s.", collector=row.collector, counted=row.counted_minor,
                                       day=day.isoformat(), receipts=row.receipts_minor))
    return check


async def _cash_and_card_differences(session: AsyncSession, start: dt.date, end: dt.date) -> list[tuple[str, int]]:
    card = await card_reconciliation(session, start=start, end=end)
    cash = await cash_reconciliation(session, start=start, end=end)
    return [(_("card payment differences"), len(card.differences)),
            (_("cash hand-overs that differ from the receipts"), len(cash.differences))]


DIFFERENCE_SOURCES.append(_cash_and_card_differences)
