"""Collection sheets: cash a collector took offline, uploaded as a CSV, previewed with
every row checked, then applied all or nothing.

The CSV has a header row; columns (any order, case-insensitive):
`member_no`, `amount` (rupees, "100" or "100.50"), `receipt_no` (required);
`months`, `date` (YYYY-MM-DD, the day the cash was taken; default today) and
`currency` (must be the union's currency) optional.

The upload is stored server-side (`collection_sheet`, with the SHA-256 of its
content) and the preview's Apply button names the sheet and that hash: what is
applied is exactly what was previewed, and a sheet is applied once (a conditional
status change). Applying re-checks every row inside the transaction and posts them
all in one batch through `dues.services.record_cash_payments` (each row gets the
error `record_cash_payment` would give it); any error rolls everything back and
the errors are shown per row. Nothing is ever half-applied.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dues import services as dues
from dues.cash_ops_models import CollectionSheet, SheetStatus
from dues.errors import DuesError, InvalidAmount
from dues.money import Money, parse_money
from union import audit, members
from union.errors import Conflict, InvalidInput, NotFound, UnionError
from union.i18n import _
from union.models import Member, Role, utcnow
from union.policy import Principal

MAX_SHEET_BYTES = 256 * 1024
MAX_SHEET_ROWS = 500
MAX_BACKDATE_DAYS = 92
REQUIRED = ("member_no", "amount", "receipt_no")
OPTIONAL = ("months", "date", "currency")


class SheetInvalid(DuesError):
    """Raised when a collection sheet has rows with errors: nothing was posted. `rows` holds every row
    with its errors, for the preview."""

    status_code = 422
    code = "invalid_sheet"

    def __init__(self, message: str, rows: list[SheetRow]):
        super().__init__(message)
        self.rows = rows


@dataclass
class SheetRow:
    line: int  # line number in the file (the header is line 1)
    values: dict[str, str]
    errors: list[str] = field(default_factory=list)
    amount: Money | None = None
    months: int | None = None
    day: dt.date | None = None
    member_name: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def decode_upload(data: bytes) -> str:
    if len(data) > MAX_SHEET_BYTES:
        raise InvalidInput(_("The file is too large (at most %(count)d KB).", count=MAX_SHEET_BYTES // 1024),
                           field="file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(_("Save the sheet as CSV (UTF-8) and upload it again."), field="file") from None
    if not text.strip():
        raise InvalidInput(_("The file is empty."), field="file")
    return text


def parse_rows(content: str) -> list[SheetRow]:
    """The rows of the sheet with the checks that need no database. Raises for a bad file as a whole."""
    reader = csv.reader(io.StringIO(content))
    try:
        table = [row for row in reader]
    except csv.Error:
        raise InvalidInput(_("This is not a CSV file."), field="file") from None
    header = [h.strip().lower() for h in (table[0] if table else [])]
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise InvalidInput(_("The first row must name the columns; missing: %(columns)s.",
                             columns=", ".join(missing)), field="file")
    rows: list[SheetRow] = []
    for number, raw in enumerate(table[1:], start=2):
        if not any(cell.strip() for cell in raw):
            continue  # blank lines are not rows
        values = {name: (raw[i].strip() if i < len(raw) else "") for i, name in enumerate(header)
                  if name in REQUIRED + OPTIONAL}
        rows.append(SheetRow(line=number, values=values))
    if not rows:
        raise InvalidInput(_("The sheet has no payments."), field="file")
    if len(rows) > MAX_SHEET_ROWS:
        raise InvalidInput(_("A sheet may have at most %(count)d payments.", count=MAX_SHEET_ROWS), field="file")
    return rows


def _check_row(row: SheetRow, *, currency: str, today: dt.date) -> None:
    v = row.values
    if not v.get("member_no"):
        row.errors.append(_("A member number is required."))
    if v.get("currency") and v["currency"].upper() != currency:
        row.errors.append(_("Dues are paid in %(currency)s.", currency=currency))
    try:
        amount = parse_money(v.get("amount", ""), currency)
    except (InvalidAmount, DuesError):
        row.errors.append(_("Enter the amount, for example 100 or 100.50."))
    else:
        if amount.amount_minor <= 0:
            row.errors.append(_("The amount must be more than zero."))
        elif amount.amount_minor > dues.MAX_CASH_PAYMENT_MINOR:
            row.errors.append(_("The amount is too large for one cash payment."))
        else:
            row.amount = amount
    try:
        row.months = dues.check_months(int(v["months"]) if v.get("months", "").isdigit() else
                                       (None if not v.get("months") else -1))
    except UnionError as exc:
        row.errors.append(exc.message)
    try:
        dues.check_receipt_no(v.get("receipt_no", ""))
    except UnionError as exc:
        row.errors.append(exc.message)
    if v.get("date"):
        try:
            day = dt.date.fromisoformat(v["date"])
        except ValueError:
            row.errors.append(_("Give the date as YYYY-MM-DD."))
        else:
            if day > today:
                row.errors.append(_("The date is in the future."))
            elif (today - day).days > MAX_BACKDATE_DAYS:
                row.errors.append(_("The date is more than %(count)d days ago.", count=MAX_BACKDATE_DAYS))
            else:
                row.day = day
    else:
        row.day = today


async def check_rows(session: AsyncSession, *, content: str, collector: Principal, currency: str,
                     today: dt.date) -> list[SheetRow]:
    """Every row with every error found: format, member (unknown or another branch), receipt number
    used twice in the sheet or already used in the collector's book."""
    rows = parse_rows(content)
    seen: dict[str, int] = {}
    for row in rows:
        _check_row(row, currency=currency, today=today)
        member_no = row.values.get("member_no", "")
        if member_no:
            try:
                member = await members.get_member(session, member_no=member_no, principal=collector)
                if not collector.has(Role.collector, member.branch_id):
                    raise NotFound(_("No member with that number."), field="member_no")
                row.member_name = member.working_name
            except UnionError:
                row.errors.append(_("No member with that number."))
        receipt = row.values.get("receipt_no", "").strip()
        if receipt:
            if receipt in seen:
                row.errors.append(_("Receipt number %(receipt_no)s is also on line %(line)d of this sheet.",
                                    receipt_no=receipt, line=seen[receipt]))
            else:
                seen[receipt] = row.line
                if await dues._receipt_used(session, collector.user.id, receipt):
                    row.errors.append(_("Receipt number %(receipt_no)s was already used in your receipt book.",
                                        receipt_no=receipt))
    return rows


