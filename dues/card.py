"""Card payments through Stripe: opening a Checkout for one or more months or a
monthly auto-pay subscription, applying Stripe's events to the ledger and the
member's standing, and catching up on events missed while we were down.

How events are applied (the same path for the webhook, the parked-event retry
and the catch-up job):
1. `gather`: with no database session open, fetch the current state of what the
   event is about from Stripe through the SDK (payment intent → charge → its
   balance transaction, refunds and disputes; invoice; subscription). The event
   only says *that* something changed; the state fetched says *what is true now*,
   so events arriving out of order (a refund before the success) end right.
2. `apply_event`: in one transaction, lock the ledger head (so concurrent
   duplicates queue up on both databases), skip an event already recorded in
   `stripe_event`, post what the state says and is not yet posted (entries keyed
   on Stripe object ids: "stripe:charge:<ch>:payment", "...:fee",
   "stripe:refund:<re>", "stripe:dispute:<dp>:withdrawn" / ":reinstated"), and
   record the event id. A replay, the catch-up job and a concurrent duplicate
   all converge on the same entries.

Postings (debit positive, credit negative; member_id makes them count toward
the member's standing, see dues.services.paid_total_query):
- payment succeeded: Dr stripe / Cr dues_income (member)
- Stripe's fee, from the balance transaction: Dr card_fees / Cr stripe
- refund: Dr refunds / Cr stripe (member)
- dispute (funds withdrawn): Dr disputes / Cr stripe (member); won: the reverse
- Stripe's dispute fee, from the dispute's balance transactions: Dr card_fees / Cr stripe
  (key "stripe:dispute:<dp>:withdrawn:fee"; a fee given back when won is the reverse)
- payout of the Stripe balance to the bank, when paid: Dr bank / Cr stripe
  (kind "stripe_payout", key "stripe:payout:<po>", dated the payout's arrival)
- failed payment: no entry; the attempt is recorded and shown to the member.

The posting functions (`post_card_payment` ...) are public so tests can drive the
ledger without HTTP. Services flush and never commit.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dues import joining
from dues.card_models import (CardPayment, CardPaymentKind, CardPaymentStatus, CardSubscription, StripeEvent,
                              SubscriptionStatus)
from dues.errors import DuesError
from dues.ledger import ensure_accounts, lock_head, post_entry
from dues.models import DuesRate, EntryKind, JournalEntry
from dues.money import Money
from dues.services import member_plan
from union import jobs
from union.i18n import _
from union.models import Member, utcnow

log = logging.getLogger("union.dues.card")

MAX_CARD_MONTHS = 12
CATCH_UP_OVERLAP = dt.timedelta(hours=1)
CATCH_UP_FIRST_WINDOW = dt.timedelta(days=3)
CATCH_UP_EVERY = dt.timedelta(hours=1)
# Disputes in these states are inquiries: Stripe has not taken the money back.
_INQUIRY_STATES = {"warning_needs_response", "warning_under_review", "warning_closed"}


class CardPaymentsOff(DuesError):
    """Raised when a card payment is asked for but no billing backend is configured
    (no UNION_STRIPE_API_KEY and not in test mode)."""

    status_code = 409
    code = "card_payments_off"


class CardPaymentRefused(DuesError):
    """Raised when a card payment or auto-pay cannot be started: months out of range,
    nothing to pay (exempt or a free plan), or auto-pay already on."""

    status_code = 422
    code = "invalid"


class BillingUnavailable(DuesError):
    """Raised when Stripe (or the stand-in) cannot be reached or refuses a request."""

    status_code = 502
    code = "billing_unavailable"


def billing_of(services):
    return services.extras.get("billing")


def _require_billing(services):
    billing = billing_of(services)
    if billing is None:
        raise CardPaymentsOff(_("Card payments are not set up yet. Please pay your collector in cash."))
    return billing


def _day(timestamp: int | None) -> dt.date:
    return dt.datetime.fromtimestamp(int(timestamp or 0), dt.UTC).date()


def _money(amount_minor: int, currency: str) -> Money:
    return Money(int(amount_minor), currency.upper())


# ---------------------------------------------------------------- postings (callable without HTTP)


async def post_card_payment(session: AsyncSession, *, member_id: int, amount: Money, charge_id: str,
                            effective_date: dt.date) -> JournalEntry:
    """Dr stripe / Cr dues_income for the member: a card payment that succeeded, with the joining fee
    she still owes taken first (Cr joining_fee_income). Posted once: the entry already posted for the
    charge is returned as it is (the fee it took is no longer owed, so its lines are not made again)."""
    key = f"stripe:charge:{charge_id}:payment"
    await lock_head(session)  # before the look-up: a concurrent post of the same charge waits, then finds it
    posted = (await session.execute(select(JournalEntry).where(JournalEntry.idempotency_key == key))).scalar_one_or_none()
    if posted is not None:
        return posted
    await ensure_accounts(session, amount.currency)
    lines = await joining.card_payment_lines(session, member=await session.get(Member, member_id), account="stripe",
                                             amount=amount)
    return await post_entry(session, key=key, kind=EntryKind.card_payment, lines=lines,
                            description=f"Card dues, Stripe charge {charge_id}", effective_date=effective_date,
                            member_id=member_id)


async def post_card_fee(session: AsyncSession, *, fee: Money, charge_id: str, effective_date: dt.date) -> JournalEntry:
    """Dr card_fees / Cr stripe: Stripe's fee on a charge, from its balance transaction (no member credit)."""
    await ensure_accounts(session, fee.currency)
    return await post_entry(session, key=f"stripe:charge:{charge_id}:fee", kind=EntryKind.card_fee,
                            lines=[("card_fees", fee), ("stripe", -fee)],
                            description=f"Stripe fee on charge {charge_id}", effective_date=effective_date)


