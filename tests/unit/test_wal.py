"""The write-ahead log: format, round trips, recovery from torn and damaged files, reset."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent import fsutil, wal
from edge_agent.wal import HEADER, MAX_RECORD_SIZE, RECORD_OVERHEAD, WriteAheadLog, encode_record
from lichen.errors import LocalProtocolError, UnsupportedVersion


def _payload(i: int) -> bytes:
    """Deterministic payloads of varied length that look nothing like a record frame."""
    return hashlib.sha256(i.to_bytes(4, "big")).digest()[: 5 + i % 23]


def _make(path: Path, payloads: list[bytes]) -> list[int]:
    """Write a log holding ``payloads``; return each record's start offset, then the end."""
    with WriteAheadLog.open(path) as log:
        log.append(payloads)
    offsets = [len(HEADER)]
    for p in payloads:
        offsets.append(offsets[-1] + RECORD_OVERHEAD + len(p))
    assert path.stat().st_size == offsets[-1]
    return offsets


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_golden_format() -> None:
    assert HEADER.hex() == "4c49434857414c01"  # "LICHWAL", version 1
    assert encode_record(b"abc").hex() == "0000000345bce840616263"
    assert encode_record(b"").hex() == "000000002144df1c"


def test_round_trip_and_accounting(tmp_path: Path) -> None:
    path = tmp_path / "s.wal"
    payloads = [_payload(i) for i in range(10)] + [b""]
    with WriteAheadLog.open(path) as log:
        assert log.recovery.created
        assert (log.count, log.bytes_held, log.file_size) == (0, 0, len(HEADER))
        log.append(payloads[:3])
        log.append(payloads[3:4])
        log.append([])
        log.append(payloads[4:])
        assert log.records() == payloads
        assert log.count == len(payloads)
        assert log.bytes_held == sum(len(p) for p in payloads)
        assert log.file_size == path.stat().st_size
        assert log.file_size == len(HEADER) + RECORD_OVERHEAD * len(payloads) + log.bytes_held
    assert path.read_bytes() == HEADER + b"".join(encode_record(p) for p in payloads)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_records_returns_a_copy(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path / "s.wal") as log:
        log.append([b"a"])
        held = log.records()
        held.append(b"mutated")
        log.append([b"b"])
        assert log.records() == [b"a", b"b"]
        assert held == [b"a", b"mutated"]


def test_reopen_after_close(tmp_path: Path) -> None:
    path = tmp_path / "s.wal"
    log = WriteAheadLog.open(path)
    log.append([b"one", b"two"])
    log.close()
    log.close()
    assert log.closed
    with WriteAheadLog.open(path) as again:
        assert not again.recovery.created
        assert again.recovery.dropped_bytes == 0
        assert again.records() == [b"one", b"two"]
        again.append([b"three"])
    with WriteAheadLog.open(path) as third:
        assert third.records() == [b"one", b"two", b"three"]
        assert third.bytes_held == 11


def test_closed_log_refuses_use(tmp_path: Path) -> None:
    log = WriteAheadLog.open(tmp_path / "s.wal")
    log.close()
    with pytest.raises(LocalProtocolError, match="closed"):
        log.append([b"x"])
    with pytest.raises(LocalProtocolError, match="closed"):
        log.records()
    with pytest.raises(LocalProtocolError, match="closed"):
        log.reset()


def test_bad_payloads_are_refused_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "s.wal"
    with WriteAheadLog.open(path) as log:
        log.append([b"ok"])
        size = path.stat().st_size
        with pytest.raises(LocalProtocolError, match="MAX_RECORD_SIZE"):
            log.append([b"fine", bytes(MAX_RECORD_SIZE + 1)])
        with pytest.raises(LocalProtocolError, match="must be bytes"):
            log.append([b"fine", "text"])  # type: ignore[list-item]
        with pytest.raises(LocalProtocolError, match="must be bytes"):
            log.append([bytearray(b"mutable")])  # type: ignore[list-item]
        with pytest.raises(LocalProtocolError, match="sequence of payloads"):
            log.append(b"one bytes object")  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError, match="MAX_RECORD_SIZE"):
            log.reset([bytes(MAX_RECORD_SIZE + 1)])
        assert path.stat().st_size == size
        assert log.records() == [b"ok"]
        log.append([bytes(MAX_RECORD_SIZE)])  # the limit itself is allowed
    with WriteAheadLog.open(path) as again:
        assert again.records() == [b"ok", bytes(MAX_RECORD_SIZE)]


def test_torn_tail_at_every_offset(tmp_path: Path) -> None:
    payloads = [_payload(i) for i in range(6)]
    good = tmp_path / "good.wal"
    offsets = _make(good, payloads)
    whole = good.read_bytes()
    last_start, end = offsets[-2], offsets[-1]
    path = tmp_path / "s.wal"
    for cut in range(last_start + 1, end):
        path.write_bytes(whole[:cut])
        with WriteAheadLog.open(path) as log:
            assert log.records() == payloads[:-1], cut
            assert log.recovery.dropped_bytes == cut - last_start
            assert log.recovery.kept_aside is None
            assert path.stat().st_size == last_start
            log.append([b"after"])
        with WriteAheadLog.open(path) as log:
            assert log.records() == [*payloads[:-1], b"after"]
            assert log.recovery.dropped_bytes == 0
    assert _names(tmp_path) == ["good.wal", "s.wal"]


