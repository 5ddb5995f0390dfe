"""Tables of welfare: schemes, their dated rule versions, claims with their
approvals and timeline, payouts from the welfare fund, and claim documents.

Claim details (diagnosis, cause of death, notes), rejection and appeal reasons
and uploaded documents are Fernet tokens (see union.crypto), registered in
`SENSITIVE_COLUMNS` so that `union keys rotate` re-encrypts them too.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from dues.money import DEFAULT_CURRENCY
from union.models import SENSITIVE_COLUMNS, utcnow


class BenefitKind(StrEnum):
    fixed = "fixed"  # a fixed sum
    actual_cost = "actual_cost"  # the actual cost, up to the cap (amount_minor)


class Evidence(StrEnum):
    document = "document"  # a bill, a certificate, a letter
    peer_attestation = "peer_attestation"  # another member vouches for it
    collector_attestation = "collector_attestation"  # the member's collector vouches for it


class ClaimStatus(StrEnum):
    submitted = "submitted"
    under_review = "under_review"
    approved = "approved"
    rejected = "rejected"
    paid = "paid"
    withdrawn = "withdrawn"


# Claims that count toward the yearly limit and hold their event (a second claim for it is refused).
ACTIVE_STATUSES = (ClaimStatus.submitted, ClaimStatus.under_review, ClaimStatus.approved, ClaimStatus.paid)


class AppealStatus(StrEnum):
    pending = "pending"
    upheld = "upheld"  # the rejection stands
    overturned = "overturned"  # the office bearers approved the claim


class PayoutMethod(StrEnum):
    cash = "cash"
    bank = "bank"


class WelfareScheme(SQLModel, table=True):
    __tablename__ = "welfare_scheme"
    id: int | None = Field(default=None, primary_key=True)
    # Stable identifier used in the API ("sickness", "death"...); names on pages are translated.
    code: str = Field(max_length=32, unique=True, index=True)
    name: str = Field(max_length=120)
    description: str = Field(default="", max_length=500)
    # Funeral support and the like are paid to the member's nominee.
    pays_nominee: bool = Field(default=False)
    active: bool = Field(default=True)
    created_by_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    created_at: dt.datetime = Field(default_factory=utcnow)


class WelfareRuleVersion(SQLModel, table=True):
    """A scheme's rules from `effective_from` on; a change is a new row, so a claim is judged
    by the rules in force on its event date."""

    __tablename__ = "welfare_rule_version"
    __table_args__ = (
        UniqueConstraint("scheme_id", "effective_from", name="uq_welfare_rule_scheme_from"),
        CheckConstraint("amount_minor > 0", name="ck_welfare_rule_amount_positive"),
        CheckConstraint("min_membership_months >= 0 AND min_paid_months >= 0 AND min_paid_months <= 12 "
                        "AND waiting_days >= 0", name="ck_welfare_rule_limits"),
        CheckConstraint("approvals_required >= 1 AND approvals_above_threshold >= 1", name="ck_welfare_rule_approvals"),
    )
    id: int | None = Field(default=None, primary_key=True)
    scheme_id: int = Field(foreign_key="welfare_scheme.id", index=True)
    effective_from: dt.date
    min_membership_months: int = Field(default=0)
    min_paid_months: int = Field(default=0)  # of the last twelve
    waiting_days: int = Field(default=0)  # after joining
    benefit_kind: str = Field(default=BenefitKind.fixed, max_length=16)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))  # the sum, or the cap
    currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)
    max_claims_per_year: int | None = Field(default=None)  # None: no limit
    yearly_budget_minor: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    evidence: str = Field(default="document", max_length=120)  # space-separated Evidence values
    approvals_required: int = Field(default=1)
    approval_threshold_minor: int = Field(default=500000, sa_column=Column(BigInteger, nullable=False))
    approvals_above_threshold: int = Field(default=2)
    created_by_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    created_at: dt.datetime = Field(default_factory=utcnow)


class WelfareClaim(SQLModel, table=True):
    __tablename__ = "welfare_claim"
    __table_args__ = (
        Index("ix_welfare_claim_status_branch", "status", "branch_id"),
        CheckConstraint("amount_minor > 0", name="ck_welfare_claim_amount_positive"),
    )
    id: int | None = Field(default=None, primary_key=True)
    reference: str = Field(max_length=16, unique=True, index=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    branch_id: int = Field(foreign_key="branch.id", index=True)  # the member's branch when filed
    scheme_id: int = Field(foreign_key="welfare_scheme.id", index=True)
    rule_version_id: int = Field(foreign_key="welfare_rule_version.id")
    status: str = Field(default=ClaimStatus.submitted, max_length=16)
    event_date: dt.date
    # "<member>:<scheme>:<event date>" while the claim holds its event; NULL once withdrawn, so the
    # database itself refuses a second claim for the same event (NULLs never collide).
    event_key: str | None = Field(default=None, max_length=64, unique=True)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))  # what the rules grant
    claimed_minor: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))  # actual cost
    currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)
    approvals_needed: int = Field(default=1)
    evidence_kind: str = Field(max_length=32)
    attester_member_id: int | None = Field(default=None, foreign_key="member.id")
    attester_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    details_enc: str | None = Field(default=None, sa_column=Column(Text))
    rejection_reason_enc: str | None = Field(default=None, sa_column=Column(Text))
    appeal_status: str | None = Field(default=None, max_length=16)
    appeal_reason_enc: str | None = Field(default=None, sa_column=Column(Text))
    appeal_decided_by_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    filed_by_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    created_at: dt.datetime = Field(default_factory=utcnow)
    decided_at: dt.datetime | None = None
    paid_at: dt.datetime | None = None
    withdrawn_at: dt.datetime | None = None


class WelfareApproval(SQLModel, table=True):
    __tablename__ = "welfare_approval"
    __table_args__ = (UniqueConstraint("claim_id", "user_id", name="uq_welfare_approval_officer"),)
    id: int | None = Field(default=None, primary_key=True)
    claim_id: int = Field(foreign_key="welfare_claim.id", index=True)
    user_id: int = Field(foreign_key="user_account.id")
    created_at: dt.datetime = Field(default_factory=utcnow)


class WelfareClaimEvent(SQLModel, table=True):
    """The claim's timeline: who did what when. No sensitive values (those stay in the claim, encrypted)."""

    __tablename__ = "welfare_claim_event"
    id: int | None = Field(default=None, primary_key=True)
    claim_id: int = Field(foreign_key="welfare_claim.id", index=True)
    at: dt.datetime = Field(default_factory=utcnow)
    actor_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    action: str = Field(max_length=32)
    status: str = Field(max_length=16)  # the claim's status after the action


