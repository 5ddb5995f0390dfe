"""Dues services: recording cash a collector took, and a member's standing.

Plans and rates live in the database (migration 0004 seeds "standard", Rs 100 a
month, and "concessional", Rs 50). A member's `DuesAccount` is optional: without
one the member is on the standard plan and not exempt. The standard chart of
ledger accounts and each collector's cash account are created lazily here, on
the first payment (both idempotent and safe under concurrency).

Services validate before they write, flush and never commit: the route owns the
transaction. Standing is computed by `compute_standing`, a pure function of the
rates, the joining date, the total paid and today, so it can be tested as a
table and with hypothesis; `standing` only loads its inputs.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import any_, bindparam, func, insert, literal, null, select, text, union_all
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import identity_key

from dues import joining
from dues.errors import CurrencyMismatch, IdempotencyConflict, InvalidAmount
from dues.ledger import (COLLECTOR_CASH_PREFIX, STANDARD_ACCOUNTS, PreparedEntry, append_entries, chain_entries,
                         currency_mismatch, ensure_chart_and_cash, period_closed_refusal, posting_rows, prepare_entry)
from dues.models import (CashPayment, DuesAccount, DuesPlan, DuesRate, EntryKind, JournalEntry, LedgerAccount,
                         LedgerHead, Posting)
from dues.money import DEFAULT_CURRENCY, Money
from union import audit, i18n, pgbulk
from union.errors import Conflict, InvalidInput, NotFound, UnionError
from union.i18n import _
from union.models import AuditEvent, AuditHead, Member, Role, utcnow
from union.policy import Principal, can_see_member

STANDARD_PLAN = "standard"
# Rs 1,00,000 in paise: far above any month's dues; a bigger "payment" is a typing slip.
MAX_CASH_PAYMENT_MINOR = 10_000_000
MAX_MONTHS = 120
MAX_RECEIPT_LENGTH = 40
# How far ahead an advance payment may be counted (stops the walk when a rate is zero or tiny).
MAX_ADVANCE_MONTHS = 1200


class StandingStatus(StrEnum):
    new = "new"
    current = "current"
    grace = "grace"
    lapsed = "lapsed"
    exempt = "exempt"


@dataclass(frozen=True)
class Standing:
    status: StandingStatus
    paid_through: str | None  # "YYYY-MM"
    arrears_minor: int
    currency: str

    def as_json(self) -> dict:
        return {"status": str(self.status), "paid_through": self.paid_through,
                "arrears_minor": self.arrears_minor, "currency": self.currency}


# ---------------------------------------------------------------- standing (pure)


def month_index(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


def month_label(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def compute_standing(*, joined_on: dt.date, today: dt.date, rates: Sequence[tuple[dt.date, int]],
                     paid_minor: int, grace_months: int, exempt: bool = False,
                     currency: str = DEFAULT_CURRENCY) -> Standing:
    """A member's standing from the plan's rates [(effective_from, monthly_minor)], the total paid.

    Months are due from the joining month through the current month, each at the rate in force on
    its first day (before the first rate: the first rate). Payments cover months in order from the
    joining month; what is left over after the last whole month is a partial payment toward the
    next; anything beyond the current month covers future months (advance payment)."""
    if not rates:
        raise ValueError("a plan needs at least one rate")
    ordered = sorted(rates)
    starts = [month_index(start) if start.day == 1 else month_index(start) + 1 for start, _ in ordered]

    def segment(month: int) -> tuple[int, int | None]:
        """The rate in force in `month` and the first month after it at another rate (None: never)."""
        at = bisect.bisect_right(starts, month)
        # Before the first rate: the first rate. starts[at] is the first start after `month`.
        return ordered[max(at - 1, 0)][1], (starts[at] if at < len(starts) else None)

    join, now = month_index(joined_on), month_index(today)
    # Walk whole stretches at one rate rather than month by month (100,000 members in a bulk recompute).
    remaining, month = max(paid_minor, 0), join
    limit = max(now, join) + MAX_ADVANCE_MONTHS
    while month <= limit:
        due, next_start = segment(month)
        end = limit + 1 if next_start is None else min(next_start, limit + 1)
        if due == 0:
            if month > now:
                break  # free months ahead would otherwise count as paid for ever
            month = min(end, now + 1)
            continue
        covered = min(remaining // due, end - month)
        remaining -= covered * due
        month += covered
        if month < end:
            break  # not enough left for the next month
    paid_through = month - 1 if month > join else None

    owed, month = 0, join
    while month <= now:
        due, next_start = segment(month)
        end = now + 1 if next_start is None else min(next_start, now + 1)
        owed += due * (end - month)
        month = end
    arrears = max(owed - max(paid_minor, 0), 0)
    behind = now - (paid_through if paid_through is not None else join - 1)

    if exempt:
        status, arrears = StandingStatus.exempt, 0
    elif join >= now and paid_minor <= 0:
        status = StandingStatus.new
    elif behind <= 0:
        status = StandingStatus.current
    elif behind <= grace_months:
        status = StandingStatus.grace
    else:
        status = StandingStatus.lapsed
    return Standing(status=status, paid_through=month_label(paid_through) if paid_through is not None else None,
                    arrears_minor=arrears, currency=currency)


# ---------------------------------------------------------------- standing (loading)


async def member_plan(session: AsyncSession, member: Member) -> tuple[DuesPlan, DuesAccount | None]:
    account = (await session.execute(
        select(DuesAccount).where(DuesAccount.member_id == member.id))).scalar_one_or_none()
    if account is not None:
        plan = await session.get(DuesPlan, account.plan_id)
    else:
        plan = (await session.execute(select(DuesPlan).where(DuesPlan.code == STANDARD_PLAN))).scalar_one()
    return plan, account


# Accounts whose postings on a member's entries make up what the member has paid toward dues: credits
# to dues income (cash, card, waivers) less refunds and disputes; reversals cancel themselves out.
MEMBER_CREDIT_ACCOUNTS = ("dues_income", "refunds", "disputes")


def paid_total_query():
    """SELECT member_id, credit: what each member has paid toward dues, from the ledger."""
    return (select(JournalEntry.member_id, func.coalesce(-func.sum(Posting.amount_minor), 0).label("credit"))
            .join(Posting, Posting.entry_id == JournalEntry.id)
            .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
            .where(LedgerAccount.code.in_(MEMBER_CREDIT_ACCOUNTS), JournalEntry.member_id.is_not(None))
            .group_by(JournalEntry.member_id))


async def paid_total(session: AsyncSession, member_id: int) -> int:
    row = (await session.execute(paid_total_query().where(JournalEntry.member_id == member_id))).first()
    # PostgreSQL sums bigints as numeric: int() is exact.
    return int(row.credit) if row else 0


async def standing(session: AsyncSession, *, member: Member, today: dt.date, grace_months: int) -> Standing:
    plan, account = await member_plan(session, member)
    rates = (await session.execute(
        select(DuesRate.effective_from, DuesRate.monthly_minor, DuesRate.currency)
        .where(DuesRate.plan_id == plan.id).order_by(DuesRate.effective_from))).all()
    currency = rates[-1].currency if rates else DEFAULT_CURRENCY
    return compute_standing(joined_on=member.joined_on, today=today,
                            rates=[(r.effective_from, int(r.monthly_minor)) for r in rates],
                            paid_minor=await paid_total(session, member.id), grace_months=grace_months,
                            exempt=bool(account and account.exempt), currency=currency)


async def change_rate(session: AsyncSession, *, plan_code: str, monthly_minor: object, effective_from: dt.date,
                      today: dt.date, currency: str = DEFAULT_CURRENCY, actor=None) -> DuesRate:
    """A new monthly amount for a plan from the first day of a coming month. Months already due keep
    the rate that was in force then, so the date may not be in the past (that would rewrite arrears)."""
    plan = (await session.execute(select(DuesPlan).where(DuesPlan.code == plan_code))).scalar_one_or_none()
    if plan is None:
        raise NotFound(_("No dues plan %(code)s.", code=plan_code), field="plan")
    if isinstance(monthly_minor, bool) or not isinstance(monthly_minor, int) or not 0 <= monthly_minor <= MAX_CASH_PAYMENT_MINOR:
        raise InvalidAmount(_("The amount must be a whole number of paise."), field="monthly_minor")
    if effective_from.day != 1 or month_index(effective_from) <= month_index(today):
        raise InvalidInput(_("A new rate starts on the first day of a coming month."), field="effective_from")
    if (await session.execute(select(DuesRate.id).where(DuesRate.plan_id == plan.id,
                                                        DuesRate.effective_from == effective_from))).first():
        raise Conflict(_("This plan already has a rate from that day."), field="effective_from")
    rate = DuesRate(plan_id=plan.id, monthly_minor=monthly_minor, currency=currency, effective_from=effective_from)
    session.add(rate)
    await session.flush()
    await audit.record(session, action="dues.rate_changed", actor=actor, target_type="dues_plan", target_id=plan.code,
                       detail={"monthly_minor": monthly_minor, "currency": currency,
                               "effective_from": effective_from.isoformat()})
    return rate


async def member_payments(session: AsyncSession, member_id: int) -> list[CashPayment]:
    return list((await session.execute(
        select(CashPayment).where(CashPayment.member_id == member_id)
        .order_by(CashPayment.created_at.desc(), CashPayment.id.desc()))).scalars())


# ---------------------------------------------------------------- cash


def _check_amount(amount: object, currency: str) -> Money:
    if not isinstance(amount, Money):
        raise InvalidAmount(_("The amount must be a whole number of paise."), field="amount_minor")
    if amount.currency != currency:
        raise CurrencyMismatch(_("Dues are paid in %(currency)s.", currency=currency), field="currency")
    if amount.amount_minor <= 0:
        raise InvalidAmount(_("The amount must be more than zero."), field="amount_minor")
    if amount.amount_minor > MAX_CASH_PAYMENT_MINOR:
        raise InvalidAmount(_("The amount is too large for one cash payment."), field="amount_minor")
    return amount


def check_receipt_no(receipt_no: object) -> str:
    if isinstance(receipt_no, int) and not isinstance(receipt_no, bool):
        receipt_no = str(receipt_no)
    if not isinstance(receipt_no, str) or not receipt_no.strip() or len(receipt_no.strip()) > MAX_RECEIPT_LENGTH:
        raise InvalidInput(_("A receipt number is required (at most %(count)d characters).",
                             count=MAX_RECEIPT_LENGTH), field="receipt_no")
    return receipt_no.strip()


def check_months(months: object) -> int | None:
    if months is None:
        return None
    if isinstance(months, bool) or not isinstance(months, int) or not 1 <= months <= MAX_MONTHS:
        raise InvalidInput(_("Months must be a whole number from 1 to %(count)d.", count=MAX_MONTHS), field="months")
    return months


async def _receipt_used(session: AsyncSession, collector_id: int, receipt_no: str) -> bool:
    return (await session.execute(select(CashPayment.id).where(
        CashPayment.collector_user_id == collector_id, CashPayment.receipt_no == receipt_no))).first() is not None


def _reused(receipt_no: str) -> Conflict:
    return Conflict(_("Receipt number %(receipt_no)s was already used in your receipt book.", receipt_no=receipt_no),
                    field="receipt_no")


@dataclass(frozen=True)
class PaymentRequest:
    """One cash payment to record, as `record_cash_payment` takes it."""
    member_no: object
    amount: object
    receipt_no: object
    collector: Principal
    months: object = None
    currency: str = DEFAULT_CURRENCY
    today: dt.date | None = None
    language: str | None = None  # of the caller's errors, when they are made in another task (dues.batch)


def speaking(request: PaymentRequest):
    """A request's errors in its caller's language (a batch is recorded in the writer task's context)."""
    return i18n.using(request.language) if request.language else contextlib.nullcontext()


@dataclass
class PaymentOutcome:
    """What became of one request of a batch: its payment (with the member and the entry), or its error."""
    request: PaymentRequest
    payment: CashPayment | None = None
    member: Member | None = None
    entry_id: str | None = None
    error: UnionError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Pending:
    outcome: PaymentOutcome
    amount: Money
    receipt_no: str
    months: int | None
    member: Member | None = None
    fee: Money | None = None  # the joining fee of the member's plan

    @property
    def collector_id(self) -> int:
        return self.outcome.request.collector.user.id

    @property
    def key(self) -> str:
        """The idempotency key of the payment's entry: the collector's receipt."""
        return f"cash:{self.collector_id}:{self.receipt_no}"

    @property
    def cash_account(self) -> str:
        return f"{COLLECTOR_CASH_PREFIX}{int(self.collector_id)}"


async def record_cash_payment(*, session: AsyncSession, member_no: object, amount: Money, receipt_no: object,
                              collector: Principal, months: object = None, currency: str = DEFAULT_CURRENCY,
                              today: dt.date | None = None) -> CashPayment:
    """Record cash a collector took: Dr cash:collector:<id> / Cr dues_income, and the payment row.

    Everything is checked before anything is written; a receipt number the collector already
    used is a Conflict (409) and posts nothing. Flushes, never commits. The batch of one of
    `record_cash_payments`."""
    request = PaymentRequest(member_no=member_no, amount=amount, receipt_no=receipt_no, collector=collector,
                             months=months, currency=currency, today=today)
    try:
        (outcome,) = await record_cash_payments(session, [request])
    except IntegrityError:
        # A concurrent request with the same receipt committed first (the receipt book's unique constraint).
        raise _reused(check_receipt_no(receipt_no)) from None
    if outcome.error is not None:
        raise outcome.error
    return outcome.payment


def _check_request(request: PaymentRequest) -> _Pending:
    """The checks that need no database, in record_cash_payment's order."""
    amount = _check_amount(request.amount, request.currency)
    receipt_no = check_receipt_no(request.receipt_no)
    months = check_months(request.months)
    if not isinstance(request.member_no, str) or not request.member_no.strip():
        raise InvalidInput(_("A member number is required."), field="member_no")
    return _Pending(PaymentOutcome(request), amount, receipt_no, months)


@dataclass(frozen=True)
class _Posted:
    """An entry already posted under a payment's idempotency key, with its payment if it has one."""
    entry_id: str
    content_hash: str
    payment_id: int | None


def _with_members(pending: list[_Pending], rows) -> list[_Pending]:
    """The requests whose member was found and may be paid for by their collector (rows of the members
    query); the others fail as members.get_member does: unknown and not allowed look alike, so a
    collector cannot learn that a member exists in another branch."""
    found = {row.Member.member_no: row for row in rows}
    for item in pending:
        request = item.outcome.request
        row = found.get(request.member_no.strip().upper())
        if row is None or not can_see_member(request.collector, row.Member) or not request.collector.has(
                Role.collector, row.Member.branch_id):
            with speaking(request):
                item.outcome.error = NotFound(_("No member with that number."), field="member_no")
        else:
            item.member, item.fee = row.Member, joining.fee_of(row)
    return [item for item in pending if item.outcome.error is None]


async def _lock_heads(session: AsyncSession, conn, queries: _BatchQueries, pending: list[_Pending]):
    """The ledger head (and the audit head) locked, with the accounts the entries post to, in one
    statement: (the head row, accounts by code). Creates the chart and collectors' cash accounts on
    their first payment."""
    codes = {code for code, _, _ in STANDARD_ACCOUNTS} | {item.cash_account for item in pending}
    params = {"codes": list(codes), "n": len(pending)}
    rows = (await conn.execute(queries.head, params)).all()
    if {row.code for row in rows} != codes:
        for currency in sorted({item.amount.currency for item in pending}):
            await ensure_chart_and_cash(
                session, sorted({item.collector_id for item in pending if item.amount.currency == currency}), currency)
        rows = (await conn.execute(queries.head, params)).all()
    return rows[0], {row.code: row for row in rows}


@dataclass(frozen=True)
class _BatchQueries:
    members: object
    head: object
    receipts: object


@functools.cache
def _batch_queries(sqlite: bool) -> _BatchQueries:
    """The look-ups of record_cash_payments, built once (building them costs more than running them). A
    list parameter is an array on PostgreSQL (`= ANY(:list)`: one SQL text for any length, nothing to
    render per call) and an expanding IN on SQLite."""

    def one_of(column, name: str):
        if sqlite:
            return column.in_(bindparam(name, expanding=True))
        return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))

    # Members with their plan's joining fee (without a dues account a member is on the standard plan).
    standard = select(DuesPlan.id).where(DuesPlan.code == STANDARD_PLAN).scalar_subquery()
    members = (select(Member, DuesPlan.joining_fee_minor, DuesPlan.joining_fee_currency)
               .outerjoin(DuesAccount, DuesAccount.member_id == Member.id)
               .outerjoin(DuesPlan, DuesPlan.id == func.coalesce(DuesAccount.plan_id, standard))
               .where(one_of(Member.member_no, "numbers")))
    # The ledger head, locked, with the accounts the entries post to.
    columns = [LedgerHead.last_seq, LedgerHead.last_hash, LedgerAccount.id, LedgerAccount.code, LedgerAccount.currency]
    # The audit head comes along (the payments' audit events chain after it), with the payments' ids: they
    # are named in the audit events, whose hashes cover them.
    columns.append(AuditHead.last_hash.label("audit_hash"))
    if sqlite:
        # The transaction holds SQLite's write lock (BEGIN IMMEDIATE): no FOR UPDATE. SQLite cannot say how a
        # multi-row INSERT ... RETURNING numbered its rows, so the newest payment and audit ids come: the rows
        # are numbered here (max + 1, ... as SQLite would) and go in with one INSERT each.
        columns += [select(func.max(CashPayment.id)).scalar_subquery().label("last_payment_id"),
                    select(func.max(AuditEvent.id)).scalar_subquery().label("last_audit_id")]
    else:
        # Both heads locked in one statement; `n` payment ids taken from their sequence (unused ones are gaps).
        columns.append(select(func.array_agg(func.nextval(func.pg_get_serial_sequence("cash_payment", "id"))))
                       .select_from(func.generate_series(1, bindparam("n"))).scalar_subquery().label("payment_ids"))
    head = (select(*columns).select_from(LedgerHead)
            .join(LedgerAccount, one_of(LedgerAccount.code, "codes"))
            .join(AuditHead, AuditHead.id == 1).where(LedgerHead.id == 1))
    if not sqlite:
        head = head.with_for_update(of=[LedgerHead.__table__, AuditHead.__table__])
    # Receipts already used, and entries already posted under the keys (with their payment, if any).
    used_receipts = select(
        literal("receipt").label("what"), CashPayment.collector_user_id, CashPayment.receipt_no.label("text"),
        null().label("entry_id"), null().label("content_hash"), null().label("payment_id")).where(
        one_of(CashPayment.collector_user_id, "collectors"), one_of(CashPayment.receipt_no, "receipts"))
    posted_keys = select(
        literal("key"), null(), JournalEntry.idempotency_key, JournalEntry.id, JournalEntry.content_hash,
        CashPayment.id).outerjoin(CashPayment, CashPayment.entry_id == JournalEntry.id).where(
        one_of(JournalEntry.idempotency_key, "keys"))
    if sqlite:
        return _BatchQueries(members, head, union_all(used_receipts, posted_keys))
    # PostgreSQL reads the members after the heads are locked, with the receipts already used and the
    # entries already posted under the keys as two aggregates on every row: one statement fewer.
    used = select(func.array_agg(func.concat(CashPayment.collector_user_id, ":", CashPayment.receipt_no))) \
        .where(one_of(CashPayment.collector_user_id, "collectors"), one_of(CashPayment.receipt_no, "receipts")) \
        .scalar_subquery()
    posted = select(func.json_agg(func.json_build_array(JournalEntry.idempotency_key, JournalEntry.id,
                                                        JournalEntry.content_hash, CashPayment.id))) \
        .select_from(JournalEntry).outerjoin(CashPayment, CashPayment.entry_id == JournalEntry.id) \
        .where(one_of(JournalEntry.idempotency_key, "keys")).scalar_subquery()
    return _BatchQueries(members.add_columns(used.label("used_receipts"), posted.label("posted_keys")), head, None)


