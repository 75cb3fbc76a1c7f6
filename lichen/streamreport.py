"""Stream reports (agent -> hub): each stream's count and newest time, for the hub's dashboard,
and the newest numeric readings when the agent's operator shares them.

Signed by the agent as a COSE_Sign1 and sent on its ``streams`` topic (:mod:`lichen.hubwire`),
QoS 1, not retained. Format (CDDL)::

    stream-report = {              ; QoS 1, not retained
      0 => 1, 1 => 21,             ; envelope: v, kind STREAM_REPORT
      2 => uint,                   ; time, unix seconds
      3 => [* stream-figures],     ; at most 64, distinct names
    }
    stream-figures = [
      tstr,                        ; stream name (lichen.stream.check_stream_name)
      uint,                        ; readings ever accepted on the stream
      number / null,               ; time of the newest reading, unix seconds; null: none yet
      [* reported-reading],        ; accepted since the previous report, newest last; at most
    ]                              ; 32 per stream and 512 per report; [] unless shared
    reported-reading = [
      number,                      ; time, unix seconds
      tstr,                        ; SenML full name (RFC 8428 section 4.5.1), <= 255 chars
      number,                      ; the numeric value (v), finite
      tstr,                        ; unit, "" when none, at most 64 characters
    ]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lichen import cose, senml, stream, wire
from lichen.errors import LocalProtocolError, MalformedMessage
from lichen.fieldcheck import (
    is_number,
    is_uint,
    local_check,
    no_tag_limits,
    remote_build,
    require,
)
from lichen.identity import Identity

# Stream reports (agent -> hub, for the dashboard). An agent keeps up to 256 streams
# (edge_agent.streams.MAX_STREAMS): a report carries the most recently written 64, and of the
# readings since the last report at most 32 per stream and 512 in all, which a report every
# minute or so keeps a chart current without letting one agent flood the hub's tables.
MAX_REPORT_STREAMS = 64
MAX_REPORT_READINGS_PER_STREAM = 32
MAX_REPORT_READINGS = 512
# 512 readings of at most 9 + 258 + 9 + 66 bytes, 64 streams of at most 100 bytes and the
# COSE wrapper come to under 190 KiB: every report within the counts fits.
MAX_STREAMS_SIZE = 256 * 1024
# map, streams, figures, readings, reading: 5 deep; 6 items per figures, 5 per reading.
STREAMS_LIMITS = no_tag_limits(
    MAX_STREAMS_SIZE, 5, 16 + MAX_REPORT_STREAMS * 6 + MAX_REPORT_READINGS * 5
)


@dataclass(frozen=True)
class ReportedReading:
    """One numeric reading as the agent stored it, for the hub's charts."""

    time: float
    name: str
    """The SenML full name (base name + name), e.g. ``sensor1:temp``."""
    value: float
    unit: str = ""
    """"" when the reading has none."""

    def __post_init__(self) -> None:
        local_check(self._check)
        object.__setattr__(self, "time", float(self.time))
        object.__setattr__(self, "value", float(self.value))

    def _check(self) -> None:
        require(is_number(self.time) and is_number(self.value), "reading: bad time or value")
        require(isinstance(self.unit, str), "reading: the unit is text")
        try:  # the SenML rules for names and units (RFC 8428 section 4.5.1, 12.1)
            senml.Record(self.name, float(self.time), float(self.value), self.unit or None)
        except LocalProtocolError as exc:
            raise MalformedMessage(f"reading: {exc}") from None

    def to_list(self) -> list[Any]:
        """The reading as a CBOR array."""
        return [self.time, self.name, self.value, self.unit]

    @classmethod
    def from_list(cls, raw: object) -> ReportedReading:
        """A reading from an untrusted CBOR array; :class:`MalformedMessage`."""
        require(isinstance(raw, list) and len(raw) == 4, "reading: [time, name, value, unit]")
        assert isinstance(raw, list)
        return remote_build(lambda: cls(raw[0], raw[1], raw[2], raw[3]))


@dataclass(frozen=True)
class StreamFigures:
    """One stream's count, newest reading time and (when shared) its readings since the last
    report, newest last."""

    name: str
    readings: int
    """Readings ever accepted on the stream: its next reading number."""
    newest: float | None
    latest: tuple[ReportedReading, ...] = ()

    def __post_init__(self) -> None:
        local_check(self._check)
        if self.newest is not None:
            object.__setattr__(self, "newest", float(self.newest))

    def _check(self) -> None:
        stream.check_stream_name(self.name)
        require(is_uint(self.readings), "stream figures: bad reading count")
        require(self.newest is None or is_number(self.newest), "stream figures: bad newest time")
        require(
            isinstance(self.latest, tuple)
            and len(self.latest) <= MAX_REPORT_READINGS_PER_STREAM
            and all(isinstance(r, ReportedReading) for r in self.latest),
            f"stream figures: at most {MAX_REPORT_READINGS_PER_STREAM} ReportedReadings",
        )

    def to_list(self) -> list[Any]:
        """The figures as a CBOR array."""
        return [self.name, self.readings, self.newest, [r.to_list() for r in self.latest]]

    @classmethod
    def from_list(cls, raw: object) -> StreamFigures:
        """Figures from an untrusted CBOR array; :class:`MalformedMessage`."""
        require(
            isinstance(raw, list) and len(raw) == 4 and isinstance(raw[3], list),
            "stream figures: [name, readings, newest, [readings]]",
        )
        assert isinstance(raw, list)
        require(len(raw[3]) <= MAX_REPORT_READINGS_PER_STREAM, "stream figures: too many")
        latest = tuple(ReportedReading.from_list(r) for r in raw[3])
        return remote_build(lambda: cls(raw[0], raw[1], raw[2], latest))


