"""The welfare journey in a real browser (headless Chromium), on SQLite and on
PostgreSQL: a member sees an entitlement, a collector files the claim for her
(she phoned in), two welfare officers approve, the payout is posted from the
welfare fund, the member sees it paid, and the fund's balance has dropped by
the amount."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from dues.money import Money
from tests.browser.conftest import member_login, staff_login
from tests.conftest import PASSWORD
from tests.helpers import hashed
from tests.welfare.conftest import TODAY, enrol, months_ago, pay_dues
from union import accounts
from welfare import services as welfare
from welfare.models import WelfareClaim

pytestmark = pytest.mark.browser


async def fund_balance(services) -> int:
    async with services.reader() as db:
        return await welfare.fund_balance_read(db)


async def test_member_entitlement_to_payout(browse, services, branches):
    async with services.sessions() as db:
        asha = await enrol(db, services, "Asha K.", "BLR", months_ago(24, 3), pin=True)
        await pay_dues(db, asha, 27)
        users = {name: await accounts.create_user(db, username=name, password=None, roles=roles, branch_code=branch,
                                                  password_hash=hashed(PASSWORD))
                 for name, roles, branch in [("collector1", ["collector"], "BLR"),
                                             ("officer1", ["welfare_officer"], "BLR"),
                                             ("officer2", ["welfare_officer"], "BLR"),
                                             ("bearer", ["office_bearer"], None)]}
        bearer = await accounts.principal_for(db, users["bearer"], "session")
        await welfare.allocate_to_fund(session=db, principal=bearer, amount=Money(2000000), source="bank",
                                       today=TODAY)
        await db.commit()
    assert await fund_balance(services) == 2000000

    # The member sees what she can claim now.
    member = await browse.new_page()
    await member_login(member, browse.base_url, asha.member_no, "2468")
    async with member.expect_navigation():
        await member.click("#welfare-tile")
    death = member.locator("#entitlement-death")
    assert await death.get_attribute("data-eligible") == "yes"
    assert "₹10,000.00" in await death.inner_text()
    assert await member.locator("#entitlement-old_age").get_attribute("data-eligible") == "no"
    assert "60 months of membership" in await member.locator("#entitlement-old_age").inner_text()

    # She phoned in; the collector files the claim for her.
    collector = await browse.new_page()
    await staff_login(collector, browse.base_url, "collector1", PASSWORD)
    await collector.goto(browse.url(f"/welfare/claims/new?member_no={asha.member_no}"))
    await collector.select_option("#scheme", "death")
    await collector.fill("#event_date", TODAY.isoformat())
    await collector.select_option("#evidence", "collector_attestation")
    await collector.fill("#details", "Her mother died at home; funeral on Sunday")
    async with collector.expect_navigation():
        await collector.click("#file-claim")
    assert "was filed" in await collector.text_content("#filed")
    async with services.reader() as db:
        claim = (await db.execute(select(WelfareClaim))).scalar_one()
    assert claim.reference in await collector.text_content("#filed")

    # Two welfare officers approve; the second records the payout.
    for officer in ("officer1", "officer2"):
        page = await browse.new_page()
        await staff_login(page, browse.base_url, officer, PASSWORD)
        await page.goto(browse.url("/welfare/claims"))
        async with page.expect_navigation():
            await page.click(f"#claim-{claim.reference} a")
        assert "funeral on Sunday" in await page.text_content("#details")
        async with page.expect_navigation():
            await page.click("#approve")
    status = await page.get_attribute("#claim-status", "data-status")
    assert status == "approved"
    assert await page.text_content("#approvals") == "2 / 2"
    await page.select_option("#method", "bank")
    await page.fill("#payment-reference", "UTR-20250601")
    async with page.expect_navigation():
        await page.click("#pay")
    assert await page.get_attribute("#claim-status", "data-status") == "paid"
    assert await page.text_content("#fund-balance") == "₹10,000.00"

    # The member sees it paid; the welfare fund dropped by the amount.
    await member.reload()
    row = member.locator(f"#claim-{claim.reference}")
    assert await row.get_attribute("data-status") == "paid"
    assert re.search(r"Paid", await row.inner_text())
    assert await fund_balance(services) == 2000000 - 1000000
