"""mDNS discovery between real processes, over real multicast, inside network namespaces.

Each probe (``discovery_probe.py``) runs in its own process and reports events as JSON lines;
the tests wait for the events they expect and fail after a generous deadline only if those
never come.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from edge_agent.discovery import (
    DROP_FORGED,
    DROP_MALFORMED,
    DROP_OVER_LIMIT,
    DROP_UNSUPPORTED,
    build_txt,
    encode_public_key,
)
from tests.integration.discovery_probe import identity_for
from tests.netns import Namespace, bridged_hosts, isolated_loopback, require_netns

pytestmark = pytest.mark.slow

DEADLINE = 20.0  # seconds: a last resort; discovery on loopback takes about one second
STOP_GRACE = 5.0  # seconds a probe gets to send its goodbyes before it is killed
PROBE = Path(__file__).with_name("discovery_probe.py")
ROOT = Path(__file__).resolve().parents[2]

Event = dict[str, Any]


@pytest.fixture(autouse=True)
def _netns() -> None:
    require_netns()


class Probes:
    """Probe processes in namespaces, their events gathered in one queue; all ended on exit."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._events: queue.Queue[tuple[str, Event | None]] = queue.Queue()
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._stopped: set[str] = set()
        self.seen: dict[str, list[Event]] = {}

    def __enter__(self) -> Probes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdin is not None:
                proc.stdin.close()

    def start(self, tag: str, namespace: Namespace, *args: str) -> None:
        """Run ``discovery_probe.py ARGS`` in ``namespace``; its events are filed under ``tag``."""
        self.seen[tag] = []
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # The probe keeps its own copy of the stderr file; ours closes once it has started.
        with self._stderr_path(tag).open("w") as stderr:
            proc = namespace.popen(
                [sys.executable, str(PROBE), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        self._procs[tag] = proc
        threading.Thread(target=self._read, args=(tag, proc), daemon=True).start()

    def _read(self, tag: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._events.put((tag, json.loads(line)))
        self._events.put((tag, None))

    def stop(self, tag: str) -> None:
        """Ask probe ``tag`` to stop (it withdraws its advert) and wait for it to exit."""
        proc = self._procs[tag]
        self._stopped.add(tag)
        proc.terminate()
        assert proc.wait(STOP_GRACE) == 0, self.stderr(tag)

    def stderr(self, tag: str) -> str:
        """What probe ``tag`` wrote to stderr so far, for failure messages."""
        return self._stderr_path(tag).read_text()

    def _stderr_path(self, tag: str) -> Path:
        return self._logs / f"probe-{tag}.stderr"

    def wait_until(self, done: Callable[[], bool], what: str) -> None:
        """Gather events until ``done()`` holds; fail if a probe dies or the deadline passes."""
        deadline = time.monotonic() + DEADLINE
        while not done():
            remaining = deadline - time.monotonic()
            try:
                tag, event = self._events.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                pytest.fail(f"timed out waiting for {what}; seen: {self.seen}")
            if event is None:
                if tag in self._stopped:
                    continue
                pytest.fail(f"probe {tag} exited while waiting for {what}:\n{self.stderr(tag)}")
            self.seen[tag].append(event)

    def adverts(self, tag: str) -> dict[str, Event]:
        """The latest advert probe ``tag`` reported for each node id."""
        return {e["node_id"]: e for e in self.seen[tag] if e["event"] == "advert"}

    def events(self, tag: str, kind: str) -> list[Event]:
        """The events of one kind probe ``tag`` reported."""
        return [e for e in self.seen[tag] if e["event"] == kind]


@pytest.fixture
def probes(tmp_path: Path) -> Iterator[Probes]:
    with Probes(tmp_path) as running:
        yield running


def probe_args(seed: int) -> list[str]:
    return ["probe", "--seed", str(seed), "--coap", str(5700 + seed), "--tcp", str(5800 + seed)]


def expected_advert(seed: int, address: str) -> Event:
    public = identity_for(seed).public
    return {
        "event": "advert",
        "node_id": public.node_id,
        "public_key": encode_public_key(public.public_key),
        "addresses": [address],
        "coap": 5700 + seed,
        "tcp": 5800 + seed,
    }


def test_three_probes_on_one_loopback_find_each_other(probes: Probes) -> None:
    with isolated_loopback() as ns:
        seeds = range(3)
        for seed in seeds:
            probes.start(str(seed), ns, *probe_args(seed), "--interface", "127.0.0.1")
        want = {
            str(seed): {
                identity_for(other).node_id: expected_advert(other, "127.0.0.1")
                for other in seeds
                if other != seed
            }
            for seed in seeds
        }
        probes.wait_until(
            lambda: all(probes.adverts(tag).keys() >= want[tag].keys() for tag in want),
            "every probe to see the other two",
        )
        for tag in want:
            assert probes.adverts(tag) == want[tag]  # right keys and ports; never itself
            assert probes.events(tag, "drop") == []


def test_probes_on_bridged_hosts_find_each_other_and_see_goodbyes(probes: Probes) -> None:
    with bridged_hosts(3) as lan:
        for seed, host in enumerate(lan.hosts):
            probes.start(str(seed), host, *probe_args(seed))  # all interfaces: eth0 and lo
        want = {
            str(seed): {
                identity_for(other).node_id: expected_advert(other, lan.hosts[other].address)
                for other in range(3)
                if other != seed
            }
            for seed in range(3)
        }
        probes.wait_until(
            lambda: all(probes.adverts(tag).keys() >= want[tag].keys() for tag in want),
            "every host to see the other two",
        )
        for tag in want:
            assert probes.adverts(tag) == want[tag]  # the bridge address, not loopback

        probes.stop("2")
        gone = identity_for(2).node_id
        probes.wait_until(
            lambda: all(
                {"event": "gone", "node_id": gone} in probes.events(tag, "gone")
                for tag in ("0", "1")
            ),
            "the stopped host's goodbye",
        )


def test_forged_and_malformed_adverts_are_dropped_and_counted(probes: Probes) -> None:
    def txt(seed: int, **changes: str) -> dict[str, str]:
        public_key = identity_for(seed).public.public_key
        record = {k.decode(): v.decode() for k, v in build_txt(public_key, 6000, 6001).items()}
        return {**record, **changes}

    records = {
        "lichen-valid": txt(4),
        "lichen-forged": txt(5, id=identity_for(6).node_id),  # someone else's id, our key
        "lichen-badport": txt(7, coap="http"),
        "lichen-future": txt(8, txtvers="2"),
    }
    with isolated_loopback() as ns:
        probes.start("probe", ns, *probe_args(0), "--interface", "127.0.0.1")
        probes.start(
            "publisher",
            ns,
            "publish",
            "--records",
            json.dumps(records),
            "--address",
            "127.0.0.1",
            "--interface",
            "127.0.0.1",
        )
        suffix = "._lichen._udp.local."
        want_drops = {
            ("forged", "lichen-forged" + suffix): DROP_FORGED,
            ("malformed", "lichen-badport" + suffix): DROP_MALFORMED,
            ("unsupported", "lichen-future" + suffix): DROP_UNSUPPORTED,
        }

        def drops() -> set[tuple[str, str]]:
            return {(e["reason"], e["name"]) for e in probes.events("probe", "drop")}

        probes.wait_until(
            lambda: (
                drops() >= want_drops.keys() and identity_for(4).node_id in probes.adverts("probe")
            ),
            "the bad adverts to be dropped and the good one accepted",
        )
        assert drops() == want_drops.keys()
        advert = probes.adverts("probe")
        assert set(advert) == {identity_for(4).node_id}
        assert advert[identity_for(4).node_id]["coap"] == 6000
        assert "dropped advert 'lichen-forged" in probes.stderr("probe")


def test_adverts_beyond_the_bound_are_dropped_and_counted(probes: Probes) -> None:
    with isolated_loopback() as ns:
        probes.start("small", ns, *probe_args(0), "--interface", "127.0.0.1", "--max-adverts", "1")
        for seed in (1, 2):
            probes.start(str(seed), ns, *probe_args(seed), "--interface", "127.0.0.1")
        probes.wait_until(
            lambda: (
                len(probes.adverts("small")) == 1
                and any(e["reason"] == DROP_OVER_LIMIT for e in probes.events("small", "drop"))
            ),
            "one advert kept and one dropped over the bound",
        )
        assert set(probes.adverts("small")) < {identity_for(1).node_id, identity_for(2).node_id}
