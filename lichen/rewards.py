"""Rewards for one epoch: a pool shared by proven byte-time, with warnings before penalties.

A pure function of the epoch's proof outcomes and each device's standing before it. The rules:

Credit. A device that answered is credited ``held * passed // sampled`` proven bytes, where
``sampled`` is the number of proof items (blocks) checked, ``passed`` how many verified, and
``held`` the bytes it holds: the caller's figure from receipts when given, otherwise the total
size of the distinct shards the items came from. The hub samples a few blocks, so the pass
rate estimates the fraction of its data a device still has. Proven byte-seconds are proven
bytes times the epoch length; a device that did not answer proves nothing.

Sharing. The pool is divided among earning devices (every device not penalised or evicted
after this epoch) in proportion to proven byte-seconds, in integers: each gets the floor of
its exact share, and the micro-units left over go one each to the largest remainders (ties to
the smaller node id). The parts sum to the pool exactly, or to 0 when no earning device proved
anything. A forfeited share is not burnt: it is shared among the devices that earned.

Standing. A failing epoch is one with any failed item or no answer; it adds one to the
device's run of consecutive failing epochs. Standing climbs one level per failing epoch at
most, ``ok -> warned`` once the run reaches ``warn_after``, ``warned -> penalised`` at
``penalise_after`` and ``penalised -> evicted`` at ``evict_after`` (the thresholds must
increase), so a device is always warned for at least one epoch before any penalty. A passing
epoch (every sampled item verified) resets the run to 0 and steps down one level
(``penalised -> warned -> ok``). An epoch without a challenge changes nothing. Eviction is
final: the hub repairs the device's shards elsewhere and it must enrol again.

Penalties. In a failing epoch that leaves the device penalised (or evicts it), it forfeits its
share and is charged ``penalty_per_failed_item`` per failed item, or
``penalty_per_missed_answer`` if it did not answer. Below that, failures cost only the credit
the failed items would have earned, plus a warning in the explanation. The penalty is
reported on its own; the ledger decides what a negative net (reward - penalty) means.

Ledger record (CDDL), from :meth:`EpochRewards.to_cbor_map`, encoded as deterministic CBOR::

    epoch-rewards = {
      0 => 1, 1 => 8,           ; envelope: v, kind EPOCH_REWARDS
      2 => uint,                ; epoch number
      3 => uint,                ; epoch length, seconds
      4 => reward-policy,
      5 => uint,                ; total reward: the pool, or 0 when nobody earning proved storage
      6 => uint,                ; total penalties
      7 => [* device-reward],   ; sorted by node id
    }
    reward-policy = {
      0 => uint,                ; pool per epoch, micro-units
      1 => uint,                ; penalty per failed proof item
      2 => uint,                ; penalty per missed answer
      3 => uint, 4 => uint, 5 => uint,   ; warn_after, penalise_after, evict_after
    }
    device-reward = {
      0 => tstr,                ; node id
      1 => standing,            ; before this epoch
      2 => standing,            ; after this epoch
      3 => outcome,
      4 => uint,                ; proven bytes (byte-seconds = proven bytes x epoch length)
      5 => uint,                ; items passed
      6 => uint,                ; items failed
      7 => uint,                ; reward, micro-units
      8 => uint,                ; penalty, micro-units
      9 => [* tstr],            ; explanation, one line each
    }
    standing = [state: "ok" / "warned" / "penalised" / "evicted", failures: uint]
    outcome = "passed" / "failed" / "no-answer" / "not-challenged"

Byte-seconds are left out of the record: they are derived, and large meshes overflow uint64.
The keys start at 2 so the map can become the body of a ``wire`` envelope (0 = version,
1 = kind) once the kind registry has a value for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lichen import wire
from lichen.errors import LocalProtocolError
from lichen.fieldcheck import is_uint

MAX_AMOUNT = 2**48
"""Largest pool or per-item penalty, micro-units (281 million units): with at most
``MAX_ITEMS`` items every figure in the record stays below 2**64, CBOR's largest plain int."""

MAX_ITEMS = 2**15
"""Most proof items for one device in one epoch; samples are tens to hundreds of blocks."""

MAX_BYTES = 2**50
"""Largest byte count for one shard or one device's holdings (1 PiB), far above any device."""

