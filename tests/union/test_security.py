"""The web edge: CSRF on every form (and on cookie-authenticated API calls),
security headers on every answer, the request body limit, and clear errors for
malformed input that change nothing."""

from __future__ import annotations

import hashlib
import hmac
import re

import markupsafe
import pytest
from sqlalchemy import func, select

from tests.conftest import PASSWORD
from union import accounts, i18n, members
from tests.helpers import hashed, quick_user
from union.app import route_table
from union.models import ApiToken, Member, User, WebSession
from union.policy import RULES
from union.web import CSRF_COOKIE, LANG_COOKIE, SESSION_COOKIE

FORM_EXPIRED = "This form has expired. Please go back, reload the page and try again."
API_CSRF = "Missing or wrong security token. Reload the page and try again."


def in_language(lang: str, message: str) -> str:
    """The message as a page in `lang` shows it (translated, HTML-escaped)."""
    token = i18n.set_language(lang)
    try:
        return str(markupsafe.escape(i18n.gettext(message)))
    finally:
        i18n._current.reset(token)


async def count(services, model, *where) -> int:
    async with services.sessions() as db:
        stmt = select(func.count()).select_from(model)
        for cond in where:
            stmt = stmt.where(cond)
        return (await db.execute(stmt)).scalar_one()


async def session_cookie(services, user) -> str:
    async with services.sessions() as db:
        raw = await accounts.start_session(db, user=user, max_hours=12)
        await db.commit()
    return raw


# --- CSRF on every HTML form ---------------------------------------------------------

FORM_ROUTES = ["/language", "/login", "/login/member", "/logout", "/join", "/members/new",
               "/office/users/{username}/end-sessions"]


def _html_posts() -> list[tuple[str, str]]:
    return [(path, name) for path, _, methods, name in route_table()
            if "POST" in methods and not path.startswith("/api/")]


def test_the_csrf_cases_cover_every_core_form_and_only_webhooks_skip_csrf():
    assert set(FORM_ROUTES) <= {path for path, _ in _html_posts()}
    for name, rule in RULES.items():
        if not rule.csrf:
            # Only callers that prove themselves otherwise (signed webhooks), never a session user's form.
            assert rule.public, name


def _concrete(path: str) -> str:
    return re.sub(r"{([^}:]+)(:int)?}", lambda m: "987654" if m.group(2) else "NOSUCHREF", path)


@pytest.mark.parametrize("variant", ["missing", "wrong"])
async def test_every_html_post_route_refuses_a_missing_or_wrong_token(variant, app, make_web, settings, branches):
    """The guard checks CSRF before anything else, for every form of every domain."""
    checked = 0
    for path, name in _html_posts():
        if not RULES[name].csrf:
            continue
        web = await make_web()
        web.client.cookies.set(LANG_COOKIE, "kn")
        r = await _forged_post(web, settings, _concrete(path), {}, variant)
        assert r.status_code == 403, (path, r.status_code)
        assert in_language("kn", FORM_EXPIRED) in r.text, path
        checked += 1
    assert checked >= len(FORM_ROUTES)






@pytest.fixture
async def world(services, branches, make_token, make_web):
    """A collector, an office bearer, a member with a PIN and a target user with a live session and a token."""
    collector = await quick_user(services, "col", ["collector"], "BLR")
    bearer = await quick_user(services, "ob", ["office_bearer"])
    target = await quick_user(services, "target", ["dispatcher"])
    async with services.sessions() as db:
        member = await members.enrol(db, data=members.NewMember(working_name="Pinned", branch_code="BLR",
                                                                language="kn"), pin_hash=hashed("1357"),
                                     vault=services.vault, phone_hash=services.phone_hash, actor=None)
        await db.commit()
    target_token = await make_token(target)
    await session_cookie(services, target)
    return {"collector": collector, "bearer": bearer, "target": target, "member": member,
            "target_token": target_token}


