"""Real agents on one machine and across a bridged LAN: discovery, put, get, dead holders.

The loopback mesh runs inside an isolated network namespace so its mDNS is real multicast and
touches nothing outside; the bridged test gives each agent a host of its own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests import netns
from tests.agents import AgentProc, mesh

MiB = 1024 * 1024


def _verified_peers(agent: AgentProc) -> set[str]:
    return set(re.findall(r"peer (\w+) verified", "\n".join(agent.lines)))


def _wait_until_all_verified(agents: list[AgentProc]) -> None:
    """Every agent has verified every other (waiting on their log lines)."""
    ids = {a.node_id for a in agents}
    for agent in agents:
        wanted = ids - {agent.node_id}
        while not wanted <= _verified_peers(agent):
            missing = wanted - _verified_peers(agent)
            agent.wait_for(re.compile(r"peer (" + "|".join(sorted(missing)) + r") verified"))


@pytest.fixture
def loopback() -> netns.Namespace:
    netns.require_netns()
    with netns.isolated_loopback() as ns:
        yield ns


def test_six_agents_discover_each_other_store_and_survive_dead_holders(
    tmp_path: Path, loopback: netns.Namespace
) -> None:
    with mesh(tmp_path, 6, namespace=loopback, mdns=True) as agents:
        for agent in agents:
            agent.start()
        _wait_until_all_verified(agents)

        writer, reader = agents[0], agents[1]
        data = os.urandom(16 * MiB)
        (tmp_path / "in.bin").write_bytes(data)
        put = writer.cli("put", str(tmp_path / "in.bin"), "--k", "3", "--n", "6")
        address = put.stdout.decode().strip()
        capability = re.search(r"bafk\S+#\S+", put.stderr.decode())
        assert address.startswith("bafk") and capability is not None
        assert "as 6 shards (any 3 rebuild it) on 6 agents" in put.stderr.decode()

        out = tmp_path / "out.bin"
        reader.cli("get", capability.group(0), "-o", str(out))
        assert out.read_bytes() == data
        writer.cli("get", address, "-o", str(out))  # the owner needs no shared key
        assert out.read_bytes() == data

        # n - k = 3 holders die without warning: any 3 of the 6 shards still rebuild it.
        for agent in agents[3:]:
            agent.kill()
        reader.cli("get", capability.group(0), "-o", str(out))
        assert out.read_bytes() == data

        # One more and only 2 shards are left: a clear error naming what was found.
        agents[2].kill()
        failed = reader.cli("get", capability.group(0), "-o", str(tmp_path / "x"), check=False)
        message = failed.stderr.decode()
        assert failed.returncode == 1, message
        assert "not enough shards" in message
        assert "needs 3 of 6, found 2" in message
        assert not (tmp_path / "x").exists()


def test_agents_on_a_bridged_lan_find_each_other_by_multicast(tmp_path: Path) -> None:
    netns.require_netns()
    with netns.bridged_hosts(3) as lan:
        agents = [AgentProc(tmp_path / f"host{i}", 5683, host) for i, host in enumerate(lan.hosts)]
        try:
            for agent in agents:
                agent.init()
                agent.configure("metrics", "port", "-1")
                agent.start()
            _wait_until_all_verified(agents)
            for agent in agents:
                peers = agent.cli("peers").stdout.decode()
                others = [a for a in agents if a is not agent]
                for other in others:
                    assert other.node_id in peers
                    assert f"{netns.SUBNET}." in peers  # reached over the bridge, not loopback
            data = os.urandom(2 * MiB)
            (tmp_path / "in.bin").write_bytes(data)
            put = agents[0].cli("put", str(tmp_path / "in.bin"))
            capability = re.search(r"bafk\S+#\S+", put.stderr.decode())
            assert capability is not None
            agents[2].cli("get", capability.group(0), "-o", str(tmp_path / "out.bin"))
            assert (tmp_path / "out.bin").read_bytes() == data
        finally:
            for agent in agents:
                agent.kill()