async def upload(session: AsyncSession, *, collector: Principal, data: bytes, filename: str) -> CollectionSheet:
    """Store an uploaded sheet for its preview (the file must at least be a CSV with the columns)."""
    content = decode_upload(data)
    parse_rows(content)
    sheet = CollectionSheet(collector_user_id=collector.user.id, filename=(filename or "")[:120],
                            content=content, content_hash=content_hash(content))
    session.add(sheet)
    await session.flush()
    return sheet


async def get_sheet(session: AsyncSession, *, sheet_id: object, collector: Principal) -> CollectionSheet:
    """The collector's own sheet; anyone else's is not found."""
    sheet = await session.get(CollectionSheet, int(sheet_id)) if str(sheet_id).isdigit() else None
    if sheet is None or sheet.collector_user_id != collector.user.id:
        raise NotFound(_("No such collection sheet."), field="id")
    return sheet


async def apply(session: AsyncSession, *, sheet_id: object, presented_hash: object, collector: Principal,
                currency: str, today: dt.date) -> tuple[CollectionSheet, list]:
    """Post every row of the sheet, or nothing: raises SheetInvalid (with the rows) on any error.

    The caller rolls back on an exception and commits otherwise. Returns the sheet and the payments,
    each with its member."""
    sheet = await get_sheet(session, sheet_id=sheet_id, collector=collector)
    if not isinstance(presented_hash, str) or presented_hash != sheet.content_hash:
        raise Conflict(_("The sheet changed since its preview. Upload it again."), field="sheet")
    if sheet.status != SheetStatus.uploaded:
        raise Conflict(_("This sheet was already applied."), field="sheet")
    rows = await check_rows(session, content=sheet.content, collector=collector, currency=currency, today=today)
    if not all(row.ok for row in rows):
        raise SheetInvalid(_("Nothing was posted: correct the rows marked below and upload the sheet again."), rows)
    # Claim the sheet first: two Apply clicks at once post it once.
    claimed = await session.execute(
        update(CollectionSheet).where(CollectionSheet.id == sheet.id, CollectionSheet.status == SheetStatus.uploaded)
        .values(status=SheetStatus.applied, applied_at=utcnow()).execution_options(synchronize_session=False))
    if claimed.rowcount != 1:
        raise Conflict(_("This sheet was already applied."), field="sheet")
    # One batch: a constant number of statements for the whole sheet (dues.services.record_cash_payments).
    requests = [dues.PaymentRequest(member_no=row.values["member_no"], amount=row.amount,
                                    receipt_no=row.values["receipt_no"], collector=collector, months=row.months,
                                    currency=currency, today=row.day) for row in rows]
    try:
        async with session.begin_nested():
            outcomes = await dues.record_cash_payments(session, requests)
    except UnionError:
        # The database refused the batch (a row dated in a closed month): row by row, to name the row.
        outcomes = []
        for request in requests:
            try:
                payment = await dues.record_cash_payment(
                    session=session, member_no=request.member_no, amount=request.amount,
                    receipt_no=request.receipt_no, collector=collector, months=request.months, currency=currency,
                    today=request.today)
                outcomes.append(dues.PaymentOutcome(request, payment=payment,
                                                    member=await session.get(Member, payment.member_id)))
            except UnionError as exc:
                outcomes.append(dues.PaymentOutcome(request, error=exc))
                break
    for row, outcome in zip(rows, outcomes):
        if outcome.error is not None:  # e.g. the first payment does not cover the joining fee
            row.errors.append(outcome.error.message)
            raise SheetInvalid(_("Nothing was posted: correct the rows marked below and upload the sheet again."),
                               rows)
    await audit.record(session, action="dues.sheet_applied", actor=collector.user, target_type="collection_sheet",
                       target_id=sheet.id, detail={"payments": len(outcomes),
                                                   "total_minor": sum(o.payment.amount_minor for o in outcomes)})
    return sheet, [(o.payment, o.member) for o in outcomes]


async def recent_sheets(session: AsyncSession, collector_id: int, limit: int = 10) -> list[CollectionSheet]:
    return list((await session.execute(select(CollectionSheet).where(CollectionSheet.collector_user_id == collector_id)
                                       .order_by(CollectionSheet.id.desc()).limit(limit))).scalars())
