"""The rows :class:`hub.db.Database` takes and returns, as frozen dataclasses.

Inputs built from verified core objects have a ``from_...`` constructor that does the
translation (binary CIDs and node ids to their text forms); everything else is plain values.
Times are float unix seconds; amounts are integer micro-units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from hub.db_schema import ChallengeOutcome, PlacementState, RepairState
from lichen import cid as cids
from lichen.identity import format_node_id, node_id_bytes
from lichen.manifest import Manifest, Receipt
from lichen.rewards import Standing

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing: ``items`` from ``offset`` on, of ``total`` in all."""

    items: tuple[T, ...]
    total: int
    limit: int
    offset: int


def pass_rate(passed: int, failed: int) -> float | None:
    """The share of judged proof items proven; None when none was judged."""
    judged = passed + failed
    return passed / judged if judged else None


@dataclass(frozen=True)
class Device:
    """An enrolled device as the hub knows it."""

    node_id: str
    public_key: bytes
    name: str
    enrolled_at: float
    revoked_at: float | None
    last_seen: float | None
    online: bool
    absent_since: float | None
    """When it went offline or first missed a challenge since it was last present."""
    capacity_bytes: int
    used_bytes: int
    address: str | None
    standing: Standing

    @property
    def revoked(self) -> bool:
        """True once an operator revoked it: its messages are refused."""
        return self.revoked_at is not None


@dataclass(frozen=True)
class ObjectRecord:
    """An object to record from its owner-signed manifest."""

    cid: str
    owner: str
    """The owner's node id."""
    manifest: bytes
    """The signed manifest, byte for byte."""
    codec: str
    k: int
    n: int
    size: int
    piece_size: int
    block_size: int
    roots: tuple[bytes, ...]
    """The Merkle root of each shard, by index (n of them)."""
    created: float
    expiry: float
    label: str | None = None

    @classmethod
    def from_manifest(cls, manifest: Manifest, signed: bytes) -> ObjectRecord:
        """The record of a manifest already opened (signature checked) from ``signed``."""
        return cls(
            cid=cids.to_text(manifest.object_cid),
            owner=format_node_id(node_id_bytes(manifest.owner)),
            manifest=signed,
            codec=manifest.codec,
            k=manifest.k,
            n=manifest.n,
            size=manifest.size,
            piece_size=manifest.piece_size,
            block_size=manifest.block_size,
            roots=manifest.roots,
            created=manifest.created,
            expiry=manifest.expiry,
            label=manifest.label,
        )


@dataclass(frozen=True)
class ObjectHealth:
    """An object with the count of its distinct shard indices held live."""

    cid: str
    owner: str
    label: str | None
    k: int
    n: int
    size: int
    piece_size: int
    created: float
    expiry: float
    live: int
    """Distinct shard indices with at least one live placement."""
    repairing: bool
    """A repair of it is ordered and not finished."""


@dataclass(frozen=True)
class PlacementRecord:
    """A placement to record from a holder-signed receipt."""

    cid: str
    shard_index: int
    holder: str
    root: bytes
    piece_size: int
    receipt: bytes
    """The signed receipt, byte for byte."""
    accepted_at: float
    expiry: float

    @classmethod
    def from_receipt(cls, receipt: Receipt, signed: bytes) -> PlacementRecord:
        """The record of a receipt already opened (signature checked) from ``signed``."""
        return cls(
            cid=cids.to_text(receipt.object_cid),
            shard_index=receipt.index,
            holder=format_node_id(receipt.holder),
            root=receipt.root,
            piece_size=receipt.piece_size,
            receipt=signed,
            accepted_at=receipt.accepted_at,
            expiry=receipt.expiry,
        )


@dataclass(frozen=True)
class Placement:
    """A recorded placement, with what a challenge about it needs."""

    cid: str
    shard_index: int
    holder: str
    root: bytes
    piece_size: int
    block_size: int
    """From the object's manifest."""
    accepted_at: float
    expiry: float
    state: PlacementState
    lost_at: float | None


@dataclass(frozen=True)
class ParkedReceipt:
    """A signed receipt kept until its object's manifest arrives."""

    cid: str
    shard_index: int
    holder: str
    receipt: bytes
    received_at: float


@dataclass(frozen=True)
class Epoch:
    """A proof epoch; ``record`` and the hashes are set once it is closed."""

    epoch: int
    started: float
    deadline: float
    closed_at: float | None
    record: bytes | None
    record_hash: bytes | None
    prev_hash: bytes | None

    @property
    def closed(self) -> bool:
        """True once its ledger record is written."""
        return self.closed_at is not None


@dataclass(frozen=True)
class LedgerEntry:
    """One closed epoch's link in the ledger chain."""

    epoch: int
    record: bytes
    record_hash: bytes
    prev_hash: bytes


@dataclass(frozen=True)
class ChallengeRecord:
    """A challenge sent to a device, and what its answer came to."""

    epoch: int
    device: str
    challenge: bytes
    sent_at: float
    deadline: float
    answered_at: float | None
    outcome: ChallengeOutcome
    items_passed: int
    items_failed: int
    detail: str

    @property
    def pass_rate(self) -> float | None:
        """Share of items proven; None while no item was judged."""
        return pass_rate(self.items_passed, self.items_failed)


@dataclass(frozen=True)
class ProofItemRecord:
    """The verdict on one shard a challenge asked about."""

    epoch: int
    device: str
    cid: str
    shard_index: int
    passed: bool
    reason: str


@dataclass(frozen=True)
class RewardRecord:
    """A device's part of a closed epoch's ledger record."""

    epoch: int
    device: str
    outcome: str
    proven_bytes: int
    items_passed: int
    items_failed: int
    reward: int
    penalty: int
    before: Standing
    after: Standing
    explanation: tuple[str, ...]


@dataclass(frozen=True)
class Repair:
    """A repair order and how it ended."""

    id: int
    cid: str
    lost_indices: tuple[int, ...]
    repairer: str
    targets: tuple[tuple[int, str], ...]
    """(shard index, new holder's node id) pairs."""
    ordered_at: float
    finished_at: float | None
    state: RepairState
    detail: str
