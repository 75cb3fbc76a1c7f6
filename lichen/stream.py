"""Stream indexes: append-only, hash-chained records of sealed segments of sensor readings.

An agent batches a stream's readings into segments; each sealed segment is stored as an
object, and a signed segment record links it into the stream's chain. Each record carries the
SHA-256 of the previous record's signed bytes, so a reader holding the chain can tell whether
any segment was removed, reordered or altered::

    segment = {
      0 => 1, 1 => 5,            ; envelope: v, kind SEGMENT
      2 => tstr,                 ; stream name
      3 => uint,                 ; sequence number, from 0
      4 => bstr .size 32,        ; SHA-256 of the previous signed record; 32 zero bytes at 0
      5 => bstr .size 36,        ; CID of the sealed segment object
      6 => uint,                 ; number of readings in the segment
      7 => number,               ; time of the first reading, unix seconds
      8 => number,               ; time of the last reading, unix seconds
      9 => uint,                 ; sealed at, unix seconds
    }

Records are COSE_Sign1 by the agent that owns the stream.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from lichen import cbor, cid, cose, wire
from lichen.errors import IntegrityError, LocalProtocolError, MalformedMessage
from lichen.fieldcheck import local_check, remote_build
from lichen.identity import Identity, PublicIdentity

GENESIS = bytes(32)
MAX_STREAM_NAME = 64  # it is also a CoAP URI path segment and an MQTT topic level
MAX_READINGS_PER_SEGMENT = 1_000_000
SEGMENT_LIMITS = cbor.Limits(max_size=1024, max_depth=4, max_items=64)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_stream_name(name: str) -> str:
    """Return ``name`` if it is a valid stream name; :class:`MalformedMessage` otherwise.

    Names are 1 to 64 characters of letters, digits, '.', '_' and '-', starting with a letter
    or digit, so that they are safe in URI paths, topics and file names alike.
    """
    if not isinstance(name, str) or len(name) > MAX_STREAM_NAME or not _NAME.fullmatch(name):
        raise MalformedMessage(
            f"invalid stream name {name!r}: use 1 to {MAX_STREAM_NAME} letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Segment:
    """One link of a stream's chain: a sealed segment object and what it holds."""

    stream: str
    seq: int
    prev: bytes
    object_cid: bytes
    count: int
    first_time: float
    last_time: float
    sealed_at: int

    def __post_init__(self) -> None:
        local_check(lambda: (check_stream_name(self.stream), cid.check(self.object_cid)))
        if self.seq < 0 or len(self.prev) != 32:
            raise LocalProtocolError("segment: bad sequence number or previous hash")
        if not 0 < self.count <= MAX_READINGS_PER_SEGMENT:
            raise LocalProtocolError("segment: holds 1 to 1,000,000 readings")
        if self.last_time < self.first_time:
            raise LocalProtocolError("segment: last reading before the first")

    def to_payload(self) -> bytes:
        """The deterministic CBOR payload that the stream's agent signs."""
        return wire.encode(
            wire.Kind.SEGMENT,
            {
                2: self.stream,
                3: self.seq,
                4: self.prev,
                5: self.object_cid,
                6: self.count,
                7: self.first_time,
                8: self.last_time,
                9: self.sealed_at,
            },
        )


def link(signed_record: bytes) -> bytes:
    """The hash the next record must carry as ``prev``."""
    return hashlib.sha256(signed_record).digest()


def seal_segment(
    writer: Identity,
    previous: bytes | None,
    *,
    stream: str,
    seq: int,
    object_cid: bytes,
    count: int,
    first_time: float,
    last_time: float,
    sealed_at: int,
) -> tuple[Segment, bytes]:
    """Make and sign the next record of a stream; ``previous`` is the last signed record."""
    if (previous is None) != (seq == 0):
        raise LocalProtocolError("the first record has seq 0 and no previous record")
    segment = Segment(
        stream=stream,
        seq=seq,
        prev=GENESIS if previous is None else link(previous),
        object_cid=object_cid,
        count=count,
        first_time=first_time,
        last_time=last_time,
        sealed_at=sealed_at,
    )
    return segment, cose.sign1(segment.to_payload(), writer)


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedMessage(f"SEGMENT: {what} must be a number")
    return float(value)


def open_segment(data: bytes, writer: PublicIdentity) -> Segment:
    """Parse one signed record and check the writer's signature."""
    _, payload = cose.open_signed(data, writer, limits=SEGMENT_LIMITS)
    fields = wire.decode(payload, wire.Kind.SEGMENT, SEGMENT_LIMITS)
    segment = remote_build(
        lambda: Segment(
            stream=check_stream_name(fields.tstr(2, max_size=MAX_STREAM_NAME)),
            seq=fields.uint(3),
            prev=fields.bstr(4, size=32),
            object_cid=fields.bstr(5, size=cid.BINARY_SIZE),
            count=fields.uint(6),
            first_time=_number(fields.optional(7), "first time"),
            last_time=_number(fields.optional(8), "last time"),
            sealed_at=fields.uint(9),
        )
    )
    fields.finish()
    return segment


def verify_chain(
    records: Iterable[bytes],
    writer: PublicIdentity,
    *,
    stream: str,
    start_seq: int = 0,
    start_prev: bytes = GENESIS,
) -> list[Segment]:
    """Check a run of signed records is an unbroken chain of ``stream`` by ``writer``.

    The run starts at ``start_seq`` whose ``prev`` must be ``start_prev`` (the genesis hash
    for a whole stream). Raises :class:`IntegrityError` naming the first record that was
    removed, reordered or altered, and the signature errors of :func:`open_segment`.
    """
    expected_seq, expected_prev = start_seq, start_prev
    segments: list[Segment] = []
    for signed in records:
        segment = open_segment(signed, writer)
        if segment.stream != stream:
            raise IntegrityError(f"record {segment.seq} belongs to stream {segment.stream!r}")
        if segment.seq != expected_seq:
            raise IntegrityError(
                f"stream {stream!r}: expected segment {expected_seq}, found {segment.seq} "
                "(a segment was removed or reordered)"
            )
        if segment.prev != expected_prev:
            raise IntegrityError(
                f"stream {stream!r}: segment {segment.seq} does not follow segment "
                f"{segment.seq - 1} (the chain was altered)"
            )
        segments.append(segment)
        expected_seq, expected_prev = segment.seq + 1, link(signed)
    return segments
