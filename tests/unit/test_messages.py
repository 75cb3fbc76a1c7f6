"""Agent messages and the holder's accept-a-shard decision."""

from __future__ import annotations

import pytest

from lichen import cbor, cid, holder, messages, shard, wire
from lichen.errors import (
    BadSignature,
    IntegrityError,
    LocalProtocolError,
    MalformedMessage,
    Refused,
    StoreFull,
)
from lichen.identity import Identity
from lichen.manifest import open_receipt

OWNER = Identity(bytes(range(32)))
HOLDER = Identity(bytes(range(1, 33)))
NOW = 1_700_000_000


def make_shard(body: bytes = b"b" * 3000, expiry: int = NOW + 3600) -> shard.Shard:
    return shard.build_shard(
        body,
        object_cid=cid.of(b"object"),
        index=1,
        k=2,
        n=3,
        codec="zfec-rs/1",
        object_size=6000,
        block_size=1024,
        expiry=expiry,
        owner=OWNER,
    )


def offer(s: shard.Shard, body: bytes | None = None) -> messages.ShardTransfer:
    return messages.ShardTransfer(s.signed_header, s.body if body is None else body)


def test_transfer_round_trip_and_body_bound() -> None:
    t = offer(make_shard())
    assert messages.ShardTransfer.decode(t.encode(), max_body=3000) == t
    with pytest.raises(MalformedMessage, match="exceeds"):
        messages.ShardTransfer.decode(t.encode(), max_body=2999)


def test_transfer_golden_vector() -> None:
    t = messages.ShardTransfer(b"h", b"body")
    assert t.encode().hex() == "a4000101090241680344626f6479"


def test_hello_request_round_trip_and_bad_input() -> None:
    r = messages.HelloRequest(bytes(16), HOLDER.kid)
    assert r.encode().hex() == (
        "a40001010a0250" + "00" * 16 + "0354" + "65b60673d6ed884bf01c2c222d82ada0740f29ac"
    )
    assert messages.HelloRequest.decode(r.encode()) == r
    with pytest.raises(MalformedMessage, match="shorter"):
        messages.HelloRequest.decode(wire.encode(wire.Kind.HELLO_REQUEST, {2: b"x", 3: HOLDER.kid}))
    with pytest.raises(MalformedMessage):
        messages.HelloRequest.decode(wire.encode(wire.Kind.HELLO_REQUEST, {2: bytes(16)}))
    with pytest.raises(LocalProtocolError):
        messages.HelloRequest(b"short", HOLDER.kid)


def test_peer_list_round_trip() -> None:
    peers = [
        messages.PeerInfo(HOLDER.public.public_key, "127.0.0.1", 5683, "house-a", ("solar",), 10),
        messages.PeerInfo(OWNER.public.public_key, "::1", 15683),
    ]
    assert messages.decode_peers(messages.encode_peers(peers)) == peers
    assert peers[0].node_id == HOLDER.node_id


@pytest.mark.parametrize(
    "entry",
    [
        [b"k" * 32, "example.org", 5683, "", [], 0],  # not an IP address
        [b"k" * 32, "10.0.0.1", 0, "", [], 0],
        [b"k" * 32, "10.0.0.1", 70000, "", [], 0],
        [b"k" * 31, "10.0.0.1", 5683, "", [], 0],
        [b"k" * 32, "10.0.0.1", 5683, "", [""], 0],
        [b"k" * 32, "10.0.0.1", 5683, "", [1], 0],
        [b"k" * 32, "10.0.0.1", 5683, "", [], -1],
        [b"k" * 32, "10.0.0.1", "5683", "", [], 0],
        [b"k" * 32, "10.0.0.1", 5683, ""],
    ],
)
def test_bad_peer_entries_are_refused(entry: list[object]) -> None:
    with pytest.raises(MalformedMessage):
        messages.decode_peers(wire.encode(wire.Kind.PEERS, {2: [entry]}))


def test_status_round_trip() -> None:
    s = messages.AgentStatus(HOLDER.public.public_key, 100, 10, 3, 4, "0.1.0", "attic", ("ups",))
    assert messages.AgentStatus.decode(s.encode()) == s
    assert s.free_bytes == 90
    with pytest.raises(MalformedMessage, match="tags"):
        bad = cbor.decode_map(s.encode())
        bad[9] = [""]
        messages.AgentStatus.decode(cbor.encode(bad))


def test_holder_accepts_and_signs_a_receipt() -> None:
    s = make_shard()
    accepted = holder.accept_shard(
        offer(s), holder=HOLDER, now=NOW, free_bytes=10_000, held_root=lambda c, i: None
    )
    assert accepted.new and accepted.shard.header == s.header
    receipt = open_receipt(accepted.signed_receipt, HOLDER.public)
    assert receipt == accepted.receipt
    assert (receipt.index, receipt.root, receipt.owner) == (1, s.header.root, OWNER.kid)


def test_holder_answers_a_retry_without_needing_room() -> None:
    s = make_shard()
    again = holder.accept_shard(
        offer(s), holder=HOLDER, now=NOW, free_bytes=0, held_root=lambda c, i: s.header.root
    )
    assert not again.new


def test_shard_whose_body_does_not_match_its_root_is_refused() -> None:
    s = make_shard()
    with pytest.raises(IntegrityError, match="Merkle root"):
        holder.accept_shard(
            offer(s, b"x" * 3000),
            holder=HOLDER,
            now=NOW,
            free_bytes=10_000,
            held_root=lambda c, i: None,
        )


def test_shard_with_a_forged_header_is_refused() -> None:
    s = make_shard()
    message = cbor.decode(s.signed_header)
    message.value[3] = bytes(64)
    with pytest.raises(BadSignature):
        holder.accept_shard(
            messages.ShardTransfer(cbor.encode(message), s.body),
            holder=HOLDER,
            now=NOW,
            free_bytes=10_000,
            held_root=lambda c, i: None,
        )


def test_full_store_and_expiring_shard_are_refused() -> None:
    with pytest.raises(StoreFull, match="3000 bytes, 2999 free"):
        holder.accept_shard(
            offer(make_shard()),
            holder=HOLDER,
            now=NOW,
            free_bytes=2999,
            held_root=lambda c, i: None,
        )
    with pytest.raises(Refused, match="too soon"):
        holder.accept_shard(
            offer(make_shard(expiry=NOW + 10)),
            holder=HOLDER,
            now=NOW,
            free_bytes=10_000,
            held_root=lambda c, i: None,
        )


def test_conflicting_shard_is_refused() -> None:
    with pytest.raises(IntegrityError, match="another root"):
        holder.accept_shard(
            offer(make_shard()),
            holder=HOLDER,
            now=NOW,
            free_bytes=10_000,
            held_root=lambda c, i: bytes(32),
        )


def test_stream_index_page_round_trip_and_bounds() -> None:
    page = messages.StreamIndexPage(
        "kitchen", 3, bytes(32), (b"r1", b"r2"), True, b"\x80", HOLDER.public.public_key
    )
    assert messages.StreamIndexPage.decode(page.encode()) == page
    fields = cbor.decode_map(page.encode())
    fields[6] = 1
    with pytest.raises(MalformedMessage, match="true or false"):
        messages.StreamIndexPage.decode(cbor.encode(fields))
    fields[6] = False
    fields[5] = [b"x" * 2000]
    with pytest.raises(MalformedMessage, match="1 KiB"):
        messages.StreamIndexPage.decode(cbor.encode(fields))
