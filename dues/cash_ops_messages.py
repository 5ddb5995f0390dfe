"""Dues messages to members: the SMS receipt for cash, the monthly reminder, and the
member's opt-out of both.

Each message is a `dues_notice` row (unique per member, kind and reference) written in
the same transaction as the due work that sends it (`dues.notice`), so a message is
scheduled at most once however often its cause is replayed. The job renders the text
in the member's language, sends it by SMS (or, for reminders, by push to a member with
no phone but an installed app), and marks the row sent; a second run finds it sent and
does nothing.

Privacy: on a shared phone a message about union dues can out someone, so a member can
opt out of all of them (/dues/me), and the texts carry only an amount, a receipt number
and a month — never a name, a member number or the word "sex work". Push payloads are
`{"type": "dues_reminder"}` and nothing else. Nothing here logs a number or a text.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Sequence

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from dues.cash_ops_models import DuesMessageOptOut, DuesNotice, NoticeKind
from dues.models import CashPayment
from dues.money import Money, format_money
from union import audit, i18n, jobs
from union.models import DueState, DueWork, Member, User, utcnow
from union.sms import SmsError

NOTICE_JOB = "dues.notice"
NOTICE_KEY = "dues-notice:"  # + the notice id: the key of the due work that sends it


def money_locale(language: str) -> str:
    """Babel locale for amounts in a member's language: Indian digit grouping in every one."""
    return f"{language}_IN" if language in i18n.SPOKEN_LANGUAGES else "en_IN"


async def opted_out(session: AsyncSession, member_id: int) -> bool:
    return (await session.get(DuesMessageOptOut, member_id)) is not None


async def set_opt_out(session: AsyncSession, *, member: Member, opt_out: bool, actor) -> bool:
    """Turn the member's dues messages off (True) or back on (False); idempotent, audited."""
    if opt_out:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        await session.execute(dialect.insert(DuesMessageOptOut).values(member_id=member.id, created_at=utcnow())
                              .on_conflict_do_nothing(index_elements=["member_id"]))
    else:
        await session.execute(delete(DuesMessageOptOut).where(DuesMessageOptOut.member_id == member.id))
    await audit.record(session, action="dues.messages_opt_out" if opt_out else "dues.messages_opt_in",
                       actor=actor, target_type="member", target_id=member.member_no)
    return opt_out


async def add_notice(session: AsyncSession, *, member_id: int, kind: str, ref: str) -> DueWork | None:
    """Insert the notice row and the due work that sends it, in the caller's transaction.

    Returns None when this member already has this notice (a replay, or a second run of the
    monthly job): nothing new is scheduled. A savepoint keeps the caller's transaction usable
    after the unique constraint refuses the duplicate."""
    exists = (await session.execute(select(DuesNotice.id).where(
        DuesNotice.member_id == member_id, DuesNotice.kind == kind, DuesNotice.ref == ref))).first()
    if exists:
        return None
    notice = DuesNotice(member_id=member_id, kind=kind, ref=ref)
    from sqlalchemy.exc import IntegrityError

    try:
        async with session.begin_nested():
            session.add(notice)
            await session.flush()
    except IntegrityError:
        return None  # a concurrent run inserted it first
    return await jobs.schedule(session, kind=NOTICE_JOB, key=f"{NOTICE_KEY}{notice.id}",
                               payload={"notice": notice.id})


