"""Card payments through Stripe, with the real `stripe` SDK talking HTTP to the local
stand-in (tests/dues/stripe_standin_server.py): a member pays months on Checkout
and the webhook posts the payment and Stripe's fee; forged and stale webhooks are
400 and post nothing; a replayed event and two concurrent deliveries post once;
a refund arriving before the success ends right; declined cards, disputes,
monthly auto-pay invoices, and the catch-up job for events never delivered."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time

import httpx
import pytest
from sqlalchemy import func, select, update

from dues import card, joining, ledger
from dues.card_models import CardPayment, CardSubscription, StripeEvent
from dues.models import DuesPlan, JournalEntry
from dues.money import Money
from dues.services import paid_total, standing
from dues.stripe_standin import DISPUTE_FEE_MINOR
from tests.dues.stripe_standin_server import stripe_server  # noqa: F401 - fixture
from tests.union.test_policy import enrol, login_cookie, member_user
from union import jobs
from union.app import create_app
from union.i18n import translations
from union.models import DueWork, Member
from union.services import build_services
from union.web import SESSION_COOKIE

RATE = 10000  # ₹100 a month, the standard plan
MONTH = dt.date.today().strftime("%Y-%m")


def fee_of(amount: int) -> int:
    return round(amount * 2 / 100) + 300


@pytest.fixture
def settings(settings, stripe_server):  # noqa: F811 - the shared settings, pointed at the stand-in
    return settings.model_copy(update={"stripe_api_key": "sk_test_union", "stripe_api_base": stripe_server.url,
                                       "stripe_webhook_secret": stripe_server.standin.webhook_secret})


@pytest.fixture
def standin(stripe_server):  # noqa: F811
    return stripe_server.standin


@pytest.fixture
async def member(services, branches):
    return await enrol(services, "Asha Card", "BLR", pin="1234")


@pytest.fixture
async def member_web(services, member, make_web):
    web = await make_web()
    web.client.cookies.set(SESSION_COOKIE, await login_cookie(services, await member_user(services, member)))
    return web


async def ledger_state(services, member_id: int) -> dict:
    async with services.reader() as db:
        entries = (await db.execute(select(func.count()).select_from(JournalEntry))).scalar_one()
        bal = await ledger.balances(db, accounts=["stripe", "dues_income", "card_fees", "refunds", "disputes"]) \
            if entries else {}
        events = (await db.execute(select(func.count()).select_from(StripeEvent))).scalar_one()
        credit = await paid_total(db, member_id)
        assert entries == 0 or (await ledger.verify_ledger_chain(db)).intact
    return {"entries": entries, "events": events, "credit": credit,
            **{code: m.amount_minor for code, m in bal.items() if m.amount_minor}}


async def post_event(client, standin, event, **sign) -> httpx.Response:
    body, header = standin.signed(event, **sign)
    return await client.post("/dues/stripe/webhook", content=body,
                             headers={"Stripe-Signature": header, "Content-Type": "application/json"})


async def deliver(client, standin, events) -> list[str]:
    outcomes = []
    for event in events:
        r = await post_event(client, standin, event)
        assert r.status_code == 200, r.text
        outcomes.append(r.json()["outcome"])
    return outcomes


async def start_checkout(member_web, months: int = 3) -> str:
    """The member's form → our page with the Checkout link; returns the checkout session id."""
    page = await member_web.get("/dues/card")
    assert page.status_code == 200 and 'id="pay-form"' in page.text
    r = await member_web.post("/dues/card/checkout", {"months": str(months)})
    assert r.status_code == 200, r.text
    url = re.search(r'id="checkout-link" href="([^"]+)"', r.text).group(1)
    return url.rsplit("/", 1)[1]


async def the_payment(services) -> CardPayment:
    async with services.reader() as db:
        return (await db.execute(select(CardPayment))).scalar_one()


# ---------------------------------------------------------------- paying


