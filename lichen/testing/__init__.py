"""Test doubles shipped with the core: a fake clock and an in-memory datagram network.

They let tests and simulations wire sans-IO core nodes together without sockets or real
time, deterministically from a seed.
"""

from lichen.testing.clock import FakeClock, Timer
from lichen.testing.memnet import (
    DropReason,
    IncomingRequest,
    LinkConfig,
    MemoryNetwork,
    NetStats,
    PacketKind,
    Partition,
    PendingRequest,
    TraceEntry,
)

__all__ = [
    "DropReason",
    "FakeClock",
    "IncomingRequest",
    "LinkConfig",
    "MemoryNetwork",
    "NetStats",
    "PacketKind",
    "Partition",
    "PendingRequest",
    "Timer",
    "TraceEntry",
]
