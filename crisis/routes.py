"""Routes of crisis response: the public "Get help" page and API, the caller's
status page, the hotline console, the dispatcher board, the team app (offers,
availability, location, incident steps, case notes), push subscriptions, the
service worker and manifest, and the Twilio-format SMS and voice webhooks.
Thin: parse, call one service, commit and nudge, render."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from crisis import places
from crisis import services as crisis
from crisis.errors import BadIntake, UnknownArea
from crisis.models import (CaseNote, DispatchDecision, Incident, IncidentKind, IncidentStatus, Offer, OfferStatus,
                           OPEN_STATUSES, PushSubscription, Skill, Team, TeamMember, TeamStatus)
from union import audit, jobs
from union.errors import InvalidInput, RateLimited, UnionError
from union.i18n import SPOKEN_LANGUAGES, _
from union.models import Branch, Role, User, utcnow
from union.sms import valid_twilio_signature
from union.web import read_json, render, services, set_cookie

STATIC = Path(__file__).resolve().parent.parent / "union" / "static" / "crisis"
HELP_COOKIE = "union_help"


def kind_labels() -> dict[str, str]:
    return {
        IncidentKind.police: _("Police"),
        IncidentKind.client_violence: _("Violence by a client"),
        IncidentKind.hired_criminals: _("Hired criminals, goondas"),
        IncidentKind.gatekeeper: _("Brothel, lodge or venue owner"),
        IncidentKind.eviction: _("Eviction from home"),
        IncidentKind.medical: _("Medical, or a condom burst"),
        IncidentKind.other: _("Other trouble"),
    }


KIND_ICONS = {"police": "police", "client_violence": "alert", "hired_criminals": "alert", "gatekeeper": "door",
              "eviction": "home", "medical": "medical", "other": "help"}


def status_labels() -> dict[str, str]:
    return {
        IncidentStatus.new: _("Received, looking for a team"),
        IncidentStatus.offered: _("A team has been asked"),
        IncidentStatus.accepted: _("A team is coming"),
        IncidentStatus.en_route: _("The team is on the way"),
        IncidentStatus.on_scene: _("The team has arrived"),
        IncidentStatus.resolved: _("Resolved"),
        IncidentStatus.cancelled: _("Cancelled"),
        IncidentStatus.escalated: _("All dispatchers have been alerted"),
    }


def offer_status_labels() -> dict[str, str]:
    return {
        OfferStatus.pending: _("waiting for an answer"),
        OfferStatus.accepted: _("accepted"),
        OfferStatus.declined: _("declined"),
        OfferStatus.lapsed: _("no answer in time"),
        OfferStatus.withdrawn: _("withdrawn"),
    }


def team_status_labels() -> dict[str, str]:
    return {
        TeamStatus.available: _("available"),
        TeamStatus.off_duty: _("off duty"),
        TeamStatus.offered: _("asked, not answered yet"),
        TeamStatus.busy: _("on an incident"),
    }


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _commit_and_nudge(request: Request, session, works) -> None:
    await jobs.commit_and_nudge(session, services(request).jobs, works)


async def _intake_allowed(request: Request, session, intake: crisis.Intake) -> None:
    """Rate limits per address and per phone, but a first request from a new caller is never refused."""
    svc = services(request)
    limit, window = svc.settings.public_requests_per_window, svc.settings.rate_window_seconds
    ip_ok = await svc.rate_limiter.hit(f"help-ip:{_client_ip(request)}", limit=limit, window=window)
    phone = intake.callback_phone
    if phone:
        try:
            from union.crypto import normalise_phone

            digest = svc.phone_hash(normalise_phone(phone))
        except ValueError:
            digest = None
        if digest:
            if not await crisis.caller_seen_before(session, digest):
                return
            if not await svc.rate_limiter.hit(f"help-phone:{digest}", limit=max(3, limit // 6), window=window):
                raise RateLimited(_("Too many help requests from this phone. If you are in danger, call the hotline."))
    if not ip_ok:
        raise RateLimited(_("Too many help requests from this connection. If you are in danger, call the hotline."))


def incident_public(incident: Incident) -> dict:
    return {"reference": incident.reference, "status": incident.status, "kind": incident.kind,
            "created_at": incident.created_at.isoformat(),
            "steps": {name: getattr(incident, f"{name}_at").isoformat() if getattr(incident, f"{name}_at") else None
                      for name in ("offered", "accepted", "en_route", "on_scene", "resolved", "cancelled", "escalated")}}


# --- Public intake: API ---------------------------------------------------------

def _intake_from_json(data: dict, source: str) -> crisis.Intake:
    location = data.get("location")
    if not isinstance(location, dict):
        raise BadIntake(_("Please say where you are: an area or landmark, or share your location."), field="location")
    lat, lon, area = location.get("lat"), location.get("lon"), location.get("area")
    if (lat is not None or lon is not None) and not crisis.valid_point(lat, lon):
        raise BadIntake(_("The location is not valid: latitude must be between -90 and 90 and longitude between -180 and 180."),
                        field="location")
    if area is not None and not isinstance(area, str):
        raise BadIntake(_("Please say where you are: an area or landmark, or share your location."), field="location")
    for key in ("kind", "language", "callback_phone", "note"):
        if data.get(key) is not None and not isinstance(data.get(key), str):
            raise BadIntake(_("%(field)s must be text.", field=key), field=key)
    if not data.get("language"):
        raise BadIntake(_("Please choose the language you speak."), field="language")
    return crisis.Intake(kind=data.get("kind") or "", language=data.get("language") or "", lat=lat, lon=lon, area=area,
                         callback_phone=data.get("callback_phone"), note=data.get("note"), source=source)


async def api_create_incident(request: Request) -> Response:
    try:
        data = await read_json(request)
    except InvalidInput as exc:  # not JSON, or not an object: say which part is wrong, like every other answer here
        exc.field = exc.field or "body"
        raise
    svc = services(request)
    try:
        intake = _intake_from_json(data, "api")
    except UnknownArea as exc:
        return JSONResponse({"error": exc.code, "message": exc.message, "field": "location",
                             "suggestions": exc.suggestions}, status_code=422)
    async with svc.sessions() as session:
        await _intake_allowed(request, session, intake)
        try:
            incident, token, works = await crisis.create_incident(session, svc, intake=intake)
        except UnknownArea as exc:
            return JSONResponse({"error": exc.code, "message": exc.message, "field": "location",
                                 "suggestions": exc.suggestions}, status_code=422)
        await _commit_and_nudge(request, session, works)
    return JSONResponse({"reference": incident.reference, "status": incident.status, "status_token": token},
                        status_code=201)


async def api_incident_status(request: Request) -> Response:
    async with services(request).reader() as session:
        incident = await crisis.incident_for_caller(session, reference=request.path_params["reference"],
                                                    token=request.query_params.get("token", ""))
    return JSONResponse(incident_public(incident))


async def api_places(request: Request) -> Response:
    q = (request.query_params.get("q") or "")[:60]
    return JSONResponse({"places": [{"label": p.label, "district": p.district, "pincode": p.pincode,
                                     "lat": p.lat, "lon": p.lon} for p in places.search(q, limit=10)]})


# --- Public intake: pages ---------------------------------------------------------

async def help_page(request: Request) -> Response:
    svc = services(request)
    form = await request.form() if request.method == "POST" else {}
    errors: dict[str, str] = {}
    suggestions: list[str] = []
    if request.method == "POST":
        lat, lon = form.get("lat") or None, form.get("lon") or None
        try:
            lat = float(lat) if lat is not None else None
            lon = float(lon) if lon is not None else None
        except ValueError:
            lat = lon = None
        intake = crisis.Intake(kind=form.get("kind") or "", language=form.get("language") or "", lat=lat, lon=lon,
                               area=form.get("area") or None, callback_phone=form.get("callback_phone") or None,
                               note=form.get("note") or None, source="web")
        try:
            async with svc.sessions() as session:
                await _intake_allowed(request, session, intake)
                incident, token, works = await crisis.create_incident(session, svc, intake=intake)
                await _commit_and_nudge(request, session, works)
        except UnknownArea as exc:
            errors["location"], suggestions = exc.message, exc.suggestions
        except UnionError as exc:
            errors[exc.field or "form"] = exc.message
        else:
            response = RedirectResponse(f"/help/status/{incident.reference}", status_code=303)
            # The status code travels in a cookie, not in the address: addresses end up in histories and logs.
            set_cookie(request, response, f"{HELP_COOKIE}_{incident.reference}", token, max_age=7 * 86400)
            return response
    return render(request, "crisis/help.html", {
        "kinds": kind_labels(), "icons": KIND_ICONS, "form": form, "errors": errors, "suggestions": suggestions,
        "spoken": SPOKEN_LANGUAGES}, status_code=422 if errors else 200)


async def help_status(request: Request) -> Response:
    reference = request.path_params["reference"].upper()[:16]
    token = request.cookies.get(f"{HELP_COOKIE}_{reference}", "")
    if request.method == "POST":
        form = await request.form()
        token = form.get("token") or token
    async with services(request).sessions() as session:
        incident = await crisis.incident_for_caller(session, reference=reference, token=token)
    response = render(request, "crisis/help_status.html", {"incident": incident, "labels": status_labels(),
                                                           "open": incident.status in OPEN_STATUSES})
    if request.method == "POST":
        set_cookie(request, response, f"{HELP_COOKIE}_{reference}", token, max_age=7 * 86400)
    return response


async def help_cancel(request: Request) -> Response:
    reference = request.path_params["reference"].upper()[:16]
    token = request.cookies.get(f"{HELP_COOKIE}_{reference}", "")
    async with services(request).sessions() as session:
        _, works = await crisis.cancel_by_caller(session, services(request), reference=reference, token=token)
        await _commit_and_nudge(request, session, works)
    return RedirectResponse(f"/help/status/{reference}", status_code=303)


# --- Hotline console ----------------------------------------------------------------

async def hotline(request: Request) -> Response:
    svc = services(request)
    form = await request.form() if request.method == "POST" else {}
    errors: dict[str, str] = {}
    suggestions: list[str] = []
    created = None
    if request.method == "POST":
        intake = crisis.Intake(kind=form.get("kind") or "", language=form.get("language") or "",
                               area=form.get("area") or None, callback_phone=form.get("callback_phone") or None,
                               note=form.get("note") or None, source="hotline")
        try:
            async with svc.sessions() as session:
                created, _token, works = await crisis.create_incident(session, svc, intake=intake,
                                                                      actor=request.state.principal)
                await _commit_and_nudge(request, session, works)
        except UnknownArea as exc:
            errors["location"], suggestions = exc.message, exc.suggestions
        except UnionError as exc:
            errors[exc.field or "form"] = exc.message
        else:
            return RedirectResponse(f"/crisis/incidents/{created.id}?created=1", status_code=303)
    return render(request, "crisis/hotline.html", {
        "kinds": kind_labels(), "icons": KIND_ICONS, "form": form, "errors": errors, "suggestions": suggestions,
        "spoken": SPOKEN_LANGUAGES}, status_code=422 if errors else 200)


# --- Dispatcher board -----------------------------------------------------------------

async def board_data(session, principal) -> dict:
    now = utcnow()
    incidents = list((await session.execute(select(Incident).where(Incident.status.in_(OPEN_STATUSES))
                                            .order_by(Incident.created_at.desc()).limit(200))).scalars())
    ids = [i.id for i in incidents]
    offers = list((await session.execute(select(Offer).where(Offer.incident_id.in_(ids or [-1]),
                                                             Offer.status.in_([OfferStatus.pending, OfferStatus.accepted]))
                                         )).scalars())
    teams = list((await session.execute(select(Team).order_by(Team.name))).scalars())
    names = {t.id: t.name for t in teams}
    codes = dict((await session.execute(select(Branch.id, Branch.code))).all())
    by_incident: dict[int, list] = {}
    for o in offers:
        by_incident.setdefault(o.incident_id, []).append({
            "id": o.id, "team": names.get(o.team_id, "?"), "status": o.status, "broadcast": o.broadcast,
            "seconds_left": max(0, int((o.deadline_at - now).total_seconds())) if o.status == OfferStatus.pending else None})
    counts: dict[str, int] = {}
    for t in teams:
        counts[t.status] = counts.get(t.status, 0) + 1
    return {
        "now": now.isoformat(),
        "incidents": [{"id": i.id, "reference": i.reference, "kind": i.kind, "status": i.status, "area": i.area,
                       "branch": codes.get(i.branch_id), "language": i.language,
                       "age_seconds": int((now - i.created_at).total_seconds()),
                       "offers": by_incident.get(i.id, [])} for i in incidents],
        "teams": [{"id": t.id, "name": t.name, "status": t.status, "branch": codes.get(t.branch_id)} for t in teams],
        "team_counts": counts,
    }


async def board(request: Request) -> Response:
    async with services(request).reader() as session:
        data = await board_data(session, request.state.principal)
    return render(request, "crisis/board.html", {"board": data, "kinds": kind_labels(), "labels": status_labels(),
                                                 "offer_labels": offer_status_labels(),
                                                 "team_labels": team_status_labels()})


async def api_board(request: Request) -> Response:
    async with services(request).reader() as session:
        return JSONResponse(await board_data(session, request.state.principal))


# --- Incidents (team and dispatcher) ----------------------------------------------------

async def _incident_view(request: Request, session, incident: Incident) -> dict:
    svc = services(request)
    principal = request.state.principal
    point = crisis.incident_point(svc, incident)
    notes = list((await session.execute(select(CaseNote, User.username).join(User, User.id == CaseNote.author_user_id, isouter=True)
                                        .where(CaseNote.incident_id == incident.id).order_by(CaseNote.id))).all())
    decisions = list((await session.execute(select(DispatchDecision).where(DispatchDecision.incident_id == incident.id)
                                            .order_by(DispatchDecision.id))).scalars())
    await audit.record(session, action="incident.read", actor=principal.user, target_type="incident",
                       target_id=incident.reference)
    return {
        "incident": incident, "point": point, "callback": svc.vault.decrypt(incident.callback_phone_enc),
        "note": svc.vault.decrypt(incident.note_enc),
        "notes": [(n, username, svc.vault.decrypt(n.body_enc)) for n, username in notes],
        "decisions": [(d, json.loads(d.detail)) for d in decisions],
        "next_steps": sorted(crisis.NEXT_STEPS.get(incident.status, set()),
                             key=["en_route", "on_scene", "resolved"].index),
        "dispatcher": crisis.is_dispatcher(principal, incident),
    }


async def incident_page(request: Request) -> Response:
    async with services(request).sessions() as session:
        incident = await crisis.get_incident(session, int(request.path_params["incident_id"]))
        if not await crisis.can_work_on(session, request.state.principal, incident, pending_too=True):
            raise crisis.NotYourTeam(_("Only the team on this incident or a dispatcher can see it."))
        view = await _incident_view(request, session, incident)
        await session.commit()
    view.update({"kinds": kind_labels(), "labels": status_labels(), "created": request.query_params.get("created")})
    return render(request, "crisis/incident.html", view)


async def incident_step(request: Request) -> Response:
    form = await request.form()
    svc = services(request)
    async with svc.sessions() as session:
        incident, works = await crisis.advance(session, svc, incident_id=int(request.path_params["incident_id"]),
                                               status=form.get("status") or "", principal=request.state.principal)
        await _commit_and_nudge(request, session, works)
    return RedirectResponse(f"/crisis/incidents/{incident.id}", status_code=303)


async def incident_note(request: Request) -> Response:
    form = await request.form()
    svc = services(request)
    incident_id = int(request.path_params["incident_id"])
    async with svc.sessions() as session:
        await crisis.add_case_note(session, svc, incident_id=incident_id, body=form.get("body") or "",
                                   principal=request.state.principal)
        await session.commit()
    return RedirectResponse(f"/crisis/incidents/{incident_id}", status_code=303)


async def api_incident_step(request: Request) -> Response:
    data = await read_json(request)
    svc = services(request)
    async with svc.sessions() as session:
        incident, works = await crisis.advance(session, svc, incident_id=int(request.path_params["incident_id"]),
                                               status=str(data.get("status") or ""), principal=request.state.principal)
        await _commit_and_nudge(request, session, works)
    return JSONResponse(incident_public(incident))


async def api_incident_note(request: Request) -> Response:
    data = await read_json(request)
    svc = services(request)
    async with svc.sessions() as session:
        note = await crisis.add_case_note(session, svc, incident_id=int(request.path_params["incident_id"]),
                                          body=str(data.get("body") or ""), principal=request.state.principal)
        await session.commit()
    return JSONResponse({"id": note.id, "created_at": note.created_at.isoformat()}, status_code=201)


# --- Offers --------------------------------------------------------------------------

def offer_json(offer: Offer, incident: Incident) -> dict:
    return {"id": offer.id, "status": offer.status, "incident": incident.id, "reference": incident.reference,
            "incident_status": incident.status, "deadline_at": offer.deadline_at.isoformat(),
            "broadcast": offer.broadcast}


async def _answer(request: Request, accept: bool):
    svc = services(request)
    offer_id = int(request.path_params["offer_id"])
    async with svc.sessions() as session:
        if accept:
            offer, incident, works = await crisis.accept_offer(session, svc, offer_id=offer_id,
                                                               principal=request.state.principal)
        else:
            offer, works = await crisis.decline_offer(session, svc, offer_id=offer_id, principal=request.state.principal)
            incident = await session.get(Incident, offer.incident_id)
        await _commit_and_nudge(request, session, works)
    return offer, incident


async def api_accept(request: Request) -> Response:
    offer, incident = await _answer(request, True)
    return JSONResponse(offer_json(offer, incident))


async def api_decline(request: Request) -> Response:
    offer, incident = await _answer(request, False)
    return JSONResponse(offer_json(offer, incident))


async def offer_accept(request: Request) -> Response:
    offer, incident = await _answer(request, True)
    return RedirectResponse(f"/crisis/incidents/{incident.id}", status_code=303)


async def offer_decline(request: Request) -> Response:
    await _answer(request, False)
    return RedirectResponse("/crisis/team", status_code=303)


async def api_offer(request: Request) -> Response:
    svc = services(request)
    async with svc.sessions() as session:
        offer, incident = await crisis._load_offer(session, int(request.path_params["offer_id"]), request.state.principal)
        body = offer_json(offer, incident)
        body.update({"kind": incident.kind, "language": incident.language, "area": incident.area,
                     "distance_km": offer.distance_km})
        if offer.status in (OfferStatus.pending, OfferStatus.accepted):
            point = crisis.incident_point(svc, incident)
            body["location"] = {"lat": point[0], "lon": point[1]} if point else None
            await audit.record(session, action="offer.read", actor=request.state.principal.user, target_type="offer",
                               target_id=offer.id)
            await session.commit()
    return JSONResponse(body)


async def offer_page(request: Request) -> Response:
    async with services(request).reader() as session:
        offer, incident = await crisis._load_offer(session, int(request.path_params["offer_id"]), request.state.principal)
    return render(request, "crisis/offer.html", {"offer": offer, "incident": incident, "kinds": kind_labels(),
                                                 "offer_labels": offer_status_labels(),
                                                 "seconds_left": max(0, int((offer.deadline_at - utcnow()).total_seconds()))})


# --- Team app -------------------------------------------------------------------------

async def my_teams(session, user_id: int) -> list[Team]:
    return list((await session.execute(select(Team).join(TeamMember, TeamMember.team_id == Team.id)
                                       .where(TeamMember.user_id == user_id).order_by(Team.name))).scalars())


async def team_app(request: Request) -> Response:
    principal = request.state.principal
    async with services(request).reader() as session:
        teams = await my_teams(session, principal.user.id)
        team_ids = [t.id for t in teams] or [-1]
        offers = list((await session.execute(select(Offer, Incident).join(Incident, Incident.id == Offer.incident_id)
                                             .where(Offer.team_id.in_(team_ids), Offer.status == OfferStatus.pending)
                                             .order_by(Offer.created_at.desc()))).all())
        active = list((await session.execute(select(Incident).join(Offer, Offer.incident_id == Incident.id)
                                             .where(Offer.team_id.in_(team_ids), Offer.status == OfferStatus.accepted,
                                                    Incident.status.in_(OPEN_STATUSES)))).scalars())
    return render(request, "crisis/team.html", {"teams": teams, "offers": offers, "active": active,
                                                "kinds": kind_labels(), "labels": status_labels(), "now": utcnow(),
                                                "team_labels": team_status_labels()})


async def api_my_offers(request: Request) -> Response:
    async with services(request).reader() as session:
        teams = await my_teams(session, request.state.principal.user.id)
        rows = (await session.execute(select(Offer, Incident).join(Incident, Incident.id == Offer.incident_id)
                                      .where(Offer.team_id.in_([t.id for t in teams] or [-1]),
                                             Offer.status == OfferStatus.pending))).all()
    return JSONResponse({"offers": [offer_json(o, i) for o, i in rows]})


async def team_availability_form(request: Request) -> Response:
    form = await request.form()
    async with services(request).sessions() as session:
        await crisis.set_availability(session, team_id=int(request.path_params["team_id"]),
                                      status=form.get("status") or "", principal=request.state.principal)
        await session.commit()
    return RedirectResponse("/crisis/team", status_code=303)


def team_json(team: Team, branch_code: str | None = None) -> dict:
    return {"id": team.id, "name": team.name, "branch": branch_code, "status": team.status,
            "base": {"lat": team.base_lat, "lon": team.base_lon}, "skills": team.skills.split(),
            "languages": team.languages.split()}


async def api_availability(request: Request) -> Response:
    data = await read_json(request)
    async with services(request).sessions() as session:
        team = await crisis.set_availability(session, team_id=int(request.path_params["team_id"]),
                                             status=str(data.get("status") or ""), principal=request.state.principal)
        await session.commit()
    return JSONResponse(team_json(team))


async def api_location(request: Request) -> Response:
    data = await read_json(request)
    async with services(request).sessions() as session:
        team = await crisis.set_location(session, team_id=int(request.path_params["team_id"]), lat=data.get("lat"),
                                         lon=data.get("lon"), principal=request.state.principal)
        await session.commit()
    return JSONResponse({"id": team.id, "live": {"lat": team.live_lat, "lon": team.live_lon,
                                                 "at": team.live_at.isoformat()}})


async def api_create_team(request: Request) -> Response:
    data = await read_json(request)
    base = data.get("base") if isinstance(data.get("base"), dict) else {}
    members = data.get("members") or []
    skills = data.get("skills") or []
    languages = data.get("languages") or []
    if not all(isinstance(x, list) for x in (members, skills, languages)):
        raise InvalidInput(_("skills, languages and members must be lists."))
    usernames, phones = [], {}
    for m in members:
        if isinstance(m, dict):  # {"username", "phone"}: a phone for SMS alerts when push fails
            usernames.append(str(m.get("username") or ""))
            if m.get("phone"):
                phones[str(m.get("username")).lower()] = str(m["phone"])
        else:
            usernames.append(str(m))
    new = crisis.NewTeam(name=str(data.get("name") or ""), branch=str(data.get("branch") or ""),
                         base_lat=base.get("lat"), base_lon=base.get("lon"), skills=[str(s) for s in skills],
                         languages=[str(lang) for lang in languages], members=usernames,
                         status=str(data.get("status") or TeamStatus.available))
    svc = services(request)
    async with svc.sessions() as session:
        team = await crisis.create_team(session, data=new, principal=request.state.principal)
        if phones:
            await crisis.set_member_phones(session, svc, team=team, phones=phones)
        code = (await session.get(Branch, team.branch_id)).code
        await session.commit()
    body = team_json(team, code)
    body["members"] = [u.lower() for u in usernames]
    return JSONResponse(body, status_code=201)


async def api_teams(request: Request) -> Response:
    async with services(request).reader() as session:
        teams = list((await session.execute(select(Team).order_by(Team.name))).scalars())
        codes = dict((await session.execute(select(Branch.id, Branch.code))).all())
    return JSONResponse({"teams": [team_json(t, codes.get(t.branch_id)) for t in teams]})


# --- Push -------------------------------------------------------------------------------

async def api_vapid_key(request: Request) -> Response:
    from crisis.push import vapid_public_key

    return JSONResponse({"key": vapid_public_key(services(request).extras["vapid"])})


async def api_subscribe(request: Request) -> Response:
    data = await read_json(request)
    keys = data.get("keys") if isinstance(data.get("keys"), dict) else {}
    svc = services(request)
    async with svc.sessions() as session:
        sub = await crisis.subscribe_push(session, principal=request.state.principal, endpoint=data.get("endpoint"),
                                          p256dh=keys.get("p256dh"), auth=keys.get("auth"),
                                          allow_local=svc.settings.push_allow_local_endpoints)
        await session.commit()
    return JSONResponse({"id": sub.id}, status_code=201)


async def api_unsubscribe(request: Request) -> Response:
    data = await read_json(request)
    async with services(request).sessions() as session:
        sub = (await session.execute(select(PushSubscription).where(
            PushSubscription.endpoint == str(data.get("endpoint") or ""),
            PushSubscription.user_id == request.state.principal.user.id))).scalar_one_or_none()
        if sub is not None:
            await session.delete(sub)
            await session.commit()
    return Response(status_code=204)


async def service_worker(request: Request) -> Response:
    return FileResponse(STATIC / "sw.js", media_type="text/javascript",
                        headers={"Service-Worker-Allowed": "/", "Cache-Control": "no-cache"})


async def manifest(request: Request) -> Response:
    return JSONResponse({
        "name": "Sangha", "short_name": "Sangha", "start_url": "/crisis/team", "scope": "/", "display": "standalone",
        "background_color": "#faf7f2", "theme_color": "#6a1b5a",
        "icons": [{"src": "/static/crisis/icon-192.png", "sizes": "192x192", "type": "image/png"},
                  {"src": "/static/crisis/icon-512.png", "sizes": "512x512", "type": "image/png"}],
    }, media_type="application/manifest+json")


# --- Twilio-format webhooks --------------------------------------------------------------

def _twiml(message: str | None = None, *, say: str | None = None) -> Response:
    inner = ""
    if message:
        inner = f"<Message>{xml_escape(message)}</Message>"
    if say:
        inner = f"<Say>{xml_escape(say)}</Say>"
    return Response(f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>',
                    media_type="application/xml")


async def _verified_params(request: Request) -> dict[str, str] | None:
    svc = services(request)
    form = await request.form()
    params = {k: str(v) for k, v in form.items()}
    # Behind a proxy, base_url is the address Twilio signed.
    url = svc.settings.base_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    if not valid_twilio_signature(url, params, svc.settings.sms_auth_token, request.headers.get("x-twilio-signature")):
        return None
    return params


def _caller_number(raw: str | None) -> str | None:
    """The caller's number, or None when it is withheld ("anonymous", "private", "+266696687"...):
    a call or message from a hidden number must still become an incident."""
    from union.crypto import normalise_phone

    try:
        return normalise_phone(raw) if raw else None
    except ValueError:
        return None


async def twilio_sms(request: Request) -> Response:
    params = await _verified_params(request)
    if params is None:
        return Response("invalid signature", status_code=403)
    body = (params.get("Body") or "").strip()
    words = body.split(None, 1)
    if not words or words[0].upper() not in ("HELP", "SOS", "ಸಹಾಯ", "मदद"):
        return _twiml(_("Send HELP and your area, for example: HELP Koramangala"))
    area = words[1] if len(words) > 1 else ""
    svc = services(request)
    # The language is unknown from an SMS; most callers speak Kannada and the dispatcher calls back.
    intake = crisis.Intake(kind=IncidentKind.other, language="kn", area=area or None,
                           callback_phone=_caller_number(params.get("From")), source="sms")
    async with svc.sessions() as session:
        incident, _token, works = await crisis.create_incident(session, svc, intake=intake)
        await _commit_and_nudge(request, session, works)
    return _twiml(_("Sangha: we got your request %(ref)s. A team is being found. Stay safe.", ref=incident.reference))


async def twilio_voice(request: Request) -> Response:
    params = await _verified_params(request)
    if params is None:
        return Response("invalid signature", status_code=403)
    svc = services(request)
    intake = crisis.Intake(kind=IncidentKind.other, language="kn", callback_phone=_caller_number(params.get("From")),
                           source="voice")
    async with svc.sessions() as session:
        incident, _token, works = await crisis.create_incident(session, svc, intake=intake)
        await _commit_and_nudge(request, session, works)
    return _twiml(say=_("Sangha crisis line. We have your number and a dispatcher will call you back now. Stay safe."))