async def record_cash_payments(session: AsyncSession, requests: Sequence[PaymentRequest]) -> list[PaymentOutcome]:
    """Record many cash payments in the caller's transaction, with a constant number of statements.

    Each request gets its own outcome: its payment, or the error `record_cash_payment` would raise
    for it had the requests been recorded one after the other in this order (a receipt number used
    twice in the batch is a Conflict for the second). The good ones are written: one journal entry
    each, chained in order with the ledger head locked once, their postings, payments and audit
    events in a few multi-row statements. Flushes, never commits. An unexpected database error (a
    race with another process, a closed period) raises and leaves the transaction to be rolled back;
    the caller may then retry the requests one by one."""
    outcomes = [PaymentOutcome(request) for request in requests]
    pending: list[_Pending] = []
    for n, request in enumerate(requests):
        try:
            with speaking(request):
                item = _check_request(request)
        except UnionError as exc:
            outcomes[n].error = exc
            continue
        item.outcome = outcomes[n]
        pending.append(item)
    if not pending:
        return outcomes

    def fee_for(item: _Pending) -> Money | None:
        return item.fee if item.fee is not None and item.fee.currency == item.amount.currency else None

    sqlite = session.get_bind().dialect.name == "sqlite"
    queries = _batch_queries(sqlite)
    conn = await session.connection()  # plain rows: Core, not the ORM's execute, where no entity is read
    members = {"numbers": list({item.outcome.request.member_no.strip().upper() for item in pending})}
    seen = {"collectors": sorted({item.collector_id for item in pending}),
            "receipts": sorted({item.receipt_no for item in pending}),
            "keys": sorted({item.key for item in pending})}
    # From the heads' lock on, everything read (receipts, idempotency keys, joining fees paid) stays true
    # until we commit. Members with their plan's joining fee in one statement (members.get_member's rules).
    used: set[tuple[int, str]] = set()
    existing: dict[str, _Posted] = {}
    if sqlite:
        pending = _with_members(pending, (await session.execute(queries.members, members)).all())
        if not pending:
            return outcomes
        head, accounts = await _lock_heads(session, conn, queries, pending)
        for row in (await conn.execute(queries.receipts, seen)).all():
            if row.what == "receipt":
                used.add((row.collector_user_id, row.text))
            else:
                existing[row.text] = _Posted(row.entry_id, row.content_hash, row.payment_id)
    else:
        head, accounts = await _lock_heads(session, conn, queries, pending)
        rows = (await session.execute(queries.members, members | seen)).all()
        if rows:
            for pair in rows[0].used_receipts or []:
                collector_id, receipt_no = pair.split(":", 1)
                used.add((int(collector_id), receipt_no))
            posted = rows[0].posted_keys
            for key, entry_id, digest, payment_id in (json.loads(posted) if isinstance(posted, str) else posted
                                                      or []):
                existing[key] = _Posted(entry_id, digest, payment_id)
        pending = _with_members(pending, rows)
        if not pending:
            return outcomes
    fee_paid = await joining.joining_fees_paid(
        session, {item.member.id for item in pending if fee_for(item) is not None})

    # In request order, as if each were recorded after the ones before it.
    entries: list[PreparedEntry] = []  # the entries to post
    written: list[tuple[_Pending, str]] = []  # the payments to write, with their entry (new or already posted)
    for item in pending:
        request, member = item.outcome.request, item.member
        if (item.collector_id, item.receipt_no) in used:
            with speaking(request):
                item.outcome.error = _reused(item.receipt_no)
            continue
        fee = fee_for(item)
        with speaking(request):
            try:
                lines = joining.fee_lines(fee=fee, paid_minor=fee_paid.get(member.id) if fee else None,
                                          cash_account=item.cash_account, amount=item.amount)
                key = item.key
                prepared = prepare_entry(
                    key=key, kind=EntryKind.cash_payment, lines=lines,
                    description=f"Cash dues from member {member.member_no}, receipt {item.receipt_no}",
                    effective_date=request.today or dt.date.today(), actor=request.collector.user,
                    member_id=member.id)
                if key in existing:
                    # A concurrent request with the same receipt committed while we waited for the ledger head.
                    row = existing[key]
                    if row.content_hash != prepared.row["content_hash"]:
                        raise IdempotencyConflict(f"idempotency key {key!r} was used for a different entry",
                                                  field="key")
                    if row.payment_id is not None:
                        raise _reused(item.receipt_no)
                    written.append((item, row.entry_id))  # its entry without its payment: write the payment
                    used.add((item.collector_id, item.receipt_no))
                    continue
                mismatch = currency_mismatch(prepared, accounts)
                if mismatch is not None:
                    raise mismatch
            except UnionError as exc:
                item.outcome.error = exc
                continue
        used.add((item.collector_id, item.receipt_no))
        if fee is not None:
            fee_paid[member.id] = fee_paid.get(member.id, 0) - sum(
                amount for code, _cur, amount in prepared.raw if code == joining.JOINING_FEE_ACCOUNT)
        entries.append(prepared)
        written.append((item, prepared.id))
    if not written:
        return outcomes

    now = utcnow()
    first_id = (head.last_payment_id or 0) + 1 if sqlite else 0
    ids = range(first_id, first_id + len(written)) if sqlite else head.payment_ids
    rows = [{"id": payment_id, "member_id": item.member.id, "collector_user_id": item.collector_id,
             "amount_minor": item.amount.amount_minor, "currency": item.amount.currency, "months": item.months,
             "receipt_no": item.receipt_no, "entry_id": entry_id, "created_at": now}
            for (item, entry_id), payment_id in zip(written, ids)]
    events = [{"action": "dues.cash_payment", "actor": item.outcome.request.collector.user, "target_type": "member",
               "target_id": item.member.member_no,
               "detail": {"payment_id": row["id"], "amount_minor": row["amount_minor"], "currency": row["currency"],
                          "receipt_no": row["receipt_no"], "entry_id": row["entry_id"]}}
              for (item, _entry_id), row in zip(written, rows)]
    if sqlite:
        await append_entries(session, (head.last_seq, head.last_hash), entries, accounts)
        # Core statements on the session's connection: the ORM's unit of work costs more than the SQL here.
        await conn.execute(insert(CashPayment.__table__), rows)
        await audit.record_many(session, events, head=(head.audit_hash, head.last_audit_id))
    else:
        await _write_postgresql(session, head, entries, accounts, rows, events)
    for (item, entry_id), row in zip(written, rows):
        item.outcome.payment, item.outcome.member, item.outcome.entry_id = CashPayment(**row), item.member, entry_id
    return outcomes


