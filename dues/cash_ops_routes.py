"""Routes of cash operations: collection sheets (collector), cash hand-overs (collector
and treasurer), dues holidays and hardship waivers (office bearer, on the member's
page and as POST /api/members/{member_no}/waivers), and the member's opt-out of dues
messages. Thin: parse, call one service, render; the route owns the transaction."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from dues import cash_ops_messages as messages
from dues import handover as handovers
from dues import sheets as sheet_service
from dues import waivers as waiver_service
from dues.errors import InvalidAmount
from dues.money import Money, format_money, parse_money
from union import audit, jobs, members
from union.errors import InvalidInput, UnionError
from union.i18n import _
from union.models import Member, User
from union.web import read_json, render, services


def _today() -> dt.date:
    return dt.date.today()


def _currency(request: Request) -> str:
    return services(request).settings.default_currency


def _money(amount_minor: int, currency: str) -> str:
    return format_money(Money(amount_minor, currency))


# --- Collection sheets ----------------------------------------------------------------

def _row_view(row) -> dict:
    return {"line": row.line, "values": row.values, "errors": row.errors, "member_name": row.member_name,
            "amount": format_money(row.amount) if row.amount else row.values.get("amount", "")}


async def sheets_page(request: Request) -> Response:
    """Upload a collection sheet (CSV), or see the last ones."""
    principal = request.state.principal
    error = None
    status = 200
    if request.method == "POST":
        form = await request.form()
        upload = form.get("file")
        try:
            if not isinstance(upload, UploadFile):
                raise InvalidInput(_("Choose the CSV file of your collection sheet."), field="file")
            data = await upload.read(sheet_service.MAX_SHEET_BYTES + 1)
            async with services(request).sessions() as db:
                sheet = await sheet_service.upload(db, collector=principal, data=data, filename=upload.filename or "")
                await db.commit()
            return RedirectResponse(f"/dues/sheets/{sheet.id}", status_code=303)
        except UnionError as exc:
            error, status = exc.message, exc.status_code
    async with services(request).reader() as db:
        recent = await sheet_service.recent_sheets(db, principal.user.id)
    return render(request, "dues/sheets.html", {"error": error, "recent": recent,
                                                 "max_kb": sheet_service.MAX_SHEET_BYTES // 1024,
                                                 "max_rows": sheet_service.MAX_SHEET_ROWS}, status_code=status)


async def _preview(request: Request, sheet, rows, *, error: str | None = None, status: int = 200) -> Response:
    return render(request, "dues/sheet_preview.html", {
        "sheet": sheet, "rows": [_row_view(r) for r in rows], "error": error,
        "ok": all(r.ok for r in rows), "applied": sheet.status == sheet_service.SheetStatus.applied,
        "total": format_money(sum((r.amount for r in rows if r.amount), Money(0, _currency(request))))},
        status_code=status)


async def sheet_preview(request: Request) -> Response:
    principal = request.state.principal
    async with services(request).reader() as db:
        sheet = await sheet_service.get_sheet(db, sheet_id=request.path_params["sheet_id"], collector=principal)
        rows = await sheet_service.check_rows(db, content=sheet.content, collector=principal,
                                              currency=_currency(request), today=_today())
    if sheet.status == sheet_service.SheetStatus.applied:
        for row in rows:  # its receipt numbers are used by its own payments now
            row.errors = []
    return await _preview(request, sheet, rows)


async def sheet_apply(request: Request) -> Response:
    principal = request.state.principal
    form = await request.form()
    svc = services(request)
    async with svc.sessions() as db:
        try:
            sheet, paid = await sheet_service.apply(
                db, sheet_id=request.path_params["sheet_id"], presented_hash=form.get("content_hash"),
                collector=principal, currency=_currency(request), today=_today())
            works = await messages.schedule_receipt_sms(db, paid)
        except sheet_service.SheetInvalid as exc:
            await db.rollback()
            sheet = await sheet_service.get_sheet(db, sheet_id=request.path_params["sheet_id"], collector=principal)
            return await _preview(request, sheet, exc.rows, error=exc.message, status=exc.status_code)
        except UnionError:
            await db.rollback()
            raise
        await jobs.commit_and_nudge(db, svc.jobs, works)
    return RedirectResponse(f"/dues/sheets/{sheet.id}?applied=1", status_code=303)


# --- Cash hand-overs ------------------------------------------------------------------

def _counted(text: str, currency: str) -> Money:
    try:
        return parse_money(text or "", currency)
    except InvalidAmount:
        raise InvalidAmount(_("Enter the amount you counted, for example 1500 or 1500.50."), field="counted") from None


async def _names(db, ids) -> dict[int, str]:
    rows = await db.execute(select(User.id, User.display_name, User.username).where(User.id.in_(set(ids) or {-1})))
    return {i: d or u for i, d, u in rows}


def _handover_view(h, names) -> dict:
    return {"h": h, "collector": names.get(h.collector_user_id, ""), "treasurer": names.get(h.treasurer_user_id, ""),
            "expected": _money(h.expected_minor, h.currency), "counted": _money(h.counted_minor, h.currency),
            "difference": _money(h.expected_minor - h.counted_minor, h.currency),
            "short": h.expected_minor > h.counted_minor, "over": h.expected_minor < h.counted_minor}


async def handover_page(request: Request) -> Response:
    """The collector's page: cash held, hand it over to a treasurer, cancel an open hand-over."""
    principal = request.state.principal
    svc = services(request)
    values = {"treasurer": "", "counted": ""}
    error, status = None, 200
    if request.method == "POST":
        form = await request.form()
        values = {k: (form.get(k) or "").strip() for k in values}
        try:
            counted = _counted(values["counted"], _currency(request))
            async with svc.sessions() as db:
                await handovers.propose(db, collector=principal, treasurer_username=values["treasurer"],
                                        counted=counted, currency=_currency(request))
                await db.commit()
            return RedirectResponse("/dues/handover?proposed=1", status_code=303)
        except UnionError as exc:
            error, status = exc.message, exc.status_code
    async with svc.reader() as db:
        held = await handovers.cash_held(db, principal.user.id, currency=_currency(request))
        mine = await handovers.collector_handovers(db, principal.user.id)
        treasurers = await handovers.treasurers(db, exclude_user_id=principal.user.id)
        names = await _names(db, [h.treasurer_user_id for h in mine] + [principal.user.id])
    return render(request, "dues/handover.html", {
        "held": format_money(held), "handovers": [_handover_view(h, names) for h in mine],
        "treasurers": treasurers, "values": values, "error": error,
        "proposed": request.query_params.get("proposed") == "1"}, status_code=status)


