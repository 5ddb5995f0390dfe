"""Crisis services on both databases with a controllable clock: dispatch to the
nearest suitable team with an atomic reservation, offers with push / SMS /
deadline due work, acknowledgement timeouts and re-offers, declines,
escalation (dispatchers alerted, broadcast), two-team kinds, the lifecycle to
resolution, the follow-up and the retention purge."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from crisis import services as crisis
from crisis.errors import BadTransition, NotYourTeam, OfferClosed
from crisis.models import CaseNote, FollowUp, Incident, Offer
from tests.crisis.conftest import (at_km, backdate_due, create, decisions_of, due_rows, intake, offers_of, one,
                                   principal, rows, subscribe, team_row)
from union import jobs
from union.models import DueWork, utcnow

ACK = dt.timedelta(seconds=60)
SECOND = dt.timedelta(seconds=1)


async def lapse(services, offer_id: int, now: dt.datetime) -> list:
    async with services.sessions() as db:
        works = await crisis.lapse_offer(db, services, offer_id=offer_id, now=now)
        await db.commit()
    return works


async def accept(services, offer_id: int, user, now: dt.datetime | None = None):
    who = await principal(services, user)
    async with services.sessions() as db:
        result = await crisis.accept_offer(db, services, offer_id=offer_id, principal=who, now=now)
        await db.commit()
    return result


async def decline(services, offer_id: int, user, now: dt.datetime | None = None):
    who = await principal(services, user)
    async with services.sessions() as db:
        result = await crisis.decline_offer(db, services, offer_id=offer_id, principal=who, now=now)
        await db.commit()
    return result


async def step(services, incident_id: int, status: str, user, now: dt.datetime | None = None):
    who = await principal(services, user)
    async with services.sessions() as db:
        incident, works = await crisis.advance(db, services, incident_id=incident_id, status=status, principal=who,
                                               now=now)
        await db.commit()
    return incident, works


def pending(offers):
    return [o for o in offers if o.status == "pending"]


# --- Dispatch -------------------------------------------------------------------------

async def test_the_nearest_suitable_team_is_offered_with_push_sms_and_deadline_rows(services, make_team):
    await make_team("OffDuty", km=1, status="off_duty")
    await make_team("NoMedic", km=2, skills=("counselling",))
    chosen = await make_team("Medics", km=3, skills=("medical",))
    await make_team("Farther", km=5, skills=("medical",))
    devices = await subscribe(services, chosen.user, n=2)
    t0 = utcnow()

    incident, token = await create(services, intake("medical", note="burst condom"), now=t0)

    assert incident.status == "offered" and incident.offered_at == t0 and incident.branch_id is not None
    (offer,) = await offers_of(services, incident.id)
    assert (offer.team_id, offer.status, offer.broadcast) == (chosen.id, "pending", False)
    assert offer.deadline_at == t0 + ACK
    assert offer.distance_km == pytest.approx(3, abs=0.01)
    team = await team_row(services, chosen.id)
    assert (team.status, team.current_incident_id) == ("offered", incident.id)
    # One push per device, carrying only the offer id; SMS at half the window; the deadline at the window.
    push = await due_rows(services, kind="crisis.push")
    assert sorted(json.loads(w.payload)["subscription"] for w in push) == sorted(devices)
    assert all(json.loads(w.payload)["message"] == {"type": "offer", "offer": offer.id} for w in push)
    (sms,) = await due_rows(services, kind="crisis.offer_sms")
    assert sms.due_at == t0 + ACK / 2 and json.loads(sms.payload) == {"offer": offer.id}
    (deadline,) = await due_rows(services, kind="crisis.offer_deadline")
    assert deadline.due_at == t0 + ACK and json.loads(deadline.payload) == {"offer": offer.id}
    # The caller's details are stored encrypted, never in plain text.
    stored = await one(services, Incident, incident.id)
    assert "burst" not in (stored.note_enc or "") and services.vault.decrypt(stored.note_enc) == "burst condom"


async def test_without_any_push_subscription_the_sms_goes_at_once(services, make_team):
    await make_team("Quiet", km=1)
    t0 = utcnow()
    await create(services, intake(), now=t0)
    (sms,) = await due_rows(services, kind="crisis.offer_sms")
    assert sms.due_at == t0
    assert await due_rows(services, kind="crisis.push") == []


async def test_the_decision_records_why_each_nearer_team_was_passed_over(services, make_team):
    off = await make_team("OffDuty", km=1, status="off_duty")
    unskilled = await make_team("Counsellors", km=2, skills=("counselling",))
    telugu = await make_team("Telugu", km=3, languages=("te",))
    chosen = await make_team("Kannada", km=4)
    await make_team("FarOff", km=6, status="off_duty")

    incident, _ = await create(services, intake("police"))

    decisions = await decisions_of(services, incident.id)
    assert [d.outcome for d, _ in decisions] == ["offered"]
    decision, detail = decisions[0]
    # Police asks for two teams; only one speaks Kannada within the radius.
    assert decision.chosen_team_id == chosen.id and detail["chosen"] == [chosen.id]
    assert detail["step"] == "language, radius" and detail["language"] == "kn"
    assert detail["skills"] == ["police_station"] and detail["needed"] == 2
    assert [(p["team"], p["reason"]) for p in detail["passed_over"]] == [
        (off.id, "not available (off_duty)"),
        (unskilled.id, "lacks skills: police_station"),
        (telugu.id, "does not speak kn"),
    ]
    assert [p["km"] for p in detail["passed_over"]] == [1.0, 2.0, 3.0]


async def test_a_team_reserved_by_another_incident_is_not_offered_again(services, make_team):
    first_team = await make_team("Near", km=1)
    second_team = await make_team("Next", km=2)

    first, _ = await create(services, intake())
    second, _ = await create(services, intake())

    assert [o.team_id for o in await offers_of(services, first.id)] == [first_team.id]
    assert [o.team_id for o in await offers_of(services, second.id)] == [second_team.id]
    (_, detail), = await decisions_of(services, second.id)
    assert [(p["team"], p["reason"]) for p in detail["passed_over"]] == [(first_team.id, "not available (offered)")]


async def test_a_fresh_live_location_changes_who_is_nearest_and_a_stale_one_does_not(services, make_team, settings):
    based_far = await make_team("Roaming", km=20)
    near = await make_team("Home", km=5)
    who = await principal(services, based_far.user)
    t0 = utcnow()
    async with services.sessions() as db:
        await crisis.set_location(db, team_id=based_far.id, principal=who, now=t0, **dict(zip(("lat", "lon"), at_km(0.5))))
        await db.commit()

    fresh, _ = await create(services, intake(), now=t0 + dt.timedelta(seconds=settings.location_stale_seconds))
    assert [o.team_id for o in await offers_of(services, fresh.id)] == [based_far.id]
    (offer,) = await offers_of(services, fresh.id)
    assert offer.distance_km == pytest.approx(0.5, abs=0.01)

    # Free the roaming team again, then ask once its live location has gone stale.
    async with services.sessions() as db:
        await crisis.close_incident(db, services, await db.get(Incident, fresh.id), now=t0)
        await db.commit()
    assert (await team_row(services, based_far.id)).status == "available"
    stale, _ = await create(services, intake(), now=t0 + dt.timedelta(seconds=settings.location_stale_seconds + 1))
    assert [o.team_id for o in await offers_of(services, stale.id)] == [near.id]


# --- Acknowledgement timeout --------------------------------------------------------------

async def test_an_unanswered_offer_lapses_at_its_deadline_and_the_next_team_is_offered(services, make_team):
    first = await make_team("First", km=1)
    second = await make_team("Second", km=2)
    t0 = utcnow()
    incident, _ = await create(services, intake(), now=t0)
    (offer,) = await offers_of(services, incident.id)

    # Not yet: one second before the deadline nothing changes.
    assert await lapse(services, offer.id, t0 + ACK - SECOND) == []
    assert (await one(services, Offer, offer.id)).status == "pending"
    assert (await team_row(services, first.id)).status == "offered"

    t1 = t0 + ACK + SECOND
    works = await lapse(services, offer.id, t1)

    lapsed = await one(services, Offer, offer.id)
    assert (lapsed.status, lapsed.answered_at) == ("lapsed", t1)
    assert (await team_row(services, first.id)).status == "available"
    assert (await team_row(services, first.id)).current_incident_id is None
    offers = await offers_of(services, incident.id)
    (next_offer,) = pending(offers)
    assert next_offer.team_id == second.id and next_offer.deadline_at == t1 + ACK
    assert (await team_row(services, second.id)).status == "offered"
    row = await one(services, Incident, incident.id)
    assert (row.status, row.misses) == ("offered", 1)
    assert {w.kind for w in works} >= {"crisis.offer_sms", "crisis.offer_deadline"}
    # Lapsing twice (a job run twice) changes nothing more.
    assert await lapse(services, offer.id, t1 + SECOND) == []
    assert len(await offers_of(services, incident.id)) == 2
    assert (await one(services, Incident, incident.id)).misses == 1


async def test_the_deadline_row_run_by_the_sweeper_lapses_the_offer(services, make_team, recorded_push):
    first = await make_team("First", km=1)
    second = await make_team("Second", km=2)
    await subscribe(services, first.user)
    # The incident came in 61 seconds ago, so its deadline row is due now.
    t0 = utcnow() - ACK - SECOND
    incident, _ = await create(services, intake(), now=t0)
    (offer,) = await offers_of(services, incident.id)

    await jobs.sweep(services)

    assert (await one(services, Offer, offer.id)).status == "lapsed"
    assert (await team_row(services, first.id)).status == "available"
    (next_offer,) = pending(await offers_of(services, incident.id))
    assert next_offer.team_id == second.id
    assert (await team_row(services, second.id)).status == "offered"
    # The push for the lapsed offer went out while it was pending (it was due first) or was skipped; the
    # deadline row is done, and the new offer has its own deadline row in the future.
    (done,) = [w for w in await due_rows(services, kind="crisis.offer_deadline") if w.key == f"offer-deadline:{offer.id}"]
    assert done.state == "done"
    (new_deadline,) = [w for w in await due_rows(services, kind="crisis.offer_deadline")
                       if w.key == f"offer-deadline:{next_offer.id}"]
    assert new_deadline.state == "pending" and new_deadline.due_at > utcnow()


async def test_max_misses_escalate_to_dispatchers_and_broadcast(services, make_team, make_user, settings):
    assert settings.max_offer_misses == 3
    teams = [await make_team(f"Team{i}", km=i) for i in (1, 2, 3)]
    late = await make_team("Late", km=4, status="off_duty")
    far = await make_team("Far", km=settings.escalation_radius_km + 5)
    dispatcher = await make_user("disp-blr", ["dispatcher"], "BLR")
    anywhere = await make_user("disp-all", ["dispatcher"])
    elsewhere = await make_user("disp-mys", ["dispatcher"], "MYS")
    (blr_device,), (all_device,), _ = [await subscribe(services, u) for u in (dispatcher, anywhere, elsewhere)]
    t = utcnow()
    incident, _ = await create(services, intake(), now=t)

    for i, team in enumerate(teams):
        (offer,) = pending(await offers_of(services, incident.id))
        assert offer.team_id == team.id
        if i == 2:  # the late team comes on duty before the third miss
            who = await principal(services, late.user)
            async with services.sessions() as db:
                await crisis.set_availability(db, team_id=late.id, status="available", principal=who)
                await db.commit()
        t = t + ACK + SECOND
        await lapse(services, offer.id, t)

    row = await one(services, Incident, incident.id)
    assert (row.status, row.misses, row.escalated_at) == ("escalated", 3, t)
    # Dispatchers of the incident's branch and of every branch are alerted by push; Mysuru's are not.
    alerts = await due_rows(services, key_prefix=f"push:escalation:{incident.id}:")
    assert sorted(json.loads(w.payload)["subscription"] for w in alerts) == sorted([blr_device, all_device])
    assert all(json.loads(w.payload)["message"] == {"type": "escalation", "incident": incident.id} for w in alerts)
    # Broadcast to every available team within the escalation radius, the far team excepted.
    broadcast = [o for o in await offers_of(services, incident.id) if o.broadcast]
    assert sorted(o.team_id for o in broadcast) == sorted([t_.id for t_ in teams] + [late.id])
    assert all(o.status == "pending" for o in broadcast)
    # A broadcast reserves nobody: the teams stay available until one accepts.
    assert {(await team_row(services, o.team_id)).status for o in broadcast} == {"available"}
    # Dispatch goes on as well: the far team (outside the escalation radius, inside the wide radius)
    # is reserved and offered the ordinary way.
    (far_offer,) = [o for o in await offers_of(services, incident.id) if not o.broadcast and o.status == "pending"]
    assert far_offer.team_id == far.id and (await team_row(services, far.id)).status == "offered"
    outcomes = [d.outcome for d, _ in await decisions_of(services, incident.id)]
    assert outcomes == ["offered"] * 3 + ["escalated", "offered"]
    (_, detail) = [x for x in await decisions_of(services, incident.id) if x[0].outcome == "escalated"][0]
    assert detail["reason"] == "3 offers missed" and detail["dispatchers"] == 2
    assert sorted(detail["broadcast_to"]) == sorted(o.team_id for o in broadcast)
    assert await due_rows(services, key_prefix=f"retry-dispatch:{incident.id}:")

    # The first broadcast team to accept gets it; every other broadcast offer is withdrawn.
    winner = [o for o in broadcast if o.team_id == late.id][0]
    await accept(services, winner.id, late.user, now=t + SECOND)
    row = await one(services, Incident, incident.id)
    assert (row.status, row.accepted_at) == ("accepted", t + SECOND)
    assert (await team_row(services, late.id)).status == "busy"
    assert (await team_row(services, late.id)).current_incident_id == incident.id
    statuses = {o.team_id: o.status for o in await offers_of(services, incident.id) if o.broadcast}
    assert statuses.pop(late.id) == "accepted" and set(statuses.values()) == {"withdrawn"}
    assert (await one(services, Offer, far_offer.id)).status == "withdrawn"
    assert (await team_row(services, far.id)).status == "available"


async def test_nobody_available_escalates_at_once_and_a_team_coming_on_duty_is_offered(services, make_team, make_user):
    off = await make_team("Resting", km=2, status="off_duty")
    dispatcher = await make_user("disp", ["dispatcher"], "BLR")
    (device,) = await subscribe(services, dispatcher)

    incident, _ = await create(services, intake("medical"))

    row = await one(services, Incident, incident.id)
    assert row.status == "escalated" and row.escalated_at is not None and row.offered_at is None
    assert await offers_of(services, incident.id) == []
    assert [d.outcome for d, _ in await decisions_of(services, incident.id)] == ["no_team", "escalated"]
    (alert,) = await due_rows(services, key_prefix=f"push:escalation:{incident.id}:")
    assert json.loads(alert.payload)["subscription"] == device

    # The resting team comes on duty; the retry of dispatch (due 30 s later) offers it the incident.
    who = await principal(services, off.user)
    async with services.sessions() as db:
        await crisis.set_availability(db, team_id=off.id, status="available", principal=who)
        await db.commit()
    await backdate_due(services, DueWork.key == f"retry-dispatch:{incident.id}:1")
    (retry,) = await due_rows(services, key_prefix=f"retry-dispatch:{incident.id}:1")
    assert await jobs.run_due_work(services, retry.id) == "done"
    (offer,) = await offers_of(services, incident.id)
    assert (offer.team_id, offer.status, offer.broadcast) == (off.id, "pending", False)
    assert (await team_row(services, off.id)).status == "offered"
    assert (await one(services, Incident, incident.id)).status == "escalated"  # stays escalated until accepted
    await accept(services, offer.id, off.user)
    assert (await one(services, Incident, incident.id)).status == "accepted"


async def test_an_incident_without_a_location_alerts_every_dispatcher(services, make_team, make_user):
    """An SMS "HELP" naming no known place has no branch: every dispatcher must hear of it."""
    await make_team("Any", km=1)
    blr = await make_user("disp-blr", ["dispatcher"], "BLR")
    mys = await make_user("disp-mys", ["dispatcher"], "MYS")
    devices = [*(await subscribe(services, blr)), *(await subscribe(services, mys))]

    incident, _ = await create(services, crisis.Intake(kind="other", language="kn", area="Nowhere-in-particular",
                                                       callback_phone="+919812345678", source="sms"))

    row = await one(services, Incident, incident.id)
    assert (row.status, row.branch_id, row.lat_enc) == ("escalated", None, None)
    alerts = await due_rows(services, key_prefix=f"push:escalation:{incident.id}:")
    assert sorted(json.loads(w.payload)["subscription"] for w in alerts) == sorted(devices)


async def test_police_asks_for_two_teams(services, make_team, settings):
    assert "police" in settings.two_team_kinds.split()
    a = await make_team("A", km=1, skills=("police_station",))
    b = await make_team("B", km=2, skills=("police_station",))
    c = await make_team("C", km=3, skills=("police_station",))

    incident, _ = await create(services, intake("police"))

    assert (await one(services, Incident, incident.id)).teams_needed == 2
    offers = await offers_of(services, incident.id)
    assert sorted(o.team_id for o in offers) == [a.id, b.id] and all(o.status == "pending" for o in offers)
    assert {(await team_row(services, t)).status for t in (a.id, b.id)} == {"offered"}
    assert (await team_row(services, c.id)).status == "available"

    by_team = {o.team_id: o for o in offers}
    await accept(services, by_team[a.id].id, a.user)
    # One of two accepted: the other offer stays open.
    assert (await one(services, Offer, by_team[b.id].id)).status == "pending"
    assert (await one(services, Incident, incident.id)).status == "accepted"
    # B declines: C is asked for the second place.
    await decline(services, by_team[b.id].id, b.user)
    (third,) = pending(await offers_of(services, incident.id))
    assert third.team_id == c.id
    await accept(services, third.id, c.user)
    assert {(await team_row(services, t)).status for t in (a.id, c.id)} == {"busy"}
    assert (await team_row(services, b.id)).status == "available"

    await step(services, incident.id, "resolved", a.user)
    assert {(await team_row(services, t)).status for t in (a.id, b.id, c.id)} == {"available"}


async def test_other_kinds_ask_for_one_team(services, make_team):
    await make_team("A", km=1)
    await make_team("B", km=2)
    incident, _ = await create(services, intake("client_violence"))
    assert len(await offers_of(services, incident.id)) == 1


# --- Answers ------------------------------------------------------------------------------

async def test_decline_releases_the_team_and_offers_the_next(services, make_team):
    first = await make_team("First", km=1)
    second = await make_team("Second", km=2)
    incident, _ = await create(services, intake())
    (offer,) = await offers_of(services, incident.id)

    declined, _works = await decline(services, offer.id, first.user)

    assert declined.status == "declined" and declined.answered_by_user_id == first.user.id
    assert (await team_row(services, first.id)).status == "available"
    (next_offer,) = pending(await offers_of(services, incident.id))
    assert next_offer.team_id == second.id
    assert (await one(services, Incident, incident.id)).misses == 1
    with pytest.raises(OfferClosed):
        await decline(services, offer.id, first.user)


async def test_accept_rules(services, make_team):
    mine = await make_team("Mine", km=1)
    other = await make_team("Other", km=2)
    t0 = utcnow()
    incident, _ = await create(services, intake(), now=t0)
    (offer,) = await offers_of(services, incident.id)

    with pytest.raises(NotYourTeam):
        await accept(services, offer.id, other.user, now=t0)
    # At the deadline the offer can no longer be accepted, even before the deadline job ran.
    with pytest.raises(OfferClosed) as late:
        await accept(services, offer.id, mine.user, now=t0 + ACK)
    assert "lapsed" in late.value.message
    assert (await one(services, Offer, offer.id)).status == "pending"

    accepted, row, _ = await accept(services, offer.id, mine.user, now=t0 + ACK - SECOND)
    assert accepted.status == "accepted" and row.accepted_at == t0 + ACK - SECOND
    with pytest.raises(OfferClosed) as again:
        await accept(services, offer.id, mine.user, now=t0 + ACK - SECOND)
    assert "already accepted" in again.value.message
    # The deadline job after an accept does nothing.
    assert await lapse(services, offer.id, t0 + ACK + SECOND) == []
    assert (await one(services, Offer, offer.id)).status == "accepted"
    assert (await team_row(services, mine.id)).status == "busy"


# --- Lifecycle, follow-up, purge ----------------------------------------------------------------

async def test_steps_are_timed_and_resolution_plans_follow_up_and_purge(services, make_team, settings):
    team = await make_team("Crew", km=1)
    t0 = utcnow()
    incident, _ = await create(services, intake("eviction", callback_phone="98450 12345", note="landlord"), now=t0)
    (offer,) = await offers_of(services, incident.id)
    await accept(services, offer.id, team.user, now=t0 + 10 * SECOND)
    with pytest.raises(BadTransition):
        await step(services, incident.id, "accepted", team.user)
    await step(services, incident.id, "en_route", team.user, now=t0 + 20 * SECOND)
    await step(services, incident.id, "on_scene", team.user, now=t0 + 600 * SECOND)
    who = await principal(services, team.user)
    async with services.sessions() as db:
        await crisis.add_case_note(db, services, incident_id=incident.id, body="Spoke to the landlord.", principal=who)
        await db.commit()
    resolved_at = t0 + 3600 * SECOND
    _, works = await step(services, incident.id, "resolved", team.user, now=resolved_at)
    with pytest.raises(BadTransition):
        await step(services, incident.id, "on_scene", team.user)

    row = await one(services, Incident, incident.id)
    assert row.status == "resolved"
    assert (row.accepted_at, row.en_route_at, row.on_scene_at, row.resolved_at) == (
        t0 + 10 * SECOND, t0 + 20 * SECOND, t0 + 600 * SECOND, resolved_at)
    assert (await team_row(services, team.id)).status == "available"
    assert (await team_row(services, team.id)).current_incident_id is None
    (follow_up,) = await rows(services, FollowUp, FollowUp.incident_id == incident.id)
    assert follow_up.team_id == team.id
    assert follow_up.due_on == (resolved_at + dt.timedelta(days=settings.follow_up_days)).date()
    (purge,) = await due_rows(services, kind="crisis.purge")
    assert purge.due_at == resolved_at + dt.timedelta(days=settings.retention_days)
    assert [w.id for w in works] == [purge.id]

    # Not due yet: the sweeper leaves it alone.
    assert await jobs.run_due_work(services, purge.id) == "skipped"
    await backdate_due(services, DueWork.id == purge.id)
    assert await jobs.run_due_work(services, purge.id) == "done"

    row = await one(services, Incident, incident.id)
    assert (row.lat_enc, row.lon_enc, row.callback_phone_enc, row.callback_phone_hash, row.note_enc) == (None,) * 5
    assert row.purged_at is not None
    assert (row.kind, row.branch_id, row.language) == ("eviction", incident.branch_id, "kn")
    assert (row.accepted_at, row.resolved_at) == (t0 + 10 * SECOND, resolved_at)
    (note,) = await rows(services, CaseNote, CaseNote.incident_id == incident.id)
    assert note.body_enc is None
    # Purging twice is harmless.
    async with services.sessions() as db:
        assert await crisis.purge(db, incident_id=incident.id) is False


async def test_only_the_accepted_team_or_a_dispatcher_moves_an_incident(services, make_team, make_user):
    team = await make_team("Crew", km=1)
    bystander = await make_team("Bystander", km=30)
    dispatcher = await make_user("disp", ["dispatcher"], "BLR")
    incident, _ = await create(services, intake())
    (offer,) = await offers_of(services, incident.id)
    with pytest.raises(NotYourTeam):  # a pending offer is not enough
        await step(services, incident.id, "en_route", team.user)
    await accept(services, offer.id, team.user)
    with pytest.raises(NotYourTeam):
        await step(services, incident.id, "en_route", bystander.user)
    with pytest.raises(NotYourTeam):
        await step(services, incident.id, "cancelled", team.user)
    await step(services, incident.id, "cancelled", dispatcher)
    row = await one(services, Incident, incident.id)
    assert row.status == "cancelled" and row.cancelled_at is not None
    assert (await team_row(services, team.id)).status == "available"
    assert await rows(services, FollowUp, FollowUp.incident_id == incident.id) == []  # nothing to follow up
    assert await due_rows(services, kind="crisis.purge")


async def test_teams_cannot_go_off_duty_while_offered_or_busy(services, make_team):
    team = await make_team("Crew", km=1)
    incident, _ = await create(services, intake())
    who = await principal(services, team.user)
    async with services.sessions() as db:
        with pytest.raises(BadTransition):
            await crisis.set_availability(db, team_id=team.id, status="off_duty", principal=who)
    assert (await team_row(services, team.id)).status == "offered"
    (offer,) = await offers_of(services, incident.id)
    await accept(services, offer.id, team.user)
    async with services.sessions() as db:
        with pytest.raises(BadTransition):
            await crisis.set_availability(db, team_id=team.id, status="off_duty", principal=who)
    assert (await team_row(services, team.id)).status == "busy"


class ReversingRouting:
    """A routing provider stand-in: the farther team has the shorter drive."""

    async def rerank(self, lat, lon, candidates, *, now, stale_after):
        for i, c in enumerate(candidates):
            c.eta_seconds = 600 - 300 * i  # nearest: 10 min, next: 5 min
        return sorted(candidates, key=lambda c: c.eta_seconds)


async def test_a_nearer_team_passed_over_for_a_longer_drive_gets_a_reason(services, make_team):
    near = await make_team("Near", km=1)
    fast = await make_team("AcrossTheRiver", km=3)
    services.extras["routing"] = ReversingRouting()
    try:
        incident, _ = await create(services, intake())
    finally:
        services.extras.pop("routing")
    (offer,) = await offers_of(services, incident.id)
    assert (offer.team_id, offer.eta_seconds) == (fast.id, 300)
    (_, detail), = await decisions_of(services, incident.id)
    assert detail["chosen"] == [fast.id]
    assert detail["passed_over"] == [{"team": near.id, "name": "Near", "km": 1.0,
                                      "reason": "longer drive (10 min against 5 min)"}]
