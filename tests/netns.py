"""Linux network namespaces for multi-host tests, built with iproute2.

Everything lives inside namespaces this module creates: nothing is added to the root
namespace (veth pairs are created directly in their namespaces, the bridge has a namespace of
its own) and the test addresses (``10.213.0.0/24``) exist only inside them, with no route out.

- :func:`isolated_loopback`: one namespace with only ``lo``, multicast on, so several
  processes can speak real mDNS to each other over loopback.
- :func:`bridged_hosts`: ``n`` host namespaces, each with an ``eth0`` plugged into one bridge,
  so multicast, partitions (:meth:`BridgedHosts.cut`) and dead hosts are real.

Names carry the test process's pid, so parallel runs do not collide and namespaces left by a
killed run are removed by the next one (:func:`remove_stale`). Call :func:`require_netns`
first: it skips the test when namespaces cannot be made here (not root, no ``ip``).
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pytest

PREFIX = "lichen-t"  # every namespace this module makes is named PREFIX<pid>-<n>
SUBNET = "10.213.0"  # the bridged hosts' /24; exists only inside our namespaces
MAX_HOSTS = 200  # host addresses are SUBNET.1 .. SUBNET.MAX_HOSTS
IP_TIMEOUT = 10.0  # seconds for one ip command; they take milliseconds

_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], check=check, capture_output=True, text=True, timeout=IP_TIMEOUT
    )


@functools.cache
def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2 (the ip command)"
    name = f"{PREFIX}{os.getpid()}-check"
    try:
        result = _ip("netns", "add", name, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ip netns add failed: {exc}"
    if result.returncode != 0:
        return f"ip netns add failed: {result.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    remove_stale()
    return None


def require_netns() -> None:
    """Skip the calling test, with the reason, unless network namespaces can be made here.

    Under CI (which runs as root with iproute2) a missing capability fails the test instead:
    a skip there would hide that the multi-host tests never ran.
    """
    reason = netns_unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"network namespace tests must run under CI: {reason}")
        pytest.skip(reason)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> None:
    """Remove the namespaces of earlier test runs whose process is gone."""
    result = _ip("netns", "list", check=False)
    for line in result.stdout.splitlines():
        name = line.split(" ", 1)[0]
        pid_text = name.removeprefix(PREFIX).split("-", 1)[0]
        if name.startswith(PREFIX) and pid_text.isdecimal() and not _pid_alive(int(pid_text)):
            _delete(name)


def _delete(name: str) -> None:
    # A namespace lives on while a process is inside it, so end the processes our tests left
    # there first; only then does deleting it also destroy its interfaces.
    pids = _ip("netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        if pid.isdecimal():
            with suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", name, check=False)


@dataclass(frozen=True)
class Namespace:
    """A network namespace made for this test run."""

    name: str

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` prefixed to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *command]

    def run(self, command: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run ``command`` inside this namespace to completion (checked, text output)."""
        kwargs.setdefault("check", True)
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", IP_TIMEOUT)
        return subprocess.run(self.argv(command), text=True, **kwargs)

    def popen(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``command`` inside this namespace; the caller ends it."""
        return subprocess.Popen(self.argv(command), text=True, **kwargs)

    def ip(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``ip ARGS`` inside this namespace."""
        return _ip("-n", self.name, *args)


def _new_namespace(stack: ExitStack) -> Namespace:
    """A new namespace with ``lo`` up, deleted when ``stack`` closes."""
    name = f"{PREFIX}{os.getpid()}-{next(_counter)}"
    _ip("netns", "add", name)
    stack.callback(_delete, name)
    namespace = Namespace(name)
    namespace.ip("link", "set", "lo", "up")
    return namespace


@contextmanager
def isolated_loopback() -> Iterator[Namespace]:
    """A fresh namespace with only ``lo``, up and multicast-capable, removed on exit."""
    with ExitStack() as stack:
        namespace = _new_namespace(stack)
        namespace.ip("link", "set", "lo", "multicast", "on")
        namespace.ip("route", "add", "224.0.0.0/4", "dev", "lo")
        yield namespace


@dataclass(frozen=True)
class Host(Namespace):
    """A host namespace plugged into the test bridge through its ``eth0``."""

    address: str = ""
    port: str = ""  # the veth end on the bridge, in the bridge's namespace


@dataclass(frozen=True)
class BridgedHosts:
    """Host namespaces on one bridge (a switch in a namespace of its own)."""

    switch: Namespace
    hosts: tuple[Host, ...]

    def cut(self, index: int) -> None:
        """Unplug host ``index``: its bridge port goes down, so it neither sends nor receives."""
        self.switch.ip("link", "set", self.hosts[index].port, "down")

    def restore(self, index: int) -> None:
        """Plug host ``index`` back in."""
        self.switch.ip("link", "set", self.hosts[index].port, "up")


@contextmanager
def bridged_hosts(n: int) -> Iterator[BridgedHosts]:
    """``n`` hosts at ``10.213.0.1`` .. ``10.213.0.n`` on one bridge; all removed on exit."""
    if not 1 <= n <= MAX_HOSTS:
        raise ValueError(f"bridged_hosts makes 1 to {MAX_HOSTS} hosts, not {n}")
    with ExitStack() as stack:
        switch = _new_namespace(stack)
        # Snooping off: with no IGMP querier on this LAN the bridge must flood multicast.
        # STP off with no forward delay: a port forwards as soon as it is up.
        switch.ip(
            "link", "add", "br0", "type", "bridge",
            "mcast_snooping", "0", "stp_state", "0", "forward_delay", "0",
        )  # fmt: skip
        switch.ip("link", "set", "br0", "up")
        hosts = []
        for index in range(n):
            namespace = _new_namespace(stack)
            host = Host(namespace.name, address=f"{SUBNET}.{index + 1}", port=f"p{index}")
            # Both ends are born in their namespaces: nothing ever appears in the root one.
            switch.ip(
                "link", "add", host.port, "type", "veth", "peer", "name", "eth0",
                "netns", host.name,
            )  # fmt: skip
            switch.ip("link", "set", host.port, "master", "br0", "up")
            host.ip("addr", "add", f"{host.address}/24", "dev", "eth0")
            host.ip("link", "set", "eth0", "multicast", "on", "up")
            host.ip("route", "add", "224.0.0.0/4", "dev", "eth0")
            hosts.append(host)
        yield BridgedHosts(switch, tuple(hosts))
