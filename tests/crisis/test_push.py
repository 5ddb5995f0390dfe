"""Web push against a local push service that speaks RFC 8030: the real
WebPushSender (pywebpush aes128gcm + VAPID over the shared httpx client) posts
to 127.0.0.1, the test holds the subscription's private key like a phone and
decrypts what arrived. Also what happens when the push service says the
subscription is gone or asks us to come back later, which endpoints may be
subscribed at all, and the installable team app's service worker and manifest."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from sqlalchemy import func, select

import union.jobs
from crisis.models import Offer, OfferStatus, PushSubscription
from crisis.push import endpoint_allowed
from tests.conftest import PASSWORD
from tests.crisis.localservers import (BrowserSubscription, b64url_decode, create_team, push_service,  # noqa: F401
                                       run_all_due)
from union.models import DueState, DueWork, utcnow

ACK = 90  # above the 60 s floor of the TTL, so the test sees the window, not the floor
KORAMANGALA = (12.9271, 77.6266)
TEAM_BASE = (12.9350, 77.6200)  # about 1 km away


@pytest.fixture
def settings_update():
    return {"push_allow_local_endpoints": True, "ack_timeout_seconds": ACK}


@pytest.fixture
def settings(settings, settings_update):
    return settings.model_copy(update=settings_update)


def verify_es256(token: str, public_key_b64: str) -> dict:
    """Check a VAPID JWT's ES256 signature with the server's public key; return its claims."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    assert json.loads(b64url_decode(header_b64))["alg"] == "ES256"
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(public_key_b64))
    signature = b64url_decode(signature_b64)
    assert len(signature) == 64  # JOSE form: r || s
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    key.verify(der, f"{header_b64}.{payload_b64}".encode(), ec.ECDSA(hashes.SHA256()))  # raises if forged
    return json.loads(b64url_decode(payload_b64))


class Scene:
    """A dispatcher, one responder whose phone subscribed to push, and the responder's team."""

    def __init__(self, *, responder, dispatcher_token, browser, team, caller):
        self.responder, self.dispatcher_token = responder, dispatcher_token
        self.browser, self.team, self.caller = browser, team, caller

    async def call_for_help(self) -> dict:
        response = await self.caller.api("POST", "/api/crisis/incidents", json={
            "kind": "client_violence", "language": "kn", "location": {"area": "Koramangala"},
            "callback_phone": "+919812345678", "note": "he has a knife"})
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture
async def scene(web, make_web, make_user, make_token, push_service):  # noqa: F811
    dispatcher = await make_user("disp", ["dispatcher"], "BLR")
    dispatcher_token = await make_token(dispatcher)
    await make_user("asha", ["crisis_responder"], "BLR")
    # The team app subscribes as the browser does: a logged-in session, CSRF header, PushSubscription.toJSON().
    assert (await web.login("asha", PASSWORD)).status_code == 303
    await web.get("/crisis/team")
    browser = BrowserSubscription(push_service.endpoint())
    response = await web.api("POST", "/api/push/subscriptions", json=browser.to_json(),
                             headers={"X-CSRF-Token": web.csrf})
    assert response.status_code == 201, response.text
    office = await make_web()
    team = await create_team(office, dispatcher_token, name="Koramangala crisis team", base=TEAM_BASE,
                             members=[{"username": "asha", "phone": "98765 43210"}])
    return Scene(responder=web, dispatcher_token=dispatcher_token, browser=browser, team=team,
                 caller=await make_web())


async def _offer(services) -> Offer:
    async with services.sessions() as db:
        return (await db.execute(select(Offer))).scalar_one()


async def _push_rows(services) -> list[DueWork]:
    async with services.sessions() as db:
        return list((await db.execute(select(DueWork).where(DueWork.kind == "crisis.push"))).scalars())


async def _subscriptions(services) -> list[PushSubscription]:
    async with services.sessions() as db:
        return list((await db.execute(select(PushSubscription))).scalars())


