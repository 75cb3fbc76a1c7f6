"""What each ``lichen hub`` subcommand does; :mod:`edge_agent.cli` parses and dispatches."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
import tomllib
from pathlib import Path

from zeroconf import IPVersion

from edge_agent import fsutil
from edge_agent.discovery import local_addresses
from hub import config as config_mod
from hub.db import Database, default_url
from hub.service import HUB_KEY_FILE, Hub, create_keys, load_keys
from lichen import ledger
from lichen.errors import ConfigError


def _config_path(data_dir: Path) -> Path:
    return data_dir / config_mod.CONFIG_FILE


def hub_init(args: argparse.Namespace) -> int:
    """``lichen hub init``: identity, join token and a commented config."""
    data_dir: Path = args.data_dir
    if (data_dir / HUB_KEY_FILE).exists():
        raise ConfigError(f"{data_dir} already holds a hub ({HUB_KEY_FILE}); not overwriting it")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cfg = config_mod.HubConfig()
    if args.http_port is not None:
        cfg = config_mod.replace(cfg, "http", port=args.http_port)
    if args.mqtt_port is not None:
        cfg = config_mod.replace(cfg, "mqtt", port=args.mqtt_port)
    if args.broker:
        cfg = config_mod.replace(cfg, "mqtt", broker_url=args.broker)
    if args.database:
        cfg = config_mod.replace(cfg, "database", url=args.database)
    text = config_mod.render_default(cfg)
    config_mod.from_dict(tomllib.loads(text))
    identity, _ = create_keys(data_dir)
    fsutil.atomic_write(_config_path(data_dir), text.encode(), mode=0o644)
    print(f"created hub {identity.node_id} in {data_dir}")
    print(f"next: lichen hub run --data-dir {data_dir}; agents join with: lichen hub token")
    return 0


async def hub_run(args: argparse.Namespace) -> int:
    """``lichen hub run``: serve until SIGTERM or SIGINT."""
    cfg = config_mod.load(_config_path(args.data_dir))
    identity, token = load_keys(args.data_dir)
    hub = Hub(args.data_dir, cfg, identity, token)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await hub.start()
    try:
        await stop.wait()
    finally:
        await hub.stop()
    return 0


def hub_token(args: argparse.Namespace) -> int:
    """``lichen hub token``: the line an agent operator needs to join."""
    cfg = config_mod.load(_config_path(args.data_dir))
    identity, token = load_keys(args.data_dir)
    url = cfg.mqtt.broker_url
    if not url:
        host = cfg.mqtt.bind
        if host in ("0.0.0.0", "::"):
            lan = local_addresses(None, IPVersion.V4Only)
            host = lan[0] if lan else "<this host's address>"
        url = f"mqtt://{host}:{cfg.mqtt.port}"
    print(f"lichen agent join {url} {token}")
    print(f"(hub key {identity.node_id}: check it matches what the agent reports)")
    return 0


def _database(data_dir: Path) -> Database:
    cfg = config_mod.load(_config_path(data_dir))
    db = Database.open(cfg.database.url or default_url(data_dir))
    db.upgrade()
    return db


def hub_ledger_verify(args: argparse.Namespace) -> int:
    """``lichen hub ledger verify``: check every record's signature and the whole chain."""
    identity, _ = load_keys(args.data_dir)
    with _database(args.data_dir) as db:
        try:
            summary = ledger.verify_ledger((e.record for e in db.ledger()), identity.public)
        except ledger.LedgerError as exc:
            print(f"ledger NOT verified: {exc}")
            return 1
    if not summary.records:
        print("ledger verified: no epochs closed yet")
        return 0
    print(
        f"ledger verified: {summary.records} epochs ({summary.first_epoch} to "
        f"{summary.last_epoch}), {summary.total_reward} paid, {summary.total_penalty} in "
        f"penalties, head {summary.head.hex()[:16]}"
    )
    return 0


def hub_revoke(args: argparse.Namespace) -> int:
    """``lichen hub revoke NODE``: refuse a device from now on."""
    with _database(args.data_dir) as db:
        if not db.revoke_device(args.node_id, time.time()):
            raise ConfigError(f"no enrolled device {args.node_id}")
    print(f"revoked {args.node_id}: its messages are refused; its shards will be repaired")
    return 0
