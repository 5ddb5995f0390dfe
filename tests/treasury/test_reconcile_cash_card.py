"""Card and cash reconciliation: collectors' hand-overs (dues.handover) against the receipts
they wrote, and card payments booked in the ledger against the card records; every
difference is listed, and counts toward closing the month."""

from __future__ import annotations

import datetime as dt

from dues import card, handover
from dues.card_models import CardPayment, CardPaymentStatus
from dues.money import Money
from tests.treasury.conftest import cash, principal
from treasury import reconcile

APRIL = (dt.date(2025, 4, 1), dt.date(2025, 4, 30))


async def hand_over(services, people, *, counted: int, day: dt.date):
    collector = await principal(services, people.collectors["BLR"])
    treasurer = await principal(services, people.treasurer)
    async with services.sessions() as db:
        proposed = await handover.propose(db, collector=collector, treasurer_username="tara", counted=Money(counted))
        await db.commit()
    async with services.sessions() as db:
        done = await handover.confirm(db, handover_id=proposed.id, treasurer=treasurer, counted=Money(counted),
                                      today=day)
        await db.commit()
    return done


async def test_handovers_against_receipts(services, people):
    await cash(services, people, member="A", rupees=100, branch="BLR", receipt="R1", day=dt.date(2025, 4, 3))
    await cash(services, people, member="B", rupees=200, branch="BLR", receipt="R2", day=dt.date(2025, 4, 4))
    await hand_over(services, people, counted=29500, day=dt.date(2025, 4, 15))  # Rs 5 short
    await cash(services, people, member="A", rupees=100, branch="BLR", receipt="R3", day=dt.date(2025, 4, 16))
    await hand_over(services, people, counted=10000, day=dt.date(2025, 4, 20))  # exact
    async with services.reader() as db:
        check = await reconcile.cash_reconciliation(db, start=APRIL[0], end=APRIL[1])
        left = await reconcile.month_differences(db, start=APRIL[0], end=APRIL[1])
    assert [(r.collector, r.day, r.receipts_minor, r.counted_minor, r.difference_minor) for r in check.rows] == [
        ("colblr", dt.date(2025, 4, 15), 30000, 29500, -500), ("colblr", dt.date(2025, 4, 20), 10000, 10000, 0)]
    assert check.differences == ["colblr handed over 29500 on 2025-04-15 against receipts of 30000."]
    assert dict(left.items) == {"cash hand-overs that differ from the receipts": 1}


async def card_payment(services, people, *, charge: str, amount: int, fee: int, booked_fee: int):
    async with services.sessions() as db:
        entry = await card.post_card_payment(db, member_id=people.members["A"].id, amount=Money(amount),
                                             charge_id=charge, effective_date=dt.date(2025, 4, 10))
        if booked_fee:
            await card.post_card_fee(db, fee=Money(booked_fee), charge_id=charge, effective_date=dt.date(2025, 4, 10))
        db.add(CardPayment(member_id=people.members["A"].id, amount_minor=amount, fee_minor=fee, charge_id=charge,
                           status=CardPaymentStatus.succeeded, entry_id=entry.id))
        await db.commit()


async def test_card_payments_against_their_records(services, people):
    """Without Stripe (closing a month counts these): the ledger against the card records. The comparison
    with Stripe itself, over HTTP through the SDK, is in test_reconcile_card.py."""
    await card_payment(services, people, charge="ch_ok", amount=10000, fee=300, booked_fee=300)
    await card_payment(services, people, charge="ch_fee", amount=10000, fee=300, booked_fee=200)
    async with services.reader() as db:
        check = await reconcile.card_reconciliation(db, start=APRIL[0], end=APRIL[1])
        left = await reconcile.month_differences(db, start=APRIL[0], end=APRIL[1])
    assert check.checked == 2 and not check.compared_with_stripe
    assert check.differences == ["Card payment 2: the ledger booked a fee of 200, the card record says 300."]
    assert dict(left.items)["card payment differences"] == 1
