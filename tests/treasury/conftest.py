"""Fixtures of the treasury tests: a union with two branches, a collector in each, a
treasurer, three members, and a scenario month (April 2025) of cash and card dues,
a refund, a welfare allocation and payout, and a collector's cash shortfall."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest

from dues import ledger
from dues.models import EntryKind
from dues.money import Money
from dues.services import record_cash_payment
from tests.helpers import quick_user
from union import accounts
from union.models import Member

APRIL = dt.date(2025, 4, 1)


@dataclass
class Books:
    treasurer: object
    office_bearer: object
    collectors: dict  # branch code -> user
    members: dict  # name -> Member
    entries: dict = field(default_factory=dict)  # label -> JournalEntry


async def principal(services, user):
    async with services.reader() as db:
        return await accounts.principal_for(db, user, "session")


async def post(services, **kw):
    async with services.sessions() as db:
        await ledger.ensure_accounts(db)
        entry = await ledger.post_entry(db, **kw)
        await db.commit()
        return entry


@pytest.fixture
async def people(services, branches) -> Books:
    treasurer = await quick_user(services, "tara", ["treasurer"])
    office_bearer = await quick_user(services, "obi", ["office_bearer"])
    collectors = {"BLR": await quick_user(services, "colblr", ["collector"], "BLR"),
                  "MYS": await quick_user(services, "colmys", ["collector"], "MYS")}
    async with services.sessions() as db:
        made = {name: Member(member_no=no, working_name=f"Member {name}", branch_id=branches[code].id,
                             joined_on=APRIL)
                for name, no, code in [("A", "BLR-00001", "BLR"), ("B", "BLR-00002", "BLR"),
                                       ("C", "MYS-00001", "MYS")]}
        db.add_all(made.values())
        await ledger.ensure_accounts(db)
        await db.commit()
    return Books(treasurer, office_bearer, collectors, made)


async def cash(services, books: Books, *, member: str, rupees: int, branch: str, receipt: str, day: dt.date):
    collector = await principal(services, books.collectors[branch])
    async with services.sessions() as db:
        payment = await record_cash_payment(session=db, member_no=books.members[member].member_no,
                                            amount=Money(rupees * 100), receipt_no=receipt, collector=collector,
                                            today=day)
        await db.commit()
    return payment


@pytest.fixture
async def april(services, people) -> Books:
    """The scenario month. Expected figures are spelled out in test_scenario.py."""
    b = people
    c1, c2 = (f"{ledger.COLLECTOR_CASH_PREFIX}{b.collectors[code].id}" for code in ("BLR", "MYS"))
    await cash(services, b, member="A", rupees=100, branch="BLR", receipt="R1", day=dt.date(2025, 4, 3))
    await cash(services, b, member="B", rupees=200, branch="BLR", receipt="R2", day=dt.date(2025, 4, 4))
    await cash(services, b, member="C", rupees=100, branch="MYS", receipt="R3", day=dt.date(2025, 4, 5))
    # Card dues as the card service books them: the payment, then Stripe's fee (no member).
    a = b.members["A"].id
    b.entries["card"] = await post(services, key="stripe:charge:ch_1:payment", kind=EntryKind.card_payment,
                                   lines=[("stripe", Money(10000)), ("dues_income", Money(-10000))],
                                   description="Card dues, Stripe charge ch_1", effective_date=dt.date(2025, 4, 10),
                                   member_id=a)
    await post(services, key="stripe:charge:ch_1:fee", kind=EntryKind.card_fee,
               lines=[("card_fees", Money(300)), ("stripe", Money(-300))], description="Stripe fee on charge ch_1",
               effective_date=dt.date(2025, 4, 10))
    b.entries["refund"] = await post(services, key="stripe:refund:re_1", kind=EntryKind.refund,
                                     lines=[("refunds", Money(10000)), ("stripe", Money(-10000))],
                                     description="Refund re_1", effective_date=dt.date(2025, 4, 12), member_id=a)
    # The Bengaluru collector hands over Rs 300 of receipts and is Rs 5 short.
    b.entries["handover"] = await post(services, key="handover:1", kind=EntryKind.handover,
                                       lines=[("cash:office", Money(29500)), ("cash_over_short", Money(500)),
                                              (c1, Money(-30000))],
                                       description="Hand-over", effective_date=dt.date(2025, 4, 15),
                                       actor=b.treasurer)
    # Money set aside for welfare, and a claim paid from it (as welfare.services books them).
    await post(services, key="welfare-allocation:1", kind=EntryKind.transfer,
               lines=[("cash:office", Money(20000)), ("welfare_fund", Money(-20000))],
               description="Contributions allocated to welfare", effective_date=dt.date(2025, 4, 16))
    b.entries["payout"] = await post(services, key="welfare-payout:1:1", kind="welfare_payout",
                                     lines=[("welfare_fund", Money(15000)), ("cash:office", Money(-15000))],
                                     description="Welfare sickness claim", effective_date=dt.date(2025, 4, 20),
                                     member_id=b.members["C"].id)
    b.entries["c1"], b.entries["c2"] = c1, c2
    return b