def test_cut_at_a_record_boundary_loses_nothing_else(tmp_path: Path) -> None:
    payloads = [_payload(i) for i in range(5)]
    path = tmp_path / "s.wal"
    offsets = _make(path, payloads)
    whole = path.read_bytes()
    for i, boundary in enumerate(offsets):
        path.write_bytes(whole[:boundary])
        with WriteAheadLog.open(path) as log:
            assert log.records() == payloads[:i]
            assert log.recovery.dropped_bytes == 0


def test_torn_tail_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.wal"
    offsets = _make(path, [b"a" * 10, b"b" * 10])
    with open(path, "r+b") as f:
        f.truncate(offsets[-1] - 3)
    with caplog.at_level(logging.WARNING, logger="edge_agent.wal"), WriteAheadLog.open(path):
        pass
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "torn tail of 15 bytes" in caplog.records[0].getMessage()


def test_every_flipped_bit_in_the_last_record_drops_only_it(tmp_path: Path) -> None:
    payloads = [_payload(i) for i in range(4)]
    good = tmp_path / "good.wal"
    offsets = _make(good, payloads)
    whole = good.read_bytes()
    path = tmp_path / "s.wal"
    for bit in range(offsets[-2] * 8, offsets[-1] * 8):
        damaged = bytearray(whole)
        damaged[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(damaged)
        with WriteAheadLog.open(path) as log:
            assert log.records() == payloads[:-1], bit
            assert log.recovery.dropped_bytes == offsets[-1] - offsets[-2]
            assert log.recovery.kept_aside is None
    assert _names(tmp_path) == ["good.wal", "s.wal"]


def test_zero_filled_tail_is_dropped(tmp_path: Path) -> None:
    # What a file system may leave after a power cut: the size grew, the data never landed.
    path = tmp_path / "s.wal"
    offsets = _make(path, [b"kept"])
    with open(path, "ab") as f:
        f.write(bytes(4096))
    with WriteAheadLog.open(path) as log:
        assert log.records() == [b"kept"]
        assert log.recovery.dropped_bytes == 4096
        assert path.stat().st_size == offsets[-1]


def test_oversize_length_does_not_allocate(tmp_path: Path) -> None:
    path = tmp_path / "s.wal"
    offsets = _make(path, [b"first", b"x" * 100])
    damaged = bytearray(path.read_bytes())
    struct.pack_into(">I", damaged, offsets[1], 0xFFFFFFFF)
    path.write_bytes(damaged)
    tracemalloc.start()
    try:
        with WriteAheadLog.open(path) as log:
            records = log.records()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert records == [b"first"]
    assert peak < 256 * 1024


def test_damage_in_the_middle_keeps_the_file_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    payloads = [_payload(i) for i in range(6)]
    path = tmp_path / "s.wal"
    offsets = _make(path, payloads)
    damaged = bytearray(path.read_bytes())
    damaged[offsets[2] + RECORD_OVERHEAD + 1] ^= 0x10  # a payload bit of record 2
    path.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="edge_agent.wal"), WriteAheadLog.open(path) as log:
        assert log.records() == payloads[:2]
        assert log.recovery.kept_aside == tmp_path / "s.wal.corrupt-1"
        assert log.recovery.valid_after_damage == 3
        assert log.recovery.dropped_bytes == offsets[-1] - offsets[2]
        log.append([b"new"])
    assert (tmp_path / "s.wal.corrupt-1").read_bytes() == bytes(damaged)
    assert stat.S_IMODE((tmp_path / "s.wal.corrupt-1").stat().st_mode) == 0o600
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "s.wal.corrupt-1" in caplog.records[0].getMessage()
    with WriteAheadLog.open(path) as log:
        assert log.records() == [*payloads[:2], b"new"]
        assert log.recovery.kept_aside is None


def test_oversize_length_in_the_middle_is_damage(tmp_path: Path) -> None:
    payloads = [_payload(i) for i in range(4)]
    path = tmp_path / "s.wal"
    offsets = _make(path, payloads)
    damaged = bytearray(path.read_bytes())
    struct.pack_into(">I", damaged, offsets[1], 0xFFFFFFFF)
    path.write_bytes(damaged)
    with WriteAheadLog.open(path) as log:
        assert log.records() == payloads[:1]
        assert log.recovery.kept_aside is not None
        assert log.recovery.valid_after_damage == 2
    # A second damaged file gets the next number; the first copy is left alone.
    path.write_bytes(damaged)
    with WriteAheadLog.open(path) as log:
        assert log.recovery.kept_aside == tmp_path / "s.wal.corrupt-2"
    assert _names(tmp_path) == ["s.wal", "s.wal.corrupt-1", "s.wal.corrupt-2"]


