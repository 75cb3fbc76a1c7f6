"""The on-disk formats and file names of the shard store (:mod:`edge_agent.store`).

Layout under the store's root directory::

    shards/<cid>.<index>.shard                       one file per shard (format below)
    manifests/<cid>.manifest                         the owner-signed manifest, as received
    receipts/<cid>.<index>.<holder node id>.receipt  a holder-signed receipt, as received
    quarantine/<original name>.<8 hex digits>        files found damaged, kept for inspection

``<cid>`` is the object CID's ``bafk...`` text form, ``<index>`` the shard index in decimal
without leading zeros, ``<holder node id>`` the 32-character text node id. A name is accepted
only if it is the canonical spelling of a valid CID, index and node id, so every name the store
opens is one it could have written; base32 leaves spare bits in the last character, so a CID
has several spellings and only the one :func:`lichen.cid.to_text` gives is accepted.

A shard file is::

    file    = prefix header leaves body
    prefix  = "LICHSHD" version header-length   ; 12 bytes: 7 ASCII bytes, u8 version = 1,
                                                ; u32 big-endian length of header
    header  = the owner-signed COSE_Sign1 shard header (lichen.shard), 1 .. 1024 bytes
    leaves  = leaf-count * 32 bytes             ; the RFC 9162 leaf hash of each body block
    body    = piece-size bytes                  ; the file ends here: no trailing bytes

Everything after the prefix is bound to the owner's signature: the header by it, the body by
the Merkle root it signs. The leaf hashes are derived data, kept so that a storage proof
rebuilds a shard's tree from 32 bytes per block instead of rereading the body; the store checks
them against the signed root before use. Manifests and receipts are stored as the exact signed
bytes received (COSE_Sign1, see :mod:`lichen.manifest`), with no framing of their own.

Everything here reads files as outside input: opened without following symlinks, checked to be
regular files, bounded before they are parsed.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lichen import cid, merkle, shard
from lichen.errors import LocalProtocolError, MalformedMessage, UnsupportedVersion
from lichen.identity import format_node_id, parse_node_id

MAGIC = b"LICHSHD"
VERSION = 1
PREFIX = struct.Struct(">7sBI")  # magic, version, header length
PREFIX_SIZE = PREFIX.size
MAX_HEADER_SIZE = shard.HEADER_LIMITS.max_size  # a longer header could never parse
HASH_SIZE = merkle.HASH_SIZE
# Bodies are hashed in reads of 1 MiB (a multiple of every valid block size), so checking a
# shard needs that much memory plus its tree, whatever the piece size.
READ_CHUNK = 1024 * 1024

_CID = rf"b[a-z2-7]{{{cid.TEXT_SIZE - 1}}}"
_INDEX = r"0|[1-9][0-9]{0,2}"
_SHARD_NAME = re.compile(rf"({_CID})\.({_INDEX})\.shard")
_MANIFEST_NAME = re.compile(rf"({_CID})\.manifest")
_RECEIPT_NAME = re.compile(rf"({_CID})\.({_INDEX})\.([a-z2-7]{{32}})\.receipt")

ShardKey = tuple[bytes, int]
"""A shard's identity in the store: (binary object CID, shard index)."""
MetaKey = tuple[bytes] | tuple[bytes, int, bytes]
"""A manifest's key, (object CID,), or a receipt's, (object CID, index, holder kid)."""


@dataclass(frozen=True)
class ShardInfo:
    """What the store knows of one shard file: its checked header and where the parts lie."""

    header: shard.ShardHeader
    header_size: int
    """Bytes of the signed header in the file."""

    @property
    def key(self) -> ShardKey:
        """(object CID, index)."""
        return (self.header.object_cid, self.header.index)

    @property
    def root(self) -> bytes:
        """The Merkle root of the body."""
        return self.header.root

    @property
    def piece_size(self) -> int:
        """Bytes of the body."""
        return self.header.piece_size

    @property
    def expiry(self) -> int:
        """Unix seconds after which the shard may be dropped."""
        return self.header.expiry

    @property
    def leaves_offset(self) -> int:
        """File offset of the leaf hashes."""
        return PREFIX_SIZE + self.header_size

    @property
    def body_offset(self) -> int:
        """File offset of the body."""
        return self.leaves_offset + HASH_SIZE * self.header.leaf_count

    @property
    def file_size(self) -> int:
        """Bytes the shard's file holds: prefix, header, leaf hashes and body."""
        return self.body_offset + self.header.piece_size


def encode_prefix(header_size: int) -> bytes:
    """The 12-byte prefix of a shard file whose signed header is ``header_size`` bytes."""
    if not 0 < header_size <= MAX_HEADER_SIZE:
        raise LocalProtocolError(f"a signed shard header is 1 to {MAX_HEADER_SIZE} bytes")
    return PREFIX.pack(MAGIC, VERSION, header_size)


# -- names ----------------------------------------------------------------------------------


