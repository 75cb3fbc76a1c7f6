"""Storage proofs: the hub's challenge, the holder's signed answer, and its verification.

Each epoch the hub picks a sample of the shards a holder acknowledged (by receipt) and, for
each, block indices derived from a fresh nonce, so the holder cannot know which blocks will be
asked before the challenge arrives. The holder answers with those blocks and their Merkle audit
paths (:mod:`lichen.merkle`), echoes the epoch, nonce and its node id, and signs the whole
batch once (COSE_Sign1, :mod:`lichen.cose`). The hub checks the signature and the echo (so an
old answer cannot be replayed), then each block against the root it learnt from the receipt.
An answer after the deadline fails every item. Wire formats (CDDL)::

    challenge = {
      0 => 1, 1 => 6,                 ; envelope: v, kind CHALLENGE
      2 => uint,                      ; epoch
      3 => bstr .size 32,             ; nonce, fresh per challenge
      4 => bstr .size 20,             ; node id of the holder challenged
      5 => uint,                      ; deadline, unix seconds
      6 => [1*256 challenge-item],    ; MAX_ITEMS
    }
    challenge-item = [
      bstr .size 36,                  ; object CID
      uint,                           ; shard index, < 256
      [1*16 uint],                    ; block indices (MAX_BLOCKS_PER_ITEM), < leaf count
    ]

    proof = {                         ; the payload of a COSE_Sign1 by the holder
      0 => 1, 1 => 7,                 ; envelope: v, kind PROOF
      2 => uint,                      ; epoch (echoed)
      3 => bstr .size 32,             ; nonce (echoed)
      4 => bstr .size 20,             ; holder node id (echoed; the signer)
      5 => [1*256 proof-item],        ; one per challenge item, in the challenge's order
    }
    proof-item = [
      bstr .size 36,                  ; object CID (echoed)
      uint,                           ; shard index (echoed)
      [1*16 proof-block] / null,      ; one per block index asked; null: shard not held
    ]
    proof-block = [
      bstr,                           ; the block, at most the shard's block size
      [* bstr .size 32],              ; its audit path, nearest sibling first (RFC 9162 2.1.3.1)
    ]
"""

from __future__ import annotations

import dataclasses
import hmac
import math
import random
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, NamedTuple

from lichen import cbor, cid, cose, merkle, shard, wire
from lichen.errors import (
    IntegrityError,
    LocalProtocolError,
    MalformedMessage,
    ProofRejected,
    UnsupportedVersion,
)
from lichen.fieldcheck import is_uint, remote_build
from lichen.identity import NODE_ID_SIZE, Identity, PublicIdentity

NONCE_SIZE = 32  # 256 bits: never repeats, never guessable
# sample_size(0.02, 0.99) = 228 fits: enough to catch a 2% loss with 99% per epoch.
MAX_ITEMS = 256
# One block per shard is what the sampling argument needs; a few more let the hub probe
# partial loss inside a shard, and 16 keeps an answer of 1 MiB blocks bounded.
MAX_BLOCKS_PER_ITEM = 16
# Absolute cap on an answer: 44 items of the largest (1 MiB) block plus paths is about 45 MiB.
# verify() also derives a tighter bound from the shards and block sizes actually asked.
MAX_PROOF_SIZE = 64 * 1024 * 1024
# A full challenge is 256 * (38 + 3 + 16 * 5) bytes, about 31 KiB.
CHALLENGE_LIMITS = cbor.Limits(
    max_size=64 * 1024, max_depth=4, max_items=16 + MAX_ITEMS * (4 + MAX_BLOCKS_PER_ITEM)
)
# The COSE wrapper nests 3 deep (tag, array, header map), the proof payload 6 (map, items,
# item, blocks, block, path); 8 leaves room without admitting anything deeper.
_PROOF_DEPTH = 8
_PROOF_MAX_ITEMS = 32 + MAX_ITEMS * (4 + MAX_BLOCKS_PER_ITEM * (3 + merkle.MAX_PATH_LENGTH))
# Bytes an answer needs besides the blocks and paths: COSE and envelope (fixed), per item
# (CID, index, array heads), per block (bstr and array heads) and per path hash.
_FIXED_OVERHEAD = 256
_ITEM_OVERHEAD = 48
_BLOCK_OVERHEAD = 16
_PATH_ENTRY = 2 + merkle.HASH_SIZE

_BLOCK_LABEL = b"lichen-challenge-block/1"


