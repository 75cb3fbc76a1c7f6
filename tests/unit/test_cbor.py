"""Bounded CBOR decoding: every bound and malformation is refused with MalformedMessage."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lichen import cbor
from lichen.errors import LocalProtocolError, MalformedMessage


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (h("a2 01 00 01 00"), "duplicate map key"),
        (h("a2 01 00 18 01 00"), "duplicate map key"),  # 1 and 1 in a longer form
        (h("a2 61 61 00 61 61 01"), "duplicate map key"),
        (h("9b ffffffffffffffff"), "claims more items"),
        (h("bb 00000000ffffffff"), "claims more items"),
        (h("5a ffffffff 00"), "runs past the end"),
        (h("d8 1c 80"), "tag 28"),  # shared reference: refused
        (h("c1 1a 00000000"), "tag 1"),  # epoch date: refused
        (h("5f 41 00 ff"), "indefinite"),
        (h("9f ff"), "indefinite"),
        (h("1c"), "reserved"),
        (h("01 02"), "trailing"),
        (h("82 01"), "claims more items"),
        (h("82 01 19"), "truncated"),
        (h("19 01"), "truncated"),
        (h("f7"), "simple value"),  # undefined
        (h("f8 20"), "simple value"),
        (h("a1 41 00 01"), "integers or text"),  # byte-string key
        (h("a1 80 01"), "integers or text"),  # array key
        (h("62 c3 28"), "invalid CBOR"),  # invalid UTF-8
    ],
)
def test_malformed_input_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(MalformedMessage, match=why):
        cbor.decode(data)


def test_depth_bound() -> None:
    limits = cbor.Limits(max_depth=4)
    assert cbor.decode(h("81 81 81 81 00"), limits) == [[[[0]]]]
    with pytest.raises(MalformedMessage, match="deeper than 4"):
        cbor.decode(h("81 81 81 81 81 00"), limits)
    with pytest.raises(MalformedMessage, match="deeper"):
        cbor.decode(b"\x81" * 10_000 + b"\x00", cbor.Limits(max_size=20_000))


def test_size_bound() -> None:
    data = cbor.encode(b"x" * 100)
    assert cbor.decode(data, cbor.Limits(max_size=len(data))) == b"x" * 100
    with pytest.raises(MalformedMessage, match="exceeds"):
        cbor.decode(data, cbor.Limits(max_size=len(data) - 1))


def test_item_bound() -> None:
    data = cbor.encode(list(range(10)))
    assert cbor.decode(data, cbor.Limits(max_items=11)) == list(range(10))
    with pytest.raises(MalformedMessage, match="more than 10"):
        cbor.decode(data, cbor.Limits(max_items=10))


def test_cose_tags_are_accepted_and_others_only_when_named() -> None:
    tagged = cbor.encode(cbor2.CBORTag(18, [b"", {}, b"", b""]))
    assert cbor.decode(tagged).tag == 18
    other = cbor.encode(cbor2.CBORTag(42, b"x"))
    with pytest.raises(MalformedMessage, match="tag 42"):
        cbor.decode(other)
    assert cbor.decode(other, cbor.Limits(allowed_tags=frozenset({42}))).tag == 42


def test_decode_map_refuses_other_types() -> None:
    with pytest.raises(MalformedMessage, match="expected a CBOR map"):
        cbor.decode_map(cbor.encode([1]))


def test_decode_takes_bytes_only() -> None:
    with pytest.raises(LocalProtocolError):
        cbor.decode("a0")  # type: ignore[arg-type]


def test_encoding_is_canonical() -> None:
    # Shorter keys first, then bytewise (RFC 7049 section 3.9), whatever the insertion order.
    assert cbor.encode({"a": 3, 24: 1, 10: 4, -1: 2}).hex() == "a40a042002181801616103"
    assert cbor.encode({24: 1, -1: 2}) == cbor.encode({-1: 2, 24: 1})
    assert cbor.encode(1.5) == h("f9 3e00")  # smallest exact float


def test_encode_refuses_what_cbor_cannot_hold() -> None:
    with pytest.raises(LocalProtocolError):
        cbor.encode(object())


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=64)
    | st.text(max_size=32),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.integers(-100, 100) | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip(value: object) -> None:
    assert cbor.decode(cbor.encode(value), cbor.Limits(max_depth=32)) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_escape_as_anything_but_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        cbor.decode(data)


def test_map_reader_reports_the_field() -> None:
    fields = cbor.MapReader({1: "x", 2: -1, 3: b"ab", 9: 1}, "Thing")
    with pytest.raises(MalformedMessage, match="Thing: field 1 must be a byte string"):
        fields.bstr(1)
    with pytest.raises(MalformedMessage, match="field 2 must be an unsigned integer"):
        fields.uint(2)
    with pytest.raises(MalformedMessage, match="field 3 must be 3 bytes"):
        fields.bstr(3, size=3)
    with pytest.raises(MalformedMessage, match="field 4 is missing"):
        fields.uint(4)
    with pytest.raises(MalformedMessage, match="unknown field"):
        fields.finish()
    assert fields.optional(9) == 1
    fields.finish()
