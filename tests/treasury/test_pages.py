"""The treasurer's pages, exports and API: the trial balance API keeps its public shape
(DESIGN §5), every report view and export is audited and every export names who made
it and when, branch treasurers see only their branch, members read the monthly summary
(totals, no names) and nothing else of the books."""

from __future__ import annotations

import csv
import json

from sqlalchemy import select

from tests.helpers import PASSWORD, hashed, quick_user
from union.models import AuditEvent

AS_OF = "2025-04-30"


async def audit_actions(services) -> list[tuple[str, str, dict]]:
    async with services.reader() as db:
        return [(e.action, e.target_id, json.loads(e.detail)) for e in (await db.execute(
            select(AuditEvent).where(AuditEvent.action.like("treasury.%")).order_by(AuditEvent.id))).scalars()]


async def test_trial_balance_api_has_the_public_shape(services, april, web, make_token):
    token = await make_token(april.treasurer)
    r = await web.api("GET", f"/api/treasury/trial-balance?as_of={AS_OF}", token=token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"accounts", "total_minor"} and body["total_minor"] == 0
    accounts = {a["code"]: a for a in body["accounts"]}
    assert all(set(a) == {"code", "name", "balance_minor", "currency"} for a in body["accounts"])
    assert accounts["dues_income"] == {"code": "dues_income", "name": "Members' dues", "balance_minor": -50000,
                                       "currency": "INR"}
    assert accounts["welfare_fund"]["balance_minor"] == -5000 and accounts["bank"]["balance_minor"] == 0
    early = (await web.api("GET", "/api/treasury/trial-balance?as_of=2025-04-04", token=token)).json()
    assert {a["code"]: a["balance_minor"] for a in early["accounts"]}["dues_income"] == -30000
    blr = (await web.api("GET", f"/api/treasury/trial-balance?as_of={AS_OF}&branch=BLR", token=token)).json()
    assert {a["code"]: a["balance_minor"] for a in blr["accounts"]}["dues_income"] == -40000
    assert blr["total_minor"] == 0

    bad = await web.api("GET", "/api/treasury/trial-balance?as_of=30-04-2025", token=token)
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_period"
    unknown = await web.api("GET", "/api/treasury/trial-balance?branch=NOSUCHBRANCH", token=token)
    assert unknown.status_code == 404 and unknown.json()["field"] == "branch"  # the branch, not the route
    assert ("treasury.report_view", "trial-balance") in [(a, t) for a, t, _ in await audit_actions(services)]


async def test_only_treasurers_and_office_bearers_see_the_books(services, april, make_token, client, web):
    collector_token = await make_token(april.collectors["BLR"])
    r = await web.api("GET", "/api/treasury/trial-balance", token=collector_token)
    assert r.status_code == 403
    ob_token = await make_token(april.office_bearer)
    assert (await web.api("GET", "/api/treasury/trial-balance", token=ob_token)).status_code == 200
    assert (await client.get("/api/treasury/trial-balance")).status_code == 401