async def handover_cancel(request: Request) -> Response:
    async with services(request).sessions() as db:
        await handovers.cancel(db, handover_id=request.path_params["handover_id"], collector=request.state.principal)
        await db.commit()
    return RedirectResponse("/dues/handover", status_code=303)


async def _treasurer_page(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    principal = request.state.principal
    async with services(request).reader() as db:
        mine = await handovers.treasurer_handovers(db, principal.user.id)
        names = await _names(db, [h.collector_user_id for h in mine])
    return render(request, "dues/handovers.html", {
        "handovers": [_handover_view(h, names) for h in mine], "error": error,
        "confirmed": request.query_params.get("confirmed") == "1"}, status_code=status)


async def handovers_page(request: Request) -> Response:
    """The treasurer's page: hand-overs waiting for their count, and those done."""
    return await _treasurer_page(request)


async def handover_confirm(request: Request) -> Response:
    form = await request.form()
    try:
        counted = _counted((form.get("counted") or "").strip(), _currency(request))
        async with services(request).sessions() as db:
            await handovers.confirm(db, handover_id=request.path_params["handover_id"],
                                    treasurer=request.state.principal, counted=counted, today=_today())
            await db.commit()
    except UnionError as exc:
        return await _treasurer_page(request, error=exc.message, status=exc.status_code)
    return RedirectResponse("/dues/handovers?confirmed=1", status_code=303)


# --- Waivers and holidays -------------------------------------------------------------

async def _waivers_page(request: Request, *, values: dict | None = None, error: str | None = None,
                        status: int = 200) -> Response:
    principal = request.state.principal
    svc = services(request)
    async with svc.sessions() as db:
        member = await members.get_member(db, member_no=request.path_params["member_no"], principal=principal)
        granted = await waiver_service.member_waivers(db, member.id)
        names = await _names(db, [w.granted_by_user_id for w in granted])
        if granted:  # the reasons may tell of illness or hardship: reading them is recorded
            await audit.record(db, action="dues.waiver_reasons_read", actor=principal.user, target_type="member",
                               target_id=member.member_no, detail={"waivers": len(granted)})
        rows = [{"w": w, "reason": svc.vault.decrypt(w.reason_enc), "by": names.get(w.granted_by_user_id, ""),
                 "amount": _money(w.amount_minor, w.currency),
                 "revoke_reason": svc.vault.decrypt(w.revoke_reason_enc) if w.revoke_reason_enc else ""}
                for w in granted]
        await db.commit()
    today = _today()
    return render(request, "dues/waivers.html", {
        "member": member, "waivers": rows, "error": error,
        "values": values or {"kind": "holiday", "from_month": f"{today:%Y-%m}", "months": "1", "reason": ""},
        "max_months": waiver_service.MAX_WAIVER_MONTHS,
        "done": request.query_params.get("done", "")[:16]}, status_code=status)


async def waivers_page(request: Request) -> Response:
    """An office bearer grants a member a dues holiday or hardship waiver (with a reason)."""
    if request.method == "GET":
        return await _waivers_page(request)
    form = await request.form()
    values = {k: (form.get(k) or "").strip() for k in ("kind", "from_month", "months", "reason")}
    svc = services(request)
    try:
        async with svc.sessions() as db:
            member = await members.get_member(db, member_no=request.path_params["member_no"],
                                              principal=request.state.principal)
            await waiver_service.grant(db, member=member, kind=values["kind"], from_month=values["from_month"],
                                       months=values["months"], reason=values["reason"],
                                       principal=request.state.principal, vault=svc.vault, today=_today())
            await db.commit()
    except UnionError as exc:
        return await _waivers_page(request, values=values, error=exc.message, status=exc.status_code)
    return RedirectResponse(f"/members/{member.member_no}/waivers?done=granted", status_code=303)


async def waiver_revoke(request: Request) -> Response:
    form = await request.form()
    svc = services(request)
    try:
        async with svc.sessions() as db:
            member = await members.get_member(db, member_no=request.path_params["member_no"],
                                              principal=request.state.principal)
            await waiver_service.revoke(db, member=member, waiver_id=request.path_params["waiver_id"],
                                        reason=form.get("reason"), principal=request.state.principal,
                                        vault=svc.vault, today=_today())
            await db.commit()
    except UnionError as exc:
        return await _waivers_page(request, error=exc.message, status=exc.status_code)
    return RedirectResponse(f"/members/{member.member_no}/waivers?done=revoked", status_code=303)


def waiver_json(waiver, member: Member) -> dict:
    return {"id": waiver.id, "member_no": member.member_no, "kind": waiver.kind,
            "from_month": f"{waiver.from_month:%Y-%m}", "months": waiver.months,
            "amount_minor": waiver.amount_minor, "currency": waiver.currency, "entry_id": waiver.entry_id,
            "revoked": waiver.revoked_at is not None}


async def api_grant_waiver(request: Request) -> Response:
    data = await read_json(request)
    svc = services(request)
    async with svc.sessions() as db:
        member = await members.get_member(db, member_no=request.path_params["member_no"],
                                          principal=request.state.principal)
        waiver = await waiver_service.grant(db, member=member, kind=data.get("kind"),
                                            from_month=data.get("from_month"), months=data.get("months"),
                                            reason=data.get("reason"), principal=request.state.principal,
                                            vault=svc.vault, today=_today())
        body = waiver_json(waiver, member)
        await db.commit()
    return JSONResponse(body, status_code=201)


# --- The member's dues messages ------------------------------------------------------

async def my_messages(request: Request) -> Response:
    """The member turns dues SMS (receipts and reminders) off or on."""
    principal = request.state.principal
    form = await request.form()
    async with services(request).sessions() as db:
        member = await db.get(Member, principal.member_id)
        await messages.set_opt_out(db, member=member, opt_out=form.get("opt_out") == "1", actor=principal.user)
        await db.commit()
    return RedirectResponse("/dues/me", status_code=303)
