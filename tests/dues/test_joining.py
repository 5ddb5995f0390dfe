"""Joining fees: a plan's one-time fee is taken from the member's first cash payment (an extra
line Cr joining_fee_income on the same entry; only the rest counts toward standing), once, even
when two collectors take a first payment at the same moment; a first payment below the fee is
refused and posts nothing; plans without a fee (the seeded ones) are unchanged."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import func, select, update

from dues import joining, ledger
from dues.models import DuesPlan, JournalEntry
from tests.union.test_policy import enrol, quick_user

MONTH = dt.date.today().strftime("%Y-%m")


@pytest.fixture
async def world(services, branches, make_token):
    member = await enrol(services, "Asha Joining", "BLR")
    c1 = await quick_user(services, "col-join1", ["collector"], "BLR")
    c2 = await quick_user(services, "col-join2", ["collector"], "BLR")
    async with services.sessions() as db:
        await db.execute(update(DuesPlan).where(DuesPlan.code == "standard").values(joining_fee_minor=5000))
        await db.commit()
    return {"member": member, "t1": await make_token(c1), "t2": await make_token(c2)}


def pay(member_no, amount, receipt):
    return {"member_no": member_no, "amount_minor": amount, "currency": "INR", "receipt_no": receipt}


async def books(services):
    async with services.reader() as db:
        bal = await ledger.balances(db, accounts=["joining_fee_income", "dues_income"])
        return {code: m.amount_minor for code, m in bal.items()}


async def test_first_payment_books_the_fee_then_dues(web, world, services):
    no = world["member"].member_no
    r = await web.api("POST", "/api/dues/payments", token=world["t1"], json=pay(no, 15000, "J-1"))
    assert r.status_code == 201, r.text
    assert r.json()["amount_minor"] == 15000
    assert r.json()["standing"] == {"status": "current", "paid_through": MONTH, "arrears_minor": 0, "currency": "INR"}
    assert await books(services) == {"joining_fee_income": -5000, "dues_income": -10000}
    async with services.reader() as db:
        assert (await db.execute(select(func.count()).select_from(JournalEntry))).scalar_one() == 1
        assert await joining.joining_fee_paid(db, world["member"].id) == 5000
    r = await web.api("POST", "/api/dues/payments", token=world["t1"], json=pay(no, 10000, "J-2"))
    assert r.status_code == 201
    assert await books(services) == {"joining_fee_income": -5000, "dues_income": -20000}


async def test_payment_of_exactly_the_fee(web, world, services):
    r = await web.api("POST", "/api/dues/payments", token=world["t1"], json=pay(world["member"].member_no, 5000, "E-1"))
    assert r.status_code == 201 and r.json()["standing"]["status"] == "new"
    assert await books(services) == {"joining_fee_income": -5000, "dues_income": 0}


async def test_first_payment_below_the_fee_posts_nothing(web, world, services):
    r = await web.api("POST", "/api/dues/payments", token=world["t1"], json=pay(world["member"].member_no, 3000, "B-1"))
    assert r.status_code == 422
    assert r.json() == {"error": "invalid_amount", "message": "The first payment must include the joining fee of ₹50.00.",
                        "field": "amount_minor"}
    async with services.reader() as db:
        assert (await db.execute(select(func.count()).select_from(JournalEntry))).scalar_one() == 0


async def test_two_first_payments_at_once_take_the_fee_once(world, services, make_web):
    no = world["member"].member_no
    a, b = await make_web(), await make_web()
    r1, r2 = await asyncio.gather(a.api("POST", "/api/dues/payments", token=world["t1"], json=pay(no, 15000, "A-1")),
                                  b.api("POST", "/api/dues/payments", token=world["t2"], json=pay(no, 15000, "B-1")))
    assert (r1.status_code, r2.status_code) == (201, 201), (r1.text, r2.text)
    assert await books(services) == {"joining_fee_income": -5000, "dues_income": -25000}


async def test_plan_without_fee_is_unchanged(web, world, services):
    async with services.sessions() as db:
        await db.execute(update(DuesPlan).values(joining_fee_minor=0))
        await db.commit()
    r = await web.api("POST", "/api/dues/payments", token=world["t1"], json=pay(world["member"].member_no, 3000, "N-1"))
    assert r.status_code == 201
    assert await books(services) == {"joining_fee_income": 0, "dues_income": -3000}
