"""The hub <-> agent control plane: topics, message formats, golden vectors and refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Sequence
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lichen import audit, cbor, cose, hubwire, manifest, objects, proofs, wire
from lichen.errors import (
    BadMac,
    BadSignature,
    IntegrityError,
    LocalProtocolError,
    MalformedMessage,
    NotAuthorised,
    RemoteProtocolError,
    UnsupportedVersion,
)
from lichen.holder import receipt_for
from lichen.hubmessages import (
    MAX_BATCH_RECEIPTS,
    ChallengeMessage,
    Endpoint,
    Join,
    Joined,
    ProofMessage,
    ReceiptBatch,
    Repaired,
    RepairOrder,
    RepairSource,
    RepairTarget,
    Status,
    join_mac,
    make_join,
    make_joined,
    make_receipts,
    new_token,
    receipt_batches,
)
from lichen.hubwire import (
    CheckedRepair,
    KnownDevice,
    Name,
    open_from_agent,
    open_from_hub,
    parse_topic,
    topic,
)
from lichen.identity import Identity
from lichen.testing.holder import MemoryHolder
from tests.forge import sign_as

HUB = Identity(bytes(range(32)))
A = Identity(bytes(range(1, 33)))
B = Identity(bytes(range(2, 34)))
TOKEN = "join-token-0123456789abcdef"
NOW = 1_700_000_000
SESSION = bytes(range(8))
BLOCK = 512


def devices(*known: Identity, revoked: Sequence[Identity] = ()) -> Any:
    table = {i.node_id: KnownDevice(i.public) for i in known}
    table |= {i.node_id: KnownDevice(i.public, revoked=True) for i in revoked}
    return table.get


ENROLLED = devices(A, B)


def on(identity: Identity, name: Name) -> str:
    return topic(identity.node_id, name)


@dataclasses.dataclass(frozen=True)
class Stored:
    """An object written by ``owner``: its shards, signed manifest and one signed receipt each."""

    encoded: objects.EncodedObject
    signed_manifest: bytes
    manifest: manifest.Manifest
    receipts: tuple[bytes, ...]

    @property
    def headers(self) -> list[bytes]:
        return [s.signed_header for s in self.encoded.shards]


def store(owner: Identity, holder: Identity, seed: int = 0) -> Stored:
    encoded = objects.encode_object(
        bytes([seed]) * 3000,
        key=bytes(32),
        nonce=bytes([seed]) * 24,
        k=2,
        n=3,
        owner=owner,
        expiry=NOW + 86400,
        block_size=BLOCK,
    )
    m = objects.make_manifest(encoded, [holder.kid] * 3, owner=owner, created=NOW)
    receipts = tuple(receipt_for(s.header, holder, NOW).sign(holder) for s in encoded.shards)
    return Stored(encoded, m.sign(owner), m, receipts)


OBJ = store(A, A)  # A wrote it and holds every shard, so A can send all of it
OTHER_OBJ = store(B, A, seed=1)  # B wrote it, A holds it


# --- topics -------------------------------------------------------------------------------


def test_topic_round_trip() -> None:
    text = topic(A.node_id, Name.STATUS)
    assert text == f"lichen/v1/{A.node_id}/status"
    assert parse_topic(text) == (A.node_id, Name.STATUS)
    assert topic(A.node_id, "proof") == f"lichen/v1/{A.node_id}/proof"


def test_subscriptions() -> None:
    assert hubwire.hub_subscriptions() == (
        "lichen/v1/+/join",
        "lichen/v1/+/proof",
        "lichen/v1/+/receipts",
        "lichen/v1/+/repaired",
        "lichen/v1/+/status",
        "lichen/v1/+/streams",
    )
    assert hubwire.agent_subscriptions(A.node_id) == tuple(
        f"lichen/v1/{A.node_id}/{n}" for n in ("challenge", "joined", "repair")
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "lichen/v1",
        f"lichen/v2/{A.node_id}/status",
        f"other/v1/{A.node_id}/status",
        f"lichen/v1/{A.node_id.upper()}/status",
        f"lichen/v1/{A.node_id[:-1]}/status",
        f"lichen/v1/{A.node_id[:-1]}1/status",
        f"lichen/v1/{A.node_id}/status/extra",
        f"lichen/v1/{A.node_id}/Status",
        f"lichen/v1/{A.node_id}/+",
        f"lichen/v1/{A.node_id}/#",
        "lichen/v1/+/status",
        "lichen/v1/hub/info",
        f"/lichen/v1/{A.node_id}/status",
        f"lichen/v1/{A.node_id}/" + "x" * 100,
    ],
)
def test_parse_topic_refuses(text: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_topic(text)


def test_topic_refuses_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        topic("not-a-node", Name.STATUS)
    with pytest.raises(LocalProtocolError):
        topic(A.node_id, "nope")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_parse_topic_only_raises_malformed(text: str) -> None:
    try:
        node, name = parse_topic(text)
    except MalformedMessage:
        return
    assert topic(node, name) == text


REPAIRED_HEX = (
    "a8000101140209035824015512200568e80f0ec043c9f2ba754188040fc6719c"
    "cebdaaf162e765a88b3bae231c3a0481820154947561e3eb43b38b2d5f7c2f6a"
    "74f30b97a168a3058102066a6f6e65206661696c6564071a6553f100"
)
# The batch and the order embed signed manifests and headers: pinned by digest.
BATCH_SHA256 = "87c8492cc2d9ca38c1f40208ffde3c561eaa7482bae92477079cdc4beeb39d4e"
ORDER_SHA256 = "59c251d1e70f5bdb052f6e40583c6cc69b042ee8375cea41349b673750212b60"


# --- golden vectors -------------------------------------------------------------------------


def test_join_golden() -> None:
    signed = make_join(A, TOKEN, name="pi-kitchen", capacity=10**9, now=NOW)
    assert signed.hex() == (
        "d28443a10127a1045465b60673d6ed884bf01c2c222d82ada0740f29ac5863a7"
        "0001010f02582079b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0"
        "e3910bad049664036a70692d6b69746368656e041a3b9aca000558207da7a82b"
        "a229a008c7d27262c3a747b292aa659490f14d751e108ca95aab92b9061a6553"
        "f1005840f8b98904fa133f8ec521c523c729eb636ce3347a5d6ab5c8298425f2"
        "8082526d2266b11c219752430388f41fc714c56cce99c6efb3524dcd66825178"
        "19020307"
    )
    join = Join.from_payload(cose.parse(signed).payload)
    assert join.node_id == A.node_id and join.capacity == 10**9 and join.time == NOW
    assert join.mac == join_mac(TOKEN, A.public.public_key)


def test_joined_golden() -> None:
    signed = make_joined(HUB, A.kid, TOKEN, accepted=True, now=NOW)
    assert cose.parse(signed).payload.hex() == (
        "a800010110025465b60673d6ed884bf01c2c222d82ada0740f29ac03f5045820"
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        "0560061a6553f10007582037f2bbb7d088313d991eb8e5346f09de5f420cc9d1"
        "023f95599164056c4a4b03"
    )


def test_status_golden() -> None:
    online = Status(True, NOW, SESSION, 10**9, 12345, 7, "192.168.1.20", 5683, "0.1.0")
    assert online.to_payload().hex() == (
        "ab0001011102f5031a6553f10004480001020304050607051a3b9aca00061930"
        "390707086c3139322e3136382e312e3230091916330a65302e312e30"
    )
    assert Status.from_payload(online.to_payload()) == online


def test_offline_status_golden() -> None:
    signed = Status.offline(NOW, SESSION).sign(A)
    assert signed.hex() == (
        "d28443a10127a1045465b60673d6ed884bf01c2c222d82ada0740f29ac57a500"
        "01011102f4031a6553f1000448000102030405060758404f44d9456acfabb7a5"
        "cb49372b53dcaf7962aa9e05e17cc599704306c3b86a35bb17cbc6815f47e5d9"
        "3777836c9116fc508bae47bf0fc415c4cfee589c51cf03"
    )


def test_repaired_golden() -> None:
    report = Repaired(9, OBJ.encoded.object_cid, ((1, B.kid),), (2,), "one failed", NOW)
    payload = report.to_payload()
    assert payload.hex() == REPAIRED_HEX
    assert Repaired.from_payload(payload) == report


def test_receipt_batch_and_repair_order_golden() -> None:
    batch = make_receipts(A, OBJ.receipts, [(OBJ.signed_manifest, OBJ.headers)], now=NOW)
    payload = cose.parse(batch, cbor.Limits(max_size=1 << 20)).payload
    assert hashlib.sha256(payload).hexdigest() == BATCH_SHA256
    order = repair_order()
    assert hashlib.sha256(order.to_payload()).hexdigest() == ORDER_SHA256


def test_new_token() -> None:
    token = new_token(bytes(range(20)))
    assert token == "aaaqeayeaudaocajbifqydiob4ibceqt"
    with pytest.raises(LocalProtocolError):
        new_token(bytes(15))
    with pytest.raises(LocalProtocolError):
        join_mac("short", A.public.public_key)


# --- agent -> hub: accepted -------------------------------------------------------------------


def test_join_is_opened_with_the_token() -> None:
    signed = make_join(A, TOKEN, name="pi", capacity=5, now=NOW)
    got = open_from_agent(on(A, Name.JOIN), signed, devices(), join_token=TOKEN)
    assert got.node_id == A.node_id and got.sender == A.public and got.name is Name.JOIN
    assert isinstance(got.message, Join) and got.message.name == "pi"
    # A re-join of an enrolled key is fine: the hub treats it as idempotent.
    assert open_from_agent(on(A, Name.JOIN), signed, ENROLLED, join_token=TOKEN).sender == A.public


def test_status_online_and_offline() -> None:
    online = Status(True, NOW, SESSION, 100, 10, 1, "", 0, "0.1.0")
    got = open_from_agent(on(A, Name.STATUS), online.sign(A), ENROLLED)
    assert got.message == online
    offline = Status.offline(NOW, SESSION)
    assert open_from_agent(on(A, Name.STATUS), offline.sign(A), ENROLLED).message == offline


def test_receipt_batch_is_opened() -> None:
    signed = make_receipts(
        A,
        OBJ.receipts + OTHER_OBJ.receipts,
        [(OBJ.signed_manifest, OBJ.headers)],
        now=NOW,
    )
    got = open_from_agent(on(A, Name.RECEIPTS), signed, ENROLLED)
    batch = got.message
    assert isinstance(batch, ReceiptBatch) and batch.time == NOW
    assert [r.receipt.index for r in batch.receipts] == [0, 1, 2, 0, 1, 2]
    assert batch.receipts[0].signed == OBJ.receipts[0]
    (upload,) = batch.manifests
    assert upload.manifest == OBJ.manifest and upload.headers == tuple(OBJ.headers)
    for r in batch.receipts[:3]:
        manifest.check_receipt_matches(r.receipt, upload.manifest)


def test_receipt_batches_split() -> None:
    many = OBJ.receipts * 200  # 600 receipts: two batches
    uploads = [(OBJ.signed_manifest, OBJ.headers)] * 5
    batches = [make_receipts(A, r, m, now=NOW) for r, m in receipt_batches(many, uploads)]
    assert len(batches) == 2
    opened = [open_from_agent(on(A, Name.RECEIPTS), b, ENROLLED).message for b in batches]
    assert [len(b.receipts) for b in opened] == [MAX_BATCH_RECEIPTS, 600 - MAX_BATCH_RECEIPTS]  # type: ignore[union-attr]
    assert [len(b.manifests) for b in opened] == [4, 1]  # type: ignore[union-attr]
    assert len(receipt_batches([], [])) == 1


def answer_for(holder: Identity, stored: Stored, epoch: int = 3) -> tuple[proofs.Challenge, bytes]:
    shards = MemoryHolder(stored.encoded.shards)
    challenge = proofs.make_challenge(
        epoch, bytes(range(32)), holder.kid, NOW + 60, shards.held(), 2, 2, random.Random(1)
    )
    return challenge, proofs.answer(challenge, shards.read_block, holder)


def test_proof_is_carried_as_signed_and_verifies() -> None:
    challenge, signed = answer_for(A, OBJ)
    got = open_from_agent(on(A, Name.PROOF), signed, ENROLLED)
    message = got.message
    assert isinstance(message, ProofMessage)
    assert (message.epoch, message.nonce, message.signed) == (3, bytes(range(32)), signed)
    roots = MemoryHolder(OBJ.encoded.shards).roots()
    assert proofs.verify(challenge, message.signed, got.sender, roots, NOW).all_passed


def test_forged_proof_is_carried_to_its_judge_which_refuses_it() -> None:
    """A proof under A's kid but signed by B: opening only reads it (its judge checks the
    signature, once), and the judge finds it is not A's answer."""
    challenge, signed = answer_for(A, OBJ)
    forged = sign_as(cose.parse(signed).payload, B, A.kid)
    got = open_from_agent(on(A, Name.PROOF), forged, ENROLLED)
    assert isinstance(got.message, ProofMessage) and got.message.signed == forged
    placements = MemoryHolder(OBJ.encoded.shards).placements()
    verdict = audit.judge_answer(challenge, (forged, NOW), got.sender, placements)
    assert verdict.forged and verdict.rejected and verdict.failed == len(challenge.items)
    honest = audit.judge_answer(challenge, (signed, NOW), got.sender, placements)
    assert not honest.forged and honest.passed == len(challenge.items)


