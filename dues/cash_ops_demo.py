"""Demo cash operations: two waivers granted by the demo office bearer (a dues holiday
and a hardship waiver) and one completed hand-over of the Bengaluru demo collector's
cash to the demo treasurer, counted ₹50 short so the books show a difference.
Runs after the dues history (imported after dues.demo, which appends its step first)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

import dues.demo  # noqa: F401  (its step must run first: the hand-over needs the collected cash)
from dues import handover, waivers
from dues.money import Money
from union.demo import DEMO_STEPS
from union.models import Member, Role, User
from union.policy import Principal

SHORT_MINOR = 5000


async def _user(session, username: str) -> User | None:
    return (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()


async def load_cash_ops_demo(services, rng, say) -> None:
    today = dt.date.today()
    async with services.sessions() as session:
        office = await _user(session, "demo-office")
        treasurer = await _user(session, "demo-treasurer")
        collector = await _user(session, "demo-collector")
        if office is None or treasurer is None or collector is None:
            return
        bearer = Principal(user=office, grants={Role.office_bearer: None})
        picks = list((await session.execute(select(Member).order_by(Member.id).limit(2).offset(10))).scalars())
        for member, kind, reason in zip(picks, ("holiday", "hardship"),
                                        ("Visiting family in the village (demo)",
                                         "Hospital stay; no income this season (demo)")):
            await waivers.grant(session, member=member, kind=kind, from_month=f"{today:%Y-%m}",
                                months=2 if kind == "holiday" else 3, reason=reason, principal=bearer,
                                vault=services.vault, today=today)
        await session.commit()

    async with services.sessions() as session:
        collector = await _user(session, "demo-collector")
        held = await handover.cash_held(session, collector.id)
        if held.amount_minor <= SHORT_MINOR:
            return
        counted = Money(held.amount_minor - SHORT_MINOR, held.currency)
        proposal = await handover.propose(session, collector=Principal(user=collector, grants={Role.collector: None}),
                                          treasurer_username="demo-treasurer", counted=counted)
        treasurer = await _user(session, "demo-treasurer")
        await handover.confirm(session, handover_id=proposal.id,
                               treasurer=Principal(user=treasurer, grants={Role.treasurer: None}),
                               counted=counted, today=today)
        await session.commit()
    say("Cash operations: 2 waivers, 1 hand-over")


DEMO_STEPS.append(load_cash_ops_demo)
