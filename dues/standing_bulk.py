"""Standing of many members at once (reports, reminders, the demo's check, a bulk recompute).

`dues.services.standing` loads one member's plan, rates and payments (four queries); for
every member of the union that would be four queries a member. `standings_for` loads the
same inputs for all of them in a constant number of queries — the members, their dues
accounts, every plan's rates, and one grouped sum of the ledger (`paid_total_query`) —
and runs the pure `compute_standing` for each member in Python, so its answer is the
per-member answer by construction (tests/dues/test_standing_bulk.py checks it).

Read-only: call it in a `services.reader()` session.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dues.models import DuesAccount, DuesPlan, DuesRate, JournalEntry
from dues.money import DEFAULT_CURRENCY
from dues.services import STANDARD_PLAN, Standing, StandingStatus, compute_standing, paid_total_query
from union.models import Member

# Bound parameters per IN list: far below SQLite's 32,766 and PostgreSQL's 65,535.
CHUNK = 5000


async def _rates_by_plan(session: AsyncSession) -> dict[int, tuple[list[tuple[dt.date, int]], str]]:
    rows = (await session.execute(select(DuesRate.plan_id, DuesRate.effective_from, DuesRate.monthly_minor,
                                         DuesRate.currency).order_by(DuesRate.plan_id, DuesRate.effective_from))).all()
    plans: dict[int, tuple[list[tuple[dt.date, int]], str]] = {}
    for plan_id, effective_from, monthly_minor, currency in rows:
        rates, _ = plans.get(plan_id, ([], currency))
        rates.append((effective_from, int(monthly_minor)))
        plans[plan_id] = (rates, currency)  # the currency of the newest rate, as `standing` takes it
    return plans


async def _chunk(session: AsyncSession, ids: list[int] | None):
    """Members (id, joined_on), dues accounts and paid totals of `ids` (None: every member)."""
    members = select(Member.id, Member.joined_on).order_by(Member.id)
    accounts = select(DuesAccount.member_id, DuesAccount.plan_id, DuesAccount.exempt)
    paid = paid_total_query()
    if ids is not None:
        members = members.where(Member.id.in_(ids))
        accounts = accounts.where(DuesAccount.member_id.in_(ids))
        paid = paid.where(JournalEntry.member_id.in_(ids))
    return ((await session.execute(members)).all(),
            {row.member_id: row for row in (await session.execute(accounts)).all()},
            # PostgreSQL sums bigints as numeric: int() is exact.
            {member_id: int(credit) for member_id, credit in (await session.execute(paid)).all()})


async def standings_for(session: AsyncSession, *, today: dt.date, grace_months: int,
                        member_ids: Iterable[int] | None = None) -> dict[int, Standing]:
    """Standing by member id, for `member_ids` (None: every member). Unknown ids are left out.

    Queries: plans and rates (2), then members, accounts and paid totals (3) for all members
    at once, or per chunk of CHUNK ids when ids are given."""
    standard_id = (await session.execute(select(DuesPlan.id).where(DuesPlan.code == STANDARD_PLAN))).scalar_one()
    plans = await _rates_by_plan(session)
    if member_ids is None:
        chunks: list[list[int] | None] = [None]
    else:
        wanted = sorted(set(member_ids))
        chunks = [wanted[i:i + CHUNK] for i in range(0, len(wanted), CHUNK)]
    found: dict[int, Standing] = {}
    for ids in chunks:
        members, accounts, paid = await _chunk(session, ids)
        for member_id, joined_on in members:
            account = accounts.get(member_id)
            rates, currency = plans.get(account.plan_id if account is not None else standard_id,
                                        ([], DEFAULT_CURRENCY))
            found[member_id] = compute_standing(
                joined_on=joined_on, today=today, rates=rates, paid_minor=paid.get(member_id, 0),
                grace_months=grace_months, exempt=bool(account is not None and account.exempt), currency=currency)
    return found


def count_by_status(standings: Iterable[Standing]) -> dict[str, int]:
    """{"current": n, "grace": n, ...} with every status present (zero where none)."""
    counts: dict[str, int] = defaultdict(int, {str(s): 0 for s in StandingStatus})
    for standing in standings:
        counts[str(standing.status)] += 1
    return dict(counts)
