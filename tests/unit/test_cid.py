"""Content addresses: CIDv1, raw codec, sha2-256, base32."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lichen import cid
from lichen.errors import MalformedMessage


def test_known_vector() -> None:
    assert cid.text_of(b"hello world\n") == (
        "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    )


@given(st.binary(max_size=256))
def test_text_round_trip(data: bytes) -> None:
    raw = cid.of(data)
    assert len(raw) == cid.BINARY_SIZE
    text = cid.to_text(raw)
    assert text.startswith("bafkrei") and len(text) == cid.TEXT_SIZE
    assert cid.from_text(text) == raw


@pytest.mark.parametrize(
    "text",
    [
        "",
        "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei",  # one short
        "Bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",  # no multibase b
        "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2deve!4",  # not base32
        "bafyreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",  # dag-cbor codec
        "QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u",  # CIDv0
    ],
)
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(MalformedMessage):
        cid.from_text(text)


def test_only_the_canonical_spelling_is_accepted() -> None:
    text = cid.text_of(b"hello world\n")
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    # The last character carries 2 spare bits: flipping one spells the same 36 bytes.
    alias = text[:-1] + alphabet[alphabet.index(text[-1]) ^ 1]
    for other in (text.upper(), "b" + text[1:].upper(), text[:-2] + text[-2:].upper(), alias):
        with pytest.raises(MalformedMessage, match="content address"):
            cid.from_text(other)


def test_bad_binary_is_refused() -> None:
    with pytest.raises(MalformedMessage):
        cid.check(b"\x01\x71\x12\x20" + bytes(32))
    with pytest.raises(MalformedMessage):
        cid.digest_to_cid(bytes(31))
