"""The holder's side of storage: whether to accept an offered shard, and the receipt.

Pure decisions over an offer and the caller's view of its store; the agent's disk and CoAP
adapters do the I/O around them. An offer is accepted when the owner's signature and the body
check out, it has not expired, and it fits; the answer is a receipt signed by the holder.
Offering a shard already held (same object, index and root) is answered with a fresh receipt,
so an owner retrying after a lost answer does not pay twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lichen import shard
from lichen.errors import IntegrityError, Refused, StoreFull
from lichen.identity import Identity
from lichen.manifest import Receipt
from lichen.messages import ShardTransfer

MIN_LIFETIME = 60  # seconds: a shard that expires sooner is not worth the write


@dataclass(frozen=True)
class Accepted:
    """An accepted offer: the checked shard, its signed receipt, and whether it is new here."""

    shard: shard.Shard
    receipt: Receipt
    signed_receipt: bytes
    new: bool


def accept_shard(
    offer: ShardTransfer,
    *,
    holder: Identity,
    now: int,
    free_bytes: int,
    held_root: Callable[[bytes, int], bytes | None],
) -> Accepted:
    """Decide on a shard offer; ``held_root(cid, index)`` is the root of that shard if held.

    Raises :class:`~lichen.errors.RemoteProtocolError` subclasses when the offer is bad
    (bad signature, body not matching its root), :class:`Refused` when it has expired and
    :class:`StoreFull` when the body does not fit in ``free_bytes``.
    """
    checked = shard.open_shard(offer.signed_header, offer.body)
    header = checked.header
    if header.expiry < now + MIN_LIFETIME:
        raise Refused(f"shard {header.index} expires at {header.expiry}, too soon to store")
    held = held_root(header.object_cid, header.index)
    if held is not None and held != header.root:
        raise IntegrityError(
            f"already holding shard {header.index} of this object with another root"
        )
    new = held is None
    if new and header.piece_size > free_bytes:
        raise StoreFull(f"no room: shard of {header.piece_size} bytes, {free_bytes} free")
    receipt = receipt_for(header, holder, now)
    return Accepted(checked, receipt, receipt.sign(holder), new)


def receipt_for(header: shard.ShardHeader, holder: Identity, accepted_at: int) -> Receipt:
    """The receipt ``holder`` gives for the shard ``header`` describes (not yet signed)."""
    return Receipt(
        object_cid=header.object_cid,
        index=header.index,
        root=header.root,
        piece_size=header.piece_size,
        expiry=header.expiry,
        accepted_at=accepted_at,
        holder=holder.kid,
        owner=header.owner_identity.kid,
    )