async def test_checkout_paid_posts_payment_and_fee_and_moves_standing(member_web, member, services, client, standin):
    cs = await start_checkout(member_web, months=3)
    payment = await the_payment(services)
    assert (payment.status, payment.amount_minor, payment.months, payment.checkout_session_id) == \
        ("pending", 3 * RATE, 3, cs)
    # The SDK really talked HTTP to the stand-in, with our idempotency key and nothing about the member.
    created = [h for m, p, h in standin.requests if p == "/v1/checkout/sessions"]
    assert created and created[0]["idempotency-key"] == f"union-checkout-{payment.id}"
    session = standin.get(cs)
    assert session["amount_total"] == 3 * RATE and session["metadata"] == {"card_payment_id": str(payment.id)}
    assert "Asha" not in json.dumps(standin.objects[cs]) and member.member_no not in json.dumps(standin.objects[cs])

    assert await ledger_state(services, member.id) == {"entries": 0, "events": 0, "credit": 0}
    events = standin.complete_checkout(cs)
    assert [e["type"] for e in events] == ["charge.succeeded", "payment_intent.succeeded", "checkout.session.completed"]
    outcomes = await deliver(client, standin, events)
    assert outcomes == ["applied", "applied", "applied"]

    fee = fee_of(3 * RATE)
    state = await ledger_state(services, member.id)
    assert state == {"entries": 2, "events": 3, "credit": 3 * RATE, "stripe": 3 * RATE - fee,
                     "dues_income": -3 * RATE, "card_fees": fee}
    payment = await the_payment(services)
    assert payment.status == "succeeded" and payment.fee_minor == fee and payment.charge_id.startswith("ch_")
    async with services.reader() as db:
        entry = await db.get(JournalEntry, payment.entry_id)
        assert entry.idempotency_key == f"stripe:charge:{payment.charge_id}:payment" and entry.member_id == member.id
        mine = await standing(db, member=await db.get(Member, member.id), today=dt.date.today(), grace_months=2)
    assert mine.status == "current" and mine.paid_through > MONTH

    page = await member_web.get("/dues/card")
    assert 'data-status="succeeded"' in page.text and "₹300.00" in page.text
    assert "TEST MODE" not in page.text  # a real (configured) Stripe key is not test mode
    done = await member_web.get(f"/dues/card/done?payment={payment.id}")
    assert 'data-result="paid"' in done.text
    me = await member_web.get("/dues/me")
    assert 'href="/dues/card"' in me.text and 'data-status="succeeded"' in me.text


async def test_bad_months_and_no_billing_post_nothing(member_web, member, services):
    await member_web.get("/dues/card")
    for months in ("0", "13", "two", ""):
        r = await member_web.post("/dues/card/checkout", {"months": months})
        # The member reads Kannada: the error is in her language.
        assert r.status_code == 422 and translations("kn").gettext("Choose from 1 to %(count)d months.") % {"count": 12} in r.text
    async with services.reader() as db:
        assert (await db.execute(select(func.count()).select_from(CardPayment))).scalar_one() == 0


# ---------------------------------------------------------------- the webhook's guard


async def test_forged_stale_or_unsigned_webhook_is_400_and_posts_nothing(member_web, member, services, client, standin):
    cs = await start_checkout(member_web, months=1)
    events = standin.complete_checkout(cs)
    stale = int(time.time()) - 301
    for sign in ({"secret": "whsec_forged"}, {"timestamp": stale}):
        for event in events:
            r = await post_event(client, standin, event, **sign)
            assert r.status_code == 400, r.text
            assert r.json()["error"] == "bad_signature"
    body, header = standin.signed(events[0])
    tampered = body.replace(b'"amount": 10000', b'"amount": 99999')
    for headers in ({}, {"Stripe-Signature": "nonsense"}, {"Stripe-Signature": header}):
        r = await client.post("/dues/stripe/webhook", content=tampered if headers else body, headers=headers)
        assert r.status_code == 400, r.text
    assert await ledger_state(services, member.id) == {"entries": 0, "events": 0, "credit": 0}
    # Within tolerance the very same event is accepted.
    assert (await post_event(client, standin, events[0], timestamp=int(time.time()) - 200)).status_code == 200
    assert (await ledger_state(services, member.id))["credit"] == RATE


