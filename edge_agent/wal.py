"""Write-ahead log: readings acknowledged to a sensor survive a crash until their segment is stored.

One log file per stream holds opaque records (the caller's bytes) in append order::

    file   = header *record
    header = "LICHWAL" version        ; 8 bytes: 7 ASCII bytes, then version (u8) = 1
    record = length crc payload
    length = u32, big-endian          ; payload bytes, 0 .. MAX_RECORD_SIZE
    crc    = u32, big-endian          ; CRC-32 (zlib.crc32) of the 4 length bytes, then payload
    payload = length bytes

The CRC covers the length field too, so a zero-filled region (what some file systems leave
after a power cut) is never a valid record: CRC-32 of four zero bytes is not zero.

Durability: :meth:`WriteAheadLog.append` writes a batch with one ``pwrite`` and one
``fdatasync`` (group commit) and returns only after both; from then on the batch survives
``kill -9`` and, as far as the disk honours ``fsync``, a power cut. :meth:`~WriteAheadLog.reset`
replaces the whole file with :func:`~edge_agent.fsutil.atomic_write`, so a crash during a reset
leaves either the old log or the new one.

Recovery (:meth:`WriteAheadLog.open`) reads records from the start and stops at the first one
that is incomplete, longer than :data:`MAX_RECORD_SIZE` or fails its CRC. What follows it is:

- a *torn tail* if no valid record starts anywhere after that point: a crash interrupted the
  last append, whose batch was never acknowledged. The tail is truncated, with a warning giving
  the number of bytes dropped. A bit flip inside the very last record looks the same and is
  handled the same way; nothing on disk can tell the two apart.
- *damage* if a valid record starts somewhere after it: the file is copied aside, unchanged, as
  ``<name>.corrupt-<n>`` for inspection, the log restarts with the good prefix, and an error is
  logged with the offset and the number of valid-looking records left behind. Those records are
  not put back automatically: after a bad length field the next record boundary is a guess,
  and a payload may itself contain bytes that look like a record. A disk that wrote the pages
  of the last, unacknowledged batch out of order before a power cut leaves the same picture;
  the copy then holds only records that were never acknowledged.

A file that does not start with the header is kept aside the same way and replaced by an empty
log. A header with the right magic but another version raises
:class:`~lichen.errors.UnsupportedVersion` and leaves the file alone: a newer agent wrote it.

Costs: an append is one ``pwrite`` and one ``fdatasync``: about 0.2 ms on this project's
development VM (4,000-5,000 single-record appends per second, over 200,000 records per second
in batches of 100); expect milliseconds on an SD card (not measured). It blocks, so call it
from asyncio with ``asyncio.to_thread`` and gather the readings that arrive meanwhile into one
batch. A reset costs two ``fsync`` calls and a rename (about 1 ms here). The log keeps its
records in memory too (as many bytes as :attr:`~WriteAheadLog.bytes_held`); the caller keeps
that small by sealing segments and calling :meth:`~WriteAheadLog.reset`. Opening reads the
whole file and checks every CRC; after damage, finding out whether a valid record follows tries
every offset of the tail (about a second per MiB of garbage; a zero-filled tail is recognised
at once).

Hand-written: the format fits in this docstring, and its recovery policy (keep damaged files
aside, never guess) is the point; SQLite would give the same durability but hide that policy.
One process owns a log file at a time; the methods are serialised by a lock, so they may be
called from several threads.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from edge_agent import fsutil
from lichen.errors import LocalProtocolError, UnsupportedVersion

MAGIC = b"LICHWAL"
VERSION = 1
HEADER = MAGIC + bytes([VERSION])
_RECORD_HEAD = struct.Struct(">II")  # length, crc
RECORD_OVERHEAD = _RECORD_HEAD.size
# A reading arrives in one CoAP datagram, under 64 KiB (RFC 7252 §4.6 over UDP); 1 MiB leaves
# room for the agent's own metadata and keeps a garbage length field from costing more than
# this much memory or scanning.
MAX_RECORD_SIZE = 1 << 20
DEFAULT_MODE = fsutil.SECRET_MODE  # readings are plaintext until their segment is sealed

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
_default_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovery:
    """What :meth:`WriteAheadLog.open` found and did.

    ``records`` were recovered; ``dropped_bytes`` were cut off the end (a torn tail or the
    damaged rest of the file); ``kept_aside`` names the copy of a damaged file, if one was made;
    ``valid_after_damage`` counts valid-looking records in that copy after the damage;
    ``created`` is true if a new, empty log was written.
    """

    records: int
    dropped_bytes: int = 0
    kept_aside: Path | None = None
    valid_after_damage: int = 0
    created: bool = False


def encode_record(payload: bytes) -> bytes:
    """Frame one payload as a record: length, CRC-32, payload."""
    length = len(payload).to_bytes(4, "big")
    return _RECORD_HEAD.pack(len(payload), zlib.crc32(payload, zlib.crc32(length))) + payload


def _record_end(data: memoryview, pos: int) -> int | None:
    """The offset just past a valid record starting at ``pos``, or None if there is none."""
    if len(data) - pos < RECORD_OVERHEAD:
        return None
    length: int
    crc: int
    length, crc = _RECORD_HEAD.unpack_from(data, pos)
    # Checked before anything is sliced: a garbage length never allocates or reads past EOF.
    end = pos + RECORD_OVERHEAD + length
    if length > MAX_RECORD_SIZE or end > len(data):
        return None
    if zlib.crc32(data[pos + RECORD_OVERHEAD : end], zlib.crc32(data[pos : pos + 4])) != crc:
        return None
    return end


def _scan(data: memoryview, pos: int) -> tuple[list[bytes], int]:
    """Records from ``pos`` up to the first invalid one, and the offset where they stop."""
    records: list[bytes] = []
    while (end := _record_end(data, pos)) is not None:
        records.append(bytes(data[pos + RECORD_OVERHEAD : end]))
        pos = end
    return records, pos


def _count_valid_after(data: memoryview, damage: int) -> int:
    """How many records follow the first valid record found after ``damage``; 0 if none.

    Tries every offset: linear in the size of the tail (about a second per MiB on a laptop).
    """
    if not data[damage:].tobytes().strip(b"\x00"):
        return 0  # the usual tail after a power cut; zeros never form a valid record
    for pos in range(damage + 1, len(data) - RECORD_OVERHEAD + 1):
        if _record_end(data, pos) is not None:
            return len(_scan(data, pos)[0])
    return 0


def _check_payloads(payloads: Sequence[bytes]) -> None:
    if isinstance(payloads, bytes | bytearray | memoryview):
        raise LocalProtocolError("pass a sequence of payloads, not one bytes object")
    for payload in payloads:
        if not isinstance(payload, bytes):
            raise LocalProtocolError(f"a payload must be bytes, not {type(payload).__name__}")
        if len(payload) > MAX_RECORD_SIZE:
            raise LocalProtocolError(
                f"a payload of {len(payload)} bytes is over MAX_RECORD_SIZE ({MAX_RECORD_SIZE})"
            )


class WriteAheadLog:
    """An append-only, crash-safe log of opaque records in one file. Create it with :meth:`open`."""

    def __init__(
        self, path: Path, fd: int, records: list[bytes], mode: int, log: Logger, recovery: Recovery
    ) -> None:
        self._path = path
        self._fd: int | None = fd
        self._records = records
        self._bytes_held = sum(len(r) for r in records)
        self._file_size = len(HEADER) + self._bytes_held + RECORD_OVERHEAD * len(records)
        self._mode = mode
        self._log = log
        self._lock = threading.Lock()
        self._failed: OSError | None = None
        self.recovery = recovery
        """What :meth:`open` found: a caller may count torn tails and damaged files."""

    @classmethod
    def open(
        cls, path: fsutil.StrPath, *, mode: int = DEFAULT_MODE, log: Logger | None = None
    ) -> WriteAheadLog:
        """Open the log at ``path``, creating it if missing and recovering it after a crash.

        Recovery follows the policy in the module docstring. ``mode`` applies to files this
        log creates (a new log, a reset, a damaged copy). Raises ``OSError`` if the file cannot
        be read or repaired, :class:`UnsupportedVersion` if another version of the format wrote it.
        """
        target = Path(path)
        logger = log if log is not None else _default_log
        stale = fsutil.remove_stale_temps(target)
        if stale:
            logger.info("wal %s: removed %d temporary files of an interrupted reset", target, stale)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            fsutil.atomic_write(target, HEADER, mode)
            return cls._attach(target, [], mode, logger, Recovery(records=0, created=True))
        records, recovery = cls._recover(target, data, mode, logger)
        return cls._attach(target, records, mode, logger, recovery)

    @classmethod
    def _recover(
        cls, target: Path, data: bytes, mode: int, log: Logger
    ) -> tuple[list[bytes], Recovery]:
        if not data:
            # Logs are created whole by atomic_write, so something else made this file.
            log.warning("wal %s: empty file, starting a new log", target)
            fsutil.atomic_write(target, HEADER, mode)
            return [], Recovery(records=0, created=True)
        if data[: len(MAGIC)] == MAGIC and len(data) >= len(HEADER) and data[len(MAGIC)] != VERSION:
            raise UnsupportedVersion(
                f"wal {target}: format version {data[len(MAGIC)]}, this agent reads {VERSION}"
            )
        if data[: len(HEADER)] != HEADER:
            kept = cls._keep_aside(target, data, mode)
            fsutil.atomic_write(target, HEADER, mode)
            log.error(
                "wal %s: bad header, kept the %d-byte file as %s and started a new log",
                target,
                len(data),
                kept,
            )
            return [], Recovery(records=0, dropped_bytes=len(data), kept_aside=kept)
        view = memoryview(data)
        records, good_end = _scan(view, len(HEADER))
        dropped = len(data) - good_end
        if not dropped:
            return records, Recovery(records=len(records))
        valid_after = _count_valid_after(view, good_end)
        if not valid_after:
            fd = os.open(target, os.O_RDWR)
            try:
                os.ftruncate(fd, good_end)
                fsutil.sync_file(fd)
            finally:
                os.close(fd)
            log.warning(
                "wal %s: dropped a torn tail of %d bytes at offset %d, kept %d records",
                target,
                dropped,
                good_end,
                len(records),
            )
            return records, Recovery(records=len(records), dropped_bytes=dropped)
        kept = cls._keep_aside(target, data, mode)
        fsutil.atomic_write(target, data[:good_end], mode)
        log.error(
            "wal %s: damaged record at offset %d followed by %d valid-looking records; kept the "
            "file as %s and restarted the log with the %d records before the damage",
            target,
            good_end,
            valid_after,
            kept,
            len(records),
        )
        return records, Recovery(
            records=len(records),
            dropped_bytes=dropped,
            kept_aside=kept,
            valid_after_damage=valid_after,
        )

    @staticmethod
    def _keep_aside(target: Path, data: bytes, mode: int) -> Path:
        """Write ``data`` to ``<name>.corrupt-<n>`` next to ``target``, n one past the highest."""
        pattern = re.compile(re.escape(f"{target.name}.corrupt-") + r"([0-9]+)")
        taken = [
            int(m.group(1)) for p in target.parent.iterdir() if (m := pattern.fullmatch(p.name))
        ]
        kept = target.with_name(f"{target.name}.corrupt-{max(taken, default=0) + 1}")
        fsutil.atomic_write(kept, data, mode)
        return kept

    @classmethod
    def _attach(
        cls, target: Path, records: list[bytes], mode: int, log: Logger, recovery: Recovery
    ) -> WriteAheadLog:
        fd = os.open(target, os.O_RDWR)
        return cls(target, fd, records, mode, log, recovery)

    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    @property
    def count(self) -> int:
        """Number of records held."""
        return len(self._records)

    @property
    def bytes_held(self) -> int:
        """Total payload bytes of the records held (framing not included)."""
        return self._bytes_held

    @property
    def file_size(self) -> int:
        """Size of the log file in bytes: header, framing and payloads."""
        return self._file_size

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._fd is None

    def records(self) -> list[bytes]:
        """Every record held, oldest first (a copy: later appends do not change it)."""
        with self._lock:
            self._usable()
            return list(self._records)

    def append(self, payloads: Sequence[bytes]) -> None:
        """Append ``payloads`` as records and return once they are on stable storage.

        One write and one ``fdatasync`` per call, however many payloads: batch what arrives
        together. Raises :class:`LocalProtocolError` (nothing written) if a payload is not bytes
        or is over :data:`MAX_RECORD_SIZE`. On ``OSError`` the batch is not acknowledged and
        the log refuses further use: close it and :meth:`open` it again, which reads what the
        disk really holds.
        """
        _check_payloads(payloads)
        if not payloads:
            return
        frames = b"".join(encode_record(p) for p in payloads)
        with self._lock:
            fd = self._usable()
            try:
                fsutil.write_all(fd, frames, self._file_size)
                fsutil.sync_file(fd, data_only=True)
            except OSError as exc:
                self._fail(exc)
                raise
            self._records.extend(payloads)
            self._bytes_held += sum(len(p) for p in payloads)
            self._file_size += len(frames)

    def reset(self, keep: Sequence[bytes] = ()) -> None:
        """Atomically replace the log's content with exactly ``keep``.

        Used once a segment is sealed and stored: the readings not in it stay. A crash leaves
        either the old log or the new one. Raises like :meth:`append`.
        """
        _check_payloads(keep)
        content = HEADER + b"".join(encode_record(p) for p in keep)
        with self._lock:
            old_fd = self._usable()
            try:
                fsutil.atomic_write(self._path, content, self._mode)
                self._fd = os.open(self._path, os.O_RDWR)
            except OSError as exc:
                self._fail(exc)
                raise
            os.close(old_fd)
            self._records = list(keep)
            self._bytes_held = sum(len(p) for p in keep)
            self._file_size = len(content)

    def close(self) -> None:
        """Close the file. Records already appended stay on disk; closing twice is harmless."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _usable(self) -> int:
        if self._fd is None:
            raise LocalProtocolError(f"wal {self._path} is closed")
        if self._failed is not None:
            raise OSError(
                errno.EIO,
                f"wal {self._path} failed earlier ({self._failed}); close and open it again",
            )
        return self._fd

    def _fail(self, exc: OSError) -> None:
        self._failed = exc
        self._log.error("wal %s: %s; refusing further writes until reopened", self._path, exc)