async def post_card_refund(session: AsyncSession, *, member_id: int, amount: Money, refund_id: str, charge_id: str,
                           effective_date: dt.date) -> JournalEntry:
    """Dr refunds / Cr stripe for the member: takes the refunded amount off their dues credit."""
    await ensure_accounts(session, amount.currency)
    return await post_entry(session, key=f"stripe:refund:{refund_id}", kind=EntryKind.refund,
                            lines=[("refunds", amount), ("stripe", -amount)],
                            description=f"Card refund {refund_id} of charge {charge_id}",
                            effective_date=effective_date, member_id=member_id)


async def post_card_dispute(session: AsyncSession, *, member_id: int, amount: Money, dispute_id: str,
                            charge_id: str, effective_date: dt.date) -> JournalEntry:
    """Dr disputes / Cr stripe for the member: the bank took a payment back."""
    await ensure_accounts(session, amount.currency)
    return await post_entry(session, key=f"stripe:dispute:{dispute_id}:withdrawn", kind=EntryKind.dispute,
                            lines=[("disputes", amount), ("stripe", -amount)],
                            description=f"Card dispute {dispute_id} on charge {charge_id}",
                            effective_date=effective_date, member_id=member_id)


async def post_card_dispute_won(session: AsyncSession, *, member_id: int, amount: Money, dispute_id: str,
                                charge_id: str, effective_date: dt.date) -> JournalEntry:
    """Dr stripe / Cr disputes for the member: a dispute we won; the money and the credit come back."""
    await ensure_accounts(session, amount.currency)
    return await post_entry(session, key=f"stripe:dispute:{dispute_id}:reinstated", kind=EntryKind.dispute,
                            lines=[("stripe", amount), ("disputes", -amount)],
                            description=f"Card dispute {dispute_id} won, charge {charge_id}",
                            effective_date=effective_date, member_id=member_id)


async def post_card_dispute_fee(session: AsyncSession, *, fee: Money, dispute_id: str, stage: str,
                                effective_date: dt.date) -> JournalEntry:
    """Dr card_fees / Cr stripe: Stripe's fee on a dispute, from the balance transaction of its `stage`
    ("withdrawn" or "reinstated"); a negative fee is one Stripe gave back. No member credit."""
    await ensure_accounts(session, fee.currency)
    return await post_entry(session, key=f"stripe:dispute:{dispute_id}:{stage}:fee", kind=EntryKind.card_fee,
                            lines=[("card_fees", fee), ("stripe", -fee)],
                            description=f"Stripe fee on dispute {dispute_id} ({stage})", effective_date=effective_date)


PAYOUT_KIND = "stripe_payout"


