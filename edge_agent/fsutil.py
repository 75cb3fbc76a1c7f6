"""Durable, atomic file helpers that every part of the agent shares.

A file the agent writes is either its old content or its new content after a crash or a power
cut, never a mix: :func:`atomic_write` writes a temporary file in the same directory, syncs
it, renames it over the target and syncs the directory (POSIX ``rename(2)`` replaces the name
atomically; the directory sync makes the new name itself durable). Files the agent reads back
are bounded first (:func:`read_bounded`), because a file on disk is outside input too.

POSIX only (Linux on a Pi or a router; macOS for development). The durability promised here is
what ``fsync(2)`` promises, no more: a disk that lies about its write cache loses data anyway.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from lichen.errors import LocalProtocolError, MalformedMessage

StrPath = str | os.PathLike[str]

DEFAULT_MODE = 0o644
SECRET_MODE = 0o600  # owner only: keys and readings that are not yet encrypted
TEMP_SUFFIX = ".tmp"
_TEMP_TOKEN_BYTES = 8  # 16 hex digits: two writers never pick the same temporary name
_READ_CHUNK = 1 << 16


def sync_file(fd: int, *, data_only: bool = False) -> None:
    """Flush ``fd``'s written data to stable storage; ``OSError`` if the disk reports an error.

    ``data_only`` uses ``fdatasync(2)`` where it exists: it skips timestamps but still syncs a
    size change, which is all an append needs. On macOS ``fsync`` does not flush the drive's
    cache, so ``F_FULLFSYNC`` is used there.
    """
    if sys.platform == "darwin":
        import fcntl

        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
    if data_only and hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:
        os.fsync(fd)


def fsync_dir(path: StrPath) -> None:
    """Make the entries of directory ``path`` (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes, offset: int | None = None) -> None:
    """Write every byte of ``data`` to ``fd``, at ``offset`` (``pwrite``) or at the file position.

    ``write(2)`` may write less than asked (a full disk, a signal); this loops until done or
    an ``OSError`` is raised.
    """
    view = memoryview(data)
    done = 0
    while done < len(view):
        if offset is None:
            written = os.write(fd, view[done:])
        else:
            written = os.pwrite(fd, view[done:], offset + done)
        if written <= 0:
            raise OSError(f"write returned {written} with {len(view) - done} bytes left")
        done += written


def _create_temp(target: Path) -> tuple[int, Path]:
    """Create a fresh, empty temporary file next to ``target`` with mode 0600."""
    while True:
        name = f".{target.name}.{secrets.token_hex(_TEMP_TOKEN_BYTES)}{TEMP_SUFFIX}"
        temp = target.with_name(name)
        try:
            # O_EXCL: never reuse someone else's file; 0600 so that nothing can read it before
            # the final mode is set.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE)
        except FileExistsError:
            continue
        return fd, temp


def atomic_write(path: StrPath, data: bytes, mode: int = DEFAULT_MODE) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, never a mix.

    The file gets exactly ``mode`` (the umask is not applied). The temporary file is created
    with mode 0600 and widened only after, so content is never readable by more than ``mode``
    allows, even briefly. Returns once the content and the new name are durable; on error the
    temporary file is removed and the target is untouched.
    """
    atomic_write_chunks(path, (data,), mode)


def write_secret(path: StrPath, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, readable and writable by its owner only.

    The file is mode 0600 from the moment it is created: no other user can open it at any
    time, even if the agent crashes halfway.
    """
    atomic_write(path, data, SECRET_MODE)


def remove_stale_temps(path: StrPath) -> int:
    """Remove temporary files that an interrupted :func:`atomic_write` of ``path`` left behind.

    Only the caller that owns ``path`` may call this, at a time it is not writing it itself:
    a temporary file being written right now is removed too. Returns how many were removed.
    """
    target = Path(path)
    return remove_stale_temps_in(target.parent, lambda name: name == target.name)


def read_bounded(path: StrPath, max_size: int) -> bytes:
    """Return the content of regular file ``path`` if it holds at most ``max_size`` bytes.

    Raises :class:`MalformedMessage` if ``path`` is not a regular file (a FIFO or a device
    would block or never end) or is larger than ``max_size``; ``OSError`` if it cannot be read.
    Never reads more than ``max_size + 1`` bytes, even if the file grows meanwhile.
    """
    if max_size < 0:
        raise LocalProtocolError(f"max_size must be >= 0, not {max_size}")
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise MalformedMessage(f"{os.fspath(path)!r} is not a regular file")
        if info.st_size > max_size:
            raise MalformedMessage(
                f"{os.fspath(path)!r} holds {info.st_size} bytes, over the limit of {max_size}"
            )
        chunks: list[bytes] = []
        total = 0
        while total <= max_size:
            chunk = os.read(fd, min(_READ_CHUNK, max_size + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if total > max_size:
        raise MalformedMessage(f"{os.fspath(path)!r} grew over the limit of {max_size} bytes")
    return b"".join(chunks)


def atomic_write_chunks(path: StrPath, chunks: Iterable[bytes], mode: int = DEFAULT_MODE) -> None:
    """:func:`atomic_write` of the concatenation of ``chunks``, without joining them in memory.

    Same guarantees as :func:`atomic_write`: the old file or the whole new one after a crash.
    """
    if not 0 <= mode <= 0o7777:
        raise LocalProtocolError(f"invalid file mode {mode:#o}")
    target = Path(path)
    fd, temp = _create_temp(target)
    try:
        try:
            os.fchmod(fd, mode)
            for chunk in chunks:
                write_all(fd, chunk)
            sync_file(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(target.parent)


_ANY_TEMP = re.compile(
    r"\.(.+)\." + f"[0-9a-f]{{{2 * _TEMP_TOKEN_BYTES}}}" + re.escape(TEMP_SUFFIX)
)


def remove_stale_temps_in(directory: StrPath, is_target: Callable[[str], bool]) -> int:
    """Remove temporaries left in ``directory`` by interrupted atomic writes (either function).

    Only temporaries of targets whose file name ``is_target`` accepts are removed, so files of
    other owners are left alone. Same rule as :func:`remove_stale_temps`: call it only while
    nothing writes those targets. Returns how many were removed.
    """
    removed = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _ANY_TEMP.fullmatch(entry.name)
            if match and is_target(match.group(1)) and not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        fsync_dir(directory)
    return removed
