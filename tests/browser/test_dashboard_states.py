"""The dashboard at its edges, in a real browser: an empty hub, 500 devices, a database gone.

Each test runs a real ``lichen hub run`` (embedded broker, dashboard on loopback, figures
refreshed every second) and drives Debian's Chromium through Playwright. Waits are
Playwright's auto-waiting ``expect`` assertions, never sleeps. Screenshots of every state go
to ``out/screenshots`` for people to look at.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, expect

from hub.dashboard import DEVICES_PER_PAGE
from hub.db import Database, default_url
from lichen.identity import Identity
from lichen.rewards import Standing, State
from tests.agents import HubProc
from tests.browser.conftest import WIDTHS, Watcher, new_hub, screenshot, viewport
from tests.pg import Cluster, pg_cluster, pg_database, pg_url  # noqa: F401  (fixtures)

DEVICES = 500
PAGES = -(-DEVICES // DEVICES_PER_PAGE)
GiB = 1 << 30
NOW = time.time()
POLL = 15_000  # ms an expect() may wait for a live part to change (refresh is 1 s)


# -- helpers -----------------------------------------------------------------------------------


def url(hub: HubProc, path: str) -> str:
    return f"http://127.0.0.1:{hub.http_port}{path}"


def fetch(hub: HubProc, path: str) -> tuple[int, bytes]:
    """GET ``path``: the status and body, error statuses included."""
    try:
        with urllib.request.urlopen(url(hub, path), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for_refresh(page: Page) -> None:
    """Wait until htmx has fetched and swapped the live part at least once."""
    live = page.locator("#live")
    before = live.get_attribute("data-updated")
    assert before is not None
    expect(live).not_to_have_attribute("data-updated", before, timeout=POLL)


def assert_fits(page: Page) -> None:
    """The page does not scroll sideways (wide tables scroll inside their own region)."""
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{page.url} is {overflow} px wider than the viewport"


# -- 1. an empty hub ---------------------------------------------------------------------------

EMPTY_PAGES = [
    ("overview", "/", "#empty-title", "No devices yet"),
    ("devices", "/devices", "section.empty h2", "No devices yet"),
    ("health", "/health", "#groups-title + .empty-note", "No objects stored yet"),
    ("ledger", "/ledger", "#chain", "No records yet"),
    ("streams", "/streams", "section.empty h2", "No streams yet"),
]


def test_empty_hub(browser: Browser, tmp_path: Path) -> None:
    hub = new_hub(tmp_path)
    hub.start()
    try:
        for width in WIDTHS:
            with viewport(browser, width) as context:
                watcher = Watcher(context.new_page(), url(hub, ""))
                page = watcher.page
                for name, path, selector, text in EMPTY_PAGES:
                    watcher.open(path)
                    expect(page.locator(selector)).to_contain_text(text)
                    wait_for_refresh(page)  # a live swap too, not just the first render
                    expect(page.locator(selector)).to_contain_text(text)
                    if name == "overview":
                        empty = page.locator("section.empty")
                        expect(empty).to_contain_text("lichen hub token")
                        expect(empty).to_contain_text("lichen agent join URL TOKEN")
                        expect(page.locator("[data-figure=devices]")).to_have_text("0")
                        expect(page.locator("#capacity-title + .empty-note")).to_be_visible()
                        expect(page.locator("#warnings-title + .empty-note")).to_be_visible()
                        # Epoch 1 is open but has challenged nobody: no chart of nothing.
                        expect(page.locator("#proofs-title + .empty-note")).to_contain_text(
                            "No proofs yet"
                        )
                        expect(page.locator("[data-chart]")).to_have_count(0)
                    if name == "health":
                        for state in ("full", "degraded", "at-risk", "unreadable"):
                            expect(page.locator(f"[data-health={state}]")).to_have_text("0")
                    if name == "ledger":
                        # The epoch loop opens epoch 1 as soon as the hub starts, devices or
                        # not: the ledger lists it (open) rather than its empty note.
                        expect(page.locator("table.epochs tbody tr")).to_have_count(1)
                        expect(page.locator("table.epochs tbody")).to_contain_text("open")
                        expect(page.locator("[data-chart]")).to_have_count(0)
                    assert_fits(page)
                    screenshot(page, f"empty-{name}-{width}")
                assert watcher.errors == [], watcher.errors
        assert hub.running
    finally:
        hub.kill()


# -- 2. 500 devices ----------------------------------------------------------------------------


def seed_devices(data_dir: Path) -> dict[str, int]:
    """Enroll DEVICES devices in the hub's SQLite database; how many are in each state."""
    counts = {"online": 0, "offline": 0, "warned": 0}
    with Database.open(default_url(data_dir)) as db:
        db.upgrade()
        for i in range(DEVICES):
            identity = Identity(i.to_bytes(2, "big") + bytes(30))
            kind = ("greenhouse", "shed", "kitchen", "attic", "barn")[i % 5]
            name = f"{kind}-{i:03d}"
            capacity = (1 + i % 7) * GiB // (1 + i % 3)
            db.enroll_device(
                identity.node_id, identity.public.public_key, name, capacity, NOW - 7 * 86400
            )
            online = i % 3 != 0
            # Some offline devices left minutes ago, some two days ago (long past repair.after).
            long_gone = not online and i % 2 == 1
            seen = NOW - (2 * 86400 if long_gone else (i % 11) * 60)
            used = capacity * (i % 10) // 10
            db.update_presence(
                identity.node_id,
                online=True,
                now=seen,
                capacity_bytes=capacity,
                used_bytes=used,
                address=f"10.0.{i // 250}.{i % 250 + 1}:5683",
            )
            if not online:
                db.update_presence(identity.node_id, online=False, now=seen + 60)
            if i % 50 == 7:
                db.set_standing(identity.node_id, Standing(State.WARNED, 1))
                counts["warned"] += 1
            counts["online" if online else "offline"] += 1
    return counts