class ChallengeItem(NamedTuple):
    """One shard asked about: which object, which shard, which of its blocks."""

    object_cid: bytes
    shard_index: int
    block_indices: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Challenge:
    """What the hub asks one holder in one epoch; construction checks every field."""

    epoch: int
    nonce: bytes
    holder_kid: bytes
    deadline: int
    """Unix seconds: an answer received later fails every item."""
    items: tuple[ChallengeItem, ...]

    def __post_init__(self) -> None:
        _check_challenge(self)

    def encode(self) -> bytes:
        """The challenge as deterministic CBOR (kind CHALLENGE)."""
        return wire.encode(
            wire.Kind.CHALLENGE,
            {
                2: self.epoch,
                3: self.nonce,
                4: self.holder_kid,
                5: self.deadline,
                6: [[i.object_cid, i.shard_index, list(i.block_indices)] for i in self.items],
            },
        )


def _check_challenge(c: Challenge) -> None:
    if not is_uint(c.epoch) or not is_uint(c.deadline):
        raise LocalProtocolError("challenge: epoch and deadline are unsigned integers")
    if not isinstance(c.nonce, bytes) or len(c.nonce) != NONCE_SIZE:
        raise LocalProtocolError(f"challenge: the nonce is {NONCE_SIZE} bytes")
    if not isinstance(c.holder_kid, bytes) or len(c.holder_kid) != NODE_ID_SIZE:
        raise LocalProtocolError("challenge: the holder is a 20-byte node id")
    if not 1 <= len(c.items) <= MAX_ITEMS:
        raise LocalProtocolError(f"challenge: 1 to {MAX_ITEMS} items")
    for item in c.items:
        if not isinstance(item, ChallengeItem):
            raise LocalProtocolError("challenge: items are ChallengeItem tuples")
        try:
            cid.check(item.object_cid)
        except MalformedMessage as exc:
            raise LocalProtocolError(f"challenge: {exc}") from exc
        if not is_uint(item.shard_index, shard.MAX_SHARDS):
            raise LocalProtocolError("challenge: shard index out of range")
        if not 1 <= len(item.block_indices) <= MAX_BLOCKS_PER_ITEM:
            raise LocalProtocolError(f"challenge: 1 to {MAX_BLOCKS_PER_ITEM} blocks per item")
        if not all(is_uint(b, merkle.MAX_LEAVES) for b in item.block_indices):
            raise LocalProtocolError("challenge: block index out of range")


def decode_challenge(data: bytes) -> Challenge:
    """Parse a challenge from untrusted bytes; :class:`MalformedMessage` if it is not one."""
    fields = wire.decode(data, wire.Kind.CHALLENGE, CHALLENGE_LIMITS)
    epoch = fields.uint(2)
    nonce = fields.bstr(3, size=NONCE_SIZE)
    holder_kid = fields.bstr(4, size=NODE_ID_SIZE)
    deadline = fields.uint(5)
    raw_items = fields.array(6, max_len=MAX_ITEMS)
    fields.finish()
    items = []
    for raw in raw_items:
        if not (isinstance(raw, list) and len(raw) == 3 and isinstance(raw[2], list)):
            raise MalformedMessage("CHALLENGE: an item is [cid, shard index, [block indices]]")
        items.append(ChallengeItem(raw[0], raw[1], tuple(raw[2])))
    return remote_build(lambda: Challenge(epoch, nonce, holder_kid, deadline, tuple(items)))


def sample_size(loss_fraction: float, detect_probability: float) -> int:
    """Shard samples needed to catch a holder missing ``loss_fraction`` of its shards.

    Each sample is drawn independently and uniformly from the shards the holder should have,
    so it lands on a lost shard with probability f = ``loss_fraction``. The holder escapes
    only if all s samples land on shards it still has, which happens with probability
    (1 - f)^s. Requiring (1 - f)^s <= 1 - p, with p = ``detect_probability``, and taking logs
    (both sides negative, so the inequality flips when dividing by ln(1 - f) < 0) gives
    s >= ln(1 - p) / ln(1 - f); the answer is the smallest such integer. Drawing without
    replacement (as :func:`make_challenge` does) only lowers the escape probability.
    Example: f = 0.1, p = 0.99 gives ceil(43.7) = 44.
    """
    if not 0.0 < loss_fraction <= 1.0:
        raise LocalProtocolError("loss_fraction must be in (0, 1]")
    if not 0.0 <= detect_probability < 1.0:
        raise LocalProtocolError("detect_probability must be in [0, 1)")
    if loss_fraction == 1.0 or detect_probability == 0.0:
        return 1
    samples = max(1, math.ceil(math.log1p(-detect_probability) / math.log1p(-loss_fraction)))
    # Guard the last step against rounding in the logarithms: the smallest s that holds.
    escape = 1.0 - detect_probability
    while samples > 1 and (1.0 - loss_fraction) ** (samples - 1) <= escape:
        samples -= 1
    while (1.0 - loss_fraction) ** samples > escape:
        samples += 1
    return samples


