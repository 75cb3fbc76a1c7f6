"""Read-only queries behind the hub's API and dashboard, on an open connection.

:class:`hub.db.Database` calls these inside one read transaction each, so every figure in
one report comes from the same snapshot. Health is about distinct shard indices held live:
two holders of the same index count once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    Subquery,
    case,
    distinct,
    exists,
    func,
    select,
    tuple_,
)

from hub.db_base import epoch_of, standing_of
from hub.db_records import (
    ChallengeRecord,
    Device,
    Epoch,
    ObjectHealth,
    Page,
    Repair,
    RewardRecord,
    pass_rate,
)
from hub.db_schema import (
    ChallengeOutcome,
    PlacementState,
    RepairState,
    challenges,
    devices,
    epochs,
    objects,
    placements,
    proof_items,
    repairs,
    rewards,
)
from lichen.rewards import DeviceProof, Outcome, ProofItem, Standing, State

_LIVE = PlacementState.LIVE.value
_ORDERED = RepairState.ORDERED.value
_FAILING = (Outcome.FAILED.value, Outcome.NO_ANSWER.value)
_ANSWERED = (ChallengeOutcome.PASSED.value, ChallengeOutcome.FAILED.value)
IN_PROGRESS_SHOWN = 1000
"""Most repairs in progress a data-health report lists (their count is always exact)."""


class Health(StrEnum):
    """How close an object is to being unreadable."""

    FULL = "full"
    """All n shard indices live."""
    DEGRADED = "degraded"
    """Fewer than n but more than k live."""
    AT_RISK = "at-risk"
    """Exactly k live: one more loss and it cannot be read."""
    UNREADABLE = "unreadable"
    """Fewer than k live."""


def health_of(live: int, k: int, n: int) -> Health:
    """The health class of an object with ``live`` of its ``n`` shards live, ``k`` needed."""
    if live >= n:
        return Health.FULL
    if live > k:
        return Health.DEGRADED
    if live == k:
        return Health.AT_RISK
    return Health.UNREADABLE


@dataclass(frozen=True)
class Overview:
    """The mesh at a glance; devices and capacity count unrevoked devices only."""

    devices: int
    devices_online: int
    devices_warned: int
    """Standing other than ok."""
    devices_revoked: int
    capacity_bytes: int
    used_bytes: int
    objects: int
    objects_by_health: Mapping[Health, int]
    shards_live: int
    shards_lost: int
    """Placements marked lost (not yet replaced or removed)."""
    current_epoch: Epoch | None
    repairs_in_progress: int


@dataclass(frozen=True)
class ProofRound:
    """A device's proof round in one epoch."""

    epoch: int
    outcome: ChallengeOutcome
    items_passed: int
    items_failed: int
    answered_at: float | None
    deadline: float

    @property
    def pass_rate(self) -> float | None:
        """Share of judged items proven; None when none was judged."""
        return pass_rate(self.items_passed, self.items_failed)


@dataclass(frozen=True)
class DeviceWarning:
    """A device whose standing is not ok, and the reasons from its last failing epoch."""

    node_id: str
    name: str
    standing: Standing
    last_failed_epoch: int | None
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class DeviceDetail:
    """A device with its recent proof rounds and rewards, newest first."""

    device: Device
    proofs: tuple[ProofRound, ...]
    rewards: tuple[RewardRecord, ...]
    total_reward: int
    total_penalty: int
    """All epochs, not only the recent ones shown."""
    shards_live: int
    shards_lost: int
    held_bytes: int
    warning: DeviceWarning | None


@dataclass(frozen=True)
class HealthGroup:
    """How many objects of one (k, n) have ``live`` shard indices live."""

    k: int
    n: int
    live: int
    objects: int

    @property
    def health(self) -> Health:
        """The group's health class."""
        return health_of(self.live, self.k, self.n)


@dataclass(frozen=True)
class DataHealth:
    """Objects grouped by live shard count, and the state of repair."""

    groups: tuple[HealthGroup, ...]
    """Fewest live shards first."""
    by_health: Mapping[Health, int]
    in_progress: tuple[Repair, ...]
    """Oldest first, at most ``IN_PROGRESS_SHOWN`` of them."""
    recent_finished: tuple[Repair, ...]
    repairs_in_progress: int
    repairs_done: int
    repairs_failed: int


# -- building blocks ---------------------------------------------------------------------


def _live_counts() -> Subquery:
    return (
        select(placements.c.cid, func.count(distinct(placements.c.shard_index)).label("live"))
        .where(placements.c.state == _LIVE)
        .group_by(placements.c.cid)
        .subquery("live_counts")
    )


