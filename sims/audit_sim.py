"""A hub auditing many devices on the in-memory network: proofs, rewards, ledger and repair.

The hub side is the real core (:mod:`lichen.audit`, :mod:`lichen.rewards`,
:mod:`lichen.ledger`, :mod:`lichen.repair`); only the adapters are stand-ins. Each device
holds real shard bodies under real Merkle trees (bodies come from a shared pool, so thousands
of shards cost a few hundred kilobytes) and answers the hub's signed challenges with
:func:`lichen.proofs.answer` over a :class:`~lichen.testing.memnet.MemoryNetwork` driven by a
:class:`~lichen.testing.clock.FakeClock`. Honest devices answer from their data; cheaters have
silently lost a fraction of their shards and either admit it ("dropper") or make blocks up
("faker"). Devices can be killed (detached) and revived; as in the hub, a device's absence
starts when the epoch in which it first missed its answer closes (is judged). The hub plans
repairs with :func:`lichen.repair.plan_repairs` at the end of each epoch, and carries them out
one epoch later (the rebuilt piece is byte-identical, so the new holder gets the same body).

Layout: object ``i``'s shard ``j`` goes to device ``order[(i * n + j) % devices]`` for a
seeded permutation ``order``, so every device holds exactly ``shards_per_device`` shards
(and a cheater's loss is exactly the fraction asked, rounded up) and an object's ``n``
holders are distinct.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lichen import audit, cid, ledger, merkle, proofs, repair, shard
from lichen.audit import AuditTarget, Placement, Verdict
from lichen.identity import Identity, PublicIdentity
from lichen.proofs import Challenge
from lichen.repair import DeviceView, HeldShard, ObjectView, RepairPlan, RepairSettings, ShardState
from lichen.rewards import EpochRewards, RewardPolicy, Standing, epoch_rewards
from lichen.testing.clock import FakeClock
from lichen.testing.holder import MemoryHolder
from lichen.testing.memnet import LinkConfig, MemoryNetwork

HUB_ADDRESS = "hub"
Key = tuple[bytes, int]


class Kind(StrEnum):
    """How a simulated device treats its data."""

    HONEST = "honest"
    DROPPER = "dropper"
    """Lost some shards and says so (answers them as missing)."""
    FAKER = "faker"
    """Lost some shards and answers them with made-up blocks and paths."""


@dataclass(frozen=True)
class SimConfig:
    """One simulation's shape. Defaults: 200 devices, 60 shards each, 20 cheaters."""

    devices: int = 200
    shards_per_device: int = 60
    k: int = 2
    n: int = 4
    cheaters: int = 20
    """The first half drop, the rest fake."""
    cheater_loss: float = 0.1
    """Fraction of its shards each cheater has lost (rounded up to whole shards)."""
    block_size: int = shard.MIN_BLOCK_SIZE
    piece_size: int = 3 * shard.MIN_BLOCK_SIZE + 100
    """Every shard body's size: four blocks, the last one short."""
    bodies: int = 128
    """Distinct shard bodies in the shared pool."""
    epoch_seconds: float = 60.0
    deadline_after: float = 20.0
    """Seconds from sending challenges to the deadline, when the hub judges."""
    delay: float = 0.05
    jitter: float = 0.1
    loss: float = 0.0
    """Packet loss on every link; a lost challenge or answer is a missed answer."""
    think: float = 1.0
    """Most seconds a device takes to answer (drawn uniformly)."""
    target: AuditTarget = field(default_factory=AuditTarget)
    policy: RewardPolicy = field(
        default_factory=lambda: RewardPolicy(
            pool=1_000_000,
            penalty_per_failed_item=100,
            penalty_per_missed_answer=1_000,
            warn_after=1,
            penalise_after=6,
            evict_after=10,
        )
    )
    repair: RepairSettings | None = field(default_factory=lambda: RepairSettings(200.0, 1))
    """None: plan no repairs, so every device keeps being challenged on its shards."""
    keep_ledger: bool = True
    seed: int = 1


@dataclass(frozen=True)
class EpochReport:
    """What the hub saw and decided in one epoch."""

    epoch: int
    started: float
    judged: float
    verdicts: dict[str, Verdict]
    rewards: EpochRewards
    repairs: RepairPlan
    absent_since: dict[str, float]
    """Each absent device's absence start, as the planner saw it."""