# --- The alert a phone receives ----------------------------------------------------------

async def test_offer_alert_reaches_the_push_service_signed_encrypted_and_carrying_only_the_offer_id(
        scene, services, push_service):  # noqa: F811
    vapid_key = (await scene.caller.api("GET", "/api/push/vapid-public-key")).json()["key"]
    await scene.call_for_help()
    assert push_service.posts == []  # only a due-work row so far (no job runner in this test)

    await run_all_due(services)

    assert len(push_service.posts) == 1
    offers = (await scene.responder.api("GET", "/api/crisis/offers")).json()["offers"]
    assert len(offers) == 1
    offer_id = offers[0]["id"]
    post = push_service.posts[0]
    assert post.path == urlsplit(scene.browser.endpoint).path
    headers = post.headers
    # The message must outlive the acknowledgement window on a phone that is briefly offline.
    assert int(headers["ttl"]) >= ACK
    assert headers["urgency"] == "high"
    assert headers["content-encoding"] == "aes128gcm"

    scheme, _, params = headers["authorization"].partition(" ")
    assert scheme == "vapid"
    fields = dict(part.split("=", 1) for part in params.split(","))
    assert fields["k"] == vapid_key
    claims = verify_es256(fields["t"], vapid_key)
    assert claims["aud"] == push_service.url  # the push service's origin, not ours
    now = time.time()
    assert now < claims["exp"] <= now + 24 * 3600
    assert claims["sub"]

    # What the phone decrypts is the offer id and nothing else: no area, kind, note or phone.
    assert json.loads(scene.browser.decrypt(post.body)) == {"type": "offer", "offer": offer_id}
    for secret in (b"Koramangala", b"knife", b"9812345678", b"client_violence"):
        assert secret not in post.body

    # Delivered: the device is marked healthy and the due work is done; no SMS yet (half the window).
    [sub] = await _subscriptions(services)
    assert sub.last_success_at is not None and sub.failures == 0
    assert [w.state for w in await _push_rows(services)] == [DueState.done]
    assert services.sms.sent == []


async def test_push_is_not_sent_again_once_the_offer_was_answered(scene, services, push_service):  # noqa: F811
    await scene.call_for_help()
    offer = await _offer(services)
    accepted = await scene.responder.api("POST", f"/api/crisis/offers/{offer.id}/accept",
                                         headers={"X-CSRF-Token": scene.responder.csrf})
    assert accepted.status_code == 200, accepted.text
    await run_all_due(services)
    assert push_service.posts == []  # answered already: nobody is woken


# --- Push service answers ---------------------------------------------------------------

@pytest.mark.parametrize("status", [404, 410])
async def test_gone_subscription_is_deleted_and_the_sms_goes_at_once(scene, services, push_service, status):  # noqa: F811
    push_service.statuses = [status]
    await scene.call_for_help()
    await run_all_due(services)

    assert len(push_service.posts) == 1
    assert await _subscriptions(services) == []
    # Not at half the window: the only device is gone, so the team is texted now.
    assert [m["to"] for m in services.sms.sent] == ["+919876543210"]
    assert (await _offer(services)).sms_sent_at is not None
    await run_all_due(services)
    assert len(push_service.posts) == 1 and len(services.sms.sent) == 1


async def test_refused_message_counts_a_failure_keeps_the_device_and_texts_at_once(scene, services, push_service):  # noqa: F811
    push_service.statuses = [413]  # payload too large: trying again will not help
    await scene.call_for_help()
    await run_all_due(services)
    [sub] = await _subscriptions(services)
    assert sub.failures == 1
    assert [m["to"] for m in services.sms.sent] == ["+919876543210"]


