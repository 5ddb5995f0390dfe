"""Signed checkpoints of the chain heads: tamper evidence that does not trust the database.

When a month is closed, the heads of the ledger's and the audit log's hash chains
(seq/id and hash) are written into a small JSON statement signed with the union's
Ed25519 key (UNION_CHECKPOINT_SIGNING_KEY, or a key generated on first use into
the data folder with mode 0600). The treasurer downloads it and keeps it away
from the server. Verifying it later proves that nothing up to it was changed:
the signature proves the statement is ours, the entry at that seq must still
carry that hash, and the chain up to it must still be intact, so even a past
rewritten and re-hashed from the start (heads included) is caught.

The file: {"checkpoint": {...the signed fields...}, "signature": base64}. The
signature covers the canonical JSON of "checkpoint" (sorted keys, no spaces).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dues.ledger import LedgerChainReport
from dues.models import JournalEntry, LedgerHead
from treasury.chainsql import verify_ledger
from treasury.errors import CheckpointMismatch
from treasury.models import LedgerCheckpoint
from union.audit import ChainReport, verify_chain
from union.i18n import _
from union.models import AuditEvent, AuditHead, utcnow

FORMAT = "union-checkpoint/1"
MAX_FILE_BYTES = 16_384


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def load_signing_key(text: str) -> Ed25519PrivateKey:
    """The key from its setting: base64 of the 32 raw bytes, or a PEM (PKCS#8) private key."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the checkpoint signing key must be an Ed25519 key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError("the checkpoint signing key is not base64") from exc
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


async def make_checkpoint(session: AsyncSession, *, month: str, actor, key: Ed25519PrivateKey) -> LedgerCheckpoint:
    """Sign the current heads of both chains for `month`. The caller holds the ledger head lock."""
    ledger = (await session.execute(select(LedgerHead).where(LedgerHead.id == 1))).scalar_one()
    audit = (await session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())).scalar_one()
    made_at = utcnow()
    body = {"format": FORMAT, "month": month, "made_at": made_at.isoformat(timespec="seconds"),
            "made_by": getattr(actor, "username", "") or "",
            "ledger": {"seq": ledger.last_seq, "hash": ledger.last_hash},
            "audit": {"id": audit.last_id, "hash": audit.last_hash},
            "public_key": public_key_b64(key)}
    signed = _canonical(body)
    checkpoint = LedgerCheckpoint(month=month, made_at=made_at, made_by_user_id=getattr(actor, "id", None),
                                  ledger_seq=ledger.last_seq, ledger_hash=ledger.last_hash, audit_id=audit.last_id,
                                  audit_hash=audit.last_hash, body=signed.decode(),
                                  signature=base64.b64encode(key.sign(signed)).decode())
    session.add(checkpoint)
    await session.flush()
    return checkpoint


def checkpoint_file(checkpoint: LedgerCheckpoint) -> bytes:
    """What the treasurer downloads."""
    return json.dumps({"checkpoint": json.loads(checkpoint.body), "signature": checkpoint.signature},
                      indent=2, ensure_ascii=False).encode() + b"\n"


@dataclass
class CheckpointReport:
    month: str
    ledger_seq: int
    audit_id: int
    ledger: LedgerChainReport
    audit: ChainReport


def _mismatch(message: str) -> CheckpointMismatch:
    return CheckpointMismatch(message, field="checkpoint")


def read_checkpoint(data: bytes | str, key: Ed25519PrivateKey) -> dict:
    """The signed fields of a checkpoint file, once its signature is proven to be ours."""
    if isinstance(data, str):
        data = data.encode()
    if not data or len(data) > MAX_FILE_BYTES:
        raise _mismatch(_("This is not a checkpoint file."))
    try:
        document = json.loads(data)
        body, signature = document["checkpoint"], base64.b64decode(document["signature"], validate=True)
        month, made_at = body["month"], body["made_at"]
        seq, ledger_hash = body["ledger"]["seq"], body["ledger"]["hash"]
        audit_id, audit_hash = body["audit"]["id"], body["audit"]["hash"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise _mismatch(_("This is not a checkpoint file.")) from None
    if body.get("format") != FORMAT or not all(isinstance(v, str) for v in (month, made_at, ledger_hash, audit_hash)) \
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in (seq, audit_id)):
        raise _mismatch(_("This is not a checkpoint file."))
    if body.get("public_key") != public_key_b64(key):
        raise _mismatch(_("This checkpoint was not signed with this union's key."))
    try:
        Ed25519PublicKey.from_public_bytes(key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)).verify(signature, _canonical(body))
    except InvalidSignature:
        raise _mismatch(_("The checkpoint's signature does not match: the file was changed.")) from None
    return body


async def verify_checkpoint(session: AsyncSession, data: bytes | str, *, key: Ed25519PrivateKey,
                            progress=None) -> CheckpointReport:
    """Check a checkpoint file against the database; raise CheckpointMismatch naming what differs."""
    body = read_checkpoint(data, key)
    month, seq, ledger_hash = body["month"], body["ledger"]["seq"], body["ledger"]["hash"]
    audit_id, audit_hash = body["audit"]["id"], body["audit"]["hash"]
    if seq > 0:
        found = (await session.execute(select(JournalEntry.id, JournalEntry.hash).where(JournalEntry.seq == seq))).first()
        if found is None:
            raise _mismatch(_("Ledger entry %(seq)s of the checkpoint (%(month)s) is missing: the books were cut.",
                              seq=seq, month=month))
        if found.hash != ledger_hash:
            raise _mismatch(_("Ledger entry %(seq)s (%(entry)s) no longer has the hash of the checkpoint of "
                              "%(month)s: the books up to it were changed.", seq=seq, entry=found.id, month=month))
    if audit_id > 0:
        event_hash = (await session.execute(select(AuditEvent.hash).where(AuditEvent.id == audit_id))).scalar()
        if event_hash != audit_hash:
            raise _mismatch(_("Audit event %(id)s no longer has the hash of the checkpoint of %(month)s: the audit "
                              "log up to it was changed.", id=audit_id, month=month))
    ledger = await verify_ledger(session, progress=progress)
    if not ledger.intact and (ledger.broken_seq is None or ledger.broken_seq <= seq):
        raise _mismatch(_("The ledger was changed before the checkpoint of %(month)s: entry %(entry)s (seq "
                          "%(seq)s): %(reason)s.", month=month, entry=ledger.broken_entry_id or "-",
                          seq=ledger.broken_seq or "-", reason=ledger.reason))
    audit = await verify_chain(session)
    if not audit.intact and audit.broken_id is not None and audit.broken_id <= audit_id:
        raise _mismatch(_("The audit log was changed before the checkpoint of %(month)s: event %(id)s: "
                          "%(reason)s.", month=month, id=audit.broken_id, reason=audit.reason))
    return CheckpointReport(month, seq, audit_id, ledger, audit)


def signing_key(settings) -> Ed25519PrivateKey:
    return load_signing_key(settings.resolved_checkpoint_signing_key)


def made_at(body: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(body["made_at"])
