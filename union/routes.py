"""Routes of the union core: the shell pages, login and logout, members, role
home pages, office-bearer account actions, and their JSON API. Thin: parse,
call one service, render. Access is decided by union.policy through the guard."""

from __future__ import annotations

from urllib.parse import urlencode

from sqlalchemy import select, text
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from union import accounts, audit, i18n, members
from union.errors import InvalidInput, RateLimited, UnionError
from union.forms import EnrolForm, JoinForm, LoginForm, MemberLoginForm, SearchForm, SelectChoice
from union.i18n import _
from union.models import Member, User, WebSession
from union.policy import Principal, home_route
from union.web import (CSRF_COOKIE, LANG_COOKIE, SESSION_COOKIE, read_json, render, renew_csrf, services,
                       set_cookie)


def _principal(request: Request) -> Principal | None:
    return request.state.principal


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _limit(request: Request, key: str, limit: int) -> None:
    svc = services(request)
    if not await svc.rate_limiter.hit(key, limit=limit, window=svc.settings.rate_window_seconds):
        raise RateLimited(_("Too many attempts. Please wait a few minutes and try again."))


# --- Shell -------------------------------------------------------------------

async def index(request: Request) -> Response:
    principal = _principal(request)
    if principal is not None:
        return RedirectResponse(request.url_for(home_route(principal)), status_code=303)
    return render(request, "union/index.html")


async def healthz(request: Request) -> Response:
    svc = services(request)
    try:
        async with svc.reader() as db:
            await db.execute(text("SELECT 1"))
        database = "ok"
    except Exception:  # noqa: BLE001 - health reports, it does not raise
        database = "unavailable"
    body = {"status": "ok" if database == "ok" else "degraded", "database": database,
            "jobs": svc.settings.jobs_mode}
    return JSONResponse(body, status_code=200 if database == "ok" else 503)


def _safe_next(value: str | None) -> str | None:
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return None


async def set_language(request: Request) -> Response:
    form = await request.form()
    lang = form.get("lang")
    if lang not in i18n.LANGUAGES:
        raise InvalidInput(_("Unknown language."))
    principal = _principal(request)
    if principal is not None:
        async with services(request).sessions() as db:
            user = await db.get(User, principal.user.id)
            user.language = lang
            db.add(user)
            await db.commit()
    response = RedirectResponse(_safe_next(form.get("next")) or "/", status_code=303)
    set_cookie(request, response, LANG_COOKIE, lang, max_age=365 * 86400)
    return response


# --- Login and logout --------------------------------------------------------

async def _finish_login(request: Request, user: User) -> Response:
    svc = services(request)
    async with svc.sessions() as db:
        raw = await accounts.start_session(db, user=user, max_hours=svc.settings.session_max_hours)
        principal = await accounts.principal_for(db, user, "session")
        await db.commit()
    # Drop a session cookie the browser may still carry from before: always a fresh id.
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        async with svc.sessions() as db:
            await accounts.end_session(db, old)
            await db.commit()
    renew_csrf(request)
    target = _safe_next(request.query_params.get("next")) or str(request.url_for(home_route(principal)).path)
    response = RedirectResponse(target, status_code=303)
    set_cookie(request, response, SESSION_COOKIE, raw)
    return response


async def login(request: Request) -> Response:
    form = LoginForm(await request.form() if request.method == "POST" else None)
    notice = {"expired": _("Your session has ended. Please log in again."),
              "login": _("Please log in.")}.get(request.query_params.get("m", ""))
    error = None
    if request.method == "POST" and form.validate():
        svc = services(request)
        await _limit(request, f"login-ip:{_client_ip(request)}", svc.settings.login_attempts_per_window * 3)
        await _limit(request, f"login-user:{form.username.data.lower()}", svc.settings.login_attempts_per_window)
        try:
            async with svc.sessions() as db:
                user = await accounts.authenticate_password(db, username=form.username.data,
                                                            password=form.password.data)
        except UnionError as exc:
            error = exc.message
        else:
            return await _finish_login(request, user)
    return render(request, "union/login.html", {"form": form, "error": error, "notice": notice},
                  status_code=401 if error else 200)


