"""The append-only, hash-chained audit log of privileged actions and of reads of
sensitive records.

Each event's hash covers its content and the previous event's hash; the
`audithead` row holds the newest hash and is locked while appending, so the chain
never forks under concurrent writers. `record_many` appends several events with the head
locked once and one multi-row INSERT (same rows and hashes as `record` called for each). The database refuses UPDATE and DELETE on
`auditevent` (triggers from the first migration). Details must never hold
sensitive values: ids and field names only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
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
    event = AuditEvent(
        at=utcnow(),
        actor_user_id=getattr(actor, "id", None),
        actor=getattr(actor, "username", "") or "",
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        detail=json.dumps(detail or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        prev_hash=head.last_hash,
        hash="",
    )
    event.hash = event_hash(prev_hash=event.prev_hash, at=event.at, actor_user_id=event.actor_user_id,
                            actor=event.actor, action=action, target_type=target_type,
                            target_id=event.target_id, detail=event.detail)
    session.add(event)
    await session.flush()
    head.last_id = event.id
    head.last_hash = event.hash
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


async def record_many(session: AsyncSession, events: list[dict], *,
                      head: tuple[str, int | None] | None = None) -> list[int]:
    """Append several events in the caller's transaction, in order, with the head locked once: the
    same rows and hashes as calling `record` for each in turn. Each item holds `record`'s keyword
    arguments (action, actor, target_type, target_id, detail). Returns the events' ids, in order.
    Flushes, never commits.

    head (SQLite only): (audithead.last_hash, max(auditevent.id)) as the caller read them in this
    transaction, which holds the database's write lock, to save a statement."""
    if not events:
        return []
    sqlite = session.get_bind().dialect.name == "sqlite"
    if sqlite:
        # SQLite cannot say in which order a multi-row INSERT ... RETURNING numbered its rows, so SQLAlchemy
        # would insert them one by one. The transaction holds the database's write lock (BEGIN IMMEDIATE):
        # number them as SQLite would (max + 1, ...) and insert them in one statement.
        if head is None:
            head = tuple((await session.execute(
                select(AuditHead.last_hash, select(func.max(AuditEvent.id)).scalar_subquery())
                .where(AuditHead.id == 1))).one())
        prev_hash, last_id = head
    else:
        prev_hash = (await session.execute(
            select(AuditHead.last_hash).where(AuditHead.id == 1).with_for_update())).scalar_one()
    rows, prev_hash = chain_rows(events, prev_hash)
    if sqlite:
        for n, row in enumerate(rows, start=1):
            row["id"] = (last_id or 0) + n
    # Core statements on the session's connection: the ORM's unit of work costs more than the SQL here.
    conn = await session.connection()
    table = AuditEvent.__table__
    if sqlite:
        await conn.execute(insert(table), rows)
        ids = [row["id"] for row in rows]
    else:
        ids = list((await conn.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True),
                                       rows)).scalars())
    if any(later <= earlier for earlier, later in zip(ids, ids[1:])):
        # verify_chain walks by id: a chain numbered out of order must not be committed.
        raise RuntimeError("audit events were numbered out of their chain order")
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
