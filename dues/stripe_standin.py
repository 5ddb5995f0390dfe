"""A local stand-in for the part of the Stripe API the card payments use, so that
the real `stripe` SDK can be exercised without the internet: in tests it runs as
a real HTTP server; in the demo (no Stripe key) it is the billing backend itself,
mounted at /stripe-test/ in the app.

It keeps objects in memory with Stripe's JSON shapes (checkout sessions,
payment intents, charges with balance transactions and a fee of 2 % + ₹3,
refunds and disputes with theirs, payouts of the balance to the bank, customers,
subscriptions and their invoices, events), honours
Idempotency-Key on creation, and serves a clearly marked TEST MODE payment page
at each checkout's URL. Paying there (or calling the simulation methods from a
test) makes the charge and its events, and delivers them signed exactly as
Stripe signs webhooks (`stripe.WebhookSignature`) to `webhook_url` (HTTP) or
`webhook_app` (in-process ASGI).
"""

from __future__ import annotations

import html
import json
import re
import secrets
import threading
import time
from urllib.parse import parse_qsl

import httpx
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

API_VERSION = stripe.api_version  # the version the pinned SDK speaks
DECLINE_CARD = "4000000000000002"
DISPUTE_FEE_MINOR = 1500  # the stand-in's dispute fee, in the charge's minor units (Stripe's is $15 in the US)


def _id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_hex(12)}"