def _health_select() -> tuple[Select[Any], ColumnElement[Any], ColumnElement[Any]]:
    live = _live_counts()
    live_count = func.coalesce(live.c.live, 0)
    repairing = exists().where(repairs.c.cid == objects.c.cid, repairs.c.state == _ORDERED)
    query = select(
        objects.c.cid,
        objects.c.owner,
        objects.c.label,
        objects.c.k,
        objects.c.n,
        objects.c.size,
        objects.c.piece_size,
        objects.c.created,
        objects.c.expiry,
        live_count.label("live"),
        repairing.label("repairing"),
    ).select_from(objects.outerjoin(live, live.c.cid == objects.c.cid))
    return query, live_count, repairing


def _object_health(row: Row[Any]) -> ObjectHealth:
    return ObjectHealth(
        cid=row.cid,
        owner=row.owner,
        label=row.label,
        k=row.k,
        n=row.n,
        size=row.size,
        piece_size=row.piece_size,
        created=row.created,
        expiry=row.expiry,
        live=int(row.live),
        repairing=bool(row.repairing),
    )


def object_health(
    conn: Connection, where: ColumnElement[bool] | None, limit: int, offset: int = 0
) -> list[ObjectHealth]:
    """Objects (matching ``where``) by content address, with live counts."""
    query, _, _ = _health_select()
    if where is not None:
        query = query.where(where)
    rows = conn.execute(query.order_by(objects.c.cid).limit(limit).offset(offset))
    return [_object_health(r) for r in rows]


def objects_at_risk(conn: Connection, margin: int, limit: int) -> list[ObjectHealth]:
    """Objects with at most k + ``margin`` live shards and no repair ordered, fewest first."""
    query, live_count, repairing = _health_select()
    query = (
        query.where(live_count <= objects.c.k + margin, ~repairing)
        .order_by(live_count, objects.c.cid)
        .limit(limit)
    )
    return [_object_health(r) for r in conn.execute(query)]


def _health_groups(conn: Connection) -> list[HealthGroup]:
    live = _live_counts()
    live_count = func.coalesce(live.c.live, 0)
    rows = conn.execute(
        select(objects.c.k, objects.c.n, live_count.label("live"), func.count().label("objects"))
        .select_from(objects.outerjoin(live, live.c.cid == objects.c.cid))
        .group_by(objects.c.k, objects.c.n, live_count)
        .order_by(live_count, objects.c.k, objects.c.n)
    )
    return [HealthGroup(r.k, r.n, int(r.live), int(r.objects)) for r in rows]


def _by_health(groups: list[HealthGroup]) -> dict[Health, int]:
    counts = dict.fromkeys(Health, 0)
    for group in groups:
        counts[group.health] += group.objects
    return counts


def challenge_rows(conn: Connection, *where: ColumnElement[bool]) -> list[ChallengeRecord]:
    """Challenges matching ``where``, by epoch and device."""
    rows = conn.execute(
        select(challenges).where(*where).order_by(challenges.c.epoch, challenges.c.device)
    )
    return [
        ChallengeRecord(
            epoch=r.epoch,
            device=r.device,
            challenge=bytes(r.challenge),
            sent_at=r.sent_at,
            deadline=r.deadline,
            answered_at=r.answered_at,
            outcome=ChallengeOutcome(r.outcome),
            items_passed=r.items_passed,
            items_failed=r.items_failed,
            detail=r.detail,
        )
        for r in rows
    ]


def reward_rows(
    conn: Connection,
    where: ColumnElement[bool],
    *,
    newest_first: bool = False,
    limit: int | None = None,
    offset: int = 0,
) -> list[RewardRecord]:
    """Reward rows matching ``where``, by epoch (oldest or newest first) then device."""
    order = rewards.c.epoch.desc() if newest_first else rewards.c.epoch
    rows = conn.execute(
        select(rewards).where(where).order_by(order, rewards.c.device).limit(limit).offset(offset)
    )
    return [
        RewardRecord(
            epoch=r.epoch,
            device=r.device,
            outcome=r.outcome,
            proven_bytes=r.proven_bytes,
            items_passed=r.items_passed,
            items_failed=r.items_failed,
            reward=r.reward,
            penalty=r.penalty,
            before=standing_of(r.before_state, r.before_failures),
            after=standing_of(r.after_state, r.after_failures),
            explanation=tuple(r.explanation),
        )
        for r in rows
    ]