async def schedule_receipt_sms(session: AsyncSession, paid: Sequence[tuple[CashPayment, Member]]) -> list[DueWork]:
    """After new cash payments, each with its member: the SMS receipts, a notice row and its due work
    each, unless the member has no phone or opted out. Written at once in the caller's transaction
    (one statement on PostgreSQL, three on SQLite); returns the due work rows (not in the session) for
    commit_and_nudge. A new payment's id cannot have a notice yet: no look-up (the unique constraint
    still guards it)."""
    paid = [(payment, member) for payment, member in paid if member.phone_enc]
    if not paid:
        return []
    if session.get_bind().dialect.name == "postgresql":
        return await _schedule_receipts_postgresql(session, paid)
    # As dues.services.record_cash_payments numbers its payments: SQLite cannot say how a multi-row
    # INSERT ... RETURNING numbered its rows, and the transaction holds the write lock (BEGIN IMMEDIATE).
    conn = await session.connection()
    last_notice, last_work, out = (await conn.execute(_receipts_lookup_sqlite(), {
        "members": sorted({member.id for _, member in paid})})).one()
    out = {int(member_id) for member_id in (out or "").split(",") if member_id}
    now = utcnow()
    notices = [{"id": (last_notice or 0) + n, "member_id": member.id, "kind": NoticeKind.receipt.value,
                "ref": str(payment.id), "channel": None, "created_at": now, "sent_at": None}
               for n, (payment, member) in enumerate([pm for pm in paid if pm[1].id not in out], start=1)]
    if not notices:
        return []
    works = [{"id": (last_work or 0) + n, "kind": NOTICE_JOB, "key": f"{NOTICE_KEY}{notice['id']}",
              "payload": json.dumps({"notice": notice["id"]}), "due_at": now, "state": DueState.pending.value,
              "attempts": 0, "max_attempts": jobs.DEFAULT_MAX_ATTEMPTS, "created_at": now}
             for n, notice in enumerate(notices, start=1)]
    await conn.execute(insert(DuesNotice.__table__), notices)
    await conn.execute(insert(DueWork.__table__), works)
    return [DueWork(**work) for work in works]


@functools.cache
def _receipts_lookup_sqlite():
    """The newest notice and due-work ids (the rows are numbered as SQLite would) and which of the
    members opted out (comma-separated), in one statement."""
    return select(
        select(func.max(DuesNotice.id)).scalar_subquery(), select(func.max(DueWork.id)).scalar_subquery(),
        select(func.group_concat(DuesMessageOptOut.member_id)).where(
            DuesMessageOptOut.member_id.in_(bindparam("members", expanding=True))).scalar_subquery())


@functools.cache
def _receipts_statement_postgresql():
    """schedule_receipt_sms on PostgreSQL in one statement (see union.pgbulk): the notices of members who
    did not opt out, in order, and a due-work row for each, as jobs.schedule would make it."""
    return text(
        "WITH n AS (INSERT INTO dues_notice (member_id, kind, ref, created_at) "
        "SELECT u.member_id, :kind, u.ref, :now "
        "FROM unnest(CAST(:member_ids AS INTEGER[]), CAST(:refs AS VARCHAR[])) WITH ORDINALITY AS u(member_id, ref, _n) "
        "WHERE NOT EXISTS (SELECT 1 FROM dues_message_opt_out o WHERE o.member_id = u.member_id) "
        "ORDER BY u._n RETURNING id) "
        "INSERT INTO duework (kind, key, payload, due_at, state, attempts, max_attempts, created_at) "
        "SELECT :job, CAST(:key AS VARCHAR) || n.id, '{\"notice\": ' || n.id || '}', :now, :state, 0, :max_attempts, :now "
        "FROM n RETURNING id, key, payload")


async def _schedule_receipts_postgresql(session: AsyncSession, paid) -> list[DueWork]:
    now = utcnow()
    conn = await session.connection()
    rows = (await conn.execute(_receipts_statement_postgresql(), {
        "kind": NoticeKind.receipt.value, "now": now, "member_ids": [member.id for _, member in paid],
        "refs": [str(payment.id) for payment, _ in paid], "job": NOTICE_JOB, "key": NOTICE_KEY,
        "state": DueState.pending.value, "max_attempts": jobs.DEFAULT_MAX_ATTEMPTS})).all()
    # The rows as jobs.schedule would return them (not in the session: they are written already).
    return [DueWork(id=row.id, kind=NOTICE_JOB, key=row.key, payload=row.payload, due_at=now, created_at=now)
            for row in rows]


