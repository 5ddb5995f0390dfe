"""The audit log: the database refuses UPDATE and DELETE, and when someone with
database access gets round that (drops or disables the trigger), `union audit
verify` and verify_chain find the change and name the event where the chain
breaks."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from tests.conftest import run_cli
from union import audit
from union.models import AuditEvent, AuditHead

EVENTS = 6


def cli_env(settings) -> dict:
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "UNION_DATABASE_URL": settings.database_url,
            "UNION_DATA_DIR": str(settings.data_dir), "UNION_SECRET_KEY": settings.secret_key,
            "UNION_HASH_KEY": settings.hash_key, "UNION_ENCRYPTION_KEYS": settings.encryption_keys or "",
            "UNION_REDIS_URL": "", "UNION_LOG_LEVEL": "WARNING"}


@pytest.fixture
async def chain(services) -> list[int]:
    """Several audited events, each in its own transaction; returns their ids."""
    ids = []
    for i in range(EVENTS):
        async with services.sessions() as db:
            event = await audit.record(db, action="member.read_sensitive", target_type="member",
                                       target_id=f"BLR-{i:05d}", detail={"n": i, "note": "ಕನ್ನಡ"})
            await db.commit()
            ids.append(event.id)
    return ids


async def verify(services) -> audit.ChainReport:
    async with services.sessions() as db:
        return await audit.verify_chain(db)


async def as_attacker(services, *statements: tuple[str, dict]) -> None:
    """What someone with database access can do: switch the append-only triggers off, then write."""
    async with services.engine.connect() as conn:
        if services.settings.is_sqlite:
            await conn.execute(text("DROP TRIGGER IF EXISTS auditevent_no_update"))
            await conn.execute(text("DROP TRIGGER IF EXISTS auditevent_no_delete"))
        else:
            await conn.execute(text("ALTER TABLE auditevent DISABLE TRIGGER USER"))
        for sql, params in statements:
            await conn.execute(text(sql), params)
        await conn.commit()


async def test_intact_chain_verifies(chain, services, settings):
    report = await verify(services)
    assert report.intact and report.checked == EVENTS and report.broken_id is None
    r = run_cli("audit", "verify", env=cli_env(settings))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Audit log intact: {EVENTS} events checked." in r.stdout
    async with services.sessions() as db:
        head = (await db.execute(select(AuditHead))).scalar_one()
        last = (await db.execute(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1))).scalar_one()
    assert (head.last_id, head.last_hash) == (chain[-1], last.hash)


async def test_empty_chain_is_intact(services):
    report = await verify(services)
    assert report.intact and report.checked == 0


async def test_altered_event_is_detected_and_named(chain, services, settings):
    victim = chain[2]
    await as_attacker(services, ("UPDATE auditevent SET target_id = :t WHERE id = :id",
                                 {"t": "BLR-99999", "id": victim}))
    report = await verify(services)
    assert not report.intact
    assert report.broken_id == victim and report.checked == 2
    assert "altered" in report.reason

    r = run_cli("audit", "verify", env=cli_env(settings))
    assert r.returncode == 1
    assert f"Audit log BROKEN at event {victim}:" in r.stdout


@pytest.mark.parametrize("column,value", [("detail", '{"n":99}'), ("actor", "someone"), ("action", "user.create"),
                                          ("at", "2020-01-01 00:00:00.000000")])
async def test_any_altered_column_is_detected(column, value, chain, services):
    victim = chain[3]
    if column == "at" and not services.settings.is_sqlite:
        value = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    await as_attacker(services, (f"UPDATE auditevent SET {column} = :v WHERE id = :id", {"v": value, "id": victim}))
    report = await verify(services)
    assert report.broken_id == victim


async def test_rehashed_alteration_breaks_the_next_link(chain, services):
    """Recomputing the altered event's own hash does not help: the next event still points at the old one."""
    victim = chain[1]
    async with services.sessions() as db:
        event = await db.get(AuditEvent, victim)
        forged = audit.event_hash(prev_hash=event.prev_hash, at=event.at, actor_user_id=event.actor_user_id,
                                  actor=event.actor, action=event.action, target_type=event.target_type,
                                  target_id="MYS-00001", detail=event.detail)
    await as_attacker(services, ("UPDATE auditevent SET target_id = 'MYS-00001', hash = :h WHERE id = :id",
                                 {"h": forged, "id": victim}))
    report = await verify(services)
    assert report.broken_id == chain[2]
    assert "previous-hash link" in report.reason


