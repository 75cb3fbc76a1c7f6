"""The rewards ledger: one hub-signed record per epoch, each hash-chained to the one before.

Anyone holding the hub's public key can audit the whole history: every record is a COSE_Sign1
by the hub (:mod:`lichen.cose`), names the SHA-256 of the previous signed record (32 zero bytes
for the first), and carries the epoch's rewards exactly as :func:`lichen.rewards.epoch_rewards`
computed them. :func:`verify_ledger` checks every signature, the chain of hashes, that epoch
numbers are consecutive, and that each record's figures add up (the pool split is recomputed
from the proven bytes, penalties from the policy), and names the first bad epoch. Removing the
newest records cannot be seen from the records alone: compare :attr:`LedgerSummary.head` with
a head published elsewhere (or pass ``head``).

Record (CDDL), the payload of a COSE_Sign1 by the hub::

    ledger-record = {
      0 => 1, 1 => 14,          ; envelope: v, kind LEDGER_RECORD
      2 => uint,                ; epoch number, one more than the previous record's
      3 => uint,                ; epoch started, unix seconds
      4 => uint,                ; epoch closed, unix seconds, >= started
      5 => bstr .size 32,       ; SHA-256 of the previous signed record; 32 zero bytes first
      6 => bstr .size 20,       ; the hub's node id (the signer)
      7 => epoch-rewards,       ; lichen.rewards: EpochRewards.encode() as a nested map,
    }                           ; envelope {0: 1, 1: 8} included; its epoch equals key 2

The nested ``epoch-rewards`` map and its CDDL are in :mod:`lichen.rewards`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lichen import cbor, cose, wire
from lichen.errors import (
    BadSignature,
    IntegrityError,
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
)
from lichen.identity import NODE_ID_SIZE, Identity, PublicIdentity
from lichen.rewards import (
    MAX_AMOUNT,
    MAX_BYTES,
    MAX_EPOCH_SECONDS,
    MAX_FAILURES,
    PAID_NOTHING,
    DeviceReward,
    EpochRewards,
    Outcome,
    RewardPolicy,
    Standing,
    State,
    penalty_for,
    split_pool,
)

HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)
"""The ``previous`` of the first record: there is nothing before it."""

MAX_DEVICES = 100_000
"""Most devices in one record: ten times the 10,000 a hub is sized for."""

MAX_NODE_ID = 64
"""Longest node id in a record, characters; real ones are 32."""

MAX_EXPLANATION_LINES = 16
"""Most explanation lines per device; :func:`lichen.rewards.epoch_rewards` writes at most 6."""

MAX_LINE = 512
"""Longest explanation line, characters; real lines are under 200."""

MAX_RECORD_SIZE = 64 * 1024 * 1024
"""Largest signed record. A 10,000-device epoch is about 2.5 MB (250 bytes per passing
device, about 400 for one with warnings), so this leaves room for :data:`MAX_DEVICES`."""

# Items the bounded decoder may meet: per device 10 keys, 10 values, 2 x 2 standing elements
# and the explanation lines; a little for the record's own fields and the policy.
_ITEMS_PER_DEVICE = 24 + MAX_EXPLANATION_LINES
_PAYLOAD_LIMITS = cbor.Limits(
    max_size=MAX_RECORD_SIZE,
    max_depth=6,  # record map, rewards map, devices array, device map, standing array
    max_items=64 + MAX_DEVICES * _ITEMS_PER_DEVICE,
    allowed_tags=frozenset(),
)
# The COSE wrapper: tag, array, protected bstr, header map with the kid, payload, signature.
_SIGNED_LIMITS = cbor.Limits(max_size=MAX_RECORD_SIZE + 256, max_depth=4, max_items=16)


class LedgerError(IntegrityError):
    """A ledger that fails verification. ``epoch`` is the first bad epoch (None if unknown),
    ``position`` the 0-based place of the offending record in the sequence checked."""

    def __init__(self, message: str, *, epoch: int | None, position: int) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.position = position


@dataclass(frozen=True)
class LedgerRecord:
    """One verified epoch record."""

    epoch: int
    started: int
    closed: int
    previous: bytes
    """SHA-256 of the previous signed record, or :data:`ZERO_HASH` for the first."""
    hub_kid: bytes
    rewards: EpochRewards
    digest: bytes
    """SHA-256 of this signed record: the next record's ``previous``."""

    @property
    def head(self) -> ChainHead:
        """This record as the next one chains to it."""
        return ChainHead(self.epoch, self.started, self.digest)