# ---------------------------------------------------------------- once and only once


async def test_replayed_event_posts_once(member_web, member, services, client, standin):
    cs = await start_checkout(member_web, months=2)
    events = standin.complete_checkout(cs)
    assert await deliver(client, standin, events) == ["applied"] * 3
    before = await ledger_state(services, member.id)
    assert await deliver(client, standin, events + events) == ["duplicate"] * 6
    assert await ledger_state(services, member.id) == before
    assert before["credit"] == 2 * RATE and before["entries"] == 2


async def test_event_delivered_twice_concurrently_posts_once(live_server, services, branches, standin):
    """Real concurrent HTTP requests against the app under uvicorn: the same events, each twice at once."""
    member = await enrol(services, "Bhavya Race", "BLR", pin="2222")
    async with services.sessions() as db:
        payment = await card.new_card_payment(db, member=await db.get(Member, member.id), months=4,
                                              today=dt.date.today())
        await db.commit()
    billing = card.billing_of(services)
    cs = await billing.create_checkout(params=card.checkout_params(payment, success_url="http://x/ok",
                                                                   cancel_url="http://x/no"),
                                       idempotency_key=f"union-checkout-{payment.id}")
    events = standin.complete_checkout(cs["id"])
    standin.webhook_url = f"{live_server}/dues/stripe/webhook"

    async def post(event):
        body, header = standin.signed(event)
        async with httpx.AsyncClient(timeout=60) as c:
            return await c.post(standin.webhook_url, content=body, headers={"Stripe-Signature": header})

    answers = await asyncio.gather(*[post(e) for e in events for _ in range(2)])
    assert [r.status_code for r in answers] == [200] * 6, [r.text for r in answers]
    outcomes = sorted(r.json()["outcome"] for r in answers)
    assert outcomes == ["applied"] * 3 + ["duplicate"] * 3, outcomes  # each event applied by one of its two deliveries
    state = await ledger_state(services, member.id)
    assert state["entries"] == 2 and state["events"] == 3 and state["credit"] == 4 * RATE
    assert state["card_fees"] == fee_of(4 * RATE)


# ---------------------------------------------------------------- out of order, failures, refunds, disputes


async def test_refund_arriving_before_the_success_ends_right(member_web, member, services, client, standin):
    cs = await start_checkout(member_web, months=1)
    paid = standin.complete_checkout(cs)
    charge = paid[0]["data"]["object"]["id"]
    refunded = standin.refund(charge)
    assert await deliver(client, standin, refunded) == ["applied", "applied"]
    # The payment was recorded from the refund's news (fetched from Stripe), and taken back.
    state = await ledger_state(services, member.id)
    assert state["credit"] == 0 and state["entries"] == 3
    assert state["dues_income"] == -RATE and state["refunds"] == RATE
    assert state["stripe"] == -fee_of(RATE)  # Stripe keeps its fee on a refunded charge
    await deliver(client, standin, paid)
    assert await ledger_state(services, member.id) == {**state, "events": 5}
    payment = await the_payment(services)
    assert payment.status == "refunded" and payment.refunded_minor == RATE
    page = await member_web.get("/dues/card")
    assert 'data-status="refunded"' in page.text


async def test_partial_refund(member_web, member, services, client, standin):
    cs = await start_checkout(member_web, months=3)
    paid = standin.complete_checkout(cs)
    await deliver(client, standin, paid)
    await deliver(client, standin, standin.refund(paid[0]["data"]["object"]["id"], amount=RATE))
    assert (await ledger_state(services, member.id))["credit"] == 2 * RATE
    assert (await the_payment(services)).status == "partially_refunded"