MAX_EPOCH_SECONDS = 366 * 24 * 3600
"""Longest epoch; epochs are minutes to days."""

MAX_FAILURES = 2**32
"""Longest failure run a standing can carry; it stops growing at eviction."""


class State(StrEnum):
    """A device's standing with the hub, from good to gone."""

    OK = "ok"
    WARNED = "warned"
    PENALISED = "penalised"
    EVICTED = "evicted"


class Outcome(StrEnum):
    """What a device's proof round came to this epoch."""

    PASSED = "passed"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    NOT_CHALLENGED = "not-challenged"


PAID_NOTHING = frozenset({State.PENALISED, State.EVICTED})
"""Standings that forfeit the pool share and are charged penalties instead."""


@dataclass(frozen=True)
class Standing:
    """A device's standing, carried from one epoch to the next."""

    state: State = State.OK
    failures: int = 0
    """Consecutive failing epochs up to now."""

    def __post_init__(self) -> None:
        if not isinstance(self.state, State):
            raise LocalProtocolError(f"unknown standing state {self.state!r}")
        _check_count("failures", self.failures, MAX_FAILURES)


@dataclass(frozen=True)
class RewardPolicy:
    """How one epoch's pool is shared and how failures are punished."""

    pool: int
    """Micro-units shared among devices each epoch."""

    penalty_per_failed_item: int = 0
    """Charged per failed proof item, once a device is penalised."""

    penalty_per_missed_answer: int = 0
    """Charged for an epoch with no answer at all, once a device is penalised."""

    warn_after: int = 1
    """Consecutive failing epochs that move a device from ok to warned."""

    penalise_after: int = 3
    """Consecutive failing epochs that move a warned device to penalised."""

    evict_after: int = 6
    """Consecutive failing epochs that move a penalised device to evicted."""

    def __post_init__(self) -> None:
        for name in ("pool", "penalty_per_failed_item", "penalty_per_missed_answer"):
            _check_count(name, getattr(self, name), MAX_AMOUNT)
        for name in ("warn_after", "penalise_after", "evict_after"):
            _check_count(name, getattr(self, name), MAX_FAILURES)
        if not 1 <= self.warn_after < self.penalise_after < self.evict_after:
            raise LocalProtocolError(
                "thresholds must satisfy 1 <= warn_after < penalise_after < evict_after, "
                "so that every device is warned before it is penalised"
            )

    def to_cbor_map(self) -> dict[int, int]:
        """The policy as it is recorded in the ledger."""
        return {
            0: self.pool,
            1: self.penalty_per_failed_item,
            2: self.penalty_per_missed_answer,
            3: self.warn_after,
            4: self.penalise_after,
            5: self.evict_after,
        }


@dataclass(frozen=True)
class ProofItem:
    """One checked proof item: a block of a shard, and whether its proof verified."""

    shard: str
    """Which shard the block belongs to (any stable label, e.g. ``"<cid>/<index>"``)."""

    shard_bytes: int
    """Bytes this item stands for: the size of its shard."""

    passed: bool
    reason: str = ""
    """Why it failed (``"bad block"``, ``"bad path"``, ``"late"``...); empty when it passed."""

    def __post_init__(self) -> None:
        _check_count("shard_bytes", self.shard_bytes, MAX_BYTES)
        if not isinstance(self.passed, bool):
            raise LocalProtocolError("ProofItem.passed must be a bool")


@dataclass(frozen=True)
class DeviceProof:
    """A device's proof round this epoch: the items checked, or no answer at all."""

    items: tuple[ProofItem, ...] = ()
    answered: bool = True
    held_bytes: int | None = None
    """Bytes the device holds per its receipts; None means the distinct sampled shards."""

    def __post_init__(self) -> None:
        if not self.answered and self.items:
            raise LocalProtocolError("a device that did not answer has no checked items")
        if len(self.items) > MAX_ITEMS:
            raise LocalProtocolError(f"more than {MAX_ITEMS} proof items for one device")
        if self.held_bytes is not None:
            _check_count("held_bytes", self.held_bytes, MAX_BYTES)

    @classmethod
    def no_answer(cls, held_bytes: int | None = None) -> DeviceProof:
        """A device that did not answer its challenge before the deadline."""
        return cls(items=(), answered=False, held_bytes=held_bytes)


