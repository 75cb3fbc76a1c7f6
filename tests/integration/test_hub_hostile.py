"""A real hub against hostile agents: every bad input is refused, recorded, and earns nothing.

A hub runs in the test process, with fake agents that speak its control plane by hand
(:mod:`tests.fakehub`): each test twice, with a fresh Mosquitto on loopback and with the hub's
embedded amqtt broker, on SQLite in ``tmp_path``.

Each hostile input is checked three ways: it is refused (a ``lichen_hub_refused_total`` counter
on ``/metrics`` goes up by one, or a joined says ``accepted=false``), it is recorded (that
counter, or a challenge or proof-item row saying why), and it earns nothing (the rewards rows
and the signed ledger). Waits end on events: a hub answer to a message (a ``joined``, which
also tells us the hub has handled everything the same client sent before it), a challenge
arriving, an epoch's ``run_epoch`` returning. The only timed wait is the late agent's, which
must answer after its challenge's deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub import service
from hub.db import Database
from hub.db_records import RewardRecord
from hub.db_schema import ChallengeOutcome, PlacementState, RepairState
from hub.service import LATE_GRACE, Hub
from lichen import cbor, cose, ledger, proofs, wire
from lichen.hubmessages import Repaired, Status, make_join, make_receipts
from lichen.hubwire import Name
from lichen.identity import Identity
from lichen.rewards import State
from tests.fakehub import (
    HUB_KEY,
    PENALTY_ITEM,
    PENALTY_MISSED,
    POOL,
    TOKEN,
    agents,
    db_of,
    get_json,
    get_text,
    make_object,
    running_hub,
    upload,
    within,
)
from tests.forge import swap_kid
from tests.mosquitto import Mosquitto, require_mosquitto

REFUSED = "lichen_hub_refused_total"


@pytest.fixture(params=["mosquitto", "embedded"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh Mosquitto on loopback (no retained messages from other tests), or "": the hub
    starts its embedded broker (amqtt)."""
    if request.param == "embedded":
        yield ""
        return
    require_mosquitto()
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker.url


async def refusals(hub: Hub) -> dict[str, float]:
    """``lichen_hub_refused_total`` by reason, as ``/metrics`` shows it."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(await get_text(hub, "/metrics")):
        for sample in family.samples:
            if sample.name == REFUSED:
                found[sample.labels["reason"]] = sample.value
    return found


class Refusals:
    """Counts the refusals of one step: ``await r.expect(BadSignature=2)`` after it."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.before: dict[str, float] = {}

    async def start(self) -> Refusals:
        self.before = await refusals(self.hub)
        return self

    async def expect(self, **reasons: int) -> None:
        after = await refusals(self.hub)
        changed = {
            reason: int(after[reason] - self.before.get(reason, 0.0))
            for reason in after
            if after[reason] != self.before.get(reason, 0.0)
        }
        assert changed == reasons
        self.before = after


def resign(signed: bytes, signer: Identity) -> bytes:
    """The same payload signed by ``signer`` instead."""
    return cose.sign1(cose.parse(signed).payload, signer)


# --- joins, unenrolled keys and impostors ----------------------------------------------------