@dataclass(frozen=True)
class LedgerSummary:
    """What a verified ledger adds up to."""

    records: int
    first_epoch: int | None
    last_epoch: int | None
    head: bytes
    """SHA-256 of the last record (:data:`ZERO_HASH` for an empty ledger): publish it so
    that removing the newest records can be noticed."""
    total_reward: int
    total_penalty: int
    hub_node_id: str


def record_hash(record: bytes) -> bytes:
    """The SHA-256 of a signed record, as the next record names it."""
    return hashlib.sha256(record).digest()


@dataclass(frozen=True)
class ChainHead:
    """What the next record needs of the newest one: its epoch, start and hash, as the hub
    that wrote it keeps them (so writing a record never re-reads the one before)."""

    epoch: int
    started: float
    digest: bytes
    """SHA-256 of the signed record (:func:`record_hash`)."""


def make_record(
    hub: Identity,
    previous: ChainHead | None,
    rewards: EpochRewards,
    started: float,
    closed: float,
) -> bytes:
    """The hub-signed record of ``rewards``, chained to ``previous``, this hub's newest record.

    ``previous`` is None only for the first record. Times are unix seconds, recorded whole
    (floored). :func:`verify_ledger` is what checks a chain; this checks its own input only.
    """
    start, close = _seconds("started", started), _seconds("closed", closed)
    if close < start:
        raise LocalProtocolError("an epoch cannot close before it started")
    previous_hash = ZERO_HASH
    if previous is not None:
        if not isinstance(previous.digest, bytes) or len(previous.digest) != HASH_SIZE:
            raise LocalProtocolError(f"the previous record's hash is {HASH_SIZE} bytes")
        if rewards.epoch != previous.epoch + 1:
            raise LocalProtocolError(f"epoch {rewards.epoch} cannot follow epoch {previous.epoch}")
        if start < _seconds("previous started", previous.started):
            raise LocalProtocolError(f"epoch {rewards.epoch} starts before epoch {previous.epoch}")
        previous_hash = previous.digest
    problem = _check_figures(rewards)
    if problem is not None:
        raise LocalProtocolError(f"epoch {rewards.epoch}: {problem}")
    if len(rewards.devices) > MAX_DEVICES:
        raise LocalProtocolError(f"more than {MAX_DEVICES} devices in one record")
    payload = wire.encode(
        wire.Kind.LEDGER_RECORD,
        {
            2: rewards.epoch,
            3: start,
            4: close,
            5: previous_hash,
            6: hub.kid,
            7: wire.pack(wire.Kind.EPOCH_REWARDS, rewards.to_cbor_map()),
        },
    )
    if len(payload) > MAX_RECORD_SIZE - 256:
        raise LocalProtocolError(f"a record of {len(payload)} bytes exceeds {MAX_RECORD_SIZE}")
    return cose.sign1(payload, hub)


def open_record(data: bytes, hub: PublicIdentity) -> LedgerRecord:
    """Check one record's signature, shape and figures (not its place in the chain).

    Raises :class:`BadSignature` when ``hub`` did not sign it, :class:`MalformedMessage` (or
    :class:`UnsupportedVersion`) when it is not a record, and :class:`IntegrityError` when
    its figures do not add up.
    """
    _, payload = cose.open_signed(data, hub, limits=_SIGNED_LIMITS)
    decoded = cbor.decode(payload, _PAYLOAD_LIMITS)
    if cbor.encode(decoded) != payload:
        raise MalformedMessage("LEDGER_RECORD: not in deterministic CBOR")
    fields = wire.reader(decoded, wire.Kind.LEDGER_RECORD)
    epoch = fields.uint(2, max_value=2**63 - 1)
    started = fields.uint(3)
    closed = fields.uint(4)
    previous = fields.bstr(5, size=HASH_SIZE)
    hub_kid = fields.bstr(6, size=NODE_ID_SIZE)
    rewards = _read_rewards(fields.map(7))
    fields.finish()
    if hub_kid != hub.kid:
        raise BadSignature(f"epoch {epoch}: record names another hub than its signer")
    if closed < started:
        raise IntegrityError(f"epoch {epoch}: closed before it started")
    if rewards.epoch != epoch:
        raise IntegrityError(f"epoch {epoch}: carries the rewards of epoch {rewards.epoch}")
    problem = _check_figures(rewards)
    if problem is not None:
        raise IntegrityError(f"epoch {epoch}: {problem}")
    return LedgerRecord(epoch, started, closed, previous, hub_kid, rewards, record_hash(data))