class SimDevice:
    """A device: its key, its shards (pool bodies) and its way of answering."""

    def __init__(self, sim: AuditSim, identity: Identity, kind: Kind) -> None:
        self.sim = sim
        self.identity = identity
        self.kind = kind
        self.holder = MemoryHolder()

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    @property
    def lost(self) -> frozenset[Key]:
        """The shards this device has silently lost."""
        return self.holder.lost

    def on_datagram(self, source: str, data: bytes) -> None:
        if source != HUB_ADDRESS:
            return
        challenge = audit.open_challenge(data, self.sim.hub.public, holder_kid=self.identity.kid)
        answer = proofs.answer(challenge, self.read_block, self.identity)
        delay = self.sim.rng.random() * self.sim.config.think
        self.sim.clock.call_later(delay, self.sim.net.send, self.node_id, HUB_ADDRESS, answer)

    def read_block(self, object_cid: bytes, index: int, block: int) -> Any:
        key = (object_cid, index)
        if self.kind is Kind.FAKER and key in self.holder.lost:
            # Made up from nothing: a block of the right size and a path of the right length.
            held = self.holder[key]
            size = len(shard.block(held.body, held.block_size, block))
            depth = merkle.path_length(block, held.leaf_count)
            made_up = hashlib.sha256(key[0] + bytes([index, block])).digest()
            return (made_up * (size // 32 + 1))[:size], [made_up] * depth
        return self.holder.read_block(object_cid, index, block)


class AuditSim:
    """The hub and its devices on one in-memory network."""

    def __init__(self, config: SimConfig) -> None:
        if config.n > config.devices:
            raise ValueError("need at least n devices")
        total = config.devices * config.shards_per_device
        if total % config.n:
            raise ValueError("devices x shards_per_device must be a multiple of n")
        self.config = config
        self.rng = random.Random(config.seed)
        self.clock = FakeClock(1_700_000_000.0)
        link = LinkConfig(loss=config.loss, delay=config.delay, jitter=config.jitter)
        self.net = MemoryNetwork(
            self.clock, random.Random(config.seed + 1), default=link, trace_limit=0
        )
        self.hub = Identity(self.rng.randbytes(32))
        self.net.attach(HUB_ADDRESS, self._on_answer)

        self.pool = [self.rng.randbytes(config.piece_size) for _ in range(config.bodies)]
        self.trees = [merkle.MerkleTree.from_body(b, config.block_size) for b in self.pool]

        self.devices: dict[str, SimDevice] = {}
        for i in range(config.devices):
            kind = Kind.HONEST
            if i < config.cheaters:
                kind = Kind.DROPPER if i < (config.cheaters + 1) // 2 else Kind.FAKER
            device = SimDevice(self, Identity(self.rng.randbytes(32)), kind)
            self.devices[device.node_id] = device
            self.net.attach(device.node_id, device.on_datagram)
        self.keys: dict[str, PublicIdentity] = {
            d: s.identity.public for d, s in self.devices.items()
        }

        # The hub's view: every object's placements, from receipts.
        self.objects: dict[bytes, list[HeldShard]] = {}
        order = list(self.devices)
        self.rng.shuffle(order)
        for i in range(total // config.n):
            object_cid = cid.of(self.rng.randbytes(16))
            holders = [order[(i * config.n + j) % config.devices] for j in range(config.n)]
            self.objects[object_cid] = [HeldShard(j, h) for j, h in enumerate(holders)]
            for j, holder in enumerate(holders):
                self.give(holder, object_cid, j)
        for device in self.devices.values():
            if device.kind is not Kind.HONEST:
                count = math.ceil(config.cheater_loss * len(device.holder) - 1e-9)
                device.holder.lose(self.rng.sample(sorted(device.holder), count))

        self.epoch = 0
        self.standings: dict[str, Standing] = {}
        self.absent_since: dict[str, float] = {}
        self.last_seen: dict[str, float] = dict.fromkeys(self.devices, self.clock.now())
        self.in_progress: dict[bytes, repair.RepairOrder] = {}
        self.records: list[bytes] = []
        self._head: ledger.ChainHead | None = None
        self._answers: dict[str, tuple[bytes, float]] = {}
        self._open = False
        self._placements: dict[Key, Placement] = {}

    # -- the world ---------------------------------------------------------------------------

    def body_of(self, object_cid: bytes, index: int) -> int:
        """Which pool body is shard ``index`` of ``object_cid`` (the same on any holder)."""
        digest = hashlib.sha256(object_cid + bytes([index])).digest()
        return int.from_bytes(digest[:4], "big") % len(self.pool)

    def give(self, node_id: str, object_cid: bytes, index: int) -> None:
        """Device ``node_id`` now holds shard ``index`` of ``object_cid``."""
        body = self.body_of(object_cid, index)
        self.devices[node_id].holder.add(
            object_cid, index, self.pool[body], self.config.block_size, self.trees[body]
        )

    def kill(self, node_id: str) -> None:
        """The device dies: its address goes silent."""
        self.net.detach(node_id)

    def revive(self, node_id: str) -> None:
        """The device comes back with its data."""
        self.net.attach(node_id, self.devices[node_id].on_datagram)

    def alive(self, node_id: str) -> bool:
        return self.net.is_attached(node_id)

    # -- the hub -----------------------------------------------------------------------------

    def placements(self) -> dict[str, list[Placement]]:
        """Each device's live placements, as the hub challenges them."""
        result: dict[str, list[Placement]] = defaultdict(list)
        for object_cid, held in self.objects.items():
            for h in held:
                if h.state is ShardState.LIVE:
                    result[h.holder].append(self._placement(object_cid, h.index))
        return result

    def _placement(self, object_cid: bytes, index: int) -> Placement:
        # What the hub learnt from the receipt and the owner's header, built once per shard.
        key = (object_cid, index)
        known = self._placements.get(key)
        if known is None:
            root = self.trees[self.body_of(object_cid, index)].root
            known = Placement(
                object_cid, index, root, self.config.block_size, self.config.piece_size
            )
            self._placements[key] = known
        return known

    def run_epoch(self) -> EpochReport:
        """Challenge, judge at the deadline, reward, record, plan repairs; then wait out the
        epoch. Repairs planned in the previous epoch complete first."""
        self._finish_repairs()
        config = self.config
        self.epoch += 1
        started = self.clock.now()
        placements = self.placements()
        nonces = {node_id: self.rng.randbytes(32) for node_id in placements}
        deadline = math.floor(started + config.deadline_after)
        challenges = audit.plan(self.epoch, placements, nonces, deadline, config.target)
        self._answers = {}
        self._open = True
        for node_id, challenge in challenges.items():
            self.net.send(HUB_ADDRESS, node_id, audit.sign_challenge(challenge, self.hub))
        self.clock.advance(deadline - started)
        self._open = False
        judged = self.clock.now()

        verdicts = {
            node_id: audit.judge_answer(
                challenge, self._answers.get(node_id), self.keys[node_id], placements[node_id]
            )
            for node_id, challenge in challenges.items()
        }
        self._update_presence(challenges, judged)
        rewards = epoch_rewards(
            self.epoch,
            int(config.epoch_seconds),
            config.policy,
            {node_id: v.proof for node_id, v in verdicts.items()},
            self.standings,
        )
        self.standings = rewards.standings()
        if config.keep_ledger:
            record = ledger.make_record(self.hub, self._head, rewards, started, judged)
            self.records.append(record)
            self._head = ledger.ChainHead(self.epoch, started, ledger.record_hash(record))
        plan = (
            self._plan_repairs(judged, config.repair)
            if config.repair
            else RepairPlan((), (), (), ())
        )
        report = EpochReport(
            self.epoch, started, judged, verdicts, rewards, plan, dict(self.absent_since)
        )
        self.clock.advance(started + config.epoch_seconds - self.clock.now())
        return report

    def _on_answer(self, source: str, data: bytes) -> None:
        if self._open and source in self.devices:
            self._answers[source] = (data, self.clock.now())

    def _update_presence(self, challenges: dict[str, Challenge], closed: float) -> None:
        # Like hub/service.py's _close_epoch: a missed answer starts the absence at the close.
        for node_id in challenges:
            answered = self._answers.get(node_id)
            if answered is not None:
                self.last_seen[node_id] = answered[1]
                self.absent_since.pop(node_id, None)
            else:
                self.absent_since.setdefault(node_id, closed)

    def _views(self) -> dict[str, DeviceView]:
        views = {}
        for node_id, device in self.devices.items():
            absent = self.absent_since.get(node_id)
            views[node_id] = DeviceView(
                node_id,
                online=absent is None,
                last_seen=self.last_seen[node_id],
                absent_since=absent,
                standing=self.standings.get(node_id, Standing()).state,
                free_bytes=10**9 - len(device.holder) * self.config.piece_size,
            )
        return views

    def _plan_repairs(self, now: float, settings: RepairSettings) -> RepairPlan:
        objects = [
            ObjectView(c, self.config.k, self.config.n, self.config.piece_size, tuple(held))
            for c, held in self.objects.items()
        ]
        plan = repair.plan_repairs(now, self._views(), objects, settings, self.in_progress)
        lost = {(s.object_cid, s.index, s.holder) for s in plan.lost}
        for object_cid, held in self.objects.items():
            if any((object_cid, h.index, h.holder) in lost for h in held):
                self.objects[object_cid] = [
                    HeldShard(h.index, h.holder, ShardState.LOST)
                    if (object_cid, h.index, h.holder) in lost
                    else h
                    for h in held
                ]
        for order in plan.repairs:
            self.in_progress[order.object_cid] = order
        return plan

    def _finish_repairs(self) -> None:
        """The repairers rebuilt the pieces; the new holders' receipts reach the hub."""
        for object_cid, order in self.in_progress.items():
            if not self.alive(order.repairer):
                continue  # the order is lost with its repairer; a later plan retries
            for index, holder in order.targets.items():
                if not self.alive(holder):
                    continue
                self.give(holder, object_cid, index)
                self.objects[object_cid].append(HeldShard(index, holder))
        self.in_progress = {}

    # -- measuring ---------------------------------------------------------------------------

    def cheaters(self) -> list[str]:
        return [d for d, s in self.devices.items() if s.kind is not Kind.HONEST]

    def escape_probability(self, node_id: str) -> float:
        """Exact chance a cheater passes one epoch: every sampled shard is one it still has."""
        device = self.devices[node_id]
        held, lost = len(device.holder), len(device.lost)
        sample = min(self.config.target.shards_to_sample, held)
        return math.comb(held - lost, sample) / math.comb(held, sample)


@dataclass
class Measurement:
    """Counts over many epochs."""

    epochs: int = 0
    cheater_epochs: int = 0
    cheaters_caught: int = 0
    honest_answers: int = 0
    honest_failures: list[tuple[int, str, str]] = field(default_factory=list)
    """(epoch, node id, why) for every honest, alive device that was failed."""
    missed_answers: int = 0
    expected_detection: float = 0.0
    """Mean over cheaters of the exact per-epoch detection probability."""
    target: float = 0.0
    """The detection probability the audit was asked for (``AuditTarget.detect_probability``)."""

    @property
    def detection_rate(self) -> float:
        return self.cheaters_caught / self.cheater_epochs if self.cheater_epochs else 0.0

    @property
    def standard_error(self) -> float:
        """Of the detection rate, were the true rate the target's."""
        p = self.target
        return math.sqrt(p * (1 - p) / self.cheater_epochs) if self.cheater_epochs else 0.0


def measure(sim: AuditSim, epochs: int) -> Measurement:
    """Run ``epochs`` epochs and count cheaters caught and honest devices failed."""
    result = Measurement(target=sim.config.target.detect_probability)
    cheaters = set(sim.cheaters())
    result.expected_detection = (
        sum(1 - sim.escape_probability(c) for c in cheaters) / len(cheaters) if cheaters else 0.0
    )
    for _ in range(epochs):
        report = sim.run_epoch()
        result.epochs += 1
        for node_id, verdict in report.verdicts.items():
            if not verdict.answered:
                result.missed_answers += 1
            if node_id in cheaters:
                result.cheater_epochs += 1
                result.cheaters_caught += verdict.failed > 0
            elif sim.alive(node_id):
                result.honest_answers += 1
                if verdict.failed or not verdict.answered:
                    why = verdict.rejected or ("no answer" if not verdict.answered else "failed")
                    result.honest_failures.append((report.epoch, node_id, why))
    return result
