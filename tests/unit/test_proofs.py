"""Storage proofs: challenges, signed answers, verification, and the sampling guarantee."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lichen import cbor, cid, cose, merkle, proofs, shard, wire
from lichen.errors import (
    BadSignature,
    IntegrityError,
    LocalProtocolError,
    MalformedMessage,
    ProofRejected,
    RemoteProtocolError,
    UnsupportedVersion,
)
from lichen.identity import Identity
from lichen.testing.holder import MemoryHolder
from tests.forge import sign_as

HOLDER = Identity(bytes(range(32)))
OTHER = Identity(bytes(range(1, 33)))
OWNER = Identity(bytes(range(2, 34)))
NONCE = bytes(range(32))
DEADLINE = 1_700_000_060
BLOCK = 512

Key = tuple[bytes, int]


def make_store(count: int, seed: int = 0, leaves: int = 6) -> MemoryHolder:
    rng = random.Random(seed)
    store = MemoryHolder()
    for i in range(count):
        object_cid = cid.of(f"object {seed} {i // 3}".encode())
        body = rng.randbytes(BLOCK * (leaves - 1) + 100 + i)
        built = shard.build_shard(
            body,
            object_cid=object_cid,
            index=i % 3,
            k=2,
            n=3,
            codec="zfec-rs/1",
            object_size=len(body),
            block_size=BLOCK,
            expiry=1_800_000_000,
            owner=OWNER,
        )
        store.add_shard(built)
    return store


STORE = make_store(12)


def make_challenge(
    epoch: int = 7, nonce: bytes = NONCE, samples: int = 5, blocks: int = 2
) -> proofs.Challenge:
    return proofs.make_challenge(
        epoch, nonce, HOLDER.kid, DEADLINE, STORE.held(), samples, blocks, random.Random(epoch)
    )


def sign_payload(fields: dict[int, Any], signer: Identity = HOLDER) -> bytes:
    return cose.sign1(wire.encode(wire.Kind.PROOF, fields), signer)


def honest_fields(challenge: proofs.Challenge) -> dict[int, Any]:
    response = proofs.answer(challenge, STORE.read_block, HOLDER)
    return dict(cbor2.loads(cbor2.loads(response).value[2]))


def check(challenge: proofs.Challenge, response: bytes, at: float = DEADLINE - 10) -> Any:
    return proofs.verify(challenge, response, HOLDER.public, STORE.roots(), at)


# --- sample size --------------------------------------------------------------------------


def test_sample_size_for_ten_percent_at_99_percent_is_44() -> None:
    assert proofs.sample_size(0.1, 0.99) == 44


@pytest.mark.parametrize(
    ("f", "p", "s"),
    [(0.5, 0.5, 1), (0.5, 0.75, 2), (0.01, 0.99, 459), (0.02, 0.99, 228), (1.0, 0.9, 1)],
)
def test_sample_size_known_values(f: float, p: float, s: int) -> None:
    assert proofs.sample_size(f, p) == s
    assert proofs.sample_size(0.3, 0.0) == 1


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.001, max_value=0.999), st.floats(min_value=0.0, max_value=0.9999))
def test_sample_size_is_the_smallest_that_suffices(f: float, p: float) -> None:
    s = proofs.sample_size(f, p)
    assert (1 - f) ** s <= 1 - p
    assert s == 1 or (1 - f) ** (s - 1) > 1 - p


@pytest.mark.parametrize(("f", "p"), [(0.0, 0.9), (-0.1, 0.9), (1.1, 0.9), (0.1, 1.0), (0.1, -1)])
def test_sample_size_refuses_impossible_arguments(f: float, p: float) -> None:
    with pytest.raises(LocalProtocolError):
        proofs.sample_size(f, p)


# --- block indices and sampling -----------------------------------------------------------


def test_block_indices_are_distinct_in_range_and_follow_the_nonce() -> None:
    object_cid = cid.of(b"x")
    a = proofs.derive_block_indices(NONCE, HOLDER.kid, object_cid, 0, 5000, 16)
    assert len(set(a)) == 16 and all(0 <= i < 5000 for i in a)
    assert a == proofs.derive_block_indices(NONCE, HOLDER.kid, object_cid, 0, 5000, 16)
    # Any change of nonce, holder, object or shard gives other blocks.
    others = [
        proofs.derive_block_indices(bytes(32), HOLDER.kid, object_cid, 0, 5000, 16),
        proofs.derive_block_indices(NONCE, OTHER.kid, object_cid, 0, 5000, 16),
        proofs.derive_block_indices(NONCE, HOLDER.kid, cid.of(b"y"), 0, 5000, 16),
        proofs.derive_block_indices(NONCE, HOLDER.kid, object_cid, 1, 5000, 16),
    ]
    assert all(o != a for o in others)
    assert proofs.derive_block_indices(NONCE, HOLDER.kid, object_cid, 0, 3, 5) == (0, 1, 2)
    assert len(set(proofs.derive_block_indices(NONCE, HOLDER.kid, object_cid, 0, 17, 16))) == 16
    with pytest.raises(LocalProtocolError):
        proofs.derive_block_indices(NONCE, HOLDER.kid, object_cid, 0, 0, 1)


def test_block_indices_cover_the_shard_evenly() -> None:
    object_cid = cid.of(b"x")
    counts = [0] * 8
    for n in range(4000):
        nonce = n.to_bytes(32, "big")
        (index,) = proofs.derive_block_indices(nonce, HOLDER.kid, object_cid, 0, 8, 1)
        counts[index] += 1
    assert min(counts) > 400 and max(counts) < 600


def test_make_challenge_samples_distinct_shards() -> None:
    challenge = make_challenge(samples=5, blocks=2)
    keys = [(i.object_cid, i.shard_index) for i in challenge.items]
    assert len(keys) == 5 == len(set(keys))
    assert all(k in STORE for k in keys)
    assert all(len(i.block_indices) == 2 for i in challenge.items)
    assert make_challenge(samples=5) == challenge  # same rng seed and nonce, same challenge
    assert make_challenge(samples=5, nonce=bytes(32)) != challenge


def test_make_challenge_asks_everything_when_fewer_shards_than_samples() -> None:
    challenge = make_challenge(samples=44, blocks=16)
    assert len(challenge.items) == len(STORE.held())
    assert all(i.block_indices == tuple(range(6)) for i in challenge.items)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"held": []}, "no shards"),
        ({"shards_to_sample": 0}, "sample"),
        ({"shards_to_sample": proofs.MAX_ITEMS + 1}, "sample"),
        ({"blocks_per_shard": 0}, "blocks"),
        ({"blocks_per_shard": proofs.MAX_BLOCKS_PER_ITEM + 1}, "blocks"),
        ({"nonce": b"short"}, "nonce"),
        ({"holder_kid": b"x" * 19}, "node id"),
    ],
)
def test_make_challenge_refuses_bad_arguments(changes: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = dict(
        epoch=1,
        nonce=NONCE,
        holder_kid=HOLDER.kid,
        deadline=DEADLINE,
        held=STORE.held(),
        shards_to_sample=3,
        blocks_per_shard=1,
        rng=random.Random(0),
    )
    args.update(changes)
    with pytest.raises(LocalProtocolError, match=message):
        proofs.make_challenge(**args)


# --- challenge codec ----------------------------------------------------------------------

GOLDEN_CHALLENGE = proofs.Challenge(
    epoch=42,
    nonce=NONCE,
    holder_kid=HOLDER.kid,
    deadline=DEADLINE,
    items=(
        proofs.ChallengeItem(cid.of(b"sealed object bytes"), 1, (3,)),
        proofs.ChallengeItem(cid.of(b"another object"), 0, (0, 4095)),
    ),
)


def test_golden_challenge() -> None:
    assert GOLDEN_CHALLENGE.encode().hex() == (
        "a70001010602182a035820000102030405060708090a0b0c0d0e0f1011121314"
        "15161718191a1b1c1d1e1f045456475aa75463474c0285df5dbf2bcab73da651"
        "35051a6553f13c068283582401551220897852a43a15ef4177a00fd77aff36e5"
        "a5088fa78f8d9ac8fc2f9c10df7fd57701810383582401551220d283c852d138"
        "2889b892f140c60f704ff893fed41e2684d5e7d6444715c4cc0f008200190fff"
    )
    assert proofs.decode_challenge(GOLDEN_CHALLENGE.encode()) == GOLDEN_CHALLENGE


def test_challenge_round_trips() -> None:
    challenge = make_challenge(samples=12, blocks=3)
    assert proofs.decode_challenge(challenge.encode()) == challenge


@settings(max_examples=50, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(
        st.tuples(
            st.binary(min_size=1, max_size=8),
            st.integers(min_value=0, max_value=255),
            st.lists(
                st.integers(min_value=0, max_value=2**32 - 1),
                min_size=1,
                max_size=proofs.MAX_BLOCKS_PER_ITEM,
            ),
        ),
        min_size=1,
        max_size=20,
    ),
)
def test_any_challenge_round_trips(
    epoch: int, nonce: bytes, items: list[tuple[bytes, int, list[int]]]
) -> None:
    challenge = proofs.Challenge(
        epoch,
        nonce,
        HOLDER.kid,
        DEADLINE,
        tuple(proofs.ChallengeItem(cid.of(c), i, tuple(b)) for c, i, b in items),
    )
    assert proofs.decode_challenge(challenge.encode()) == challenge


def challenge_fields(**changes: Any) -> dict[int, Any]:
    fields: dict[int, Any] = dict(cbor2.loads(GOLDEN_CHALLENGE.encode()))
    for key, value in changes.items():
        fields[int(key.lstrip("f"))] = value
    return fields


ITEM = [cid.of(b"o"), 0, [1]]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"f3": bytes(31)}, "32 bytes"),
        ({"f4": bytes(21)}, "20 bytes"),
        ({"f2": -1}, "unsigned"),
        ({"f5": "soon"}, "unsigned"),
        ({"f6": []}, "1 to"),
        ({"f6": [ITEM] * (proofs.MAX_ITEMS + 1)}, "more than"),
        ({"f6": [[cid.of(b"o"), 0, list(range(17))]]}, "blocks per item"),
        ({"f6": [[cid.of(b"o"), 0, []]]}, "blocks per item"),
        ({"f6": [[cid.of(b"o"), 256, [1]]]}, "shard index"),
        ({"f6": [[cid.of(b"o"), 0, [2**32]]]}, "block index"),
        ({"f6": [[cid.of(b"o"), 0, [-1]]]}, "block index"),
        ({"f6": [[b"\x00" * 36, 0, [1]]]}, "CID"),
        ({"f6": [[cid.of(b"o"), 0]]}, "an item is"),
        ({"f6": [[cid.of(b"o"), 0, 1]]}, "an item is"),
        ({"f6": [7]}, "an item is"),
        ({"f9": 1}, "unknown field"),
    ],
)
def test_malformed_challenges_are_refused(changes: dict[str, Any], message: str) -> None:
    data = cbor.encode(challenge_fields(**changes))
    with pytest.raises(MalformedMessage, match=message):
        proofs.decode_challenge(data)


def test_challenge_wrong_kind_version_size_and_truncation() -> None:
    fields = challenge_fields()
    with pytest.raises(MalformedMessage, match="CHALLENGE"):
        proofs.decode_challenge(cbor.encode({**fields, 1: int(wire.Kind.PROOF)}))
    with pytest.raises(UnsupportedVersion):
        proofs.decode_challenge(cbor.encode({**fields, 0: 2}))
    with pytest.raises(MalformedMessage, match="exceeds"):
        proofs.decode_challenge(bytes(proofs.CHALLENGE_LIMITS.max_size + 1))
    with pytest.raises(MalformedMessage):
        proofs.decode_challenge(GOLDEN_CHALLENGE.encode()[:-1])


def test_challenge_constructor_checks_fields() -> None:
    with pytest.raises(LocalProtocolError, match="nonce"):
        dataclasses.replace(GOLDEN_CHALLENGE, nonce=b"x")
    with pytest.raises(LocalProtocolError, match="epoch"):
        dataclasses.replace(GOLDEN_CHALLENGE, epoch=True)
    with pytest.raises(LocalProtocolError, match="ChallengeItem"):
        dataclasses.replace(GOLDEN_CHALLENGE, items=((cid.of(b"o"), 0, (1,)),))  # type: ignore[arg-type]


# --- answering and verifying --------------------------------------------------------------


def test_golden_proof() -> None:
    body = bytes(range(256)) * 2 + b"\xff"  # two leaves; the second is one byte
    tree = merkle.MerkleTree.from_body(body, BLOCK)
    challenge = dataclasses.replace(
        GOLDEN_CHALLENGE, items=(proofs.ChallengeItem(cid.of(b"o"), 2, (1,)),)
    )
    response = proofs.answer(challenge, lambda c, i, b: (b"\xff", tree.inclusion_path(b)), HOLDER)
    assert response.hex() == (
        "d28443a10127a1045456475aa75463474c0285df5dbf2bcab73da651355892a6"
        "0001010702182a035820000102030405060708090a0b0c0d0e0f101112131415"
        "161718191a1b1c1d1e1f045456475aa75463474c0285df5dbf2bcab73da65135"
        "05818358240155122065c74c15a686187bb6bbf9958f494fc6b80068034a659a"
        "9ad44991b08c58f2d202818241ff8158206271a81c92d455fd8fcc38719367b9"
        "d5cfe8d3aa1befe5e4f0cbd4c2a04b6c1a5840c34efb8722d1a7825c21c9b0c4"
        "c6708b51fd0d30f67609475e3b07ca3acbccb2e0716af182f297a4414b2d7f4c"
        "ddaec422e0f202e18ab2edb60d1f04364bbd01"
    )
    roots = {(cid.of(b"o"), 2): (tree.root, 2, BLOCK)}
    result = proofs.verify(challenge, response, HOLDER.public, roots, DEADLINE)
    assert result.all_passed


def test_honest_answer_passes() -> None:
    challenge = make_challenge(samples=5, blocks=2)
    result = check(challenge, proofs.answer(challenge, STORE.read_block, HOLDER))
    assert result.all_passed and not result.late
    assert (result.passed, result.failed) == (5, 0)
    assert [o.reason for o in result.items].count(proofs.Reason.OK) == 5
    assert [(o.object_cid, o.shard_index) for o in result.items] == [
        (i.object_cid, i.shard_index) for i in challenge.items
    ]
    assert all(o.reason == "ok" and o.passed for o in result.items)
    assert result.epoch == 7 and result.holder_kid == HOLDER.kid


def test_answer_exactly_at_the_deadline_is_in_time() -> None:
    challenge = make_challenge()
    result = check(challenge, proofs.answer(challenge, STORE.read_block, HOLDER), DEADLINE)
    assert result.all_passed


def test_late_answer_fails_every_item() -> None:
    challenge = make_challenge()
    result = check(challenge, proofs.answer(challenge, STORE.read_block, HOLDER), DEADLINE + 0.5)
    assert result.late and result.passed == 0
    assert [o.reason for o in result.items].count(proofs.Reason.LATE) == len(challenge.items)


def _tampering(target: Key, change: Any) -> Any:
    def read_block(object_cid: bytes, index: int, block_index: int) -> Any:
        got = STORE.read_block(object_cid, index, block_index)
        if (object_cid, index) == target:
            return change(*got)
        return got

    return read_block


def _verdicts(challenge: proofs.Challenge, read_block: Any) -> list[str]:
    result = check(challenge, proofs.answer(challenge, read_block, HOLDER))
    return [o.reason for o in result.items]


def test_wrong_block_fails_that_item() -> None:
    challenge = make_challenge()
    target = (challenge.items[1].object_cid, challenge.items[1].shard_index)
    flipped = _tampering(target, lambda b, p: (bytes([b[0] ^ 1]) + b[1:], p))
    assert _verdicts(challenge, flipped) == ["ok", "bad block", "ok", "ok", "ok"]
    other = _tampering(target, lambda b, p: (STORE.read_block(*target, 5)[0], p))
    assert _verdicts(challenge, other)[1] == "bad block"
    oversize = _tampering(target, lambda b, p: (b + bytes(BLOCK), p))
    assert _verdicts(challenge, oversize)[1] == "bad block"


def test_wrong_path_fails_that_item() -> None:
    challenge = make_challenge()
    target = (challenge.items[2].object_cid, challenge.items[2].shard_index)
    altered = _tampering(target, lambda b, p: (b, [bytes(32), *p[1:]]))
    assert _verdicts(challenge, altered) == ["ok", "ok", "bad block", "ok", "ok"]
    truncated = _tampering(target, lambda b, p: (b, p[:-1]))
    assert _verdicts(challenge, truncated)[2] == "bad path"
    extended = _tampering(target, lambda b, p: (b, [*p, bytes(32)]))
    assert _verdicts(challenge, extended)[2] == "bad path"


def test_missing_shard_fails_that_item_only() -> None:
    challenge = make_challenge()
    store = make_store(12)
    store.lose([(challenge.items[0].object_cid, challenge.items[0].shard_index)])
    assert _verdicts(challenge, store.read_block) == ["missing", "ok", "ok", "ok", "ok"]


def test_memory_holder_reports_its_shards_and_refuses_bad_calls() -> None:
    store = make_store(3)
    key = next(iter(store))
    held = store[key]
    assert store.roots()[key] == (held.tree.root, held.leaf_count, BLOCK)
    assert [p.key for p in store.placements()] == list(store)
    assert store.read_block(*key, held.leaf_count) is None  # past its last block
    assert store.read_block(cid.of(b"never given"), 0, 0) is None
    with pytest.raises(LocalProtocolError, match="never held"):
        store.lose([key, (cid.of(b"never given"), 0)])
    assert store.lost == frozenset()
    with pytest.raises(LocalProtocolError, match="not over this body"):
        store.add(*key, held.body + bytes(BLOCK), BLOCK, held.tree)
    built = shard.build_shard(
        bytes(600),
        object_cid=cid.of(b"o"),
        index=0,
        k=1,
        n=1,
        codec="zfec-rs/1",
        object_size=600,
        block_size=BLOCK,
        expiry=1_800_000_000,
        owner=OWNER,
    )
    with pytest.raises(IntegrityError):
        MemoryHolder([dataclasses.replace(built, body=bytes(599) + b"\x01")])


def test_one_unreadable_block_makes_the_item_missing() -> None:
    challenge = make_challenge(blocks=2)
    first = challenge.items[3]

    def read_block(object_cid: bytes, index: int, block_index: int) -> Any:
        if (object_cid, index, block_index) == (*first[:2], first.block_indices[1]):
            return None
        return STORE.read_block(object_cid, index, block_index)

    assert _verdicts(challenge, read_block)[3] == "missing"


def test_unknown_shard_gets_no_verdict_against_the_holder() -> None:
    challenge = make_challenge()
    roots = STORE.roots()
    del roots[(challenge.items[4].object_cid, challenge.items[4].shard_index)]
    response = proofs.answer(challenge, STORE.read_block, HOLDER)
    result = proofs.verify(challenge, response, HOLDER.public, roots, 0)
    assert [o.reason for o in result.items][4] == "unknown shard"
    assert [o.reason for o in result.items].count(proofs.Reason.UNKNOWN_SHARD) == 1


def test_replay_from_another_epoch_is_rejected() -> None:
    old = make_challenge(epoch=6, nonce=bytes(32))
    new = make_challenge(epoch=7)
    replay = proofs.answer(old, STORE.read_block, HOLDER)
    with pytest.raises(ProofRejected, match="replay"):
        check(new, replay)
    same_epoch_other_nonce = dataclasses.replace(new, nonce=bytes(32), items=old.items)
    response = proofs.answer(same_epoch_other_nonce, STORE.read_block, HOLDER)
    with pytest.raises(ProofRejected, match="replay"):
        check(dataclasses.replace(new, items=old.items), response)


def test_answer_signed_by_another_key_is_rejected() -> None:
    challenge = make_challenge()
    # OTHER answers in its own name, and it is presented as HOLDER's answer.
    theirs = dataclasses.replace(challenge, holder_kid=OTHER.kid)
    with pytest.raises(BadSignature):
        check(challenge, proofs.answer(theirs, STORE.read_block, OTHER))
    # OTHER signs but claims HOLDER's kid in the COSE header.
    forged = sign_as(wire.encode(wire.Kind.PROOF, honest_fields(challenge)), OTHER, HOLDER.kid)
    with pytest.raises(BadSignature):
        check(challenge, forged)


def test_answer_naming_another_holder_is_rejected() -> None:
    challenge = make_challenge()
    fields = honest_fields(challenge)
    fields[4] = OTHER.kid
    with pytest.raises(ProofRejected, match="another holder"):
        check(challenge, sign_payload(fields))


def test_tampered_signature_is_rejected() -> None:
    challenge = make_challenge()
    response = bytearray(proofs.answer(challenge, STORE.read_block, HOLDER))
    response[-5] ^= 0x40
    with pytest.raises(BadSignature):
        check(challenge, bytes(response))


def test_tampered_block_under_the_signature_is_rejected() -> None:
    challenge = make_challenge()
    fields = honest_fields(challenge)
    message = cbor2.loads(proofs.answer(challenge, STORE.read_block, HOLDER))
    fields[5][0][2][0][0] = bytes(len(fields[5][0][2][0][0]))
    message.value[2] = wire.encode(wire.Kind.PROOF, fields)
    with pytest.raises(BadSignature):
        check(challenge, cbor.encode(message))


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_any_flipped_bit_in_an_answer_is_caught(data: st.DataObject) -> None:
    challenge = make_challenge(samples=2, blocks=1)
    response = bytearray(proofs.answer(challenge, STORE.read_block, HOLDER))
    bit = data.draw(st.integers(min_value=0, max_value=len(response) * 8 - 1))
    response[bit // 8] ^= 1 << (bit % 8)
    try:
        result = check(challenge, bytes(response))
    except RemoteProtocolError:
        return
    assert not result.all_passed


def _rejected_shapes(challenge: proofs.Challenge) -> list[dict[int, Any]]:
    fields = honest_fields(challenge)
    items = fields[5]
    shapes = []
    for broken in (
        items[:-1],
        [*items, items[0]],
        [[cid.of(b"elsewhere"), *items[0][1:]], *items[1:]],
        [[items[0][0], 2, items[0][2]], *items[1:]],
        [[*items[0][:2], items[0][2][:1]], *items[1:]],
        [[*items[0][:2], 5], *items[1:]],
        [[*items[0][:2], [[b"x"]]], *items[1:]],
        [[*items[0][:2], [[b"x", [7]]]], *items[1:]],
        [items[0][:2], *items[1:]],
        [7, *items[1:]],
    ):
        shapes.append({**fields, 5: broken})
    return shapes


def test_answers_not_shaped_like_the_challenge_are_rejected() -> None:
    challenge = make_challenge(blocks=2)
    for fields in _rejected_shapes(challenge):
        with pytest.raises(ProofRejected):
            check(challenge, sign_payload(fields))


def test_malformed_answers_are_rejected() -> None:
    challenge = make_challenge()
    fields = honest_fields(challenge)
    bad_payloads = [
        cbor.encode({**wire.pack(wire.Kind.CHALLENGE, {}), **{k: fields[k] for k in (2, 3, 4, 5)}}),
        cbor.encode({**fields, 0: 2}),
        cbor.encode({**fields, 9: 1}),
        cbor.encode({k: v for k, v in fields.items() if k != 5}),
        cbor.encode({**fields, 3: bytes(31)}),
        b"\xff",
    ]
    for payload in bad_payloads:
        with pytest.raises(ProofRejected, match="malformed"):
            check(challenge, cose.sign1(payload, HOLDER))
    response = proofs.answer(challenge, STORE.read_block, HOLDER)
    for garbage in (b"", response[:-1], b"\x00" * 10, cose.mac0(b"x", bytes(32), HOLDER.kid)):
        with pytest.raises(ProofRejected, match="malformed"):
            check(challenge, garbage)


def test_oversize_answer_is_rejected_before_its_payload_is_parsed() -> None:
    challenge = make_challenge(samples=1, blocks=1)
    bound = proofs.answer_size_bound(challenge, STORE.roots())
    assert bound < 2 * BLOCK
    padding = bytes(bound)  # not CBOR at all: the size is refused before the payload is read
    with pytest.raises(ProofRejected, match="more than"):
        check(challenge, cose.sign1(padding, HOLDER))
    # Only once it is shown to be the holder's: an oversize answer in the holder's name but
    # signed by someone else is a forgery, which must not count against the holder.
    with pytest.raises(BadSignature):
        check(challenge, sign_as(padding, OTHER, HOLDER.kid))
    with pytest.raises(ProofRejected, match="malformed"):
        check(challenge, bytes(bound + 1))
    with pytest.raises(ProofRejected, match="cap"):
        check(challenge, bytes(proofs.MAX_PROOF_SIZE + 1))
    # Unknown shards are bounded by the largest block size, and everything by MAX_PROOF_SIZE.
    assert proofs.answer_size_bound(challenge, {}) > shard.MAX_BLOCK_SIZE
    huge = make_challenge(samples=44, blocks=16)
    assert proofs.answer_size_bound(huge, {}) == proofs.MAX_PROOF_SIZE


def test_answer_refuses_to_exceed_the_size_cap() -> None:
    challenge = make_challenge(samples=12, blocks=6)
    big = bytes(shard.MAX_BLOCK_SIZE)
    with pytest.raises(MalformedMessage, match="more than"):
        proofs.answer(challenge, lambda c, i, b: (big, []), HOLDER)


def test_holder_mismatches_are_caller_errors() -> None:
    challenge = make_challenge()
    with pytest.raises(LocalProtocolError):
        proofs.answer(challenge, STORE.read_block, OTHER)
    response = proofs.answer(challenge, STORE.read_block, HOLDER)
    with pytest.raises(LocalProtocolError):
        proofs.verify(challenge, response, OTHER.public, STORE.roots(), 0)


def test_block_index_beyond_the_known_shard_is_a_caller_error() -> None:
    challenge = make_challenge(samples=1, blocks=1)
    item = challenge.items[0]
    roots = STORE.roots()
    root, _, size = roots[item[:2]]
    roots[item[:2]] = (root, item.block_indices[0], size)
    response = proofs.answer(challenge, STORE.read_block, HOLDER)
    with pytest.raises(LocalProtocolError, match="asked block"):
        proofs.verify(challenge, response, HOLDER.public, roots, 0)


# --- the sampling guarantee, end to end ---------------------------------------------------


def _run_epochs(store: MemoryHolder, epochs: int, samples: int, seed: int) -> tuple[int, int]:
    """Challenge, answer and verify ``epochs`` times; return (epochs caught, items failed)."""
    rng = random.Random(seed)
    roots, held = store.roots(), store.held()
    caught = failed = 0
    for epoch in range(epochs):
        challenge = proofs.make_challenge(
            epoch, rng.randbytes(32), HOLDER.kid, DEADLINE, held, samples, 1, rng
        )
        response = proofs.answer(challenge, store.read_block, HOLDER)
        result = proofs.verify(challenge, response, HOLDER.public, roots, DEADLINE - 1)
        caught += not result.all_passed
        failed += result.failed
    return caught, failed


def sim_store() -> MemoryHolder:
    return make_store(300, seed=1, leaves=2)


def test_holder_that_lost_ten_percent_is_caught_at_the_stated_rate() -> None:
    samples = proofs.sample_size(0.1, 0.99)
    store = sim_store()
    keys: Sequence[Key] = sorted(store)
    store.lose(random.Random(99).sample(keys, len(keys) // 10))
    epochs = 2000
    caught, _ = _run_epochs(store, epochs, samples, seed=2024)
    rate = caught / epochs
    # Measured: 1990 of 2000 = 0.9950 (seed 2024). The bound promises >= 0.99 per epoch, and
    # this draw without replacement 1 - C(270,44)/C(300,44) = 0.9934; allow for sampling noise
    # over 2000 epochs (one standard deviation is about 0.002).
    assert rate >= 0.985, f"caught in only {caught} of {epochs} epochs"
    # Drawing 44 of 300 without replacement escapes with C(270,44)/C(300,44), below 0.9^44.
    escape = math.comb(270, samples) / math.comb(300, samples)
    assert escape < 0.9**samples < 0.01


def test_honest_holder_is_never_failed() -> None:
    samples = proofs.sample_size(0.1, 0.99)
    caught, failed = _run_epochs(sim_store(), 500, samples, seed=7)
    assert (caught, failed) == (0, 0)
