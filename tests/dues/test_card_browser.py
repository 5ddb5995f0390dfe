"""The card journey in a real browser (headless Chromium, a 360 px phone) in test
mode, as `union serve --demo` runs it: the member opens "My dues", "Pay by card",
chooses three months, continues to the built-in Stripe stand-in's TEST MODE page,
is declined with the test decline card, pays with 4242…, comes back to "thank
you", and sees the payment on "My dues" with the new standing. No page breaks
the strict CSP and nothing leaves 127.0.0.1."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dues.card_models import CardPayment
from dues.services import paid_total
from tests.browser.conftest import (ARTIFACTS, browse, browser, enrol_member, member_login,  # noqa: F401 - fixtures
                                    neutral_site)

pytestmark = pytest.mark.browser

SHOTS = ARTIFACTS / "card-journey"  # screenshots of each step (not in git)
PHONE = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


@pytest.fixture
def settings(settings, neutral_site):  # noqa: F811
    return settings.model_copy(update={"quick_exit_url": f"{neutral_site}/weather", "stripe_test_mode": True,
                                       "stripe_api_key": None, "stripe_api_base": None,
                                       "stripe_webhook_secret": None})


async def test_member_pays_three_months_by_card_in_test_mode(request, browse, services, enrol_member):  # noqa: F811
    SHOTS.mkdir(parents=True, exist_ok=True)
    backend = request.node.callspec.params.get("backend", "")

    async def shot(page, name: str) -> None:
        await page.screenshot(path=str(SHOTS / f"{name}-{backend}.png"), full_page=True)

    member = await enrol_member("Kaveri Card", pin="2468")
    page = await browse.new_page(**PHONE)
    refused = []
    page.on("console", lambda msg: refused.append(msg.text) if "Content Security Policy" in msg.text else None)
    base = browse.base_url
    await member_login(page, base, member.member_no, "2468")

    await page.goto(base + "/dues/me")
    async with page.expect_navigation():
        await page.click("#pay-by-card")
    assert "TEST MODE" in await page.inner_text("#test-mode")
    await shot(page, "1-card-page")
    await page.select_option("#months", "3")
    async with page.expect_navigation():
        await page.click("#pay-form button[type=submit]")
    async with page.expect_navigation():
        await page.click("#checkout-link")
    assert "/stripe-test/pay/cs_" in page.url
    assert "TEST MODE" in await page.inner_text("#test-mode")
    assert await page.inner_text("#amount") == "₹300.00"
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await shot(page, "2-test-mode-pay-page")

    await page.fill("#card", "4000 0000 0000 0002")
    async with page.expect_navigation():
        await page.click("button[value=pay]")
    assert "declined" in (await page.content())
    await page.fill("#card", "4242 4242 4242 4242")
    async with page.expect_navigation():
        await page.click("button[value=pay]")
    assert "/dues/card/done" in page.url
    assert await page.get_attribute("#card-result", "data-result") == "paid"
    await shot(page, "3-done")

    await page.goto(base + "/dues/me")
    assert await page.get_attribute("#card-payments li", "data-status") == "succeeded"
    assert await page.get_attribute("#standing", "data-status") == "current"
    await shot(page, "4-my-dues")
    assert not refused, refused

    async with services.reader() as db:
        payment = (await db.execute(select(CardPayment))).scalar_one()
        assert payment.status == "succeeded" and payment.amount_minor == 30000 and payment.months == 3
        assert await paid_total(db, member.id) == 30000
