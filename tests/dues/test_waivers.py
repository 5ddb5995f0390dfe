"""Dues holidays and hardship waivers: an office bearer grants N months with a reason; the
months' dues are booked Dr dues_waived / Cr dues_income for the member, so standing counts
them; the reason is encrypted and the grant audited; revoking reverses the entry; bad input
and the wrong people change nothing; the page on the member and the API."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, text, update

from dues import ledger
from dues import services as dues
from dues.cash_ops_models import DuesWaiver
from tests.union.test_policy import enrol, login_cookie, quick_user
from union.models import AuditEvent, Member
from union.web import SESSION_COOKIE

TODAY = dt.date.today()
MONTH = f"{TODAY:%Y-%m}"


def month_after(day: dt.date, n: int) -> str:
    index = day.year * 12 + day.month - 1 + n
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


@pytest.fixture
async def world(services, branches, make_token):
    member = await enrol(services, "Asha Waiver", "BLR")
    other = await enrol(services, "Bina Waiver", "MYS")
    office = await quick_user(services, "ob-waiver", ["office_bearer"])
    ob_mys = await quick_user(services, "ob-mys", ["office_bearer"], "MYS")
    collector = await quick_user(services, "col-waiver", ["collector"], "BLR")
    return {"member": member, "other": other, "office": office, "ob_mys": ob_mys, "collector": collector,
            "token": await make_token(office), "token_mys": await make_token(ob_mys),
            "token_col": await make_token(collector)}


async def standing(services, member):
    async with services.reader() as db:
        m = await db.get(Member, member.id)
        return await dues.standing(db, member=m, today=TODAY, grace_months=2)


async def counts(services):
    async with services.reader() as db:
        return ((await db.execute(select(func.count()).select_from(DuesWaiver))).scalar_one(),
                (await db.execute(text("SELECT count(*) FROM journal_entry"))).scalar_one())


async def test_api_grant_books_the_months_and_counts_for_standing(web, world, services):
    assert (await standing(services, world["member"])).status == "new"
    r = await web.api("POST", f"/api/members/{world['member'].member_no}/waivers", token=world["token"],
                      json={"kind": "hardship", "from_month": MONTH, "months": 3, "reason": "In hospital, no income"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body | {"id": 0, "entry_id": None} == {"id": 0, "member_no": world["member"].member_no, "kind": "hardship",
                                                  "from_month": MONTH, "months": 3, "amount_minor": 30000,
                                                  "currency": "INR", "entry_id": None, "revoked": False}
    s = await standing(services, world["member"])
    assert (s.status, s.paid_through) == ("current", month_after(TODAY, 2))
    async with services.reader() as db:
        bal = await ledger.balances(db, accounts=["dues_waived", "dues_income"])
        assert {c: m.amount_minor for c, m in bal.items()} == {"dues_waived": 30000, "dues_income": -30000}
        waiver = await db.get(DuesWaiver, body["id"])
        assert "hospital" not in waiver.reason_enc and services.vault.decrypt(waiver.reason_enc) == "In hospital, no income"
        event = (await db.execute(select(AuditEvent).where(AuditEvent.action == "dues.waiver_granted"))).scalar_one()
        assert event.actor == "ob-waiver" and "hospital" not in event.detail
    paths = (await web.get("/api/openapi.json")).json()["paths"]
    assert "post" in paths["/api/members/{member_no}/waivers"]


@pytest.mark.parametrize("change, field", [
    ({"reason": ""}, "reason"), ({"reason": "   "}, "reason"), ({"months": 0}, "months"), ({"months": 1.5}, "months"),
    ({"months": 25}, "months"), ({"from_month": "2025-13"}, "from_month"), ({"from_month": "May"}, "from_month"),
    ({"kind": "forever"}, "kind"), ({"from_month": "2001-01"}, "from_month"),
])
async def test_bad_input_is_422_and_changes_nothing(web, world, services, change, field):
    data = {"kind": "holiday", "from_month": MONTH, "months": 2, "reason": "Travelling"} | change
    r = await web.api("POST", f"/api/members/{world['member'].member_no}/waivers", token=world["token"], json=data)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert await counts(services) == (0, 0)


async def test_only_office_bearers_of_the_branch(web, world, services):
    data = {"kind": "holiday", "from_month": MONTH, "months": 1, "reason": "x"}
    r = await web.api("POST", f"/api/members/{world['member'].member_no}/waivers", token=world["token_col"], json=data)
    assert r.status_code == 403
    # A Mysuru office bearer cannot see a Bengaluru member (looks unknown); unknown numbers too.
    r = await web.api("POST", f"/api/members/{world['member'].member_no}/waivers", token=world["token_mys"], json=data)
    assert r.status_code == 404
    r = await web.api("POST", "/api/members/BLR-99999/waivers", token=world["token"], json=data)
    assert r.status_code == 404
    assert await counts(services) == (0, 0)


async def test_waiver_at_the_rate_in_force_each_month(web, world, services):
    # The member is on the concessional plan (Rs 50), whose rate goes up to Rs 80 from next month.
    async with services.sessions() as db:
        plan_id = (await db.execute(text("SELECT id FROM dues_plan WHERE code = 'concessional'"))).scalar_one()
        await db.execute(text("INSERT INTO dues_account (member_id, plan_id, exempt, exempt_reason, updated_at) "
                              "VALUES (:m, :p, false, '', CURRENT_TIMESTAMP)"), {"m": world["member"].id, "p": plan_id})
        nxt = dt.date.fromisoformat(month_after(TODAY, 1) + "-01")
        await db.execute(text("INSERT INTO dues_rate (plan_id, monthly_minor, currency, effective_from) "
                              "VALUES (:p, 8000, 'INR', :d)"), {"p": plan_id, "d": nxt})
        await db.commit()
    r = await web.api("POST", f"/api/members/{world['member'].member_no}/waivers", token=world["token"],
                      json={"kind": "holiday", "from_month": MONTH, "months": 2, "reason": "Festival travel"})
    assert r.status_code == 201 and r.json()["amount_minor"] == 5000 + 8000


async def test_revoke_through_the_page_reverses_the_entry(web, world, services, make_web):
    office = await make_web()
    office.client.cookies.set(SESSION_COOKIE, await login_cookie(services, world["office"]))
    no = world["member"].member_no
    detail = await office.get(f"/members/{no}")
    assert f'href="/members/{no}/waivers"' in detail.text
    page = await office.get(f"/members/{no}/waivers")
    assert page.status_code == 200 and 'name="reason"' in page.text
    r = await office.post(f"/members/{no}/waivers", {"kind": "holiday", "from_month": MONTH, "months": "2",
                                                     "reason": ""})
    assert r.status_code == 422 and "A reason is required." in r.text and await counts(services) == (0, 0)
    r = await office.post(f"/members/{no}/waivers", {"kind": "holiday", "from_month": MONTH, "months": "2",
                                                     "reason": "Visiting family"})
    assert r.status_code == 303 and r.headers["location"] == f"/members/{no}/waivers?done=granted"
    page = await office.get(r.headers["location"])
    assert "Visiting family" in page.text and "₹200.00" in page.text
    assert (await standing(services, world["member"])).paid_through == month_after(TODAY, 1)
    async with services.reader() as db:
        waiver = (await db.execute(select(DuesWaiver))).scalar_one()
        assert (await db.execute(select(func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action == "dues.waiver_reasons_read"))).scalar_one() >= 1

    r = await office.post(f"/members/{no}/waivers/{waiver.id}/revoke", {"reason": ""})
    assert r.status_code == 422
    r = await office.post(f"/members/{no}/waivers/{waiver.id}/revoke", {"reason": "Came back early"})
    assert r.status_code == 303
    s = await standing(services, world["member"])
    assert (s.status, s.paid_through) == ("new", None)
    async with services.reader() as db:
        waiver = await db.get(DuesWaiver, waiver.id)
        assert waiver.revoked_at is not None and waiver.revoke_entry_id
        bal = await ledger.balances(db, accounts=["dues_waived", "dues_income"])
        assert {c: m.amount_minor for c, m in bal.items()} == {"dues_waived": 0, "dues_income": 0}
        assert (await db.execute(select(func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action == "dues.waiver_revoked"))).scalar_one() == 1
    r = await office.post(f"/members/{no}/waivers/{waiver.id}/revoke", {"reason": "again"})
    assert r.status_code == 409
    # A collector may open the member but not the waivers.
    collector = await make_web()
    collector.client.cookies.set(SESSION_COOKIE, await login_cookie(services, world["collector"]))
    assert 'waivers-link' not in (await collector.get(f"/members/{no}")).text
    assert (await collector.get(f"/members/{no}/waivers")).status_code == 403


async def test_crisis_never_consults_dues():
    """Standing never blocks crisis help: the crisis package does not even import dues."""
    import pathlib

    crisis = pathlib.Path(__file__).resolve().parents[2] / "crisis"
    for path in crisis.glob("*.py"):
        source = path.read_text()
        assert "from dues" not in source and "import dues" not in source, path.name


async def test_member_not_yet_joined_months(web, world, services):
    async with services.sessions() as db:
        await db.execute(update(Member).where(Member.id == world["member"].id)
                         .values(joined_on=dt.date(TODAY.year, TODAY.month, 1)))
        await db.commit()
    r = await web.api("POST", f"/api/members/{world['member'].member_no}/waivers", token=world["token"],
                      json={"kind": "holiday", "from_month": month_after(TODAY, -1), "months": 1, "reason": "x"})
    assert r.status_code == 422 and r.json()["field"] == "from_month"
