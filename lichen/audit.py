"""One epoch of storage audits: plan a challenge per device, sign it, judge the answers.

The hub learns from receipts which shards each device should hold (:class:`Placement`). Each
epoch :func:`plan` challenges every device that holds something on a sample of its shards,
sized by :class:`AuditTarget` with :func:`lichen.proofs.sample_size` (by default a device
that silently lost 10% of its shards is caught with probability at least 0.99 per epoch).
The sample and the block indices follow from the device's nonce, which the caller draws
fresh: nobody can tell which shards will be asked before the challenge is sent, and anyone
holding the nonce and the placements can recompute the challenge afterwards.

The hub sends each challenge as a COSE_Sign1 by the hub (:func:`sign_challenge`), so an agent
can tell a real challenge from a forged one (:func:`open_challenge`)::

    signed-challenge = COSE_Sign1 by the hub over challenge  ; challenge: see lichen.proofs

:func:`judge_answer` turns one device's answer (or its absence) into a :class:`Verdict`,
whose :attr:`Verdict.proof` is what :func:`lichen.rewards.epoch_rewards` takes. An answer that
is unusable as a whole (not signed by the device, replayed from another epoch, for another
holder, malformed or oversize) fails every item, with the reason.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from lichen import cbor, cid, cose, proofs, shard, wire
from lichen.errors import (
    BadSignature,
    LocalProtocolError,
    MalformedMessage,
    ProofRejected,
    RemoteProtocolError,
)
from lichen.fieldcheck import is_uint, local_check
from lichen.identity import Identity, PublicIdentity, format_node_id, parse_node_id
from lichen.proofs import Challenge, Reason
from lichen.rewards import DeviceProof, ProofItem

# The COSE wrapper around a challenge: tag, array, protected bstr, header map with the kid,
# the payload as one byte string (decoded later within proofs.CHALLENGE_LIMITS), signature.
SIGNED_CHALLENGE_LIMITS = cbor.Limits(
    max_size=proofs.CHALLENGE_LIMITS.max_size + 256, max_depth=4, max_items=16
)
_SAMPLE_LABEL = b"lichen-audit-sample/1"

REPLAYED = "replayed answer"
"""Item reason: the answer is signed by the device but answers another epoch or nonce."""
BAD_SIGNATURE = "bad signature"
"""Item reason: the answer is not signed by the challenged device's key."""
WRONG_HOLDER = "wrong holder"
"""Item reason: the answer names another holder than the one challenged."""
OVERSIZE = "oversize answer"
"""Item reason: the answer is larger than any honest answer to the challenge can be."""
MALFORMED = "malformed answer"
"""Item reason: the answer cannot be read, or is not shaped like the challenge."""


@dataclass(frozen=True, slots=True)
class Placement:
    """A shard the hub knows (from a signed receipt) a device should hold."""

    object_cid: bytes
    shard_index: int
    root: bytes
    """Merkle root of the shard's body, from the receipt."""
    block_size: int
    piece_size: int
    """Bytes of the shard's body."""

    def __post_init__(self) -> None:
        try:
            cid.check(self.object_cid)
        except MalformedMessage as exc:
            raise LocalProtocolError(f"placement: {exc}") from exc
        if not is_uint(self.shard_index, shard.MAX_SHARDS):
            raise LocalProtocolError(f"placement: shard index {self.shard_index!r} out of range")
        if not isinstance(self.root, bytes) or len(self.root) != shard.ROOT_SIZE:
            raise LocalProtocolError("placement: a Merkle root is 32 bytes")
        if not is_uint(self.block_size) or not shard.is_valid_block_size(self.block_size):
            raise LocalProtocolError(f"placement: block size {self.block_size!r} is not valid")
        if not is_uint(self.piece_size, shard.MAX_PIECE_SIZE + 1) or self.piece_size < 1:
            raise LocalProtocolError(f"placement: piece size {self.piece_size!r} out of range")

    @property
    def key(self) -> tuple[bytes, int]:
        """(object CID, shard index): which shard this is."""
        return self.object_cid, self.shard_index

    @property
    def leaf_count(self) -> int:
        """Blocks (Merkle leaves) in the shard's body."""
        return shard.leaf_count(self.piece_size, self.block_size)


