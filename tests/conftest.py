"""Shared fixtures. Every test runs once on SQLite and once on PostgreSQL, each on a
fresh database copied from a template that the migrations built at the start of
the run (migrations are the only way the schema is made, in tests too).

Services the machine lacks make their tests skip loudly; with
UNION_REQUIRE_SERVICES=1 (CI) they fail instead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

import workers.registry  # noqa: F401
from tests.helpers import PASSWORD, hashed
from union import accounts
from union.app import create_app
from union.db import migrate
from union.models import Branch
from union.services import build_services
from union.settings import Settings

REQUIRE = os.environ.get("UNION_REQUIRE_SERVICES") == "1"
PG_HOST = os.environ.get("UNION_TEST_PG_HOST", "127.0.0.1")
PG_ADMIN = os.environ.get("UNION_TEST_PG_ADMIN_URL", f"postgresql://postgres@{PG_HOST}:5432/postgres")
REDIS_URL = os.environ.get("UNION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:8]
_IMPORT_DAY = dt.date.today()


@pytest.fixture(autouse=True)
def _tests_see_today(monkeypatch):
    """Test modules that say `TODAY = dt.date.today()` got the day they were imported; in a run that
    crosses midnight they would compare yesterday with the app's today. Give them today."""
    today = dt.date.today()
    if today != _IMPORT_DAY:
        for name, module in list(sys.modules.items()):
            if name.startswith("tests.") and getattr(module, "TODAY", None) == _IMPORT_DAY:
                monkeypatch.setattr(module, "TODAY", today)


def need(available: bool, what: str) -> None:
    if available:
        return
    if REQUIRE:
        pytest.fail(f"{what} is required (UNION_REQUIRE_SERVICES=1) but not available", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {what} is not available on this machine")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pg_available() -> bool:
    return _port_open(PG_HOST, 5432)


def redis_available() -> bool:
    return _port_open("127.0.0.1", 6379)


async def _pg_exec(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def pg_exec(sql: str) -> None:
    asyncio.run(_pg_exec(sql))


def pg_url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template():
    if not pg_available():
        yield None
        return
    name = f"union_t_{RUN_ID}_tmpl"
    pg_exec(f"CREATE DATABASE {name}")
    migrate(pg_url(name))
    yield name
    pg_exec(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def database_url(backend, request, tmp_path):
    """A fresh, migrated database for this one test."""
    if backend == "sqlite":
        path = tmp_path / "union.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    need(pg_available(), "PostgreSQL on 127.0.0.1:5432")
    template = request.getfixturevalue("pg_template")
    name = f"union_t_{RUN_ID}_{uuid.uuid4().hex[:10]}"
    pg_exec(f"CREATE DATABASE {name} TEMPLATE {template}")
    yield pg_url(name)
    pg_exec(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "var", database_url=database_url, redis_url=None,
                    secret_key="test-secret", encryption_keys=Fernet.generate_key().decode(),
                    hash_key="test-hash-key", sweep_interval_seconds=0.2)


@pytest.fixture
async def services(settings):
    svc = await build_services(settings, jobs_backend="none")
    yield svc
    await svc.close()


@pytest.fixture
async def app(settings, services):
    application = create_app(settings, services=services)
    async with application.router.lifespan_context(application):
        yield application


class Web:
    """A browser-like client: keeps cookies, fills in the CSRF token of the last page."""

    CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

    def __init__(self, client: httpx.AsyncClient):
        self.client = client
        self.csrf: str | None = None

    async def get(self, path: str, **kw) -> httpx.Response:
        response = await self.client.get(path, **kw)
        found = self.CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    async def post(self, path: str, data: dict | None = None, *, csrf: bool = True, **kw) -> httpx.Response:
        if csrf and self.csrf is None:
            await self.get("/")
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        response = await self.client.post(path, data=form, **kw)
        found = self.CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    async def login(self, username: str, password: str) -> httpx.Response:
        await self.get("/login")
        response = await self.post("/login", {"username": username, "password": password})
        self.csrf = None  # the seed is renewed at login
        return response

    async def api(self, method: str, path: str, *, token: str | None = None, json=None, **kw) -> httpx.Response:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return await self.client.request(method, path, json=json, headers=headers, **kw)


@pytest.fixture
async def client(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def web(client) -> Web:
    return Web(client)


@pytest.fixture
async def make_web(app):
    """More independent browsers (each with its own cookies)."""
    opened = []

    async def make() -> Web:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        opened.append(c)
        return Web(c)

    yield make
    for c in opened:
        await c.aclose()


@pytest.fixture
async def branches(services) -> dict[str, Branch]:
    """Two branches: Bengaluru and Mysuru."""
    async with services.sessions() as db:
        made = {}
        for code, name, lat, lon in [("BLR", "Bengaluru", 12.9716, 77.5946), ("MYS", "Mysuru", 12.2958, 76.6394)]:
            b = Branch(code=code, name=name, lat=lat, lon=lon)
            db.add(b)
            made[code] = b
        await db.commit()
    return made


@pytest.fixture
async def make_user(services, branches):
    async def make(username: str, roles: list[str], branch: str | None = None, password: str = PASSWORD):
        async with services.sessions() as db:
            user = await accounts.create_user(db, username=username, password=None, roles=roles,
                                              branch_code=branch, password_hash=hashed(password))
            await db.commit()
            return user

    return make


@pytest.fixture
async def make_token(services):
    async def make(user) -> str:
        async with services.sessions() as db:
            raw = await accounts.create_token(db, user=user)
            await db.commit()
            return raw

    return make


def run_cli(*args: str, env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    # The `union` of this interpreter's environment, whether or not its bin folder is on PATH.
    return subprocess.run([str(Path(sys.executable).parent / "union"), *args], capture_output=True, text=True, env=full_env, input=input, timeout=300)


@pytest.fixture
def live_server(settings):
    """Base URL of the real app (its own services, embedded jobs) served by uvicorn on a free 127.0.0.1 port."""
    import uvicorn

    app = create_app(settings)
    # Binding here (port 0) and handing uvicorn the socket avoids a race for the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None: leave the test process's logging alone.
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, server_header=False,
                            timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive():
            pytest.fail("the app did not start under uvicorn (see the log above)", pytrace=False)
        if time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail("the app did not start under uvicorn within 30 s", pytrace=False)
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
