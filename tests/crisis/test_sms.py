"""SMS to crisis teams: the Twilio-format HTTP adapter against a local server
that speaks the Messages API, and the fallback text to every team member with a
phone when an offer is not answered within half the acknowledgement window (or
push fails): in the member's language, with no incident details, once."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import socket
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import httpx
import pytest
from sqlalchemy import select

import union.jobs
from crisis import tasks
from crisis.models import Offer, OfferStatus, PushSubscription
from tests.crisis.localservers import TwilioMessagesApi, create_team, run_all_due, set_user_language, twilio_api  # noqa: F401
from union.models import DueState, DueWork, User, utcnow
from union.sms import HttpSmsSender, RecordingSmsSender, SmsError

ACK = 60
BASE_URL = "https://union.example.org"
TEAM_BASE = (12.9350, 77.6200)
CALLER_PHONE = "+919812345678"
PHONES = {"asha": "+919876543210", "bhavya": "+919876543211", "chitra": "+919876543212"}


@pytest.fixture
def sms_over_http():
    return False


@pytest.fixture
def settings(settings, sms_over_http, twilio_api):  # noqa: F811
    update = {"push_backend": "recording", "ack_timeout_seconds": ACK, "base_url": BASE_URL}
    if sms_over_http:
        update.update({"sms_backend": "http", "sms_api_base": twilio_api.url, "sms_account_sid": twilio_api.account_sid,
                       "sms_auth_token": twilio_api.auth_token, "sms_from": "+15005550006"})
    return settings.model_copy(update=update)


# --- The adapter -------------------------------------------------------------------------

@pytest.fixture
async def http():
    async with httpx.AsyncClient() as client:
        yield client


def sender_for(server: TwilioMessagesApi, client: httpx.AsyncClient, **kw) -> HttpSmsSender:
    return HttpSmsSender(client, api_base=server.url, account_sid=kw.get("sid", server.account_sid),
                         auth_token=kw.get("token", server.auth_token), sender="+15005550006")


async def test_http_sender_speaks_the_twilio_messages_api(twilio_api, http):  # noqa: F811
    body = "ಸಂಘ: ನಿಮ್ಮ ತಂಡದ ಸಹಾಯ ಈಗ ಬೇಕು & more"
    sid = await sender_for(twilio_api, http).send(to="+919876543210", body=body)

    assert sid.startswith("SM") and len(sid) == 34
    [request] = twilio_api.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{twilio_api.account_sid}/Messages.json"
    scheme, _, credentials = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(credentials).decode() == f"{twilio_api.account_sid}:{twilio_api.auth_token}"
    assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
    assert form == {"To": "+919876543210", "From": "+15005550006", "Body": body}
    assert twilio_api.messages[0]["sid"] == sid


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_provider_trouble_is_worth_retrying(twilio_api, http, status):  # noqa: F811
    twilio_api.statuses = [status]
    with pytest.raises(SmsError) as caught:
        await sender_for(twilio_api, http).send(to="+919876543210", body="x")
    assert caught.value.retry is True
    assert str(status) in str(caught.value)
    assert twilio_api.messages == []


async def test_a_refused_message_is_not_retried(twilio_api, http):  # noqa: F811
    with pytest.raises(SmsError) as caught:
        await sender_for(twilio_api, http).send(to="12345", body="x")  # 400: not a valid number
    assert caught.value.retry is False
    assert "400" in str(caught.value)


async def test_wrong_credentials_are_not_retried(twilio_api, http):  # noqa: F811
    with pytest.raises(SmsError) as caught:
        await sender_for(twilio_api, http, token="wrong").send(to="+919876543210", body="x")
    assert caught.value.retry is False
    assert "401" in str(caught.value)


async def test_unreachable_provider_is_worth_retrying(http):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = HttpSmsSender(http, api_base=f"http://127.0.0.1:{port}", account_sid="AC1", auth_token="t", sender="+1500")
    with pytest.raises(SmsError) as caught:
        await sender.send(to="+919876543210", body="x")
    assert caught.value.retry is True


async def test_accepted_message_with_an_odd_body_still_counts_as_sent(http):
    """A gateway that answers 201 without JSON has sent the text: raising would send it again on retry."""
    from tests.crisis.localservers import LocalServer, Reply

    class Odd(LocalServer):
        def respond(self, request):
            return Reply(201, b"OK", {"Content-Type": "text/plain"})

    with Odd() as server:
        sender = HttpSmsSender(http, api_base=server.url, account_sid="AC1", auth_token="t", sender="+1500")
        assert await sender.send(to="+919876543210", body="x") == ""


async def test_recording_sender_logs_neither_text_nor_number(caplog):
    sender = RecordingSmsSender()
    with caplog.at_level("INFO", logger="union.sms"):
        await sender.send(to="+919876543210", body="secret words")
    assert sender.sent == [{"to": "+919876543210", "body": "secret words"}]
    assert "secret" not in caplog.text and "9876543210" not in caplog.text


# --- The fallback text to the team ------------------------------------------------------------

@dataclass
class Crew:
    team: dict
    caller: object


async def _crew(make_web, make_user, make_token, services, *, phones: dict[str, str], languages: dict[str, str],
                extra_members: list[str] = (), subscribe: bool = True) -> Crew:
    dispatcher_token = await make_token(await make_user("disp", ["dispatcher"], "BLR"))
    members = []
    for username in [*phones, *extra_members]:
        await make_user(username, ["crisis_responder"], "BLR")
        if username in languages:
            await set_user_language(services, username, languages[username])
        members.append({"username": username, "phone": phones[username]} if username in phones else username)
    team = await create_team(await make_web(), dispatcher_token, name="Koramangala crisis team", base=TEAM_BASE,
                             members=members)
    if subscribe:  # every member's phone has the app with push on (the recording push sender accepts all)
        async with services.sessions() as db:
            users = (await db.execute(select(User).where(User.username.in_([*phones, *extra_members])))).scalars()
            for i, user in enumerate(users):
                db.add(PushSubscription(user_id=user.id, endpoint=f"https://fcm.googleapis.com/fcm/send/{i}",
                                        p256dh="B" + "A" * 86, auth="A" * 22))
            await db.commit()
    return Crew(team=team, caller=await make_web())


async def _call_for_help(crew: Crew) -> dict:
    response = await crew.caller.api("POST", "/api/crisis/incidents", json={
        "kind": "client_violence", "language": "kn", "location": {"area": "Koramangala"},
        "callback_phone": CALLER_PHONE, "note": "room 12 above the tailor"})
    assert response.status_code == 201, response.text
    return response.json()


async def _offer(services) -> Offer:
    async with services.sessions() as db:
        return (await db.execute(select(Offer))).scalar_one()


def _clock(monkeypatch, at: dt.datetime) -> None:
    """Move the due-work runner's clock (what is due), not the database's."""
    monkeypatch.setattr(union.jobs, "utcnow", lambda: at)


def _assert_no_incident_details(body: str, reference: str) -> None:
    for detail in ("Koramangala", "Bengaluru", "violence", "client", "tailor", CALLER_PHONE, CALLER_PHONE[3:],
                   reference):
        assert detail not in body, (detail, body)


async def test_unanswered_offer_texts_every_member_with_a_phone_at_half_the_window_in_their_language_once(
        make_web, make_user, make_token, services, monkeypatch):
    crew = await _crew(make_web, make_user, make_token, services, phones=PHONES,
                       languages={"asha": "kn", "bhavya": "hi"}, extra_members=["devi"])
    created = await _call_for_help(crew)
    await run_all_due(services)
    assert len(services.extras["push"].sent) == 4  # every device got the push
    offer = await _offer(services)

    _clock(monkeypatch, offer.created_at.replace(tzinfo=dt.UTC) + dt.timedelta(seconds=ACK / 2 - 2))
    await run_all_due(services)
    assert services.sms.sent == []  # not yet: push may still be answered

    _clock(monkeypatch, offer.created_at.replace(tzinfo=dt.UTC) + dt.timedelta(seconds=ACK / 2 + 1))
    await run_all_due(services)
    sent = {m["to"]: m["body"] for m in services.sms.sent}
    assert len(services.sms.sent) == 3
    assert set(sent) == set(PHONES.values())  # devi has no phone on file
    link = f"{BASE_URL}/crisis/team"
    assert sent[PHONES["asha"]].startswith("ಸಂಘ") and link in sent[PHONES["asha"]]  # Kannada
    assert sent[PHONES["bhavya"]].startswith("संघ") and link in sent[PHONES["bhavya"]]  # Hindi
    assert sent[PHONES["chitra"]].startswith("Sangha: your team is needed now")  # no preference: the default
    for body in sent.values():
        _assert_no_incident_details(body, created["reference"])
    offer = await _offer(services)
    assert offer.status == OfferStatus.pending and offer.sms_sent_at is not None

    # Jobs may run twice: the handler again, and another sweep, send nothing more.
    async with services.sessions() as db:
        await tasks.send_offer_sms(db, services, {"offer": offer.id})
        await db.commit()
    await run_all_due(services)
    assert len(services.sms.sent) == 3


@dataclass
class SlowSmsSender:
    """Takes a moment per message, as a real gateway does, so two runs can overlap."""

    sent: list[dict] = field(default_factory=list)

    async def send(self, *, to: str, body: str) -> str:
        await asyncio.sleep(0.05)
        self.sent.append({"to": to, "body": body})
        return f"slow-{len(self.sent)}"


async def test_two_overlapping_runs_of_the_sms_job_text_once(make_web, make_user, make_token, services):
    """arq may deliver a job twice while the sweeper finds the same row: the row's claim lets one through."""
    crew = await _crew(make_web, make_user, make_token, services, phones={"asha": PHONES["asha"]}, languages={},
                       subscribe=False)  # no device: the text is due at once
    await _call_for_help(crew)
    async with services.sessions() as db:
        row = (await db.execute(select(DueWork).where(DueWork.kind == "crisis.offer_sms"))).scalar_one()
    services.sms = SlowSmsSender()

    outcomes = await asyncio.gather(union.jobs.run_due_work(services, row.id), union.jobs.run_due_work(services, row.id))
    assert sorted(outcomes) == ["done", "skipped"]
    assert [m["to"] for m in services.sms.sent] == [PHONES["asha"]]