@dataclass(frozen=True)
class AuditTarget:
    """What one epoch's audit must catch: a device that lost ``loss_fraction`` of its
    shards is failed with probability at least ``detect_probability``."""

    loss_fraction: float = 0.1
    detect_probability: float = 0.99
    blocks_per_shard: int = 1
    """Blocks asked per sampled shard. One is what the sampling argument needs; more probe
    partial loss inside a shard."""

    def __post_init__(self) -> None:
        if self.shards_to_sample > proofs.MAX_ITEMS:
            raise LocalProtocolError(
                f"this target needs {self.shards_to_sample} samples, more than the "
                f"{proofs.MAX_ITEMS} a challenge carries"
            )
        if not is_uint(self.blocks_per_shard, proofs.MAX_BLOCKS_PER_ITEM + 1) or (
            self.blocks_per_shard < 1
        ):
            raise LocalProtocolError(f"blocks_per_shard is 1 to {proofs.MAX_BLOCKS_PER_ITEM}")

    @property
    def shards_to_sample(self) -> int:
        """Shards sampled per device (all of them when it holds fewer)."""
        return proofs.sample_size(self.loss_fraction, self.detect_probability)


DEFAULT_TARGET = AuditTarget()


@dataclass(frozen=True, slots=True)
class ItemVerdict:
    """The verdict on one challenged shard."""

    object_cid: bytes
    shard_index: int
    passed: bool
    reason: str
    """``"ok"``, a :class:`lichen.proofs.Reason`, or one of this module's answer reasons."""

    @property
    def judged(self) -> bool:
        """False for a shard the hub has no root for (:attr:`Reason.UNKNOWN_SHARD`): no
        verdict, and no fault of the device. Such items count neither way."""
        return self.reason != Reason.UNKNOWN_SHARD


@dataclass(frozen=True)
class Verdict:
    """One device's audit this epoch, with the input for :func:`lichen.rewards.epoch_rewards`."""

    node_id: str
    epoch: int
    answered: bool
    late: bool
    items: tuple[ItemVerdict, ...]
    """One per challenged item, in the challenge's order; empty when it did not answer."""
    held_bytes: int
    """Total piece size of the device's placements."""
    rejected: str
    """Why the answer as a whole was refused (the error's message); empty when it was used."""
    proof: DeviceProof
    """The rewards input: the judged items only."""

    @property
    def judged(self) -> tuple[ItemVerdict, ...]:
        """The items with a verdict (:attr:`ItemVerdict.judged`), in the challenge's order."""
        return tuple(item for item in self.items if item.judged)

    @property
    def passed(self) -> int:
        """Items proven."""
        return sum(1 for item in self.items if item.passed)

    @property
    def failed(self) -> int:
        """Judged items not proven."""
        return sum(1 for item in self.judged if not item.passed)

    @property
    def forged(self) -> bool:
        """True when the answer is not signed by the device: not its answer, whoever sent it."""
        return bool(self.rejected) and any(item.reason == BAD_SIGNATURE for item in self.items)


def plan(
    epoch: int,
    placements: Mapping[str, Sequence[Placement]],
    nonces: Mapping[str, bytes],
    deadline: int,
    target: AuditTarget = DEFAULT_TARGET,
) -> dict[str, Challenge]:
    """One challenge per device (node id, text form) that holds any shard.

    ``nonces`` gives each such device a fresh 32-byte nonce from a secure random source.
    Devices holding nothing are not challenged.
    """
    challenges: dict[str, Challenge] = {}
    samples = target.shards_to_sample
    for node_id, held in placements.items():
        if not held:
            continue
        nonce = nonces.get(node_id)
        if nonce is None:
            raise LocalProtocolError(f"no nonce for device {node_id}")
        holder_kid = local_check(partial(parse_node_id, node_id))
        shards = sorted(_distinct(node_id, held).values(), key=_order)
        # The sample follows from the nonce: as unpredictable as the nonce, reproducible by
        # whoever holds it.
        rng = random.Random(hashlib.sha256(_SAMPLE_LABEL + nonce).digest())
        challenges[node_id] = proofs.make_challenge(
            epoch,
            nonce,
            holder_kid,
            deadline,
            [(p.object_cid, p.shard_index, p.leaf_count) for p in shards],
            samples,  # AuditTarget keeps it within proofs.MAX_ITEMS
            target.blocks_per_shard,
            rng,
        )
    return challenges


def sign_challenge(challenge: Challenge, hub: Identity) -> bytes:
    """The challenge as a COSE_Sign1 by the hub, as it is sent to the device."""
    return cose.sign1(challenge.encode(), hub)


