"""Routes of the treasurer's books: report pages and their CSV exports, the trial
balance API (DESIGN §5), bank reconciliation, period close and checkpoints, the
tamper check, corrections, and the members' monthly summary.

Thin: parse, call the services, render. Access by role is union.policy's RULES;
the branches a treasurer may filter on come from union.policy.books_branches.
Every report view and export is audited (after the read, in its own write
transaction: SQLite has one writer), and every export names who made it and when.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from dues.money import Money, format_money
from treasury import charts, checkpoint, periods, reconcile, reports
from treasury.csvexport import csv_response
from treasury.errors import BankCsvInvalid, InvalidPeriod
from treasury.models import LedgerCheckpoint
from union import audit
from union.errors import Forbidden, InvalidInput, NotFound, UnionError
from union.i18n import _
from union.models import Branch, Member
from union.policy import books_branches
from union.web import render, services

REPORTS = ("trial-balance", "income-expenditure", "funds", "arrears", "collection", "cash-held")
MAX_UPLOAD_BYTES = 1_000_000


def _today() -> dt.date:
    return dt.date.today()


def rupees(minor: int | None, currency: str = "INR") -> str:
    return "" if minor is None else format_money(Money(int(minor), currency))


def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%"


def _report_titles() -> dict[str, str]:
    return {"trial-balance": _("Trial balance"), "income-expenditure": _("Income and expenditure by month"),
            "funds": _("Fund balances"), "arrears": _("Arrears ageing"), "collection": _("Collection rate"),
            "cash-held": _("Cash held by collectors")}


# ---------------------------------------------------------------- filters


class Filters:
    """Branch and date filters from the query string, checked against what the principal may see."""

    def __init__(self, *, branch: Branch | None, start: dt.date, end: dt.date, as_of: dt.date, branches: list):
        self.branch, self.start, self.end, self.as_of, self.branches = branch, start, end, as_of, branches

    @property
    def branch_id(self) -> int | None:
        return self.branch.id if self.branch else None

    def describe(self) -> dict:
        return {"branch": self.branch.code if self.branch else "ALL", "from": self.start.isoformat(),
                "to": self.end.isoformat(), "as_of": self.as_of.isoformat()}

    def query(self) -> str:
        from urllib.parse import urlencode

        return urlencode({"branch": self.branch.code if self.branch else "", "from": self.start.strftime("%Y-%m"),
                          "to": self.end.strftime("%Y-%m"), "as_of": self.as_of.isoformat()})


def _month_start(text: str, field: str) -> dt.date:
    try:
        return dt.datetime.strptime(text[:7], "%Y-%m").date()
    except ValueError:
        raise InvalidPeriod(_("Give the month as YYYY-MM, for example 2025-04."), field=field) from None


def parse_date(text: str, field: str = "as_of") -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidPeriod(_("Give the date as YYYY-MM-DD, for example 2025-04-30."), field=field) from None


async def _filters(request: Request, db) -> Filters:
    params = request.query_params
    today = _today()
    allowed = books_branches(request.state.principal)
    all_branches = list((await db.execute(select(Branch).order_by(Branch.code))).scalars())
    branches = [b for b in all_branches if allowed is None or b.id in allowed]
    code = (params.get("branch") or "").strip()
    branch = None
    if code:
        branch = next((b for b in branches if b.code == code), None)
        if branch is None:
            raise NotFound(_("No such branch."), field="branch")
    elif allowed is not None:
        if not branches:
            raise Forbidden(_("You do not have access to this."))
        branch = branches[0]  # a branch treasurer sees their branch, never the union-wide books
    end = reports.month_bounds(_month_start(params["to"], "to").strftime("%Y-%m"))[1] if params.get("to") \
        else reports.month_bounds(today.strftime("%Y-%m"))[1]
    start = _month_start(params["from"], "from") if params.get("from") \
        else dt.date(end.year - 1 + (end.month == 12), end.month % 12 + 1, 1)
    if start > end:
        raise InvalidPeriod(_("The first month must not be after the last."), field="from")
    if (end.year - start.year) * 12 + end.month - start.month >= 120:
        raise InvalidPeriod(_("Choose at most ten years."), field="from")
    as_of = parse_date(params["as_of"]) if params.get("as_of") else today
    return Filters(branch=branch, start=start, end=end, as_of=as_of, branches=branches)


async def _audit_view(request: Request, action: str, target: str, detail: dict) -> None:
    async with services(request).sessions() as db:
        await audit.record(db, action=action, actor=request.state.principal.user, target_type="report",
                           target_id=target, detail=detail)
        await db.commit()


def _grace(request: Request) -> int:
    return services(request).settings.grace_months


# ---------------------------------------------------------------- the reports: data as rows


async def _report_rows(request: Request, db, name: str, f: Filters) -> tuple[list[str], list[list], dict]:
    """(CSV header, rows, extra context for the page) of a report."""
    if name == "trial-balance":
        rows = await reports.trial_balance(db, as_of=f.as_of, branch_id=f.branch_id)
        totals = reports.totals_by_currency(rows)
        return (["code", "name", "type", "balance_minor", "currency"],
                [[r.code, r.name, r.type, r.balance_minor, r.currency] for r in rows],
                {"accounts": rows, "totals": totals})
    if name == "income-expenditure":
        months = await reports.income_expenditure_by_month(db, start=f.start, end=f.end, branch_id=f.branch_id)
        header = ["month", "dues_in_minor", "refunds_minor", "waived_minor", "welfare_out_minor", "crisis_costs_minor",
                  "card_fees_minor", "cash_short_minor", "other_expenses_minor", "net_minor", "welfare_by_scheme"]
        rows = [[m.month, m.dues_in, m.refunds, m.waived, m.welfare_out, m.crisis_costs, m.card_fees, m.cash_short,
                 m.other_expenses, m.net, "; ".join(f"{k}={v}" for k, v in sorted(m.welfare_by_scheme.items()))]
                for m in months]
        chart = charts.bar_chart(title=_("Dues in and welfare paid out (rupees)"), months=[m.month for m in months],
                                 series={_("Dues in"): [m.dues_in / 100 for m in months],
                                         _("Welfare out"): [m.welfare_out / 100 for m in months]})
        return header, rows, {"months": months, "chart": chart}
    if name == "funds":
        funds = await reports.fund_balances(db, as_of=f.as_of, branch_id=f.branch_id)
        rows = [[code, balance, funds.currency] for code, balance in funds.funds.items()]
        rows.append(["undistributed_result", funds.undistributed, funds.currency])
        rows.append(["cash_bank_and_stripe", funds.cash_and_bank, funds.currency])
        return ["fund", "balance_minor", "currency"], rows, {"funds": funds}
    if name == "arrears":
        ageing = await reports.arrears_ageing(db, today=f.as_of, grace_months=_grace(request), branch_id=f.branch_id)
        labels = [label for label, _, _ in reports.AGEING_BUCKETS]
        header = ["branch", *[f"behind_{label}" for label in labels], "exempt", "arrears_minor"]
        rows = [[r.branch_code, *[r.buckets[label] for label in labels], r.exempt, r.arrears_minor] for r in ageing]
        return header, rows, {"ageing": ageing, "labels": labels}
    if name == "collection":
        by_branch, by_collector = await reports.collection_rate(db, start=f.start, end=f.end, branch_id=f.branch_id)
        monthly = await reports.monthly_collection(db, start=f.start, end=f.end, branch_id=f.branch_id)
        header = ["by", "name", "branch", "expected_minor", "waived_minor", "collected_minor", "payments", "rate"]
        rows = [["branch", r.label, r.branch_code, r.expected_minor, r.waived_minor, r.collected_minor, "",
                 "" if r.rate is None else f"{r.rate:.4f}"] for r in by_branch]
        rows += [["collector", r.label, r.branch_code, r.expected_minor, r.waived_minor, r.collected_minor,
                  r.payments, "" if r.rate is None else f"{r.rate:.4f}"] for r in by_collector]
        chart = charts.line_chart(title=_("Collection rate by month"), months=[m.month for m in monthly],
                                  values=[None if m.rate is None else m.rate * 100 for m in monthly],
                                  name=_("Collected of what was due"))
        return header, rows, {"by_branch": by_branch, "by_collector": by_collector, "monthly": monthly,
                              "chart": chart}
    if name == "cash-held":
        held = await reports.collector_cash_held(db, as_of=f.as_of, branch_id=f.branch_id)
        header = ["collector", "branch", "held_minor", "currency", "oldest_since", "days_held"]
        rows = [[h.username, h.branch_code, h.held_minor, h.currency,
                 h.oldest_since.isoformat() if h.oldest_since else "", h.days_held(f.as_of) or ""] for h in held]
        return header, rows, {"held": held}
    raise NotFound(_("This page does not exist."))


# ---------------------------------------------------------------- pages


async def index(request: Request) -> Response:
    async with services(request).reader() as db:
        f = await _filters(request, db)
        flows = await reports.income_expenditure_by_month(db, start=f.start, end=f.end, branch_id=f.branch_id)
        monthly = await reports.monthly_collection(db, start=f.start, end=f.end, branch_id=f.branch_id)
        funds = await reports.fund_balances(db, as_of=f.as_of, branch_id=f.branch_id)
        closed = await periods.closed_months(db)
    await _audit_view(request, "treasury.report_view", "overview", f.describe())
    return render(request, "treasury/index.html", {
        "f": f, "titles": _report_titles(), "funds": funds, "closed": closed[:6], "rupees": rupees,
        "income_chart": charts.bar_chart(title=_("Dues in and welfare paid out (rupees)"),
                                         months=[m.month for m in flows],
                                         series={_("Dues in"): [m.dues_in / 100 for m in flows],
                                                 _("Welfare out"): [m.welfare_out / 100 for m in flows]}),
        "rate_chart": charts.line_chart(title=_("Collection rate by month"), months=[m.month for m in monthly],
                                        values=[None if m.rate is None else m.rate * 100 for m in monthly],
                                        name=_("Collected of what was due"))})


async def report(request: Request) -> Response:
    name = request.path_params["report"]
    if name not in REPORTS:
        raise NotFound(_("This page does not exist."))
    async with services(request).reader() as db:
        f = await _filters(request, db)
        _header, _rows, context = await _report_rows(request, db, name, f)
    await _audit_view(request, "treasury.report_view", name, f.describe())
    return render(request, f"treasury/{name}.html", {
        "f": f, "name": name, "title": _report_titles()[name], "rupees": rupees, "percent": percent, **context})


async def export(request: Request) -> Response:
    name = request.path_params["report"]
    if name not in REPORTS:
        raise NotFound(_("This page does not exist."))
    async with services(request).reader() as db:
        f = await _filters(request, db)
        header, rows, _context = await _report_rows(request, db, name, f)
    await _audit_view(request, "treasury.export", name, f.describe())
    return csv_response(filename=f"{name}-{f.as_of.isoformat()}.csv", title=_report_titles()[name],
                        who=request.state.principal.user, filters=f.describe(), header=header, rows=rows)


async def _statement_member(request: Request, db) -> Member:
    member_no = request.path_params.get("member_no") or request.query_params.get("member_no") or ""
    member = (await db.execute(select(Member).where(Member.member_no == member_no.strip()))).scalar_one_or_none()
    allowed = books_branches(request.state.principal)
    if member is None or (allowed is not None and member.branch_id not in allowed):
        raise NotFound(_("No member with that number."), field="member_no")
    return member


async def statement(request: Request) -> Response:
    """A member's statement: what they paid toward dues, entry by entry, with their standing."""
    from dues.services import standing

    if "member_no" not in request.path_params:
        number = (request.query_params.get("member_no") or "").strip()
        if number:
            return RedirectResponse(f"/treasury/statements/{number}", status_code=303)
        return render(request, "treasury/statement_find.html", {})
    async with services(request).reader() as db:
        f = await _filters(request, db)
        member = await _statement_member(request, db)
        opening, lines = await reports.member_statement(db, member_id=member.id, start=f.start, end=f.end)
        member_standing = await standing(db, member=member, today=_today(), grace_months=_grace(request))
    await _audit_view(request, "treasury.statement_view", member.member_no, f.describe())
    return render(request, "treasury/statement.html", {
        "f": f, "member": member, "opening": opening, "lines": lines, "standing": member_standing,
        "rupees": rupees})


