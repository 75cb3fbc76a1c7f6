"""Atomic, durable file helpers: content, modes, temporary files, bounded reads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge_agent import fsutil
from lichen.errors import LocalProtocolError, MalformedMessage


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "state.bin"
    fsutil.atomic_write(target, b"first")
    assert target.read_bytes() == b"first"
    fsutil.atomic_write(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    fsutil.atomic_write(target, b"")
    assert target.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]


def test_atomic_write_sets_exact_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        fsutil.atomic_write(tmp_path / "a", b"x", mode=0o644)
        fsutil.atomic_write(tmp_path / "b", b"x", mode=0o640)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a") == 0o644
    assert _mode(tmp_path / "b") == 0o640


def test_atomic_write_rejects_invalid_mode(tmp_path: Path) -> None:
    with pytest.raises(LocalProtocolError):
        fsutil.atomic_write(tmp_path / "a", b"x", mode=0o10000)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_failure_leaves_target_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.bin"
    fsutil.atomic_write(target, b"old")

    def broken_sync(fd: int, *, data_only: bool = False) -> None:
        raise OSError(5, "simulated I/O error")

    monkeypatch.setattr(fsutil, "sync_file", broken_sync)
    with pytest.raises(OSError, match="simulated"):
        fsutil.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]


def test_temp_file_is_owner_only_before_its_mode_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real_fchmod = os.fchmod

    def spy_fchmod(fd: int, mode: int) -> None:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_fchmod(fd, mode)

    monkeypatch.setattr(os, "fchmod", spy_fchmod)
    fsutil.atomic_write(tmp_path / "public", b"x", mode=0o644)
    assert seen == [0o600]


def test_secret_file_is_0600_from_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "node.key"
    fsutil.atomic_write(target, b"was public", mode=0o644)
    seen: list[int] = []
    real_write_all = fsutil.write_all

    def spy_write_all(fd: int, data: bytes, offset: int | None = None) -> None:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_write_all(fd, data, offset)

    monkeypatch.setattr(fsutil, "write_all", spy_write_all)
    old = os.umask(0)  # even a permissive umask must not widen a secret
    try:
        fsutil.write_secret(target, b"\x01" * 32)
    finally:
        os.umask(old)
    assert seen == [0o600]
    assert _mode(target) == 0o600
    assert target.read_bytes() == b"\x01" * 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key"]


def test_remove_stale_temps_only_removes_the_targets(tmp_path: Path) -> None:
    mine = [tmp_path / f".a.{'0123456789abcdef'}.tmp", tmp_path / f".a.{'fedcba9876543210'}.tmp"]
    others = [
        tmp_path / "a",
        tmp_path / ".a.b.0123456789abcdef.tmp",  # a temporary of "a.b", not of "a"
        tmp_path / ".a.0123.tmp",
        tmp_path / "a.corrupt-1",
    ]
    for p in mine + others:
        p.write_bytes(b"x")
    assert fsutil.remove_stale_temps(tmp_path / "a") == 2
    assert sorted(tmp_path.iterdir()) == sorted(others)
    assert fsutil.remove_stale_temps(tmp_path / "a") == 0


def test_fsync_dir(tmp_path: Path) -> None:
    fsutil.fsync_dir(tmp_path)
    with pytest.raises(OSError):
        fsutil.fsync_dir(tmp_path / "missing")


def test_read_bounded_limits(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert fsutil.read_bounded(path, 100) == b"x" * 100
    assert fsutil.read_bounded(path, 10_000) == b"x" * 100
    with pytest.raises(MalformedMessage, match="over the limit of 99"):
        fsutil.read_bounded(path, 99)
    empty = tmp_path / "e"
    empty.write_bytes(b"")
    assert fsutil.read_bounded(empty, 0) == b""
    with pytest.raises(LocalProtocolError):
        fsutil.read_bounded(path, -1)
    with pytest.raises(FileNotFoundError):
        fsutil.read_bounded(tmp_path / "missing", 10)


def test_read_bounded_refuses_non_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(MalformedMessage, match="not a regular file"):
        fsutil.read_bounded(fifo, 10)  # must not block waiting for a writer
    with pytest.raises(MalformedMessage, match="not a regular file"):
        fsutil.read_bounded(tmp_path, 10)


def test_write_all_at_offset(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abcdef")
    fd = os.open(path, os.O_RDWR)
    try:
        fsutil.write_all(fd, b"XY", 2)
        fsutil.write_all(fd, b"Z")  # at the file position, which pwrite leaves alone
    finally:
        os.close(fd)
    assert path.read_bytes() == b"ZbXYef"
