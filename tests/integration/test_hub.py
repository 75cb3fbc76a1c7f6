"""A whole community: the hub, five agents and a real Mosquitto, on SQLite and PostgreSQL.

Agents enroll with the join token, store a file and a stream, and prove their shards epoch
after epoch. Then one holder's shards are deleted on its disk: it fails its proofs, is
warned, then penalised with the reason, and its data is rebuilt on others. The ledger of all
of it verifies.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.agents import AgentProc, HubProc, mesh, post_packs
from tests.mosquitto import Mosquitto, require_mosquitto
from tests.pg import pg_cluster, pg_database, pg_url  # noqa: F401  (fixtures)

EPOCH = 3.0


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("pg_url"))


def _holder_of(agents: list[AgentProc], address: str, exclude: set[str]) -> AgentProc:
    for agent in agents:
        if agent.node_id in exclude:
            continue
        if list((agent.data_dir / "store" / "shards").glob(f"{address}.*.shard")):
            return agent
    raise AssertionError(f"no agent outside {exclude} holds a shard of {address}")


def test_hub_agents_and_mosquitto(tmp_path: Path, database_url: str) -> None:
    require_mosquitto()
    with Mosquitto(tmp_path / "mosquitto") as broker:
        hub = HubProc(tmp_path / "hub", 0)
        hub.init("--broker", broker.url, *(["--database", database_url] if database_url else []))
        for key, value in [("length", EPOCH), ("answer_within", 1.5)]:
            hub.configure("epochs", key, str(value))
        for key, value in [("warn_after", 1), ("penalise_after", 2), ("evict_after", 5)]:
            hub.configure("rewards", key, str(value))
        hub.configure("repair", "after", "4.0")
        hub.start()
        token = (hub.data_dir / "join.token").read_text().strip()
        try:
            with mesh(tmp_path, 5) as agents:
                for agent in agents:
                    agent.configure("hub", "url", f'"{broker.url}"')
                    agent.configure("hub", "token", f'"{token}"')
                    agent.start()
                for agent in agents:
                    hub.wait_for(rf"device {agent.node_id} \(.*\) enrolled")
                # The last agent started finds every other at once (the others retry their
                # static peers later), so it writes.
                writer, reader = agents[-1], agents[-2]
                for other in agents[:-1]:
                    writer.wait_for(f"peer {other.node_id} verified")

                data = os.urandom(300_000)
                (tmp_path / "in.bin").write_bytes(data)
                address = writer.cli("put", str(tmp_path / "in.bin"), "--k", "2", "--n", "4")
                address_text = address.stdout.decode().strip()
                packs = [[{"n": "kitchen", "u": "Cel", "v": 20 + i / 10}] for i in range(30)]
                assert asyncio.run(post_packs(writer.port, "kitchen.temp", packs)) == 30

                # Every holder proves what it holds and is rewarded.
                first = int(
                    hub.wait_for(r"epoch (\d+) closed: \d+ devices, [1-9]\d* paid").group(1)
                )
                hub.wait_for(rf"epoch {first + 1} closed")
                devices = hub.api("/api/devices?limit=100")["items"]
                assert len(devices) == 5
                assert all(d["standing"]["state"] == "ok" for d in devices)
                paid = hub.api(f"/api/epochs/{first}")["rewards"]
                challenged = [r for r in paid if r["items_passed"] + r["items_failed"] > 0]
                assert len(challenged) >= 4, paid  # every holder of the file's 4 shards
                for row in challenged:  # honest devices: every proof passes, every one is paid
                    assert row["items_failed"] == 0 and row["reward"] > 0, row

                # A holder loses its shards on disk: failed proofs, warning, penalty, repair.
                victim = _holder_of(agents, address_text, {writer.node_id, reader.node_id})
                for path in (victim.data_dir / "store" / "shards").glob("*.shard"):
                    path.unlink()
                failed = hub.mark()
                hub.wait_for(rf"device {victim.node_id} failed \d+ of \d+ proofs", since=failed)
                hub.wait_for(r"epoch \d+ closed", since=hub.mark())
                warnings = hub.api("/api/warnings")["items"]
                assert any(w["node_id"] == victim.node_id for w in warnings)
                hub.wait_for(rf"repair \d+: \w+ rebuilds shards \[[\d, ]+\] of {address_text}")
                hub.wait_for(rf"repair \d+ of {address_text} done")
                detail = hub.api(f"/api/devices/{victim.node_id}")
                history = sorted(detail["rewards"], key=lambda r: r["epoch"])
                states = [r["after"]["state"] for r in history]
                # Warned first, penalised (and charged) only after.
                assert "warned" in states and "penalised" in states, states
                assert states.index("warned") < states.index("penalised"), states
                charged = [r for r in history if r["penalty"] > 0]
                assert charged and charged[0]["after"]["state"] == "penalised"
                explanations = " ".join(
                    line for r in detail["rewards"] for line in r["explanation"]
                )
                assert "failed" in explanations

                # The data is whole again: a reader rebuilds it, and the object is healthy.
                out = tmp_path / "out.bin"
                writer.cli("get", address_text, "-o", str(out))
                assert out.read_bytes() == data

                verified = hub.api("/api/ledger/verify")
                assert verified["verified"], verified
                result = hub.cli("hub", "ledger", "verify")
                assert b"ledger verified" in result.stdout
        finally:
            hub.kill()
