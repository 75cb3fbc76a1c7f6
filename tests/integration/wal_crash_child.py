"""A process for the write-ahead log crash tests: it writes in a loop until it is killed.

``append PATH SEED MAX_BATCH``: append batches of 1 to MAX_BATCH records (record ``i`` is
:func:`payload` of ``i``); after each append returns, print the number of records acknowledged.
``reset PATH``: for generation 1, 2, ...: reset the log to :func:`generation` of it, append
:func:`marker` of it, then print the generation number.

Each line is flushed before the next write starts, so every number the test reads was
acknowledged. The loop ends by itself after :data:`MAX_ROUNDS`, or when stdout is closed, so a
dying test does not leave it running.
"""

from __future__ import annotations

import hashlib
import random
import sys

from edge_agent.wal import WriteAheadLog

MAX_ROUNDS = 100_000


def payload(i: int) -> bytes:
    """Record ``i`` of the append test: its number, then 32 to 256 bytes derived from it."""
    seq = i.to_bytes(8, "big")
    return seq + hashlib.sha256(seq).digest() * (1 + i % 8)


def generation(g: int) -> list[bytes]:
    """What the log holds right after reset number ``g``: 0 to 40 records of varied size."""
    return [f"gen {g} record {j} ".encode() * (1 + (g + j) % 5) for j in range(g * 7 % 41)]


def marker(g: int) -> bytes:
    """The record appended after reset number ``g``."""
    return f"marker {g}".encode()


def _ack(n: int) -> None:
    sys.stdout.write(f"{n}\n")
    sys.stdout.flush()


def run_append(path: str, seed: int, max_batch: int) -> None:
    rng = random.Random(seed)
    with WriteAheadLog.open(path) as log:
        n = log.count
        for _ in range(MAX_ROUNDS):
            k = rng.randint(1, max_batch)
            log.append([payload(i) for i in range(n, n + k)])
            n += k
            _ack(n)


def run_reset(path: str) -> None:
    with WriteAheadLog.open(path) as log:
        for g in range(1, MAX_ROUNDS):
            log.reset(generation(g))
            log.append([marker(g)])
            _ack(g)


def main(argv: list[str]) -> None:
    if argv[0] == "append":
        run_append(argv[1], int(argv[2]), int(argv[3]))
    elif argv[0] == "reset":
        run_reset(argv[1])
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BrokenPipeError:
        sys.exit(0)
