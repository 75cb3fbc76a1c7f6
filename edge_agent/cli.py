"""The ``lichen`` command line: one entry point, a subcommand per job.

Subcommands import the runtime they need when they run, so ``lichen --help`` stays fast on a
small device. Exit status: 0 done, 1 the operation failed (the message says why), 2 bad
usage or configuration, 3 not built yet.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import lichen
from lichen.errors import ConfigError, LichenError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_BUILT = 3

log = logging.getLogger("lichen.cli")


def default_data_dir() -> Path:
    """``$LICHEN_DATA_DIR``, or ``~/.local/share/lichen``."""
    env = os.environ.get("LICHEN_DATA_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "lichen"


def _data_dir_arg(parser: argparse.ArgumentParser, whose: str = "agent") -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"the {whose}'s data directory (default: $LICHEN_DATA_DIR or ~/.local/share/lichen)",
    )


def _not_built(what: str) -> int:
    sys.stderr.write(
        f"lichen {what}: not built yet. This release has the protocol core and the agent; "
        "the hub and the demo arrive in the next releases.\n"
    )
    return EXIT_NOT_BUILT


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="lichen",
        description=(
            "Lichen: a storage mesh for small devices. Agents on spare Pis and routers keep "
            "encrypted, erasure-coded shards of each other's data; a community hub checks "
            "they still hold them and pays for proven storage."
        ),
    )
    parser.add_argument("--version", action="version", version=f"lichen {lichen.__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    agent = sub.add_parser("agent", help="set up and run the agent daemon on this device")
    agent_sub = agent.add_subparsers(dest="agent_command", metavar="ACTION", required=True)
    init = agent_sub.add_parser(
        "init",
        help="create the identity, keys and a commented config",
        description="Create the agent's identity (node.key, mode 0600), the owner's master "
        "key (owner.key, 0600) and a commented agent.toml whose defaults work on a LAN.",
    )
    _data_dir_arg(init)
    init.add_argument("--port", type=int, help="CoAP port (default 5683; 0: any free port)")
    init.add_argument("--capacity-mib", type=int, help="MiB offered for others' shards")
    init.add_argument("--domain", help="failure domain, e.g. the house or power circuit")
    init.add_argument("--no-mdns", action="store_true", help="do not use mDNS discovery")
    init.add_argument(
        "--peer", action="append", default=[], metavar="HOST:PORT", help="a static peer"
    )
    ident = agent_sub.add_parser("id", help="print the node id and public key")
    _data_dir_arg(ident)
    run = agent_sub.add_parser(
        "run",
        help="run the agent until SIGTERM or SIGINT",
        description="Serve CoAP, discover and verify peers, store shards; logs go to stderr.",
    )
    _data_dir_arg(run)
    join = agent_sub.add_parser(
        "join",
        help="set the hub this agent joins (writes [hub] url and token in agent.toml)",
        description="Write the hub's broker URL and join token (both printed by 'lichen hub "
        "token') into the [hub] section of agent.toml, leaving the rest of the file as it is. "
        "The agent joins at its next start.",
    )
    join.add_argument("url", help="the hub's broker, mqtt://[user:password@]host[:port]")
    join.add_argument("token", help="the hub's join token")
    _data_dir_arg(join)

    put = sub.add_parser(
        "put",
        help="store a file on the mesh and print its address",
        description="Encrypt FILE on this device, erasure-code it into n shards of which any "
        "k rebuild it, place the shards on verified peers and print the content address.",
    )
    put.add_argument("file", type=Path, help="the file to store ('-' for standard input)")
    _data_dir_arg(put)
    put.add_argument("--k", type=int, help="shards needed to rebuild (default from the mesh)")
    put.add_argument("--n", type=int, help="shards written (default from the mesh)")
    put.add_argument("--days", type=int, default=365, help="keep for this many days (365)")
    put.add_argument("--label", help="a label kept in the manifest (default: the file name)")

    get = sub.add_parser(
        "get",
        help="fetch an object by its address",
        description="Fetch any k shards of the object, verify and decode them, and decrypt "
        "with your key (or the key after '#' in a shared address).",
    )
    get.add_argument("address", help="bafk... (your own object) or bafk...#KEY (shared)")
    get.add_argument("-o", "--output", type=Path, required=True, help="file to write ('-': stdout)")
    _data_dir_arg(get)

    peers = sub.add_parser("peers", help="list the peers the local agent has verified")
    _data_dir_arg(peers)
    status = sub.add_parser("status", help="show the local agent's capacity and use")
    _data_dir_arg(status)

    streams = sub.add_parser("stream", help="read sensor streams")
    stream_sub = streams.add_subparsers(dest="stream_command", metavar="ACTION", required=True)
    read = stream_sub.add_parser(
        "read",
        help="print a stream's readings",
        description="Print every acknowledged reading of stream NAME, sealed or still "
        "pending, in the order they were accepted, after checking the stream's hash chain.",
    )
    read.add_argument("name", help="the stream's name, as in the sensor's /s/NAME path")
    read.add_argument("--since", help="only readings newer than this: 90s, 15m, 1h, 2d, ISO 8601")
    read.add_argument(
        "--format", choices=["senml", "json", "csv"], default="csv", help="output format (csv)"
    )
    _data_dir_arg(read)

    sensor = sub.add_parser("sensor", help="enroll, list and revoke sensors")
    sensor_sub = sensor.add_subparsers(dest="sensor_command", metavar="ACTION", required=True)
    add = sensor_sub.add_parser(
        "add",
        help="enroll a sensor and print its key and its board config",
        description="Enroll sensor NAME to write stream STREAM through this agent. Prints "
        "its new 32-byte key and the lichen.json to copy to the board (firmware/sensor). "
        "The agent refuses its readings unless they carry a valid MAC under that key and a "
        "counter above the last it accepted. A running agent sees the change at once.",
    )
    add.add_argument("name", help="the sensor's name: letters, digits, '.', '_', '-'")
    add.add_argument("--stream", required=True, help="the one stream the sensor writes")
    add.add_argument(
        "--agent",
        metavar="HOST[:PORT]",
        help="this agent's address as the board reaches it (default: found by mDNS)",
    )
    add.add_argument(
        "--token",
        action="store_true",
        help="also allow a stock CoAP client to write with a token (?t=...) instead of a "
        "MAC; the token is a bearer secret without replay protection (off by default)",
    )
    add.add_argument(
        "--key-file",
        type=Path,
        help="use this key (32 bytes, or 64 hex digits) instead of a new one: the same "
        "sensor enrolled with a second agent",
    )
    add.add_argument(
        "-o", "--output", type=Path, help="also write the board config to this file (0600)"
    )
    _data_dir_arg(add)
    listing = sensor_sub.add_parser("list", help="list enrolled sensors")
    _data_dir_arg(listing)
    revoke = sensor_sub.add_parser("revoke", help="refuse a sensor's readings from now on")
    revoke.add_argument("name", help="the sensor's name")
    _data_dir_arg(revoke)

    hub = sub.add_parser("hub", help="set up and run a community hub")
    hub_sub = hub.add_subparsers(dest="hub_command", metavar="ACTION", required=True)
    hub_init = hub_sub.add_parser(
        "init",
        help="create the hub's identity, join token and a commented config",
        description="Create the hub's identity (hub.key, 0600), its join token (join.token, "
        "0600) and a commented hub.toml whose defaults run a hub on a LAN with nothing else "
        "installed (embedded MQTT broker, SQLite).",
    )
    _data_dir_arg(hub_init, "hub")
    hub_init.add_argument("--http-port", type=int, help="dashboard and API port (8080)")
    hub_init.add_argument("--mqtt-port", type=int, help="embedded broker port (1883)")
    hub_init.add_argument("--broker", help="use this MQTT broker: mqtt://user:pass@host:port")
    hub_init.add_argument("--database", help="a database URL (default: SQLite in the data dir)")
    hub_run = hub_sub.add_parser("run", help="run the hub until SIGTERM or SIGINT")
    _data_dir_arg(hub_run, "hub")
    hub_token = hub_sub.add_parser("token", help="print the line an agent needs to join")
    _data_dir_arg(hub_token, "hub")
    hub_ledger = hub_sub.add_parser("ledger", help="the rewards ledger")
    ledger_sub = hub_ledger.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    verify = ledger_sub.add_parser(
        "verify",
        help="check every epoch record's signature and the whole hash chain",
    )
    _data_dir_arg(verify, "hub")
    hub_revoke = hub_sub.add_parser("revoke", help="refuse a device from now on")
    hub_revoke.add_argument("node_id", help="the device's node id")
    _data_dir_arg(hub_revoke, "hub")

    demo = sub.add_parser(
        "demo",
        help="start a hub, several agents and a simulated sensor on this machine",
        description="Start a hub, several agents and a simulated sensor on this machine, "
        "and print the dashboard address.",
    )
    demo.add_argument("--agents", type=int, default=5, help="number of agents (default 5)")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.add_argument("--http-port", type=int, default=8080, help="API port (8080, or any free)")
    demo.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep the demo's data in DIR (default: removed)"
    )
    return parser


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lichen`` command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from edge_agent import logs

    logs.setup(args.verbose)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "data_dir", "unset") is None:
        args.data_dir = default_data_dir()
    handler = _HANDLERS.get(args.command)
    if args.command == "agent":
        handler = _AGENT_HANDLERS[args.agent_command]
    if args.command == "sensor":
        handler = _SENSOR_HANDLERS[args.sensor_command]
    if args.command == "hub":
        handler = _HUB_HANDLERS[args.hub_command]
    if handler is None:
        return _not_built(args.command)
    try:
        return handler(args)
    except ConfigError as exc:
        sys.stderr.write(f"lichen: {exc}\n")
        return EXIT_USAGE
    except LichenError as exc:
        sys.stderr.write(f"lichen {args.command}: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("lichen: interrupted\n")
        return 130


def _command(
    name: str, is_async: bool, module: str = "edge_agent.commands"
) -> Callable[[argparse.Namespace], int]:
    """A handler that imports its ``module`` only when it runs."""

    def handler(args: argparse.Namespace) -> int:
        function = getattr(importlib.import_module(module), name)
        return _run(function(args)) if is_async else int(function(args))

    return handler


_HUB_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "init": _command("hub_init", False, "hub.commands"),
    "run": _command("hub_run", True, "hub.commands"),
    "token": _command("hub_token", False, "hub.commands"),
    "ledger": _command("hub_ledger_verify", False, "hub.commands"),
    "revoke": _command("hub_revoke", False, "hub.commands"),
}


_SENSOR_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "add": _command("sensor_add", False, "edge_agent.sensor_commands"),
    "list": _command("sensor_list", False, "edge_agent.sensor_commands"),
    "revoke": _command("sensor_revoke", False, "edge_agent.sensor_commands"),
}
_AGENT_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "init": _command("agent_init", False),
    "id": _command("agent_id", False),
    "run": _command("agent_run", True),
    "join": _command("agent_join", False),
}
_HANDLERS: dict[str, Callable[[argparse.Namespace], int] | None] = {
    "put": _command("put", True),
    "get": _command("get", True),
    "peers": _command("peers", True),
    "status": _command("status", True),
    "stream": _command("stream_read", True),
    "demo": _command("demo_command", True, "hub.demo"),
}


if __name__ == "__main__":
    sys.exit(main())
