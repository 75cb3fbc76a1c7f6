"""Epoch audits: planning challenges, signing them, and judging every kind of answer."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import cbor2
import pytest

from lichen import audit, cbor, cid, cose, proofs, wire
from lichen.audit import AuditTarget, Placement, judge_answer, open_challenge, plan
from lichen.errors import BadSignature, LocalProtocolError, MalformedMessage
from lichen.identity import Identity
from lichen.proofs import Challenge
from lichen.rewards import DeviceProof, RewardPolicy, epoch_rewards
from lichen.testing.holder import MemoryHolder
from tests.forge import sign_as

HUB = Identity(bytes(range(32)))
DEVICE = Identity(bytes(range(1, 33)))
OTHER = Identity(bytes(range(2, 34)))
BLOCK = 512
EPOCH = 7
DEADLINE = 1_700_000_060
NONCE = bytes(range(32))


class Device:
    """A device's real shards: random bodies under real Merkle trees, and how it answers."""

    def __init__(self, identity: Identity, shards: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.identity = identity
        self.holder = MemoryHolder()
        for i in range(shards):
            body = rng.randbytes(rng.randrange(1, 8 * BLOCK))
            self.holder.add(cid.of(rng.randbytes(16)), i % 10, body, BLOCK)
        self.placements = self.holder.placements()

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    def answer(self, challenge: Challenge) -> bytes:
        return proofs.answer(challenge, self.holder.read_block, self.identity)


DEV = Device(DEVICE, 60)


def challenge_for(device: Device = DEV, epoch: int = EPOCH, nonce: bytes = NONCE) -> Challenge:
    return plan(epoch, {device.node_id: device.placements}, {device.node_id: nonce}, DEADLINE)[
        device.node_id
    ]


def verdict(answer: tuple[bytes, float] | None, challenge: Challenge | None = None) -> Any:
    return judge_answer(challenge or challenge_for(), answer, DEVICE.public, DEV.placements)


# -- placements and targets -------------------------------------------------------------------


def test_placement_knows_its_leaves_and_key() -> None:
    p = Placement(cid.of(b"x"), 3, bytes(32), 512, 1025)
    assert p.leaf_count == 3
    assert p.key == (cid.of(b"x"), 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"object_cid": b"not a cid"},
        {"shard_index": 256},
        {"shard_index": True},
        {"root": bytes(31)},
        {"block_size": 1000},
        {"piece_size": 0},
    ],
)
def test_bad_placements_are_refused(kwargs: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "object_cid": cid.of(b"x"),
        "shard_index": 0,
        "root": bytes(32),
        "block_size": 512,
        "piece_size": 100,
    }
    with pytest.raises(LocalProtocolError):
        Placement(**{**fields, **kwargs})


def test_default_target_samples_44_shards() -> None:
    assert AuditTarget().shards_to_sample == 44
    assert AuditTarget(0.02, 0.99).shards_to_sample == 228
    with pytest.raises(LocalProtocolError, match="more than the 256"):
        AuditTarget(0.01, 0.99)
    with pytest.raises(LocalProtocolError):
        AuditTarget(blocks_per_shard=0)
    with pytest.raises(LocalProtocolError):
        AuditTarget(loss_fraction=0.0)


# -- planning ---------------------------------------------------------------------------------


def test_plan_samples_44_distinct_shards_one_block_each() -> None:
    challenge = challenge_for()
    assert (challenge.epoch, challenge.nonce, challenge.deadline) == (EPOCH, NONCE, DEADLINE)
    assert challenge.holder_kid == DEVICE.kid
    keys = {(i.object_cid, i.shard_index) for i in challenge.items}
    assert len(keys) == len(challenge.items) == 44
    assert keys <= {p.key for p in DEV.placements}
    assert all(len(i.block_indices) == 1 for i in challenge.items)


def test_plan_asks_every_shard_of_a_small_holder_and_skips_empty_ones() -> None:
    small = Device(OTHER, 5)
    challenges = plan(
        1,
        {small.node_id: small.placements, DEVICE.node_id: []},
        {small.node_id: NONCE},
        DEADLINE,
        AuditTarget(blocks_per_shard=3),
    )
    assert list(challenges) == [small.node_id]
    assert len(challenges[small.node_id].items) == 5
    for item in challenges[small.node_id].items:
        leaves = small.holder[item.object_cid, item.shard_index].leaf_count
        assert len(item.block_indices) == min(3, leaves)


