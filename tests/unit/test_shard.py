"""Shards: owner-signed headers and bodies bound to them by a Merkle root."""

from __future__ import annotations

import dataclasses

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lichen import cbor, cid, cose, merkle, shard, wire
from lichen.errors import (
    BadSignature,
    IntegrityError,
    LocalProtocolError,
    MalformedMessage,
    UnsupportedVersion,
)
from lichen.identity import Identity
from tests.forge import swap_kid

OWNER = Identity(bytes(range(32)))
OTHER = Identity(bytes(range(1, 33)))
OBJECT = cid.of(b"sealed object bytes")
PIECE = bytes(range(256)) * 9  # 2304 bytes: four full 512-byte blocks and a 256-byte tail
EXPIRY = 1_800_000_000


def make_shard(piece: bytes = PIECE, **changes: object) -> shard.Shard:
    args: dict[str, object] = dict(
        object_cid=OBJECT,
        index=1,
        k=2,
        n=3,
        codec="zfec-rs/1",
        object_size=4000,
        block_size=512,
        expiry=EXPIRY,
        owner=OWNER,
    )
    args.update(changes)
    return shard.build_shard(piece, **args)  # type: ignore[arg-type]


def header_fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = dataclasses.asdict(make_shard().header)
    fields.update(changes)
    return fields


def sign_payload(fields: dict[int, object], signer: Identity = OWNER) -> bytes:
    return cose.sign1(wire.encode(wire.Kind.SHARD_HEADER, fields), signer)


def payload_fields(**changes: object) -> dict[int, object]:
    h = make_shard().header
    fields: dict[int, object] = {
        2: h.object_cid,
        3: h.index,
        4: h.k,
        5: h.n,
        6: h.codec,
        7: h.object_size,
        8: h.piece_size,
        9: h.block_size,
        10: h.root,
        11: h.expiry,
        12: h.owner,
    }
    for key, value in changes.items():
        fields[int(key.lstrip("f"))] = value
    return fields


def test_golden_signed_header() -> None:
    s = make_shard()
    assert s.header.root.hex() == (
        "e1e0daf6919e6db8f89bdf8f68be3cd7e33fb26183cd6985183524d8b2b59e12"
    )
    assert s.signed_header.hex() == (
        "d28443a10127a1045456475aa75463474c0285df5dbf2bcab73da651355895ad"
        "0001010202582401551220897852a43a15ef4177a00fd77aff36e5a5088fa78f"
        "8d9ac8fc2f9c10df7fd57703010402050306697a6665632d72732f3107190fa0"
        "08190900091902000a5820e1e0daf6919e6db8f89bdf8f68be3cd7e33fb26183"
        "cd6985183524d8b2b59e120b1a6b49d2000c582003a107bff3ce10be1d70dd18"
        "e74bc09967e4d6309ba50d5f1ddc8664125531b85840eb33c68f396b39a83f0c"
        "a53b73fcfc4deb4f60e9769769c045a5463091d4b01ab2dec8a45e0fbfbd6283"
        "c1a142442ce8444c6be8168be1a17bc6336b0c397d01"
    )


def test_round_trip() -> None:
    s = make_shard()
    assert s.header.piece_size == len(PIECE)
    assert s.header.leaf_count == 5
    assert shard.open_header(s.signed_header) == s.header
    assert shard.open_header(s.signed_header, owner=OWNER.public) == s.header
    tree = shard.verify_body(s.header, s.body)
    assert tree.root == s.header.root
    assert shard.open_shard(s.signed_header, s.body) == s


def test_default_block_size_is_16_kib() -> None:
    s = shard.build_shard(
        bytes(40_000),
        object_cid=OBJECT,
        index=0,
        k=1,
        n=1,
        codec="zfec-rs/1",
        object_size=40_000,
        expiry=EXPIRY,
        owner=OWNER,
    )
    assert s.header.block_size == shard.DEFAULT_BLOCK_SIZE == 16384
    assert s.header.leaf_count == 3


def test_blocks_and_block() -> None:
    parts = [shard.block(PIECE, 512, i) for i in range(shard.leaf_count(len(PIECE), 512))]
    assert [len(p) for p in parts] == [512, 512, 512, 512, 256]
    assert b"".join(parts) == PIECE
    assert shard.leaf_count(0, 512) == 0
    with pytest.raises(LocalProtocolError):
        shard.block(PIECE, 512, 5)
    with pytest.raises(LocalProtocolError):
        shard.block(PIECE, 0, 0)


def test_a_block_is_provable_from_the_header_alone() -> None:
    s = make_shard()
    tree = shard.verify_body(s.header, s.body)
    for i in range(s.header.leaf_count):
        part = shard.block(s.body, s.header.block_size, i)
        path = tree.inclusion_path(i)
        merkle.verify_inclusion(s.header.root, i, s.header.leaf_count, part, path)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=len(PIECE) * 8 - 1))
def test_any_flipped_body_bit_is_caught(bit: int) -> None:
    s = make_shard()
    body = bytearray(s.body)
    body[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IntegrityError, match="Merkle root"):
        shard.verify_body(s.header, bytes(body))


def test_truncated_or_extended_body_is_caught() -> None:
    s = make_shard()
    with pytest.raises(IntegrityError, match="bytes"):
        shard.verify_body(s.header, s.body[:-1])
    with pytest.raises(IntegrityError, match="bytes"):
        shard.verify_body(s.header, s.body + b"\x00")
    with pytest.raises(IntegrityError):
        shard.open_shard(s.signed_header, s.body[:-1])


