"""Web push: VAPID keys (generated on first run), and senders behind one
Protocol — `WebPushSender` encrypts with pywebpush (aes128gcm) and posts through
the shared httpx client (never the blocking `webpush()` on the event loop);
`RecordingPushSender` is the stand-in. Payloads are ids only (DESIGN §5)."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlparse

import httpx
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02
from pywebpush import WebPushException, WebPusher


@dataclass
class PushResult:
    status: int  # the push service's answer; 0 when there was none
    retry_after: float | None = None
    unusable: bool = False  # the subscription's keys cannot be encrypted to: nothing was sent

    @property
    def gone(self) -> bool:
        """The subscription no longer exists (or never could work): delete it."""
        return self.status in (404, 410) or self.unusable

    @property
    def retry(self) -> bool:
        return not self.unusable and (self.status == 429 or self.status >= 500 or self.status == 0)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class PushSender(Protocol):
    async def send(self, *, endpoint: str, p256dh: str, auth: str, payload: dict, ttl: int,
                   urgency: str = "high") -> PushResult:
        """Deliver one encrypted message to one subscription."""


def load_vapid(path) -> Vapid02:
    """The server's VAPID key, generated into the data folder (mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        vapid = Vapid02()
        vapid.generate_keys()
        pem = vapid.private_pem()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return Vapid02.from_file(str(path))
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
    return Vapid02.from_file(str(path))


def vapid_public_key(vapid: Vapid02) -> str:
    """The applicationServerKey browsers need: the uncompressed P-256 point, base64url without padding."""
    raw = vapid.public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def endpoint_allowed(endpoint: str, *, allow_local: bool) -> bool:
    """Push endpoints must be https on public hosts, so a subscription cannot make us call inside the network."""
    try:
        url = urlparse(endpoint)
    except ValueError:
        return False
    if not url.hostname or len(endpoint) > 2000:
        return False
    if allow_local:
        return url.scheme in ("https", "http")
    if url.scheme != "https":
        return False
    host = url.hostname.rstrip(".")  # "localhost." resolves like "localhost"
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local") or "." not in host:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            # The resolver also reads the old short and octal/hex IPv4 forms ("127.1", "0177.0.0.1").
            ip = ipaddress.ip_address(socket.inet_aton(host))
        except OSError:
            return True
    return ip.is_global


class WebPushSender:
    # A VAPID signature is valid for 12 h; one is reused per push service for at most this long, so
    # most pushes need no new ECDSA signature (the `exp` claim always lies 11 h or more ahead).
    SIGNATURE_REUSE_SECONDS = 3600

    def __init__(self, client: httpx.AsyncClient, vapid: Vapid02, subject: str):
        self.client = client
        self.vapid = vapid
        self.subject = subject
        self._signed: dict[str, tuple[float, dict]] = {}  # audience -> (made at, headers)

    def _vapid_headers(self, audience: str) -> dict:
        now = time.time()
        cached = self._signed.get(audience)
        if cached is not None and now - cached[0] < self.SIGNATURE_REUSE_SECONDS:
            return cached[1]
        # Fresh claims for each audience: pywebpush/py_vapid write `aud` into the dict they are given.
        claims = {"sub": self.subject, "aud": audience, "exp": int(now) + 12 * 3600}
        headers = dict(self.vapid.sign(claims))
        if len(self._signed) > 1000:  # bounded: a handful of push services in practice
            self._signed.clear()
        self._signed[audience] = (now, headers)
        return headers

    async def send(self, *, endpoint: str, p256dh: str, auth: str, payload: dict, ttl: int,
                   urgency: str = "high") -> PushResult:
        try:
            body = WebPusher({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}).encode(
                json.dumps(payload, separators=(",", ":")).encode(), "aes128gcm")["body"]
        except (ValueError, TypeError, LookupError, WebPushException):
            # Not a P-256 point or not base64: no retry can fix that, so do not hold up the SMS fallback.
            return PushResult(0, unusable=True)
        url = urlparse(endpoint)
        headers = dict(self._vapid_headers(f"{url.scheme}://{url.netloc}"))
        headers.update({"TTL": str(ttl), "Urgency": urgency, "Content-Encoding": "aes128gcm",
                        "Content-Type": "application/octet-stream"})
        try:
            response = await self.client.post(endpoint, content=body, headers=headers, timeout=10)
        except httpx.HTTPError:
            return PushResult(0)
        retry_after = response.headers.get("retry-after")
        return PushResult(response.status_code, float(retry_after) if retry_after and retry_after.isdigit() else None)


@dataclass
class RecordingPushSender:
    """Keeps what would have been sent (tests and the demo)."""

    sent: list[dict] = field(default_factory=list)
    status: int = 201

    async def send(self, *, endpoint: str, p256dh: str, auth: str, payload: dict, ttl: int,
                   urgency: str = "high") -> PushResult:
        self.sent.append({"endpoint": endpoint, "payload": payload, "ttl": ttl, "urgency": urgency})
        return PushResult(self.status)


def build_push_sender(settings, client: httpx.AsyncClient) -> tuple[PushSender, Vapid02]:
    vapid = load_vapid(settings.vapid_key_file)
    if settings.push_backend == "recording":
        return RecordingPushSender(), vapid
    return WebPushSender(client, vapid, settings.vapid_subject), vapid
