"""The in-memory network: determinism, loss, partitions, dead hosts, delay, size."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from lichen.errors import ConfigError, LocalProtocolError
from lichen.testing import (
    DropReason,
    FakeClock,
    LinkConfig,
    MemoryNetwork,
    TraceEntry,
)

Inbox = list[tuple[float, str, bytes]]


def make(
    seed: int = 1, default: LinkConfig | None = None, trace_limit: int = 4096
) -> tuple[FakeClock, MemoryNetwork]:
    clock = FakeClock()
    return clock, MemoryNetwork(
        clock, random.Random(seed), default=default, trace_limit=trace_limit
    )


def inbox(clock: FakeClock, into: Inbox) -> Callable[[str, bytes], None]:
    return lambda src, data: into.append((clock.now(), src, data))


def wire(net: MemoryNetwork, *names: str) -> dict[str, Inbox]:
    boxes: dict[str, Inbox] = {}
    for name in names:
        boxes[name] = []
        net.attach(name, inbox(net.clock, boxes[name]))
    return boxes


def balanced(net: MemoryNetwork) -> bool:
    s = net.stats
    return s.sent + s.duplicated == s.delivered + s.dropped_total


def test_delivery_goes_through_the_clock() -> None:
    clock, net = make(default=LinkConfig(delay=0.25))
    boxes = wire(net, "a", "b")
    net.send("a", "b", b"hi")
    assert boxes["b"] == []
    clock.advance(0.2)
    assert boxes["b"] == []
    clock.advance(0.05)
    assert boxes["b"] == [(0.25, "a", b"hi")]
    assert net.stats.sent == 1 and net.stats.delivered == 1
    assert net.trace == [TraceEntry(0.25, "a", "b", b"hi", None)]


def lossy_run(seed: int) -> list[TraceEntry]:
    clock, net = make(seed, LinkConfig(loss=0.2, delay=0.01, jitter=0.05, duplicate=0.1))
    wire(net, "a", "b", "c")
    for i in range(300):
        src, dst = ["a", "b", "c"][i % 3], ["b", "c", "a"][i % 3]
        net.send(src, dst, i.to_bytes(2, "big"))
        if i % 7 == 0:
            clock.advance(0.013)
    clock.run_until_idle()
    assert balanced(net)
    return net.trace


def test_same_seed_same_trace() -> None:
    first = lossy_run(42)
    assert first == lossy_run(42)
    assert first != lossy_run(43)
    fates = {entry.dropped for entry in first}
    assert fates == {None, DropReason.LOSS}


def test_loss_rate_is_close_to_configured() -> None:
    # With n = 10,000 and p = 0.1 the number lost is Binomial(n, p): sd = sqrt(n p (1-p)) = 30.
    # A tolerance of 5 sd (150 packets, 1.5 percentage points) fails for a fair seed with
    # probability about 6e-7, yet still catches a rate that is off by a sixth.
    n, p = 10_000, 0.1
    for seed in range(3):
        clock, net = make(seed, LinkConfig(loss=p), trace_limit=0)
        boxes = wire(net, "a", "b")
        for _ in range(n):
            net.send("a", "b", b"x")
        clock.run_until_idle()
        lost = net.stats.dropped[DropReason.LOSS]
        assert abs(lost - n * p) <= 5 * math.sqrt(n * p * (1 - p))
        assert len(boxes["b"]) == n - lost == net.stats.delivered


def test_duplication_delivers_twice() -> None:
    clock, net = make(default=LinkConfig(duplicate=1.0))
    boxes = wire(net, "a", "b")
    net.send("a", "b", b"x")
    clock.run_until_idle()
    assert [d for _, _, d in boxes["b"]] == [b"x", b"x"]
    assert net.stats.duplicated == 1 and balanced(net)


def test_partition_blocks_both_directions_and_heal_restores() -> None:
    clock, net = make()
    boxes = wire(net, "a1", "a2", "b1", "c")
    cut = net.partition(["a1", "a2"], ["b1"])
    for src, dst in [("a1", "b1"), ("b1", "a1"), ("a2", "b1"), ("a1", "a2"), ("c", "a1")]:
        net.send(src, dst, f"{src}>{dst}".encode())
    clock.run_until_idle()
    assert [d for _, _, d in boxes["b1"]] == []
    assert [d for _, _, d in boxes["a1"]] == [b"c>a1"]
    assert [d for _, _, d in boxes["a2"]] == [b"a1>a2"]
    assert net.stats.dropped[DropReason.PARTITION] == 3
    net.heal(cut)
    assert net.partitions == []
    net.send("a1", "b1", b"after")
    net.send("b1", "a1", b"after")
    clock.run_until_idle()
    assert boxes["b1"][-1][2] == b"after" and boxes["a1"][-1][2] == b"after"
    with pytest.raises(LocalProtocolError):
        net.heal(cut)


def test_partition_against_everyone_else_and_heal_all() -> None:
    clock, net = make()
    boxes = wire(net, "x", "y", "z")
    net.partition(["x"])
    net.partition(["y"], ["z"])
    for src, dst in [("x", "y"), ("z", "x"), ("y", "z"), ("z", "y")]:
        net.send(src, dst, b".")
    clock.run_until_idle()
    assert net.stats.delivered == 0 and net.stats.dropped[DropReason.PARTITION] == 4
    net.heal()
    net.send("x", "y", b"ok")
    clock.run_until_idle()
    assert boxes["y"][-1][2] == b"ok"


def test_partition_catches_packets_in_flight() -> None:
    clock, net = make(default=LinkConfig(delay=1.0))
    boxes = wire(net, "a", "b")
    net.send("a", "b", b"in flight")
    clock.advance(0.5)
    net.partition(["a"], ["b"])
    clock.run_until_idle()
    assert boxes["b"] == []
    assert net.stats.dropped[DropReason.PARTITION] == 1


def test_partition_groups_must_be_sane() -> None:
    _, net = make()
    with pytest.raises(LocalProtocolError):
        net.partition([], ["a"])
    with pytest.raises(LocalProtocolError):
        net.partition(["a", "b"], ["b"])


def test_detach_drops_traffic_both_ways_and_attach_restores() -> None:
    clock, net = make(default=LinkConfig(delay=1.0))
    boxes = wire(net, "a", "b")
    net.send("a", "b", b"in flight")
    net.detach("b")
    assert not net.is_attached("b") and net.addresses == ["a"]
    net.send("b", "a", b"from the dead")
    net.send("a", "b", b"to the dead")
    clock.run_until_idle()
    assert boxes["a"] == [] and boxes["b"] == []
    assert net.stats.dropped[DropReason.DEAD] == 3
    reborn: Inbox = []
    net.attach("b", inbox(clock, reborn))
    net.send("a", "b", b"welcome back")
    clock.run_until_idle()
    assert [d for _, _, d in reborn] == [b"welcome back"]
    assert balanced(net)


def test_unknown_addresses() -> None:
    clock, net = make()
    wire(net, "a")
    net.send("a", "nobody", b"?")
    clock.run_until_idle()
    assert net.stats.dropped == {DropReason.UNKNOWN: 1}
    with pytest.raises(LocalProtocolError):
        net.send("nobody", "a", b"?")
    with pytest.raises(LocalProtocolError):
        net.attach("a", lambda s, d: None)
    with pytest.raises(LocalProtocolError):
        net.detach("nobody")


def test_delay_orders_arrivals() -> None:
    clock, net = make(default=LinkConfig(delay=0.1))
    boxes = wire(net, "fast", "slow", "dst")
    net.set_latency("slow", "dst", 0.5)
    net.send("slow", "dst", b"slow")
    net.send("fast", "dst", b"fast")
    clock.advance(0.1)
    net.send("fast", "dst", b"fast2")
    clock.run_until_idle()
    assert boxes["dst"] == [(0.1, "fast", b"fast"), (0.2, "fast", b"fast2"), (0.5, "slow", b"slow")]
    assert net.link("dst", "slow").delay == 0.5
    assert net.link("fast", "dst") == net.default


def test_equal_delay_keeps_send_order() -> None:
    clock, net = make()
    boxes = wire(net, "a", "b")
    for i in range(100):
        net.send("a", "b", bytes([i]))
    clock.run_until_idle()
    assert [d[0] for _, _, d in boxes["b"]] == list(range(100))


def test_jitter_stays_within_bounds() -> None:
    clock, net = make(default=LinkConfig(delay=0.1, jitter=0.05))
    boxes = wire(net, "a", "b")
    for _ in range(500):
        net.send("a", "b", b"j")
    clock.run_until_idle()
    times = [t for t, _, _ in boxes["b"]]
    assert all(0.1 <= t < 0.15 for t in times)
    assert max(times) - min(times) > 0.04


def test_oversize_is_dropped_and_counted() -> None:
    clock, net = make(default=LinkConfig(max_datagram=1152))
    boxes = wire(net, "a", "b")
    net.send("a", "b", bytes(1152))
    net.send("a", "b", bytes(1153))
    net.set_link("a", "b", LinkConfig(max_datagram=10), both_ways=False)
    net.send("a", "b", bytes(11))
    net.send("b", "a", bytes(11))
    clock.run_until_idle()
    assert [len(d) for _, _, d in boxes["b"]] == [1152]
    assert len(boxes["a"]) == 1
    assert net.stats.dropped == {DropReason.OVERSIZE: 2}
    net.clear_link("a", "b")
    assert net.link("a", "b") == net.default


def test_per_link_loss_overrides_the_default() -> None:
    clock, net = make()
    boxes = wire(net, "a", "b", "c")
    net.set_link("a", "b", LinkConfig(loss=1.0))
    for _ in range(10):
        net.send("a", "b", b"x")
        net.send("b", "a", b"x")
        net.send("a", "c", b"x")
    clock.run_until_idle()
    assert len(boxes["b"]) == 0 and len(boxes["a"]) == 0 and len(boxes["c"]) == 10
    assert net.stats.dropped == {DropReason.LOSS: 20}


@pytest.mark.parametrize(
    "bad",
    [
        {"loss": -0.1},
        {"loss": 1.5},
        {"duplicate": float("nan")},
        {"delay": -1.0},
        {"jitter": float("inf")},
        {"max_datagram": -1},
    ],
)
def test_bad_link_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        LinkConfig(**bad)  # type: ignore[arg-type]


def test_trace_is_bounded_and_can_be_off() -> None:
    clock, net = make(trace_limit=5)
    wire(net, "a", "b")
    for i in range(20):
        net.send("a", "b", bytes([i]))
    clock.run_until_idle()
    assert [e.data[0] for e in net.trace] == [15, 16, 17, 18, 19]
    clock, net = make(trace_limit=0)
    wire(net, "a", "b")
    net.send("a", "b", b"x")
    clock.run_until_idle()
    assert net.trace == [] and net.stats.delivered == 1
    with pytest.raises(ConfigError):
        make(trace_limit=-1)


def test_handlers_can_send_from_inside_a_delivery() -> None:
    clock, net = make(default=LinkConfig(delay=0.5))
    seen: list[tuple[float, bytes]] = []

    def ping(src: str, data: bytes) -> None:
        seen.append((clock.now(), data))
        if len(data) < 4:
            net.send("p", src, data + b"!")

    net.attach("p", ping)
    net.attach("q", lambda src, data: net.send("q", src, data + b"?"))
    net.send("p", "q", b"")
    clock.run_until_idle()
    assert seen == [(1.0, b"?"), (2.0, b"?!?"), (3.0, b"?!?!?")]


def test_ten_thousand_endpoints_hear_one_broadcast() -> None:
    clock, net = make(default=LinkConfig(delay=0.002, jitter=0.003), trace_limit=0)
    heard: list[str] = []
    names = [f"n{i}" for i in range(10_000)]

    def listener(name: str) -> Callable[[str, bytes], None]:
        return lambda src, data: heard.append(name)

    for name in names:
        net.attach(name, listener(name))
    for name in names[1:]:
        net.send("n0", name, b"hello, mesh")
    clock.run_until_idle()
    assert sorted(heard) == sorted(names[1:])
    assert net.stats.delivered == 9_999 and clock.now() < 0.005