def test_repaired_is_opened() -> None:
    report = Repaired(1, OBJ.encoded.object_cid, ((0, B.kid), (2, A.kid)), (), "", NOW)
    assert open_from_agent(on(A, Name.REPAIRED), report.sign(A), ENROLLED).message == report


# --- agent -> hub: refused --------------------------------------------------------------------


def test_wrong_token_is_refused() -> None:
    signed = make_join(A, "another-token-0123456789", name="pi", capacity=5, now=NOW)
    with pytest.raises(BadMac):
        open_from_agent(on(A, Name.JOIN), signed, devices(), join_token=TOKEN)


def test_join_needs_the_token_argument() -> None:
    signed = make_join(A, TOKEN, name="pi", capacity=5, now=NOW)
    with pytest.raises(LocalProtocolError):
        open_from_agent(on(A, Name.JOIN), signed, devices())


def test_join_on_another_nodes_topic_is_refused() -> None:
    signed = make_join(A, TOKEN, name="pi", capacity=5, now=NOW)
    with pytest.raises(BadSignature):
        open_from_agent(on(B, Name.JOIN), signed, devices(), join_token=TOKEN)


def test_join_carrying_another_key_is_refused() -> None:
    # Signed by A (kid A, on A's topic) but enrolling B's key, with a valid MAC for B's key.
    join = Join(B.public.public_key, "pi", 5, join_mac(TOKEN, B.public.public_key), NOW)
    with pytest.raises(BadSignature):
        open_from_agent(
            on(A, Name.JOIN), cose.sign1(join.to_payload(), A), devices(), join_token=TOKEN
        )