async def statement_export(request: Request) -> Response:
    async with services(request).reader() as db:
        f = await _filters(request, db)
        member = await _statement_member(request, db)
        opening, lines = await reports.member_statement(db, member_id=member.id, start=f.start, end=f.end)
    await _audit_view(request, "treasury.statement_export", member.member_no, f.describe())
    rows = [["", "opening", "", "", opening, ""]]
    rows += [[ln.date.isoformat(), ln.kind, ln.description, ln.credit_minor, ln.balance_minor, ln.entry_id]
             for ln in lines]
    return csv_response(filename=f"statement-{member.member_no}.csv", title=_("Member statement"),
                        who=request.state.principal.user, filters={"member_no": member.member_no, **f.describe()},
                        header=["date", "kind", "description", "credit_minor", "paid_total_minor", "entry_id"],
                        rows=rows)


# ---------------------------------------------------------------- bank reconciliation


async def _bank_page(request: Request, *, error: str | None = None, problems=None, notice: str | None = None,
                     status_code: int = 200) -> Response:
    svc = services(request)
    async with svc.reader() as db:
        f = await _filters(request, db)
        view = await reconcile.bank_reconciliation(db, vault=svc.vault, start=f.start, end=f.end)
    await _audit_view(request, "treasury.report_view", "bank", f.describe())
    return render(request, "treasury/bank.html", {"f": f, "view": view, "rupees": rupees, "error": error,
                                                  "problems": problems or [], "notice": notice},
                  status_code=status_code)