async def _receipt_text(session: AsyncSession, svc, notice: DuesNotice, member: Member) -> str | None:
    from dues import services as dues

    payment = await session.get(CashPayment, int(notice.ref))
    if payment is None:
        return None
    standing = await dues.standing(session, member=member, today=dt.date.today(),
                                   grace_months=svc.settings.grace_months)
    amount = format_money(Money(payment.amount_minor, payment.currency), money_locale(member.language))
    paid_through = standing.paid_through or "-"
    with i18n.using(member.language):
        return i18n.gettext("Sangha: received %(amount)s, receipt %(receipt_no)s. Paid through %(paid_through)s. "
                            "Thank you.", amount=amount, receipt_no=payment.receipt_no, paid_through=paid_through)


async def _reminder_text(session: AsyncSession, svc, notice: DuesNotice, member: Member) -> str | None:
    from dues import services as dues

    standing = await dues.standing(session, member=member, today=dt.date.today(),
                                   grace_months=svc.settings.grace_months)
    if standing.status != "grace":
        return None  # paid since the reminder was scheduled: say nothing
    arrears = format_money(Money(standing.arrears_minor, standing.currency), money_locale(member.language))
    with i18n.using(member.language):
        return i18n.gettext("Sangha: a friendly reminder, %(arrears)s is due. Please pay your collector this month.",
                            arrears=arrears)


async def _push_targets(session: AsyncSession, member: Member) -> list[dict]:
    # Push subscriptions belong to crisis response's installed app; imported here, not at the top,
    # so that dues does not depend on crisis for anything else.
    from crisis.models import PushSubscription

    user_id = (await session.execute(select(User.id).where(User.member_id == member.id))).scalar_one_or_none()
    if user_id is None:
        return []
    subs = (await session.execute(select(PushSubscription).where(PushSubscription.user_id == user_id))).scalars()
    return [{"endpoint": s.endpoint, "p256dh": s.p256dh, "auth": s.auth} for s in subs]


async def _mark(session: AsyncSession, notice_id: int, channel: str, sent: bool) -> None:
    await session.execute(update(DuesNotice).where(DuesNotice.id == notice_id, DuesNotice.sent_at.is_(None))
                          .values(channel=channel, sent_at=utcnow() if sent else None))


@jobs.due_handler(NOTICE_JOB)
async def send_notice(session: AsyncSession, svc, payload: dict):
    notice = await session.get(DuesNotice, payload["notice"])
    if notice is None or notice.sent_at is not None or notice.channel is not None:
        return []  # sent (or deliberately skipped) already: a second run does nothing
    member = await session.get(Member, notice.member_id)
    notice_id = notice.id
    if member is None or await opted_out(session, member.id):
        await _mark(session, notice_id, "none", False)
        return []
    compose = _receipt_text if notice.kind == NoticeKind.receipt else _reminder_text
    body = await compose(session, svc, notice, member)
    phone = svc.vault.decrypt(member.phone_enc) if member.phone_enc else None
    push = [] if phone or notice.kind != NoticeKind.reminder else await _push_targets(session, member)
    if body is None or not (phone or push):
        await _mark(session, notice_id, "none", False)
        return []
    # Like crisis SMS: no transaction (on SQLite, the write lock) is held while the provider answers.
    await session.rollback()
    if phone:
        try:
            await svc.sms.send(to=phone, body=body)
        except SmsError as exc:
            if exc.retry:
                raise
            await _mark(session, notice_id, "none", False)  # refused for good (a bad number): do not retry
            return []
        await _mark(session, notice_id, "sms", True)
        return []
    sender = svc.extras.get("push")
    delivered = False
    for target in push:
        if sender is None:
            break
        result = await sender.send(**target, payload={"type": "dues_reminder"}, ttl=86400, urgency="low")
        delivered = delivered or result.ok
    await _mark(session, notice_id, "push" if delivered else "none", delivered)
    return []