_ENTRY_COLUMNS = tuple(JournalEntry.__table__.columns.keys())
_PAYMENT_COLUMNS = tuple(CashPayment.__table__.columns.keys())


@functools.cache
def _postgresql_write():
    """Entries, payments and audit events, and both heads moved, in one statement (union.pgbulk). The audit
    events are inserted in chain order, so their serial ids follow it (verify_chain walks by id); the
    statement returns their hashes in id order to prove it."""
    entries = pgbulk.unnest_insert(JournalEntry.__table__, _ENTRY_COLUMNS, name="e")
    payments = pgbulk.unnest_insert(CashPayment.__table__, _PAYMENT_COLUMNS, name="p")
    events = pgbulk.unnest_insert(AuditEvent.__table__, audit.EVENT_COLUMNS, name="a", ordered=True)
    return text(
        f"WITH e AS ({entries}), p AS ({payments}), a AS ({events} RETURNING id, hash), "
        "l AS (UPDATE ledger_head SET last_seq = :last_seq, last_hash = :last_hash WHERE id = 1) "
        "UPDATE audithead SET last_id = (SELECT max(id) FROM a), last_hash = :audit_hash WHERE id = 1 "
        "RETURNING (SELECT array_agg(hash ORDER BY id) FROM a)")


async def _write_postgresql(session: AsyncSession, head, entries: list[PreparedEntry], accounts: dict,
                            payments: list[dict], events: list[dict]) -> None:
    """record_cash_payments' writes on PostgreSQL in two statements: the postings first (each entry's
    balance trigger must see them), then everything else (`_postgresql_write`)."""
    last_seq, last_hash = chain_entries(head.last_seq, head.last_hash, entries)
    audit_rows, audit_hash = audit.chain_rows(events, head.audit_hash)
    conn = await session.connection()
    if entries:
        await conn.execute(insert(Posting.__table__), posting_rows(entries, accounts))
    with period_closed_refusal(entries):
        hashes = (await conn.execute(_postgresql_write(), {
            **pgbulk.unnest_params("e", _ENTRY_COLUMNS, (entry.row for entry in entries)),
            **pgbulk.unnest_params("p", _PAYMENT_COLUMNS, payments),
            **pgbulk.unnest_params("a", audit.EVENT_COLUMNS, audit_rows),
            "last_seq": last_seq, "last_hash": last_hash, "audit_hash": audit_hash})).scalar_one()
    if hashes != [row["hash"] for row in audit_rows]:
        # verify_chain walks by id: a chain numbered out of order must not be committed.
        raise RuntimeError("audit events were numbered out of their chain order")
    # Written behind the ORM's back: heads loaded earlier in this session must be read again.
    for model in (LedgerHead, AuditHead):
        loaded = session.identity_map.get(identity_key(model, 1))
        if loaded is not None:
            session.expire(loaded)


async def get_payment(session: AsyncSession, *, payment_id: int, principal: Principal) -> tuple[CashPayment, Member]:
    """A payment the principal may see: the collector who took it, staff who may see the member,
    the member themself, or a treasurer. Otherwise it does not exist (404)."""
    payment = await session.get(CashPayment, payment_id)
    member = await session.get(Member, payment.member_id) if payment else None
    if payment is None or member is None or not (
            payment.collector_user_id == principal.user.id or principal.has(Role.treasurer)
            or can_see_member(principal, member)):
        raise NotFound(_("No such receipt."), field="id")
    return payment, member
