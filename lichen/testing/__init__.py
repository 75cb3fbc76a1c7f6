"""Test doubles shipped with the core: a fake clock, an in-memory datagram network and an
in-memory shard holder.

They let tests and simulations wire sans-IO core nodes together without sockets or real
time, deterministically from a seed.
"""

from lichen.testing.clock import FakeClock, Timer
from lichen.testing.holder import HeldBody, MemoryHolder
from lichen.testing.memnet import (
    DropReason,
    LinkConfig,
    MemoryNetwork,
    NetStats,
    Partition,
    TraceEntry,
)

__all__ = [
    "DropReason",
    "FakeClock",
    "HeldBody",
    "LinkConfig",
    "MemoryHolder",
    "MemoryNetwork",
    "NetStats",
    "Partition",
    "Timer",
    "TraceEntry",
]
