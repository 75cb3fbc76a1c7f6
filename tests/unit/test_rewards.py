"""Epoch rewards: exact pool sharing, warnings before penalties, explanations, ledger bytes."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lichen import cbor, wire
from lichen.errors import LocalProtocolError
from lichen.rewards import (
    MAX_ITEMS,
    DeviceProof,
    EpochRewards,
    Outcome,
    ProofItem,
    RewardPolicy,
    Standing,
    State,
    epoch_rewards,
    split_pool,
)

MIB = 2**20
HOUR = 3600
POLICY = RewardPolicy(
    pool=1_000_000, penalty_per_failed_item=5_000, penalty_per_missed_answer=20_000
)


def blocks(shards: int, count: int = 12, failed: int = 0, reason: str = "bad block") -> DeviceProof:
    """``count`` sampled blocks over ``shards`` shards of 16 MiB; the first ``failed`` are bad."""
    return DeviceProof(
        tuple(
            ProofItem(f"shard-{i % shards}", 16 * MIB, i >= failed, "" if i >= failed else reason)
            for i in range(count)
        )
    )


def run(
    proofs: dict[str, DeviceProof],
    previous: dict[str, Standing] | None = None,
    policy: RewardPolicy = POLICY,
) -> EpochRewards:
    return epoch_rewards(7, HOUR, policy, proofs, previous or {})


# -- sharing the pool -------------------------------------------------------------------------


def test_pool_is_shared_in_proportion_to_proven_bytes() -> None:
    result = run({"a": blocks(1), "b": blocks(3)})
    assert result.device("a").reward == 250_000
    assert result.device("b").reward == 750_000
    assert result.device("b").proven_bytes == 48 * MIB
    assert result.device("b").byte_seconds == 48 * MIB * HOUR
    assert result.total_reward == 1_000_000
    assert result.total_byte_seconds == 64 * MIB * HOUR


def test_partial_pass_is_credited_in_proportion() -> None:
    result = run({"a": blocks(3, failed=3), "b": blocks(3)})
    a = result.device("a")
    assert (a.items_passed, a.items_failed) == (9, 3)
    assert a.proven_bytes == 36 * MIB  # 48 MiB x 9/12
    # Exact shares 428,571.43 and 571,428.57: the spare unit goes to the larger remainder.
    assert a.reward == 428_571
    assert result.device("b").reward == 571_429
    assert result.total_reward == 1_000_000


def test_held_bytes_from_receipts_override_the_sampled_shards() -> None:
    proof = DeviceProof(blocks(2).items, held_bytes=100 * MIB)
    result = run({"a": proof, "b": blocks(2)})
    assert result.device("a").proven_bytes == 100 * MIB
    assert "(100.0 MiB held)" in result.device("a").explanation[0]


def test_largest_remainder_ties_go_to_the_smaller_node_id() -> None:
    assert split_pool(10, {"c": 1, "a": 1, "b": 1}) == {"a": 4, "b": 3, "c": 3}
    assert split_pool(2, {"b": 1, "a": 1, "c": 1}) == {"a": 1, "b": 1, "c": 0}
    assert split_pool(5, {}) == {}
    assert split_pool(5, {"a": 0}) == {"a": 0}
    with pytest.raises(LocalProtocolError):
        split_pool(5, {"a": -1, "b": 2})


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**48),
    st.dictionaries(st.text(min_size=1, max_size=4), st.integers(0, 2**50), max_size=30),
)
def test_split_pool_sums_exactly_and_stays_within_one_unit(
    pool: int, weights: dict[str, int]
) -> None:
    parts = split_pool(pool, weights)
    total = sum(weights.values())
    assert set(parts) == set(weights)
    assert sum(parts.values()) == (pool if total else 0)
    for key, weight in weights.items():
        exact = Fraction(pool * weight, total) if total else Fraction(0)
        assert exact - 1 < parts[key] < exact + 1
    ordered = sorted(weights, key=lambda k: weights[k])
    for low, high in itertools.pairwise(ordered):
        if weights[low] < weights[high]:
            assert parts[low] <= parts[high]  # more proven storage never earns less


item = st.builds(
    ProofItem,
    shard=st.sampled_from(["s0", "s1", "s2", "s3"]),
    shard_bytes=st.just(MIB),
    passed=st.booleans(),
    reason=st.sampled_from(["", "bad block", "late"]),
)
device_proof = st.one_of(
    st.builds(DeviceProof, items=st.lists(item, max_size=12).map(tuple)),
    st.just(DeviceProof.no_answer()),
)
standing = st.builds(Standing, state=st.sampled_from(State), failures=st.integers(0, 8))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**48),
    st.dictionaries(st.sampled_from("abcdefgh"), device_proof, max_size=8),
    st.dictionaries(st.sampled_from("abcdefgh"), standing, max_size=8),
)
def test_rewards_sum_exactly_to_the_pool(
    pool: int, proofs: dict[str, DeviceProof], previous: dict[str, Standing]
) -> None:
    policy = RewardPolicy(pool=pool, penalty_per_failed_item=3, penalty_per_missed_answer=7)
    result = epoch_rewards(1, 60, policy, proofs, previous)
    earning = [d for d in result.devices if d.after.state not in (State.PENALISED, State.EVICTED)]
    proved = sum(d.proven_bytes for d in earning)
    assert result.total_reward == sum(d.reward for d in result.devices)
    assert result.total_reward == (pool if proved else 0)
    assert result.total_penalty == sum(d.penalty for d in result.devices)
    assert [d.node_id for d in result.devices] == sorted(set(proofs) | set(previous))
    for d in result.devices:
        if d.penalty or d.after.state in (State.PENALISED, State.EVICTED):
            assert d.reward == 0
        if d.penalty:
            assert d.before.state in (State.WARNED, State.PENALISED)
    cbor.decode(result.encode())  # the record is within our own decoder's bounds


def test_nobody_proved_anything() -> None:
    result = run({"a": DeviceProof.no_answer(), "b": blocks(2, failed=12)})
    assert result.total_reward == 0
    assert all(d.reward == 0 for d in result.devices)
    assert "no share of the pool: no storage proven" in result.device("a").explanation


def test_zero_devices() -> None:
    result = run({})
    assert result.devices == ()
    assert (result.total_reward, result.total_penalty, result.total_byte_seconds) == (0, 0, 0)
    # {0: v1, 1: kind EPOCH_REWARDS, 2: epoch 7, 3: 3600 s, 4: policy, 5: 0 paid,
    #  6: 0 charged, 7: []}
    assert result.encode().hex() == (
        "a800010108020703190e1004a6001a000f42400119138802194e20030104030506050006000780"
    )
    assert result.encode() == wire.encode(wire.Kind.EPOCH_REWARDS, result.to_cbor_map())


def test_all_failing_devices_penalised_share_nothing() -> None:
    previous = {node: Standing(State.WARNED, 2) for node in "abc"}
    result = run({node: blocks(2, failed=1) for node in "abc"}, previous)
    assert result.total_reward == 0
    assert all(d.after == Standing(State.PENALISED, 3) for d in result.devices)
    assert all(d.penalty == 5_000 for d in result.devices)
    assert result.total_penalty == 15_000


def test_a_forfeited_share_goes_to_the_devices_that_earn() -> None:
    previous = {"cheat": Standing(State.WARNED, 2)}
    result = run({"cheat": blocks(3, failed=1), "honest": blocks(1)}, previous)
    assert result.device("cheat").reward == 0
    assert result.device("cheat").penalty == 5_000
    assert result.device("cheat").net == -5_000
    assert result.device("honest").reward == 1_000_000


# -- standing ---------------------------------------------------------------------------------


def test_a_failing_device_is_warned_then_penalised_then_evicted() -> None:
    standing = Standing()
    seen = []
    for _ in range(7):
        device = run({"d": blocks(2, failed=2)}, {"d": standing}).device("d")
        seen.append((device.after.state, device.after.failures, device.reward > 0, device.penalty))
        standing = device.after
    assert seen == [
        (State.WARNED, 1, True, 0),
        (State.WARNED, 2, True, 0),
        (State.PENALISED, 3, False, 10_000),
        (State.PENALISED, 4, False, 10_000),
        (State.PENALISED, 5, False, 10_000),
        (State.EVICTED, 6, False, 10_000),
        (State.EVICTED, 6, False, 0),  # evicted is final: nothing more is paid or charged
    ]


def test_missed_answers_follow_the_same_ladder() -> None:
    standing = Standing()
    penalties = []
    for _ in range(4):
        device = run({"d": DeviceProof.no_answer()}, {"d": standing}).device("d")
        assert device.outcome is Outcome.NO_ANSWER
        penalties.append(device.penalty)
        standing = device.after
    assert penalties == [0, 0, 20_000, 20_000]


outcome = st.sampled_from(["pass", "fail", "none", "idle"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(outcome, min_size=1, max_size=20),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
)
def test_never_penalised_before_warned(
    history: list[str], warn_after: int, gap1: int, gap2: int
) -> None:
    policy = RewardPolicy(
        pool=1000,
        penalty_per_failed_item=1,
        penalty_per_missed_answer=1,
        warn_after=warn_after,
        penalise_after=warn_after + gap1,
        evict_after=warn_after + gap1 + gap2,
    )
    proofs = {
        "pass": blocks(2),
        "fail": blocks(2, failed=1),
        "none": DeviceProof.no_answer(),
    }
    levels = [State.OK, State.WARNED, State.PENALISED, State.EVICTED]
    standing = Standing()
    warned_before = False
    for what in history:
        epoch = {"d": proofs[what]} if what in proofs else {}
        device = epoch_rewards(1, 60, policy, epoch, {"d": standing}).device("d")
        step = levels.index(device.after.state) - levels.index(standing.state)
        assert step <= 1  # one level at a time, never skipping "warned"
        if device.penalty or device.after.state is State.PENALISED:
            assert warned_before
        if what in ("fail", "none") and standing.state is not State.EVICTED:
            paid_nothing = device.after.state in (State.PENALISED, State.EVICTED)
            heads = ("penalised:", "evicted:") if paid_nothing else ("warning:",)
            assert any(line.startswith(heads) for line in device.explanation)
        warned_before = warned_before or device.after.state is State.WARNED
        standing = device.after


def test_a_passing_epoch_resets_and_steps_down_one_level() -> None:
    warned = run({"d": blocks(2)}, {"d": Standing(State.WARNED, 2)}).device("d")
    assert warned.after == Standing(State.OK, 0)
    assert warned.reward == 1_000_000
    assert "passed every proof: standing warned (2 failing epochs in a row) -> ok" in (
        warned.explanation
    )
    penalised = run({"d": blocks(2)}, {"d": Standing(State.PENALISED, 4)}).device("d")
    assert penalised.after == Standing(State.WARNED, 0)
    assert penalised.penalty == 0
    assert penalised.reward == 1_000_000  # proving again earns at once
    # Back on probation: the next failure warns again rather than penalising.
    again = run({"d": blocks(2, failed=1)}, {"d": penalised.after}).device("d")
    assert again.after == Standing(State.WARNED, 1)
    assert again.penalty == 0


def test_an_unchallenged_device_keeps_its_standing() -> None:
    result = run({"a": blocks(1)}, {"idle": Standing(State.WARNED, 2)})
    idle = result.device("idle")
    assert idle.outcome is Outcome.NOT_CHALLENGED
    assert idle.after == Standing(State.WARNED, 2)
    assert (idle.reward, idle.penalty) == (0, 0)
    assert idle.explanation == (
        "not challenged this epoch",
        "standing warned (2 failing epochs in a row) unchanged",
    )
    assert result.standings() == {"a": Standing(), "idle": Standing(State.WARNED, 2)}
    # Answering with no items is no evidence either way.
    empty = run({"e": DeviceProof(())}, {"e": Standing(State.WARNED, 1)}).device("e")
    assert empty.after == Standing(State.WARNED, 1)


# -- explanations -----------------------------------------------------------------------------


def test_explanations_carry_the_real_numbers() -> None:
    previous = {"carol": Standing(State.WARNED, 2)}
    result = run(
        {
            "alice": blocks(3),
            "bob": blocks(3, failed=2),
            "carol": DeviceProof.no_answer(held_bytes=8 * MIB),
            "dave": blocks(4, failed=3, reason="late"),
        },
        previous,
    )
    assert result.device("alice").explanation == (
        "proved 12 of 12 sampled blocks over 3 shards (48.0 MiB held)",
        "credited 48.0 MiB for 3,600 s = 181,193,932,800 byte-seconds",
        "share 35.29% of pool 1,000,000 = 352,941",
    )
    assert result.device("bob").explanation == (
        "proved 10 of 12 sampled blocks over 3 shards (48.0 MiB held)",
        "credited 40.0 MiB (48.0 MiB x 10/12) for 3,600 s = 150,994,944,000 byte-seconds",
        "share 29.41% of pool 1,000,000 = 294,118",
        "warning: 2 of 12 proofs failed (bad block x2); 1 failing epoch in a row, "
        "penalties start at 3 in a row",
        "standing ok -> warned",
    )
    assert result.device("carol").explanation == (
        "no answer to this epoch's challenge (8.0 MiB held)",
        "penalised: no answer; 3 failing epochs in a row; eviction at 6 in a row",
        "share forfeited; penalty for no answer 20,000",
        "standing warned -> penalised",
    )
    dave = result.device("dave")
    assert dave.explanation[2] == "share 35.29% of pool 1,000,000 = 352,941"
    assert "3 of 12 proofs failed (late x3)" in dave.explanation[3]
    assert sum(d.reward for d in result.devices) == 1_000_000


def test_failure_reasons_are_counted_most_frequent_first() -> None:
    items = (
        ProofItem("s", MIB, False, "late"),
        ProofItem("s", MIB, False, "bad path"),
        ProofItem("s", MIB, False, "bad path"),
        ProofItem("s", MIB, False),
        ProofItem("s", MIB, True),
    )
    device = run({"d": DeviceProof(items)}).device("d")
    assert "4 of 5 proofs failed (bad path x2, late x1, unspecified x1)" in device.explanation[3]
    assert device.explanation[0] == "proved 1 of 5 sampled blocks over 1 shard (1.0 MiB held)"


def test_small_and_large_byte_counts_read_well() -> None:
    tiny = DeviceProof((ProofItem("s", 1, True),))
    big = DeviceProof((ProofItem("s", 3 * 2**40, True),))
    result = run({"tiny": tiny, "big": big})
    assert result.device("tiny").explanation[0].endswith("(1 byte held)")
    assert result.device("big").explanation[0].endswith("(3.0 TiB held)")


# -- ledger record ----------------------------------------------------------------------------


def test_golden_epoch_record() -> None:
    policy = RewardPolicy(pool=1000, penalty_per_failed_item=10, penalty_per_missed_answer=50)
    proofs = {
        "a": DeviceProof((ProofItem("s0", 1024, True), ProofItem("s1", 1024, True))),
        "b": DeviceProof.no_answer(),
    }
    result = epoch_rewards(3, 60, policy, proofs, {"b": Standing(State.WARNED, 2)})
    assert result.encode().hex() == GOLDEN_EPOCH


def test_record_round_trips_through_the_bounded_decoder() -> None:
    result = run({"a": blocks(3), "b": blocks(3, failed=2)})
    decoded = cbor.decode(result.encode())
    assert decoded == {0: 1, 1: int(wire.Kind.EPOCH_REWARDS), **result.to_cbor_map()}
    assert decoded[7][1][1] == ["ok", 0]
    assert decoded[7][1][2] == ["warned", 1]
    assert decoded[7][1][3] == "failed"


# -- bad calls --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pool": -1},
        {"pool": 2**48 + 1},
        {"pool": 10, "penalty_per_failed_item": -5},
        {"pool": 10, "warn_after": 0},
        {"pool": 10, "warn_after": 3, "penalise_after": 3},
        {"pool": 10, "penalise_after": 7, "evict_after": 6},
        {"pool": True},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(LocalProtocolError):
        RewardPolicy(**kwargs)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        DeviceProof((ProofItem("s", 1, False),), answered=False)
    with pytest.raises(LocalProtocolError):
        DeviceProof(tuple(ProofItem("s", 1, True) for _ in range(MAX_ITEMS + 1)))
    with pytest.raises(LocalProtocolError):
        ProofItem("s", -1, True)
    with pytest.raises(LocalProtocolError):
        ProofItem("s", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Standing(State.OK, -1)
    with pytest.raises(LocalProtocolError):
        Standing("fine")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        epoch_rewards(1, 0, POLICY, {}, {})
    with pytest.raises(LocalProtocolError):
        epoch_rewards(-1, 60, POLICY, {}, {})
    with pytest.raises(LocalProtocolError):
        epoch_rewards(1, 60, POLICY, {"": blocks(1)}, {})
    two_sizes = DeviceProof((ProofItem("s", 1, True), ProofItem("s", 2, True)))
    with pytest.raises(LocalProtocolError, match="two sizes"):
        run({"d": two_sizes})
    with pytest.raises(LocalProtocolError):
        run({"a": blocks(1)}).device("nobody")


# {0: v1, 1: kind EPOCH_REWARDS, 2: epoch 3, 3: 60 s,
#  4: {0: pool 1000, 1: 10, 2: 50, 3: 1, 4: 3, 5: 6}, 5: 1000 paid,
#  6: 50 charged, 7: [device "a" passed 2 of 2, device "b" no answer, warned -> penalised]}
GOLDEN_EPOCH = (
    "a800010108020303183c04a6001903e8010a021832030104030506051903e80618320782"
    "aa0061610182626f6b000282626f6b0003667061737365640419080005020600"
    "071903e808000983783970726f7665642032206f6620322073616d706c656420"
    "626c6f636b73206f7665722032207368617264732028322e30204b6942206865"
    "6c64297830637265646974656420322e30204b694220666f722036302073203d"
    "203132322c38383020627974652d7365636f6e64737823736861726520313030"
    "2e303025206f6620706f6f6c20312c303030203d20312c303030aa0061620182"
    "667761726e65640202826970656e616c697365640303696e6f2d616e73776572"
    "0400050006000700081832098478236e6f20616e7377657220746f2074686973"
    "2065706f63682773206368616c6c656e6765784770656e616c697365643a206e"
    "6f20616e737765723b2033206661696c696e672065706f63687320696e206120"
    "726f773b206576696374696f6e206174203620696e206120726f777829736861"
    "726520666f726665697465643b2070656e616c747920666f72206e6f20616e73"
    "776572203530781c7374616e64696e67207761726e6564202d3e2070656e616c"
    "69736564"
)
