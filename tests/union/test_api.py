"""The JSON API of the union core, as promised in DESIGN.md §5: branches,
enrolment, search, one member, the logged-in user, and an OpenAPI document
that lists every /api/ route."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select

from tests.conftest import PASSWORD
from union import accounts
from union.app import route_table
from tests.helpers import hashed, quick_user
from union.models import AuditEvent, Member, User






async def test_branches_are_public(web, branches):
    r = await web.api("GET", "/api/branches")
    assert r.status_code == 200
    assert r.json() == {"branches": [
        {"code": "BLR", "name": "Bengaluru", "lat": 12.9716, "lon": 77.5946},
        {"code": "MYS", "name": "Mysuru", "lat": 12.2958, "lon": 76.6394},
    ]}


async def test_enrol_search_and_get(web, services, branches, make_token):
    collector = await make_token(await quick_user(services, "col", ["collector"], "BLR"))
    bearer = await make_token(await quick_user(services, "ob", ["office_bearer"]))
    today = dt.date.today().isoformat()

    r = await web.api("POST", "/api/members", token=collector,
                      json={"name": "  Kamala   Bai ", "branch": "blr", "language": "kn", "phone": "98450 11111"})
    assert r.status_code == 201
    assert r.json() == {"member_no": "BLR-00001", "name": "Kamala Bai", "branch": "BLR", "language": "kn",
                        "joined_on": today}
    r = await web.api("POST", "/api/members", token=collector,
                      json={"name": "Kamakshi", "branch": "BLR", "language": "te"})
    assert r.status_code == 201 and r.json()["member_no"] == "BLR-00002"
    r = await web.api("POST", "/api/members", token=bearer,
                      json={"name": "Kavya", "branch": "MYS", "language": "ur", "pin": "2468"})
    assert r.status_code == 201 and r.json()["member_no"] == "MYS-00001"

    async with services.sessions() as db:
        rows = {m.member_no: m for m in (await db.execute(select(Member))).scalars()}
        member_user = (await db.execute(select(User).where(User.member_id == rows["MYS-00001"].id))).scalar_one()
        enrolled = [e.target_id for e in (await db.execute(
            select(AuditEvent).where(AuditEvent.action == "member.enrol").order_by(AuditEvent.id))).scalars()]
    assert sorted(rows) == ["BLR-00001", "BLR-00002", "MYS-00001"]
    assert member_user.username == "mys-00001" and member_user.password_hash.startswith("$argon2id$")
    assert enrolled == ["BLR-00001", "BLR-00002", "MYS-00001"]

    r = await web.api("GET", "/api/members?q=kama", token=collector)
    assert r.status_code == 200
    assert [(m["member_no"], m["name"], m["branch"]) for m in r.json()["members"]] == [
        ("BLR-00001", "Kamala Bai", "BLR"), ("BLR-00002", "Kamakshi", "BLR")]
    r = await web.api("GET", "/api/members?q=ka", token=bearer)
    assert [m["member_no"] for m in r.json()["members"]] == ["BLR-00001", "BLR-00002", "MYS-00001"]
    r = await web.api("GET", "/api/members?q=mys-00001", token=bearer)
    assert [m["member_no"] for m in r.json()["members"]] == ["MYS-00001"]
    r = await web.api("GET", "/api/members?q=09845011111", token=collector)
    assert [m["member_no"] for m in r.json()["members"]] == ["BLR-00001"]
    # LIKE's wildcards are searched for as themselves, not as "any name".
    for q in ("", "   ", "zzz", "%", "_", "k%a"):
        r = await web.api("GET", "/api/members", token=collector, params={"q": q})
        assert r.status_code == 200 and r.json() == {"members": []}

    r = await web.api("GET", "/api/members/blr-00002", token=collector)
    assert r.status_code == 200
    assert r.json() == {"member_no": "BLR-00002", "name": "Kamakshi", "branch": "BLR", "language": "te",
                        "joined_on": today}

    member_token = await make_token(member_user)
    r = await web.api("GET", "/api/me", token=member_token)
    assert r.json() == {"username": "mys-00001", "roles": ["member"], "member_no": "MYS-00001"}
    r = await web.api("GET", "/api/me", token=collector)
    assert r.json() == {"username": "col", "roles": ["collector"], "member_no": None}


async def test_unknown_or_revoked_tokens_are_401(web, services, branches, make_token):
    user = await quick_user(services, "col", ["collector"], "BLR")
    token = await make_token(user)
    for bad in ("union_nonsense", token + "x", "", token.upper()):
        r = await web.api("GET", "/api/me", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
    r = await web.api("GET", "/api/me", headers={"Authorization": f"Basic {token}"})
    assert r.status_code == 401
    r = await web.api("GET", "/api/me", token=token)
    assert r.status_code == 200


def _openapi_path(path: str) -> str:
    return re.sub(r"{(\w+):\w+}", r"{\1}", path)


async def test_openapi_lists_every_api_route(web):
    r = await web.api("GET", "/api/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    routes = {(_openapi_path(path), method) for path, _, methods, _ in route_table() if path.startswith("/api/")
              for method in methods}
    assert documented == routes
    for path, ops in doc["paths"].items():
        # Path templates are OpenAPI's ({id}), and every one of them is a declared parameter.
        names = set(re.findall(r"{([^}]+)}", path))
        assert all(re.fullmatch(r"\w+", n) for n in names), path
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, method)
            assert op["operationId"] and op["responses"]
    core = doc["paths"]["/api/members"]
    assert core["post"]["requestBody"]["content"]["application/json"]["schema"]["required"] == \
        ["name", "branch", "language"]
    assert "201" in core["post"]["responses"] and "q" in {p["name"] for p in core["get"]["parameters"]}