async def test_declined_card_is_recorded_and_posts_nothing(member_web, member, services, client, standin):
    cs = await start_checkout(member_web, months=1)
    failed = standin.complete_checkout(cs, succeed=False)
    assert [e["type"] for e in failed] == ["payment_intent.payment_failed", "charge.failed"]
    await deliver(client, standin, failed)
    payment = await the_payment(services)
    assert payment.status == "failed" and payment.failure_message == "Your card was declined."
    assert await ledger_state(services, member.id) == {"entries": 0, "events": 2, "credit": 0}
    page = await member_web.get("/dues/card")
    assert 'data-status="failed"' in page.text and "Your card was declined." in page.text
    assert 'data-status="failed"' in (await member_web.get("/dues/me")).text
    # A second card on the same checkout page works.
    await deliver(client, standin, standin.complete_checkout(cs))
    assert (await the_payment(services)).status == "succeeded"
    assert (await ledger_state(services, member.id))["credit"] == RATE


@pytest.mark.parametrize("won", [False, True])
async def test_dispute_takes_the_credit_and_a_win_gives_it_back(won, member_web, member, services, client, standin):
    cs = await start_checkout(member_web, months=2)
    paid = standin.complete_checkout(cs)
    await deliver(client, standin, paid)
    opened = standin.dispute(paid[0]["data"]["object"]["id"])
    await deliver(client, standin, opened)
    state = await ledger_state(services, member.id)
    # Stripe's dispute fee, from the withdrawal's balance transaction, is a card fee: no member credit.
    assert state["credit"] == 0 and state["disputes"] == 2 * RATE
    assert state["card_fees"] == fee_of(2 * RATE) + DISPUTE_FEE_MINOR
    assert (await the_payment(services)).status == "disputed"
    await deliver(client, standin, standin.close_dispute(opened[0]["data"]["object"]["id"], won=won))
    state = await ledger_state(services, member.id)
    assert state["credit"] == (2 * RATE if won else 0)
    assert state.get("disputes", 0) == (0 if won else 2 * RATE)
    assert state["card_fees"] == fee_of(2 * RATE) + DISPUTE_FEE_MINOR  # kept by Stripe, won or lost
    assert state["stripe"] == -fee_of(2 * RATE) - DISPUTE_FEE_MINOR + (2 * RATE if won else 0)
    assert (await the_payment(services)).status == ("succeeded" if won else "disputed")


async def test_expired_checkout(member_web, member, services, client, standin):
    cs = await start_checkout(member_web, months=1)
    await deliver(client, standin, standin.expire_checkout(cs))
    assert (await the_payment(services)).status == "expired"
    assert (await ledger_state(services, member.id))["entries"] == 0


# ---------------------------------------------------------------- monthly auto-pay


async def test_autopay_posts_each_monthly_invoice(member_web, member, services, client, standin):
    await member_web.get("/dues/card")
    r = await member_web.post("/dues/card/autopay", {})
    assert r.status_code == 200, r.text
    cs = re.search(r'id="checkout-link" href="([^"]+)"', r.text).group(1).rsplit("/", 1)[1]
    async with services.reader() as db:
        sub = (await db.execute(select(CardSubscription))).scalar_one()
    assert sub.status == "pending" and sub.checkout_session_id == cs and sub.amount_minor == RATE
    created = [h for m, p, h in standin.requests if p == "/v1/checkout/sessions"]
    assert created[-1]["idempotency-key"] == f"union-subscription-{sub.id}"

    first = standin.complete_checkout(cs)
    await deliver(client, standin, first)
    async with services.reader() as db:
        sub = await db.get(CardSubscription, sub.id)
    assert sub.status == "active" and sub.stripe_subscription_id.startswith("sub_")
    assert (await ledger_state(services, member.id))["credit"] == RATE

    for _ in range(2):
        await deliver(client, standin, standin.renew_subscription(sub.stripe_subscription_id))
    state = await ledger_state(services, member.id)
    assert state["credit"] == 3 * RATE and state["card_fees"] == 3 * fee_of(RATE)
    async with services.reader() as db:
        rows = list((await db.execute(select(CardPayment).order_by(CardPayment.id))).scalars())
    assert [(p.kind, p.status, p.amount_minor) for p in rows] == [("invoice", "succeeded", RATE)] * 3

    # A declined renewal: recorded, nothing posted, auto-pay past due.
    await deliver(client, standin, standin.renew_subscription(sub.stripe_subscription_id, succeed=False))
    async with services.reader() as db:
        last = (await db.execute(select(CardPayment).order_by(CardPayment.id.desc()).limit(1))).scalar_one()
        sub = await db.get(CardSubscription, sub.id)
    assert last.status == "failed" and sub.status == "past_due"
    assert (await ledger_state(services, member.id))["credit"] == 3 * RATE
    page = await member_web.get("/dues/card")
    assert 'id="autopay-on"' in page.text and "declined" in page.text

    r = await member_web.post("/dues/card/autopay/cancel", {})
    assert r.status_code == 200 and 'id="autopay-form"' in r.text
    assert standin.get(sub.stripe_subscription_id)["status"] == "canceled"