async def member_login(request: Request) -> Response:
    form = MemberLoginForm(await request.form() if request.method == "POST" else None)
    error = None
    if request.method == "POST" and form.validate():
        svc = services(request)
        await _limit(request, f"login-ip:{_client_ip(request)}", svc.settings.login_attempts_per_window * 3)
        await _limit(request, f"login-member:{form.member_no.data.upper()}", svc.settings.login_attempts_per_window)
        try:
            async with svc.sessions() as db:
                user = await accounts.authenticate_member_pin(db, member_no=form.member_no.data, pin=form.pin.data)
        except UnionError as exc:
            error = exc.message
        else:
            return await _finish_login(request, user)
    return render(request, "union/member_login.html", {"form": form, "error": error},
                  status_code=401 if error else 200)


async def logout(request: Request) -> Response:
    raw = request.cookies.get(SESSION_COOKIE)
    if raw:
        async with services(request).sessions() as db:
            await accounts.end_session(db, raw)
            await db.commit()
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    response.headers["Clear-Site-Data"] = '"cache", "cookies", "storage"'
    return response


# --- Home pages ---------------------------------------------------------------

async def home(request: Request) -> Response:
    return RedirectResponse(request.url_for(home_route(_principal(request))), status_code=303)


def _role_home(role: str):
    async def page(request: Request) -> Response:
        context = {"role": role}
        if role == "member":
            async with services(request).reader() as db:
                member = await db.get(Member, _principal(request).member_id)
                context["member"] = member
                context["branch_codes"] = await members.branch_codes(db)
        return render(request, f"union/home_{role}.html", context)

    page.__name__ = f"home_{role}"
    return page


# --- Members ------------------------------------------------------------------

async def _branch_choices(request: Request, principal: Principal | None):
    async with services(request).reader() as db:
        branches = await members.list_branches(db)
    if principal is not None:
        from union.policy import can_enrol_in

        branches = [b for b in branches if can_enrol_in(principal, b.id)]
    return [SelectChoice(b.code, b.name) for b in branches]


def _new_member(form) -> members.NewMember:
    data = form.data
    dob = data.get("date_of_birth")
    return members.NewMember(working_name=data["working_name"], branch_code=data["branch"], language=data["language"],
                             phone=data.get("phone"), legal_name=data.get("legal_name"),
                             date_of_birth=dob.isoformat() if dob else None, nominee=data.get("nominee"),
                             pin=data.get("pin"))


async def _enrol_page(request: Request, form_cls, template: str, actor: Principal | None, done) -> Response:
    form = form_cls(await request.form() if request.method == "POST" else None)
    form.branch.choices = await _branch_choices(request, actor)
    if request.method == "GET":
        form.language.data = i18n.current_language() if i18n.current_language() in {c.value for c in form.language.choices} else "kn"
    error = None
    if request.method == "POST":
        svc = services(request)
        if actor is None:
            await _limit(request, f"join-ip:{_client_ip(request)}", svc.settings.public_requests_per_window)
        if form.validate():
            async with svc.sessions() as db:
                try:
                    member = await members.enrol(db, data=_new_member(form), vault=svc.vault,
                                                 phone_hash=svc.phone_hash, actor=actor)
                    await db.commit()
                except UnionError as exc:
                    await db.rollback()
                    error = exc.message
                    if exc.field and hasattr(form, exc.field):
                        getattr(form, exc.field).errors = list(getattr(form, exc.field).errors) + [exc.message]
                else:
                    return done(member)
    status = 422 if request.method == "POST" else 200
    return render(request, template, {"form": form, "error": error}, status_code=status)


async def join(request: Request) -> Response:
    def done(member):
        return RedirectResponse("/join/done?" + urlencode({"no": member.member_no}), status_code=303)

    return await _enrol_page(request, JoinForm, "union/join.html", None, done)


async def joined(request: Request) -> Response:
    # The member number is not sensitive on its own: it is printed on the member card.
    return render(request, "union/joined.html", {"member_no": request.query_params.get("no", "")[:24]})


async def new_member(request: Request) -> Response:
    def done(member):
        return RedirectResponse(f"/members/{member.member_no}?created=1", status_code=303)

    return await _enrol_page(request, EnrolForm, "union/member_new.html", _principal(request), done)


async def member_card(request: Request) -> Response:
    import segno

    async with services(request).reader() as db:
        member = await db.get(Member, _principal(request).member_id)
        codes = await members.branch_codes(db)
    qr = segno.make(member.member_no, error="m").svg_inline(scale=6, dark="#111", light="#fff")
    return render(request, "union/member_card.html", {"member": member, "qr": qr, "branch": codes[member.branch_id]})


