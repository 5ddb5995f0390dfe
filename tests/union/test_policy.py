"""The access matrix: every route × every role (and anonymous) is allowed or
denied exactly as union.policy.RULES says, through session cookies and bearer
tokens; and branch limits hide other branches' members (404, never 403, so a
collector cannot even learn that a member number exists elsewhere)."""

from __future__ import annotations

import hashlib
import re
import hmac
from dataclasses import dataclass
from typing import Callable

import pytest
from starlette.routing import Route
from sqlalchemy import func, select

from tests.conftest import PASSWORD
from union import accounts, members
from tests.helpers import hashed, quick_user
from union.app import build_routes, route_table
from union.models import Role, User, WebSession
from union.policy import RULES, Rule
from union.web import CSRF_COOKIE, SESSION_COOKIE

ROLES = [r.value for r in Role]
SEED = "matrix-csrf-seed"
WHO = [None, *ROLES]  # None = anonymous


def csrf_for(settings, seed: str = SEED) -> str:
    return hmac.new(settings.resolved_secret_key.encode(), seed.encode(), hashlib.sha256).hexdigest()


async def login_cookie(services, user) -> str:
    """A real server-side session, without spending argon2 time on a login form."""
    async with services.sessions() as db:
        raw = await accounts.start_session(db, user=user, max_hours=services.settings.session_max_hours)
        await db.commit()
    return raw






async def enrol(services, name: str, branch: str, *, pin: str | None = None, phone: str | None = None):
    async with services.sessions() as db:
        member = await members.enrol(db, data=members.NewMember(working_name=name, branch_code=branch, language="kn",
                                                                phone=phone),
                                     pin_hash=hashed(pin) if pin else None,
                                     vault=services.vault, phone_hash=services.phone_hash, actor=None)
        await db.commit()
    return member


async def member_user(services, member) -> User:
    async with services.sessions() as db:
        return (await db.execute(select(User).where(User.member_id == member.id))).scalar_one()


# --- What an allowed answer looks like, per route --------------------------------

