"""The hub's database layer, the same tests on SQLite and on a scratch PostgreSQL cluster."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import threading
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select

from hub import db_schema
from hub.db import MIGRATIONS, Database, default_url
from hub.db_base import MAX_PAGE
from hub.db_records import ObjectRecord, ParkedReceipt, PlacementRecord
from hub.db_reports import Health, health_of
from hub.db_schema import ChallengeOutcome, PlacementState, RepairState
from lichen import cid as cids
from lichen.errors import ConfigError, LocalProtocolError, NotAuthorised
from lichen.identity import node_id_bytes
from lichen.manifest import Manifest, Receipt
from lichen.proofs import Reason
from lichen.rewards import (
    DeviceReward,
    Outcome,
    RewardPolicy,
    Standing,
    State,
    epoch_rewards,
)
from lichen.shard import leaf_count
from tests.hubdb import FAR, enroll, ident, make_object, place, result, root
from tests.pg import Cluster, pg_cluster, pg_database, pg_url  # noqa: F401  (fixtures)

TABLES = {
    "devices",
    "objects",
    "shards",
    "placements",
    "parked_receipts",
    "epochs",
    "challenges",
    "proof_items",
    "rewards",
    "repairs",
    "streams",
    "stream_counts",
    "readings",
}
HOSTILE = (
    "'; DROP TABLE devices; --",
    'Robert"); DELETE FROM objects; --',
    "%s %(name)s ? :name $1 \\x00 \\",
    "ünïcödé ✓ 🦀 \u202eevil\u202c 𝔘",
    "\x01\x02\x1b[31mred\x1b[0m\t\r\n",
    "\ufeffbom and \u200bzero width",
)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return default_url(tmp_path)
    return str(request.getfixturevalue("pg_url"))


# -- migrations and opening -------------------------------------------------------------------


def test_migrations_apply_to_an_empty_database(url: str) -> None:
    database = Database.open(url)
    try:
        assert database.revision() is None
        assert database.dialect == url.split(":")[0].split("+")[0]
        database.upgrade()
        assert database.revision() == "0002"
        database.upgrade()  # already at head: nothing to do
        with database.engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) >= TABLES
            diff = compare_metadata(MigrationContext.configure(conn), db_schema.metadata)
        assert diff == []
    finally:
        database.close()


def test_migrations_downgrade_to_nothing_and_back(url: str) -> None:
    db = Database.open(url)
    db.upgrade()
    with db.engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
        assert TABLES.isdisjoint(inspect(conn).get_table_names())
    db.upgrade()
    assert db.revision() == "0002"
    assert db.ping()
    db.close()


@pytest.mark.parametrize(
    "bad", ["mysql://u@h/d", "sqlite://", "sqlite:///:memory:", "no url at all"]
)
def test_open_refuses_what_it_does_not_support(bad: str) -> None:
    with pytest.raises(ConfigError):
        Database.open(bad)


def test_ping_is_false_when_the_database_is_unreachable() -> None:
    with Database.open("postgresql+psycopg://nobody:none@127.0.0.1:1/none") as database:
        assert database.ping() is False


def test_default_url_is_hub_db_in_the_data_dir(tmp_path: Path) -> None:
    assert default_url(tmp_path) == f"sqlite:///{tmp_path}/hub.db"


# -- devices --------------------------------------------------------------------------------


def test_enroll_then_enroll_again_keeps_standing(db: Database) -> None:
    who = ident(1)
    key = who.public.public_key
    assert db.enroll_device(who.node_id, key, "pi", 1000, 1.0) is True
    db.set_standing(who.node_id, Standing(State.WARNED, 2))
    assert db.enroll_device(who.node_id, key, "pi renamed", 2000, 9.0) is False
    device = db.get_device(who.node_id)
    assert device is not None
    assert (device.name, device.capacity_bytes, device.enrolled_at) == ("pi renamed", 2000, 1.0)
    assert device.standing == Standing(State.WARNED, 2)
    assert device.public_key == key and not device.revoked and not device.online


def test_enroll_refuses_a_key_that_is_not_the_node_ids(db: Database) -> None:
    with pytest.raises(LocalProtocolError):
        db.enroll_device(ident(1).node_id, ident(2).public.public_key, "x", 0, 1.0)
    with pytest.raises(LocalProtocolError):
        db.enroll_device(ident(1).node_id, ident(1).public.public_key, "x", -1, 1.0)
    assert db.list_devices().total == 0


def test_revoked_device_cannot_enroll_and_has_no_key(db: Database) -> None:
    node = enroll(db, 1)
    assert db.public_key(node) == ident(1).public.public_key
    assert db.revoke_device(node, 5.0) is True
    assert db.revoke_device(node, 6.0) is False
    assert db.revoke_device(ident(2).node_id, 6.0) is False
    assert db.public_key(node) is None
    device = db.get_device(node)
    assert device is not None and device.revoked_at == 5.0
    with pytest.raises(NotAuthorised):
        enroll(db, 1)
    assert node not in db.standings()


def test_presence_starts_and_clears_absence(db: Database) -> None:
    node = enroll(db, 1)
    assert db.update_presence(node, online=True, now=10.0, used_bytes=5, address="10.0.0.2:5683")
    device = db.get_device(node)
    assert device is not None
    assert (device.online, device.last_seen, device.absent_since) == (True, 10.0, None)
    assert (device.used_bytes, device.capacity_bytes, device.address) == (5, 1000, "10.0.0.2:5683")
    assert db.update_presence(node, online=False, now=20.0)
    assert db.update_presence(node, online=False, now=30.0)  # the first offline time stays
    device = db.get_device(node)
    assert device is not None
    assert (device.online, device.last_seen, device.absent_since) == (False, 10.0, 20.0)
    assert device.address == "10.0.0.2:5683"
    assert db.update_presence(node, online=True, now=40.0)
    assert db.mark_absent(node, 50.0) and db.mark_absent(node, 60.0)
    device = db.get_device(node)
    assert device is not None and device.absent_since == 50.0
    assert not db.update_presence(ident(9).node_id, online=True, now=1.0)
    assert not db.mark_absent(ident(9).node_id, 1.0)


def test_standings_and_set_standing(db: Database) -> None:
    a, b = enroll(db, 1), enroll(db, 2)
    assert db.set_standing(b, Standing(State.PENALISED, 3))
    assert not db.set_standing(ident(9).node_id, Standing())
    assert db.standings() == {a: Standing(), b: Standing(State.PENALISED, 3)}


def test_list_devices_pages_by_node_id(db: Database) -> None:
    nodes = sorted(enroll(db, i) for i in range(1, 8))
    first = db.list_devices(limit=3)
    assert [d.node_id for d in first.items] == nodes[:3]
    assert (first.total, first.limit, first.offset) == (7, 3, 0)
    assert [d.node_id for d in db.list_devices(limit=3, offset=6).items] == nodes[6:]
    assert db.list_devices(limit=3, offset=100).items == ()


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (MAX_PAGE + 1, 0), (10, -1), (True, 0)])
def test_bad_paging_is_refused(db: Database, limit: int, offset: int) -> None:
    with pytest.raises(LocalProtocolError):
        db.list_devices(limit=limit, offset=offset)


# -- objects, shards, placements ------------------------------------------------------------


def test_record_object_once_and_fill_in_headers(db: Database) -> None:
    obj = make_object(1)
    assert db.record_object(obj, 3.0, headers={0: b"header 0"}) is True
    assert db.record_object(obj, 4.0, headers={0: b"changed", 2: b"header 2"}) is False
    assert db.manifest(obj.cid) == obj.manifest
    assert db.shard_roots(obj.cid) == dict(enumerate(obj.roots))
    assert db.shard_headers(obj.cid) == {0: b"header 0", 2: b"header 2"}
    assert db.shard_headers(obj.cid, [2, 3]) == {2: b"header 2"}
    health = db.get_object(obj.cid)
    assert health is not None
    assert (health.k, health.n, health.live, health.repairing, health.label) == (
        2,
        4,
        0,
        False,
        "file 1",
    )
    assert db.manifest(cids.text_of(b"unknown")) is None
    assert db.get_object("nonsense") is None


@pytest.mark.parametrize(
    "change",
    [
        {"k": 5},
        {"k": 0},
        {"roots": (b"r",)},
        {"cid": "bafknotacid"},
        {"owner": "NOTANODEID"},
        {"codec": "zfec\x00"},
    ],
)
def test_record_object_refuses_bad_records(db: Database, change: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        db.record_object(dataclasses.replace(make_object(1), **change), 1.0)
    with pytest.raises(LocalProtocolError):
        db.record_object(make_object(1), 1.0, headers={4: b"out of range"})
    assert db.list_objects().total == 0


def test_records_built_from_signed_manifest_and_receipt(db: Database) -> None:
    owner, holder = ident(1), ident(2)
    enroll(db, 2)
    sealed = b"sealed object bytes"
    manifest = Manifest(
        object_cid=cids.of(sealed),
        size=len(sealed),
        codec="zfec-rs/1",
        k=1,
        n=2,
        piece_size=len(sealed),
        block_size=16,
        roots=(root(1, 0), root(1, 1)),
        holders=(holder.kid, holder.kid),
        created=100,
        expiry=200,
        owner=owner.public.public_key,
        label="notes.txt",
    )
    signed = manifest.sign(owner)
    record = ObjectRecord.from_manifest(manifest, signed)
    assert record.owner == owner.node_id and record.cid == cids.to_text(manifest.object_cid)
    db.record_object(record, 101.0)
    receipt = Receipt(
        manifest.object_cid, 1, root(1, 1), len(sealed), 200, 150, holder.kid, owner.kid
    )
    signed_receipt = receipt.sign(holder)
    db.add_placement(PlacementRecord.from_receipt(receipt, signed_receipt), 151.0)
    (placement,) = db.device_placements(holder.node_id)
    assert (placement.cid, placement.shard_index, placement.root) == (record.cid, 1, root(1, 1))
    # 19 bytes in 16-byte blocks: what a challenge about it is drawn from
    assert leaf_count(placement.piece_size, placement.block_size) == 2
    assert db.manifest(record.cid) == signed
    assert node_id_bytes(owner.public.public_key) == owner.kid


def test_placements_live_lost_and_renewed(db: Database) -> None:
    a, b = enroll(db, 1), enroll(db, 2)
    obj = make_object(1)
    db.record_object(obj, 1.0)
    place(db, obj, 0, a)
    place(db, obj, 1, a)
    place(db, obj, 1, b)  # two holders of index 1 count once
    assert db.live_count(obj.cid) == 2
    assert db.held_bytes(a) == 1000 and db.held_bytes(b) == 500
    held = db.device_placements(a)
    assert [(p.shard_index, leaf_count(p.piece_size, p.block_size)) for p in held] == [
        (0, 4),
        (1, 4),
    ]
    assert db.live_placements_by_holder() == {a: held, b: db.device_placements(b)}
    assert db.mark_holder_lost(a, 7.0) == 2
    assert db.mark_holder_lost(a, 8.0) == 0
    assert db.live_count(obj.cid) == 1 and db.held_bytes(a) == 0
    assert db.device_placements(a) == []
    lost = db.device_placements(a, PlacementState.LOST)
    assert [(p.state, p.lost_at) for p in lost] == [(PlacementState.LOST, 7.0)] * 2
    place(db, obj, 0, a, now=9.0)  # a new receipt makes it live again
    assert db.live_count(obj.cid) == 2
    assert db.set_placement_state(obj.cid, 1, b, PlacementState.REMOVED, 10.0)
    assert not db.set_placement_state(obj.cid, 3, b, PlacementState.LOST, 10.0)
    states = {(p.shard_index, p.holder): p.state for p in db.object_placements(obj.cid)}
    assert states == {
        (0, a): PlacementState.LIVE,
        (1, a): PlacementState.LOST,
        (1, b): PlacementState.REMOVED,
    }
    assert db.set_placement_state(obj.cid, 1, a, PlacementState.LIVE, 11.0)
    assert db.live_count(obj.cid) == 2


def test_placement_needs_a_known_shard_and_its_root(db: Database) -> None:
    a = enroll(db, 1)
    obj = make_object(1)
    with pytest.raises(LocalProtocolError, match="no shard"):
        place(db, obj, 0, a)
    db.record_object(obj, 1.0)
    wrong = PlacementRecord(obj.cid, 0, a, root(9, 9), 500, b"r", 1.0, FAR)
    with pytest.raises(LocalProtocolError, match="root"):
        db.add_placement(wrong, 2.0)
    with pytest.raises(LocalProtocolError):
        place(db, obj, 0, ident(7).node_id)  # not enrolled: the foreign key refuses it
    assert db.object_placements(obj.cid) == []


def test_objects_at_risk_fewest_first_and_not_while_repairing(db: Database) -> None:
    holders = [enroll(db, i) for i in range(1, 5)]
    objs = [make_object(i) for i in range(3)]  # k=2, n=4
    for obj, live in zip(objs, (4, 3, 1), strict=True):
        db.record_object(obj, 1.0)
        for index in range(live):
            place(db, obj, index, holders[index])
    at_risk = db.objects_at_risk(margin=1)
    assert [(o.cid, o.live) for o in at_risk] == [(objs[2].cid, 1), (objs[1].cid, 3)]
    assert [o.cid for o in db.objects_at_risk(margin=0)] == [objs[2].cid]
    db.create_repair(objs[2].cid, [1, 2, 3], holders[0], [(1, holders[1])], 5.0)
    assert [o.cid for o in db.objects_at_risk(margin=1)] == [objs[1].cid]
    listed = db.list_objects(limit=2, offset=0)
    assert listed.total == 3 and len(listed.items) == 2
    assert listed.items == tuple(sorted(listed.items, key=lambda o: o.cid))


def test_parked_receipts(db: Database) -> None:
    a, b = enroll(db, 1), enroll(db, 2)
    cid = cids.text_of(b"later")
    db.park_receipt(ParkedReceipt(cid, 0, a, b"first", 1.0))
    db.park_receipt(ParkedReceipt(cid, 0, a, b"newer", 2.0))
    db.park_receipt(ParkedReceipt(cid, 1, b, b"other", 3.0))
    db.park_receipt(ParkedReceipt(cids.text_of(b"old"), 0, a, b"old", 0.5))
    assert db.parked_count(a) == 2 and db.parked_count(b) == 1
    assert db.drop_parked(received_before=1.0) == 1
    taken = db.take_parked(cid)
    assert [(p.shard_index, p.holder, p.receipt) for p in taken] == [
        (0, a, b"newer"),
        (1, b, b"other"),
    ]
    assert db.take_parked(cid) == []
    assert db.parked_count(a) == 0


# -- epochs, challenges, proofs, rewards ---------------------------------------------------


def test_epochs_open_close_and_ledger_order(db: Database) -> None:
    assert db.current_epoch() is None and db.last_closed_epoch() is None
    prev = b"\x00" * 32
    for number in range(1, 6):
        db.open_epoch(number, started=number * 60.0, deadline=number * 60.0 + 30)
        record = b"record %d" % number
        digest = hashlib.sha256(record).digest()
        db.close_epoch(number, number * 60.0 + 59, record, digest, prev, [])
        prev = digest
    db.open_epoch(6, 360.0, 390.0)
    with pytest.raises(LocalProtocolError):
        db.open_epoch(6, 400.0, 430.0)
    with pytest.raises(LocalProtocolError):
        db.open_epoch(2, 400.0, 430.0)
    with pytest.raises(LocalProtocolError):
        db.close_epoch(3, 400.0, b"again", b"h", b"p", [])
    current = db.current_epoch()
    assert current is not None and current.epoch == 6 and not current.closed
    last = db.last_closed_epoch()
    assert last is not None and last.epoch == 5 and last.record == b"record 5"
    entries = list(db.ledger(batch=2))
    assert [e.epoch for e in entries] == [1, 2, 3, 4, 5]
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.record_hash
    page = db.list_epochs(limit=4, offset=1)
    assert [e.epoch for e in page.items] == [5, 4, 3, 2] and page.total == 6
    epoch_two = db.get_epoch(2)
    assert epoch_two is not None and epoch_two.deadline == 150.0
    assert db.get_epoch(99) is None


def test_challenges_answers_and_verdicts(db: Database) -> None:
    a, b, c, d = (enroll(db, i) for i in range(1, 5))
    obj = make_object(1)
    db.record_object(obj, 1.0)
    db.open_epoch(1, 60.0, 90.0)
    for node in (a, b, c, d):
        db.record_challenge(1, node, b"challenge for " + node.encode(), 61.0, 90.0)
    with pytest.raises(LocalProtocolError):
        db.record_challenge(1, a, b"twice", 62.0, 90.0)
    ok = result(1, 1, obj, [Reason.OK, Reason.OK, Reason.UNKNOWN_SHARD])
    assert db.record_answer(1, a, ok, 70.0) is True
    assert db.record_answer(1, a, ok, 71.0) is False  # a duplicate delivery changes nothing
    bad = result(1, 2, obj, [Reason.OK, Reason.BAD_BLOCK])
    assert db.record_answer(1, b, bad, 72.0) is True
    with pytest.raises(LocalProtocolError):
        db.record_answer(1, c, bad, 72.0)  # b's result filed under c
    assert db.record_rejected(1, c, 73.0, "bad signature") is True
    assert db.record_rejected(1, c, 74.0, "again") is False
    assert db.expire_challenges(1, absent_at=80.0) == [d]
    assert db.expire_challenges(1, absent_at=85.0) == []
    rows = {r.device: r for r in db.epoch_challenges(1)}
    assert (rows[a].outcome, rows[a].items_passed, rows[a].items_failed) == (
        ChallengeOutcome.PASSED,
        2,
        0,
    )
    assert rows[a].pass_rate == 1.0 and rows[a].answered_at == 70.0
    assert (rows[b].outcome, rows[b].pass_rate) == (ChallengeOutcome.FAILED, 0.5)
    assert (rows[c].outcome, rows[c].detail) == (ChallengeOutcome.REJECTED, "bad signature")
    assert (rows[d].outcome, rows[d].pass_rate) == (ChallengeOutcome.NO_ANSWER, None)
    single = db.get_challenge(1, d)
    assert single is not None and single.challenge == b"challenge for " + d.encode()
    assert db.get_challenge(2, d) is None
    items = db.proof_items(1, b)
    assert [(i.shard_index, i.passed, i.reason) for i in items] == [
        (0, True, "ok"),
        (1, False, "bad block"),
    ]
    # An item on a shard the hub has no root for is no verdict: not kept.
    assert [i.shard_index for i in db.proof_items(1, a)] == [0, 1]
    # Only the device that did not answer became absent, at the expiry's time.
    absent = {node: db.get_device(node).absent_since for node in (a, b, c, d)}  # type: ignore[union-attr]
    assert absent == {a: None, b: None, c: None, d: 80.0}


def test_an_epoch_opens_with_its_challenges_and_keeps_earlier_absences(db: Database) -> None:
    a, b = enroll(db, 1), enroll(db, 2)
    db.update_presence(a, online=False, now=10.0)  # absent since 10 already
    sent = [(a, b"challenge a"), (b, b"challenge b")]
    db.open_epoch(1, 60.0, 90.0, sent)
    rows = db.epoch_challenges(1)
    assert [(r.device, r.challenge, r.sent_at, r.deadline) for r in rows] == sorted(
        (node, signed, 60.0, 90.0) for node, signed in sent
    )
    assert all(r.outcome is ChallengeOutcome.PENDING for r in rows)
    with pytest.raises(LocalProtocolError):
        db.open_epoch(2, 120.0, 150.0, [(a, b"x"), (a, b"twice")])
    assert db.get_epoch(2) is None  # all or nothing
    assert db.expire_challenges(1, absent_at=95.0) == sorted([a, b])
    assert db.get_device(a).absent_since == 10.0  # type: ignore[union-attr]
    assert db.get_device(b).absent_since == 95.0  # type: ignore[union-attr]


def test_epoch_close_writes_rewards_and_standings(db: Database) -> None:
    a, b, c = (enroll(db, i) for i in range(1, 4))
    obj = make_object(1)
    db.record_object(obj, 1.0)
    for index, node in enumerate((a, a, b, c)):
        place(db, obj, index, node)
    db.open_epoch(7, 60.0, 90.0)
    for node in (a, b, c):
        db.record_challenge(7, node, b"c", 61.0, 90.0)
    db.record_answer(7, a, result(7, 1, obj, [Reason.OK, Reason.OK]), 70.0)
    db.record_answer(7, b, result(7, 2, obj, [Reason.OK, Reason.MISSING]), 70.0)
    db.expire_challenges(7)
    proofs = db.proof_inputs(7)
    assert proofs[a].answered and len(proofs[a].items) == 2 and proofs[a].held_bytes == 1000
    assert proofs[b].items[1].reason == "missing" and proofs[b].items[0].reason == ""
    assert not proofs[c].answered and proofs[c].held_bytes == 500
    outcome = epoch_rewards(7, 60, RewardPolicy(pool=1_000_000), proofs, db.standings())
    db.close_epoch(7, 95.0, outcome.encode(), b"h" * 32, b"p" * 32, outcome.devices)
    assert db.standings() == outcome.standings()
    assert db.standings()[b].state == State.WARNED
    stored = {r.device: r for r in db.epoch_rewards(7)}
    for expected in outcome.devices:
        got = stored[expected.node_id]
        assert (got.reward, got.penalty, got.proven_bytes) == (
            expected.reward,
            expected.penalty,
            expected.proven_bytes,
        )
        assert (got.before, got.after, got.outcome) == (
            expected.before,
            expected.after,
            str(expected.outcome),
        )
        assert got.explanation == expected.explanation
    assert sum(r.reward for r in stored.values()) == 1_000_000
    page = db.device_rewards(a)
    assert page.total == 1 and page.items[0].epoch == 7


def test_failed_close_rolls_back_everything(db: Database) -> None:
    a = enroll(db, 1)
    db.open_epoch(1, 0.0, 30.0)
    good = DeviceReward(
        a, Standing(), Standing(State.WARNED, 1), Outcome.FAILED, 0, 0, 0, 1, 0, 0, ("warned",)
    )
    stranger = DeviceReward(
        ident(9).node_id, Standing(), Standing(), Outcome.PASSED, 10, 600, 1, 0, 5, 0, ()
    )
    with pytest.raises(LocalProtocolError):
        db.close_epoch(1, 40.0, b"record", b"h", b"p", [good, stranger])
    epoch = db.get_epoch(1)
    assert epoch is not None and not epoch.closed and epoch.record is None
    assert db.epoch_rewards(1) == []
    assert db.standings() == {a: Standing()}
    db.close_epoch(1, 41.0, b"record", b"h", b"p", [good])
    assert db.standings() == {a: Standing(State.WARNED, 1)}


def test_failed_answer_rolls_back_the_verdict(db: Database) -> None:
    a = enroll(db, 1)
    obj = make_object(1)
    db.record_object(obj, 1.0)
    db.open_epoch(1, 0.0, 30.0)
    db.record_challenge(1, a, b"c", 1.0, 30.0)
    once = result(1, 1, obj, [Reason.OK])
    twice = dataclasses.replace(once, items=once.items * 2)
    with pytest.raises(LocalProtocolError):
        db.record_answer(1, a, twice, 5.0)  # the same item twice breaks the primary key
    challenge = db.get_challenge(1, a)
    assert challenge is not None and challenge.outcome == ChallengeOutcome.PENDING
    assert db.proof_items(1, a) == []


# -- repairs --------------------------------------------------------------------------------


def test_repairs_lifecycle_and_listing(db: Database) -> None:
    a, b, c = (enroll(db, i) for i in range(1, 4))
    objs = [make_object(i) for i in range(3)]
    ids = []
    for i, obj in enumerate(objs):
        db.record_object(obj, 1.0)
        ids.append(db.create_repair(obj.cid, [2, 3], a, [(2, b), (3, c)], 10.0 + i))
    repair = db.get_repair(ids[0])
    assert repair is not None
    assert (repair.lost_indices, repair.targets, repair.state) == (
        (2, 3),
        ((2, b), (3, c)),
        RepairState.ORDERED,
    )
    assert db.finish_repair(ids[0], 20.0, ok=True) is True
    assert db.finish_repair(ids[0], 21.0, ok=False) is False
    assert db.finish_repair(ids[1], 22.0, ok=False, detail="no k shards") is True
    assert [r.id for r in db.repairs_in_progress()] == [ids[2]]
    assert [r.id for r in db.list_repairs(limit=2).items] == [ids[2], ids[1]]
    failed = db.list_repairs(state=RepairState.FAILED)
    assert failed.total == 1 and failed.items[0].detail == "no k shards"
    done = db.get_repair(ids[0])
    assert done is not None and done.finished_at == 20.0 and done.state == RepairState.DONE
    assert db.get_repair(9999) is None
    with pytest.raises(LocalProtocolError):
        db.create_repair(objs[0].cid, [1], a, [(1, "nobody")], 30.0)


# -- views ----------------------------------------------------------------------------------


def test_overview_counts(db: Database) -> None:
    empty = db.overview()
    assert (empty.devices, empty.objects, empty.current_epoch) == (0, 0, None)
    assert empty.objects_by_health == dict.fromkeys(Health, 0)
    a, b, c, d = (enroll(db, i) for i in range(1, 5))
    db.update_presence(a, online=True, now=2.0, capacity_bytes=100, used_bytes=10)
    db.update_presence(b, online=True, now=2.0, capacity_bytes=200, used_bytes=20)
    db.update_presence(c, online=False, now=2.0, capacity_bytes=400)
    db.revoke_device(d, 3.0)
    db.set_standing(c, Standing(State.WARNED, 1))
    full, degraded, at_risk, gone = (make_object(i) for i in range(4))
    for obj, live in ((full, 4), (degraded, 3), (at_risk, 2), (gone, 1)):
        db.record_object(obj, 1.0)
        for index in range(live):
            place(db, obj, index, (a, b, c, a)[index])
    db.mark_holder_lost(c, 5.0)  # c held index 2 of full and degraded
    db.open_epoch(3, 0.0, 1.0)
    db.create_repair(gone.cid, [1, 2, 3], a, [(1, b)], 6.0)
    view = db.overview()
    assert (view.devices, view.devices_online, view.devices_warned, view.devices_revoked) == (
        3,
        2,
        1,
        1,
    )
    assert (view.capacity_bytes, view.used_bytes) == (1000 + 200 + 400 - 1000 + 100, 30)
    assert view.objects == 4
    assert view.objects_by_health == {
        Health.FULL: 0,
        Health.DEGRADED: 1,
        Health.AT_RISK: 2,
        Health.UNREADABLE: 1,
    }
    assert (view.shards_live, view.shards_lost) == (8, 2)
    assert view.current_epoch is not None and view.current_epoch.epoch == 3
    assert view.repairs_in_progress == 1


def test_health_classes() -> None:
    assert [health_of(live, 2, 4) for live in (5, 4, 3, 2, 1, 0)] == [
        Health.FULL,
        Health.FULL,
        Health.DEGRADED,
        Health.AT_RISK,
        Health.UNREADABLE,
        Health.UNREADABLE,
    ]


def test_device_detail_and_warnings(db: Database) -> None:
    a, b = enroll(db, 1), enroll(db, 2, name="flaky")
    obj = make_object(1)
    db.record_object(obj, 1.0)
    place(db, obj, 0, a)
    place(db, obj, 1, b)
    place(db, obj, 2, b)
    policy = RewardPolicy(pool=1000, penalty_per_missed_answer=7)
    for epoch in (1, 2, 3, 4):
        db.open_epoch(epoch, epoch * 60.0, epoch * 60.0 + 30)
        db.record_challenge(epoch, a, b"c", epoch * 60.0, epoch * 60.0 + 30)
        db.record_challenge(epoch, b, b"c", epoch * 60.0, epoch * 60.0 + 30)
        db.record_answer(epoch, a, result(epoch, 1, obj, [Reason.OK]), epoch * 60.0 + 1)
        db.expire_challenges(epoch)
        out = epoch_rewards(epoch, 60, policy, db.proof_inputs(epoch), db.standings())
        db.close_epoch(epoch, epoch * 60.0 + 31, out.encode(), b"h", b"p", out.devices)
    db.mark_holder_lost(b, 300.0)
    detail = db.device_detail(b, epochs=3)
    assert detail is not None
    assert [p.epoch for p in detail.proofs] == [4, 3, 2]
    assert {p.outcome for p in detail.proofs} == {ChallengeOutcome.NO_ANSWER}
    assert [r.epoch for r in detail.rewards] == [4, 3, 2]
    assert detail.total_reward == 0 and detail.total_penalty > 0
    assert (detail.shards_live, detail.shards_lost, detail.held_bytes) == (0, 2, 0)
    assert detail.warning is not None
    assert detail.warning.standing == db.standings()[b] and detail.warning.last_failed_epoch == 4
    assert detail.warning.reasons == detail.rewards[0].explanation
    good = db.device_detail(a)
    assert good is not None and good.warning is None and good.total_reward == 4000
    assert [p.pass_rate for p in good.proofs] == [1.0] * 4
    assert db.device_detail(ident(9).node_id) is None
    warnings = db.warnings()
    assert [(w.node_id, w.name) for w in warnings.items] == [(b, "flaky")] and warnings.total == 1


def test_warnings_worst_first(db: Database) -> None:
    nodes = [enroll(db, i) for i in range(1, 6)]
    for node, standing in zip(
        nodes,
        (
            Standing(State.WARNED, 1),
            Standing(State.EVICTED, 6),
            Standing(),
            Standing(State.PENALISED, 3),
            Standing(State.WARNED, 2),
        ),
        strict=True,
    ):
        db.set_standing(node, standing)
    db.revoke_device(nodes[4], 1.0)
    page = db.warnings(limit=2)
    assert [w.node_id for w in page.items] == [nodes[1], nodes[3]] and page.total == 3
    assert [w.node_id for w in db.warnings(limit=2, offset=2).items] == [nodes[0]]
    assert page.items[0].last_failed_epoch is None and page.items[0].reasons == ()


def test_data_health_groups_and_repairs(db: Database) -> None:
    a, b = enroll(db, 1), enroll(db, 2)
    objs = [make_object(i) for i in range(4)]
    for obj, live in zip(objs, (2, 2, 4, 0), strict=True):
        db.record_object(obj, 1.0)
        for index in range(live):
            place(db, obj, index, (a, b)[index % 2])
    first = db.create_repair(objs[0].cid, [2, 3], a, [(2, b)], 5.0)
    second = db.create_repair(objs[1].cid, [2, 3], a, [(2, b)], 6.0)
    db.create_repair(objs[3].cid, [0], a, [], 7.0)
    db.finish_repair(first, 8.0, ok=True)
    db.finish_repair(second, 9.0, ok=False)
    health = db.data_health(recent=1)
    assert [(g.k, g.n, g.live, g.objects) for g in health.groups] == [
        (2, 4, 0, 1),
        (2, 4, 2, 2),
        (2, 4, 4, 1),
    ]
    assert health.by_health[Health.AT_RISK] == 2 and health.by_health[Health.UNREADABLE] == 1
    assert [r.cid for r in health.in_progress] == [objs[3].cid]
    assert [r.id for r in health.recent_finished] == [second]
    assert (health.repairs_in_progress, health.repairs_done, health.repairs_failed) == (1, 1, 1)


# -- hostile input ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [*HOSTILE, "x" * 100_000])
def test_odd_text_is_stored_and_returned_unchanged(db: Database, text: str) -> None:
    node = enroll(db, 1, name=text)
    db.update_presence(node, online=True, now=1.0, address=text)
    obj = dataclasses.replace(make_object(1), label=text, codec=text[:32])
    db.record_object(obj, 1.0)
    db.open_epoch(1, 0.0, 10.0)
    db.record_challenge(1, node, text.encode("utf-8", "surrogatepass"), 1.0, 10.0)
    db.record_rejected(1, node, 2.0, text)
    repair = db.create_repair(obj.cid, [0], node, [], 3.0)
    db.finish_repair(repair, 4.0, ok=False, detail=text)
    lines = (text, text + "\x00 NUL is fine inside JSON")
    reward = DeviceReward(node, Standing(), Standing(), Outcome.NO_ANSWER, 0, 0, 0, 0, 0, 0, lines)
    db.close_epoch(1, 11.0, b"r", b"h", b"p", [reward])
    device = db.get_device(node)
    assert device is not None and device.name == text and device.address == text
    stored = db.get_object(obj.cid)
    assert stored is not None and stored.label == text
    challenge = db.get_challenge(1, node)
    assert challenge is not None and challenge.detail == text
    finished = db.get_repair(repair)
    assert finished is not None and finished.detail == text
    assert db.epoch_rewards(1)[0].explanation == lines
    assert db.list_devices().total == 1 and db.list_objects().total == 1


@pytest.mark.parametrize("text", HOSTILE)
def test_strings_in_lookups_find_nothing_and_harm_nothing(db: Database, text: str) -> None:
    node = enroll(db, 1)
    assert db.get_device(text) is None
    assert db.public_key(text) is None
    assert not db.revoke_device(text, 1.0)
    assert not db.update_presence(text, online=True, now=1.0)
    assert db.manifest(text) is None and db.get_object(text) is None
    assert db.device_placements(text) == [] and db.live_count(text) == 0
    assert db.take_parked(text) == [] and db.device_detail(text) is None
    assert [d.node_id for d in db.list_devices().items] == [node]
    with db.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) >= TABLES
        assert conn.execute(select(func.count()).select_from(db_schema.devices)).scalar_one() == 1


@pytest.mark.parametrize("bad", ["nul\x00inside", "lone \ud800 surrogate"])
def test_text_no_database_can_hold_is_refused_alike(db: Database, bad: str) -> None:
    with pytest.raises(LocalProtocolError):
        enroll(db, 1, name=bad)
    node = enroll(db, 1)
    with pytest.raises(LocalProtocolError):
        db.update_presence(node, online=True, now=1.0, address=bad)
    device = db.get_device(node)
    assert device is not None and device.address is None and not device.online


@pytest.mark.parametrize(
    "node_id", ["", "x" * 5000, "KZDVVJ2UMNDUYAUF35O36K6KW462MUJV", "'; DROP TABLE devices; --"]
)
def test_malformed_ids_are_refused_on_write(db: Database, node_id: str) -> None:
    with pytest.raises(LocalProtocolError):
        db.park_receipt(ParkedReceipt(cids.text_of(b"x"), 0, node_id, b"r", 1.0))
    with pytest.raises(LocalProtocolError):
        db.record_object(dataclasses.replace(make_object(1), owner=node_id), 1.0)


def test_non_canonical_content_addresses_are_refused_on_write(db: Database) -> None:
    text = cids.text_of(b"x")
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    # The last character's 2 spare bits, or upper case: the same CID spelt another way.
    alias = text[:-1] + alphabet[alphabet.index(text[-1]) ^ 1]
    for bad in (alias, text[:-2] + text[-2:].upper()):
        with pytest.raises(LocalProtocolError, match="canonical"):
            db.park_receipt(ParkedReceipt(bad, 0, ident(1).node_id, b"r", 1.0))
        with pytest.raises(LocalProtocolError, match="canonical"):
            db.record_object(dataclasses.replace(make_object(1), cid=bad), 1.0)
    assert db.list_objects().total == 0


# -- SQLite specifics -------------------------------------------------------------------------


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    with Database.open(default_url(tmp_path)) as database:
        database.upgrade()
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000


def test_sqlite_reader_keeps_its_snapshot_while_a_writer_commits(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    with Database.open(url) as writer, Database.open(url) as reader:
        writer.upgrade()
        enroll(writer, 1)
        with reader._read() as conn:
            count = select(func.count()).select_from(db_schema.devices)
            assert conn.execute(count).scalar_one() == 1
            enroll(writer, 2)  # commits while the read transaction is open: WAL allows it
            assert conn.execute(count).scalar_one() == 1
        assert reader.list_devices().total == 2


def test_sqlite_two_connections_write_at_once(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    with Database.open(url) as first, Database.open(url) as second:
        first.upgrade()
        node = enroll(first, 1)
        errors: list[BaseException] = []

        def work(database: Database, start: int) -> None:
            try:
                for i in range(start, start + 25):
                    database.update_presence(node, online=True, now=float(i), used_bytes=i)
                    database.mark_absent(node, float(i))
                    enroll(database, 10 + i)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=work, args=(first, 0)),
            threading.Thread(target=work, args=(second, 100)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert first.list_devices().total == 51
