"""Migrations are the only way the schema is made: up to head, down to base and
up again on a fresh empty database (SQLite and PostgreSQL), and the migrated
schema is exactly what the SQLModel tables describe."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel

import workers.registry  # noqa: F401  (imports every domain's tables, like migrations/env.py)
from tests.conftest import need, pg_available, pg_exec, pg_url
from union.db import downgrade, migrate
from migrations.helpers import GENESIS


@pytest.fixture
def empty_database(backend, tmp_path):
    """A brand-new empty database (not the template copy)."""
    if backend == "sqlite":
        path = tmp_path / "fresh.db"
        assert not path.exists()
        yield f"sqlite+aiosqlite:///{path}"
        return
    need(pg_available(), "PostgreSQL on 127.0.0.1:5432")
    name = f"union_mig_{uuid.uuid4().hex[:12]}"
    pg_exec(f"CREATE DATABASE {name}")
    yield pg_url(name)
    pg_exec(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _run(url: str, fn):
    async def main():
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def tables(url: str) -> set[str]:
    return set(_run(url, lambda c: inspect(c).get_table_names()))


def triggers(url: str) -> set[str]:
    def read(c):
        if c.dialect.name == "sqlite":
            return {r[0] for r in c.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))}
        return {r[0] for r in c.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))}

    return _run(url, read)


def functions(url: str) -> set[str]:
    def read(c):
        if c.dialect.name == "sqlite":
            return set()
        return {r[0] for r in c.execute(text(
            "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"))}

    return _run(url, read)


def schema_differences(url: str) -> list:
    def compare(c):
        context = MigrationContext.configure(c, opts={"compare_type": True, "compare_server_default": False})
        return compare_metadata(context, SQLModel.metadata)

    return _run(url, compare)


def test_up_down_up_on_a_fresh_database(empty_database):
    url = empty_database
    assert tables(url) == set()
    expected = set(SQLModel.metadata.tables)
    assert {"member", "user_account", "auditevent", "audithead", "websession", "apitoken"} <= expected

    migrate(url)
    assert tables(url) == expected | {"alembic_version"}
    append_only = ({"auditevent_no_update", "auditevent_no_delete"} if url.startswith("sqlite")
                   else {"auditevent_no_change", "auditevent_no_truncate"})
    assert append_only <= triggers(url)
    head = _run(url, lambda c: c.execute(text("SELECT id, last_id, last_hash FROM audithead")).all())
    assert [tuple(r) for r in head] == [(1, 0, GENESIS)]
    assert schema_differences(url) == []

    downgrade(url, "base")
    assert tables(url) == {"alembic_version"}
    assert len(schema_differences(url)) >= len(expected)  # the comparison does see a missing table
    assert triggers(url) == set()
    assert not any(f.endswith("_append_only") for f in functions(url))
    assert _run(url, lambda c: c.execute(text("SELECT count(*) FROM alembic_version")).scalar_one()) == 0

    migrate(url)
    assert tables(url) == expected | {"alembic_version"}
    assert schema_differences(url) == []
    # Append-only again after the round trip.
    def refused(c):
        c.execute(text("INSERT INTO auditevent (at, actor, action, target_type, target_id, detail, prev_hash, hash) "
                       "VALUES (CURRENT_TIMESTAMP, '', 'x', '', '', '{}', '', '')"))
        try:
            c.execute(text("DELETE FROM auditevent"))
        except Exception as exc:  # noqa: BLE001 - the message is what matters
            return "append-only" in str(exc)
        return False

    assert _run(url, refused)


def test_migrating_twice_is_a_no_op(empty_database):
    url = empty_database
    migrate(url)
    before = tables(url)
    version = _run(url, lambda c: c.execute(text("SELECT version_num FROM alembic_version")).scalar_one())
    migrate(url)
    assert tables(url) == before
    assert _run(url, lambda c: c.execute(text("SELECT version_num FROM alembic_version")).scalar_one()) == version
