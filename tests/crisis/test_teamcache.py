"""The in-memory team table of dispatch (crisis/teamcache.py, SQLite): the
database's stamps keep it exact whoever changes teams, uncommitted changes never
enter the shared copy, and its decisions equal the box query's."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, text, update

from crisis import services as crisis
from crisis.geo import bounding_box
from crisis.models import Team, TeamMember
from crisis.teamcache import TeamCache
from tests.crisis.conftest import HERE, at_km, intake
from union.models import utcnow

def ids(teams) -> list[int]:
    return [t.id for t in teams]


async def rank_both(services, cache, *, km: float, kind: str = "other", language: str = "kn"):
    """rank_for through the cache and through the box query, on one committed snapshot."""
    lat, lon = at_km(km)
    with_cache = type("Svc", (), {"settings": services.settings, "extras": {"team_cache": cache}})()
    without = type("Svc", (), {"settings": services.settings, "extras": {}})()
    async with services.reader() as db:
        a = await crisis.rank_for(db, with_cache, lat=lat, lon=lon, kind=kind, language=language, exclude=set(),
                                  now=utcnow(), committed_only=True)
        b = await crisis.rank_for(db, without, lat=lat, lon=lon, kind=kind, language=language, exclude=set(),
                                  now=utcnow())
    return a, b


def same(a, b) -> bool:
    key = lambda r: ([c.team.id for c in r.ordered], sorted((p["km"], p["team"], p["reason"]) for p in r.passed_over),
                     r.step)
    return key(a) == key(b)


async def test_wired_only_on_sqlite(services, backend):
    assert ("team_cache" in services.extras) == (backend == "sqlite")


# The team table is kept in memory on SQLite only (PostgreSQL uses the box query): SQLite runs only.
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_stamps_keep_the_copy_exact(services, backend, make_team):
    near = await make_team("near", km=1, skills=("medical",))
    far = await make_team("far", km=10)
    other = await make_team("other", km=3, status="off_duty")
    cache = TeamCache()
    a, b = await rank_both(services, cache, km=0)
    assert same(a, b) and [c.team.id for c in a.ordered] == [near.id, far.id]
    assert set(cache.teams) >= {near.id, far.id, other.id}
    version = cache.version

    # A change by plain SQL in another transaction (another process, the CLI): the database stamps it.
    async with services.sessions() as db:
        await db.execute(text("UPDATE team SET status = 'busy' WHERE id = :id"), {"id": near.id})
        await db.commit()
    a, b = await rank_both(services, cache, km=0)
    assert same(a, b) and [c.team.id for c in a.ordered] == [far.id]
    assert cache.version > version and cache.teams[near.id].status == "busy"
    assert any(p["team"] == near.id and p["reason"] == "not available (busy)" for p in a.passed_over)

    # A live position far from the base moves the team into another cell of the grid.
    lat, lon = HERE[0] + 1.0, HERE[1] + 1.0  # about 150 km away
    async with services.sessions() as db:
        await db.execute(update(Team).where(Team.id == far.id).values(live_lat=lat, live_lon=lon, live_at=utcnow()))
        await db.commit()
    async with services.reader() as db:
        await cache.refresh(db, committed_only=True)
    assert far.id in ids(cache.near(lat, lon, bounding_box(lat, lon, 5), {}))
    a, b = await rank_both(services, cache, km=0)
    assert same(a, b)

    # A deleted team moves the epoch: the copy is read again and forgets it.
    async with services.sessions() as db:
        await db.execute(delete(TeamMember).where(TeamMember.team_id == other.id))
        await db.execute(delete(Team).where(Team.id == other.id))
        await db.commit()
    async with services.reader() as db:
        await cache.refresh(db, committed_only=True)
    assert other.id not in cache.teams
    a, b = await rank_both(services, cache, km=0)
    assert same(a, b)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_uncommitted_changes_stay_private(services, backend, make_team):
    one = await make_team("one", km=1)
    two = await make_team("two", km=2)
    cache = TeamCache()
    async with services.reader() as db:
        await cache.refresh(db, committed_only=True)
    async with services.sessions() as db:
        await db.execute(update(Team).where(Team.id == one.id).values(status="off_duty"))
        overlay = await cache.refresh(db, committed_only=False)
        # This transaction sees its own change; the shared copy does not take it.
        assert overlay[one.id].status == "off_duty" and cache.teams[one.id].status == "available"
        assert "off_duty" in [t.status for t in cache.near(*at_km(0), bounding_box(*at_km(0), 25), overlay)]
        await db.rollback()
    # The rolled-back stamp is handed out again to the next change: the copy must still see that one.
    async with services.sessions() as db:
        await db.execute(update(Team).where(Team.id == two.id).values(status="busy"))
        await db.commit()
    async with services.reader() as db:
        await cache.refresh(db, committed_only=True)
    assert cache.teams[one.id].status == "available" and cache.teams[two.id].status == "busy"


async def test_intake_uses_and_updates_the_copy(services, backend, make_team, recorded_push):
    """End to end through create_incident: the second incident sees the first one's reservation."""
    first = await make_team("first", km=1)
    second = await make_team("second", km=2)
    refs = []
    for _ in range(3):
        async with services.sessions() as db:
            incident, _, works = await crisis.create_incident(db, services, intake=intake(km=0))
            await db.commit()
            refs.append(incident.id)
    async with services.reader() as db:
        teams = {t.id: t for t in (await db.execute(text("SELECT id, status, current_incident_id FROM team"))).all()}
    assert teams[first.id].status == "offered" and teams[first.id].current_incident_id == refs[0]
    assert teams[second.id].status == "offered" and teams[second.id].current_incident_id == refs[1]
    if backend == "sqlite":
        cache = services.extras["team_cache"]
        async with services.reader() as db:
            await cache.refresh(db, committed_only=True)
        assert cache.teams[first.id].status == "offered" and cache.teams[second.id].status == "offered"
