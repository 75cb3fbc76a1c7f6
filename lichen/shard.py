"""Shards: one erasure-coded piece of an object, cut into blocks under a Merkle root.

A shard travels as two parts: a small header signed by the object's owner, and the body (the
piece bytes). The header binds the body through the Merkle root of its blocks
(:mod:`lichen.merkle`), so a holder can later prove it still has any single block by sending
that block and its audit path, without sending the shard. The header is a COSE_Sign1 (see
:mod:`lichen.cose`) by the owner around this payload::

    shard-header = {
      0 => 1, 1 => 2,            ; envelope: v, kind SHARD_HEADER
      2 => bstr .size 36,        ; object CID (of the sealed object), see lichen.cid
      3 => uint,                 ; shard index, 0 .. n-1
      4 => uint,                 ; k: shards needed to rebuild, 1 .. n
      5 => uint,                 ; n: shards written, k .. 256
      6 => tstr,                 ; erasure codec, e.g. "zfec-rs/1" (at most 32 characters)
      7 => uint,                 ; sealed object size in bytes
      8 => uint,                 ; piece (shard body) size in bytes, >= 1
      9 => uint,                 ; Merkle block size in bytes: a power of two, 512 .. 1 MiB
      10 => bstr .size 32,       ; Merkle root of the body's blocks (RFC 9162 section 2.1.1)
      11 => uint,                ; expiry, unix seconds, >= 1
      12 => bstr .size 32,       ; owner Ed25519 public key (the signer)
    }
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lichen import cbor, cid, cose, erasure, merkle, wire
from lichen.errors import BadSignature, IntegrityError, LocalProtocolError, MalformedMessage
from lichen.fieldcheck import local_check, remote_build
from lichen.identity import PUBLIC_KEY_SIZE, Identity, PublicIdentity

MAX_SHARDS = erasure.MAX_PIECES  # the codec's limit on n; the manifest's bound too
MAX_CODEC_NAME = 32  # characters: a codec name and version, e.g. "zfec-rs/1"
ROOT_SIZE = merkle.HASH_SIZE
# Blocks are what a proof sends. Below 512 B the tree (64 bytes kept per leaf) and the audit
# path outweigh the data proven; above 1 MiB a challenge of a few dozen blocks stops fitting in
# one reasonable MQTT message and a Pi's memory budget for answering.
MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 1024 * 1024
# 16 KiB: a 64 MiB piece is 4096 leaves (12-hash paths, 256 KiB of tree), and a 44-block proof
# is about 700 KiB.
DEFAULT_BLOCK_SIZE = 16 * 1024
# 1 TiB: far beyond a Pi's disk, and at the smallest block size 2^31 leaves, inside
# merkle.MAX_LEAVES. Bounds the sizes a peer can claim before anything is allocated.
MAX_PIECE_SIZE = 2**40
MAX_OBJECT_SIZE = MAX_PIECE_SIZE * MAX_SHARDS
# A signed header is about 250 bytes; nothing legitimate comes near these bounds.
HEADER_LIMITS = cbor.Limits(max_size=1024, max_depth=4, max_items=64)


def is_valid_block_size(block_size: int) -> bool:
    """True for a power of two between :data:`MIN_BLOCK_SIZE` and :data:`MAX_BLOCK_SIZE`."""
    return MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE and block_size & (block_size - 1) == 0


def leaf_count(piece_size: int, block_size: int) -> int:
    """How many blocks (Merkle leaves) a body of ``piece_size`` bytes is cut into."""
    return -(-piece_size // block_size)


@dataclass(frozen=True)
class ShardHeader:
    """What the owner signs about one shard; construction checks every field."""

    object_cid: bytes
    index: int
    k: int
    n: int
    codec: str
    object_size: int
    """Bytes of the sealed object the pieces were cut from."""
    piece_size: int
    """Bytes of this shard's body (codecs may pad, so it can exceed ceil(object_size / k))."""
    block_size: int
    root: bytes
    expiry: int
    """Unix seconds after which holders may drop the shard."""
    owner: bytes
    """The writer's 32-byte Ed25519 public key."""

    def __post_init__(self) -> None:
        local_check(lambda: _check_header(self))

    @property
    def leaf_count(self) -> int:
        """Number of blocks in the body, so of leaves under :attr:`root`."""
        return leaf_count(self.piece_size, self.block_size)

    @property
    def owner_identity(self) -> PublicIdentity:
        """The owner's key as an identity (its ``kid`` is the owner's node id)."""
        return PublicIdentity(self.owner)

    def to_payload(self) -> bytes:
        """The deterministic CBOR payload that the owner signs."""
        return wire.encode(
            wire.Kind.SHARD_HEADER,
            {
                2: self.object_cid,
                3: self.index,
                4: self.k,
                5: self.n,
                6: self.codec,
                7: self.object_size,
                8: self.piece_size,
                9: self.block_size,
                10: self.root,
                11: self.expiry,
                12: self.owner,
            },
        )

    def sign(self, owner: Identity) -> bytes:
        """The header as a COSE_Sign1 by ``owner``, who must be the header's owner."""
        if owner.public.public_key != self.owner:
            raise LocalProtocolError("a shard header is signed by the object's owner")
        return cose.sign1(self.to_payload(), owner)