async def bank(request: Request) -> Response:
    if request.method == "GET":
        return await _bank_page(request, notice=request.query_params.get("done") and _("Saved."))
    form = await request.form()
    upload = form.get("file")
    try:
        if upload is None or not hasattr(upload, "read"):
            raise BankCsvInvalid(_("Choose the bank statement file (CSV)."), field="file")
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise BankCsvInvalid(_("The file is too large."), field="file")
        svc = services(request)
        async with svc.sessions() as db:
            result = await reconcile.import_bank_statement(db, data=data, actor=request.state.principal.user,
                                                           vault=svc.vault)
            await db.commit()
    except UnionError as exc:
        return await _bank_page(request, error=exc.message, problems=getattr(exc, "problems", None),
                                status_code=exc.status_code)
    return await _bank_page(request, notice=_("Imported %(lines)d lines: %(matched)d matched, %(unmatched)d left to "
                                              "match.", lines=result.matched + result.unmatched,
                                              matched=result.matched, unmatched=result.unmatched))


async def bank_match(request: Request) -> Response:
    form = await request.form()
    entry_id = (form.get("entry_id") or "").strip() or None
    try:
        async with services(request).sessions() as db:
            await reconcile.match_bank_line(db, line_id=request.path_params["line_id"], entry_id=entry_id,
                                            actor=request.state.principal.user)
            await db.commit()
    except UnionError as exc:
        return await _bank_page(request, error=exc.message, status_code=exc.status_code)
    return RedirectResponse("/treasury/bank?done=1", status_code=303)


