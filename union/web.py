"""The web edge shared by every domain: templates, the policy guard that wraps
every route (principal, language, CSRF, rule), security headers, and turning
errors into clear answers in the user's language (JSON under /api/, pages
elsewhere)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path

import jinja2
import markupsafe
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from union import accounts, i18n
from union.errors import InvalidInput, UnionError
from union.i18n import _
from union.policy import Principal, Rule

ROOT = Path(__file__).resolve().parent.parent
SESSION_COOKIE = "union_session"
CSRF_COOKIE = "union_csrf"
LANG_COOKIE = "union_lang"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'; manifest-src 'self'; worker-src 'self'")


def _make_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROOT / "templates")),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_callables(
        lambda s, **kw: i18n.gettext(s, **kw) if kw else i18n.gettext(s),
        lambda s, p, n, **kw: i18n.ngettext(s, p, n, **kw),
        newstyle=True,
    )
    env.globals["icon"] = icon
    env.filters["language_name"] = lambda code: i18n.SPOKEN_LANGUAGE_NAMES.get(code, code)
    return env


def icon(name: str):
    """An icon from the app's own SVG sprite, shown beside words (never instead of them)."""
    return markupsafe.Markup(
        f'<svg class="icon" aria-hidden="true" focusable="false"><use href="/static/icons.svg#{markupsafe.escape(name)}"></use></svg>')


templates = Jinja2Templates(env=_make_env())


def services(request: Request):
    return request.app.state.services


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


# --- CSRF -------------------------------------------------------------------

def csrf_token(request: Request) -> str:
    """The token forms must echo: an HMAC of the per-browser random seed cookie."""
    seed = request.state.csrf_seed if hasattr(request.state, "csrf_seed") else None
    if seed is None:
        seed = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        request.state.csrf_seed = seed
    key = services(request).settings.resolved_secret_key.encode()
    return hmac.new(key, seed.encode(), hashlib.sha256).hexdigest()


def _csrf_ok(request: Request, presented: str | None) -> bool:
    if not presented or not request.cookies.get(CSRF_COOKIE):
        return False
    return hmac.compare_digest(presented, csrf_token(request))


def renew_csrf(request: Request) -> None:
    """A new seed at login, like the session id."""
    request.state.csrf_seed = secrets.token_urlsafe(24)


def set_cookie(request: Request, response: Response, name: str, value: str, *, max_age: int | None = None,
               httponly: bool = True) -> None:
    response.set_cookie(name, value, max_age=max_age, httponly=httponly, samesite="lax", path="/",
                        secure=services(request).settings.secure_cookies)


# --- Rendering and errors ------------------------------------------------------

def render(request: Request, name: str, context: dict | None = None, status_code: int = 200) -> HTMLResponse:
    ctx = dict(context or {})
    ctx.setdefault("principal", getattr(request.state, "principal", None))
    ctx["lang"] = i18n.current_language()
    ctx["languages"] = i18n.LANGUAGES
    ctx["csrf_token"] = csrf_token(request)
    ctx["quick_exit_url"] = services(request).settings.quick_exit_url
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)


def json_error(status: int, message: str, *, code: str = "error", field: str | None = None) -> JSONResponse:
    body = {"error": code, "message": message}
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status)


def error_response(request: Request, status: int, message: str, *, code: str = "error",
                   field: str | None = None) -> Response:
    if is_api(request):
        return json_error(status, message, code=code, field=field)
    return render(request, "union/error.html", {"status": status, "message": message}, status_code=status)


def union_error_response(request: Request, exc: UnionError) -> Response:
    return error_response(request, exc.status_code, exc.message, code=exc.code, field=exc.field)


HTTP_MESSAGES = {
    404: lambda: _("This page does not exist."),
    405: lambda: _("This action is not possible here."),
    413: lambda: _("What you sent is too large."),
    415: lambda: _("Please send JSON (Content-Type: application/json)."),
}


async def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    if not hasattr(request.state, "language_set"):
        i18n.set_language(i18n.choose_language(user_language=None, cookie=request.cookies.get(LANG_COOKIE),
                                               accept_language=request.headers.get("accept-language")))
    message = HTTP_MESSAGES.get(exc.status_code, lambda: _("Something went wrong."))()
    response = error_response(request, exc.status_code, message, code=str(exc.status_code))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def union_error_handler(request: Request, exc: UnionError) -> Response:
    return union_error_response(request, exc)


