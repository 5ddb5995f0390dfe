"""The union's pages in a real browser (headless Chromium): staff and member
login, joining, the language switcher, quick exit, and a 360 px phone screen.
Every test runs on SQLite and on PostgreSQL; any request leaving 127.0.0.1
fails it (see conftest.py)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import ARTIFACTS, artifact_name, eventually, html_lang, member_login, staff_login
from tests.conftest import PASSWORD
from union import i18n

pytestmark = pytest.mark.browser


def path_of(url: str) -> str:
    return urlsplit(url).path


async def test_staff_login_finds_a_member(browse, page, make_user, enrol_member):
    await make_user("collector1", ["collector"], "BLR")
    lakshmi = await enrol_member("Lakshmi Devi")
    await enrol_member("Kaveri", branch="MYS")  # outside the collector's branch: must not be found

    await staff_login(page, browse.base_url, "collector1", PASSWORD)
    assert path_of(page.url) == "/home/collector"
    find = page.get_by_role("link", name="Find a member")
    assert await find.is_visible()

    await find.click()
    await page.wait_for_url(re.compile(r"/members$"))
    await page.fill("#q", "lakshmi")
    async with page.expect_navigation():
        await page.press("#q", "Enter")
    results = page.locator("ul.list li")
    assert await results.count() == 1
    assert lakshmi.member_no in await results.first.inner_text()

    async with page.expect_navigation():
        await results.first.locator("a").click()
    assert path_of(page.url) == f"/members/{lakshmi.member_no}"
    assert await page.text_content("#member-no") == lakshmi.member_no

    # The branch limit holds in the browser too.
    await page.goto(browse.url("/members?q=Kaveri"))
    assert await page.locator("ul.list li").count() == 0

    # Logging out ends the session: the home page asks for a login again.
    async with page.expect_navigation():
        await page.click("form.logout button[type=submit]")
    await page.goto(browse.url("/home/collector"))
    assert path_of(page.url) == "/login"


async def test_member_logs_in_with_pin_and_opens_card(browse, page, enrol_member):
    member = await enrol_member("Renuka", pin="1234")

    # A wrong PIN is refused with a visible message and no session.
    await member_login(page, browse.base_url, member.member_no, "9999")
    assert path_of(page.url) == "/login/member"
    assert await page.locator("[role=alert]").first.is_visible()

    await member_login(page, browse.base_url, member.member_no, "1234")
    assert path_of(page.url) == "/home/member"
    assert await page.text_content("#member-no") == member.member_no
    assert "Renuka" in await page.inner_text("h1")
    assert await page.locator("#quick-exit").is_visible()  # on every member-facing page

    async with page.expect_navigation():
        await page.click("a[href='/member/card']")
    assert path_of(page.url) == "/member/card"
    assert await page.inner_text(".card .big-number") == member.member_no
    qr = page.locator(".card .qr svg")
    assert await qr.count() == 1
    box = await qr.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100, "the QR code should be big enough to scan"
    assert await page.locator("#quick-exit").is_visible()


async def test_self_service_join_then_log_in(browse, page, branches):
    await page.goto(browse.url("/"))
    async with page.expect_navigation():
        await page.click("a.tile[href='/join']")
    await page.fill("#working_name", "Yellamma")
    await page.select_option("#branch", "BLR")
    await page.select_option("#language", "kn")
    await page.fill("#pin", "4321")
    async with page.expect_navigation():
        await page.click("main form button[type=submit]")

    assert path_of(page.url) == "/join/done"
    member_no = (await page.text_content("#member-no")).strip()
    assert re.fullmatch(r"BLR-\d{5}", member_no), member_no

    # The number and PIN just chosen log the new member in.
    await member_login(page, browse.base_url, member_no, "4321")
    assert path_of(page.url) == "/home/member"
    assert await page.text_content("#member-no") == member_no
    # The member chose Kannada when joining; the interface follows.
    assert await html_lang(page) == "kn"


def translated(language: str, message: str) -> str:
    """What the app's own catalog makes of a message (the message itself while untranslated)."""
    return i18n.translations(language).gettext(message)


