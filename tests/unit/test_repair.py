"""The repair planner: lost shards, thresholds, repairers and new holders, and no storms."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lichen import cid
from lichen.errors import LocalProtocolError
from lichen.repair import (
    DeviceView,
    HeldShard,
    ObjectView,
    RepairSettings,
    ShardState,
    plan_repairs,
)
from lichen.rewards import State

NOW = 1_000_000.0
HOUR = 3600.0
PIECE = 1000
SETTINGS = RepairSettings(repair_after=HOUR, repair_margin=1)


def devices(count: int = 12, **changes: dict[str, Any]) -> dict[str, DeviceView]:
    """``count`` present devices d00.. with room for 10 pieces; ``changes`` per node id."""
    views = {
        f"d{i:02}": DeviceView(f"d{i:02}", True, NOW, free_bytes=10 * PIECE) for i in range(count)
    }
    for node_id, fields in changes.items():
        views[node_id] = dataclasses.replace(views[node_id], **fields)
    return views


def obj(name: bytes, holders: list[str], k: int = 2, **lost: int) -> ObjectView:
    """An object with shard i on holders[i]; n = len(holders)."""
    return ObjectView(
        cid.of(name),
        k,
        len(holders),
        PIECE,
        tuple(HeldShard(i, h) for i, h in enumerate(holders)),
    )


OBJ = obj(b"a", ["d00", "d01", "d02", "d03"])  # k=2, n=4: repair when 3 live (k + 1)


def offline(since: float) -> dict[str, Any]:
    return {"online": False, "last_seen": since}


# -- no storms --------------------------------------------------------------------------------


def test_everyone_present_plans_nothing() -> None:
    plan = plan_repairs(NOW, devices(), [OBJ], SETTINGS)
    assert not (plan.lost or plan.repairs or plan.stalled or plan.unrecoverable)


def test_a_short_outage_plans_nothing() -> None:
    views = devices(d00=offline(NOW - HOUR + 1), d01={"absent_since": NOW - 60})
    plan = plan_repairs(NOW, views, [OBJ], SETTINGS)
    assert not (plan.lost or plan.repairs)


def test_a_long_outage_loses_the_shards_and_starts_repair() -> None:
    plan = plan_repairs(NOW, devices(d00=offline(NOW - HOUR)), [OBJ], SETTINGS)
    assert [(s.index, s.holder, s.reason) for s in plan.lost] == [(0, "d00", "absent 3,600 s")]
    (order,) = plan.repairs
    assert order.object_cid == OBJ.object_cid and (order.k, order.n) == (2, 4)
    assert order.missing == (0,)
    assert order.repairer == "d01"
    assert dict(order.sources) == {1: "d01", 2: "d02", 3: "d03"}
    assert set(order.targets) == {0}
    assert order.targets[0] not in {"d00", "d01", "d02", "d03"}
    assert order.unplaced == ()


def test_missed_challenges_count_as_absence_even_when_online() -> None:
    views = devices(d00={"absent_since": NOW - 2 * HOUR})
    plan = plan_repairs(NOW, views, [OBJ], SETTINGS)
    assert plan.lost[0].reason == "absent 7,200 s"
    assert plan.repairs[0].targets[0] != "d00"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"standing": State.PENALISED}, "penalised"),
        ({"standing": State.EVICTED}, "evicted"),
        ({"revoked": True}, "revoked"),
    ],
)
def test_penalised_evicted_and_revoked_devices_lose_their_shards_at_once(
    fields: dict[str, Any], reason: str
) -> None:
    plan = plan_repairs(NOW, devices(d02=fields), [OBJ], SETTINGS)
    assert [(s.holder, s.reason) for s in plan.lost] == [("d02", reason)]
    assert plan.repairs[0].missing == (2,)


def test_an_unknown_holder_is_lost_and_a_warned_one_is_not() -> None:
    views = devices(d01={"standing": State.WARNED})
    del views["d00"]
    plan = plan_repairs(NOW, views, [OBJ], SETTINGS)
    assert [(s.holder, s.reason) for s in plan.lost] == [("d00", "unknown device")]


# -- thresholds -------------------------------------------------------------------------------


def test_an_object_above_its_threshold_waits() -> None:
    wide = obj(b"w", [f"d{i:02}" for i in range(6)])  # k=2, n=6: repair at 3 live
    views = devices(d00=offline(0), d01=offline(0))
    plan = plan_repairs(NOW, views, [wide], SETTINGS)
    assert len(plan.lost) == 2 and plan.repairs == ()
    views = devices(d00=offline(0), d01=offline(0), d02=offline(0))
    plan = plan_repairs(NOW, views, [wide], SETTINGS)
    assert plan.repairs[0].missing == (0, 1, 2)
    assert plan_repairs(NOW, views, [wide], RepairSettings(HOUR, 0)).repairs == ()


def test_an_object_below_k_is_unrecoverable() -> None:
    views = devices(d00=offline(0), d01=offline(0), d02=offline(0))
    plan = plan_repairs(NOW, views, [OBJ], SETTINGS)
    assert plan.repairs == ()
    (gone,) = plan.unrecoverable
    assert (gone.object_cid, gone.live, gone.k) == (OBJ.object_cid, (3,), 2)


def test_an_object_being_repaired_is_not_planned_again() -> None:
    views = devices(d00=offline(0))
    plan = plan_repairs(NOW, views, [OBJ], SETTINGS, in_progress={OBJ.object_cid})
    assert len(plan.lost) == 1 and plan.repairs == ()


def test_lost_placements_are_reported_once_and_a_repaired_index_counts_live() -> None:
    repaired = dataclasses.replace(
        OBJ,
        placements=(
            HeldShard(0, "d00", ShardState.LOST),
            HeldShard(0, "d09"),
            *OBJ.placements[1:],
        ),
    )
    plan = plan_repairs(NOW, devices(d00=offline(0)), [repaired], SETTINGS)
    assert not (plan.lost or plan.repairs)


def test_the_most_urgent_object_comes_first() -> None:
    close = obj(b"close", ["d00", "d04", "d05", "d06"], k=3)  # 3 live of k=3 after d00 goes
    far = obj(b"far", ["d00", "d07", "d08", "d09"], k=2)
    plan = plan_repairs(NOW, devices(d00=offline(0)), [far, close], SETTINGS)
    assert [o.object_cid for o in plan.repairs] == [close.object_cid, far.object_cid]


# -- repairers and targets --------------------------------------------------------------------


def test_the_repairer_prefers_good_standing_and_spreads_the_work() -> None:
    views = devices(d00=offline(0), d01={"standing": State.WARNED})
    plan = plan_repairs(NOW, views, [OBJ], SETTINGS)
    assert plan.repairs[0].repairer == "d02"
    objects = [obj(bytes([i]), ["d00", "d01", "d02", "d03"]) for i in range(4)]
    plan = plan_repairs(NOW, devices(d00=offline(0)), objects, SETTINGS)
    assert sorted(o.repairer for o in plan.repairs) == ["d01", "d01", "d02", "d03"]


def test_new_holders_are_present_in_good_standing_with_room() -> None:
    unfit = {
        "d04": offline(NOW),
        "d05": {"absent_since": NOW - 1},
        "d06": {"standing": State.WARNED},
        "d07": {"revoked": True},
        "d08": {"free_bytes": PIECE - 1},
    }
    views = devices(10, d00=offline(0), **unfit)
    plan = plan_repairs(NOW, views, [OBJ], SETTINGS)
    assert dict(plan.repairs[0].targets) == {0: "d09"}


def test_room_taken_by_one_repair_is_not_offered_to_the_next() -> None:
    views = devices(5, d00=offline(0), d04={"free_bytes": PIECE})
    objects = [obj(b"x", ["d00", "d01", "d02", "d03"]), obj(b"y", ["d00", "d01", "d02", "d03"])]
    plan = plan_repairs(NOW, views, objects, SETTINGS)
    (placed,) = [o for o in plan.repairs if o.targets]
    assert dict(placed.targets) == {0: "d04"}
    assert [s.reason for s in plan.stalled] == ["no eligible device has room for a 1000-byte shard"]


def test_indices_nobody_can_take_are_left_unplaced() -> None:
    wide = obj(b"w", [f"d{i:02}" for i in range(6)])
    views = devices(7, d00=offline(0), d01=offline(0), d02=offline(0))
    (order,) = plan_repairs(NOW, views, [wide], SETTINGS).repairs
    assert (dict(order.targets), order.unplaced) == ({0: "d06"}, (1, 2))


def test_a_repair_stalls_when_too_few_holders_are_online() -> None:
    # d00 is gone for good; d01 is briefly offline, so only 2 of the 3 live shards can be read.
    three = obj(b"t", ["d00", "d01", "d02", "d03"], k=3)
    views = devices(d00=offline(0), d01=offline(NOW - 60))
    plan = plan_repairs(NOW, views, [three], SETTINGS)
    assert plan.repairs == ()
    (stalled,) = plan.stalled
    assert (stalled.live, stalled.k) == (3, 3)
    assert "only 2 of the 3 shards" in stalled.reason


def test_plans_are_deterministic() -> None:
    objects = [obj(bytes([i]), ["d00", "d01", "d02", "d03"]) for i in range(6)]
    views = devices(d00=offline(0))
    assert plan_repairs(NOW, views, objects, SETTINGS) == plan_repairs(
        NOW, dict(reversed(views.items())), objects[::-1], SETTINGS
    )


# -- bad calls --------------------------------------------------------------------------------


def test_bad_views_and_settings_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        ObjectView(cid.of(b"x"), 3, 2, PIECE, ())
    with pytest.raises(LocalProtocolError):
        ObjectView(cid.of(b"x"), 1, 2, PIECE, (HeldShard(2, "d00"),))
    with pytest.raises(LocalProtocolError):
        ObjectView(cid.of(b"x"), 1, 2, 0, ())
    with pytest.raises(LocalProtocolError):
        DeviceView("", True, NOW)
    with pytest.raises(LocalProtocolError):
        DeviceView("d", True, NOW, free_bytes=-1)
    with pytest.raises(LocalProtocolError):
        DeviceView("d", True, NOW, standing="fine")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        RepairSettings(repair_after=-1)
    with pytest.raises(LocalProtocolError):
        RepairSettings(repair_after=float("inf"))
    with pytest.raises(LocalProtocolError):
        RepairSettings(repair_margin=-1)