def test_plan_follows_the_nonce_not_the_order_of_placements() -> None:
    shuffled = list(DEV.placements)
    random.Random(5).shuffle(shuffled)
    again = plan(EPOCH, {DEV.node_id: shuffled + shuffled[:3]}, {DEV.node_id: NONCE}, DEADLINE)
    assert again[DEV.node_id] == challenge_for()
    other = challenge_for(nonce=bytes(32))
    assert {i.object_cid for i in other.items} != {i.object_cid for i in challenge_for().items}


def test_plan_refuses_bad_calls() -> None:
    with pytest.raises(LocalProtocolError, match="no nonce"):
        plan(1, {DEV.node_id: DEV.placements}, {}, DEADLINE)
    with pytest.raises(LocalProtocolError, match="not a node id"):
        plan(1, {"device-1": DEV.placements}, {"device-1": NONCE}, DEADLINE)
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        plan(1, {DEV.node_id: DEV.placements}, {DEV.node_id: b"short"}, DEADLINE)
    twin = dataclasses.replace(DEV.placements[0], root=bytes(32))
    with pytest.raises(LocalProtocolError, match="two different roots"):
        plan(1, {DEV.node_id: [*DEV.placements, twin]}, {DEV.node_id: NONCE}, DEADLINE)


# -- signed challenges ------------------------------------------------------------------------

SMALL_CHALLENGE = Challenge(
    3, NONCE, DEVICE.kid, DEADLINE, (proofs.ChallengeItem(cid.of(b"o"), 2, (0, 5)),)
)


def test_golden_signed_challenge() -> None:
    signed = audit.sign_challenge(SMALL_CHALLENGE, HUB)
    assert signed.hex() == GOLDEN_SIGNED_CHALLENGE
    assert open_challenge(signed, HUB.public, holder_kid=DEVICE.kid) == SMALL_CHALLENGE


def test_a_challenge_forged_or_altered_is_refused() -> None:
    with pytest.raises(BadSignature):
        open_challenge(audit.sign_challenge(SMALL_CHALLENGE, OTHER), HUB.public)
    signed = bytearray(audit.sign_challenge(SMALL_CHALLENGE, HUB))
    signed[-70] ^= 1  # a payload byte: the deadline
    with pytest.raises(BadSignature):
        open_challenge(bytes(signed), HUB.public)


def test_a_challenge_for_another_node_is_refused() -> None:
    with pytest.raises(BadSignature, match="another node"):
        open_challenge(audit.sign_challenge(SMALL_CHALLENGE, HUB), HUB.public, holder_kid=OTHER.kid)


def test_malformed_signed_challenges_are_refused() -> None:
    signed = audit.sign_challenge(SMALL_CHALLENGE, HUB)
    with pytest.raises(MalformedMessage):
        open_challenge(signed[:-1], HUB.public)
    with pytest.raises(MalformedMessage, match="exceeds"):
        open_challenge(b"\x00" * (audit.SIGNED_CHALLENGE_LIMITS.max_size + 1), HUB.public)
    receipt_like = cose.sign1(wire.encode(wire.Kind.RECEIPT, {2: 1}), HUB)
    with pytest.raises(MalformedMessage, match="CHALLENGE"):
        open_challenge(receipt_like, HUB.public)
    with pytest.raises(MalformedMessage):
        open_challenge(cose.mac0(SMALL_CHALLENGE.encode(), bytes(32), HUB.kid), HUB.public)


# -- judging ----------------------------------------------------------------------------------


