"""Headless Chromium for the dashboard tests, driven by Playwright, and their screenshots.

The browser is Debian's ``chromium`` (``./dev setup`` installs it), launched by Playwright with
``executable_path``: Playwright's own browser download needs the internet. Screenshots go to
``out/screenshots`` (or ``$LICHEN_SCREENSHOTS``), one per page and width, for people to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

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
