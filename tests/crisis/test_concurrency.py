"""No team is ever double-booked: many simultaneous help requests against fewer
teams, over real HTTP to the app under uvicorn (truly concurrent requests, each
in its own transaction) and in-process (concurrent at every await), on SQLite
and PostgreSQL; and two teams accepting the same escalated incident at once:
exactly one wins."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from crisis.models import Incident, Offer, Team
from tests.crisis.conftest import at_km, incident_by_ref, offers_of, rows, team_row

INCIDENTS = "/api/crisis/incidents"
N_INCIDENTS, N_TEAMS = 12, 8


def requests_for(n: int) -> list[dict]:
    """A mix of one-team and two-team (police) incidents spread over 11 km."""
    out = []
    for i in range(n):
        lat, lon = at_km(i)
        out.append({"kind": "police" if i % 3 == 0 else "other", "language": "kn",
                    "location": {"lat": lat, "lon": lon}})
    return out


async def make_teams(make_team, n: int) -> list:
    return [await make_team(f"Team{i}", km=0.5 + i, skills=("police_station",)) for i in range(n)]


async def check_no_team_is_double_booked(services, references: list[str], team_ids: list[int]) -> None:
    incidents = [await incident_by_ref(services, ref) for ref in references]
    offers = [o for i in incidents for o in await offers_of(services, i.id)]
    live = [o for o in offers if (o.status == "pending" and not o.broadcast) or o.status == "accepted"]
    per_team = Counter(o.team_id for o in live)
    assert all(n == 1 for n in per_team.values()), per_team
    for team_id in team_ids:
        team = await team_row(services, team_id)
        mine = [o for o in live if o.team_id == team_id]
        if team.status in ("offered", "busy"):
            (only,) = mine
            assert team.current_incident_id == only.incident_id
        else:
            assert team.status == "available" and mine == [] and team.current_incident_id is None
    # Demand (4 police x 2 + 8 others = 16) exceeds the 8 teams: every team is reserved, none twice.
    assert len(live) == len(team_ids) and set(per_team) == set(team_ids)
    for incident in incidents:
        got = [o for o in live if o.incident_id == incident.id]
        assert len(got) <= incident.teams_needed
        if got:
            assert incident.status == "offered"
        else:  # nobody left for it: dispatchers alerted at once
            assert incident.status == "escalated" and incident.escalated_at is not None
    served = sum(1 for i in incidents if i.status == "offered")
    escalated = sum(1 for i in incidents if i.status == "escalated")
    assert served + escalated == len(incidents) and escalated >= 1
    # Every incident row is accounted for: none lost, none duplicated.
    assert len(await rows(services, Incident)) == len(references)


async def test_simultaneous_incidents_over_real_http_never_share_a_team(services, make_team, live_server):
    teams = await make_teams(make_team, N_TEAMS)
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
        responses = await asyncio.gather(*(client.post(INCIDENTS, json=body) for body in requests_for(N_INCIDENTS)))
    assert [r.status_code for r in responses] == [201] * N_INCIDENTS, [r.text for r in responses if r.status_code != 201]
    await check_no_team_is_double_booked(services, [r.json()["reference"] for r in responses], [t.id for t in teams])


async def test_simultaneous_incidents_in_process_never_share_a_team(services, make_team, client):
    teams = await make_teams(make_team, N_TEAMS)
    responses = await asyncio.gather(*(client.post(INCIDENTS, json=body) for body in requests_for(N_INCIDENTS)))
    assert [r.status_code for r in responses] == [201] * N_INCIDENTS, [r.text for r in responses if r.status_code != 201]
    await check_no_team_is_double_booked(services, [r.json()["reference"] for r in responses], [t.id for t in teams])


async def broadcast_incident(services, make_team, client) -> tuple[Incident, list, list[Offer]]:
    """A medical incident no team has the skill for: it escalates and is broadcast to two teams."""
    teams = [await make_team("Left", km=1, skills=("counselling",)), await make_team("Right", km=2, skills=("legal",))]
    response = await client.post(INCIDENTS, json={"kind": "medical", "language": "kn",
                                                  "location": dict(zip(("lat", "lon"), at_km(0)))})
    assert response.status_code == 201
    incident = await incident_by_ref(services, response.json()["reference"])
    offers = await offers_of(services, incident.id)
    assert incident.status == "escalated" and incident.teams_needed == 1
    assert sorted(o.team_id for o in offers) == sorted(t.id for t in teams) and all(o.broadcast for o in offers)
    return incident, teams, offers


async def check_exactly_one_won(services, incident, teams, offers, responses) -> None:
    assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
    loser = [r for r in responses if r.status_code == 409][0]
    assert loser.json()["error"] == "offer_closed" and loser.json()["message"]
    after = await offers_of(services, incident.id)
    assert sorted(o.status for o in after) == ["accepted", "withdrawn"]
    (won,) = [o for o in after if o.status == "accepted"]
    assert (await team_row(services, won.team_id)).status == "busy"
    assert (await team_row(services, won.team_id)).current_incident_id == incident.id
    (lost,) = [o for o in after if o.status == "withdrawn"]
    lost_team = await team_row(services, lost.team_id)
    assert (lost_team.status, lost_team.current_incident_id) == ("available", None)
    row = await incident_by_ref(services, incident.reference)
    assert row.status == "accepted" and row.accepted_at is not None


async def test_two_teams_accepting_one_broadcast_at_once_over_real_http(services, make_team, client, live_server):
    incident, teams, offers = await broadcast_incident(services, make_team, client)
    token_of = {t.id: t.token for t in teams}
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as http:
        responses = await asyncio.gather(*(
            http.post(f"/api/crisis/offers/{o.id}/accept", headers={"Authorization": f"Bearer {token_of[o.team_id]}"})
            for o in offers))
    await check_exactly_one_won(services, incident, teams, offers, responses)


async def test_two_teams_accepting_one_broadcast_at_once_in_process(services, make_team, client):
    incident, teams, offers = await broadcast_incident(services, make_team, client)
    token_of = {t.id: t.token for t in teams}
    responses = await asyncio.gather(*(
        client.post(f"/api/crisis/offers/{o.id}/accept", headers={"Authorization": f"Bearer {token_of[o.team_id]}"})
        for o in offers))
    await check_exactly_one_won(services, incident, teams, offers, responses)


async def test_the_same_offer_accepted_twice_at_once_is_accepted_once(services, make_team, client):
    team = await make_team("Solo", km=1, members=2)
    response = await client.post(INCIDENTS, json={"kind": "other", "language": "kn",
                                                  "location": dict(zip(("lat", "lon"), at_km(0)))})
    incident = await incident_by_ref(services, response.json()["reference"])
    (offer,) = await offers_of(services, incident.id)
    # Both responders of the team tap "accept" at the same moment.
    responses = await asyncio.gather(*(
        client.post(f"/api/crisis/offers/{offer.id}/accept", headers={"Authorization": f"Bearer {token}"})
        for token in team.tokens))
    assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
    (after,) = await offers_of(services, incident.id)
    assert after.status == "accepted" and (await team_row(services, team.id)).status == "busy"
    assert isinstance(await team_row(services, team.id), Team)


async def test_a_new_incident_while_a_team_accepts_a_broadcast(services, make_team, make_user, make_token, client,
                                                              live_server):
    """Intake locks the audit log and then a team; an accept must not take them in the other order."""
    dispatcher = await make_token(await make_user("disp", ["dispatcher"]))
    left = await make_team("Left", km=1, skills=("counselling",))
    right = await make_team("Right", km=2, skills=("legal",))
    auth = {"Authorization": f"Bearer {dispatcher}"}
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as http:
        for round_ in range(4):
            escalated = await http.post(INCIDENTS, json={"kind": "medical", "language": "kn",
                                                         "location": dict(zip(("lat", "lon"), at_km(0)))})
            incident = await incident_by_ref(services, escalated.json()["reference"])
            (offer,) = [o for o in await offers_of(services, incident.id) if o.team_id == left.id and o.broadcast]
            accepted, created = await asyncio.gather(
                http.post(f"/api/crisis/offers/{offer.id}/accept", headers={"Authorization": f"Bearer {left.token}"}),
                http.post(INCIDENTS, json={"kind": "other", "language": "kn",
                                           "location": dict(zip(("lat", "lon"), at_km(0.9)))}))
            assert created.status_code == 201, created.text
            assert accepted.status_code in (200, 409), accepted.text
            new = await incident_by_ref(services, created.json()["reference"])
            new_offers = [o for o in await offers_of(services, new.id) if not o.broadcast]
            left_row = await team_row(services, left.id)
            if accepted.status_code == 200:
                assert (left_row.status, left_row.current_incident_id) == ("busy", incident.id)
                assert left.id not in {o.team_id for o in new_offers}
            else:  # the new incident reserved Left first
                assert "busy" in accepted.json()["message"]
                assert (left_row.status, left_row.current_incident_id) == ("offered", new.id)
            # Close both so the next round starts with both teams available.
            for done in (incident, new):
                closed = await http.post(f"{INCIDENTS}/{done.id}/status", headers=auth, json={"status": "cancelled"})
                assert closed.status_code == 200, closed.text
            assert {(await team_row(services, t.id)).status for t in (left, right)} == {"available"}, round_


async def check_teams_consistent(services, team_ids: list[int]) -> None:
    """Every team's state matches its offers: offered/busy for exactly one open incident, otherwise none."""
    open_ids = {i.id for i in await rows(services, Incident) if i.status not in ("resolved", "cancelled")}
    offers = [o for o in await rows(services, Offer) if o.incident_id in open_ids]
    for team_id in team_ids:
        team = await team_row(services, team_id)
        reserved = [o for o in offers if o.team_id == team_id and o.status == "pending" and not o.broadcast]
        accepted = [o for o in offers if o.team_id == team_id and o.status == "accepted"]
        if team.status == "offered":
            assert accepted == [] and [o.incident_id for o in reserved] == [team.current_incident_id], team_id
        elif team.status == "busy":
            assert reserved == [] and [o.incident_id for o in accepted] == [team.current_incident_id], team_id
        else:
            assert (reserved, accepted, team.current_incident_id) == ([], [], None), team_id


