"""k-of-n systematic Reed-Solomon erasure coding of object bytes, on zfec.

``encode`` cuts the data into k equal data pieces (the last one zero-padded) and adds n - k
parity pieces; ``decode`` rebuilds the data from any k distinct pieces. Piece i is the i-th
output of zfec's ``Encoder(k, n)``: pieces 0..k-1 are the data itself, so when every data
piece is at hand decoding is a copy. The Reed-Solomon arithmetic is zfec's, over GF(2^8),
hence n <= 256. Which library and padding rule produced the pieces is the ``CODEC`` name every
manifest records: a node refuses to decode pieces of a codec it does not know, and a change to
the bytes produced needs a new name. Pieces are not checked for corruption here: a damaged
piece of the right length decodes to wrong bytes, which the shard's Merkle root and the
object's AEAD tag (lichen.seal) are there to catch.

zfec was chosen over pyeclib (benchmarks/erasure_codecs.py): pyeclib's ISA-L Cauchy backend
is 1.5-3x faster to encode and 2.5-6x faster to decode on x86_64, but zfec is the declared
core dependency, builds anywhere with only a C compiler (pyeclib has wheels for x86_64 and
aarch64 only and otherwise needs the liberasurecode system library: 32-bit Pi OS, OpenWrt),
rebuilds from every k-subset for every k <= n <= 256 (pyeclib's isa_l_rs_vand does not, e.g.
at k=10, n=16), and emits bare pieces without an 80-byte per-fragment header.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import zfec

from lichen.errors import LocalProtocolError, MalformedMessage, NotEnoughShards, UnsupportedVersion
from lichen.fieldcheck import is_uint

CODEC = "zfec-rs/1"
"""Name of this codec as recorded in manifests: zfec Reed-Solomon, ceil(size / k)-byte pieces,
the last data piece zero-padded, piece i = zfec block number i."""

MAX_PIECES = 256
"""zfec works in GF(2^8), so it can make at most 256 distinct pieces. The one source of the
bound on n that shards, manifests and placement share."""


def check_codec(name: str) -> None:
    """Raise :class:`UnsupportedVersion` unless ``name`` (from a manifest) is this codec."""
    if name != CODEC:
        raise UnsupportedVersion(f"erasure codec {name!r} is not supported (only {CODEC!r})")


def check_params(k: int, n: int) -> None:
    """Raise :class:`LocalProtocolError` unless 1 <= k <= n <= MAX_PIECES."""
    for name, value in (("k", k), ("n", n)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise LocalProtocolError(f"{name} must be an int, got {type(value).__name__}")
    if not 1 <= k <= n <= MAX_PIECES:
        raise LocalProtocolError(f"need 1 <= k <= n <= {MAX_PIECES}, got k={k}, n={n}")


def piece_size(size: int, k: int) -> int:
    """The length of every piece of a ``size``-byte object cut into k data pieces."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise LocalProtocolError(f"size must be a non-negative int, got {size!r}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise LocalProtocolError(f"k must be a positive int, got {k!r}")
    return -(-size // k)


@functools.lru_cache(maxsize=32)
def _encoder(k: int, n: int) -> zfec.Encoder:
    # Building the coding matrix costs ~2 ms at k=128, n=256; the objects are read-only after.
    return zfec.Encoder(k, n)


@functools.lru_cache(maxsize=32)
def _decoder(k: int, n: int) -> zfec.Decoder:
    return zfec.Decoder(k, n)


BytesLike = bytes | bytearray | memoryview


def encode(data: BytesLike, k: int, n: int) -> list[bytes]:
    """Cut ``data`` into n pieces of ``piece_size(len(data), k)`` bytes; any k rebuild it.

    Pieces 0..k-1 are the data, in order, the last ones zero-padded; k..n-1 are parity.
    """
    check_params(k, n)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"data must be bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    size = piece_size(len(view), k)
    if size == 0:
        return [b""] * n
    blocks = []
    for i in range(k):
        chunk = view[i * size : (i + 1) * size]
        # Only the tail needs padding; every other data piece is one copy out of ``data``.
        blocks.append(
            bytes(chunk) + bytes(size - len(chunk)) if len(chunk) < size else bytes(chunk)
        )
    return [bytes(piece) for piece in _encoder(k, n).encode(tuple(blocks))]


def decode(pieces: Mapping[int, BytesLike], k: int, n: int, size: int) -> bytes:
    """Rebuild the ``size``-byte object from at least k of its n pieces, keyed by index.

    Raises :class:`MalformedMessage` for an index outside 0..n-1 or a piece of the wrong
    length, and :class:`NotEnoughShards` when fewer than k distinct pieces are given.
    """
    check_params(k, n)
    length = piece_size(size, k)
    for index, piece in pieces.items():
        if not is_uint(index, n):
            raise MalformedMessage(f"piece index {index!r} is outside 0..{n - 1}")
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"piece {index} must be bytes, got {type(piece).__name__}")
        if len(piece) != length:
            raise MalformedMessage(
                f"piece {index} is {len(piece)} bytes; a {size}-byte object with k={k} "
                f"has {length}-byte pieces"
            )
    found = tuple(sorted(pieces))
    if len(found) < k:
        raise NotEnoughShards(
            f"need {k} distinct pieces of {n} to decode, found {len(found)}: {list(found)}",
            found=found,
            needed=k,
        )
    # The lowest indices first: data pieces need no arithmetic, so fewer parity pieces is faster.
    chosen = found[:k]
    if chosen[-1] < k:
        blocks = [pieces[i] for i in chosen]
    else:
        blocks = _decoder(k, n).decode(tuple(pieces[i] for i in chosen), chosen)
    return _join(blocks, length, size)


def _join(blocks: list[BytesLike], length: int, size: int) -> bytes:
    """The first ``size`` bytes of the data pieces laid end to end, copied once."""
    parts: list[BytesLike] = []
    for i, block in enumerate(blocks):
        keep = min(length, size - i * length)
        if keep <= 0:
            break
        parts.append(block if keep == length else memoryview(block)[:keep])
    return b"".join(parts)
