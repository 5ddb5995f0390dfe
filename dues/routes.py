"""Routes of dues: the collector's cash page and receipts, the member's dues page,
and the JSON API (POST /api/dues/payments, GET /api/members/{member_no}/standing,
DESIGN §5). Thin: parse, call one service, render. Access is decided by
union.policy through the guard; the route owns the transaction."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from dues import cash_ops_messages as messages
from dues import services as dues
from dues.batch import batcher as payment_batcher
from dues.errors import CurrencyMismatch, InvalidAmount
from dues.money import Money, format_money, parse_money
from union import audit, members
from union.errors import InvalidInput, UnionError
from union.i18n import _
from union.models import Member, User
from union.web import read_json, render, services


def _today() -> dt.date:
    return dt.date.today()


def _currency(request: Request) -> str:
    return services(request).settings.default_currency


def _grace(request: Request) -> int:
    return services(request).settings.grace_months


# --- JSON API -------------------------------------------------------------------

def _amount_from_json(data: dict, currency: str) -> Money:
    if "currency" not in data:
        raise CurrencyMismatch(_("%(field)s is required and must be text.", field="currency"), field="currency")
    if data["currency"] != currency:
        raise CurrencyMismatch(_("Dues are paid in %(currency)s.", currency=currency), field="currency")
    value = data.get("amount_minor")
    # A JSON 100.5 (or even 100.0) is a float: money is a whole number of paise.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(_("The amount must be a whole number of paise."), field="amount_minor")
    if not 0 < value <= dues.MAX_CASH_PAYMENT_MINOR:
        raise InvalidAmount(_("The amount must be more than zero.") if value <= 0
                            else _("The amount is too large for one cash payment."), field="amount_minor")
    return Money(value, currency)


async def api_record_payment(request: Request) -> Response:
    data = await read_json(request)
    currency = _currency(request)
    member_no = data.get("member_no")
    if not isinstance(member_no, str) or not member_no.strip():
        raise InvalidInput(_("A member number is required."), field="member_no")
    amount = _amount_from_json(data, currency)
    # Through the process's group committer: posted with whatever else is waiting, in one transaction
    # with its receipt SMS (dues.batch).
    outcome = await payment_batcher(services(request)).submit(dues.PaymentRequest(
        member_no=member_no, amount=amount, receipt_no=data.get("receipt_no"), months=data.get("months"),
        collector=request.state.principal, currency=currency, today=_today()))
    payment, member = outcome.payment, outcome.member
    async with services(request).reader() as db:
        standing = await dues.standing(db, member=member, today=_today(), grace_months=_grace(request))
    body = payment_json(payment, member) | {"standing": standing.as_json()}
    return JSONResponse(body, status_code=201)


def payment_json(payment, member: Member) -> dict:
    return {"id": payment.id, "member_no": member.member_no, "amount_minor": payment.amount_minor,
            "currency": payment.currency, "receipt_no": payment.receipt_no, "months": payment.months}


async def api_standing(request: Request) -> Response:
    principal = request.state.principal
    async with services(request).reader() as db:
        member = await members.get_member(db, member_no=request.path_params["member_no"], principal=principal)
        standing = await dues.standing(db, member=member, today=_today(), grace_months=_grace(request))
    return JSONResponse(standing.as_json())


# --- Pages -------------------------------------------------------------------------

def _form_values(form) -> dict:
    return {key: (form.get(key) or "").strip() for key in ("member_no", "amount", "months", "receipt_no")}


def _months_from_form(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise InvalidInput(_("Months must be a whole number from 1 to %(count)d.", count=dues.MAX_MONTHS),
                           field="months")
    return int(text)


async def collect(request: Request) -> Response:
    """The collector's phone page: member number, amount in rupees, months, receipt number."""
    values = {"member_no": request.query_params.get("member_no", "")[:24], "amount": "", "months": "",
              "receipt_no": ""}
    if request.method == "GET":
        return render(request, "dues/collect.html", {"values": values, "error": None})
    values = _form_values(await request.form())
    currency = _currency(request)
    try:
        if not values["amount"]:
            raise InvalidAmount(_("Enter the amount, for example 100 or 100.50."), field="amount")
        try:
            amount = parse_money(values["amount"], currency)
        except InvalidAmount:
            raise InvalidAmount(_("Enter the amount, for example 100 or 100.50."), field="amount") from None
        outcome = await payment_batcher(services(request)).submit(dues.PaymentRequest(
            member_no=values["member_no"], amount=amount, receipt_no=values["receipt_no"],
            months=_months_from_form(values["months"]), collector=request.state.principal, currency=currency,
            today=_today()))
        payment = outcome.payment
    except UnionError as exc:
        return render(request, "dues/collect.html", {"values": values, "error": exc.message},
                      status_code=exc.status_code)
    return RedirectResponse(f"/dues/receipts/{payment.id}", status_code=303)


async def receipt(request: Request) -> Response:
    principal = request.state.principal
    async with services(request).sessions() as db:
        payment, member = await dues.get_payment(db, payment_id=request.path_params["receipt_id"],
                                                 principal=principal)
        collector = await db.get(User, payment.collector_user_id)
        standing = await dues.standing(db, member=member, today=_today(), grace_months=_grace(request))
        await audit.record(db, action="dues.receipt_read", actor=principal.user, target_type="cash_payment",
                           target_id=payment.id)
        await db.commit()
    return render(request, "dues/receipt.html", {
        "payment": payment, "member": member, "standing": standing,
        "collector_name": collector.display_name or collector.username if collector else "",
        "amount": format_money(Money(payment.amount_minor, payment.currency))})


async def card_payments_of(db, member_id: int) -> list[dict]:
    from dues.card import member_card_payments
    from dues.card_routes import card_rows

    return card_rows(await member_card_payments(db, member_id))


async def my_dues(request: Request) -> Response:
    principal = request.state.principal
    async with services(request).reader() as db:
        member = await db.get(Member, principal.member_id)
        standing = await dues.standing(db, member=member, today=_today(), grace_months=_grace(request))
        payments = await dues.member_payments(db, member.id)
        messages_off = await messages.opted_out(db, member.id)
        card_payments = await card_payments_of(db, member.id)
    return render(request, "dues/me.html", {
        "member": member, "standing": standing, "messages_off": messages_off, "card_payments": card_payments,
        "arrears": format_money(Money(standing.arrears_minor, standing.currency)),
        "payments": [(p, format_money(Money(p.amount_minor, p.currency))) for p in payments]})
