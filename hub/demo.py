"""``lichen demo``: a whole community on this machine, on loopback, with nothing installed.

A hub (embedded MQTT broker, SQLite) runs in this process; N agents run as their own
processes, each with its own data directory, joined to the hub and to each other; a
simulated sensor writes readings to the first agent; a file is stored on the mesh. Epochs are
short (seconds) so proofs, rewards and the ledger move while you watch. With ``--duration``
it stops by itself and prints a summary from the hub's records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiocoap
from aiocoap import Code, Message

from edge_agent import config as agent_config
from edge_agent.agent import spare_port
from edge_agent.tasks import wait_event
from hub import config as hub_config
from hub.db import MAX_PAGE
from hub.service import Hub, create_keys

EPOCH_SECONDS = 10.0
ANSWER_WITHIN = 4.0
REPAIR_AFTER = 30.0
SENSOR_PERIOD = 0.5  # seconds between simulated readings
STATUS_INTERVAL = 10.0  # seconds between agents' status and stream reports
STREAM = "demo.temperature"
READY = re.compile(r"agent (\w+) ready: CoAP on \S+ port (\d+)")


def _free_port() -> int:
    return spare_port("127.0.0.1")


def _port_or_free(port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return _free_port()
    return port


@dataclass
class _Agent:
    data_dir: Path
    port: int
    node_id: str = ""
    proc: asyncio.subprocess.Process | None = None
    log: list[str] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None


def _lichen(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_agent.cli", *args]


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a command to its end without holding up the event loop (the hub runs in it)."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled: leave no process behind
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return subprocess.CompletedProcess(
        args, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


async def _next_line(stream: asyncio.StreamReader) -> str:
    """The next line an agent wrote to its error output, or "" at its end."""
    try:
        line = await stream.readline()
    except ValueError:  # a line longer than the stream's buffer: the reader drops it
        return "(a line too long to keep)\n"
    return line.decode(errors="replace")


async def _start_agent(agent: _Agent, peers: list[str], hub_url: str, token: str) -> None:
    init = await _run(
        _lichen(
            "agent",
            "init",
            "--data-dir",
            str(agent.data_dir),
            "--port",
            str(agent.port),
            "--no-mdns",
            "--capacity-mib",
            "256",
            *peers,
        )
    )
    init.check_returncode()
    agent.node_id = init.stdout.split()[2]
    path = agent.data_dir / "agent.toml"
    config = agent_config.load(path)
    # A name per agent, so that the dashboard tells them apart (the default is the host name).
    config = agent_config.replace(config, "agent", name=f"demo-{agent.data_dir.name}")
    config = agent_config.replace(config, "coap", bind="127.0.0.1")
    config = agent_config.replace(config, "metrics", port=-1)
    # Seal readings into segments every few seconds, so the demo shows them on the mesh; the
    # dashboard shows the demo sensor's readings (off by default: the operator's choice).
    config = agent_config.replace(config, "streams", segment_seconds=10.0, share_readings=True)
    # Stream figures every few seconds rather than every minute.
    config = agent_config.replace(
        config, "hub", url=hub_url, token=token, status_interval=STATUS_INTERVAL
    )
    path.write_text(agent_config.render_default(config))
    # The agent's error output is read in this event loop, not by worker threads: a thread
    # held for each agent's whole life would leave none of the default pool (a handful on a
    # small machine) for the hub's database calls, and the demo would hang.
    agent.proc = await asyncio.create_subprocess_exec(
        *_lichen("agent", "run", "--data-dir", str(agent.data_dir)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert agent.proc.stderr is not None
    stream = agent.proc.stderr
    while True:
        line = await _next_line(stream)
        if not line:
            raise RuntimeError(f"agent in {agent.data_dir} exited:\n" + "".join(agent.log[-20:]))
        agent.log.append(line)
        if READY.search(line):
            break
    agent.drain = asyncio.get_running_loop().create_task(_drain(agent, stream))


async def _drain(agent: _Agent, stream: asyncio.StreamReader) -> None:
    """Keep reading the agent's error output to its end (a pipe left full would stall the
    agent), keeping the last lines for messages."""
    while line := await _next_line(stream):
        agent.log.append(line)
        del agent.log[:-200]


async def _verified_by(agent: _Agent, others: list[str], timeout: float = 60.0) -> None:
    """Wait until ``agent`` has logged verifying every one of ``others`` as a peer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = "".join(agent.log)
        if all(f"peer {node} verified" in seen for node in others):
            return
        await asyncio.sleep(0.2)
    _say("warning: not every agent verified its peers yet; the sample file uses fewer")


