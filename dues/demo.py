"""Demo dues history: a year of cash dues for every demo member, taken by the
demo collector of the member's branch, so standing, receipts and the books have
something true to show.

Each member gets a plan (about one in seven concessional, two exempt) and a way
of paying: most are paid up (a collector comes every three, six or twelve
months and takes that many months), some paid ahead, some one or two months
behind (grace), some stopped paying three to twelve months ago (lapsed), and a
few who joined this month have not paid yet (new). Whatever a member owed from
before the last year came with their first payment of the year, so there are
about two payments a member and `union demo` stays quick. Every payment goes
through `dues.services.record_cash_payments` (the real ledger entries, receipts
and audit events; a hundred members' payments a batch), dated on the day it was taken: the entry's effective date and
the receipt's date are in the past, spread over the last twelve months.
Card payments, waivers and a cash hand-over are added by the card and cash
operations demo steps, which run after this one.
"""

from __future__ import annotations

import bisect
import datetime as dt
import secrets

from sqlalchemy import bindparam, select, update

from dues.models import CashPayment, DuesAccount, DuesPlan, DuesRate
from dues.money import Money
from dues.services import MAX_MONTHS, PaymentRequest, month_index, record_cash_payments
from union import accounts
from union.crypto import hash_secret
from union.demo import DEMO_STEPS
from union.models import Branch, Member, Role, User
from union.policy import Principal

# How members pay: (share, kind). Kinds: paid up, paid ahead, grace, lapsed.
PATTERNS = ((0.70, "current"), (0.08, "ahead"), (0.12, "grace"), (0.10, "lapsed"))
# Months a collector takes at a time from a member who pays regularly, and how often each is chosen.
CHUNKS = ((3, 0.35), (6, 0.35), (12, 0.30))
BATCH = 100


async def _collectors(session, branches) -> dict[int, Principal]:
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


class _Prices:
    """What months cost on a plan, by the rate in force on each month's first day (as compute_standing)."""

    def __init__(self, rates: list[tuple[dt.date, int]]):
        ordered = sorted(rates)
        self.starts = [month_index(d) if d.day == 1 else month_index(d) + 1 for d, _ in ordered]
        self.amounts = [amount for _, amount in ordered]

    def of(self, first: int, last: int) -> int:
        return sum(self.amounts[max(bisect.bisect_right(self.starts, m) - 1, 0)] for m in range(first, last + 1))


def _pick(rng, weighted) -> object:
    roll, total = rng.random(), 0.0
    for weight, value in weighted:
        total += weight
        if roll < total:
            return value
    return weighted[-1][1]


def _month_start(index: int) -> dt.date:
    return dt.date(index // 12, index % 12 + 1, 1)


def plan_payments(rng, *, joined: dt.date, today: dt.date) -> list[tuple[int, int, dt.date]]:
    """A member's payments as (first month, last month, day paid), oldest first (month indexes)."""
    join, now = month_index(joined), month_index(today)
    year_ago = now - 11  # the history covers this month and the eleven before it
    kind = _pick(rng, [(w, k) for w, k in PATTERNS])
    if join == now and rng.random() < 0.5:
        return []  # joined this month, nothing paid yet: new
    chunk = _pick(rng, [(w, c) for c, w in CHUNKS])
    if kind == "current":
        # Paid through now, in chunks of `chunk` months: the last chunk may run a little past now.
        through = now + rng.randrange(chunk)
    elif kind == "ahead":
        through = now + rng.randint(1, 3) + chunk
    elif kind == "grace":
        through = now - rng.randint(1, 2)
    else:
        through = now - rng.randint(3, 12)
    if through < join:
        return []  # joined recently and never paid: lapsed or in grace with nothing paid
    payments: list[tuple[int, int, dt.date]] = []
    last = through
    while last >= join:
        first = max(join, last - chunk + 1)
        if first < year_ago and payments:
            # What was owed from before the year came with the first visit of the year.
            _, kept_last, kept_day = payments[-1]
            payments[-1] = (join, kept_last, kept_day)
            break
        if first < year_ago:
            first = join  # stopped paying before the year began: one payment, a year ago
        paid_month = min(max(first, year_ago), now)
        earliest = max(_month_start(paid_month), joined)
        latest = max(min(_month_start(paid_month + 1) - dt.timedelta(days=1), today), earliest)
        day = earliest + dt.timedelta(days=rng.randint(0, (latest - earliest).days))
        payments.append((first, last, day))
        last = first - 1
    payments.reverse()
    # In order of the months they cover (two visits can fall in one month).
    days = sorted(day for _, _, day in payments)
    return [(first, last, day) for (first, last, _), day in zip(payments, days)]


async def load_dues_demo(services, rng, say) -> None:
    today = dt.date.today()
    async with services.sessions() as session:
        branches = list((await session.execute(select(Branch))).scalars())
        collectors = await _collectors(session, branches)
        plans = {p.code: p.id for p in (await session.execute(select(DuesPlan))).scalars()}
        rates: dict[int, list[tuple[dt.date, int]]] = {}
        for plan_id, effective_from, monthly in (await session.execute(
                select(DuesRate.plan_id, DuesRate.effective_from, DuesRate.monthly_minor))).all():
            rates.setdefault(plan_id, []).append((effective_from, int(monthly)))
        await session.commit()
        members = list((await session.execute(select(Member).order_by(Member.id))).scalars())
    prices = {plan_id: _Prices(r) for plan_id, r in rates.items()}
    receipt = {branch_id: 0 for branch_id in collectors}
    made = 0
    for start in range(0, len(members), BATCH):
        async with services.sessions() as session:
            requests: list[PaymentRequest] = []
            taken_at: list[dt.datetime] = []
            for member in members[start:start + BATCH]:
                if member.id % 997 == 0:  # two members exempt (a hardship waiver)
                    session.add(DuesAccount(member_id=member.id, plan_id=plans["concessional"], exempt=True,
                                            exempt_reason="Hardship waiver granted by the office bearers (demo)"))
                    continue
                plan_id = plans["standard"]
                if rng.random() < 0.15:  # about one in seven on the concessional plan
                    plan_id = plans["concessional"]
                    session.add(DuesAccount(member_id=member.id, plan_id=plan_id))
                for first, last, day in plan_payments(rng, joined=member.joined_on, today=today):
                    receipt[member.branch_id] += 1
                    requests.append(PaymentRequest(
                        member_no=member.member_no, amount=Money(prices[plan_id].of(first, last)),
                        receipt_no=f"D-{receipt[member.branch_id]:06d}", collector=collectors[member.branch_id],
                        months=last - first + 1 if last - first < MAX_MONTHS else None, today=day))
                    # The receipt is dated the day the cash was taken (the ledger entry's effective date).
                    taken_at.append(dt.datetime.combine(day, dt.time(4 + rng.randrange(10), rng.randrange(60)),
                                                        dt.UTC))
            # A hundred members' payments in one batch (a constant number of statements), in order.
            outcomes = await record_cash_payments(session, requests)
            for outcome in outcomes:
                if outcome.error is not None:
                    raise outcome.error
            if outcomes:
                table = CashPayment.__table__
                await session.execute(update(table).where(table.c.id == bindparam("payment_id"))
                                      .values(created_at=bindparam("taken_at")),
                                      [{"payment_id": outcome.payment.id, "taken_at": at}
                                       for outcome, at in zip(outcomes, taken_at)])
            made += len(outcomes)
            await session.commit()
        say(f"Dues history: {min(len(members), start + BATCH)}/{len(members)} members, {made} cash payments")


DEMO_STEPS.append(load_dues_demo)