def derive_block_indices(
    nonce: bytes,
    holder_kid: bytes,
    object_cid: bytes,
    shard_index: int,
    block_count: int,
    count: int,
) -> tuple[int, ...]:
    """``count`` distinct block indices below ``block_count``, drawn from the nonce.

    Index j is HMAC-SHA256(nonce, label || holder || cid || shard index || counter) mod
    ``block_count``, skipping repeats: unknowable before the nonce is, and reproducible by
    anyone who has it. Asking at least ``block_count`` blocks asks them all.
    """
    if block_count < 1 or count < 1:
        raise LocalProtocolError("need at least one block to draw from and to draw")
    if count >= block_count:
        return tuple(range(block_count))
    prefix = _BLOCK_LABEL + holder_kid + object_cid + shard_index.to_bytes(2, "big")
    chosen: list[int] = []
    counter = 0
    while len(chosen) < count:
        digest = hmac.digest(nonce, prefix + counter.to_bytes(4, "big"), "sha256")
        counter += 1
        index = int.from_bytes(digest, "big") % block_count  # bias below 2^-200
        if index not in chosen:
            chosen.append(index)
    return tuple(chosen)


def make_challenge(
    epoch: int,
    nonce: bytes,
    holder_kid: bytes,
    deadline: int,
    held: Sequence[tuple[bytes, int, int]],
    shards_to_sample: int,
    blocks_per_shard: int,
    rng: random.Random,
) -> Challenge:
    """Challenge a holder on a sample of the shards ``held`` (object CID, index, block count).

    Draws ``shards_to_sample`` distinct shards with the caller's ``rng`` (all of them when it
    holds no more than that) and, for each, ``blocks_per_shard`` block indices from ``nonce``.
    """
    if not held:
        raise LocalProtocolError("a holder with no shards has nothing to prove")
    if not 1 <= shards_to_sample <= MAX_ITEMS:
        raise LocalProtocolError(f"sample 1 to {MAX_ITEMS} shards")
    if not 1 <= blocks_per_shard <= MAX_BLOCKS_PER_ITEM:
        raise LocalProtocolError(f"ask 1 to {MAX_BLOCKS_PER_ITEM} blocks per shard")
    if len(nonce) != NONCE_SIZE:
        raise LocalProtocolError(f"the nonce is {NONCE_SIZE} bytes")
    if shards_to_sample >= len(held):
        picked: Sequence[int] = range(len(held))
    else:
        picked = sorted(rng.sample(range(len(held)), shards_to_sample))
    items = []
    for position in picked:
        object_cid, shard_index, block_count = held[position]
        indices = derive_block_indices(
            nonce, holder_kid, object_cid, shard_index, block_count, blocks_per_shard
        )
        items.append(ChallengeItem(object_cid, shard_index, indices))
    return Challenge(epoch, nonce, holder_kid, deadline, tuple(items))


ReadBlock = Callable[[bytes, int, int], tuple[bytes, Sequence[bytes]] | None]
"""(object CID, shard index, block index) -> (block, audit path), or None when not held."""


def answer(challenge: Challenge, read_block: ReadBlock, holder: Identity) -> bytes:
    """The holder's signed answer to ``challenge``.

    An item any of whose blocks ``read_block`` cannot supply is answered as missing. Raises
    :class:`MalformedMessage` when the blocks asked would exceed :data:`MAX_PROOF_SIZE`.
    """
    if holder.kid != challenge.holder_kid:
        raise LocalProtocolError("this challenge is for another holder")
    items: list[list[Any]] = []
    size = _FIXED_OVERHEAD
    for item in challenge.items:
        proven: list[list[Any]] = []
        for block_index in item.block_indices:
            got = read_block(item.object_cid, item.shard_index, block_index)
            if got is None:
                break
            block, path = got
            size += len(block) + _BLOCK_OVERHEAD + _PATH_ENTRY * len(path)
            if size > MAX_PROOF_SIZE:
                raise MalformedMessage(f"challenge asks for more than {MAX_PROOF_SIZE} bytes")
            proven.append([bytes(block), [bytes(p) for p in path]])
        missing = len(proven) < len(item.block_indices)
        items.append([item.object_cid, item.shard_index, None if missing else proven])
    payload = wire.encode(
        wire.Kind.PROOF,
        {2: challenge.epoch, 3: challenge.nonce, 4: challenge.holder_kid, 5: items},
    )
    return cose.sign1(payload, holder)


