"""Accounts: ending every session of a user (a seized phone), inactivity and
absolute timeouts, a fresh session id at login, logout that clears the browser,
one answer for wrong passwords whether or not the user exists, login rate
limits, and the `union users create` / `union tokens create` commands."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, update

from tests.conftest import PASSWORD, run_cli
from union import accounts, members, ratelimit
from tests.helpers import hashed, quick_user
from union.models import ApiToken, AuditEvent, RoleGrant, User, WebSession, utcnow
from union.web import SESSION_COOKIE

EXPIRED = "Your session has ended. Please log in again."






async def count(services, model, *where) -> int:
    async with services.sessions() as db:
        stmt = select(func.count()).select_from(model)
        for cond in where:
            stmt = stmt.where(cond)
        return (await db.execute(stmt)).scalar_one()


def error_notice(html: str) -> str:
    found = re.search(r'<div class="notice error" role="alert">(.*?)</div>', html, re.S)
    assert found, html[:500]
    return found.group(1)


def cli_env(settings) -> dict:
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "UNION_DATABASE_URL": settings.database_url,
            "UNION_DATA_DIR": str(settings.data_dir), "UNION_SECRET_KEY": settings.secret_key,
            "UNION_HASH_KEY": settings.hash_key, "UNION_ENCRYPTION_KEYS": settings.encryption_keys or "",
            "UNION_REDIS_URL": "", "UNION_LOG_LEVEL": "WARNING"}


@pytest.fixture
def frozen_rate_window(monkeypatch):
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: 1_000_000.0))


# --- Ending sessions ----------------------------------------------------------------

async def test_office_bearer_ends_every_session_and_token_of_a_user(services, branches, make_web, make_token):
    victim = await quick_user(services, "victim", ["collector"], "BLR")
    await quick_user(services, "bearer", ["office_bearer"])
    phones = []
    for _ in range(2):  # two devices
        phone = await make_web()
        assert (await phone.login("victim", PASSWORD)).status_code == 303
        assert (await phone.get("/home/collector")).status_code == 200
        phones.append(phone)
    token = await make_token(victim)
    assert (await phones[0].api("GET", "/api/me", token=token)).status_code == 200

    office = await make_web()
    assert (await office.login("bearer", PASSWORD)).status_code == 303
    r = await office.get("/office/users?q=victim")
    assert r.status_code == 200 and "victim" in r.text and "logged in" in r.text
    r = await office.post("/office/users/victim/end-sessions", {})
    assert r.status_code == 303 and r.headers["location"] == "/office/users?ended=victim"
    r = await office.get(r.headers["location"])
    assert "Every session of victim has been ended." in r.text

    for phone in phones:
        r = await phone.get("/home/collector")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=/home/collector&m=expired"
        r = await phone.get(r.headers["location"])
        assert r.status_code == 200 and EXPIRED in r.text
        r = await phone.api("GET", "/api/me")
        assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
    r = await phones[0].api("GET", "/api/me", token=token)
    assert r.status_code == 401 and r.json() == {"error": "unauthenticated", "message": "Please log in."}

    assert await count(services, WebSession, WebSession.user_id == victim.id) == 0
    assert await count(services, ApiToken, ApiToken.user_id == victim.id, ApiToken.revoked_at.is_(None)) == 0
    async with services.sessions() as db:
        event = (await db.execute(select(AuditEvent).where(AuditEvent.action == "session.end_all"))).scalar_one()
    assert (event.actor, event.target_id, json.loads(event.detail)) == ("bearer", str(victim.id), {"sessions": 2})
    # The office bearer is still logged in; the victim can log in again afterwards.
    assert (await office.get("/office/users")).status_code == 200
    assert (await phones[0].login("victim", PASSWORD)).status_code == 303
    assert (await phones[0].get("/home/collector")).status_code == 200

    r = await office.post("/office/users/nobody/end-sessions", {})
    assert r.status_code == 404 and "No such user." in r.text


async def test_a_members_seized_phone(services, branches, make_web):
    """A member's PIN session ends the same way."""
    async with services.sessions() as db:
        member = await members.enrol(db, data=members.NewMember(working_name="Roopa", branch_code="MYS",
                                                                language="kn"), pin_hash=hashed("8642"),
                                     vault=services.vault, phone_hash=services.phone_hash, actor=None)
        await db.commit()
    phone = await make_web()
    await phone.get("/login/member")
    r = await phone.post("/login/member", {"member_no": member.member_no.lower(), "pin": "8642"})
    assert r.status_code == 303 and r.headers["location"] == "/home/member"
    assert (await phone.get("/member/card")).status_code == 200
    await quick_user(services, "bearer", ["office_bearer"])
    office = await make_web()
    await office.login("bearer", PASSWORD)
    await office.get("/office/users")
    r = await office.post(f"/office/users/{member.member_no.lower()}/end-sessions", {})
    assert r.status_code == 303
    r = await phone.get("/member/card")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/member/card&m=expired"


