"""The namespace helpers themselves: what they build, that they cut and restore, and clean up."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.netns import Host, Namespace, bridged_hosts, isolated_loopback, require_netns

ECHO_PORT = 9999  # inside the test namespaces only
REPLY_TIMEOUT = 5.0  # seconds: a datagram across a bridge takes microseconds

# Answers one datagram per line of stdin it is given, so the test controls how many.
ECHO_SERVER = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], {ECHO_PORT}))
print("ready", flush=True)
for _ in sys.stdin:
    data, peer = s.recvfrom(64)
    s.sendto(data, peer)
"""
ECHO_CLIENT = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout({REPLY_TIMEOUT})
s.sendto(b"ping", (sys.argv[1], {ECHO_PORT}))
assert s.recvfrom(64)[0] == b"ping"
"""


@pytest.fixture(autouse=True)
def _netns() -> None:
    require_netns()


def namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split(" ", 1)[0] for line in listing.stdout.splitlines()}


def links(namespace: Namespace | None = None) -> list[dict[str, Any]]:
    where = ["-n", namespace.name] if namespace is not None else []
    out = subprocess.run(["ip", *where, "-j", "link"], capture_output=True, text=True, check=True)
    result: list[dict[str, Any]] = json.loads(out.stdout)
    return result


def test_isolated_loopback_has_only_a_multicast_loopback() -> None:
    before = namespaces()
    with isolated_loopback() as ns:
        assert ns.name in namespaces()
        (lo,) = links(ns)
        assert lo["ifname"] == "lo"
        assert {"UP", "MULTICAST"} <= set(lo["flags"])
        assert "224.0.0.0/4 dev lo" in ns.run(["ip", "route"]).stdout
    assert namespaces() == before


def echo(client: Host, server: Host) -> None:
    with server.popen(
        [sys.executable, "-c", ECHO_SERVER, server.address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert proc.stdout.readline() == "ready\n"
            proc.stdin.write("one\n")
            proc.stdin.flush()
            client.run([sys.executable, "-c", ECHO_CLIENT, server.address])
        finally:
            proc.kill()


def test_bridged_hosts_talk_through_the_bridge_and_leave_the_root_namespace_alone() -> None:
    root_links = {link["ifname"] for link in links()}
    before = namespaces()
    with bridged_hosts(2) as lan:
        a, b = lan.hosts
        assert {link["ifname"] for link in links()} == root_links
        assert {link["ifname"] for link in links(lan.switch)} == {"lo", "br0", "p0", "p1"}
        assert {link["ifname"] for link in links(a)} == {"lo", "eth0"}
        assert f"{a.address}/24" in a.run(["ip", "-br", "addr", "show", "eth0"]).stdout
        echo(a, b)

        lan.cut(1)
        (eth0,) = (link for link in links(b) if link["ifname"] == "eth0")
        assert "LOWER_UP" not in eth0["flags"]
        lan.restore(1)
        echo(a, b)
    assert namespaces() == before
    assert {link["ifname"] for link in links()} == root_links