@dataclass(frozen=True)
class StreamReport:
    """An agent's stream figures for the hub's dashboard (agent -> hub). Counts always; reading
    values only when the agent's operator shares them."""

    time: int
    streams: tuple[StreamFigures, ...]

    def __post_init__(self) -> None:
        local_check(self._check)

    def _check(self) -> None:
        require(is_uint(self.time), "stream report: bad time")
        require(
            isinstance(self.streams, tuple)
            and len(self.streams) <= MAX_REPORT_STREAMS
            and all(isinstance(f, StreamFigures) for f in self.streams),
            f"stream report: at most {MAX_REPORT_STREAMS} StreamFigures",
        )
        names = [f.name for f in self.streams]
        require(len(set(names)) == len(names), "stream report: a stream is named twice")
        total = sum(len(f.latest) for f in self.streams)
        require(total <= MAX_REPORT_READINGS, f"stream report: over {MAX_REPORT_READINGS} readings")

    def to_payload(self) -> bytes:
        """The CBOR map the agent signs (kind STREAM_REPORT)."""
        fields = {2: self.time, 3: [f.to_list() for f in self.streams]}
        return wire.encode(wire.Kind.STREAM_REPORT, fields)

    def sign(self, identity: Identity) -> bytes:
        """The report as ``identity`` publishes it."""
        signed = cose.sign1(self.to_payload(), identity)
        if len(signed) > MAX_STREAMS_SIZE:  # cannot happen within the counts; checked anyway
            raise LocalProtocolError(f"stream report exceeds {MAX_STREAMS_SIZE} bytes")
        return signed

    @classmethod
    def from_payload(cls, payload: bytes) -> StreamReport:
        """Decode an untrusted STREAM_REPORT map; :class:`MalformedMessage`."""
        f = wire.decode(payload, wire.Kind.STREAM_REPORT, STREAMS_LIMITS)
        time = f.uint(2)
        figures = tuple(
            StreamFigures.from_list(raw) for raw in f.array(3, max_len=MAX_REPORT_STREAMS)
        )
        f.finish()
        return remote_build(lambda: cls(time, figures))


@dataclass(frozen=True)
class StreamSnapshot:
    """One stream's figures at one moment, for a report to the hub."""

    name: str
    readings: int
    """Readings ever accepted: the stream's next reading number."""
    newest: float | None
    """Time of the newest reading (sealed or pending); None when there is none."""
    written: int
    """Store-wide order of the stream's last append: higher is more recent; 0: none since
    the agent started."""
    recent: tuple[tuple[int, senml.Record], ...]
    """The newest numeric readings accepted since the agent started, with their numbers,
    oldest first (at most the agent's buffer)."""


def stream_report(
    snapshots: Sequence[StreamSnapshot],
    sent: Mapping[str, int],
    *,
    share: bool,
    everything: bool,
    now: float,
) -> tuple[StreamReport, dict[str, int]] | None:
    """The report to send, and each reported stream's count to remember as sent; None when
    no stream changed since ``sent`` (stream -> count last acknowledged) and not
    ``everything``.

    It carries the most recently written streams (up to 64), and with ``share`` the numeric
    readings numbered from the count sent on: the newest of them, 32 per stream when few
    streams report, fewer when many do, so the report stays within 512.
    """
    if not snapshots or (not everything and all(sent.get(s.name) == s.readings for s in snapshots)):
        return None
    chosen = sorted(snapshots, key=lambda s: (-s.written, s.name))[:MAX_REPORT_STREAMS]
    per = min(MAX_REPORT_READINGS_PER_STREAM, MAX_REPORT_READINGS // max(len(chosen), 1))
    figures = []
    for snap in sorted(chosen, key=lambda s: s.name):
        since = sent.get(snap.name, 0)
        fresh = [r for seq, r in snap.recent if seq >= since] if share else []
        latest = tuple(
            ReportedReading(r.time, r.name, float(r.value), r.unit or "")
            for r in fresh[-per:]
            if isinstance(r.value, float)
        )
        figures.append(StreamFigures(snap.name, snap.readings, snap.newest, latest))
    report = StreamReport(int(now), tuple(figures))
    return report, {f.name: f.readings for f in figures}
