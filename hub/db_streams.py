"""The streams part of the hub's repository: what agents' stream reports say, for the dashboard.

A stream report (:class:`lichen.streamreport.StreamReport`) always carries each stream's count
of readings and the time of its newest; the reading values come only from agents whose
operator shares them. Counts are sampled at each report's receive time (``stream_counts``), so
readings per minute is the growth of a stream's count over a window of samples, whatever the
agent's report cadence. The figures are best-effort: a dashboard, not a record.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, delete, func, select

from hub.db_base import Store, check_node_id, check_page, insert_for
from hub.db_records import Page
from hub.db_schema import devices, readings, stream_counts, streams
from lichen.errors import LocalProtocolError
from lichen.streamreport import StreamReport

log = logging.getLogger("lichen.hub")

MAX_STREAMS_PER_DEVICE = 256
"""Streams kept per device: an agent keeps no more (``edge_agent.streams.MAX_STREAMS``), so
names beyond it come from a device flooding the table, and are ignored."""
READINGS_KEPT = 500
"""Newest readings kept per stream: a chart's worth; older ones are deleted as new ones come."""
RATE_HISTORY = 3600.0
"""Seconds of count samples kept for readings-per-minute figures."""
RATE_WINDOW = 300.0
"""Seconds of count samples a stream's readings per minute is measured over."""
FUTURE_SLACK = 86400.0
"""Readings dated more than this many seconds after the hub's clock are refused: a sensor or
agent clock that far off would pin a chart's end in the future."""


@dataclass(frozen=True)
class Reading:
    """One stored reading: its time, SenML full name, numeric value and unit ("" for none)."""

    at: float
    name: str
    value: float
    unit: str


@dataclass(frozen=True)
class StreamSummary:
    """A stream as the hub knows it from its device's reports."""

    device: str
    device_name: str
    name: str
    readings_total: int
    """Readings the device ever accepted on the stream."""
    newest_at: float | None
    """Time of the newest reading, by the device's (or sensor's) clock."""
    updated_at: float
    """When the hub last received a report on it."""
    per_minute: float | None
    """Growth of the count over the last :data:`RATE_WINDOW` seconds of samples; None with
    fewer than two samples."""
    latest: Reading | None
    """The newest stored reading; None when the device does not share reading values."""


def _rate(row: Row[Any]) -> float | None:
    if row.samples < 2 or row.last_at <= row.first_at or row.high < row.low:
        return None
    return float((row.high - row.low) * 60.0 / (row.last_at - row.first_at))