class WelfarePayout(SQLModel, table=True):
    __tablename__ = "welfare_payout"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="ck_welfare_payout_positive"),)
    id: int | None = Field(default=None, primary_key=True)
    claim_id: int = Field(foreign_key="welfare_claim.id", index=True)
    scheme_id: int = Field(foreign_key="welfare_scheme.id", index=True)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)
    method: str = Field(max_length=8)
    reference: str = Field(default="", max_length=80)
    entry_id: str = Field(foreign_key="journal_entry.id", max_length=36, unique=True)
    paid_on: dt.date = Field(index=True)
    paid_by_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    created_at: dt.datetime = Field(default_factory=utcnow)
    # A correction is a reversing entry; the payout then no longer counts against the budget.
    reversal_entry_id: str | None = Field(default=None, foreign_key="journal_entry.id", max_length=36, unique=True)
    reversed_at: dt.datetime | None = None


class WelfareDocument(SQLModel, table=True):
    """An uploaded document, stored encrypted (base64 of the bytes, then Fernet)."""

    __tablename__ = "welfare_document"
    id: int | None = Field(default=None, primary_key=True)
    claim_id: int = Field(foreign_key="welfare_claim.id", index=True)
    content_type: str = Field(max_length=40)
    size_bytes: int
    data_enc: str = Field(sa_column=Column(Text, nullable=False))
    uploaded_by_user_id: int | None = Field(default=None, foreign_key="user_account.id")
    created_at: dt.datetime = Field(default_factory=utcnow)


SENSITIVE_COLUMNS.extend([
    (WelfareClaim, "details_enc"), (WelfareClaim, "rejection_reason_enc"), (WelfareClaim, "appeal_reason_enc"),
    (WelfareDocument, "data_enc"),
])