async def test_mixed_traffic_over_real_http_never_fails_or_double_books(services, make_team, make_user, make_token,
                                                                        live_server):
    """Help requests, accepts, declines, resolutions and availability switches all at once, three rounds."""
    dispatcher = {"Authorization": f"Bearer {await make_token(await make_user('disp', ['dispatcher']))}"}
    teams = await make_teams(make_team, N_TEAMS)
    auth = {t.id: {"Authorization": f"Bearer {t.token}"} for t in teams}
    switching = teams[-1]
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as http:
        for round_ in range(3):
            offers = await rows(services, Offer)
            waiting = [o for o in offers if o.status == "pending" and not o.broadcast]
            accepted = {o.incident_id for o in offers if o.status == "accepted"}
            to_resolve = [i for i in await rows(services, Incident) if i.id in accepted and i.status == "accepted"]
            calls = [http.post(INCIDENTS, json=body) for body in requests_for(5)]
            calls += [http.post(f"/api/crisis/offers/{o.id}/accept", headers=auth[o.team_id]) for o in waiting[:-1]]
            calls += [http.post(f"/api/crisis/offers/{o.id}/decline", headers=auth[o.team_id]) for o in waiting[-1:]]
            calls += [http.post(f"{INCIDENTS}/{i.id}/status", headers=dispatcher, json={"status": "resolved"})
                      for i in to_resolve]
            calls.append(http.put(f"/api/crisis/teams/{switching.id}/availability", headers=auth[switching.id],
                                  json={"status": "off_duty" if round_ % 2 == 0 else "available"}))
            responses = await asyncio.gather(*calls)
            failed = [(r.request.method, r.request.url.path, r.status_code, r.text) for r in responses
                      if r.status_code not in (200, 201, 409)]
            assert failed == [], failed
            await check_teams_consistent(services, [t.id for t in teams])


