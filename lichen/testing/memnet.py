"""An in-memory datagram network on a fake clock, for wiring sans-IO core nodes together.

Endpoints attach by address with a handler ``(source, datagram)``. ``send`` applies the
link's model (size limit, partitions, loss, duplication, delay with jitter) and schedules the
delivery on the clock, so nothing arrives until the test advances time. Every random draw
comes from the ``random.Random`` handed in, in a fixed order, so one seed gives one run.

Models: aioquic's ``client_and_server`` test helpers and Tahoe-LAFS's ``no_network`` grid.
Hand-written: no maintained library simulates a lossy datagram network on a caller's clock.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import NamedTuple

from lichen.errors import ConfigError, LocalProtocolError
from lichen.testing.clock import FakeClock

# The largest UDP payload over IPv4: the 16-bit length field (RFC 768) less the 8-byte UDP
# header and the 20-byte IPv4 header (RFC 791). Links that model CoAP over UDP on small
# devices set 1152, the message size RFC 7252 section 4.6 derives from a 1280-byte MTU.
DEFAULT_MAX_DATAGRAM = 65_507
# One millisecond one way: a quiet LAN, so that defaults exercise the clock without being slow.
DEFAULT_DELAY = 0.001
# Enough recent packets to see what led up to a failure without holding a whole simulation.
DEFAULT_TRACE_LIMIT = 4096

Handler = Callable[[str, bytes], None]
"""Receives ``(source address, datagram)``."""


class DropReason(StrEnum):
    """Why a packet did not reach its handler."""

    LOSS = "loss"
    PARTITION = "partition"
    DEAD = "dead"
    OVERSIZE = "oversize"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """How a directed link treats packets. Draws come from the network's rng."""

    loss: float = 0.0
    """Probability in [0, 1] that a packet vanishes."""
    delay: float = DEFAULT_DELAY
    """Fixed one-way delay in seconds."""
    jitter: float = 0.0
    """Extra delay drawn uniformly from [0, jitter) per packet; packets may then reorder."""
    duplicate: float = 0.0
    """Probability in [0, 1] that a packet that survived loss arrives twice."""
    max_datagram: int = DEFAULT_MAX_DATAGRAM
    """Packets longer than this many bytes are dropped (and counted as oversize)."""

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"link {name} must be a probability in [0, 1], got {value!r}")
        for name in ("delay", "jitter"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ConfigError(f"link {name} must be finite seconds >= 0, got {value!r}")
        if self.max_datagram < 0:
            raise ConfigError(f"link max_datagram must be >= 0, got {self.max_datagram!r}")


class TraceEntry(NamedTuple):
    """One packet's fate: delivered (``dropped`` is None) or dropped, and when."""

    time: float
    src: str
    dst: str
    data: bytes
    dropped: DropReason | None


# Recorded as plain tuples, because a NamedTuple's constructor costs a Python-level call per
# packet; ``trace`` wraps them on the way out.
_TraceTuple = tuple[float, str, str, bytes, DropReason | None]


@dataclass(slots=True)
class NetStats:
    """Counters. Once the clock is idle, ``sent + duplicated == delivered + dropped_total``."""

    sent: int = 0
    """Packets handed to the network."""
    delivered: int = 0
    """Packets that reached a handler."""
    duplicated: int = 0
    """Extra copies the links made."""
    dropped: Counter[DropReason] = field(default_factory=Counter)
    """Packets lost, by reason."""

    @property
    def dropped_total(self) -> int:
        """All dropped packets, whatever the reason."""
        return sum(self.dropped.values())


@dataclass(frozen=True, slots=True)
class Partition:
    """Two groups that cannot reach each other; ``group_b`` None means everyone else."""

    group_a: frozenset[str]
    group_b: frozenset[str] | None

    def separates(self, x: str, y: str) -> bool:
        """True if traffic between ``x`` and ``y`` (either way) is cut by this partition."""
        a = self.group_a
        b = self.group_b
        if b is None:
            return (x in a) != (y in a)
        return (x in a and y in b) or (x in b and y in a)


class MemoryNetwork:
    """Datagrams between addresses, delivered by callbacks on ``clock`` at ``now + delay``.

    Handler exceptions propagate out of the clock's run methods.
    """

    def __init__(
        self,
        clock: FakeClock,
        rng: random.Random,
        *,
        default: LinkConfig | None = None,
        trace_limit: int = DEFAULT_TRACE_LIMIT,
    ) -> None:
        if trace_limit < 0:
            raise ConfigError(f"trace_limit must be >= 0, got {trace_limit!r}")
        self.clock = clock
        self.stats = NetStats()
        self._rng = rng
        self._default = default if default is not None else LinkConfig()
        self._links: dict[tuple[str, str], LinkConfig] = {}
        self._handlers: dict[str, Handler] = {}
        self._known: set[str] = set()
        self._partitions: list[Partition] = []
        self._trace: deque[_TraceTuple] | None = deque(maxlen=trace_limit) if trace_limit else None

    # Endpoints.

    def attach(self, address: str, handler: Handler) -> None:
        """Bring ``address`` up (again) with a datagram handler."""
        if address in self._handlers:
            raise LocalProtocolError(f"address {address!r} is already attached")
        self._handlers[address] = handler
        self._known.add(address)

    def detach(self, address: str) -> None:
        """Take ``address`` down like a dead host: traffic to and from it is dropped."""
        if self._handlers.pop(address, None) is None:
            raise LocalProtocolError(f"address {address!r} is not attached")

    def is_attached(self, address: str) -> bool:
        """True while ``address`` is up."""
        return address in self._handlers

    @property
    def addresses(self) -> list[str]:
        """Attached addresses, in the order they attached."""
        return list(self._handlers)

    # Link settings.

    @property
    def default(self) -> LinkConfig:
        """The settings of every link without its own override."""
        return self._default

    def link(self, src: str, dst: str) -> LinkConfig:
        """The settings in force from ``src`` to ``dst``."""
        return self._links.get((src, dst), self._default)

    def set_link(self, src: str, dst: str, config: LinkConfig, *, both_ways: bool = True) -> None:
        """Override the settings from ``src`` to ``dst`` (and back, unless ``both_ways`` is off)."""
        self._links[(src, dst)] = config
        if both_ways:
            self._links[(dst, src)] = config

    def clear_link(self, src: str, dst: str, *, both_ways: bool = True) -> None:
        """Return the link (and its reverse) to the default settings."""
        self._links.pop((src, dst), None)
        if both_ways:
            self._links.pop((dst, src), None)

    def set_latency(
        self, src: str, dst: str, delay: float, jitter: float = 0.0, *, both_ways: bool = True
    ) -> None:
        """Override only the delay of a pair, keeping its other settings."""
        pairs = [(src, dst), (dst, src)] if both_ways else [(src, dst)]
        for a, b in pairs:
            self._links[(a, b)] = replace(self.link(a, b), delay=delay, jitter=jitter)

    # Partitions.

    def partition(self, group_a: Iterable[str], group_b: Iterable[str] | None = None) -> Partition:
        """Cut traffic both ways between two groups (or ``group_a`` and everyone else).

        Takes effect at once, also for packets already in flight. Returns a handle for ``heal``.
        """
        a = frozenset(group_a)
        b = None if group_b is None else frozenset(group_b)
        if not a or (b is not None and not b):
            raise LocalProtocolError("a partition needs two non-empty groups")
        if b is not None and a & b:
            raise LocalProtocolError(f"partition groups overlap: {sorted(a & b)}")
        cut = Partition(a, b)
        self._partitions.append(cut)
        return cut

    def heal(self, partition: Partition | None = None) -> None:
        """Remove one partition, or all of them."""
        if partition is None:
            self._partitions.clear()
            return
        for i, active in enumerate(self._partitions):
            if active is partition:
                del self._partitions[i]
                return
        raise LocalProtocolError("that partition is not in force")

    @property
    def partitions(self) -> list[Partition]:
        """Partitions in force, oldest first."""
        return list(self._partitions)

    # Traffic.

    def send(self, src: str, dst: str, data: bytes) -> None:
        """Send one datagram; its fate is decided now (loss) and at arrival (host, partition)."""
        if src not in self._handlers:
            if src not in self._known:
                raise LocalProtocolError(f"cannot send from {src!r}: it was never attached")
            self.stats.sent += 1
            # A dead host's core may still fire timers that send; the wire stays silent.
            self._drop(src, dst, data, DropReason.DEAD)
            return
        self.stats.sent += 1
        link = self._links.get((src, dst), self._default) if self._links else self._default
        if len(data) > link.max_datagram:
            self._drop(src, dst, data, DropReason.OVERSIZE)
            return
        if self._partitions and self._separated(src, dst):
            self._drop(src, dst, data, DropReason.PARTITION)
            return
        rng = self._rng
        # The draw order (loss, duplicate, then one jitter per copy) is part of determinism.
        if link.loss and rng.random() < link.loss:
            self._drop(src, dst, data, DropReason.LOSS)
            return
        copies = 1
        if link.duplicate and rng.random() < link.duplicate:
            copies = 2
            self.stats.duplicated += 1
        clock = self.clock
        now = clock.now()
        while copies:
            copies -= 1
            when = (
                now + link.delay + link.jitter * rng.random() if link.jitter else now + link.delay
            )
            clock.call_at(when, self._arrive, src, dst, data)

    @property
    def trace(self) -> list[TraceEntry]:
        """The most recent packet fates, oldest first (at most ``trace_limit``)."""
        return [TraceEntry._make(entry) for entry in self._trace] if self._trace is not None else []

    def _arrive(self, src: str, dst: str, data: bytes) -> None:
        # The hot path of every simulation: one datagram reaching its handler.
        if self._partitions and self._separated(src, dst):
            self._drop(src, dst, data, DropReason.PARTITION)
            return
        handler = self._handlers.get(dst)
        if handler is None:
            reason = DropReason.DEAD if dst in self._known else DropReason.UNKNOWN
            self._drop(src, dst, data, reason)
            return
        self.stats.delivered += 1
        if self._trace is not None:
            self._trace.append((self.clock.now(), src, dst, data, None))
        handler(src, data)

    def _separated(self, x: str, y: str) -> bool:
        return any(cut.separates(x, y) for cut in self._partitions)

    def _drop(self, src: str, dst: str, data: bytes, reason: DropReason) -> None:
        self.stats.dropped[reason] += 1
        if self._trace is not None:
            self._trace.append((self.clock.now(), src, dst, data, reason))
