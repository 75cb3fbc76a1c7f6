"""What an agent reports to the hub about its streams: StreamStore snapshots and the report
built from them (edge_agent.streams, lichen.streamreport.stream_report)."""

from __future__ import annotations

import asyncio
import queue
import threading
from pathlib import Path

import pytest

from edge_agent.streams import REPORT_BUFFER, StreamStore
from lichen import cid, senml
from lichen.identity import Identity
from lichen.streamreport import (
    MAX_REPORT_READINGS,
    MAX_REPORT_READINGS_PER_STREAM,
    MAX_REPORT_STREAMS,
    ReportedReading,
    StreamReport,
    StreamSnapshot,
    stream_report,
)

ME = Identity(bytes(range(32)))
T0 = 1_700_000_000.0
WAIT = 30.0  # seconds: a last resort should a thread die; every wait ends on an event


async def _seal(name: str, pack: bytes, seq: int) -> bytes:
    return cid.of(pack)


def open_store(root: Path) -> StreamStore:
    store = StreamStore(root, ME, segment_readings=1000, segment_seconds=300.0, seal_object=_seal)
    store.open_all()
    return store


def temp(t: float, value: float = 21.5) -> senml.Record:
    return senml.Record("sensor1:temp", t, value, "Cel")


def by_name(store: StreamStore) -> dict[str, StreamSnapshot]:
    return {s.name: s for s in store.snapshot()}


# -- snapshots ---------------------------------------------------------------------------------