def test_body_of_another_shard_is_caught() -> None:
    a = make_shard()
    b = make_shard(piece=bytes(reversed(PIECE)))
    with pytest.raises(IntegrityError, match="Merkle root"):
        shard.verify_body(a.header, b.body)


@pytest.mark.parametrize("block_size", [512, 1024, 4096, 16384, 1 << 20])
def test_valid_block_sizes(block_size: int) -> None:
    assert shard.is_valid_block_size(block_size)
    make_shard(block_size=block_size)


@pytest.mark.parametrize("block_size", [0, 256, 511, 513, 1000, 3 * 1024, 2 << 20])
def test_invalid_block_sizes_are_refused(block_size: int) -> None:
    assert not shard.is_valid_block_size(block_size)
    with pytest.raises(LocalProtocolError, match="block size"):
        make_shard(block_size=block_size)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"index": 3}, "index"),
        ({"k": 0}, "k <= n"),
        ({"k": 4}, "k <= n"),
        ({"n": 257, "k": 2}, "k <= n"),
        ({"codec": ""}, "codec"),
        ({"codec": "x" * 33}, "codec"),
        ({"object_size": 0}, "object size"),
        ({"object_size": 4609}, "cannot hold"),
        ({"piece_size": 0}, "piece size"),
        ({"piece_size": shard.MAX_PIECE_SIZE + 1}, "piece size"),
        ({"root": b"\x00" * 31}, "root"),
        ({"expiry": 0}, "expiry"),
        ({"owner": b"\x00" * 31}, "owner"),
        ({"object_cid": b"\x00" * 36}, "CID"),
        ({"index": True}, "integers"),
    ],
)
def test_header_fields_are_checked(changes: dict[str, object], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        shard.ShardHeader(**header_fields(**changes))  # type: ignore[arg-type]


def test_only_the_owner_signs() -> None:
    header = make_shard().header
    with pytest.raises(LocalProtocolError):
        header.sign(OTHER)


def test_header_signed_by_another_key_is_refused() -> None:
    # OTHER signs a payload naming OWNER: the kid names OTHER, not the owner in the payload.
    signed = sign_payload(payload_fields(), OTHER)
    with pytest.raises(BadSignature):
        shard.open_header(signed)


def test_header_claiming_another_owner_is_refused() -> None:
    # OTHER signs honestly as itself, but the caller expected OWNER's shard.
    signed = sign_payload(payload_fields(f12=OTHER.public.public_key), OTHER)
    assert shard.open_header(signed).owner == OTHER.public.public_key
    with pytest.raises(BadSignature, match="owner"):
        shard.open_header(signed, owner=OWNER.public)


def test_kid_must_name_the_owner() -> None:
    forged = swap_kid(make_shard().signed_header, OTHER.kid)
    with pytest.raises(BadSignature, match="kid"):
        shard.open_header(forged)


def test_tampered_signature_is_refused() -> None:
    signed = bytearray(make_shard().signed_header)
    signed[-1] ^= 0x01
    with pytest.raises(BadSignature):
        shard.open_header(bytes(signed))


def test_tampered_payload_is_refused() -> None:
    s = make_shard()
    message = cbor2.loads(s.signed_header)
    payload = cbor2.loads(message.value[2])
    payload[11] = EXPIRY + 1
    message.value[2] = cbor.encode(payload)
    with pytest.raises(BadSignature):
        shard.open_header(cbor.encode(message))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"f3": 256}, "exceeds"),
        ({"f3": 5}, "index"),
        ({"f5": 300}, "exceeds"),
        ({"f2": b"\x00" * 35}, "36 bytes"),
        ({"f6": 7}, "text"),
        ({"f7": -1}, "unsigned"),
        ({"f8": shard.MAX_PIECE_SIZE + 1}, "exceeds"),
        ({"f9": 2 << 20}, "exceeds"),
        ({"f9": 1000}, "block size"),
        ({"f10": b"\x00" * 33}, "32 bytes"),
        ({"f12": "key"}, "byte string"),
        ({"f13": 1}, "unknown field"),
    ],
)
def test_malformed_payloads_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(MalformedMessage, match=message):
        shard.open_header(sign_payload(payload_fields(**changes)))


def test_missing_field_is_refused() -> None:
    fields = payload_fields()
    del fields[10]
    with pytest.raises(MalformedMessage, match="missing"):
        shard.open_header(sign_payload(fields))


def test_wrong_kind_and_version_are_refused() -> None:
    fields = payload_fields()
    with pytest.raises(MalformedMessage, match="SHARD_HEADER"):
        shard.open_header(cose.sign1(wire.encode(wire.Kind.MANIFEST, fields), OWNER))
    versioned = cbor.encode({0: 2, 1: int(wire.Kind.SHARD_HEADER), **fields})
    with pytest.raises(UnsupportedVersion):
        shard.open_header(cose.sign1(versioned, OWNER))


def test_oversize_and_truncated_input_is_refused() -> None:
    signed = make_shard().signed_header
    with pytest.raises(MalformedMessage, match="exceeds"):
        shard.open_header(signed + bytes(shard.HEADER_LIMITS.max_size))
    with pytest.raises(MalformedMessage):
        shard.open_header(signed[:-1])
    with pytest.raises(MalformedMessage):
        shard.open_header(b"")
    long_codec = sign_payload(payload_fields(f6="x" * 900))
    with pytest.raises(MalformedMessage, match="exceeds"):
        shard.open_header(long_codec)