def repair_rows(
    conn: Connection,
    where: ColumnElement[bool] | None,
    *,
    oldest_first: bool = False,
    limit: int | None = None,
    offset: int = 0,
) -> list[Repair]:
    """Repairs matching ``where`` (all if None), newest or oldest first."""
    query = select(repairs).order_by(repairs.c.id if oldest_first else repairs.c.id.desc())
    if where is not None:
        query = query.where(where)
    return [
        Repair(
            id=r.id,
            cid=r.cid,
            lost_indices=tuple(r.lost_indices),
            repairer=r.repairer,
            targets=tuple((int(i), str(h)) for i, h in r.targets),
            ordered_at=r.ordered_at,
            finished_at=r.finished_at,
            state=RepairState(r.state),
            detail=r.detail,
        )
        for r in conn.execute(query.limit(limit).offset(offset))
    ]


def _pairs(conn: Connection, query: Select[Any]) -> dict[str, Any]:
    """A two-column query's rows as a dict from the first column to the second."""
    return {str(key): value for key, value in conn.execute(query)}


def _held_bytes(conn: Connection, *where: ColumnElement[bool]) -> dict[str, int]:
    rows = conn.execute(
        select(placements.c.holder, func.sum(placements.c.piece_size).label("held"))
        .where(placements.c.state == _LIVE, *where)
        .group_by(placements.c.holder)
    )
    return {r.holder: int(r.held) for r in rows}


def proof_inputs(conn: Connection, epoch: int) -> dict[str, DeviceProof]:
    """The epoch's proof rounds as :func:`lichen.rewards.epoch_rewards` takes them."""
    rounds = _pairs(
        conn, select(challenges.c.device, challenges.c.outcome).where(challenges.c.epoch == epoch)
    )
    challenged = select(challenges.c.device).where(challenges.c.epoch == epoch)
    held = _held_bytes(conn, placements.c.holder.in_(challenged))
    items: dict[str, list[ProofItem]] = {device: [] for device in rounds}
    rows = conn.execute(
        select(proof_items, objects.c.piece_size)
        .join(objects, objects.c.cid == proof_items.c.cid)
        .where(proof_items.c.epoch == epoch)  # judged items only: see record_answer
        .order_by(proof_items.c.device, proof_items.c.cid, proof_items.c.shard_index)
    )
    for r in rows:
        items[r.device].append(
            ProofItem(
                shard=f"{r.cid}/{r.shard_index}",
                shard_bytes=r.piece_size,
                passed=bool(r.passed),
                reason="" if r.passed else r.reason,
            )
        )
    return {
        device: DeviceProof(tuple(items[device]), True, held.get(device, 0))
        if outcome in _ANSWERED
        else DeviceProof.no_answer(held.get(device, 0))
        for device, outcome in rounds.items()
    }


# -- reports ---------------------------------------------------------------------------------


def overview(conn: Connection) -> Overview:
    """The figures of :class:`Overview`, from one snapshot."""
    active = devices.c.revoked_at.is_(None)
    dev = conn.execute(
        select(
            func.count().filter(active).label("devices"),
            func.count().filter(active, devices.c.online).label("online"),
            func.count().filter(active, devices.c.standing_state != State.OK.value).label("warned"),
            func.count().filter(~active).label("revoked"),
            func.coalesce(func.sum(devices.c.capacity_bytes).filter(active), 0).label("capacity"),
            func.coalesce(func.sum(devices.c.used_bytes).filter(active), 0).label("used"),
        )
    ).one()
    shard_counts = _pairs(
        conn, select(placements.c.state, func.count()).group_by(placements.c.state)
    )
    groups = _health_groups(conn)
    newest = conn.execute(select(epochs).order_by(epochs.c.epoch.desc()).limit(1)).first()
    in_progress = conn.execute(select(func.count()).where(repairs.c.state == _ORDERED)).scalar_one()
    return Overview(
        devices=int(dev.devices),
        devices_online=int(dev.online),
        devices_warned=int(dev.warned),
        devices_revoked=int(dev.revoked),
        capacity_bytes=int(dev.capacity),
        used_bytes=int(dev.used),
        objects=sum(g.objects for g in groups),
        objects_by_health=_by_health(groups),
        shards_live=int(shard_counts.get(_LIVE, 0)),
        shards_lost=int(shard_counts.get(PlacementState.LOST.value, 0)),
        current_epoch=None if newest is None else epoch_of(newest),
        repairs_in_progress=int(in_progress),
    )