def test_snapshot_counts_newest_and_numeric_readings(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    assert store.snapshot() == []
    store.append("kitchen", [temp(T0 + 5), temp(T0 + 1, 20.0)])
    store.append(
        "kitchen",
        [
            senml.Record("door", T0 + 2, True),
            senml.Record("label", T0 + 3, "open"),
            senml.Record("blob", T0 + 3, b"\x00"),
            senml.Record("energy", T0 + 4, None, "J", sum=10.0),
        ],
    )
    store.append("garden", [temp(T0)])
    snaps = by_name(store)
    kitchen = snaps["kitchen"]
    assert (kitchen.readings, kitchen.newest) == (6, T0 + 5)  # newest by time, not by order
    assert [(seq, r.value) for seq, r in kitchen.recent] == [(0, 21.5), (1, 20.0)]
    assert snaps["garden"].written > kitchen.written > 0
    assert [s.name for s in store.snapshot()] == ["garden", "kitchen"]
    store.close()


def test_the_buffer_keeps_the_newest_readings(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for i in range(REPORT_BUFFER + 10):
        store.append("s", [temp(T0 + i, float(i))])
    snap = by_name(store)["s"]
    assert snap.readings == REPORT_BUFFER + 10
    assert [seq for seq, _ in snap.recent] == list(range(10, REPORT_BUFFER + 10))
    store.close()


def test_after_a_restart_counts_and_newest_come_from_disk(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append("sealed", [temp(T0 + 7), temp(T0 + 3)])
    assert asyncio.run(store.seal("sealed"))
    store.append("pending", [temp(T0 + 9), temp(T0 + 8)])
    store.append("both", [temp(T0 + 20)])
    assert asyncio.run(store.seal("both"))
    store.append("both", [temp(T0 + 10)])
    store.close()

    again = open_store(tmp_path)
    snaps = by_name(again)
    assert {n: (s.readings, s.newest) for n, s in snaps.items()} == {
        "sealed": (2, T0 + 7),
        "pending": (2, T0 + 9),
        "both": (2, T0 + 20),
    }
    assert all(s.recent == () and s.written == 0 for s in snaps.values())
    again.close()


def test_snapshots_while_appends_run_in_threads(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    threads, per = 4, 25
    # Every append stops half done (durable, not yet counted) until a snapshot has been taken,
    # so each snapshot overlaps an append for certain; appends to other streams go on meanwhile.
    held: queue.Queue[threading.Event] = queue.Queue()
    seen: list[int] = []

    def hold() -> None:
        go = threading.Event()
        held.put(go)
        go.wait(WAIT)

    def write(name: str) -> None:
        for i in range(per):
            store.append(name, [temp(T0 + i)], on_durable=hold)

    workers = [threading.Thread(target=write, args=(f"s{i % 2}",)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for _ in range(threads * per):
        go = held.get(timeout=WAIT)
        seen.append(sum(s.readings for s in store.snapshot()))
        go.set()
    for worker in workers:
        worker.join()
    assert seen == sorted(seen)  # counts never go back
    # The n-th snapshot counts at most the n appends let go before it, not the one held.
    assert all(count <= n for n, count in enumerate(seen)), seen
    assert {s.name: s.readings for s in store.snapshot()} == {"s0": 2 * per, "s1": 2 * per}
    store.close()


# -- the report built from snapshots ------------------------------------------------------------


def snap(
    name: str, readings: int, written: int = 1, recent: int = 0, newest: float | None = T0
) -> StreamSnapshot:
    numbered = tuple((readings - recent + i, temp(T0 + i, float(i))) for i in range(recent))
    return StreamSnapshot(name, readings, newest, written, numbered)


def build(*snaps: StreamSnapshot, sent: dict[str, int] | None = None, **kw: bool) -> StreamReport:
    options = {"share": True, "everything": False} | kw
    built = stream_report(snaps, sent or {}, now=T0 + 0.9, **options)
    assert built is not None
    return built[0]


def test_nothing_changed_nothing_sent() -> None:
    snaps = [snap("a", 3), snap("b", 0, newest=None)]
    assert stream_report([], {}, share=True, everything=True, now=T0) is None
    assert stream_report(snaps, {"a": 3, "b": 0}, share=True, everything=False, now=T0) is None
    # After a (re)connect everything is reported, changed or not, so the hub learns counts.
    built = stream_report(snaps, {"a": 3, "b": 0}, share=True, everything=True, now=T0)
    assert built is not None
    report, sent = built
    assert sent == {"a": 3, "b": 0}
    assert [(f.name, f.readings, f.latest) for f in report.streams] == [("a", 3, ()), ("b", 0, ())]


def test_readings_since_the_last_report() -> None:
    snaps = [snap("a", 10, recent=5), snap("b", 2, recent=2)]
    built = stream_report(snaps, {"a": 8}, share=True, everything=False, now=T0 + 0.9)
    assert built is not None
    report, sent = built
    assert report.time == int(T0)
    assert sent == {"a": 10, "b": 2}
    a, b = report.streams
    assert a.latest == (
        ReportedReading(T0 + 3, "sensor1:temp", 3.0, "Cel"),
        ReportedReading(T0 + 4, "sensor1:temp", 4.0, "Cel"),
    )
    assert len(b.latest) == 2  # never reported before: all it has
    # Not shared: counts and times only.
    hidden = build(*snaps, share=False)
    assert [(f.readings, f.newest, f.latest) for f in hidden.streams] == [(10, T0, ()), (2, T0, ())]


def test_the_most_recently_written_streams_are_reported_within_bounds() -> None:
    snaps = [
        snap(f"s{i:03d}", 100, written=i, recent=MAX_REPORT_READINGS_PER_STREAM) for i in range(256)
    ]
    report = build(*snaps)
    assert len(report.streams) == MAX_REPORT_STREAMS
    assert {f.name for f in report.streams} == {f"s{i:03d}" for i in range(192, 256)}
    per = MAX_REPORT_READINGS // MAX_REPORT_STREAMS
    assert all(len(f.latest) == per for f in report.streams)
    assert [r.value for r in report.streams[0].latest] == [float(i) for i in range(24, 32)]
    assert sum(len(f.latest) for f in report.streams) <= MAX_REPORT_READINGS
    few = build(*snaps[:3])
    assert all(len(f.latest) == MAX_REPORT_READINGS_PER_STREAM for f in few.streams)
    assert len(report.sign(ME)) < 64 * 1024


@pytest.mark.parametrize("share", [True, False])
def test_a_real_store_report_round_trip(tmp_path: Path, share: bool) -> None:
    store = open_store(tmp_path)
    store.append("kitchen", [temp(T0), senml.Record("door", T0, True), temp(T0 + 1, 22.0)])
    first = stream_report(store.snapshot(), {}, share=share, everything=True, now=T0 + 2)
    assert first is not None
    report, sent = first
    assert sent == {"kitchen": 3}
    expected = (
        (
            ReportedReading(T0, "sensor1:temp", 21.5, "Cel"),
            ReportedReading(T0 + 1, "sensor1:temp", 22.0, "Cel"),
        )
        if share
        else ()
    )
    assert report.streams[0].latest == expected
    assert StreamReport.from_payload(report.to_payload()) == report
    store.append("kitchen", [temp(T0 + 3, 23.0)])
    second = stream_report(store.snapshot(), sent, share=share, everything=False, now=T0 + 4)
    assert second is not None
    assert [r.value for r in second[0].streams[0].latest] == ([23.0] if share else [])
    store.close()
