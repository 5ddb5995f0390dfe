"""Tables of crisis response: teams and their members, incidents with the time
of every step, offers with acknowledgement deadlines, the record of every
dispatch decision, case notes, follow-ups, and browser push subscriptions.

Precise caller locations, callback numbers and case notes are encrypted (or,
for coordinates, kept only until the retention purge); anonymous statistics
(kind, branch, step times) stay.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from union.models import SENSITIVE_COLUMNS, utcnow


class IncidentKind(StrEnum):
    police = "police"
    client_violence = "client_violence"
    hired_criminals = "hired_criminals"
    gatekeeper = "gatekeeper"
    eviction = "eviction"
    medical = "medical"
    other = "other"


class IncidentStatus(StrEnum):
    new = "new"
    offered = "offered"
    accepted = "accepted"
    en_route = "en_route"
    on_scene = "on_scene"
    resolved = "resolved"
    cancelled = "cancelled"
    escalated = "escalated"


OPEN_STATUSES = (IncidentStatus.new, IncidentStatus.offered, IncidentStatus.accepted, IncidentStatus.en_route,
                 IncidentStatus.on_scene, IncidentStatus.escalated)


class Skill(StrEnum):
    police_station = "police_station"
    legal = "legal"
    medical = "medical"
    counselling = "counselling"
    gatekeeper = "gatekeeper"
    trans_led = "trans_led"


class TeamStatus(StrEnum):
    available = "available"
    off_duty = "off_duty"
    offered = "offered"  # reserved for one incident while an offer is pending
    busy = "busy"  # accepted an incident and has not finished it


class OfferStatus(StrEnum):
    pending = "pending"
    accepted = "accepted"
    declined = "declined"
    lapsed = "lapsed"
    withdrawn = "withdrawn"


class Team(SQLModel, table=True):
    __table_args__ = (Index("ix_team_base_lat", "base_lat"), Index("ix_team_live_lat", "live_lat"))
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=80, unique=True)
    branch_id: int = Field(foreign_key="branch.id", index=True)
    base_lat: float
    base_lon: float
    live_lat: float | None = None
    live_lon: float | None = None
    live_at: dt.datetime | None = None
    status: str = Field(default=TeamStatus.off_duty, max_length=16)
    skills: str = Field(default="", max_length=200)  # space-separated Skill values
    languages: str = Field(default="", max_length=60)  # space-separated ISO 639-1 codes
    current_incident_id: int | None = Field(default=None)
    created_at: dt.datetime = Field(default_factory=utcnow)
    # Change stamp, set by the database on every insert and update whatever the writer: on SQLite from
    # TeamClock (triggers of migration 0009), on PostgreSQL the writing transaction's id (migration 0010);
    # the dispatch cache reads the rows changed since the state it holds (crisis/teamcache.py).
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, index=True, default=0))


class TeamClock(SQLModel, table=True):
    """One row: the newest team change stamp, and an epoch that grows when a team is deleted
    (see crisis/teamcache.py; maintained by the database's triggers: the version on SQLite only, the
    epoch on both)."""

    id: int | None = Field(default=None, primary_key=True)
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    epoch: int = Field(default=0)


class TeamMember(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("team_id", "user_id", name="uq_team_member"),)
    id: int | None = Field(default=None, primary_key=True)
    team_id: int = Field(foreign_key="team.id", index=True)
    user_id: int = Field(foreign_key="user_account.id", index=True)
    phone_enc: str | None = Field(default=None, sa_column=Column(Text))  # for SMS alerts when push fails


class Incident(SQLModel, table=True):
    __table_args__ = (Index("ix_incident_status_created", "status", "created_at"),)
    id: int | None = Field(default=None, primary_key=True)
    reference: str = Field(max_length=16, unique=True, index=True)
    status_token_digest: str = Field(max_length=64)
    kind: str = Field(max_length=24)
    language: str = Field(max_length=8)
    source: str = Field(max_length=12, default="web")  # web, api, hotline, sms, voice
    branch_id: int | None = Field(default=None, foreign_key="branch.id", index=True)
    area: str = Field(default="", max_length=120)  # a gazetteer place or district: an area, not an address
    lat_enc: str | None = Field(default=None, sa_column=Column(Text))
    lon_enc: str | None = Field(default=None, sa_column=Column(Text))
    callback_phone_enc: str | None = Field(default=None, sa_column=Column(Text))
    callback_phone_hash: str | None = Field(default=None, max_length=64, index=True)
    note_enc: str | None = Field(default=None, sa_column=Column(Text))
    teams_needed: int = Field(default=1)
    misses: int = Field(default=0)
    status: str = Field(default=IncidentStatus.new, max_length=16)
    created_by_user_id: int | None = Field(default=None)
    created_at: dt.datetime = Field(default_factory=utcnow)
    offered_at: dt.datetime | None = None
    accepted_at: dt.datetime | None = None
    en_route_at: dt.datetime | None = None
    on_scene_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    cancelled_at: dt.datetime | None = None
    escalated_at: dt.datetime | None = None
    purged_at: dt.datetime | None = None


class Offer(SQLModel, table=True):
    __table_args__ = (Index("ix_offer_status_deadline", "status", "deadline_at"),)
    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    team_id: int = Field(foreign_key="team.id", index=True)
    status: str = Field(default=OfferStatus.pending, max_length=16)
    created_at: dt.datetime = Field(default_factory=utcnow)
    deadline_at: dt.datetime
    answered_at: dt.datetime | None = None
    answered_by_user_id: int | None = None
    distance_km: float | None = None
    eta_seconds: int | None = None
    sms_sent_at: dt.datetime | None = None
    broadcast: bool = Field(default=False)  # part of an escalation broadcast, not a reservation


class DispatchDecision(SQLModel, table=True):
    """Why a team was chosen, and why each nearer team was passed over."""

    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    at: dt.datetime = Field(default_factory=utcnow)
    chosen_team_id: int | None = None
    outcome: str = Field(max_length=24)  # offered, escalated, no_team
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False))


class CaseNote(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    author_user_id: int | None = None
    body_enc: str | None = Field(default=None, sa_column=Column(Text))
    created_at: dt.datetime = Field(default_factory=utcnow)


class FollowUp(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id", unique=True)
    team_id: int | None = Field(default=None, foreign_key="team.id")
    due_on: dt.date
    done_at: dt.datetime | None = None
    done_by_user_id: int | None = None


class PushSubscription(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user_account.id", index=True)
    endpoint: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    p256dh: str = Field(max_length=200)
    auth: str = Field(max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow)
    last_success_at: dt.datetime | None = None
    failures: int = Field(default=0)


SENSITIVE_COLUMNS.extend([
    (Incident, "lat_enc"), (Incident, "lon_enc"), (Incident, "callback_phone_enc"), (Incident, "note_enc"),
    (CaseNote, "body_enc"), (TeamMember, "phone_enc"),
])
