"""Cash hand-overs: the collector proposes with the counted amount, the treasurer confirms the
same count; one entry moves the collector's cash to the office safe with any shortage or excess
to cash_over_short; a payment taken between proposal and confirmation stays with the collector;
a collector cannot confirm their own hand-over; both confirmations are audited; the pages."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from dues import handover, ledger
from dues.cash_ops_models import CashHandover
from dues.money import Money
from tests.union.test_policy import enrol, login_cookie, quick_user
from union.errors import Conflict, Forbidden, NotFound, UnionError
from union.models import AuditEvent, Role
from union.policy import Principal
from union.web import SESSION_COOKIE


@pytest.fixture
async def world(services, branches, make_token):
    member = await enrol(services, "Asha Handover", "BLR")
    collector = await quick_user(services, "col-hand", ["collector"], "BLR")
    treasurer = await quick_user(services, "treas-hand", ["treasurer"])
    both = await quick_user(services, "col-treas", ["collector", "treasurer"], "BLR")
    return {"member": member, "collector": collector, "treasurer": treasurer, "both": both,
            "token": await make_token(collector)}


def as_collector(user):
    return Principal(user=user, grants={Role.collector: None})


def as_treasurer(user):
    return Principal(user=user, grants={Role.treasurer: None})


async def pay(web, world, amount, receipt):
    r = await web.api("POST", "/api/dues/payments", token=world["token"],
                      json={"member_no": world["member"].member_no, "amount_minor": amount, "currency": "INR",
                            "receipt_no": receipt})
    assert r.status_code == 201, r.text


async def balances(services, *codes):
    async with services.reader() as db:
        return {c: m.amount_minor for c, m in (await ledger.balances(db, accounts=codes)).items()}


async def test_short_handover_books_the_difference(web, world, services):
    await pay(web, world, 30000, "H-1")
    await pay(web, world, 20000, "H-2")
    cash = f"cash:collector:{world['collector'].id}"
    async with services.sessions() as db:
        h = await handover.propose(db, collector=as_collector(world["collector"]), treasurer_username="treas-hand",
                                   counted=Money(45000))
        await db.commit()
    assert (h.expected_minor, h.counted_minor, h.status) == (50000, 45000, "proposed")
    assert h.confirmed_by_collector_at is not None and h.confirmed_by_treasurer_at is None
    assert (await balances(services, cash))[cash] == 50000  # nothing moves before the treasurer confirms

    async with services.sessions() as db:
        done = await handover.confirm(db, handover_id=h.id, treasurer=as_treasurer(world["treasurer"]),
                                      counted=Money(45000))
        await db.commit()
    assert done.status == "completed" and done.entry_id and done.confirmed_by_treasurer_at is not None
    assert await balances(services, cash, "cash:office", "cash_over_short") == {
        cash: 0, "cash:office": 45000, "cash_over_short": 5000}
    async with services.reader() as db:
        actions = list((await db.execute(select(AuditEvent.action).where(AuditEvent.target_type == "cash_handover")
                                         .order_by(AuditEvent.id))).scalars())
        assert actions == ["dues.handover_proposed", "dues.handover_confirmed"]
        assert (await ledger.verify_ledger_chain(db)).intact


async def test_over_count_credits_over_short(web, world, services):
    await pay(web, world, 10000, "O-1")
    async with services.sessions() as db:
        h = await handover.propose(db, collector=as_collector(world["collector"]), treasurer_username="treas-hand",
                                   counted=Money(10500))
        await handover.confirm(db, handover_id=h.id, treasurer=as_treasurer(world["treasurer"]), counted=Money(10500))
        await db.commit()
    assert await balances(services, "cash:office", "cash_over_short") == {"cash:office": 10500,
                                                                         "cash_over_short": -500}


async def test_payment_between_proposal_and_confirmation_is_not_lost(web, world, services):
    await pay(web, world, 10000, "L-1")
    async with services.sessions() as db:
        h = await handover.propose(db, collector=as_collector(world["collector"]), treasurer_username="treas-hand",
                                   counted=Money(10000))
        await db.commit()
    await pay(web, world, 7000, "L-2")  # taken after the count: not part of this hand-over
    async with services.sessions() as db:
        await handover.confirm(db, handover_id=h.id, treasurer=as_treasurer(world["treasurer"]), counted=Money(10000))
        await db.commit()
    cash = f"cash:collector:{world['collector'].id}"
    assert await balances(services, cash, "cash:office", "cash_over_short") == {
        cash: 7000, "cash:office": 10000, "cash_over_short": 0}


async def test_refusals_change_nothing(web, world, services):
    await pay(web, world, 10000, "X-1")
    collector = as_collector(world["collector"])
    async with services.sessions() as db:
        for kwargs, error in [
            ({"treasurer_username": "nobody", "counted": Money(10000)}, NotFound),
            ({"treasurer_username": "col-hand", "counted": Money(10000)}, NotFound),  # not a treasurer
            ({"treasurer_username": "treas-hand", "counted": Money(-1)}, UnionError),
            ({"treasurer_username": "treas-hand", "counted": Money(100, "USD")}, UnionError),
        ]:
            with pytest.raises(error):
                await handover.propose(db, collector=collector, **kwargs)
        h = await handover.propose(db, collector=collector, treasurer_username="treas-hand", counted=Money(10000))
        with pytest.raises(Conflict):  # one open hand-over per collector
            await handover.propose(db, collector=collector, treasurer_username="treas-hand", counted=Money(10000))
        await db.commit()
    async with services.sessions() as db:
        with pytest.raises(Conflict):  # the treasurer's count must match the collector's
            await handover.confirm(db, handover_id=h.id, treasurer=as_treasurer(world["treasurer"]),
                                   counted=Money(9000))
        with pytest.raises(NotFound):  # another treasurer was not named
            await handover.confirm(db, handover_id=h.id, treasurer=as_treasurer(world["both"]), counted=Money(10000))
        await db.rollback()
    async with services.reader() as db:
        assert (await db.get(CashHandover, h.id)).status == "proposed"
    assert await balances(services, "cash:office") == {"cash:office": 0}


async def test_collector_cannot_confirm_own_handover(web, world, services):
    both = Principal(user=world["both"], grants={Role.collector: None, Role.treasurer: None})
    async with services.sessions() as db:
        with pytest.raises(UnionError):  # cannot even name themself
            await handover.propose(db, collector=both, treasurer_username="col-treas", counted=Money(100))
        await db.rollback()
    # Even a hand-over row naming them on both sides (forged) is refused at confirmation.
    async with services.sessions() as db:
        db.add(CashHandover(collector_user_id=world["both"].id, treasurer_user_id=world["both"].id, expected_minor=0,
                            counted_minor=100, as_of_seq=0, open_collector_id=world["both"].id))
        await db.commit()
        forged = (await db.execute(select(CashHandover))).scalar_one()
    async with services.sessions() as db:
        with pytest.raises(Forbidden):
            await handover.confirm(db, handover_id=forged.id, treasurer=both, counted=Money(100))


async def test_two_confirmations_at_once_post_once(web, world, services):
    await pay(web, world, 10000, "C-1")
    async with services.sessions() as db:
        h = await handover.propose(db, collector=as_collector(world["collector"]), treasurer_username="treas-hand",
                                   counted=Money(10000))
        await db.commit()

    async def confirm():
        async with services.sessions() as db:
            try:
                await handover.confirm(db, handover_id=h.id, treasurer=as_treasurer(world["treasurer"]),
                                       counted=Money(10000))
                await db.commit()
                return "ok"
            except Conflict:
                return "conflict"

    assert sorted(await asyncio.gather(confirm(), confirm())) == ["conflict", "ok"]
    assert await balances(services, "cash:office") == {"cash:office": 10000}


async def test_handover_through_the_pages(web, world, services, make_web):
    await pay(web, world, 25000, "P-1")
    collector, treasurer = await make_web(), await make_web()
    collector.client.cookies.set(SESSION_COOKIE, await login_cookie(services, world["collector"]))
    treasurer.client.cookies.set(SESSION_COOKIE, await login_cookie(services, world["treasurer"]))

    assert 'href="/dues/handover"' in (await collector.get("/home/collector")).text
    page = await collector.get("/dues/handover")
    assert page.status_code == 200 and 'id="held" class="big-number">₹250.00<' in page.text
    assert 'value="treas-hand"' in page.text
    r = await collector.post("/dues/handover", {"treasurer": "treas-hand", "counted": "abc"})
    assert r.status_code == 422 and "Enter the amount you counted" in r.text
    r = await collector.post("/dues/handover", {"treasurer": "treas-hand", "counted": "250"})
    assert r.status_code == 303 and r.headers["location"] == "/dues/handover?proposed=1"

    assert 'href="/dues/handovers"' in (await treasurer.get("/home/treasurer")).text
    page = await treasurer.get("/dues/handovers")
    async with services.reader() as db:
        h = (await db.execute(select(CashHandover))).scalar_one()
    assert f'action="/dues/handovers/{h.id}/confirm"' in page.text
    r = await treasurer.post(f"/dues/handovers/{h.id}/confirm", {"counted": "200"})
    assert r.status_code == 409 and "Count the cash together again" in r.text
    r = await treasurer.post(f"/dues/handovers/{h.id}/confirm", {"counted": "250"})
    assert r.status_code == 303 and r.headers["location"] == "/dues/handovers?confirmed=1"
    assert await balances(services, "cash:office") == {"cash:office": 25000}
    # The collector cannot use the treasurer's page, nor confirm.
    assert (await collector.get("/dues/handovers")).status_code == 403
    page = await collector.get("/dues/handover")
    assert 'id="held" class="big-number">₹0.00<' in page.text and "Confirmed" in page.text


async def test_collector_cancels_open_handover(web, world, services, make_web):
    await pay(web, world, 10000, "Z-1")
    collector = await make_web()
    collector.client.cookies.set(SESSION_COOKIE, await login_cookie(services, world["collector"]))
    await collector.get("/dues/handover")
    await collector.post("/dues/handover", {"treasurer": "treas-hand", "counted": "100"})
    async with services.reader() as db:
        h = (await db.execute(select(CashHandover))).scalar_one()
    r = await collector.post(f"/dues/handover/{h.id}/cancel", {})
    assert r.status_code == 303
    async with services.reader() as db:
        h = await db.get(CashHandover, h.id)
        assert h.status == "cancelled" and h.open_collector_id is None
    # A new one can start now.
    r = await collector.post("/dues/handover", {"treasurer": "treas-hand", "counted": "100"})
    assert r.status_code == 303