async def post_card_payout(session: AsyncSession, *, amount: Money, payout_id: str,
                           effective_date: dt.date) -> JournalEntry:
    """Dr bank / Cr stripe: Stripe paid (part of) the balance out to the union's bank account."""
    await ensure_accounts(session, amount.currency)
    return await post_entry(session, key=f"stripe:payout:{payout_id}", kind=PAYOUT_KIND,
                            lines=[("bank", amount), ("stripe", -amount)],
                            description=f"Stripe payout {payout_id} to the bank", effective_date=effective_date)


# ---------------------------------------------------------------- starting payments


async def monthly_rate(session: AsyncSession, *, member: Member, today: dt.date) -> Money:
    """The member's monthly dues now (the rate of their plan in force today)."""
    plan, account = await member_plan(session, member)
    if account is not None and account.exempt:
        raise CardPaymentRefused(_("You are exempt from dues: there is nothing to pay."))
    rate = (await session.execute(
        select(DuesRate).where(DuesRate.plan_id == plan.id, DuesRate.effective_from <= today)
        .order_by(DuesRate.effective_from.desc()).limit(1))).scalar_one_or_none()
    if rate is None:
        rate = (await session.execute(select(DuesRate).where(DuesRate.plan_id == plan.id)
                                      .order_by(DuesRate.effective_from).limit(1))).scalar_one()
    if rate.monthly_minor <= 0:
        raise CardPaymentRefused(_("Your plan has no dues to pay."))
    return Money(int(rate.monthly_minor), rate.currency)


def check_card_months(months: object) -> int:
    if isinstance(months, str) and months.strip().isdigit():
        months = int(months.strip())
    if isinstance(months, bool) or not isinstance(months, int) or not 1 <= months <= MAX_CARD_MONTHS:
        raise CardPaymentRefused(_("Choose from 1 to %(count)d months.", count=MAX_CARD_MONTHS), field="months")
    return months


async def joining_fee_due(session: AsyncSession, *, member: Member, currency: str) -> Money | None:
    """The joining fee a Checkout in `currency` must add: what the member still owes of it, or None."""
    owed = await joining.fee_owed(session, member)
    return owed if owed is not None and owed.currency == currency else None


async def new_card_payment(session: AsyncSession, *, member: Member, months: object, today: dt.date) -> CardPayment:
    """The row for one Checkout attempt (pending): the months, and the joining fee if still owed. Its id
    keys the Stripe call. Flushes."""
    months = check_card_months(months)
    rate = await monthly_rate(session, member=member, today=today)
    fee = await joining_fee_due(session, member=member, currency=rate.currency)
    fee_minor = fee.amount_minor if fee else 0
    payment = CardPayment(member_id=member.id, kind=CardPaymentKind.checkout, months=months,
                          amount_minor=rate.amount_minor * months + fee_minor, joining_fee_minor=fee_minor,
                          currency=rate.currency)
    session.add(payment)
    await session.flush()
    return payment


async def active_subscription(session: AsyncSession, member_id: int) -> CardSubscription | None:
    return (await session.execute(
        select(CardSubscription).where(CardSubscription.member_id == member_id,
                                       CardSubscription.status.in_([SubscriptionStatus.active,
                                                                    SubscriptionStatus.past_due]))
        .order_by(CardSubscription.id.desc()).limit(1))).scalar_one_or_none()


async def new_subscription(session: AsyncSession, *, member: Member, today: dt.date) -> CardSubscription:
    if await active_subscription(session, member.id) is not None:
        raise CardPaymentRefused(_("Monthly auto-pay is already on."))
    rate = await monthly_rate(session, member=member, today=today)
    sub = CardSubscription(member_id=member.id, amount_minor=rate.amount_minor, currency=rate.currency)
    session.add(sub)
    await session.flush()
    return sub


def checkout_params(payment: CardPayment, *, success_url: str, cancel_url: str) -> dict:
    # Nothing about the member goes to Stripe: our row id only.
    meta = {"card_payment_id": str(payment.id)}
    return {
        "mode": "payment",
        "line_items": [{"quantity": payment.months, "price_data": {
            "currency": payment.currency.lower(),
            "unit_amount": (payment.amount_minor - payment.joining_fee_minor) // payment.months,
            "product_data": {"name": "Union dues (one month)"}}}] + ([{"quantity": 1, "price_data": {
                "currency": payment.currency.lower(), "unit_amount": payment.joining_fee_minor,
                "product_data": {"name": "Union joining fee (once)"}}}] if payment.joining_fee_minor else []),
        "metadata": meta, "payment_intent_data": {"metadata": meta},
        "client_reference_id": f"card_payment-{payment.id}",
        "success_url": success_url, "cancel_url": cancel_url,
    }