def verify_ledger(
    records: Iterable[bytes], hub: PublicIdentity, *, head: bytes | None = None
) -> LedgerSummary:
    """Check a whole ledger, oldest record first; :class:`LedgerError` names the first bad epoch.

    Catches records altered or forged (signature), removed (a gap in the epochs or the chain,
    or a first record that does not start the chain), reordered, and figures that do not add
    up. With ``head``, the last record's hash must equal it, which also catches the newest
    records being removed.
    """
    prior: LedgerRecord | None = None
    count = total_reward = total_penalty = 0
    first: int | None = None
    for position, data in enumerate(records):
        count += 1
        try:
            record = open_record(data, hub)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            epoch = _claimed_epoch(data)
            what = "altered or forged" if isinstance(exc, BadSignature) else "unreadable"
            raise LedgerError(
                f"record {position} ({_name(epoch)}) is {what}: {exc}",
                epoch=epoch,
                position=position,
            ) from exc
        _check_link(record, prior, position)
        if first is None:
            first = record.epoch
        total_reward += record.rewards.total_reward
        total_penalty += record.rewards.total_penalty
        prior = record
    last_hash = prior.digest if prior is not None else ZERO_HASH
    if head is not None and head != last_hash:
        epoch = prior.epoch + 1 if prior is not None else None
        raise LedgerError(
            f"the ledger ends at {_name(prior.epoch if prior else None)}, not at the expected"
            " head: newer records are missing or the ledger was replaced",
            epoch=epoch,
            position=count,
        )
    return LedgerSummary(
        records=count,
        first_epoch=first,
        last_epoch=prior.epoch if prior is not None else None,
        head=last_hash,
        total_reward=total_reward,
        total_penalty=total_penalty,
        hub_node_id=hub.node_id,
    )


def _check_link(record: LedgerRecord, prior: LedgerRecord | None, position: int) -> None:
    def fail(why: str) -> None:
        raise LedgerError(
            f"record {position} (epoch {record.epoch}): {why}",
            epoch=record.epoch,
            position=position,
        )

    if prior is None:
        if record.previous != ZERO_HASH:
            fail("does not start the chain: earlier records are missing")
        return
    if record.epoch <= prior.epoch:
        fail(f"follows epoch {prior.epoch}: records are out of order or repeated")
    if record.epoch != prior.epoch + 1:
        missing = f"epoch {prior.epoch + 1}" + (
            f" to {record.epoch - 1}" if record.epoch - 1 > prior.epoch + 1 else ""
        )
        fail(f"follows epoch {prior.epoch}: {missing} missing")
    if record.previous != prior.digest:
        fail(f"does not chain to the record of epoch {prior.epoch}")
    if record.started < prior.started:
        fail(f"starts before epoch {prior.epoch} did")
    # A device's standing carries over from one epoch to the next; only an evicted device can
    # start again (it enrols anew).
    ended = {device.node_id: device.after for device in prior.rewards.devices}
    for device in record.rewards.devices:
        earlier = ended.get(device.node_id)
        if earlier is not None and earlier.state is not State.EVICTED and device.before != earlier:
            fail(
                f"device {device.node_id} starts as {_standing(device.before)}, "
                f"but ended epoch {prior.epoch} as {_standing(earlier)}"
            )


def _check_figures(rewards: EpochRewards) -> str | None:
    """Why the figures of ``rewards`` do not add up, or None when they do."""
    policy = rewards.policy
    weights: dict[str, int] = {}
    names = [device.node_id for device in rewards.devices]
    if any(a >= b for a, b in itertools.pairwise(names)):
        return "devices are not sorted by node id, or one is listed twice"
    for device in rewards.devices:
        if device.before.state is State.EVICTED:
            if device.after != device.before or device.reward or device.penalty:
                return f"evicted device {device.node_id} changed standing or was paid"
            continue
        if device.after.state not in PAID_NOTHING and device.proven_bytes > 0:
            weights[device.node_id] = device.proven_bytes
        elif device.reward:
            return f"device {device.node_id} was paid without earning"
        expected_penalty = penalty_for(
            device.outcome, device.after.state, device.items_failed, policy
        )
        if device.penalty != expected_penalty:
            return f"device {device.node_id} charged {device.penalty}, not {expected_penalty}"
    shares = split_pool(policy.pool, weights)
    for device in rewards.devices:
        if device.node_id in shares and device.reward != shares[device.node_id]:
            return (
                f"device {device.node_id} paid {device.reward}, "
                f"its share of the pool is {shares[device.node_id]}"
            )
    paid = sum(device.reward for device in rewards.devices)
    if paid != rewards.total_reward or paid > policy.pool:
        return f"rewards add up to {paid}, the record says {rewards.total_reward}"
    charged = sum(device.penalty for device in rewards.devices)
    if charged != rewards.total_penalty:
        return f"penalties add up to {charged}, the record says {rewards.total_penalty}"
    return None