@dataclass(frozen=True)
class DeviceReward:
    """One device's result for the epoch, with the reasons in words."""

    node_id: str
    before: Standing
    after: Standing
    outcome: Outcome
    proven_bytes: int
    byte_seconds: int
    items_passed: int
    items_failed: int
    reward: int
    """Micro-units earned from the pool."""
    penalty: int
    """Micro-units charged (a positive number, to be deducted)."""
    explanation: tuple[str, ...]

    @property
    def net(self) -> int:
        """Reward minus penalty; negative when a penalised device is charged."""
        return self.reward - self.penalty

    def to_cbor_map(self) -> dict[int, Any]:
        """The device's part of the ledger record."""
        return {
            0: self.node_id,
            1: [str(self.before.state), self.before.failures],
            2: [str(self.after.state), self.after.failures],
            3: str(self.outcome),
            4: self.proven_bytes,
            5: self.items_passed,
            6: self.items_failed,
            7: self.reward,
            8: self.penalty,
            9: list(self.explanation),
        }


@dataclass(frozen=True)
class EpochRewards:
    """Every device's reward, penalty and standing for one epoch."""

    epoch: int
    epoch_seconds: int
    policy: RewardPolicy
    devices: tuple[DeviceReward, ...]
    """Sorted by node id."""
    total_reward: int
    total_penalty: int
    total_byte_seconds: int
    """Proven byte-seconds of the devices that shared the pool."""

    def device(self, node_id: str) -> DeviceReward:
        """The result for ``node_id``; :class:`LocalProtocolError` if it was not in the epoch."""
        for device in self.devices:
            if device.node_id == node_id:
                return device
        raise LocalProtocolError(f"no device {node_id!r} in epoch {self.epoch}")

    def standings(self) -> dict[str, Standing]:
        """Each device's standing after this epoch: the ``previous`` of the next one."""
        return {device.node_id: device.after for device in self.devices}

    def to_cbor_map(self) -> dict[int, Any]:
        """The ledger record (CDDL in the module docstring)."""
        return {
            2: self.epoch,
            3: self.epoch_seconds,
            4: self.policy.to_cbor_map(),
            5: self.total_reward,
            6: self.total_penalty,
            7: [device.to_cbor_map() for device in self.devices],
        }

    def encode(self) -> bytes:
        """The record as deterministic CBOR, ready to be hashed into the ledger's chain."""
        return wire.encode(wire.Kind.EPOCH_REWARDS, self.to_cbor_map())


def epoch_rewards(
    epoch: int,
    epoch_seconds: int,
    policy: RewardPolicy,
    proofs: Mapping[str, DeviceProof],
    previous: Mapping[str, Standing],
) -> EpochRewards:
    """Rewards, penalties and new standings for ``epoch`` (rules in the module docstring).

    ``proofs`` holds the devices challenged this epoch, ``previous`` every known device's
    standing before it (a device missing there starts ok); the result covers both.
    """
    _check_count("epoch", epoch, 2**63 - 1)
    _check_count("epoch_seconds", epoch_seconds, MAX_EPOCH_SECONDS)
    if epoch_seconds == 0:
        raise LocalProtocolError("epoch_seconds must be positive")
    node_ids = sorted(set(proofs) | set(previous))
    for node_id in node_ids:
        if not isinstance(node_id, str) or not node_id:
            raise LocalProtocolError(f"node ids must be non-empty text, got {node_id!r}")

    tallies = {
        node_id: _tally(
            node_id, proofs.get(node_id), previous.get(node_id, Standing()), policy, epoch_seconds
        )
        for node_id in node_ids
    }
    weights = {
        node_id: tally.proven_bytes
        for node_id, tally in tallies.items()
        if tally.after.state not in PAID_NOTHING and tally.proven_bytes > 0
    }
    shares = split_pool(policy.pool, weights)
    total_weight = sum(weights.values())

    devices = []
    for node_id in node_ids:
        tally = tallies[node_id]
        reward = shares.get(node_id, 0)
        lines = [*tally.lines]
        if node_id in weights:
            lines.append(
                f"share {_percent(weights[node_id], total_weight)} of pool {policy.pool:,}"
                f" = {reward:,}"
            )
        elif tally.outcome is not Outcome.NOT_CHALLENGED and tally.after.state not in PAID_NOTHING:
            lines.append("no share of the pool: no storage proven")
        lines += tally.standing_lines
        devices.append(
            DeviceReward(
                node_id=node_id,
                before=tally.before,
                after=tally.after,
                outcome=tally.outcome,
                proven_bytes=tally.proven_bytes,
                byte_seconds=tally.proven_bytes * epoch_seconds,
                items_passed=tally.passed,
                items_failed=tally.failed,
                reward=reward,
                penalty=tally.penalty,
                explanation=tuple(lines),
            )
        )
    total_penalty = sum(device.penalty for device in devices)
    if total_penalty >= 2**64:
        raise LocalProtocolError("penalties of one epoch add up to more than a CBOR uint")
    return EpochRewards(
        epoch=epoch,
        epoch_seconds=epoch_seconds,
        policy=policy,
        devices=tuple(devices),
        total_reward=sum(shares.values()),
        total_penalty=total_penalty,
        total_byte_seconds=total_weight * epoch_seconds,
    )