def warning_select() -> Select[Any]:
    last_failed = (
        select(func.max(rewards.c.epoch))
        .where(rewards.c.device == devices.c.node_id, rewards.c.outcome.in_(_FAILING))
        .scalar_subquery()
    )
    return select(
        devices.c.node_id,
        devices.c.name,
        devices.c.standing_state,
        devices.c.standing_failures,
        last_failed.label("last_failed"),
    ).where(devices.c.revoked_at.is_(None), devices.c.standing_state != State.OK.value)


def warnings_from(conn: Connection, rows: list[Row[Any]]) -> list[DeviceWarning]:
    pairs = [(r.node_id, r.last_failed) for r in rows if r.last_failed is not None]
    reasons: dict[str, tuple[str, ...]] = {}
    if pairs:
        found = conn.execute(
            select(rewards.c.device, rewards.c.explanation).where(
                tuple_(rewards.c.device, rewards.c.epoch).in_(pairs)
            )
        )
        reasons = {r.device: tuple(r.explanation) for r in found}
    return [
        DeviceWarning(
            node_id=r.node_id,
            name=r.name,
            standing=standing_of(r.standing_state, r.standing_failures),
            last_failed_epoch=r.last_failed,
            reasons=reasons.get(r.node_id, ()),
        )
        for r in rows
    ]


def warnings(conn: Connection, limit: int, offset: int) -> Page[DeviceWarning]:
    """Unrevoked devices not in good standing: evicted, penalised, then warned."""
    severity = case(
        {State.EVICTED.value: 0, State.PENALISED.value: 1},
        value=devices.c.standing_state,
        else_=2,
    )
    query = warning_select()
    total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = conn.execute(
        query.order_by(severity, devices.c.standing_failures.desc(), devices.c.node_id)
        .limit(limit)
        .offset(offset)
    ).all()
    return Page(tuple(warnings_from(conn, list(rows))), int(total), limit, offset)


def device_detail(conn: Connection, device: Device, epochs_shown: int) -> DeviceDetail:
    """The figures of :class:`DeviceDetail` for ``device``."""
    node_id = device.node_id
    rounds = conn.execute(
        select(challenges)
        .where(challenges.c.device == node_id)
        .order_by(challenges.c.epoch.desc())
        .limit(epochs_shown)
    )
    proofs = tuple(
        ProofRound(
            r.epoch,
            ChallengeOutcome(r.outcome),
            r.items_passed,
            r.items_failed,
            r.answered_at,
            r.deadline,
        )
        for r in rounds
    )
    recent = reward_rows(conn, rewards.c.device == node_id, newest_first=True, limit=epochs_shown)
    totals = conn.execute(
        select(
            func.coalesce(func.sum(rewards.c.reward), 0),
            func.coalesce(func.sum(rewards.c.penalty), 0),
        ).where(rewards.c.device == node_id)
    ).one()
    states = _pairs(
        conn,
        select(placements.c.state, func.count())
        .where(placements.c.holder == node_id)
        .group_by(placements.c.state),
    )
    warning_rows = conn.execute(warning_select().where(devices.c.node_id == node_id)).all()
    found = warnings_from(conn, list(warning_rows))
    return DeviceDetail(
        device=device,
        proofs=proofs,
        rewards=tuple(recent),
        total_reward=int(totals[0]),
        total_penalty=int(totals[1]),
        shards_live=int(states.get(_LIVE, 0)),
        shards_lost=int(states.get(PlacementState.LOST.value, 0)),
        held_bytes=_held_bytes(conn, placements.c.holder == node_id).get(node_id, 0),
        warning=found[0] if found else None,
    )


def data_health(conn: Connection, recent: int) -> DataHealth:
    """The figures of :class:`DataHealth`, with the ``recent`` latest finished repairs."""
    groups = _health_groups(conn)
    counts = _pairs(conn, select(repairs.c.state, func.count()).group_by(repairs.c.state))
    return DataHealth(
        groups=tuple(groups),
        by_health=_by_health(groups),
        in_progress=tuple(
            repair_rows(
                conn, repairs.c.state == _ORDERED, oldest_first=True, limit=IN_PROGRESS_SHOWN
            )
        ),
        recent_finished=tuple(repair_rows(conn, repairs.c.state != _ORDERED, limit=recent)),
        repairs_in_progress=int(counts.get(_ORDERED, 0)),
        repairs_done=int(counts.get(RepairState.DONE.value, 0)),
        repairs_failed=int(counts.get(RepairState.FAILED.value, 0)),
    )
