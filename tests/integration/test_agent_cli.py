"""The agent as an operator meets it: init, id, run, bad configs, busy ports, signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
from pathlib import Path

import aiocoap
from aiocoap import Code, Message

from tests.agents import LICHEN, AgentProc, env, free_port, mesh


def lichen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LICHEN, *args], capture_output=True, text=True, env=env(), timeout=60)


def test_init_creates_private_keys_and_a_commented_config(tmp_path: Path) -> None:
    result = lichen("agent", "init", "--data-dir", str(tmp_path / "a"), "--port", "0")
    assert result.returncode == 0, result.stderr
    for key in ("node.key", "owner.key"):
        assert stat.S_IMODE((tmp_path / "a" / key).stat().st_mode) == 0o600
    config = (tmp_path / "a" / "agent.toml").read_text()
    assert "# Most MiB of shards this agent keeps" in config and "port = 0" in config
    shown = lichen("agent", "id", "--data-dir", str(tmp_path / "a"))
    assert shown.stdout.split()[2] == result.stdout.split()[2]
    again = lichen("agent", "init", "--data-dir", str(tmp_path / "a"))
    assert again.returncode == 2 and "not overwriting" in again.stderr


def test_a_readable_key_file_is_refused(tmp_path: Path) -> None:
    lichen("agent", "init", "--data-dir", str(tmp_path))
    os.chmod(tmp_path / "node.key", 0o644)
    result = lichen("agent", "id", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "readable by others" in result.stderr


def test_bad_config_exits_with_a_clear_message(tmp_path: Path) -> None:
    lichen("agent", "init", "--data-dir", str(tmp_path))
    config = tmp_path / "agent.toml"
    config.write_text(config.read_text().replace("capacity_mib = 1024", "capacity_mib = -5"))
    result = lichen("agent", "run", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "store.capacity_mib must be at least 1, got -5" in result.stderr
    missing = lichen("agent", "run", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "lichen agent init" in missing.stderr


def test_busy_port_exits_with_a_clear_message(tmp_path: Path) -> None:
    with mesh(tmp_path, 2) as (first, second):
        first.start()
        second.configure("coap", "port", str(first.port))
        result = subprocess.run(
            [*LICHEN, "agent", "run", "--data-dir", str(second.data_dir)],
            capture_output=True,
            text=True,
            env=env(),
            timeout=60,
        )
        assert result.returncode == 2
        assert f"port {first.port} on 0.0.0.0 is in use" in result.stderr


def test_sigterm_stops_cleanly_and_commands_then_say_no_agent(tmp_path: Path) -> None:
    with mesh(tmp_path, 1) as (agent,):
        agent.start()
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(timeout=30) == 0
        agent.wait_for("stopped")
        assert not (agent.data_dir / "agent.run").exists()
        result = agent.cli("status", check=False)
        assert result.returncode == 2 and b"no agent is running" in result.stderr


async def _get(uri: str) -> Message:
    context = await aiocoap.Context.create_client_context()
    try:
        return await asyncio.wait_for(context.request(Message(code=Code.GET, uri=uri)).response, 20)
    finally:
        await context.shutdown()


def test_well_known_core_lists_the_resources(tmp_path: Path) -> None:
    with mesh(tmp_path, 1) as (agent,):
        agent.start()
        response = asyncio.run(_get(f"coap://127.0.0.1:{agent.port}/.well-known/core"))
        links = response.payload.decode()
        for path, rt in [
            ("/hello", "lichen.hello"),
            ("/shards", "lichen.shards"),
            ("/manifests", "lichen.manifest"),
            ("/peers", "lichen.peers"),
            ("/status", "lichen.status"),
            ("/s", "lichen.sensor"),
            ("/streams", "lichen.stream"),
        ]:
            assert f'<{path}>;rt="{rt}"' in links or f"<{path}>;rt={rt}" in links, links


def test_scrubber_finds_a_rotten_shard_and_stops_serving_it(tmp_path: Path) -> None:
    with mesh(tmp_path, 2) as (writer, holder):
        holder.configure("store", "scrub_interval", "1.0")
        for agent in (writer, holder):
            agent.start()
        writer.wait_for(f"peer {holder.node_id} verified")
        (tmp_path / "f").write_bytes(os.urandom(300_000))
        put = writer.cli("put", str(tmp_path / "f"), "--k", "1", "--n", "2")
        address = put.stdout.decode().strip()
        shard_files = list((holder.data_dir / "store" / "shards").glob("*.shard"))
        assert len(shard_files) == 1
        data = bytearray(shard_files[0].read_bytes())
        data[-100] ^= 0xFF  # one flipped byte in the body, as a failing SD card would do
        shard_files[0].write_bytes(bytes(data))
        holder.wait_for(re.compile(r"scrubber: shard \d+ of " + address + " is corrupt"))
        status = holder.cli("status").stdout.decode()
        assert "0 shards" in status
        # The writer's own copy still rebuilds the object.
        writer.cli("get", address, "-o", str(tmp_path / "out"))
        assert (tmp_path / "out").read_bytes() == (tmp_path / "f").read_bytes()


def test_commands_without_a_running_agent_say_so(tmp_path: Path) -> None:
    agent = AgentProc(tmp_path / "a", free_port())
    agent.init()
    for args in (
        ("peers",),
        ("status",),
        ("get", "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4", "-o", "x"),
    ):
        result = agent.cli(*args, check=False)
        assert result.returncode == 2, result.stderr
        assert b"no agent is running" in result.stderr
    bad = agent.cli("get", "not-an-address", "-o", "x", check=False)
    assert bad.returncode == 1 and b"not a Lichen content address" in bad.stderr


def test_sensor_add_enrolls_nothing_when_the_agent_config_is_broken(tmp_path: Path) -> None:
    agent = AgentProc(tmp_path / "a", free_port())
    agent.init("--no-mdns")
    config = agent.data_dir / "agent.toml"
    good = config.read_text()
    config.write_text("[coap\n")
    failed = agent.cli("sensor", "add", "probe", "--stream", "garden", check=False)
    assert failed.returncode != 0
    assert b"agent.toml" in failed.stderr
    config.write_text(good)
    # Not "already enrolled": the failed attempt left nothing behind.
    added = agent.cli("sensor", "add", "probe", "--stream", "garden")
    assert b"enrolled sensor probe for stream garden" in added.stdout
