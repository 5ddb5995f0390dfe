"""The billing backend of card payments: a small Protocol, the real Stripe SDK
behind it (`StripeBilling`), and `LocalBilling`, the same SDK pointed at the
in-process Stripe stand-in (dues.stripe_standin) for the demo.

Every call uses the SDK's async methods over its httpx client (never the
blocking ones on the event loop) and returns plain dicts, so the card services
can be tested with dicts too. Calls that create something carry an idempotency
key derived from our own row ("union-checkout-<id>"), so a retry after a lost
answer never makes a second checkout.
"""

from __future__ import annotations

import secrets
from typing import Protocol

import stripe

from union.services import SERVICE_EXTENSIONS

WEBHOOK_TOLERANCE_SECONDS = 300
LOCAL_API_BASE = "http://stripe-standin.invalid"
STANDIN_MOUNT = "/stripe-test"


class Billing(Protocol):
    test_mode: bool

    def construct_event(self, payload: bytes, signature: str | None) -> dict:
        """The verified event, or stripe.SignatureVerificationError / ValueError."""

    async def create_checkout(self, *, params: dict, idempotency_key: str) -> dict: ...
    async def retrieve_checkout(self, session_id: str) -> dict: ...
    async def retrieve_payment_intent(self, payment_intent_id: str) -> dict: ...
    async def retrieve_charge(self, charge_id: str) -> dict: ...
    async def retrieve_balance_transaction(self, txn_id: str) -> dict: ...
    async def list_refunds(self, charge_id: str) -> list[dict]: ...
    async def list_disputes(self, charge_id: str) -> list[dict]: ...
    async def retrieve_invoice(self, invoice_id: str) -> dict: ...
    async def retrieve_subscription(self, subscription_id: str) -> dict: ...
    async def cancel_subscription(self, subscription_id: str, *, idempotency_key: str) -> dict: ...
    async def retrieve_event(self, event_id: str) -> dict: ...
    async def list_events(self, *, created_gte: int) -> list[dict]: ...
    async def retrieve_payout(self, payout_id: str) -> dict: ...
    async def list_payouts(self, *, created_gte: int, created_lt: int) -> list[dict]: ...
    async def list_balance_transactions(self, *, created_gte: int, created_lt: int) -> list[dict]: ...
    async def close(self) -> None: ...


def _plain(obj) -> dict:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