async def test_language_switch_persists(browse, page, make_user):
    await page.goto(browse.url("/login"))
    assert await html_lang(page) == "en"
    assert await page.get_attribute("button[name=lang][value=en]", "aria-current") == "true"

    async with page.expect_navigation():
        await page.get_by_role("button", name="ಕನ್ನಡ").click()
    assert path_of(page.url) == "/login"  # the switcher brings you back to the same page
    assert await html_lang(page) == "kn"
    assert await page.get_attribute("button[name=lang][value=kn]", "aria-current") == "true"
    assert await page.get_attribute("button[name=lang][value=en]", "aria-current") is None
    assert (await page.inner_text("main h1")).strip() == translated("kn", "Staff login")

    # The choice persists on the next page.
    async with page.expect_navigation():
        await page.click("a[href='/login/member']")
    assert await html_lang(page) == "kn"
    assert await page.get_attribute("button[name=lang][value=kn]", "aria-current") == "true"
    assert (await page.inner_text("main h1")).strip() == translated("kn", "Member login")

    # A logged-in user's choice is saved with the account: a fresh browser gets it too.
    await make_user("office1", ["office_bearer"])
    await staff_login(page, browse.base_url, "office1", PASSWORD)
    async with page.expect_navigation():
        await page.click("button[name=lang][value=ta]")
    assert await html_lang(page) == "ta"
    other = await browse.new_page()
    await staff_login(other, browse.base_url, "office1", PASSWORD)
    assert path_of(other.url) == "/home/office_bearer"
    assert await html_lang(other) == "ta"
    assert await other.get_attribute("button[name=lang][value=ta]", "aria-current") == "true"


async def test_quick_exit_button_leaves_without_a_way_back(browse, page, enrol_member):
    member = await enrol_member("Savitha", pin="1234")
    await member_login(page, browse.base_url, member.member_no, "1234")
    start = f"{browse.neutral_url}/start"
    await page.goto(start)
    await page.goto(browse.url("/member/card"))
    assert await page.inner_text(".card .big-number") == member.member_no

    await page.click("#quick-exit")
    await page.wait_for_url(f"{browse.neutral_url}/weather")
    assert await page.text_content("#neutral") == "Weather today"

    # location.replace took the member's page out of the history: back skips it.
    await page.go_back()
    assert not page.url.startswith(browse.base_url), f"back returned to the app: {page.url}"
    assert page.url == start


async def test_quick_exit_leaves_no_member_page_behind(browse, page, enrol_member, live_sessions):
    member = await enrol_member("Shanthi", pin="1234")
    await member_login(page, browse.base_url, member.member_no, "1234")
    assert await live_sessions(member) == 1
    async with page.expect_navigation():
        await page.click("a[href='/member/card']")

    await page.click("#quick-exit")
    await page.wait_for_url(f"{browse.neutral_url}/weather")
    # The logout is sent without holding up the exit (a keepalive request), so it can land a
    # moment after the neutral page: wait for it, as a person reaching for Back would.
    assert await eventually(lambda: _no_sessions(live_sessions, member)), "quick exit did not end the session"

    # Whoever picks up the phone next presses Back. location.replace removed only the card
    # from the history; the home page before it must not come back with the member's
    # details, so quick exit has to end the session too.
    await page.go_back()
    assert await page.locator("#member-no").count() == 0, (
        f"Back after quick exit shows the member's page with the member number: {page.url}")
    # And the session is over, not merely hidden.
    await page.goto(browse.url("/home/member"))
    assert path_of(page.url) == "/login"


async def _no_sessions(live_sessions, member) -> bool:
    return await live_sessions(member) == 0


async def test_escape_three_times_leaves(browse, page):
    start = f"{browse.neutral_url}/start"
    await page.goto(start)
    await page.goto(browse.url("/join"))
    await page.wait_for_load_state("load")  # app.js is deferred: wait for its listeners

    await page.keyboard.press("Escape")
    await page.keyboard.press("Escape")
    assert path_of(page.url) == "/join", "two presses must not leave yet"
    await page.keyboard.press("Escape")
    await page.wait_for_url(f"{browse.neutral_url}/weather")

    await page.go_back()
    assert page.url == start


async def test_quick_exit_works_without_javascript(browse):
    page = await browse.new_page(java_script_enabled=False)
    await page.goto(browse.url("/login"))
    async with page.expect_navigation():
        await page.click("#quick-exit")
    assert page.url == f"{browse.neutral_url}/weather"


PHONE = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


async def no_horizontal_scroll(page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"{path_of(page.url)} is {width} px wide on a 360 px screen"


async def test_pages_fit_a_360px_phone(request, browse, enrol_member):
    member = await enrol_member("Manjula", pin="1234")
    page = await browse.new_page(**PHONE)
    shots = ARTIFACTS / "mobile-360"
    shots.mkdir(parents=True, exist_ok=True)
    backend = request.node.callspec.params.get("backend", "")

    async def check(name: str) -> None:
        await no_horizontal_scroll(page)
        await page.screenshot(path=str(shots / f"{artifact_name(name)}-{backend}.png"), full_page=True)

    await page.goto(browse.url("/login"))
    await check("login")
    await page.goto(browse.url("/join"))
    await check("join")
    await member_login(page, browse.base_url, member.member_no, "1234")
    await check("member-home")
    await page.goto(browse.url("/member/card"))
    await check("member-card")
    # Kannada words are longer: the switcher and pages must still fit.
    async with page.expect_navigation():
        await page.click("button[name=lang][value=kn]")
    assert await html_lang(page) == "kn"
    await check("member-card-kn")
    # The quick-exit button is reachable without scrolling sideways.
    box = await page.locator("#quick-exit").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 360