def test_joins_unenrolled_keys_and_impostors_are_refused(tmp_path: Path, broker_url: str) -> None:
    async def scenario() -> None:
        names = ("alice", "bob", "mallory", "stranger", "revoked")
        async with running_hub(tmp_path, broker_url) as hub, agents(hub.broker_url, *names) as a:
            db = db_of(hub)
            alice, bob, mallory, stranger = a["alice"], a["bob"], a["mallory"], a["stranger"]
            for agent in (alice, bob, a["revoked"]):
                assert (await agent.join()).accepted
                await agent.status()
                await agent.sync()
            counts = await Refusals(hub).start()

            # A join with the wrong token: answered accepted=false (signed by the hub; the
            # agent cannot check the answer's token MAC, having the wrong token), counted, and
            # the key is not enrolled.
            refused = await mallory.join("not-the-token-but-long-enough")
            assert not refused.accepted and "token" in refused.reason
            assert refused.hub_key == HUB_KEY.public.public_key
            await counts.expect(BadMac=1)
            assert db.get_device(mallory.node_id) is None

            # A key that never joined: its status, receipts and proof are refused. They go out
            # through bob's connection (the broker has no ACL: any client can publish on any
            # topic), so bob's join answers when the hub has handled them.
            encoded = make_object(stranger.identity, 3, seed=1)
            stranger.holder.add_shard(encoded.shards[0])
            online = Status(True, int(time.time()), b"session!", 1 << 20, 0, 1)
            await bob.publish(Name.STATUS, online.sign(stranger.identity), on=stranger.node_id)
            receipts = make_receipts(
                stranger.identity,
                [stranger.receipt(encoded.shards[0])],
                [upload(stranger.identity, encoded, [stranger.identity.kid] * 3)],
                now=time.time(),
            )
            await bob.publish(Name.RECEIPTS, receipts, on=stranger.node_id)
            leaf_count = encoded.shards[0].header.leaf_count
            made_up = proofs.make_challenge(
                1,
                bytes(32),
                stranger.identity.kid,
                int(time.time()) + 60,
                [(encoded.object_cid, 0, leaf_count)],
                1,
                1,
                random.Random(0),
            )
            await bob.publish(Name.PROOF, stranger.answer(made_up), on=stranger.node_id)
            await bob.sync()
            await counts.expect(NotAuthorised=3)
            assert db.get_device(stranger.node_id) is None
            assert db.manifest(encoded.cid_text) is None
            assert db.parked_count(stranger.node_id) == 0

            # Bob speaking for alice on her topics: his own key (kid bob), or his signature
            # under her kid. Were his offline status believed, alice would be offline.
            offline = Status.offline(int(time.time()), b"session!").sign(bob.identity)
            forged = [
                (Name.STATUS, offline),
                (Name.STATUS, swap_kid(offline, alice.identity.kid)),
                (Name.JOIN, make_join(bob.identity, TOKEN, name="alice", capacity=1, now=0)),
                (
                    Name.JOIN,
                    swap_kid(
                        make_join(bob.identity, TOKEN, name="alice", capacity=1, now=0),
                        alice.identity.kid,
                    ),
                ),
                (Name.RECEIPTS, make_receipts(bob.identity, [], [], now=time.time())),
            ]
            for name, payload in forged:
                await bob.publish(name, payload, on=alice.node_id)
            await bob.sync()
            await counts.expect(BadSignature=len(forged))
            device = db.get_device(alice.node_id)
            assert device is not None and device.online and device.name == "alice"
            assert alice.inbox[Name.JOINED].empty()  # no refusal was sent in alice's name
            await alice.sync()

            # A revoked device: its status is refused, its join answered accepted=false.
            revoked = a["revoked"]
            assert db.revoke_device(revoked.node_id, time.time())
            await revoked.status()
            answer = await revoked.join()
            assert not answer.accepted and "revoked" in answer.reason
            await counts.expect(NotAuthorised=2)

            listed = await get_json(hub, "/api/devices")
            assert {d["node_id"] for d in listed["items"]} == {
                alice.node_id,
                bob.node_id,
                revoked.node_id,
            }
            shown = await refusals(hub)
            assert shown == {"BadMac": 1.0, "NotAuthorised": 5.0, "BadSignature": 5.0}

    asyncio.run(scenario())


# --- receipts for shards never placed ----------------------------------------------------------


