"""COSE_Sign1 and COSE_Mac0, including interop with an independent implementation (pycose)."""

from __future__ import annotations

import cbor2
import pytest
from pycose.algorithms import HMAC256, EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey, SymmetricKey
from pycose.keys.curves import Ed25519
from pycose.messages import CoseMessage, Mac0Message, Sign1Message

from lichen import cbor, cose, identity
from lichen.errors import BadMac, BadSignature, LocalProtocolError, MalformedMessage
from tests.forge import sign_as

ALICE = identity.Identity(bytes(range(32)))
BOB = identity.Identity(bytes(range(1, 33)))
MAC_KEY = bytes(range(32))


def test_sign1_golden_vector() -> None:
    assert cose.sign1(b"hello", ALICE).hex() == (
        "d28443a10127a1045456475aa75463474c0285df5dbf2bcab73da65135456865"
        "6c6c6f5840aa69e774ba8a17c884b10edd16c7d74a0a5f5d0fc6500505fbec4f"
        "ce1db5b787eb5fff94ab869d2d8d8d8b19d81c8264c151445cf24298b919cfe6"
        "8511576b07"
    )


def test_mac0_golden_vector() -> None:
    # What the MicroPython sensor must produce byte for byte for the same key and payload.
    assert cose.mac0(b"reading", MAC_KEY, b"s1").hex() == (
        "d18443a10105a1044273314772656164696e675820"
        "a5c46b0463ba7893721a461225289a5834274b17f5dff4c54415021fdd24d680"
    )


def test_sign1_round_trip_and_signer_lookup() -> None:
    message = cose.sign1(b"payload", ALICE, external_aad=b"ctx")
    signer, payload = cose.open_signed(message, ALICE.public, external_aad=b"ctx")
    assert (signer, payload) == (ALICE.public, b"payload")
    keys = {ALICE.kid: ALICE.public}
    assert cose.open_signed(message, keys.get, external_aad=b"ctx")[1] == b"payload"


def test_sign1_wrong_key_is_refused() -> None:
    message = cose.sign1(b"payload", ALICE)
    with pytest.raises(BadSignature, match="kid"):
        cose.open_signed(message, BOB.public)


def test_sign1_forged_by_another_key_under_the_right_kid_is_refused() -> None:
    forged = sign_as(b"payload", BOB, ALICE.kid)
    assert (cose.parse(forged).kid, cose.parse(forged).payload) == (ALICE.kid, b"payload")
    with pytest.raises(BadSignature):
        cose.open_signed(forged, ALICE.public)


def test_sign1_unknown_signer_is_refused() -> None:
    with pytest.raises(BadSignature, match="unknown kid"):
        cose.open_signed(cose.sign1(b"p", ALICE), lambda kid: None)


def test_sign1_wrong_external_aad_is_refused() -> None:
    with pytest.raises(BadSignature):
        cose.open_signed(cose.sign1(b"p", ALICE, external_aad=b"a"), ALICE.public)


