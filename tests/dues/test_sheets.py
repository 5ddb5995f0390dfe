"""Collection sheets: a collector uploads a CSV of cash taken offline; the preview checks every
row and shows each row's errors; Apply posts all rows or nothing (one bad row: nothing posted,
errors per row), exactly the previewed content (hash), once; a good sheet posts every payment
with the right balances and schedules the receipt SMS; size and format limits."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import func, select

from dues import ledger
from dues.cash_ops_models import CollectionSheet
from dues.models import CashPayment, JournalEntry
from dues.money import Money
from tests.union.test_policy import enrol, login_cookie, quick_user
from union import jobs
from union.models import DueWork
from union.web import SESSION_COOKIE

TODAY = dt.date.today()


@pytest.fixture
async def world(services, branches, make_token, make_web):
    a = await enrol(services, "Asha Sheet", "BLR", phone="9876500001")
    b = await enrol(services, "Bina Sheet", "BLR")
    mys = await enrol(services, "Chitra Sheet", "MYS")
    collector = await quick_user(services, "col-sheet", ["collector"], "BLR")
    web = await make_web()
    web.client.cookies.set(SESSION_COOKIE, await login_cookie(services, collector))
    await web.get("/dues/sheets")
    return {"a": a, "b": b, "mys": mys, "collector": collector, "web": web, "token": await make_token(collector)}


async def counts(services):
    async with services.reader() as db:
        return tuple([(await db.execute(select(func.count()).select_from(t))).scalar_one()
                      for t in (JournalEntry, CashPayment)])


async def upload(web, content: str, name: str = "sheet.csv"):
    return await web.client.post("/dues/sheets", data={"csrf_token": web.csrf},
                                 files={"file": (name, content.encode(), "text/csv")})


async def test_good_sheet_posts_everything(world, services):
    web = world["web"]
    a, b = world["a"].member_no, world["b"].member_no
    day = (TODAY - dt.timedelta(days=3)).isoformat()
    csv = f"member_no,amount,months,receipt_no,date\n{a},100,1,S-1,{day}\n{b},₹250.50,,S-2,\n\n{a.lower()},50,,S-3,\n"
    r = await upload(web, csv)
    assert r.status_code == 303, r.text
    preview = await web.get(r.headers["location"])
    assert preview.status_code == 200 and 'id="row-count">3<' in preview.text and "₹400.50" in preview.text
    assert "Asha Sheet" in preview.text and 'id="apply"' in preview.text and "row-error" not in preview.text
    assert await counts(services) == (0, 0)  # a preview posts nothing

    sheet_id = int(r.headers["location"].rsplit("/", 1)[1])
    r = await web.post(f"/dues/sheets/{sheet_id}/apply", {"content_hash": _hash(preview.text)})
    assert r.status_code == 303 and r.headers["location"] == f"/dues/sheets/{sheet_id}?applied=1"
    assert await counts(services) == (3, 3)
    async with services.reader() as db:
        cash = f"cash:collector:{world['collector'].id}"
        bal = await ledger.balances(db, accounts=[cash, "dues_income"])
        assert bal == {cash: Money(40050), "dues_income": Money(-40050)}
        dated = (await db.execute(select(JournalEntry.effective_date).join(
            CashPayment, CashPayment.entry_id == JournalEntry.id).where(CashPayment.receipt_no == "S-1"))).scalar_one()
        assert dated.isoformat() == day
        # One receipt SMS each for the member with a phone (two payments), none for the other.
        assert (await db.execute(select(func.count()).select_from(DueWork)
                                 .where(DueWork.kind == "dues.notice"))).scalar_one() == 2
        assert (await db.get(CollectionSheet, sheet_id)).status == "applied"
    await jobs.sweep(services)
    assert len(services.sms.sent) == 2
    page = await web.get(f"/dues/sheets/{sheet_id}?applied=1")
    assert 'id="applied"' in page.text and 'id="apply"' not in page.text
    # Applying again posts nothing more.
    r = await web.post(f"/dues/sheets/{sheet_id}/apply", {"content_hash": _hash(preview.text)})
    assert r.status_code == 409 and await counts(services) == (3, 3)


def _hash(html: str) -> str:
    import re

    return re.search(r'name="content_hash" value="([0-9a-f]{64})"', html).group(1)


async def test_one_bad_row_posts_nothing_and_shows_errors_per_row(world, services, web):
    # An earlier payment used receipt U-1 in this collector's book.
    r = await web.api("POST", "/api/dues/payments", token=world["token"],
                      json={"member_no": world["a"].member_no, "amount_minor": 100, "currency": "INR",
                            "receipt_no": "U-1"})
    assert r.status_code == 201
    before = await counts(services)
    a, b, mys = world["a"].member_no, world["b"].member_no, world["mys"].member_no
    rows = [f"{a},100,S-1,", f"{b},0,S-2,", f"{b},-5,S-3,", f"{b},10.005,S-4,", f"BLR-99999,100,S-5,",
            f"{mys},100,S-6,", f"{a},100,S-1,", f"{a},100,U-1,", f"{a},100,S-9,USD", f"{b},100,,"]
    csv = "member_no,amount,receipt_no,currency\n" + "\n".join(rows) + "\n"
    web2 = world["web"]
    r = await upload(web2, csv)
    preview = await web2.get(r.headers["location"])
    text = preview.text
    assert 'id="apply"' not in text and "nothing will be posted" in text
    expect = {3: "The amount must be more than zero.", 4: "The amount must be more than zero.",
              5: "Enter the amount, for example 100 or 100.50.", 6: "No member with that number.",
              7: "No member with that number.", 8: "Receipt number S-1 is also on line 2 of this sheet.",
              9: "Receipt number U-1 was already used in your receipt book.", 10: "Dues are paid in INR.",
              11: "A receipt number is required"}
    items = {int(part.split('"')[0]): part for part in text.split('<li id="line-')[1:]}
    for line, message in expect.items():
        assert 'class="row-error"' in items[line] and message in items[line], (line, items[line][:400])
    assert 'class="row-ok"' in items[2] and "<ul class=\"errors\">" not in items[2]
    # Apply anyway (a forged click): refused, nothing posted, the errors shown.
    sheet_id = int(r.headers["location"].rsplit("/", 1)[1])
    async with services.reader() as db:
        digest = (await db.get(CollectionSheet, sheet_id)).content_hash
    r = await web2.post(f"/dues/sheets/{sheet_id}/apply", {"content_hash": digest})
    assert r.status_code == 422 and "No member with that number." in r.text
    assert await counts(services) == before


async def test_apply_needs_the_previewed_content_and_the_owner(world, services, make_web):
    web = world["web"]
    r = await upload(web, f"member_no,amount,receipt_no\n{world['a'].member_no},100,H-1\n")
    sheet_id = int(r.headers["location"].rsplit("/", 1)[1])
    r = await web.post(f"/dues/sheets/{sheet_id}/apply", {"content_hash": "0" * 64})
    assert r.status_code == 409 and await counts(services) == (0, 0)
    other = await make_web()
    other.client.cookies.set(SESSION_COOKIE, await login_cookie(
        services, await quick_user(services, "col-other", ["collector"], "BLR")))
    assert (await other.get(f"/dues/sheets/{sheet_id}")).status_code == 404
    async with services.reader() as db:
        digest = (await db.get(CollectionSheet, sheet_id)).content_hash
    await other.get("/dues/sheets")
    assert (await other.post(f"/dues/sheets/{sheet_id}/apply", {"content_hash": digest})).status_code == 404
    assert await counts(services) == (0, 0)


async def test_two_applies_at_once_post_once(world, services, make_web):
    web = world["web"]
    r = await upload(web, f"member_no,amount,receipt_no\n{world['a'].member_no},100,T-1\n{world['b'].member_no},100,T-2\n")
    sheet_id = int(r.headers["location"].rsplit("/", 1)[1])
    async with services.reader() as db:
        digest = (await db.get(CollectionSheet, sheet_id)).content_hash
    rs = await asyncio.gather(*[web.client.post(f"/dues/sheets/{sheet_id}/apply",
                                                data={"csrf_token": web.csrf, "content_hash": digest})
                                for _ in range(2)])
    assert sorted(r.status_code for r in rs) == [303, 409]
    assert await counts(services) == (2, 2)


@pytest.mark.parametrize("content, message", [
    ("", "The file is empty."),
    ("name,amount\nx,1\n", "missing: member_no, receipt_no"),
    ("member_no,amount,receipt_no\n", "The sheet has no payments."),
    ("member_no,amount,receipt_no\n" + "BLR-00001,1,R\n" * 501, "at most 500 payments"),
])
async def test_bad_files_are_refused_at_upload(world, services, content, message):
    r = await upload(world["web"], content)
    assert r.status_code == 422 and message in r.text
    async with services.reader() as db:
        assert (await db.execute(select(func.count()).select_from(CollectionSheet))).scalar_one() == 0


async def test_too_large_and_not_utf8(world, services):
    r = await upload(world["web"], "member_no,amount,receipt_no\n" + "x" * (300 * 1024))
    assert r.status_code == 422 and "too large" in r.text
    r = await world["web"].client.post("/dues/sheets", data={"csrf_token": world["web"].csrf},
                                       files={"file": ("s.csv", b"member_no,amount,receipt_no\n\xff\xfe,1,2\n", "text/csv")})
    assert r.status_code == 422 and "UTF-8" in r.text
    r = await world["web"].post("/dues/sheets", {})
    assert r.status_code == 422 and "Choose the CSV file" in r.text


async def test_dates_checked(world, services):
    a = world["a"].member_no
    future = (TODAY + dt.timedelta(days=1)).isoformat()
    old = (TODAY - dt.timedelta(days=200)).isoformat()
    r = await upload(world["web"], f"member_no,amount,receipt_no,date\n{a},100,D-1,{future}\n{a},100,D-2,{old}\n"
                                   f"{a},100,D-3,31/12/2024\n")
    text = (await world["web"].get(r.headers["location"])).text
    assert "The date is in the future." in text and "more than 92 days ago" in text and "YYYY-MM-DD" in text