async def _sensor(port: int, counts: dict[str, int], stop: asyncio.Event) -> None:
    """A simulated temperature sensor: one SenML reading every SENSOR_PERIOD seconds."""
    context = await aiocoap.Context.create_client_context()
    try:
        step = 0
        while not stop.is_set():
            value = round(20.0 + 3.0 * math.sin(step / 20.0), 2)
            pack = json.dumps([{"n": "kitchen", "u": "Cel", "v": value, "t": time.time()}])
            request = Message(
                code=Code.POST,
                uri=f"coap://127.0.0.1:{port}/s/{STREAM}",
                payload=pack.encode(),
                content_format=110,
            )
            try:
                response = await asyncio.wait_for(context.request(request).response, 10)
                key = "accepted" if response.code == Code.CHANGED else "refused"
            except (TimeoutError, aiocoap.error.Error):
                key = "unanswered"
            counts[key] = counts.get(key, 0) + 1
            step += 1
            await wait_event(stop, SENSOR_PERIOD)
    finally:
        await context.shutdown()


async def run(agents: int, duration: float | None, data_dir: Path | None, http_port: int) -> int:
    """Run the demo; return the exit status."""
    if not 3 <= agents <= 20:
        raise ValueError("the demo runs 3 to 20 agents")
    root = data_dir or Path(tempfile.mkdtemp(prefix="lichen-demo-"))
    keep = data_dir is not None
    root.mkdir(parents=True, exist_ok=True)
    hub_dir = root / "hub"
    hub_dir.mkdir(exist_ok=True)
    identity, token = create_keys(hub_dir)
    cfg = hub_config.HubConfig()
    cfg = hub_config.replace(cfg, "mqtt", bind="127.0.0.1", port=_free_port())
    cfg = hub_config.replace(cfg, "http", bind="127.0.0.1", port=_port_or_free(http_port))
    cfg = hub_config.replace(cfg, "epochs", length=EPOCH_SECONDS, answer_within=ANSWER_WITHIN)
    cfg = hub_config.replace(cfg, "repair", after=REPAIR_AFTER)
    hub = Hub(hub_dir, cfg, identity, token)
    members = [_Agent(root / f"agent{i}", _free_port()) for i in range(agents)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    counts: dict[str, int] = {}
    sensor: asyncio.Task[None] | None = None
    try:
        await hub.start()
        _say(f"hub {identity.node_id[:8]} up: {hub.broker_url}")
        peers = [arg for m in members for arg in ("--peer", f"127.0.0.1:{m.port}")]
        await asyncio.gather(*(_start_agent(m, peers, hub.broker_url, token) for m in members))
        _say(f"{agents} agents up: " + ", ".join(m.node_id[:8] for m in members))
        await _verified_by(members[0], [m.node_id for m in members[1:]])
        sensor = loop.create_task(_sensor(members[0].port, counts, stop))
        sample = root / "hello.txt"
        sample.write_text("Hello from the Lichen demo.\n" * 1000)
        put = await _run(_lichen("put", str(sample), "--data-dir", str(members[0].data_dir)))
        if put.returncode == 0:
            _say(f"stored {sample.name} as {put.stdout.strip()}")
        else:
            _say(f"could not store the sample file: {put.stderr.strip()}")
        _say("")
        _say(f"Dashboard: http://127.0.0.1:{hub.http_port}/")
        _say(f"  JSON API: http://127.0.0.1:{hub.http_port}/api/overview")
        _say(f"  data in {root}" + ("" if keep else " (removed at the end)"))
        _say("Press Ctrl-C to stop." if duration is None else f"Stopping in {duration:.0f} s.")
        await wait_event(stop, duration)
        stop.set()
        if sensor is not None:
            await sensor
        await _summary(hub, counts, agents)
        return 0
    finally:
        stop.set()
        if sensor is not None and not sensor.done():
            sensor.cancel()
        for m in members:
            if m.proc is not None and m.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    m.proc.send_signal(signal.SIGTERM)
        for m in members:
            if m.proc is not None:
                try:
                    await asyncio.wait_for(m.proc.wait(), 15)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        m.proc.kill()
                    await m.proc.wait()
        for m in members:
            if m.drain is not None:
                m.drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await m.drain
        await hub.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


async def _summary(hub: Hub, counts: dict[str, int], agents: int) -> None:
    assert hub.db is not None
    db = hub.db
    overview = await asyncio.to_thread(db.overview)
    figures = await asyncio.to_thread(db.epoch_figures, MAX_PAGE)
    closed = [f for f in figures if f.closed_at is not None]
    passed = sum(f.items_passed for f in closed)
    failed = sum(f.items_failed for f in closed)
    paid = sum(f.reward for f in closed)
    health = ", ".join(f"{k} {v}" for k, v in overview.objects_by_health.items() if v)
    _say("")
    _say("Summary")
    _say(f"  devices enrolled:  {overview.devices} of {agents} agents")
    _say(
        f"  readings stored:   {counts.get('accepted', 0)} acknowledged "
        f"({counts.get('unanswered', 0)} unanswered, {counts.get('refused', 0)} refused)"
    )
    _say(f"  objects:           {overview.objects} ({health or 'none'})")
    _say(f"  epochs run:        {len(closed)}")
    _say(f"  proofs:            {passed} passed, {failed} failed")
    _say(f"  rewards paid:      {paid} units")


async def demo_command(args: object) -> int:
    """``lichen demo`` from parsed arguments."""
    return await run(
        getattr(args, "agents", 5),
        getattr(args, "duration", None),
        getattr(args, "keep", None),
        getattr(args, "http_port", 8080),
    )