def _seed_token(settings, seed: str) -> str:
    return hmac.new(settings.resolved_secret_key.encode(), seed.encode(), hashlib.sha256).hexdigest()


VARIANTS = ["missing", "wrong", "other-browser", "no-cookie"]


async def _forged_post(web, settings, path: str, data: dict, variant: str):
    """POST `data` with a CSRF token that is missing, wrong, or valid for someone else."""
    web.client.cookies.set(CSRF_COOKIE, "my-own-seed")
    form = dict(data)
    if variant == "wrong":
        form["csrf_token"] = "0" * 64
    elif variant == "other-browser":
        form["csrf_token"] = _seed_token(settings, "the-attackers-seed")
    elif variant == "no-cookie":
        form["csrf_token"] = _seed_token(settings, "my-own-seed")
        web.client.cookies.delete(CSRF_COOKIE)
    return await web.client.post(path, data=form)


def _assert_refused(r, lang="kn"):
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("text/html")
    assert f'<html lang="{lang}">' in r.text
    assert in_language(lang, FORM_EXPIRED) in r.text
    assert SESSION_COOKIE not in r.headers.get("set-cookie", "")
    assert LANG_COOKIE not in r.headers.get("set-cookie", "")


@pytest.mark.parametrize("variant", VARIANTS)
async def test_csrf_refuses_every_form_and_changes_nothing(variant, world, services, settings, make_web):
    async def browser(user=None):
        web = await make_web()
        web.client.cookies.set(LANG_COOKIE, "kn")
        if user is not None:
            web.client.cookies.set(SESSION_COOKIE, await session_cookie(services, user))
        return web

    members_before = await count(services, Member)
    sessions_before = await count(services, WebSession)

    # Language: neither the saved preference nor the cookie changes.
    web = await browser(world["collector"])
    r = await _forged_post(web, settings, "/language", {"lang": "hi", "next": "/"}, variant)
    _assert_refused(r)
    async with services.sessions() as db:
        assert (await db.get(User, world["collector"].id)).language is None

    # Login with the right password: no session is started.
    web = await browser()
    r = await _forged_post(web, settings, "/login", {"username": "col", "password": PASSWORD}, variant)
    _assert_refused(r)
    r = await _forged_post(web, settings, "/login/member", {"member_no": world["member"].member_no, "pin": "1357"},
                           variant)
    _assert_refused(r)
    assert await count(services, WebSession) == sessions_before + 1  # only the language browser's session

    # Logout: the session goes on working.
    web = await browser(world["collector"])
    r = await _forged_post(web, settings, "/logout", {}, variant)
    _assert_refused(r)
    web.client.cookies.set(CSRF_COOKIE, "my-own-seed")
    r = await web.client.get("/home")
    assert r.status_code == 303 and r.headers["location"].endswith("/home/collector")

    # Joining and enrolling: nobody is created.
    good = {"working_name": "Forged", "branch": "BLR", "language": "kn"}
    r = await _forged_post(await browser(), settings, "/join", good, variant)
    _assert_refused(r)
    r = await _forged_post(await browser(world["collector"]), settings, "/members/new", good, variant)
    _assert_refused(r)
    assert await count(services, Member) == members_before

    # Ending sessions: the target's session and token survive.
    target = world["target"]
    r = await _forged_post(await browser(world["bearer"]), settings, "/office/users/target/end-sessions", {},
                           variant)
    _assert_refused(r)
    assert await count(services, WebSession, WebSession.user_id == target.id) == 1
    assert await count(services, ApiToken, ApiToken.user_id == target.id, ApiToken.revoked_at.is_(None)) == 1
    r = await (await make_web()).api("GET", "/api/me", token=world["target_token"])
    assert r.status_code == 200 and r.json()["username"] == "target"