def split_pool(pool: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Share ``pool`` in proportion to ``weights`` by largest remainder; parts sum to ``pool``.

    Each key gets ``pool * weight // total``; the leftover units go one each to the largest
    remainders, ties to the smaller key. With no positive weight, every part is 0.
    """
    if any(weight < 0 for weight in weights.values()):
        raise LocalProtocolError("weights must not be negative")
    total = sum(weights.values())
    if total == 0:
        return {key: 0 for key in weights}
    parts = {}
    remainders = []
    for key, weight in weights.items():
        parts[key], remainder = divmod(pool * weight, total)
        remainders.append((-remainder, key))
    leftover = pool - sum(parts.values())
    for _, key in sorted(remainders)[:leftover]:
        parts[key] += 1
    return parts


@dataclass(frozen=True)
class _Tally:
    """One device's figures before the pool is split."""

    before: Standing
    after: Standing
    outcome: Outcome
    proven_bytes: int = 0
    passed: int = 0
    failed: int = 0
    penalty: int = 0
    lines: tuple[str, ...] = ()
    standing_lines: tuple[str, ...] = ()


def _tally(
    node_id: str,
    proof: DeviceProof | None,
    before: Standing,
    policy: RewardPolicy,
    epoch_seconds: int,
) -> _Tally:
    """Credit, new standing and penalty for one device, before the pool is split."""
    if before.state is State.EVICTED:
        gone = "evicted: no rewards or penalties; the device must enrol again to hold data"
        return _Tally(before, before, _outcome(proof), standing_lines=(gone,))
    if proof is None or _outcome(proof) is Outcome.NOT_CHALLENGED:
        return _Tally(
            before,
            before,
            Outcome.NOT_CHALLENGED,
            lines=("not challenged this epoch",),
            standing_lines=(f"standing {_standing(before)} unchanged",),
        )
    outcome = _outcome(proof)
    after = _next_standing(before, outcome is Outcome.PASSED, policy)
    lines: list[str] = []
    passed = failed = proven = 0
    if outcome is Outcome.NO_ANSWER:
        held = proof.held_bytes
        lines.append(
            "no answer to this epoch's challenge"
            + (f" ({_bytes(held)} held)" if held is not None else "")
        )
        what = "no answer"
    else:
        shards: dict[str, int] = {}
        for item in proof.items:
            if shards.setdefault(item.shard, item.shard_bytes) != item.shard_bytes:
                raise LocalProtocolError(f"{node_id}: shard {item.shard!r} listed with two sizes")
        held = proof.held_bytes if proof.held_bytes is not None else sum(shards.values())
        sampled = len(proof.items)
        passed = sum(item.passed for item in proof.items)
        failed = sampled - passed
        proven = held * passed // sampled
        lines.append(
            f"proved {passed} of {sampled} sampled blocks over {_plural(len(shards), 'shard')}"
            f" ({_bytes(held)} held)"
        )
        fraction = f" ({_bytes(held)} x {passed}/{sampled})" if failed else ""
        lines.append(
            f"credited {_bytes(proven)}{fraction} for {epoch_seconds:,} s"
            f" = {proven * epoch_seconds:,} byte-seconds"
        )
        reasons = Counter(item.reason or "unspecified" for item in proof.items if not item.passed)
        listed = ", ".join(
            f"{reason} x{count}"
            for reason, count in sorted(reasons.items(), key=lambda rc: (-rc[1], rc[0]))
        )
        what = f"{failed} of {sampled} proofs failed ({listed})" if failed else ""

    standing_lines: list[str] = []
    penalty = 0
    if outcome is Outcome.PASSED:
        if after != before:
            standing_lines.append(
                f"passed every proof: standing {_standing(before)} -> {_standing(after)}"
            )
    elif after.state in PAID_NOTHING:
        run = _plural(after.failures, "failing epoch")
        penalty = penalty_for(outcome, after.state, failed, policy)
        if outcome is Outcome.NO_ANSWER:
            charge = f"penalty for no answer {penalty:,}"
        else:
            charge = f"penalty {failed} x {policy.penalty_per_failed_item:,} = {penalty:,}"
        if after.state is State.EVICTED:
            standing_lines.append(
                f"evicted: {what}; {run} in a row; its shards will be repaired elsewhere"
            )
        else:
            standing_lines.append(
                f"penalised: {what}; {run} in a row; eviction at {policy.evict_after} in a row"
            )
        standing_lines.append(f"share forfeited; {charge}")
    else:
        standing_lines.append(
            f"warning: {what}; {_plural(after.failures, 'failing epoch')} in a row, "
            f"penalties start at {policy.penalise_after} in a row"
        )
    if outcome is not Outcome.PASSED and after.state != before.state:
        standing_lines.append(f"standing {before.state} -> {after.state}")
    return _Tally(
        before,
        after,
        outcome,
        proven_bytes=proven,
        passed=passed,
        failed=failed,
        penalty=penalty,
        lines=tuple(lines),
        standing_lines=tuple(standing_lines),
    )


def penalty_for(outcome: Outcome, after: State, items_failed: int, policy: RewardPolicy) -> int:
    """A device's charge for an epoch: none unless it ends the epoch in a
    :data:`PAID_NOTHING` standing; then per failed item, or once for a missed answer."""
    if after not in PAID_NOTHING:
        return 0
    if outcome is Outcome.FAILED:
        return items_failed * policy.penalty_per_failed_item
    if outcome is Outcome.NO_ANSWER:
        return policy.penalty_per_missed_answer
    return 0


def _outcome(proof: DeviceProof | None) -> Outcome:
    if proof is None or (proof.answered and not proof.items):
        return Outcome.NOT_CHALLENGED
    if not proof.answered:
        return Outcome.NO_ANSWER
    if all(item.passed for item in proof.items):
        return Outcome.PASSED
    return Outcome.FAILED


def _next_standing(before: Standing, passing: bool, policy: RewardPolicy) -> Standing:
    """One epoch's step: a pass resets the run and steps down, a failure may step up one."""
    if passing:
        down = {State.PENALISED: State.WARNED, State.WARNED: State.OK}
        return Standing(down.get(before.state, before.state), 0)
    failures = before.failures + 1
    state = before.state
    if state is State.OK and failures >= policy.warn_after:
        state = State.WARNED
    elif state is State.WARNED and failures >= policy.penalise_after:
        state = State.PENALISED
    elif state is State.PENALISED and failures >= policy.evict_after:
        state = State.EVICTED
    return Standing(state, min(failures, MAX_FAILURES))


def _check_count(name: str, value: object, limit: int) -> None:
    if not is_uint(value, limit + 1):
        raise LocalProtocolError(f"{name} must be an integer in 0..{limit}, got {value!r}")


def _standing(standing: Standing) -> str:
    if standing.failures:
        return f"{standing.state} ({_plural(standing.failures, 'failing epoch')} in a row)"
    return str(standing.state)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _percent(part: int, whole: int) -> str:
    """``part / whole`` as a percentage with two decimals, rounded half up, in integers."""
    hundredths = (part * 20000 + whole) // (2 * whole)
    return f"{hundredths // 100}.{hundredths % 100:02d}%"


def _bytes(count: int) -> str:
    """A byte count for people: binary units with one decimal."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return _plural(count, "byte")
