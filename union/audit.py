"""The append-only, hash-chained audit log of privileged actions and of reads of
sensitive records.

Each event's hash covers its content and the previous event's hash; the
`audithead` row holds the newest hash and is locked while appending, so the chain
never forks under concurrent writers. `chain_rows` makes the rows and hashes of several events
at once (the same as `record` called for each), for batches written with one multi-row INSERT.
The database refuses UPDATE and DELETE on `auditevent` (triggers from the first migration). Details must never hold
sensitive values: ids and field names only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from union.models import AuditEvent, AuditHead, utcnow

from migrations.helpers import GENESIS  # noqa: E402  (one definition for code and schema)


def _canonical_time(at: dt.datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def event_hash(*, prev_hash: str, at: dt.datetime, actor_user_id: int | None, actor: str, action: str,
               target_type: str, target_id: str, detail: str) -> str:
    body = json.dumps(
        [prev_hash, _canonical_time(at), actor_user_id, actor, action, target_type, target_id, detail],
        separators=(",", ":"), ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


async def record(session: AsyncSession, *, action: str, actor=None, target_type: str = "",
                 target_id: object = "", detail: dict | None = None) -> AuditEvent:
    """Append one event in the caller's transaction (the caller commits)."""
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())).scalar_one()
    (row,), head.last_hash = chain_rows([{"action": action, "actor": actor, "target_type": target_type,
                                          "target_id": target_id, "detail": detail}], head.last_hash)
    event = AuditEvent(**row)
    session.add(event)
    await session.flush()
    head.last_id = event.id
    session.add(head)
    await session.flush()
    return event


EVENT_COLUMNS = ("at", "actor_user_id", "actor", "action", "target_type", "target_id", "detail", "prev_hash", "hash")


def chain_rows(events: list[dict], prev_hash: str) -> tuple[list[dict], str]:
    """The auditevent rows (without ids) of `events` (`record`'s keyword arguments each) chained after
    `prev_hash`, read with the head locked: the same hashes as `record` would give them one after the
    other. Returns the rows and the new head hash."""
    rows: list[dict] = []
    for item in events:
        actor = item.get("actor")
        row = {"at": utcnow(), "actor_user_id": getattr(actor, "id", None),
               "actor": getattr(actor, "username", "") or "", "action": item["action"],
               "target_type": item.get("target_type", ""), "target_id": str(item.get("target_id", "")),
               "detail": json.dumps(item.get("detail") or {}, sort_keys=True, separators=(",", ":"),
                                    ensure_ascii=False),
               "prev_hash": prev_hash}
        row["hash"] = prev_hash = event_hash(**{k: row[k] for k in (
            "prev_hash", "at", "actor_user_id", "actor", "action", "target_type", "target_id", "detail")})
        rows.append(row)
    return rows, prev_hash


async def record_many(session: AsyncSession, events: list[dict], *, head: tuple[str, int | None]) -> list[int]:
    """Append several events in the caller's SQLite transaction, in order: the same rows and hashes as
    calling `record` for each in turn. Each item holds `record`'s keyword arguments (action, actor,
    target_type, target_id, detail). `head`: (audithead.last_hash, max(auditevent.id)) as the caller
    read them in this transaction, which holds the database's write lock (BEGIN IMMEDIATE). SQLite
    cannot say in which order a multi-row INSERT ... RETURNING numbered its rows, so they are numbered
    here (max + 1, ... as SQLite would) and go in with one statement. Returns the events' ids, in order.
    (PostgreSQL batches write their events with their other rows: dues.services._write_postgresql.)"""
    if not events:
        return []
    prev_hash, last_id = head
    rows, prev_hash = chain_rows(events, prev_hash)
    ids = [(last_id or 0) + n for n in range(1, len(rows) + 1)]
    for row, event_id in zip(rows, ids):
        row["id"] = event_id
    # Core statements on the session's connection: the ORM's unit of work costs more than the SQL here.
    await (await session.connection()).execute(insert(AuditEvent.__table__), rows)
    # An ORM UPDATE: the head object in this session's identity map moves too (no stale head for `record`).
    await session.execute(update(AuditHead).where(AuditHead.id == 1).values(last_id=ids[-1], last_hash=prev_hash)
                          .execution_options(synchronize_session="evaluate"))
    return ids


async def _first_unreadable(session: AsyncSession, *, after: int, within: int) -> int:
    """The first event after `after` whose stored values do not load (it lies within the failed batch)."""
    ids = list((await session.execute(select(AuditEvent.id).where(AuditEvent.id > after)
                                      .order_by(AuditEvent.id).limit(within))).scalars())
    for event_id in ids:
        try:
            (await session.execute(select(AuditEvent).where(AuditEvent.id == event_id))).scalar_one()
        except (ValueError, TypeError):
            return event_id
    return ids[0] if ids else after + 1  # never report an unreadable chain as intact


@dataclass
class ChainReport:
    checked: int
    broken_id: int | None = None
    reason: str = ""

    @property
    def intact(self) -> bool:
        return self.broken_id is None


async def verify_chain(session: AsyncSession, *, progress=None) -> ChainReport:
    """Walk the whole chain in id order; report the first event that does not fit."""
    prev = GENESIS
    checked = 0
    last_id = 0
    batch = 2000
    result = await session.stream(select(AuditEvent).order_by(AuditEvent.id).execution_options(yield_per=batch))
    events = aiter(result)
    while True:
        try:
            (event,) = await anext(events)
        except StopAsyncIteration:
            break
        except (ValueError, TypeError):
            # A stored value no longer parses (e.g. a timestamp overwritten on SQLite): still name the event.
            await result.close()
            return ChainReport(checked, await _first_unreadable(session, after=last_id, within=batch),
                               "a stored value cannot be read (the event was altered)")
        if event.prev_hash != prev:
            return ChainReport(checked, event.id, "previous-hash link broken (an event before it was removed or altered)")
        expected = event_hash(prev_hash=event.prev_hash, at=event.at, actor_user_id=event.actor_user_id,
                              actor=event.actor, action=event.action, target_type=event.target_type,
                              target_id=event.target_id, detail=event.detail)
        if expected != event.hash:
            return ChainReport(checked, event.id, "content does not match its hash (the event was altered)")
        prev = event.hash
        last_id = event.id
        checked += 1
        if progress and checked % 10000 == 0:
            progress(checked)
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
    if head.last_hash != prev or (checked and head.last_id != last_id):
        return ChainReport(checked, head.last_id, "the newest events are missing (the chain was cut short)")
    return ChainReport(checked)
