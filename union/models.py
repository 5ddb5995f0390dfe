"""Tables of the union core: branches, members, accounts, roles, sessions,
API tokens, the audit log and the due-work queue.

Times are aware UTC datetimes (SQLModel stores them as UTC on both databases).
Columns ending in `_enc` hold Fernet tokens (see union.crypto); they are listed in
`SENSITIVE_COLUMNS` so that `union keys rotate` re-encrypts every one of them.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Role(StrEnum):
    member = "member"
    collector = "collector"
    welfare_officer = "welfare_officer"
    dispatcher = "dispatcher"
    crisis_responder = "crisis_responder"
    treasurer = "treasurer"
    office_bearer = "office_bearer"


class Language(StrEnum):
    kn = "kn"
    te = "te"
    ta = "ta"
    hi = "hi"
    ur = "ur"
    mr = "mr"
    en = "en"


class Branch(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=16, unique=True, index=True)
    name: str = Field(max_length=100)
    lat: float
    lon: float
    # Member numbers are allocated per branch with a conditional increment of this counter.
    next_member_seq: int = Field(default=0)


class Member(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    member_no: str = Field(max_length=24, unique=True, index=True)
    working_name: str = Field(max_length=80, index=True)
    branch_id: int = Field(foreign_key="branch.id", index=True)
    language: str = Field(max_length=8, default="kn")
    phone_hash: str | None = Field(default=None, max_length=64, unique=True)
    phone_enc: str | None = Field(default=None, sa_column=Column(Text))
    legal_name_enc: str | None = Field(default=None, sa_column=Column(Text))
    date_of_birth_enc: str | None = Field(default=None, sa_column=Column(Text))
    nominee_enc: str | None = Field(default=None, sa_column=Column(Text))
    joined_on: dt.date
    created_at: dt.datetime = Field(default_factory=utcnow)


class User(SQLModel, table=True):
    __tablename__ = "user_account"
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True, index=True)
    display_name: str = Field(max_length=80, default="")
    password_hash: str | None = Field(default=None, max_length=200)
    member_id: int | None = Field(default=None, foreign_key="member.id", unique=True)
    language: str | None = Field(default=None, max_length=8)
    is_active: bool = Field(default=True)
    created_at: dt.datetime = Field(default_factory=utcnow)


class RoleGrant(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("user_id", "role", "branch_id", name="uq_role_grant"),)
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user_account.id", index=True)
    role: str = Field(max_length=32)
    # NULL: the role holds in every branch.
    branch_id: int | None = Field(default=None, foreign_key="branch.id")


class WebSession(SQLModel, table=True):
    # The primary key is the SHA-256 of the cookie value: a database copy cannot be replayed as a cookie.
    id: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="user_account.id", index=True)
    created_at: dt.datetime = Field(default_factory=utcnow)
    last_seen_at: dt.datetime = Field(default_factory=utcnow)
    expires_at: dt.datetime


class ApiToken(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user_account.id", index=True)
    digest: str = Field(max_length=64, unique=True)
    label: str = Field(default="", max_length=80)
    created_at: dt.datetime = Field(default_factory=utcnow)
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


class AuditEvent(SQLModel, table=True):
    """Append-only (database triggers refuse UPDATE and DELETE), hash-chained."""

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = Field(default_factory=utcnow)
    actor_user_id: int | None = Field(default=None)
    actor: str = Field(default="", max_length=64)
    action: str = Field(max_length=64, index=True)
    target_type: str = Field(default="", max_length=32)
    target_id: str = Field(default="", max_length=64)
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """One row: the newest audit hash. Appending locks it, so the chain never forks."""

    id: int = Field(default=1, primary_key=True)
    last_id: int = Field(default=0)
    last_hash: str = Field(max_length=64)


class DueState(StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


class DueWork(SQLModel, table=True):
    """A piece of work that must happen. Jobs only nudge; the sweeper finds what nobody did."""

    __table_args__ = (Index("ix_due_work_state_due", "state", "due_at"),)
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=64)
    key: str = Field(max_length=200, unique=True)
    payload: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    due_at: dt.datetime = Field(default_factory=utcnow)
    state: str = Field(default=DueState.pending, max_length=16)
    attempts: int = Field(default=0)
    max_attempts: int = Field(default=8)
    lease_until: dt.datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: dt.datetime = Field(default_factory=utcnow)
    done_at: dt.datetime | None = None


# (table, column) of every encrypted column; other domains append theirs.
SENSITIVE_COLUMNS: list[tuple[type[SQLModel], str]] = [
    (Member, "phone_enc"),
    (Member, "legal_name_enc"),
    (Member, "date_of_birth_enc"),
    (Member, "nominee_enc"),
]