def test_an_honest_answer_passes_every_item() -> None:
    challenge = challenge_for()
    result = verdict((DEV.answer(challenge), DEADLINE - 1), challenge)
    assert (result.node_id, result.epoch, result.answered, result.late) == (
        DEV.node_id,
        EPOCH,
        True,
        False,
    )
    assert (result.passed, result.failed, result.rejected) == (44, 0, "")
    assert result.held_bytes == sum(p.piece_size for p in DEV.placements)
    proof = result.proof
    assert proof.held_bytes == result.held_bytes
    assert len(proof.items) == 44 and all(item.passed for item in proof.items)
    first = challenge.items[0]
    assert proof.items[0].shard == f"{first.object_cid.hex()}/{first.shard_index}"
    assert proof.items[0].shard_bytes == len(DEV.holder[first.object_cid, first.shard_index].body)


def test_no_answer_is_a_missed_answer_with_the_bytes_held() -> None:
    result = verdict(None)
    assert not result.answered and result.items == ()
    assert result.proof == DeviceProof.no_answer(result.held_bytes)


def test_a_late_answer_fails_every_item() -> None:
    challenge = challenge_for()
    result = verdict((DEV.answer(challenge), DEADLINE + 0.5), challenge)
    assert result.late and result.failed == 44
    assert {item.reason for item in result.proof.items} == {"late"}


def test_lost_shards_fail_as_missing() -> None:
    cheat = Device(DEVICE, 60)
    challenge = challenge_for(cheat)
    asked = [(i.object_cid, i.shard_index) for i in challenge.items]
    cheat.holder.lose(asked[:3])
    result = judge_answer(
        challenge, (cheat.answer(challenge), 0.0), DEVICE.public, cheat.placements
    )
    assert result.failed == 3
    assert [i.reason for i in result.items[:4]] == ["missing"] * 3 + ["ok"]
    assert [i.reason for i in result.proof.items[:3]] == ["missing"] * 3


def test_blocks_made_up_fail_as_bad_blocks() -> None:
    challenge = challenge_for()

    def made_up(object_cid: bytes, index: int, block: int) -> Any:
        real = DEV.holder.read_block(object_cid, index, block)
        return b"\x00" * len(real[0]), real[1]

    answer = proofs.answer(challenge, made_up, DEVICE)
    result = verdict((answer, 0.0), challenge)
    assert {item.reason for item in result.items} == {"bad block"}


def rejected(answer: bytes, challenge: Challenge | None = None) -> Any:
    result = verdict((answer, 0.0), challenge)
    assert result.answered and not result.late and result.passed == 0
    assert len(result.proof.items) == 44
    assert result.rejected
    reasons = {item.reason for item in result.items}
    assert len(reasons) == 1
    assert {item.reason for item in result.proof.items} == reasons
    return reasons.pop()


def test_a_replayed_answer_fails_every_item() -> None:
    last_epoch = challenge_for(epoch=EPOCH - 1, nonce=bytes(32))
    assert rejected(DEV.answer(last_epoch)) == audit.REPLAYED


def test_an_answer_signed_by_another_key_fails_every_item() -> None:
    challenge = challenge_for()
    forged = dataclasses.replace(challenge, holder_kid=OTHER.kid)
    answer = proofs.answer(forged, DEV.holder.read_block, OTHER)
    assert rejected(answer, challenge) == audit.BAD_SIGNATURE


def test_an_answer_naming_another_holder_fails_every_item() -> None:
    challenge = challenge_for()
    fields = dict(cbor2.loads(cose.parse(DEV.answer(challenge), proofs_limits()).payload))
    fields[4] = OTHER.kid
    answer = cose.sign1(cbor.encode(fields), DEVICE)
    assert rejected(answer, challenge) == audit.WRONG_HOLDER


def test_garbage_and_oversize_answers_fail_every_item() -> None:
    assert rejected(b"\xa0") == audit.MALFORMED
    assert rejected(cose.sign1(b"\xa0", DEVICE)) == audit.MALFORMED
    assert rejected(b"\x00" * 10_000_000) == audit.OVERSIZE
    challenge = challenge_for()
    fields = dict(cbor2.loads(cose.parse(DEV.answer(challenge), proofs_limits()).payload))
    fields[5] = fields[5][:-1]  # one item short
    assert rejected(cose.sign1(cbor.encode(fields), DEVICE), challenge) == audit.MALFORMED