def shard_file_name(key: ShardKey) -> str:
    """The file name of shard (object CID, index)."""
    return f"{cid.to_text(key[0])}.{int(key[1])}.shard"


def manifest_file_name(key: MetaKey) -> str:
    """The file name of the manifest of (object CID,)."""
    return f"{cid.to_text(key[0])}.manifest"


def receipt_file_name(key: MetaKey) -> str:
    """The file name of the receipt of (object CID, index, holder kid)."""
    if len(key) != 3:
        raise LocalProtocolError("a receipt key is (object CID, index, holder kid)")
    object_cid, index, kid = key
    return f"{cid.to_text(object_cid)}.{int(index)}.{format_node_id(kid)}.receipt"


def parse_shard_name(name: str) -> ShardKey | None:
    """The key a shard file name spells, or None if it is not one this store writes."""
    match = _SHARD_NAME.fullmatch(name)
    if not match or int(match.group(2)) >= shard.MAX_SHARDS:
        return None
    try:
        return cid.from_text(match.group(1)), int(match.group(2))
    except MalformedMessage:
        return None


def parse_manifest_name(name: str) -> MetaKey | None:
    """The key a manifest file name spells, or None."""
    match = _MANIFEST_NAME.fullmatch(name)
    if not match:
        return None
    try:
        return (cid.from_text(match.group(1)),)
    except MalformedMessage:
        return None


def parse_receipt_name(name: str) -> MetaKey | None:
    """The key a receipt file name spells, or None."""
    match = _RECEIPT_NAME.fullmatch(name)
    if not match or int(match.group(2)) >= shard.MAX_SHARDS:
        return None
    try:
        return cid.from_text(match.group(1)), int(match.group(2)), parse_node_id(match.group(3))
    except MalformedMessage:
        return None


def is_store_name(name: str) -> bool:
    """True if ``name`` is a shard, manifest or receipt file name the store writes."""
    return bool(parse_shard_name(name) or parse_manifest_name(name) or parse_receipt_name(name))


# -- reading --------------------------------------------------------------------------------


def open_ro(path: Path) -> int:
    """Open ``path`` for reading: never through a symlink, never blocking on a FIFO."""
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """Exactly ``size`` bytes at ``offset``; :class:`MalformedMessage` if the file ends first."""
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            raise MalformedMessage(f"file ends {size - got} bytes early at offset {offset}")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def read_prefix_and_header(fd: int) -> tuple[bytes, shard.ShardHeader]:
    """The signed header of a shard file and its checked form.

    Raises :class:`MalformedMessage` or :class:`BadSignature` for a damaged file,
    :class:`UnsupportedVersion` for one of a newer format.
    """
    magic, version, size = PREFIX.unpack(pread_exact(fd, PREFIX_SIZE, 0))
    if magic != MAGIC:
        raise MalformedMessage("not a shard file (bad magic)")
    if version != VERSION:
        raise UnsupportedVersion(f"shard file version {version}, this store writes {VERSION}")
    if not 0 < size <= MAX_HEADER_SIZE:
        raise MalformedMessage(f"header length {size} out of range")
    signed = pread_exact(fd, size, PREFIX_SIZE)
    return signed, shard.open_header(signed)


def load_shard(path: Path, key: ShardKey) -> ShardInfo:
    """The index entry of shard file ``path``, named for ``key``, reading no body bytes.

    Raises :class:`~lichen.errors.RemoteProtocolError` subclasses or ``OSError`` if the file
    is not a whole shard file for ``key``.
    """
    fd = open_ro(path)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise MalformedMessage("not a regular file")
        signed, header = read_prefix_and_header(fd)
    finally:
        os.close(fd)
    if (header.object_cid, header.index) != key:
        raise MalformedMessage("header names another shard than the file name")
    entry = ShardInfo(header, len(signed))
    if info.st_size != entry.file_size:
        raise MalformedMessage(
            f"file holds {info.st_size} bytes, its header says {entry.file_size}"
        )
    return entry


def iter_blocks(fd: int, entry: ShardInfo) -> Iterator[memoryview]:
    """The body's blocks, read :data:`READ_CHUNK` bytes at a time."""
    block_size = entry.header.block_size
    offset, remaining = entry.body_offset, entry.piece_size
    while remaining:
        view = memoryview(pread_exact(fd, min(READ_CHUNK, remaining), offset))
        for i in range(0, len(view), block_size):
            yield view[i : i + block_size]
        offset += len(view)
        remaining -= len(view)


def read_small(path: Path, max_size: int) -> bytes:
    """A regular file of at most ``max_size`` bytes, not following a symlink.

    Like :func:`edge_agent.fsutil.read_bounded`, which follows symlinks. Raises
    :class:`MalformedMessage` or ``OSError``.
    """
    fd = open_ro(path)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise MalformedMessage("not a regular file")
        if info.st_size > max_size:
            raise MalformedMessage(f"{info.st_size} bytes, over the limit of {max_size}")
        return pread_exact(fd, info.st_size, 0)
    finally:
        os.close(fd)