async def test_a_real_token_is_accepted(world, services, make_web):
    """The control: the same form with the page's own token works."""
    web = await make_web()
    await web.get("/join")
    r = await web.post("/join", {"working_name": "Honest", "branch": "BLR", "language": "kn"})
    assert r.status_code == 303
    assert await count(services, Member, Member.working_name == "Honest") == 1


async def test_api_with_session_cookie_needs_the_csrf_header(world, services, settings, make_web, make_token):
    web = await make_web()
    web.client.cookies.set(SESSION_COOKIE, await session_cookie(services, world["collector"]))
    web.client.cookies.set(CSRF_COOKIE, "seed-1")
    payload = {"name": "Via API", "branch": "BLR", "language": "kn"}

    for headers in ({}, {"X-CSRF-Token": "nope"}, {"X-CSRF-Token": _seed_token(settings, "seed-2")}):
        r = await web.api("POST", "/api/members", json=payload, headers=headers)
        assert r.status_code == 403
        assert r.json() == {"error": "csrf", "message": API_CSRF}
    assert await count(services, Member, Member.working_name == "Via API") == 0

    r = await web.api("POST", "/api/members", json=payload, headers={"X-CSRF-Token": _seed_token(settings, "seed-1")})
    assert r.status_code == 201 and r.json()["name"] == "Via API"

    # A bearer token is not sent by browsers on their own: no CSRF header needed.
    token = await make_token(world["collector"])
    bare = await make_web()
    r = await bare.api("POST", "/api/members", token=token, json={**payload, "name": "Via token"})
    assert r.status_code == 201 and r.json()["name"] == "Via token"
    assert await count(services, Member, Member.working_name.in_(["Via API", "Via token"])) == 2


async def test_csrf_token_comes_from_the_page_and_is_renewed_at_login(web, services, branches):
    await quick_user(services, "col", ["collector"], "BLR")
    r = await web.get("/login")
    before = re.search(r'name="csrf_token" value="([^"]+)"', r.text).group(1)
    seed_before = web.client.cookies.get(CSRF_COOKIE)
    assert seed_before and before
    r = await web.post("/login", {"username": "col", "password": PASSWORD})
    assert r.status_code == 303
    assert web.client.cookies.get(CSRF_COOKIE) not in (None, seed_before)
    # The pre-login token no longer passes.
    r = await web.client.post("/language", data={"lang": "hi", "csrf_token": before})
    assert r.status_code == 403


# --- Security headers ------------------------------------------------------------------

ALLOWED_SOURCES = {"'self'", "'none'", "data:"}


