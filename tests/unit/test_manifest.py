"""Owner-signed manifests and holder-signed receipts."""

from __future__ import annotations

import dataclasses

import pytest

from lichen import cbor, cid, cose, manifest, wire
from lichen.errors import BadSignature, LocalProtocolError, MalformedMessage
from lichen.identity import Identity

OWNER = Identity(bytes(range(32)))
HOLDER = Identity(bytes(range(1, 33)))
OTHER = Identity(bytes(range(2, 34)))
OBJECT = cid.of(b"sealed object bytes")


def make_manifest(**changes: object) -> manifest.Manifest:
    fields: dict[str, object] = dict(
        object_cid=OBJECT,
        size=1000,
        codec="zfec-rs/1",
        k=2,
        n=3,
        piece_size=500,
        block_size=16384,
        roots=(b"\x01" * 32, b"\x02" * 32, b"\x03" * 32),
        holders=(HOLDER.kid, OTHER.kid, OWNER.kid),
        created=1_700_000_000,
        expiry=1_800_000_000,
        owner=OWNER.public.public_key,
        label="notes.txt",
    )
    fields.update(changes)
    return manifest.Manifest(**fields)  # type: ignore[arg-type]


def make_receipt(**changes: object) -> manifest.Receipt:
    fields: dict[str, object] = dict(
        object_cid=OBJECT,
        index=0,
        root=b"\x01" * 32,
        piece_size=500,
        expiry=1_800_000_000,
        accepted_at=1_700_000_001,
        holder=HOLDER.kid,
        owner=OWNER.kid,
    )
    fields.update(changes)
    return manifest.Receipt(**fields)  # type: ignore[arg-type]


def test_manifest_golden_payload() -> None:
    assert make_manifest().to_payload().hex() == (
        "af0001010302582401551220897852a43a15ef4177a00fd77aff36e5a5088fa7"
        "8f8d9ac8fc2f9c10df7fd577031903e804697a6665632d72732f310502060307"
        "1901f40819400009835820010101010101010101010101010101010101010101"
        "0101010101010101010101582002020202020202020202020202020202020202"
        "0202020202020202020202020258200303030303030303030303030303030303"
        "0303030303030303030303030303030a835465b60673d6ed884bf01c2c222d82"
        "ada0740f29ac54947561e3eb43b38b2d5f7c2f6a74f30b97a168a35456475aa7"
        "5463474c0285df5dbf2bcab73da651350b1a6553f1000c1a6b49d2000d582003"
        "a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b80e"
        "696e6f7465732e747874"
    )


def test_manifest_round_trip() -> None:
    m = make_manifest()
    opened = manifest.open_manifest(m.sign(OWNER))
    assert opened == m
    assert opened.cid_text.startswith("bafkrei")
    assert opened.holders[0] == HOLDER.kid


def test_manifest_without_label_round_trips() -> None:
    m = make_manifest(label=None)
    assert manifest.open_manifest(m.sign(OWNER)) == m


def test_manifest_signed_by_someone_else_is_refused() -> None:
    m = make_manifest()
    with pytest.raises(LocalProtocolError):
        m.sign(HOLDER)
    # A forger who swaps the owner key for their own must also re-sign: we check the
    # signature against the key in the payload, and the kid against that key.
    forged = dataclasses.replace(m, owner=HOLDER.public.public_key)
    message = cbor.decode(cose.sign1(forged.to_payload(), OWNER))
    with pytest.raises(BadSignature):
        manifest.open_manifest(cbor.encode(message))


def test_tampered_manifest_is_refused() -> None:
    message = cbor.decode(make_manifest().sign(OWNER))
    payload = cbor.decode_map(message.value[2])
    payload[14] = "payroll.xls"  # rename it, keeping the signature over "notes.txt"
    message.value[2] = cbor.encode(payload)
    with pytest.raises(BadSignature):
        manifest.open_manifest(cbor.encode(message))


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        (dict(k=4), "k <= n"),
        (dict(k=0), "k <= n"),
        (dict(roots=(b"\x01" * 32,)), "one root"),
        (dict(holders=(b"x" * 20,) * 2), "one root and one holder"),
        (dict(roots=(b"\x01" * 31, b"\x02" * 32, b"\x03" * 32)), "32 bytes"),
        (dict(piece_size=499), "cannot hold"),
        (dict(expiry=1), "expires before"),
        (dict(label="x" * 257), "label"),
        (dict(object_cid=b"\x00" * 36), "CIDv1"),
    ],
)
def test_invalid_manifests_cannot_be_built(changes: dict[str, object], why: str) -> None:
    with pytest.raises(LocalProtocolError, match=why):
        make_manifest(**changes)