def subscription_params(sub: CardSubscription, *, success_url: str, cancel_url: str) -> dict:
    meta = {"card_subscription_id": str(sub.id)}
    return {
        "mode": "subscription",
        "line_items": [{"quantity": 1, "price_data": {
            "currency": sub.currency.lower(), "unit_amount": sub.amount_minor,
            "recurring": {"interval": "month"}, "product_data": {"name": "Union dues (monthly auto-pay)"}}}],
        "metadata": meta, "subscription_data": {"metadata": meta},
        "client_reference_id": f"card_subscription-{sub.id}",
        "success_url": success_url, "cancel_url": cancel_url,
    }


async def open_checkout(services, *, member_id: int, months: object, today: dt.date, return_base: str) -> str:
    """Record a pending card payment, create its Checkout session (idempotency key from our row id) and
    return the URL to send the member to. Three short steps: the Stripe call holds no database lock."""
    billing = _require_billing(services)
    async with services.sessions() as db:
        member = await db.get(Member, member_id)
        payment = await new_card_payment(db, member=member, months=months, today=today)
        payment_id = payment.id
        params = checkout_params(payment, success_url=f"{return_base}/dues/card/done?payment={payment_id}",
                                 cancel_url=f"{return_base}/dues/card/done?payment={payment_id}&cancelled=1")
        await db.commit()
    try:
        cs = await billing.create_checkout(params=params, idempotency_key=f"union-checkout-{payment_id}")
    except Exception as exc:  # noqa: BLE001 - any SDK or network failure: the row stays pending, unpaid
        log.warning("creating checkout for card payment %s failed: %s", payment_id, type(exc).__name__)
        raise BillingUnavailable(_("The card payment service is not answering. Please try again later.")) from None
    async with services.sessions() as db:
        payment = await db.get(CardPayment, payment_id)
        payment.checkout_session_id = cs["id"]
        payment.updated_at = utcnow()
        await _seed_catch_up(db)
        await db.commit()
    return cs["url"]


async def open_subscription(services, *, member_id: int, today: dt.date, return_base: str) -> str:
    billing = _require_billing(services)
    async with services.sessions() as db:
        member = await db.get(Member, member_id)
        sub = await new_subscription(db, member=member, today=today)
        sub_id = sub.id
        params = subscription_params(sub, success_url=f"{return_base}/dues/card/done?autopay={sub_id}",
                                     cancel_url=f"{return_base}/dues/card/done?autopay={sub_id}&cancelled=1")
        await db.commit()
    try:
        cs = await billing.create_checkout(params=params, idempotency_key=f"union-subscription-{sub_id}")
    except Exception as exc:  # noqa: BLE001
        log.warning("creating subscription checkout %s failed: %s", sub_id, type(exc).__name__)
        raise BillingUnavailable(_("The card payment service is not answering. Please try again later.")) from None
    async with services.sessions() as db:
        sub = await db.get(CardSubscription, sub_id)
        sub.checkout_session_id = cs["id"]
        sub.updated_at = utcnow()
        await _seed_catch_up(db)
        await db.commit()
    return cs["url"]


async def cancel_autopay(services, *, member_id: int) -> CardSubscription:
    billing = _require_billing(services)
    async with services.reader() as db:
        sub = await active_subscription(db, member_id)
    if sub is None or not sub.stripe_subscription_id:
        raise CardPaymentRefused(_("Monthly auto-pay is not on."))
    try:
        await billing.cancel_subscription(sub.stripe_subscription_id,
                                          idempotency_key=f"union-subscription-{sub.id}-cancel")
    except Exception as exc:  # noqa: BLE001
        log.warning("cancelling subscription %s failed: %s", sub.id, type(exc).__name__)
        raise BillingUnavailable(_("The card payment service is not answering. Please try again later.")) from None
    async with services.sessions() as db:
        sub = await db.get(CardSubscription, sub.id)
        sub.status = SubscriptionStatus.canceled
        sub.updated_at = utcnow()
        await db.commit()
    return sub