class Reason(StrEnum):
    """Why one challenged item passed or failed."""

    OK = "ok"
    MISSING = "missing"
    """The holder said it does not have the shard."""
    BAD_BLOCK = "bad block"
    """A block and its path do not lead to the shard's root (or the block is oversize)."""
    BAD_PATH = "bad path"
    """An audit path of the wrong length for the block's position in the tree."""
    LATE = "late"
    """The whole answer arrived after the deadline."""
    UNKNOWN_SHARD = "unknown shard"
    """The verifier has no root for this shard: not the holder's fault, no verdict."""


@dataclasses.dataclass(frozen=True)
class ItemOutcome:
    """The verdict on one challenged shard."""

    object_cid: bytes
    shard_index: int
    reason: Reason

    @property
    def passed(self) -> bool:
        """True only when every block asked was proven."""
        return self.reason == Reason.OK


@dataclasses.dataclass(frozen=True)
class ProofResult:
    """The verdict on one answer: one outcome per challenged item, in the challenge's order."""

    epoch: int
    holder_kid: bytes
    items: tuple[ItemOutcome, ...]
    late: bool

    @property
    def passed(self) -> int:
        """How many items were proven."""
        return sum(1 for i in self.items if i.passed)

    @property
    def failed(self) -> int:
        """How many items were not proven, for any reason."""
        return len(self.items) - self.passed

    @property
    def all_passed(self) -> bool:
        """True when every item was proven in time."""
        return self.failed == 0


RootInfo = tuple[bytes, int, int]
"""(Merkle root, leaf count, block size) of a shard, as learnt from receipts and headers."""


def answer_size_bound(challenge: Challenge, roots: Mapping[tuple[bytes, int], RootInfo]) -> int:
    """The most bytes an honest answer to ``challenge`` can take, capped at MAX_PROOF_SIZE."""
    size = _FIXED_OVERHEAD
    for item in challenge.items:
        known = roots.get((item.object_cid, item.shard_index))
        block_size = known[2] if known else shard.MAX_BLOCK_SIZE
        depth = (known[1] - 1).bit_length() if known else merkle.MAX_PATH_LENGTH
        per_block = block_size + _BLOCK_OVERHEAD + _PATH_ENTRY * depth
        size += _ITEM_OVERHEAD + per_block * len(item.block_indices)
    return min(size, MAX_PROOF_SIZE)


def verify(
    challenge: Challenge,
    response: bytes,
    holder: PublicIdentity,
    roots: Mapping[tuple[bytes, int], RootInfo],
    received_at: float,
) -> ProofResult:
    """Judge ``holder``'s ``response`` to ``challenge`` against the shard ``roots``.

    Returns per-item outcomes. Raises :class:`BadSignature` when the answer is not signed by
    ``holder``, and :class:`ProofRejected` when it is unusable as a whole: oversize or
    malformed, for another epoch or nonce (a replay), for another holder, or not shaped like
    the challenge. Every refusal that counts against the holder (oversize included) comes
    after its signature was checked: anyone can send bytes in the holder's name.
    """
    if holder.kid != challenge.holder_kid:
        raise LocalProtocolError("verify() with a key other than the challenged holder's")
    if len(response) > MAX_PROOF_SIZE:
        raise ProofRejected(f"answer of {len(response)} bytes, more than the {MAX_PROOF_SIZE} cap")
    limits = cbor.Limits(
        max_size=MAX_PROOF_SIZE, max_depth=_PROOF_DEPTH, max_items=_PROOF_MAX_ITEMS
    )
    try:
        message = cose.parse(response, limits)
        if message.tag != cose.TAG_SIGN1:
            raise MalformedMessage("a proof is a COSE_Sign1")
    except MalformedMessage as exc:
        raise ProofRejected(f"malformed answer: {exc}") from exc
    payload = message.verify_signature(holder)
    bound = answer_size_bound(challenge, roots)
    if len(response) > bound:
        raise ProofRejected(f"answer of {len(response)} bytes, more than the {bound} it can need")
    try:
        # The payload holds no CBOR tags at all; the COSE tag was the envelope's.
        payload_limits = dataclasses.replace(limits, max_size=bound, allowed_tags=frozenset())
        epoch, nonce, holder_kid, raw_items = _read_proof(payload, payload_limits)
    except (MalformedMessage, UnsupportedVersion) as exc:
        raise ProofRejected(f"malformed answer: {exc}") from exc
    if epoch != challenge.epoch or nonce != challenge.nonce:
        raise ProofRejected(f"answer is for another challenge (epoch {epoch}): a replay")
    if holder_kid != challenge.holder_kid:
        raise ProofRejected("answer names another holder")
    if len(raw_items) != len(challenge.items):
        raise ProofRejected(f"{len(raw_items)} answers to {len(challenge.items)} items")
    late = received_at > challenge.deadline
    outcomes = []
    for asked, raw in zip(challenge.items, raw_items, strict=True):
        blocks = _read_item(asked, raw)
        if late:
            reason = Reason.LATE
        else:
            reason = _judge(asked, blocks, roots.get((asked.object_cid, asked.shard_index)))
        outcomes.append(ItemOutcome(asked.object_cid, asked.shard_index, reason))
    return ProofResult(challenge.epoch, challenge.holder_kid, tuple(outcomes), late)