def test_join_with_forged_signature_is_refused() -> None:
    join = Join(A.public.public_key, "pi", 5, join_mac(TOKEN, A.public.public_key), NOW)
    signed = sign_as(join.to_payload(), B, A.kid)
    with pytest.raises(BadSignature):
        open_from_agent(on(A, Name.JOIN), signed, devices(), join_token=TOKEN)


def test_revoked_device_is_refused() -> None:
    table = devices(B, revoked=[A])
    with pytest.raises(NotAuthorised, match="revoked"):
        open_from_agent(on(A, Name.STATUS), Status.offline(NOW, SESSION).sign(A), table)
    join = make_join(A, TOKEN, name="pi", capacity=5, now=NOW)
    with pytest.raises(NotAuthorised, match="revoked"):
        open_from_agent(on(A, Name.JOIN), join, table, join_token=TOKEN)


def test_unknown_device_is_refused() -> None:
    with pytest.raises(NotAuthorised, match="unknown"):
        open_from_agent(on(A, Name.STATUS), Status.offline(NOW, SESSION).sign(A), devices(B))


def test_right_topic_wrong_signer_is_refused() -> None:
    # B signs with its own kid and publishes on A's topic.
    with pytest.raises(BadSignature):
        open_from_agent(on(A, Name.STATUS), Status.offline(NOW, SESSION).sign(B), ENROLLED)
    # B signs but claims A's kid: the signature does not verify under A's key.
    forged = sign_as(Status.offline(NOW, SESSION).to_payload(), B, A.kid)
    with pytest.raises(BadSignature):
        open_from_agent(on(A, Name.STATUS), forged, ENROLLED)


