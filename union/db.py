"""Database engine and sessions for both SQLite (embedded) and PostgreSQL.

SQLite allows one writer: WAL, a busy timeout and `BEGIN IMMEDIATE` for every
transaction, so a read-then-write never fails half-way with "database is locked".
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession

ROOT = Path(__file__).resolve().parent.parent
READ_ONLY = "union_read_only"


def make_engine(url: str, *, synchronous: str = "NORMAL", pool_size: int = 10, single_writer: bool = False) -> AsyncEngine:
    """single_writer (SQLite): one connection, so writers queue fairly in the pool (first come,
    first served) instead of in SQLite's busy handler, whose growing sleeps let newcomers overtake."""
    if url.startswith("sqlite"):
        pool = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 60} if single_writer else {}
        engine = create_async_engine(url, connect_args={"timeout": 30}, **pool)
        sync = engine.sync_engine

        @event.listens_for(sync, "connect")
        def _sqlite_connect(dbapi_connection, _record):  # pragma: no cover - exercised by every SQLite test
            # Let SQLAlchemy, not the driver, decide when transactions begin.
            dbapi_connection.isolation_level = None
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.close()

        @event.listens_for(sync, "begin")
        def _sqlite_begin(conn):
            # Read-only sessions (services.reader) need no write lock: WAL lets them run beside the writer.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def make_sessionmaker(engine: AsyncEngine, *, read_only: bool = False) -> async_sessionmaker[AsyncSession]:
    """Sessions for the route or job that owns the transaction; `read_only` ones must not write."""
    if read_only:
        engine = engine.execution_options(**{READ_ONLY: True})
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Apply migrations (the only way any schema is created)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)
