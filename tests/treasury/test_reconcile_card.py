"""Card reconciliation with the real `stripe` SDK talking HTTP to the local stand-in
(tests/dues/stripe_standin_server.py): payments, refunds, disputes and payouts are
made in the stand-in and booked by the card service (catch-up of Stripe's events);
the ledger's `stripe` account is then compared with Stripe's balance transactions
and payouts of the range. A matching month has no differences; a payout matches
its ledger entry (Dr bank / Cr stripe); a transaction the ledger lacks, a ledger
movement Stripe lacks and an amount that differs are each listed."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from dues import card, ledger
from dues.card_models import CardPayment
from dues.models import JournalEntry
from dues.money import Money
from tests.dues.stripe_standin_server import stripe_server  # noqa: F401 - fixture
# The shared settings pointed at the stand-in, and the stand-in itself: the card tests' fixtures.
from tests.dues.test_card import settings, standin  # noqa: F401 - fixtures
from tests.helpers import PASSWORD
from treasury import reconcile
from union.models import Member

TODAY = dt.datetime.now(dt.UTC).date()
RANGE = {"start": TODAY - dt.timedelta(days=1), "end": TODAY + dt.timedelta(days=1)}


async def pay(services, standin, member: Member, months: int) -> str:
    """A member pays `months` on Checkout (our row, the SDK's checkout, the customer pays); returns the charge."""
    async with services.sessions() as db:
        payment = await card.new_card_payment(db, member=await db.get(Member, member.id), months=months,
                                              today=TODAY)
        await db.commit()
    cs = await card.billing_of(services).create_checkout(
        params=card.checkout_params(payment, success_url="http://x/ok", cancel_url="http://x/no"),
        idempotency_key=f"union-checkout-{payment.id}")
    events = standin.complete_checkout(cs["id"])
    return events[0]["data"]["object"]["id"]


async def check(services) -> reconcile.CardCheck:
    async with services.reader() as db:
        return await reconcile.card_reconciliation(db, **RANGE, billing=card.billing_of(services))


async def balances(services) -> dict[str, int]:
    async with services.reader() as db:
        found = await ledger.balances(db, accounts=["stripe", "bank"])
    return {code: m.amount_minor for code, m in found.items()}


async def test_a_matching_month_reconciles_with_no_differences(services, people, standin):
    a, b = people.members["A"], people.members["B"]
    first = await pay(services, standin, a, 3)
    await pay(services, standin, b, 1)
    disputed = await pay(services, standin, a, 2)
    standin.refund(first, amount=10000)
    opened = standin.dispute(disputed)
    standin.close_dispute(opened[0]["data"]["object"]["id"], won=True)
    paid_out = standin.create_payout()  # the whole balance to the bank, paid
    assert [e["type"] for e in paid_out] == ["payout.created", "payout.paid"]
    counts = await card.catch_up(services)
    assert counts.get("unresolved", 0) == 0 and counts.get("parked", 0) == 0, counts

    payout = paid_out[-1]["data"]["object"]
    assert standin.balance() == 0
    assert await balances(services) == {"stripe": 0, "bank": payout["amount"]}  # the ledger agrees with Stripe
    result = await check(services)
    assert result.compared_with_stripe and not result.unavailable
    assert result.differences == [] and result.rows == []
    # 3 charges, a refund, a dispute withdrawal and its reversal, and the payout.
    assert result.stripe_transactions == 7 and result.matched == 7
    assert [(p.id, p.status, p.amount_minor, p.ledger_minor, p.matched) for p in result.payouts] == [
        (payout["id"], "paid", payout["amount"], payout["amount"], True)]
    async with services.reader() as db:
        entry = (await db.execute(select(JournalEntry).where(
            JournalEntry.idempotency_key == f"stripe:payout:{payout['id']}"))).scalar_one()
    assert entry.kind == "stripe_payout" and entry.member_id is None and entry.effective_date == TODAY


async def test_a_payout_created_through_the_api_matches_once_it_arrives(services, people, standin):
    await pay(services, standin, people.members["A"], 2)
    await card.catch_up(services)
    billing = card.billing_of(services)
    # POST /v1/payouts through the SDK: Stripe takes the money from the balance at once; it reaches the bank later.
    payout = (await billing.client.v1.payouts.create_async(
        params={"amount": 15000, "currency": "inr"}, options={"idempotency_key": "union-payout-test"})).to_dict()
    assert payout["object"] == "payout" and payout["status"] == "pending" and payout["amount"] == 15000
    txn = await billing.retrieve_balance_transaction(payout["balance_transaction"])
    assert (txn["type"], txn["amount"], txn["fee"], txn["net"], txn["source"]) == (
        "payout", -15000, 0, -15000, payout["id"])
    assert [p["id"] for p in await billing.list_payouts(created_gte=0, created_lt=2**31)] == [payout["id"]]
    await card.catch_up(services)  # payout.created: nothing to book yet
    pending = await check(services)
    assert [(d.kind, d.reference, d.stripe_minor) for d in pending.rows] == [("in_transit", payout["id"], -15000)]
    assert pending.payouts[0].status == "pending" and pending.payouts[0].ledger_minor is None

    standin.pay_payout(payout["id"])
    assert await card.catch_up(services) == {"duplicate": 4, "applied": 1}
    done = await check(services)
    assert done.differences == [] and done.payouts[0].matched and done.payouts[0].ledger_minor == 15000
    assert (await balances(services))["bank"] == 15000
    assert (await balances(services))["stripe"] == standin.balance()


async def test_missing_entries_and_amount_mismatches_are_listed(services, people, web, standin):
    a = people.members["A"]
    charge = await pay(services, standin, a, 1)
    await card.catch_up(services)
    # Stripe refunds and pays out, but the events are never delivered or caught up: the ledger lacks both.
    refund = standin.refund(charge, amount=4000)[0]["data"]["object"]
    payout = standin.create_payout(2000)[-1]["data"]["object"]
    # Someone reversed Stripe's fee in the ledger ("booked twice"): the ledger now says no fee, Stripe says one.
    async with services.sessions() as db:
        row = (await db.execute(select(CardPayment))).scalar_one()
        fee_entry = (await db.execute(select(JournalEntry).where(
            JournalEntry.idempotency_key == f"stripe:charge:{charge}:fee"))).scalar_one()
        await ledger.reverse_entry(db, entry_id=fee_entry.id, key=f"correction:{fee_entry.id}",
                                   reason="fee booked twice", actor=None, effective_date=TODAY)
        await db.commit()
    # A card payment in the ledger that Stripe never saw.
    async with services.sessions() as db:
        await card.post_card_payment(db, member_id=a.id, amount=Money(7000), charge_id="ch_ghost",
                                     effective_date=TODAY)
        await db.commit()

    result = await check(services)
    kinds = sorted((d.kind, d.reference, d.stripe_minor, d.ledger_minor) for d in result.rows)
    assert kinds == sorted([
        ("stripe_only", refund["id"], -4000, None),
        ("stripe_only", payout["id"], -2000, None),
        ("mismatch", charge, -row.fee_minor, 0),
        ("ledger_only", "ch_ghost", None, 7000)])
    assert any("Stripe's fee on" in d and "the ledger booked" in d for d in result.differences)
    assert any("books a card payment with no card record" in d for d in result.differences)  # the ghost
    assert [(p.id, p.status, p.ledger_minor, p.matched) for p in result.payouts] == [
        (payout["id"], "paid", None, False)]

    await web.login("tara", PASSWORD)
    month = TODAY.strftime("%Y-%m")
    page = await web.get(f"/treasury/reconcile?from={month}&to={month}")
    assert page.status_code == 200, page.text
    assert f'data-payout="{payout["id"]}" data-matched="no"' in page.text
    assert refund["id"] in page.text and "ch_ghost" in page.text

    # Once the events are caught up, only what is really wrong is left.
    await card.catch_up(services)
    left = await check(services)
    assert sorted(d.kind for d in left.rows) == ["ledger_only", "mismatch"]
    page = await web.get(f"/treasury/reconcile?from={month}&to={month}")
    assert f'data-payout="{payout["id"]}" data-matched="yes"' in page.text


async def test_stripe_unreachable_is_reported_not_raised(services, people, standin, stripe_server):  # noqa: F811
    await pay(services, standin, people.members["A"], 1)
    await card.catch_up(services)
    stripe_server.stop()
    result = await check(services)
    assert not result.compared_with_stripe and "could not be reached" in result.unavailable
    assert result.checked == 1 and result.differences == []