async def member_card_payments(session: AsyncSession, member_id: int) -> list[CardPayment]:
    """Card payments that got as far as Stripe (not checkouts left unopened), newest first."""
    return list((await session.execute(
        select(CardPayment).where(CardPayment.member_id == member_id,
                                  CardPayment.status != CardPaymentStatus.pending)
        .order_by(CardPayment.created_at.desc(), CardPayment.id.desc()))).scalars())


# ---------------------------------------------------------------- applying events


@dataclass
class PaymentState:
    payment_intent: dict
    charge: dict | None = None
    balance_transaction: dict | None = None
    refunds: list[dict] = field(default_factory=list)
    disputes: list[dict] = field(default_factory=list)


@dataclass
class Facts:
    """An event and the current state of what it is about, fetched from Stripe."""

    event_id: str
    event_type: str
    created: int
    checkout: dict | None = None
    invoice: dict | None = None
    subscription: dict | None = None
    payment: PaymentState | None = None
    payout: dict | None = None


async def _payment_state(billing, payment_intent_id: str) -> PaymentState:
    pi = await billing.retrieve_payment_intent(payment_intent_id)
    state = PaymentState(payment_intent=pi)
    charge_id = pi.get("latest_charge")
    if isinstance(charge_id, dict):
        charge_id = charge_id.get("id")
    if charge_id:
        state.charge = await billing.retrieve_charge(charge_id)
        txn = state.charge.get("balance_transaction")
        if isinstance(txn, dict):
            txn = txn.get("id")
        if txn and state.charge.get("paid"):
            state.balance_transaction = await billing.retrieve_balance_transaction(txn)
        state.refunds = await billing.list_refunds(charge_id)
        state.disputes = await billing.list_disputes(charge_id)
    return state


def _invoice_payment_intent(invoice: dict) -> str | None:
    if invoice.get("payment_intent"):  # API versions before 2025-03 (basil)
        return invoice["payment_intent"]
    for row in ((invoice.get("payments") or {}).get("data") or []):
        payment = row.get("payment") or {}
        if payment.get("payment_intent"):
            return payment["payment_intent"]
    return None


def _invoice_subscription(invoice: dict) -> tuple[str | None, dict]:
    details = ((invoice.get("parent") or {}).get("subscription_details") or {})
    return details.get("subscription") or invoice.get("subscription"), details.get("metadata") or {}


async def gather(billing, event: dict) -> Facts:
    """Fetch from Stripe what the event is about. No database session may be open (HTTP calls)."""
    obj = (event.get("data") or {}).get("object") or {}
    kind = event.get("type", "")
    facts = Facts(event_id=event["id"], event_type=kind, created=int(event.get("created") or 0))
    if kind.startswith("checkout.session."):
        facts.checkout = await billing.retrieve_checkout(obj["id"])
        if facts.checkout.get("mode") == "payment" and facts.checkout.get("payment_intent"):
            facts.payment = await _payment_state(billing, facts.checkout["payment_intent"])
        if facts.checkout.get("subscription"):
            facts.subscription = await billing.retrieve_subscription(facts.checkout["subscription"])
    elif kind.startswith("payment_intent."):
        facts.payment = await _payment_state(billing, obj["id"])
    elif kind.startswith(("charge.", "refund.")):
        pi = obj.get("payment_intent")
        if not pi and obj.get("charge"):
            pi = (await billing.retrieve_charge(obj["charge"])).get("payment_intent")
        if pi:
            facts.payment = await _payment_state(billing, pi)
    elif kind.startswith("invoice."):
        facts.invoice = await billing.retrieve_invoice(obj["id"])
        pi = _invoice_payment_intent(facts.invoice)
        if pi:
            facts.payment = await _payment_state(billing, pi)
        sub_id, _meta = _invoice_subscription(facts.invoice)
        if sub_id:
            facts.subscription = await billing.retrieve_subscription(sub_id)
    elif kind.startswith("customer.subscription."):
        facts.subscription = await billing.retrieve_subscription(obj["id"])
    elif kind.startswith("payout."):
        facts.payout = await billing.retrieve_payout(obj["id"])
    return facts


async def _by(session: AsyncSession, model, column, value):
    if not value:
        return None
    return (await session.execute(select(model).where(column == value))).scalar_one_or_none()


