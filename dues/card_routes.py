"""Routes of card payments: the member's "pay by card" page, starting a Checkout or
monthly auto-pay, the page Stripe sends the member back to, and the Stripe webhook
(POST /dues/stripe/webhook, DESIGN §5), which is signed instead of carrying a
CSRF token: the signature is checked on the raw body before anything is read or
written, and a forged or stale (> 300 s) one gets 400 with nothing posted."""

from __future__ import annotations

import datetime as dt
import json
import logging

import stripe
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dues import card
from dues import services as dues
from dues.card_models import CardPayment, CardSubscription
from dues.money import Money, format_money
from union.errors import UnionError
from union.i18n import _
from union.models import Member
from union.web import json_error, render, services

log = logging.getLogger("union.dues.card")


def _today() -> dt.date:
    return dt.date.today()


def _return_base(request: Request) -> str:
    """Where Stripe sends the member back: the configured public address; in test mode (the stand-in is
    part of this app) the address the member is using."""
    billing = card.billing_of(services(request))
    if billing is not None and billing.test_mode:
        return str(request.base_url).rstrip("/")
    return services(request).settings.base_url.rstrip("/")


def card_rows(payments: list[CardPayment]) -> list[dict]:
    labels = {"succeeded": _("Paid"), "failed": _("Card declined"), "refunded": _("Refunded"),
              "partially_refunded": _("Partly refunded"), "disputed": _("Taken back by the bank"),
              "expired": _("Not paid (page closed)"), "pending": _("Waiting")}
    return [{"payment": p, "amount": format_money(Money(p.amount_minor, p.currency)),
             "status_label": labels.get(p.status, p.status),
             "refunded": format_money(Money(p.refunded_minor, p.currency)) if p.refunded_minor else None}
            for p in payments]


async def _page(request: Request, *, error: str | None = None, months: str = "1", status_code: int = 200) -> Response:
    principal = request.state.principal
    svc = services(request)
    billing = card.billing_of(svc)
    async with svc.reader() as db:
        member = await db.get(Member, principal.member_id)
        standing = await dues.standing(db, member=member, today=_today(), grace_months=svc.settings.grace_months)
        payments = await card.member_card_payments(db, member.id)
        autopay = await card.active_subscription(db, member.id)
        fee = None
        try:
            rate = await card.monthly_rate(db, member=member, today=_today())
            fee = await card.joining_fee_due(db, member=member, currency=rate.currency)
        except card.CardPaymentRefused as exc:
            rate, error = None, error or exc.message
    extra = fee.amount_minor if fee else 0
    return render(request, "dues/card.html", {
        "member": member, "standing": standing, "billing_on": billing is not None,
        "test_mode": bool(billing and billing.test_mode), "error": error, "months": months,
        "max_months": card.MAX_CARD_MONTHS, "rate": format_money(rate) if rate else None,
        "joining_fee": format_money(fee) if fee else None,
        "choices": [(n, format_money(Money(rate.amount_minor * n + extra, rate.currency))) for n in
                    range(1, card.MAX_CARD_MONTHS + 1)] if rate else [],
        "autopay": autopay, "payments": card_rows(payments),
        "arrears": format_money(Money(standing.arrears_minor, standing.currency))}, status_code=status_code)


async def card_page(request: Request) -> Response:
    return await _page(request)


async def _go(request: Request, url: str) -> Response:
    """The Checkout link as a page: a form may not redirect to another site under our CSP (form-action 'self')."""
    billing = card.billing_of(services(request))
    return render(request, "dues/card_go.html", {"url": url, "test_mode": bool(billing and billing.test_mode)})


async def start_checkout(request: Request) -> Response:
    form = await request.form()
    months = str(form.get("months") or "").strip()
    try:
        url = await card.open_checkout(services(request), member_id=request.state.principal.member_id, months=months,
                                       today=_today(), return_base=_return_base(request))
    except UnionError as exc:
        return await _page(request, error=exc.message, months=months[:3], status_code=exc.status_code)
    return await _go(request, url)


async def start_autopay(request: Request) -> Response:
    try:
        url = await card.open_subscription(services(request), member_id=request.state.principal.member_id,
                                           today=_today(), return_base=_return_base(request))
    except UnionError as exc:
        return await _page(request, error=exc.message, status_code=exc.status_code)
    return await _go(request, url)


async def cancel_autopay(request: Request) -> Response:
    try:
        await card.cancel_autopay(services(request), member_id=request.state.principal.member_id)
    except UnionError as exc:
        return await _page(request, error=exc.message, status_code=exc.status_code)
    return await _page(request)


async def card_done(request: Request) -> Response:
    """Where Stripe sends the member back. The webhook, not this page, records the payment:
    the page only says what we know so far (it may be a moment behind)."""
    principal = request.state.principal
    cancelled = request.query_params.get("cancelled") == "1"
    payment = autopay = None
    async with services(request).reader() as db:
        if (raw := request.query_params.get("payment", "")).isdigit():
            payment = await db.get(CardPayment, int(raw))
        if (raw := request.query_params.get("autopay", "")).isdigit():
            autopay = await db.get(CardSubscription, int(raw))
    # Someone else's row is as good as none.
    if payment is not None and payment.member_id != principal.member_id:
        payment = None
    if autopay is not None and autopay.member_id != principal.member_id:
        autopay = None
    billing = card.billing_of(services(request))
    return render(request, "dues/card_done.html", {
        "cancelled": cancelled, "payment": card_rows([payment])[0] if payment else None, "autopay": autopay,
        "test_mode": bool(billing and billing.test_mode)})


async def stripe_webhook(request: Request) -> Response:
    svc = services(request)
    billing = card.billing_of(svc)
    if billing is None:
        return json_error(404, _("Card payments are not set up."), code="not_found")
    payload = await request.body()  # the raw bytes: the signature covers them exactly
    try:
        event = billing.construct_event(payload, request.headers.get("stripe-signature"))
    except (stripe.SignatureVerificationError, ValueError, json.JSONDecodeError) as exc:
        log.warning("refused a Stripe webhook: %s", type(exc).__name__)
        return json_error(400, _("The webhook signature is missing, wrong or too old."), code="bad_signature")
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        return json_error(400, _("The webhook signature is missing, wrong or too old."), code="bad_signature")
    outcome = await card.receive_event(svc, event)
    return JSONResponse({"received": True, "outcome": outcome})