# ---------------------------------------------------------------- catch-up after downtime


async def test_catch_up_applies_events_the_webhook_never_delivered(member_web, member, services, client, standin):
    cs = await start_checkout(member_web, months=2)
    standin.complete_checkout(cs)  # the webhook is down: nothing delivered
    assert (await ledger_state(services, member.id))["entries"] == 0
    async with services.reader() as db:  # opening the checkout scheduled the hourly catch-up
        assert (await db.execute(select(DueWork).where(DueWork.kind == "stripe.catch_up"))).scalars().first()

    counts = await card.catch_up(services)
    assert counts == {"applied": 3}
    state = await ledger_state(services, member.id)
    assert state["credit"] == 2 * RATE and state["events"] == 3
    assert await card.catch_up(services) == {"duplicate": 3}

    # The same through due work, as the job runner does it; a later refund is caught up too.
    standin.refund((await the_payment(services)).charge_id)
    async with services.sessions() as db:
        work = await jobs.schedule(db, kind="stripe.catch_up", key="stripe.catch_up:test")
        await db.commit()
    assert await jobs.run_due_work(services, work.id) == "done"
    assert (await ledger_state(services, member.id))["credit"] == 0
    async with services.reader() as db:
        nxt = (await db.execute(select(DueWork).where(DueWork.kind == "stripe.catch_up", DueWork.state == "pending")
                                )).scalars().all()
    assert nxt  # the next catch-up is scheduled


async def test_event_for_an_unknown_payment_is_parked_and_retried(member_web, member, services, client, standin):
    """A refund of a subscription charge arriving before its invoice: parked as due work, applied later."""
    await member_web.get("/dues/card")
    r = await member_web.post("/dues/card/autopay", {})
    cs = re.search(r'id="checkout-link" href="([^"]+)"', r.text).group(1).rsplit("/", 1)[1]
    await deliver(client, standin, standin.complete_checkout(cs))
    async with services.reader() as db:
        sub = (await db.execute(select(CardSubscription))).scalar_one()
    renewal = standin.renew_subscription(sub.stripe_subscription_id)
    refund = standin.refund(renewal[0]["data"]["object"]["id"])
    assert await deliver(client, standin, refund[1:]) == ["parked"]
    async with services.reader() as db:
        work = (await db.execute(select(DueWork).where(DueWork.key == f"stripe.event:{refund[1]['id']}"))).scalar_one()
    assert await jobs.run_due_work(services, work.id) in ("skipped",)  # not due yet (30 s)
    await deliver(client, standin, renewal)  # the invoice arrives
    async with services.sessions() as db:
        w = await db.get(DueWork, work.id)
        w.due_at = w.due_at - dt.timedelta(minutes=5)
        await db.commit()
    assert await jobs.run_due_work(services, work.id) == "done"
    state = await ledger_state(services, member.id)
    assert state["credit"] == RATE  # first month paid; the renewal paid and refunded


