"""SMS: a provider-neutral adapter over httpx. `HttpSmsSender` speaks the
Twilio-compatible Messages API (most Indian gateways offer the same shape);
`RecordingSmsSender` is the local stand-in for tests and the demo. Inbound
webhooks are verified with `valid_twilio_signature`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Protocol

import httpx

log = logging.getLogger("union.sms")


class SmsError(Exception):
    """Raised when the provider refuses or cannot be reached; `retry` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool):
        super().__init__(message)
        self.retry = retry


class SmsSender(Protocol):
    async def send(self, *, to: str, body: str) -> str:
        """Send one SMS; returns the provider's message id."""


class HttpSmsSender:
    def __init__(self, client: httpx.AsyncClient, *, api_base: str, account_sid: str, auth_token: str, sender: str):
        self.client = client
        self.url = f"{api_base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.auth = (account_sid, auth_token)
        self.sender = sender

    async def send(self, *, to: str, body: str) -> str:
        try:
            response = await self.client.post(self.url, data={"To": to, "From": self.sender, "Body": body},
                                              auth=self.auth, timeout=10)
        except httpx.HTTPError as exc:
            raise SmsError(f"SMS provider unreachable: {type(exc).__name__}", retry=True) from None
        if response.status_code >= 400:
            raise SmsError(f"SMS provider answered {response.status_code}",
                           retry=response.status_code == 429 or response.status_code >= 500)
        try:
            return str(response.json().get("sid", ""))
        except (ValueError, AttributeError):
            # Accepted is accepted: raising here would send the same text again on retry.
            return ""


@dataclass
class RecordingSmsSender:
    """Keeps messages in memory (tests read `sent`); logs only that a message went, never its text or number."""

    sent: list[dict] = field(default_factory=list)

    async def send(self, *, to: str, body: str) -> str:
        self.sent.append({"to": to, "body": body})
        log.info("SMS recorded (stand-in sender): %d characters to …%s", len(body), to[-2:])
        return f"local-{len(self.sent)}"


def twilio_signature(url: str, params: dict[str, str], auth_token: str) -> str:
    payload = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def valid_twilio_signature(url: str, params: dict[str, str], auth_token: str | None, signature: str | None) -> bool:
    if not auth_token or not signature:
        return False
    return hmac.compare_digest(twilio_signature(url, params, auth_token), signature)


def build_sms_sender(settings, client: httpx.AsyncClient) -> SmsSender:
    if settings.sms_backend == "http":
        if not (settings.sms_account_sid and settings.sms_auth_token and settings.sms_from):
            raise RuntimeError("UNION_SMS_BACKEND=http needs UNION_SMS_ACCOUNT_SID, UNION_SMS_AUTH_TOKEN and UNION_SMS_FROM")
        return HttpSmsSender(client, api_base=settings.sms_api_base, account_sid=settings.sms_account_sid,
                             auth_token=settings.sms_auth_token, sender=settings.sms_from)
    return RecordingSmsSender()
