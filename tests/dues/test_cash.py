"""Cash dues through collectors: the POST /api/dues/payments contract (201 body,
409 for a reused receipt number, 422 for each kind of bad input, 404 for an
unknown or other-branch member, each posting nothing), two collectors posting
for one member at the same moment, GET /api/members/{member_no}/standing, and
the pages: a collector records a payment through the form (CSRF), the receipt
page shows it, the member sees the new standing and the payment."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import func, select

from dues import ledger
from dues.models import CashPayment, JournalEntry, Posting
from dues.money import Money
from tests.union.test_policy import enrol, login_cookie, member_user, quick_user
from union.models import AuditEvent
from union.web import SESSION_COOKIE

MONTH = dt.date.today().strftime("%Y-%m")


async def counts(services) -> tuple[int, int, int]:
    async with services.reader() as db:
        return tuple([(await db.execute(select(func.count()).select_from(t))).scalar_one()
                      for t in (JournalEntry, Posting, CashPayment)])


@pytest.fixture
async def world(services, branches, make_token):
    """A Bengaluru member who joined today, one in Mysuru, two Bengaluru collectors with tokens."""
    blr = await enrol(services, "Asha Cash", "BLR", pin="1234")
    mys = await enrol(services, "Bhavya Cash", "MYS", pin="5678")
    col1 = await quick_user(services, "col-one", ["collector"], "BLR")
    col2 = await quick_user(services, "col-two", ["collector"], "BLR")
    return {"blr": blr, "mys": mys, "col1": col1, "col2": col2,
            "t1": await make_token(col1), "t2": await make_token(col2)}


def pay(member_no, amount=10000, receipt="R-1", **extra):
    return {"member_no": member_no, "amount_minor": amount, "currency": "INR", "receipt_no": receipt, **extra}


async def test_payment_is_201_with_standing_and_posts_balanced_entry(web, world, services):
    no = world["blr"].member_no
    r = await web.api("POST", "/api/dues/payments", token=world["t1"], json=pay(no, 10000, "R-1", months=1))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body == {"id": body["id"], "member_no": no, "amount_minor": 10000, "currency": "INR", "receipt_no": "R-1",
                    "months": 1, "standing": {"status": "current", "paid_through": MONTH, "arrears_minor": 0,
                                              "currency": "INR"}}
    assert await counts(services) == (1, 2, 1)
    async with services.reader() as db:
        bal = await ledger.balances(db, accounts=[f"cash:collector:{world['col1'].id}", "dues_income"])
        assert bal == {f"cash:collector:{world['col1'].id}": Money(10000), "dues_income": Money(-10000)}
        entry = (await db.execute(select(JournalEntry))).scalar_one()
        assert entry.idempotency_key == f"cash:{world['col1'].id}:R-1" and entry.member_id == world["blr"].id
        assert (await db.execute(select(AuditEvent).where(AuditEvent.action == "dues.cash_payment"))).scalar_one()
        assert (await ledger.verify_ledger_chain(db)).intact

    r = await web.api("GET", f"/api/members/{no}/standing", token=world["t1"])
    assert r.status_code == 200
    assert r.json() == {"status": "current", "paid_through": MONTH, "arrears_minor": 0, "currency": "INR"}


async def test_reused_receipt_is_409_and_posts_nothing(web, world, services):
    no = world["blr"].member_no
    assert (await web.api("POST", "/api/dues/payments", token=world["t1"], json=pay(no, 10000, "R-7"))).status_code == 201
    before = await counts(services)
    for again in (pay(no, 10000, "R-7"), pay(no, 5000, "R-7"), pay(no, 10000, " R-7 ")):
        r = await web.api("POST", "/api/dues/payments", token=world["t1"], json=again)
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "conflict" and r.json()["field"] == "receipt_no"
    assert await counts(services) == before
    # Another collector's receipt book has its own R-7.
    r = await web.api("POST", "/api/dues/payments", token=world["t2"], json=pay(no, 10000, "R-7"))
    assert r.status_code == 201


@pytest.mark.parametrize("change, field", [
    ({"amount_minor": 0}, "amount_minor"),
    ({"amount_minor": -100}, "amount_minor"),
    ({"amount_minor": 100.5}, "amount_minor"),
    ({"amount_minor": 100.0}, "amount_minor"),
    ({"amount_minor": "100"}, "amount_minor"),
    ({"amount_minor": True}, "amount_minor"),
    ({"amount_minor": None}, "amount_minor"),
    ({"amount_minor": 10**30}, "amount_minor"),
    ({"amount_minor": 10_000_001}, "amount_minor"),
    ({"currency": "USD"}, "currency"),
    ({"currency": "inr"}, "currency"),
    ({"currency": None}, "currency"),
    ({"receipt_no": ""}, "receipt_no"),
    ({"receipt_no": "x" * 41}, "receipt_no"),
    ({"receipt_no": None}, "receipt_no"),
    ({"months": 0}, "months"),
    ({"months": 1.5}, "months"),
    ({"months": "2"}, "months"),
    ({"member_no": ""}, "member_no"),
    ({"member_no": 5}, "member_no"),
])
async def test_bad_input_is_422_and_posts_nothing(web, world, services, change, field):
    body = pay(world["blr"].member_no, 10000, "R-BAD")
    body.update(change)
    r = await web.api("POST", "/api/dues/payments", token=world["t1"], json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and r.json()["message"]
    assert await counts(services) == (0, 0, 0)


@pytest.mark.parametrize("missing", ["member_no", "amount_minor", "currency", "receipt_no"])
async def test_missing_field_is_422(web, world, services, missing):
    body = pay(world["blr"].member_no)
    del body[missing]
    r = await web.api("POST", "/api/dues/payments", token=world["t1"], json=body)
    assert r.status_code == 422 and r.json()["field"] == missing
    assert await counts(services) == (0, 0, 0)


async def test_unknown_or_other_branch_member_is_404(web, world, services):
    for no in ("BLR-99999", world["mys"].member_no):
        r = await web.api("POST", "/api/dues/payments", token=world["t1"], json=pay(no))
        assert r.status_code == 404
        assert r.json() == {"error": "not_found", "message": "No member with that number.", "field": "member_no"}
    assert await counts(services) == (0, 0, 0)


async def test_two_collectors_at_once_for_one_member_both_land(world, services, make_web):
    no = world["blr"].member_no
    a, b = await make_web(), await make_web()
    r1, r2 = await asyncio.gather(
        a.api("POST", "/api/dues/payments", token=world["t1"], json=pay(no, 10000, "A-1")),
        b.api("POST", "/api/dues/payments", token=world["t2"], json=pay(no, 5000, "B-1")))
    assert (r1.status_code, r2.status_code) == (201, 201), (r1.text, r2.text)
    assert await counts(services) == (2, 4, 2)
    r = await a.api("GET", f"/api/members/{no}/standing", token=world["t1"])
    assert r.json()["paid_through"] == MONTH  # 150 rupees: this month and half of the next
    async with services.reader() as db:
        assert (await ledger.balances(db, accounts=["dues_income"]))["dues_income"] == Money(-15000)
        assert (await ledger.verify_ledger_chain(db)).intact


async def test_same_receipt_twice_at_once_lands_once(world, services, make_web):
    no = world["blr"].member_no
    a, b = await make_web(), await make_web()
    rs = await asyncio.gather(*[w.api("POST", "/api/dues/payments", token=world["t1"], json=pay(no, 10000, "SAME"))
                                for w in (a, b)])
    assert sorted(r.status_code for r in rs) == [201, 409], [r.text for r in rs]
    assert await counts(services) == (1, 2, 1)


async def test_standing_api_access(web, world, services, make_token):
    no, other = world["blr"].member_no, world["mys"].member_no
    member_token = await make_token(await member_user(services, world["blr"]))
    r = await web.api("GET", f"/api/members/{no}/standing", token=member_token)
    assert r.json() == {"status": "new", "paid_through": None, "arrears_minor": 10000, "currency": "INR"}
    assert (await web.api("GET", f"/api/members/{other}/standing", token=member_token)).status_code == 404
    # A Bengaluru collector cannot see a Mysuru member's standing (looks unknown).
    assert (await web.api("GET", f"/api/members/{other}/standing", token=world["t1"])).status_code == 404
    assert (await web.api("GET", f"/api/members/{no}/standing")).status_code == 401


async def test_openapi_documents_the_dues_routes(web):
    paths = (await web.get("/api/openapi.json")).json()["paths"]
    assert "post" in paths["/api/dues/payments"] and "get" in paths["/api/members/{member_no}/standing"]


# --- Pages ----------------------------------------------------------------------------


async def test_cash_journey_through_the_pages(world, services, make_web):
    collector, member = await make_web(), await make_web()
    collector.client.cookies.set(SESSION_COOKIE, await login_cookie(services, world["col1"]))
    member.client.cookies.set(SESSION_COOKIE, await login_cookie(services, await member_user(services, world["blr"])))
    no = world["blr"].member_no

    home = await collector.get("/home/collector")
    assert 'href="/dues/collect"' in home.text and "Record a cash payment" in home.text
    page = await collector.get("/dues/collect")
    assert page.status_code == 200 and 'name="receipt_no"' in page.text

    # Without the CSRF token nothing happens.
    r = await collector.post("/dues/collect", {"member_no": no, "amount": "150", "receipt_no": "P-1"}, csrf=False)
    assert r.status_code == 403 and await counts(services) == (0, 0, 0)
    # A bad amount shows an error on the form, keeps what was typed, posts nothing.
    r = await collector.post("/dues/collect", {"member_no": no, "amount": "0", "receipt_no": "P-1"})
    assert r.status_code == 422 and "The amount must be more than zero." in r.text and 'value="P-1"' in r.text
    r = await collector.post("/dues/collect", {"member_no": no, "amount": "1.005", "receipt_no": "P-1"})
    assert r.status_code == 422 and await counts(services) == (0, 0, 0)

    r = await collector.post("/dues/collect", {"member_no": no.lower(), "amount": "₹150", "months": "1",
                                               "receipt_no": "P-1"})
    assert r.status_code == 303, r.text
    receipt_url = r.headers["location"]
    assert receipt_url.startswith("/dues/receipts/")
    receipt = await collector.get(receipt_url)
    assert receipt.status_code == 200
    assert 'id="receipt-no">P-1<' in receipt.text and f'id="member-no">{no}<' in receipt.text
    assert "₹150.00" in receipt.text and f'id="paid-through">{MONTH}<' in receipt.text

    # The same receipt number again: 409 on the form, nothing more posted.
    r = await collector.post("/dues/collect", {"member_no": no, "amount": "100", "receipt_no": "P-1"})
    assert r.status_code == 409 and "already used" in r.text
    assert await counts(services) == (1, 2, 1)

    # The member sees the new standing and the payment, and can open the receipt.
    home = await member.get("/home/member")
    assert 'href="/dues/me"' in home.text
    mine = await member.get("/dues/me")
    assert mine.status_code == 200
    assert 'data-status="current"' in mine.text and f'id="paid-through">{MONTH}<' in mine.text
    assert "₹150.00" in mine.text and receipt_url in mine.text
    assert (await member.get(receipt_url)).status_code == 200

    # Someone else's receipt looks like no receipt at all.
    other = await make_web()
    other.client.cookies.set(SESSION_COOKIE, await login_cookie(services, await member_user(services, world["mys"])))
    assert (await other.get(receipt_url)).status_code == 404
