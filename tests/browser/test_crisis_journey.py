"""The crisis journey end to end in a real browser (headless Chromium), on SQLite
and on PostgreSQL: a caller asks for help on the public page, the nearest team's
phone is alerted by web push, the team accepts, and the dispatcher board and the
caller's status page show it.

What is real and what stands in:
- The app runs under uvicorn with its own services and embedded job runner
  (tests/browser/conftest.py); the offer's push alert is a due-work row that the
  runner sends with the production sender (pywebpush encryption + httpx, VAPID
  signed) to a local RFC 8030 push service on 127.0.0.1 (tests/crisis/localservers.py).
- Chromium cannot make a push subscription here: Playwright's contexts are
  incognito-like and Chromium has no Push API there (and its push service is not
  reachable offline). So the team page posts, through the app's own
  /api/push/subscriptions with its session and CSRF token, a subscription whose
  keys the test holds (as a browser's PushManager would make them).
- The push service's leg to the phone is the DevTools protocol: the test
  decrypts what the app sent with the subscription's private key and hands
  exactly those bytes to the page's service worker with
  ServiceWorker.deliverPushMessage. The service worker's push handler and
  team.js do the rest; the 5-second offer polling of team.js never navigates,
  so the page reaching the offer proves the push path.

Screenshots of every step go to test-artifacts/crisis-journey/ (not in git).
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from crisis import services as crisis
from crisis.models import Incident, Offer, PushSubscription
from tests.browser.conftest import ARTIFACTS, eventually, staff_login
from tests.conftest import PASSWORD
from tests.crisis.localservers import BrowserSubscription, PushService

pytestmark = pytest.mark.browser

SHOTS = ARTIFACTS / "crisis-journey"
BENGALURU = (12.9716, 77.5946)  # the team's base, about 6 km from Koramangala
PHONE = {"viewport": {"width": 412, "height": 860}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
# The offer must reach the page by push, well before team.js's 5-second poll could matter.
PUSH_REACTION_SECONDS = 3.0


@pytest.fixture
def push_service():
    with PushService() as server:
        yield server


@pytest.fixture
def settings(settings, push_service):
    # The production push sender, allowed to post to the local push service over http on 127.0.0.1.
    return settings.model_copy(update={"push_backend": "webpush", "push_allow_local_endpoints": True})


def _async(check):
    """An async check for `eventually` from a plain one."""
    async def run() -> bool:
        return check()

    return run


def path_of(url: str) -> str:
    return urlsplit(url).path


class Shots:
    """Numbered screenshots of the journey, one set per backend."""

    def __init__(self, backend: str):
        self.backend = backend
        self.n = 0
        SHOTS.mkdir(parents=True, exist_ok=True)

    async def take(self, page, name: str) -> None:
        self.n += 1
        await page.screenshot(path=str(SHOTS / f"{self.n:02d}-{name}-{self.backend}.png"), full_page=True)


async def service_worker_activated(page) -> str:
    """Wait until the page's service worker is registered and activated; returns its scope."""
    return await page.evaluate("""() => navigator.serviceWorker.ready.then(reg => new Promise(resolve => {
        const worker = reg.active;
        if (worker.state === "activated") return resolve(reg.scope);
        worker.addEventListener("statechange", () => { if (worker.state === "activated") resolve(reg.scope); });
    }))""")


async def post_subscription(page, subscription: dict) -> dict:
    """What team.js does with a fresh PushSubscription: POST it with the page's session and CSRF token."""
    return await page.evaluate("""async (sub) => {
        const csrf = document.getElementById("team-config").getAttribute("data-csrf");
        const r = await fetch("/api/push/subscriptions", {method: "POST", credentials: "same-origin",
            headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(sub)});
        return {status: r.status, body: await r.json()};
    }""", subscription)