def decode_form(pairs) -> dict:
    """Stripe's form encoding (`a[b][0][c]=v`) into nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node):
    if isinstance(node, dict):
        if node and all(k.isdigit() for k in node):
            return [_listify(node[k]) for k in sorted(node, key=int)]
        return {k: _listify(v) for k, v in node.items()}
    return node


def stripe_error(status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None):
    return JSONResponse({"error": {"type": type_, "message": message, "code": code}}, status_code=status)


class StripeStandin:
    def __init__(self, *, webhook_secret: str, public_base: str = "", fee_percent: float = 2.0,
                 fee_fixed_minor: int = 300):
        self.webhook_secret = webhook_secret
        self.public_base = public_base  # where browsers reach the pay pages (URL or path prefix)
        self.fee_percent = fee_percent
        self.fee_fixed_minor = fee_fixed_minor
        self.webhook_url: str | None = None
        self.webhook_app = None  # an ASGI app to deliver to in-process (the demo)
        self.deliver_automatically = True
        self.objects: dict[str, dict] = {}
        self.events: list[dict] = []
        self.idempotent: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, headers) as received
        self.lock = threading.RLock()
        self.app = Starlette(routes=[
            Route("/v1/checkout/sessions", self._create_checkout, methods=["POST"]),
            Route("/v1/checkout/sessions/{id}", self._retrieve, methods=["GET"]),
            Route("/v1/payment_intents/{id}", self._retrieve, methods=["GET"]),
            Route("/v1/charges/{id}", self._retrieve, methods=["GET"]),
            Route("/v1/balance_transactions", self._list_created("balance_transaction"), methods=["GET"]),
            Route("/v1/balance_transactions/{id}", self._retrieve, methods=["GET"]),
            Route("/v1/payouts", self._list_created("payout"), methods=["GET"]),
            Route("/v1/payouts", self._create_payout, methods=["POST"]),
            Route("/v1/payouts/{id}", self._retrieve, methods=["GET"]),
            Route("/v1/refunds/{id}", self._retrieve, methods=["GET"]),
            Route("/v1/disputes/{id}", self._retrieve, methods=["GET"]),
            Route("/v1/invoices/{id}", self._retrieve, methods=["GET"]),
            Route("/v1/customers/{id}", self._retrieve, methods=["GET"]),
            Route("/v1/subscriptions/{id}", self._retrieve, methods=["GET"]),
            Route("/v1/subscriptions/{id}", self._cancel_subscription, methods=["DELETE"]),
            Route("/v1/events/{id}", self._retrieve, methods=["GET"]),
            Route("/v1/events", self._list_events, methods=["GET"]),
            Route("/v1/refunds", self._list_by_charge("refund"), methods=["GET"]),
            Route("/v1/disputes", self._list_by_charge("dispute"), methods=["GET"]),
            Route("/pay/{id}", self._pay_page, methods=["GET", "POST"]),
        ])

    # ------------------------------------------------------------------ objects and events

    def _put(self, obj: dict) -> dict:
        with self.lock:
            self.objects[obj["id"]] = obj
        return obj

    def get(self, object_id: str) -> dict:
        with self.lock:
            return json.loads(json.dumps(self.objects[object_id]))

    def _event(self, type_: str, obj: dict, *, created: int | None = None) -> dict:
        event = {"id": _id("evt"), "object": "event", "api_version": API_VERSION,
                 "created": created or int(time.time()), "type": type_, "livemode": False,
                 "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
                 "data": {"object": json.loads(json.dumps(obj))}}
        with self.lock:
            self.events.append(event)
            self.objects[event["id"]] = event
        return event

    def signed(self, event: dict, *, timestamp: int | None = None, secret: str | None = None) -> tuple[bytes, str]:
        """The body and Stripe-Signature header Stripe would send for this event."""
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(payload, secret or self.webhook_secret,
                                                                   timestamp=timestamp)
        return payload.encode(), header

    async def deliver(self, events: list[dict]) -> list[int]:
        """Send each event to the webhook (like Stripe: one POST each); returns the statuses."""
        statuses = []
        if self.webhook_app is not None:
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.webhook_app),
                                       base_url="http://union.invalid")
            path = "/dues/stripe/webhook"
        elif self.webhook_url:
            client, path = httpx.AsyncClient(timeout=30), self.webhook_url
        else:
            return statuses
        async with client:
            for event in events:
                body, header = self.signed(event)
                try:
                    r = await client.post(path, content=body, headers={"Stripe-Signature": header,
                                                                       "Content-Type": "application/json"})
                    statuses.append(r.status_code)
                except httpx.HTTPError:
                    statuses.append(0)  # missed; the app's catch-up job finds it in the events list
        return statuses

    # ------------------------------------------------------------------ simulations (tests and the pay page)

    def _txn(self, *, amount: int, currency: str, type_: str, source: str, category: str, fee: int = 0,
             description: str | None = None) -> dict:
        """A balance transaction: how an object moved the Stripe balance (amount, Stripe's fee, net)."""
        now = int(time.time())
        fee_details = [{"amount": fee, "application": None, "currency": currency, "type": "stripe_fee",
                        "description": "Stripe processing fees"}] if fee else []
        return self._put({"id": _id("txn"), "object": "balance_transaction", "amount": amount, "fee": fee,
                          "net": amount - fee, "currency": currency, "type": type_, "source": source,
                          "status": "available", "created": now, "available_on": now, "description": description,
                          "exchange_rate": None, "reporting_category": category, "fee_details": fee_details})

    def balance(self) -> int:
        """The Stripe balance: the net of every balance transaction (payouts included, negative)."""
        with self.lock:
            return sum(o["net"] for o in self.objects.values() if o.get("object") == "balance_transaction")

    def create_payout(self, amount: int | None = None, *, currency: str = "inr", paid: bool = True,
                      description: str | None = "STRIPE PAYOUT") -> list[dict]:
        """Stripe pays (part of) the balance out to the union's bank account: the payout, its balance
        transaction (type "payout", negative), `payout.created` and, when `paid`, `payout.paid`.
        ValueError when the amount is not positive or more than the balance."""
        with self.lock:
            amount = self.balance() if amount is None else int(amount)
            if amount <= 0 or amount > self.balance():
                raise ValueError("balance_insufficient")
            now = int(time.time())
            payout = {"id": _id("po"), "object": "payout", "amount": amount, "arrival_date": now,
                      "automatic": False, "balance_transaction": None, "created": now, "currency": currency,
                      "description": description, "destination": "ba_test_union_bank",
                      "failure_balance_transaction": None, "failure_code": None, "failure_message": None,
                      "livemode": False, "metadata": {}, "method": "standard", "original_payout": None,
                      "reconciliation_status": "completed", "reversed_by": None, "source_type": "card",
                      "statement_descriptor": None, "status": "pending", "type": "bank_account"}
            txn = self._txn(amount=-amount, currency=currency, type_="payout", source=payout["id"], category="payout",
                            description=description)
            payout["balance_transaction"] = txn["id"]
            self._put(payout)
            events = [self._event("payout.created", payout)]
            if paid:
                events += self.pay_payout(payout["id"])
            return events

    def pay_payout(self, payout_id: str) -> list[dict]:
        """The payout arrives in the bank: status paid and `payout.paid`."""
        with self.lock:
            payout = self.objects[payout_id]
            if payout["status"] == "paid":
                return []
            payout["status"] = "paid"
            return [self._event("payout.paid", payout)]

    def _fee(self, amount: int) -> int:
        return int(round(amount * self.fee_percent / 100)) + self.fee_fixed_minor

    def _charge(self, *, amount: int, currency: str, metadata: dict, customer: str | None, succeed: bool):
        now = int(time.time())
        pi = {"id": _id("pi"), "object": "payment_intent", "amount": amount, "currency": currency,
              "status": "succeeded" if succeed else "requires_payment_method", "metadata": dict(metadata),
              "customer": customer, "created": now, "latest_charge": None, "last_payment_error": None}
        charge = {"id": _id("ch"), "object": "charge", "amount": amount, "amount_captured": amount if succeed else 0,
                  "amount_refunded": 0, "currency": currency, "paid": succeed, "captured": succeed,
                  "status": "succeeded" if succeed else "failed", "refunded": False, "disputed": False,
                  "payment_intent": pi["id"], "customer": customer, "metadata": dict(metadata), "created": now,
                  "balance_transaction": None, "failure_code": None if succeed else "card_declined",
                  "failure_message": None if succeed else "Your card was declined."}
        pi["latest_charge"] = charge["id"]
        if succeed:
            txn = self._txn(amount=amount, currency=currency, type_="charge", source=charge["id"], category="charge",
                            fee=self._fee(amount))
            charge["balance_transaction"] = txn["id"]
        else:
            pi["last_payment_error"] = {"type": "card_error", "code": "card_declined",
                                        "message": "Your card was declined.", "charge": charge["id"]}
        return self._put(pi), self._put(charge)

    def complete_checkout(self, session_id: str, *, succeed: bool = True) -> list[dict]:
        """The customer pays on the checkout page; returns the events Stripe would send."""
        with self.lock:
            cs = self.objects[session_id]
            if cs["status"] != "open":
                return []
            events = []
            metadata = cs.get("metadata") or {}
            if cs["mode"] == "payment":
                pi, charge = self._charge(amount=cs["amount_total"], currency=cs["currency"],
                                          metadata=(cs.get("payment_intent_data") or {}).get("metadata") or metadata,
                                          customer=None, succeed=succeed)
                cs["payment_intent"] = pi["id"]
                if not succeed:
                    events += [self._event("payment_intent.payment_failed", pi), self._event("charge.failed", charge)]
                    return events
                cs.update(status="complete", payment_status="paid")
                events += [self._event("charge.succeeded", charge), self._event("payment_intent.succeeded", pi),
                           self._event("checkout.session.completed", cs)]
                return events
            # subscription mode
            if not succeed:
                return []  # Checkout keeps the customer on the page until a card works
            customer = self._put({"id": _id("cus"), "object": "customer", "created": int(time.time()),
                                  "metadata": {}})
            sub_meta = (cs.get("subscription_data") or {}).get("metadata") or metadata
            item = (cs.get("line_items") or [{}])[0]
            sub = self._put({"id": _id("sub"), "object": "subscription", "status": "active",
                             "customer": customer["id"], "metadata": dict(sub_meta), "created": int(time.time()),
                             "currency": cs["currency"], "amount": cs["amount_total"],
                             "items": {"object": "list", "data": [{"object": "subscription_item",
                                                                   "price": item.get("price_data")}]}})
            cs.update(status="complete", payment_status="paid", customer=customer["id"], subscription=sub["id"])
            events.append(self._event("customer.subscription.created", sub))
            events += self._invoice(sub, succeed=True)
            events.append(self._event("checkout.session.completed", cs))
            return events

    def _invoice(self, sub: dict, *, succeed: bool) -> list[dict]:
        pi, charge = self._charge(amount=sub["amount"], currency=sub["currency"], metadata={},
                                  customer=sub["customer"], succeed=succeed)
        invoice = self._put({
            "id": _id("in"), "object": "invoice", "status": "paid" if succeed else "open",
            "amount_due": sub["amount"], "amount_paid": sub["amount"] if succeed else 0, "currency": sub["currency"],
            "customer": sub["customer"], "created": int(time.time()), "billing_reason": "subscription_cycle",
            "parent": {"type": "subscription_details", "quote_details": None,
                       "subscription_details": {"subscription": sub["id"], "metadata": dict(sub["metadata"])}},
            "payments": {"object": "list", "data": [{"object": "invoice_payment", "status": "paid" if succeed else "open",
                                                     "payment": {"type": "payment_intent",
                                                                 "payment_intent": pi["id"]}}]}})
        if succeed:
            return [self._event("charge.succeeded", charge), self._event("invoice.paid", invoice)]
        with self.lock:
            sub["status"] = "past_due"
        return [self._event("charge.failed", charge), self._event("invoice.payment_failed", invoice),
                self._event("customer.subscription.updated", sub)]

    def renew_subscription(self, subscription_id: str, *, succeed: bool = True) -> list[dict]:
        """A month later: the subscription's next invoice is paid (or the card declines)."""
        with self.lock:
            sub = self.objects[subscription_id]
            if succeed and sub["status"] == "past_due":
                sub["status"] = "active"
            return self._invoice(sub, succeed=succeed)

    def refund(self, charge_id: str, amount: int | None = None) -> list[dict]:
        with self.lock:
            charge = self.objects[charge_id]
            amount = amount or charge["amount"] - charge["amount_refunded"]
            refund = {"id": _id("re"), "object": "refund", "amount": amount, "charge": charge_id,
                      "payment_intent": charge["payment_intent"], "currency": charge["currency"],
                      "status": "succeeded", "created": int(time.time()), "balance_transaction": None}
            refund["balance_transaction"] = self._txn(amount=-amount, currency=charge["currency"], type_="refund",
                                                      source=refund["id"], category="refund")["id"]
            self._put(refund)
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            return [self._event("refund.created", refund), self._event("charge.refunded", charge)]

    def dispute(self, charge_id: str) -> list[dict]:
        with self.lock:
            charge = self.objects[charge_id]
            dispute = {"id": _id("dp"), "object": "dispute", "amount": charge["amount"],
                       "charge": charge_id, "payment_intent": charge["payment_intent"],
                       "currency": charge["currency"], "status": "needs_response", "reason": "fraudulent",
                       "created": int(time.time()), "balance_transactions": []}
            # The disputed amount is withdrawn from the balance, with Stripe's dispute fee (kept if won).
            dispute["balance_transactions"].append(self._txn(
                amount=-charge["amount"], currency=charge["currency"], type_="adjustment", source=dispute["id"],
                category="dispute", fee=DISPUTE_FEE_MINOR, description=f"Chargeback withdrawal for {charge_id}"))
            self._put(dispute)
            charge["disputed"] = True
            return [self._event("charge.dispute.created", dispute)]

    def close_dispute(self, dispute_id: str, *, won: bool) -> list[dict]:
        with self.lock:
            dispute = self.objects[dispute_id]
            dispute["status"] = "won" if won else "lost"
            if won:
                dispute["balance_transactions"].append(self._txn(
                    amount=dispute["amount"], currency=dispute["currency"], type_="adjustment", source=dispute["id"],
                    category="dispute_reversal", description=f"Chargeback reversal for {dispute['charge']}"))
            return [self._event("charge.dispute.closed", dispute)]

    def expire_checkout(self, session_id: str) -> list[dict]:
        with self.lock:
            cs = self.objects[session_id]
            if cs["status"] != "open":
                return []
            cs["status"] = "expired"
            return [self._event("checkout.session.expired", cs)]

    # ------------------------------------------------------------------ the HTTP API

    def _authorised(self, request: Request) -> bool:
        return request.headers.get("authorization", "").startswith("Bearer sk_")

    async def _create(self, request: Request, create) -> Response:
        """A creating POST as Stripe answers it: the API key checked, the request recorded, a replayed
        idempotency key answered with the first answer. `create(params)` returns the new object's body
        (kept under the key) and the events to deliver after it, or an error response."""
        if not self._authorised(request):
            return stripe_error(401, "Invalid API Key provided.")
        self.requests.append((request.method, request.url.path, dict(request.headers)))
        key = request.headers.get("idempotency-key")
        with self.lock:
            if key and key in self.idempotent:
                return JSONResponse(self.idempotent[key])
        made = create(decode_form(parse_qsl((await request.body()).decode(), keep_blank_values=True)))
        if isinstance(made, Response):
            return made
        body, events = made
        with self.lock:
            if key:
                self.idempotent[key] = body
        if events and self.deliver_automatically:
            await self.deliver(events)
        return JSONResponse(body)

    async def _create_checkout(self, request: Request) -> Response:
        return await self._create(request, self._new_checkout)

    def _new_checkout(self, params: dict):
        mode = params.get("mode", "payment")
        items = params.get("line_items") or []
        if not items or mode not in ("payment", "subscription"):
            return stripe_error(400, "Missing required param: line_items.")
        total, currency = 0, None
        for item in items:
            price = item.get("price_data") or {}
            try:
                total += int(price["unit_amount"]) * int(item.get("quantity", 1))
            except (KeyError, ValueError):
                return stripe_error(400, "Invalid line_items[price_data][unit_amount].")
            currency = price.get("currency", "inr")
        session_id = _id("cs")
        cs = {"id": session_id, "object": "checkout.session", "mode": mode, "status": "open",
              "payment_status": "unpaid", "amount_total": total, "currency": currency,
              "url": f"{self.public_base}/pay/{session_id}", "success_url": params.get("success_url"),
              "cancel_url": params.get("cancel_url"), "client_reference_id": params.get("client_reference_id"),
              "metadata": params.get("metadata") or {}, "payment_intent": None, "subscription": None,
              "customer": None, "created": int(time.time()), "expires_at": int(time.time()) + 86400,
              "livemode": False, "line_items": items,
              "payment_intent_data": params.get("payment_intent_data") or {},
              "subscription_data": params.get("subscription_data") or {}}
        self._put(cs)
        return self._public(cs), []

    def _public(self, obj: dict) -> dict:
        if obj.get("object") == "checkout.session":
            return {k: v for k, v in obj.items() if k not in ("line_items", "payment_intent_data", "subscription_data")}
        return obj

    async def _retrieve(self, request: Request) -> Response:
        if not self._authorised(request):
            return stripe_error(401, "Invalid API Key provided.")
        self.requests.append((request.method, request.url.path, dict(request.headers)))
        object_id = request.path_params["id"]
        with self.lock:
            obj = self.objects.get(object_id)
            obj = json.loads(json.dumps(self._public(obj))) if obj else None
        if obj is None:
            return stripe_error(404, f"No such object: '{object_id}'", code="resource_missing")
        return JSONResponse(obj)

    async def _cancel_subscription(self, request: Request) -> Response:
        if not self._authorised(request):
            return stripe_error(401, "Invalid API Key provided.")
        with self.lock:
            sub = self.objects.get(request.path_params["id"])
            if sub is None or sub.get("object") != "subscription":
                return stripe_error(404, "No such subscription", code="resource_missing")
            if sub["status"] != "canceled":
                sub["status"] = "canceled"
                self._event("customer.subscription.deleted", sub)
            return JSONResponse(json.loads(json.dumps(sub)))

    def _list_by_charge(self, kind: str):
        async def endpoint(request: Request) -> Response:
            if not self._authorised(request):
                return stripe_error(401, "Invalid API Key provided.")
            charge = request.query_params.get("charge")
            with self.lock:
                found = [json.loads(json.dumps(o)) for o in self.objects.values()
                         if o.get("object") == kind and (charge is None or o.get("charge") == charge)]
            found.sort(key=lambda o: o["created"], reverse=True)
            return JSONResponse({"object": "list", "data": found, "has_more": False, "url": f"/v1/{kind}s"})
        return endpoint

    def _list_created(self, kind: str):
        """A list endpoint like Stripe's: newest first, `created[gte|gt|lte|lt]`, `limit`, `starting_after`,
        and for balance transactions `type`, `source` and `payout`."""
        async def endpoint(request: Request) -> Response:
            if not self._authorised(request):
                return stripe_error(401, "Invalid API Key provided.")
            self.requests.append((request.method, request.url.path, dict(request.headers)))
            params = decode_form(request.query_params.multi_items())
            try:
                limit = min(max(int(params.get("limit", 10)), 1), 100)
                created = params.get("created") or {}
                if not isinstance(created, dict):
                    created = {"eq": created}
                bounds = {op: int(v) for op, v in created.items()}
            except ValueError:
                return stripe_error(400, "Invalid integer.")
            tests = {"gte": lambda c, v: c >= v, "gt": lambda c, v: c > v, "lte": lambda c, v: c <= v,
                     "lt": lambda c, v: c < v, "eq": lambda c, v: c == v}
            if set(bounds) - set(tests):
                return stripe_error(400, "Invalid created filter.")
            with self.lock:
                found = [json.loads(json.dumps(o)) for o in self.objects.values() if o.get("object") == kind]
            found = [o for o in found if all(tests[op](o["created"], v) for op, v in bounds.items())]
            for name in ("type", "source", "status"):
                if params.get(name):
                    found = [o for o in found if o.get(name) == params[name]]
            if kind == "balance_transaction" and params.get("payout"):
                payout = self.objects.get(params["payout"]) or {}
                found = [o for o in found if o["id"] == payout.get("balance_transaction")]
            found.reverse()  # insertion order is creation order: newest first, like Stripe
            found.sort(key=lambda o: o["created"], reverse=True)
            after = params.get("starting_after")
            if after:
                ids = [o["id"] for o in found]
                found = found[ids.index(after) + 1:] if after in ids else []
            return JSONResponse({"object": "list", "data": found[:limit], "has_more": len(found) > limit,
                                 "url": f"/v1/{kind}s"})
        return endpoint

    async def _create_payout(self, request: Request) -> Response:
        """POST /v1/payouts (amount, currency, description): a manual payout of the balance to the bank."""
        return await self._create(request, self._new_payout)

    def _new_payout(self, params: dict):
        try:
            amount = int(params["amount"])
        except (KeyError, ValueError):
            return stripe_error(400, "Missing required param: amount.", code="parameter_missing")
        try:
            events = self.create_payout(amount, currency=params.get("currency", "inr"), paid=False,
                                        description=params.get("description") or "STRIPE PAYOUT")
        except ValueError:
            return stripe_error(400, "You have insufficient funds in your Stripe account for this transfer.",
                                code="balance_insufficient")
        return events[0]["data"]["object"], events

    async def _list_events(self, request: Request) -> Response:
        if not self._authorised(request):
            return stripe_error(401, "Invalid API Key provided.")
        params = decode_form(request.query_params.multi_items())
        limit = min(int(params.get("limit", 10)), 100)
        gte = int((params.get("created") or {}).get("gte", 0)) if isinstance(params.get("created"), dict) else 0
        with self.lock:
            newest_first = [e for e in reversed(self.events) if e["created"] >= gte]
        after = params.get("starting_after")
        if after:
            ids = [e["id"] for e in newest_first]
            newest_first = newest_first[ids.index(after) + 1:] if after in ids else []
        page = newest_first[:limit]
        return JSONResponse({"object": "list", "data": page, "has_more": len(newest_first) > limit,
                             "url": "/v1/events"})

    # ------------------------------------------------------------------ the TEST MODE payment page

    async def _pay_page(self, request: Request) -> Response:
        session_id = request.path_params["id"]
        with self.lock:
            cs = self.objects.get(session_id)
            cs = dict(cs) if cs and cs.get("object") == "checkout.session" else None
        if cs is None:
            return HTMLResponse(_page("TEST MODE", "<p>No such checkout.</p>"), status_code=404)
        if request.method == "POST":
            form = await request.form()
            if form.get("action") == "cancel":
                return RedirectResponse(cs["cancel_url"] or "/", status_code=303)
            card = re.sub(r"\D", "", str(form.get("card") or ""))
            events = self.complete_checkout(session_id, succeed=card != DECLINE_CARD)
            if self.deliver_automatically:
                await self.deliver(events)
            with self.lock:
                paid = self.objects[session_id]["status"] == "complete"
            if paid:
                return RedirectResponse(cs["success_url"] or "/", status_code=303)
            return HTMLResponse(_page("TEST MODE", _pay_form(cs, "The card was declined (test card "
                                                                 f"{DECLINE_CARD}). Try 4242 4242 4242 4242.")),
                                status_code=402)
        if cs["status"] != "open":
            return HTMLResponse(_page("TEST MODE", "<p>This checkout is closed.</p>"), status_code=410)
        return HTMLResponse(_page("TEST MODE", _pay_form(cs, None)))


def _money(amount_minor: int, currency: str) -> str:
    symbol = "₹" if currency.lower() == "inr" else currency.upper() + " "
    return f"{symbol}{amount_minor // 100:,}.{amount_minor % 100:02d}"


def _pay_form(cs: dict, error: str | None) -> str:
    what = "Monthly auto-pay" if cs["mode"] == "subscription" else "Dues"
    per = " a month" if cs["mode"] == "subscription" else ""
    err = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return f"""
<div class="notice error" id="test-mode"><p><strong>TEST MODE</strong>: this is a local stand-in for Stripe.
No real card is charged and no real money moves.</p></div>
<h2>{html.escape(what)}: <span id="amount">{_money(cs["amount_total"], cs["currency"])}</span>{per}</h2>
{err}
<form method="post">
  <label for="card">Test card number</label>
  <input id="card" name="card" value="4242 4242 4242 4242" inputmode="numeric" autocomplete="off">
  <p class="hint">4242 4242 4242 4242 succeeds; {DECLINE_CARD} is declined.</p>
  <button type="submit" name="action" value="pay">Pay (test)</button>
  <button type="submit" name="action" value="cancel">Cancel</button>
</form>"""


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}: Stripe stand-in</title><link rel="stylesheet" href="/static/app.css"></head>
<body><main class="container"><h1>TEST MODE: card payment</h1>{body}</main></body></html>"""
