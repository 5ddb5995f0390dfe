"""Crisis response services: intake, teams, dispatch with atomic reservation,
offers with acknowledgement deadlines, escalation, the incident lifecycle,
case notes, follow-ups and the retention purge.

The route or job owns the transaction: these functions flush, never commit, and
return the due-work rows the caller must nudge after committing (DESIGN §3).
Push payloads, SMS texts and job payloads carry ids only.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import secrets
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crisis import places
from crisis.dispatch import KIND_SKILLS, Ranking, TeamView, rank_teams
from crisis.errors import (BadIntake, BadTransition, IncidentNotFound, NotYourTeam, OfferClosed, UnknownArea)
from crisis.geo import bounding_box, haversine_km, valid_point
from crisis.models import (CaseNote, DispatchDecision, FollowUp, Incident, IncidentKind, IncidentStatus, Offer,
                           OfferStatus, OPEN_STATUSES, PushSubscription, Skill, Team, TeamMember, TeamStatus)
from union import audit, jobs
from union.crypto import normalise_phone, token_digest
from union.errors import Conflict, Forbidden, InvalidInput, NotFound
from union.i18n import SPOKEN_LANGUAGES, _
from union.models import Branch, DueWork, Role, RoleGrant, User, utcnow
from union.policy import Principal

REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: read out over the phone


# --- Intake -------------------------------------------------------------------

@dataclass
class Intake:
    kind: str
    language: str
    lat: float | None = None
    lon: float | None = None
    area: str | None = None
    callback_phone: str | None = None
    note: str | None = None
    source: str = "web"


@dataclass
class Located:
    lat: float | None
    lon: float | None
    area: str


def locate(intake: Intake, *, location_required: bool = True) -> Located:
    if intake.lat is not None or intake.lon is not None:
        if not valid_point(intake.lat, intake.lon):
            raise BadIntake(_("The location is not valid: latitude must be between -90 and 90 and longitude between -180 and 180."),
                            field="location")
        area = ""
        if intake.area:
            place = places.lookup(intake.area)
            area = place.label if place else intake.area.strip()[:120]
        return Located(float(intake.lat), float(intake.lon), area)
    if intake.area and intake.area.strip():
        place = places.lookup(intake.area)
        if place is None:
            suggestions = [p.label for p in places.search(intake.area, limit=5)]
            if not location_required:
                return Located(None, None, intake.area.strip()[:120])
            raise UnknownArea(_("We do not know the area \"%(area)s\". Please choose a nearby place.",
                                area=intake.area.strip()[:60]), suggestions)
        return Located(place.lat, place.lon, place.label)
    if location_required:
        raise BadIntake(_("Please say where you are: an area or landmark, or share your location."), field="location")
    return Located(None, None, "")


def check_intake(intake: Intake) -> Intake:
    if intake.kind not in IncidentKind.__members__:
        raise BadIntake(_("Please choose what kind of trouble this is."), field="kind")
    if intake.language not in SPOKEN_LANGUAGES:
        raise BadIntake(_("Please choose the language you speak."), field="language")
    phone = None
    if intake.callback_phone and str(intake.callback_phone).strip():
        try:
            phone = normalise_phone(str(intake.callback_phone))
        except ValueError:
            raise BadIntake(_("That does not look like a phone number."), field="callback_phone") from None
    note = (intake.note or "").strip()
    if len(note) > 1000:
        raise BadIntake(_("The note is too long (at most 1000 characters)."), field="note")
    return Intake(kind=intake.kind, language=intake.language, lat=intake.lat, lon=intake.lon, area=intake.area,
                  callback_phone=phone, note=note or None, source=intake.source)


async def nearest_branch(session: AsyncSession, lat: float, lon: float):
    """The nearest branch's (id, code, lat, lon) row, or None: plain columns, not ORM objects (every intake
    asks, and only the id and code are used)."""
    b = Branch.__table__.c
    branches = (await session.execute(select(b.id, b.code, b.lat, b.lon))).all()
    return min(branches, key=lambda r: haversine_km(lat, lon, r.lat, r.lon), default=None)


def _new_reference() -> str:
    return "H" + "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(7))


async def caller_seen_before(session: AsyncSession, phone_digest: str) -> bool:
    return (await session.execute(select(Incident.id).where(Incident.callback_phone_hash == phone_digest).limit(1))).first() is not None


async def create_incident(session: AsyncSession, svc, *, intake: Intake, actor: Principal | None = None,
                          now: dt.datetime | None = None) -> tuple[Incident, str, list[DueWork]]:
    """Record a help request and dispatch it at once. Returns (incident, status token, due work)."""
    now = now or utcnow()
    intake = check_intake(intake)
    # SMS and voice callers may not name a known place: the dispatchers call them back.
    where = locate(intake, location_required=intake.source not in ("sms", "voice"))
    branch = await nearest_branch(session, where.lat, where.lon) if where.lat is not None else None
    token = secrets.token_urlsafe(18)
    two_team = set(svc.settings.two_team_kinds.split())
    incident = Incident(
        reference=_new_reference(), status_token_digest=token_digest(token), kind=intake.kind,
        language=intake.language, source=intake.source, branch_id=branch.id if branch else None, area=where.area,
        lat_enc=svc.vault.encrypt(repr(where.lat)) if where.lat is not None else None,
        lon_enc=svc.vault.encrypt(repr(where.lon)) if where.lon is not None else None,
        callback_phone_enc=svc.vault.encrypt(intake.callback_phone),
        callback_phone_hash=svc.phone_hash(intake.callback_phone) if intake.callback_phone else None,
        note_enc=svc.vault.encrypt(intake.note), teams_needed=2 if intake.kind in two_team else 1,
        created_by_user_id=actor.user.id if actor else None, created_at=now,
    )
    session.add(incident)
    await session.flush()
    # The ranking only reads, so it comes before the audit record: the audit chain's head stays locked
    # from there until commit (on PostgreSQL every intake and answer waits for it), and should be held
    # for the writes alone. The reservation after it is conditional, as always.
    ranking = None
    if where.lat is not None:
        ranking = await rank_for(session, svc, lat=where.lat, lon=where.lon, kind=incident.kind,
                                 language=incident.language, exclude=set(), now=now, committed_only=True)
    await audit.record(session, action="incident.create", actor=actor.user if actor else None,
                       target_type="incident", target_id=incident.reference,
                       detail={"kind": incident.kind, "source": incident.source,
                               "branch": branch.code if branch else None})
    works = await dispatch(session, svc, incident, now=now, fresh=True, ranking=ranking)
    return incident, token, works


def incident_point(svc, incident: Incident) -> tuple[float, float] | None:
    if incident.lat_enc is None or incident.lon_enc is None:
        return None
    return float(svc.vault.decrypt(incident.lat_enc)), float(svc.vault.decrypt(incident.lon_enc))


# --- Teams --------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def _words(value: str) -> frozenset[str]:
    return frozenset(value.split())


async def teams_near(session: AsyncSession, lat: float, lon: float, radius_km: float) -> list[TeamView]:
    """Teams whose base or live position lies in the bounding box of the radius (any status)."""
    min_lat, max_lat, min_lon, max_lon = bounding_box(lat, lon, radius_km)
    in_box = or_(
        and_(Team.base_lat.between(min_lat, max_lat), Team.base_lon.between(min_lon, max_lon)),
        and_(Team.live_lat.between(min_lat, max_lat), Team.live_lon.between(min_lon, max_lon)),
    )
    # Core columns, not ORM attributes: this is the hot path of every dispatch.
    c = Team.__table__.c
    rows = (await session.execute(select(
        c.id, c.name, c.status, c.base_lat, c.base_lon, c.live_lat, c.live_lon, c.live_at, c.skills, c.languages)
        .where(in_box))).all()
    return [TeamView(id_, name, status, base_lat, base_lon, live_lat, live_lon, live_at, _words(skills),
                     _words(languages))
            for id_, name, status, base_lat, base_lon, live_lat, live_lon, live_at, skills, languages in rows]


async def rank_for(session: AsyncSession, svc, *, lat: float, lon: float, kind: str, language: str,
                   exclude: set[int], now: dt.datetime, committed_only: bool = False) -> Ranking:
    """The normal radius first (a small box: fast), the wide radius only when it found nobody.

    With the in-memory team table (crisis/teamcache.py) one small query brings it up to date;
    `committed_only`: this session has changed no team row (yet), so what it reads may enter the copy
    every decision of the process shares."""
    s = svc.settings
    stale = dt.timedelta(seconds=s.location_stale_seconds)
    cache = svc.extras.get("team_cache")
    overlay = await cache.refresh(session, committed_only=committed_only) if cache is not None else None
    ranking = Ranking([])
    for radius in (s.dispatch_radius_km, s.dispatch_wide_radius_km):
        if overlay is not None:  # the same ranking as below over the same teams, from the copy's records
            ranking = cache.rank(lat=lat, lon=lon, kind=kind, language=language, now=now, stale_after=stale,
                                 radius_km=s.dispatch_radius_km, wide_radius_km=radius, exclude=exclude,
                                 overlay=overlay)
        else:
            teams = await teams_near(session, lat, lon, radius)
            ranking = rank_teams(lat=lat, lon=lon, kind=kind, language=language, teams=teams, now=now,
                                 stale_after=stale, radius_km=s.dispatch_radius_km, wide_radius_km=radius,
                                 exclude=exclude)
        if ranking.ordered:
            break
    routing = svc.extras.get("routing")
    if routing is not None and len(ranking.ordered) > 1:
        ranking.ordered = await routing.rerank(lat, lon, ranking.ordered, now=now,
                                               stale_after=stale)
    return ranking


async def _reserve(session: AsyncSession, team_id: int, incident_id: int, *, to: str = TeamStatus.offered) -> bool:
    """The conditional write that keeps two incidents from getting the same team."""
    result = await session.execute(
        update(Team).where(Team.id == team_id, Team.status == TeamStatus.available)
        .values(status=to, current_incident_id=incident_id))
    return result.rowcount == 1


async def _release(session: AsyncSession, team_id: int, incident_id: int) -> None:
    await session.execute(
        update(Team).where(Team.id == team_id, Team.current_incident_id == incident_id,
                           Team.status.in_([TeamStatus.offered, TeamStatus.busy]))
        .values(status=TeamStatus.available, current_incident_id=None))


async def _push_to_users(session: AsyncSession, user_ids: list[int], message: dict, *, key: str,
                         offer_id: int | None = None) -> list[DueWork]:
    works = []
    if not user_ids:
        return works
    subs = (await session.execute(select(PushSubscription.id).where(PushSubscription.user_id.in_(user_ids)))).scalars()
    for sub_id in subs:
        works.append(await jobs.schedule(session, kind="crisis.push", key=f"{key}:{sub_id}",
                                         payload={"subscription": sub_id, "message": message, "offer": offer_id},
                                         max_attempts=6))
    return works


async def _push_offer_to_team(session: AsyncSession, offer_id: int, team_id: int) -> list[DueWork]:
    """One push row per device of the team's members, found in one query; the offer is new in this
    transaction, so its rows need no "already scheduled?" look-up (jobs.schedule fresh=True)."""
    subs = (await session.execute(
        select(PushSubscription.id).join(TeamMember, TeamMember.user_id == PushSubscription.user_id)
        .where(TeamMember.team_id == team_id).order_by(PushSubscription.id))).scalars().all()
    message = {"type": "offer", "offer": offer_id}
    return [await jobs.schedule(session, kind="crisis.push", key=f"push:offer:{offer_id}:{sub_id}",
                                payload={"subscription": sub_id, "message": message, "offer": offer_id},
                                max_attempts=6, fresh=True)
            for sub_id in dict.fromkeys(subs)]


async def _offer(session: AsyncSession, svc, incident: Incident, team_id: int, *, now: dt.datetime,
                 distance_km: float | None, broadcast: bool = False, eta_seconds: int | None = None) -> list[DueWork]:
    ack = svc.settings.ack_timeout_seconds
    offer = Offer(incident_id=incident.id, team_id=team_id, created_at=now, deadline_at=now + dt.timedelta(seconds=ack),
                  distance_km=round(distance_km, 2) if distance_km is not None else None, eta_seconds=eta_seconds,
                  broadcast=broadcast)
    session.add(offer)
    await session.flush()  # the offer's id names its due work
    works = await _push_offer_to_team(session, offer.id, team_id)
    # Without any push subscription the SMS goes at once; otherwise at half the window if still unanswered.
    sms_at = now if not works else now + dt.timedelta(seconds=ack / 2)
    works.append(await jobs.schedule(session, kind="crisis.offer_sms", key=f"offer-sms:{offer.id}",
                                     payload={"offer": offer.id}, due_at=sms_at, fresh=True))
    if not broadcast:
        works.append(await jobs.schedule(session, kind="crisis.offer_deadline", key=f"offer-deadline:{offer.id}",
                                         payload={"offer": offer.id}, due_at=offer.deadline_at, fresh=True))
    if incident.status == IncidentStatus.new:
        incident.status = IncidentStatus.offered
    if incident.offered_at is None:
        incident.offered_at = now
    session.add(incident)
    return works


async def dispatch(session: AsyncSession, svc, incident: Incident, *, now: dt.datetime,
                   fresh: bool = False, ranking: Ranking | None = None) -> list[DueWork]:
    """Offer the incident to as many teams as it still needs, or escalate.

    fresh=True: the incident was created in this transaction (intake), so no other transaction can
    see it yet: there is nothing to lock and it has no offers; and the transaction changed no team
    row before it (what the in-memory team table relies on, see rank_for). `ranking`: rank_for's answer
    for the fresh incident, made by the caller a moment before (see create_incident)."""
    if fresh:
        offers: list[Offer] = []
    else:
        # A retry of dispatch must not offer the incident while a team is accepting it.
        await session.flush()
        await _lock_incident(session, incident.id)
        offers = list((await session.execute(select(Offer).where(Offer.incident_id == incident.id))).scalars())
    live = [o for o in offers if o.status in (OfferStatus.pending, OfferStatus.accepted) and not o.broadcast]
    accepted = [o for o in offers if o.status == OfferStatus.accepted]
    need = incident.teams_needed - max(len(live), len(accepted))
    if need <= 0 or incident.status not in OPEN_STATUSES:
        return []
    point = incident_point(svc, incident)
    if point is None:
        return await escalate(session, svc, incident, now=now, reason="no location")
    early = ranking is not None and fresh  # ranked before this transaction took the audit head
    if not early:
        ranking = await rank_for(session, svc, lat=point[0], lon=point[1], kind=incident.kind,
                                 language=incident.language, exclude={o.team_id for o in offers}, now=now,
                                 committed_only=fresh)
    works: list[DueWork] = []
    chosen: list[int] = []
    lost: list[dict] = []
    candidates = list(ranking.ordered)
    while candidates and len(chosen) < need:
        candidate = candidates.pop(0)
        if await _reserve(session, candidate.team.id, incident.id):
            chosen.append(candidate.team.id)
            works += await _offer(session, svc, incident, candidate.team.id, now=now,
                                  distance_km=candidate.distance_km, eta_seconds=candidate.eta_seconds)
        elif early:
            # Other intakes reserved teams while this one waited for the audit head (PostgreSQL): rank
            # once more rather than try the old order team by team, a statement each while every other
            # intake waits. The new ranking gives the reserved teams their reason (not available).
            early = False
            ranking = await rank_for(session, svc, lat=point[0], lon=point[1], kind=incident.kind,
                                     language=incident.language, exclude={o.team_id for o in offers} | set(chosen),
                                     now=now)
            candidates = list(ranking.ordered)
        else:
            lost.append({"team": candidate.team.id, "name": candidate.team.name, "km": round(candidate.distance_km, 2),
                         "reason": "reserved by another incident a moment ago"})
    lost += _passed_for_travel_time(ranking, chosen, {p["team"] for p in lost})
    passed = [p for p in ranking.passed_over if p["team"] not in chosen]
    detail = {"step": ranking.step, "chosen": chosen, "passed_over": passed + lost,
              "needed": need, "language": incident.language, "skills": sorted(KIND_SKILLS.get(incident.kind, ()))}
    session.add(DispatchDecision(incident_id=incident.id, at=now, chosen_team_id=chosen[0] if chosen else None,
                                 outcome="offered" if chosen else "no_team", detail=json.dumps(detail)))
    await session.flush()
    if not chosen and not live:
        works += await escalate(session, svc, incident, now=now, reason="no team available")
    return works


def _passed_for_travel_time(ranking: Ranking, chosen: list[int], listed: set[int]) -> list[dict]:
    """Nearer candidates that the routing provider put behind a chosen team (a longer drive, or no route)."""
    picked = [c for c in ranking.ordered if c.team.id in chosen]
    if not picked:
        return []
    farthest = max(c.distance_km for c in picked)
    fastest = min((c.eta_seconds for c in picked if c.eta_seconds is not None), default=None)
    passed = []
    for c in ranking.ordered:
        if c.team.id in chosen or c.team.id in listed or c.distance_km >= farthest:
            continue
        if c.eta_seconds is None:
            reason = "no road route found"
        elif fastest is not None:
            reason = f"longer drive ({round(c.eta_seconds / 60)} min against {round(fastest / 60)} min)"
        else:
            reason = "longer drive"
        passed.append({"team": c.team.id, "name": c.team.name, "km": round(c.distance_km, 2), "reason": reason})
    return passed


async def escalate(session: AsyncSession, svc, incident: Incident, *, now: dt.datetime, reason: str) -> list[DueWork]:
    """Alert the on-duty dispatchers and broadcast to every available team within the escalation radius."""
    if incident.status == IncidentStatus.escalated or incident.status not in OPEN_STATUSES:
        return []
    if incident.status not in (IncidentStatus.accepted, IncidentStatus.en_route, IncidentStatus.on_scene):
        incident.status = IncidentStatus.escalated
    incident.escalated_at = incident.escalated_at or now
    session.add(incident)
    # An incident with no branch (an SMS or call naming no known place) concerns every dispatcher:
    # alerting only the all-branch ones could alert nobody.
    in_branch = (or_(RoleGrant.branch_id.is_(None), RoleGrant.branch_id == incident.branch_id)
                 if incident.branch_id is not None else True)
    dispatcher_ids = list((await session.execute(
        select(RoleGrant.user_id).join(User, User.id == RoleGrant.user_id)
        .where(RoleGrant.role == Role.dispatcher, User.is_active.is_(True), in_branch))).scalars())
    works = await _push_to_users(session, sorted(set(dispatcher_ids)), {"type": "escalation", "incident": incident.id},
                                 key=f"push:escalation:{incident.id}")
    broadcast_to: list[int] = []
    point = incident_point(svc, incident)
    if point is not None:
        radius = svc.settings.escalation_radius_km
        # Teams whose offer lapsed are asked again: an escalation goes to every available team nearby,
        # and a phone that missed one alert may well answer the next. Only a team that declined, or
        # already holds an offer for this incident, is left out.
        already = set((await session.execute(select(Offer.team_id).where(
            Offer.incident_id == incident.id, Offer.status != OfferStatus.lapsed))).scalars())
        for team in await teams_near(session, point[0], point[1], radius):
            t_lat, t_lon, _ = team.position(now, dt.timedelta(seconds=svc.settings.location_stale_seconds))
            if (team.status == TeamStatus.available and team.id not in already
                    and haversine_km(point[0], point[1], t_lat, t_lon) <= radius):
                broadcast_to.append(team.id)
                works += await _offer(session, svc, incident, team.id, now=now,
                                      distance_km=haversine_km(point[0], point[1], t_lat, t_lon), broadcast=True)
    works.append(await jobs.schedule(session, kind="crisis.retry_dispatch", key=f"retry-dispatch:{incident.id}:1",
                                     payload={"incident": incident.id, "attempt": 1},
                                     due_at=now + dt.timedelta(seconds=30)))
    session.add(DispatchDecision(incident_id=incident.id, at=now, outcome="escalated",
                                 detail=json.dumps({"reason": reason, "dispatchers": len(set(dispatcher_ids)),
                                                    "broadcast_to": broadcast_to})))
    await audit.record(session, action="incident.escalate", target_type="incident", target_id=incident.reference,
                       detail={"reason": reason, "broadcast": len(broadcast_to)})
    await session.flush()
    return works


# --- Answers to offers ---------------------------------------------------------

async def _is_team_member(session: AsyncSession, team_id: int, user_id: int) -> bool:
    return (await session.execute(select(TeamMember.id).where(
        TeamMember.team_id == team_id, TeamMember.user_id == user_id))).first() is not None


async def _load_offer(session: AsyncSession, offer_id: int, principal: Principal) -> tuple[Offer, Incident]:
    offer = await session.get(Offer, offer_id)
    if offer is None:
        raise NotFound(_("No such offer."))
    if not await _is_team_member(session, offer.team_id, principal.user.id):
        raise NotYourTeam(_("This offer was made to another team."))
    return offer, await session.get(Incident, offer.incident_id)


async def _lock_incident(session: AsyncSession, incident_id: int) -> Incident:
    """Changes to one incident's offers take turns: lock its row before touching its offers or teams.

    On PostgreSQL two teams accepting at once otherwise lock each other's offers (withdrawing
    them) in opposite orders and deadlock; after the lock the second sees the first's outcome.
    SQLite's BEGIN IMMEDIATE already lets one writer in at a time (FOR UPDATE is not emitted there).
    """
    return (await session.execute(select(Incident).where(Incident.id == incident_id).with_for_update()
                                  .execution_options(populate_existing=True))).scalar_one()


def _closed_message(status: str) -> str:
    return {
        OfferStatus.accepted: _("This offer was already accepted."),
        OfferStatus.declined: _("This offer was already declined."),
        OfferStatus.lapsed: _("This offer has lapsed: the time to answer ran out and another team was asked."),
        OfferStatus.withdrawn: _("This offer was withdrawn: enough teams are already going."),
    }.get(status, _("This offer is closed."))


async def accept_offer(session: AsyncSession, svc, *, offer_id: int, principal: Principal,
                       now: dt.datetime | None = None) -> tuple[Offer, Incident, list[DueWork]]:
    now = now or utcnow()
    offer, incident = await _load_offer(session, offer_id, principal)
    incident = await _lock_incident(session, incident.id)
    await session.refresh(offer)  # another answer may have changed it while we waited for the lock
    if offer.status != OfferStatus.pending:
        raise OfferClosed(_closed_message(offer.status))
    if not offer.broadcast and now >= offer.deadline_at:
        raise OfferClosed(_closed_message(OfferStatus.lapsed))
    if incident.status not in OPEN_STATUSES:
        raise OfferClosed(_("This incident is already closed."))
    # Recorded before any team row is locked: incident intake takes the audit log's head and then
    # team rows, so taking them in the other order here could deadlock with it on PostgreSQL.
    # A refusal below rolls the record back with everything else.
    await audit.record(session, action="offer.accept", actor=principal.user, target_type="offer", target_id=offer.id,
                       detail={"incident": incident.reference, "team": offer.team_id})
    if offer.broadcast:
        if not await _reserve(session, offer.team_id, incident.id, to=TeamStatus.busy):
            raise OfferClosed(_("Your team is busy with another incident."))
    else:
        await session.execute(update(Team).where(Team.id == offer.team_id, Team.current_incident_id == incident.id)
                              .values(status=TeamStatus.busy))
    taken = await session.execute(update(Offer).where(Offer.id == offer.id, Offer.status == OfferStatus.pending)
                                  .values(status=OfferStatus.accepted, answered_at=now,
                                          answered_by_user_id=principal.user.id))
    if taken.rowcount != 1:
        raise OfferClosed(_("This offer is closed."))
    if incident.status in (IncidentStatus.new, IncidentStatus.offered, IncidentStatus.escalated):
        incident.status = IncidentStatus.accepted
        incident.accepted_at = incident.accepted_at or now
    session.add(incident)
    accepted = (await session.execute(select(func.count()).select_from(Offer).where(
        Offer.incident_id == incident.id, Offer.status == OfferStatus.accepted))).scalar_one()
    if accepted >= incident.teams_needed:
        await _withdraw_pending(session, incident, now=now)
    await session.flush()
    await session.refresh(offer)
    return offer, incident, []


async def _withdraw_pending(session: AsyncSession, incident: Incident, *, now: dt.datetime) -> None:
    pending = list((await session.execute(select(Offer).where(
        Offer.incident_id == incident.id, Offer.status == OfferStatus.pending))).scalars())
    for other in pending:
        await session.execute(update(Offer).where(Offer.id == other.id, Offer.status == OfferStatus.pending)
                              .values(status=OfferStatus.withdrawn, answered_at=now))
        if not other.broadcast:
            await _release(session, other.team_id, incident.id)


async def _after_miss(session: AsyncSession, svc, incident: Incident, *, now: dt.datetime) -> list[DueWork]:
    incident.misses += 1
    session.add(incident)
    await session.flush()
    if incident.status not in OPEN_STATUSES:
        return []
    if incident.misses >= svc.settings.max_offer_misses and incident.status not in (
            IncidentStatus.accepted, IncidentStatus.en_route, IncidentStatus.on_scene):
        works = await escalate(session, svc, incident, now=now, reason=f"{incident.misses} offers missed")
        return works + await dispatch(session, svc, incident, now=now)
    return await dispatch(session, svc, incident, now=now)


async def decline_offer(session: AsyncSession, svc, *, offer_id: int, principal: Principal,
                        now: dt.datetime | None = None) -> tuple[Offer, list[DueWork]]:
    now = now or utcnow()
    offer, incident = await _load_offer(session, offer_id, principal)
    incident = await _lock_incident(session, incident.id)
    await session.refresh(offer)
    declined = await session.execute(update(Offer).where(Offer.id == offer.id, Offer.status == OfferStatus.pending)
                                     .values(status=OfferStatus.declined, answered_at=now,
                                             answered_by_user_id=principal.user.id))
    if declined.rowcount != 1:
        raise OfferClosed(_closed_message(offer.status))
    await audit.record(session, action="offer.decline", actor=principal.user, target_type="offer", target_id=offer.id)
    if offer.broadcast:
        return offer, []
    await _release(session, offer.team_id, incident.id)
    works = await _after_miss(session, svc, incident, now=now)
    await session.refresh(offer)
    return offer, works


async def lapse_offer(session: AsyncSession, svc, *, offer_id: int, now: dt.datetime | None = None) -> list[DueWork]:
    """The acknowledgement deadline passed: lapse the offer and ask the next team (idempotent)."""
    now = now or utcnow()
    offer = await session.get(Offer, offer_id)
    if offer is None or offer.status != OfferStatus.pending:
        return []
    incident = await _lock_incident(session, offer.incident_id)
    lapsed = await session.execute(update(Offer).where(
        Offer.id == offer.id, Offer.status == OfferStatus.pending, Offer.deadline_at <= now)
        .values(status=OfferStatus.lapsed, answered_at=now))
    if lapsed.rowcount != 1:
        return []
    # Recorded before the team row is touched: the audit log's head is always locked before team rows
    # (see accept_offer), and an escalation after this miss appends to the log.
    await audit.record(session, action="offer.lapse", target_type="offer", target_id=offer.id,
                       detail={"incident": incident.reference, "team": offer.team_id})
    await _release(session, offer.team_id, incident.id)
    return await _after_miss(session, svc, incident, now=now)


# --- Lifecycle ------------------------------------------------------------------

NEXT_STEPS = {
    IncidentStatus.accepted: {IncidentStatus.en_route, IncidentStatus.on_scene, IncidentStatus.resolved},
    IncidentStatus.en_route: {IncidentStatus.on_scene, IncidentStatus.resolved},
    IncidentStatus.on_scene: {IncidentStatus.resolved},
}
STEP_TIME = {IncidentStatus.en_route: "en_route_at", IncidentStatus.on_scene: "on_scene_at",
             IncidentStatus.resolved: "resolved_at", IncidentStatus.cancelled: "cancelled_at"}


def is_dispatcher(principal: Principal, incident: Incident) -> bool:
    return principal.has(Role.dispatcher, incident.branch_id) if incident.branch_id else Role.dispatcher in principal.grants


async def responding_team_ids(session: AsyncSession, incident_id: int) -> list[int]:
    return list((await session.execute(select(Offer.team_id).where(
        Offer.incident_id == incident_id, Offer.status == OfferStatus.accepted))).scalars())


async def can_work_on(session: AsyncSession, principal: Principal, incident: Incident, *, pending_too: bool = False) -> bool:
    if is_dispatcher(principal, incident):
        return True
    statuses = [OfferStatus.accepted] + ([OfferStatus.pending] if pending_too else [])
    return (await session.execute(select(Offer.id).join(TeamMember, TeamMember.team_id == Offer.team_id).where(
        Offer.incident_id == incident.id, Offer.status.in_(statuses),
        TeamMember.user_id == principal.user.id).limit(1))).first() is not None


async def get_incident(session: AsyncSession, incident_id: int) -> Incident:
    incident = await session.get(Incident, incident_id)
    if incident is None:
        raise IncidentNotFound(_("No such incident."))
    return incident


async def advance(session: AsyncSession, svc, *, incident_id: int, status: str, principal: Principal,
                  now: dt.datetime | None = None) -> tuple[Incident, list[DueWork]]:
    now = now or utcnow()
    incident = await get_incident(session, incident_id)
    incident = await _lock_incident(session, incident.id)
    if not await can_work_on(session, principal, incident):
        raise NotYourTeam(_("Only the team on this incident or a dispatcher can change it."))
    if status == IncidentStatus.cancelled:
        if incident.status not in OPEN_STATUSES:
            raise BadTransition(_("This incident is already closed."))
        if not is_dispatcher(principal, incident):
            raise NotYourTeam(_("Only a dispatcher can cancel an incident."))
    elif status not in NEXT_STEPS.get(incident.status, set()):
        raise BadTransition(_("An incident cannot go from %(a)s to %(b)s.", a=incident.status, b=status))
    # Audit first: the audit log's head is always locked before team rows (see accept_offer).
    await audit.record(session, action=f"incident.{status}", actor=principal.user, target_type="incident",
                       target_id=incident.reference)
    incident.status = status
    setattr(incident, STEP_TIME[status], now)
    session.add(incident)
    works: list[DueWork] = []
    if status in (IncidentStatus.resolved, IncidentStatus.cancelled):
        works = await close_incident(session, svc, incident, now=now)
    await session.flush()
    return incident, works


async def close_incident(session: AsyncSession, svc, incident: Incident, *, now: dt.datetime) -> list[DueWork]:
    """Free the teams, withdraw open offers, plan the follow-up and the retention purge."""
    teams = await responding_team_ids(session, incident.id)
    await _withdraw_pending(session, incident, now=now)
    for team_id in teams:
        await _release(session, team_id, incident.id)
    if incident.status == IncidentStatus.resolved:
        session.add(FollowUp(incident_id=incident.id, team_id=teams[0] if teams else None,
                             due_on=(now + dt.timedelta(days=svc.settings.follow_up_days)).date()))
    purge_at = now + dt.timedelta(days=svc.settings.retention_days)
    return [await jobs.schedule(session, kind="crisis.purge", key=f"purge:{incident.id}",
                                payload={"incident": incident.id}, due_at=purge_at)]


async def cancel_by_caller(session: AsyncSession, svc, *, reference: str, token: str,
                           now: dt.datetime | None = None) -> tuple[Incident, list[DueWork]]:
    now = now or utcnow()
    incident = await incident_for_caller(session, reference=reference, token=token)
    incident = await _lock_incident(session, incident.id)
    if incident.status not in OPEN_STATUSES:
        raise BadTransition(_("This incident is already closed."))
    await audit.record(session, action="incident.cancelled_by_caller", target_type="incident", target_id=incident.reference)
    incident.status = IncidentStatus.cancelled
    incident.cancelled_at = now
    session.add(incident)
    works = await close_incident(session, svc, incident, now=now)
    return incident, works


async def incident_for_caller(session: AsyncSession, *, reference: str, token: str) -> Incident:
    incident = (await session.execute(select(Incident).where(
        Incident.reference == (reference or "").strip().upper()))).scalar_one_or_none()
    # One answer for an unknown reference and for a wrong token.
    if incident is None or not token or not secrets.compare_digest(incident.status_token_digest, token_digest(token)):
        raise IncidentNotFound(_("No help request with that reference and code."))
    return incident


async def purge(session: AsyncSession, *, incident_id: int, now: dt.datetime | None = None) -> bool:
    """Drop the precise location, callback number, note and case notes; keep anonymous statistics."""
    incident = await session.get(Incident, incident_id)
    if incident is None or incident.purged_at is not None:
        return False
    incident.lat_enc = incident.lon_enc = incident.callback_phone_enc = incident.callback_phone_hash = None
    incident.note_enc = None
    incident.purged_at = now or utcnow()
    session.add(incident)
    await session.execute(update(CaseNote).where(CaseNote.incident_id == incident_id).values(body_enc=None))
    await audit.record(session, action="incident.purge", target_type="incident", target_id=incident.reference)
    return True


# --- Case notes ------------------------------------------------------------------

async def add_case_note(session: AsyncSession, svc, *, incident_id: int, body: str, principal: Principal) -> CaseNote:
    incident = await get_incident(session, incident_id)
    if not await can_work_on(session, principal, incident):
        raise NotYourTeam(_("Only the team on this incident or a dispatcher can write case notes."))
    body = (body or "").strip()
    if not 1 <= len(body) <= 5000:
        raise InvalidInput(_("A case note is 1 to 5000 characters."), field="body")
    if incident.purged_at is not None:
        raise BadTransition(_("This incident's details were removed after the retention period."))
    note = CaseNote(incident_id=incident.id, author_user_id=principal.user.id, body_enc=svc.vault.encrypt(body))
    session.add(note)
    await audit.record(session, action="case_note.add", actor=principal.user, target_type="incident",
                       target_id=incident.reference)
    await session.flush()
    return note


# --- Team management ---------------------------------------------------------------

@dataclass
class NewTeam:
    name: str
    branch: str
    base_lat: float
    base_lon: float
    skills: list[str]
    languages: list[str]
    members: list[str]
    status: str = TeamStatus.available


async def create_team(session: AsyncSession, *, data: NewTeam, principal: Principal | None) -> Team:
    name = " ".join((data.name or "").split())
    if not 1 <= len(name) <= 80:
        raise InvalidInput(_("A team name is 1 to 80 characters."), field="name")
    if not valid_point(data.base_lat, data.base_lon):
        raise InvalidInput(_("The base location is not valid."), field="base")
    bad = [s for s in data.skills if s not in Skill.__members__]
    if bad:
        raise InvalidInput(_("Unknown skill: %(skill)s", skill=bad[0]), field="skills")
    bad = [lang for lang in data.languages if lang not in SPOKEN_LANGUAGES]
    if bad or not data.languages:
        raise InvalidInput(_("Please give the team's languages as ISO codes (kn, te, ta, hi, ur, mr, en)."),
                           field="languages")
    if data.status not in (TeamStatus.available, TeamStatus.off_duty):
        raise InvalidInput(_("A team is either available or off duty."), field="status")
    branch = (await session.execute(select(Branch).where(Branch.code == (data.branch or "").upper()))).scalar_one_or_none()
    if branch is None:
        raise NotFound(_("Unknown branch."), field="branch")
    if principal is not None and not (principal.has(Role.office_bearer, branch.id) or principal.has(Role.dispatcher, branch.id)):
        raise Forbidden(_("You may not create teams in that branch."), field="branch")
    if (await session.execute(select(Team.id).where(Team.name == name))).first():
        raise Conflict(_("A team with this name exists already."), field="name")
    users = []
    for username in data.members:
        user = (await session.execute(select(User).where(User.username == str(username).strip().lower()))).scalar_one_or_none()
        if user is None:
            raise NotFound(_("No such user: %(name)s", name=str(username)[:64]), field="members")
        is_responder = (await session.execute(select(RoleGrant.id).where(
            RoleGrant.user_id == user.id, RoleGrant.role == Role.crisis_responder))).first()
        if not is_responder:
            raise InvalidInput(_("%(name)s is not a crisis responder.", name=user.username), field="members")
        users.append(user)
    team = Team(name=name, branch_id=branch.id, base_lat=float(data.base_lat), base_lon=float(data.base_lon),
                skills=" ".join(sorted(set(data.skills))), languages=" ".join(sorted(set(data.languages))),
                status=data.status)
    session.add(team)
    await session.flush()
    for user in users:
        session.add(TeamMember(team_id=team.id, user_id=user.id))
    await audit.record(session, action="team.create", actor=principal.user if principal else None,
                       target_type="team", target_id=team.id, detail={"branch": branch.code, "members": len(users)})
    await session.flush()
    return team


async def set_member_phones(session: AsyncSession, svc, *, team: Team, phones: dict[str, str]) -> None:
    """Phones (encrypted) for the SMS fallback, by username of team members."""
    rows = (await session.execute(select(TeamMember, User.username).join(User, User.id == TeamMember.user_id)
                                  .where(TeamMember.team_id == team.id))).all()
    for member, username in rows:
        if username in phones:
            try:
                member.phone_enc = svc.vault.encrypt(normalise_phone(phones[username]))
            except ValueError:
                raise InvalidInput(_("That does not look like a phone number."), field="members") from None
            session.add(member)
    await session.flush()


async def _team_for_update(session: AsyncSession, team_id: int, principal: Principal) -> Team:
    team = await session.get(Team, team_id)
    if team is None:
        raise NotFound(_("No such team."))
    if not (principal.has(Role.dispatcher, team.branch_id) or await _is_team_member(session, team.id, principal.user.id)):
        raise NotYourTeam(_("Only a member of this team or a dispatcher can change it."))
    return team


async def set_availability(session: AsyncSession, *, team_id: int, status: str, principal: Principal) -> Team:
    if status not in (TeamStatus.available, TeamStatus.off_duty):
        raise InvalidInput(_("Availability is either available or off_duty."), field="status")
    team = await _team_for_update(session, team_id, principal)
    if team.status == status:
        return team
    # Audit first: the audit log's head is always locked before team rows (see accept_offer).
    await audit.record(session, action="team.availability", actor=principal.user, target_type="team",
                       target_id=team.id, detail={"status": status})
    changed = await session.execute(update(Team).where(
        Team.id == team.id, Team.status.in_([TeamStatus.available, TeamStatus.off_duty])).values(status=status))
    if changed.rowcount != 1:
        raise BadTransition(_("Your team has an incident open: answer or finish it first."))
    await session.flush()
    await session.refresh(team)
    return team


async def set_location(session: AsyncSession, *, team_id: int, lat, lon, principal: Principal,
                       now: dt.datetime | None = None) -> Team:
    if not valid_point(lat, lon):
        raise InvalidInput(_("The location is not valid: latitude must be between -90 and 90 and longitude between -180 and 180."),
                           field="location")
    team = await _team_for_update(session, team_id, principal)
    team.live_lat, team.live_lon, team.live_at = float(lat), float(lon), now or utcnow()
    session.add(team)
    await session.flush()
    return team


async def subscribe_push(session: AsyncSession, *, principal: Principal, endpoint: str, p256dh: str, auth: str,
                         allow_local: bool) -> PushSubscription:
    from crisis.push import endpoint_allowed

    if not isinstance(endpoint, str) or not endpoint_allowed(endpoint, allow_local=allow_local):
        raise InvalidInput(_("This push address is not allowed: it must be https on a public host."), field="endpoint")
    if not (isinstance(p256dh, str) and isinstance(auth, str) and 40 <= len(p256dh) <= 200 and 8 <= len(auth) <= 64):
        raise InvalidInput(_("The push keys are missing or malformed."), field="keys")
    sub = (await session.execute(select(PushSubscription).where(PushSubscription.endpoint == endpoint))).scalar_one_or_none()
    if sub is None:
        sub = PushSubscription(user_id=principal.user.id, endpoint=endpoint, p256dh=p256dh, auth=auth)
    else:  # the browser re-subscribed (or another user now holds this device): the newest owner wins
        sub.user_id, sub.p256dh, sub.auth, sub.failures = principal.user.id, p256dh, auth, 0
    session.add(sub)
    await session.flush()
    return sub
