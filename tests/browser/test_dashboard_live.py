"""The dashboard in headless Chromium, against a real hub, Mosquitto and five real agents.

The page is loaded once and then only watched: a device killed with SIGKILL turns offline on
it, and a device whose shards were deleted shows its warning and then its penalty with the
reason, all without a reload (a marker set in the page's JavaScript survives, which a
navigation would wipe). The ledger page shows the chain verified. Every page is saved as a
screenshot at desktop and phone widths (``out/screenshots``).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.agents import AgentProc, HubProc, mesh, post_packs
from tests.browser.conftest import WIDTHS, Watcher, new_hub, screenshot
from tests.mosquitto import Mosquitto, require_mosquitto

EPOCH = 3.0
CHARTS_DRAWN = (
    "document.querySelectorAll('[data-chart]').length"
    " === document.querySelectorAll('.uplot').length"
)
WATCH = 45_000  # ms a page is watched for a change: several epochs and refreshes


def _holders(agents: list[AgentProc], address: str) -> list[AgentProc]:
    return [a for a in agents if list((a.data_dir / "store" / "shards").glob(f"{address}.*.shard"))]


@pytest.fixture
def community(tmp_path: Path) -> Iterator[tuple[HubProc, list[AgentProc], str]]:
    """A hub on Mosquitto with five agents joined and a file stored (k=2, n=4)."""
    require_mosquitto()
    with Mosquitto(tmp_path / "mosquitto") as broker:
        hub = new_hub(tmp_path, "--broker", broker.url)
        for section, key, value in [
            ("epochs", "length", EPOCH),
            ("epochs", "answer_within", 1.5),
            ("rewards", "warn_after", 1),
            ("rewards", "penalise_after", 2),
            ("rewards", "evict_after", 6),
            ("repair", "after", 600.0),  # the victim keeps its placements (and keeps failing)
        ]:
            hub.configure(section, key, str(value))
        hub.start()
        token = (hub.data_dir / "join.token").read_text().strip()
        try:
            with mesh(tmp_path, 5) as agents:
                for i, agent in enumerate(agents):
                    agent.configure("agent", "name", f'"pi-{i + 1}"')
                    agent.configure("hub", "url", f'"{broker.url}"')
                    agent.configure("hub", "token", f'"{token}"')
                    agent.configure("hub", "status_interval", "2.0")
                    agent.configure("streams", "share_readings", "true")
                    agent.start()
                for agent in agents:
                    hub.wait_for(rf"device {agent.node_id} \(.*\) enrolled")
                writer = agents[-1]
                for other in agents[:-1]:
                    writer.wait_for(f"peer {other.node_id} verified")
                (tmp_path / "in.bin").write_bytes(os.urandom(200_000))
                put = writer.cli("put", str(tmp_path / "in.bin"), "--k", "2", "--n", "4")
                address = put.stdout.decode().strip()
                # Playwright's sync API keeps an event loop running in this thread.
                with ThreadPoolExecutor(1) as pool:
                    packs = [
                        [
                            {"bn": "kitchen:", "n": "temp", "u": "Cel", "v": 20 + (i % 7) / 2},
                            {"n": "humidity", "u": "%RH", "v": 40 + i % 5},
                        ]
                        for i in range(20)
                    ]
                    posted = pool.submit(asyncio.run, post_packs(writer.port, "kitchen", packs))
                    assert posted.result() == 20
                hub.wait_for(r"epoch \d+ closed: \d+ devices, [1-9]\d* paid")
                yield hub, agents, address
        finally:
            hub.kill()


def test_the_dashboard_follows_the_mesh_without_reloading(
    browser: Browser, community: tuple[HubProc, list[AgentProc], str]
) -> None:
    hub, agents, address = community
    base = f"http://127.0.0.1:{hub.http_port}"
    writer = agents[-1]
    holders = [a for a in _holders(agents, address) if a is not writer]
    victim, killed = holders[0], holders[1]

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watcher = Watcher(context.new_page(), base)
    page = watcher.page

    # Streams: the readings the agent shares appear, with their chart, without a reload.
    watcher.open("/streams")
    expect(page.locator(".stream h2").first).to_contain_text("kitchen", timeout=WATCH)
    expect(page.locator(".stream dl.latest")).to_contain_text("kitchen:temp")
    expect(page.locator(".stream .uplot")).to_have_count(1)
    watcher.not_reloaded()

    # Every page, at both widths, while the mesh is healthy.
    for width, (w, h) in WIDTHS.items():
        page.set_viewport_size({"width": w, "height": h})
        for name, path in [
            ("overview", "/"),
            ("devices", "/devices"),
            ("device", f"/devices/{writer.node_id}"),
            ("health", "/health"),
            ("ledger", "/ledger"),
            ("streams", "/streams"),
        ]:
            watcher.open(path)
            page.wait_for_function(CHARTS_DRAWN)
            screenshot(page, f"{name}-{width}")
        assert not watcher.errors, watcher.errors

    # The overview counts the devices the hub has, as the API does.
    page.set_viewport_size({"width": 1280, "height": 900})
    watcher.open("/")
    expect(page.locator("[data-figure=devices]")).to_have_text("5")
    expect(page.locator("[data-figure=online]")).to_have_text("5")
    assert hub.api("/api/overview")["devices_online"] == 5

    # A device killed outright turns offline on the open devices page.
    watcher.open("/devices")
    row = page.locator(f'tr[data-node="{killed.node_id}"]')
    expect(row.locator(".state")).to_contain_text("online")
    killed.kill()
    expect(row.locator(".state")).to_contain_text("offline", timeout=WATCH)
    expect(page.locator("[data-online=false]")).to_have_count(1)
    watcher.not_reloaded()

    # A device that lost its shards: warned first, then penalised, with the reasons.
    watcher.open(f"/devices/{victim.node_id}")
    for shard_file in (victim.data_dir / "store" / "shards").glob("*.shard"):
        shard_file.unlink()
    warned = page.locator(".banner.warned")
    expect(warned).to_contain_text("Warning", timeout=WATCH)
    expect(warned).to_contain_text(re.compile(r"failed", re.I))
    screenshot(page, "device-warned-desktop")
    penalised = page.locator(".banner.penalised")
    expect(penalised).to_contain_text("Penalised", timeout=WATCH)
    expect(penalised.locator(".reasons")).to_contain_text("penalty")
    expect(page.locator("table.rewards tbody tr").first).to_contain_text("penalty")
    watcher.not_reloaded()
    screenshot(page, "device-penalised-desktop")

    # The overview lists the warning too, and the ledger verifies.
    watcher.open("/")
    expect(page.locator(".warnings")).to_contain_text("pi-")
    watcher.open("/ledger")
    expect(page.locator("#chain")).to_contain_text("Chain verified")
    assert hub.api("/api/ledger/verify")["verified"]
    screenshot(page, "ledger-after-penalty-desktop")
    assert not watcher.errors, watcher.errors
    context.close()