def test_lookup_returning_another_key_is_a_local_bug() -> None:
    with pytest.raises(LocalProtocolError):
        open_from_agent(
            on(A, Name.STATUS),
            Status.offline(NOW, SESSION).sign(A),
            lambda node: KnownDevice(B.public),
        )


@pytest.mark.parametrize("name", sorted(hubwire.FROM_AGENT))
def test_oversize_is_refused_before_parsing(name: Name) -> None:
    limit = hubwire.MAX_SIZE[name]
    # Not CBOR at all: an error about the size proves nothing was parsed.
    with pytest.raises(MalformedMessage, match="exceeds"):
        open_from_agent(on(A, name), b"\xff" * (limit + 1), ENROLLED, join_token=TOKEN)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff",
        cbor.encode({1: 2}),
        cbor.encode(cbor2.CBORTag(18, [b"", {}, b"", b""])),
        cose.mac0(b"x", bytes(32), A.kid),
        cose.sign1(b"not cbor", A),
        cose.sign1(wire.encode(wire.Kind.JOIN, {}), A),
        cose.sign1(make_joined(HUB, A.kid, TOKEN, accepted=True, now=NOW), A),
    ],
)
def test_malformed_status_is_refused(payload: bytes) -> None:
    with pytest.raises(MalformedMessage):
        open_from_agent(on(A, Name.STATUS), payload, ENROLLED)