# --- Lock order: the audit log's head before team rows ------------------------------------------------
#
# Intake appends to the audit log (locking its head row) and then reserves a team with a conditional
# UPDATE. Anything that locks a team row and then appends to the audit log can deadlock with it on
# PostgreSQL. Each case below holds the audit head the way intake does, lets the operation run until it
# waits, then touches the team the way intake's reservation would: with a consistent lock order neither
# side fails. (On SQLite the operation simply waits for the writer lock.)

async def _team_op_case(services, make_team, case: str):
    from crisis import services as crisis
    from tests.crisis.conftest import create, intake, principal

    team = await make_team("Subject", km=1, skills=("counselling",))
    who = await principal(services, team.user)
    if case == "availability":
        async def op(db):
            await crisis.set_availability(db, team_id=team.id, status="off_duty", principal=who)
    elif case == "accept_broadcast":
        incident, _ = await create(services, intake("medical"))  # nobody has the skill: broadcast
        (offer,) = await offers_of(services, incident.id)
        assert offer.broadcast

        async def op(db):
            await crisis.accept_offer(db, services, offer_id=offer.id, principal=who)
    elif case == "resolve":
        incident, _ = await create(services, intake("other"))
        (offer,) = await offers_of(services, incident.id)
        async with services.sessions() as db:
            await crisis.accept_offer(db, services, offer_id=offer.id, principal=who)
            await db.commit()

        async def op(db):
            await crisis.advance(db, services, incident_id=incident.id, status="resolved", principal=who)
    else:  # lapse that escalates
        services.settings.max_offer_misses = 1
        incident, _ = await create(services, intake("other"))
        (offer,) = await offers_of(services, incident.id)

        async def op(db):
            import datetime as dt
            await crisis.lapse_offer(db, services, offer_id=offer.id, now=offer.deadline_at + dt.timedelta(seconds=1))
    return team, op


@pytest.mark.parametrize("case", ["availability", "accept_broadcast", "resolve", "lapse_escalates"])
async def test_team_changes_take_the_audit_log_before_the_team_row(services, make_team, case):
    from sqlalchemy import select, update

    from union.models import AuditHead

    team, op = await _team_op_case(services, make_team, case)

    async def run_op():
        async with services.sessions() as db:
            await op(db)
            await db.commit()

    async with services.sessions() as intake_tx:
        await intake_tx.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())
        task = asyncio.create_task(run_op())
        await asyncio.sleep(0.3)  # the operation runs until it waits for the audit log
        assert not task.done()
        await intake_tx.execute(update(Team).where(Team.id == team.id).values(status=Team.status))
        await intake_tx.commit()
    await asyncio.wait_for(task, 30)
