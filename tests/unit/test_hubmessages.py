"""Stream reports (agent -> hub): golden vectors, round trips, bounds and refusals."""

from __future__ import annotations

import math
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lichen import cbor, cose, hubwire, wire
from lichen.errors import (
    BadSignature,
    LocalProtocolError,
    MalformedMessage,
    NotAuthorised,
    RemoteProtocolError,
    UnsupportedVersion,
)
from lichen.hubwire import KnownDevice, Name, open_from_agent, topic
from lichen.identity import Identity
from lichen.streamreport import (
    MAX_REPORT_READINGS,
    MAX_REPORT_READINGS_PER_STREAM,
    MAX_REPORT_STREAMS,
    MAX_STREAMS_SIZE,
    ReportedReading,
    StreamFigures,
    StreamReport,
)

A = Identity(bytes(range(1, 33)))
B = Identity(bytes(range(2, 34)))
NOW = 1_700_000_000
ENROLLED = {i.node_id: KnownDevice(i.public) for i in (A, B)}.get
TOPIC = topic(A.node_id, Name.STREAMS)

REPORT = StreamReport(
    NOW,
    (
        StreamFigures(
            "kitchen.temp",
            42,
            NOW + 0.5,
            (
                ReportedReading(NOW - 9.75, "sensor1:temp", 21.5, "Cel"),
                ReportedReading(NOW + 0.5, "sensor1:temp", 21.75, "Cel"),
            ),
        ),
        StreamFigures("garden", 0, None, ()),
    ),
)
REPORT_HEX = (
    "a400010115021a6553f1000382846c6b69746368656e2e74656d70182afb41d954fc402000008284fb41d954fc"
    "3d9000006c73656e736f72313a74656d70f94d606343656c84fb41d954fc402000006c73656e736f72313a7465"
    "6d70f94d706343656c846667617264656e00f680"
)
SIGNED_HEX = (
    "d28443a10127a1045465b60673d6ed884bf01c2c222d82ada0740f29ac586ea400010115021a6553f100038284"
    "6c6b69746368656e2e74656d70182afb41d954fc402000008284fb41d954fc3d9000006c73656e736f72313a74"
    "656d70f94d606343656c84fb41d954fc402000006c73656e736f72313a74656d70f94d706343656c8466676172"
    "64656e00f6805840a560bf64206a7c5325f2043e1953a7200aa3506914d1948b8e4c215a09fde104650d9aedb3"
    "a8e0b4bac4c9c1c639901d376131ef67fa43ce15e46dc29d5a890b"
)


def fields() -> dict[int, Any]:
    return dict(cbor2.loads(REPORT.to_payload()))


def send(payload_fields: dict[int, Any], signer: Identity = A) -> Any:
    return open_from_agent(TOPIC, cose.sign1(cbor.encode(payload_fields), signer), ENROLLED)


def figures_list(name: Any = "s", count: Any = 1, newest: Any = 1.0, latest: Any = ()) -> list[Any]:
    return [name, count, newest, list(latest)]


def reading_list(time: Any = 1.0, name: Any = "n", value: Any = 1.0, unit: Any = "") -> list[Any]:
    return [time, name, value, unit]


# -- golden vectors and round trips -----------------------------------------------------------


def test_stream_report_golden() -> None:
    assert REPORT.to_payload().hex() == REPORT_HEX
    assert REPORT.sign(A).hex() == SIGNED_HEX


def test_stream_report_is_opened() -> None:
    got = open_from_agent(TOPIC, REPORT.sign(A), ENROLLED)
    assert got.name is Name.STREAMS and got.node_id == A.node_id
    assert got.message == REPORT
    assert Name.STREAMS in hubwire.FROM_AGENT
    assert hubwire.MAX_SIZE[Name.STREAMS] == MAX_STREAMS_SIZE
    assert f"lichen/v1/{A.node_id}/streams" == TOPIC


