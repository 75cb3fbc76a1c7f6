"""The rewards ledger: signed, hash-chained epoch records, and every way to tamper with them."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import cbor2
import pytest

from lichen import cbor, cose, ledger, wire
from lichen.errors import (
    BadSignature,
    IntegrityError,
    LocalProtocolError,
    MalformedMessage,
    UnsupportedVersion,
)
from lichen.identity import Identity
from lichen.ledger import ChainHead, LedgerError, make_record, open_record, verify_ledger
from lichen.rewards import (
    DeviceProof,
    EpochRewards,
    ProofItem,
    RewardPolicy,
    Standing,
    State,
    epoch_rewards,
)

HUB = Identity(bytes(range(32)))
OTHER = Identity(bytes(range(1, 33)))
POLICY = RewardPolicy(pool=1000, penalty_per_failed_item=10, penalty_per_missed_answer=50)
START = 1_700_000_000
LENGTH = 60


def passing(blocks: int = 2) -> DeviceProof:
    return DeviceProof(tuple(ProofItem(f"s{i}", 1024, True) for i in range(blocks)))


def failing() -> DeviceProof:
    return DeviceProof((ProofItem("s0", 1024, True), ProofItem("s1", 1024, False, "bad block")))


def chain(epochs: int = 5) -> tuple[list[bytes], list[EpochRewards]]:
    """``epochs`` records from epoch 1: a passes, b fails every epoch, c passes with 3 blocks."""
    records: list[bytes] = []
    results: list[EpochRewards] = []
    standings: dict[str, Standing] = {}
    previous: ChainHead | None = None
    for epoch in range(1, epochs + 1):
        proofs = {"a": passing(), "b": failing(), "c": passing(3)}
        result = epoch_rewards(epoch, LENGTH, POLICY, proofs, standings)
        started = START + (epoch - 1) * LENGTH
        record = make_record(HUB, previous, result, started, started + LENGTH)
        previous = ChainHead(epoch, started, ledger.record_hash(record))
        records.append(record)
        results.append(result)
        standings = result.standings()
    return records, results


RECORDS, RESULTS = chain()


def payload_of(record: bytes) -> dict[Any, Any]:
    message = cose.parse(record)
    return dict(cbor2.loads(message.payload))


def resign(
    record: bytes, change: Callable[[dict[Any, Any]], None], signer: Identity = HUB
) -> bytes:
    """The record with its payload changed by ``change`` and signed again (a lying hub)."""
    payload = payload_of(record)
    change(payload)
    return cose.sign1(cbor.encode(payload), signer)


def bad_epoch(records: list[bytes], **kwargs: Any) -> LedgerError:
    with pytest.raises(LedgerError) as caught:
        verify_ledger(records, HUB.public, **kwargs)
    return caught.value


# -- the good path ----------------------------------------------------------------------------


def test_golden_first_record() -> None:
    proofs = {"a": passing(), "b": DeviceProof.no_answer()}
    result = epoch_rewards(3, LENGTH, POLICY, proofs, {"b": Standing(State.WARNED, 2)})
    record = make_record(HUB, None, result, START, START + LENGTH)
    assert record.hex() == GOLDEN_RECORD
    assert open_record(record, HUB.public).rewards == result


def test_record_round_trips_to_the_same_rewards() -> None:
    for data, result in zip(RECORDS, RESULTS, strict=True):
        record = open_record(data, HUB.public)
        assert record.rewards == result
        assert record.digest == hashlib.sha256(data).digest()
        assert record.hub_kid == HUB.kid
        assert record.closed - record.started == LENGTH
    first, second = (open_record(r, HUB.public) for r in RECORDS[:2])
    assert first.previous == ledger.ZERO_HASH
    assert second.previous == first.digest


def test_nested_rewards_are_exactly_the_rewards_encoding() -> None:
    nested = payload_of(RECORDS[0])[7]
    assert cbor.encode(nested) == RESULTS[0].encode()


def test_a_whole_ledger_verifies() -> None:
    summary = verify_ledger(RECORDS, HUB.public)
    assert summary.records == 5
    assert (summary.first_epoch, summary.last_epoch) == (1, 5)
    assert summary.head == hashlib.sha256(RECORDS[-1]).digest()
    assert summary.total_reward == sum(r.total_reward for r in RESULTS)
    assert summary.total_penalty == sum(r.total_penalty for r in RESULTS) > 0
    assert summary.hub_node_id == HUB.node_id
    assert verify_ledger(iter(RECORDS), HUB.public, head=summary.head) == summary


def test_an_empty_ledger_verifies() -> None:
    summary = verify_ledger([], HUB.public)
    assert (summary.records, summary.first_epoch, summary.head) == (0, None, ledger.ZERO_HASH)


def test_times_are_whole_seconds() -> None:
    record = open_record(make_record(HUB, None, RESULTS[0], 10.9, 70.2), HUB.public)
    assert (record.started, record.closed) == (10, 70)


def test_an_evicted_device_may_start_again() -> None:
    policy = RewardPolicy(pool=100, warn_after=1, penalise_after=2, evict_after=3)
    first = epoch_rewards(1, LENGTH, policy, {"a": passing()}, {"b": Standing(State.EVICTED, 3)})
    second = epoch_rewards(2, LENGTH, policy, {"a": passing(), "b": passing()}, {})
    one = make_record(HUB, None, first, START, START + 1)
    two = make_record(HUB, open_record(one, HUB.public).head, second, START + 1, START + 2)
    assert verify_ledger([one, two], HUB.public).records == 2


# -- tampering --------------------------------------------------------------------------------


def test_a_removed_record_is_named() -> None:
    error = bad_epoch(RECORDS[:2] + RECORDS[3:])
    assert (error.epoch, error.position) == (4, 2)
    assert "epoch 3 missing" in str(error)


def test_removed_first_records_are_named() -> None:
    error = bad_epoch(RECORDS[2:])
    assert (error.epoch, error.position) == (3, 0)
    assert "earlier records are missing" in str(error)


def test_removed_newest_records_need_the_published_head() -> None:
    head = verify_ledger(RECORDS, HUB.public).head
    assert verify_ledger(RECORDS[:-1], HUB.public).last_epoch == 4
    error = bad_epoch(RECORDS[:-1], head=head)
    assert error.epoch == 5
    assert "newer records are missing" in str(error)
    assert bad_epoch([], head=head).epoch is None


def test_reordered_records_are_named() -> None:
    error = bad_epoch([RECORDS[0], RECORDS[2], RECORDS[1], *RECORDS[3:]])
    assert error.epoch == 3
    error = bad_epoch([RECORDS[0], RECORDS[1], RECORDS[1]])
    assert error.epoch == 2
    assert "out of order or repeated" in str(error)


def test_an_altered_record_is_named() -> None:
    record = bytearray(RECORDS[2])
    at = bytes(record).index(b"credited")
    record[at] ^= 0x20  # "Credited": one changed letter in an explanation
    error = bad_epoch([*RECORDS[:2], bytes(record), *RECORDS[3:]])
    assert (error.epoch, error.position) == (3, 2)
    assert "altered or forged" in str(error)
    assert isinstance(error.__cause__, BadSignature)


def test_a_record_forged_by_another_key_is_named() -> None:
    forged = resign(RECORDS[1], lambda p: None, signer=OTHER)
    error = bad_epoch([RECORDS[0], forged, *RECORDS[2:]])
    assert error.epoch == 2
    assert isinstance(error.__cause__, BadSignature)


def test_a_rebuilt_chain_still_fails_without_the_key() -> None:
    # Change epoch 2 and fix the next record's hash to match: without the hub's key the
    # forger must sign both with another key, and the first of them is named.
    altered = resign(RECORDS[1], lambda p: p.__setitem__(3, START + 1), signer=OTHER)

    def relink(p: dict[Any, Any]) -> None:
        p[5] = hashlib.sha256(altered).digest()

    error = bad_epoch([RECORDS[0], altered, resign(RECORDS[2], relink, signer=OTHER)])
    assert error.epoch == 2


def test_a_garbage_record_is_named_by_position() -> None:
    error = bad_epoch([RECORDS[0], b"\xff\x00"])
    assert (error.epoch, error.position) == (None, 1)
    assert "unreadable" in str(error)
    assert isinstance(error.__cause__, MalformedMessage)


def test_a_broken_hash_link_is_named() -> None:
    relinked = resign(RECORDS[2], lambda p: p.__setitem__(5, bytes(range(32))))
    error = bad_epoch([*RECORDS[:2], relinked])
    assert error.epoch == 3
    assert "does not chain to the record of epoch 2" in str(error)


def test_a_record_starting_before_its_predecessor_is_named() -> None:
    def earlier(p: dict[Any, Any]) -> None:
        p[3] = START - 100
        p[5] = hashlib.sha256(RECORDS[0]).digest()

    error = bad_epoch([RECORDS[0], resign(RECORDS[1], earlier)])
    assert error.epoch == 2
    assert "starts before epoch 1" in str(error)


def test_a_standing_that_does_not_carry_over_is_named() -> None:
    def forgive(p: dict[Any, Any]) -> None:
        p[7][7][1][1] = ["ok", 0]  # device b's standing before epoch 2, really warned/1

    error = bad_epoch([RECORDS[0], resign(RECORDS[1], forgive)])
    assert error.epoch == 2
    assert "device b starts as ok" in str(error)


# -- figures that do not add up, under a valid signature ---------------------------------------


def device(p: dict[Any, Any], name: str) -> dict[int, Any]:
    found: dict[int, Any] = next(d for d in p[7][7] if d[0] == name)
    return found


def set_reward(name: str, value: int) -> Callable[[dict[Any, Any]], None]:
    return lambda p: device(p, name).__setitem__(7, value)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda p: p[7].__setitem__(5, 999), "rewards add up to 1000, the record says 999"),
        (set_reward("a", 500), "device a paid 500, its share of the pool is 333"),
        (lambda p: p[7].__setitem__(6, 1), "penalties add up to 0, the record says 1"),
        (lambda p: device(p, "a").__setitem__(8, 5), "device a charged 5, not 0"),
        (lambda p: p[7][7].reverse(), "not sorted by node id"),
        (lambda p: p[7].__setitem__(2, 9), "carries the rewards of epoch 9"),
        (lambda p: p.__setitem__(4, START - 1), "closed before it started"),
    ],
)
def test_figures_that_do_not_add_up_are_refused(
    change: Callable[[dict[Any, Any]], None], why: str
) -> None:
    forged = resign(RECORDS[0], change)
    with pytest.raises(IntegrityError, match=why):
        open_record(forged, HUB.public)
    assert bad_epoch([forged]).position == 0


def test_a_penalised_device_cannot_be_paid() -> None:
    assert RESULTS[2].device("b").after.state is State.PENALISED
    forged = resign(RECORDS[2], set_reward("b", 1))
    with pytest.raises(IntegrityError, match="device b was paid without earning"):
        open_record(forged, HUB.public)


def test_a_penalty_other_than_the_policy_is_refused() -> None:
    # Epoch 3 leaves b penalised: it is charged 10 per failed item, 1 item.
    assert RESULTS[2].device("b").penalty == 10
    forged = resign(RECORDS[2], lambda p: device(p, "b").__setitem__(8, 20))
    with pytest.raises(IntegrityError, match="device b charged 20, not 10"):
        open_record(forged, HUB.public)


def test_an_evicted_device_cannot_be_paid_or_moved() -> None:
    result = epoch_rewards(1, LENGTH, POLICY, {"a": passing()}, {"e": Standing(State.EVICTED, 6)})
    record = make_record(HUB, None, result, START, START + 1)
    forged = resign(record, lambda p: device(p, "e").__setitem__(2, ["ok", 0]))
    with pytest.raises(IntegrityError, match="evicted device e changed standing"):
        open_record(forged, HUB.public)


def test_a_record_naming_another_hub_is_refused() -> None:
    forged = resign(RECORDS[0], lambda p: p.__setitem__(6, OTHER.kid))
    with pytest.raises(BadSignature, match="another hub"):
        open_record(forged, HUB.public)


# -- malformed records ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.__setitem__(99, 1),  # unknown field
        lambda p: p.__delitem__(5),  # missing previous hash
        lambda p: p.__setitem__(5, b"short"),
        lambda p: p.__setitem__(1, int(wire.Kind.EPOCH_REWARDS)),  # wrong kind
        lambda p: p[7].__setitem__(1, int(wire.Kind.LEDGER_RECORD)),  # nested wrong kind
        lambda p: p[7][4].__setitem__(3, 0),  # warn_after 0: not a policy
        lambda p: p[7].__setitem__(3, 0),  # epoch of no length
        lambda p: device(p, "a").__setitem__(3, "great"),  # unknown outcome
        lambda p: device(p, "a").__setitem__(1, ["fine", 0]),  # unknown state
        lambda p: device(p, "a").__setitem__(1, ["ok"]),
        lambda p: device(p, "a").__setitem__(9, [1]),  # explanation lines are text
        lambda p: device(p, "a").__setitem__(9, ["x" * 513]),
        lambda p: device(p, "a").__setitem__(0, ""),
        lambda p: p[7][7].append("not a map"),
    ],
)
def test_malformed_records_are_refused(change: Callable[[dict[Any, Any]], None]) -> None:
    with pytest.raises(MalformedMessage):
        open_record(resign(RECORDS[0], change), HUB.public)


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(UnsupportedVersion):
        open_record(resign(RECORDS[0], lambda p: p.__setitem__(0, 2)), HUB.public)


def test_non_deterministic_cbor_is_refused() -> None:
    # cbor2 writes keys in insertion order when not canonical: put key 7 first.
    fields = payload_of(RECORDS[0])
    payload = cbor2.dumps({7: fields.pop(7), **fields})
    with pytest.raises(MalformedMessage, match="deterministic"):
        open_record(cose.sign1(payload, HUB), HUB.public)


def test_truncated_and_oversize_records_are_refused() -> None:
    with pytest.raises(MalformedMessage):
        open_record(RECORDS[0][:-1], HUB.public)
    with pytest.raises(MalformedMessage, match="exceeds"):
        open_record(b"\x00" * (ledger.MAX_RECORD_SIZE + 257), HUB.public)


# -- misuse -----------------------------------------------------------------------------------


def test_make_record_refuses_bad_calls() -> None:
    head = open_record(RECORDS[0], HUB.public).head
    assert head == ChainHead(1, START, ledger.record_hash(RECORDS[0]))
    with pytest.raises(LocalProtocolError, match="cannot follow"):
        make_record(HUB, head, RESULTS[2], START, START)
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        make_record(HUB, dataclasses.replace(head, digest=b"short"), RESULTS[1], START, START)
    # make_record trusts the head its hub kept; chaining onto another hub's record is caught
    # where chains are checked.
    foreign = make_record(OTHER, head, RESULTS[1], START, START)
    with pytest.raises(LedgerError):
        verify_ledger([RECORDS[0], foreign], HUB.public)
    with pytest.raises(LocalProtocolError, match="close before"):
        make_record(HUB, None, RESULTS[0], START, START - 1)
    with pytest.raises(LocalProtocolError, match="starts before"):
        make_record(HUB, head, RESULTS[1], START - 1, START)
    for bad in (float("nan"), -1, True):
        with pytest.raises(LocalProtocolError):
            make_record(HUB, None, RESULTS[0], bad, START)
    cooked = dataclasses.replace(RESULTS[0], total_reward=5)
    with pytest.raises(LocalProtocolError, match="rewards add up"):
        make_record(HUB, None, cooked, START, START)


# COSE_Sign1 (tag 18) by HUB over {0: v1, 1: kind LEDGER_RECORD, 2: epoch 3,
#  3: started 1700000000, 4: closed 1700000060, 5: 32 zero bytes, 6: HUB's node id,
#  7: the epoch-rewards map of tests/unit/test_rewards.py's golden vector}
GOLDEN_RECORD = (
    "d28443a10127a1045456475aa75463474c0285df5dbf2bcab73da65135590215a80001010e020303"
    "1a6553f100041a6553f13c0558200000000000000000000000000000000000000000000000000000"
    "000000000000065456475aa75463474c0285df5dbf2bcab73da6513507a800010108020303183c04"
    "a6001903e8010a021832030104030506051903e80618320782aa0061610182626f6b000282626f6b"
    "0003667061737365640419080005020600071903e808000983783970726f7665642032206f662032"
    "2073616d706c656420626c6f636b73206f7665722032207368617264732028322e30204b69422068"
    "656c64297830637265646974656420322e30204b694220666f722036302073203d203132322c3838"
    "3020627974652d7365636f6e647378237368617265203130302e303025206f6620706f6f6c20312c"
    "303030203d20312c303030aa0061620182667761726e65640202826970656e616c69736564030369"
    "6e6f2d616e737765720400050006000700081832098478236e6f20616e7377657220746f20746869"
    "732065706f63682773206368616c6c656e6765784770656e616c697365643a206e6f20616e737765"
    "723b2033206661696c696e672065706f63687320696e206120726f773b206576696374696f6e2061"
    "74203620696e206120726f777829736861726520666f726665697465643b2070656e616c74792066"
    "6f72206e6f20616e73776572203530781c7374616e64696e67207761726e6564202d3e2070656e61"
    "6c697365645840fbe97ecd338ab9b5849ff97320836909850b6d7655152c64d01bdc9d4ac1e6af33"
    "73252c6b8581498577b89922fc842d7d9b9baef948628909c0b4962a261f05"
)
