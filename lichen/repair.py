"""The repair planner: which shards are lost, which objects to rebuild, by whom and where to.

A pure function of the hub's view (:func:`plan_repairs`). A shard placement is lost when its
holder has been absent for at least ``repair_after`` seconds (offline, or missing its
challenges), or is penalised, evicted, revoked or unknown; a shorter outage changes nothing,
so a reboot or a flaky link does not set off a repair storm. An object needs repair when it
is missing some index and its live distinct shards have fallen to ``k + repair_margin`` or
below while at least ``k`` remain (fewer than ``k`` and it is reported unrecoverable: nobody
can rebuild it). Objects nearest to ``k`` come first.

Each repair names a repairer, a live holder of the object that is online (preferring good
standing, then the device given the fewest repairs so far in this plan), the online live
holders it can fetch from, and new holders for the missing indices chosen by
:func:`lichen.placement.repair_targets` among devices that are online, present, not revoked,
in ``ok`` standing and with room, never one that held a shard of the object before. Room
taken by one repair is not offered to the next. An object already being repaired is never
planned twice; an object that needs repair but cannot have it now (fewer than ``k`` of its
live shards online, or no device to take the shards) is reported as stalled.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from lichen import placement
from lichen.errors import LocalProtocolError
from lichen.rewards import PAID_NOTHING, State


class ShardState(StrEnum):
    """Whether the hub counts a placement as held."""

    LIVE = "live"
    LOST = "lost"


@dataclass(frozen=True)
class DeviceView:
    """What the hub knows of one device."""

    node_id: str
    online: bool
    """Its last status says online (its MQTT last will says offline)."""
    last_seen: float
    """Unix seconds of its last message."""
    absent_since: float | None = None
    """When the hub began counting it absent (it went offline, or first missed a challenge);
    None while present. An offline device without it counts as absent since ``last_seen``."""
    standing: State = State.OK
    revoked: bool = False
    free_bytes: int = 0
    """Room it last reported."""
    domain: str = ""
    """Failure domain (see :class:`lichen.placement.Peer`)."""

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not self.node_id:
            raise LocalProtocolError("a device needs a node id")
        if not isinstance(self.standing, State):
            raise LocalProtocolError(f"unknown standing {self.standing!r}")
        if not isinstance(self.free_bytes, int) or self.free_bytes < 0:
            raise LocalProtocolError("free_bytes must be a non-negative integer")

    @property
    def present(self) -> bool:
        """Online and not counted absent: fit to take new shards or to repair."""
        return self.online and self.absent_since is None

    def absent_for(self, now: float) -> float:
        """Seconds the device has been absent at ``now``; 0 while present."""
        if self.absent_since is not None:
            return max(0.0, now - self.absent_since)
        if not self.online:
            return max(0.0, now - self.last_seen)
        return 0.0


@dataclass(frozen=True)
class HeldShard:
    """One placement of a shard of an object on a device."""

    index: int
    holder: str
    state: ShardState = ShardState.LIVE


@dataclass(frozen=True)
class ObjectView:
    """What the hub knows of one object and where its shards are."""

    object_cid: bytes
    k: int
    n: int
    piece_size: int
    placements: tuple[HeldShard, ...]
    """Every placement, live or lost; an index may have several (a repaired shard's old and
    new holders)."""

    def __post_init__(self) -> None:
        if not isinstance(self.object_cid, bytes) or not self.object_cid:
            raise LocalProtocolError("an object needs its CID")
        if not 1 <= self.k <= self.n <= placement.MAX_SHARDS:
            raise LocalProtocolError(f"need 1 <= k <= n <= {placement.MAX_SHARDS}")
        if self.piece_size < 1:
            raise LocalProtocolError("piece_size must be positive")
        for held in self.placements:
            if not 0 <= held.index < self.n:
                raise LocalProtocolError(f"shard index {held.index} is outside 0..{self.n - 1}")


@dataclass(frozen=True)
class RepairSettings:
    """When to declare shards lost and when to rebuild."""

    repair_after: float = 3600.0
    """Seconds of absence after which a device's shards are lost. Shorter outages (reboots,
    flaky links, power cuts) start nothing."""
    repair_margin: int = 1
    """Rebuild once live distinct shards fall to ``k + repair_margin``: the spare shards left
    are what protects the object while the repair runs."""

    def __post_init__(self) -> None:
        if not (self.repair_after >= 0 and math.isfinite(self.repair_after)):
            raise LocalProtocolError("repair_after must be finite seconds >= 0")
        if not isinstance(self.repair_margin, int) or self.repair_margin < 0:
            raise LocalProtocolError("repair_margin must be an integer >= 0")


DEFAULT_SETTINGS = RepairSettings()


@dataclass(frozen=True)
class LostShard:
    """A placement that becomes lost with this plan."""

    object_cid: bytes
    index: int
    holder: str
    reason: str
    """Why, in words: ``"absent 3,700 s"``, ``"penalised"``, ``"evicted"``, ``"revoked"``,
    ``"unknown device"``."""


@dataclass(frozen=True)
class RepairOrder:
    """Rebuild the missing shards of one object."""

    object_cid: bytes
    k: int
    n: int
    repairer: str
    """A live, online holder of the object: it already has one shard and fetches the rest."""
    sources: Mapping[int, str]
    """A live, online holder for each index that can be fetched (the repairer's included)."""
    targets: Mapping[int, str]
    """A new holder for each missing index that can be placed now."""
    unplaced: tuple[int, ...]
    """Missing indices no eligible device can take now (a later plan retries them)."""

    @property
    def missing(self) -> tuple[int, ...]:
        """Every index the object lacks."""
        return tuple(sorted((*self.targets, *self.unplaced)))


@dataclass(frozen=True)
class Stalled:
    """An object that needs repair but cannot have it now."""

    object_cid: bytes
    live: int
    """Live distinct shards."""
    k: int
    reason: str


@dataclass(frozen=True)
class Unrecoverable:
    """An object with fewer than ``k`` live distinct shards: nobody can rebuild it."""

    object_cid: bytes
    live: tuple[int, ...]
    """Indices still live."""
    k: int


@dataclass(frozen=True)
class RepairPlan:
    """What :func:`plan_repairs` decided."""

    lost: tuple[LostShard, ...]
    repairs: tuple[RepairOrder, ...]
    stalled: tuple[Stalled, ...]
    unrecoverable: tuple[Unrecoverable, ...]


def plan_repairs(
    now: float,
    devices: Mapping[str, DeviceView],
    objects: Iterable[ObjectView],
    settings: RepairSettings = DEFAULT_SETTINGS,
    in_progress: Collection[bytes] = (),
) -> RepairPlan:
    """Decide lost placements and repairs at ``now`` (rules in the module docstring).

    ``devices`` maps node id to view, ``in_progress`` holds the CIDs of objects whose repair
    was ordered and has not finished.
    """
    departed = {
        node_id: reason
        for node_id, device in devices.items()
        if (reason := gone(device, now, settings.repair_after)) is not None
    }
    lost: list[LostShard] = []
    due: list[tuple[int, bytes, ObjectView, dict[int, list[str]]]] = []
    unrecoverable: list[Unrecoverable] = []
    for obj in objects:
        live: dict[int, list[str]] = {}
        for held in obj.placements:
            if held.state is not ShardState.LIVE:
                continue
            reason = departed.get(held.holder) if held.holder in devices else "unknown device"
            if reason is not None:
                lost.append(LostShard(obj.object_cid, held.index, held.holder, reason))
            else:
                live.setdefault(held.index, []).append(held.holder)
        if len(live) == obj.n:
            continue
        if len(live) < obj.k:
            unrecoverable.append(Unrecoverable(obj.object_cid, tuple(sorted(live)), obj.k))
        elif len(live) <= obj.k + settings.repair_margin and obj.object_cid not in in_progress:
            due.append((len(live) - obj.k, obj.object_cid, obj, live))

    # Every known device is offered to the placer so the domains of live holders count; only
    # the eligible ones get room, so only they can be picked.
    room = {
        node_id: device.free_bytes if _can_take(device) else 0
        for node_id, device in devices.items()
    }
    assigned: Counter[str] = Counter()
    repairs: list[RepairOrder] = []
    stalled: list[Stalled] = []
    for _, _, obj, live in sorted(due, key=lambda d: (d[0], d[1])):
        order = _plan_one(obj, live, devices, room, assigned)
        if isinstance(order, Stalled):
            stalled.append(order)
        else:
            repairs.append(order)
            assigned[order.repairer] += 1
            for holder in order.targets.values():
                room[holder] -= obj.piece_size
    lost.sort(key=lambda s: (s.object_cid, s.index, s.holder))
    unrecoverable.sort(key=lambda u: u.object_cid)
    return RepairPlan(tuple(lost), tuple(repairs), tuple(stalled), tuple(unrecoverable))


def _plan_one(
    obj: ObjectView,
    live: dict[int, list[str]],
    devices: Mapping[str, DeviceView],
    room: Mapping[str, int],
    assigned: Counter[str],
) -> RepairOrder | Stalled:
    online = {
        index: sorted(h for h in holders if devices[h].online) for index, holders in live.items()
    }
    sources = {index: holders[0] for index, holders in online.items() if holders}
    if len(sources) < obj.k:
        return Stalled(
            obj.object_cid,
            len(live),
            obj.k,
            f"only {len(sources)} of the {obj.k} shards needed are on online devices",
        )

    def preference(node_id: str) -> tuple[bool, bool, int, str]:
        device = devices[node_id]
        return (device.standing is not State.OK, not device.present, assigned[node_id], node_id)

    repairer = min({h for holders in online.values() for h in holders}, key=preference)
    for index, holders in online.items():
        if repairer in holders:
            sources[index] = repairer
    missing = sorted(set(range(obj.n)) - set(live))
    current = {index: min(holders) for index, holders in live.items()}
    for held in obj.placements:
        if held.index in missing:
            current.setdefault(held.index, held.holder)
    peers = [
        placement.Peer(node_id, devices[node_id].domain, free_bytes=max(0, free))
        for node_id, free in room.items()
    ]
    policy = placement.Policy(exclude_nodes=frozenset(h.holder for h in obj.placements))
    targets = placement.repair_targets(
        obj.object_cid, obj.n, current, missing, peers, policy, obj.piece_size
    )
    if not targets:
        return Stalled(
            obj.object_cid,
            len(live),
            obj.k,
            f"no eligible device has room for a {obj.piece_size}-byte shard",
        )
    return RepairOrder(
        obj.object_cid,
        obj.k,
        obj.n,
        repairer,
        dict(sorted(sources.items())),
        dict(sorted(targets.items())),
        tuple(i for i in missing if i not in targets),
    )


def gone(device: DeviceView, now: float, repair_after: float) -> str | None:
    """Why the device's shards are lost at ``now``, or None while they still count."""
    if device.revoked:
        return "revoked"
    if device.standing in PAID_NOTHING:
        return str(device.standing)
    absent = device.absent_for(now)
    if absent >= repair_after and (device.absent_since is not None or not device.online):
        return f"absent {absent:,.0f} s"
    return None


def _can_take(device: DeviceView) -> bool:
    """Fit to receive new shards: present, not revoked, in good standing."""
    return device.present and not device.revoked and device.standing is State.OK