def _read_rewards(value: dict[Any, Any]) -> EpochRewards:
    """Rebuild :class:`EpochRewards` from its nested map; :class:`MalformedMessage`."""
    fields = wire.reader(value, wire.Kind.EPOCH_REWARDS)
    epoch = fields.uint(2, max_value=2**63 - 1)
    seconds = fields.uint(3, max_value=MAX_EPOCH_SECONDS)
    policy_map = cbor.MapReader(fields.map(4), "reward-policy")
    values = [policy_map.uint(key, max_value=MAX_AMOUNT) for key in (0, 1, 2)]
    thresholds = [policy_map.uint(key, max_value=MAX_FAILURES) for key in (3, 4, 5)]
    policy_map.finish()
    total_reward = fields.uint(5)
    total_penalty = fields.uint(6)
    raw_devices = fields.array(7, max_len=MAX_DEVICES)
    fields.finish()
    if seconds == 0:
        raise MalformedMessage("EPOCH_REWARDS: epoch length must be positive")
    try:
        policy = RewardPolicy(*values, *thresholds)
    except LocalProtocolError as exc:
        raise MalformedMessage(f"EPOCH_REWARDS: {exc}") from exc
    devices = tuple(_read_device(raw, seconds) for raw in raw_devices)
    weights = sum(d.proven_bytes for d in devices if d.after.state not in PAID_NOTHING)
    return EpochRewards(
        epoch=epoch,
        epoch_seconds=seconds,
        policy=policy,
        devices=devices,
        total_reward=total_reward,
        total_penalty=total_penalty,
        total_byte_seconds=weights * seconds,
    )


def _read_device(raw: Any, seconds: int) -> DeviceReward:
    if not isinstance(raw, dict):
        raise MalformedMessage("device-reward: expected a map")
    fields = cbor.MapReader(raw, "device-reward")
    node_id = fields.tstr(0, max_size=MAX_NODE_ID)
    before = _read_standing(fields.array(1, max_len=2))
    after = _read_standing(fields.array(2, max_len=2))
    outcome_text = fields.tstr(3, max_size=32)
    proven = fields.uint(4, max_value=MAX_BYTES)
    passed = fields.uint(5, max_value=2**32)
    failed = fields.uint(6, max_value=2**32)
    reward = fields.uint(7, max_value=MAX_AMOUNT)
    penalty = fields.uint(8)
    lines = fields.array(9, max_len=MAX_EXPLANATION_LINES)
    fields.finish()
    if not node_id:
        raise MalformedMessage("device-reward: empty node id")
    try:
        outcome = Outcome(outcome_text)
    except ValueError as exc:
        raise MalformedMessage(f"device-reward: unknown outcome {outcome_text!r}") from exc
    if not all(isinstance(line, str) and len(line) <= MAX_LINE for line in lines):
        raise MalformedMessage(f"device-reward: explanation lines are text, {MAX_LINE} at most")
    return DeviceReward(
        node_id=node_id,
        before=before,
        after=after,
        outcome=outcome,
        proven_bytes=proven,
        byte_seconds=proven * seconds,
        items_passed=passed,
        items_failed=failed,
        reward=reward,
        penalty=penalty,
        explanation=tuple(lines),
    )


def _read_standing(raw: list[Any]) -> Standing:
    if len(raw) != 2 or not isinstance(raw[0], str):
        raise MalformedMessage("standing: expected [state, failures]")
    try:
        return Standing(State(raw[0]), raw[1])
    except (ValueError, LocalProtocolError) as exc:
        raise MalformedMessage(f"standing: {exc}") from exc


def _claimed_epoch(data: bytes) -> int | None:
    """The epoch an unverifiable record claims, for the error message; None if unreadable."""
    try:
        payload = cbor.decode(cose.parse(data, _SIGNED_LIMITS).payload, _PAYLOAD_LIMITS)
    except (RemoteProtocolError, LocalProtocolError):
        return None
    epoch = payload.get(2) if isinstance(payload, dict) else None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def _standing(standing: Standing) -> str:
    return f"{standing.state} ({standing.failures} failing epochs)"


def _name(epoch: int | None) -> str:
    return "epoch unknown" if epoch is None else f"epoch {epoch}"


def _seconds(name: str, value: float) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LocalProtocolError(f"{name} must be a finite number of unix seconds")
    if value < 0:
        raise LocalProtocolError(f"{name} must not be negative")
    return math.floor(value)
