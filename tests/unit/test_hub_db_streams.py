"""The hub's stream tables (hub.db_streams), the same tests on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
import math

import pytest
from sqlalchemy import func, select

from hub.db import Database
from hub.db_base import MAX_PAGE
from hub.db_schema import readings, stream_counts, streams
from hub.db_streams import (
    FUTURE_SLACK,
    MAX_STREAMS_PER_DEVICE,
    RATE_HISTORY,
    READINGS_KEPT,
    Reading,
)
from lichen.errors import LocalProtocolError
from lichen.streamreport import (
    MAX_REPORT_READINGS_PER_STREAM,
    MAX_REPORT_STREAMS,
    ReportedReading,
    StreamFigures,
    StreamReport,
)
from tests.hubdb import enroll, ident

T0 = 1_700_000_000.0


def reading(
    t: float, value: float = 20.0, name: str = "sensor1:temp", unit: str = "Cel"
) -> ReportedReading:
    return ReportedReading(t, name, value, unit)


def report(*figures: StreamFigures, at: float = T0) -> StreamReport:
    return StreamReport(int(at), tuple(figures))


def temps(count: int, first: float = T0, step: float = 1.0) -> tuple[ReportedReading, ...]:
    return tuple(reading(first + i * step, 20.0 + i / 10) for i in range(count))


def rows(db: Database, table: object) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_a_report_is_recorded(db: Database) -> None:
    dev = enroll(db, 1, name="kitchen pi")
    shared = temps(3)
    stored = db.record_stream_report(
        dev,
        report(
            StreamFigures("kitchen.temp", 42, T0 + 2, shared),
            StreamFigures("garden", 7, T0 - 100),
            StreamFigures("empty", 0, None),
        ),
        T0 + 5,
    )
    assert stored == 3
    page = db.list_streams(10, 0)
    assert page.total == 3 and [s.name for s in page.items] == ["empty", "garden", "kitchen.temp"]
    kitchen = db.get_stream(dev, "kitchen.temp")
    assert kitchen is not None
    assert (kitchen.device, kitchen.device_name) == (dev, "kitchen pi")
    assert (kitchen.readings_total, kitchen.newest_at, kitchen.updated_at) == (42, T0 + 2, T0 + 5)
    assert kitchen.per_minute is None  # one sample only
    assert kitchen.latest == Reading(T0 + 2, "sensor1:temp", 20.2, "Cel")
    garden = db.get_stream(dev, "garden")
    assert garden is not None and garden.latest is None and garden.readings_total == 7
    empty = db.get_stream(dev, "empty")
    assert empty is not None and empty.newest_at is None and empty.readings_total == 0
    assert db.stream_readings(dev, "kitchen.temp") == tuple(
        Reading(r.time, r.name, r.value, r.unit) for r in shared
    )
    assert (
        db.stream_readings(dev, "kitchen.temp", limit=2)
        == db.stream_readings(dev, "kitchen.temp")[1:]
    )
    assert db.stream_readings(dev, "garden") == ()
    assert db.get_stream(dev, "nope") is None
    assert db.get_stream(ident(9).node_id, "garden") is None


def test_a_later_report_updates_the_stream(db: Database) -> None:
    dev = enroll(db, 1)
    db.record_stream_report(dev, report(StreamFigures("s", 1, T0, temps(1))), T0)
    db.record_stream_report(dev, report(StreamFigures("s", 3, T0 + 2, temps(2, T0 + 1))), T0 + 10)
    got = db.get_stream(dev, "s")
    assert got is not None
    assert (got.readings_total, got.newest_at, got.updated_at) == (3, T0 + 2, T0 + 10)
    assert [r.at for r in db.stream_readings(dev, "s")] == [T0, T0 + 1, T0 + 2]


def test_duplicates_are_stored_once(db: Database) -> None:
    dev = enroll(db, 1)
    shared = temps(5)
    message = report(StreamFigures("s", 5, T0 + 4, shared))
    assert db.record_stream_report(dev, message, T0 + 5) == 5
    assert db.record_stream_report(dev, message, T0 + 6) == 0  # a QoS 1 redelivery
    # A report overlapping the last one, and a repeat inside one report.
    overlap = (*shared[3:], reading(T0 + 9), reading(T0 + 9))
    assert db.record_stream_report(dev, report(StreamFigures("s", 6, T0 + 9, overlap)), T0 + 9) == 1
    assert len(db.stream_readings(dev, "s")) == 6
    # Same time and name but another value is another reading.
    other = (reading(T0 + 9, 99.0),)
    assert db.record_stream_report(dev, report(StreamFigures("s", 7, T0 + 9, other)), T0 + 9) == 1


def test_readings_are_pruned_to_the_newest_kept(db: Database) -> None:
    dev = enroll(db, 1)
    other = enroll(db, 2)
    per = MAX_REPORT_READINGS_PER_STREAM
    rounds = READINGS_KEPT // per + 2
    for i in range(rounds):
        batch = temps(per, T0 + i * per)
        total = (i + 1) * per
        db.record_stream_report(dev, report(StreamFigures("s", total, batch[-1].time, batch)), T0)
        db.record_stream_report(other, report(StreamFigures("s", total, None, batch[:1])), T0)
    kept = db.stream_readings(dev, "s")
    assert len(kept) == READINGS_KEPT
    newest = T0 + rounds * per - 1
    assert kept[-1].at == newest and kept[0].at == newest - READINGS_KEPT + 1
    assert [r.at for r in kept] == sorted(r.at for r in kept)
    assert len(db.stream_readings(other, "s")) == rounds  # each stream has its own quota
    assert rows(db, readings) == READINGS_KEPT + rounds


def test_per_minute_figures(db: Database) -> None:
    a, b = enroll(db, 1), enroll(db, 2)
    assert db.readings_per_minute(T0) is None
    for step, total in enumerate((0, 60, 180)):
        now = T0 + 60 * step
        db.record_stream_report(a, report(StreamFigures("fast", total, now)), now)
        db.record_stream_report(b, report(StreamFigures("slow", step * 6, now)), now)
    # Over the last 5 minutes of samples: fast grew 180 in 120 s, slow 12 in 120 s.
    fast = db.get_stream(a, "fast")
    assert fast is not None and fast.per_minute == pytest.approx(90.0)
    slow = db.get_stream(b, "slow", now=T0 + 120)
    assert slow is not None and slow.per_minute == pytest.approx(6.0)
    assert db.readings_per_minute(T0 + 120) == pytest.approx(96.0)
    # A narrower window sees only the last two samples of each.
    assert db.readings_per_minute(T0 + 120, window=60) == pytest.approx(120.0 + 6.0)
    # Long after, nothing is in the window: no figure rather than a stale one.
    assert db.readings_per_minute(T0 + 10_000) is None
    later = db.get_stream(a, "fast", now=T0 + 10_000)
    assert later is not None and later.per_minute is None
    # Without `now`, the window ends at the newest sample the hub has: a device that went
    # silent has no figure once others report on.
    db.record_stream_report(b, report(StreamFigures("slow", 30, T0 + 900)), T0 + 900)
    listed = {s.name: s.per_minute for s in db.list_streams(10, 0).items}
    assert listed == {"fast": None, "slow": None}
    db.record_stream_report(b, report(StreamFigures("slow", 36, T0 + 960)), T0 + 960)
    assert db.list_streams(10, 0).items[1].per_minute == pytest.approx(6.0)


def test_count_samples_are_pruned(db: Database) -> None:
    dev = enroll(db, 1)
    db.record_stream_report(dev, report(StreamFigures("s", 1, None)), T0)
    db.record_stream_report(dev, report(StreamFigures("s", 2, None)), T0 + 10)
    assert rows(db, stream_counts) == 2
    db.record_stream_report(dev, report(StreamFigures("s", 3, None)), T0 + RATE_HISTORY + 5)
    with db.engine.connect() as conn:
        ats = conn.execute(select(stream_counts.c.at).order_by(stream_counts.c.at)).scalars()
        assert list(ats) == [T0 + 10, T0 + RATE_HISTORY + 5]


def test_streams_per_device_are_bounded(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    dev = enroll(db, 1)
    other = enroll(db, 2)
    names = [f"s{i:03d}" for i in range(MAX_STREAMS_PER_DEVICE + 10)]
    with caplog.at_level(logging.WARNING, logger="lichen.hub"):
        for start in range(0, len(names), MAX_REPORT_STREAMS):
            batch = names[start : start + MAX_REPORT_STREAMS]
            figures = [StreamFigures(n, 1, None) for n in batch]
            db.record_stream_report(dev, report(*figures), T0)
    assert f"device {dev} keeps {MAX_STREAMS_PER_DEVICE} streams already" in caplog.text
    first_refused = names[MAX_STREAMS_PER_DEVICE]
    assert first_refused in caplog.text
    assert db.list_streams(MAX_PAGE, 0).total == MAX_STREAMS_PER_DEVICE
    assert db.get_stream(dev, first_refused) is None
    # Known streams still update, with their readings; other devices have their own room.
    db.record_stream_report(dev, report(StreamFigures("s000", 9, T0, temps(1))), T0 + 1)
    known = db.get_stream(dev, "s000")
    assert known is not None and known.readings_total == 9 and known.latest is not None
    assert db.record_stream_report(other, report(StreamFigures("x", 1, T0, temps(1))), T0) == 1


def test_future_readings_are_refused(db: Database) -> None:
    dev = enroll(db, 1)
    now = T0
    shared = (reading(now + FUTURE_SLACK - 1), reading(now + FUTURE_SLACK + 1))
    stored = db.record_stream_report(
        dev, report(StreamFigures("s", 2, now + FUTURE_SLACK + 1, shared)), now
    )
    assert stored == 1
    assert [r.at for r in db.stream_readings(dev, "s")] == [now + FUTURE_SLACK - 1]
    got = db.get_stream(dev, "s")
    assert got is not None and got.newest_at is None  # the future newest time is not kept


def test_listing_order_and_pages(db: Database) -> None:
    zed = enroll(db, 1, name="zed")
    amy = enroll(db, 2, name="amy")
    db.record_stream_report(zed, report(StreamFigures("a", 1, None)), T0)
    db.record_stream_report(
        amy, report(StreamFigures("b", 1, None), StreamFigures("a", 1, None)), T0
    )
    everything = db.list_streams(10, 0)
    assert [(s.device_name, s.name) for s in everything.items] == [
        ("amy", "a"),
        ("amy", "b"),
        ("zed", "a"),
    ]
    page = db.list_streams(2, 1)
    assert page.total == 3 and (page.limit, page.offset) == (2, 1)
    assert [(s.device_name, s.name) for s in page.items] == [("amy", "b"), ("zed", "a")]
    assert db.list_streams(2, 3).items == ()


def test_bad_calls_are_local_errors(db: Database) -> None:
    dev = enroll(db, 1)
    message = report(StreamFigures("s", 1, T0, temps(1)))
    with pytest.raises(LocalProtocolError, match="unknown device"):
        db.record_stream_report(ident(9).node_id, message, T0)
    with pytest.raises(LocalProtocolError):
        db.record_stream_report("not a node id", message, T0)
    with pytest.raises(LocalProtocolError):
        db.record_stream_report(dev, message, math.nan)
    for limit, offset in [(0, 0), (MAX_PAGE + 1, 0), (1, -1)]:
        with pytest.raises(LocalProtocolError):
            db.list_streams(limit, offset)
    with pytest.raises(LocalProtocolError):
        db.stream_readings(dev, "s", limit=0)
    with pytest.raises(LocalProtocolError):
        db.readings_per_minute(math.inf)
    with pytest.raises(LocalProtocolError):
        db.readings_per_minute(T0, window=0)
    assert rows(db, streams) == 0  # nothing was written by the refused calls