# ---------------------------------------------------------------- test mode (the demo's backend)


async def test_test_mode_pays_through_the_built_in_standin(settings, branches, services):
    """No Stripe key, test mode: the stand-in is mounted at /stripe-test/, every page says TEST MODE, and paying
    there delivers the signed webhook in-process."""
    local = settings.model_copy(update={"stripe_api_key": None, "stripe_api_base": None,
                                        "stripe_webhook_secret": None, "stripe_test_mode": True})
    svc = await build_services(local, jobs_backend="none")
    try:
        assert card.billing_of(svc).test_mode
        member = await enrol(svc, "Chandini Demo", "BLR", pin="3333")
        app = create_app(local, services=svc)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
            from tests.conftest import Web
            web = Web(c)
            c.cookies.set(SESSION_COOKIE, await login_cookie(svc, await member_user(svc, member)))
            page = await web.get("/dues/card")
            assert 'id="test-mode"' in page.text and "TEST MODE" in page.text
            r = await web.post("/dues/card/checkout", {"months": "2"})
            assert "TEST MODE" in r.text
            url = re.search(r'id="checkout-link" href="([^"]+)"', r.text).group(1)
            assert url.startswith("/stripe-test/pay/cs_")
            pay_page = await c.get(url)
            assert pay_page.status_code == 200 and "TEST MODE" in pay_page.text and "₹200.00" in pay_page.text
            declined = await c.post(url, data={"card": "4000 0000 0000 0002", "action": "pay"})
            assert declined.status_code == 402 and "declined" in declined.text
            paid = await c.post(url, data={"card": "4242 4242 4242 4242", "action": "pay"})
            assert paid.status_code == 303 and paid.headers["location"].startswith("http://testserver/dues/card/done")
            done = await web.get(paid.headers["location"].removeprefix("http://testserver"))
            assert 'data-result="paid"' in done.text and "TEST MODE" in done.text
            state = await ledger_state(svc, member.id)
            assert state["credit"] == 2 * RATE and state["card_fees"] == fee_of(2 * RATE)
            page = await web.get("/dues/card")
            assert 'data-status="succeeded"' in page.text and 'data-status="failed"' not in page.text
    finally:
        await svc.close()


async def test_posting_functions_without_http(services, member):
    """What the ledger's stateful test uses: the posting functions, idempotent by Stripe ids."""
    day = dt.date.today()
    async with services.sessions() as db:
        for _ in range(2):
            await card.post_card_payment(db, member_id=member.id, amount=Money(5000), charge_id="ch_x", effective_date=day)
            await card.post_card_fee(db, fee=Money(400), charge_id="ch_x", effective_date=day)
            await card.post_card_refund(db, member_id=member.id, amount=Money(2000), refund_id="re_x", charge_id="ch_x",
                                        effective_date=day)
        await db.commit()
    state = await ledger_state(services, member.id)
    assert state["entries"] == 3 and state["credit"] == 3000 and state["stripe"] == 2600


async def test_ensure_catch_up_schedules_one_chain(services):
    for _ in range(3):
        await card.ensure_catch_up(services)
    async with services.reader() as db:
        rows = (await db.execute(select(DueWork).where(DueWork.kind == "stripe.catch_up"))).scalars().all()
    assert len(rows) == 1 and rows[0].state == "pending" and rows[0].key.startswith("stripe.catch_up:")


# ---------------------------------------------------------------- payouts to the bank


