"""Local stand-ins for the outside services of crisis response, each a real
HTTP/1.1 server on 127.0.0.1 in a daemon thread that speaks the provider's
protocol, so the production adapters (pywebpush + httpx, the Twilio-format SMS
client, the OSRM client) are exercised over a real socket:

- `PushService`: an RFC 8030 push service (POST to the subscription endpoint,
  201 Created with a Location), answering with scripted statuses;
- `TwilioMessagesApi`: the Twilio Messages API (POST
  /2010-04-01/Accounts/{sid}/Messages.json, basic auth, form fields);
- `OsrmServer`: the OSRM table service (GET /table/v1/driving/{lon,lat;...}).

Also the few helpers the crisis adapter tests share: a browser-like push
subscription (key pair + auth secret, decrypts with http_ece), a team factory
over the public API, and a loop that runs due work until nothing is left.
"""

from __future__ import annotations

import abc
import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from union import jobs


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- A generic threaded HTTP server -------------------------------------------------------

@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before anything is sent
    trickle: float = 0.0  # seconds between body bytes (headers are sent at once)


class LocalServer(abc.ABC):
    """Subclasses implement `respond(request) -> Reply`; every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._release = threading.Event()  # set on stop: cuts any scripted delay short
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # idle keep-alive connections do not hold a thread for ever

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Recorded(self.command, parts.path, parse_qs(parts.query),
                                   {k.lower(): v for k, v in self.headers.items()}, body)
                with owner._lock:
                    owner.requests.append(request)
                reply = owner.respond(request)
                if reply.delay and owner._release.wait(reply.delay):
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if reply.trickle:
                    for i in range(len(reply.body)):
                        if owner._release.wait(reply.trickle):
                            return
                        self.wfile.write(reply.body[i:i + 1])
                        self.wfile.flush()
                else:
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *args) -> None:  # quiet test output
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                pass  # a client that gave up (a timeout under test) is expected, not news

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @abc.abstractmethod
    def respond(self, request: Recorded) -> Reply:
        """The reply to one recorded request."""

    def start(self) -> LocalServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def json_reply(status: int, data: dict, **kw) -> Reply:
    return Reply(status, json.dumps(data).encode(), {"Content-Type": "application/json"}, **kw)


# --- Web push service (RFC 8030 / RFC 8291 / RFC 8292) -------------------------------------

class PushService(LocalServer):
    """Accepts messages at /push/<id>; answers the scripted `statuses` in turn, then 201."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []
        self.hold: threading.Event | None = None  # when given, answers wait until it is set (at most 10 s)

    def endpoint(self, name: str | None = None) -> str:
        return f"{self.url}/push/{name or secrets.token_urlsafe(12)}"

    @property
    def posts(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path.startswith("/push/")]

    def respond(self, request: Recorded) -> Reply:
        if request.method != "POST" or not request.path.startswith("/push/"):
            return Reply(404)
        if self.hold is not None:
            deadline = time.monotonic() + 10
            while not self.hold.wait(0.02) and not self._release.is_set() and time.monotonic() < deadline:
                pass
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 201
        if status == 201:
            return Reply(201, headers={"Location": f"{self.url}/message/{secrets.token_hex(8)}"})
        headers = {"Retry-After": "1"} if status in (429, 503) else {}
        return Reply(status, b"", headers)


