"""Inbound SMS and voice webhooks in the Twilio request format: form fields,
X-Twilio-Signature (HMAC-SHA1 over the public URL and the sorted parameters,
with the account's auth token), TwiML answers. A person asking for help by SMS
or by calling the hotline is never dropped; a forged request changes nothing."""

from __future__ import annotations

import json
import secrets
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import func, select, text

from crisis.models import DispatchDecision, Incident, IncidentStatus
from tests.crisis.localservers import create_team
from union.sms import twilio_signature

AUTH_TOKEN = "twilio-webhook-token"
BASE_URL = "https://union.example.org"
SMS_PATH, VOICE_PATH = "/crisis/twilio/sms", "/crisis/twilio/voice"
CALLER = "+919876543210"


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"sms_auth_token": AUTH_TOKEN, "base_url": BASE_URL, "push_backend": "recording"})


def sms_params(body: str, sender: str = CALLER) -> dict[str, str]:
    """What Twilio posts for an incoming message."""
    sid = "SM" + secrets.token_hex(16)
    return {"ToCountry": "IN", "ToState": "", "SmsMessageSid": sid, "NumMedia": "0", "ToCity": "", "FromZip": "",
            "SmsSid": sid, "FromState": "", "SmsStatus": "received", "FromCity": "", "Body": body,
            "FromCountry": "IN", "To": "+918000000000", "ToZip": "", "NumSegments": "1", "MessageSid": sid,
            "AccountSid": "AC" + "0" * 32, "From": sender, "ApiVersion": "2010-04-01"}


def voice_params(sender: str = CALLER) -> dict[str, str]:
    """What Twilio posts when a call to the hotline number comes in."""
    return {"AccountSid": "AC" + "0" * 32, "ApiVersion": "2010-04-01", "CallSid": "CA" + secrets.token_hex(16),
            "CallStatus": "ringing", "Called": "+918000000000", "Caller": sender, "Direction": "inbound",
            "From": sender, "FromCountry": "IN", "To": "+918000000000", "ToCountry": "IN"}


async def post_signed(client, path: str, params: dict[str, str], *, url: str | None = None,
                      token: str = AUTH_TOKEN, signature: str | None = None, sign: bool = True):
    headers = {}
    if sign:
        headers["X-Twilio-Signature"] = signature or twilio_signature(url or BASE_URL + path, params, token)
    return await client.post(path, data=params, headers=headers)


def twiml(response) -> ET.Element:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(("application/xml", "text/xml"))
    root = ET.fromstring(response.content)
    assert root.tag == "Response"
    return root


async def incidents(services) -> list[Incident]:
    async with services.sessions() as db:
        return list((await db.execute(select(Incident).order_by(Incident.id))).scalars())


async def raw_incident_rows(services) -> str:
    async with services.sessions() as db:
        return repr([tuple(row) for row in (await db.execute(text("SELECT * FROM incident"))).all()])


async def decisions(services, incident_id: int) -> list[DispatchDecision]:
    async with services.sessions() as db:
        return list((await db.execute(select(DispatchDecision).where(
            DispatchDecision.incident_id == incident_id).order_by(DispatchDecision.id))).scalars())


# --- SMS ------------------------------------------------------------------------------------

async def test_help_sms_creates_an_incident_and_replies_with_the_reference(client, services, branches):
    response = await post_signed(client, SMS_PATH, sms_params("HELP Koramangala"))

    [incident] = await incidents(services)
    message = twiml(response).find("Message")
    assert message is not None and incident.reference in message.text
    assert incident.source == "sms"
    assert incident.area.startswith("Koramangala")
    # The caller's number is kept only encrypted (and as a keyed hash to spot repeat callers).
    assert services.vault.decrypt(incident.callback_phone_enc) == CALLER
    assert incident.callback_phone_hash == services.phone_hash(CALLER)
    raw = await raw_incident_rows(services)
    assert CALLER[3:] not in raw and "Koramangala" in raw
    # Located in Bengaluru: dispatch ran (no team exists, so the dispatchers are alerted).
    assert incident.branch_id == branches["BLR"].id
    assert incident.status == IncidentStatus.escalated


async def test_help_sms_offers_the_nearest_team(client, services, make_user, make_token, make_web):
    token = await make_token(await make_user("disp", ["dispatcher"], "BLR"))
    await make_user("asha", ["crisis_responder"], "BLR")
    team = await create_team(await make_web(), token, name="Koramangala team", base=(12.9350, 77.6200),
                             members=["asha"], skills=[], languages=["kn"])
    twiml(await post_signed(client, SMS_PATH, sms_params("sos koramangala")))
    [incident] = await incidents(services)
    assert incident.status == IncidentStatus.offered
    [decision] = await decisions(services, incident.id)
    assert decision.chosen_team_id == team["id"]


