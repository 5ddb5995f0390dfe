"""SMS receipts for cash: recording a payment (API, page or collection sheet) schedules, in the
same transaction, one due-work job that texts the member their receipt in their own language
(amount, receipt number, paid-through month and nothing else), once even if the job runs twice;
none for a member without a phone or who opted out; sent through the real HTTP adapter to a
local Twilio-compatible server."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from sqlalchemy import func, select, update

from dues import cash_ops_messages as messages
from dues.cash_ops_models import DuesMessageOptOut, DuesNotice
from tests.crisis.localservers import TwilioMessagesApi
from tests.union.test_policy import enrol, login_cookie, member_user, quick_user
from union import i18n, jobs
from union.models import AuditEvent, DueWork, Member
from union.sms import HttpSmsSender
from union.web import SESSION_COOKIE


def kannada_receipt(amount: str, receipt_no: str) -> str:
    """The receipt SMS as a Kannada-speaking member gets it (the world's members speak Kannada)."""
    return f"ಸಂಘ: {amount} ಸಿಕ್ಕಿದೆ, ರಸೀದಿ {receipt_no}. {MONTH} ವರೆಗೆ ಪಾವತಿಯಾಗಿದೆ. ಧನ್ಯವಾದಗಳು."

MONTH = dt.date.today().strftime("%Y-%m")


@pytest.fixture
async def world(services, branches, make_token):
    with_phone = await enrol(services, "Asha Receipt", "BLR", pin="1234", phone="9876543210")
    no_phone = await enrol(services, "Bina Receipt", "BLR")
    collector = await quick_user(services, "col-receipts", ["collector"], "BLR")
    return {"phone": with_phone, "nophone": no_phone, "collector": collector, "token": await make_token(collector)}


def pay(member_no, amount=10000, receipt="R-1"):
    return {"member_no": member_no, "amount_minor": amount, "currency": "INR", "receipt_no": receipt}


async def notice_works(services) -> list[DueWork]:
    async with services.reader() as db:
        return list((await db.execute(select(DueWork).where(DueWork.kind == messages.NOTICE_JOB))).scalars())


async def test_api_payment_texts_a_receipt_once(web, world, services):
    r = await web.api("POST", "/api/dues/payments", token=world["token"], json=pay(world["phone"].member_no))
    assert r.status_code == 201, r.text
    works = await notice_works(services)
    # Ids only in the payload: no number, no text.
    assert len(works) == 1 and works[0].payload == f'{{"notice": {await _notice_id(services)}}}'
    assert await jobs.sweep(services) == 1
    assert services.sms.sent == [{"to": "+919876543210",
                                  "body": kannada_receipt("₹100.00", "R-1")}]
    body = services.sms.sent[0]["body"]
    assert "Asha" not in body and world["phone"].member_no not in body  # nothing that names the member
    # The job again (a second run, a replayed nudge, the handler called directly): still one SMS.
    assert await jobs.run_due_work(services, works[0].id) == "skipped"
    async with services.sessions() as db:
        await messages.send_notice(db, services, {"notice": await _notice_id(services)})
        await db.commit()
    assert len(services.sms.sent) == 1
    async with services.reader() as db:
        notice = (await db.execute(select(DuesNotice))).scalar_one()
        assert notice.channel == "sms" and notice.sent_at is not None and notice.kind == "receipt"


async def _notice_id(services) -> int:
    async with services.reader() as db:
        return (await db.execute(select(DuesNotice.id))).scalar_one()


async def test_no_phone_or_opted_out_means_no_sms(web, world, services):
    r = await web.api("POST", "/api/dues/payments", token=world["token"], json=pay(world["nophone"].member_no))
    assert r.status_code == 201 and await notice_works(services) == []
    async with services.sessions() as db:
        db.add(DuesMessageOptOut(member_id=world["phone"].id))
        await db.commit()
    r = await web.api("POST", "/api/dues/payments", token=world["token"], json=pay(world["phone"].member_no, receipt="R-2"))
    assert r.status_code == 201 and await notice_works(services) == []
    assert await jobs.sweep(services) == 0 and services.sms.sent == []


async def test_opting_out_after_scheduling_stops_the_sms(web, world, services):
    assert (await web.api("POST", "/api/dues/payments", token=world["token"],
                          json=pay(world["phone"].member_no))).status_code == 201
    async with services.sessions() as db:
        db.add(DuesMessageOptOut(member_id=world["phone"].id))
        await db.commit()
    await jobs.sweep(services)
    assert services.sms.sent == []
    async with services.reader() as db:
        assert (await db.execute(select(DuesNotice.channel))).scalar_one() == "none"


async def test_receipt_in_the_members_language(web, world, services, monkeypatch):
    class Kannada:
        def gettext(self, message):
            return "ಸಂಘ: " + message

        def ngettext(self, singular, plural, n):
            return singular if n == 1 else plural

    monkeypatch.setitem(i18n.load_catalogs(), "kn", Kannada())
    async with services.sessions() as db:
        await db.execute(update(Member).where(Member.id == world["phone"].id).values(language="kn"))
        await db.commit()
    assert (await web.api("POST", "/api/dues/payments", token=world["token"],
                          json=pay(world["phone"].member_no, 25050, "K-9"))).status_code == 201
    await jobs.sweep(services)
    (sent,) = services.sms.sent
    assert sent["body"].startswith("ಸಂಘ: Sangha: received ₹250.50, receipt K-9.")


async def test_page_payment_sends_through_the_http_adapter(world, services, make_web):
    with TwilioMessagesApi() as server:
        async with httpx.AsyncClient() as client:
            services.sms = HttpSmsSender(client, api_base=server.url, account_sid=server.account_sid,
                                         auth_token=server.auth_token, sender="+15550001111")
            collector = await make_web()
            collector.client.cookies.set(SESSION_COOKIE, await login_cookie(services, world["collector"]))
            await collector.get("/dues/collect")
            r = await collector.post("/dues/collect", {"member_no": world["phone"].member_no, "amount": "100",
                                                       "receipt_no": "P-7"})
            assert r.status_code == 303, r.text
            assert await jobs.sweep(services) == 1
            assert await jobs.sweep(services) == 0
        assert [(m["to"], m["body"]) for m in server.messages] == [
            ("+919876543210", kannada_receipt("₹100.00", "P-7"))]


async def test_member_toggles_dues_messages_on_their_page(world, services, make_web):
    member = await make_web()
    member.client.cookies.set(SESSION_COOKIE, await login_cookie(services, await member_user(services, world["phone"])))
    page = await member.get("/dues/me")
    kn = i18n.translations("kn")  # the member reads Kannada
    assert page.status_code == 200 and kn.gettext("Stop dues SMS") in page.text
    r = await member.post("/dues/me/messages", {"opt_out": "1"})
    assert r.status_code == 303 and r.headers["location"] == "/dues/me"
    page = await member.get("/dues/me")
    assert kn.gettext("Send me dues SMS again") in page.text
    async with services.reader() as db:
        assert (await db.get(DuesMessageOptOut, world["phone"].id)) is not None
        assert (await db.execute(select(func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action == "dues.messages_opt_out"))).scalar_one() == 1
    await member.post("/dues/me/messages", {"opt_out": "0"})
    async with services.reader() as db:
        assert (await db.get(DuesMessageOptOut, world["phone"].id)) is None
    # Without the CSRF token nothing changes.
    r = await member.post("/dues/me/messages", {"opt_out": "1"}, csrf=False)
    assert r.status_code == 403


async def test_a_batch_schedules_one_receipt_per_phone_that_did_not_opt_out(world, services, branches):
    """Three collectors' payments posted in one batch: the members with a phone who did not opt out get
    one notice each, naming their own payment, and one due-work job each whose payload names only the
    notice; the sweep then texts each of them once."""
    import asyncio

    from dues.batch import PaymentBatcher
    from dues.money import Money
    from dues.services import PaymentRequest
    from union import accounts

    other = await enrol(services, "Chitra Receipt", "BLR", phone="9876543211")
    opted = await enrol(services, "Devi Receipt", "BLR", phone="9876543212")
    async with services.sessions() as db:
        db.add(DuesMessageOptOut(member_id=opted.id))
        await db.commit()
    async with services.reader() as db:
        collector = await accounts.principal_for(db, world["collector"], "session")
    batcher = PaymentBatcher(services.sessions, queue=lambda: services.jobs)
    members = [world["phone"], opted, world["nophone"], other]
    outcomes = await asyncio.gather(*(
        batcher.submit(PaymentRequest(member_no=m.member_no, amount=Money(10000), receipt_no=f"B-{n}",
                                      collector=collector)) for n, m in enumerate(members)))
    await batcher.close()
    assert batcher.batches == 1
    async with services.reader() as db:
        notices = {n.member_id: n for n in (await db.execute(select(DuesNotice))).scalars()}
    paid = {o.member.id: o.payment.id for o in outcomes}
    assert sorted(notices) == sorted([world["phone"].id, other.id])
    assert all(notices[m].ref == str(paid[m]) and notices[m].kind == "receipt" for m in notices)
    works = await notice_works(services)
    assert sorted((w.key, w.payload) for w in works) == sorted(
        (f"dues-notice:{n.id}", f'{{"notice": {n.id}}}') for n in notices.values())
    assert all(w.state == "pending" and w.attempts == 0 and w.max_attempts == jobs.DEFAULT_MAX_ATTEMPTS
               for w in works)
    await jobs.sweep(services)
    assert sorted(m["to"] for m in services.sms.sent) == ["+919876543210", "+919876543211"]
