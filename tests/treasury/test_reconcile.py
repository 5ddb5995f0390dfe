"""Reconciliation: a bank-statement CSV is checked whole (a malformed file is refused with
a message per row and nothing stored), matched to the ledger's bank entries by amount,
date and reference, and what is left is listed for the treasurer to match by hand."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from dues.money import Money
from tests.helpers import PASSWORD
from tests.treasury.conftest import post
from treasury import reconcile
from treasury.errors import BankCsvInvalid, MatchRefused
from treasury.models import BankImport, BankLine
from union.errors import Conflict

STATEMENT = (b"date,description,amount,reference\n"
             b"2025-04-02,Payout from Stripe,1500.00,po_1\n"
             b"03/04/2025,Transfer to member,-250,WEL-7\n"
             b"2025-04-05,Interest,12.50,\n")


@pytest.fixture
async def bank_entries(services, people):
    payout = await post(services, key="stripe:payout:po_1", kind="transfer",
                        lines=[("bank", Money(150000)), ("stripe", Money(-150000))], description="Stripe payout po_1",
                        effective_date=dt.date(2025, 4, 1))
    welfare = await post(services, key="welfare-payout:7:1", kind="welfare_payout",
                         lines=[("welfare_fund", Money(25000)), ("bank", Money(-25000))],
                         description="Welfare claim, ref WEL-7", effective_date=dt.date(2025, 4, 3))
    lonely = await post(services, key="bank:deposit:1", kind="transfer",
                        lines=[("bank", Money(9900)), ("cash:office", Money(-9900))], description="Cash banked",
                        effective_date=dt.date(2025, 4, 20))
    return payout, welfare, lonely


async def do_import(services, people, data: bytes):
    async with services.sessions() as db:
        result = await reconcile.import_bank_statement(db, data=data, actor=people.treasurer, vault=services.vault)
        await db.commit()
        return result


async def test_import_matches_by_amount_date_and_reference(services, people, bank_entries):
    payout, welfare, lonely = bank_entries
    result = await do_import(services, people, STATEMENT)
    assert (result.matched, result.unmatched) == (2, 1)
    async with services.reader() as db:
        lines = (await db.execute(select(BankLine).order_by(BankLine.line_no))).scalars().all()
        view = await reconcile.bank_reconciliation(db, vault=services.vault, start=dt.date(2025, 4, 1),
                                                   end=dt.date(2025, 4, 30))
    assert [(ln.line_no, ln.booked_on, ln.amount_minor, ln.entry_id, ln.matched_how) for ln in lines] == [
        (2, dt.date(2025, 4, 2), 150000, payout.id, "auto"), (3, dt.date(2025, 4, 3), -25000, welfare.id, "auto"),
        (4, dt.date(2025, 4, 5), 1250, None, "")]
    assert lines[0].description_enc and "Stripe" not in lines[0].description_enc  # encrypted at rest
    assert [(line.line_no, description) for line, description, _c in view.unmatched_lines] == [(4, "Interest")]
    assert [e.id for e in view.unmatched_entries] == [lonely.id]

    # By hand: a line can only be matched to a bank entry of the same amount.
    async with services.sessions() as db:
        with pytest.raises(MatchRefused):
            await reconcile.match_bank_line(db, line_id=lines[2].id, entry_id=lonely.id, actor=people.treasurer)
    async with services.sessions() as db:
        with pytest.raises(MatchRefused):
            await reconcile.match_bank_line(db, line_id=lines[2].id, entry_id=payout.id, actor=people.treasurer)


async def test_manual_match_and_undo(services, people, bank_entries):
    _payout, _welfare, lonely = bank_entries
    await do_import(services, people, b"date,description,amount,reference\n2025-04-28,Deposit,99.00,\n")
    async with services.sessions() as db:
        line = (await db.execute(select(BankLine))).scalar_one()
        assert line.entry_id is None  # 8 days apart: not matched automatically
        await reconcile.match_bank_line(db, line_id=line.id, entry_id=lonely.id, actor=people.treasurer)
        await db.commit()
    async with services.sessions() as db:
        line = (await db.execute(select(BankLine))).scalar_one()
        assert (line.entry_id, line.matched_how, line.matched_by_user_id) == (lonely.id, "manual", people.treasurer.id)
        await reconcile.match_bank_line(db, line_id=line.id, entry_id=None, actor=people.treasurer)
        await db.commit()
    async with services.reader() as db:
        assert (await db.execute(select(BankLine.entry_id))).scalar_one() is None


@pytest.mark.parametrize("data,expected", [
    (b"", "The file is empty."),
    (b"when,what,how much\n2025-04-01,x,1\n", "The first row must be the column names"),
    (b"date,description,amount,reference\n2025-04-31,x,1,\n2025-04-01,y,1.234,\n2025-04-01,z\n",
     "3 rows are wrong"),
    (b"date,description,amount,reference\n\xff\xfe,x,1,\n", "not UTF-8"),
    (b"date,description,amount,reference\n", "no lines"),
])
async def test_a_malformed_statement_changes_nothing(services, people, data, expected):
    with pytest.raises(BankCsvInvalid) as refused:
        await do_import(services, people, data)
    assert expected in refused.value.message
    if "rows are wrong" in expected:
        assert refused.value.problems == [
            "Row 2: 2025-04-31 is not a date (use YYYY-MM-DD).",
            "Row 3: 1.234 is not an amount in rupees (like 1500.00 or -200).",
            "Row 4: expected 4 columns, found 2."]
    async with services.reader() as db:
        assert (await db.execute(select(func.count()).select_from(BankImport))).scalar_one() == 0
        assert (await db.execute(select(func.count()).select_from(BankLine))).scalar_one() == 0


async def test_the_same_statement_twice_is_refused(services, people):
    await do_import(services, people, STATEMENT)
    with pytest.raises(Conflict):
        await do_import(services, people, STATEMENT)


async def test_bank_page_upload_and_errors(services, people, bank_entries, web):
    await web.login("tara", PASSWORD)
    await web.get("/treasury/bank")
    r = await web.post("/treasury/bank?from=2025-04&to=2025-04",
                       files={"file": ("april.csv", STATEMENT, "text/csv")})
    assert r.status_code == 200 and "Imported 3 lines: 2 matched, 1 left to match." in r.text
    assert "Interest" in r.text
    r = await web.post("/treasury/bank", files={"file": ("bad.csv", b"date,description,amount,reference\nx,y,z,\n",
                                                         "text/csv")})
    assert r.status_code == 422 and "Row 2: x is not a date" in r.text


async def test_closing_counts_unmatched_bank_lines(services, people, bank_entries):
    await do_import(services, people, STATEMENT)
    async with services.reader() as db:
        left = await reconcile.month_differences(db, start=dt.date(2025, 4, 1), end=dt.date(2025, 4, 30))
    assert dict(left.items) == {"bank statement lines not matched to the ledger": 1,
                                "ledger entries through the bank not found on a bank statement": 1}
