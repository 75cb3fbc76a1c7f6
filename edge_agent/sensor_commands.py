"""``lichen sensor add|list|revoke``: enroll sensors with the agent of a data directory.

The commands change the registry file (:mod:`edge_agent.sensors`) directly, under its lock;
a running agent picks the change up before the next reading it admits, and an agent that is
not running finds it when it starts. No network round trip, no agent needed to enroll.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

from edge_agent import config as config_mod
from edge_agent import fsutil, keys
from edge_agent.sensors import KEY_SIZE, SensorRegistry, new_secret, token_text
from lichen.errors import ConfigError, MalformedMessage

DEFAULT_INTERVAL_S = 60
BOARD_CONFIG_NAME = "lichen.json"  # what firmware/sensor/main.py reads on the board


def _registry(data_dir: Path) -> SensorRegistry:
    if not keys.exists(data_dir):
        raise ConfigError(f"{data_dir} holds no agent (run 'lichen agent init' first)")
    return SensorRegistry.open(data_dir)


def _read_key(path: Path) -> bytes:
    """A key from a file: 32 raw bytes, or 64 hex digits (as a board config holds it)."""
    try:
        raw = fsutil.read_bounded(path, 4 * KEY_SIZE)
    except (OSError, MalformedMessage) as exc:
        raise ConfigError(f"{path}: cannot read the key: {exc}") from None
    if len(raw) == KEY_SIZE:
        return raw
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_SIZE:
        raise ConfigError(f"{path}: a key is {KEY_SIZE} raw bytes or {2 * KEY_SIZE} hex digits")
    return key


def _agent_address(given: str | None, data_dir: Path) -> str:
    """What the board dials: as given, or empty (mDNS) when the agent advertises itself."""
    if given is not None:
        return given
    cfg = config_mod.load(data_dir / config_mod.CONFIG_FILE)
    if not cfg.discovery.mdns:
        sys.stderr.write(
            "warning: this agent does not use mDNS, so the board cannot find it by itself: "
            "give --agent HOST:PORT (this agent's address on the sensor's network)\n"
        )
    return ""


def board_config(name: str, stream_name: str, key: bytes, agent: str) -> dict[str, Any]:
    """The ``lichen.json`` a board running ``firmware/sensor`` reads. No token: the board
    MACs every reading, and a token would only put a bearer secret on the air for nothing."""
    return {
        "kid": name,
        "stream": stream_name,
        "key": key.hex(),
        "agent": agent,
        "interval_s": DEFAULT_INTERVAL_S,
        "driver": "simulated",
        "wifi": {"ssid": "", "password": ""},
    }


def sensor_add(args: argparse.Namespace) -> int:
    """``lichen sensor add NAME --stream STREAM``."""
    registry = _registry(args.data_dir)
    key = _read_key(args.key_file) if args.key_file else new_secret()
    token = new_secret() if args.token else None
    agent = _agent_address(args.agent, args.data_dir)  # may fail: before the sensor is added
    sensor = registry.add(args.name, args.stream, key=key, token=token, now=int(time.time()))
    config = board_config(sensor.name, sensor.stream, key, agent)
    text = json.dumps(config, indent=1) + "\n"
    if args.output:
        fsutil.write_secret(args.output, text.encode())
    out = sys.stdout
    out.write(f"enrolled sensor {sensor.name} for stream {sensor.stream}\n")
    out.write(f"key:   {key.hex()}\n")
    if token is not None:
        host = agent or "AGENT"
        out.write(f"token: {token_text(token)}\n")
        out.write(
            f"a stock CoAP client posts SenML to coap://{host}/s/{sensor.stream}"
            f"?t={token_text(token)}\n"
        )
    where = f"written to {args.output}" if args.output else "below"
    out.write(f"board config ({BOARD_CONFIG_NAME}, {where}; keep it secret, it holds the key):\n")
    if not args.output:
        out.write(text)
    return 0


def sensor_list(args: argparse.Namespace) -> int:
    """``lichen sensor list``."""
    found = _registry(args.data_dir).sensors()
    if not found:
        print("no sensors enrolled")
        return 0
    print(f"{'NAME':<24} {'STREAM':<24} {'STATE':<8} {'TOKEN':<6} {'COUNTER':>10}  ADDED")
    for s in found:
        added = datetime.datetime.fromtimestamp(s.added, datetime.UTC).strftime("%Y-%m-%d %H:%M")
        state = "revoked" if s.revoked else "active"
        token = "yes" if s.token is not None else "no"
        print(f"{s.name:<24} {s.stream:<24} {state:<8} {token:<6} {s.counter:>10}  {added}")
    return 0


def sensor_revoke(args: argparse.Namespace) -> int:
    """``lichen sensor revoke NAME``."""
    sensor = _registry(args.data_dir).revoke(args.name)
    print(f"revoked sensor {sensor.name}: its readings are refused from now on")
    return 0