def _meta_id(metadata: dict | None, name: str) -> int | None:
    value = (metadata or {}).get(name)
    return int(value) if isinstance(value, str) and value.isdigit() else None


async def _subscription_row(session: AsyncSession, *, stripe_id: str | None, metadata: dict | None,
                            checkout_id: str | None = None) -> CardSubscription | None:
    row = await _by(session, CardSubscription, CardSubscription.stripe_subscription_id, stripe_id)
    if row is None and (row_id := _meta_id(metadata, "card_subscription_id")):
        row = await session.get(CardSubscription, row_id)
    if row is None:
        row = await _by(session, CardSubscription, CardSubscription.checkout_session_id, checkout_id)
    return row


_SUBSCRIPTION_STATUS = {"active": SubscriptionStatus.active, "trialing": SubscriptionStatus.active,
                        "past_due": SubscriptionStatus.past_due, "unpaid": SubscriptionStatus.past_due,
                        "canceled": SubscriptionStatus.canceled, "incomplete_expired": SubscriptionStatus.canceled}


def _sync_subscription(row: CardSubscription, sub: dict) -> None:
    row.stripe_subscription_id = row.stripe_subscription_id or sub["id"]
    row.stripe_customer_id = row.stripe_customer_id or sub.get("customer")
    status = _SUBSCRIPTION_STATUS.get(sub.get("status"))
    if status is not None:
        row.status = status
    row.updated_at = utcnow()


async def _payment_row(session: AsyncSession, facts: Facts) -> CardPayment | None:
    """Our row for the payment the facts are about, made for a subscription invoice on first sight."""
    pi = facts.payment.payment_intent if facts.payment else {}
    row = None
    if row_id := _meta_id(pi.get("metadata"), "card_payment_id"):
        row = await session.get(CardPayment, row_id)
    if row is None:
        row = await _by(session, CardPayment, CardPayment.payment_intent_id, pi.get("id"))
    if row is None and facts.checkout is not None and facts.checkout.get("mode") == "payment":
        row = await _by(session, CardPayment, CardPayment.checkout_session_id, facts.checkout["id"])
        if row is None and (row_id := _meta_id(facts.checkout.get("metadata"), "card_payment_id")):
            row = await session.get(CardPayment, row_id)
    if row is None and facts.invoice is not None:
        row = await _by(session, CardPayment, CardPayment.invoice_id, facts.invoice["id"])
        if row is None:
            sub_id, meta = _invoice_subscription(facts.invoice)
            sub = await _subscription_row(session, stripe_id=sub_id, metadata=meta)
            amount = int(facts.invoice.get("amount_paid") or facts.invoice.get("amount_due") or 0)
            if sub is None or amount <= 0:
                return None
            row = CardPayment(member_id=sub.member_id, kind=CardPaymentKind.invoice, months=1, amount_minor=amount,
                              currency=facts.invoice["currency"].upper(), subscription_id=sub.id,
                              invoice_id=facts.invoice["id"], created_at=dt.datetime.fromtimestamp(
                                  int(facts.invoice.get("created") or 0), dt.UTC))
            session.add(row)
            await session.flush()
    return row


