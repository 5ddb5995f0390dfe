"""Members: sensitive fields never reach the database in plaintext, phones are
found through the keyed hash, and bad input (malformed, oversized, duplicate,
unknown) gets a clear error and changes nothing."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from sqlalchemy import func, inspect, select, text

from tests.conftest import PASSWORD
from union import ratelimit
from union.models import AuditEvent, Member

SECRET = {
    "phone": "+91 98450 12345",
    "legal_name": "Lakshmi Devi Ramaswamy",
    "date_of_birth": "1990-04-17",
    "nominee": "Kavitha Sundaramurthy",
}
# Every form the plaintext could take in a column.
# (Long enough that a hash or a Fernet token cannot hold one by chance.)
NEEDLES = ["9845012345", "98450 12345", "Lakshmi", "Ramaswamy", "1990-04-17", "19900417", "17/04/1990",
           "Kavitha", "Sundaramurthy"]


async def count_members(services) -> int:
    async with services.sessions() as db:
        return (await db.execute(select(func.count()).select_from(Member))).scalar_one()


async def dump_tables(services) -> dict[str, str]:
    """Every row of every table as text, read with plain SQL (what a seized disk shows)."""
    async with services.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        out = {}
        for table in tables:
            rows = (await conn.execute(text(f'SELECT * FROM "{table}"'))).all()
            out[table] = "\n".join(" | ".join(str(v) for v in row) for row in rows)
    return out


@pytest.fixture
async def collector(web, make_user, make_token):
    user = await make_user("col-blr", ["collector"], "BLR")
    r = await web.login("col-blr", PASSWORD)
    assert r.status_code == 303
    web.token = await make_token(user)
    return web


async def test_raw_rows_hold_no_plaintext_and_phone_is_findable(collector, services):
    web = collector
    r = await web.api("POST", "/api/members", token=web.token,
                      json={"name": "Rani", "branch": "BLR", "language": "kn", "pin": "2468", **SECRET})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["member_no"] == "BLR-00001" and body["name"] == "Rani" and body["branch"] == "BLR"
    # The answer itself does not echo the private fields.
    assert not any(n in r.text for n in NEEDLES)

    # The same through the HTML form.
    await web.get("/members/new")
    r = await web.post("/members/new", {"working_name": "Meena", "branch": "BLR", "language": "te",
                                        "phone": "080-2222 3333", "legal_name": "Fathima Begum Syed",
                                        "date_of_birth": "1985-12-01", "nominee": "Zubeda Syed"})
    assert r.status_code == 303 and r.headers["location"] == "/members/BLR-00002?created=1"

    # Reading the private details decrypts them (and is audited).
    r = await web.get("/members/BLR-00001?reveal=1")
    assert r.status_code == 200
    for value in ("+919845012345", SECRET["legal_name"], SECRET["date_of_birth"], SECRET["nominee"]):
        assert value in r.text

    dump = await dump_tables(services)
    assert {"member", "user_account", "auditevent"} <= set(dump)
    assert "Rani" in dump["member"] and "blr-00001" in dump["user_account"]  # the dump really holds the rows
    needles = NEEDLES + ["80 2222 3333", "8022223333", "2222 3333", "Fathima", "Begum", "Zubeda", "1985-12-01",
                         "19851201"]
    for table, content in dump.items():
        for needle in needles:
            assert needle not in content, f"plaintext {needle!r} found in table {table}"

    async with services.sessions() as db:
        row = (await db.execute(select(Member).where(Member.member_no == "BLR-00001"))).scalar_one()
        assert row.phone_hash and len(row.phone_hash) == 64
        assert all(v.startswith("gAAAAA") for v in (row.phone_enc, row.legal_name_enc, row.date_of_birth_enc,
                                                     row.nominee_enc))
        actions = [(e.action, e.target_id) for e in (await db.execute(select(AuditEvent))).scalars()]
    assert ("member.enrol", "BLR-00001") in actions and ("member.read_sensitive", "BLR-00001") in actions

    # Found by phone, whatever way the phone is written (keyed hash of the normalised number).
    for q in ("+919845012345", "098450 12345", "98450-12345", "0091 9845012345"):
        r = await web.api("GET", "/api/members", token=web.token, params={"q": q})
        assert r.status_code == 200
        assert [m["member_no"] for m in r.json()["members"]] == ["BLR-00001"], q
    r = await web.get("/members", params={"q": "080 2222 3333"})
    assert r.status_code == 200 and "/members/BLR-00002" in r.text and "/members/BLR-00001" not in r.text
    # A different number finds nobody.
    r = await web.api("GET", "/api/members", token=web.token, params={"q": "+919845012346"})
    assert r.json() == {"members": []}


async def test_duplicate_phone_is_refused_and_nothing_is_created(collector, services, make_web):
    web = collector
    r = await web.api("POST", "/api/members", token=web.token,
                      json={"name": "First", "branch": "BLR", "language": "kn", "phone": "9845012345"})
    assert r.status_code == 201
    assert await count_members(services) == 1

    r = await web.api("POST", "/api/members", token=web.token,
                      json={"name": "Second", "branch": "BLR", "language": "kn", "phone": "+91 98450-12345"})
    assert r.status_code == 409
    assert r.json() == {"error": "conflict", "message": "A member with this phone number already exists.",
                        "field": "phone"}

    await web.get("/members/new")
    r = await web.post("/members/new", {"working_name": "Third", "branch": "BLR", "language": "kn",
                                        "phone": "0 98450 12345"})
    assert r.status_code == 422
    assert "A member with this phone number already exists." in r.text
    assert 'value="Third"' in r.text  # the form keeps what was typed

    anon = await make_web()
    await anon.get("/join")
    r = await anon.post("/join", {"working_name": "Fourth", "branch": "BLR", "language": "kn",
                                  "phone": "9845012345"})
    assert r.status_code == 422 and "A member with this phone number already exists." in r.text

    assert await count_members(services) == 1
    async with services.sessions() as db:
        # The refused enrolments used no member numbers either.
        names = [m.working_name for m in (await db.execute(select(Member))).scalars()]
        seq = (await db.execute(text("SELECT next_member_seq FROM branch WHERE code = 'BLR'"))).scalar_one()
    assert names == ["First"] and seq == 1


async def test_unknown_member_number_is_404(collector):
    web = collector
    r = await web.get("/members/BLR-04040")
    assert r.status_code == 404 and "No member with that number." in r.text
    r = await web.api("GET", "/api/members/BLR-04040", token=web.token)
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "message": "No member with that number.", "field": "member_no"}
    r = await web.api("GET", "/api/members/" + "X" * 300, token=web.token)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


BAD_FORMS = [
    ({"working_name": ""}, "Please fill in this field."),
    ({"working_name": "x" * 81}, "Too long."),
    ({"phone": "not a phone"}, "That does not look like a phone number."),
    ({"phone": "9" * 21}, "Too long."),
    ({"pin": "12"}, "A PIN is 4 to 8 digits."),
    ({"pin": "12ab"}, "A PIN is 4 to 8 digits."),
    ({"branch": "ZZZ"}, "Not a valid choice."),
    ({"language": "xx"}, "Not a valid choice."),
]
STAFF_ONLY = [
    ({"date_of_birth": "17-04-1990"}, "Not a valid date value."),
    ({"date_of_birth": "2999-01-01"}, "Please give the date of birth as YYYY-MM-DD."),
    ({"legal_name": "y" * 121}, "Field cannot be longer than 120 characters."),
    ({"branch": "MYS"}, "Not a valid choice."),  # outside the collector's branch
]
GOOD = {"working_name": "Sita", "branch": "BLR", "language": "kn"}


@pytest.mark.parametrize("page", ["/join", "/members/new"])
async def test_malformed_forms_get_clear_errors_and_create_nothing(page, collector, make_web, services):
    web = collector if page == "/members/new" else await make_web()
    cases = BAD_FORMS + (STAFF_ONLY if page == "/members/new" else [])
    for change, message in cases:
        await web.get(page)
        r = await web.post(page, {**GOOD, **change})
        assert r.status_code == 422, (change, r.status_code)
        assert r.headers["content-type"].startswith("text/html")
        assert message in r.text, (change, message)
        assert 'class="field has-error"' in r.text or 'class="notice error"' in r.text
    assert await count_members(services) == 0
    # And the good form does go through.
    await web.get(page)
    r = await web.post(page, GOOD)
    assert r.status_code == 303
    assert await count_members(services) == 1


async def test_join_is_rate_limited_per_address(make_web, services, branches, monkeypatch):
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: 1_000_000.0))  # one fixed window
    web = await make_web()
    limit = services.settings.public_requests_per_window
    await web.get("/join")
    for i in range(limit):
        r = await web.post("/join", {**GOOD, "working_name": f"Joiner {i}"})
        assert r.status_code == 303
    r = await web.post("/join", {**GOOD, "working_name": "One too many"})
    assert r.status_code == 429
    assert "Too many attempts. Please wait a few minutes and try again." in r.text
    assert await count_members(services) == limit


API_BAD = [
    ({"name": None}, 422, "invalid", "name"),
    ({"name": ""}, 422, "invalid", "name"),
    ({"name": 12}, 422, "invalid", "name"),
    ({"name": "x" * 81}, 422, "invalid", "working_name"),
    ({"language": "xx"}, 422, "invalid", "language"),
    ({"phone": "abc"}, 422, "invalid", "phone"),
    ({"phone": 9845012345}, 422, "invalid", "phone"),
    ({"date_of_birth": "1990-13-01"}, 422, "invalid", "date_of_birth"),
    ({"pin": "1"}, 422, "invalid", "pin"),
    ({"branch": "ZZZ"}, 404, "not_found", "branch"),
]


async def test_api_rejects_bad_members_and_creates_nothing(collector, services):
    web = collector
    for change, status, code, field in API_BAD:
        payload = {"name": "Sita", "branch": "BLR", "language": "kn", **change}
        payload = {k: v for k, v in payload.items() if v is not None}
        r = await web.api("POST", "/api/members", token=web.token, json=payload)
        assert r.status_code == status, (change, r.text)
        body = r.json()
        assert body["error"] == code and body["field"] == field and body["message"], (change, body)
    assert await count_members(services) == 0
    async with services.sessions() as db:
        seq = (await db.execute(text("SELECT next_member_seq FROM branch WHERE code = 'BLR'"))).scalar_one()
        enrolments = (await db.execute(select(func.count()).select_from(AuditEvent)
                                       .where(AuditEvent.action == "member.enrol"))).scalar_one()
    assert seq == 0 and enrolments == 0


async def test_audit_details_hold_field_names_not_values(collector, services):
    web = collector
    r = await web.api("POST", "/api/members", token=web.token,
                      json={"name": "Rani", "branch": "BLR", "language": "kn", **SECRET})
    assert r.status_code == 201
    async with services.sessions() as db:
        event = (await db.execute(select(AuditEvent).where(AuditEvent.action == "member.enrol"))).scalar_one()
    assert json.loads(event.detail) == {"branch": "BLR", "self_service": False,
                                        "fields": ["date_of_birth", "legal_name", "nominee", "phone"]}
    assert event.actor == "col-blr"


async def test_date_of_birth_is_stored_in_one_form(collector, services):
    web = collector
    r = await web.api("POST", "/api/members", token=web.token,
                      json={"name": "Basic", "branch": "BLR", "language": "kn", "date_of_birth": "19900417"})
    assert r.status_code == 201
    async with services.sessions() as db:
        member = (await db.execute(select(Member).where(Member.member_no == r.json()["member_no"]))).scalar_one()
    assert services.vault.decrypt(member.date_of_birth_enc) == "1990-04-17"


async def test_simultaneous_enrolments_with_one_phone_give_one_member_and_a_clear_409(collector, services):
    body = {"name": "Twin", "branch": "BLR", "language": "kn", "phone": "98450 12121"}
    first, second = await asyncio.gather(
        collector.api("POST", "/api/members", token=collector.token, json=body),
        collector.api("POST", "/api/members", token=collector.token, json={**body, "name": "Twin B"}))
    assert sorted([first.status_code, second.status_code]) == [201, 409]
    refused = first if first.status_code == 409 else second
    assert refused.json()["field"] == "phone"
    async with services.sessions() as db:
        assert (await db.execute(text("SELECT count(*) FROM member WHERE working_name LIKE 'Twin%'"))).scalar_one() == 1