@pytest.mark.parametrize(
    "content",
    [b"NOTAWAL\x01" + encode_record(b"x"), b"LICH", b"\x00" * 64, b"LICHWAX\x01"],
)
def test_corrupt_header_is_kept_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "s.wal"
    path.write_bytes(content)
    with WriteAheadLog.open(path) as log:
        assert log.records() == []
        assert log.recovery.kept_aside == tmp_path / "s.wal.corrupt-1"
        assert log.recovery.dropped_bytes == len(content)
        log.append([b"fresh"])
    assert (tmp_path / "s.wal.corrupt-1").read_bytes() == content
    with WriteAheadLog.open(path) as log:
        assert log.records() == [b"fresh"]


def test_empty_file_becomes_a_new_log(tmp_path: Path) -> None:
    path = tmp_path / "s.wal"
    path.write_bytes(b"")
    with WriteAheadLog.open(path) as log:
        assert log.recovery.created
        assert log.records() == []
    assert path.read_bytes() == HEADER
    assert _names(tmp_path) == ["s.wal"]


def test_unknown_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.wal"
    content = b"LICHWAL\x02" + encode_record(b"from the future")
    path.write_bytes(content)
    with pytest.raises(UnsupportedVersion, match="version 2"):
        WriteAheadLog.open(path)
    assert path.read_bytes() == content
    assert _names(tmp_path) == ["s.wal"]


def test_reset_keeps_exactly_keep(tmp_path: Path) -> None:
    path = tmp_path / "s.wal"
    with WriteAheadLog.open(path) as log:
        log.append([_payload(i) for i in range(20)])
        keep = [_payload(18), _payload(19), b""]
        log.reset(keep)
        assert log.records() == keep
        assert log.count == 3
        assert log.bytes_held == sum(len(p) for p in keep)
        assert log.file_size == path.stat().st_size
        log.append([b"later"])
        assert log.records() == [*keep, b"later"]
    with WriteAheadLog.open(path) as log:
        assert log.records() == [*keep, b"later"]
        log.reset()
        assert log.records() == []
        assert (log.count, log.bytes_held, log.file_size) == (0, 0, len(HEADER))
    assert path.read_bytes() == HEADER
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _names(tmp_path) == ["s.wal"]


def test_open_removes_temporaries_of_an_interrupted_reset(tmp_path: Path) -> None:
    path = tmp_path / "s.wal"
    _make(path, [b"a"])
    stale = tmp_path / ".s.wal.00112233445566ff.tmp"
    stale.write_bytes(HEADER)
    with WriteAheadLog.open(path) as log:
        assert log.records() == [b"a"]
    assert _names(tmp_path) == ["s.wal"]


def test_failed_append_poisons_until_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.wal"
    log = WriteAheadLog.open(path)
    log.append([b"acked"])
    real_sync = fsutil.sync_file

    def failing_sync(fd: int, *, data_only: bool = False) -> None:
        raise OSError(5, "simulated fsync failure")

    monkeypatch.setattr(fsutil, "sync_file", failing_sync)
    with pytest.raises(OSError, match="simulated"):
        log.append([b"not acked"])
    monkeypatch.setattr(fsutil, "sync_file", real_sync)
    with pytest.raises(OSError, match="close and open it again"):
        log.append([b"refused"])
    with pytest.raises(OSError, match="close and open it again"):
        log.reset()
    log.close()
    with WriteAheadLog.open(path) as again:
        # The failed batch was written but not acknowledged: it may or may not be there.
        assert again.records()[0] == b"acked"
        assert again.records()[1:] in ([], [b"not acked"])


def test_logger_can_be_injected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.wal"
    _make(path, [b"a"])
    with open(path, "ab") as f:
        f.write(b"\x00\x00")
    adapter = logging.LoggerAdapter(logging.getLogger("agent.node42"), {})
    with (
        caplog.at_level(logging.WARNING, logger="agent.node42"),
        WriteAheadLog.open(path, log=adapter),
    ):
        pass
    assert [r.name for r in caplog.records] == ["agent.node42"]


def test_module_constants() -> None:
    assert RECORD_OVERHEAD == 8
    assert wal.DEFAULT_MODE == 0o600


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=40), max_size=12),
    cut=st.integers(min_value=0),
)
def test_any_truncation_recovers_a_prefix(
    tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes], cut: int
) -> None:
    path = tmp_path_factory.mktemp("wal") / "s.wal"
    offsets = _make(path, payloads)
    cut = len(HEADER) + cut % (offsets[-1] - len(HEADER) + 1)
    whole = path.read_bytes()
    path.write_bytes(whole[:cut])
    with WriteAheadLog.open(path) as log:
        got = log.records()
    complete = sum(1 for end in offsets[1:] if end <= cut)
    assert got == payloads[:complete]
    assert os.path.getsize(path) == offsets[complete]
