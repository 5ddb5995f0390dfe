"""Tables of cash operations (migration 0006): collection sheets uploaded by
collectors, cash hand-overs from a collector to a treasurer, dues holidays and
hardship waivers, members who opted out of dues messages, and the dues messages
themselves (SMS receipts and monthly reminders, one row per message so that each
is sent at most once).

The joining fee is a column of `dues_plan` (dues.models.DuesPlan), added by the
same migration.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from dues.money import DEFAULT_CURRENCY
from union.models import SENSITIVE_COLUMNS, utcnow


class SheetStatus(StrEnum):
    uploaded = "uploaded"
    applied = "applied"


class CollectionSheet(SQLModel, table=True):
    """A collector's CSV of payments taken offline, kept server-side between preview and apply:
    the Apply button names this row and its content hash, so what is applied is what was previewed."""

    __tablename__ = "collection_sheet"
    id: int | None = Field(default=None, primary_key=True)
    collector_user_id: int = Field(foreign_key="user_account.id", index=True)
    filename: str = Field(default="", max_length=120)
    content: str = Field(sa_column=Column(Text, nullable=False))
    content_hash: str = Field(max_length=64)
    status: str = Field(default=SheetStatus.uploaded, max_length=16)
    created_at: dt.datetime = Field(default_factory=utcnow)
    applied_at: dt.datetime | None = None


class HandoverStatus(StrEnum):
    proposed = "proposed"
    completed = "completed"
    cancelled = "cancelled"


class CashHandover(SQLModel, table=True):
    """Cash a collector hands to a treasurer. The collector proposes it with the amount counted
    (that is the collector's confirmation); the treasurer confirms the same count. The expected
    amount is the collector's cash balance over the ledger up to `as_of_seq` (the chain position
    when proposed), so a payment taken after the proposal stays with the collector for the next
    hand-over instead of being lost or counted short."""

    __tablename__ = "cash_handover"
    __table_args__ = (CheckConstraint("counted_minor >= 0", name="ck_cash_handover_counted"),)
    id: int | None = Field(default=None, primary_key=True)
    collector_user_id: int = Field(foreign_key="user_account.id", index=True)
    treasurer_user_id: int = Field(foreign_key="user_account.id", index=True)
    expected_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    counted_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)
    as_of_seq: int
    status: str = Field(default=HandoverStatus.proposed, max_length=16)
    # The collector's id while the hand-over is open, NULL once closed: unique, so a collector has at
    # most one open hand-over even when two are proposed at the same moment (on both databases).
    open_collector_id: int | None = Field(default=None, unique=True)
    confirmed_by_collector_at: dt.datetime | None = None
    confirmed_by_treasurer_at: dt.datetime | None = None
    cancelled_at: dt.datetime | None = None
    entry_id: str | None = Field(default=None, foreign_key="journal_entry.id", max_length=36)
    created_at: dt.datetime = Field(default_factory=utcnow)


class WaiverKind(StrEnum):
    holiday = "holiday"
    hardship = "hardship"


class DuesWaiver(SQLModel, table=True):
    """A dues holiday or hardship waiver: `months` months from `from_month` (the first of a month)
    are booked as paid by the union (Dr dues_waived / Cr dues_income for the member). The reason
    may tell of illness or hardship, so it is encrypted. Revoked by a reversing entry."""

    __tablename__ = "dues_waiver"
    __table_args__ = (CheckConstraint("months > 0", name="ck_dues_waiver_months"),
                      CheckConstraint("amount_minor >= 0", name="ck_dues_waiver_amount"))
    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    kind: str = Field(max_length=16)
    from_month: dt.date
    months: int
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)
    reason_enc: str = Field(sa_column=Column(Text, nullable=False))
    granted_by_user_id: int = Field(foreign_key="user_account.id")
    granted_at: dt.datetime = Field(default_factory=utcnow)
    entry_id: str | None = Field(default=None, foreign_key="journal_entry.id", max_length=36)
    revoked_at: dt.datetime | None = None
    revoked_by_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    revoke_reason_enc: str | None = Field(default=None, sa_column=Column(Text))
    revoke_entry_id: str | None = Field(default=None, foreign_key="journal_entry.id", max_length=36)


class DuesMessageOptOut(SQLModel, table=True):
    """A member who wants no dues SMS or push (receipts and reminders): on a shared phone a message
    about union dues can out someone."""

    __tablename__ = "dues_message_opt_out"
    member_id: int = Field(foreign_key="member.id", primary_key=True)
    created_at: dt.datetime = Field(default_factory=utcnow)


class NoticeKind(StrEnum):
    receipt = "receipt"
    reminder = "reminder"


class DuesNotice(SQLModel, table=True):
    """One dues message to a member: a receipt (ref = payment id) or a monthly reminder
    (ref = "YYYY-MM"). Unique per member, kind and ref, inserted in the same transaction as the
    due work that sends it: at most one reminder per member per month, however often the job runs."""

    __tablename__ = "dues_notice"
    __table_args__ = (UniqueConstraint("member_id", "kind", "ref", name="uq_dues_notice"),)
    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    kind: str = Field(max_length=16)
    ref: str = Field(max_length=40)
    channel: str | None = Field(default=None, max_length=8)  # sms, push, or none (skipped) once handled
    created_at: dt.datetime = Field(default_factory=utcnow)
    sent_at: dt.datetime | None = None


SENSITIVE_COLUMNS.extend([(DuesWaiver, "reason_enc"), (DuesWaiver, "revoke_reason_enc")])
