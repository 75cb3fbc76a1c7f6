"""Ports for processes started later: drawn below the kernel's ephemeral range."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from edge_agent import agent


def bindable(port: int) -> bool:
    try:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as probe:
                probe.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def test_spare_ports_are_free_below_the_ephemeral_range_and_never_repeat() -> None:
    low = int(agent.EPHEMERAL_PORTS.read_text().split()[0])
    ports = [agent.spare_port("127.0.0.1") for _ in range(100)]
    assert len(set(ports)) == 100
    assert all(agent.SPARE_PORTS_FROM <= port < low for port in ports)
    assert all(bindable(port) for port in ports)


def test_a_port_in_use_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        free = agent.free_port("127.0.0.1")
        draws = iter([busy, busy, free])
        monkeypatch.setattr(agent, "SPARE_PORTS_FROM", 1)
        monkeypatch.setattr(random, "randrange", lambda a, b: next(draws))
        monkeypatch.setattr(agent, "_spared", set())
        monkeypatch.setattr(agent, "EPHEMERAL_PORTS", Path("/nonexistent/range"))
        port = agent.spare_port("127.0.0.1")
    assert port == free


@pytest.mark.parametrize("text", ["", "garbage", "10500\t60999\n"])
def test_an_unreadable_or_narrow_range_still_gives_a_free_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text(text)
    monkeypatch.setattr(agent, "EPHEMERAL_PORTS", ranges)
    port = agent.spare_port("127.0.0.1")
    assert bindable(port)
    if text == "10500\t60999\n":  # no room below: the kernel's choice
        assert not agent.SPARE_PORTS_FROM <= port < 10500