@dataclass
class BrowserSubscription:
    """What a browser's PushManager.subscribe() makes: a P-256 key pair and a 16-byte auth secret."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: secrets.token_bytes(16))

    @property
    def p256dh(self) -> str:
        return b64url(self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))

    def to_json(self) -> dict:
        """PushSubscription.toJSON()."""
        return {"endpoint": self.endpoint, "expirationTime": None, "keys": {"p256dh": self.p256dh, "auth": b64url(self.auth)}}

    def decrypt(self, body: bytes) -> bytes:
        return http_ece.decrypt(body, private_key=self.private_key, auth_secret=self.auth, version="aes128gcm")


# --- Twilio Messages API --------------------------------------------------------------------

class TwilioMessagesApi(LocalServer):
    """POST /2010-04-01/Accounts/{sid}/Messages.json with basic auth and form fields To, From, Body."""

    PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")

    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "local-twilio-token") -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.statuses: list[int] = []
        self.messages: list[dict] = []

    def respond(self, request: Recorded) -> Reply:
        found = self.PATH.match(request.path)
        if request.method != "POST" or not found:
            return json_reply(404, {"code": 20404, "message": "The requested resource was not found", "status": 404})
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if found.group(1) != self.account_sid or request.headers.get("authorization") != expected:
            return json_reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return json_reply(400, {"code": 20001, "message": "Expected a form body", "status": 400})
        form = {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 201
        if status != 201:
            return json_reply(status, {"code": 20429 if status == 429 else 20500, "message": "scripted failure",
                                       "status": status})
        if not form.get("To") or not form.get("Body") or not form.get("From"):
            return json_reply(400, {"code": 21604, "message": "A 'To', 'From' and 'Body' are required", "status": 400})
        if not re.fullmatch(r"\+[1-9]\d{7,14}", form["To"]):
            return json_reply(400, {"code": 21211, "message": f"The 'To' number {form['To']} is not valid",
                                    "status": 400})
        sid = "SM" + secrets.token_hex(16)
        message = {"sid": sid, "account_sid": self.account_sid, "to": form["To"], "from": form["From"],
                   "body": form["Body"], "status": "queued", "num_segments": "1", "direction": "outbound-api",
                   "api_version": "2010-04-01", "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json"}
        with self._lock:
            self.messages.append(message)
        return json_reply(201, message)


# --- OSRM table service -----------------------------------------------------------------------

class OsrmServer(LocalServer):
    """GET /table/v1/driving/{lon,lat;lon,lat;...}?sources=..&destinations=.. → a durations matrix.

    `travel(from_latlon, to_latlon)` gives seconds (None = no route). `status`,
    `delay` and `trickle` script a failing or slow server.
    """

    PATH = re.compile(r"^/table/v1/driving/(.+)$")

    def __init__(self, travel: Callable[[tuple[float, float], tuple[float, float]], float | None]) -> None:
        super().__init__()
        self.travel = travel
        self.status = 200
        self.delay = 0.0
        self.trickle = 0.0

    def respond(self, request: Recorded) -> Reply:
        found = self.PATH.match(request.path)
        if request.method != "GET" or not found:
            return json_reply(400, {"code": "InvalidUrl", "message": "URL string malformed"})
        if self.status != 200:
            return Reply(self.status, b"<html>Internal Server Error</html>", {"Content-Type": "text/html"})
        try:
            coords = [tuple(float(x) for x in pair.split(",")) for pair in found.group(1).split(";")]
            assert all(len(c) == 2 and -180 <= c[0] <= 180 and -90 <= c[1] <= 90 for c in coords)
        except (ValueError, AssertionError):
            return json_reply(400, {"code": "InvalidQuery", "message": "Query string malformed"})

        def indexes(name: str) -> list[int]:
            value = request.query.get(name, ["all"])[0]
            return list(range(len(coords))) if value == "all" else [int(i) for i in value.split(";")]

        sources, destinations = indexes("sources"), indexes("destinations")
        latlon = [(lat, lon) for lon, lat in coords]
        durations = [[0.0 if s == d else self.travel(latlon[s], latlon[d]) for d in destinations] for s in sources]
        body = {"code": "Ok", "durations": durations,
                "sources": [{"location": list(coords[i]), "name": ""} for i in sources],
                "destinations": [{"location": list(coords[i]), "name": ""} for i in destinations]}
        return json_reply(200, body, delay=self.delay, trickle=self.trickle)


# --- Fixtures --------------------------------------------------------------------------------

@pytest.fixture
def push_service():
    with PushService() as server:
        yield server


@pytest.fixture
def twilio_api():
    with TwilioMessagesApi() as server:
        yield server


# --- Helpers shared by the adapter tests ----------------------------------------------------

async def run_all_due(services, *, rounds: int = 10) -> int:
    """Run due work until a sweep completes nothing (follow-ups made due by a handler run next round)."""
    total = 0
    for _ in range(rounds):
        done = await jobs.sweep(services)
        if not done:
            break
        total += done
    return total


async def create_team(web, token: str, *, name: str, base: tuple[float, float], members: list,
                      skills: list[str] | None = None, languages: list[str] | None = None,
                      branch: str = "BLR") -> dict:
    """POST /api/crisis/teams as a dispatcher; `members` are usernames or {"username", "phone"}."""
    response = await web.api("POST", "/api/crisis/teams", token=token, json={
        "name": name, "branch": branch, "base": {"lat": base[0], "lon": base[1]},
        "skills": skills if skills is not None else ["counselling"],
        "languages": languages or ["en", "kn"], "members": members})
    assert response.status_code == 201, response.text
    return response.json()


async def set_user_language(services, username: str, language: str) -> None:
    from sqlalchemy import update

    from union.models import User

    async with services.sessions() as db:
        await db.execute(update(User).where(User.username == username).values(language=language))
        await db.commit()