# ---------------------------------------------------------------- periods, checkpoints, corrections


def _last_month(today: dt.date) -> str:
    first = today.replace(day=1) - dt.timedelta(days=1)
    return first.strftime("%Y-%m")


async def _periods_page(request: Request, *, month: str | None = None, error: str | None = None,
                        notice: str | None = None, status_code: int = 200, values: dict | None = None) -> Response:
    month = month or _last_month(_today())
    async with services(request).reader() as db:
        closed = await periods.closed_months(db)
        try:
            left = await periods.differences(db, month)
        except InvalidPeriod:
            month, left = _last_month(_today()), await periods.differences(db, _last_month(_today()))
    return render(request, "treasury/periods.html", {
        "closed": closed, "month": month, "left": left, "error": error, "notice": notice,
        "values": values or {}}, status_code=status_code)


async def periods_page(request: Request) -> Response:
    return await _periods_page(request, month=request.query_params.get("month"),
                               notice=_("%(month)s is closed. Download its checkpoint and keep it safe, away from "
                                        "this server.", month=request.query_params["closed"])
                               if periods.MONTH.match(request.query_params.get("closed", "")) else None)


async def close_period(request: Request) -> Response:
    form = await request.form()
    values = {"month": (form.get("month") or "").strip(), "note": (form.get("note") or "").strip(),
              "confirm": form.get("confirm") == "yes"}
    svc = services(request)
    try:
        key = checkpoint.signing_key(svc.settings)
        async with svc.sessions() as db:
            period, _cp = await periods.close_month(db, month=values["month"], actor=request.state.principal.user,
                                                    today=_today(), note=values["note"], confirm=values["confirm"],
                                                    key=key)
            await db.commit()
    except UnionError as exc:
        return await _periods_page(request, month=values["month"] if periods.MONTH.match(values["month"]) else None,
                                   error=exc.message, status_code=exc.status_code, values=values)
    return RedirectResponse(f"/treasury/periods?closed={period.month}", status_code=303)


