"""What each ``lichen`` subcommand does; :mod:`edge_agent.cli` parses and dispatches."""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import datetime
import io
import json
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from edge_agent import config as config_mod
from edge_agent import datapath, fsutil, keys, tomlconfig
from edge_agent.agent import RUNTIME_FILE, Agent
from edge_agent.coap_client import AgentClient
from lichen import cid, placement, seal, senml, stream
from lichen.errors import ConfigError, IntegrityError, MalformedMessage
from lichen.identity import Identity, PublicIdentity
from lichen.messages import PeerInfo
from lichen.seal import ReadCapability

MAX_PUT_BYTES = 4 * 1024 * 1024 * 1024  # one object; larger files are better split by the user


def _config_path(data_dir: Path) -> Path:
    return data_dir / config_mod.CONFIG_FILE


def agent_init(args: argparse.Namespace) -> int:
    """``lichen agent init``: identity, keys and a commented config."""
    data_dir: Path = args.data_dir
    if keys.exists(data_dir):
        raise ConfigError(f"{data_dir} already holds an agent (node.key); not overwriting it")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cfg = config_mod.AgentConfig()
    if args.port is not None:
        cfg = config_mod.replace(cfg, "coap", port=args.port)
    if args.capacity_mib is not None:
        cfg = config_mod.replace(cfg, "store", capacity_mib=args.capacity_mib)
    if args.domain is not None:
        cfg = config_mod.replace(cfg, "agent", domain=args.domain)
    if args.no_mdns or args.peer:
        cfg = config_mod.replace(
            cfg, "discovery", mdns=not args.no_mdns, static_peers=tuple(args.peer)
        )
    text = config_mod.render_default(cfg)
    config_mod.from_dict(tomllib.loads(text))  # refuse bad options before writing
    identity = keys.create(data_dir)
    fsutil.atomic_write(_config_path(data_dir), text.encode(), mode=0o644)
    print(f"created agent {identity.node_id} in {data_dir}")
    print(
        f"config: {_config_path(data_dir)} (edit it, then: lichen agent run --data-dir {data_dir})"
    )
    return 0


def agent_id(args: argparse.Namespace) -> int:
    """``lichen agent id``: the node id and public key."""
    identity = keys.load_identity(args.data_dir)
    key = base64.urlsafe_b64encode(identity.public.public_key).rstrip(b"=").decode()
    print(f"node id:    {identity.node_id}")
    print(f"public key: {key}")
    return 0


def agent_join(args: argparse.Namespace) -> int:
    """``lichen agent join URL TOKEN``: set [hub] url and token in agent.toml (atomically)."""
    from edge_agent import hublink
    from edge_agent.mqtt import parse_broker_url

    data_dir: Path = args.data_dir
    broker = parse_broker_url(args.url)
    token = args.token.strip()
    path = _config_path(data_dir)
    text = tomlconfig.read_text(path, "lichen agent init")
    before = config_mod.parse(text, path)
    identity = keys.load_identity(data_dir)
    # The file now holds a secret (the token): owner only.
    fsutil.atomic_write(path, config_mod.with_hub(text, args.url, token).encode(), mode=0o600)
    print(f"agent {identity.node_id} will join the hub at {broker.url}")
    pinned = data_dir / hublink.HUB_KEY_FILE
    if (before.hub.url, before.hub.token) != (args.url, token) and pinned.exists():
        pinned.unlink()
        print(f"forgot the key of the hub joined before ({hublink.HUB_KEY_FILE})")
    if (data_dir / RUNTIME_FILE).exists():
        print("the agent is running: restart it to join (it reads agent.toml when it starts)")
    else:
        print(f"start the agent to join: lichen agent run --data-dir {data_dir}")
    return 0


async def agent_run(args: argparse.Namespace) -> int:
    """``lichen agent run``: serve until signalled."""
    cfg = config_mod.load(_config_path(args.data_dir))
    identity = keys.load_identity(args.data_dir)
    agent = Agent(args.data_dir, cfg, identity)
    await agent.run_until_signalled()
    return 0


@dataclass
class Local:
    """The agent running on this device, as seen by a command."""

    identity: Identity
    host: str
    port: int
    client: AgentClient


