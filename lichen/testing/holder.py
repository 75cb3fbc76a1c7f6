"""An in-memory holder for tests and simulations: shard bodies under their Merkle trees.

It reads a challenged block plus its audit path (:data:`lichen.proofs.ReadBlock`), reports
what the hub would know of its shards (roots, placements, block counts), and can be made to
lose shards, which it then answers as missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from lichen import merkle, shard
from lichen.audit import Placement
from lichen.errors import LocalProtocolError
from lichen.proofs import RootInfo

Key = tuple[bytes, int]
"""(object CID, shard index)."""


@dataclass(frozen=True, slots=True)
class HeldBody:
    """One shard as held: its body, the block size it is cut in, and the tree over it."""

    body: bytes = field(repr=False)
    block_size: int
    tree: merkle.MerkleTree = field(repr=False)

    @property
    def leaf_count(self) -> int:
        """Blocks (Merkle leaves) in the body."""
        return self.tree.leaf_count


class MemoryHolder(Mapping[Key, HeldBody]):
    """A holder's shards by (object CID, shard index), in the order they were given.

    What it reports (:meth:`held`, :meth:`roots`, :meth:`placements`) covers every shard it
    was given, lost or not: the hub's view, learnt from receipts.
    """

    def __init__(self, shards: Iterable[shard.Shard] = ()) -> None:
        """A holder of ``shards`` (see :meth:`add_shard`), and of nothing lost."""
        self._shards: dict[Key, HeldBody] = {}
        self._lost: set[Key] = set()
        for given in shards:
            self.add_shard(given)

    def add(
        self,
        object_cid: bytes,
        index: int,
        body: bytes,
        block_size: int,
        tree: merkle.MerkleTree | None = None,
    ) -> None:
        """Hold ``body`` as shard ``index`` of ``object_cid``.

        ``tree`` is the body's tree when already built: holders of one body can share it.
        """
        if tree is None:
            tree = merkle.MerkleTree.from_body(body, block_size)
        elif tree.leaf_count != shard.leaf_count(len(body), block_size):
            raise LocalProtocolError("the tree given is not over this body's blocks")
        self._shards[object_cid, index] = HeldBody(body, block_size, tree)

    def add_shard(self, given: shard.Shard) -> None:
        """Hold a shard; raises :class:`~lichen.errors.IntegrityError` if its body is not the
        one its header describes."""
        header = given.header
        tree = shard.verify_body(header, given.body)
        self.add(header.object_cid, header.index, given.body, header.block_size, tree)

    def lose(self, keys: Iterable[Key]) -> None:
        """Lose these shards: from now on reading any of their blocks answers None."""
        keys = set(keys)
        if not keys <= self._shards.keys():
            raise LocalProtocolError("cannot lose a shard that was never held")
        self._lost |= keys

    @property
    def lost(self) -> frozenset[Key]:
        """The shards lost so far."""
        return frozenset(self._lost)

    def read_block(
        self, object_cid: bytes, index: int, block_index: int
    ) -> tuple[bytes, list[bytes]] | None:
        """Block ``block_index`` of a shard and its audit path; None when the shard is not
        held, was lost, or has no such block."""
        key = (object_cid, index)
        held = self._shards.get(key)
        if held is None or key in self._lost or not 0 <= block_index < held.leaf_count:
            return None
        return (
            shard.block(held.body, held.block_size, block_index),
            held.tree.inclusion_path(block_index),
        )

    def held(self) -> list[tuple[bytes, int, int]]:
        """(object CID, shard index, block count) per shard, as
        :func:`lichen.proofs.make_challenge` takes them."""
        return [(c, i, h.leaf_count) for (c, i), h in self._shards.items()]

    def roots(self) -> dict[Key, RootInfo]:
        """Each shard's (root, block count, block size), as :func:`lichen.proofs.verify`
        takes them."""
        return {k: (h.tree.root, h.leaf_count, h.block_size) for k, h in self._shards.items()}

    def placements(self) -> list[Placement]:
        """Each shard as a :class:`lichen.audit.Placement`."""
        return [
            Placement(c, i, h.tree.root, h.block_size, len(h.body))
            for (c, i), h in self._shards.items()
        ]

    def __getitem__(self, key: Key) -> HeldBody:
        return self._shards[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self._shards)

    def __len__(self) -> int:
        return len(self._shards)
