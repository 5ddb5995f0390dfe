"""Tables of card payments through Stripe: one row per payment attempt (a Checkout
session or a subscription invoice), one row per monthly auto-pay subscription,
and every Stripe event we have applied.

Stripe is never told who a member is: its objects carry our row ids only
(metadata `card_payment_id` / `card_subscription_id`), never a name, phone or
member number, because being on a sex workers' union's books can hurt people.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Column
from sqlmodel import Field, SQLModel

from dues.money import DEFAULT_CURRENCY
from union.models import utcnow


class CardPaymentStatus(StrEnum):
    pending = "pending"  # checkout opened, not paid (yet)
    succeeded = "succeeded"
    failed = "failed"  # the card was declined; nothing posted, standing unchanged
    refunded = "refunded"
    partially_refunded = "partially_refunded"
    disputed = "disputed"  # the member's bank took the money back (or is trying to)
    expired = "expired"  # the checkout page was left unpaid until Stripe closed it


class CardPaymentKind(StrEnum):
    checkout = "checkout"  # the member paid one or more months on a Checkout page
    invoice = "invoice"  # a monthly auto-pay (subscription) invoice


class SubscriptionStatus(StrEnum):
    pending = "pending"  # checkout opened, not confirmed
    active = "active"
    past_due = "past_due"
    canceled = "canceled"


class CardSubscription(SQLModel, table=True):
    """A member's monthly auto-pay. The Stripe idempotency key of its checkout is
    derived from this row's id."""

    __tablename__ = "card_subscription"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="ck_card_subscription_positive"),)
    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    status: str = Field(default=SubscriptionStatus.pending, max_length=24)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)
    checkout_session_id: str | None = Field(default=None, max_length=255, unique=True)
    stripe_subscription_id: str | None = Field(default=None, max_length=255, unique=True)
    stripe_customer_id: str | None = Field(default=None, max_length=255)
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class CardPayment(SQLModel, table=True):
    """One card payment attempt and what became of it. Amounts that reached the
    ledger are kept here for the member's page; the ledger itself is the truth."""

    __tablename__ = "card_payment"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="ck_card_payment_positive"),)
    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    kind: str = Field(default=CardPaymentKind.checkout, max_length=16)
    months: int = Field(default=1)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)
    status: str = Field(default=CardPaymentStatus.pending, max_length=24, index=True)
    subscription_id: int | None = Field(default=None, foreign_key="card_subscription.id", index=True)
    checkout_session_id: str | None = Field(default=None, max_length=255, unique=True)
    invoice_id: str | None = Field(default=None, max_length=255, unique=True)
    payment_intent_id: str | None = Field(default=None, max_length=255, unique=True)
    charge_id: str | None = Field(default=None, max_length=255, unique=True)
    fee_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    # The part of amount_minor that is the plan's joining fee, still owed when the payment was opened.
    joining_fee_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    refunded_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    disputed_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    failure_message: str = Field(default="", max_length=500)
    entry_id: str | None = Field(default=None, foreign_key="journal_entry.id", max_length=36)
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class StripeEvent(SQLModel, table=True):
    """A Stripe event we have applied, inserted in the same transaction as its
    effect: a replayed or concurrently duplicated event finds it and does nothing."""

    __tablename__ = "stripe_event"
    id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=100)
    stripe_created: dt.datetime = Field(index=True)
    outcome: str = Field(default="applied", max_length=32)
    applied_at: dt.datetime = Field(default_factory=utcnow)
