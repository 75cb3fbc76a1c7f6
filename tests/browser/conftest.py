"""Headless Chromium for the dashboard tests, driven by Playwright, and their screenshots.

The browser is Debian's ``chromium`` (``./dev setup`` installs it), launched by Playwright with
``executable_path``: Playwright's own browser download needs the internet. Screenshots go to
``out/screenshots`` (or ``$LICHEN_SCREENSHOTS``), one per page and width, for people to look at.
Also shared by the dashboard tests: a hub set up for them, viewports, and a watcher of a page's
errors that can tell whether the page was reloaded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.agents import HubProc

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("LICHEN_SCREENSHOTS", ROOT / "out" / "screenshots"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests may run as root, where Chromium's sandbox will not start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # With these off, Chromium makes no connection of its own (updates, sync, safe browsing):
    # the tests send traffic to loopback only.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
"""Viewports the screenshots are taken at: a laptop, and a phone held upright."""


def find_chromium() -> str:
    """The Chromium executable; under CI its absence fails the tests, elsewhere skips them."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    message = "Chromium is not installed (apt-get install chromium, or ./dev setup)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module.

    Not per session: Playwright's sync API keeps an event loop running in the main thread
    while it is open, and later test modules that call ``asyncio.run`` would fail.
    """
    executable = find_chromium()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot of ``page`` as ``<name>.png``; return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000, f"{path} is empty"
    return path


def new_hub(tmp_path: Path, *extra: str) -> HubProc:
    """An initialised hub (``extra``: more ``lichen hub init`` options) on loopback, embedded
    broker unless ``--broker`` is given, live parts of its pages refreshed every second."""
    hub = HubProc(tmp_path / "hub", 0)
    hub.init(*extra)
    hub.configure("http", "refresh", "1")
    return hub


@contextmanager
def viewport(browser: Browser, width: str) -> Iterator[BrowserContext]:
    """A fresh browser context at one of the :data:`WIDTHS`."""
    w, h = WIDTHS[width]
    context = browser.new_context(viewport={"width": w, "height": h})
    try:
        yield context
    finally:
        context.close()


class Watcher:
    """A page's uncaught exceptions and console errors as they happen (:attr:`errors`), and a
    marker in its JavaScript that a reload would wipe."""

    def __init__(self, page: Page, base: str) -> None:
        self.page, self.base = page, base
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error"
                else None
            ),
        )

    def open(self, path: str) -> None:
        """Load ``base + path``, expect 200, and set the marker."""
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == 200, (path, response)
        self.page.evaluate("window.lichenMarker = 'not reloaded'")

    def not_reloaded(self) -> None:
        """Fail if the page was reloaded (or left) since :meth:`open`."""
        assert self.page.evaluate("window.lichenMarker") == "not reloaded", "the page was reloaded"