def html(status: int = 200, contains: str | None = None):
    def check(r, who, ctx):
        assert r.status_code == status, (r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("text/html")
        if contains:
            assert contains.format(**ctx) in r.text
    return check


def redirect(location: Callable[[str | None, dict], str]):
    def check(r, who, ctx):
        assert r.status_code == 303, (r.status_code, r.text[:300])
        assert r.headers["location"] == location(who, ctx), r.headers["location"]
    return check


def json_ok(status: int, body_check: Callable[[dict, str | None, dict], None]):
    def check(r, who, ctx):
        assert r.status_code == status, (r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("application/json")
        body_check(r.json(), who, ctx)
    return check


def _home(who, ctx):
    return f"http://testserver/home/{who}"


def _check_health(body, who, ctx):
    assert body == {"status": "ok", "database": "ok", "jobs": "embedded"}


def _check_openapi(body, who, ctx):
    assert body["openapi"].startswith("3.") and "/api/members" in body["paths"]


def _check_static(r, who, ctx):
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")


def _check_branches(body, who, ctx):
    assert [b["code"] for b in body["branches"]] == ["BLR", "MYS"]


def _check_me(body, who, ctx):
    assert body["username"] == ctx["usernames"][who]
    assert body["roles"] == [who]
    assert body["member_no"] == (ctx["member_no"] if who == "member" else None)


def _check_created(body, who, ctx):
    assert body["member_no"].startswith("BLR-") and body["name"] == "Matrix enrolment" and body["branch"] == "BLR"


def _check_search(body, who, ctx):
    assert [m["member_no"] for m in body["members"]] == [ctx["member_no"]]


def _check_member(body, who, ctx):
    assert body["member_no"] == ctx["member_no"] and body["name"] == "Matrix Member" and body["branch"] == "BLR"


@dataclass
class Case:
    name: str
    method: str
    path: str  # may hold {member_no} and {target}
    allowed: Callable
    data: dict | None = None  # HTML form fields (csrf_token added)
    json: dict | None = None
    last: bool = False  # ends the caller's session: run after everything else

    @property
    def api(self) -> bool:
        return self.path.startswith("/api/")


CASES = [
    Case("index", "GET", "/", lambda r, who, ctx: (html(200)(r, who, ctx) if who is None
                                                    else redirect(_home)(r, who, ctx))),
    Case("healthz", "GET", "/healthz", json_ok(200, _check_health)),
    Case("openapi", "GET", "/api/openapi.json", json_ok(200, _check_openapi)),
    Case("static", "GET", "/static/app.css", _check_static),
    Case("language.set", "POST", "/language", redirect(lambda w, c: "/home"), data={"lang": "en", "next": "/home"}),
    Case("auth.login", "GET", "/login", html(200, 'name="password"')),
    Case("auth.login", "POST", "/login", html(200, "Please fill in this field."), data={}),
    Case("auth.member_login", "GET", "/login/member", html(200, 'name="pin"')),
    Case("auth.member_login", "POST", "/login/member", html(200, "Please fill in this field."), data={}),
    Case("home", "GET", "/home", redirect(_home)),
    *[Case(f"home.{role}", "GET", f"/home/{role}", html(200)) for role in ROLES],
    Case("members.join", "GET", "/join", html(200, 'name="working_name"')),
    Case("members.join", "POST", "/join", html(422, "Please fill in this field."), data={}),
    Case("members.joined", "GET", "/join/done?no={member_no}", html(200, "{member_no}")),
    Case("members.card", "GET", "/member/card", html(200, "{member_no}")),
    Case("members.search", "GET", "/members?q=Matrix", html(200, "/members/{member_no}")),
    Case("members.new", "GET", "/members/new", html(200, 'name="legal_name"')),
    Case("members.new", "POST", "/members/new", html(422, "Please fill in this field."), data={}),
    Case("members.detail", "GET", "/members/{member_no}", html(200, 'id="member-no">{member_no}<')),
    Case("accounts.users", "GET", "/office/users", html(200, "{target}")),
    Case("accounts.end_sessions", "POST", "/office/users/{target}/end-sessions",
         redirect(lambda w, c: f"/office/users?ended={c['target']}"), data={}),
    Case("api.branches", "GET", "/api/branches", json_ok(200, _check_branches)),
    Case("api.me", "GET", "/api/me", json_ok(200, _check_me)),
    Case("api.members.create", "POST", "/api/members", json_ok(201, _check_created),
         json={"name": "Matrix enrolment", "branch": "BLR", "language": "kn"}),
    Case("api.members.search", "GET", "/api/members?q={member_no}", json_ok(200, _check_search)),
    Case("api.members.get", "GET", "/api/members/{member_no}", json_ok(200, _check_member)),
    Case("auth.logout", "POST", "/logout", redirect(lambda w, c: "/"), data={}, last=True),
]


DUMMY_PARAMS = {"member_no": "{member_no}", "username": "{target}"}


def _fill(path: str) -> str:
    """A concrete path for a route of the table: known records for the core's parameters, and
    ids that exist nowhere for other domains' (a 404 there still proves the policy let us in)."""
    def one(match: re.Match) -> str:
        name, _, convertor = match.group(1).partition(":")
        if name in DUMMY_PARAMS:
            return DUMMY_PARAMS[name]
        return "987654" if convertor == "int" or name.endswith("_id") else "NOSUCHREF"
    return re.sub(r"{([^}]+)}", one, path)


def _not_denied(r, who, ctx):
    """For routes without a specific case: the policy let the request through."""
    assert r.status_code < 500, (r.status_code, r.text[:300])
    assert r.status_code != 401, r.text[:300]
    if r.status_code == 303:
        assert not r.headers["location"].startswith("/login?next="), r.headers["location"]
    if r.status_code == 403:
        assert "You do not have access to this." not in r.text, r.text[:300]


def all_cases() -> list[Case]:
    """The specific cases, plus a generic one for every other (path, method) of the route table."""
    specific = {(c.path.split("?")[0], c.method) for c in CASES}
    extra = []
    for path, _, methods, name in route_table():
        for method in methods:
            concrete = _fill(path)
            if (concrete, method) in specific:
                continue
            extra.append(Case(name, method, concrete, _not_denied,
                              data={} if method != "GET" and not concrete.startswith("/api/") else None,
                              json={} if method != "GET" and concrete.startswith("/api/") else None))
    return CASES + extra


def test_every_route_has_exactly_one_rule_and_no_rule_is_stale():
    built = build_routes()
    names = {route.name for route in built}
    assert names == set(RULES), (names ^ set(RULES))
    assert {name for *_, name in route_table()} | {"openapi", "static"} == set(RULES)
    # Every guarded endpoint carries the rule the policy names for it (nobody wrapped it with another).
    for route in built:
        if isinstance(route, Route):
            assert route.endpoint.policy_rule is RULES[route.name], route.name
    # The matrix covers every (path, method) of the route table, and every rule.
    table = {(_fill(path), method) for path, _, methods, _ in route_table() for method in methods}
    covered = {(c.path.split("?")[0], c.method) for c in all_cases()}
    assert table <= covered, table - covered
    assert {c.name for c in all_cases()} == set(RULES)


def _denied_check(case: Case, path: str, r, who):
    path = path.split("?")[0]
    if who is None:
        if case.api:
            assert r.status_code == 401, (r.status_code, r.text[:300])
            assert r.json() == {"error": "unauthenticated", "message": "Please log in."}
        else:
            assert r.status_code == 303, (r.status_code, r.text[:300])
            assert r.headers["location"] == f"/login?next={path}&m=login"
        return
    assert r.status_code == 403, (r.status_code, r.text[:300])
    if case.api:
        assert r.json() == {"error": "forbidden", "message": "You do not have access to this."}
    else:
        assert "You do not have access to this." in r.text


@pytest.mark.parametrize("transport", ["session", "token"])
async def test_access_matrix(transport, settings, services, make_web, make_token, branches):
    """RULES decides every answer: allowed → the page or JSON; denied → login redirect, 401 or 403."""
    member = await enrol(services, "Matrix Member", "BLR", pin="4321")
    users = {"member": await member_user(services, member)}
    for role in ROLES[1:]:
        users[role] = await quick_user(services, f"u-{role.replace('_', '-')}", [role])
    target = await quick_user(services, "target-user", ["collector"], "MYS")
    ctx = {"member_no": member.member_no, "target": target.username,
           "usernames": {role: u.username for role, u in users.items()}}
    token = csrf_for(settings)

    clients: dict[str | None, object] = {}
    tokens: dict[str, str] = {}
    for who in WHO:
        web = await make_web()
        web.client.cookies.set(CSRF_COOKIE, SEED)
        if who is not None:
            web.client.cookies.set(SESSION_COOKIE, await login_cookie(services, users[who]))
            tokens[who] = await make_token(users[who])
        clients[who] = web

    checked = 0
    cases = all_cases()
    for case in sorted(cases, key=lambda c: c.last):
        rule: Rule = RULES[case.name]
        path = case.path.format(**ctx)
        for who in WHO:
            web = clients[who]
            headers = {}
            if case.api and transport == "token":
                # Bearer tokens only: drop the cookie so the token alone decides.
                if who is not None:
                    headers["Authorization"] = f"Bearer {tokens[who]}"
                cookies_backup = web.client.cookies.get(SESSION_COOKIE)
                web.client.cookies.delete(SESSION_COOKIE)
            elif case.api and case.method != "GET":
                headers["X-CSRF-Token"] = token
            try:
                if case.data is not None:
                    r = await web.client.request(case.method, path, data={**case.data, "csrf_token": token},
                                                 headers=headers)
                elif case.json is not None:
                    r = await web.client.request(case.method, path, json=case.json, headers=headers)
                else:
                    r = await web.client.request(case.method, path, headers=headers)
            finally:
                if case.api and transport == "token" and cookies_backup:
                    web.client.cookies.set(SESSION_COOKIE, cookies_backup)
            principal_allowed = rule.public or (who is not None and (not rule.roles or who in rule.roles))
            try:
                if principal_allowed:
                    case.allowed(r, who, ctx)
                else:
                    _denied_check(case, path, r, who)
            except AssertionError as exc:
                raise AssertionError(f"{case.method} {path} as {who or 'anonymous'} ({transport}): {exc}") from exc
            checked += 1
    assert checked == len(cases) * len(WHO)

    # The office bearer's allowed call ended the target's sessions; the logout cases ended everyone's.
    async with services.sessions() as db:
        live = (await db.execute(select(func.count()).select_from(WebSession))).scalar_one()
    assert live == 0


# --- Branch limits ------------------------------------------------------------------

@pytest.fixture
async def two_branches(services, branches, make_web, make_token):
    blr = await enrol(services, "Asha Common", "BLR", pin="1111")
    mys = await enrol(services, "Bhavya Common", "MYS", pin="2222")
    collector = await quick_user(services, "col-blr", ["collector"], "BLR")
    bearer = await quick_user(services, "ob-all", ["office_bearer"])
    out = {"blr": blr, "mys": mys, "users": {}, "web": {}, "token": {}}
    for key, user in [("collector", collector), ("bearer", bearer), ("member", await member_user(services, blr))]:
        web = await make_web()
        web.client.cookies.set(SESSION_COOKIE, await login_cookie(services, user))
        out["web"][key] = web
        out["token"][key] = await make_token(user)
    return out


async def test_collector_cannot_see_other_branch_member(two_branches, make_web):
    t = two_branches
    col = t["web"]["collector"]
    blr, mys = t["blr"].member_no, t["mys"].member_no

    r = await col.get(f"/members/{blr}")
    assert r.status_code == 200 and f'id="member-no">{blr}<' in r.text

    r = await col.get(f"/members/{mys}")
    assert r.status_code == 404
    assert "Bhavya" not in r.text and "No member with that number." in r.text
    unknown = await col.get("/members/BLR-99999")
    assert unknown.status_code == 404
    # Another branch's member looks exactly like a member that does not exist.
    assert r.text.replace(mys, "X") == unknown.text.replace("BLR-99999", "X")

    for via in ("token", "session"):
        kw = {"token": t["token"]["collector"]} if via == "token" else {}
        r = await col.api("GET", f"/api/members/{mys}", **kw)
        assert r.status_code == 404
        assert r.json() == {"error": "not_found", "message": "No member with that number.", "field": "member_no"}
        r2 = await col.api("GET", "/api/members/MYS-99999", **kw)
        assert r2.status_code == 404 and r2.json() == r.json()
        r = await col.api("GET", f"/api/members/{blr}", **kw)
        assert r.status_code == 200 and r.json()["member_no"] == blr


async def test_search_never_returns_other_branches(two_branches):
    t = two_branches
    blr, mys = t["blr"].member_no, t["mys"].member_no
    col, ob = t["web"]["collector"], t["web"]["bearer"]

    r = await col.api("GET", "/api/members?q=common", token=t["token"]["collector"])
    assert r.status_code == 200
    assert [m["member_no"] for m in r.json()["members"]] == [blr]
    # Not by member number either.
    r = await col.api("GET", f"/api/members?q={mys}", token=t["token"]["collector"])
    assert r.json() == {"members": []}
    r = await col.get("/members?q=common")
    assert r.status_code == 200 and f"/members/{blr}" in r.text
    assert mys not in r.text and "Bhavya" not in r.text

    # An office bearer without a branch limit sees both.
    r = await ob.api("GET", "/api/members?q=common", token=t["token"]["bearer"])
    assert sorted(m["member_no"] for m in r.json()["members"]) == sorted([blr, mys])
    r = await ob.get("/members?q=common")
    assert f"/members/{blr}" in r.text and f"/members/{mys}" in r.text
    for no in (blr, mys):
        r = await ob.get(f"/members/{no}")
        assert r.status_code == 200 and f'id="member-no">{no}<' in r.text
        r = await ob.api("GET", f"/api/members/{no}", token=t["token"]["bearer"])
        assert r.status_code == 200 and r.json()["member_no"] == no


async def test_member_sees_only_themself(two_branches):
    t = two_branches
    me, other = t["blr"].member_no, t["mys"].member_no
    web, token = t["web"]["member"], t["token"]["member"]
    for kw in ({"token": token}, {}):
        r = await web.api("GET", f"/api/members/{me}", **kw)
        assert r.status_code == 200
        assert r.json() == {"member_no": me, "name": "Asha Common", "branch": "BLR", "language": "kn",
                            "joined_on": r.json()["joined_on"]}
        r = await web.api("GET", f"/api/members/{other}", **kw)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        # Search and staff pages stay closed to members.
        r = await web.api("GET", "/api/members?q=common", **kw)
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = await web.get(f"/members/{me}")
    assert r.status_code == 403


async def test_collector_cannot_enrol_in_another_branch(two_branches, services):
    t = two_branches
    r = await t["web"]["collector"].api("POST", "/api/members", token=t["token"]["collector"],
                                        json={"name": "Elsewhere", "branch": "MYS", "language": "kn"})
    assert r.status_code == 403
    assert r.json() == {"error": "forbidden", "message": "You may not enrol members in that branch.", "field": "branch"}
    async with services.sessions() as db:
        assert (await db.execute(select(func.count()).select_from(
            select(members.Member).where(members.Member.working_name == "Elsewhere").subquery()))).scalar_one() == 0