async def search_members(request: Request) -> Response:
    form = SearchForm(request.query_params)
    results = []
    svc = services(request)
    if form.q.data:
        async with svc.sessions() as db:
            results = await members.search(db, query=form.q.data, principal=_principal(request),
                                           phone_hash=svc.phone_hash)
            codes = await members.branch_codes(db)
            await db.commit()
    else:
        codes = {}
    return render(request, "union/members_search.html", {"form": form, "results": results, "codes": codes})


async def member_detail(request: Request) -> Response:
    svc = services(request)
    principal = _principal(request)
    async with svc.sessions() as db:
        member = await members.get_member(db, member_no=request.path_params["member_no"], principal=principal)
        sensitive = None
        if request.query_params.get("reveal") == "1":
            sensitive = await members.read_sensitive(db, member=member, vault=svc.vault, principal=principal)
        codes = await members.branch_codes(db)
        await db.commit()
    return render(request, "union/member_detail.html",
                  {"member": member, "sensitive": sensitive, "branch": codes[member.branch_id],
                   "created": request.query_params.get("created") == "1"})


# --- Office bearer: accounts ------------------------------------------------------

async def users_page(request: Request) -> Response:
    q = (request.query_params.get("q") or "").strip().lower()[:64]
    async with services(request).sessions() as db:
        stmt = select(User).order_by(User.username).limit(50)
        if q:
            stmt = stmt.where(User.username.contains(q))
        users = list((await db.execute(stmt)).scalars())
        live = {uid for (uid,) in (await db.execute(select(WebSession.user_id))).all()}
    return render(request, "union/users.html", {"users": users, "live": live, "q": q,
                                                "ended": request.query_params.get("ended")})


async def end_sessions(request: Request) -> Response:
    async with services(request).sessions() as db:
        user = await accounts.get_user(db, request.path_params["username"])
        await accounts.end_all_sessions(db, user=user, actor=_principal(request).user)
        await db.commit()
    return RedirectResponse("/office/users?" + urlencode({"ended": user.username}), status_code=303)


# --- JSON API -----------------------------------------------------------------

def member_json(member: Member, codes: dict[int, str]) -> dict:
    return {"member_no": member.member_no, "name": member.working_name, "branch": codes[member.branch_id],
            "language": member.language, "joined_on": member.joined_on.isoformat()}


async def api_branches(request: Request) -> Response:
    async with services(request).reader() as db:
        branches = await members.list_branches(db)
    return JSONResponse({"branches": [{"code": b.code, "name": b.name, "lat": b.lat, "lon": b.lon} for b in branches]})


async def api_me(request: Request) -> Response:
    p = _principal(request)
    return JSONResponse({"username": p.user.username, "roles": sorted(p.role_names),
                         "member_no": None if p.member_id is None else await _member_no(request, p.member_id)})


async def _member_no(request: Request, member_id: int) -> str:
    async with services(request).reader() as db:
        return (await db.get(Member, member_id)).member_no


def _text(data: dict, key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidInput(_("%(field)s is required and must be text.", field=key), field=key)
    return value


async def api_create_member(request: Request) -> Response:
    data = await read_json(request)
    svc = services(request)
    new = members.NewMember(working_name=_text(data, "name", required=True), branch_code=_text(data, "branch", required=True),
                            language=_text(data, "language", required=True), phone=_text(data, "phone"),
                            legal_name=_text(data, "legal_name"), date_of_birth=_text(data, "date_of_birth"),
                            nominee=_text(data, "nominee"), pin=_text(data, "pin"))
    async with svc.sessions() as db:
        member = await members.enrol(db, data=new, vault=svc.vault, phone_hash=svc.phone_hash,
                                     actor=_principal(request))
        codes = await members.branch_codes(db)
        await db.commit()
    return JSONResponse(member_json(member, codes), status_code=201)


async def api_search_members(request: Request) -> Response:
    svc = services(request)
    q = (request.query_params.get("q") or "")[:80]
    async with svc.sessions() as db:
        found = await members.search(db, query=q, principal=_principal(request), phone_hash=svc.phone_hash)
        codes = await members.branch_codes(db)
        await db.commit()
    return JSONResponse({"members": [member_json(m, codes) for m in found]})


async def api_get_member(request: Request) -> Response:
    async with services(request).sessions() as db:
        member = await members.get_member(db, member_no=request.path_params["member_no"], principal=_principal(request))
        codes = await members.branch_codes(db)
        await audit.record(db, action="member.read", actor=_principal(request).user, target_type="member",
                           target_id=member.member_no)
        await db.commit()
    return JSONResponse(member_json(member, codes))
