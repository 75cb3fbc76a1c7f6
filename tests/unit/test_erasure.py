"""k-of-n Reed-Solomon erasure coding: any k pieces rebuild the object, fewer cannot."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lichen import erasure
from lichen.errors import (
    LocalProtocolError,
    MalformedMessage,
    NotEnoughShards,
    UnsupportedVersion,
)

GOLDEN_INPUT = b"Lichen erasure golden vector!"  # 29 bytes: k=3 leaves one byte of padding


def test_golden_pieces() -> None:
    pieces = erasure.encode(GOLDEN_INPUT, 3, 5)
    assert [piece.hex() for piece in pieces] == [
        "4c696368656e20657261",  # "Lichen era"
        "7375726520676f6c6465",  # "sure golde"
        "6e20766563746f722100",  # "n vector!" + one byte of padding
        "6522952e637add5f351a",
        "b7bcc58941c656415f49",
    ]
    assert erasure.decode({3: pieces[3], 4: pieces[4], 1: pieces[1]}, 3, 5, 29) == GOLDEN_INPUT


def test_golden_pieces_wide() -> None:
    pieces = erasure.encode(bytes(range(40)), 4, 8)
    assert [piece.hex() for piece in pieces[4:]] == [
        "49482322dddcb4b50809",
        "5a5b9b9afeff04057f7e",
        "bbbacccd6160a7a6f7f6",
        "17161918a2a36d6c6160",
    ]


def test_codec_name() -> None:
    assert erasure.CODEC == "zfec-rs/1"
    erasure.check_codec("zfec-rs/1")
    for other in ("zfec-rs/2", "pyeclib-isa_l_rs_cauchy/1", ""):
        with pytest.raises(UnsupportedVersion):
            erasure.check_codec(other)


@st.composite
def shapes(draw: st.DrawFn, max_n: int = 6) -> tuple[int, int]:
    n = draw(st.integers(1, max_n))
    return draw(st.integers(1, n)), n


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), shapes())
@example(b"", (1, 1))
@example(b"", (3, 6))
@example(b"x", (1, 1))
@example(b"x", (3, 5))
@example(b"xy", (6, 6))
@example(b"\x00" * 7, (2, 4))
def test_every_k_subset_rebuilds_the_data(data: bytes, shape: tuple[int, int]) -> None:
    k, n = shape
    pieces = erasure.encode(data, k, n)
    assert len(pieces) == n
    assert {len(piece) for piece in pieces} == {erasure.piece_size(len(data), k)}
    for subset in itertools.combinations(range(n), k):
        assert erasure.decode({i: pieces[i] for i in subset}, k, n, len(data)) == data


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), shapes(max_n=12), st.data())
def test_any_superset_of_k_pieces_rebuilds_the_data(
    data: bytes, shape: tuple[int, int], draw: st.DataObject
) -> None:
    k, n = shape
    pieces = erasure.encode(data, k, n)
    chosen = draw.draw(st.sets(st.integers(0, n - 1), min_size=k))
    assert erasure.decode({i: pieces[i] for i in chosen}, k, n, len(data)) == data


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), shapes())
@example(b"", (2, 3))
@example(b"x", (1, 2))
def test_the_first_k_pieces_are_the_data(data: bytes, shape: tuple[int, int]) -> None:
    k, n = shape
    pieces = erasure.encode(data, k, n)
    joined = b"".join(pieces[:k])
    assert joined[: len(data)] == data
    assert joined[len(data) :] == bytes(len(joined) - len(data))


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.data(), shapes(max_n=10))
def test_fewer_than_k_pieces_is_not_enough(
    data: bytes, draw: st.DataObject, shape: tuple[int, int]
) -> None:
    k, n = shape
    pieces = erasure.encode(data, k, n)
    chosen = draw.draw(st.sets(st.integers(0, n - 1), max_size=k - 1))
    with pytest.raises(NotEnoughShards) as caught:
        erasure.decode({i: pieces[i] for i in chosen}, k, n, len(data))
    assert caught.value.found == tuple(sorted(chosen))
    assert caught.value.needed == k


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=20, max_size=20), st.binary(min_size=20, max_size=20), shapes(8))
def test_parity_is_linear(a: bytes, b: bytes, shape: tuple[int, int]) -> None:
    # Reed-Solomon is linear over GF(2^8), so coding a XOR b gives the XOR of the pieces.
    k, n = shape
    mixed = bytes(x ^ y for x, y in zip(a, b, strict=True))
    for pa, pb, pm in zip(
        erasure.encode(a, k, n), erasure.encode(b, k, n), erasure.encode(mixed, k, n), strict=True
    ):
        assert bytes(x ^ y for x, y in zip(pa, pb, strict=True)) == pm


def test_not_enough_shards_names_what_was_found() -> None:
    pieces = erasure.encode(b"some object bytes", 3, 10)
    with pytest.raises(NotEnoughShards) as caught:
        erasure.decode({7: pieces[7], 2: pieces[2]}, 3, 10, 17)
    assert caught.value.found == (2, 7)
    assert caught.value.needed == 3
    assert "need 3" in str(caught.value) and "found 2: [2, 7]" in str(caught.value)
    with pytest.raises(NotEnoughShards, match=r"found 0: \[\]"):
        erasure.decode({}, 3, 10, 17)


def test_an_empty_object_still_needs_k_pieces() -> None:
    pieces = erasure.encode(b"", 2, 4)
    assert pieces == [b""] * 4
    assert erasure.decode({3: b"", 0: b""}, 2, 4, 0) == b""
    with pytest.raises(NotEnoughShards):
        erasure.decode({3: b""}, 2, 4, 0)


def test_wide_codes_up_to_256_pieces() -> None:
    data = random.Random(0).randbytes(5000)
    pieces = erasure.encode(data, 100, 256)
    assert len(pieces) == 256
    chosen = {i: pieces[i] for i in range(156, 256)}
    assert erasure.decode(chosen, 100, 256, len(data)) == data


def test_a_large_object_from_parity_heavy_pieces() -> None:
    data = random.Random(1).randbytes(2**20 + 7)
    pieces = erasure.encode(data, 10, 16)
    assert erasure.decode({i: pieces[i] for i in range(6, 16)}, 10, 16, len(data)) == data
    assert erasure.decode({i: pieces[i] for i in range(10)}, 10, 16, len(data)) == data


def test_bytes_like_inputs_work() -> None:
    data = b"bytes-like object payload"
    pieces = erasure.encode(memoryview(bytearray(data)), 3, 5)
    assert all(type(piece) is bytes for piece in pieces)
    chosen: dict[int, erasure.BytesLike] = {
        0: bytearray(pieces[0]),
        3: memoryview(pieces[3]),
        4: pieces[4],
    }
    assert erasure.decode(chosen, 3, 5, len(data)) == data


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 6, 7, 100])
def test_piece_size(size: int) -> None:
    assert erasure.piece_size(size, 3) == -(-size // 3)
    assert erasure.piece_size(size, 3) * 3 >= size


@pytest.mark.parametrize("k, n", [(0, 1), (2, 1), (-1, 3), (1, 257), (257, 257), (0, 0)])
def test_bad_parameters_are_local_errors(k: int, n: int) -> None:
    with pytest.raises(LocalProtocolError):
        erasure.check_params(k, n)
    with pytest.raises(LocalProtocolError):
        erasure.encode(b"data", k, n)
    with pytest.raises(LocalProtocolError):
        erasure.decode({}, k, n, 4)


def test_non_int_parameters_are_local_errors() -> None:
    for k, n in ((True, 3), (2, 3.0), ("2", 3)):
        with pytest.raises(LocalProtocolError):
            erasure.check_params(k, n)  # type: ignore[arg-type]
    for size in (-1, 1.5, None):
        with pytest.raises(LocalProtocolError):
            erasure.piece_size(size, 3)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            erasure.decode({}, 2, 3, size)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        erasure.piece_size(10, 0)
    with pytest.raises(LocalProtocolError):
        erasure.encode("text", 2, 3)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        erasure.decode({0: "ab", 1: "cd"}, 2, 3, 4)  # type: ignore[dict-item]


@pytest.mark.parametrize("index", [-1, 5, 6, 1000, True, "1", None])
def test_an_index_out_of_range_is_malformed(index: object) -> None:
    pieces = erasure.encode(b"abcdefgh", 3, 5)
    chosen: dict[object, bytes] = {0: pieces[0], index: pieces[1], 2: pieces[2]}
    with pytest.raises(MalformedMessage, match=r"outside 0\.\.4"):
        erasure.decode(chosen, 3, 5, 8)  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 2, 4, 100])
def test_a_piece_of_the_wrong_size_is_malformed(length: int) -> None:
    pieces = erasure.encode(b"abcdefgh", 3, 5)  # 3-byte pieces
    with pytest.raises(MalformedMessage, match=f"piece 4 is {length} bytes"):
        erasure.decode({0: pieces[0], 1: pieces[1], 4: bytes(length)}, 3, 5, 8)


def test_a_wrong_size_claim_is_malformed() -> None:
    pieces = erasure.encode(b"abcdefgh", 3, 5)
    with pytest.raises(MalformedMessage):
        erasure.decode(dict(enumerate(pieces)), 3, 5, 20)
    with pytest.raises(MalformedMessage):
        erasure.decode(dict(enumerate(pieces)), 3, 5, 6)


def test_a_bad_piece_is_reported_even_with_too_few_pieces() -> None:
    with pytest.raises(MalformedMessage):
        erasure.decode({9: b"abc"}, 3, 5, 8)