def test_every_flipped_bit_of_a_sign1_is_caught() -> None:
    message = cose.sign1(b"payload", ALICE)
    for i in range(len(message) * 8):
        damaged = bytearray(message)
        damaged[i // 8] ^= 1 << (i % 8)
        with pytest.raises((BadSignature, MalformedMessage)):
            cose.open_signed(bytes(damaged), ALICE.public)


def test_mac0_round_trip_and_wrong_key() -> None:
    message = cose.parse(cose.mac0(b"reading", MAC_KEY, b"s1"))
    assert message.kid == b"s1"
    assert message.verify_mac(MAC_KEY) == b"reading"
    with pytest.raises(BadMac):
        message.verify_mac(bytes(32))


def test_every_flipped_bit_of_a_mac0_is_caught() -> None:
    data = cose.mac0(b"reading", MAC_KEY, b"s1")
    for i in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[i // 8] ^= 1 << (i % 8)
        keys = {b"s1": MAC_KEY}
        try:
            parsed = cose.parse(bytes(damaged))
        except MalformedMessage:
            continue
        key = keys.get(parsed.kid)
        if key is None:  # a damaged kid names a sensor nobody enrolled: refused by lookup
            assert parsed.kid != b"s1"
            continue
        with pytest.raises(BadMac):
            parsed.verify_mac(key)


@pytest.mark.parametrize(
    "body",
    [
        [cbor.encode({1: -7}), {4: b"k"}, b"p", b"\x00" * 64],  # ES256: not ours
        [cbor.encode({1: -8}), {4: b"k", 1: -8}, b"p", b"\x00" * 64],  # alg unprotected
        [cbor.encode({1: -8}), {}, b"p", b"\x00" * 64],  # no kid
        [cbor.encode({1: -8}), {4: b"k"}, None, b"\x00" * 64],  # detached payload
        [cbor.encode({1: -8}), {4: b"k"}, b"p", b"\x00" * 63],  # short signature
        [cbor.encode({1: -8}), {4: b"k"}, b"p"],  # three items
        [b"\xff", {4: b"k"}, b"p", b"\x00" * 64],  # protected header not CBOR
    ],
)
def test_malformed_sign1_is_refused(body: list[object]) -> None:
    with pytest.raises(MalformedMessage):
        cose.open_signed(cbor.encode(cbor2.CBORTag(18, body)), ALICE.public)


def test_untagged_and_mac_where_sign_expected_are_refused() -> None:
    with pytest.raises(MalformedMessage, match="tagged"):
        cose.parse(cbor.encode([b"", {}, b"", b""]))
    with pytest.raises(MalformedMessage, match="got a COSE_Mac0"):
        cose.open_signed(cose.mac0(b"p", MAC_KEY, b"s1"), ALICE.public)
    with pytest.raises(LocalProtocolError):
        cose.parse(cose.mac0(b"p", MAC_KEY, b"s1")).verify_signature(ALICE.public)


def test_alg_minus_19_is_accepted() -> None:
    protected = cbor.encode({cose.HEADER_ALG: cose.ALG_ED25519})
    to_sign = cbor.encode(["Signature1", protected, b"", b"p"])
    message = cbor2.CBORTag(18, [protected, {4: ALICE.kid}, b"p", ALICE.sign(to_sign)])
    assert cose.open_signed(cbor.encode(message), ALICE.public)[1] == b"p"


def test_pycose_verifies_what_we_sign() -> None:
    decoded = CoseMessage.decode(cose.sign1(b"interop", ALICE))
    decoded.key = OKPKey(crv=Ed25519, x=ALICE.public.public_key)
    assert decoded.verify_signature()
    assert decoded.payload == b"interop"


def test_we_verify_what_pycose_signs() -> None:
    message = Sign1Message(phdr={Algorithm: EdDSA}, uhdr={KID: ALICE.kid}, payload=b"theirs")
    message.key = OKPKey(crv=Ed25519, d=ALICE.seed, x=ALICE.public.public_key)
    assert cose.open_signed(message.encode(), ALICE.public)[1] == b"theirs"


def test_mac0_interop_with_pycose_both_ways() -> None:
    ours = cose.mac0(b"r", MAC_KEY, b"s1")
    decoded = CoseMessage.decode(ours)
    decoded.key = SymmetricKey(k=MAC_KEY)
    assert decoded.verify_tag()
    theirs = Mac0Message(phdr={Algorithm: HMAC256}, uhdr={KID: b"s1"}, payload=b"r")
    theirs.key = SymmetricKey(k=MAC_KEY)
    assert cose.parse(theirs.encode()).verify_mac(MAC_KEY) == b"r"


def test_mac0_refuses_weak_keys_and_bad_kids() -> None:
    with pytest.raises(LocalProtocolError):
        cose.mac0(b"p", b"short", b"s1")
    with pytest.raises(LocalProtocolError):
        cose.mac0(b"p", MAC_KEY, b"")


def test_mac0_with_a_counter_golden_and_round_trip() -> None:
    message = cose.mac0(b"reading", MAC_KEY, b"s1", counter=258)
    # What the MicroPython sensor must send, byte for byte, for message 258.
    assert message.hex() == (
        "d18447a2010506420102a1044273314772656164696e675820"
        "8c7497c51c3e69caac7e24ddec661f44ae06484d0704f203dc5994320f04f44f"
    )
    parsed = cose.parse(message)
    assert parsed.counter == 258
    assert parsed.verify_mac(MAC_KEY) == b"reading"
    assert cose.parse(cose.mac0(b"r", MAC_KEY, b"s1", counter=0)).counter == 0
    assert cose.parse(cose.mac0(b"r", MAC_KEY, b"s1")).counter is None
    assert cose.counter_bytes(0) == b"\x00" and cose.counter_bytes(256) == b"\x01\x00"


def test_mac0_counter_is_covered_by_the_tag() -> None:
    message = cbor.decode(cose.mac0(b"reading", MAC_KEY, b"s1", counter=7))
    message.value[0] = cbor.encode({1: 5, 6: b"\x08"})  # replay it as counter 8
    parsed = cose.parse(cbor.encode(message))
    assert parsed.counter == 8
    with pytest.raises(BadMac):
        parsed.verify_mac(MAC_KEY)


def test_unprotected_or_oversize_counter_is_refused() -> None:
    tag = bytes(32)
    for body in (
        [cbor.encode({1: 5}), {4: b"s1", 6: b"\x01"}, b"p", tag],
        [cbor.encode({1: 5, 6: bytes(9)}), {4: b"s1"}, b"p", tag],
        [cbor.encode({1: 5, 6: 3}), {4: b"s1"}, b"p", tag],
    ):
        with pytest.raises(MalformedMessage, match="Partial IV"):
            cose.parse(cbor.encode(cbor2.CBORTag(17, body)))


def test_pycose_verifies_a_mac0_with_a_counter() -> None:
    decoded = CoseMessage.decode(cose.mac0(b"r", MAC_KEY, b"s1", counter=99))
    decoded.key = SymmetricKey(k=MAC_KEY)
    assert decoded.verify_tag()
