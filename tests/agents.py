"""Real agent processes for integration tests: start, wait for, talk to, kill and restart.

Each agent is ``lichen agent run`` in its own data directory, optionally inside a network
namespace (:mod:`tests.netns`) so mDNS is real and isolated. Tests wait on what the agent
says on stderr (a log line per event), never on guessed sleeps: :meth:`AgentProc.wait_for`
returns as soon as a matching line appears, and fails with the agent's log if it never does.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.agent import free_port as agent_free_port
from tests.netns import Namespace

LICHEN = [sys.executable, "-m", "edge_agent.cli"]
READY = re.compile(r"agent (\w+) ready: CoAP on \S+ port (\d+)")
WAIT = 30.0  # seconds: a last resort only, every wait ends on an event


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 right now."""
    return agent_free_port("127.0.0.1")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class AgentProc:
    """One agent: its data directory, its process (while running) and its log."""

    data_dir: Path
    port: int
    namespace: Namespace | None = None
    node_id: str = ""
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` as run in this agent's namespace (if any)."""
        return self.namespace.argv(command) if self.namespace else list(command)

    def init(self, *extra: str) -> None:
        """``lichen agent init`` with a fixed port, no metrics server, and ``extra`` options."""
        result = subprocess.run(
            self.argv(
                [
                    *LICHEN,
                    "agent",
                    "init",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.port),
                    *extra,
                ]
            ),
            capture_output=True,
            text=True,
            env=_env(),
            timeout=WAIT,
            check=True,
        )
        self.node_id = result.stdout.split()[2]
        config = self.data_dir / "agent.toml"
        text = config.read_text().replace("port = 9464", "port = -1")
        config.write_text(text)

    def configure(self, section: str, key: str, value: str) -> None:
        """Set ``key = value`` (TOML syntax) in ``[section]`` of the agent's (or hub's) config."""
        config = self.data_dir / f"{self.role}.toml"
        text = config.read_text()
        head = f"[{section}]\n"
        start = text.index(head) + len(head)
        end = text.find("\n[", start)
        body = text[start : end if end != -1 else len(text)]
        body = re.sub(rf"^{key} = .*$", f"{key} = {value}", body, flags=re.MULTILINE)
        config.write_text(text[:start] + body + (text[end:] if end != -1 else ""))

    role = "agent"  # the lichen subcommand: `lichen agent run` or `lichen hub run`
    ready = READY

    def start(self) -> None:
        """Run the agent and wait until it says it is ready."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.lines = []
        self._queue = queue.Queue()
        self.proc = subprocess.Popen(
            self.argv([*LICHEN, self.role, "run", "--data-dir", str(self.data_dir)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        # Each process gets its own queue: the reader of a killed process may still be
        # draining its pipe, and must not end the new process's log.
        threading.Thread(target=self._pump, args=(self.proc, self._queue), daemon=True).start()
        self.wait_for(self.ready)

    @staticmethod
    def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def mark(self) -> int:
        """A place in the log: :meth:`wait_for` with ``since=`` looks only at lines after it."""
        self.count("$^")  # drains what is already queued into self.lines
        return len(self.lines)

    def wait_for(
        self, pattern: str | re.Pattern[str], timeout: float = WAIT, *, since: int = 0
    ) -> re.Match[str]:
        """The first log line from ``since`` on matching ``pattern``; fail with the log if none."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        for old in self.lines[since:]:
            match = regex.search(old)
            if match:
                return match
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            line: str | None
            try:
                line = self._queue.get(timeout=max(0.0, remaining))
            except queue.Empty:
                line = None
                remaining = 0
            if line is None:
                raise AssertionError(
                    f"agent {self.node_id[:8]} never logged {regex.pattern!r}"
                    f" ({'exited' if remaining > 0 else 'timed out'}); its log:\n"
                    + "\n".join(self.lines[-40:])
                )
            self.lines.append(line)
            match = regex.search(line)
            if match:
                return match

    def count(self, pattern: str) -> int:
        """How many log lines so far match ``pattern`` (drains what is already queued)."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._queue.put(None)
                break
            self.lines.append(line)
        return sum(1 for line in self.lines if re.search(pattern, line))

    def cli(
        self, *args: str, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``lichen ARGS --data-dir <this agent>`` in the agent's namespace."""
        result = subprocess.run(
            self.argv([*LICHEN, *args, "--data-dir", str(self.data_dir)]),
            capture_output=True,
            env=_env(),
            timeout=120,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"lichen {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace')}"
            )
        return result

    def kill(self) -> None:
        """SIGKILL: the agent gets no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=WAIT)

    def stop(self) -> int:
        """SIGTERM and wait; return the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=WAIT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@contextmanager
def mesh(
    base: Path,
    count: int,
    *,
    namespace: Namespace | None = None,
    mdns: bool = False,
    extra: Sequence[str] = (),
) -> Iterator[list[AgentProc]]:
    """``count`` initialised agents (not started); all killed on exit.

    Without mDNS each agent is given every other as a static peer.
    """
    agents = [AgentProc(base / f"agent{i}", free_port(), namespace) for i in range(count)]
    peers: list[str] = []
    if not mdns:
        for agent in agents:
            peers += ["--peer", f"127.0.0.1:{agent.port}"]
    try:
        for agent in agents:
            agent.init(*(["--no-mdns"] if not mdns else []), *peers, *extra)
        yield agents
    finally:
        for agent in agents:
            agent.kill()


@dataclass
class HubProc(AgentProc):
    """``lichen hub run`` in its own data directory, with the same waiting and killing."""

    role = "hub"
    ready = re.compile(r"hub (\w+) ready: API on http://\S+:(\d+),")
    http_port: int = 0

    def init_hub(self, *extra: str) -> None:
        """``lichen hub init`` with a free HTTP port and ``extra`` options."""
        self.http_port = free_port()
        result = subprocess.run(
            [
                *LICHEN,
                "hub",
                "init",
                "--data-dir",
                str(self.data_dir),
                "--http-port",
                str(self.http_port),
                *extra,
            ],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=WAIT,
            check=True,
        )
        self.node_id = result.stdout.split()[2]

    def api(self, path: str) -> Any:
        """GET ``path`` from the hub's JSON API."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            return json.loads(r.read())