async def checkpoint_download(request: Request) -> Response:
    month = periods.check_month(request.path_params["month"])
    async with services(request).reader() as db:
        found = (await db.execute(select(LedgerCheckpoint).where(LedgerCheckpoint.month == month))).scalar_one_or_none()
    if found is None:
        raise NotFound(_("No checkpoint for %(month)s: close the month first.", month=month), field="month")
    async with services(request).sessions() as db:
        await audit.record(db, action="treasury.checkpoint_download", actor=request.state.principal.user,
                           target_type="period", target_id=month)
        await db.commit()
    return Response(checkpoint.checkpoint_file(found), media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="union-checkpoint-{month}.json"'})


async def verify(request: Request) -> Response:
    """Walk both chains (and, when a checkpoint file is sent, check it against them)."""
    from treasury.chainsql import verify_ledger as verify_ledger_chain
    from union.audit import verify_chain

    svc = services(request)
    checkpoint_result, error, status = None, None, 200
    if request.method == "POST":
        form = await request.form()
        upload = form.get("checkpoint")
        try:
            if upload is None or not hasattr(upload, "read"):
                raise InvalidInput(_("Choose the checkpoint file."), field="checkpoint")
            data = await upload.read(checkpoint.MAX_FILE_BYTES + 1)
            async with svc.reader() as db:
                checkpoint_result = await checkpoint.verify_checkpoint(db, data, key=checkpoint.signing_key(
                    svc.settings))
            books, log = checkpoint_result.ledger, checkpoint_result.audit
        except UnionError as exc:
            error, status = exc.message, exc.status_code
            checkpoint_result = None
    if checkpoint_result is None:
        async with svc.reader() as db:
            books = await verify_ledger_chain(db)
            log = await verify_chain(db)
    async with svc.sessions() as db:
        await audit.record(db, action="treasury.verify", actor=request.state.principal.user, target_type="ledger",
                           detail={"ledger_intact": books.intact, "audit_intact": log.intact,
                                   "checkpoint": None if checkpoint_result is None else checkpoint_result.month,
                                   "checkpoint_error": bool(error)})
        await db.commit()
    return render(request, "treasury/verify.html", {"books": books, "log": log, "checkpoint": checkpoint_result,
                                                    "error": error}, status_code=status)


async def correct(request: Request) -> Response:
    form = await request.form()
    values = {"entry_id": (form.get("entry_id") or "").strip(), "reason": (form.get("reason") or "").strip()}
    try:
        async with services(request).sessions() as db:
            reversal = await periods.correct_entry(db, entry_id=values["entry_id"], reason=values["reason"],
                                                   actor=request.state.principal.user, today=_today())
            await db.commit()
    except UnionError as exc:
        return await _periods_page(request, error=exc.message, status_code=exc.status_code, values=values)
    return await _periods_page(request, notice=_("Entry %(entry)s was reversed by %(reversal)s.",
                                                 entry=values["entry_id"], reversal=reversal.id))


# ---------------------------------------------------------------- the members' summary


async def member_summary(request: Request) -> Response:
    """Every member's view of the union's money: totals for one month, no personal data."""
    today = _today()
    month = request.query_params.get("month") or _last_month(today)
    month = periods.check_month(month)
    if reports.month_bounds(month)[0] > today:
        raise InvalidPeriod(_("That month has not started yet."), field="month")
    async with services(request).reader() as db:
        closed = await periods.is_closed(db, month)
        summary = await reports.member_summary(db, month=month, closed=closed)
    first = reports.month_index(today) - 12
    choices = [reports.month_label(m) for m in range(reports.month_index(today), first, -1)]
    return render(request, "treasury/summary.html", {"s": summary, "rupees": rupees, "percent": percent,
                                                     "choices": choices})


# ---------------------------------------------------------------- API


async def api_trial_balance(request: Request) -> Response:
    text = request.query_params.get("as_of")
    as_of = parse_date(text) if text else _today()
    async with services(request).reader() as db:
        f = await _filters(request, db)
        rows = await reports.trial_balance(db, as_of=as_of, branch_id=f.branch_id)
    await _audit_view(request, "treasury.report_view", "trial-balance", {**f.describe(), "as_of": as_of.isoformat(),
                                                                        "via": "api"})
    return JSONResponse({"accounts": [r.as_json() for r in rows], "total_minor": sum(r.balance_minor for r in rows)})



# ---------------------------------------------------------------- card and cash reconciliation


async def reconcile_page(request: Request) -> Response:
    """Card: the ledger's Stripe account against Stripe's balance transactions and payouts.
    Cash: collectors' hand-overs against the receipts they wrote."""
    async with services(request).reader() as db:
        f = await _filters(request, db)
        card = await reconcile.card_reconciliation(db, start=f.start, end=f.end,
                                                   billing=services(request).extras.get("billing"))
        cash = await reconcile.cash_reconciliation(db, start=f.start, end=f.end, branch_id=f.branch_id)
    await _audit_view(request, "treasury.report_view", "reconcile", f.describe())
    return render(request, "treasury/reconcile.html", {"f": f, "card": card, "cash": cash, "rupees": rupees})
