"""Crisis fixtures: teams placed at known distances north of central Bengaluru,
each with its own crisis_responder user(s) and API tokens; push subscriptions;
a recording push sender for tests that run due work; small row loaders."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import secrets
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select

from crisis import services as crisis
from crisis.models import DispatchDecision, Incident, Offer, PushSubscription, Team
from crisis.push import RecordingPushSender
from union import accounts
from union.models import DueWork, User

HERE = (12.9716, 77.5946)  # central Bengaluru (the BLR branch)
KM_PER_DEG = 111.19508
ALL_SKILLS = ("counselling", "gatekeeper", "legal", "medical", "police_station", "trans_led")


def at_km(km: float, origin: tuple[float, float] = HERE) -> tuple[float, float]:
    """A point `km` due north of `origin`."""
    return origin[0] + km / KM_PER_DEG, origin[1]


def intake(kind: str = "other", language: str = "kn", km: float = 0.0, **kw) -> crisis.Intake:
    lat, lon = at_km(km)
    return crisis.Intake(kind=kind, language=language, lat=lat, lon=lon, **kw)


@dataclass
class TeamInfo:
    id: int
    name: str
    users: list = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    @property
    def user(self):
        return self.users[0]

    @property
    def token(self) -> str:
        return self.tokens[0]


@pytest.fixture
async def make_team(services, branches, make_user, make_token):
    """make_team(name, km=..., skills=..., languages=..., status=..., members=1, tokens=True) -> TeamInfo."""
    counter = itertools.count(1)

    async def make(name: str | None = None, *, km: float = 1.0, skills=ALL_SKILLS, languages=("kn",),
                   status: str = "available", members: int = 1, tokens: bool = True, branch: str = "BLR",
                   base: tuple[float, float] | None = None) -> TeamInfo:
        name = name or f"team{next(counter)}"
        users, raw_tokens = [], []
        for i in range(members):
            user = await make_user(f"{'-'.join(name.lower().split())}-r{i + 1}", ["crisis_responder"], branch)
            users.append(user)
            if tokens:
                raw_tokens.append(await make_token(user))
        lat, lon = base or at_km(km)
        async with services.sessions() as db:
            team = await crisis.create_team(db, data=crisis.NewTeam(
                name=name, branch=branch, base_lat=lat, base_lon=lon, skills=list(skills),
                languages=list(languages), members=[u.username for u in users], status=status), principal=None)
            await db.commit()
        return TeamInfo(team.id, name, users, raw_tokens)

    return make


@pytest.fixture
def recorded_push(services) -> RecordingPushSender:
    """Replace the push sender so running due work sends nothing over the network."""
    sender = RecordingPushSender()
    services.extras["push"] = sender
    return sender


async def subscribe(services, user, n: int = 1) -> list[int]:
    """Give `user` n push subscriptions (devices); returns their ids."""
    ids = []
    async with services.sessions() as db:
        for _ in range(n):
            sub = PushSubscription(user_id=user.id, endpoint=f"https://push.example.org/{secrets.token_hex(8)}",
                                   p256dh="B" * 87, auth="a" * 22)
            db.add(sub)
            await db.flush()
            ids.append(sub.id)
        await db.commit()
    return ids


async def principal(services, user):
    async with services.sessions() as db:
        fresh = await db.get(User, user.id)
        return await accounts.principal_for(db, fresh, "token")


async def create(services, data: crisis.Intake, *, now: dt.datetime | None = None):
    """Create and dispatch an incident in its own committed transaction; returns (incident, token)."""
    async with services.sessions() as db:
        incident, token, _works = await crisis.create_incident(db, services, intake=data, now=now)
        await db.commit()
    return incident, token


async def rows(services, model, *where, order_by=None) -> list:
    async with services.sessions() as db:
        stmt = select(model).where(*where)
        stmt = stmt.order_by(order_by if order_by is not None else model.id)
        return list((await db.execute(stmt)).scalars())


async def one(services, model, ident):
    async with services.sessions() as db:
        return await db.get(model, ident)


async def incident_by_ref(services, reference: str) -> Incident:
    (found,) = await rows(services, Incident, Incident.reference == reference)
    return found


async def offers_of(services, incident_id: int) -> list[Offer]:
    return await rows(services, Offer, Offer.incident_id == incident_id)


async def team_row(services, team_id: int) -> Team:
    return await one(services, Team, team_id)


async def decisions_of(services, incident_id: int) -> list[tuple[DispatchDecision, dict]]:
    found = await rows(services, DispatchDecision, DispatchDecision.incident_id == incident_id)
    return [(d, json.loads(d.detail)) for d in found]


async def due_rows(services, *, kind: str | None = None, key_prefix: str | None = None) -> list[DueWork]:
    where = []
    if kind:
        where.append(DueWork.kind == kind)
    if key_prefix:
        where.append(DueWork.key.startswith(key_prefix))
    return await rows(services, DueWork, *where)


async def backdate_due(services, *where, to: dt.datetime | None = None) -> None:
    """Move matching due-work rows into the past, as if their time had come."""
    from sqlalchemy import update

    from union.models import utcnow

    async with services.sessions() as db:
        await db.execute(update(DueWork).where(*where).values(due_at=to or utcnow() - dt.timedelta(seconds=1)))
        await db.commit()