# --- Reading input -----------------------------------------------------------

async def read_json(request: Request) -> dict:
    if "application/json" not in request.headers.get("content-type", ""):
        raise HTTPException(415)
    try:
        data = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(_("The request body is not valid JSON.")) from None
    if not isinstance(data, dict):
        raise InvalidInput(_("The request body must be a JSON object."))
    return data


# --- The guard -------------------------------------------------------------

async def load_principal(request: Request) -> Principal | None:
    svc = services(request)
    auth = request.headers.get("authorization", "")
    raw_cookie = request.cookies.get(SESSION_COOKIE)
    if not auth and not raw_cookie:
        return None
    action = None
    async with svc.reader() as db:
        if auth.lower().startswith("bearer "):
            user = await accounts.resolve_token(db, auth[7:].strip())
            return await accounts.principal_for(db, user, "token") if user else None
        if not raw_cookie:
            return None
        user, action = await accounts.resolve_session(db, raw_cookie, idle_minutes=svc.settings.session_idle_minutes)
        principal = await accounts.principal_for(db, user, "session") if user else None
    if action:  # after the read transaction: on SQLite a second session inside it would wait for itself
        async with svc.sessions() as db:
            await accounts.settle_session(db, raw_cookie, action)
            await db.commit()
    if principal is None:  # a cookie that no longer opens a session: ended, timed out or revoked
        request.state.session_expired = True
    return principal


def guard(name: str, rule: Rule, endpoint):
    """Wrap an endpoint with the one policy check."""

    async def guarded(request: Request) -> Response:
        principal = await load_principal(request)
        request.state.principal = principal
        lang = i18n.choose_language(
            user_language=getattr(principal.user, "language", None) if principal else None,
            cookie=request.cookies.get(LANG_COOKIE),
            accept_language=request.headers.get("accept-language"),
            default=services(request).settings.default_language,
        )
        i18n.set_language(lang)
        request.state.language_set = True
        try:
            if request.method not in SAFE_METHODS and rule.csrf:
                if is_api(request):
                    # Bearer tokens are not sent by browsers on their own; cookie sessions need the header.
                    if principal is not None and principal.via == "session" and not _csrf_ok(
                            request, request.headers.get("x-csrf-token")):
                        return error_response(request, 403, _("Missing or wrong security token. Reload the page and try again."), code="csrf")
                else:
                    form = await request.form()
                    if not _csrf_ok(request, form.get("csrf_token")):
                        return error_response(request, 403, _("This form has expired. Please go back, reload the page and try again."), code="csrf")
            if not rule.allows(principal):
                if principal is None:
                    if is_api(request):
                        return json_error(401, _("Please log in."), code="unauthenticated")
                    message = "expired" if getattr(request.state, "session_expired", False) else "login"
                    return RedirectResponse(f"/login?next={request.url.path}&m={message}", status_code=303)
                return error_response(request, 403, _("You do not have access to this."), code="forbidden")
            response = await endpoint(request)
        except UnionError as exc:
            response = union_error_response(request, exc)
        seed = getattr(request.state, "csrf_seed", None)
        if seed and seed != request.cookies.get(CSRF_COOKIE):
            set_cookie(request, response, CSRF_COOKIE, seed)
        return response

    guarded.__name__ = getattr(endpoint, "__name__", name)
    guarded.__doc__ = endpoint.__doc__
    guarded.policy_rule = rule
    return guarded


class BodyLimitMiddleware:
    """Refuse request bodies above `max_body_bytes` with a clear 413 in the user's
    language (JSON under /api/). Starlette's own limit answers a too-large
    Content-Length with plain English text and bypasses the security headers."""

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            response = await http_exception_handler(Request(scope), HTTPException(413))
            return await response(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413)  # answered by http_exception_handler
            return message

        await self.app(scope, limited_receive, send)


class SecurityHeadersMiddleware:
    """Security headers on every response; no-store on everything that is not a static asset."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in (b"cache-control",) or static]
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"permissions-policy", b"geolocation=(self), camera=(), microphone=()"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