@pytest.mark.parametrize("status", [429, 503])
async def test_busy_push_service_is_retried_with_backoff_until_it_accepts(scene, services, push_service,  # noqa: F811
                                                                          monkeypatch, status):
    push_service.statuses = [status]
    await scene.call_for_help()
    await run_all_due(services)

    assert len(push_service.posts) == 1
    [row] = await _push_rows(services)
    assert row.state == DueState.pending and row.attempts == 1
    assert str(status) in row.last_error
    assert row.due_at.replace(tzinfo=dt.UTC) > utcnow()  # backed off, not hammering the service
    assert len(await _subscriptions(services)) == 1  # a busy service says nothing about the device
    assert services.sms.sent == []

    # A few seconds later (well inside half the window) the retry goes through.
    later = utcnow() + dt.timedelta(seconds=10)
    monkeypatch.setattr(union.jobs, "utcnow", lambda: later)
    await run_all_due(services)

    assert len(push_service.posts) == 2
    [row] = await _push_rows(services)
    assert row.state == DueState.done and row.attempts == 2
    offer = await _offer(services)
    assert json.loads(scene.browser.decrypt(push_service.posts[1].body)) == {"type": "offer", "offer": offer.id}
    [sub] = await _subscriptions(services)
    assert sub.last_success_at is not None and sub.failures == 0
    assert services.sms.sent == []


async def test_unreachable_push_service_is_retried(web, make_web, make_user, make_token, services):
    dispatcher_token = await make_token(await make_user("disp", ["dispatcher"], "BLR"))
    await make_user("asha", ["crisis_responder"], "BLR")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await web.login("asha", PASSWORD)
    await web.get("/crisis/team")
    browser = BrowserSubscription(f"http://127.0.0.1:{port}/push/nobody")
    assert (await web.api("POST", "/api/push/subscriptions", json=browser.to_json(),
                          headers={"X-CSRF-Token": web.csrf})).status_code == 201
    await create_team(await make_web(), dispatcher_token, name="T", base=TEAM_BASE, members=["asha"])
    caller = await make_web()
    assert (await caller.api("POST", "/api/crisis/incidents", json={
        "kind": "other", "language": "en", "location": {"lat": KORAMANGALA[0], "lon": KORAMANGALA[1]}})).status_code == 201
    await run_all_due(services)
    [row] = await _push_rows(services)
    assert row.state == DueState.pending and row.attempts == 1
    async with services.sessions() as db:
        sms_row = (await db.execute(select(DueWork).where(DueWork.kind == "crisis.offer_sms"))).scalar_one()
        offer = (await db.execute(select(Offer))).scalar_one()
    # The half-window SMS is still on its way whatever the push service does.
    assert sms_row.state == DueState.pending
    half = (offer.created_at + dt.timedelta(seconds=ACK / 2)).replace(tzinfo=None)
    assert abs((sms_row.due_at.replace(tzinfo=None) - half).total_seconds()) < 1
    assert offer.status == OfferStatus.pending


# --- Which endpoints may be subscribed -------------------------------------------------------

REFUSED = [
    "http://127.0.0.1:8080/push/x",
    "http://localhost/push/x",
    "https://10.0.0.5/push/x",
    "https://169.254.169.254/latest/meta-data/",
    "http://fcm.googleapis.com/fcm/send/abc",  # public, but not https
]
ACCEPTED = [
    "https://fcm.googleapis.com/fcm/send/dGVzdDpBUEE5MWJIZ",
    "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABk",
    "https://web.push.apple.com/QGm1Xn7pUeC0fRlrTYy",
]