async def test_every_report_page_and_export(services, april, web):
    await web.login("tara", PASSWORD)
    query = f"from=2025-04&to=2025-04&as_of={AS_OF}"
    for name, expected in [("trial-balance", "₹"), ("income-expenditure", "<svg"), ("funds", "Welfare fund"),
                           ("arrears", "Bengaluru"), ("collection", "colblr"), ("cash-held", "colmys")]:
        r = await web.get(f"/treasury/reports/{name}?{query}")
        assert r.status_code == 200, (name, r.text[:300])
        assert expected in r.text, name
        r = await web.get(f"/treasury/exports/{name}?{query}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), name
        lines = r.text.splitlines()
        assert lines[1].startswith("# Exported by tara at ") and lines[1].endswith(" UTC"), lines[:3]
        assert lines[2] == f"# Filters: branch=ALL; from=2025-04-01; to=2025-04-30; as_of={AS_OF}"
    r = await web.get(f"/treasury/exports/trial-balance?{query}")
    assert "dues_income,Members' dues,income,-50000,INR" in r.text
    r = await web.get(f"/treasury/exports/income-expenditure?{query}")
    assert "2025-04,50000,10000,0,15000,0,300,500,0,24200," in r.text
    actions = await audit_actions(services)
    views = {t for a, t, _ in actions if a == "treasury.report_view"}
    exports = {t for a, t, _ in actions if a == "treasury.export"}
    assert views >= {"trial-balance", "income-expenditure", "funds", "arrears", "collection", "cash-held"}
    assert exports == views - {"overview"}
    assert (await web.get("/treasury/reports/nosuch")).status_code == 404
    r = await web.get("/treasury/reports/trial-balance?as_of=yesterday")
    assert r.status_code == 422


async def test_member_statement_page_and_export(services, april, web):
    await web.login("tara", PASSWORD)
    r = await web.get("/treasury/statements?member_no=BLR-00001")
    assert r.status_code == 303 and r.headers["location"] == "/treasury/statements/BLR-00001"
    r = await web.get("/treasury/statements/BLR-00001?from=2025-04&to=2025-04")
    assert r.status_code == 200 and 'data-minor="-10000"' in r.text
    r = await web.get("/treasury/statements/BLR-00001/export?from=2025-04&to=2025-04")
    rows = r.text.splitlines()
    assert rows[1].startswith("# Exported by tara") and rows[3] == "date,kind,description,credit_minor," \
                                                                   "paid_total_minor,entry_id"
    assert [row[3:5] for row in csv.reader(rows[5:])] == [["10000", "10000"], ["10000", "20000"], ["-10000", "10000"]]
    assert (await web.get("/treasury/statements/NOPE-1")).status_code == 404
    assert ("treasury.statement_view", "BLR-00001") in [(a, t) for a, t, _ in await audit_actions(services)]


async def test_a_branch_treasurer_sees_only_their_branch(services, april, make_web):
    await quick_user(services, "mystreasurer", ["treasurer"], "MYS")
    web = await make_web()
    await web.login("mystreasurer", PASSWORD)
    r = await web.get(f"/treasury/exports/trial-balance?as_of={AS_OF}")
    assert "branch=MYS" in r.text and "dues_income,Members' dues,income,-10000,INR" in r.text
    assert (await web.get(f"/treasury/reports/trial-balance?branch=BLR")).status_code == 404
    assert (await web.get("/treasury/statements/BLR-00001")).status_code == 404
    assert (await web.get("/treasury/statements/MYS-00001")).status_code == 200


async def test_members_read_the_monthly_summary_without_names(services, april, web, make_user):
    from union import accounts

    async with services.sessions() as db:
        user = await accounts.create_user(db, username="membera", password=None, roles=["member"],
                                          password_hash=hashed(PASSWORD))
        user.member_id = april.members["A"].id
        db.add(user)
        await db.commit()
    await web.login("membera", PASSWORD)
    r = await web.get("/summary?month=2025-04")
    assert r.status_code == 200, r.text[:300]
    assert "₹500.00" in r.text  # dues in
    assert "₹150.00" in r.text  # welfare paid
    assert "3 / 3" in r.text  # members who paid
    for name in ("Member A", "Member B", "Member C", "BLR-0000", "MYS-0000", "colblr"):
        assert name not in r.text
    assert (await web.get("/treasury")).status_code == 403
    assert (await web.get("/summary?month=2099-01")).status_code == 422
    await web.post("/language", {"lang": "kn", "next": "/summary"})
    r = await web.get("/summary?month=2025-04")
    assert r.status_code == 200 and '<html lang="kn">' in r.text and "₹500.00" in r.text


async def test_overview_page_with_charts(services, april, web):
    await web.login("tara", PASSWORD)
    r = await web.get("/treasury?from=2025-01&to=2025-06")
    assert r.status_code == 200
    assert r.text.count("<svg class=\"chart\"") == 2 and "<script" not in r.text.split("</head>")[1]
    r = await web.get("/home/treasurer")
    assert 'href="/treasury"' in r.text


async def test_close_a_month_and_correct_an_entry_on_the_pages(services, april, web):
    await web.login("tara", PASSWORD)
    r = await web.get("/treasury/periods?month=2025-04")
    assert r.status_code == 200 and "card payment differences" in r.text  # the card entry has no card record
    r = await web.post("/treasury/periods/close", {"month": "2025-04", "note": ""})
    assert r.status_code == 409 and "2025-04 is not reconciled" in r.text
    r = await web.post("/treasury/periods/close", {"month": "2025-04", "note": "card module not live in April",
                                                   "confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"] == "/treasury/periods?closed=2025-04"
    r = await web.get("/treasury/periods?closed=2025-04")
    assert "2025-04 is closed." in r.text and "/treasury/periods/2025-04/checkpoint" in r.text
    refund = april.entries["refund"]
    r = await web.post("/treasury/corrections", {"entry_id": refund.id, "reason": ""})
    assert r.status_code == 422 and "A correction needs a reason." in r.text
    r = await web.post("/treasury/corrections", {"entry_id": refund.id, "reason": "refund was never sent"})
    assert r.status_code == 200 and f"Entry {refund.id} was reversed by" in r.text
    r = await web.get("/treasury/reconcile?from=2025-04&to=2025-04")
    assert r.status_code == 200 and "books a card payment with no card record" in r.text
    actions = [a for a, _t, _d in await audit_actions(services)]
    assert "treasury.period_closed" in actions and "treasury.correction" in actions


async def test_office_bearers_read_but_do_not_close(services, april, make_web):
    web = await make_web()
    await web.login("obi", PASSWORD)
    assert (await web.get("/treasury/periods")).status_code == 200
    r = await web.post("/treasury/periods/close", {"month": "2025-04", "note": "x", "confirm": "yes"})
    assert r.status_code == 403