@pytest.mark.parametrize("body", [
    "HELP near the old bus stand behind the temple",  # not a place the gazetteer knows
    "HELP",  # no place at all
    "help   ",
])
async def test_help_sms_without_a_known_place_still_creates_an_incident_for_the_dispatchers(client, services, body):
    response = await post_signed(client, SMS_PATH, sms_params(body))

    [incident] = await incidents(services)
    assert incident.reference in twiml(response).find("Message").text
    assert incident.source == "sms"
    assert incident.lat_enc is None and incident.branch_id is None
    assert incident.status == IncidentStatus.escalated  # the dispatchers call back
    assert incident.escalated_at is not None
    [decision] = await decisions(services, incident.id)
    assert decision.outcome == "escalated" and json.loads(decision.detail)["reason"] == "no location"
    if len(body.split()) > 1:
        assert incident.area == body.split(None, 1)[1].strip()


@pytest.mark.parametrize("body", ["Hello", "", "when is the meeting", "HELPFUL people"])
async def test_sms_without_help_gets_instructions_and_no_incident(client, services, body):
    response = await post_signed(client, SMS_PATH, sms_params(body))
    message = twiml(response).find("Message")
    assert "HELP" in message.text
    assert await incidents(services) == []


@pytest.mark.parametrize("forgery", ["missing", "wrong token", "tampered body", "other url", "garbage"])
async def test_forged_or_unsigned_sms_is_refused_and_changes_nothing(client, services, forgery):
    params = sms_params("HELP Koramangala")
    if forgery == "missing":
        response = await post_signed(client, SMS_PATH, params, sign=False)
    elif forgery == "wrong token":
        response = await post_signed(client, SMS_PATH, params, token="not-the-token")
    elif forgery == "tampered body":
        signature = twilio_signature(BASE_URL + SMS_PATH, params, AUTH_TOKEN)
        response = await post_signed(client, SMS_PATH, {**params, "Body": "HELP Mysuru"}, signature=signature)
    elif forgery == "other url":
        response = await post_signed(client, SMS_PATH, params, url="http://testserver" + SMS_PATH)
    else:
        response = await post_signed(client, SMS_PATH, params, signature="bm90IGEgc2lnbmF0dXJl")
    assert response.status_code == 403
    assert await incidents(services) == []


async def test_without_an_auth_token_configured_every_webhook_is_refused(client, services):
    services.settings = services.settings.model_copy(update={"sms_auth_token": None})
    params = sms_params("HELP Koramangala")
    assert (await post_signed(client, SMS_PATH, params, token="")).status_code == 403
    assert (await post_signed(client, VOICE_PATH, voice_params(), token="")).status_code == 403
    assert await incidents(services) == []


async def test_webhooks_need_no_csrf_token_or_login(client, services):
    """Twilio cannot send our CSRF token; the signature stands in for it."""
    response = await post_signed(client, SMS_PATH, sms_params("HELP"))
    assert response.status_code == 200
    assert len(await incidents(services)) == 1


# --- Voice ----------------------------------------------------------------------------------

async def test_call_to_the_hotline_creates_an_escalated_incident_and_answers_with_say(client, services):
    response = await post_signed(client, VOICE_PATH, voice_params())

    say = twiml(response).find("Say")
    assert say is not None and say.text
    [incident] = await incidents(services)
    assert incident.source == "voice"
    assert incident.status == IncidentStatus.escalated
    assert services.vault.decrypt(incident.callback_phone_enc) == CALLER
    assert CALLER[3:] not in await raw_incident_rows(services)


async def test_forged_call_is_refused(client, services):
    params = voice_params()
    response = await post_signed(client, VOICE_PATH, params, token="not-the-token")
    assert response.status_code == 403
    assert await incidents(services) == []


async def test_call_from_a_withheld_number_is_not_dropped(client, services):
    response = await post_signed(client, VOICE_PATH, voice_params(sender="anonymous"))
    assert twiml(response).find("Say") is not None
    [incident] = await incidents(services)
    assert incident.source == "voice" and incident.callback_phone_enc is None


async def test_only_help_messages_become_incidents(client, services):
    for body in ("HELP Koramangala", "hello", "HELP"):
        await post_signed(client, SMS_PATH, sms_params(body, sender="+919800000001"))
    async with services.sessions() as db:
        assert (await db.execute(select(func.count()).select_from(Incident))).scalar_one() == 2
