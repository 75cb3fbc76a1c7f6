"""Readings per second one agent accepts, next to a bare aiocoap resource, in the same run.

Starts, on loopback, a real agent (``lichen agent run``, the harness of ``tests/agents.py``)
with ``--sensors`` enrolled sensors, and a bare aiocoap server whose one resource answers
every POST ``2.04`` and does nothing else. Clients in this process, one aiocoap context per
sensor, keep ``--sensors`` requests in flight (each sensor sending in order, as a real one
does, so that its counters arrive increasing) and measure:

- the bare resource: empty POSTs per second (the ceiling of these clients and aiocoap on
  this machine: clients and servers share its cores);
- the agent, one reading per POST: each a COSE_Mac0 with its own counter, MAC-checked,
  counter-checked, made durable (fsync) and acknowledged;
- the agent, packs of 100 readings per POST (about 2 KiB: aiocoap sends them in two
  1 KiB blocks, RFC 7959).

Each for ``--seconds`` seconds after a short warm-up. It measures and prints; it asserts only
that every answer was 2.04.

    .venv/bin/python benchmarks/sensors.py            # about 25 seconds
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the harness lives in tests/, which is not installed
    sys.path.insert(0, str(ROOT))

import aiocoap  # noqa: E402
from aiocoap import Code, Message  # noqa: E402

from edge_agent.sensors import CT_COSE_MAC0, SensorRegistry  # noqa: E402
from lichen import cose, senml  # noqa: E402
from tests.agents import AgentProc, free_port  # noqa: E402

T0 = 1735689600
BARE_SERVER = """
import asyncio, sys, aiocoap, aiocoap.resource as resource
class Nothing(resource.Resource):
    async def render_post(self, request):
        return aiocoap.Message(code=aiocoap.CHANGED)
async def main():
    site = resource.Site()
    site.add_resource(["s", "bench"], Nothing())
    await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", int(sys.argv[1])))
    print("ready", flush=True)
    await asyncio.get_running_loop().create_future()
asyncio.run(main())
"""

Payload = Callable[[int], bytes]
"""sensor index -> that sensor's next request body."""


async def measure(uri: str, ct: int, payload: Payload, senders: int, seconds: float) -> int:
    """POSTs answered 2.04 in ``seconds``, with ``senders`` sending one at a time each.

    Each sender has its own client context (its own UDP port), as separate sensors do: a
    pack of 100 readings is over 1 KiB, so aiocoap sends it blockwise (RFC 7959), and
    concurrent blockwise uploads from one endpoint to one resource would be mixed up.
    """
    contexts = [
        await aiocoap.Context.create_client_context(transports=["udp6"]) for _ in range(senders)
    ]
    done = 0
    deadline = time.monotonic() + seconds

    async def sender(index: int) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            message = Message(code=Code.POST, uri=uri, payload=payload(index))
            message.opt.content_format = ct
            answer = await contexts[index].request(message).response
            if answer.code != Code.CHANGED:
                raise SystemExit(f"{uri}: {answer.code} {answer.payload!r}")
            done += 1

    try:
        await asyncio.gather(*(sender(i) for i in range(senders)))
    finally:
        for context in contexts:
            await context.shutdown()
    return done


def mac_payload(keys: list[bytes], counters: Sequence[Iterator[int]], readings: int) -> Payload:
    """COSE_Mac0 packs of ``readings`` readings; each sensor's counter comes from its shared
    ``counters`` entry, so every run after the first continues above the last one's."""

    def make(index: int) -> bytes:
        number = next(counters[index])
        base = T0 + number * readings
        pack = senml.encode_cbor(
            [senml.Record("temp", base + i, 20.0 + i / 8, "Cel") for i in range(readings)]
        )
        return cose.mac0(pack, keys[index], f"bench-{index}".encode(), counter=number)

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement (6)")
    parser.add_argument("--sensors", type=int, default=16, help="requests in flight (16)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lichen-bench-") as tmp:
        agent = AgentProc(Path(tmp) / "agent", free_port())
        agent.init("--no-mdns")
        agent.configure("streams", "segment_readings", "10000")
        registry = SensorRegistry.open(agent.data_dir)
        keys = [os.urandom(32) for _ in range(args.sensors)]
        for i, key in enumerate(keys):
            registry.add(f"bench-{i}", "bench", key=key, token=None, now=int(time.time()))
        bare_port = free_port()
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE_SERVER, str(bare_port)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert bare.stdout is not None and bare.stdout.readline().strip() == "ready"
            agent.start()
            agent_uri = f"coap://127.0.0.1:{agent.port}/s/bench"
            bare_uri = f"coap://127.0.0.1:{bare_port}/s/bench"
            rows: list[tuple[str, int, float]] = []
            counters = [itertools.count(1) for _ in keys]  # warm-ups and runs alike
            runs: list[tuple[str, str, int, Payload, int]] = [
                ("bare aiocoap resource (empty POST)", bare_uri, 0, lambda i: b"", 1),
                (
                    "agent, 1 reading per POST",
                    agent_uri,
                    CT_COSE_MAC0,
                    mac_payload(keys, counters, 1),
                    1,
                ),
                (
                    "agent, packs of 100 readings",
                    agent_uri,
                    CT_COSE_MAC0,
                    mac_payload(keys, counters, 100),
                    100,
                ),
            ]
            for what, uri, ct, payload, per_post in runs:
                asyncio.run(measure(uri, ct, payload, args.sensors, 0.5))  # warm-up
                posts = asyncio.run(measure(uri, ct, payload, args.sensors, args.seconds))
                rows.append((what, posts * per_post, posts / args.seconds))
        except BaseException:
            agent.count(r"^$")  # drains what the agent logged
            sys.stderr.write("\n".join(agent.lines[-30:]) + "\n")
            raise
        finally:
            bare.kill()
            bare.wait()
            agent.stop()

    print(f"sensor ingest on {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {args.sensors} requests in flight, "
          f"{args.seconds:g} s each")  # fmt: skip
    print(f"{'':<38} {'readings/s':>12} {'POSTs/s':>10}")
    for what, readings, posts_per_second in rows:
        print(f"{what:<38} {readings / args.seconds:>12,.0f} {posts_per_second:>10,.0f}")


if __name__ == "__main__":
    main()