def open_challenge(
    data: bytes, hub: PublicIdentity, *, holder_kid: bytes | None = None
) -> Challenge:
    """Check a signed challenge is the hub's and parse it.

    With ``holder_kid`` (the receiving agent's node id), the challenge must be addressed to
    it. Raises :class:`BadSignature` or :class:`MalformedMessage`.
    """
    _, payload = cose.open_signed(data, hub, limits=SIGNED_CHALLENGE_LIMITS)
    challenge = proofs.decode_challenge(payload)
    if holder_kid is not None and challenge.holder_kid != holder_kid:
        raise BadSignature("challenge is addressed to another node")
    return challenge


def judge_answer(
    challenge: Challenge,
    answer: tuple[bytes, float] | None,
    key: PublicIdentity,
    placements: Sequence[Placement],
) -> Verdict:
    """Judge one device's ``answer`` (its bytes and when it was received, or None when none
    came) against the roots of its ``placements``."""
    if key.kid != challenge.holder_kid:
        raise LocalProtocolError("judge_answer() with a key other than the challenged device's")
    node_id = format_node_id(challenge.holder_kid)
    shards = _distinct(node_id, placements)
    held = sum(p.piece_size for p in shards.values())
    if answer is None:
        proof = DeviceProof.no_answer(held)
        return Verdict(node_id, challenge.epoch, False, False, (), held, "", proof)
    data, received_at = answer
    roots = {}
    for asked_item in challenge.items:
        asked = shards.get((asked_item.object_cid, asked_item.shard_index))
        if asked is not None:
            roots[asked.key] = (asked.root, asked.leaf_count, asked.block_size)
    rejected = ""
    try:
        result = proofs.verify(challenge, data, key, roots, received_at)
    except (ProofRejected, BadSignature) as exc:
        reason = _classify(challenge, data, exc, roots)
        rejected = str(exc) or reason
        late = False
        items = tuple(
            ItemVerdict(i.object_cid, i.shard_index, False, reason) for i in challenge.items
        )
    else:
        late = result.late
        items = tuple(
            ItemVerdict(o.object_cid, o.shard_index, o.passed, str(o.reason)) for o in result.items
        )
    proof_items = []
    for item in items:
        placement = shards.get((item.object_cid, item.shard_index))
        if placement is None or not item.judged:
            continue
        label = shard_label(item.object_cid, item.shard_index)
        reason = "" if item.passed else item.reason
        proof_items.append(ProofItem(label, placement.piece_size, item.passed, reason))
    proof = DeviceProof(tuple(proof_items), held_bytes=held)
    return Verdict(node_id, challenge.epoch, True, late, items, held, rejected, proof)


def shard_label(object_cid: bytes, shard_index: int) -> str:
    """The label a shard's proof items carry in the rewards input: ``<CID in hex>/<index>``.

    Hex rather than the ``bafk...`` text form: the standard library's base32 is written in
    Python and costs a hub auditing 10,000 devices seconds per epoch.
    """
    return f"{object_cid.hex()}/{shard_index}"


def _classify(
    challenge: Challenge,
    data: bytes,
    error: RemoteProtocolError,
    roots: Mapping[tuple[bytes, int], proofs.RootInfo],
) -> str:
    """A short, stable reason for an unusable answer (the error's text varies)."""
    if isinstance(error, BadSignature):
        return BAD_SIGNATURE
    if len(data) > proofs.answer_size_bound(challenge, roots):
        return OVERSIZE
    try:
        # Only reached for answers verify() refused, already bounded in size: read the echo
        # to say which kind. A CBOR item takes at least one byte, hence the item bound.
        limits = cbor.Limits(max_size=len(data), max_depth=8, max_items=len(data))
        payload = cbor.decode(cose.parse(data, limits).payload, limits)
        fields = wire.reader(payload, wire.Kind.PROOF)
        epoch, nonce, holder = fields.optional(2), fields.optional(3), fields.optional(4)
    except RemoteProtocolError:
        return MALFORMED
    if (epoch, nonce) != (challenge.epoch, challenge.nonce):
        return REPLAYED
    if holder != challenge.holder_kid:
        return WRONG_HOLDER
    return MALFORMED


def _distinct(node_id: str, held: Sequence[Placement]) -> dict[tuple[bytes, int], Placement]:
    """The device's placements by shard; one shard listed twice must be listed alike."""
    shards: dict[tuple[bytes, int], Placement] = {}
    for placement in held:
        known = shards.setdefault((placement.object_cid, placement.shard_index), placement)
        if known is not placement and known != placement:
            raise LocalProtocolError(
                f"device {node_id}: shard {cid.to_text(placement.object_cid)}/"
                f"{placement.shard_index} listed with two different roots or sizes"
            )
    return shards


def _order(placement: Placement) -> tuple[bytes, int]:
    return placement.key
