"""The dashboard's queries (hub.db_views), the same tests on SQLite and on PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event

from hub.db import Database
from hub.db_base import MAX_PAGE
from hub.db_views import RECENT_EPOCHS, DeviceFilter, DeviceRow, EpochFigures
from lichen.errors import LocalProtocolError
from lichen.proofs import Reason
from lichen.rewards import DeviceReward, Outcome, Standing, State
from tests.hubdb import bulk_mesh, enroll, ident, make_object, result

OK, BAD, GONE = Reason.OK, Reason.BAD_BLOCK, Reason.MISSING


# -- a small mesh with a known history -------------------------------------------------------

# What each device did in each epoch: reasons of an answer, or one of these words.
MISS, REJECT, PENDING = "miss", "reject", "pending"
Round = list[Reason] | str
ROUNDS: dict[int, dict[str, Round]] = {
    1: {"alpha": [GONE, GONE]},  # outside the pass-rate window (epochs 3 to 12)
    2: {"alpha": MISS},  # outside too: not counted as missed
    3: {"alpha": [OK, OK, OK], "bravo": [OK]},
    4: {"alpha": [OK, OK, OK], "bravo": REJECT},
    5: {"alpha": [OK, BAD, OK], "bravo": [OK]},
    6: {"alpha": [OK, OK, OK], "bravo": [OK, GONE]},
    7: {"alpha": [OK, OK, OK], "bravo": [OK]},
    8: {"alpha": MISS, "bravo": [OK]},
    9: {"alpha": [OK, OK, OK], "bravo": [OK]},
    10: {"alpha": [OK, OK, OK], "bravo": MISS},
    11: {"alpha": [OK, OK, OK], "bravo": [OK]},
    12: {"alpha": PENDING},  # the newest epoch, still open
}
LAST_CLOSED = 11
BRAVO_REASON = "no answer in epoch 10"


@dataclass(frozen=True)
class Mesh:
    alpha: str
    bravo: str
    charlie: str
    delta: str
    echo: str


def reward(node: str, outcome: Outcome, paid: int, penalty: int = 0, **kw: Any) -> DeviceReward:
    after: Standing = kw.get("after", Standing())
    lines: tuple[str, ...] = kw.get("lines", ())
    return DeviceReward(node, Standing(), after, outcome, 0, 0, 0, 0, paid, penalty, lines)


def seed(db: Database) -> Mesh:
    """Five devices, twelve epochs (eleven closed), proofs and rewards as in ``ROUNDS``.

    alpha: paid 100 x epoch, a penalty of 5 in epoch 1; in good standing.
    bravo: paid 10 in epochs 3 to 10, a penalty of 7 in epoch 10, warned then; not paid in 11.
    charlie: online, never challenged or paid. delta: paid 50 in epoch 11, then revoked.
    echo: offline, warned by hand (no failing epoch on record).
    """
    names = ("alpha", "bravo", "charlie", "delta", "echo")
    mesh = Mesh(*(enroll(db, i, name=name) for i, name in enumerate(names, 1)))
    numbers = {mesh.alpha: 1, mesh.bravo: 2}
    for node in (mesh.alpha, mesh.bravo, mesh.charlie, mesh.delta):
        db.update_presence(node, online=True, now=2.0)
    db.update_presence(mesh.echo, online=False, now=2.0)
    obj = make_object(1)
    db.record_object(obj, 1.0)
    for epoch, acts in ROUNDS.items():
        start = epoch * 60.0
        db.open_epoch(epoch, start, start + 30)
        for name, act in acts.items():
            node = getattr(mesh, name)
            db.record_challenge(epoch, node, b"c", start, start + 30)
            if isinstance(act, list):
                db.record_answer(epoch, node, result(epoch, numbers[node], obj, act), start + 1)
            elif act == REJECT:
                db.record_rejected(epoch, node, start + 1, "bad signature")
        if epoch == 12:
            break
        db.expire_challenges(epoch)
        paid = [reward(mesh.alpha, Outcome.PASSED, 100 * epoch, 5 if epoch == 1 else 0)]
        if 3 <= epoch <= 10:
            warned = {"after": Standing(State.WARNED, 1), "lines": (BRAVO_REASON,)}
            paid.append(
                reward(mesh.bravo, Outcome.NO_ANSWER, 10, 7, **warned)
                if epoch == 10
                else reward(mesh.bravo, Outcome.PASSED, 10)
            )
        if epoch == LAST_CLOSED:
            paid.append(reward(mesh.delta, Outcome.PASSED, 50))
        db.close_epoch(epoch, start + 59, b"record", b"h" * 32, b"p" * 32, paid)
    db.revoke_device(mesh.delta, 900.0)
    db.set_standing(mesh.echo, Standing(State.WARNED, 2))
    return mesh


def by_node(rows: tuple[DeviceRow, ...]) -> dict[str, DeviceRow]:
    return {row.device.node_id: row for row in rows}


# -- device_rows -------------------------------------------------------------------------------


def test_device_rows_on_an_empty_database(db: Database) -> None:
    page = db.device_rows()
    assert (page.items, page.total, page.limit, page.offset) == ((), 0, 100, 0)
    for which in DeviceFilter:
        assert db.device_rows(which=which).total == 0


def test_device_rows_figures(db: Database) -> None:
    mesh = seed(db)
    assert RECENT_EPOCHS == 10  # the window below is epochs 3 to 12
    rows = by_node(db.device_rows().items)
    alpha = rows[mesh.alpha]
    # Epochs 3-11: seven rounds of 3 passed, epoch 5 with 2 passed and 1 failed, epoch 8
    # unanswered, epoch 12 pending; the failures of epoch 1 and the miss of epoch 2 are older.
    assert alpha.pass_rate == pytest.approx(23 / 24)
    assert alpha.rounds_missed == 1
    assert (alpha.reward_last, alpha.reward_total, alpha.penalty_total) == (1100, 6600, 5)
    assert alpha.warning is None  # failing epochs alone are no warning: standing is ok
    bravo = rows[mesh.bravo]
    assert bravo.pass_rate == pytest.approx(7 / 8)  # the rejected answer judged no item
    assert bravo.rounds_missed == 1  # epoch 10; the rejected one is answered, not missed
    assert (bravo.reward_last, bravo.reward_total, bravo.penalty_total) == (0, 80, 7)
    assert bravo.warning is not None
    assert bravo.warning.node_id == mesh.bravo and bravo.warning.name == "bravo"
    assert bravo.warning.standing == Standing(State.WARNED, 1)
    assert (bravo.warning.last_failed_epoch, bravo.warning.reasons) == (10, (BRAVO_REASON,))
    charlie = rows[mesh.charlie]
    assert (charlie.pass_rate, charlie.rounds_missed, charlie.warning) == (None, 0, None)
    assert (charlie.reward_last, charlie.reward_total, charlie.penalty_total) == (0, 0, 0)
    delta = rows[mesh.delta]
    assert delta.device.revoked and delta.warning is None
    assert (delta.reward_last, delta.reward_total, delta.pass_rate) == (50, 50, None)
    echo = rows[mesh.echo]
    assert echo.warning is not None and echo.warning.standing == Standing(State.WARNED, 2)
    assert (echo.warning.last_failed_epoch, echo.warning.reasons) == (None, ())
    assert echo.device.name == "echo" and not echo.device.online


def test_pass_rate_window_follows_the_newest_epoch(db: Database) -> None:
    mesh = seed(db)
    db.expire_challenges(12)  # alpha's pending round of epoch 12 goes unanswered
    for epoch in range(13, 13 + 8):  # eight empty epochs: the window is now 11 to 20
        db.open_epoch(epoch, epoch * 60.0, epoch * 60.0 + 30)
    alpha = by_node(db.device_rows().items)[mesh.alpha]
    assert alpha.pass_rate == 1.0 and alpha.rounds_missed == 1
    db.open_epoch(21, 21 * 60.0, 21 * 60.0 + 30)  # 12 to 21: nothing judged, one missed
    alpha = by_node(db.device_rows().items)[mesh.alpha]
    assert alpha.pass_rate is None and alpha.rounds_missed == 1
    db.open_epoch(22, 22 * 60.0, 22 * 60.0 + 30)
    alpha = by_node(db.device_rows().items)[mesh.alpha]
    assert (alpha.pass_rate, alpha.rounds_missed) == (None, 0)
    assert alpha.reward_last == 1100  # the newest closed epoch is still 11


FILTERED = {
    DeviceFilter.ALL: ["alpha", "bravo", "charlie", "delta", "echo"],
    DeviceFilter.ONLINE: ["alpha", "bravo", "charlie"],
    DeviceFilter.OFFLINE: ["echo"],
    DeviceFilter.WARNED: ["bravo", "echo"],
    DeviceFilter.REVOKED: ["delta"],
}


def test_each_filter_gives_its_devices_and_total(db: Database) -> None:
    seed(db)
    assert set(FILTERED) == set(DeviceFilter)
    for which, names in FILTERED.items():
        page = db.device_rows(which=which)
        assert [row.device.name for row in page.items] == names, which
        assert page.total == len(names), which
        one = db.device_rows(limit=1, offset=len(names) - 1, which=which)
        assert [row.device.name for row in one.items] == names[-1:]
        assert one.total == len(names)


def test_revoked_devices_are_in_no_other_filter(db: Database) -> None:
    mesh = seed(db)
    db.set_standing(mesh.delta, Standing(State.EVICTED, 6))  # revoked and not in standing
    db.update_presence(mesh.delta, online=False, now=950.0)
    for which in (DeviceFilter.ONLINE, DeviceFilter.OFFLINE, DeviceFilter.WARNED):
        assert mesh.delta not in by_node(db.device_rows(which=which).items)
    assert [r.device.node_id for r in db.device_rows(which=DeviceFilter.REVOKED).items] == [
        mesh.delta
    ]


def test_device_rows_by_name_then_node_id_and_paged(db: Database) -> None:
    names = {1: "pi", 2: "alpha", 3: "pi", 4: "zeta", 5: "pi", 6: "beta", 7: "alpha"}
    nodes = {i: enroll(db, i, name=name) for i, name in names.items()}
    expected = sorted(nodes.values(), key=lambda node: (names[_index(nodes, node)], node))
    everything = db.device_rows()
    assert [row.device.node_id for row in everything.items] == expected
    assert [row.device.name for row in everything.items] == [
        "alpha",
        "alpha",
        "beta",
        "pi",
        "pi",
        "pi",
        "zeta",
    ]
    for offset in range(0, 8):
        page = db.device_rows(limit=3, offset=offset)
        assert [row.device.node_id for row in page.items] == expected[offset : offset + 3]
        assert (page.total, page.limit, page.offset) == (7, 3, offset)
    beyond = db.device_rows(limit=3, offset=100)
    assert (beyond.items, beyond.total) == ((), 7)


def _index(nodes: dict[int, str], node: str) -> int:
    return next(i for i, n in nodes.items() if n == node)


def test_filtered_pages_count_only_the_filtered_devices(db: Database) -> None:
    nodes = [enroll(db, i, name=f"dev{i:02d}") for i in range(1, 12)]
    for i, node in enumerate(nodes):
        db.update_presence(node, online=i % 3 == 0, now=1.0)
    online = [node for i, node in enumerate(nodes) if i % 3 == 0]
    page = db.device_rows(limit=2, offset=2, which=DeviceFilter.ONLINE)
    assert [row.device.node_id for row in page.items] == online[2:4]
    assert page.total == len(online) == 4
    offline = db.device_rows(limit=5, offset=5, which=DeviceFilter.OFFLINE)
    assert offline.total == 7 and len(offline.items) == 2


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (MAX_PAGE + 1, 0), (10, -1), (True, 0)])
def test_device_rows_refuses_bad_paging(db: Database, limit: int, offset: int) -> None:
    with pytest.raises(LocalProtocolError):
        db.device_rows(limit=limit, offset=offset)


def test_device_rows_refuses_an_unknown_filter(db: Database) -> None:
    with pytest.raises(ValueError, match="bogus"):
        db.device_rows(which="bogus")  # type: ignore[arg-type]


# -- epoch_figures -----------------------------------------------------------------------------

# (epoch, challenged, passed, failed, no answer, items passed, items failed, paid, penalties)
FIGURES = [
    (1, 1, 0, 1, 0, 0, 2, 100, 5),
    (2, 1, 0, 0, 1, 0, 0, 200, 0),
    (3, 2, 2, 0, 0, 4, 0, 310, 0),
    (4, 2, 1, 1, 0, 3, 0, 410, 0),  # bravo's rejected answer counts as failed
    (5, 2, 1, 1, 0, 3, 1, 510, 0),
    (6, 2, 1, 1, 0, 4, 1, 610, 0),
    (7, 2, 2, 0, 0, 4, 0, 710, 0),
    (8, 2, 1, 0, 1, 1, 0, 810, 0),
    (9, 2, 2, 0, 0, 4, 0, 910, 0),
    (10, 2, 1, 0, 1, 3, 0, 1010, 7),
    (11, 2, 2, 0, 0, 4, 0, 1150, 0),
    (12, 1, 0, 0, 0, 0, 0, 0, 0),  # open: alpha's round is pending, nothing paid yet
]


def figures_of(found: list[EpochFigures]) -> list[tuple[int, ...]]:
    return [
        (
            f.epoch,
            f.challenged,
            f.passed,
            f.failed,
            f.no_answer,
            f.items_passed,
            f.items_failed,
            f.reward,
            f.penalty,
        )
        for f in found
    ]


def test_epoch_figures_per_epoch_oldest_first(db: Database) -> None:
    seed(db)
    found = db.epoch_figures(last=100)
    assert figures_of(found) == FIGURES
    assert [(f.started, f.closed_at) for f in found[:2]] == [(60.0, 119.0), (120.0, 179.0)]
    assert found[-1].closed_at is None
    assert found[4].pass_rate == pytest.approx(3 / 4)
    assert found[1].pass_rate is None and found[-1].pass_rate is None
    assert found[0].pass_rate == 0.0


def test_epoch_figures_last_and_upto(db: Database) -> None:
    seed(db)
    assert figures_of(db.epoch_figures(last=3)) == FIGURES[-3:]
    assert figures_of(db.epoch_figures(last=4, upto=6)) == FIGURES[2:6]
    assert figures_of(db.epoch_figures(last=50, upto=2)) == FIGURES[:2]
    assert figures_of(db.epoch_figures(last=1, upto=99)) == FIGURES[-1:]
    assert db.epoch_figures(last=5, upto=0) == []
    assert figures_of(db.epoch_figures()) == FIGURES  # default: the newest 50


def test_epoch_figures_on_an_empty_database_and_empty_epochs(db: Database) -> None:
    assert db.epoch_figures() == []
    db.open_epoch(1, 10.0, 40.0)
    (only,) = db.epoch_figures()
    assert only == EpochFigures(1, 10.0, None, 0, 0, 0, 0, 0, 0, 0, 0)
    assert only.pass_rate is None


@pytest.mark.parametrize("last", [0, -1, MAX_PAGE + 1])
def test_epoch_figures_refuses_bad_counts(db: Database, last: int) -> None:
    with pytest.raises(LocalProtocolError):
        db.epoch_figures(last=last)


# -- a page costs the same few queries however long the list ---------------------------------


def count_statements(db: Database, limit: int, which: DeviceFilter) -> tuple[int, int]:
    """The SQL statements one device_rows call runs, and the rows it returns."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        page = db.device_rows(limit=limit, which=which)
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
    return len(seen), len(page.items)