def test_receipts_for_shards_never_placed_are_refused_or_parked(
    tmp_path: Path, broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with (
            running_hub(tmp_path, broker_url) as hub,
            agents(hub.broker_url, "owner", "holder", "liar") as a,
        ):
            db = db_of(hub)
            owner, holder, liar = a["owner"], a["holder"], a["liar"]
            for agent in a.values():
                assert (await agent.join()).accepted
                await agent.status()
            kids = [holder.identity.kid] * 3
            recorded = make_object(owner.identity, 3, seed=2)
            await owner.publish(
                Name.RECEIPTS,
                make_receipts(owner.identity, [], [upload(owner.identity, recorded, kids)], now=0),
            )
            await owner.sync()
            await holder.publish(
                Name.RECEIPTS,
                make_receipts(
                    holder.identity, [holder.receipt(recorded.shards[0])], [], now=time.time()
                ),
            )
            await holder.sync()
            assert [p.holder for p in db.object_placements(recorded.cid_text)] == [holder.node_id]
            counts = await Refusals(hub).start()

            # Receipts for a recorded object whose root or index is not the manifest's.
            shard1 = recorded.shards[1]
            lies = [
                liar.receipt(shard1, root=recorded.shards[2].header.root),
                liar.receipt(shard1, root=bytes(32)),
                liar.receipt(shard1, index=7),
            ]
            await liar.publish(Name.RECEIPTS, make_receipts(liar.identity, lies, [], now=0))
            # A receipt for an object the hub never recorded: parked, not placed.
            unknown = make_object(liar.identity, 3, seed=3)
            await liar.publish(
                Name.RECEIPTS,
                make_receipts(liar.identity, [liar.receipt(unknown.shards[0])], [], now=0),
            )
            # A receipt the liar did not sign itself: the whole batch is refused.
            theirs = holder.receipt(recorded.shards[1])
            batch = wire.encode(wire.Kind.RECEIPT_BATCH, {2: 0, 3: [theirs], 4: []})
            await liar.publish(Name.RECEIPTS, cose.sign1(batch, liar.identity))
            await liar.sync()
            await counts.expect(MalformedMessage=len(lies), BadSignature=1)
            assert db.device_placements(liar.node_id, None) == []
            assert db.parked_count(liar.node_id) == 1
            assert db.get_object(unknown.cid_text) is None
            assert [p.holder for p in db.object_placements(recorded.cid_text)] == [holder.node_id]

            # A parked lie does not cost honest receipts parked with it their placement: the
            # liar parks a bogus shard 0 of an object before its manifest comes, the holder
            # parks its true shard 1, then the owner uploads the manifest.
            later = make_object(owner.identity, 3, seed=4)
            bogus = liar.receipt(later.shards[0], root=later.shards[2].header.root)
            await liar.publish(Name.RECEIPTS, make_receipts(liar.identity, [bogus], [], now=0))
            await liar.sync()
            true = holder.receipt(later.shards[1])
            await holder.publish(Name.RECEIPTS, make_receipts(holder.identity, [true], [], now=0))
            await holder.sync()
            assert db.parked_count(liar.node_id) == 2 and db.parked_count(holder.node_id) == 1
            await owner.publish(
                Name.RECEIPTS,
                make_receipts(owner.identity, [], [upload(owner.identity, later, kids)], now=0),
            )
            await owner.sync()
            await counts.expect(MalformedMessage=1)
            placed = db.object_placements(later.cid_text)
            assert [(p.shard_index, p.holder, p.state) for p in placed] == [
                (1, holder.node_id, PlacementState.LIVE)
            ]
            assert db.parked_count(liar.node_id) == 1  # the unknown object's, still waiting

            detail = await get_json(hub, f"/api/devices/{liar.node_id}")
            assert detail["shards_live"] == 0 and detail["held_bytes"] == 0
            shown = await get_json(hub, f"/api/objects/{later.cid_text}")
            assert shown["live"] == 1

            # A receipt whose manifest never comes is dropped at an epoch's close once it has
            # waited PARKED_TTL (here: no time at all), so it stops counting against the liar.
            monkeypatch.setattr(service, "PARKED_TTL", 0.0)
            await within(hub.run_epoch())
            assert db.parked_count(liar.node_id) == 0

    asyncio.run(scenario())


def test_a_repair_report_delivered_twice_counts_once(tmp_path: Path, broker_url: str) -> None:
    """QoS 1 may deliver a report twice: the second changes nothing and is not counted."""

    async def scenario() -> None:
        async with (
            running_hub(tmp_path, broker_url) as hub,
            agents(hub.broker_url, "owner", "repairer") as a,
        ):
            db = db_of(hub)
            owner, repairer = a["owner"], a["repairer"]
            for agent in a.values():
                assert (await agent.join()).accepted
            encoded = make_object(owner.identity, 3, seed=6)
            kids = [owner.identity.kid] * 3
            await owner.publish(
                Name.RECEIPTS,
                make_receipts(owner.identity, [], [upload(owner.identity, encoded, kids)], now=0),
            )
            await owner.sync()
            repair_id = db.create_repair(
                encoded.cid_text, [0], repairer.node_id, [(0, owner.node_id)], time.time()
            )
            placed = ((0, owner.identity.kid),)
            report = Repaired(repair_id, encoded.object_cid, placed, (), "", int(time.time()))
            counts = await Refusals(hub).start()
            signed = report.sign(repairer.identity)
            await repairer.publish(Name.REPAIRED, signed)
            await repairer.publish(Name.REPAIRED, signed)
            await repairer.sync()
            await counts.expect()
            done = hub.metrics.registry.get_sample_value(
                "lichen_hub_repairs_total", {"state": "done"}
            )
            assert done == 1
            finished = db.get_repair(repair_id)
            assert finished is not None and finished.state is RepairState.DONE

    asyncio.run(scenario())


# --- proofs: hostile answers, the honest path, warnings and penalties -------------------------


def rewards_by_device(db: Database, epoch: int) -> dict[str, RewardRecord]:
    return {r.device: r for r in db.epoch_rewards(epoch)}


def test_hostile_answers_earn_nothing_and_honest_ones_do(tmp_path: Path, broker_url: str) -> None:
    """Two epochs over one object of five shards, one per holder:

    ``honest`` answers right both times, even after someone replays its old answer first;
    ``wrong`` flips a byte of its proof block both times (ok -> warned -> penalised);
    ``late`` answers after the deadline, then on time; ``replayer`` answers right, then only
    replays that answer; ``victim`` never answers, while ``forger`` (enrolled, holding nothing)
    sends proofs of the victim's challenge made from the victim's very blocks but signed with
    its own key (warned, then penalised for the missed answers).
    """

    async def scenario() -> None:
        holders = ("honest", "replayer", "wrong", "late", "victim")
        async with (
            running_hub(tmp_path, broker_url) as hub,
            agents(hub.broker_url, *holders, "forger") as a,
        ):
            db = db_of(hub)
            honest, replayer, wrong, late = a["honest"], a["replayer"], a["wrong"], a["late"]
            victim, forger = a["victim"], a["forger"]
            encoded = make_object(honest.identity, len(holders), seed=5)
            for index, name in enumerate(holders):
                a[name].holder.add_shard(encoded.shards[index])
            for agent in a.values():
                assert (await agent.join()).accepted
                await agent.status()
            # Receipts first, the manifest after: the hub parks them, then places them.
            for index, name in enumerate(holders):
                agent = a[name]
                receipt = agent.receipt(encoded.shards[index])
                await agent.publish(
                    Name.RECEIPTS, make_receipts(agent.identity, [receipt], [], now=0)
                )
                await agent.sync()
            kids = [a[name].identity.kid for name in holders]
            await honest.publish(
                Name.RECEIPTS,
                make_receipts(honest.identity, [], [upload(honest.identity, encoded, kids)], now=0),
            )
            await honest.sync()
            assert len(db.object_placements(encoded.cid_text)) == len(holders)
            counts = await Refusals(hub).start()

            # -- epoch 1 -------------------------------------------------------------------
            epoch_1 = asyncio.create_task(hub.run_epoch())
            challenge = {name: await a[name].challenge() for name in holders}
            number = challenge["honest"].epoch
            assert {c.epoch for c in challenge.values()} == {number}
            assert forger.inbox[Name.CHALLENGE].empty()

            first_answer = {
                "honest": honest.answer(challenge["honest"]),
                "replayer": replayer.answer(challenge["replayer"]),
            }
            for name, signed in first_answer.items():
                await a[name].publish(Name.PROOF, signed)
            await honest.publish(Name.PROOF, first_answer["honest"])  # the same answer twice
            await wrong.publish(Name.PROOF, wrong.answer(challenge["wrong"], flip=True))

            # The forger's answers to the victim's challenge, made from the victim's blocks.
            v_challenge = challenge["victim"]
            true_answer = victim.answer(v_challenge)
            by_forger = resign(true_answer, forger.identity)
            for_itself = proofs.answer(
                dataclasses.replace(v_challenge, holder_kid=forger.identity.kid),
                victim.holder.read_block,
                forger.identity,
            )
            await forger.publish(Name.PROOF, by_forger, on=victim.node_id)  # kid: forger
            await forger.publish(
                Name.PROOF, swap_kid(by_forger, victim.identity.kid), on=victim.node_id
            )
            await forger.publish(Name.PROOF, by_forger)  # names the victim, signed by the forger
            await forger.publish(Name.PROOF, for_itself)  # the forger has no challenge
            # Too big for the victim's challenge, in the victim's name: refused as a forgery
            # (it is not the victim's), not as an oversize answer that would use up its turn.
            fields = dict(cbor2.loads(cose.parse(true_answer).payload))
            bound = proofs.answer_size_bound(v_challenge, victim.holder.roots())
            fields[5] = [*fields[5], bytes(bound)]
            padded = cose.sign1(cbor.encode(fields), forger.identity)
            await forger.publish(
                Name.PROOF, swap_kid(padded, victim.identity.kid), on=victim.node_id
            )
            for agent in (honest, replayer, wrong, forger):
                await agent.sync()
            await counts.expect(BadSignature=4, ProofRejected=2)
            # Accepted: the first answers of honest, replayer and wrong; none of the refused.
            accepted = hub.metrics.registry.get_sample_value(
                "lichen_hub_messages_total", {"topic": str(Name.PROOF)}
            )
            assert accepted == 3, accepted
            victims = db.get_challenge(number, victim.node_id)
            assert victims is not None and victims.outcome is ChallengeOutcome.PENDING

            # The late one answers once its deadline has passed (the hub keeps the epoch open
            # a little longer, to record such answers as late rather than missing).
            late_challenge = challenge["late"]
            await asyncio.sleep(max(0.0, late_challenge.deadline + 0.05 - time.time()))
            late_answer = late.answer(late_challenge)
            await late.publish(Name.PROOF, late_answer)
            assert await within(epoch_1) == number

            rounds = {c.device: c for c in db.epoch_challenges(number)}
            assert rounds[honest.node_id].outcome is ChallengeOutcome.PASSED
            assert rounds[honest.node_id].items_passed == 1
            assert rounds[replayer.node_id].outcome is ChallengeOutcome.PASSED
            assert rounds[wrong.node_id].outcome is ChallengeOutcome.FAILED
            assert rounds[late.node_id].outcome is ChallengeOutcome.FAILED
            late_round = rounds[late.node_id]
            assert late_round.answered_at is not None
            assert late_round.deadline < late_round.answered_at < late_round.deadline + LATE_GRACE
            assert late_round.deadline == late_challenge.deadline
            assert rounds[victim.node_id].outcome is ChallengeOutcome.NO_ANSWER
            assert [i.reason for i in db.proof_items(number, wrong.node_id)] == ["bad block"]
            assert [i.reason for i in db.proof_items(number, late.node_id)] == ["late"]
            assert db.proof_items(number, victim.node_id) == []
            passed = hub.metrics.registry.get_sample_value(
                "lichen_hub_proofs_total", {"outcome": "passed"}
            )
            assert passed == 2  # honest's duplicate answer counted once

            paid = rewards_by_device(db, number)
            assert paid[honest.node_id].reward == paid[replayer.node_id].reward == POOL // 2
            for name in ("wrong", "late", "victim", "forger"):
                row = paid[a[name].node_id]
                assert row.reward == 0 and row.penalty == 0, row
            assert paid[forger.node_id].outcome == "not-challenged"
            for name, why in (("wrong", "bad block"), ("late", "late"), ("victim", "no answer")):
                row = paid[a[name].node_id]
                assert row.after.state is State.WARNED
                assert any(why in line for line in row.explanation), row.explanation
                assert any(line.startswith("warning:") for line in row.explanation)
            await counts.expect()

            # -- epoch 2 -------------------------------------------------------------------
            epoch_2 = asyncio.create_task(hub.run_epoch())
            challenge = {name: await a[name].challenge() for name in holders}
            second = challenge["honest"].epoch
            deadline_2 = challenge["honest"].deadline
            assert second == number + 1
            # Someone replays honest's answer of epoch 1 before honest answers: refused, and
            # it does not use up honest's turn.
            await forger.publish(Name.PROOF, first_answer["honest"], on=honest.node_id)
            # The replayer sends only its old answer.
            await replayer.publish(Name.PROOF, first_answer["replayer"])
            # The late agent's epoch-1 answer, arriving now: as stale as a replay.
            await late.publish(Name.PROOF, late_answer)
            for agent in (forger, replayer, late):
                await agent.sync()
            await counts.expect(ProofRejected=3)
            for name in ("honest", "replayer", "late"):
                pending = db.get_challenge(second, a[name].node_id)
                assert pending is not None and pending.outcome is ChallengeOutcome.PENDING
            await honest.publish(Name.PROOF, honest.answer(challenge["honest"]))
            await late.publish(Name.PROOF, late.answer(challenge["late"]))
            await wrong.publish(Name.PROOF, wrong.answer(challenge["wrong"], flip=True))
            assert await within(epoch_2) == second

            rounds = {c.device: c for c in db.epoch_challenges(second)}
            assert rounds[honest.node_id].outcome is ChallengeOutcome.PASSED
            assert rounds[late.node_id].outcome is ChallengeOutcome.PASSED
            assert rounds[replayer.node_id].outcome is ChallengeOutcome.NO_ANSWER
            assert rounds[wrong.node_id].outcome is ChallengeOutcome.FAILED
            assert rounds[victim.node_id].outcome is ChallengeOutcome.NO_ANSWER

            paid = rewards_by_device(db, second)
            assert paid[honest.node_id].reward == paid[late.node_id].reward == POOL // 2
            assert paid[late.node_id].after.state is State.OK  # a pass steps it back down
            assert paid[replayer.node_id].reward == 0
            assert paid[replayer.node_id].after.state is State.WARNED
            w, v = paid[wrong.node_id], paid[victim.node_id]
            assert (w.before.state, w.after.state) == (State.WARNED, State.PENALISED)
            assert (v.before.state, v.after.state) == (State.WARNED, State.PENALISED)
            assert (w.reward, w.penalty) == (0, PENALTY_ITEM)
            assert (v.reward, v.penalty) == (0, PENALTY_MISSED)
            assert any("penalised: 1 of 1 proofs failed (bad block x1)" in s for s in w.explanation)
            assert any("no answer" in line for line in v.explanation)

            # An answer after the epoch closed: nothing is open to take it.
            await late.publish(Name.PROOF, late.answer(challenge["late"]))
            await late.sync()
            await counts.expect(ProofRejected=1)

            # Over both epochs, no hostile input earned anything.
            for name in ("wrong", "victim", "forger"):
                assert sum(r.reward for r in db.device_rewards(a[name].node_id).items) == 0
            detail = await get_json(hub, f"/api/devices/{wrong.node_id}")
            assert detail["total_reward"] == 0 and detail["total_penalty"] == PENALTY_ITEM
            assert detail["warning"]["standing"]["state"] == "penalised"

            warned = (await get_json(hub, "/api/warnings"))["items"]
            assert [(w["node_id"], w["standing"]["state"]) for w in warned] == sorted(
                [
                    (wrong.node_id, "penalised"),
                    (victim.node_id, "penalised"),
                    (replayer.node_id, "warned"),
                ],
                key=lambda pair: (pair[1] != "penalised", pair[0]),
            )
            reasons = {w["node_id"]: " ".join(w["reasons"]) for w in warned}
            assert "bad block" in reasons[wrong.node_id]
            assert "no answer" in reasons[victim.node_id]
            assert "no answer" in reasons[replayer.node_id]

            # The ledger: two signed, chained records, verified here and by the API.
            records = [entry.record for entry in db.ledger()]
            summary = ledger.verify_ledger(records, HUB_KEY.public)
            assert (summary.records, summary.first_epoch, summary.last_epoch) == (
                2,
                number,
                second,
            )
            assert summary.total_reward == 2 * POOL
            assert summary.total_penalty == PENALTY_ITEM + PENALTY_MISSED
            verified = await get_json(hub, "/api/ledger/verify")
            assert verified["verified"] is True and verified["records"] == 2
            assert verified["summary"]["head"] == summary.head.hex()
            # The deadline recorded is the one signed into the challenges, and the hub kept the
            # epoch open LATE_GRACE seconds past it.
            for epoch, signed_deadline in ((number, late_challenge.deadline), (second, deadline_2)):
                closed = db.get_epoch(epoch)
                assert closed is not None and closed.deadline == signed_deadline
                assert closed.closed_at is not None
                assert closed.closed_at >= signed_deadline + LATE_GRACE

    asyncio.run(scenario())
