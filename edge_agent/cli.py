"""The ``lichen`` command line: one entry point, a subcommand per job.

Subcommands that need the agent's or the hub's runtime import it when they run, so
``lichen --help`` stays fast on a small device.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import lichen

EXIT_USAGE = 2
EXIT_NOT_BUILT = 3


def _not_built(what: str) -> int:
    sys.stderr.write(
        f"lichen {what}: not built yet. This release has the protocol core only; "
        "the agent, the hub and the demo arrive in the next releases.\n"
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="start a hub, several agents and a simulated sensor on this machine",
        description="Start a hub, several agents and a simulated sensor on this machine, "
        "and print the dashboard address.",
    )
    demo.add_argument("--agents", type=int, default=5, help="number of agents (default 5)")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lichen`` command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "demo":
        return _not_built("demo")
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE  # not reached: parser.error exits


if __name__ == "__main__":
    sys.exit(main())
