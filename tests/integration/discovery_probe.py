"""A test process for mDNS discovery, run inside a network namespace by the integration tests.

``probe``: run :class:`edge_agent.discovery.Discovery` for a seed-derived identity and print
one JSON line per event on stdout (``started``, ``advert``, ``gone``, ``drop``).
``publish``: register raw zeroconf services with hand-made TXT records (forged or malformed
adverts) and print ``published`` once they are announced.

Both run until SIGTERM or SIGINT, until stdin closes (so a dying test takes its probes with
it) or until ``--lifetime`` seconds have passed, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import stat
import sys
from collections.abc import Sequence

from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from edge_agent.discovery import (
    MAX_ADVERTS,
    SERVICE_TYPE,
    Advert,
    Discovery,
    encode_public_key,
)
from lichen.identity import Identity

LIFETIME = 60.0  # seconds: a probe the test forgot still ends


def identity_for(seed: int) -> Identity:
    """The identity of probe ``seed``, the same in the test and in the probe."""
    return Identity(hashlib.sha256(f"discovery-probe-{seed}".encode()).digest())


def emit(event: str, **fields: object) -> None:
    """Write one JSON event line to stdout, flushed so the test sees it at once."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _stopper(lifetime: float) -> asyncio.Event:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 4096):
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    # Only a pipe can be watched (epoll refuses files); the tests always give one.
    if stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
        loop.add_reader(sys.stdin.fileno(), on_stdin)
    loop.call_later(lifetime, stop.set)
    return stop


async def probe(args: argparse.Namespace) -> None:
    """Discover peers and report every event."""
    stop = _stopper(args.lifetime)

    def on_advert(advert: Advert) -> None:
        emit(
            "advert",
            node_id=advert.node_id,
            public_key=encode_public_key(advert.public_key),
            addresses=list(advert.addresses),
            coap=advert.coap_port,
            tcp=advert.tcp_port,
        )

    discovery = Discovery(
        identity_for(args.seed).public.public_key,
        coap_port=args.coap,
        tcp_port=args.tcp,
        on_advert=on_advert,
        on_gone=lambda node_id: emit("gone", node_id=node_id),
        on_drop=lambda reason, name: emit("drop", reason=reason, name=name),
        interfaces=args.interface or None,
        max_adverts=args.max_adverts,
    )
    await discovery.start()
    emit("started", node_id=discovery.node_id, name=discovery.service_name)
    try:
        await stop.wait()
    finally:
        await discovery.stop()


async def publish(args: argparse.Namespace) -> None:
    """Register services whose TXT records are given as JSON: ``{"label": {"key": "value"}}``."""
    stop = _stopper(args.lifetime)
    records: dict[str, dict[str, str]] = json.loads(args.records)
    azc = AsyncZeroconf(interfaces=args.interface) if args.interface else AsyncZeroconf()
    try:
        infos = [
            AsyncServiceInfo(
                SERVICE_TYPE,
                f"{label}.{SERVICE_TYPE}",
                port=5683,
                properties=txt,
                server=f"{label}.local.",
                parsed_addresses=[args.address],
            )
            for label, txt in records.items()
        ]
        announced = await asyncio.gather(*(azc.async_register_service(i) for i in infos))
        await asyncio.gather(*announced)
        emit("published", labels=list(records))
        await stop.wait()
    finally:
        await azc.async_close()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run the chosen mode."""
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    run_probe = sub.add_parser("probe")
    run_probe.add_argument("--seed", type=int, required=True)
    run_probe.add_argument("--coap", type=int, required=True)
    run_probe.add_argument("--tcp", type=int, required=True)
    run_probe.add_argument("--max-adverts", type=int, default=MAX_ADVERTS)
    run_publish = sub.add_parser("publish")
    run_publish.add_argument("--records", required=True)
    run_publish.add_argument("--address", required=True)
    for each in (run_probe, run_publish):
        each.add_argument("--interface", action="append", default=[])
        each.add_argument("--lifetime", type=float, default=LIFETIME)
    args = parser.parse_args(argv)
    asyncio.run(probe(args) if args.mode == "probe" else publish(args))


if __name__ == "__main__":
    main()