def test_invalid_manifest_from_the_wire_is_the_peers_fault() -> None:
    payload = cbor.decode_map(make_manifest().to_payload())
    payload[5] = 9  # k > n
    with pytest.raises(MalformedMessage, match="k <= n"):
        manifest.open_manifest(cose.sign1(cbor.encode(payload), OWNER))
    payload = cbor.decode_map(make_manifest().to_payload())
    payload[9] = [1, 2, 3]
    with pytest.raises(MalformedMessage, match="byte strings"):
        manifest.open_manifest(cose.sign1(cbor.encode(payload), OWNER))
    payload = cbor.decode_map(make_manifest().to_payload())
    payload[1] = int(wire.Kind.RECEIPT)
    with pytest.raises(MalformedMessage, match="MANIFEST"):
        manifest.open_manifest(cose.sign1(cbor.encode(payload), OWNER))


def test_oversize_manifest_is_refused() -> None:
    with pytest.raises(MalformedMessage, match="exceeds"):
        manifest.open_manifest(b"\xd2" + cbor.encode([b"", {}, b"x" * 40_000, b"s" * 64]))


def test_receipt_round_trip_and_lookup() -> None:
    r = make_receipt()
    signed = r.sign(HOLDER)
    assert manifest.open_receipt(signed, HOLDER.public) == r
    enrolled = {HOLDER.kid: HOLDER.public}
    assert manifest.open_receipt(signed, enrolled.get) == r
    manifest.check_receipt_matches(r, make_manifest())


def test_receipt_signed_by_the_wrong_key_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        make_receipt().sign(OTHER)
    forged = cose.sign1(make_receipt().to_payload(), OTHER)  # OTHER claims HOLDER's receipt
    with pytest.raises(BadSignature):
        manifest.open_receipt(forged, HOLDER.public)
    with pytest.raises(BadSignature, match="holder other than its signer"):
        manifest.open_receipt(forged, OTHER.public)


def test_receipt_from_an_unenrolled_key_is_refused() -> None:
    with pytest.raises(BadSignature, match="unknown kid"):
        manifest.open_receipt(make_receipt().sign(HOLDER), {}.get)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        (dict(object_cid=cid.of(b"other")), "another object"),
        (dict(index=5), "shard 5"),
        (dict(root=b"\x09" * 32), "does not match"),
        (dict(piece_size=1), "size does not match"),
    ],
)
def test_receipt_for_a_shard_never_placed_is_refused(changes: dict[str, object], why: str) -> None:
    with pytest.raises(MalformedMessage, match=why):
        manifest.check_receipt_matches(make_receipt(**changes), make_manifest())


def test_receipt_golden_vector() -> None:
    assert make_receipt().sign(HOLDER).hex() == RECEIPT_HEX


RECEIPT_HEX = (
    "d28443a10127a1045465b60673d6ed884bf01c2c222d82ada0740f29ac588daa"
    "0001010402582401551220897852a43a15ef4177a00fd77aff36e5a5088fa78f"
    "8d9ac8fc2f9c10df7fd577030004582001010101010101010101010101010101"
    "01010101010101010101010101010101051901f4061a6b49d200071a6553f101"
    "085465b60673d6ed884bf01c2c222d82ada0740f29ac095456475aa75463474c"
    "0285df5dbf2bcab73da651355840c56b3ad8ebf5111ad06bb25d06e58b578456"
    "67038f0eddabea68981a2a6b8d3fb81f2f2e8e33386ae37e53f52ea7e8af527c"
    "c5a799dc0d7d5468f1c9a2452c06"
)


def test_unverified_receipt_parse_checks_framing_not_signature() -> None:
    signed = make_receipt().sign(HOLDER)
    assert manifest.parse_receipt_unverified(signed) == make_receipt()
    with pytest.raises(MalformedMessage, match="holder other than its signer"):
        manifest.parse_receipt_unverified(cose.sign1(make_receipt().to_payload(), OTHER))
    with pytest.raises(MalformedMessage, match="COSE_Sign1"):
        manifest.parse_receipt_unverified(cose.mac0(make_receipt().to_payload(), bytes(32), b"k"))