def _local_host(bind: str) -> str:
    if bind in ("::", "0.0.0.0"):
        return "127.0.0.1"
    return bind


@asynccontextmanager
async def local_agent(data_dir: Path) -> AsyncIterator[Local]:
    """Connect to the agent running from ``data_dir``; ConfigError if none is running."""
    cfg = config_mod.load(_config_path(data_dir))
    identity = keys.load_identity(data_dir)
    try:
        port = int(fsutil.read_bounded(data_dir / RUNTIME_FILE, 16).decode().strip())
    except (OSError, ValueError, MalformedMessage):
        raise ConfigError(
            f"no agent is running from {data_dir} (start it: lichen agent run --data-dir "
            f"{data_dir})"
        ) from None
    client = await AgentClient.create(identity)
    try:
        yield Local(identity, _local_host(cfg.coap.bind), port, client)
    finally:
        await client.close()


async def local_mesh(local: Local) -> list[PeerInfo]:
    """The local agent and every peer it verified."""
    status = await local.client.get_status(local.host, local.port)
    if status.public_key != local.identity.public.public_key:
        raise ConfigError(f"the agent on port {local.port} is not the one in this data dir")
    me = PeerInfo(
        status.public_key, local.host, local.port, status.domain, status.tags, status.free_bytes
    )
    return [me, *await local.client.get_peers(local.host, local.port)]


class _Bar:
    """A progress bar on a terminal, silence when piped."""

    def __init__(self, total: int, what: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=what,
            disable=not sys.stderr.isatty(),
            leave=False,
        )

    def __call__(self, moved: int) -> None:
        self._bar.update(moved)

    def close(self) -> None:
        self._bar.close()