class StripeBilling:
    """The real Stripe API through the official SDK (`stripe.StripeClient`)."""

    test_mode = False

    def __init__(self, *, api_key: str, webhook_secret: str | None, api_base: str | None = None,
                 http_client: stripe.HTTPXClient | None = None, timeout: float = 20.0):
        self.webhook_secret = webhook_secret
        self.http_client = http_client or stripe.HTTPXClient(timeout=timeout)
        base = {"api": api_base} if api_base else None
        self.client = stripe.StripeClient(api_key, base_addresses=base, http_client=self.http_client,
                                          max_network_retries=2)
        self.v1 = self.client.v1

    def construct_event(self, payload: bytes, signature: str | None) -> dict:
        if not self.webhook_secret:
            raise ValueError("no webhook secret is configured (UNION_STRIPE_WEBHOOK_SECRET)")
        event = self.client.construct_event(payload, signature, self.webhook_secret,
                                            tolerance=WEBHOOK_TOLERANCE_SECONDS)
        return _plain(event)

    async def create_checkout(self, *, params: dict, idempotency_key: str) -> dict:
        return _plain(await self.v1.checkout.sessions.create_async(
            params=params, options={"idempotency_key": idempotency_key}))

    async def retrieve_checkout(self, session_id: str) -> dict:
        return _plain(await self.v1.checkout.sessions.retrieve_async(session_id))

    async def retrieve_payment_intent(self, payment_intent_id: str) -> dict:
        return _plain(await self.v1.payment_intents.retrieve_async(payment_intent_id))

    async def retrieve_charge(self, charge_id: str) -> dict:
        return _plain(await self.v1.charges.retrieve_async(charge_id))

    async def retrieve_balance_transaction(self, txn_id: str) -> dict:
        return _plain(await self.v1.balance_transactions.retrieve_async(txn_id))

    async def _all(self, page) -> list[dict]:
        return [_plain(item) async for item in page.auto_paging_iter()]

    async def list_refunds(self, charge_id: str) -> list[dict]:
        return await self._all(await self.v1.refunds.list_async(params={"charge": charge_id, "limit": 100}))

    async def list_disputes(self, charge_id: str) -> list[dict]:
        return await self._all(await self.v1.disputes.list_async(params={"charge": charge_id, "limit": 100}))

    async def retrieve_invoice(self, invoice_id: str) -> dict:
        # Since API version 2025-03-31 (basil) an invoice's payment intent is in `payments`, included on request.
        return _plain(await self.v1.invoices.retrieve_async(invoice_id, params={"expand": ["payments"]}))

    async def retrieve_subscription(self, subscription_id: str) -> dict:
        return _plain(await self.v1.subscriptions.retrieve_async(subscription_id))

    async def cancel_subscription(self, subscription_id: str, *, idempotency_key: str) -> dict:
        return _plain(await self.v1.subscriptions.cancel_async(
            subscription_id, options={"idempotency_key": idempotency_key}))

    async def retrieve_event(self, event_id: str) -> dict:
        return _plain(await self.v1.events.retrieve_async(event_id))

    async def list_events(self, *, created_gte: int) -> list[dict]:
        return await self._all(await self.v1.events.list_async(
            params={"created": {"gte": int(created_gte)}, "limit": 100}))

    async def retrieve_payout(self, payout_id: str) -> dict:
        return _plain(await self.v1.payouts.retrieve_async(payout_id))

    async def list_payouts(self, *, created_gte: int, created_lt: int) -> list[dict]:
        """Every payout created in [gte, lt) (Unix seconds), all pages."""
        return await self._all(await self.v1.payouts.list_async(
            params={"created": {"gte": int(created_gte), "lt": int(created_lt)}, "limit": 100}))

    async def list_balance_transactions(self, *, created_gte: int, created_lt: int) -> list[dict]:
        """Every balance transaction (charges, refunds, dispute adjustments, payouts...) created in [gte, lt)."""
        return await self._all(await self.v1.balance_transactions.list_async(
            params={"created": {"gte": int(created_gte), "lt": int(created_lt)}, "limit": 100}))

    async def close(self) -> None:
        await self.http_client._client_async.aclose()


class LocalBilling(StripeBilling):
    """The demo's billing backend when no Stripe key is set: the real SDK talking to
    the in-process stand-in through an httpx ASGI transport. Every page says TEST MODE."""

    test_mode = True

    def __init__(self, standin, *, webhook_secret: str):
        import httpx

        http_client = stripe.HTTPXClient(timeout=20.0)
        # The SDK builds its own AsyncClient; swap it for one that reaches the stand-in app in-process.
        http_client._client_async = httpx.AsyncClient(transport=httpx.ASGITransport(app=standin.app))
        super().__init__(api_key="sk_test_local_standin", webhook_secret=webhook_secret, api_base=LOCAL_API_BASE,
                         http_client=http_client)
        self.standin = standin


def build_billing(settings) -> Billing | None:
    """StripeBilling with a key; LocalBilling in test mode without one; otherwise None (card payments off)."""
    if settings.stripe_api_key:
        return StripeBilling(api_key=settings.stripe_api_key, webhook_secret=settings.stripe_webhook_secret,
                             api_base=settings.stripe_api_base)
    if settings.stripe_test_mode:
        from dues.stripe_standin import StripeStandin

        secret = settings.stripe_webhook_secret or "whsec_" + secrets.token_hex(16)
        standin = StripeStandin(webhook_secret=secret, public_base=STANDIN_MOUNT)
        return LocalBilling(standin, webhook_secret=secret)
    return None


def extend_services(services) -> None:
    services.extras["billing"] = build_billing(services.settings)


SERVICE_EXTENSIONS.append(extend_services)