@pytest.mark.parametrize("settings_update", [{"push_allow_local_endpoints": False}], ids=["default"])
async def test_subscriptions_to_internal_or_plain_http_endpoints_are_refused_by_default(
        web, make_user, services, settings_update):
    await make_user("asha", ["crisis_responder"], "BLR")
    await web.login("asha", PASSWORD)
    await web.get("/crisis/team")
    for endpoint in REFUSED:
        browser = BrowserSubscription(endpoint)
        response = await web.api("POST", "/api/push/subscriptions", json=browser.to_json(),
                                 headers={"X-CSRF-Token": web.csrf})
        assert response.status_code == 422, endpoint
        assert response.json()["field"] == "endpoint"
    assert await _subscriptions(services) == []
    for endpoint in ACCEPTED:
        response = await web.api("POST", "/api/push/subscriptions", json=BrowserSubscription(endpoint).to_json(),
                                 headers={"X-CSRF-Token": web.csrf})
        assert response.status_code == 201, (endpoint, response.text)
    assert len(await _subscriptions(services)) == len(ACCEPTED)


async def test_local_endpoints_are_accepted_only_when_allowed(web, make_user, services):
    await make_user("asha", ["crisis_responder"], "BLR")
    await web.login("asha", PASSWORD)
    await web.get("/crisis/team")
    response = await web.api("POST", "/api/push/subscriptions",
                             json=BrowserSubscription("http://127.0.0.1:8080/push/x").to_json(),
                             headers={"X-CSRF-Token": web.csrf})
    assert response.status_code == 201


@pytest.mark.parametrize("endpoint", [
    "https://localhost./push/x",  # a trailing dot is the same host
    "https://LOCALHOST/push/x",
    "https://127.1/push/x",  # short and octal IPv4 forms that the resolver turns into loopback
    "https://0177.0.0.1/push/x",
    "https://0x7f.0.0.1/push/x",
    "https://2130706433/push/x",
    "https://[::1]/push/x",
    "https://[::ffff:127.0.0.1]/push/x",
    "https://[fd00::1]/push/x",
    "https://192.168.1.1/push/x",
    "https://100.64.0.1/push/x",  # carrier-grade NAT
    "https://printer.local/push/x",
    "https://intranet/push/x",
    "ftp://fcm.googleapis.com/push/x",
    "https:///push/x",
    "not a url",
])
def test_endpoint_allowed_refuses_every_spelling_of_an_internal_host(endpoint):
    assert not endpoint_allowed(endpoint, allow_local=False)


@pytest.mark.parametrize("endpoint", ACCEPTED + ["https://8.8.8.8/push/x", "https://fcm.googleapis.com./fcm/send/x"])
def test_endpoint_allowed_accepts_public_https(endpoint):
    assert endpoint_allowed(endpoint, allow_local=False)


def test_local_trials_allow_http_but_no_other_scheme():
    assert endpoint_allowed("http://127.0.0.1:1/x", allow_local=True)
    assert not endpoint_allowed("file:///etc/passwd", allow_local=True)
    assert not endpoint_allowed("gopher://127.0.0.1:6379/_FLUSHALL", allow_local=True)


async def test_malformed_subscription_keys_are_refused(web, make_user, services):
    await make_user("asha", ["crisis_responder"], "BLR")
    await web.login("asha", PASSWORD)
    await web.get("/crisis/team")
    body = BrowserSubscription("https://fcm.googleapis.com/fcm/send/x").to_json()
    body["keys"] = {"p256dh": "short", "auth": ""}
    response = await web.api("POST", "/api/push/subscriptions", json=body, headers={"X-CSRF-Token": web.csrf})
    assert response.status_code == 422 and response.json()["field"] == "keys"
    assert await _subscriptions(services) == []


async def test_subscribing_needs_a_login(client):
    body = BrowserSubscription("https://fcm.googleapis.com/fcm/send/x").to_json()
    assert (await client.post("/api/push/subscriptions", json=body)).status_code == 401


# --- The installable team app --------------------------------------------------------------

async def test_service_worker_is_served_as_javascript_for_the_whole_site(client):
    response = await client.get("/sw.js")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0].strip() in ("text/javascript", "application/javascript")
    assert response.headers["service-worker-allowed"] == "/"
    assert 'addEventListener("push"' in response.text


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


