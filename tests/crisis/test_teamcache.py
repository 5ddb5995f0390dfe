"""The in-memory team table of dispatch (crisis/teamcache.py): the database's
stamps (SQLite: a counter; PostgreSQL: the writer's transaction id) keep it exact
whoever changes teams, also with a second writer whose transaction is open while
the copy is read, uncommitted changes never enter the shared copy, and its
decisions equal rank_teams over the box query's teams."""

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


async def test_wired_on_both_databases(services, backend):
    assert isinstance(services.extras["team_cache"], TeamCache)


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
    assert cache.teams[near.id].status == "busy"
    assert (cache.version > version) if backend == "sqlite" else cache.snapshot is not None
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
    cache = services.extras["team_cache"]
    async with services.reader() as db:
        await cache.refresh(db, committed_only=True)
    assert cache.teams[first.id].status == "offered" and cache.teams[second.id].status == "offered"


async def test_a_second_writer_committing_later_is_seen(services, backend, make_team):
    """A writer whose transaction is open while the copy is read, and commits after: the next refresh
    finds its change. On PostgreSQL also two writers committing in the opposite order of their start
    (what would make a counter miss a change)."""
    one = await make_team("one", km=1)
    two = await make_team("two", km=2)
    cache = TeamCache()
    async with services.reader() as db:
        await cache.refresh(db, committed_only=True)
    async with services.sessions() as writer:
        await writer.execute(update(Team).where(Team.id == one.id).values(status="off_duty"))
        async with services.reader() as db:
            await cache.refresh(db, committed_only=True)
        assert cache.teams[one.id].status == "available"
        await writer.commit()
    async with services.reader() as db:
        await cache.refresh(db, committed_only=True)
    assert cache.teams[one.id].status == "off_duty"
    if backend == "sqlite":
        return  # one writer at a time: nothing commits out of order
    async with services.sessions() as first, services.sessions() as second:
        await first.execute(update(Team).where(Team.id == one.id).values(status="available"))
        await second.execute(update(Team).where(Team.id == two.id).values(status="busy"))
        await second.commit()
        async with services.reader() as db:
            await cache.refresh(db, committed_only=True)
        assert cache.teams[two.id].status == "busy" and cache.teams[one.id].status == "off_duty"
        await first.commit()
    async with services.reader() as db:
        a = await crisis.rank_for(db, type("Svc", (), {"settings": services.settings,
                                                        "extras": {"team_cache": cache}})(),
                                  lat=at_km(0)[0], lon=at_km(0)[1], kind="other", language="kn", exclude=set(),
                                  now=utcnow(), committed_only=True)
    assert cache.teams[one.id].status == "available" and [c.team.id for c in a.ordered] == [one.id]


async def test_own_later_changes_are_seen(services, backend, make_team):
    """A transaction refreshes the shared copy before it changes teams (intake ranks first, reserves
    after): its own change, committed later, is still found by the next refresh."""
    one = await make_team("one", km=1)
    cache = TeamCache()
    async with services.sessions() as db:
        if backend != "sqlite":
            await db.execute(text("SELECT pg_current_xact_id()"))  # the transaction has its id already
            async with services.sessions() as later:  # and a later one commits before the refresh
                await later.execute(text("SELECT pg_current_xact_id()"))
                await later.commit()
        await cache.refresh(db, committed_only=True)
        await db.execute(update(Team).where(Team.id == one.id).values(status="off_duty"))
        await db.commit()
    async with services.reader() as db:
        await cache.refresh(db, committed_only=True)
    assert cache.teams[one.id].status == "off_duty"


def test_rank_equals_rank_teams_over_the_box():
    """The copy's own ranking gives exactly rank_teams over the teams the box query would return: order,
    distances, positions, steps and passed-over reasons, with exclusions, stale and fresh live positions,
    teams in two cells, and an overlay of uncommitted changes."""
    import datetime as dt
    import random

    from crisis.dispatch import TeamView, rank_teams

    rng = random.Random(7)
    now = utcnow()
    stale = dt.timedelta(seconds=300)
    skills = ("police_station", "legal", "medical", "counselling", "gatekeeper", "trans_led")
    langs = ("kn", "te", "ta", "hi", "en")
    kinds = ("police", "client_violence", "hired_criminals", "gatekeeper", "eviction", "medical", "other")

    def team(i: int) -> TeamView:
        lat, lon = HERE[0] + rng.gauss(0, 0.25), HERE[1] + rng.gauss(0, 0.25)
        live = rng.random() < 0.4
        return TeamView(i, f"T{i}", rng.choice(["available"] * 5 + ["busy", "offered", "off_duty"]), lat, lon,
                        lat + rng.gauss(0, 0.2) if live else None, lon + rng.gauss(0, 0.2) if live else None,
                        now - dt.timedelta(seconds=rng.choice([0, 299, 300, 301, 900])) if live else None,
                        frozenset(rng.sample(skills, rng.randint(0, 4))), frozenset(rng.sample(langs, rng.randint(1, 2))))

    cache = TeamCache()
    teams = [team(i) for i in range(1, 1500)]
    for t in teams:
        cache._put(t)
    compared = 0
    for n in range(300):
        lat, lon = HERE[0] + rng.gauss(0, 0.3), HERE[1] + rng.gauss(0, 0.3)
        kind, language = rng.choice(kinds), rng.choice(langs)
        exclude = set(rng.sample(range(1, 1500), 40)) if n % 3 == 0 else set()
        overlay = {t.id: t for t in (team(rng.randint(1, 1499)) for _ in range(5))} if n % 4 == 0 else {}
        for radius in (5.0, 25.0, 60.0):
            expected = rank_teams(lat=lat, lon=lon, kind=kind, language=language,
                                  teams=cache.near(lat, lon, bounding_box(lat, lon, radius), overlay), now=now,
                                  stale_after=stale, radius_km=5.0, wide_radius_km=radius, exclude=exclude)
            got = cache.rank(lat=lat, lon=lon, kind=kind, language=language, now=now, stale_after=stale,
                             radius_km=5.0, wide_radius_km=radius, exclude=exclude, overlay=overlay)
            assert got.step == expected.step
            assert [(c.team.id, c.distance_km, c.position, c.language_match) for c in got.ordered] == \
                   [(c.team.id, c.distance_km, c.position, c.language_match) for c in expected.ordered]
            assert got.passed_over == expected.passed_over
            compared += bool(expected.ordered or expected.passed_over)
    assert compared > 500


async def test_two_copies_in_one_transaction(services, backend, make_team):
    """A second copy asking in a transaction where the first already asked loads on its own."""
    one = await make_team("one", km=1)
    first, second = TeamCache(), TeamCache()
    async with services.reader() as db:
        await first.refresh(db, committed_only=True)
        await second.refresh(db, committed_only=True)
        await first.refresh(db, committed_only=True)
    assert first.teams[one.id].status == second.teams[one.id].status == "available"