def test_whole_numbers_on_the_wire_are_read_as_floats() -> None:
    # Another encoder may send 21 for 21.0 (RFC 8949 section 3.3): still a number.
    raw = fields()
    raw[3] = [["s", 1, NOW, [[NOW, "t", 21, "Cel"]]]]
    report = send(raw).message
    assert isinstance(report, StreamReport)
    reading = report.streams[0].latest[0]
    assert isinstance(reading.value, float) and isinstance(reading.time, float)
    assert isinstance(report.streams[0].newest, float)


def test_the_largest_report_fits_the_topic_bound() -> None:
    per = MAX_REPORT_READINGS // MAX_REPORT_STREAMS
    reading = ReportedReading(NOW + 0.123456789, "n" * 255, math.pi, "u" * 64)
    report = StreamReport(
        NOW,
        tuple(
            StreamFigures(f"{i:02d}" + "s" * 62, 2**63, NOW + 0.1, (reading,) * per)
            for i in range(MAX_REPORT_STREAMS)
        ),
    )
    signed = report.sign(A)
    assert len(signed) <= MAX_STREAMS_SIZE
    assert open_from_agent(TOPIC, signed, ENROLLED).message == report


readings = st.builds(
    ReportedReading,
    st.floats(0, 4e9, allow_nan=False),
    st.from_regex(r"[a-z0-9][a-z0-9:._/-]{0,20}", fullmatch=True),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "Cel", "%RH", "m/s2"]),
)
figures = st.builds(
    StreamFigures,
    st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}", fullmatch=True),
    st.integers(0, 2**64 - 1),
    st.none() | st.floats(0, 4e9, allow_nan=False),
    st.lists(readings, max_size=4).map(tuple),
)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**64 - 1), st.lists(figures, max_size=6, unique_by=lambda f: f.name))
def test_round_trip(time: int, streams: list[StreamFigures]) -> None:
    report = StreamReport(time, tuple(streams))
    assert open_from_agent(TOPIC, report.sign(A), ENROLLED).message == report


# -- refusals ----------------------------------------------------------------------------------