async def test_help_request_reaches_the_team_by_push_is_accepted_and_shows_on_the_board(
        request, browse, services, make_user, push_service):
    shots = Shots(request.node.callspec.params.get("backend", ""))
    base = browse.base_url

    # --- The people and the team ---------------------------------------------------------
    await make_user("dispatcher1", ["dispatcher"], "BLR")
    await make_user("responder1", ["crisis_responder"], "BLR")
    async with services.sessions() as db:
        team = await crisis.create_team(db, data=crisis.NewTeam(
            name="Koramangala Team", branch="BLR", base_lat=BENGALURU[0], base_lon=BENGALURU[1],
            skills=["counselling", "legal"], languages=["kn", "en"], members=["responder1"], status="available"),
            principal=None)
        await db.commit()
        team_id = team.id

    # --- A: the team's phone opens the team app; its service worker comes up ------------------
    phone = await browse.new_page(**PHONE)
    await phone.context.grant_permissions(["notifications"], origin=base)
    await staff_login(phone, base, "responder1", PASSWORD)
    await phone.goto(browse.url("/crisis/team"))
    assert await service_worker_activated(phone) == base + "/"
    assert await phone.locator(f"section.team[data-team='{team_id}'] .team-status").inner_text() == "available"
    # No push subscription in this browser (see the module docstring), so team.js offers to turn alerts on.
    await phone.locator("#push-panel").wait_for(state="visible")

    device = BrowserSubscription(push_service.endpoint("team-phone"))
    answer = await post_subscription(phone, device.to_json())
    assert answer["status"] == 201, answer
    async with services.sessions() as db:
        (sub,) = (await db.execute(select(PushSubscription))).scalars().all()
        assert (sub.endpoint, sub.p256dh) == (device.endpoint, device.p256dh)
    await shots.take(phone, "team-app-waiting")

    cdp = await phone.context.new_cdp_session(phone)
    registrations: dict[str, str] = {}

    def registration_updated(params: dict) -> None:
        for reg in params["registrations"]:
            if reg["isDeleted"]:
                registrations.pop(reg["registrationId"], None)
            else:
                registrations[reg["registrationId"]] = reg["scopeURL"]

    cdp.on("ServiceWorker.workerRegistrationUpdated", registration_updated)
    await cdp.send("ServiceWorker.enable")
    assert await eventually(_async(lambda: base + "/" in registrations.values())), registrations
    (registration_id,) = [rid for rid, scope in registrations.items() if scope == base + "/"]

    # --- B: a caller, not logged in, asks for help --------------------------------------------
    caller = await browse.new_page(**PHONE)
    await caller.goto(browse.url("/help"))
    await caller.locator("label.kind-button", has=caller.locator("input[value=client_violence]")).click()
    assert await caller.locator("input[name=kind][value=client_violence]").is_checked()
    await caller.fill("#area", "Koramangala")
    await caller.select_option("#language", "kn")
    await shots.take(caller, "caller-get-help")
    async with caller.expect_navigation():
        await caller.click("#help-form button[type=submit]")
    found = re.fullmatch(r"/help/status/([A-Z0-9-]+)", path_of(caller.url))
    assert found, caller.url
    reference = found.group(1)
    assert (await caller.text_content("#reference")).strip() == reference
    assert await caller.get_attribute("#status", "data-status") == "offered"
    await shots.take(caller, "caller-status-offered")

    async with services.sessions() as db:
        incident = (await db.execute(select(Incident).where(Incident.reference == reference))).scalar_one()
        (offer,) = (await db.execute(select(Offer).where(Offer.incident_id == incident.id))).scalars().all()
        incident_id, offer_id = incident.id, offer.id
    # The area was found in the gazetteer (and stored with its district).
    assert (incident.kind, incident.language, incident.area) == ("client_violence", "kn", "Koramangala, Bengaluru Urban")
    assert (offer.team_id, offer.status) == (team_id, "pending")

    # --- C: the dispatcher's board shows the incident offered ------------------------------------
    board = await browse.new_page()
    await staff_login(board, base, "dispatcher1", PASSWORD)
    await board.goto(browse.url("/crisis/board"))
    row = board.locator(f"#incidents li[data-id='{incident_id}']")
    assert await row.get_attribute("data-status") == "offered"
    assert reference in await row.inner_text()
    await shots.take(board, "board-offered")

    # --- The app's push alert, as the push service received it ---------------------------------
    assert await eventually(_async(lambda: len(push_service.posts) >= 1), timeout=10), "no push reached the push service"
    (message,) = push_service.posts
    assert message.path == urlsplit(device.endpoint).path
    assert message.headers["urgency"] == "high"
    assert int(message.headers["ttl"]) >= 60
    assert message.headers["content-encoding"] == "aes128gcm"
    assert message.headers["authorization"].startswith("vapid t=")
    plaintext = device.decrypt(message.body)
    # DESIGN §5: the payload is the offer id and nothing else (no place, kind or name on a lock screen).
    assert json.loads(plaintext) == {"type": "offer", "offer": offer_id}

    # --- The push service's leg to the phone: DevTools delivers exactly those bytes ---------------
    assert path_of(phone.url) == "/crisis/team"
    started = time.monotonic()
    await cdp.send("ServiceWorker.deliverPushMessage",
                   {"origin": base, "registrationId": registration_id, "data": plaintext.decode()})
    # The service worker posts the message to the page and team.js opens the offer (polling never navigates).
    await phone.wait_for_url(f"{base}/crisis/offers/{offer_id}", timeout=PUSH_REACTION_SECONDS * 1000)
    assert time.monotonic() - started < PUSH_REACTION_SECONDS
    # And it showed a notification, in neutral words, for whoever looks at a locked phone.
    shown = await phone.evaluate("""() => navigator.serviceWorker.ready.then(r => r.getNotifications())
        .then(ns => ns.map(n => ({title: n.title, body: n.body, tag: n.tag, url: n.data && n.data.url})))""")
    assert shown == [{"title": "Sangha", "body": "Open the app", "tag": f"offer:{offer_id}",
                      "url": f"/crisis/offers/{offer_id}"}]
    assert await phone.locator("#accept").is_visible()
    assert await phone.locator("#decline").is_visible()
    await shots.take(phone, "team-offer")

    # --- The team accepts ---------------------------------------------------------------------------
    async with phone.expect_navigation():
        await phone.click("#accept")
    assert path_of(phone.url) == f"/crisis/incidents/{incident_id}"
    assert await phone.get_attribute("#incident-status", "data-status") == "accepted"
    await shots.take(phone, "team-incident-accepted")

    # --- The board updates by itself (it polls every 3 s) ---------------------------------------------
    await board.locator(f"#incidents li[data-id='{incident_id}'][data-status='accepted']").wait_for()
    # Redrawn by board.js from /api/crisis/board, still in the page's words rather than codes.
    assert await row.locator(".badge.status-accepted").inner_text() == "A team is coming"
    assert "Violence by a client" in await row.inner_text()
    assert "Koramangala Team: accepted" in await row.inner_text()
    await shots.take(board, "board-accepted")

    # --- The caller's status page says a team is coming --------------------------------------------
    await caller.reload()
    assert await caller.get_attribute("#status", "data-status") == "accepted"
    assert "A team is coming" in await caller.inner_text("#status")
    await shots.take(caller, "caller-status-accepted")

    # Once answered, the offer is not pushed again.
    async with services.sessions() as db:
        offer = await db.get(Offer, offer_id)
        incident = await db.get(Incident, incident_id)
        assert offer.status == "accepted" and incident.status == "accepted" and incident.accepted_at is not None
    assert len(push_service.posts) == 1

