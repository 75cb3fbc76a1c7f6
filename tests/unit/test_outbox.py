"""The agent's outbox for the hub: what is pending, what was sent, across restarts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_agent import outbox as outbox_mod
from edge_agent.outbox import Outbox, decode_owned, encode_owned
from edge_agent.store import ShardStore
from lichen import cbor, holder, hubmessages, messages, objects
from lichen.errors import BadSignature, IntegrityError, LocalProtocolError, MalformedMessage
from lichen.identity import Identity
from lichen.manifest import open_manifest, open_receipt

ME = Identity(bytes(range(32)))
OTHER = Identity(bytes(range(1, 33)))
HUB_A = bytes(range(100, 132))
HUB_B = bytes(range(101, 133))
NOW = 1_700_000_000
LOG = logging.getLogger("test.outbox")


def encoded(owner: Identity = ME, text: bytes = b"reading" * 200) -> objects.EncodedObject:
    return objects.encode_object(
        text,
        key=bytes(32),
        nonce=bytes(24),
        k=2,
        n=3,
        owner=owner,
        expiry=NOW + 3600,
        block_size=512,
    )


def owned(obj: objects.EncodedObject, owner: Identity = ME) -> tuple[bytes, list[bytes]]:
    manifest = objects.make_manifest(obj, [ME.kid] * obj.n, owner=owner, created=NOW)
    return manifest.sign(owner), [s.signed_header for s in obj.shards]


def hold(store: ShardStore, obj: objects.EncodedObject, index: int, *, receipt: bool) -> bytes:
    s = obj.shards[index]
    offer = messages.ShardTransfer(s.signed_header, s.body)
    decision = holder.accept_shard(
        offer, holder=ME, now=NOW, free_bytes=store.free_bytes(), held_root=store.held_root
    )
    store.put_shard(decision)
    if receipt:
        store.put_receipt(decision.signed_receipt, s.header.object_cid, index, ME.kid)
    return decision.signed_receipt


def open_box(tmp_path: Path) -> tuple[ShardStore, Outbox]:
    store = ShardStore.open(tmp_path / "store", 1 << 22)
    return store, Outbox.open(tmp_path / "hub", store, ME, LOG)


def test_receipts_and_owned_manifests_are_pending_until_sent_and_stay_sent(
    tmp_path: Path,
) -> None:
    store, box = open_box(tmp_path)
    obj = encoded()
    stored = hold(store, obj, 0, receipt=True)
    signed, headers = owned(obj)
    woken = []
    box.wake = lambda: woken.append(1)
    box.keep_owned(signed, headers)
    assert woken == [1]
    box.use_hub(HUB_A)
    pending = box.pending(NOW)
    assert [r for _, r in pending.receipts] == [stored]
    assert [m for _, m in pending.manifests] == [(signed, tuple(headers))]
    # What is pending is what the hub accepts: signed by us, headers matching the manifest.
    batch = hubmessages.make_receipts(
        ME, [r for _, r in pending.receipts], [m for _, m in pending.manifests], now=NOW
    )
    assert hubmessages.ReceiptBatch.open(cose_payload(batch), ME.public).manifests
    box.mark_sent([k for k, _ in pending.receipts] + [k for k, _ in pending.manifests])
    assert not box.pending(NOW)

    # A restart: still sent. A new shard: only it is pending.
    store, box = open_box(tmp_path)
    box.use_hub(HUB_A)
    assert not box.pending(NOW)
    hold(store, obj, 1, receipt=True)
    assert [k for k, _ in box.pending(NOW).receipts] == [("r", obj.object_cid, 1)]

    # Another hub has been sent nothing.
    box.use_hub(HUB_B)
    again = box.pending(NOW)
    assert len(again.receipts) == 2 and len(again.manifests) == 1


def cose_payload(signed: bytes) -> bytes:
    from lichen import cose

    return cose.parse(signed).payload


def test_a_held_shard_without_a_receipt_gets_a_fresh_one_kept_in_the_store(
    tmp_path: Path,
) -> None:
    store, box = open_box(tmp_path)
    obj = encoded(owner=OTHER)
    hold(store, obj, 2, receipt=False)  # as after a crash between the two writes
    box.use_hub(HUB_A)
    ((key, signed),) = box.pending(NOW + 5).receipts
    receipt = open_receipt(signed, ME.public)
    assert key == ("r", obj.object_cid, 2)
    assert (receipt.index, receipt.root, receipt.accepted_at) == (
        2,
        obj.shards[2].header.root,
        NOW + 5,
    )
    assert receipt.owner == OTHER.kid
    assert store.receipts(obj.object_cid) == [signed]
    assert box.pending(NOW + 9).receipts[0][1] == signed  # the same bytes from then on


def test_a_torn_last_line_is_sent_again_and_the_log_is_compacted(tmp_path: Path) -> None:
    store, box = open_box(tmp_path)
    obj = encoded()
    hold(store, obj, 0, receipt=True)
    hold(store, obj, 1, receipt=True)
    box.use_hub(HUB_A)
    keys = [k for k, _ in box.pending(NOW).receipts]
    box.mark_sent(keys)
    log = tmp_path / "hub" / outbox_mod.SENT_FILE
    text = log.read_text()
    log.write_text(text[:-5])  # the last entry cut short, as by a crash mid-append
    _, box = open_box(tmp_path)
    box.use_hub(HUB_A)
    assert [k for k, _ in box.pending(NOW).receipts] == [keys[1]]

    stale = "".join(f"r {bytes(36).hex()} {i}\n" for i in range(outbox_mod._COMPACT_SLACK + 1))
    log.write_text(log.read_text() + stale)
    _, box = open_box(tmp_path)
    assert log.read_text().count("\n") == 2  # the hub line and the one live entry


def test_expired_items_are_not_sent(tmp_path: Path) -> None:
    store, box = open_box(tmp_path)
    obj = encoded()
    hold(store, obj, 0, receipt=True)
    box.keep_owned(*owned(obj))
    box.use_hub(HUB_A)
    assert not box.pending(NOW + 3601)
    assert not list((tmp_path / "hub" / outbox_mod.OWNED_DIR).iterdir())


def test_only_our_own_manifests_with_matching_headers_are_kept(tmp_path: Path) -> None:
    _, box = open_box(tmp_path)
    obj = encoded()
    signed, headers = owned(obj)
    with pytest.raises(LocalProtocolError):
        box.keep_owned(*owned(encoded(owner=OTHER), owner=OTHER))
    with pytest.raises(LocalProtocolError):
        box.keep_owned(signed, headers[:2])
    with pytest.raises(MalformedMessage, match="another node"):
        decode_owned(encode_owned(*owned(encoded(owner=OTHER), owner=OTHER)), ME.public)
    with pytest.raises(IntegrityError):
        decode_owned(encode_owned(signed, [headers[1], headers[0], headers[2]]), ME.public)
    tampered = bytearray(headers[0])
    tampered[-1] ^= 1
    with pytest.raises(BadSignature):
        decode_owned(encode_owned(signed, [bytes(tampered), *headers[1:]]), ME.public)
    with pytest.raises(MalformedMessage):
        decode_owned(cbor.encode([signed, [b"x" * 2000, *headers[1:]]]), ME.public)
    with pytest.raises(MalformedMessage):
        decode_owned(cbor.encode({"m": signed}), ME.public)
    with pytest.raises(MalformedMessage):
        decode_owned(b"\x82" + b"\x00" * (outbox_mod.MAX_OWNED_SIZE + 1), ME.public)
    upload = decode_owned(encode_owned(signed, headers), ME.public)
    assert (upload.signed, upload.headers) == (signed, tuple(headers))
    assert upload.manifest == open_manifest(signed)


def test_a_stored_receipt_whose_signature_is_not_ours_is_replaced(tmp_path: Path) -> None:
    # make_receipts does not check the batch again: what the outbox offers must verify as ours.
    store, box = open_box(tmp_path)
    obj = encoded(owner=OTHER)
    stored = bytearray(hold(store, obj, 0, receipt=False))
    stored[-1] ^= 1  # the store keeps it: it checks the framing and fields, not the signature
    store.put_receipt(bytes(stored), obj.object_cid, 0, ME.kid)
    box.use_hub(HUB_A)
    ((_, signed),) = box.pending(NOW).receipts
    assert signed != bytes(stored)
    assert open_receipt(signed, ME.public).root == obj.shards[0].header.root


def test_an_owned_file_is_checked_once_not_every_send_round(tmp_path: Path) -> None:
    _, box = open_box(tmp_path)
    obj = encoded()
    box.keep_owned(*owned(obj))
    box.use_hub(HUB_A)
    first = box.pending(NOW).manifests
    path = tmp_path / "hub" / outbox_mod.OWNED_DIR / obj.cid_text
    path.write_bytes(b"damaged after it was checked")
    assert box.pending(NOW).manifests == first  # not read again while it is unsent
    _, box = open_box(tmp_path)  # a restart reads (and checks) it again
    box.use_hub(HUB_A)
    assert not box.pending(NOW) and not path.exists()


def test_mark_sent_before_a_hub_is_a_bug(tmp_path: Path) -> None:
    _, box = open_box(tmp_path)
    with pytest.raises(LocalProtocolError):
        box.mark_sent([("m", bytes(36), 0)])