async def _apply_payment(session: AsyncSession, row: CardPayment, state: PaymentState) -> None:
    pi, charge = state.payment_intent, state.charge
    row.payment_intent_id = row.payment_intent_id or pi["id"]
    succeeded = bool(charge and charge.get("paid") and charge.get("status") == "succeeded")
    if charge is not None and (succeeded or not row.charge_id):
        row.charge_id = charge["id"]
    if succeeded:
        currency = charge["currency"].upper()
        day = _day(charge.get("created"))
        entry = await post_card_payment(session, member_id=row.member_id, amount=_money(charge["amount"], currency),
                                        charge_id=charge["id"], effective_date=day)
        row.entry_id = entry.id
        txn = state.balance_transaction
        if txn and int(txn.get("fee") or 0) > 0:
            await post_card_fee(session, fee=_money(txn["fee"], txn["currency"]), charge_id=charge["id"],
                                effective_date=_day(txn.get("created")) if txn.get("created") else day)
            row.fee_minor = int(txn["fee"])
        refunded = 0
        for refund in state.refunds:
            if refund.get("status") in ("succeeded", "pending") and int(refund.get("amount") or 0) > 0:
                await post_card_refund(session, member_id=row.member_id,
                                       amount=_money(refund["amount"], refund.get("currency") or currency),
                                       refund_id=refund["id"], charge_id=charge["id"],
                                       effective_date=_day(refund.get("created")))
                refunded += int(refund["amount"])
        disputed = 0
        for dispute in state.disputes:
            if dispute.get("status") in _INQUIRY_STATES or int(dispute.get("amount") or 0) <= 0:
                continue
            amount = _money(dispute["amount"], dispute.get("currency") or currency)
            await post_card_dispute(session, member_id=row.member_id, amount=amount, dispute_id=dispute["id"],
                                    charge_id=charge["id"], effective_date=_day(dispute.get("created")))
            # Stripe's dispute fee (and any fee it gives back when the dispute is won), from the dispute's
            # balance transactions: the withdrawal takes money out of the balance, the reinstatement puts it back.
            for txn in dispute.get("balance_transactions") or []:
                if isinstance(txn, dict) and int(txn.get("fee") or 0):
                    await post_card_dispute_fee(
                        session, fee=_money(txn["fee"], txn.get("currency") or currency), dispute_id=dispute["id"],
                        stage="withdrawn" if int(txn.get("amount") or 0) < 0 else "reinstated",
                        effective_date=_day(txn.get("created") or dispute.get("created")))
            if dispute.get("status") == "won":
                # Dated when Stripe gave the money back (its reversal balance transaction), if it says.
                back = [t for t in dispute.get("balance_transactions") or []
                        if isinstance(t, dict) and int(t.get("amount") or 0) > 0]
                await post_card_dispute_won(session, member_id=row.member_id, amount=amount, dispute_id=dispute["id"],
                                            charge_id=charge["id"], effective_date=_day(
                                                (back[-1] if back else dispute).get("created")))
            else:
                disputed += amount.amount_minor
        row.refunded_minor, row.disputed_minor = refunded, disputed
        row.failure_message = ""
        if disputed:
            row.status = CardPaymentStatus.disputed
        elif refunded >= int(charge["amount"]):
            row.status = CardPaymentStatus.refunded
        elif refunded:
            row.status = CardPaymentStatus.partially_refunded
        else:
            row.status = CardPaymentStatus.succeeded
    elif row.status in (CardPaymentStatus.pending, CardPaymentStatus.failed):
        error = pi.get("last_payment_error") or {}
        message = error.get("message") or (charge or {}).get("failure_message")
        if message or (charge is not None and charge.get("status") == "failed"):
            row.status = CardPaymentStatus.failed
            row.failure_message = str(message or "")[:500]
    row.updated_at = utcnow()


async def apply_event(session: AsyncSession, *, facts: Facts) -> str:
    """Apply one event's facts in the caller's transaction. Returns "applied", "ignored", "duplicate",
    or "unresolved" (not recorded: what it is about is not known to us yet; retry later). Flushes."""
    await lock_head(session)  # concurrent deliveries of one event queue here, on both databases
    if await session.get(StripeEvent, facts.event_id) is not None:
        return "duplicate"
    outcome = "ignored"
    if facts.checkout is not None:
        cs = facts.checkout
        if cs.get("mode") == "subscription":
            sub = await _subscription_row(session, stripe_id=cs.get("subscription"), metadata=cs.get("metadata"),
                                          checkout_id=cs["id"])
            if sub is not None and facts.subscription is not None:
                _sync_subscription(sub, facts.subscription)
                outcome = "applied"
        else:
            row = await _by(session, CardPayment, CardPayment.checkout_session_id, cs["id"])
            if row is None and (row_id := _meta_id(cs.get("metadata"), "card_payment_id")):
                row = await session.get(CardPayment, row_id)
            if row is not None and cs.get("status") == "expired" and row.status == CardPaymentStatus.pending:
                row.status = CardPaymentStatus.expired
                row.updated_at = utcnow()
                outcome = "applied"
    if facts.subscription is not None and facts.checkout is None:
        sub_id, meta = (facts.subscription["id"], facts.subscription.get("metadata"))
        sub = await _subscription_row(session, stripe_id=sub_id, metadata=meta)
        if sub is not None:
            _sync_subscription(sub, facts.subscription)
            outcome = "applied"
    if facts.payout is not None:
        payout = facts.payout
        # Only a payout that reached the bank moves money there; a failed or cancelled one never does.
        if payout.get("status") == "paid" and int(payout.get("amount") or 0) > 0:
            await post_card_payout(session, amount=_money(payout["amount"], payout["currency"]),
                                   payout_id=payout["id"],
                                   effective_date=_day(payout.get("arrival_date") or payout.get("created")))
            outcome = "applied"
    if facts.payment is not None or facts.invoice is not None:
        row = await _payment_row(session, facts) if facts.payment is not None else None
        if row is None:
            if facts.payment is not None and (facts.payment.charge or {}).get("paid"):
                return "unresolved"  # money moved for a payment we cannot place yet: park it, do not drop it
        else:
            await _apply_payment(session, row, facts.payment)
            outcome = "applied"
    session.add(StripeEvent(id=facts.event_id, type=facts.event_type[:100],
                            stripe_created=dt.datetime.fromtimestamp(facts.created, dt.UTC), outcome=outcome))
    await session.flush()
    return outcome