def read_echo(payload: bytes) -> tuple[int, bytes, bytes]:
    """The (epoch, nonce, holder node id) a proof's payload echoes, read without its
    signature: enough to find the challenge it answers, never to trust it (:func:`verify`
    does that). :class:`MalformedMessage` or :class:`UnsupportedVersion` if unreadable."""
    limits = cbor.Limits(
        max_size=MAX_PROOF_SIZE,
        max_depth=_PROOF_DEPTH,
        max_items=_PROOF_MAX_ITEMS,
        allowed_tags=frozenset(),
    )
    epoch, nonce, holder_kid, _ = _read_proof(payload, limits)
    return epoch, nonce, holder_kid


def _read_proof(payload: bytes, limits: cbor.Limits) -> tuple[int, bytes, bytes, list[Any]]:
    fields = wire.decode(payload, wire.Kind.PROOF, limits)
    epoch = fields.uint(2)
    nonce = fields.bstr(3, size=NONCE_SIZE)
    holder_kid = fields.bstr(4, size=NODE_ID_SIZE)
    items = fields.array(5, max_len=MAX_ITEMS)
    fields.finish()
    return epoch, nonce, holder_kid, items


def _read_item(asked: ChallengeItem, raw: Any) -> list[tuple[bytes, list[bytes]]] | None:
    """The (block, path) pairs of one answered item, or None when answered as missing."""
    if not (isinstance(raw, list) and len(raw) == 3):
        raise ProofRejected("an answered item is [cid, shard index, blocks or null]")
    if raw[0] != asked.object_cid or raw[1] != asked.shard_index:
        raise ProofRejected("answered items do not match the challenge's")
    if raw[2] is None:
        return None
    if not isinstance(raw[2], list) or len(raw[2]) != len(asked.block_indices):
        raise ProofRejected("an answered item must carry one block per index asked")
    pairs = []
    for entry in raw[2]:
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], bytes)
            and isinstance(entry[1], list)
            and all(isinstance(p, bytes) for p in entry[1])
        ):
            raise ProofRejected("a proven block is [bytes, [hashes]]")
        pairs.append((entry[0], entry[1]))
    return pairs


def _judge(
    asked: ChallengeItem,
    blocks: list[tuple[bytes, list[bytes]]] | None,
    known: RootInfo | None,
) -> Reason:
    if known is None:
        return Reason.UNKNOWN_SHARD
    if blocks is None:
        return Reason.MISSING
    root, leaf_count, block_size = known
    for block_index, (block, path) in zip(asked.block_indices, blocks, strict=True):
        if block_index >= leaf_count:
            raise LocalProtocolError(
                f"challenge asked block {block_index} of a {leaf_count}-block shard"
            )
        if len(block) > block_size:
            return Reason.BAD_BLOCK
        if len(path) != merkle.path_length(block_index, leaf_count):
            return Reason.BAD_PATH
        try:
            merkle.verify_inclusion(root, block_index, leaf_count, block, path)
        except IntegrityError:
            return Reason.BAD_BLOCK
    return Reason.OK
