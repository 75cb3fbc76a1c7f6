"""CPU profiles of a benchmark's processes: cProfile in per-thread CPU time, an agent that
switches it on and off at a signal, and a summary of where the time went.

Used by :mod:`benchmarks.agents`; kept apart so that the measuring script stays readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import os
import pstats
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
TOP = 14  # functions listed per profile


class ThreadProfiler:
    """cProfile in per-thread CPU time over one thread and every ``asyncio.to_thread`` call
    made while it is on (cProfile alone sees only the thread that enabled it)."""

    def __init__(self) -> None:
        self._reset()
        self._original = asyncio.to_thread

    def _reset(self) -> None:
        self.main = cProfile.Profile(time.thread_time)
        self.workers: list[cProfile.Profile] = []
        self.on = False
        self._lock = threading.Lock()

    def start(self) -> None:
        self.on = True
        self.main.enable()

    def stop(self) -> tuple[pstats.Stats | None, pstats.Stats | None]:
        """Switch off; return the stats of the enabling thread and of the worker threads."""
        self.main.disable()
        self.on = False
        main, workers = _stats([self.main]), _stats(self.workers)
        self._reset()
        return main, workers

    @contextlib.contextmanager
    def patch_to_thread(self) -> Iterator[None]:
        """Replace ``asyncio.to_thread`` with one that profiles the call while this is on."""
        original = self._original

        async def to_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
            if not self.on:
                return await original(func, *args, **kwargs)

            def profiled() -> T:
                profile = cProfile.Profile(time.thread_time)
                with self._lock:
                    self.workers.append(profile)
                return profile.runcall(func, *args, **kwargs)

            return await original(profiled)

        asyncio.to_thread = to_thread
        try:
            yield
        finally:
            asyncio.to_thread = original


def _stats(profiles: Sequence[cProfile.Profile]) -> pstats.Stats | None:
    merged: pstats.Stats | None = None
    for profile in profiles:
        profile.create_stats()
        if not profile.stats:
            continue
        if merged is None:
            merged = pstats.Stats(profile)
        else:
            merged.add(profile)
    return merged


def profiled_agent(prefix: str, argv: list[str]) -> int:
    """Run ``lichen ARGV``; SIGUSR1 starts profiling, SIGUSR2 writes PREFIX.<i>.{main,work}."""
    profiler = ThreadProfiler()
    dumps = 0

    def dump(_signum: int, _frame: object) -> None:
        nonlocal dumps
        dumps += 1
        for part, stats in zip(("main", "work"), profiler.stop(), strict=True):
            target = Path(f"{prefix}.{dumps}.{part}")
            if stats is not None:
                stats.dump_stats(f"{target}.tmp")
                os.replace(f"{target}.tmp", target)
            else:
                target.write_bytes(b"")
        Path(f"{prefix}.{dumps}.done").write_bytes(b"")

    def start(_signum: int, _frame: object) -> None:
        profiler.start()
        Path(f"{prefix}.{dumps + 1}.on").write_bytes(b"")

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, dump)
    from edge_agent import cli

    with profiler.patch_to_thread():
        return cli.main(argv)


# Where CPU time goes, by the function that spent it (first match wins). Copies done by
# ``bytes +=`` and slicing count as the self time of the Python function doing them.
BUCKETS = [
    ("erasure coding (zfec)", r"zfec|_fec\.|lichen/erasure\.py"),
    ("seal/unseal (XChaCha20-Poly1305)", r"aead|lichen/seal\.py"),
    ("Ed25519 sign/verify", r"crypto_sign|nacl/signing|lichen/cose\.py|lichen/identity\.py"),
    ("hashing (Merkle, CID)", r"hashlib|_blake2|sha256|lichen/merkle\.py|lichen/cid\.py"),
    ("CBOR encode/decode", r"cbor2|lichen/cbor\.py|lichen/wire\.py|lichen/messages\.py"),
    ("aiocoap TCP framing (incl. spool)", r"aiocoap/transports/"),
    ("aiocoap blockwise and messages", r"aiocoap/"),
    ("disk (write, fsync, read)", r"posix\.|fsync|_io\.|edge_agent/fsutil|edge_agent/store"),
    ("sockets and event loop", r"asyncio|selectors|_socket|socket\.py|epoll"),
    ("other", r""),
]
# aiocoap functions whose self time is mostly copying whole payloads: the copies that bound
# large transfers, listed on their own whatever bucket they fall in.
WATCH = [
    ("aiocoap tcp.py data_received (spool +=)", "aiocoap/transports/tcp.py", "data_received"),
    ("aiocoap tcp.py _serialize (b''.join)", "aiocoap/transports/tcp.py", "_serialize"),
    ("aiocoap _append_request_block (+=)", "aiocoap/message.py", "_append_request_block"),
    ("aiocoap _append_response_block (+=)", "aiocoap/message.py", "_append_response_block"),
    ("aiocoap _extract_block (slice)", "aiocoap/message.py", "_extract_block"),
]


def _where(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    if filename == "~":
        return func
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{filename}:{line}:{func}"


def _entries(stats: Sequence[pstats.Stats]) -> dict[str, float]:
    """Self CPU seconds by function, summed over ``stats``."""
    total: dict[str, float] = {}
    for st in stats:
        for key, value in st.stats.items():  # type: ignore[attr-defined]
            where = _where(key)
            total[where] = total.get(where, 0.0) + value[2]
    return total


def print_profile(title: str, stats: Sequence[pstats.Stats], cpu: float) -> None:
    entries = _entries(stats)
    profiled = sum(entries.values())
    print(f"  {title}: {profiled:.2f} s CPU seen by the profiler ({cpu:.2f} s by the kernel)")
    if not profiled:
        return
    buckets: dict[str, float] = {}
    for where, seconds in entries.items():
        label = next(label for label, rx in BUCKETS if re.search(rx, where))
        buckets[label] = buckets.get(label, 0.0) + seconds
    for label, seconds in sorted(buckets.items(), key=lambda kv: -kv[1]):
        if seconds >= 0.005:
            print(f"    {seconds:7.2f} s {100 * seconds / profiled:5.1f}%  {label}")
    print("    top functions by self time:")
    for where, seconds in sorted(entries.items(), key=lambda kv: -kv[1])[:TOP]:
        print(f"    {seconds:7.2f} s {100 * seconds / profiled:5.1f}%  {where[:90]}")
    watched = [
        (label, sum(s for w, s in entries.items() if path in w and w.endswith(":" + func)))
        for label, path, func in WATCH
    ]
    print("    payload copies in aiocoap (self time):")
    for label, seconds in watched:
        print(f"    {seconds:7.2f} s {100 * seconds / profiled:5.1f}%  {label}")
