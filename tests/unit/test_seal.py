"""Object encryption (XChaCha20-Poly1305) and read capabilities."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lichen import cid, seal
from lichen.errors import (
    IntegrityError,
    LocalProtocolError,
    MalformedMessage,
    UnsupportedVersion,
)

KEY = bytes(range(32))
NONCE = bytes(24)
PLAINTEXT = b"Lichen keeps your bytes safe."
OTHER_KEY = bytes(range(1, 33))

keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=24, max_size=24)


def test_golden_vector() -> None:
    # Cross-checked when written against an independent XChaCha20-Poly1305: HChaCha20 by hand
    # (draft-irtf-cfrg-xchacha-03 section 2.2.1 vector) plus the `cryptography` package's
    # ChaCha20Poly1305, with associated data b"LS\x01" + nonce.
    sealed = seal.seal(PLAINTEXT, KEY, NONCE)
    assert sealed.hex() == (
        "4c5301" + "00" * 24 + "d96fefaf89e6c57273eb0f4acc6f519f4e9ccfea0ef53e2bb88cf338f9"
        "b2904f397230aba906cc1173f014dd19"
    )
    assert seal.unseal(sealed, KEY) == PLAINTEXT


def test_golden_vector_with_aad() -> None:
    sealed = seal.seal(PLAINTEXT, KEY, NONCE, aad=b"lichen/object")
    assert sealed.hex() == (
        "4c5301" + "00" * 24 + "d96fefaf89e6c57273eb0f4acc6f519f4e9ccfea0ef53e2bb88cf338f9"
        "1ada2009da27c97fdeab32f7b854ee90"
    )


def test_layout_is_header_nonce_ciphertext_tag() -> None:
    nonce = bytes(range(100, 124))
    sealed = seal.seal(PLAINTEXT, KEY, nonce)
    assert sealed[:3] == b"LS\x01"
    assert sealed[3 : seal.HEADER_SIZE] == nonce
    assert len(sealed) == seal.sealed_size(len(PLAINTEXT)) == len(PLAINTEXT) + seal.OVERHEAD
    assert seal.OVERHEAD == 3 + 24 + 16


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2048), keys, nonces, st.binary(max_size=64))
def test_round_trip(plaintext: bytes, key: bytes, nonce: bytes, aad: bytes) -> None:
    sealed = seal.seal(plaintext, key, nonce, aad)
    assert len(sealed) == seal.sealed_size(len(plaintext))
    assert seal.unseal(sealed, key, aad) == plaintext


def test_round_trip_of_bytes_like_inputs() -> None:
    sealed = seal.seal(bytearray(PLAINTEXT), KEY, NONCE, memoryview(b"ad"))
    assert seal.unseal(memoryview(sealed), KEY, bytearray(b"ad")) == PLAINTEXT
    assert seal.unseal(bytearray(sealed), KEY, b"ad") == PLAINTEXT


def test_empty_plaintext_round_trips() -> None:
    sealed = seal.seal(b"", KEY, NONCE)
    assert len(sealed) == seal.OVERHEAD
    assert seal.unseal(sealed, KEY) == b""


def test_every_single_bit_flip_is_caught() -> None:
    sealed = seal.seal(b"0123456789", KEY, NONCE, aad=b"ctx")
    for bit in range(len(sealed) * 8):
        tampered = bytearray(sealed)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises((IntegrityError, MalformedMessage, UnsupportedVersion)):
            seal.unseal(bytes(tampered), KEY, aad=b"ctx")


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=512), st.data())
def test_a_flipped_bit_anywhere_is_caught(plaintext: bytes, data: st.DataObject) -> None:
    sealed = seal.seal(plaintext, KEY, NONCE)
    bit = data.draw(st.integers(0, len(sealed) * 8 - 1))
    tampered = bytearray(sealed)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises((IntegrityError, MalformedMessage, UnsupportedVersion)):
        seal.unseal(bytes(tampered), KEY)


def test_flips_past_the_header_are_integrity_errors_with_a_clear_message() -> None:
    sealed = seal.seal(PLAINTEXT, KEY, NONCE)
    for position in (3, 26, 27, len(sealed) - 17, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[position] ^= 0x80
        with pytest.raises(IntegrityError, match="wrong key or the data was altered"):
            seal.unseal(bytes(tampered), KEY)


def test_wrong_key_is_an_integrity_error() -> None:
    sealed = seal.seal(PLAINTEXT, KEY, NONCE)
    with pytest.raises(IntegrityError) as caught:
        seal.unseal(sealed, OTHER_KEY)
    assert str(caught.value) == "cannot decrypt: wrong key or the data was altered"


def test_wrong_or_missing_aad_is_an_integrity_error() -> None:
    sealed = seal.seal(PLAINTEXT, KEY, NONCE, aad=b"object-1")
    with pytest.raises(IntegrityError):
        seal.unseal(sealed, KEY, aad=b"object-2")
    with pytest.raises(IntegrityError):
        seal.unseal(sealed, KEY)
    with pytest.raises(IntegrityError):
        seal.unseal(seal.seal(PLAINTEXT, KEY, NONCE), KEY, aad=b"object-1")


def test_every_truncation_is_refused() -> None:
    sealed = seal.seal(PLAINTEXT, KEY, NONCE)
    for length in range(len(sealed)):
        expected = MalformedMessage if length < seal.OVERHEAD else IntegrityError
        with pytest.raises(expected):
            seal.unseal(sealed[:length], KEY)


def test_appended_bytes_are_refused() -> None:
    with pytest.raises(IntegrityError):
        seal.unseal(seal.seal(PLAINTEXT, KEY, NONCE) + b"\x00", KEY)


def test_a_swapped_nonce_is_refused() -> None:
    sealed = seal.seal(PLAINTEXT, KEY, NONCE)
    moved = sealed[:3] + bytes([1]) + sealed[4:]
    with pytest.raises(IntegrityError):
        seal.unseal(moved, KEY)


def test_bad_magic_is_malformed() -> None:
    sealed = seal.seal(PLAINTEXT, KEY, NONCE)
    with pytest.raises(MalformedMessage, match="magic"):
        seal.unseal(b"XS" + sealed[2:], KEY)
    with pytest.raises(MalformedMessage):
        seal.unseal(bytes(100), KEY)


def test_unknown_version_is_unsupported() -> None:
    sealed = seal.seal(PLAINTEXT, KEY, NONCE)
    with pytest.raises(UnsupportedVersion, match="version 2"):
        seal.unseal(b"LS\x02" + sealed[3:], KEY)


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(33), "k" * 32, None])
def test_a_key_of_the_wrong_size_or_type_is_a_local_error(key: object) -> None:
    with pytest.raises(LocalProtocolError, match="key"):
        seal.seal(PLAINTEXT, key, NONCE)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="key"):
        seal.unseal(seal.seal(PLAINTEXT, KEY, NONCE), key)  # type: ignore[arg-type]


@pytest.mark.parametrize("nonce", [b"", bytes(12), bytes(23), bytes(25), bytearray(24), None])
def test_a_nonce_of_the_wrong_size_or_type_is_a_local_error(nonce: object) -> None:
    with pytest.raises(LocalProtocolError, match="nonce"):
        seal.seal(PLAINTEXT, KEY, nonce)  # type: ignore[arg-type]


def test_non_bytes_inputs_are_local_errors() -> None:
    with pytest.raises(LocalProtocolError, match="plaintext"):
        seal.seal("text", KEY, NONCE)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="aad"):
        seal.seal(PLAINTEXT, KEY, NONCE, aad="ctx")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="sealed"):
        seal.unseal("LS", KEY)  # type: ignore[arg-type]


def test_sealed_size() -> None:
    assert seal.sealed_size(0) == 43
    assert seal.sealed_size(64 * 2**20) == 64 * 2**20 + 43
    for bad in (-1, 1.5, True, None):
        with pytest.raises(LocalProtocolError):
            seal.sealed_size(bad)  # type: ignore[arg-type]


# Read capabilities

CID = cid.of(b"hello world\n")
CAPABILITY_TEXT = (
    "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    "#AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
)


def test_capability_golden_text() -> None:
    capability = seal.ReadCapability(CID, KEY)
    assert capability.to_text() == CAPABILITY_TEXT
    assert len(CAPABILITY_TEXT) == seal.CAPABILITY_TEXT_SIZE
    assert seal.ReadCapability.parse(CAPABILITY_TEXT) == capability


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64), keys)
def test_capability_round_trip(data: bytes, key: bytes) -> None:
    capability = seal.ReadCapability(cid.of(data), key)
    text = capability.to_text()
    assert "=" not in text and "+" not in text and "/" not in text
    assert seal.ReadCapability.parse(text) == capability


def test_capability_repr_does_not_show_the_key() -> None:
    capability = seal.ReadCapability(CID, bytes([0xAB]) * 32)
    assert "ab" * 4 not in repr(capability) and "\\xab" not in repr(capability)
    assert "key" not in repr(capability)


def test_capability_is_frozen() -> None:
    capability = seal.ReadCapability(CID, KEY)
    with pytest.raises(AttributeError):
        capability.key = OTHER_KEY  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    [
        "",
        CAPABILITY_TEXT[:-1],  # key one character short
        CAPABILITY_TEXT + "A",  # one character too many
        CAPABILITY_TEXT.replace("#", "!"),  # no separator
        CAPABILITY_TEXT.replace("#", "") + "A",  # right length, no separator
        CAPABILITY_TEXT[:-1] + "=",  # padding character
        CAPABILITY_TEXT[:-2] + "+8",  # standard base64, not base64url
        CAPABILITY_TEXT[:-1] + "9",  # last character sets the 2 unused bits: not canonical
        CAPABILITY_TEXT[:-1] + "é",  # not ASCII
        "B" + CAPABILITY_TEXT[1:],  # no multibase prefix
        CAPABILITY_TEXT.replace("bafkrei", "bafyrei", 1),  # not a raw-codec CID
        CAPABILITY_TEXT[:10] + "#" + CAPABILITY_TEXT[11:],  # separator inside the CID
        "x" * 10_000,  # oversize
    ],
)
def test_bad_capabilities_are_malformed(text: str) -> None:
    with pytest.raises(MalformedMessage):
        seal.ReadCapability.parse(text)


def test_parse_errors_never_echo_the_key() -> None:
    key_text = CAPABILITY_TEXT.split("#")[1]
    for text in (CAPABILITY_TEXT[:-1] + "9", CAPABILITY_TEXT + "A", CAPABILITY_TEXT[:-1] + "="):
        with pytest.raises(MalformedMessage) as caught:
            seal.ReadCapability.parse(text)
        assert key_text[:20] not in str(caught.value)


def test_a_non_canonical_key_spelling_is_refused() -> None:
    with pytest.raises(MalformedMessage, match="canonical"):
        seal.ReadCapability.parse(CAPABILITY_TEXT[:-1] + "9")


def test_parse_of_a_non_string_is_malformed() -> None:
    with pytest.raises(MalformedMessage):
        seal.ReadCapability.parse(CAPABILITY_TEXT.encode())  # type: ignore[arg-type]


def test_constructing_a_bad_capability_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        seal.ReadCapability(b"\x01\x71\x12\x20" + bytes(32), KEY)
    with pytest.raises(LocalProtocolError):
        seal.ReadCapability(CID, bytes(16))
    with pytest.raises(LocalProtocolError):
        seal.ReadCapability(cid.to_text(CID), KEY)  # type: ignore[arg-type]


def test_a_capability_opens_what_was_sealed_under_it() -> None:
    sealed = seal.seal(PLAINTEXT, KEY, NONCE)
    capability = seal.ReadCapability.parse(seal.ReadCapability(cid.of(sealed), KEY).to_text())
    assert capability.cid == cid.of(sealed)
    assert seal.unseal(sealed, capability.key) == PLAINTEXT


def test_object_keys_are_derived_per_nonce_and_golden() -> None:
    master = bytes(range(32))
    first = seal.object_key(master, bytes(24))
    assert first.hex() == OBJECT_KEY_HEX
    assert seal.object_key(master, b"\x01" + bytes(23)) != first
    assert seal.object_key(bytes(32), bytes(24)) != first
    sealed = seal.seal(b"data", first, bytes(24))
    assert seal.nonce_of(sealed) == bytes(24)
    assert seal.unseal(sealed, seal.object_key(master, seal.nonce_of(sealed))) == b"data"
    with pytest.raises(MalformedMessage):
        seal.nonce_of(b"XX" + bytes(60))
    with pytest.raises(LocalProtocolError):
        seal.object_key(master, b"short")


OBJECT_KEY_HEX = "18e2086ea7279d3655cdda6f58d2683ff07c7f7661e1ecadbd95823772fd6ef9"