BAD_STREAMS = [
    "not an array",
    [figures_list()] * 2,  # the same stream twice
    [figures_list(name=f"s{i}") for i in range(MAX_REPORT_STREAMS + 1)],
    [
        figures_list(name=f"s{i}", latest=[reading_list()] * MAX_REPORT_READINGS_PER_STREAM)
        for i in range(MAX_REPORT_READINGS // MAX_REPORT_READINGS_PER_STREAM + 1)
    ],  # each stream within its bound, the report over the total
    [["s", 1, 1.0]],
    [["s", 1, 1.0, [], "extra"]],
    [figures_list(name="")],
    [figures_list(name="bad/name")],
    [figures_list(name="-leading")],
    [figures_list(name="s" * 65)],
    [figures_list(name=b"bytes")],
    [figures_list(count=-1)],
    [figures_list(count=1.5)],
    [figures_list(count=True)],
    [figures_list(count=2**64)],
    [figures_list(newest=math.nan)],
    [figures_list(newest=math.inf)],
    [figures_list(newest="yesterday")],
    [figures_list(newest=False)],
    [figures_list(latest=[reading_list()] * (MAX_REPORT_READINGS_PER_STREAM + 1))],
    [figures_list(latest=["not a reading"])],
    [figures_list(latest=[reading_list()[:3]])],
    [figures_list(latest=[reading_list(time=math.nan)])],
    [figures_list(latest=[reading_list(time=-math.inf)])],
    [figures_list(latest=[reading_list(value=math.nan)])],
    [figures_list(latest=[reading_list(value=math.inf)])],
    [figures_list(latest=[reading_list(value=True)])],
    [figures_list(latest=[reading_list(value="21.5")])],
    [figures_list(latest=[reading_list(value=b"\x01")])],
    [figures_list(latest=[reading_list(value=None)])],
    [figures_list(latest=[reading_list(name="")])],
    [figures_list(latest=[reading_list(name="n" * 256)])],
    [figures_list(latest=[reading_list(name="has space")])],
    [figures_list(latest=[reading_list(name=7)])],
    [figures_list(latest=[reading_list(unit="u" * 65)])],
    [figures_list(latest=[reading_list(unit="deg C")])],
    [figures_list(latest=[reading_list(unit=None)])],
]


@pytest.mark.parametrize("streams", BAD_STREAMS, ids=range(len(BAD_STREAMS)))
def test_malformed_streams_are_refused(streams: Any) -> None:
    with pytest.raises(MalformedMessage):
        send({**fields(), 3: streams})


@pytest.mark.parametrize(
    "change",
    [{2: -1}, {2: 1.5}, {2: "now"}, {2: None}, {99: 1}, {1: int(wire.Kind.PRESENCE)}],
)
def test_malformed_envelope_is_refused(change: dict[int, Any]) -> None:
    with pytest.raises(MalformedMessage):
        send({**fields(), **change})


def test_missing_fields_and_other_versions_are_refused() -> None:
    for key in (2, 3):
        raw = fields()
        del raw[key]
        with pytest.raises(MalformedMessage, match="missing"):
            send(raw)
    with pytest.raises(UnsupportedVersion):
        send({**fields(), 0: 2})


def test_truncated_and_oversize_reports_are_refused() -> None:
    signed = REPORT.sign(A)
    for cut in (1, len(signed) // 2, len(signed) - 1):
        with pytest.raises(MalformedMessage):
            open_from_agent(TOPIC, signed[:cut], ENROLLED)
    with pytest.raises(MalformedMessage, match="exceeds"):
        open_from_agent(TOPIC, signed + bytes(MAX_STREAMS_SIZE), ENROLLED)


def test_wrong_signer_unknown_and_revoked_devices_are_refused() -> None:
    with pytest.raises(BadSignature):
        open_from_agent(TOPIC, REPORT.sign(B), ENROLLED)
    with pytest.raises(NotAuthorised):
        open_from_agent(TOPIC, REPORT.sign(A), lambda node: None)
    revoked = KnownDevice(A.public, revoked=True)
    with pytest.raises(NotAuthorised):
        open_from_agent(TOPIC, REPORT.sign(A), lambda node: revoked)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_flipped_bit_is_refused(data: st.DataObject) -> None:
    signed = REPORT.sign(A)
    bit = data.draw(st.integers(0, len(signed) * 8 - 1))
    flipped = bytearray(signed)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(RemoteProtocolError):
        open_from_agent(TOPIC, bytes(flipped), ENROLLED)


@pytest.mark.parametrize(
    "build",
    [
        lambda: ReportedReading(math.nan, "n", 1.0),
        lambda: ReportedReading(1.0, "n", math.inf),
        lambda: ReportedReading(1.0, "n", True),
        lambda: ReportedReading(1.0, "", 1.0),
        lambda: ReportedReading(1.0, "n", 1.0, "u" * 65),
        lambda: StreamFigures("bad name", 1, None),
        lambda: StreamFigures("s", -1, None),
        lambda: StreamFigures("s", 1, math.nan),
        lambda: StreamFigures("s", 1, None, [ReportedReading(1.0, "n", 1.0)]),  # type: ignore[arg-type]
        lambda: StreamFigures("s", 1, None, (ReportedReading(1, "n", 1),) * 33),
        lambda: StreamReport(-1, ()),
        lambda: StreamReport(1, (StreamFigures("s", 1, None),) * 2),
        lambda: StreamReport(1, tuple(StreamFigures(f"s{i}", 1, None) for i in range(65))),
        lambda: StreamReport(
            1,
            tuple(
                StreamFigures(f"s{i}", 1, None, (ReportedReading(1, "n", 1),) * 32)
                for i in range(17)
            ),
        ),
    ],
)
def test_local_construction_checks(build: Any) -> None:
    with pytest.raises(LocalProtocolError):
        build()