def test_unknown_field_and_version() -> None:
    fields = cbor2.loads(Status.offline(NOW, SESSION).to_payload())
    with pytest.raises(MalformedMessage, match="unknown field"):
        open_from_agent(on(A, Name.STATUS), cose.sign1(cbor.encode({**fields, 99: 1}), A), ENROLLED)
    with pytest.raises(UnsupportedVersion):
        open_from_agent(on(A, Name.STATUS), cose.sign1(cbor.encode({**fields, 0: 2}), A), ENROLLED)
    # An offline status with figures, or an online one without them.
    bad = {**fields, 5: 1}
    with pytest.raises(MalformedMessage):
        open_from_agent(on(A, Name.STATUS), cose.sign1(cbor.encode(bad), A), ENROLLED)
    with pytest.raises(MalformedMessage):
        open_from_agent(
            on(A, Name.STATUS), cose.sign1(cbor.encode({**fields, 2: True}), A), ENROLLED
        )
    with pytest.raises(MalformedMessage):
        open_from_agent(on(A, Name.STATUS), cose.sign1(cbor.encode({**fields, 2: 1}), A), ENROLLED)


def test_status_with_a_bad_host_is_refused() -> None:
    fields = cbor2.loads(Status(True, NOW, SESSION, 1, 1, 1, "10.0.0.1", 1, "v").to_payload())
    for host in ("example.com", "10.0.0.999", 7):
        payload = cbor.encode({**fields, 8: host})
        with pytest.raises(MalformedMessage):
            open_from_agent(on(A, Name.STATUS), cose.sign1(payload, A), ENROLLED)


def test_hub_topic_is_refused_from_agents() -> None:
    with pytest.raises(MalformedMessage):
        open_from_agent(on(A, Name.JOINED), Status.offline(NOW, SESSION).sign(A), ENROLLED)


def test_batch_with_someone_elses_receipt_is_refused() -> None:
    fields = {2: NOW, 3: [OBJ.receipts[0], store(A, B).receipts[0]], 4: []}
    signed = cose.sign1(wire.encode(wire.Kind.RECEIPT_BATCH, fields), A)
    with pytest.raises(BadSignature):
        open_from_agent(on(A, Name.RECEIPTS), signed, ENROLLED)
    # The agent never batches such a receipt: its outbox offers only receipts that verify as
    # its own (tests/unit/test_outbox.py), so make_receipts does not check them again.