def assert_security_headers(r, *, static: bool = False):
    h = r.headers
    directives = {}
    for part in h["content-security-policy"].split(";"):
        name, *sources = part.split()
        directives[name] = sources
    for name, sources in directives.items():
        assert set(sources) <= ALLOWED_SOURCES, f"{name} allows {sources}"
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["default-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert h["x-content-type-options"] == "nosniff"
    assert h["referrer-policy"] == "no-referrer"
    assert h["x-frame-options"] == "DENY"
    if static:
        assert "no-store" not in h.get("cache-control", "")
    else:
        assert h["cache-control"] == "no-store"


async def test_security_headers_everywhere(web, services, branches, make_token):
    user = await quick_user(services, "col", ["collector"], "BLR")
    token = await make_token(user)
    anonymous = [await web.get("/"), await web.get("/login"), await web.get("/join"), await web.get("/nowhere"),
                 await web.api("GET", "/api/branches"), await web.api("GET", "/api/me"),
                 await web.api("GET", "/api/nowhere"), await web.get("/healthz"), await web.get("/api/openapi.json")]
    for r in anonymous:
        assert_security_headers(r)
    r = await web.login("col", PASSWORD)
    assert_security_headers(r)
    authenticated = [await web.get("/home/collector"), await web.get("/members?q=x"), await web.get("/members/new"),
                     await web.api("GET", "/api/me", token=token), await web.api("GET", "/api/members?q=x", token=token),
                     await web.get("/office/users")]
    for r in authenticated:
        assert_security_headers(r)
    assert authenticated[0].status_code == 200 and authenticated[3].status_code == 200
    assert authenticated[-1].status_code == 403
    r = await web.get("/static/app.css")
    assert r.status_code == 200
    assert_security_headers(r, static=True)

    # Pages load nothing from other sites.
    for page in (anonymous[0], anonymous[1], authenticated[0]):
        for src in re.findall(r'<(?:script|link|img|iframe)[^>]+(?:src|href)="([^"]+)"', page.text):
            assert src.startswith("/") and not src.startswith("//"), src


# --- Body size, malformed input ----------------------------------------------------------

TOO_LARGE = "What you sent is too large."


@pytest.fixture
async def collector_token(services, branches, make_token):
    return await make_token(await quick_user(services, "col", ["collector"], "BLR"))


async def test_body_above_the_limit_is_413_with_a_clear_message(web, services, settings, collector_token):
    limit = settings.max_body_bytes
    big = b'{"name": "' + b"x" * limit + b'", "branch": "BLR", "language": "kn"}'
    r = await web.api("POST", "/api/members", token=collector_token, content=big,
                      headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"error": "413", "message": TOO_LARGE}
    assert_security_headers(r)

    # Streamed without a Content-Length, the limit still holds.
    async def chunks():
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    r = await web.client.post("/api/members", content=chunks(),
                              headers={"content-type": "application/json", "authorization": f"Bearer {collector_token}"})
    assert r.status_code == 413 and r.json() == {"error": "413", "message": TOO_LARGE}

    # HTML forms: a page in the user's language, and nothing created.
    for page in ("/join", "/members/new"):
        await web.get(page)
        web.client.cookies.set(LANG_COOKIE, "kn")
        r = await web.post(page, {"working_name": "Big", "branch": "BLR", "language": "kn",
                                  "nominee": "n" * (limit + 10)})
        assert r.status_code == 413
        assert r.headers["content-type"].startswith("text/html")
        assert in_language("kn", TOO_LARGE) in r.text and '<html lang="kn">' in r.text
        assert_security_headers(r)
    assert await count(services, Member) == 0

    # Just under the limit is read normally (and refused for what it says, not for its size).
    ok = b'{"name": "' + b"x" * 100 + b'", "branch": "BLR", "language": "kn"}'
    r = await web.api("POST", "/api/members", token=collector_token, content=ok.ljust(limit, b" "),
                      headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "working_name"


@pytest.mark.parametrize("body,message", [
    (b"{", "The request body is not valid JSON."),
    (b'{"name": "a",}', "The request body is not valid JSON."),
    (b"\xff\xfe\x00", "The request body is not valid JSON."),
    (b"", "The request body is not valid JSON."),
    (b'["name", "branch"]', "The request body must be a JSON object."),
    (b'"text"', "The request body must be a JSON object."),
])
async def test_malformed_json_is_a_clear_422(body, message, web, services, collector_token):
    r = await web.api("POST", "/api/members", token=collector_token, content=body,
                      headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json() == {"error": "invalid", "message": message}
    assert_security_headers(r)
    assert await count(services, Member) == 0


async def test_api_answers_in_json_even_for_routing_errors(web, collector_token):
    r = await web.api("POST", "/api/members", token=collector_token, content=b"name=x",
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert r.json() == {"error": "415", "message": "Please send JSON (Content-Type: application/json)."}
    r = await web.api("GET", "/api/nowhere", token=collector_token)
    assert r.status_code == 404 and r.json() == {"error": "404", "message": "This page does not exist."}
    r = await web.api("DELETE", "/api/members", token=collector_token)
    assert r.status_code == 405 and r.json() == {"error": "405", "message": "This action is not possible here."}
    r = await web.get("/nowhere")
    assert r.status_code == 404 and "This page does not exist." in r.text