def _finite(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LocalProtocolError(f"{what} must be a finite number, got {value!r}")
    return float(value)


class StreamsStore(Store):
    """Stream figures and readings (see :class:`hub.db.Database` for the contract)."""

    def record_stream_report(self, device: str, report: StreamReport, now: float) -> int:
        """Record what ``device`` reported at hub time ``now``; return the readings stored.

        Exact duplicates (a QoS 1 redelivery) are stored once; readings dated more than
        :data:`FUTURE_SLACK` ahead of ``now`` are refused; streams beyond
        :data:`MAX_STREAMS_PER_DEVICE` are ignored with a log line. :class:`LocalProtocolError`
        for an unknown device.
        """
        check_node_id(device)
        now = _finite(now, "now")  # reading times and values are finite: StreamReport checks
        horizon = now + FUTURE_SLACK
        with self._write() as conn:
            found = select(devices.c.node_id).where(devices.c.node_id == device)
            if conn.execute(found).first() is None:
                raise LocalProtocolError(f"stream report from unknown device {device}")
            known = set(
                conn.execute(select(streams.c.name).where(streams.c.device == device)).scalars()
            )
            room = MAX_STREAMS_PER_DEVICE - len(known)
            ignored: list[str] = []
            stored = 0
            for figures in report.streams:
                if figures.name not in known:
                    if room <= 0:
                        ignored.append(figures.name)
                        continue
                    room -= 1
                newest = figures.newest
                self._upsert_stream(
                    conn,
                    device,
                    figures.name,
                    figures.readings,
                    newest if newest is None or newest <= horizon else None,
                    now,
                )
                rows = {
                    (r.time, r.name, r.value, r.unit): None
                    for r in figures.latest
                    if r.time <= horizon
                }
                if rows:
                    stored += self._add_readings(conn, device, figures.name, list(rows))
            conn.execute(delete(stream_counts).where(stream_counts.c.at < now - RATE_HISTORY))
        if ignored:
            log.warning(
                "device %s keeps %d streams already: ignored %s",
                device,
                MAX_STREAMS_PER_DEVICE,
                ", ".join(ignored[:8]) + (" ..." if len(ignored) > 8 else ""),
            )
        return stored

    @staticmethod
    def _upsert_stream(
        conn: Connection, device: str, name: str, total: int, newest: float | None, now: float
    ) -> None:
        values = {"readings_total": total, "newest_at": newest, "updated_at": now}
        conn.execute(
            insert_for(conn, streams)
            .values(device=device, name=name, **values)
            .on_conflict_do_update(index_elements=[streams.c.device, streams.c.name], set_=values)
        )
        conn.execute(
            insert_for(conn, stream_counts)
            .values(device=device, name=name, at=now, readings_total=total)
            .on_conflict_do_nothing()
        )

    @staticmethod
    def _add_readings(
        conn: Connection,
        device: str,
        name: str,
        rows: Sequence[tuple[float, str, float, str]],
    ) -> int:
        values = [
            {"device": device, "stream": name, "at": at, "name": n, "value": v, "unit": u}
            for at, n, v, u in rows
        ]
        # RETURNING counts what was inserted on both databases (psycopg reports no rowcount
        # for a multi-row VALUES); a row that conflicts returns nothing.
        added = conn.execute(
            insert_for(conn, readings)
            .values(values)
            .on_conflict_do_nothing()
            .returning(readings.c.id)
        ).all()
        beyond = (
            select(readings.c.id)
            .where(readings.c.device == device, readings.c.stream == name)
            .order_by(readings.c.at.desc(), readings.c.id.desc())
            .offset(READINGS_KEPT)
        )
        conn.execute(delete(readings).where(readings.c.id.in_(beyond)))
        return len(added)

    def list_streams(
        self, limit: int, offset: int, *, now: float | None = None
    ) -> Page[StreamSummary]:
        """Every device's streams, by device name then stream name; ``total`` is exact.

        ``per_minute`` looks back :data:`RATE_WINDOW` seconds from ``now``, or when it is None
        from the newest sample the hub recorded (so a silent device's streams show None).
        """
        check_page(limit, offset)
        with self._read() as conn:
            total = conn.execute(select(func.count()).select_from(streams)).scalar_one()
            rows = conn.execute(
                self._stream_query()
                .order_by(devices.c.name, streams.c.device, streams.c.name)
                .limit(limit)
                .offset(offset)
            ).all()
            items = self._summaries(conn, rows, now)
        return Page(items, total, limit, offset)

    def stream_count(self) -> int:
        """How many streams the hub has reports of."""
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(streams)).scalar_one())

    def get_stream(
        self, device: str, name: str, *, now: float | None = None
    ) -> StreamSummary | None:
        """One stream of one device, or None if the hub has no report of it."""
        with self._read() as conn:
            rows = conn.execute(
                self._stream_query().where(streams.c.device == device, streams.c.name == name)
            ).all()
            found = self._summaries(conn, rows, now)
        return found[0] if found else None

    def stream_readings(
        self, device: str, name: str, limit: int = READINGS_KEPT
    ) -> tuple[Reading, ...]:
        """The newest ``limit`` stored readings of a stream, oldest first."""
        check_page(limit, 0)
        with self._read() as conn:
            rows = conn.execute(
                select(readings.c.at, readings.c.name, readings.c.value, readings.c.unit)
                .where(readings.c.device == device, readings.c.stream == name)
                .order_by(readings.c.at.desc(), readings.c.id.desc())
                .limit(limit)
            ).all()
        return tuple(Reading(r.at, r.name, r.value, r.unit) for r in reversed(rows))

    def readings_per_minute(self, now: float, window: float = RATE_WINDOW) -> float | None:
        """Readings per minute across every stream over the ``window`` seconds before ``now``:
        the sum of each stream's rate; None when no stream has two samples in it."""
        now = _finite(now, "now")
        if _finite(window, "window") <= 0:
            raise LocalProtocolError("the window must be positive")
        with self._read() as conn:
            rates = [_rate(row) for row in conn.execute(self._rates_query(now - window, now))]
        known = [r for r in rates if r is not None]
        return sum(known) if known else None

    # -- queries ---------------------------------------------------------------------------

    @staticmethod
    def _stream_query() -> Any:
        return select(*streams.c, devices.c.name.label("device_name")).join(
            devices, devices.c.node_id == streams.c.device
        )

    @staticmethod
    def _rates_query(start: float, end: float, device_ids: Sequence[str] | None = None) -> Any:
        c = stream_counts.c
        query = select(
            c.device,
            c.name,
            func.count().label("samples"),
            func.min(c.at).label("first_at"),
            func.max(c.at).label("last_at"),
            func.min(c.readings_total).label("low"),
            func.max(c.readings_total).label("high"),
        ).where(c.at >= start, c.at <= end)
        if device_ids is not None:
            query = query.where(c.device.in_(device_ids))
        return query.group_by(c.device, c.name)

    @staticmethod
    def _latest(conn: Connection, device: str, name: str) -> Reading | None:
        # One indexed lookup per stream of the page (the unique index leads with device,
        # stream, at): cheaper than ranking every stored reading of the page's devices.
        row = conn.execute(
            select(readings.c.at, readings.c.name, readings.c.value, readings.c.unit)
            .where(readings.c.device == device, readings.c.stream == name)
            .order_by(readings.c.at.desc(), readings.c.id.desc())
            .limit(1)
        ).first()
        return None if row is None else Reading(row.at, row.name, row.value, row.unit)

    def _summaries(
        self, conn: Connection, rows: Sequence[Row[Any]], now: float | None
    ) -> tuple[StreamSummary, ...]:
        if not rows:
            return ()
        device_ids = sorted({row.device for row in rows})
        end = (
            now if now is not None else conn.execute(select(func.max(stream_counts.c.at))).scalar()
        )
        rates: dict[tuple[str, str], float | None] = {}
        if end is not None:
            query = self._rates_query(end - RATE_WINDOW, end, device_ids)
            rates = {(r.device, r.name): _rate(r) for r in conn.execute(query)}
        latest = {(row.device, row.name): self._latest(conn, row.device, row.name) for row in rows}
        return tuple(
            StreamSummary(
                device=row.device,
                device_name=row.device_name,
                name=row.name,
                readings_total=row.readings_total,
                newest_at=row.newest_at,
                updated_at=row.updated_at,
                per_minute=rates.get((row.device, row.name)),
                latest=latest.get((row.device, row.name)),
            )
            for row in rows
        )