# --- Timeouts --------------------------------------------------------------------------

async def _logged_in(services, make_web, username="col"):
    web = await make_web()
    assert (await web.login(username, PASSWORD)).status_code == 303
    raw = web.client.cookies.get(SESSION_COOKIE)
    assert raw
    return web, accounts.token_digest(raw)


async def _set_session(services, digest, **values):
    async with services.sessions() as db:
        await db.execute(update(WebSession).where(WebSession.id == digest).values(**values))
        await db.commit()


async def test_inactivity_timeout(services, settings, branches, make_web):
    await quick_user(services, "col", ["collector"], "BLR")
    web, digest = await _logged_in(services, make_web)
    idle = settings.session_idle_minutes

    # Just inside the idle time: still logged in, and the timer slides forward.
    await _set_session(services, digest, last_seen_at=utcnow() - dt.timedelta(minutes=idle - 1))
    r = await web.get("/home/collector")
    assert r.status_code == 200
    async with services.sessions() as db:
        seen = (await db.get(WebSession, digest)).last_seen_at
    assert utcnow() - seen < dt.timedelta(seconds=30)

    await _set_session(services, digest, last_seen_at=utcnow() - dt.timedelta(minutes=idle, seconds=5))
    r = await web.get("/home/collector")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/home/collector&m=expired"
    assert await count(services, WebSession, WebSession.id == digest) == 0
    r = await web.get(r.headers["location"])
    assert EXPIRED in r.text


async def test_absolute_timeout(services, branches, make_web):
    await quick_user(services, "col", ["collector"], "BLR")
    web, digest = await _logged_in(services, make_web)
    async with services.sessions() as db:
        row = await db.get(WebSession, digest)
        assert row.expires_at - row.created_at == dt.timedelta(hours=services.settings.session_max_hours)
    # Active a second ago, but past the absolute limit.
    await _set_session(services, digest, last_seen_at=utcnow(), expires_at=utcnow() - dt.timedelta(seconds=1))
    r = await web.get("/members?q=x")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/members&m=expired"
    assert await count(services, WebSession, WebSession.id == digest) == 0
    r = await web.api("GET", "/api/me")
    assert r.status_code == 401


async def test_fresh_session_id_at_login(services, branches, make_web):
    await quick_user(services, "col", ["collector"], "BLR")
    web = await make_web()
    # A cookie planted before login (session fixation) is never adopted.
    web.client.cookies.set(SESSION_COOKIE, "planted-by-someone-else", domain="testserver.local")
    r = await web.login("col", PASSWORD)
    session_set = [c for c in r.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}=")]
    assert len(session_set) == 1
    attributes = {a.strip().lower() for a in session_set[0].split(";")[1:]}
    assert {"httponly", "samesite=lax", "path=/"} <= attributes
    assert not any(a.startswith(("max-age", "expires")) for a in attributes)  # gone when the browser closes
    first = web.client.cookies.get(SESSION_COOKIE)
    assert first and first != "planted-by-someone-else"
    assert (await web.get("/home/collector")).status_code == 200

    # Logging in again gives a new id and ends the old one.
    await web.login("col", PASSWORD)
    second = web.client.cookies.get(SESSION_COOKIE)
    assert second and second != first
    thief = await make_web()
    thief.client.cookies.set(SESSION_COOKIE, first)
    r = await thief.get("/home/collector")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?")
    assert (await web.get("/home/collector")).status_code == 200
    user = await _user(services, "col")
    assert await count(services, WebSession, WebSession.user_id == user.id) == 1
    # Only a digest of the cookie is stored: the database cannot be replayed as a cookie.
    async with services.sessions() as db:
        ids = [s.id for s in (await db.execute(select(WebSession))).scalars()]
    assert second not in ids and accounts.token_digest(second) in ids


async def _user(services, username):
    async with services.sessions() as db:
        return (await db.execute(select(User).where(User.username == username))).scalar_one()