def test_batch_with_someone_elses_manifest_is_refused() -> None:
    upload = [OTHER_OBJ.signed_manifest, OTHER_OBJ.headers]
    signed = cose.sign1(wire.encode(wire.Kind.RECEIPT_BATCH, {2: NOW, 3: [], 4: [upload]}), A)
    with pytest.raises(BadSignature):
        open_from_agent(on(A, Name.RECEIPTS), signed, ENROLLED)


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        (lambda h: h[:2], MalformedMessage),  # too few
        (lambda h: [h[1], h[0], h[2]], IntegrityError),  # out of order
        (lambda h: [h[0], h[1], store(A, A, seed=2).headers[2]], IntegrityError),  # other object
        (lambda h: [h[0], h[1], OTHER_OBJ.headers[2]], BadSignature),  # another owner's
        (lambda h: [h[0], h[1], 7], MalformedMessage),
        (lambda h: [h[0], h[1], h[2][:-1] + bytes([h[2][-1] ^ 1])], BadSignature),
    ],
)
def test_batch_with_bad_headers_is_refused(headers: Any, error: type[Exception]) -> None:
    upload = [OBJ.signed_manifest, headers(OBJ.headers)]
    signed = cose.sign1(wire.encode(wire.Kind.RECEIPT_BATCH, {2: NOW, 3: [], 4: [upload]}), A)
    with pytest.raises(error):
        open_from_agent(on(A, Name.RECEIPTS), signed, ENROLLED)


def test_batch_bounds() -> None:
    with pytest.raises(LocalProtocolError):
        make_receipts(A, OBJ.receipts * 200, [], now=NOW)
    fields = {2: NOW, 3: list(OBJ.receipts) * 171, 4: []}  # 513 receipts
    signed = cose.sign1(wire.encode(wire.Kind.RECEIPT_BATCH, fields), A)
    with pytest.raises(MalformedMessage, match="more than"):
        open_from_agent(on(A, Name.RECEIPTS), signed, ENROLLED)
    for upload in ([OBJ.signed_manifest], "x", [b"m", b"h"]):
        bad = cose.sign1(wire.encode(wire.Kind.RECEIPT_BATCH, {2: NOW, 3: [], 4: [upload]}), A)
        with pytest.raises(MalformedMessage):
            open_from_agent(on(A, Name.RECEIPTS), bad, ENROLLED)


def test_proof_by_another_holder_is_refused() -> None:
    _, signed = answer_for(B, OBJ)
    with pytest.raises(BadSignature):
        open_from_agent(on(A, Name.PROOF), signed, ENROLLED)
    # Signed by A on A's topic, but naming B as the holder.
    payload = wire.encode(wire.Kind.PROOF, {2: 1, 3: bytes(32), 4: B.kid, 5: []})
    with pytest.raises(BadSignature):
        open_from_agent(on(A, Name.PROOF), cose.sign1(payload, A), ENROLLED)
    truncated = wire.encode(wire.Kind.PROOF, {2: 1, 3: bytes(31), 4: A.kid, 5: []})
    with pytest.raises(MalformedMessage):
        open_from_agent(on(A, Name.PROOF), cose.sign1(truncated, A), ENROLLED)
    # Unreadable payloads are refused before any judging, signed or not.
    for payload in (b"\xff", cbor.encode([1, 2]), cbor.encode({0: 1, 1: 7, 2: 1})):
        forged = sign_as(payload, B, A.kid)
        with pytest.raises(MalformedMessage):
            open_from_agent(on(A, Name.PROOF), forged, ENROLLED)


@pytest.mark.parametrize(
    "change",
    [
        {4: [[1]]},
        {4: [[300, B.kid]]},
        {4: [[1, b"short"]]},
        {5: ["x"]},
        {3: b"\x01" * 36},
        {6: "x" * 257},
    ],
)
def test_bad_repaired_is_refused(change: dict[int, Any]) -> None:
    fields = cbor2.loads(Repaired(1, OBJ.encoded.object_cid, (), (1,), "", NOW).to_payload())
    with pytest.raises(MalformedMessage):
        open_from_agent(on(A, Name.REPAIRED), cose.sign1(cbor.encode(fields | change), A), ENROLLED)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(sorted(hubwire.FROM_AGENT)))
