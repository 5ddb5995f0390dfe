"""Fixtures of the welfare tests: two branches' members with real dues history in
the ledger, welfare officers of each branch, a collector, an office bearer, and a
funded welfare fund."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest
from sqlalchemy import func, select

from dues import ledger
from dues.models import JournalEntry
from dues.money import Money
from tests.helpers import hashed
from union import accounts, members
from union.models import Member, User
from union.policy import Principal
from welfare import services as welfare

TODAY = dt.date.today()


def months_ago(months: int, day: int = 1) -> dt.date:
    index = TODAY.year * 12 + TODAY.month - 1 - months
    return dt.date(index // 12, index % 12 + 1, day)


async def pay_dues(db, member: Member, months: int) -> None:
    """Dues credit for `months` months of the standard plan (Rs 100), as the ledger books cash."""
    await ledger.ensure_accounts(db)
    amount = Money(months * 10000)
    await ledger.post_entry(db, key=f"test-dues:{member.id}:{months}", kind="cash_payment",
                            lines=[("bank", amount), ("dues_income", -amount)], description="dues",
                            effective_date=TODAY, member_id=member.id)


async def principal(services, user: User) -> Principal:
    async with services.reader() as db:
        return await accounts.principal_for(db, user, "session")


@dataclass
class World:
    members: dict[str, Member] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    who: dict[str, Principal] = field(default_factory=dict)


async def enrol(db, services, name: str, branch: str, joined: dt.date, *, phone: str | None = None,
                pin: bool = False) -> Member:
    return await members.enrol(db, data=members.NewMember(working_name=name, branch_code=branch, language="en",
                                                          phone=phone),
                               vault=services.vault, phone_hash=services.phone_hash, actor=None, today=joined,
                               pin_hash=hashed("2468") if pin else None)


@pytest.fixture
async def world(services, branches) -> World:
    w = World()
    async with services.sessions() as db:
        # Joined two years ago, paid up and a few months ahead: eligible for most schemes.
        w.members["asha"] = await enrol(db, services, "Asha K.", "BLR", months_ago(24, 3), phone="9876500001",
                                        pin=True)
        w.members["bhavya"] = await enrol(db, services, "Bhavya R.", "BLR", months_ago(24, 3), phone="9876500002")
        w.members["chitra"] = await enrol(db, services, "Chitra M.", "MYS", months_ago(24, 3), phone="9876500003")
        # Joined today: not eligible for anything that needs membership.
        w.members["new"] = await enrol(db, services, "Newly J.", "BLR", TODAY)
        for key in ("asha", "bhavya", "chitra"):
            await pay_dues(db, w.members[key], 27)
        for name, roles, branch in [("officer1", ["welfare_officer"], "BLR"), ("officer2", ["welfare_officer"], "BLR"),
                                    ("officer-mys", ["welfare_officer"], "MYS"), ("collector", ["collector"], "BLR"),
                                    ("bearer", ["office_bearer"], None), ("treasurer", ["treasurer"], None)]:
            w.users[name] = await accounts.create_user(db, username=name, password=None, roles=roles,
                                                       branch_code=branch, password_hash=hashed("correct horse battery"))
        w.users["asha"] = (await db.execute(select(User).where(User.member_id == w.members["asha"].id))).scalar_one()
        await db.commit()
    for name, user in w.users.items():
        w.who[name] = await principal(services, user)
    return w


async def fund(services, world: World, rupees: int) -> None:
    async with services.sessions() as db:
        await welfare.allocate_to_fund(session=db, principal=world.who["bearer"], amount=Money(rupees * 100),
                                       source="bank", today=TODAY)
        await db.commit()


async def fund_balance(services) -> int:
    async with services.reader() as db:
        return await welfare.fund_balance_read(db)


async def entry_count(services) -> int:
    async with services.reader() as db:
        return (await db.execute(select(func.count()).select_from(JournalEntry))).scalar_one()


async def file(services, world: World, *, who: str, member: str, scheme: str, evidence: str = "document",
               event_date: dt.date = TODAY, claimed_minor: int | None = None, details: str | None = None,
               attester: str | None = None):
    async with services.sessions() as db:
        claim, works = await welfare.file_claim(
            session=db, vault=services.vault, principal=world.who[who],
            data=welfare.NewClaim(member_no=world.members[member].member_no, scheme=scheme, event_date=event_date,
                                  evidence=evidence, claimed_minor=claimed_minor, details=details,
                                  attester_member_no=attester),
            today=TODAY, grace_months=services.settings.grace_months)
        await db.commit()
        return claim


async def step(services, fn, **kw):
    async with services.sessions() as db:
        result, _works = await fn(session=db, **kw)
        await db.commit()
        return result
