"""Real agent processes for integration tests: start, wait for, talk to, kill and restart.

Each agent is ``lichen agent run`` in its own data directory, optionally inside a network
namespace (:mod:`tests.netns`) so mDNS is real and isolated. Tests wait on what the agent
says on stderr (a log line per event), never on guessed sleeps: :meth:`AgentProc.wait_for`
returns as soon as a matching line appears, and fails with the agent's log if it never does.
"""

from __future__ import annotations

import asyncio
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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiocoap
from aiocoap import Code, Message

from edge_agent.agent import spare_port
from tests.netns import Namespace

LICHEN = [sys.executable, "-m", "edge_agent.cli"]
READY = re.compile(r"agent (\w+) ready: CoAP on \S+ port (\d+)")
WAIT = 30.0  # seconds: a last resort only, every wait ends on an event


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1, for a process started after this
    returns (see :func:`edge_agent.agent.spare_port`)."""
    return spare_port("127.0.0.1")


def env() -> dict[str, str]:
    """The environment for a ``lichen`` child: this tree importable, output unbuffered."""
    variables = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    variables["PYTHONPATH"] = root + os.pathsep + variables.get("PYTHONPATH", "")
    variables["PYTHONUNBUFFERED"] = "1"
    return variables


class LogWatcher:
    """What one process writes to stderr, line by line: wait for a line, count lines.

    A thread moves lines from the pipe to a queue; waiting takes them off it into
    :attr:`lines`, so a wait ends the moment its line is written.
    """

    def __init__(self, proc: subprocess.Popen[str], name: str) -> None:
        assert proc.stderr is not None
        self.name = name
        self.lines: list[str] = []
        self.ended = False  # the process closed its stderr (it exited)
        # Each process has its own queue: the reader of a killed process may still be draining
        # its pipe, and must not end the next process's log.
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(proc.stderr, self._queue), daemon=True).start()

    @staticmethod
    def _pump(stderr: IO[str], lines: queue.Queue[str | None]) -> None:
        for line in stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def _take(self, timeout: float) -> bool:
        """Move one line into :attr:`lines`, waiting up to ``timeout`` seconds for it; False
        when none came or the log has ended."""
        if self.ended:
            return False
        try:
            line = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return False
        if line is None:
            self.ended = True
            return False
        self.lines.append(line)
        return True

    def mark(self) -> int:
        """A place in the log: waits with ``since=`` look only at lines after it."""
        while self._take(0):
            pass
        return len(self.lines)

    def wait(self, pattern: str | re.Pattern[str], timeout: float = WAIT, *, since: int = 0) -> int:
        """The index in :attr:`lines` of the first line from ``since`` on matching ``pattern``;
        fail with the log if none comes before the process exits or ``timeout`` passes."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        at = since
        while True:
            while at < len(self.lines):
                if regex.search(self.lines[at]):
                    return at
                at += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._take(remaining):
                raise AssertionError(
                    f"{self.name} never logged {regex.pattern!r}"
                    f" ({'exited' if self.ended else 'timed out'}); its log:\n"
                    + "\n".join(self.lines[-40:])
                )

    def wait_for(
        self, pattern: str | re.Pattern[str], timeout: float = WAIT, *, since: int = 0
    ) -> re.Match[str]:
        """The match of the first line from ``since`` on matching ``pattern`` (see :meth:`wait`)."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        match = regex.search(self.lines[self.wait(regex, timeout, since=since)])
        assert match is not None
        return match

    def count(self, pattern: str) -> int:
        """How many lines so far match ``pattern``."""
        self.mark()
        return sum(1 for line in self.lines if re.search(pattern, line))


@dataclass
class AgentProc:
    """One agent: its data directory, its process (while running) and its log."""

    data_dir: Path
    port: int
    namespace: Namespace | None = None
    node_id: str = ""
    proc: subprocess.Popen[str] | None = None
    log: LogWatcher | None = None  # the running (or last) process's stderr
    verbose: bool = False  # run with ``lichen -v``: debug lines too

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` as run in this agent's namespace (if any)."""
        return self.namespace.argv(command) if self.namespace else list(command)

    def _init(self, *options: str) -> str:
        """``lichen <role> init --data-dir <this data dir> OPTIONS`` in this process's namespace
        (if any); remember the new node id and return what the command printed."""
        result = subprocess.run(
            self.argv([*LICHEN, self.role, "init", "--data-dir", str(self.data_dir), *options]),
            capture_output=True,
            text=True,
            env=env(),
            timeout=WAIT,
            check=True,
        )
        self.node_id = result.stdout.split()[2]
        return result.stdout

    def init(self, *extra: str) -> None:
        """``lichen agent init`` with a fixed port, no metrics server, and ``extra`` options."""
        self._init("--port", str(self.port), *extra)
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
        verbose = ["-v"] if self.verbose else []
        self.proc = subprocess.Popen(
            self.argv([*LICHEN, *verbose, self.role, "run", "--data-dir", str(self.data_dir)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        self.log = LogWatcher(self.proc, f"{self.role} {self.node_id[:8]}")
        self.wait_for(self.ready)

    @property
    def lines(self) -> list[str]:
        """The log of the running (or last) process so far."""
        return self.log.lines if self.log is not None else []

    def _log(self) -> LogWatcher:
        assert self.log is not None, f"{self.role} never started"
        return self.log

    def mark(self) -> int:
        """A place in the log: :meth:`wait_for` with ``since=`` looks only at lines after it."""
        return self._log().mark()

    def wait_for(
        self, pattern: str | re.Pattern[str], timeout: float = WAIT, *, since: int = 0
    ) -> re.Match[str]:
        """The first log line from ``since`` on matching ``pattern``; fail with the log if none."""
        return self._log().wait_for(pattern, timeout, since=since)

    def count(self, pattern: str) -> int:
        """How many log lines so far match ``pattern``."""
        return self._log().count(pattern)

    def cli(
        self, *args: str, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``lichen ARGS --data-dir <this agent>`` in the agent's namespace."""
        result = subprocess.run(
            self.argv([*LICHEN, *args, "--data-dir", str(self.data_dir)]),
            capture_output=True,
            env=env(),
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

    def init(self, *extra: str) -> None:
        """``lichen hub init`` with a free HTTP port and ``extra`` options, on loopback only.

        Unless ``extra`` names a ``--broker``, the embedded broker gets a free port too (its
        default, 1883, may be taken). Both the dashboard and the embedded broker are bound to
        127.0.0.1 rather than the default 0.0.0.0: tests listen on loopback only.
        """
        self.http_port = free_port()
        options = ["--http-port", str(self.http_port)]
        if not any(arg == "--broker" or arg.startswith("--broker=") for arg in extra):
            options += ["--mqtt-port", str(free_port())]
        self._init(*options, *extra)
        self.configure("http", "bind", '"127.0.0.1"')
        self.configure("mqtt", "bind", '"127.0.0.1"')

    def api(self, path: str) -> Any:
        """GET ``path`` from the hub's JSON API."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            return json.loads(r.read())


async def post_packs(port: int, stream: str, packs: Iterable[list[dict[str, Any]]]) -> int:
    """POST each SenML+JSON pack to ``stream`` on the agent at 127.0.0.1:``port``, one after
    another, as a sensor would; how many were acknowledged (2.04 Changed)."""
    context = await aiocoap.Context.create_client_context()
    acknowledged = 0
    try:
        for pack in packs:
            request = Message(
                code=Code.POST,
                uri=f"coap://127.0.0.1:{port}/s/{stream}",
                payload=json.dumps(pack).encode(),
                content_format=110,  # SenML+JSON, RFC 8428
            )
            response = await asyncio.wait_for(context.request(request).response, WAIT)
            acknowledged += response.code == Code.CHANGED
    finally:
        await context.shutdown()
    return acknowledged
