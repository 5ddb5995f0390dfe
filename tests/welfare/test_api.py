"""The welfare HTTP API and pages: GET /api/members/{member_no}/entitlements
exactly as DESIGN §5 promises (reasons in the caller's language, empty when
eligible), filing refused with the reasons, approvals and payout through the
API, branch limits, audited views, and the member's and officers' pages."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.helpers import PASSWORD
from tests.welfare.conftest import fund
from union.models import AuditEvent
from welfare import services as welfare_services
from welfare.models import WelfareClaim


def auth(token: str, **extra) -> dict:
    return {"Authorization": f"Bearer {token}", **extra}


async def test_entitlements_api_shape(services, world, client, make_token):
    token = await make_token(world.users["asha"])
    r = await client.get(f"/api/members/{world.members['asha'].member_no}/entitlements", headers=auth(token))
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["entitlements"]
    by_code = {e["scheme"]: e for e in body["entitlements"]}
    assert set(by_code) == {"sickness", "accident", "death", "old_age", "unemployment", "education",
                            "clinic_transport"}
    for e in body["entitlements"]:
        assert list(e) == ["scheme", "name", "eligible", "amount_minor", "reasons"]
        assert isinstance(e["name"], str) and e["name"]
        if e["eligible"]:
            assert isinstance(e["amount_minor"], int) and e["amount_minor"] > 0 and e["reasons"] == []
        else:
            assert e["amount_minor"] is None and e["reasons"] and all(isinstance(t, str) for t in e["reasons"])
    assert by_code["death"] == {"scheme": "death", "name": "Funeral support (paid to the nominee)", "eligible": True,
                                "amount_minor": 1000000, "reasons": []}
    assert by_code["old_age"]["eligible"] is False
    assert by_code["old_age"]["reasons"] == ["You need 60 months of membership; you have 24."]


async def test_entitlements_reasons_in_the_callers_language_and_branch_limits(services, world, client, make_token):
    member_no = world.members["new"].member_no
    officer = await make_token(world.users["officer1"])
    r = await client.get(f"/api/members/{member_no}/entitlements", headers=auth(officer, **{"Accept-Language": "en"}))
    death = next(e for e in r.json()["entitlements"] if e["scheme"] == "death")
    assert death["eligible"] is False and death["amount_minor"] is None
    assert death["reasons"][0] == "You need 6 months of membership; you have 0."
    # Asked in Kannada: still the same structure, every reason a non-empty text.
    r = await client.get(f"/api/members/{member_no}/entitlements", headers=auth(officer, **{"Accept-Language": "kn"}))
    kn = next(e for e in r.json()["entitlements"] if e["scheme"] == "death")
    assert len(kn["reasons"]) == len(death["reasons"]) and all(kn["reasons"])
    # An officer of another branch, and another member, see no such member.
    for user in ("officer-mys",):
        r = await client.get(f"/api/members/{member_no}/entitlements",
                             headers=auth(await make_token(world.users[user])))
        assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await client.get(f"/api/members/{world.members['bhavya'].member_no}/entitlements",
                         headers=auth(await make_token(world.users["asha"])))
    assert r.status_code == 404


async def test_claim_through_the_api(services, world, client, make_token):
    await fund(services, world, 20000)
    collector = await make_token(world.users["collector"])
    refused = await client.post("/api/welfare/claims", headers=auth(collector), json={
        "member_no": world.members["new"].member_no, "scheme": "death", "event_date": "2000-01-01",
        "evidence": "document"})
    assert refused.status_code == 422 and refused.json()["field"] == "event_date"
    from tests.welfare.conftest import TODAY

    refused = await client.post("/api/welfare/claims", headers=auth(collector), json={
        "member_no": world.members["new"].member_no, "scheme": "death", "event_date": TODAY.isoformat(),
        "evidence": "document"})
    assert refused.status_code == 422
    assert refused.json()["error"] == "not_eligible"
    assert refused.json()["reasons"][0] == "You need 6 months of membership; you have 0."
    unknown = await client.post("/api/welfare/claims", headers=auth(collector), json={
        "member_no": world.members["asha"].member_no, "scheme": "lottery", "event_date": TODAY.isoformat(),
        "evidence": "document"})
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_scheme"

    r = await client.post("/api/welfare/claims", headers=auth(collector), json={
        "member_no": world.members["asha"].member_no, "scheme": "death", "event_date": TODAY.isoformat(),
        "evidence": "collector_attestation", "details": "Cause of death: overdose"})
    assert r.status_code == 201, r.text
    claim = r.json()
    assert claim["status"] == "submitted" and claim["amount_minor"] == 1000000 and claim["approvals_needed"] == 2
    dup = await client.post("/api/welfare/claims", headers=auth(collector), json={
        "member_no": world.members["asha"].member_no, "scheme": "death", "event_date": TODAY.isoformat(),
        "evidence": "collector_attestation"})
    assert dup.status_code == 409 and dup.json()["error"] == "duplicate_claim"

    path = f"/api/welfare/claims/{claim['id']}"
    one, two = await make_token(world.users["officer1"]), await make_token(world.users["officer2"])
    r = await client.post(path + "/reject", headers=auth(one), json={})
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = await client.post(path + "/approve", headers=auth(one), json={})
    assert r.status_code == 200 and r.json()["status"] == "under_review"
    r = await client.post(path + "/approve", headers=auth(one), json={})
    assert r.status_code == 403 and r.json()["error"] == "not_allowed"
    r = await client.post(path + "/pay", headers=auth(one), json={"method": "cash"})
    assert r.status_code == 409 and r.json()["error"] == "wrong_status"
    r = await client.post(path + "/approve", headers=auth(two), json={})
    assert r.json()["status"] == "approved"
    r = await client.post(path + "/pay", headers=auth(two), json={"method": "cash"})
    assert r.status_code == 201 and r.json()["fund_balance_minor"] == 1000000

    # The member sees their claim without its details; the officer sees the details, and that is audited.
    mine = await client.get(path, headers=auth(await make_token(world.users["asha"])))
    assert mine.status_code == 200 and mine.json()["status"] == "paid" and "details" not in mine.json()
    assert "overdose" not in mine.text
    seen = await client.get(path, headers=auth(one))
    assert seen.json()["details"] == "Cause of death: overdose" and len(seen.json()["payouts"]) == 1
    other = await client.get(path, headers=auth(await make_token(world.users["officer-mys"])))
    assert other.status_code == 404
    async with services.reader() as db:
        reads = (await db.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "welfare.claim_read"))).scalar_one()
        events = list((await db.execute(select(AuditEvent.detail).where(
            AuditEvent.target_id == claim["reference"]))).scalars())
    assert reads == 1
    assert not any("overdose" in detail for detail in events)


async def test_member_and_officer_pages(services, world, make_web):
    await fund(services, world, 20000)
    member = await make_web()
    r = await member.client.post("/login/member", data={})
    await member.get("/login/member")
    r = await member.post("/login/member", {"member_no": world.members["asha"].member_no, "pin": "2468"})
    assert r.status_code == 303
    member.csrf = None
    page = await member.get("/welfare/me")
    assert page.status_code == 200
    assert 'id="entitlement-death" data-eligible="yes"' in page.text
    assert 'id="entitlement-old_age" data-eligible="no"' in page.text
    assert "You need 60 months of membership; you have 24." in page.text
    home = await member.get("/home/member")
    assert 'href="/welfare/me"' in home.text

    # The member files their own claim from the page.
    form = await member.get("/welfare/me/claim?scheme=clinic_transport")
    assert form.status_code == 200 and 'name="claimed"' in form.text
    from tests.welfare.conftest import TODAY

    r = await member.client.post("/welfare/me/claim", data={
        "csrf_token": member.csrf, "scheme": "clinic_transport", "event_date": TODAY.isoformat(), "claimed": "250",
        "evidence": "document", "details": "Auto to the ART centre"},
        files={"document": ("bill.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 10, "image/png")})
    assert r.status_code == 303, r.text[:500]
    async with services.reader() as db:
        claim = (await db.execute(select(WelfareClaim))).scalar_one()
    assert claim.amount_minor == 25000 and claim.filed_by_user_id == world.users["asha"].id
    mine = await member.get(r.headers["location"])
    assert mine.status_code == 200 and claim.reference in mine.text and "ART centre" not in mine.text

    officer = await make_web()
    await officer.login("officer1", PASSWORD)
    queue = await officer.get("/welfare/claims")
    assert f'id="claim-{claim.reference}" data-status="submitted"' in queue.text
    page = await officer.get(f"/welfare/claims/{claim.id}")
    assert "Auto to the ART centre" in page.text and 'id="documents"' in page.text
    r = await officer.post(f"/welfare/claims/{claim.id}/approve", {})
    assert r.status_code == 303
    r = await officer.post(f"/welfare/claims/{claim.id}/pay", {"method": "bank", "reference": ""})
    assert r.status_code == 422 and "A bank transfer needs its reference." in r.text
    r = await officer.post(f"/welfare/claims/{claim.id}/pay", {"method": "cash", "reference": ""})
    assert r.status_code == 303
    document = await officer.get(f"/welfare/claims/{claim.id}/documents/1")
    assert document.status_code == 200 and document.headers["content-type"] == "image/png"
    mine = await member.get("/welfare/me")
    assert f'id="claim-{claim.reference}" data-status="paid"' in mine.text
    report = await officer.get("/welfare/reports")
    assert report.status_code == 200 and 'id="budget-clinic_transport"' in report.text and "₹250.00" in report.text


async def test_staff_form_shows_the_reasons_and_files_nothing(services, world, make_web):
    collector = await make_web()
    await collector.login("collector", PASSWORD)
    page = await collector.get(f"/welfare/claims/new?member_no={world.members['new'].member_no}")
    assert page.status_code == 200 and 'id="entitlement-death" data-eligible="no"' in page.text
    from tests.welfare.conftest import TODAY

    r = await collector.post("/welfare/claims/new", {
        "member_no": world.members["new"].member_no, "scheme": "death", "event_date": TODAY.isoformat(),
        "evidence": "collector_attestation"})
    assert r.status_code == 422
    assert 'id="reasons"' in r.text and "You need 6 months of membership; you have 0." in r.text
    other = await collector.get(f"/welfare/claims/new?member_no={world.members['chitra'].member_no}")
    assert other.status_code == 404 and "Chitra" not in other.text
    r = await collector.post("/welfare/claims/new", {
        "member_no": world.members["asha"].member_no, "scheme": "death", "event_date": TODAY.isoformat(),
        "evidence": "collector_attestation"})
    assert r.status_code == 303 and "filed=W-" in r.headers["location"]
    done = await collector.get(r.headers["location"])
    assert "was filed" in done.text
    async with services.reader() as db:
        claims = list((await db.execute(select(WelfareClaim))).scalars())
    assert [c.member_id for c in claims] == [world.members["asha"].id]


async def test_office_bearer_defines_a_scheme_and_new_rules(services, world, make_web):
    bearer = await make_web()
    await bearer.login("bearer", PASSWORD)
    page = await bearer.get("/welfare/schemes")
    assert page.status_code == 200 and 'id="scheme-death"' in page.text
    r = await bearer.post("/welfare/schemes", {"code": "rent", "name": "Rent support after a raid",
                                               "effective_from": "2025-01-01", "min_membership_months": "3",
                                               "min_paid_months": "3", "waiting_days": "30",
                                               "benefit_kind": "actual_cost", "amount": "2000",
                                               "max_claims_per_year": "1", "yearly_budget": "50000",
                                               "evidence": "peer_attestation", "approvals_required": "1",
                                               "approval_threshold": "3000", "approvals_above_threshold": "2"})
    assert r.status_code == 303
    r = await bearer.post("/welfare/schemes", {"scheme": "rent", "effective_from": "2025-01-01", "amount": "3000",
                                               "evidence": "document"})
    assert r.status_code == 422 and "already has rules starting on that date" in r.text
    r = await bearer.post("/welfare/schemes", {"scheme": "rent", "effective_from": "2025-07-01", "amount": "3000",
                                               "min_paid_months": "13", "evidence": "document"})
    assert r.status_code == 422 and "min_paid_months" in r.text
    r = await bearer.post("/welfare/schemes", {"scheme": "rent", "effective_from": "2025-07-01", "amount": "3000",
                                               "benefit_kind": "actual_cost", "evidence": "document"})
    assert r.status_code == 303
    async with services.reader() as db:
        scheme = await welfare_services.scheme_by_code(db, "rent")
        old = await welfare_services.rules_in_force(db, scheme.id, __import__("datetime").date(2025, 3, 1))
        new = await welfare_services.rules_in_force(db, scheme.id, __import__("datetime").date(2025, 8, 1))
    assert (old.amount_minor, old.evidence, old.yearly_budget_minor) == (200000, "peer_attestation", 5000000)
    assert (new.amount_minor, new.evidence) == (300000, "document")
    # Welfare officers read the rules but do not change them.
    officer = await make_web()
    await officer.login("officer1", PASSWORD)
    assert (await officer.get("/welfare/schemes")).status_code == 200
    r = await officer.post("/welfare/schemes", {"scheme": "rent", "effective_from": "2026-01-01", "amount": "1",
                                                "evidence": "document"})
    assert r.status_code == 403 and "Only office bearers" in r.text
