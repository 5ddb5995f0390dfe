"""Due-work handlers of crisis response: push alerts (one row per offer and
device, so each device is retried on its own), the SMS fallback, acknowledgement
deadlines, retries of dispatch for escalated incidents, and the retention purge.

Handlers return the new due work they created; the job runner nudges it after
its transaction commits."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from crisis import services as crisis
from crisis.models import Incident, IncidentStatus, Offer, OfferStatus, PushSubscription, TeamMember
from union import i18n, jobs
from union.models import User, utcnow
from union.sms import SmsError


class PushRetry(Exception):
    """The push service asked us to try again later (429 or 5xx)."""


# A device that took a push less than this long ago needs no new "last success" write.
SUCCESS_STAMP_EVERY = dt.timedelta(minutes=10)


@jobs.due_handler("crisis.push")
async def send_push(session, svc, payload: dict):
    offer_id = payload.get("offer")
    sub_id = payload["subscription"]
    subs = PushSubscription.__table__
    offer_status = (select(Offer.status).where(Offer.id == offer_id).scalar_subquery() if offer_id is not None
                    else None)
    # Read in a read-only transaction: on SQLite a write transaction holds the one write lock, and new
    # help requests (or answers to offers) must not wait for a push being sent. Nothing is written
    # before the push service answers; `session` begins (and takes the lock) only for the writes after.
    async with svc.reader() as reader:
        row = (await reader.execute(
            select(subs.c.endpoint, subs.c.p256dh, subs.c.auth, subs.c.failures, subs.c.last_success_at,
                   *([offer_status] if offer_status is not None else []))
            .where(subs.c.id == sub_id))).one_or_none()
    if row is None:
        return []
    if offer_id is not None and row[5] != OfferStatus.pending:
        return []  # answered already (or gone): do not wake anyone
    # The message must outlive the acknowledgement window on a phone that is briefly offline.
    ttl = max(svc.settings.ack_timeout_seconds, 60)
    result = await svc.extras["push"].send(endpoint=row.endpoint, p256dh=row.p256dh, auth=row.auth,
                                           payload=payload["message"], ttl=ttl, urgency="high")
    if result.retry:
        raise PushRetry(f"push service answered {result.status}")
    now = utcnow()
    if result.ok:
        last = row.last_success_at
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=dt.UTC)
        if row.failures or last is None or now - last > SUCCESS_STAMP_EVERY:
            await session.execute(subs.update().where(subs.c.id == sub_id).values(last_success_at=now, failures=0))
        return []
    if result.gone:
        await session.execute(subs.delete().where(subs.c.id == sub_id))
    else:
        await session.execute(subs.update().where(subs.c.id == sub_id).values(failures=subs.c.failures + 1))
    # Push failed for good on this device: do not wait for half the window before the SMS.
    if offer_id is not None:
        await session.execute(
            jobs.DueWork.__table__.update()
            .where(jobs.DueWork.key == f"offer-sms:{offer_id}", jobs.DueWork.state == "pending")
            .values(due_at=now))
        return [w for w in (await session.execute(select(jobs.DueWork).where(
            jobs.DueWork.key == f"offer-sms:{offer_id}"))).scalars()]
    return []


@jobs.due_handler("crisis.offer_sms")
async def send_offer_sms(session, svc, payload: dict):
    offer = await session.get(Offer, payload["offer"])
    if offer is None or offer.status != OfferStatus.pending or offer.sms_sent_at is not None:
        return []
    rows = (await session.execute(select(TeamMember, User).join(User, User.id == TeamMember.user_id)
                                  .where(TeamMember.team_id == offer.team_id))).all()
    link = svc.settings.base_url.rstrip("/") + "/crisis/team"
    texts = []
    for member, user in rows:
        phone = svc.vault.decrypt(member.phone_enc)
        if not phone:
            continue
        with i18n.using(user.language or svc.settings.default_language):
            texts.append((phone, i18n.gettext(
                "Sangha: your team is needed now. Open the team app to answer: %(link)s", link=link)))
    offer_id = offer.id
    # As for push: no transaction (on SQLite, the write lock) is held while the SMS provider answers.
    await session.rollback()
    for phone, body in texts:
        try:
            await svc.sms.send(to=phone, body=body)
        except SmsError as exc:
            if exc.retry:
                raise
    await session.execute(update(Offer).where(Offer.id == offer_id, Offer.sms_sent_at.is_(None))
                          .values(sms_sent_at=utcnow()))
    return []


@jobs.due_handler("crisis.offer_deadline", timer=True)
async def offer_deadline(session, svc, payload: dict):
    return await crisis.lapse_offer(session, svc, offer_id=payload["offer"])


@jobs.due_handler("crisis.retry_dispatch")
async def retry_dispatch(session, svc, payload: dict):
    incident = await session.get(Incident, payload["incident"])
    if incident is None or incident.status != IncidentStatus.escalated:
        return []
    works = await crisis.dispatch(session, svc, incident, now=utcnow())
    attempt = payload.get("attempt", 1)
    if attempt < 20:  # keep trying for about ten minutes; the dispatchers were alerted at once
        works.append(await jobs.schedule(session, kind="crisis.retry_dispatch",
                                         key=f"retry-dispatch:{incident.id}:{attempt + 1}",
                                         payload={"incident": incident.id, "attempt": attempt + 1},
                                         due_at=utcnow() + dt.timedelta(seconds=30)))
    return works


@jobs.due_handler("crisis.purge")
async def purge_incident(session, svc, payload: dict):
    await crisis.purge(session, incident_id=payload["incident"])
    return []