async def put(args: argparse.Namespace) -> int:
    """``lichen put FILE``."""
    if str(args.file) == "-":
        data = sys.stdin.buffer.read(MAX_PUT_BYTES + 1)
        label = args.label
    else:
        try:
            data = await asyncio.to_thread(fsutil.read_bounded, args.file, MAX_PUT_BYTES)
        except FileNotFoundError:
            raise ConfigError(f"{args.file}: no such file") from None
        except (OSError, MalformedMessage) as exc:
            raise ConfigError(f"{args.file}: {exc}") from None
        label = args.label or args.file.name
    if len(data) > MAX_PUT_BYTES:
        raise ConfigError(f"larger than {MAX_PUT_BYTES} bytes: split it first")
    keyring = keys.Keyring.load(args.data_dir)
    async with local_agent(args.data_dir) as local:
        mesh = await local_mesh(local)
        k, n = placement.default_k_n(len(mesh))
        k, n = args.k or k, args.n or max(n, args.k or 0)
        if not 1 <= k <= n:
            raise ConfigError(f"need 1 <= k <= n, got k={k} n={n}")
        total = -(-seal.sealed_size(len(data)) // k) * n
        bar = _Bar(total, "put")
        try:
            result = await datapath.put(
                local.client,
                data,
                owner=local.identity,
                key_for_new_object=keyring.new_object_key,
                peers=mesh,
                k=k,
                n=n,
                lifetime=args.days * 86400,
                label=label,
                progress=bar,
                home=mesh[0],
            )
        finally:
            bar.close()
    print(result.manifest.cid_text)
    sys.stderr.write(
        f"stored {len(data)} bytes as {n} shards (any {k} rebuild it) on "
        f"{len(set(result.manifest.holders))} agents\n"
        f"share read access with: {result.capability.to_text()}\n"
    )
    return 0


async def get(args: argparse.Namespace) -> int:
    """``lichen get ADDR -o OUT``."""
    address: str = args.address.strip()
    if "#" in address:
        capability = ReadCapability.parse(address)
        object_cid = capability.cid
        key: bytes | keys.Keyring = capability.key
    else:
        object_cid = cid.from_text(address)
        key = keys.Keyring.load(args.data_dir)
    async with local_agent(args.data_dir) as local:
        mesh = await local_mesh(local)
        manifest = await datapath.find_manifest(local.client, object_cid, mesh)
        bar = _Bar(manifest.piece_size * manifest.k, "get")
        try:
            decoded = await datapath.get(
                local.client,
                manifest,
                key if isinstance(key, bytes) else key.key_for,
                mesh,
                progress=bar,
            )
        except IntegrityError as exc:
            if isinstance(key, bytes) or "cannot decrypt" not in str(exc):
                raise
            raise IntegrityError(
                "cannot decrypt: this object was not written with this agent's owner key; "
                "ask its owner for the shared address (bafk...#KEY)"
            ) from None
        finally:
            bar.close()
    if str(args.output) == "-":
        sys.stdout.buffer.write(decoded.plaintext)
        sys.stdout.buffer.flush()
    else:
        await asyncio.to_thread(fsutil.atomic_write, args.output, decoded.plaintext)
        sys.stderr.write(f"wrote {len(decoded.plaintext)} bytes to {args.output}\n")
    return 0


async def peers(args: argparse.Namespace) -> int:
    """``lichen peers``."""
    async with local_agent(args.data_dir) as local:
        found = await local.client.get_peers(local.host, local.port)
    if not found:
        print("no verified peers yet")
    for p in found:
        print(f"{p.node_id}  {p.host}:{p.port}  domain={p.domain or '-'}  free={p.free_bytes}")
    return 0


async def status(args: argparse.Namespace) -> int:
    """``lichen status``."""
    async with local_agent(args.data_dir) as local:
        s = await local.client.get_status(local.host, local.port)
    print(f"node id:  {local.identity.node_id}")
    print(f"version:  {s.version}")
    print(f"storage:  {s.used} of {s.capacity} bytes used, {s.shards} shards")
    print(f"peers:    {s.peers} verified")
    return 0


def parse_since(text: str, now: float) -> float:
    """A unix time from '90s', '15m', '1h', '2d', a unix time, or an ISO 8601 date-time."""
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * units[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: use 90s, 15m, 1h, 2d, a unix time or ISO 8601"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.timestamp()


def _format_readings(records: list[senml.Record], fmt: str) -> str:
    if fmt == "senml":
        return senml.encode_json(records).decode() + "\n"
    if fmt == "json":
        rows = [
            {
                "name": r.name,
                "time": r.time,
                "value": r.value if not isinstance(r.value, bytes) else r.value.hex(),
                "unit": r.unit,
            }
            for r in records
        ]
        return json.dumps(rows, indent=1) + "\n"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["time", "iso_time", "name", "value", "unit"])
    for r in records:
        iso = datetime.datetime.fromtimestamp(r.time, datetime.UTC).isoformat()
        value = r.value.hex() if isinstance(r.value, bytes) else r.value
        writer.writerow([repr(r.time), iso, r.name, value, r.unit or ""])
    return out.getvalue()


async def stream_read(args: argparse.Namespace) -> int:
    """``lichen stream read NAME``: every acknowledged reading, sealed or pending, in order."""
    name = stream.check_stream_name(args.name)
    since = parse_since(args.since, time.time()) if args.since else None
    keyring = keys.Keyring.load(args.data_dir)
    readings: list[senml.Record] = []
    async with local_agent(args.data_dir) as local:
        mesh = await local_mesh(local)
        start, pending = 0, b""
        while True:
            page = await local.client.get_stream_page(
                local.host, local.port, name, start=start, since=since if start == 0 else None
            )
            if page.writer != local.identity.public.public_key:
                raise IntegrityError("the stream index is signed by another agent")
            segments = stream.verify_chain(
                page.records,
                PublicIdentity(page.writer),
                stream=name,
                start_seq=page.first_seq,
                start_prev=page.prev,
            )
            for segment in segments:
                manifest = await datapath.find_manifest(local.client, segment.object_cid, mesh)
                decoded = await datapath.get(local.client, manifest, keyring.key_for, mesh)
                records = senml.decode_cbor(decoded.plaintext, now=time.time())
                if len(records) != segment.count:
                    raise IntegrityError(
                        f"segment {segment.seq} holds {len(records)} readings, "
                        f"its record says {segment.count}"
                    )
                readings.extend(records)
            pending = page.pending
            if not page.more:
                break
            start = page.first_seq + len(page.records)
    readings.extend(senml.decode_cbor(pending, now=time.time()))
    if since is not None:
        readings = [r for r in readings if r.time >= since]
    sys.stdout.write(_format_readings(readings, args.format))
    return 0