def test_random_bytes_only_raise_remote_errors(data: bytes, name: Name) -> None:
    with pytest.raises(RemoteProtocolError):
        open_from_agent(on(A, name), data, ENROLLED, join_token=TOKEN)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_flipped_bit_is_refused(data: st.DataObject) -> None:
    signed = Status(True, NOW, SESSION, 100, 10, 1, "", 0, "0.1.0").sign(A)
    bit = data.draw(st.integers(0, len(signed) * 8 - 1))
    flipped = bytearray(signed)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(RemoteProtocolError):
        open_from_agent(on(A, Name.STATUS), bytes(flipped), ENROLLED)


# --- hub -> agent -----------------------------------------------------------------------------


def endpoint(identity: Identity, port: int = 5683) -> Endpoint:
    return Endpoint(identity.kid, "127.0.0.1", port)


def repair_order(**changes: Any) -> RepairOrder:
    fields: dict[str, Any] = dict(
        repair_id=42,
        repairer=A.kid,
        signed_manifest=OBJ.signed_manifest,
        targets=(RepairTarget(2, OBJ.headers[2], endpoint(B, 5684)),),
        sources=(RepairSource(0, endpoint(A)), RepairSource(1, endpoint(A))),
        issued=NOW,
        deadline=NOW + 600,
    )
    fields.update(changes)
    return RepairOrder(**fields)


def test_joined_pins_the_hub() -> None:
    signed = make_joined(HUB, A.kid, TOKEN, accepted=True, now=NOW)
    got = open_from_hub(on(A, Name.JOINED), signed, me=A.node_id, hub=None, join_token=TOKEN)
    assert isinstance(got, Joined) and got.accepted and got.hub == HUB.public
    # Once pinned, a repeated answer needs no token.
    assert open_from_hub(on(A, Name.JOINED), signed, me=A.node_id, hub=HUB.public) == got
    refused = make_joined(HUB, A.kid, TOKEN, accepted=False, reason="revoked", now=NOW)
    got = open_from_hub(on(A, Name.JOINED), refused, me=A.node_id, hub=None, join_token=TOKEN)
    assert isinstance(got, Joined) and not got.accepted and got.reason == "revoked"


def test_joined_refusals() -> None:
    signed = make_joined(HUB, A.kid, TOKEN, accepted=True, now=NOW)
    other = make_joined(B, A.kid, "a-different-token-123", accepted=True, now=NOW)
    with pytest.raises(BadMac):  # a hub that does not know our token
        open_from_hub(on(A, Name.JOINED), other, me=A.node_id, hub=None, join_token=TOKEN)
    with pytest.raises(BadSignature):  # another hub than the pinned one
        open_from_hub(on(A, Name.JOINED), signed, me=A.node_id, hub=B.public)
    with pytest.raises(NotAuthorised):
        open_from_hub(on(A, Name.JOINED), signed, me=A.node_id, hub=None)
    for_b = make_joined(HUB, B.kid, TOKEN, accepted=True, now=NOW)
    with pytest.raises(BadSignature):  # B's answer replayed on A's topic
        open_from_hub(on(A, Name.JOINED), for_b, me=A.node_id, hub=None, join_token=TOKEN)
    with pytest.raises(MalformedMessage):  # not our topic
        open_from_hub(on(B, Name.JOINED), signed, me=A.node_id, hub=None, join_token=TOKEN)
    forged = sign_as(cose.parse(signed).payload, B, HUB.kid)
    with pytest.raises(BadSignature):  # carries the hub key but signed by another
        open_from_hub(on(A, Name.JOINED), forged, me=A.node_id, hub=None, join_token=TOKEN)


def test_challenge_is_carried() -> None:
    challenge, _ = answer_for(A, OBJ)
    signed = audit.sign_challenge(challenge, HUB)
    got = open_from_hub(on(A, Name.CHALLENGE), signed, me=A.node_id, hub=HUB.public)
    assert got == ChallengeMessage(signed)
    assert audit.open_challenge(got.signed, HUB.public, holder_kid=A.kid) == challenge
    by_b = cose.sign1(challenge.encode(), B)
    with pytest.raises(BadSignature):
        open_from_hub(on(A, Name.CHALLENGE), by_b, me=A.node_id, hub=HUB.public)
    forged = sign_as(challenge.encode(), B, HUB.kid)
    with pytest.raises(BadSignature):
        open_from_hub(on(A, Name.CHALLENGE), forged, me=A.node_id, hub=HUB.public)
    with pytest.raises(NotAuthorised):
        open_from_hub(on(A, Name.CHALLENGE), signed, me=A.node_id, hub=None)
    big = b"\x00" * (hubwire.MAX_CHALLENGE_SIZE + 1)
    with pytest.raises(MalformedMessage, match="exceeds"):
        open_from_hub(on(A, Name.CHALLENGE), big, me=A.node_id, hub=HUB.public)


