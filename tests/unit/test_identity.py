"""Node identities and the signed-nonce handshake."""

from __future__ import annotations

import pytest

from lichen import cbor, identity, wire
from lichen.errors import BadSignature, LocalProtocolError, MalformedMessage, UnsupportedVersion

ALICE = identity.Identity(bytes(range(32)))
BOB = identity.Identity(bytes(range(1, 33)))
NONCE = bytes(range(100, 132))


def test_node_id_is_derived_from_the_public_key() -> None:
    assert ALICE.node_id == "kzdvvj2umnduyauf35o36k6kw462mujv"
    assert identity.parse_node_id(ALICE.node_id) == ALICE.kid
    assert identity.PublicIdentity(ALICE.public.public_key).node_id == ALICE.node_id
    assert ALICE.node_id != BOB.node_id
    assert "kzdvvj2u" in repr(ALICE) and ALICE.seed.hex() not in repr(ALICE)


@pytest.mark.parametrize("text", ["", "short", "!" * 32, 42])
def test_bad_node_ids_are_refused(text: object) -> None:
    with pytest.raises(MalformedMessage):
        identity.parse_node_id(text)  # type: ignore[arg-type]


def test_only_the_lowercase_node_id_is_accepted() -> None:
    for other in (ALICE.node_id.upper(), ALICE.node_id[:-1] + ALICE.node_id[-1].upper()):
        with pytest.raises(MalformedMessage, match="canonical"):
            identity.parse_node_id(other)


def test_bad_keys_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        identity.Identity(b"short")
    with pytest.raises(LocalProtocolError):
        identity.PublicIdentity(b"\x00" * 31)


def test_hello_golden_vector() -> None:
    # Ed25519 signatures are deterministic, so the whole message is a fixed vector.
    assert identity.make_hello(ALICE, NONCE, BOB.kid).hex() == (
        "a600010101025820"
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        "035820"
        "6465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80818283"
        "0454"
        "65b60673d6ed884bf01c2c222d82ada0740f29ac"
        "055840"
        "352ba05d04d7e59cd0c92a580fbcd207f1c0075b5471e0c1f05e0f643e6f141e"
        "44573064e1e75515596754c42805235688700777504c80a124947e9933e5c108"
    )


def test_hello_proves_the_key() -> None:
    hello = identity.make_hello(ALICE, NONCE, BOB.kid)
    peer = identity.verify_hello(hello, nonce=NONCE, audience=BOB.kid)
    assert peer == ALICE.public
    assert identity.verify_hello(
        hello, nonce=NONCE, audience=BOB.kid, expected_node_id=ALICE.node_id
    )


def test_hello_for_another_nonce_is_refused() -> None:
    hello = identity.make_hello(ALICE, NONCE, BOB.kid)
    with pytest.raises(BadSignature, match="another nonce"):
        identity.verify_hello(hello, nonce=bytes(32), audience=BOB.kid)


def test_hello_relayed_to_another_node_is_refused() -> None:
    hello = identity.make_hello(ALICE, NONCE, BOB.kid)
    with pytest.raises(BadSignature, match="addressed to another node"):
        identity.verify_hello(hello, nonce=NONCE, audience=ALICE.kid)


def test_advert_whose_key_does_not_match_the_handshake_is_refused() -> None:
    hello = identity.make_hello(ALICE, NONCE, BOB.kid)
    with pytest.raises(BadSignature, match="advertised node id"):
        identity.verify_hello(hello, nonce=NONCE, audience=BOB.kid, expected_node_id=BOB.node_id)


def test_hello_with_a_swapped_key_is_refused() -> None:
    fields = cbor.decode_map(identity.make_hello(ALICE, NONCE, BOB.kid))
    fields[2] = BOB.public.public_key  # claim Bob's key with Alice's signature
    with pytest.raises(BadSignature):
        identity.verify_hello(cbor.encode(fields), nonce=NONCE, audience=BOB.kid)


def test_hello_with_a_flipped_signature_bit_is_refused() -> None:
    hello = bytearray(identity.make_hello(ALICE, NONCE, BOB.kid))
    hello[-1] ^= 1
    with pytest.raises(BadSignature):
        identity.verify_hello(bytes(hello), nonce=NONCE, audience=BOB.kid)


def test_malformed_hellos_are_refused() -> None:
    good = cbor.decode_map(identity.make_hello(ALICE, NONCE, BOB.kid))
    for broken, error in [
        ({**good, 0: 2}, UnsupportedVersion),
        ({**good, 1: int(wire.Kind.MANIFEST)}, MalformedMessage),
        ({k: v for k, v in good.items() if k != 5}, MalformedMessage),
        ({**good, 9: 1}, MalformedMessage),
        ({**good, 2: b"\x00" * 31}, MalformedMessage),
    ]:
        with pytest.raises(error):
            identity.verify_hello(cbor.encode(broken), nonce=NONCE, audience=BOB.kid)


def test_make_hello_refuses_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        identity.make_hello(ALICE, b"short", BOB.kid)
    with pytest.raises(LocalProtocolError):
        identity.make_hello(ALICE, NONCE, b"x")