async def test_deleted_middle_event_is_detected(chain, services):
    await as_attacker(services, ("DELETE FROM auditevent WHERE id = :id", {"id": chain[3]}))
    report = await verify(services)
    # The event after the gap no longer links to its predecessor.
    assert report.broken_id == chain[4]
    assert report.checked == 3 and "removed or altered" in report.reason


async def test_deleted_last_event_is_detected(chain, services, settings):
    await as_attacker(services, ("DELETE FROM auditevent WHERE id = :id", {"id": chain[-1]}))
    report = await verify(services)
    assert report.broken_id == chain[-1]
    assert report.checked == EVENTS - 1 and "missing" in report.reason
    r = run_cli("audit", "verify", env=cli_env(settings))
    assert r.returncode == 1
    assert f"Audit log BROKEN at event {chain[-1]}:" in r.stdout


async def test_deleted_first_event_is_detected(chain, services):
    await as_attacker(services, ("DELETE FROM auditevent WHERE id = :id", {"id": chain[0]}))
    report = await verify(services)
    assert report.broken_id == chain[1]


@pytest.mark.parametrize("sql", ["UPDATE auditevent SET detail = '{}'",
                                 "UPDATE auditevent SET actor = 'x' WHERE id = :first",
                                 "DELETE FROM auditevent WHERE id = :first",
                                 "DELETE FROM auditevent"])
async def test_plain_update_and_delete_are_refused_by_the_database(sql, chain, services):
    before = await _rows(services)
    with pytest.raises(DBAPIError) as refused:
        async with services.engine.connect() as conn:
            await conn.execute(text(sql), {"first": chain[0]} if ":first" in sql else {})
            await conn.commit()
    assert "auditevent is append-only" in str(refused.value)
    assert await _rows(services) == before
    assert (await verify(services)).intact


async def test_emptying_the_table_is_refused(chain, services, backend):
    # SQLite has no TRUNCATE; its equivalent is a DELETE without WHERE.
    sql = "TRUNCATE auditevent" if backend == "postgresql" else "DELETE FROM auditevent"
    with pytest.raises(DBAPIError) as refused:
        async with services.engine.connect() as conn:
            await conn.execute(text(sql))
            await conn.commit()
    assert "auditevent is append-only" in str(refused.value)
    assert len(await _rows(services)) == EVENTS


async def _rows(services) -> list[tuple]:
    async with services.engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text("SELECT * FROM auditevent ORDER BY id"))).all()]


async def test_concurrent_appends_never_fork_the_chain(services):
    """Appends lock the head row: writers in parallel still make one straight chain."""
    import asyncio

    async def write(i):
        async with services.sessions() as db:
            await audit.record(db, action="test.parallel", target_id=str(i))
            await db.commit()

    await asyncio.gather(*(write(i) for i in range(8)))
    report = await verify(services)
    assert report.intact and report.checked == 8


async def test_unreadable_value_is_named_not_a_crash(chain, services, settings, backend):
    """A timestamp overwritten with garbage (possible on SQLite, whose columns take any text) is reported
    at its event like any other change, not as a traceback."""
    victim = chain[4]
    if backend == "sqlite":
        await as_attacker(services, ("UPDATE auditevent SET at = 'not a time' WHERE id = :id", {"id": victim}))
    else:  # PostgreSQL keeps a timestamp a timestamp; the nearest attack is a shifted one
        await as_attacker(services, ("UPDATE auditevent SET at = at + interval '1 microsecond' WHERE id = :id",
                                     {"id": victim}))
    report = await verify(services)
    assert report.broken_id == victim and not report.intact
    r = run_cli("audit", "verify", env=cli_env(settings))
    assert r.returncode == 1 and f"Audit log BROKEN at event {victim}:" in r.stdout
    assert "Traceback" not in r.stderr