async def test_answered_offer_sends_no_sms(make_web, make_user, make_token, services, monkeypatch, web):
    from tests.conftest import PASSWORD

    crew = await _crew(make_web, make_user, make_token, services, phones={"asha": PHONES["asha"]}, languages={})
    await _call_for_help(crew)
    offer = await _offer(services)
    await web.login("asha", PASSWORD)
    await web.get("/crisis/team")
    assert (await web.api("POST", f"/api/crisis/offers/{offer.id}/decline",
                          headers={"X-CSRF-Token": web.csrf})).status_code == 200
    _clock(monkeypatch, utcnow() + dt.timedelta(seconds=ACK / 2 + 1))
    await run_all_due(services)
    assert services.sms.sent == []


@pytest.mark.parametrize("sms_over_http", [True], ids=["twilio"])
async def test_team_without_push_is_texted_at_once_through_the_sms_provider(
        make_web, make_user, make_token, services, twilio_api, sms_over_http):  # noqa: F811
    assert isinstance(services.sms, HttpSmsSender)
    crew = await _crew(make_web, make_user, make_token, services, phones={"asha": PHONES["asha"]},
                       languages={"asha": "ta"}, subscribe=False)
    created = await _call_for_help(crew)
    await run_all_due(services)  # no clock change: nothing to wait for without a device to push to

    [message] = twilio_api.messages
    assert message["to"] == PHONES["asha"] and message["from"] == "+15005550006"
    assert message["body"].startswith("சங்கம்")  # Tamil
    assert f"{BASE_URL}/crisis/team" in message["body"]
    _assert_no_incident_details(message["body"], created["reference"])


@pytest.mark.parametrize("sms_over_http", [True], ids=["twilio"])
async def test_sms_provider_outage_is_retried_until_the_text_goes(
        make_web, make_user, make_token, services, twilio_api, sms_over_http, monkeypatch):  # noqa: F811
    crew = await _crew(make_web, make_user, make_token, services, phones={"asha": PHONES["asha"]},
                       languages={}, subscribe=False)
    await _call_for_help(crew)
    twilio_api.statuses = [503]
    await run_all_due(services)
    assert twilio_api.messages == []
    async with services.sessions() as db:
        row = (await db.execute(select(DueWork).where(DueWork.kind == "crisis.offer_sms"))).scalar_one()
    assert row.state == DueState.pending and row.attempts == 1 and "SmsError" in row.last_error
    assert (await _offer(services)).sms_sent_at is None

    _clock(monkeypatch, utcnow() + dt.timedelta(seconds=5))
    await run_all_due(services)
    assert [m["to"] for m in twilio_api.messages] == [PHONES["asha"]]
    assert (await _offer(services)).sms_sent_at is not None
