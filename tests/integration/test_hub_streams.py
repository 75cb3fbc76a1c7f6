"""Stream figures from agents to the hub's database, for real: a hub, a Mosquitto, two agents.

One agent's operator shares reading values (``[streams] share_readings = true``): its stream
reaches the hub with its count and its numeric readings. The other does not: the hub learns
its stream's name and count, and no value. Readings go in over CoAP as a sensor sends them;
the test follows the hub's log of each stream report it stores (``lichen -v``: they are
debug lines) and looks at the hub's SQLite database after each.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

from hub.db import Database, default_url
from tests.agents import HubProc, mesh, post_packs
from tests.mosquitto import Mosquitto, require_mosquitto


def _until_reported(hub: HubProc, node_id: str, since: int, done: Callable[[int], bool]) -> None:
    """Follow the hub's log of ``node_id``'s stream reports from ``since`` on until ``done``
    (given the readings stored so far) holds, looked at once after each report is stored."""
    report = re.compile(rf"streams from {node_id}: \d+ streams, (\d+) of \d+ readings stored")
    assert hub.log is not None
    stored = 0
    while True:
        at = hub.log.wait(report, since=since)
        match = report.search(hub.log.lines[at])
        assert match is not None
        stored += int(match[1])
        if done(stored):
            return
        since = at + 1


def test_stream_figures_reach_the_hub(tmp_path: Path) -> None:
    require_mosquitto()
    with Mosquitto(tmp_path / "mosquitto") as broker:
        hub = HubProc(tmp_path / "hub", 0, verbose=True)  # its stream reports log at debug
        hub.init("--broker", broker.url)
        hub.start()
        token = (hub.data_dir / "join.token").read_text().strip()
        try:
            with mesh(tmp_path, 2) as (sharing, private):
                for agent, share in ((sharing, "true"), (private, "false")):
                    agent.configure("hub", "url", f'"{broker.url}"')
                    agent.configure("hub", "token", f'"{token}"')
                    agent.configure("hub", "status_interval", "1.0")
                    agent.configure("streams", "share_readings", share)
                    agent.start()
                for agent in (sharing, private):
                    hub.wait_for(rf"device {agent.node_id} \(.*\) enrolled")

                since = hub.mark()
                temps = [{"n": "kitchen", "u": "Cel", "v": 20 + i / 4} for i in range(5)]
                # A text value is stored by the agent but is no figure for a chart.
                packs = [[r] for r in (*temps, {"n": "door", "vs": "open"})]
                assert asyncio.run(post_packs(sharing.port, "kitchen.temp", packs)) == len(packs)
                soil = [[{"n": "soil", "v": 0.3}]] * 3
                assert asyncio.run(post_packs(private.port, "garden", soil)) == 3

                with Database.open(default_url(hub.data_dir)) as db:
                    # All five numbers stored, and the report that carried them had the count.
                    _until_reported(
                        hub,
                        sharing.node_id,
                        since,
                        lambda stored: (
                            stored >= 5
                            and (s := db.get_stream(sharing.node_id, "kitchen.temp")) is not None
                            and s.readings_total == 6
                        ),
                    )
                    shared = db.get_stream(sharing.node_id, "kitchen.temp")
                    assert shared is not None
                    values = db.stream_readings(sharing.node_id, "kitchen.temp")
                    assert [(r.name, r.value, r.unit) for r in values] == [
                        ("kitchen", 20 + i / 4, "Cel") for i in range(5)
                    ]
                    assert shared.latest == values[-1]
                    assert shared.newest_at is not None and shared.newest_at >= values[-1].at

                    # A private report's log line shows no count: look after each one.
                    _until_reported(
                        hub,
                        private.node_id,
                        since,
                        lambda _: (
                            (s := db.get_stream(private.node_id, "garden")) is not None
                            and s.readings_total == 3
                        ),
                    )
                    hidden = db.get_stream(private.node_id, "garden")
                    assert hidden is not None
                    assert hidden.latest is None and hidden.newest_at is not None
                    assert db.stream_readings(private.node_id, "garden") == ()
                    listed = db.list_streams(10, 0)
                    assert {(s.device, s.name) for s in listed.items} == {
                        (sharing.node_id, "kitchen.temp"),
                        (private.node_id, "garden"),
                    }
                    assert listed.total == 2
        finally:
            hub.kill()
