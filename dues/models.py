"""Tables of the double-entry ledger: the chart of accounts, journal entries and
their postings, and the head of the entries' hash chain.

The database itself keeps the books honest (triggers from migration 0003, on
SQLite and PostgreSQL): an entry's postings are inserted first and the entry
header last, and the header's insert is refused unless its postings (two or
more) sum to zero per currency; postings cannot be added to an entry that
exists (it is sealed); entries and postings are never updated or deleted —
corrections are reversing entries; an account's code and currency never change.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from dues.money import DEFAULT_CURRENCY
from union.models import utcnow


class AccountType(StrEnum):
    asset = "asset"
    liability = "liability"
    equity = "equity"
    income = "income"
    expense = "expense"


class EntryKind(StrEnum):
    """Kinds the dues domain posts; other domains may post kinds of their own."""

    cash_payment = "cash_payment"
    card_payment = "card_payment"
    card_fee = "card_fee"
    refund = "refund"
    dispute = "dispute"
    dues_charge = "dues_charge"
    waiver = "waiver"
    handover = "handover"
    transfer = "transfer"
    reversal = "reversal"


class LedgerAccount(SQLModel, table=True):
    __tablename__ = "ledger_account"
    id: int | None = Field(default=None, primary_key=True)
    # Stable, machine-readable name ("bank", "cash:collector:12"); entries hash it, so the database refuses a change.
    code: str = Field(max_length=64, unique=True, index=True)
    name: str = Field(max_length=120)
    type: str = Field(max_length=16)
    currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)
    created_at: dt.datetime = Field(default_factory=utcnow)


def new_entry_id() -> str:
    return str(uuid.uuid4())


class JournalEntry(SQLModel, table=True):
    """Append-only and hash-chained in `seq` order. The id is chosen by the
    application so that the postings can be inserted before their header."""

    __tablename__ = "journal_entry"
    id: str = Field(default_factory=new_entry_id, primary_key=True, max_length=36)
    idempotency_key: str = Field(max_length=200, unique=True)
    kind: str = Field(max_length=32, index=True)
    description: str = Field(default="", max_length=500)
    effective_date: dt.date = Field(index=True)
    posted_at: dt.datetime = Field(default_factory=utcnow)
    created_by_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    member_id: int | None = Field(default=None, foreign_key="member.id", index=True)
    # Unique: an entry is reversed at most once (a reversal may itself be reversed).
    reverses_entry_id: str | None = Field(default=None, foreign_key="journal_entry.id", unique=True, max_length=36)
    content_hash: str = Field(max_length=64)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    seq: int = Field(unique=True)


class Posting(SQLModel, table=True):
    """One line of an entry: debit positive, credit negative, in minor units."""

    __table_args__ = (CheckConstraint("amount_minor <> 0", name="ck_posting_amount_nonzero"),)
    id: int | None = Field(default=None, primary_key=True)
    # Deferred: the postings go in before their entry header, whose insert checks that they balance.
    entry_id: str = Field(sa_column=Column(
        String(36), ForeignKey("journal_entry.id", deferrable=True, initially="DEFERRED"),
        nullable=False, index=True))
    account_id: int = Field(foreign_key="ledger_account.id", index=True)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)


class LedgerHead(SQLModel, table=True):
    """One row: the newest entry's seq and hash. Posting locks it, so the chain never forks."""

    __tablename__ = "ledger_head"
    id: int = Field(default=1, primary_key=True)
    last_seq: int = Field(default=0)
    last_hash: str = Field(max_length=64)


# ---------------------------------------------------------------- dues plans and cash payments


class DuesPlan(SQLModel, table=True):
    """A monthly fee plan ("standard", "concessional"). Migration 0004 seeds both."""

    __tablename__ = "dues_plan"
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True, index=True)
    name: str = Field(max_length=120)
    # Booked once, from a member's first cash payment on this plan (dues/joining.py); 0 = no fee.
    joining_fee_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    joining_fee_currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)


class DuesRate(SQLModel, table=True):
    """The monthly amount of a plan from `effective_from` on; a rate change is a new row,
    so the months before it keep the rate that was in force then."""

    __tablename__ = "dues_rate"
    __table_args__ = (UniqueConstraint("plan_id", "effective_from", name="uq_dues_rate_plan_from"),
                      CheckConstraint("monthly_minor >= 0", name="ck_dues_rate_nonnegative"))
    id: int | None = Field(default=None, primary_key=True)
    plan_id: int = Field(foreign_key="dues_plan.id", index=True)
    monthly_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)
    effective_from: dt.date


class DuesAccount(SQLModel, table=True):
    """A member's dues arrangement. Optional: a member without one is on the standard plan
    and not exempt, so enrolment (union/) needs to know nothing about dues."""

    __tablename__ = "dues_account"
    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", unique=True)
    plan_id: int = Field(foreign_key="dues_plan.id")
    exempt: bool = Field(default=False)
    exempt_reason: str = Field(default="", max_length=500)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class CashPayment(SQLModel, table=True):
    """Cash a collector took from a member, with the ledger entry that booked it. The receipt
    number is unique within the collector's receipt book."""

    __tablename__ = "cash_payment"
    __table_args__ = (UniqueConstraint("collector_user_id", "receipt_no", name="uq_cash_payment_receipt"),
                      CheckConstraint("amount_minor > 0", name="ck_cash_payment_positive"))
    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    collector_user_id: int = Field(foreign_key="user_account.id", index=True)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)
    months: int | None = Field(default=None)
    receipt_no: str = Field(max_length=40)
    entry_id: str = Field(foreign_key="journal_entry.id", max_length=36, unique=True)
    created_at: dt.datetime = Field(default_factory=utcnow)
