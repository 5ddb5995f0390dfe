"""Travel-time re-ranking through the OSRM table API, against a local server that
answers /table/v1/driving/... like OSRM: a farther team with the shorter drive
is offered first; when the routing server is slow, broken or talks nonsense,
dispatch falls back to great-circle order within the routing timeout and still
offers a team (a routing outage must never cost an offer)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy import select

from crisis.geo import haversine_km
from crisis.models import DispatchDecision, Offer
from tests.crisis.localservers import OsrmServer, create_team

CALLER = (12.9271, 77.6266)  # Koramangala
NEAR = (12.9350, 77.6200)  # about 1 km, but across a jammed junction
FAR = (12.9716, 77.5946)  # about 6 km, on an empty ring road
ROUTING_TIMEOUT = 0.3


def drive_seconds(origin: tuple[float, float], destination: tuple[float, float]) -> float | None:
    def at(point, place):
        return abs(point[0] - place[0]) < 1e-4 and abs(point[1] - place[1]) < 1e-4

    if at(destination, CALLER):
        if at(origin, NEAR):
            return 1500.0
        if at(origin, FAR):
            return 400.0
    return 900.0


@pytest.fixture
def osrm():
    with OsrmServer(drive_seconds) as server:
        yield server


@pytest.fixture
def settings(settings, osrm):
    return settings.model_copy(update={"routing_url": osrm.url + "/", "routing_timeout_seconds": ROUTING_TIMEOUT,
                                       "push_backend": "recording"})


@pytest.fixture
async def teams(make_user, make_token, make_web):
    token = await make_token(await make_user("disp", ["dispatcher"], "BLR"))
    office = await make_web()
    near = await create_team(office, token, name="Koramangala team", base=NEAR, members=[], skills=[],
                             languages=["en"])
    far = await create_team(office, token, name="Shivajinagar team", base=FAR, members=[], skills=[],
                            languages=["en"])
    assert haversine_km(*CALLER, *NEAR) < haversine_km(*CALLER, *FAR)
    return {"near": near["id"], "far": far["id"]}


async def call_for_help(make_web) -> dict:
    caller = await make_web()
    response = await asyncio.wait_for(caller.api("POST", "/api/crisis/incidents", json={
        "kind": "other", "language": "en", "location": {"lat": CALLER[0], "lon": CALLER[1]}}), timeout=15)
    assert response.status_code == 201, response.text
    return response.json()


async def offered_team(services) -> int:
    async with services.sessions() as db:
        [offer] = (await db.execute(select(Offer))).scalars().all()
        return offer.team_id


async def test_farther_team_with_the_shorter_drive_is_offered_first(teams, services, osrm, make_web):
    await call_for_help(make_web)

    assert await offered_team(services) == teams["far"]
    [request] = osrm.requests
    assert request.method == "GET" and request.path.startswith("/table/v1/driving/")
    coords = request.path.removeprefix("/table/v1/driving/").split(";")
    # OSRM wants lon,lat; the caller is the one destination, the teams are the sources.
    assert coords[0] == f"{CALLER[1]:.6f},{CALLER[0]:.6f}"
    assert sorted(coords[1:]) == sorted([f"{NEAR[1]:.6f},{NEAR[0]:.6f}", f"{FAR[1]:.6f},{FAR[0]:.6f}"])
    assert request.query["destinations"] == ["0"] and request.query["sources"] == ["1;2"]


async def test_the_decision_says_why_the_nearer_team_was_passed_over(teams, services, make_web):
    await call_for_help(make_web)
    async with services.sessions() as db:
        [decision] = (await db.execute(select(DispatchDecision))).scalars().all()
    passed = {p["team"]: p["reason"] for p in json.loads(decision.detail)["passed_over"]}
    assert teams["near"] in passed


async def test_unreachable_team_goes_last(teams, services, osrm, make_web):
    osrm.travel = lambda origin, destination: None if abs(origin[0] - FAR[0]) < 1e-4 else 600.0
    await call_for_help(make_web)
    assert await offered_team(services) == teams["near"]


@pytest.mark.parametrize("trouble", ["slow", "trickle", "500", "not ok", "garbage", "short"])
async def test_routing_trouble_falls_back_to_distance_and_still_offers(teams, services, osrm, make_web, trouble):
    if trouble == "slow":
        osrm.delay = 5  # answers long after the routing timeout
    elif trouble == "trickle":
        osrm.trickle = 0.1  # headers at once, then a byte at a time: no single read is slow
    elif trouble == "500":
        osrm.status = 500
    elif trouble == "not ok":
        osrm.respond = lambda request: _json(200, {"code": "NoTable", "message": "no table"})
    elif trouble == "garbage":
        osrm.respond = lambda request: _raw(200, b"<html>proxy error</html>")
    else:
        osrm.respond = lambda request: _json(200, {"code": "Ok", "durations": []})

    started = time.monotonic()
    await call_for_help(make_web)
    elapsed = time.monotonic() - started

    assert len(osrm.requests) == 1
    assert await offered_team(services) == teams["near"]  # great-circle order
    # The routing timeout bounds the wait (a generous bound: it only has to be far below the server's delay).
    assert elapsed < 4, elapsed


def _json(status, data):
    from tests.crisis.localservers import json_reply

    return json_reply(status, data)


def _raw(status, body):
    from tests.crisis.localservers import Reply

    return Reply(status, body, {"Content-Type": "text/html"})


async def test_no_routing_for_a_single_candidate(make_user, make_token, make_web, services, osrm):
    token = await make_token(await make_user("disp", ["dispatcher"], "BLR"))
    only = await create_team(await make_web(), token, name="Only team", base=NEAR, members=[], skills=[],
                             languages=["en"])
    await call_for_help(make_web)
    assert await offered_team(services) == only["id"]
    assert osrm.requests == []  # nothing to re-rank: no outside call on the critical path
