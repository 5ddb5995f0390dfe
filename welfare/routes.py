"""Routes of welfare: the member's "what I can claim now, and why not" page, filing
a claim (by the member, or by staff for a member who phoned in), the officers'
queue and claim page with its decisions, payouts, the welfare fund, schemes and
rules, and the committee's reports; and the JSON API (GET
/api/members/{member_no}/entitlements, DESIGN §5, and the claim steps).

Thin: parse, call one service, render. Access by role is union.policy's RULES;
access by branch is decided by union.policy's helpers inside the services. The
route owns the transaction and nudges the SMS jobs after it commits."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from dues.errors import InvalidAmount
from dues.money import Money, parse_money
from union import jobs, members
from union.errors import InvalidInput, NotFound, UnionError
from union.i18n import _
from union.models import Member, Role
from union.policy import can_decide_claim, can_see_claim
from union.web import read_json, render, services
from welfare import services as welfare
from welfare.errors import NotEligible
from welfare.models import BenefitKind, ClaimStatus, WelfareClaim, WelfareRuleVersion, WelfareScheme


def _today() -> dt.date:
    return dt.date.today()


def _grace(request: Request) -> int:
    return services(request).settings.grace_months


def _principal(request: Request):
    return request.state.principal


async def _commit(request: Request, db, works) -> None:
    await jobs.commit_and_nudge(db, services(request).jobs, works)


def _rupees(text: str, field: str, *, required: bool = True) -> int | None:
    text = (text or "").strip()
    if not text:
        if required:
            raise InvalidAmount(_("Enter the amount, for example 100 or 100.50."), field=field)
        return None
    try:
        return parse_money(text).amount_minor
    except InvalidAmount:
        raise InvalidAmount(_("Enter the amount, for example 100 or 100.50."), field=field) from None


def _int(text: str, field: str, *, default: int | None = None) -> int | None:
    text = (text or "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise InvalidInput(_("%(field)s must be a whole number.", field=field), field=field)
    return int(text)


def _entitlement_rows(found) -> list[dict]:
    return [{"code": e.scheme.code, "name": welfare.scheme_name(e.scheme), "eligible": e.result.eligible,
             "up_to": e.up_to, "amount": welfare.money_text(e.result.amount_minor or e.rule.amount_minor,
                                                             e.rule.currency),
             "reasons": [str(r) for r in e.result.reasons], "pays_nominee": e.scheme.pays_nominee}
            for e in found]


# --- JSON API ---------------------------------------------------------------------

async def api_entitlements(request: Request) -> Response:
    async with services(request).reader() as db:
        member = await members.get_member(db, member_no=request.path_params["member_no"],
                                          principal=_principal(request))
        found = await welfare.entitlements(db, member=member, on_date=_today(), grace_months=_grace(request))
    return JSONResponse({"entitlements": [e.as_json() for e in found]})


def _not_eligible_json(exc: NotEligible) -> JSONResponse:
    return JSONResponse({"error": exc.code, "message": exc.message, "field": exc.field,
                         "reasons": [str(r) for r in exc.reasons]}, status_code=exc.status_code)


async def api_file_claim(request: Request) -> Response:
    data = await read_json(request)
    claimed = data.get("claimed_minor")
    new = welfare.NewClaim(member_no=data.get("member_no"), scheme=data.get("scheme"),
                           event_date=data.get("event_date"), evidence=data.get("evidence"), claimed_minor=claimed,
                           attester_member_no=data.get("attester_member_no"), details=data.get("details"))
    svc = services(request)
    try:
        async with svc.sessions() as db:
            claim, works = await welfare.file_claim(session=db, vault=svc.vault, principal=_principal(request),
                                                    data=new, today=_today(), grace_months=_grace(request))
            body = welfare.claim_json(claim, await db.get(WelfareScheme, claim.scheme_id),
                                      await db.get(Member, claim.member_id))
            await _commit(request, db, works)
    except NotEligible as exc:
        return _not_eligible_json(exc)
    return JSONResponse(body, status_code=201)


async def api_claim(request: Request) -> Response:
    principal = _principal(request)
    svc = services(request)
    async with svc.sessions() as db:
        claim = await welfare.visible_claim(db, claim_id=request.path_params["claim_id"], principal=principal)
        body = welfare.claim_json(claim, await db.get(WelfareScheme, claim.scheme_id),
                                  await db.get(Member, claim.member_id))
        body["approvals"] = len(await welfare.claim_approvers(db, claim.id))
        body["payouts"] = [{"id": p.id, "amount_minor": p.amount_minor, "currency": p.currency, "method": p.method,
                            "reference": p.reference, "entry_id": p.entry_id, "reversed": p.reversed_at is not None}
                           for p in await welfare.claim_payouts(db, claim.id)]
        if can_see_claim(principal, claim.branch_id):
            body["details"] = await welfare.read_details(db, claim=claim, vault=svc.vault, principal=principal)
        await db.commit()
    return JSONResponse(body)


async def _api_step(request: Request, step) -> Response:
    data = await read_json(request)
    svc = services(request)
    async with svc.sessions() as db:
        result, works = await step(db, svc, data)
        is_claim = isinstance(result, WelfareClaim)
        claim = result if is_claim else await db.get(WelfareClaim, result.claim_id)
        body = welfare.claim_json(claim, await db.get(WelfareScheme, claim.scheme_id),
                                  await db.get(Member, claim.member_id))
        if not is_claim:
            body["payout"] = {"id": result.id, "amount_minor": result.amount_minor, "currency": result.currency,
                              "method": result.method, "reference": result.reference, "entry_id": result.entry_id}
            body["fund_balance_minor"] = await welfare.fund_balance(db)
        await _commit(request, db, works)
    return JSONResponse(body, status_code=201 if "payout" in body else 200)


async def api_approve(request: Request) -> Response:
    return await _api_step(request, lambda db, svc, data: welfare.approve(
        session=db, claim_id=request.path_params["claim_id"], principal=_principal(request)))


async def api_reject(request: Request) -> Response:
    return await _api_step(request, lambda db, svc, data: welfare.reject(
        session=db, vault=svc.vault, claim_id=request.path_params["claim_id"], principal=_principal(request),
        reason=data.get("reason")))


async def api_pay(request: Request) -> Response:
    return await _api_step(request, lambda db, svc, data: welfare.pay(
        session=db, claim_id=request.path_params["claim_id"], principal=_principal(request),
        method=data.get("method"), reference=data.get("reference"), today=_today()))


async def api_fund(request: Request) -> Response:
    async with services(request).reader() as db:
        balance = await welfare.fund_balance_read(db)
    return JSONResponse({"balance_minor": balance, "currency": services(request).settings.default_currency})


# --- The member's pages ---------------------------------------------------------------

async def my_welfare(request: Request) -> Response:
    principal = _principal(request)
    async with services(request).reader() as db:
        member = await db.get(Member, principal.member_id)
        if member is None:
            raise NotFound(_("No member with that number."))
        found = await welfare.entitlements(db, member=member, on_date=_today(), grace_months=_grace(request))
        claims = await welfare.member_claims(db, member.id)
    return render(request, "welfare/me.html", {
        "member": member, "entitlements": _entitlement_rows(found),
        "claims": [{"claim": c, "scheme": welfare.scheme_name(s), "status": welfare.status_label(c.status),
                    "amount": welfare.money_text(c.amount_minor, c.currency)} for c, s in claims]})


# --- Filing a claim -------------------------------------------------------------------

FORM_FIELDS = ("member_no", "scheme", "event_date", "claimed", "evidence", "attester_member_no", "details")


async def _claim_form_context(db, request: Request, member: Member | None, values: dict, error=None,
                              reasons=()) -> dict:
    schemes = await welfare.list_schemes(db)
    found = []
    if member is not None:
        found = await welfare.entitlements(db, member=member, on_date=_today(), grace_months=_grace(request))
    return {"member": member, "values": values, "error": error, "reasons": [str(r) for r in reasons],
            "schemes": [(s.code, welfare.scheme_name(s)) for s in schemes],
            "entitlements": _entitlement_rows(found),
            "evidence_kinds": [(str(k), str(label)) for k, label in welfare.EVIDENCE_LABELS.items()],
            "own": _principal(request).member_id is not None and member is not None
            and _principal(request).member_id == member.id}


async def _upload(form) -> bytes | None:
    upload = form.get("document")
    if isinstance(upload, UploadFile):
        data = await upload.read(welfare.MAX_DOCUMENT_BYTES + 1)
        return data or None
    return None


async def _file_from_form(request: Request, *, own: bool) -> Response:
    principal = _principal(request)
    svc = services(request)
    form = await request.form()
    values = {key: (form.get(key) or "").strip() if isinstance(form.get(key) or "", str) else ""
              for key in FORM_FIELDS}
    template = "welfare/claim_form.html"
    member = None
    try:
        async with svc.reader() as db:
            if own:
                member = await db.get(Member, principal.member_id)
                values["member_no"] = member.member_no if member else ""
            elif values["member_no"]:
                member = await members.get_member(db, member_no=values["member_no"], principal=principal)
        document = await _upload(form)
        claimed = None
        if values["claimed"]:
            claimed = _rupees(values["claimed"], "claimed")
        new = welfare.NewClaim(member_no=values["member_no"], scheme=values["scheme"],
                               event_date=values["event_date"], evidence=values["evidence"], claimed_minor=claimed,
                               attester_member_no=values["attester_member_no"] or None,
                               details=values["details"] or None)
        async with svc.sessions() as db:
            claim, works = await welfare.file_claim(session=db, vault=svc.vault, principal=principal, data=new,
                                                    today=_today(), grace_months=_grace(request))
            if document:
                await welfare.add_document(session=db, vault=svc.vault, claim_id=claim.id, principal=principal,
                                           data=document)
            await _commit(request, db, works)
    except UnionError as exc:
        reasons = exc.reasons if isinstance(exc, NotEligible) else ()
        async with svc.reader() as db:
            context = await _claim_form_context(db, request, member, values, exc.message, reasons)
        return render(request, template, context, status_code=exc.status_code)
    if own or can_see_claim(principal, claim.branch_id):
        return RedirectResponse(f"/welfare/claims/{claim.id}?filed=1", status_code=303)
    # A collector files for a member but does not see claims: back to the form, with the reference.
    return RedirectResponse(f"/welfare/claims/new?member_no={values['member_no']}&filed={claim.reference}",
                            status_code=303)


async def my_claim_new(request: Request) -> Response:
    if request.method == "POST":
        return await _file_from_form(request, own=True)
    async with services(request).reader() as db:
        member = await db.get(Member, _principal(request).member_id)
        values = dict.fromkeys(FORM_FIELDS, "") | {"scheme": request.query_params.get("scheme", "")[:32],
                                                   "member_no": member.member_no if member else "",
                                                   "event_date": _today().isoformat()}
        context = await _claim_form_context(db, request, member, values)
    return render(request, "welfare/claim_form.html", context)


async def claim_new(request: Request) -> Response:
    if request.method == "POST":
        return await _file_from_form(request, own=False)
    member_no = request.query_params.get("member_no", "")[:24].strip()
    values = dict.fromkeys(FORM_FIELDS, "") | {"member_no": member_no, "event_date": _today().isoformat(),
                                               "scheme": request.query_params.get("scheme", "")[:32]}
    async with services(request).reader() as db:
        member = None
        error = None
        if member_no:
            try:
                member = await members.get_member(db, member_no=member_no, principal=_principal(request))
            except NotFound as exc:
                error = exc.message
        context = await _claim_form_context(db, request, member, values, error)
    context["filed"] = request.query_params.get("filed", "")[:16]
    return render(request, "welfare/claim_form.html", context, status_code=404 if error else 200)


# --- Officers: queue and claim page ------------------------------------------------------

async def claim_list(request: Request) -> Response:
    status = request.query_params.get("status", "")
    if status not in {s.value for s in ClaimStatus}:
        status = ""
    async with services(request).reader() as db:
        rows = await welfare.claim_queue(db, principal=_principal(request), status=status or None)
    return render(request, "welfare/claims.html", {
        "status": status, "statuses": [(s.value, welfare.status_label(s)) for s in ClaimStatus],
        "rows": [{"claim": c, "member": m, "scheme": welfare.scheme_name(s), "status": welfare.status_label(c.status),
                  "amount": welfare.money_text(c.amount_minor, c.currency)} for c, m, s in rows]})


async def claim_page(request: Request, *, error: str | None = None, status_code: int = 200) -> Response:
    principal = _principal(request)
    svc = services(request)
    async with svc.sessions() as db:
        claim = await welfare.visible_claim(db, claim_id=request.path_params["claim_id"], principal=principal)
        member = await db.get(Member, claim.member_id)
        scheme = await db.get(WelfareScheme, claim.scheme_id)
        staff = can_see_claim(principal, claim.branch_id)
        details = rejection = appeal_reason = None
        if staff:
            details = await welfare.read_details(db, claim=claim, vault=svc.vault, principal=principal)
            rejection = svc.vault.decrypt(claim.rejection_reason_enc)
            appeal_reason = svc.vault.decrypt(claim.appeal_reason_enc)
        attester = await db.get(Member, claim.attester_member_id) if claim.attester_member_id else None
        context = {
            "claim": claim, "member": member, "scheme": welfare.scheme_name(scheme), "pays_nominee": scheme.pays_nominee,
            "status": welfare.status_label(claim.status), "amount": welfare.money_text(claim.amount_minor, claim.currency),
            "claimed": welfare.money_text(claim.claimed_minor, claim.currency) if claim.claimed_minor else None,
            "staff": staff, "details": details, "rejection": rejection, "appeal_reason": appeal_reason,
            "evidence": str(welfare.EVIDENCE_LABELS.get(claim.evidence_kind, claim.evidence_kind)),
            "attester": attester.member_no if attester else None,
            "approvers": await welfare.claim_approvers(db, claim.id),
            "timeline": [(e, name if staff else "", welfare.status_label(e.status))
                         for e, name in await welfare.claim_timeline(db, claim.id)],
            "payouts": [(p, welfare.money_text(p.amount_minor, p.currency)) for p in await welfare.claim_payouts(db, claim.id)],
            "documents": await welfare.claim_documents(db, claim.id) if staff else [],
            "fund_balance": welfare.money_text(await welfare.fund_balance_read(db)) if staff else None,
            "can_decide": can_decide_claim(principal, claim.branch_id),
            "is_office_bearer": principal.has(Role.office_bearer, claim.branch_id),
            "own": principal.member_id == claim.member_id,
            "filed": request.query_params.get("filed") == "1", "error": error,
        }
        await db.commit()
    return render(request, "welfare/claim.html", context, status_code=status_code)


async def _claim_step(request: Request, step) -> Response:
    svc = services(request)
    form = await request.form()
    try:
        async with svc.sessions() as db:
            _result, works = await step(db, svc, form)
            await _commit(request, db, works)
    except UnionError as exc:
        if isinstance(exc, NotFound):
            raise
        return await claim_page(request, error=exc.message, status_code=exc.status_code)
    principal = _principal(request)
    if not principal.role_names & {Role.member, Role.welfare_officer, Role.office_bearer}:
        return RedirectResponse("/welfare/claims/new", status_code=303)  # a collector has no claim pages
    return RedirectResponse(f"/welfare/claims/{request.path_params['claim_id']}", status_code=303)


async def claim_approve(request: Request) -> Response:
    return await _claim_step(request, lambda db, svc, form: welfare.approve(
        session=db, claim_id=request.path_params["claim_id"], principal=_principal(request)))


async def claim_reject(request: Request) -> Response:
    return await _claim_step(request, lambda db, svc, form: welfare.reject(
        session=db, vault=svc.vault, claim_id=request.path_params["claim_id"], principal=_principal(request),
        reason=form.get("reason")))


async def claim_pay(request: Request) -> Response:
    return await _claim_step(request, lambda db, svc, form: welfare.pay(
        session=db, claim_id=request.path_params["claim_id"], principal=_principal(request),
        method=form.get("method"), reference=form.get("reference"), today=_today()))


async def claim_appeal(request: Request) -> Response:
    return await _claim_step(request, lambda db, svc, form: welfare.appeal(
        session=db, vault=svc.vault, claim_id=request.path_params["claim_id"], principal=_principal(request),
        reason=form.get("reason")))


async def claim_appeal_decide(request: Request) -> Response:
    return await _claim_step(request, lambda db, svc, form: welfare.decide_appeal(
        session=db, claim_id=request.path_params["claim_id"], principal=_principal(request),
        overturn=form.get("decision") == "overturn"))


async def claim_withdraw(request: Request) -> Response:
    return await _claim_step(request, lambda db, svc, form: welfare.withdraw(
        session=db, claim_id=request.path_params["claim_id"], principal=_principal(request)))


async def claim_document_upload(request: Request) -> Response:
    async def step(db, svc, form):
        data = await _upload(form)
        await welfare.add_document(session=db, vault=svc.vault, claim_id=request.path_params["claim_id"],
                                   principal=_principal(request), data=data or b"")
        return None, []
    return await _claim_step(request, step)


async def claim_document(request: Request) -> Response:
    svc = services(request)
    async with svc.sessions() as db:
        document, data = await welfare.read_document(session=db, vault=svc.vault,
                                                     claim_id=request.path_params["claim_id"],
                                                     document_id=request.path_params["document_id"],
                                                     principal=_principal(request))
        await db.commit()
    extension = {"application/pdf": "pdf", "image/jpeg": "jpg", "image/png": "png"}[document.content_type]
    return Response(data, media_type=document.content_type, headers={
        "Content-Disposition": f'attachment; filename="document-{document.id}.{extension}"'})


async def payout_reverse(request: Request) -> Response:
    svc = services(request)
    form = await request.form()
    async with svc.sessions() as db:
        payout = await welfare.reverse_payout(session=db, payout_id=request.path_params["payout_id"],
                                              principal=_principal(request), reason=form.get("reason"),
                                              today=_today())
        claim_id = payout.claim_id
        await db.commit()
    return RedirectResponse(f"/welfare/claims/{claim_id}", status_code=303)


# --- Reports, schemes and the fund ---------------------------------------------------

async def reports(request: Request) -> Response:
    year = _int(request.query_params.get("year", ""), "year", default=_today().year)
    if not 2000 <= year <= 2100:
        year = _today().year
    async with services(request).reader() as db:
        report = await welfare.committee_report(db, principal=_principal(request), year=year)
    for row in report["budgets"]:
        row["paid"] = welfare.money_text(row["paid_minor"], row["currency"])
        row["budget"] = welfare.money_text(row["budget_minor"], row["currency"]) if row["budget_minor"] else None
        row["percent"] = round(100 * row["paid_minor"] / row["budget_minor"]) if row["budget_minor"] else None
    for row in report["counts"]:
        row["status_label"] = welfare.status_label(row["status"])
        row["amount"] = welfare.money_text(row["amount_minor"])
    return render(request, "welfare/reports.html", {"report": report})


RULE_FIELDS = ("effective_from", "min_membership_months", "min_paid_months", "waiting_days", "benefit_kind", "amount",
               "max_claims_per_year", "yearly_budget", "approvals_required", "approval_threshold",
               "approvals_above_threshold")


def _rules_from_form(form) -> welfare.RuleInput:
    text = {key: (form.get(key) or "").strip() for key in RULE_FIELDS}
    return welfare.RuleInput(
        effective_from=welfare.parse_date(text["effective_from"], "effective_from"),
        min_membership_months=_int(text["min_membership_months"], "min_membership_months", default=0),
        min_paid_months=_int(text["min_paid_months"], "min_paid_months", default=0),
        waiting_days=_int(text["waiting_days"], "waiting_days", default=0),
        benefit_kind=text["benefit_kind"] or BenefitKind.fixed, amount_minor=_rupees(text["amount"], "amount"),
        max_claims_per_year=_int(text["max_claims_per_year"], "max_claims_per_year"),
        yearly_budget_minor=_rupees(text["yearly_budget"], "yearly_budget", required=False),
        evidence=tuple(form.getlist("evidence")),
        approvals_required=_int(text["approvals_required"], "approvals_required", default=1),
        approval_threshold_minor=_rupees(text["approval_threshold"], "approval_threshold", required=False) or 300000,
        approvals_above_threshold=_int(text["approvals_above_threshold"], "approvals_above_threshold", default=2))


async def _schemes_context(db) -> list[dict]:
    rows = []
    for scheme in await welfare.list_schemes(db, active_only=False):
        versions = list((await db.execute(
            select(WelfareRuleVersion).where(WelfareRuleVersion.scheme_id == scheme.id)
            .order_by(WelfareRuleVersion.effective_from.desc()))).scalars())
        rows.append({"scheme": scheme, "name": welfare.scheme_name(scheme), "versions": [
            {"rv": rv, "amount": welfare.money_text(rv.amount_minor, rv.currency),
             "budget": welfare.money_text(rv.yearly_budget_minor, rv.currency) if rv.yearly_budget_minor else None,
             "evidence": [str(welfare.EVIDENCE_LABELS.get(e, e)) for e in rv.evidence.split()]}
            for rv in versions]})
    return rows


async def schemes_page(request: Request) -> Response:
    svc = services(request)
    error = None
    status_code = 200
    values = {}
    if request.method == "POST":
        form = await request.form()
        values = {key: (form.get(key) or "").strip() for key in ("code", "name", *RULE_FIELDS)}
        target = (form.get("scheme") or "").strip()
        try:
            rules = _rules_from_form(form)
            async with svc.sessions() as db:
                if target:
                    scheme = await welfare.scheme_by_code(db, target)
                    await welfare.add_rule_version(db, scheme=scheme, data=rules, actor=_principal(request))
                else:
                    await welfare.create_scheme(db, code=values["code"], name=values["name"],
                                                pays_nominee=form.get("pays_nominee") == "1", rules=rules,
                                                actor=_principal(request))
                await db.commit()
            return RedirectResponse("/welfare/schemes?saved=1", status_code=303)
        except UnionError as exc:
            error, status_code = exc.message, exc.status_code
    async with svc.reader() as db:
        schemes = await _schemes_context(db)
    return render(request, "welfare/schemes.html", {
        "schemes": schemes, "error": error, "values": values, "saved": request.query_params.get("saved") == "1",
        "evidence_kinds": [(str(k), str(label)) for k, label in welfare.EVIDENCE_LABELS.items()],
        "can_edit": _principal(request).has(Role.office_bearer), "today": _today().isoformat()},
        status_code=status_code)


async def fund_page(request: Request) -> Response:
    svc = services(request)
    error = None
    status_code = 200
    if request.method == "POST":
        form = await request.form()
        try:
            amount = _rupees(form.get("amount") or "", "amount")
            async with svc.sessions() as db:
                await welfare.allocate_to_fund(session=db, principal=_principal(request),
                                               amount=Money(amount, svc.settings.default_currency),
                                               source=(form.get("source") or "").strip(), today=_today(),
                                               note=form.get("note") or "",
                                               key=f"welfare-allocation:{(form.get('once') or '')[:64]}"
                                               if form.get("once") else None)
                await db.commit()
            return RedirectResponse("/welfare/fund?saved=1", status_code=303)
        except UnionError as exc:
            error, status_code = exc.message, exc.status_code
    async with svc.reader() as db:
        balance = await welfare.fund_balance_read(db)
    return render(request, "welfare/fund.html", {
        "balance": welfare.money_text(balance), "error": error, "saved": request.query_params.get("saved") == "1",
        "sources": [("bank", _("Bank account")), ("cash:office", _("Cash in the office safe")),
                    ("general_fund", _("General fund"))], "once": secrets.token_urlsafe(12)},
        status_code=status_code)
