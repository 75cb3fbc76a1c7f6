"""Merkle trees over a shard's blocks, with inclusion proofs (RFC 9162 section 2.1).

The tree is the Certificate Transparency v2 Merkle Tree Hash (RFC 9162 section 2.1.1): a leaf
is ``SHA-256(0x00 || block)``, an interior node ``SHA-256(0x01 || left || right)``, and a list
of n > 1 leaves splits at the largest power of two smaller than n. The 0x00/0x01 prefixes keep
a leaf from ever being passed off as an interior node (second-preimage resistance).

That recursive split builds the same tree as pairing nodes level by level and promoting an
unpaired last node unchanged to the next level, which is how :class:`MerkleTree` builds it:
one pass per level, each level kept as one concatenated byte string, so an audit path for any
leaf is a few slices. Inclusion proofs and their verification follow RFC 9162 sections
2.1.3.1 and 2.1.3.2. Hand-written because no maintained Python library exposes exactly this
tree with cheap repeated audit paths; hashing itself is hashlib, one call per block.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from lichen.errors import IntegrityError, LocalProtocolError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"  # RFC 9162 section 2.1.1: leaf hashes
NODE_PREFIX = b"\x01"  # RFC 9162 section 2.1.1: interior node hashes
# 2**32 leaves of even the smallest block (512 B) is 2 TiB in one shard, far beyond any device
# we target; the bound keeps leaf indices in 32 bits and audit paths at most 32 hashes.
MAX_LEAVES = 2**32
MAX_PATH_LENGTH = 32  # ceil(log2(MAX_LEAVES)): the longest audit path a valid tree has

_LEAF_HASHER = hashlib.sha256(LEAF_PREFIX)
_sha256 = hashlib.sha256

Block = bytes | bytearray | memoryview


def leaf_hash(block: Block) -> bytes:
    """The RFC 9162 leaf hash of one block: SHA-256(0x00 || block)."""
    hasher = _LEAF_HASHER.copy()
    hasher.update(block)
    return hasher.digest()


def _next_level(level: bytes) -> bytes:
    """Hash adjacent pairs of a level; an unpaired last node moves up unchanged."""
    # The interior node hash is written inline here and in verify_inclusion: a helper call
    # per node made a 64 MiB tree of 512-byte blocks a quarter slower to rebuild.
    count = len(level) // HASH_SIZE
    pairs = count // 2
    step = 2 * HASH_SIZE
    parents = [
        _sha256(NODE_PREFIX + level[i : i + step]).digest() for i in range(0, pairs * step, step)
    ]
    if count % 2:
        parents.append(level[-HASH_SIZE:])
    return b"".join(parents)


class MerkleTree:
    """A Merkle tree built once over a list of blocks; keeps every level for cheap audit paths.

    Memory is about 64 bytes per leaf (all levels, as packed byte strings).
    """

    __slots__ = ("_levels", "leaf_count")

    def __init__(self, blocks: Iterable[Block]) -> None:
        copier = _LEAF_HASHER.copy
        digests = []
        for block in blocks:
            hasher = copier()
            hasher.update(block)
            digests.append(hasher.digest())
        self._build(b"".join(digests))

    def _build(self, leaves: bytes) -> None:
        count, extra = divmod(len(leaves), HASH_SIZE)
        if extra:
            raise LocalProtocolError("leaf hashes are 32 bytes each")
        if count > MAX_LEAVES:
            raise LocalProtocolError(f"a Merkle tree has at most {MAX_LEAVES} leaves")
        self.leaf_count = count
        levels = [leaves]
        while len(levels[-1]) > HASH_SIZE:
            levels.append(_next_level(levels[-1]))
        self._levels = levels

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: bytes) -> MerkleTree:
        """Rebuild a tree from its concatenated leaf hashes (:attr:`leaf_hashes`).

        Lets a holder keep 32 bytes per block on disk instead of the tree in memory, and
        rebuild the tree to answer a challenge without rereading the shard body.
        """
        tree = cls.__new__(cls)
        tree._build(bytes(leaf_hashes))
        return tree

    @property
    def leaf_hashes(self) -> bytes:
        """All leaf hashes, concatenated in leaf order."""
        return self._levels[0]

    @classmethod
    def from_body(cls, body: bytes, block_size: int) -> MerkleTree:
        """The tree over ``body`` cut into ``block_size`` blocks (the last may be shorter)."""
        if block_size <= 0:
            raise LocalProtocolError("block size must be positive")
        view = memoryview(body)
        return cls(view[i : i + block_size] for i in range(0, len(view), block_size))

    @property
    def root(self) -> bytes:
        """The Merkle Tree Hash; for no leaves, SHA-256 of the empty string (RFC 9162 2.1.1)."""
        if self.leaf_count == 0:
            return _sha256(b"").digest()
        return self._levels[-1]

    def inclusion_path(self, index: int) -> list[bytes]:
        """The audit path of leaf ``index``, nearest sibling first (RFC 9162 section 2.1.3.1)."""
        if not 0 <= index < self.leaf_count:
            raise LocalProtocolError(f"leaf {index} is not in a tree of {self.leaf_count}")
        path = []
        for level in self._levels[:-1]:
            sibling = index ^ 1
            if sibling * HASH_SIZE < len(level):
                path.append(level[sibling * HASH_SIZE : (sibling + 1) * HASH_SIZE])
            index >>= 1
        return path


def path_length(index: int, leaf_count: int) -> int:
    """The number of hashes in the audit path of leaf ``index`` in a tree of ``leaf_count``."""
    if not 0 <= index < leaf_count:
        raise LocalProtocolError(f"leaf {index} is not in a tree of {leaf_count}")
    length = 0
    last = leaf_count - 1
    while last:
        # A node has a sibling on this level unless it is the unpaired last one.
        if index ^ 1 <= last:
            length += 1
        index >>= 1
        last >>= 1
    return length


def verify_inclusion(
    root: bytes, index: int, leaf_count: int, block: Block, path: Sequence[bytes]
) -> None:
    """Check ``block`` is leaf ``index`` of the ``leaf_count``-leaf tree with ``root``.

    Follows RFC 9162 section 2.1.3.2. Raises :class:`IntegrityError` if it is not, including
    for an index outside the tree or a path of the wrong length or shape.
    """
    if not 0 <= index < leaf_count <= MAX_LEAVES:
        raise IntegrityError(f"leaf {index} cannot be in a tree of {leaf_count} leaves")
    if len(path) > MAX_PATH_LENGTH:
        raise IntegrityError(f"audit path longer than {MAX_PATH_LENGTH} hashes")
    fn, sn = index, leaf_count - 1
    r = leaf_hash(block)
    sha256, prefix = _sha256, NODE_PREFIX
    for p in path:
        if sn == 0:
            raise IntegrityError("audit path is longer than the tree is deep")
        if not isinstance(p, bytes) or len(p) != HASH_SIZE:
            raise IntegrityError("audit path entries are 32-byte hashes")
        if fn & 1 or fn == sn:
            r = sha256(prefix + p + r).digest()
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = sha256(prefix + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise IntegrityError("audit path is shorter than the tree is deep")
    if r != root:
        raise IntegrityError(f"block {index} does not match the Merkle root")