def _check_header(h: ShardHeader) -> None:
    cid.check(h.object_cid)
    ints = (h.index, h.k, h.n, h.object_size, h.piece_size, h.block_size, h.expiry)
    if any(not isinstance(v, int) or isinstance(v, bool) for v in ints):
        raise MalformedMessage("shard header: numeric fields must be integers")
    if not 1 <= h.k <= h.n <= MAX_SHARDS:
        raise MalformedMessage(f"shard header: need 1 <= k <= n <= {MAX_SHARDS}")
    if not 0 <= h.index < h.n:
        raise MalformedMessage(f"shard header: index {h.index} is not below n={h.n}")
    if not isinstance(h.codec, str) or not 0 < len(h.codec) <= MAX_CODEC_NAME:
        raise MalformedMessage(f"shard header: codec name is 1 to {MAX_CODEC_NAME} characters")
    if not 1 <= h.object_size <= MAX_OBJECT_SIZE:
        raise MalformedMessage("shard header: object size out of range")
    if not 1 <= h.piece_size <= MAX_PIECE_SIZE:
        raise MalformedMessage("shard header: piece size out of range")
    # Any code that rebuilds from k pieces needs k pieces to hold at least the object; padding
    # only makes pieces larger, so this is the one size relation every codec obeys.
    if h.piece_size * h.k < h.object_size:
        raise MalformedMessage("shard header: k pieces of this size cannot hold the object")
    if not is_valid_block_size(h.block_size):
        raise MalformedMessage(
            f"shard header: block size {h.block_size} is not a power of two "
            f"in {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}"
        )
    if not isinstance(h.root, bytes) or len(h.root) != ROOT_SIZE:
        raise MalformedMessage("shard header: Merkle root is 32 bytes")
    if h.expiry < 1:
        raise MalformedMessage("shard header: expiry must be a positive unix time")
    if not isinstance(h.owner, bytes) or len(h.owner) != PUBLIC_KEY_SIZE:
        raise MalformedMessage("shard header: owner key is 32 bytes")


@dataclass(frozen=True)
class Shard:
    """A shard as stored and sent: the owner-signed header, its parsed form, and the body."""

    signed_header: bytes
    header: ShardHeader
    body: bytes = field(repr=False)


def block(body: bytes, block_size: int, index: int) -> bytes:
    """Block ``index`` of ``body``, without cutting the others."""
    if block_size <= 0 or not 0 <= index < leaf_count(len(body), block_size):
        raise LocalProtocolError(f"block {index} is not in a body of {len(body)} bytes")
    return body[index * block_size : (index + 1) * block_size]


def build_shard(
    piece: bytes,
    *,
    object_cid: bytes,
    index: int,
    k: int,
    n: int,
    codec: str,
    object_size: int,
    block_size: int = DEFAULT_BLOCK_SIZE,
    expiry: int,
    owner: Identity,
) -> Shard:
    """Cut ``piece`` into blocks, compute their Merkle root and sign the header as ``owner``."""
    body = bytes(piece)
    if not is_valid_block_size(block_size):
        raise LocalProtocolError(f"block size {block_size} is not a power of two in range")
    header = ShardHeader(
        object_cid=object_cid,
        index=index,
        k=k,
        n=n,
        codec=codec,
        object_size=object_size,
        piece_size=len(body),
        block_size=block_size,
        root=merkle.MerkleTree.from_body(body, block_size).root,
        expiry=expiry,
        owner=owner.public.public_key,
    )
    return Shard(header.sign(owner), header, body)


def open_header(signed: bytes, *, owner: PublicIdentity | None = None) -> ShardHeader:
    """Parse a signed shard header from untrusted bytes and check the owner's signature.

    The signature must verify under the owner key the payload names, with that key's node id
    as the COSE ``kid``. With ``owner``, the header must also be that owner's. Raises
    :class:`MalformedMessage` or :class:`BadSignature`.
    """
    message = cose.parse(signed, HEADER_LIMITS)
    fields = wire.decode(message.payload, wire.Kind.SHARD_HEADER, HEADER_LIMITS)
    header = remote_build(
        lambda: ShardHeader(
            object_cid=fields.bstr(2, size=cid.BINARY_SIZE),
            index=fields.uint(3, max_value=MAX_SHARDS - 1),
            k=fields.uint(4, max_value=MAX_SHARDS),
            n=fields.uint(5, max_value=MAX_SHARDS),
            codec=fields.tstr(6, max_size=MAX_CODEC_NAME),
            object_size=fields.uint(7, max_value=MAX_OBJECT_SIZE),
            piece_size=fields.uint(8, max_value=MAX_PIECE_SIZE),
            block_size=fields.uint(9, max_value=MAX_BLOCK_SIZE),
            root=fields.bstr(10, size=ROOT_SIZE),
            expiry=fields.uint(11),
            owner=fields.bstr(12, size=PUBLIC_KEY_SIZE),
        )
    )
    fields.finish()
    if owner is not None and owner.public_key != header.owner:
        raise BadSignature(f"shard header is not signed by owner {owner.node_id}")
    # verify_signature also checks the kid is the named owner's node id.
    message.verify_signature(header.owner_identity)
    return header


def verify_body(header: ShardHeader, body: bytes) -> merkle.MerkleTree:
    """Check ``body`` is the piece ``header`` describes; return its Merkle tree.

    The holder keeps the tree (or rebuilds it) to answer challenges. Raises
    :class:`IntegrityError` when the size or the Merkle root does not match.
    """
    if len(body) != header.piece_size:
        raise IntegrityError(
            f"shard body is {len(body)} bytes, its header says {header.piece_size}"
        )
    tree = merkle.MerkleTree.from_body(body, header.block_size)
    if tree.root != header.root:
        raise IntegrityError("shard body does not match its Merkle root")
    return tree


def open_shard(signed_header: bytes, body: bytes, *, owner: PublicIdentity | None = None) -> Shard:
    """Check a received shard: the header's signature, then the body against its root."""
    header = open_header(signed_header, owner=owner)
    verify_body(header, body)
    return Shard(bytes(signed_header), header, bytes(body))
