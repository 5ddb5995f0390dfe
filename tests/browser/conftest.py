"""The browser harness: the real app served by uvicorn on a free 127.0.0.1 port,
driven by headless Debian Chromium through Playwright's async API.

- The server runs in a background thread with its own event loop and builds its
  own services in the app's lifespan (embedded job runner included), exactly as
  `union serve` does; the test creates its data through the shared `services`
  fixture. Both point at the per-test database of tests/conftest.py, so every
  browser test runs on SQLite and on PostgreSQL like the rest of the suite.
- The quick-exit URL points at a small neutral site on 127.0.0.1, so nothing a
  page does ever leaves the machine; every request the browser makes is
  recorded, anything not bound for 127.0.0.1 is aborted, and the test errors at
  teardown naming it.
- When a test fails, each page it had open is saved as
  test-artifacts/screenshots/<test name>.png.
"""

from __future__ import annotations

import http.server
import importlib.util
import os
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import need
from union import members

# Debian's chromium package; another build can be named with UNION_TEST_CHROMIUM.
CHROMIUM = os.environ.get("UNION_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
LOCAL_HOSTS = {"127.0.0.1"}
# A failing step should fail in seconds, not after Playwright's default 30 s.
STEP_TIMEOUT_MS = 10_000


def artifact_name(text: str) -> str:
    """A file name from a test name: test_x[sqlite] -> test_x-sqlite."""
    return re.sub(r"[^\w.-]+", "-", text).strip("-")


# --- Knowing whether the test failed ---------------------------------------------

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    # Fixtures read item.rep_setup / rep_call at teardown to decide on a screenshot.
    setattr(item, f"rep_{report.when}", report)
    return report


# --- The neutral site quick exit goes to --------------------------------------------

NEUTRAL_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Weather</title></head>
<body><h1 id="neutral">Weather today</h1><p id="path">{path}</p></body></html>"""


class _NeutralHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = NEUTRAL_PAGE.format(path=self.path.split("?")[0]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture(scope="session")
def neutral_site():
    """Base URL of a tiny local site standing in for the outside page quick exit opens."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NeutralHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="neutral-site", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def settings(settings, neutral_site):
    """The suite's per-test settings, with quick exit pointed at the local neutral site."""
    return settings.model_copy(update={"quick_exit_url": f"{neutral_site}/weather"})


# --- The app under uvicorn -------------------------------------------------------------

# --- Chromium ----------------------------------------------------------------------------

@pytest.fixture
async def browser():
    need(os.path.exists(CHROMIUM), f"Chromium at {CHROMIUM}")
    need(importlib.util.find_spec("playwright") is not None, "the playwright Python package")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


class BrowserSession:
    """Opens pages (each in its own context, so its own cookies), records every
    request they make, and at the end screenshots them if the test failed."""

    def __init__(self, browser, base_url: str, neutral_url: str):
        self.browser = browser
        self.base_url = base_url
        self.neutral_url = neutral_url
        self.contexts = []
        self.pages = []
        self.requests: list[str] = []
        self.blocked: list[str] = []

    def url(self, path: str) -> str:
        return self.base_url + path

    async def new_page(self, **context_options):
        options = {"locale": "en-US", "viewport": {"width": 1024, "height": 768}, **context_options}
        context = await self.browser.new_context(**options)
        context.set_default_timeout(STEP_TIMEOUT_MS)
        context.set_default_navigation_timeout(STEP_TIMEOUT_MS)

        async def only_local(route, request):
            parts = urlsplit(request.url)
            if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOCAL_HOSTS:
                self.blocked.append(request.url)
                await route.abort("blockedbyclient")
            else:
                await route.continue_()

        await context.route("**/*", only_local)
        context.on("request", lambda req: self.requests.append(req.url))
        page = await context.new_page()
        self.contexts.append(context)
        self.pages.append(page)
        return page

    def outside_requests(self) -> list[str]:
        outside = []
        for url in self.requests + self.blocked:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOCAL_HOSTS:
                outside.append(url)
        return sorted(set(outside))

    async def screenshot_all(self, test_name: str) -> list[Path]:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        saved = []
        for n, page in enumerate(self.pages, start=1):
            if page.is_closed():
                continue
            suffix = "" if n == 1 else f"-page{n}"
            path = SCREENSHOTS / f"{artifact_name(test_name)}{suffix}.png"
            try:
                await page.screenshot(path=str(path), full_page=True, timeout=5_000)
            except Exception as exc:  # noqa: BLE001 - a missing screenshot must not hide the real failure
                print(f"could not save a screenshot of {page.url}: {exc}")
                continue
            saved.append(path)
        return saved

    async def close(self) -> None:
        for context in self.contexts:
            try:
                await context.close()
            except Exception:  # noqa: BLE001 - already gone with the browser
                pass


@pytest.fixture
async def browse(request, browser, live_server, neutral_site):
    """A BrowserSession on the live app. Fails the test at teardown if any request left 127.0.0.1."""
    session = BrowserSession(browser, live_server, neutral_site)
    try:
        yield session
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for path in await session.screenshot_all(request.node.name):
                print(f"screenshot of the failed test: {path}")
    finally:
        await session.close()
    outside = session.outside_requests()
    assert not outside, f"the browser tried to reach outside 127.0.0.1: {outside}"


@pytest.fixture
async def page(browse):
    """One page at a phone-or-laptop-neutral 1024x768, language en-US."""
    return await browse.new_page()


# --- Data and steps the tests share ----------------------------------------------------

@pytest.fixture
async def enrol_member(services, branches):
    """enrol_member(name, pin=None, branch="BLR", language="en") -> Member, as a self-service join would."""

    async def enrol(name: str, *, pin: str | None = None, branch: str = "BLR", language: str = "en"):
        async with services.sessions() as db:
            member = await members.enrol(
                db, data=members.NewMember(working_name=name, branch_code=branch, language=language, pin=pin),
                vault=services.vault, phone_hash=services.phone_hash, actor=None)
            await db.commit()
            return member

    return enrol


@pytest.fixture
async def live_sessions(services):
    """live_sessions(member) -> how many web sessions the member's login has on the server."""
    from sqlalchemy import func, select

    from union.models import User, WebSession

    async def count(member) -> int:
        async with services.sessions() as db:
            return (await db.execute(
                select(func.count()).select_from(WebSession).join(User, User.id == WebSession.user_id)
                .where(User.member_id == member.id))).scalar_one()

    return count


async def eventually(check, *, timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll an async check until it is true or the time is up (bounded)."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


async def staff_login(page, base_url: str, username: str, password: str) -> None:
    await page.goto(base_url + "/login")
    await page.fill("#username", username)
    await page.fill("#password", password)
    async with page.expect_navigation():
        await page.click("main form button[type=submit]")


async def member_login(page, base_url: str, member_no: str, pin: str) -> None:
    await page.goto(base_url + "/login/member")
    await page.fill("#member_no", member_no)
    await page.fill("#pin", pin)
    async with page.expect_navigation():
        await page.click("main form button[type=submit]")


async def html_lang(page) -> str:
    return await page.evaluate("document.documentElement.lang")