async def test_logout_clears_the_browser_and_ends_the_session(services, branches, make_web):
    await quick_user(services, "col", ["collector"], "BLR")
    web = await make_web()
    await web.login("col", PASSWORD)
    raw = web.client.cookies.get(SESSION_COOKIE)
    await web.get("/home/collector")
    r = await web.post("/logout", {})
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert r.headers["cache-control"] == "no-store"
    clear = {part.strip().strip('"') for part in r.headers["clear-site-data"].split(",")}
    assert {"cache", "cookies", "storage"} <= clear
    cookies = r.headers.get_list("set-cookie")
    assert any(c.startswith(f"{SESSION_COOKIE}=") and ("Max-Age=0" in c or "expires=" in c.lower()) for c in cookies)
    assert web.client.cookies.get(SESSION_COOKIE) is None
    assert await count(services, WebSession) == 0

    thief = await make_web()
    thief.client.cookies.set(SESSION_COOKIE, raw)
    r = await thief.get("/home/collector")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/home/collector")
    r = await thief.api("GET", "/api/me")
    assert r.status_code == 401


# --- Wrong passwords and rate limits ------------------------------------------------------

async def test_wrong_password_same_answer_whether_or_not_the_user_exists(services, branches, make_web):
    await quick_user(services, "col", ["collector"], "BLR")
    gone = await quick_user(services, "gone", ["collector"], "BLR")
    async with services.sessions() as db:
        await db.execute(update(User).where(User.id == gone.id).values(is_active=False))
        await db.commit()
    answers = []
    for username, password in [("col", "wrong password"), ("nosuchuser", "wrong password"), ("gone", PASSWORD),
                               ("COL", "Correct Horse Battery")]:
        web = await make_web()
        await web.get("/login")
        r = await web.post("/login", {"username": username, "password": password})
        answers.append((r.status_code, error_notice(r.text)))
        assert web.client.cookies.get(SESSION_COOKIE) is None
    assert len(set(answers)) == 1
    assert answers[0][0] == 401 and "Wrong username or password." in answers[0][1]
    assert await count(services, WebSession) == 0

    # Too long is a form error, not a crash.
    web = await make_web()
    await web.get("/login")
    r = await web.post("/login", {"username": "x" * 65, "password": "y" * 201})
    assert r.status_code == 200 and "Field cannot be longer than 64 characters." in r.text


async def test_wrong_pin_same_answer_whether_or_not_the_member_exists(services, branches, make_web):
    async with services.sessions() as db:
        member = await members.enrol(db, data=members.NewMember(working_name="Pinned", branch_code="BLR",
                                                                language="kn"), pin_hash=hashed("1357"),
                                     vault=services.vault, phone_hash=services.phone_hash, actor=None)
        await db.commit()
    answers = []
    for member_no, pin in [(member.member_no, "9999"), ("BLR-99999", "9999"), ("NOPE", "1357")]:
        web = await make_web()
        await web.get("/login/member")
        r = await web.post("/login/member", {"member_no": member_no, "pin": pin})
        answers.append((r.status_code, error_notice(r.text)))
    assert len(set(answers)) == 1
    assert answers[0] == (401, answers[0][1]) and "Wrong member number or PIN." in answers[0][1]
    assert await count(services, WebSession) == 0

    web = await make_web()
    await web.get("/login/member")
    r = await web.post("/login/member", {"member_no": member.member_no, "pin": "123456789"})
    assert r.status_code == 200 and "Field cannot be longer than 8 characters." in r.text
    r = await web.post("/login/member", {"member_no": member.member_no, "pin": "1357"})
    assert r.status_code == 303 and r.headers["location"] == "/home/member"


TOO_MANY = "Too many attempts. Please wait a few minutes and try again."


async def test_login_rate_limit_per_account(services, settings, branches, make_web, frozen_rate_window):
    settings.login_attempts_per_window = 3
    await quick_user(services, "col", ["collector"], "BLR")
    web = await make_web()
    await web.get("/login")
    for _ in range(3):
        r = await web.post("/login", {"username": "col", "password": "guess"})
        assert r.status_code == 401
    r = await web.post("/login", {"username": "col", "password": "guess"})
    assert r.status_code == 429 and TOO_MANY in r.text
    # Even the right password is refused until the window passes: guessing cannot go on.
    r = await web.post("/login", {"username": "Col", "password": PASSWORD})
    assert r.status_code == 429 and TOO_MANY in r.text
    assert web.client.cookies.get(SESSION_COOKIE) is None and await count(services, WebSession) == 0
    # Another account is not locked by this one.
    await quick_user(services, "other", ["collector"], "BLR")
    r = await web.post("/login", {"username": "other", "password": PASSWORD})
    assert r.status_code == 303


