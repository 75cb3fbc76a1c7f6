"""Read-only queries behind the dashboard's lists and charts, on an open connection.

A page of devices with each device's figures, and the per-epoch series the charts draw. Each
list is a constant number of grouped queries whatever its length, so a page of a 10,000-device
mesh costs what a page of a 5-device one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import ColumnElement, Connection, func, select

from hub.db_base import device_of
from hub.db_records import Device, Page, pass_rate
from hub.db_reports import DeviceWarning, warning_select, warnings_from
from hub.db_schema import ChallengeOutcome, challenges, devices, epochs, rewards
from lichen.rewards import State

_FAILED = (ChallengeOutcome.FAILED.value, ChallengeOutcome.REJECTED.value)
RECENT_EPOCHS = 10
"""Epochs a device's pass rate in the device list is taken over."""


class DeviceFilter(StrEnum):
    """Which devices a device list shows."""

    ALL = "all"
    ONLINE = "online"
    OFFLINE = "offline"
    WARNED = "warned"
    """Standing other than ok."""
    REVOKED = "revoked"


def _where(which: DeviceFilter) -> ColumnElement[bool] | None:
    active = devices.c.revoked_at.is_(None)
    return {
        DeviceFilter.ALL: None,
        DeviceFilter.ONLINE: active & devices.c.online,
        DeviceFilter.OFFLINE: active & ~devices.c.online,
        DeviceFilter.WARNED: active & (devices.c.standing_state != State.OK.value),
        DeviceFilter.REVOKED: ~active,
    }[which]


@dataclass(frozen=True)
class DeviceRow:
    """A device with the figures the device list shows."""

    device: Device
    pass_rate: float | None
    """Share of judged proof items passed over the last ``RECENT_EPOCHS`` epochs; None if none."""
    rounds_missed: int
    """Proof rounds in that window not answered by the deadline."""
    reward_last: int
    """Reward in the newest closed epoch (0 when the device was not in it)."""
    reward_total: int
    penalty_total: int
    warning: DeviceWarning | None


def device_rows(
    conn: Connection,
    limit: int,
    offset: int,
    which: DeviceFilter = DeviceFilter.ALL,
    *,
    by_capacity: bool = False,
) -> Page[DeviceRow]:
    """Devices matching ``which`` (all: revoked ones too) with their figures, by name (then
    node id) or, ``by_capacity``, largest capacity first."""
    where = _where(which)
    count = select(func.count()).select_from(devices)
    total = conn.execute(count if where is None else count.where(where)).scalar_one()
    order = (devices.c.capacity_bytes.desc(),) if by_capacity else (devices.c.name,)
    query = select(devices).order_by(*order, devices.c.node_id).limit(limit).offset(offset)
    found = [device_of(r) for r in conn.execute(query if where is None else query.where(where))]
    ids = [d.node_id for d in found]
    newest = conn.execute(select(func.max(epochs.c.epoch))).scalar_one()
    window = (newest or 0) - RECENT_EPOCHS + 1
    proofs = {
        r.device: r
        for r in conn.execute(
            select(
                challenges.c.device,
                func.sum(challenges.c.items_passed).label("passed"),
                func.sum(challenges.c.items_failed).label("failed"),
                func.count()
                .filter(challenges.c.outcome == ChallengeOutcome.NO_ANSWER.value)
                .label("missed"),
            )
            .where(challenges.c.device.in_(ids), challenges.c.epoch >= window)
            .group_by(challenges.c.device)
        )
    }
    last_closed = (
        select(func.max(epochs.c.epoch)).where(epochs.c.closed_at.is_not(None)).scalar_subquery()
    )
    money = {
        r.device: r
        for r in conn.execute(
            select(
                rewards.c.device,
                func.sum(rewards.c.reward).label("reward"),
                func.sum(rewards.c.penalty).label("penalty"),
                func.sum(rewards.c.reward).filter(rewards.c.epoch == last_closed).label("last"),
            )
            .where(rewards.c.device.in_(ids))
            .group_by(rewards.c.device)
        )
    }
    warned = conn.execute(warning_select().where(devices.c.node_id.in_(ids))).all()
    warnings = {w.node_id: w for w in warnings_from(conn, list(warned))}
    rows = []
    for device in found:
        proof, paid = proofs.get(device.node_id), money.get(device.node_id)
        rows.append(
            DeviceRow(
                device=device,
                pass_rate=pass_rate(int(proof.passed or 0), int(proof.failed or 0))
                if proof
                else None,
                rounds_missed=int(proof.missed or 0) if proof else 0,
                reward_last=int(paid.last or 0) if paid else 0,
                reward_total=int(paid.reward or 0) if paid else 0,
                penalty_total=int(paid.penalty or 0) if paid else 0,
                warning=warnings.get(device.node_id),
            )
        )
    return Page(tuple(rows), int(total), limit, offset)


@dataclass(frozen=True)
class EpochFigures:
    """One epoch's proof rounds and payments across the mesh."""

    epoch: int
    started: float
    closed_at: float | None
    challenged: int
    passed: int
    """Rounds that passed, failed (or were rejected), and went unanswered."""
    failed: int
    no_answer: int
    items_passed: int
    items_failed: int
    reward: int
    """Paid out (closed epochs only; 0 before)."""
    penalty: int

    @property
    def pass_rate(self) -> float | None:
        """Share of judged items proven; None when none was judged."""
        return pass_rate(self.items_passed, self.items_failed)


def epoch_figures(conn: Connection, last: int, upto: int | None = None) -> list[EpochFigures]:
    """The newest ``last`` epochs' figures (up to epoch ``upto``), oldest first."""
    query = select(epochs).order_by(epochs.c.epoch.desc()).limit(last)
    shown = conn.execute(query if upto is None else query.where(epochs.c.epoch <= upto)).all()
    numbers = [r.epoch for r in shown]
    outcome = challenges.c.outcome
    rounds = {
        r.epoch: r
        for r in conn.execute(
            select(
                challenges.c.epoch,
                func.count().label("challenged"),
                func.count().filter(outcome == ChallengeOutcome.PASSED.value).label("passed"),
                func.count().filter(outcome.in_(_FAILED)).label("failed"),
                func.count().filter(outcome == ChallengeOutcome.NO_ANSWER.value).label("missed"),
                func.sum(challenges.c.items_passed).label("items_passed"),
                func.sum(challenges.c.items_failed).label("items_failed"),
            )
            .where(challenges.c.epoch.in_(numbers))
            .group_by(challenges.c.epoch)
        )
    }
    paid = {
        r.epoch: r
        for r in conn.execute(
            select(
                rewards.c.epoch,
                func.sum(rewards.c.reward).label("reward"),
                func.sum(rewards.c.penalty).label("penalty"),
            )
            .where(rewards.c.epoch.in_(numbers))
            .group_by(rewards.c.epoch)
        )
    }
    figures = []
    for row in reversed(shown):
        r, p = rounds.get(row.epoch), paid.get(row.epoch)
        figures.append(
            EpochFigures(
                epoch=row.epoch,
                started=row.started,
                closed_at=row.closed_at,
                challenged=int(r.challenged) if r else 0,
                passed=int(r.passed) if r else 0,
                failed=int(r.failed) if r else 0,
                no_answer=int(r.missed) if r else 0,
                items_passed=int(r.items_passed or 0) if r else 0,
                items_failed=int(r.items_failed or 0) if r else 0,
                reward=int(p.reward or 0) if p else 0,
                penalty=int(p.penalty or 0) if p else 0,
            )
        )
    return figures
