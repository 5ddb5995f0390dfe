"""The cash dues journey end to end in a real browser (headless Chromium), on
SQLite and on PostgreSQL: a collector logs in on a 360 px phone, opens "Record a
cash payment" from the home page, records three months for a member who joined
today, and sees the receipt; a reused receipt number is refused on the form; the
member logs in with member number and PIN, opens "My dues" and sees the new
standing and the payment, and opens the receipt. The database holds exactly one
payment, its balanced ledger entry, and an intact hash chain.

Screenshots of every step go to test-artifacts/dues-journey/ (not in git); a
failing test also saves each open page to test-artifacts/screenshots/.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from dues import ledger
from dues.models import CashPayment, JournalEntry, Posting
from dues.services import month_index, month_label
from tests.browser.conftest import ARTIFACTS, member_login, staff_login
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

SHOTS = ARTIFACTS / "dues-journey"
PHONE = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


def path_of(url: str) -> str:
    return urlsplit(url).path


class Shots:
    def __init__(self, backend: str):
        self.backend, self.n = backend, 0
        SHOTS.mkdir(parents=True, exist_ok=True)

    async def take(self, page, name: str) -> None:
        self.n += 1
        await page.screenshot(path=str(SHOTS / f"{self.n:02d}-{name}-{self.backend}.png"), full_page=True)


async def fits_the_screen(page) -> bool:
    """Nothing wider than the phone: no sideways scrolling."""
    return await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


async def test_collector_records_cash_and_member_sees_receipt_and_standing(
        request, browse, services, make_user, enrol_member):
    shots = Shots(request.node.callspec.params.get("backend", ""))
    base = browse.base_url
    await make_user("collector1", ["collector"], "BLR")
    member = await enrol_member("Savitha", pin="2468")
    no = member.member_no
    this_month = dt.date.today()
    paid_through = month_label(month_index(this_month) + 2)  # three months from the joining month

    # --- The member before paying: new, one month owed -------------------------------------
    mine = await browse.new_page(**PHONE)
    await member_login(mine, base, no, "2468")
    assert path_of(mine.url) == "/home/member"
    async with mine.expect_navigation():
        await mine.click("a[href='/dues/me']")
    assert await mine.get_attribute("#standing", "data-status") == "new"
    assert await mine.inner_text("#arrears") == "₹100.00"
    assert await mine.locator("#payments li").count() == 0
    await shots.take(mine, "member-before")

    # --- The collector records three months in cash -----------------------------------------
    phone = await browse.new_page(**PHONE)
    await staff_login(phone, base, "collector1", PASSWORD)
    assert path_of(phone.url) == "/home/collector"
    async with phone.expect_navigation():
        await phone.click("a[href='/dues/collect']")
    assert path_of(phone.url) == "/dues/collect"
    assert await fits_the_screen(phone)
    await phone.fill("#member_no", no.lower())  # typed in lower case on a phone keyboard
    await phone.fill("#amount", "300")
    await phone.fill("#months", "3")
    await phone.fill("#receipt_no", "RB-0042")
    await shots.take(phone, "collector-form")
    async with phone.expect_navigation():
        await phone.click("main form button[type=submit]")

    found = re.fullmatch(r"/dues/receipts/(\d+)", path_of(phone.url))
    assert found, phone.url
    receipt_path = found.group(0)
    assert await phone.inner_text("#receipt-no") == "RB-0042"
    assert await phone.inner_text("#member-no") == no
    assert await phone.inner_text("#amount") == "₹300.00"
    assert await phone.inner_text("#months") == "3"
    assert await phone.inner_text("#paid-through") == paid_through
    assert await fits_the_screen(phone)
    await shots.take(phone, "collector-receipt")

    # --- The same receipt number again is refused on the form, nothing posted ------------------
    await phone.goto(browse.url("/dues/collect"))
    await phone.fill("#member_no", no)
    await phone.fill("#amount", "100")
    await phone.fill("#receipt_no", "RB-0042")
    async with phone.expect_navigation():
        await phone.click("main form button[type=submit]")
    assert path_of(phone.url) == "/dues/collect"
    assert "RB-0042 was already used" in await phone.inner_text("[role=alert]")
    assert await phone.input_value("#amount") == "100"  # what was typed is kept
    await shots.take(phone, "collector-reused-receipt")

    # --- The member sees the new standing and the payment -----------------------------------
    await mine.reload()
    assert await mine.get_attribute("#standing", "data-status") == "current"
    assert await mine.inner_text("#standing-status") == "Paid up"
    assert await mine.inner_text("#paid-through") == paid_through
    assert await mine.inner_text("#arrears") == "₹0.00"
    payments = mine.locator("#payments li")
    assert await payments.count() == 1
    line = await payments.first.inner_text()
    assert "₹300.00" in line and "RB-0042" in line and this_month.isoformat() in line
    assert await fits_the_screen(mine)
    await shots.take(mine, "member-after")

    # ... and opens the receipt from the list.
    async with mine.expect_navigation():
        await payments.first.locator("a").click()
    assert path_of(mine.url) == receipt_path
    assert await mine.inner_text("#receipt-no") == "RB-0042"
    assert await mine.inner_text("#amount") == "₹300.00"
    assert await mine.locator("#quick-exit").is_visible()
    await shots.take(mine, "member-receipt")

    # --- What the database holds -----------------------------------------------------------
    async with services.reader() as db:
        (payment,) = (await db.execute(select(CashPayment))).scalars().all()
        assert (payment.member_id, payment.amount_minor, payment.months, payment.receipt_no) == \
            (member.id, 30000, 3, "RB-0042")
        entry = await db.get(JournalEntry, payment.entry_id)
        assert (entry.kind, entry.member_id) == ("cash_payment", member.id)
        lines = sorted((code, m.amount_minor) for code, m in await ledger.entry_lines(db, entry.id))
        assert lines == sorted([(f"cash:collector:{payment.collector_user_id}", 30000), ("dues_income", -30000)])
        assert (await db.execute(select(func.count()).select_from(Posting))).scalar_one() == 2
        assert (await ledger.verify_ledger_chain(db)).intact
