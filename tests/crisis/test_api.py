"""The crisis HTTP contract (DESIGN §5) on both databases: the public intake and
the caller's status, the team's answers and steps through to resolution and the
retention purge, bad input that changes nothing, the public rate limit that
never refuses a new caller, and the teams API."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest
from sqlalchemy import func, select, update

from crisis import services as crisis
from crisis.models import CaseNote, FollowUp, Incident, Offer, Team, TeamMember
from tests.crisis.conftest import (HERE, at_km, backdate_due, due_rows, incident_by_ref, offers_of, one, rows,
                                   subscribe, team_row)
from union import jobs
from union.models import DueWork, utcnow

INCIDENTS = "/api/crisis/incidents"


def ask(kind="other", language="kn", km=0.0, **extra) -> dict:
    lat, lon = at_km(km)
    return {"kind": kind, "language": language, "location": {"lat": lat, "lon": lon}, **extra}


async def count(services, model) -> int:
    async with services.sessions() as db:
        return (await db.execute(select(func.count()).select_from(model))).scalar_one()


# --- The journey ----------------------------------------------------------------------------

async def test_help_request_to_resolution_and_purge(services, settings, web, make_team):
    near = await make_team("Near", km=1, skills=("counselling",))
    nxt = await make_team("Next", km=2, skills=("counselling",))
    device = (await subscribe(services, near.user))[0]

    response = await web.api("POST", INCIDENTS, json=ask("client_violence", callback_phone="+91 98450 00001",
                                                         note="third floor, blue door"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"reference", "status", "status_token"} and body["status"] == "offered"
    ref, token = body["reference"], body["status_token"]

    incident = await incident_by_ref(services, ref)
    (offer,) = await offers_of(services, incident.id)
    assert (offer.team_id, offer.status) == (near.id, "pending")
    assert (await team_row(services, near.id)).status == "offered"
    (push,) = await due_rows(services, kind="crisis.push")
    assert json.loads(push.payload)["subscription"] == device
    (sms,) = await due_rows(services, kind="crisis.offer_sms")
    (deadline,) = await due_rows(services, kind="crisis.offer_deadline")
    assert sms.due_at == offer.created_at + dt.timedelta(seconds=settings.ack_timeout_seconds / 2)
    assert deadline.due_at == offer.deadline_at == offer.created_at + dt.timedelta(seconds=settings.ack_timeout_seconds)

    # The caller checks progress with the status token; a wrong token and an unknown reference look the same.
    status = await web.api("GET", f"{INCIDENTS}/{ref}", params={"token": token})
    assert status.status_code == 200 and status.json()["status"] == "offered" and status.json()["reference"] == ref
    assert "location" not in status.json() and "callback_phone" not in status.text
    wrong = await web.api("GET", f"{INCIDENTS}/{ref}", params={"token": token + "x"})
    unknown = await web.api("GET", f"{INCIDENTS}/HZZZZZZZ", params={"token": token})
    missing = await web.api("GET", f"{INCIDENTS}/{ref}")
    assert wrong.status_code == unknown.status_code == missing.status_code == 404
    assert wrong.json() == unknown.json() == missing.json()

    # Another team's responder may not answer; the right one accepts.
    other = await web.api("POST", f"/api/crisis/offers/{offer.id}/accept", token=nxt.token)
    assert other.status_code == 403 and other.json()["error"] == "forbidden"
    assert (await one(services, Offer, offer.id)).status == "pending"
    accepted = await web.api("POST", f"/api/crisis/offers/{offer.id}/accept", token=near.token)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted" and accepted.json()["incident_status"] == "accepted"
    row = await one(services, Incident, incident.id)
    assert row.status == "accepted" and row.accepted_at is not None
    assert (await team_row(services, near.id)).status == "busy"
    before = await one(services, Offer, offer.id)

    again = await web.api("POST", f"/api/crisis/offers/{offer.id}/accept", token=near.token)
    assert again.status_code == 409 and again.json()["error"] == "offer_closed"
    assert "already accepted" in again.json()["message"]
    after = await one(services, Offer, offer.id)
    assert (after.status, after.answered_at) == (before.status, before.answered_at)
    assert (await one(services, Incident, incident.id)).accepted_at == row.accepted_at
    declined_late = await web.api("POST", f"/api/crisis/offers/{offer.id}/decline", token=near.token)
    assert declined_late.status_code == 409
    assert (await team_row(services, near.id)).status == "busy"

    # Steps, each with its time; a case note; resolution.
    times = {}
    for step in ("en_route", "on_scene"):
        moved = await web.api("POST", f"{INCIDENTS}/{incident.id}/status", token=near.token, json={"status": step})
        assert moved.status_code == 200, moved.text
        assert moved.json()["status"] == step and moved.json()["steps"][step] is not None
        times[step] = moved.json()["steps"][step]
    backwards = await web.api("POST", f"{INCIDENTS}/{incident.id}/status", token=near.token, json={"status": "en_route"})
    assert backwards.status_code == 409 and backwards.json()["error"] == "bad_transition"
    bogus = await web.api("POST", f"{INCIDENTS}/{incident.id}/status", token=near.token, json={"status": "flying"})
    assert bogus.status_code == 409
    not_mine = await web.api("POST", f"{INCIDENTS}/{incident.id}/status", token=nxt.token, json={"status": "resolved"})
    assert not_mine.status_code == 403
    note = await web.api("POST", f"{INCIDENTS}/{incident.id}/notes", token=near.token, json={"body": "Safe now."})
    assert note.status_code == 201
    resolved = await web.api("POST", f"{INCIDENTS}/{incident.id}/status", token=near.token, json={"status": "resolved"})
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"

    row = await one(services, Incident, incident.id)
    assert row.en_route_at.isoformat() == times["en_route"] and row.on_scene_at.isoformat() == times["on_scene"]
    assert row.accepted_at <= row.en_route_at <= row.on_scene_at <= row.resolved_at
    team = await team_row(services, near.id)
    assert (team.status, team.current_incident_id) == ("available", None)
    (follow_up,) = await rows(services, FollowUp, FollowUp.incident_id == incident.id)
    assert follow_up.due_on == (row.resolved_at + dt.timedelta(days=settings.follow_up_days)).date()
    (purge,) = await due_rows(services, kind="crisis.purge")
    assert purge.due_at == row.resolved_at + dt.timedelta(days=settings.retention_days)
    status = await web.api("GET", f"{INCIDENTS}/{ref}", params={"token": token})
    assert status.json()["status"] == "resolved"

    # The retention purge, once due: precise location, phone, note and case notes gone; statistics stay.
    await backdate_due(services, DueWork.id == purge.id)
    assert await jobs.run_due_work(services, purge.id) == "done"
    row = await one(services, Incident, incident.id)
    assert (row.lat_enc, row.lon_enc, row.callback_phone_enc, row.callback_phone_hash, row.note_enc) == (None,) * 5
    assert crisis.incident_point(services, row) is None
    assert (row.kind, row.branch_id, row.status) == ("client_violence", incident.branch_id, "resolved")
    assert None not in (row.created_at, row.offered_at, row.accepted_at, row.en_route_at, row.on_scene_at, row.resolved_at)
    assert [n.body_enc for n in await rows(services, CaseNote, CaseNote.incident_id == incident.id)] == [None]
    late_note = await web.api("POST", f"{INCIDENTS}/{incident.id}/notes", token=near.token, json={"body": "more"})
    assert late_note.status_code == 409 and late_note.json()["error"] == "bad_transition"


async def test_decline_over_the_api_offers_the_next_team(services, web, make_team):
    near = await make_team("Near", km=1)
    nxt = await make_team("Next", km=2)
    ref = (await web.api("POST", INCIDENTS, json=ask())).json()["reference"]
    incident = await incident_by_ref(services, ref)
    (offer,) = await offers_of(services, incident.id)

    declined = await web.api("POST", f"/api/crisis/offers/{offer.id}/decline", token=near.token)

    assert declined.status_code == 200 and declined.json()["status"] == "declined"
    assert (await team_row(services, near.id)).status == "available"
    offers = await offers_of(services, incident.id)
    assert [(o.team_id, o.status) for o in offers] == [(near.id, "declined"), (nxt.id, "pending")]
    assert (await team_row(services, nxt.id)).status == "offered"
    # The team's app lists the offer for the next team's responder, not for the first.
    mine = await web.api("GET", "/api/crisis/offers", token=nxt.token)
    assert [o["id"] for o in mine.json()["offers"]] == [offers[1].id]
    assert (await web.api("GET", "/api/crisis/offers", token=near.token)).json()["offers"] == []


async def test_accepting_a_lapsed_offer_is_refused(services, web, make_team):
    near = await make_team("Near", km=1)
    await make_team("Next", km=2)
    t0 = utcnow() - dt.timedelta(seconds=120)
    async with services.sessions() as db:
        incident, _, _ = await crisis.create_incident(db, services, intake=crisis.Intake(
            kind="other", language="kn", lat=HERE[0], lon=HERE[1]), now=t0)
        await db.commit()
    (offer,) = await offers_of(services, incident.id)

    # Past the deadline but before the deadline job ran: refused all the same.
    early = await web.api("POST", f"/api/crisis/offers/{offer.id}/accept", token=near.token)
    assert early.status_code == 409 and "lapsed" in early.json()["message"]

    async with services.sessions() as db:
        await crisis.lapse_offer(db, services, offer_id=offer.id)
        await db.commit()
    response = await web.api("POST", f"/api/crisis/offers/{offer.id}/accept", token=near.token)
    assert response.status_code == 409 and response.json()["error"] == "offer_closed"
    assert "lapsed" in response.json()["message"]
    assert (await one(services, Offer, offer.id)).status == "lapsed"
    assert (await team_row(services, near.id)).status == "available"
    assert (await one(services, Incident, incident.id)).accepted_at is None


async def test_accept_needs_a_login_and_the_responder_role(services, web, make_team, make_user, make_token):
    await make_team("Near", km=1)
    ref = (await web.api("POST", INCIDENTS, json=ask())).json()["reference"]
    (offer,) = await offers_of(services, (await incident_by_ref(services, ref)).id)
    anonymous = await web.api("POST", f"/api/crisis/offers/{offer.id}/accept")
    assert anonymous.status_code == 401
    treasurer = await make_token(await make_user("money", ["treasurer"], "BLR"))
    assert (await web.api("POST", f"/api/crisis/offers/{offer.id}/accept", token=treasurer)).status_code == 403
    assert (await one(services, Offer, offer.id)).status == "pending"


# --- Bad input ---------------------------------------------------------------------------------

BAD_REQUESTS = [
    ("latitude out of range", ask() | {"location": {"lat": 91, "lon": 77.6}}, "location"),
    ("longitude out of range", ask() | {"location": {"lat": 12.9, "lon": -180.5}}, "location"),
    ("latitude as text", ask() | {"location": {"lat": "12.9", "lon": 77.6}}, "location"),
    ("latitude only", ask() | {"location": {"lat": 12.9}}, "location"),
    ("boolean coordinates", ask() | {"location": {"lat": True, "lon": False}}, "location"),
    ("location as text", ask() | {"location": "Koramangala"}, "location"),
    ("no location", {"kind": "other", "language": "kn"}, "location"),
    ("empty location", ask() | {"location": {}}, "location"),
    ("area as a number", ask() | {"location": {"area": 5}}, "location"),
    ("unknown kind", ask(kind="robbery"), "kind"),
    ("kind as a number", ask() | {"kind": 3}, "kind"),
    ("missing kind", {k: v for k, v in ask().items() if k != "kind"}, "kind"),
    ("missing language", {k: v for k, v in ask().items() if k != "language"}, "language"),
    ("empty language", ask(language=""), "language"),
    ("unknown language", ask(language="fr"), "language"),
    ("language as a list", ask() | {"language": ["kn"]}, "language"),
    ("phone that is not a phone", ask(callback_phone="call me"), "callback_phone"),
    ("phone as a number", ask() | {"callback_phone": 9845000001}, "callback_phone"),
    ("note too long", ask(note="x" * 1001), "note"),
    ("note as an object", ask() | {"note": {"a": 1}}, "note"),
]


@pytest.mark.parametrize("what, payload, field", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
async def test_bad_help_requests_get_a_clear_error_and_change_nothing(services, web, make_team, what, payload, field):
    team = await make_team("Near", km=1)
    response = await web.api("POST", INCIDENTS, json=payload)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and body["error"] == "invalid" and body["message"]
    assert await count(services, Incident) == 0
    assert await count(services, Offer) == 0
    assert await count(services, DueWork) == 0
    assert (await team_row(services, team.id)).status == "available"


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe"])
async def test_malformed_json_gets_a_clear_error_with_a_field(services, client, raw):
    response = await client.post(INCIDENTS, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["field"] and response.json()["message"]
    assert await count(services, Incident) == 0


async def test_not_a_number_coordinates_are_refused(services, client):
    raw = b'{"kind": "other", "language": "kn", "location": {"lat": NaN, "lon": 77.5}}'
    response = await client.post(INCIDENTS, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["field"] == "location"
    assert await count(services, Incident) == 0


async def test_a_body_that_is_not_json_is_refused(services, client):
    response = await client.post(INCIDENTS, data={"kind": "other"})
    assert response.status_code == 415 and response.json()["message"]
    assert await count(services, Incident) == 0


async def test_an_unknown_area_suggests_places(services, web):
    response = await web.api("POST", INCIDENTS, json={"kind": "police", "language": "kn",
                                                      "location": {"area": "Korama"}})
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == "location" and "Korama" in body["message"]
    assert "Koramangala, Bengaluru Urban" in body["suggestions"]
    assert await count(services, Incident) == 0
    nothing = await web.api("POST", INCIDENTS, json={"kind": "police", "language": "kn",
                                                     "location": {"area": "Qqqqxx"}})
    assert nothing.status_code == 422 and nothing.json()["suggestions"] == []
    assert await count(services, Incident) == 0


async def test_an_area_from_the_gazetteer_is_enough(services, web, make_team, branches):
    team = await make_team("Koramangala crew", base=(12.93, 77.62), skills=("police_station",))
    response = await web.api("POST", INCIDENTS, json={"kind": "police", "language": "kn",
                                                      "location": {"area": "Koramangala"}})
    assert response.status_code == 201, response.text
    incident = await incident_by_ref(services, response.json()["reference"])
    assert incident.area == "Koramangala, Bengaluru Urban"
    assert incident.branch_id == branches["BLR"].id
    assert crisis.incident_point(services, incident) == pytest.approx((12.927111, 77.626605))
    (offer,) = await offers_of(services, incident.id)
    assert offer.team_id == team.id and offer.distance_km < 1


class TestPublicRateLimit:
    @pytest.fixture
    def settings(self, settings):
        return settings.model_copy(update={"public_requests_per_window": 3, "rate_window_seconds": 3600})

    async def test_an_address_over_its_limit_is_refused_but_a_new_caller_is_not(self, services, app):
        def from_address(ip: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 4000)),
                                     base_url="http://testserver")

        async with from_address("10.1.1.1") as crowded, from_address("10.2.2.2") as elsewhere:
            for _ in range(3):
                assert (await crowded.post(INCIDENTS, json=ask())).status_code == 201
            refused = await crowded.post(INCIDENTS, json=ask())
            assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
            assert refused.json()["message"]
            assert await count(services, Incident) == 3

            # A first request from a caller whose phone was never seen goes through anyway.
            first = await crowded.post(INCIDENTS, json=ask(callback_phone="+91 90000 11111"))
            assert first.status_code == 201, first.text
            assert await count(services, Incident) == 4
            # The same phone again is not new any more: the address's limit applies.
            repeat = await crowded.post(INCIDENTS, json=ask(callback_phone="+91 90000 11111"))
            assert repeat.status_code == 429
            # Another new caller, written differently, still goes through.
            other = await crowded.post(INCIDENTS, json=ask(callback_phone="09000022222"))
            assert other.status_code == 201
            # Other addresses are not affected.
            assert (await elsewhere.post(INCIDENTS, json=ask())).status_code == 201
            assert await count(services, Incident) == 6


# --- Teams API ------------------------------------------------------------------------------------

def new_team(name="Crew", members=(), branch="BLR", **extra) -> dict:
    lat, lon = at_km(3)
    return {"name": name, "branch": branch, "base": {"lat": lat, "lon": lon}, "skills": ["police_station", "legal"],
            "languages": ["kn", "ta"], "members": list(members), **extra}


@pytest.fixture
async def staff(make_user, make_token):
    made = {}
    for name, roles, branch in [("bearer", ["office_bearer"], "BLR"), ("disp", ["dispatcher"], "BLR"),
                                ("disp-mys", ["dispatcher"], "MYS"), ("resp1", ["crisis_responder"], "BLR"),
                                ("resp2", ["crisis_responder"], "BLR"), ("resp3", ["crisis_responder"], "BLR"),
                                ("plain", ["member"], None)]:
        user = await make_user(name, roles, branch)
        made[name] = (user, await make_token(user))
    return made


def tok(staff, name):
    return staff[name][1]


async def test_office_bearers_and_dispatchers_create_teams(services, web, staff):
    created = await web.api("POST", "/api/crisis/teams", token=tok(staff, "bearer"),
                            json=new_team(members=["resp1", {"username": "resp2", "phone": "+91 98450 22222"}]))
    assert created.status_code == 201, created.text
    body = created.json()
    assert isinstance(body["id"], int) and body["name"] == "Crew" and body["branch"] == "BLR"
    assert body["status"] == "available" and body["skills"] == ["legal", "police_station"]
    assert body["languages"] == ["kn", "ta"] and body["members"] == ["resp1", "resp2"]
    members = await rows(services, TeamMember, TeamMember.team_id == body["id"])
    assert sorted(m.user_id for m in members) == sorted([staff["resp1"][0].id, staff["resp2"][0].id])
    phones = {m.user_id: services.vault.decrypt(m.phone_enc) for m in members}
    assert phones[staff["resp2"][0].id] == "+919845022222" and phones[staff["resp1"][0].id] is None

    by_dispatcher = await web.api("POST", "/api/crisis/teams", token=tok(staff, "disp"),
                                  json=new_team("Second", ["resp3"], status="off_duty"))
    assert by_dispatcher.status_code == 201 and by_dispatcher.json()["status"] == "off_duty"
    listed = await web.api("GET", "/api/crisis/teams", token=tok(staff, "disp"))
    assert sorted(t["name"] for t in listed.json()["teams"]) == ["Crew", "Second"]


@pytest.mark.parametrize("who, payload, status, field", [
    ("resp1", new_team(), 403, None),
    ("disp-mys", new_team(), 403, "branch"),
    ("bearer", new_team(members=["plain"]), 422, "members"),
    ("bearer", new_team(members=["bearer"]), 422, "members"),
    ("bearer", new_team(members=["nobody"]), 404, "members"),
    ("bearer", new_team(branch="XYZ"), 404, "branch"),
    ("bearer", new_team(base={"lat": 95, "lon": 77}), 422, "base"),
    ("bearer", new_team(base=None), 422, "base"),
    ("bearer", new_team(skills=["flying"]), 422, "skills"),
    ("bearer", new_team(languages=[]), 422, "languages"),
    ("bearer", new_team(languages=["xx"]), 422, "languages"),
    ("bearer", new_team(name=""), 422, "name"),
    ("bearer", new_team(status="busy"), 422, "status"),
    ("bearer", new_team() | {"members": "resp1"}, 422, None),
    ("bearer", new_team() | {"skills": "legal"}, 422, None),
])
async def test_bad_team_requests_are_refused_and_create_nothing(services, web, staff, who, payload, status, field):
    response = await web.api("POST", "/api/crisis/teams", token=tok(staff, who), json=payload)
    assert response.status_code == status, response.text
    if field:
        assert response.json()["field"] == field
    assert await count(services, Team) == 0 and await count(services, TeamMember) == 0


async def test_a_duplicate_team_name_is_a_conflict(services, web, staff):
    assert (await web.api("POST", "/api/crisis/teams", token=tok(staff, "bearer"), json=new_team())).status_code == 201
    again = await web.api("POST", "/api/crisis/teams", token=tok(staff, "bearer"), json=new_team())
    assert again.status_code == 409 and again.json()["field"] == "name"
    assert await count(services, Team) == 1


async def test_availability_by_members_and_dispatchers_only(services, web, staff):
    team_id = (await web.api("POST", "/api/crisis/teams", token=tok(staff, "bearer"),
                             json=new_team(members=["resp1"]))).json()["id"]
    path = f"/api/crisis/teams/{team_id}/availability"

    off = await web.api("PUT", path, token=tok(staff, "resp1"), json={"status": "off_duty"})
    assert off.status_code == 200 and off.json()["status"] == "off_duty"
    assert (await team_row(services, team_id)).status == "off_duty"
    on = await web.api("PUT", path, token=tok(staff, "disp"), json={"status": "available"})
    assert on.status_code == 200 and on.json()["status"] == "available"

    outsider = await web.api("PUT", path, token=tok(staff, "resp2"), json={"status": "off_duty"})
    assert outsider.status_code == 403
    other_branch = await web.api("PUT", path, token=tok(staff, "disp-mys"), json={"status": "off_duty"})
    assert other_branch.status_code == 403
    assert (await web.api("PUT", path, token=tok(staff, "bearer"), json={"status": "off_duty"})).status_code == 403
    for bad in ({"status": "busy"}, {"status": "offered"}, {"status": "sleeping"}, {}, {"status": 1}):
        response = await web.api("PUT", path, token=tok(staff, "resp1"), json=bad)
        assert response.status_code == 422 and response.json()["field"] == "status", bad
    assert (await team_row(services, team_id)).status == "available"
    assert (await web.api("PUT", "/api/crisis/teams/99999/availability", token=tok(staff, "disp"),
                          json={"status": "off_duty"})).status_code == 404

    # With an offer pending the team cannot slip off duty, nor while busy.
    ref = (await web.api("POST", INCIDENTS, json=ask("police"))).json()["reference"]
    (offer,) = await offers_of(services, (await incident_by_ref(services, ref)).id)
    blocked = await web.api("PUT", path, token=tok(staff, "resp1"), json={"status": "off_duty"})
    assert blocked.status_code == 409 and blocked.json()["error"] == "bad_transition"
    assert (await team_row(services, team_id)).status == "offered"
    assert (await web.api("POST", f"/api/crisis/offers/{offer.id}/accept", token=tok(staff, "resp1"))).status_code == 200
    for status in ("off_duty", "available"):
        blocked = await web.api("PUT", path, token=tok(staff, "disp"), json={"status": status})
        assert blocked.status_code == 409
    assert (await team_row(services, team_id)).status == "busy"


async def test_location_reports(services, web, staff):
    team_id = (await web.api("POST", "/api/crisis/teams", token=tok(staff, "bearer"),
                             json=new_team(members=["resp1"]))).json()["id"]
    path = f"/api/crisis/teams/{team_id}/location"
    for bad in ({"lat": 91, "lon": 77}, {"lat": 12.9, "lon": 181}, {"lat": "12.9", "lon": "77.6"}, {"lat": 12.9},
                {}, {"lat": None, "lon": None}, {"lat": [1], "lon": 2}):
        response = await web.api("POST", path, token=tok(staff, "resp1"), json=bad)
        assert response.status_code == 422 and response.json()["field"] == "location", bad
    team = await team_row(services, team_id)
    assert (team.live_lat, team.live_lon, team.live_at) == (None, None, None)
    assert (await web.api("POST", path, token=tok(staff, "resp2"), json={"lat": 12.9, "lon": 77.6})).status_code == 403
    ok = await web.api("POST", path, token=tok(staff, "resp1"), json={"lat": 12.95, "lon": 77.6})
    assert ok.status_code == 200 and ok.json()["live"]["lat"] == 12.95
    by_dispatcher = await web.api("POST", path, token=tok(staff, "disp"), json={"lat": 12.96, "lon": 77.61})
    assert by_dispatcher.status_code == 200
    team = await team_row(services, team_id)
    assert (team.live_lat, team.live_lon) == (12.96, 77.61) and team.live_at is not None


async def test_a_fresh_live_location_changes_who_is_nearest_and_a_stale_one_does_not(services, settings, web, staff):
    made = {}
    for name, km, member in (("Roaming", 20, "resp1"), ("Home", 5, "resp2")):
        lat, lon = at_km(km)
        made[name] = (await web.api("POST", "/api/crisis/teams", token=tok(staff, "bearer"), json=new_team(
            name, [member], base={"lat": lat, "lon": lon}))).json()["id"]
    lat, lon = at_km(0.5)
    moved = await web.api("POST", f"/api/crisis/teams/{made['Roaming']}/location", token=tok(staff, "resp1"),
                          json={"lat": lat, "lon": lon})
    assert moved.status_code == 200

    first = await incident_by_ref(services, (await web.api("POST", INCIDENTS, json=ask())).json()["reference"])
    (offer,) = await offers_of(services, first.id)
    assert offer.team_id == made["Roaming"] and offer.distance_km == pytest.approx(0.5, abs=0.01)
    declined = await web.api("POST", f"/api/crisis/offers/{offer.id}/decline", token=tok(staff, "resp1"))
    assert declined.status_code == 200  # the next team (Home) takes over the first incident
    assert (await web.api("PUT", f"/api/crisis/teams/{made['Home']}/availability", token=tok(staff, "disp"),
                          json={"status": "available"})).status_code == 409  # Home is offered now
    for o in await offers_of(services, first.id):
        if o.status == "pending":
            await web.api("POST", f"/api/crisis/offers/{o.id}/decline", token=tok(staff, "resp2"))

    # The roaming team's report is now older than location_stale_seconds: its base counts again.
    async with services.sessions() as db:
        await db.execute(update(Team).where(Team.id == made["Roaming"]).values(
            live_at=utcnow() - dt.timedelta(seconds=settings.location_stale_seconds + 5)))
        await db.commit()
    second = await incident_by_ref(services, (await web.api("POST", INCIDENTS, json=ask())).json()["reference"])
    (offer,) = [o for o in await offers_of(services, second.id) if o.status == "pending"]
    assert offer.team_id == made["Home"] and offer.distance_km == pytest.approx(5, abs=0.01)