async def test_login_rate_limit_per_address_and_for_pins(services, settings, branches, make_web,
                                                          frozen_rate_window):
    settings.login_attempts_per_window = 2  # so 6 per address
    web = await make_web()
    await web.get("/login/member")
    for i in range(2):
        r = await web.post("/login/member", {"member_no": "BLR-00001", "pin": f"000{i}"})
        assert r.status_code == 401
    r = await web.post("/login/member", {"member_no": "blr-00001", "pin": "0009"})
    assert r.status_code == 429 and TOO_MANY in r.text
    # Spread over many names, the address limit still holds.
    await web.get("/login")
    statuses = []
    for i in range(5):
        r = await web.post("/login", {"username": f"name{i}", "password": "guess"})
        statuses.append(r.status_code)
    assert statuses == [401, 401, 401, 429, 429]  # 3 member attempts + 3 here = 6 per address
    assert TOO_MANY in r.text


# --- The CLI ------------------------------------------------------------------------------

async def test_cli_users_create_and_tokens_create(settings, services, branches, web):
    env = cli_env(settings)
    r = run_cli("users", "create", "--username", "Meera", "--role", "collector", "--role", "welfare_officer",
                "--branch", "blr", env=env, input="a long enough password\n")
    assert r.returncode == 0, r.stderr
    assert "Created user meera with roles collector, welfare_officer." in r.stdout
    assert "a long enough password" not in r.stdout + r.stderr

    user = await _user(services, "meera")
    assert user.password_hash.startswith("$argon2id$")
    async with services.sessions() as db:
        grants = sorted((g.role, g.branch_id) for g in (await db.execute(
            select(RoleGrant).where(RoleGrant.user_id == user.id))).scalars())
    assert grants == [("collector", branches["BLR"].id), ("welfare_officer", branches["BLR"].id)]

    r = run_cli("tokens", "create", "--username", "meera", "--label", "laptop", env=env)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("union_") and len(token) > 40 and "\n" not in token
    async with services.sessions() as db:
        stored = (await db.execute(select(ApiToken).where(ApiToken.user_id == user.id))).scalar_one()
    assert stored.digest == accounts.token_digest(token) and stored.label == "laptop"

    r = await web.api("GET", "/api/me", token=token)
    assert r.status_code == 200
    assert r.json() == {"username": "meera", "roles": ["collector", "welfare_officer"], "member_no": None}
    # The password from stdin works at the login page.
    r = await web.login("meera", "a long enough password")
    assert r.status_code == 303 and r.headers["location"] == "/home/welfare_officer"

    # Errors are clear and exit non-zero.
    r = run_cli("users", "create", "--username", "shorty", "--role", "collector", env=env, input="short\n")
    assert r.returncode == 1 and "A staff password needs at least 8 characters." in r.stdout
    r = run_cli("tokens", "create", "--username", "nobody", env=env)
    assert r.returncode == 1 and "No such user." in r.stdout
    assert await count(services, User, User.username == "shorty") == 0


@pytest.mark.parametrize("next_,landing", [
    ("/members?q=x", "/members?q=x"),
    ("//evil.example/phish", "/home/collector"),
    ("https://evil.example/", "/home/collector"),
    ("/\\evil.example", "/home/collector"),
])
async def test_login_only_returns_to_pages_of_this_site(next_, landing, services, branches, make_web):
    await quick_user(services, "col", ["collector"], "BLR")
    web = await make_web()
    await web.get("/login")
    r = await web.client.post("/login", params={"next": next_},
                              data={"username": "col", "password": PASSWORD, "csrf_token": web.csrf})
    assert r.status_code == 303 and r.headers["location"] == landing


def test_cli_on_an_unmigrated_database_says_what_to_do(tmp_path):
    env = {"UNION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", "UNION_DATA_DIR": str(tmp_path)}
    r = run_cli("users", "create", "--username", "meera", "--role", "collector", env=env,
                input="a long enough password\n")
    assert r.returncode == 2
    assert "union migrate" in r.stdout and "Traceback" not in r.stderr