async def test_manifest_has_a_neutral_name_and_icons_that_exist(client):
    response = await client.get("/manifest.webmanifest")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/manifest+json")
    manifest = response.json()
    # A seized phone's home screen must not say what the app is for.
    for name in (manifest["name"], manifest["short_name"]):
        for word in ("sex", "crisis", "union", "help", "emergency", "sos", "rescue", "kswu", "worker", "police"):
            assert word not in name.lower(), name
    assert manifest["start_url"].startswith("/") and manifest["display"] == "standalone"
    assert manifest["icons"]
    for icon in manifest["icons"]:
        fetched = await client.get(icon["src"])
        assert fetched.status_code == 200, icon["src"]
        assert fetched.headers["content-type"] == icon["type"] == "image/png"
        width, height = _png_size(fetched.content)
        assert f"{width}x{height}" == icon["sizes"]
    assert {icon["sizes"] for icon in manifest["icons"]} >= {"192x192", "512x512"}


async def test_push_rows_are_one_per_device(scene, services, push_service, web, make_web):  # noqa: F811
    """A second phone of the same responder gets its own row, so one bad device does not hold up the other."""
    second = BrowserSubscription(push_service.endpoint("second-phone"))
    assert (await scene.responder.api("POST", "/api/push/subscriptions", json=second.to_json(),
                                      headers={"X-CSRF-Token": scene.responder.csrf})).status_code == 201
    push_service.statuses = [503]  # the first device's message is refused for now
    await scene.call_for_help()
    await run_all_due(services)
    assert len(push_service.posts) == 2
    rows = await _push_rows(services)
    assert sorted(r.state for r in rows) == sorted([DueState.done, DueState.pending])
    async with services.sessions() as db:
        assert (await db.execute(select(func.count()).select_from(PushSubscription))).scalar_one() == 2


async def test_a_slow_push_service_does_not_hold_up_new_help_requests(scene, services, push_service, make_web):  # noqa: F811
    """The push POST happens outside any database transaction: on SQLite a transaction holds the one write
    lock, so a push service that takes its time must not keep the next caller's help request waiting."""
    push_service.hold = threading.Event()
    await scene.call_for_help()
    sweeping = asyncio.create_task(run_all_due(services))
    try:
        for _ in range(500):  # until the push is in flight (the service holds its answer)
            if push_service.posts:
                break
            await asyncio.sleep(0.01)
        assert len(push_service.posts) == 1
        second_caller = await make_web()
        response = await asyncio.wait_for(second_caller.api("POST", "/api/crisis/incidents", json={
            "kind": "other", "language": "en", "location": {"lat": KORAMANGALA[0], "lon": KORAMANGALA[1]}}),
            timeout=8)
        assert response.status_code == 201
        assert not sweeping.done()  # the push really was still waiting for its answer
    finally:
        push_service.hold.set()
        await sweeping
    assert json.loads(scene.browser.decrypt(push_service.posts[0].body))["type"] == "offer"


async def test_subscription_with_keys_nobody_can_encrypt_to_is_dropped_and_the_team_texted(scene, services,
                                                                                            push_service):  # noqa: F811
    """The API checks only the keys' lengths; a p256dh that is not a P-256 point can never be used,
    so retrying for a minute would only delay the SMS."""
    bogus = BrowserSubscription(push_service.endpoint("bogus")).to_json()
    bogus["keys"]["p256dh"] = "B" + "A" * 86  # right length, not a point on the curve
    assert (await scene.responder.api("POST", "/api/push/subscriptions", json=bogus,
                                      headers={"X-CSRF-Token": scene.responder.csrf})).status_code == 201
    await scene.call_for_help()
    await run_all_due(services)

    assert len(push_service.posts) == 1  # only the good device got a message
    assert [s.endpoint for s in await _subscriptions(services)] == [scene.browser.endpoint]
    assert {r.state for r in await _push_rows(services)} == {DueState.done}
    assert [m["to"] for m in services.sms.sent] == ["+919876543210"]