async def test_payout_paid_moves_the_balance_to_the_bank_once(member_web, member, services, client, standin):
    cs = await start_checkout(member_web, months=2)
    await deliver(client, standin, standin.complete_checkout(cs))
    [created] = standin.create_payout(paid=False)  # the whole balance, on its way to the bank
    payout = created["data"]["object"]
    assert payout["amount"] == 2 * RATE - fee_of(2 * RATE) and standin.balance() == 0
    assert await deliver(client, standin, [created]) == ["ignored"]  # nothing reached the bank yet
    assert (await ledger_state(services, member.id))["stripe"] == payout["amount"]
    [paid] = standin.pay_payout(payout["id"])
    assert await deliver(client, standin, [paid, paid]) == ["applied", "duplicate"]
    state = await ledger_state(services, member.id)
    assert state["entries"] == 3 and "stripe" not in state and state["credit"] == 2 * RATE  # standing untouched
    async with services.reader() as db:
        bank = await ledger.balances(db, accounts=["bank"])
        entry = (await db.execute(select(JournalEntry).where(
            JournalEntry.idempotency_key == f"stripe:payout:{payout['id']}"))).scalar_one()
    assert bank["bank"].amount_minor == payout["amount"] and entry.kind == "stripe_payout"


# ---------------------------------------------------------------- the joining fee


async def with_joining_fee(services, minor: int = 5000) -> None:
    async with services.sessions() as db:
        await db.execute(update(DuesPlan).where(DuesPlan.code == "standard").values(joining_fee_minor=minor))
        await db.commit()


async def test_a_first_checkout_asks_for_the_joining_fee_once(member_web, member, services, client, standin):
    """A member who owes her plan's joining fee sees it in every total; Stripe is asked for the months
    and the fee as two line items; the paid charge books the fee to joining_fee_income and only the
    months to her dues credit; replayed events post nothing more; the next checkout has no fee."""
    await with_joining_fee(services)
    page = await member_web.get("/dues/card")
    assert 'id="joining-fee"' in page.text and "₹50.00" in page.text and "₹250.00" in page.text  # 2 months + fee
    cs = await start_checkout(member_web, months=2)
    payment = await the_payment(services)
    assert (payment.amount_minor, payment.joining_fee_minor, payment.months) == (2 * RATE + 5000, 5000, 2)
    items = standin.objects[cs]["line_items"]
    assert [(int(i["quantity"]), int(i["price_data"]["unit_amount"])) for i in items] == [(2, RATE), (1, 5000)]
    assert standin.get(cs)["amount_total"] == 2 * RATE + 5000

    events = standin.complete_checkout(cs)
    await deliver(client, standin, events)
    await deliver(client, standin, events)  # replayed: already applied
    state = await ledger_state(services, member.id)
    assert state["credit"] == 2 * RATE and state["dues_income"] == -2 * RATE
    assert state["stripe"] == 2 * RATE + 5000 - fee_of(2 * RATE + 5000)
    async with services.reader() as db:
        assert await joining.joining_fee_paid(db, member.id) == 5000
        mine = await standing(db, member=await db.get(Member, member.id), today=dt.date.today(), grace_months=2)
    assert mine.status == "current"

    page = await member_web.get("/dues/card")
    assert 'id="joining-fee"' not in page.text
    r = await member_web.post("/dues/card/checkout", {"months": "1"})
    assert r.status_code == 200
    async with services.reader() as db:
        second = (await db.execute(select(CardPayment).order_by(CardPayment.id.desc()).limit(1))).scalar_one()
    assert (second.amount_minor, second.joining_fee_minor) == (RATE, 0)


async def test_autopay_takes_the_joining_fee_from_the_first_charge(member_web, member, services, client, standin):
    await with_joining_fee(services, 3000)
    page = await member_web.get("/dues/card")
    assert 'id="autopay-joining-fee"' in page.text and "₹30.00" in page.text
    r = await member_web.post("/dues/card/autopay", {})
    cs = re.search(r'id="checkout-link" href="([^"]+)"', r.text).group(1).rsplit("/", 1)[1]
    await deliver(client, standin, standin.complete_checkout(cs))
    async with services.reader() as db:
        sub = (await db.execute(select(CardSubscription))).scalar_one()
    await deliver(client, standin, standin.renew_subscription(sub.stripe_subscription_id))
    state = await ledger_state(services, member.id)
    assert state["credit"] == 2 * RATE - 3000  # the fee came out of the first month's charge
    async with services.reader() as db:
        assert await joining.joining_fee_paid(db, member.id) == 3000