def test_an_oversize_answer_counts_against_the_device_only_if_it_signed_it() -> None:
    challenge = challenge_for()
    padding = bytes(proofs.answer_size_bound(challenge, {}) + 1)
    assert rejected(cose.sign1(padding, DEVICE), challenge) == audit.OVERSIZE
    assert not verdict((cose.sign1(padding, DEVICE), 0.0), challenge).forged
    forged = sign_as(padding, OTHER, DEVICE.kid)
    assert rejected(forged, challenge) == audit.BAD_SIGNATURE
    assert verdict((forged, 0.0), challenge).forged


def proofs_limits() -> cbor.Limits:
    return cbor.Limits(max_size=10_000_000, max_items=100_000)


def test_items_whose_placement_went_away_are_not_counted() -> None:
    challenge = challenge_for()
    answer = DEV.answer(challenge)
    gone = (challenge.items[0].object_cid, challenge.items[0].shard_index)
    remaining = [p for p in DEV.placements if p.key != gone]
    result = judge_answer(challenge, (answer, 0.0), DEVICE.public, remaining)
    assert result.items[0].reason == "unknown shard"
    assert (result.passed, result.failed, len(result.proof.items)) == (43, 0, 43)
    assert not result.items[0].judged and result.judged == result.items[1:]
    assert not result.forged


def test_judge_feeds_the_rewards() -> None:
    cheat = Device(OTHER, 60, seed=2)
    placements = {DEV.node_id: DEV.placements, cheat.node_id: cheat.placements}
    nonces = {DEV.node_id: NONCE, cheat.node_id: bytes(32)}
    challenges = plan(EPOCH, placements, nonces, DEADLINE)
    cheat.holder.lose((i.object_cid, i.shard_index) for i in challenges[cheat.node_id].items[:1])
    answers = {DEV.node_id: (DEV.answer(challenges[DEV.node_id]), 1.0)}
    answers[cheat.node_id] = (cheat.answer(challenges[cheat.node_id]), 1.0)
    keys = {DEV.node_id: DEVICE.public, cheat.node_id: OTHER.public}
    result = {
        node: judge_answer(challenge, answers[node], keys[node], placements[node]).proof
        for node, challenge in challenges.items()
    }
    assert all(item.passed for item in result[DEV.node_id].items)
    assert sum(not item.passed for item in result[cheat.node_id].items) == 1
    rewards = epoch_rewards(EPOCH, 3600, RewardPolicy(pool=100), result, {})
    assert rewards.device(DEV.node_id).outcome == "passed"
    assert rewards.device(cheat.node_id).outcome == "failed"
    assert "missing x1" in " ".join(rewards.device(cheat.node_id).explanation)
    # A device that sent nothing did not answer; judging it under another key is a bug.
    silent = judge_answer(challenges[DEV.node_id], None, DEVICE.public, DEV.placements)
    assert not silent.proof.answered
    with pytest.raises(LocalProtocolError):
        judge_answer(challenges[DEV.node_id], None, OTHER.public, DEV.placements)


def test_judging_is_the_same_for_placements_in_any_order() -> None:
    challenge = challenge_for()
    answer = (DEV.answer(challenge), 0.0)
    backwards: Sequence[Placement] = DEV.placements[::-1]
    a = judge_answer(challenge, answer, DEVICE.public, DEV.placements)
    b = judge_answer(challenge, answer, DEVICE.public, backwards)
    assert a == b


# COSE_Sign1 by HUB over {0: 1, 1: CHALLENGE, 2: epoch 3, 3: NONCE, 4: DEVICE node id,
#  5: DEADLINE, 6: [[cid of "o", shard 2, blocks [0, 5]]]}
GOLDEN_SIGNED_CHALLENGE = (
    "d28443a10127a1045456475aa75463474c0285df5dbf2bcab73da651355873a70001010602030358"
    "20000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f045465b60673d6"
    "ed884bf01c2c222d82ada0740f29ac051a6553f13c06818358240155122065c74c15a686187bb6bb"
    "f9958f494fc6b80068034a659a9ad44991b08c58f2d2028200055840847a106011dee2015df69500"
    "4af585ca2718a66ed449b44839a009150d70b0bfcba253f72e3257280c197e8177243c182647fd18"
    "9c7e60e6c26531c413b47102"
)
