"""Demo data for crisis response: teams across the demo branches (members who
can log in, skills and languages), and a few weeks of past incidents with the
time of every step, so the board and reports are not empty."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select

from crisis import places
from crisis.models import Incident, IncidentKind, IncidentStatus, Offer, OfferStatus, Team, TeamMember, TeamStatus
from union import accounts
from union.crypto import hash_secret, token_digest
from union.demo import DEMO_STEPS
from union.models import Branch, Role, User, utcnow

SKILL_SETS = [
    ["police_station", "legal"], ["police_station", "counselling", "trans_led"], ["medical", "counselling"],
    ["gatekeeper", "police_station"], ["legal", "gatekeeper", "counselling"], ["medical", "police_station"],
]
BRANCH_LANGUAGES = {"BLR": ["kn", "ta", "te", "ur", "hi"], "MYS": ["kn", "ta"], "BGM": ["kn", "mr"], "BLY": ["kn", "te"],
                    "KLB": ["kn", "ur", "mr"], "DWD": ["kn", "mr"], "MNG": ["kn", "ur"], "SMG": ["kn"], "TMK": ["kn", "te"],
                    "VJP": ["kn", "mr", "ur"], "DVG": ["kn"], "RCR": ["kn", "te", "ur"], "HSN": ["kn"], "UDP": ["kn"],
                    "CTA": ["kn", "te"], "BDR": ["kn", "mr", "ur", "hi"]}


async def load_crisis_demo(services, rng, say) -> None:
    async with services.sessions() as session:
        if (await session.execute(select(Team.id).limit(1))).first():
            return
        branches = list((await session.execute(select(Branch).order_by(Branch.id))).scalars())
        password = secrets.token_urlsafe(9)
        password_hash = hash_secret(password)  # one hash for every demo responder
        existing = (await session.execute(select(User).where(User.username == "demo-responder"))).scalar_one_or_none()
        team_count = 0
        for branch in branches:
            langs = BRANCH_LANGUAGES.get(branch.code, ["kn"])
            for n in range(1, (4 if branch.code == "BLR" else 2) + 1):
                team_count += 1
                # Bases spread around the district headquarters, about 1 to 8 km away.
                lat = branch.lat + rng.uniform(-0.07, 0.07)
                lon = branch.lon + rng.uniform(-0.07, 0.07)
                team = Team(name=f"{branch.name} {n}", branch_id=branch.id, base_lat=lat, base_lon=lon,
                            status=TeamStatus.available if rng.random() < 0.8 else TeamStatus.off_duty,
                            skills=" ".join(sorted(SKILL_SETS[(team_count - 1) % len(SKILL_SETS)])),
                            languages=" ".join(sorted(set(["kn"] + rng.sample(langs, k=min(2, len(langs)))))))
                session.add(team)
                await session.flush()
                members = []
                if branch.code == "BLR" and n == 1 and existing is not None:
                    members.append(existing)
                while len(members) < 2:
                    user = await accounts.create_user(
                        session, username=f"demo-r-{branch.code.lower()}{n}{chr(96 + len(members) + 1)}",
                        password=None, password_hash=password_hash, roles=[Role.crisis_responder],
                        branch_code=branch.code, display_name=f"Responder {branch.code} {n}")
                    members.append(user)
                for user in members:
                    session.add(TeamMember(team_id=team.id, user_id=user.id))
        await session.commit()
        say(f"Crisis teams: {team_count} across {len(branches)} branches "
            f"(every demo-r-… responder has password {password}).")
        await _past_incidents(session, services, rng, branches)
        await session.commit()
    path = services.settings.data_dir / "demo-credentials.txt"
    with path.open("a") as fh:
        fh.write(f"demo-r-blr1b      {password:<14} crisis_responder (and every other demo-r-… user)\n")


async def _past_incidents(session, services, rng, branches) -> None:
    teams = list((await session.execute(select(Team))).scalars())
    by_branch: dict[int, list[Team]] = {}
    for team in teams:
        by_branch.setdefault(team.branch_id, []).append(team)
    now = utcnow()
    kinds = [IncidentKind.police] * 5 + [IncidentKind.client_violence] * 3 + [
        IncidentKind.hired_criminals, IncidentKind.gatekeeper, IncidentKind.gatekeeper, IncidentKind.eviction,
        IncidentKind.medical, IncidentKind.medical, IncidentKind.other]
    gazetteer = [p for _, _, p in places.gazetteer()[0]]
    count = 0
    for _ in range(40):
        branch = rng.choices(branches, weights=[30 if b.code == "BLR" else 5 for b in branches])[0]
        near = [p for p in gazetteer if abs(p.lat - branch.lat) < 0.15 and abs(p.lon - branch.lon) < 0.15]
        place = rng.choice(near) if near else None
        created = now - dt.timedelta(days=rng.uniform(1, 60), minutes=rng.uniform(0, 600))
        offered = created + dt.timedelta(seconds=rng.uniform(1, 4))
        accepted = offered + dt.timedelta(seconds=rng.uniform(8, 55))
        en_route = accepted + dt.timedelta(seconds=rng.uniform(30, 180))
        on_scene = en_route + dt.timedelta(minutes=rng.uniform(6, 35))
        resolved = on_scene + dt.timedelta(minutes=rng.uniform(20, 180))
        cancelled = rng.random() < 0.1
        old = (now - resolved).days >= services.settings.retention_days
        incident = Incident(
            reference="H" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(7)),
            status_token_digest=token_digest(secrets.token_urlsafe(18)), kind=rng.choice(kinds),
            language=rng.choice(BRANCH_LANGUAGES.get(branch.code, ["kn"])), source=rng.choice(["web", "hotline", "hotline", "sms"]),
            branch_id=branch.id, area=place.label if place else branch.name,
            lat_enc=None if old or not place else services.vault.encrypt(repr(place.lat)),
            lon_enc=None if old or not place else services.vault.encrypt(repr(place.lon)),
            status=IncidentStatus.cancelled if cancelled else IncidentStatus.resolved,
            created_at=created, offered_at=offered, accepted_at=None if cancelled else accepted,
            en_route_at=None if cancelled else en_route, on_scene_at=None if cancelled else on_scene,
            resolved_at=None if cancelled else resolved, cancelled_at=offered if cancelled else None,
            purged_at=resolved + dt.timedelta(days=services.settings.retention_days) if old else None)
        session.add(incident)
        await session.flush()
        team = rng.choice(by_branch.get(branch.id) or teams)
        session.add(Offer(incident_id=incident.id, team_id=team.id, created_at=offered,
                          deadline_at=offered + dt.timedelta(seconds=services.settings.ack_timeout_seconds),
                          status=OfferStatus.withdrawn if cancelled else OfferStatus.accepted,
                          answered_at=offered if cancelled else accepted))
        count += 1
    return count


DEMO_STEPS.append(load_crisis_demo)
