"""Sensor streams: readings in over CoAP, durable at once, sealed into segments on the mesh.

A reading is acknowledged (2.04 Changed) only after it is in the stream's write-ahead log on
disk (:mod:`edge_agent.wal`), so a crash of the agent loses nothing it acknowledged. When a
stream's pending readings reach the configured count or age, they are sealed as one SenML
pack object through the same data path as ``lichen put``, linked into the stream's hash chain
(:mod:`lichen.stream`) and only then dropped from the log.

On disk, under ``streams/<name>/``: ``readings.wal`` (pending readings, each tagged with a
per-stream sequence number) and ``index/<seq>.seg`` (each signed segment record with the range
of reading numbers it sealed, so a crash between sealing and trimming the log never seals a
reading twice).

For the hub's dashboard (:meth:`StreamStore.snapshot`), each stream also keeps in memory its
count, the time of its newest reading and its newest numeric readings (a small buffer that
starts empty when the agent does; the count and newest time come from disk).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiocoap import Code, Message

from edge_agent import fsutil, sensors
from edge_agent.coap_server import CT_CBOR, PathResource, Services, UnsupportedFormat
from edge_agent.wal import WriteAheadLog
from lichen import cbor, senml, stream
from lichen.errors import IntegrityError, LichenError, MalformedMessage, NotAuthorised
from lichen.identity import Identity
from lichen.messages import MAX_INDEX_PAGE, StreamIndexPage
from lichen.streamreport import MAX_REPORT_READINGS_PER_STREAM, StreamSnapshot

log = logging.getLogger("lichen.streams")

STREAMS_DIR = "streams"
MAX_STREAMS = 256  # streams one agent keeps; a flood of names cannot exhaust the disk
MAX_SEGMENT_FILE = 4096
SEAL_RETRY = 10.0  # seconds before retrying a seal that found no room on the mesh
# Newest numeric readings kept per stream for the hub's charts: what one report carries.
REPORT_BUFFER = MAX_REPORT_READINGS_PER_STREAM
_INDEX_LIMITS = cbor.Limits(max_size=MAX_SEGMENT_FILE, max_depth=4, max_items=16)

Sealer = Callable[[str, bytes, int], Awaitable[bytes]]
"""(stream, SenML pack, segment seq) -> the CID of the object it was stored as."""


@dataclass
class _Stream:
    name: str
    directory: Path
    wal: WriteAheadLog
    pending: list[tuple[int, senml.Record]] = field(default_factory=list)
    next_reading: int = 0
    records: list[bytes] = field(default_factory=list)  # signed segment records, by seq
    oldest_pending: float | None = None
    sealing: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Appends run in worker threads; an append that interleaved with the trim after a seal
    # could log a reading just before the log is replaced without it, or take a sequence
    # number another append also took. Both acknowledge a reading a crash then loses.
    writing: threading.Lock = field(default_factory=threading.Lock)
    # What reports show (StreamStore._figures guards these): the count accepted, the newest
    # reading's time, the newest numeric readings with their numbers, and the store-wide
    # order of the last append (0: none since the agent started).
    count: int = 0
    newest: float | None = None
    recent: deque[tuple[int, senml.Record]] = field(
        default_factory=lambda: deque(maxlen=REPORT_BUFFER)
    )
    written: int = 0


def _encode_reading(seq: int, record: senml.Record, mark: bytes | None = None) -> bytes:
    # A mark (edge_agent.sensors) rides with the last reading of a sensor's message, so the
    # sensor's counter is durable in the very append that makes its readings durable.
    return cbor.encode([seq, senml.encode_cbor([record]), *([mark] if mark else [])])


def _reading_mark(raw: bytes) -> bytes | None:
    value = cbor.decode(raw)
    return value[2] if isinstance(value, list) and len(value) == 3 else None


def _decode_reading(raw: bytes) -> tuple[int, senml.Record]:
    value = cbor.decode(raw)
    if not (isinstance(value, list) and len(value) in (2, 3) and isinstance(value[0], int)):
        raise MalformedMessage("not a stored reading")
    records = senml.decode_cbor(value[1], now=time.time())
    if len(records) != 1:
        raise MalformedMessage("a stored reading holds one record")
    return value[0], records[0]


class StreamStore:
    """Every stream this agent writes, with their logs and chains."""

    def __init__(
        self,
        root: Path,
        identity: Identity,
        *,
        segment_readings: int,
        segment_seconds: float,
        seal_object: Sealer,
        on_sealed: Callable[[str, int], None] = lambda name, count: None,
        before_trim: Callable[[], None] = lambda: None,
    ) -> None:
        self.root = root
        self.identity = identity
        self.segment_readings = segment_readings
        self.segment_seconds = segment_seconds
        self._seal_object = seal_object
        self._on_sealed = on_sealed
        self._before_trim = before_trim  # makes what marks recorded durable elsewhere first
        self.marks: list[bytes] = []  # marks found in the logs when they were opened
        self._streams: dict[str, _Stream] = {}
        self._opening = threading.Lock()  # two first readings of a stream open it once
        self._figures = threading.Lock()  # a snapshot never waits for an fsync
        self._writes = 0

    # -- opening -------------------------------------------------------------------------------

    def open_all(self) -> None:
        """Load every stream on disk: its chain and its pending readings."""
        self.root.mkdir(parents=True, exist_ok=True)
        for directory in sorted(self.root.iterdir()):
            try:
                stream.check_stream_name(directory.name)
            except MalformedMessage:
                log.warning("ignoring %s: not a stream directory", directory)
                continue
            self._open(directory.name)

    def _open(self, name: str) -> _Stream:
        directory = self.root / name
        (directory / "index").mkdir(parents=True, exist_ok=True)
        records, sealed_through, newest = self._load_index(name, directory / "index")
        wal = WriteAheadLog.open(directory / "readings.wal")
        s = _Stream(name, directory, wal, records=records, newest=newest)
        s.next_reading = sealed_through + 1
        for raw in wal.records():
            try:
                seq, record = _decode_reading(raw)
            except LichenError as exc:
                log.error("stream %s: unreadable reading in the log skipped: %s", name, exc)
                continue
            mark = _reading_mark(raw)
            if mark is not None:
                self.marks.append(mark)
            if seq > sealed_through:  # the rest were sealed before a crash trimmed the log
                s.pending.append((seq, record))
                s.next_reading = max(s.next_reading, seq + 1)
        if s.pending:
            s.oldest_pending = time.monotonic()
            s.newest = max(
                [r.time for _, r in s.pending] + ([newest] if newest is not None else [])
            )
        s.count = s.next_reading
        with self._figures:
            self._streams[name] = s
        log.info("stream %s: %d segments, %d readings pending", name, len(records), len(s.pending))
        return s

    def _load_index(self, name: str, directory: Path) -> tuple[list[bytes], int, float | None]:
        files = sorted(p for p in directory.iterdir() if p.suffix == ".seg" and p.stem.isdigit())
        records: list[bytes] = []
        sealed_through = -1
        for expected, path in enumerate(files):
            if int(path.stem) != expected:
                raise IntegrityError(f"stream {name}: segment file {path.name} out of sequence")
            entry = cbor.decode(fsutil.read_bounded(path, MAX_SEGMENT_FILE), _INDEX_LIMITS)
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], bytes)):
                raise IntegrityError(f"stream {name}: {path} is not a segment entry")
            records.append(entry[0])
            sealed_through = int(entry[1])
        segments = stream.verify_chain(records, self.identity.public, stream=name)
        return records, sealed_through, segments[-1].last_time if segments else None

    def close(self) -> None:
        """Close every log."""
        for s in self._streams.values():
            s.wal.close()

    # -- writing -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """The streams this agent writes."""
        return sorted(self._streams)

    def _stream(self, name: str, create: bool) -> _Stream | None:
        s = self._streams.get(name)
        if s is None and create:
            with self._opening:
                s = self._streams.get(name)
                if s is None:
                    if len(self._streams) >= MAX_STREAMS:
                        raise NotAuthorised(f"this agent already keeps {MAX_STREAMS} streams")
                    s = self._open(name)
        return s

    def append(
        self,
        name: str,
        records: Sequence[senml.Record],
        mark: bytes | None = None,
        on_durable: Callable[[], None] = lambda: None,
    ) -> int:
        """Make ``records`` durable in stream ``name``, with ``mark`` if given; return how
        many. ``on_durable`` runs once they are, before any trim of the log. Blocking (fsync)."""
        s = self._stream(stream.check_stream_name(name), create=True)
        assert s is not None
        with s.writing:
            numbered = [(s.next_reading + i, r) for i, r in enumerate(records)]
            last = len(numbered) - 1
            s.wal.append(
                [
                    _encode_reading(seq, r, mark if i == last else None)
                    for i, (seq, r) in enumerate(numbered)
                ]
            )
            on_durable()
            s.next_reading += len(numbered)
            s.pending.extend(numbered)
            if s.oldest_pending is None:
                s.oldest_pending = time.monotonic()
            self._note(s, numbered)
        return len(numbered)

    def _note(self, s: _Stream, numbered: Sequence[tuple[int, senml.Record]]) -> None:
        """Update what reports show of ``s`` after an append of ``numbered``."""
        times = [r.time for _, r in numbered]
        with self._figures:
            self._writes += 1
            s.written = self._writes
            s.count = s.next_reading
            if times:
                s.newest = max(times) if s.newest is None else max(s.newest, *times)
            # Numbers only (bool, text and data values are not charted); a sum-only record
            # has no value.
            s.recent.extend((q, r) for q, r in numbered if isinstance(r.value, float))

    def snapshot(self) -> list[StreamSnapshot]:
        """Every stream's figures, by name; safe to call while appends run in other threads."""
        with self._figures:
            return [
                StreamSnapshot(s.name, s.count, s.newest, s.written, tuple(s.recent))
                for s in sorted(self._streams.values(), key=lambda s: s.name)
            ]

    def _trim(self, s: _Stream, sealed: int) -> None:
        """Drop the first ``sealed`` pending readings, now in a segment, from memory and the
        log. Blocking (fsync)."""
        with s.writing:
            self._before_trim()
            s.pending = s.pending[sealed:]
            s.wal.reset([_encode_reading(q, r) for q, r in s.pending])
            s.oldest_pending = time.monotonic() if s.pending else None

    def due(self) -> list[str]:
        """Streams whose pending readings should be sealed now."""
        now = time.monotonic()
        return [
            s.name
            for s in list(self._streams.values())  # a worker thread may open a stream meanwhile
            if s.pending
            and (
                len(s.pending) >= self.segment_readings
                or (s.oldest_pending is not None and now - s.oldest_pending >= self.segment_seconds)
            )
        ]

    async def seal(self, name: str) -> bool:
        """Seal the pending readings of ``name`` as one segment; False if nothing to seal."""
        s = self._streams[name]
        async with s.sealing:
            batch = s.pending[: self.segment_readings]
            if not batch:
                return False
            readings = [r for _, r in batch]
            seq = len(s.records)
            pack = senml.encode_cbor(readings)
            object_cid = await self._seal_object(name, pack, seq)
            times = [r.time for r in readings]
            _, signed = stream.seal_segment(
                self.identity,
                s.records[-1] if s.records else None,
                stream=name,
                seq=seq,
                object_cid=object_cid,
                count=len(readings),
                first_time=min(times),
                last_time=max(times),
                sealed_at=int(time.time()),
            )
            last_reading = batch[-1][0]
            entry = cbor.encode([signed, last_reading])
            await asyncio.to_thread(
                fsutil.atomic_write, s.directory / "index" / f"{seq:08d}.seg", entry
            )
            s.records.append(signed)
            await asyncio.to_thread(self._trim, s, len(batch))
            self._on_sealed(name, len(readings))
            log.info("stream %s: sealed segment %d with %d readings", name, seq, len(readings))
            return True

    # -- reading -------------------------------------------------------------------------------

    def page(self, name: str, *, start: int = 0, since: float | None = None) -> StreamIndexPage:
        """A page of the chain of ``name`` from ``start`` (or the first segment that reaches
        ``since``), with the readings not yet sealed."""
        s = self._stream(stream.check_stream_name(name), create=False)
        if s is None:
            raise MalformedMessage(f"no stream named {name!r} on this agent")
        if since is not None:
            segments = stream.verify_chain(s.records, self.identity.public, stream=name)
            start = next((g.seq for g in segments if g.last_time >= since), len(segments))
        start = min(max(start, 0), len(s.records))
        records = tuple(s.records[start : start + MAX_INDEX_PAGE])
        prev = stream.link(s.records[start - 1]) if start > 0 else stream.GENESIS
        pending = [r for _, r in s.pending if since is None or r.time >= since]
        return StreamIndexPage(
            stream=name,
            first_seq=start,
            prev=prev,
            records=records,
            more=start + len(records) < len(s.records),
            pending=senml.encode_cbor(pending),
            writer=self.identity.public.public_key,
        )


