"""Tables of the treasurer's books: closed accounting periods, signed checkpoints of
the chain heads, and imported bank-statement lines with their matches.

A closed month is a row of `accounting_period`; the database itself (triggers of
migration 0008, on SQLite and PostgreSQL) refuses a journal entry whose
effective date falls in it, and refuses UPDATE and DELETE of the period rows:
a month, once closed, stays closed. Checkpoints are append-only too.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from dues.money import DEFAULT_CURRENCY
from union.models import SENSITIVE_COLUMNS, utcnow


class AccountingPeriod(SQLModel, table=True):
    """A closed month ("YYYY-MM"). Only closed months have a row."""

    __tablename__ = "accounting_period"
    id: int | None = Field(default=None, primary_key=True)
    month: str = Field(max_length=7, unique=True)
    closed_at: dt.datetime = Field(default_factory=utcnow)
    closed_by_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    # What the treasurer said about the reconciliation when closing (required when differences remained).
    reconciled_note: str = Field(default="", max_length=1000)
    # Differences left when the month was closed (0 when fully reconciled).
    open_differences: int = Field(default=0)


class LedgerCheckpoint(SQLModel, table=True):
    """A signed statement of both chain heads, made when a month is closed. `body` is the
    canonical JSON that was signed; `signature` is the Ed25519 signature over it (base64)."""

    __tablename__ = "ledger_checkpoint"
    id: int | None = Field(default=None, primary_key=True)
    month: str = Field(max_length=7, unique=True)
    made_at: dt.datetime = Field(default_factory=utcnow)
    made_by_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    ledger_seq: int
    ledger_hash: str = Field(max_length=64)
    audit_id: int
    audit_hash: str = Field(max_length=64)
    body: str = Field(sa_column=Column(Text, nullable=False))
    signature: str = Field(max_length=200)


class BankImport(SQLModel, table=True):
    """One bank-statement CSV the treasurer imported (the same file twice is refused)."""

    __tablename__ = "bank_import"
    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(max_length=64, unique=True)
    imported_at: dt.datetime = Field(default_factory=utcnow)
    imported_by_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    line_count: int = Field(default=0)


class BankLine(SQLModel, table=True):
    """One line of a bank statement: money in positive, out negative. The description can name
    a payer, so it is encrypted at rest. `entry_id` is the ledger entry it was matched to."""

    __tablename__ = "bank_line"
    __table_args__ = (UniqueConstraint("import_id", "line_no", name="uq_bank_line_import_line"),)
    id: int | None = Field(default=None, primary_key=True)
    import_id: int = Field(foreign_key="bank_import.id", index=True)
    line_no: int
    booked_on: dt.date = Field(index=True)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)
    reference: str = Field(default="", max_length=100)
    description_enc: str | None = Field(default=None, sa_column=Column(Text))
    entry_id: str | None = Field(default=None, foreign_key="journal_entry.id", unique=True, max_length=36)
    matched_how: str = Field(default="", max_length=16)  # "", "auto" or "manual"
    matched_by_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    matched_at: dt.datetime | None = None


SENSITIVE_COLUMNS.append((BankLine, "description_enc"))
