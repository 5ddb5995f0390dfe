"""Welfare paid out, as the welfare domain books it (welfare.services.pay), shows in the
treasurer's income and expenditure by scheme, and a corrected payout comes off again."""

from __future__ import annotations

from tests.welfare.conftest import TODAY, fund, world  # noqa: F401  (the welfare fixtures)
from tests.welfare.test_payouts import approved_claim, try_pay
from treasury import reports
from welfare import services as welfare


async def test_welfare_out_by_scheme(services, world):  # noqa: F811
    await fund(services, world, 100000)
    claim = await approved_claim(services, world, "asha", scheme="death")
    payout = await try_pay(services, world, claim.id, "bearer")
    first = TODAY.replace(day=1)
    async with services.reader() as db:
        (month,) = await reports.income_expenditure_by_month(db, start=first, end=TODAY)
    assert month.welfare_out == payout.amount_minor > 0
    assert month.welfare_by_scheme == {"death": payout.amount_minor}

    async with services.sessions() as db:
        await welfare.reverse_payout(session=db, payout_id=payout.id, principal=world.who["bearer"],
                                     reason="paid twice", today=TODAY)
        await db.commit()
    async with services.reader() as db:
        (month,) = await reports.income_expenditure_by_month(db, start=first, end=TODAY)
    assert month.welfare_out == 0 and month.welfare_by_scheme == {}
