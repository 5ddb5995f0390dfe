"""Demo card payments: a few dozen demo members paid some months by card over the
past year (Stripe-like ids, Stripe's fee from each balance transaction), a couple
of refunds, one dispute lost and one won, one declined card, so the member's card
page and the treasurer's books have card money to show. Deterministic from the
demo's rng; posted through the same functions as the webhook."""

from __future__ import annotations

import datetime as dt
import string

from sqlalchemy import select

from dues.card import (CardPaymentRefused, monthly_rate, post_card_dispute, post_card_dispute_fee, post_card_dispute_won,
                       post_card_fee, post_card_payment, post_card_refund)
from dues.card_models import CardPayment, CardPaymentKind, CardPaymentStatus
from dues.money import Money
from dues.stripe_standin import DISPUTE_FEE_MINOR
from union.demo import DEMO_STEPS
from union.models import Member

CARD_MEMBERS = 40
_ALPHABET = string.ascii_letters + string.digits


def _stripe_id(rng, prefix: str) -> str:
    return f"{prefix}_3" + "".join(rng.choice(_ALPHABET) for _ in range(23))


def _fee(amount_minor: int) -> int:
    return round(amount_minor * 2 / 100) + 300  # 2 % + ₹3, like the stand-in


async def load_card_demo(services, rng, say) -> None:
    today = dt.date.today()
    async with services.sessions() as session:
        ids = list((await session.execute(select(Member.id).order_by(Member.id))).scalars())
        if not ids:
            return
        chosen = sorted(rng.sample(ids, min(CARD_MEMBERS, len(ids))))
        posted = 0
        for n, member_id in enumerate(chosen):
            member = await session.get(Member, member_id)
            try:
                rate = await monthly_rate(session, member=member, today=today)
            except CardPaymentRefused:
                continue  # exempt
            for _ in range(rng.randint(1, 3)):
                months = rng.choice([1, 1, 2, 3, 6, 12])
                amount = Money(rate.amount_minor * months, rate.currency)
                day = today - dt.timedelta(days=rng.randrange(0, 365))
                charge = _stripe_id(rng, "ch")
                row = CardPayment(member_id=member.id, kind=CardPaymentKind.checkout, months=months,
                                  amount_minor=amount.amount_minor, currency=amount.currency,
                                  status=CardPaymentStatus.succeeded,
                                  checkout_session_id="cs_live_" + _stripe_id(rng, "a")[5:],
                                  payment_intent_id=_stripe_id(rng, "pi"), charge_id=charge,
                                  created_at=dt.datetime.combine(day, dt.time(10, 0), dt.UTC))
                if n % 17 == 5:  # a declined card: recorded, nothing posted
                    row.status, row.charge_id = CardPaymentStatus.failed, None
                    row.failure_message = "Your card was declined."
                    session.add(row)
                    continue
                entry = await post_card_payment(session, member_id=member.id, amount=amount, charge_id=charge,
                                                effective_date=day)
                fee = Money(_fee(amount.amount_minor), amount.currency)
                await post_card_fee(session, fee=fee, charge_id=charge, effective_date=day)
                row.entry_id, row.fee_minor = entry.id, fee.amount_minor
                later = min(today, day + dt.timedelta(days=3))
                if n % 13 == 3:  # refunded: paid twice by mistake
                    await post_card_refund(session, member_id=member.id, amount=amount,
                                           refund_id=_stripe_id(rng, "re"), charge_id=charge, effective_date=later)
                    row.status, row.refunded_minor = CardPaymentStatus.refunded, amount.amount_minor
                elif n in (7, 29):  # disputed by the bank: one lost, one won
                    dispute = _stripe_id(rng, "dp")
                    await post_card_dispute(session, member_id=member.id, amount=amount, dispute_id=dispute,
                                            charge_id=charge, effective_date=later)
                    await post_card_dispute_fee(session, fee=Money(DISPUTE_FEE_MINOR, amount.currency),
                                                dispute_id=dispute, stage="withdrawn", effective_date=later)
                    if n == 29:
                        await post_card_dispute_won(session, member_id=member.id, amount=amount, dispute_id=dispute,
                                                    charge_id=charge, effective_date=later)
                    else:
                        row.status, row.disputed_minor = CardPaymentStatus.disputed, amount.amount_minor
                session.add(row)
                posted += 1
        await session.commit()
    say(f"Card payments: {posted} for {len(chosen)} members (Stripe, demo).")


DEMO_STEPS.append(load_card_demo)
