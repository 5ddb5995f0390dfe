"""Monthly dues reminders: members in grace get one reminder a month, by SMS in their own
language (or by push when they have the app and no phone), opted-out members none, members
current, new, lapsed or exempt none; the job run twice (or its row ensured twice) reminds each
member once; each month's run schedules the next month's."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from crisis.models import PushSubscription
from crisis.push import RecordingPushSender
from dues import reminders
from dues.cash_ops_models import DuesMessageOptOut, DuesNotice
from dues.models import DuesAccount, DuesPlan
from tests.union.test_policy import enrol, member_user
from union import i18n, jobs
from union.models import DueWork, Member

TODAY = dt.date.today()
MONTH = f"{TODAY:%Y-%m}"


def months_ago(n: int) -> dt.date:
    index = TODAY.year * 12 + TODAY.month - 1 - n
    return dt.date(index // 12, index % 12 + 1, 1)


class Prefixed:
    def __init__(self, prefix):
        self.prefix = prefix

    def gettext(self, message):
        return self.prefix + message

    def ngettext(self, singular, plural, n):
        return singular if n == 1 else plural


@pytest.fixture
async def world(services, branches, monkeypatch):
    monkeypatch.setitem(i18n.load_catalogs(), "kn", Prefixed("[kn] "))
    monkeypatch.setitem(i18n.load_catalogs(), "ta", Prefixed("[ta] "))
    services.extras["push"] = RecordingPushSender()
    made = {}
    specs = {  # name: (joined, phone, language)
        "grace_kn": (months_ago(1), "9800000001", "kn"),
        "grace_ta": (months_ago(1), "9800000002", "ta"),
        "grace_optout": (months_ago(1), "9800000003", "kn"),
        "grace_unreachable": (months_ago(1), None, "kn"),
        "grace_push": (months_ago(1), None, "en"),
        "new": (TODAY, "9800000004", "kn"),
        "lapsed": (months_ago(5), "9800000005", "kn"),
        "exempt": (months_ago(1), "9800000006", "kn"),
    }
    for name, (joined, phone, language) in specs.items():
        member = await enrol(services, name, "BLR", phone=phone, pin="1234" if name == "grace_push" else None)
        async with services.sessions() as db:
            await db.execute(update(Member).where(Member.id == member.id).values(joined_on=joined, language=language))
            await db.commit()
        made[name] = member
    user = await member_user(services, made["grace_push"])
    async with services.sessions() as db:
        db.add(DuesMessageOptOut(member_id=made["grace_optout"].id))
        standard = (await db.execute(select(DuesPlan.id).where(DuesPlan.code == "standard"))).scalar_one()
        db.add(DuesAccount(member_id=made["exempt"].id, plan_id=standard, exempt=True, exempt_reason="x"))
        db.add(PushSubscription(user_id=user.id, endpoint="https://push.example.org/send/abc", p256dh="k" * 20,
                                auth="a" * 16))
        await db.commit()
    return made


async def run_everything(services) -> None:
    """Make the month's reminder row due now and run all due work, as the sweeper would."""
    async with services.sessions() as db:
        await db.execute(update(DueWork).where(DueWork.kind == reminders.REMINDERS_JOB,
                                               DueWork.key == f"dues.reminders:{MONTH}")
                         .values(due_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
        await db.commit()
    while await jobs.sweep(services):
        pass


async def test_members_in_grace_are_reminded_once_in_their_language(world, services):
    await reminders.ensure_current_month(services)
    await reminders.ensure_current_month(services)  # the cron and the loop again: still one row
    async with services.reader() as db:
        rows = list((await db.execute(select(DueWork).where(DueWork.kind == reminders.REMINDERS_JOB))).scalars())
    assert [r.key for r in rows] == [f"dues.reminders:{MONTH}"]
    assert rows[0].due_at.day == services.settings.dues_reminder_day

    await run_everything(services)
    sent = sorted((m["to"], m["body"]) for m in services.sms.sent)
    assert sent == [
        ("+919800000001", "[kn] Sangha: a friendly reminder, ₹200.00 is due. Please pay your collector this month."),
        # Amounts in the member's locale too (Tamil puts a space after the rupee sign).
        ("+919800000002", "[ta] Sangha: a friendly reminder, ₹\u00a0200.00 is due. Please pay your collector this month."),
    ]
    push = services.extras["push"].sent
    assert [(p["endpoint"], p["payload"]) for p in push] == [("https://push.example.org/send/abc",
                                                               {"type": "dues_reminder"})]
    # Next month's run is already scheduled.
    async with services.reader() as db:
        keys = set((await db.execute(select(DueWork.key).where(DueWork.kind == reminders.REMINDERS_JOB))).scalars())
        nxt = dt.date(TODAY.year + TODAY.month // 12, TODAY.month % 12 + 1, 1)
        assert keys == {f"dues.reminders:{MONTH}", f"dues.reminders:{nxt:%Y-%m}"}
        notices = list((await db.execute(select(DuesNotice.member_id, DuesNotice.channel)
                                         .where(DuesNotice.kind == "reminder"))).all())
    assert sorted(notices) == sorted([(world["grace_kn"].id, "sms"), (world["grace_ta"].id, "sms"),
                                      (world["grace_push"].id, "push")])

    # The month's job runs again (a second worker, a replay): nobody hears twice.
    async with services.sessions() as db:
        works = await reminders.run_reminders(db, services, {"month": MONTH})
        await db.commit()
    assert [w.kind for w in works] == [reminders.REMINDERS_JOB]  # only the next month's row
    while await jobs.sweep(services):
        pass
    assert len(services.sms.sent) == 2 and len(services.extras["push"].sent) == 1


async def test_member_who_paid_meanwhile_gets_nothing(world, services, make_token):
    from tests.union.test_policy import quick_user

    collector = await quick_user(services, "col-remind", ["collector"], "BLR")
    async with services.sessions() as db:
        works = await reminders.schedule_reminders(db, month=MONTH, today=TODAY, grace_months=2)
        await db.commit()
    assert len(works) == 3
    token = await make_token(collector)
    import httpx

    from union.app import create_app

    app = create_app(services.settings, services=services)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            r = await client.post("/api/dues/payments", headers={"Authorization": f"Bearer {token}"},
                                  json={"member_no": world["grace_kn"].member_no, "amount_minor": 20000,
                                        "currency": "INR", "receipt_no": "RM-1"})
            assert r.status_code == 201
    while await jobs.sweep(services):
        pass
    bodies = [m["body"] for m in services.sms.sent if m["to"] == "+919800000001"]
    assert len(bodies) == 1 and "received" in bodies[0]  # the receipt, not a stale reminder


async def test_embedded_loop_and_arq_cron_ensure_the_month(services, branches):
    import asyncio

    from workers.arq_worker import worker_settings
    from workers.embedded import EmbeddedJobs

    runner = EmbeddedJobs(services, sweep_interval=0.1)
    await runner.start()
    try:
        for _ in range(200):
            async with services.reader() as db:
                keys = list((await db.execute(select(DueWork.key).where(
                    DueWork.kind == reminders.REMINDERS_JOB))).scalars())
            if keys:
                break
            await asyncio.sleep(0.05)
    finally:
        await runner.stop()
    assert f"dues.reminders:{MONTH}" in keys
    crons = worker_settings(services.settings.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"}))["cron_jobs"]
    assert any(c.name.endswith(":hourly_scheduling") for c in crons)