async def _is_recorded(services, event_id: str) -> bool:
    async with services.reader() as db:
        return await db.get(StripeEvent, event_id) is not None


async def receive_event(services, event: dict) -> str:
    """The webhook's work for one verified event: gather (no session), then apply in one transaction.
    An event that cannot be fetched or placed yet is parked as due work and retried."""
    billing = _require_billing(services)
    if await _is_recorded(services, event["id"]):
        return "duplicate"
    try:
        facts = await gather(billing, event)
    except Exception as exc:  # noqa: BLE001 - Stripe unreachable: park it, answer 200, retry from the row
        log.warning("fetching the state of stripe event %s failed: %s", event["id"], type(exc).__name__)
        facts = None
    async with services.sessions() as db:
        try:
            outcome = await apply_event(db, facts=facts) if facts is not None else "unresolved"
            if outcome == "unresolved":
                await db.rollback()
                work = await jobs.schedule(db, kind="stripe.event", key=f"stripe.event:{event['id']}",
                                           payload={"event_id": event["id"]},
                                           due_at=utcnow() + dt.timedelta(seconds=30), max_attempts=20)
                await jobs.commit_and_nudge(db, services.jobs, [work])
                return "parked"
            await db.commit()
        except IntegrityError:
            # A concurrent delivery of the same event committed first (its stripe_event row won).
            await db.rollback()
            return "duplicate"
    return outcome


# ---------------------------------------------------------------- catch-up after downtime


async def _catch_up_since(session: AsyncSession) -> dt.datetime:
    newest = (await session.execute(select(func.max(StripeEvent.stripe_created)))).scalar_one_or_none()
    if newest is None:
        return utcnow() - CATCH_UP_FIRST_WINDOW
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=dt.UTC)
    return newest - CATCH_UP_OVERLAP


async def catch_up(services, *, since: dt.datetime | None = None) -> dict[str, int]:
    """List Stripe's events since the newest applied (less an overlap) and apply those not yet seen,
    oldest first, through the same path as the webhook. Returns counts by outcome."""
    billing = _require_billing(services)
    if since is None:
        async with services.reader() as db:
            since = await _catch_up_since(db)
    events = await billing.list_events(created_gte=int(since.timestamp()))
    counts: dict[str, int] = {}
    for event in sorted(events, key=lambda e: (e.get("created") or 0)):
        outcome = await receive_event(services, event)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _slot(at: dt.datetime) -> str:
    return at.strftime("%Y%m%dT%H")


async def _seed_catch_up(session: AsyncSession):
    """Make sure an hourly catch-up is scheduled (each run schedules the next; idempotent by slot key).
    A savepoint: a concurrent transaction scheduling the same slot must not fail the caller's work."""
    due = utcnow() + CATCH_UP_EVERY
    try:
        async with session.begin_nested():
            return await jobs.schedule(session, kind="stripe.catch_up", key=f"stripe.catch_up:{_slot(due)}",
                                       due_at=due)
    except IntegrityError:
        return None



async def ensure_catch_up(services) -> None:
    """Idempotent: make sure the hourly catch-up chain is scheduled (for a periodic start-up/hourly hook)."""
    if billing_of(services) is None:
        return
    async with services.sessions() as db:
        await _seed_catch_up(db)
        await db.commit()
