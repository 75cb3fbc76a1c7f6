"""The sensor firmware against real agents on loopback, under CPython and MicroPython.

- The same firmware run under both runtimes, each against its own agent where the sensor
  is enrolled with the same key, sends the very same datagrams, byte for byte, and both
  agents store the same readings.
- Under MicroPython, 1,000 readings while the agent is killed (SIGKILL) and restarted in
  the middle: the firmware buffers what no agent takes and sends it later, oldest first;
  ``lichen stream read`` returns every acknowledged reading once, in order, and the number
  of readings buffered equals the number sent from the buffer.
- The board's ``main.py`` runs on the very ``lichen.json`` that ``lichen sensor add`` writes.
- The firmware finds an agent by mDNS: one query answered by the agent's python-zeroconf,
  inside an isolated network namespace.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from lichen_sensor import coap as fw_coap

from tests import netns
from tests.agents import AgentProc, mesh
from tests.firmware.harness import START_TIME, SensorRun, command, sensor_run

pytestmark = pytest.mark.slow

STREAM = "fw.test"
SENSOR = "board-1"


def enroll(agent: AgentProc, tmp_path: Path, key_file: Path | None = None) -> bytes:
    """Enroll SENSOR with ``agent``; its key (the one in ``key_file`` when given)."""
    board = tmp_path / f"{agent.data_dir.name}.json"
    extra = ["--key-file", str(key_file)] if key_file else []
    agent.cli("sensor", "add", SENSOR, "--stream", STREAM, "-o", str(board), *extra)
    config = json.loads(board.read_text())
    assert config["kid"] == SENSOR and config["stream"] == STREAM
    return bytes.fromhex(config["key"])


def rows(agent: AgentProc) -> list[dict[str, object]]:
    out = agent.cli("stream", "read", STREAM, "--format", "json").stdout
    found: list[dict[str, object]] = json.loads(out)
    return found


def requests(run: SensorRun) -> list[bytes]:
    """The POSTs a run sent, each once (a retransmission repeats the same bytes)."""
    posts: list[bytes] = []
    for datagram in run.datagrams():
        if fw_coap.decode(datagram)[1] == fw_coap.POST and (not posts or posts[-1] != datagram):
            posts.append(datagram)
    return posts


def test_cpython_and_micropython_send_identical_bytes(tmp_path: Path) -> None:
    count = 60
    with mesh(tmp_path, 2, extra=[]) as agents:
        for agent in agents:
            agent.start()
        key = enroll(agents[0], tmp_path)
        (tmp_path / "key.hex").write_text(key.hex())
        assert enroll(agents[1], tmp_path, tmp_path / "key.hex") == key
        runs = [
            sensor_run(
                runtime,
                tmp_path / runtime,
                port=agent.port,
                key=key,
                kid=SENSOR,
                stream=STREAM,
                count=count,
            )
            for runtime, agent in zip(("cpython", "micropython"), agents, strict=True)
        ]
        for run in runs:
            run.start()
        stats = [run.finish() for run in runs]
        for s in stats:
            assert s["sent"] == count and s["rejected"] == 0 and s["pending"] == 0, stats
        cpython, micropython = (requests(run) for run in runs)
        assert len(cpython) == count
        assert cpython == micropython  # CoAP header, options, COSE_Mac0, SenML: every byte
        for run in runs:
            assert run.acked == list(range(count))
        for agent in agents:
            got = rows(agent)
            assert [r["value"] for r in got] == [float(i) for i in range(count)]
            assert [r["time"] for r in got] == [float(START_TIME + i) for i in range(count)]
            assert {r["name"] for r in got} == {f"{SENSOR}:count"}  # provenance


def test_1000_readings_through_an_agent_killed_and_restarted(tmp_path: Path) -> None:
    count = 1000
    with mesh(tmp_path, 1) as (agent,):
        agent.configure("streams", "segment_readings", "100")
        agent.configure("streams", "segment_seconds", "1.0")
        agent.start()
        key = enroll(agent, tmp_path)
        run = sensor_run(
            "micropython",
            tmp_path / "board",
            port=agent.port,
            key=key,
            kid=SENSOR,
            stream=STREAM,
            count=count,
            ack_timeout_ms=150,
            max_retransmit=2,
            min_backoff_ms=50,
            max_backoff_ms=300,
            interval_ms=2,
        )
        run.start()
        try:
            run.wait_acked(300)
            agent.kill()
            run.wait_buffered(100)  # the agent is down: readings queue on "flash"
            agent.start()
            stats = run.finish()
        finally:
            run.kill()
        assert stats["taken"] == count and stats["rejected"] == 0, stats
        assert stats["dropped"] == 0 and stats["pending"] == 0, stats
        assert stats["buffered"] >= 100, stats
        assert stats["sent_from_buffer"] == stats["buffered"], stats
        assert stats["sent"] + stats["sent_from_buffer"] == count, stats
        assert sorted(run.acked) == list(range(count))
        assert run.acked == sorted(run.acked)  # acknowledged oldest first
        values = [int(r["value"]) for r in rows(agent)]  # type: ignore[call-overload]
        assert values == list(range(count))  # every acknowledged reading, once, in order
        assert agent.count(r"sealed segment") >= 1


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_firmware_finds_an_agent_by_mdns(tmp_path: Path, runtime: str) -> None:
    netns.require_netns()
    with (
        netns.isolated_loopback() as namespace,
        mesh(tmp_path, 1, namespace=namespace, mdns=True) as (agent,),
    ):
        agent.start()
        argv, env = command(runtime, "discover", "5000")
        found = subprocess.run(
            namespace.argv(argv), env=env, capture_output=True, text=True, timeout=60
        )
        assert found.returncode == 0, found.stdout + found.stderr
        assert f"agent 127.0.0.1 {agent.port}" in found.stdout.splitlines(), found.stdout


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_board_main_runs_on_the_config_sensor_add_prints(tmp_path: Path, runtime: str) -> None:
    with mesh(tmp_path, 1) as (agent,):
        agent.start()
        board = tmp_path / "board"
        board.mkdir()
        agent.cli("sensor", "add", "board-7", "--stream", "porch", "--agent",
                  f"127.0.0.1:{agent.port}", "-o", str(board / "lichen.json"))  # fmt: skip
        argv, env = command(runtime, "main", "3")
        before = time.time()
        result = subprocess.run(
            argv, env=env, cwd=board, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "lichen: agent at 127.0.0.1 port" in result.stdout
        stats = json.loads(result.stdout.split("stats ", 1)[1])
        assert stats["sent"] == 3 and stats["rejected"] == 0, stats
        assert (board / "lichen_state" / "counter").exists()  # the counter is on "flash"
        out = agent.cli("stream", "read", "porch", "--format", "json").stdout
        got = json.loads(out)
        assert [r["name"] for r in got] == ["board-7:temperature"] * 3
        assert [r["value"] for r in got] == [20.0, 20.25, 20.5]  # the simulated driver
        assert all(before - 2 <= r["time"] <= time.time() + 2 for r in got)  # the real clock