@pytest.mark.parametrize("which", [DeviceFilter.ALL, DeviceFilter.WARNED])
def test_a_device_page_is_a_constant_number_of_queries(db: Database, which: DeviceFilter) -> None:
    bulk_mesh(db, 1, 10)
    small = [count_statements(db, limit, which) for limit in (50, MAX_PAGE)]
    bulk_mesh(db, 11, 190)
    large = [count_statements(db, limit, which) for limit in (50, MAX_PAGE)]
    warned = which == DeviceFilter.WARNED
    assert [rows for _, rows in small] == ([2, 2] if warned else [10, 10])
    assert [rows for _, rows in large] == ([40, 40] if warned else [50, 200])
    assert [n for n, _ in small] == [n for n, _ in large]
    assert small[0][0] <= 8  # BEGIN, two counts and pages, proofs, money, warnings, reasons


def test_bulk_figures_are_right_too(db: Database) -> None:
    bulk_mesh(db, 1, 200)
    page = db.device_rows(limit=MAX_PAGE)
    assert page.total == 200
    row = by_node(page.items)[ident(15).node_id]
    assert (row.pass_rate, row.rounds_missed) == (1.0, 0)
    assert (row.reward_last, row.reward_total) == (15, 30)
    assert row.warning is not None and row.warning.reasons == ("epoch 2",)
    assert [f.challenged for f in db.epoch_figures()] == [200, 200, 200]
    assert [f.reward for f in db.epoch_figures()] == [20100, 20100, 0]
