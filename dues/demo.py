"""Demo dues history: every demo member's cash dues paid through a collector of
their branch, most up to date, some in grace, some lapsed, some paid ahead, a few
on the concessional plan and two exempt, so standing and receipts have something
true to show. (Card payments come with the card issue.)"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select

from dues.models import DuesAccount, DuesPlan
from dues.money import Money
from dues.services import record_cash_payment
from union import accounts
from union.crypto import hash_secret
from union.demo import DEMO_STEPS
from union.models import Branch, Member, Role, User
from union.policy import Principal

STANDARD_MINOR = 10000  # ₹100 a month, the standard plan seeded by migration 0004
CONCESSION_MINOR = 5000


def _months_due(joined: dt.date, today: dt.date) -> int:
    return (today.year * 12 + today.month) - (joined.year * 12 + joined.month) + 1


async def _collectors(session, branches, say) -> dict[int, Principal]:
    """The demo collector of each branch (demo-collector in BLR, demo-collector2 in MYS, demo-c-<code> elsewhere)."""
    by_name = {"BLR": "demo-collector", "MYS": "demo-collector2"}
    shared_hash = None
    found: dict[int, Principal] = {}
    for branch in branches:
        username = by_name.get(branch.code, f"demo-c-{branch.code.lower()}")
        user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
        if user is None:
            # Nobody logs in as these (their password is random and never shown); they only hold receipts.
            shared_hash = shared_hash or hash_secret(secrets.token_urlsafe(24))
            user = await accounts.create_user(session, username=username, password=None, password_hash=shared_hash,
                                              roles=[Role.collector], branch_code=branch.code,
                                              display_name=f"Collector {branch.name}")
        found[branch.id] = Principal(user=user, grants={Role.collector: {branch.id}})
    return found


async def load_dues_demo(services, rng, say) -> None:
    today = dt.date.today()
    async with services.sessions() as session:
        branches = list((await session.execute(select(Branch))).scalars())
        collectors = await _collectors(session, branches, say)
        concession = (await session.execute(select(DuesPlan).where(DuesPlan.code == "concessional"))).scalar_one()
        await session.commit()
        members = list((await session.execute(select(Member).order_by(Member.id))).scalars())
    receipt = {branch_id: 0 for branch_id in collectors}
    batch = 200
    for start in range(0, len(members), batch):
        async with services.sessions() as session:
            for member in members[start:start + batch]:
                roll = rng.random()
                if member.id % 997 == 0:  # two members exempt (a hardship waiver)
                    session.add(DuesAccount(member_id=member.id, plan_id=concession.id, exempt=True,
                                            exempt_reason="Hardship waiver granted by the office bearers (demo)"))
                    continue
                monthly = STANDARD_MINOR
                if roll < 0.15:  # about one in seven on the concessional plan
                    session.add(DuesAccount(member_id=member.id, plan_id=concession.id))
                    monthly = CONCESSION_MINOR
                due = _months_due(member.joined_on, today)
                pattern = rng.random()
                if pattern < 0.70:
                    months = due  # up to date
                elif pattern < 0.78:
                    months = due + rng.randint(1, 3)  # paid ahead
                elif pattern < 0.90:
                    months = due - rng.randint(1, 2)  # in grace
                else:
                    months = due - rng.randint(3, min(12, max(3, due)))  # lapsed
                if months <= 0:
                    continue
                receipt[member.branch_id] += 1
                await record_cash_payment(session=session, member_no=member.member_no,
                                          amount=Money(months * monthly, "INR"),
                                          receipt_no=f"D-{receipt[member.branch_id]:06d}",
                                          collector=collectors[member.branch_id], months=months, today=today)
            await session.commit()
        say(f"Dues history: {min(len(members), start + batch)}/{len(members)} members")


DEMO_STEPS.append(load_dues_demo)
