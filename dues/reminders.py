"""Monthly dues reminders to members in grace (behind, not yet lapsed).

Durable scheduling (DESIGN §3): one due-work row per month, keyed
`dues.reminders:YYYY-MM`, due on `UNION_DUES_REMINDER_DAY` of that month. When it
runs it schedules the next month's row, so the chain keeps itself going; the arq
cron (workers/arq_worker.py) and the embedded loop (workers/embedded.py) only make
sure the current month's row exists (`ensure_current_month`, idempotent by key).

A run computes every member's standing in bulk, and for each member in grace who
has not opted out and can be reached (a phone, or a push subscription of the
installed app) inserts a `dues_notice` (member, "reminder", "YYYY-MM") and the due
work that sends it, in one transaction. The notice is unique per member and month:
running the job twice, or two workers at once, reminds each member at most once a
month. The message itself is rendered in the member's language when sent
(dues.cash_ops_messages).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dues import services as dues
from dues.cash_ops_messages import add_notice
from dues.cash_ops_models import DuesMessageOptOut, DuesNotice, NoticeKind
from dues.models import DuesAccount, DuesPlan, DuesRate
from dues.money import DEFAULT_CURRENCY
from union import jobs
from union.models import DueWork, Member, User

REMINDERS_JOB = "dues.reminders"


def month_key(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def _next_month(day: dt.date) -> dt.date:
    return dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)


def run_time(month: dt.date, reminder_day: int) -> dt.datetime:
    """When a month's reminders go: its reminder day, 04:30 UTC (10:00 in India)."""
    return dt.datetime(month.year, month.month, reminder_day, 4, 30, tzinfo=dt.UTC)


async def schedule_month(session: AsyncSession, *, month: dt.date, reminder_day: int) -> DueWork:
    """The due-work row of a month's reminders (the same key twice returns the first row)."""
    return await jobs.schedule(session, kind=REMINDERS_JOB, key=f"{REMINDERS_JOB}:{month_key(month)}",
                               payload={"month": month_key(month)}, due_at=run_time(month, reminder_day))


async def ensure_current_month(services, *, today: dt.date | None = None) -> DueWork:
    """Make sure this month's reminder row exists (what the cron and the embedded loop call)."""
    today = today or dt.date.today()
    async with services.sessions() as session:
        work = await schedule_month(session, month=today.replace(day=1),
                                    reminder_day=services.settings.dues_reminder_day)
        await jobs.commit_and_nudge(session, services.jobs, [work])
    return work


async def members_in_grace(session: AsyncSession, *, today: dt.date, grace_months: int) -> list[int]:
    """Ids of members whose standing is grace today, computed in bulk (one query per table)."""
    rates: dict[int, list[tuple[dt.date, int]]] = defaultdict(list)
    currencies: dict[int, str] = {}
    for plan_id, start, monthly, currency in await session.execute(
            select(DuesRate.plan_id, DuesRate.effective_from, DuesRate.monthly_minor, DuesRate.currency)):
        rates[plan_id].append((start, int(monthly)))
        currencies[plan_id] = currency
    standard = (await session.execute(select(DuesPlan.id).where(DuesPlan.code == dues.STANDARD_PLAN))).scalar_one()
    accounts = {m: (p, bool(e)) for m, p, e in await session.execute(
        select(DuesAccount.member_id, DuesAccount.plan_id, DuesAccount.exempt))}
    paid = {m: int(c) for m, c in await session.execute(dues.paid_total_query())}
    found = []
    for member_id, joined_on in await session.execute(select(Member.id, Member.joined_on)):
        plan_id, exempt = accounts.get(member_id, (standard, False))
        if exempt or not rates.get(plan_id):
            continue
        standing = dues.compute_standing(joined_on=joined_on, today=today, rates=rates[plan_id],
                                         paid_minor=paid.get(member_id, 0), grace_months=grace_months,
                                         currency=currencies.get(plan_id, DEFAULT_CURRENCY))
        if standing.status == dues.StandingStatus.grace:
            found.append(member_id)
    return found


async def _reachable(session: AsyncSession, member_ids: list[int]) -> set[int]:
    """Members with a phone, or with a push subscription of the installed app."""
    if not member_ids:
        return set()
    with_phone = set((await session.execute(select(Member.id).where(
        Member.id.in_(member_ids), Member.phone_enc.is_not(None)))).scalars())
    from crisis.models import PushSubscription  # the installed app's subscriptions (see cash_ops_messages)

    with_push = set((await session.execute(
        select(User.member_id).join(PushSubscription, PushSubscription.user_id == User.id)
        .where(User.member_id.in_(member_ids)))).scalars())
    return with_phone | with_push


async def schedule_reminders(session: AsyncSession, *, month: str, today: dt.date,
                             grace_months: int) -> list[DueWork]:
    """Notices (and their send jobs) for every reachable member in grace not yet reminded in `month`."""
    in_grace = await members_in_grace(session, today=today, grace_months=grace_months)
    opted = set((await session.execute(select(DuesMessageOptOut.member_id))).scalars())
    done = set((await session.execute(select(DuesNotice.member_id).where(
        DuesNotice.kind == NoticeKind.reminder, DuesNotice.ref == month))).scalars())
    candidates = [m for m in in_grace if m not in opted and m not in done]
    reachable = await _reachable(session, candidates)
    works = []
    for member_id in candidates:
        if member_id in reachable:
            work = await add_notice(session, member_id=member_id, kind=NoticeKind.reminder, ref=month)
            if work is not None:
                works.append(work)
    return works


@jobs.due_handler(REMINDERS_JOB)
async def run_reminders(session: AsyncSession, svc, payload: dict):
    today = dt.date.today()
    works = await schedule_reminders(session, month=payload["month"], today=today,
                                     grace_months=svc.settings.grace_months)
    year, month = (int(part) for part in payload["month"].split("-"))
    works.append(await schedule_month(session, month=_next_month(dt.date(year, month, 1)),
                                      reminder_day=svc.settings.dues_reminder_day))
    return works


async def reminders_sent(session: AsyncSession, member_id: int) -> list[DuesNotice]:
    return list((await session.execute(select(DuesNotice).where(
        DuesNotice.member_id == member_id, DuesNotice.kind == NoticeKind.reminder)
        .order_by(DuesNotice.id.desc()))).scalars())