def is_loopback(remote: Any) -> bool:
    """Whether a CoAP request's ``remote`` is an address of this host (IPv4 or IPv6)."""
    sockaddr = getattr(remote, "sockaddr", None)
    host = sockaddr[0] if sockaddr else str(getattr(remote, "hostinfo", "")).rsplit(":", 1)[0]
    try:
        address = ipaddress.ip_address(str(host).strip("[]").split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


_SENML_FORMATS = (senml.CONTENT_FORMAT_JSON, senml.CONTENT_FORMAT_CBOR)


class SensorResource(PathResource):
    """POST /s/<stream>: SenML readings from a sensor (JSON ct 110 or CBOR ct 112, or CBOR
    in a COSE_Mac0, ct 17)."""

    rt = "lichen.sensor"
    name = "sensor"
    max_body = senml.MAX_PACK_BYTES

    def __init__(
        self,
        services: Services,
        streams: StreamStore,
        accept_local: bool,
        wake: Callable[[], None],
        registry: sensors.SensorRegistry,
        on_readings: Callable[[str, Sequence[senml.Record]], None] = lambda name, records: None,
    ) -> None:
        super().__init__(services)
        self.streams = streams
        self.accept_local = accept_local
        self.wake = wake
        self.sensors = registry
        self.on_readings = on_readings  # called once readings are durable: Observe uses it

    async def render_post(self, request: Message) -> Message:
        name = stream.check_stream_name(request.opt.uri_path[0] if request.opt.uri_path else "")
        if len(request.opt.uri_path) != 1:
            raise MalformedMessage("POST readings to /s/<stream>")
        fmt = request.opt.content_format
        if fmt is None or int(fmt) not in (*_SENML_FORMATS, sensors.CT_COSE_MAC0):
            raise UnsupportedFormat(
                "readings are SenML+JSON (110) or SenML+CBOR (112), "
                "or SenML+CBOR in a COSE_Mac0 (17) from an enrolled sensor"
            )
        local = self.accept_local and is_loopback(request.remote)
        admission, count = await asyncio.to_thread(
            self._admit_and_append, name, int(fmt), request.payload, request.opt.uri_query, local
        )
        if admission.duplicate:
            return Message(code=Code.CHANGED, payload=b"already stored")
        self.services.metrics.readings.labels(name).inc(count)
        self.on_readings(name, admission.records)
        self.wake()
        return Message(code=Code.CHANGED)

    def _admit_and_append(
        self, name: str, fmt: int, payload: bytes, query: Sequence[str], local: bool
    ) -> tuple[sensors.Admission, int]:
        """Admit a pack and store its readings (blocking: checks, a file stat, the append)."""
        # Who may write (edge_agent.sensors): an enrolled sensor's MAC or token, or anyone on
        # this host while accept_local is on.
        admission = self.sensors.admit(name, fmt, payload, query, local=local, now=time.time())
        if admission.duplicate:
            return admission, 0
        if not admission.records:
            raise MalformedMessage("the pack holds no readings")
        try:
            count = self.streams.append(name, admission.records, admission.mark, admission.commit)
        except BaseException:
            admission.release()
            raise
        return admission, count


class StreamIndexResource(PathResource):
    """GET /streams/<name>?start=N or ?since=UNIX: a page of the stream's chain."""

    rt = "lichen.stream"
    name = "streams"

    def __init__(self, services: Services, streams: StreamStore) -> None:
        super().__init__(services)
        self.streams = streams

    async def render_get(self, request: Message) -> Message:
        if len(request.opt.uri_path) != 1:
            raise MalformedMessage("GET /streams/<name>")
        start_text, since_text = (
            sensors.query_value(request.opt.uri_query, key) for key in ("start", "since")
        )
        try:
            start = 0 if start_text is None else int(start_text)
            since = None if since_text is None else float(since_text)
        except ValueError:
            raise MalformedMessage("start is a whole number, since a unix time") from None
        page = self.streams.page(request.opt.uri_path[0], start=start, since=since)
        return Message(code=Code.CONTENT, payload=page.encode(), content_format=CT_CBOR)