def test_repair_order_round_trip() -> None:
    order = repair_order()
    got = open_from_hub(on(A, Name.REPAIR), order.sign(HUB), me=A.node_id, hub=HUB.public)
    assert got == CheckedRepair(order, OBJ.manifest)
    assert order.check() == OBJ.manifest


def test_repair_order_refusals() -> None:
    signed = repair_order().sign(HUB)
    with pytest.raises(BadSignature):
        open_from_hub(on(A, Name.REPAIR), repair_order().sign(B), me=A.node_id, hub=HUB.public)
    to_b = repair_order(repairer=B.kid).sign(HUB)
    with pytest.raises(BadSignature):  # addressed to B, replayed on A's topic
        open_from_hub(on(A, Name.REPAIR), to_b, me=A.node_id, hub=HUB.public)
    with pytest.raises(MalformedMessage):
        open_from_hub(on(A, Name.STATUS), signed, me=A.node_id, hub=HUB.public)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"targets": (RepairTarget(1, OBJ.headers[2], endpoint(B)),)}, IntegrityError),
        ({"targets": (RepairTarget(2, OTHER_OBJ.headers[2], endpoint(B)),)}, BadSignature),
        ({"targets": (RepairTarget(3, OBJ.headers[2], endpoint(B)),)}, MalformedMessage),
        ({"sources": (RepairSource(7, endpoint(A)),)}, MalformedMessage),
        ({"signed_manifest": OBJ.signed_manifest[:-1] + b"\x00"}, BadSignature),
    ],
)
def test_unsound_repair_order(changes: dict[str, Any], error: type[Exception]) -> None:
    order = repair_order(**changes)
    with pytest.raises(LocalProtocolError):
        order.sign(HUB)
    signed = cose.sign1(order.to_payload(), HUB)  # a hub that skipped the check
    with pytest.raises(error):
        open_from_hub(on(A, Name.REPAIR), signed, me=A.node_id, hub=HUB.public)


@pytest.mark.parametrize(
    "change",
    [
        {5: []},
        {5: [[2, b"h"]]},
        {5: [[2, OBJ.headers[2], [B.kid, "example.com", 1]]]},
        {5: [[2, OBJ.headers[2], [B.kid, "10.0.0.1", 0]]]},
        {5: [[2, OBJ.headers[2], [b"x", "10.0.0.1", 1]]]},
        {5: [[2, OBJ.headers[2], [B.kid, "10.0.0.1", 1]]] * 2},
        {6: [[0]]},
        {6: [[-1, [B.kid, "10.0.0.1", 1]]]},
        {3: b"short"},
    ],
)
def test_malformed_repair_order(change: dict[int, Any]) -> None:
    fields = cbor2.loads(repair_order().to_payload())
    signed = cose.sign1(cbor.encode(fields | change), HUB)
    with pytest.raises(MalformedMessage):
        open_from_hub(on(A, Name.REPAIR), signed, me=A.node_id, hub=HUB.public)


def test_local_construction_checks() -> None:
    with pytest.raises(LocalProtocolError):
        Status(False, NOW, SESSION, capacity=1)
    with pytest.raises(LocalProtocolError):
        Status(True, NOW, b"short")
    with pytest.raises(LocalProtocolError):
        Endpoint(A.kid, "10.0.0.1", 70000)
    with pytest.raises(LocalProtocolError):
        Repaired(1, b"not a cid", (), (), "", NOW)
    with pytest.raises(LocalProtocolError):
        repair_order(targets=())
    with pytest.raises(LocalProtocolError):
        make_join(A, TOKEN, name="x" * 65, capacity=1, now=NOW)
