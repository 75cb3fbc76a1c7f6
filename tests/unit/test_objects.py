"""The object pipeline end to end: seal, erasure-code, shard, manifest, and back."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lichen import objects, seal, shard
from lichen.errors import IntegrityError, NotEnoughShards
from lichen.identity import Identity
from lichen.manifest import open_manifest

OWNER = Identity(bytes(range(32)))
KEY = bytes(range(100, 132))
HOLDERS = tuple(Identity(bytes([i]) * 32).kid for i in range(1, 9))


def encode(data: bytes, k: int = 3, n: int = 5) -> objects.EncodedObject:
    return objects.encode_object(
        data, key=KEY, nonce=bytes(24), k=k, n=n, owner=OWNER, expiry=2_000_000_000, block_size=512
    )


def manifest_of(encoded: objects.EncodedObject) -> objects.Manifest:
    m = objects.make_manifest(encoded, HOLDERS[: encoded.n], owner=OWNER, created=1_700_000_000)
    return open_manifest(m.sign(OWNER))


def fetched(
    encoded: objects.EncodedObject, indices: tuple[int, ...]
) -> dict[int, tuple[bytes, bytes]]:
    return {i: (encoded.shards[i].signed_header, encoded.shards[i].body) for i in indices}


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=5000), st.integers(1, 4), st.integers(0, 3))
def test_any_k_shards_rebuild_the_object(data: bytes, k: int, extra: int) -> None:
    n = k + extra
    encoded = encode(data, k, n)
    manifest = manifest_of(encoded)
    for subset in itertools.combinations(range(n), k):
        result = objects.decode_object(manifest, fetched(encoded, subset), KEY)
        assert result.plaintext == data
        assert result.used == subset


def test_fewer_than_k_shards_is_a_clear_error() -> None:
    encoded = encode(b"x" * 3000)
    with pytest.raises(
        NotEnoughShards, match=r"needs 3 of 5 shards, found 2 good \[1, 4\]"
    ) as info:
        objects.decode_object(manifest_of(encoded), fetched(encoded, (1, 4)), KEY)
    assert info.value.found == (1, 4) and info.value.needed == 3


def test_tampered_shard_is_rejected_and_named_and_others_are_used() -> None:
    encoded = encode(b"y" * 3000)
    offered = fetched(encoded, (0, 1, 2, 3))
    header, body = offered[1]
    offered[1] = (header, body[:-1] + bytes([body[-1] ^ 1]))
    result = objects.decode_object(manifest_of(encoded), offered, KEY)
    assert result.plaintext == b"y" * 3000
    assert result.used == (0, 2, 3)
    assert "Merkle root" in result.rejected[1]


def test_tampered_shards_below_k_fail_with_the_reasons() -> None:
    encoded = encode(b"z" * 3000)
    offered = fetched(encoded, (0, 1, 2))
    header, body = offered[2]
    offered[2] = (header, b"\x00" * len(body))
    with pytest.raises(NotEnoughShards, match="shard 2: shard body does not match"):
        objects.decode_object(manifest_of(encoded), offered, KEY)


def test_shard_of_another_object_or_index_is_rejected() -> None:
    encoded = encode(b"a" * 2000)
    other = encode(b"b" * 2000)
    offered = fetched(encoded, (0, 1))
    offered[2] = (other.shards[2].signed_header, other.shards[2].body)
    offered[3] = (encoded.shards[4].signed_header, encoded.shards[4].body)  # mislabelled
    with pytest.raises(NotEnoughShards) as info:
        objects.decode_object(manifest_of(encoded), offered, KEY)
    assert info.value.found == (0, 1)
    assert "another object" in str(info.value)
    assert "offered as shard 3 but is shard 4" in str(info.value)


def test_shard_signed_by_someone_else_is_rejected() -> None:
    encoded = encode(b"c" * 2000)
    mallory = Identity(bytes([9]) * 32)
    forged = shard.build_shard(
        encoded.shards[0].body,
        object_cid=encoded.object_cid,
        index=0,
        k=3,
        n=5,
        codec="zfec-rs/1",
        object_size=encoded.sealed_size,
        block_size=512,
        expiry=2_000_000_000,
        owner=mallory,
    )
    offered = fetched(encoded, (1, 2))
    offered[0] = (forged.signed_header, forged.body)
    with pytest.raises(NotEnoughShards, match="not signed by owner"):
        objects.decode_object(manifest_of(encoded), offered, KEY)


def test_wrong_key_cannot_decrypt() -> None:
    encoded = encode(b"secret" * 100)
    with pytest.raises(IntegrityError, match="wrong key"):
        objects.decode_object(manifest_of(encoded), fetched(encoded, (0, 1, 2)), bytes(32))


def test_manifest_records_the_pipeline() -> None:
    encoded = encode(b"d" * 10_000)
    manifest = manifest_of(encoded)
    assert manifest.object_cid == encoded.object_cid
    assert manifest.roots == tuple(s.header.root for s in encoded.shards)
    assert manifest.size == encoded.sealed_size == 10_000 + 43
    assert manifest.piece_size == encoded.piece_size == -(-(10_000 + 43) // 3)


def test_owner_reads_with_the_master_key_alone() -> None:
    master = bytes(range(50, 82))
    nonce = bytes(range(24))
    encoded = objects.encode_object(
        b"owner data",
        key=seal.object_key(master, nonce),
        nonce=nonce,
        k=2,
        n=3,
        owner=OWNER,
        expiry=2_000_000_000,
        block_size=512,
    )
    result = objects.decode_object(
        manifest_of(encoded), fetched(encoded, (0, 2)), lambda n: seal.object_key(master, n)
    )
    assert result.plaintext == b"owner data"


def test_lost_pieces_are_rebuilt_byte_identical_and_checked_against_the_roots() -> None:
    encoded = encode(b"e" * 4000)
    manifest = manifest_of(encoded)
    good = {i: encoded.shards[i].body for i in (1, 3, 4)}
    rebuilt = objects.rebuild_pieces(manifest, good, [0, 2])
    assert rebuilt == {0: encoded.shards[0].body, 2: encoded.shards[2].body}
    other = manifest_of(encode(b"f" * 4000))
    lying = dataclasses.replace(
        manifest, roots=(manifest.roots[0], other.roots[0], *manifest.roots[2:])
    )
    with pytest.raises(IntegrityError, match="piece 1 does not match its Merkle root"):
        objects.rebuild_pieces(lying, good, [0, 1])
    with pytest.raises(NotEnoughShards):
        objects.rebuild_pieces(manifest, {1: good[1]}, [0])