def count_text(first: int, last: int, total: int) -> str:
    return f"{first}–{last} of {total} devices"


def test_many_devices(browser: Browser, tmp_path: Path) -> None:
    hub = new_hub(tmp_path)
    counts = seed_devices(hub.data_dir)
    hub.start()
    try:
        api_total = hub.api("/api/devices?limit=1")["total"]
        api_offline = hub.api("/api/devices?show=offline&limit=1")["total"]
        api_online = hub.api("/api/devices?show=online&limit=1")["total"]
        assert api_total == DEVICES
        # The hub changes no presence on start: what was seeded is what it shows.
        assert (api_online, api_offline) == (counts["online"], counts["offline"])

        for width in WIDTHS:
            with viewport(browser, width) as context:
                watcher = Watcher(context.new_page(), url(hub, ""))
                page, errors = watcher.page, watcher.errors
                rows = page.locator("table.devices tbody tr")
                pager = page.locator("nav.pager").first

                response = page.goto(url(hub, "/devices"))
                assert response is not None and response.status == 200
                expect(pager.locator(".count")).to_have_text(
                    count_text(1, DEVICES_PER_PAGE, DEVICES)
                )
                expect(rows).to_have_count(DEVICES_PER_PAGE)
                expect(pager).to_contain_text(f"Page 1 of {PAGES}")
                expect(rows.first.locator("th a")).to_have_text("attic-003")
                assert_fits(page)
                screenshot(page, f"many-devices-{width}")
                # attic-003 went away two days ago: still listed, offline, seen "2 days ago".
                expect(rows.first.locator(".state")).to_contain_text("offline")
                expect(rows.first).to_contain_text("2 days ago")

                pager.get_by_role("link", name="Next").click()
                expect(page).to_have_url(re.compile(r"/devices\?page=2$"))
                expect(pager.locator(".count")).to_have_text(
                    count_text(DEVICES_PER_PAGE + 1, 2 * DEVICES_PER_PAGE, DEVICES)
                )
                expect(rows).to_have_count(DEVICES_PER_PAGE)

                pager.get_by_role("link", name="Last").click()
                expect(page).to_have_url(re.compile(rf"/devices\?page={PAGES}$"))
                expect(pager.locator(".count")).to_have_text(
                    count_text(DEVICES - DEVICES_PER_PAGE + 1, DEVICES, DEVICES)
                )
                expect(rows).to_have_count(DEVICES_PER_PAGE)
                wait_for_refresh(page)  # the live part polls its own page, not page 1
                expect(pager.locator(".count")).to_have_text(
                    count_text(DEVICES - DEVICES_PER_PAGE + 1, DEVICES, DEVICES)
                )

                page.goto(url(hub, "/devices"))
                page.get_by_role("navigation", name="Show devices").get_by_role(
                    "link", name="Offline"
                ).click()
                expect(page).to_have_url(re.compile(r"/devices\?show=offline$"))
                expect(pager.locator(".count")).to_have_text(
                    count_text(1, DEVICES_PER_PAGE, api_offline)
                )
                expect(page.locator("tr[data-online=true]")).to_have_count(0)
                pager.get_by_role("link", name="Last").click()
                pages = -(-api_offline // DEVICES_PER_PAGE)
                expect(page).to_have_url(re.compile(rf"/devices\?show=offline&page={pages}$"))
                first = (pages - 1) * DEVICES_PER_PAGE + 1
                expect(pager.locator(".count")).to_have_text(
                    count_text(first, api_offline, api_offline)
                )
                expect(rows).to_have_count(api_offline - first + 1)

                response = page.goto(url(hub, "/devices?show=warned"))
                assert response is not None and response.status == 200
                expect(pager.locator(".count")).to_have_text(
                    count_text(1, counts["warned"], counts["warned"])
                )

                page.goto(url(hub, "/devices"))
                rows.first.locator("th a").click()
                expect(page.locator("h1")).to_have_text("attic-003")
                expect(page.locator("#device-state")).to_contain_text("offline")
                expect(page.locator("#proof-title + .empty-note")).to_contain_text(
                    "Not challenged yet"
                )
                assert_fits(page)

                response = page.goto(url(hub, f"/devices?page={PAGES + 1}"))
                assert response is not None and response.status == 404
                expect(page.get_by_role("alert")).to_contain_text(
                    f"there is no page {PAGES + 1}: the list has {PAGES}"
                )
                response = page.goto(url(hub, "/devices?page=abc"))
                assert response is not None and response.status == 400
                expect(page.get_by_role("alert")).to_contain_text(
                    "page must be a whole number from 1, not 'abc'"
                )
                response = page.goto(url(hub, "/devices?show=lost"))
                assert response is not None and response.status == 400
                expect(page.get_by_role("alert")).to_contain_text("show must be one of")

                response = page.goto(url(hub, "/"))
                assert response is not None and response.status == 200
                expect(page.locator("[data-figure=devices]")).to_have_text(str(DEVICES))
                expect(page.locator("[data-figure=online]")).to_have_text(str(counts["online"]))
                expect(page.locator("#empty-title")).to_have_count(0)
                expect(page.locator("table.bars tbody tr")).to_have_count(12)
                assert_fits(page)
                screenshot(page, f"many-overview-{width}")
                # The error pages' own statuses show as console errors; nothing else may.
                unexpected = [e for e in errors if "status of 40" not in e]
                assert unexpected == [], unexpected
        assert hub.running
    finally:
        hub.kill()


# -- 3. the database goes away and comes back ------------------------------------------------


def json_of(status_body: tuple[int, bytes]) -> tuple[int, Any]:
    status, body = status_body
    return status, json.loads(body)


def test_database_unreachable(
    browser: Browser,
    tmp_path: Path,
    pg_cluster: Cluster,  # noqa: F811
    pg_url: str,  # noqa: F811
) -> None:
    hub = new_hub(tmp_path, "--database", pg_url)
    hub.start()
    with ExitStack() as cleanup:
        cleanup.callback(hub.kill)  # last, after the browser contexts close
        watchers: dict[str, Watcher] = {}
        for width in WIDTHS:
            context = cleanup.enter_context(viewport(browser, width))
            watcher = Watcher(context.new_page(), url(hub, ""))
            watcher.open("/")
            expect(watcher.page.locator("[data-figure=devices]")).to_have_text("0")
            watchers[width] = watcher

        try:
            pg_cluster.allow_connections(pg_url, False)
            for width, watcher in watchers.items():
                page = watcher.page
                banner = page.locator("#unavailable")
                expect(banner).to_be_visible(timeout=POLL)
                expect(banner).to_contain_text("The database is not answering")
                # The kind of failure only: the database's own message names its address.
                expect(banner).to_contain_text("OperationalError")
                expect(banner).not_to_contain_text("accepting connections")
                expect(page.locator("[data-figure=devices]")).to_have_count(0)
                watcher.not_reloaded()
                wait_for_refresh(page)  # and it keeps polling
                assert_fits(page)
                screenshot(page, f"db-down-{width}")

            fresh = watchers["desktop"].page.context.new_page()
            response = fresh.goto(url(hub, "/devices"))
            assert response is not None and response.status == 503
            expect(fresh.locator("#unavailable")).to_contain_text("The database is not answering")
            expect(fresh.locator("h1")).to_have_text("Devices")
            fresh.close()

            status, health = json_of(fetch(hub, "/healthz"))
            assert status == 503 and health["database"] is False, health
            status, overview = json_of(fetch(hub, "/api/overview"))
            assert status == 503, overview
            assert overview["error"].startswith("the database is not answering"), overview
        finally:
            pg_cluster.allow_connections(pg_url, True)

        for watcher in watchers.values():
            expect(watcher.page.locator("#unavailable")).to_have_count(0, timeout=POLL)
            expect(watcher.page.locator("[data-figure=devices]")).to_have_text("0")
            watcher.not_reloaded()
        status, health = json_of(fetch(hub, "/healthz"))
        assert status == 200 and health["database"] is True, health
        assert hub.running
