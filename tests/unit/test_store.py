"""The agent's shard store: round trips, reopening, capacity, expiry, scrubbing, damaged files."""

from __future__ import annotations

import base64
import errno
import logging
import os
import random
import struct
from pathlib import Path

import pytest

from edge_agent import fsutil, store, store_format
from edge_agent.store import ShardStore
from lichen import cid, holder, merkle, messages, proofs, shard
from lichen.errors import (
    BadSignature,
    IntegrityError,
    LocalProtocolError,
    MalformedMessage,
    StoreFull,
)
from lichen.identity import Identity
from lichen.manifest import Manifest, Receipt

OWNER = Identity(bytes(range(32)))
HOLDER = Identity(bytes(range(1, 33)))
OTHER = Identity(bytes(range(2, 34)))
NOW = 1_700_000_000
BLOCK = 512
CAPACITY = 1 << 20


def make_shard(
    name: bytes = b"object",
    index: int = 0,
    size: int = 3000,
    expiry: int = NOW + 3600,
    fill: int | None = None,
) -> shard.Shard:
    """A shard of ``size`` bytes (blocks of 512, so the last one is short unless aligned)."""
    body = bytes(((fill if fill is not None else index) + i * 7) % 251 for i in range(size))
    return shard.build_shard(
        body,
        object_cid=cid.of(name),
        index=index,
        k=2,
        n=8,
        codec="zfec-rs/1",
        object_size=size,
        block_size=BLOCK,
        expiry=expiry,
        owner=OWNER,
    )


def _nothing_held(object_cid: bytes, index: int) -> None:
    return None


def accept(s: shard.Shard, st: ShardStore | None = None) -> holder.Accepted:
    """The holder's decision on ``s``, as the agent takes it against ``st`` (or an empty store)."""
    return holder.accept_shard(
        messages.ShardTransfer(s.signed_header, s.body),
        holder=HOLDER,
        now=NOW,
        free_bytes=CAPACITY if st is None else st.free_bytes(),
        held_root=_nothing_held if st is None else st.held_root,
    )


def put(st: ShardStore, s: shard.Shard) -> None:
    st.put_shard(accept(s, st))


def shard_path(root: Path, s: shard.Shard) -> Path:
    return root / "shards" / store_format.shard_file_name((s.header.object_cid, s.header.index))


def quarantined(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "quarantine").iterdir())


def make_manifest(name: bytes = b"object", created: int = NOW, expiry: int = NOW + 3600) -> bytes:
    return Manifest(
        object_cid=cid.of(name),
        size=6000,
        codec="zfec-rs/1",
        k=2,
        n=2,
        piece_size=3000,
        block_size=BLOCK,
        roots=(b"\x01" * 32, b"\x02" * 32),
        holders=(HOLDER.kid, OTHER.kid),
        created=created,
        expiry=expiry,
        owner=OWNER.public.public_key,
    ).sign(OWNER)


def make_receipt(
    name: bytes = b"object",
    index: int = 0,
    signer: Identity = HOLDER,
    accepted_at: int = NOW,
    expiry: int = NOW + 3600,
) -> bytes:
    return Receipt(
        object_cid=cid.of(name),
        index=index,
        root=b"\x01" * 32,
        piece_size=3000,
        expiry=expiry,
        accepted_at=accepted_at,
        holder=signer.kid,
        owner=OWNER.kid,
    ).sign(signer)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


# -- round trips and the index -------------------------------------------------------------


def test_put_get_round_trip(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    s = make_shard(size=3000)
    assert st.held_root(s.header.object_cid, 0) is None
    assert st.get_shard(s.header.object_cid, 0) is None
    put(st, s)
    assert st.get_shard(s.header.object_cid, 0) == (s.signed_header, s.body)
    assert st.held_root(s.header.object_cid, 0) == s.header.root
    [info] = st.shards()
    assert info.header == s.header and info.key == (s.header.object_cid, 0)
    # prefix, header, one 32-byte leaf hash per block (6 blocks), body
    expected = store_format.PREFIX_SIZE + len(s.signed_header) + 6 * 32 + 3000
    assert info.file_size == expected == shard_path(root, s).stat().st_size
    assert st.used_bytes() == expected and st.free_bytes() == CAPACITY - expected
    assert st.capacity_bytes == CAPACITY
    c = st.counters()
    assert (c.shards, c.bytes, c.quarantined_at_open, c.corrupt_found) == (1, expected, 0, 0)
    assert sorted(p.name for p in (root / "shards").iterdir()) == [shard_path(root, s).name]
    assert shard_path(root, s).stat().st_mode & 0o777 == 0o600


def test_file_format_prefix(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    s = make_shard(size=1024)
    put(st, s)
    data = shard_path(root, s).read_bytes()
    hlen = len(s.signed_header)
    assert data[:12] == b"LICHSHD\x01" + struct.pack(">I", hlen)
    assert data[12 : 12 + hlen] == s.signed_header
    tree = merkle.MerkleTree.from_body(s.body, BLOCK)
    assert data[12 + hlen : 12 + hlen + 64] == tree.leaf_hashes
    assert data[12 + hlen + 64 :] == s.body


def test_reopen_rebuilds_the_index(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    shards = [make_shard(b"a", 0), make_shard(b"a", 3, size=512), make_shard(b"b", 1, size=7)]
    for s in shards:
        put(st, s)
    again = ShardStore.open(root, CAPACITY)
    assert again.shards() == st.shards()
    assert again.used_bytes() == st.used_bytes()
    for s in shards:
        assert again.get_shard(s.header.object_cid, s.header.index) == (s.signed_header, s.body)
    assert again.counters().shards == 3


def test_capacity_refused_with_store_full(root: Path) -> None:
    s = make_shard(size=3000)
    file_size = store_format.PREFIX_SIZE + len(s.signed_header) + 6 * 32 + 3000
    st = ShardStore.open(root, file_size - 1)
    # The body fits in free_bytes, but the whole file does not.
    accepted = accept(s, st)
    with pytest.raises(StoreFull, match="no room"):
        st.put_shard(accepted)
    assert st.shards() == [] and list((root / "shards").iterdir()) == []
    st = ShardStore.open(root, file_size)
    put(st, s)
    assert st.free_bytes() == 0
    with pytest.raises(StoreFull):
        put(st, make_shard(index=1, size=1))


def test_disk_full_is_store_full(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = ShardStore.open(root, CAPACITY)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil, "atomic_write_chunks", full)
    with pytest.raises(StoreFull, match="disk full"):
        put(st, make_shard())
    assert st.used_bytes() == 0


def test_put_is_idempotent_and_refuses_another_root(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    s = make_shard()
    put(st, s)
    before = shard_path(root, s).stat()
    put(st, s)  # the agent retries with held_root set: accept_shard answers, the store keeps it
    st.put_shard(accept(s))
    after = shard_path(root, s).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert st.counters().shards == 1 and st.used_bytes() == before.st_size
    other = make_shard(fill=99)
    with pytest.raises(IntegrityError, match="another root"):
        st.put_shard(accept(other))
    assert st.get_shard(s.header.object_cid, 0) == (s.signed_header, s.body)


def test_put_rechecks_the_shard(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    good = accept(make_shard())
    bad_body = holder.Accepted(
        shard.Shard(good.shard.signed_header, good.shard.header, b"x" * 3000),
        good.receipt,
        good.signed_receipt,
        True,
    )
    with pytest.raises(IntegrityError, match="Merkle root"):
        st.put_shard(bad_body)
    other = make_shard(index=1)
    mixed = holder.Accepted(
        shard.Shard(other.signed_header, good.shard.header, good.shard.body),
        good.receipt,
        good.signed_receipt,
        True,
    )
    with pytest.raises(IntegrityError, match="signed header"):
        st.put_shard(mixed)
    assert st.shards() == []


def test_delete_shard(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    s = make_shard()
    put(st, s)
    assert st.delete_shard(s.header.object_cid, 0)
    assert not st.delete_shard(s.header.object_cid, 0)
    assert st.get_shard(s.header.object_cid, 0) is None and st.used_bytes() == 0
    assert not shard_path(root, s).exists()
    assert ShardStore.open(root, CAPACITY).shards() == []


# -- expiry ----------------------------------------------------------------------------------


def test_collect_garbage_removes_expired_and_keeps_the_rest(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    old = make_shard(b"old", expiry=NOW + 100)
    new = make_shard(b"new", expiry=NOW + 10_000)
    put(st, old)
    put(st, new)
    st.put_manifest(make_manifest(b"old", expiry=NOW + 100))
    st.put_manifest(make_manifest(b"new", expiry=NOW + 10_000))
    st.put_receipt(make_receipt(b"old", expiry=NOW + 100), cid.of(b"old"), 0, HOLDER.kid)
    st.put_receipt(make_receipt(b"new", expiry=NOW + 10_000), cid.of(b"new"), 0, HOLDER.kid)
    assert st.collect_garbage(NOW + 100) == 0  # expiry is the last second it is kept
    assert st.collect_garbage(NOW + 101) == 3
    assert st.collect_garbage(NOW + 101) == 0
    assert [i.key for i in st.shards()] == [(cid.of(b"new"), 0)]
    assert st.manifests() == [cid.of(b"new")]
    assert st.get_manifest(cid.of(b"old")) is None
    assert st.receipts(cid.of(b"old")) == [] and len(st.receipts(cid.of(b"new"))) == 1
    assert st.used_bytes() == shard_path(root, new).stat().st_size
    again = ShardStore.open(root, CAPACITY)
    assert [i.key for i in again.shards()] == [(cid.of(b"new"), 0)]
    assert again.manifests() == [cid.of(b"new")]
    assert not shard_path(root, old).exists()


# -- scrubbing ------------------------------------------------------------------------------


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_scrub_finds_a_flipped_body_byte_and_quarantines_it(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    st = ShardStore.open(root, CAPACITY)
    good, bad = make_shard(b"good"), make_shard(b"bad")
    put(st, good)
    put(st, bad)
    info = st.shard_info(cid.of(b"bad"), 0)
    assert info is not None
    flip(shard_path(root, bad), info.body_offset + 1234)
    with caplog.at_level(logging.WARNING, logger="edge_agent.store"):
        report = st.scrub()
    assert report.corrupt == ((cid.of(b"bad"), 0),)
    assert set(report.checked) == {(cid.of(b"bad"), 0), (cid.of(b"good"), 0)}
    assert report.finished_pass and report.repaired == ()
    assert "Merkle root" in caplog.text
    assert st.get_shard(cid.of(b"bad"), 0) is None
    assert st.held_root(cid.of(b"bad"), 0) is None
    assert st.read_block(cid.of(b"bad"), 0, 0) is None
    assert st.get_shard(cid.of(b"good"), 0) == (good.signed_header, good.body)
    assert st.counters().corrupt_found == 1
    assert st.used_bytes() == shard_path(root, good).stat().st_size
    assert [n.rsplit(".", 1)[0] for n in quarantined(root)] == [shard_path(root, bad).name]
    assert not shard_path(root, bad).exists()
    # It stays gone after a restart; the good shard stays.
    assert [i.key for i in ShardStore.open(root, CAPACITY).shards()] == [(cid.of(b"good"), 0)]


def test_scrub_is_resumable_and_bounded(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    for i in range(5):
        put(st, make_shard(b"o", i, size=2048))
    size = st.shards()[0].file_size
    keys = [i.key for i in st.shards()]
    first = st.scrub(max_bytes=2 * size)
    assert first.checked == tuple(keys[:2]) and first.bytes_checked == 2 * size
    assert not first.finished_pass
    second = st.scrub(max_bytes=2 * size + 1)
    assert second.checked == tuple(keys[2:4]) and not second.finished_pass
    third = st.scrub(max_bytes=2 * size)
    # The pass ends after the last shard, then the scrub wraps to the first.
    assert third.checked == (keys[4], keys[0]) and third.finished_pass
    # At least one shard per call, even over the budget.
    assert st.scrub(max_bytes=1).checked == (keys[1],)
    assert st.scrub().checked == (*keys[2:], *keys[:2])
    with pytest.raises(LocalProtocolError):
        st.scrub(max_bytes=0)


def test_scrub_of_an_empty_store(root: Path) -> None:
    report = ShardStore.open(root, CAPACITY).scrub(max_bytes=10)
    assert report == store.ScrubReport((), (), (), 0, True)


def test_scrub_repairs_damaged_leaf_hashes_from_a_good_body(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    s = make_shard()
    put(st, s)
    info = st.shard_info(s.header.object_cid, 0)
    assert info is not None
    flip(shard_path(root, s), info.leaves_offset + 40)
    report = st.scrub()
    assert report.repaired == ((s.header.object_cid, 0),) and report.corrupt == ()
    assert st.counters().repaired == 1
    assert st.scrub().repaired == ()
    assert st.get_shard(s.header.object_cid, 0) == (s.signed_header, s.body)


def test_scrub_finds_a_damaged_header_or_a_changed_size(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    a, b = make_shard(b"a"), make_shard(b"b")
    put(st, a)
    put(st, b)
    flip(shard_path(root, a), store_format.PREFIX_SIZE + 20)
    with shard_path(root, b).open("ab") as f:
        f.write(b"extra")
    report = st.scrub()
    assert set(report.corrupt) == {(cid.of(b"a"), 0), (cid.of(b"b"), 0)}
    assert st.shards() == [] and len(quarantined(root)) == 2


# -- damaged files at open -----------------------------------------------------------------


def test_corrupt_header_at_open_is_quarantined_and_counted(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    st = ShardStore.open(root, CAPACITY)
    bad, good = make_shard(b"bad"), make_shard(b"good")
    put(st, bad)
    put(st, good)
    flip(shard_path(root, bad), store_format.PREFIX_SIZE + len(bad.signed_header) - 5)  # signature
    with caplog.at_level(logging.WARNING, logger="edge_agent.store"):
        again = ShardStore.open(root, CAPACITY)
    assert "quarantined" in caplog.text
    assert [i.key for i in again.shards()] == [(cid.of(b"good"), 0)]
    assert again.counters().quarantined_at_open == 1
    assert again.get_shard(cid.of(b"bad"), 0) is None
    assert len(quarantined(root)) == 1 and not shard_path(root, bad).exists()
    assert ShardStore.open(root, CAPACITY).counters().quarantined_at_open == 0


def test_truncated_file_at_open_is_quarantined(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    shards = [make_shard(b"o", i) for i in range(4)]
    for s in shards:
        put(st, s)
    cuts = {0: 5, 1: store_format.PREFIX_SIZE + 30, 2: st.shards()[2].file_size - 1}
    for i, length in cuts.items():
        path = shard_path(root, shards[i])
        path.write_bytes(path.read_bytes()[:length])
    again = ShardStore.open(root, CAPACITY)
    assert [i.key for i in again.shards()] == [(cid.of(b"o"), 3)]
    assert again.counters().quarantined_at_open == 3
    assert again.used_bytes() == shard_path(root, shards[3]).stat().st_size


@pytest.mark.parametrize(
    "damage",
    ["magic", "header length", "empty", "too long", "renamed", "symlink", "directory", "fifo"],
)
def test_other_damage_at_open_is_quarantined(root: Path, tmp_path: Path, damage: str) -> None:
    st = ShardStore.open(root, CAPACITY)
    s = make_shard()
    put(st, s)
    path = shard_path(root, s)
    data = path.read_bytes()
    if damage == "magic":
        path.write_bytes(b"LICHSHX" + data[7:])
    elif damage == "header length":
        path.write_bytes(data[:8] + struct.pack(">I", 5000) + data[12:])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "too long":
        path.write_bytes(data + b"\0")
    elif damage == "renamed":
        path.rename(root / "shards" / store_format.shard_file_name((s.header.object_cid, 1)))
    elif damage == "symlink":
        outside = tmp_path / "outside"
        outside.write_bytes(data)
        path.unlink()
        path.symlink_to(outside)
    elif damage == "directory":
        path.unlink()
        path.mkdir()
    elif damage == "fifo":
        path.unlink()
        os.mkfifo(path)
    again = ShardStore.open(root, CAPACITY)
    assert again.shards() == [] and again.used_bytes() == 0
    assert again.counters().quarantined_at_open == 1
    assert list((root / "shards").iterdir()) == []


def test_newer_version_is_skipped_and_left_alone(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    s = make_shard()
    put(st, s)
    path = shard_path(root, s)
    data = path.read_bytes()
    path.write_bytes(data[:7] + b"\x02" + data[8:])
    again = ShardStore.open(root, CAPACITY)
    assert again.shards() == [] and again.counters().unsupported_at_open == 1
    assert path.read_bytes()[:8] == b"LICHSHD\x02" and quarantined(root) == []


def test_hostile_file_names_are_ignored_safely(root: Path, tmp_path: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    s = make_shard()
    put(st, s)
    data = shard_path(root, s).read_bytes()
    text = cid.to_text(s.header.object_cid)
    # The last base32 character of a CID carries 2 spare bits: another spelling of the same CID.
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    alias = text[:-1] + alphabet[alphabet.index(text[-1]) ^ 1]
    assert base64.b32decode(alias[1:].upper() + "=" * 6) == s.header.object_cid
    with pytest.raises(MalformedMessage):
        cid.from_text(alias)
    hostile = [
        f"{text}.00.shard",
        f"{text}.256.shard",
        f"{text}.-1.shard",
        f"{alias}.1.shard",
        f"{text.upper()}.1.shard",
        f"{text}.1.shard.bak",
        f"{text}.1.shard\n",
        f"..{text}.1.shard",
        "\udcff.shard",
        "x" * 255,
        f"{text}.manifest",  # a manifest name is not a shard name
        ".hidden",
    ]
    shards_dir = root / "shards"
    for name in hostile:
        (shards_dir / name).write_bytes(data)
    (shards_dir / "subdir").mkdir()
    (shards_dir / "link").symlink_to("/etc/passwd")
    (root / "manifests" / "evil.manifest").write_bytes(b"x")
    (root / "receipts" / f"{text}.0.{'A' * 32}.receipt").write_bytes(b"x")
    again = ShardStore.open(root, CAPACITY)
    assert [i.key for i in again.shards()] == [(s.header.object_cid, 0)]
    c = again.counters()
    assert c.ignored_at_open == len(hostile) + 4 and c.quarantined_at_open == 0
    # Left exactly as they were: never opened, moved or deleted.
    for name in hostile:
        assert (shards_dir / name).read_bytes() == data
    assert (shards_dir / "link").is_symlink() and quarantined(root) == []


def test_stale_temporaries_are_removed_at_open(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    s = make_shard()
    put(st, s)
    name = shard_path(root, s).name
    stale = [
        root / "shards" / f".{name}.0123456789abcdef.tmp",
        root
        / "shards"
        / f".{store_format.shard_file_name((cid.of(b'x'), 3))}.fedcba9876543210.tmp",
        root / "manifests" / f".{cid.to_text(cid.of(b'x'))}.manifest.0000000000000000.tmp",
    ]
    foreign = [root / "shards" / ".notours.0123456789abcdef.tmp", root / "shards" / "a.tmp"]
    for p in stale + foreign:
        p.write_bytes(b"partial")
    again = ShardStore.open(root, CAPACITY)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in foreign)
    assert again.get_shard(s.header.object_cid, 0) == (s.signed_header, s.body)
    assert again.counters().quarantined_at_open == 0


def test_reads_after_external_damage_quarantine(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    a, b = make_shard(b"a"), make_shard(b"b")
    put(st, a)
    put(st, b)
    shard_path(root, a).unlink()
    path = shard_path(root, b)
    path.write_bytes(path.read_bytes()[:-1])
    assert st.get_shard(cid.of(b"a"), 0) is None
    assert st.get_shard(cid.of(b"b"), 0) is None
    assert st.shards() == [] and st.used_bytes() == 0
    assert st.counters().corrupt_found == 2 and len(quarantined(root)) == 1


# -- storage proofs ------------------------------------------------------------------------


def test_read_block_verifies_against_the_root(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    s = make_shard(size=5 * BLOCK + 17)  # 6 blocks, the last one short
    put(st, s)
    leaves = s.header.leaf_count
    for i in range(leaves):
        found = st.read_block(s.header.object_cid, 0, i)
        assert found is not None
        block, path = found
        assert block == shard.block(s.body, BLOCK, i)
        merkle.verify_inclusion(s.header.root, i, leaves, block, path)
    with pytest.raises(IntegrityError):
        merkle.verify_inclusion(s.header.root, 0, leaves, b"\0" * BLOCK, path)
    assert st.read_block(s.header.object_cid, 0, leaves) is None
    assert st.read_block(s.header.object_cid, 0, -1) is None
    assert st.read_block(cid.of(b"absent"), 0, 0) is None
    # After a restart the tree comes from the stored leaf hashes.
    again = ShardStore.open(root, CAPACITY)
    found = again.read_block(s.header.object_cid, 0, leaves - 1)
    assert found is not None
    merkle.verify_inclusion(s.header.root, leaves - 1, leaves, *found)


def test_tree_cache_is_bounded(root: Path) -> None:
    per_tree = 256 + 64 * 6  # estimate for a 6-block shard
    st = ShardStore.open(root, CAPACITY, tree_cache_bytes=2 * per_tree)
    shards = [make_shard(b"o", i) for i in range(4)]
    for s in shards:
        put(st, s)
    for s in shards:
        for block_index in range(6):
            assert st.read_block(s.header.object_cid, s.header.index, block_index) is not None
        assert st.counters().tree_cache_bytes <= 2 * per_tree
    assert st.counters().tree_cache_bytes == 2 * per_tree
    st.delete_shard(cid.of(b"o"), 3)
    assert st.counters().tree_cache_bytes == per_tree
    tiny = ShardStore.open(root, CAPACITY, tree_cache_bytes=10)
    assert tiny.read_block(cid.of(b"o"), 0, 0) is not None
    assert tiny.counters().tree_cache_bytes == 0


def test_read_block_detects_a_damaged_block(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    s = make_shard()
    put(st, s)
    assert st.read_block(s.header.object_cid, 0, 0) is not None  # the tree is now cached
    info = st.shard_info(s.header.object_cid, 0)
    assert info is not None
    flip(shard_path(root, s), info.body_offset + 2 * BLOCK + 3)
    assert st.read_block(s.header.object_cid, 0, 1) is not None  # other blocks are fine
    assert st.read_block(s.header.object_cid, 0, 2) is None
    assert st.get_shard(s.header.object_cid, 0) is None
    assert st.counters().corrupt_found == 1 and len(quarantined(root)) == 1


def test_read_block_with_damaged_leaf_hashes_repairs_them(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    s = make_shard()
    put(st, s)
    info = st.shard_info(s.header.object_cid, 0)
    assert info is not None
    flip(shard_path(root, s), info.leaves_offset)
    found = st.read_block(s.header.object_cid, 0, 0)
    assert found is not None
    merkle.verify_inclusion(s.header.root, 0, s.header.leaf_count, *found)
    assert st.counters().repaired == 1
    assert st.scrub().repaired == ()


# -- manifests and receipts ---------------------------------------------------------------


def test_manifests_round_trip_and_keep_the_newest(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    first = make_manifest(created=NOW)
    newer = make_manifest(created=NOW + 10)
    st.put_manifest(first)
    assert st.get_manifest(cid.of(b"object")) == first
    st.put_manifest(newer)
    st.put_manifest(first)  # an older one does not replace it
    assert st.get_manifest(cid.of(b"object")) == newer
    assert st.get_manifest(cid.of(b"other")) is None
    assert st.manifests() == [cid.of(b"object")]
    again = ShardStore.open(root, CAPACITY)
    assert again.get_manifest(cid.of(b"object")) == newer
    assert again.counters().manifests == 1


def test_bad_manifests_are_refused(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    signed = bytearray(make_manifest())
    signed[-1] ^= 1
    with pytest.raises(BadSignature):
        st.put_manifest(bytes(signed))
    with pytest.raises(MalformedMessage):
        st.put_manifest(b"\xa0")
    assert st.manifests() == []


def test_damaged_manifest_is_quarantined(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    st.put_manifest(make_manifest(b"a"))
    st.put_manifest(make_manifest(b"b"))
    flip(root / "manifests" / f"{cid.to_text(cid.of(b'a'))}.manifest", 30)
    assert ShardStore.open(root, CAPACITY).counters().quarantined_at_open == 1
    flip(root / "manifests" / f"{cid.to_text(cid.of(b'b'))}.manifest", 30)
    assert st.get_manifest(cid.of(b"b")) is None and st.manifests() == [cid.of(b"a")]
    assert len(quarantined(root)) == 2


def test_receipts_round_trip(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    obj = cid.of(b"object")
    r0 = make_receipt(index=0)
    r1 = make_receipt(index=1, signer=OTHER)
    r1_old = make_receipt(index=1, signer=OTHER, accepted_at=NOW - 5)
    st.put_receipt(r1, obj, 1, OTHER.kid)
    st.put_receipt(r0, obj, 0, HOLDER.kid)
    st.put_receipt(r1_old, obj, 1, OTHER.kid)  # older: kept out
    assert st.receipts(obj) == [r0, r1]
    assert st.receipts(cid.of(b"other")) == []
    assert ShardStore.open(root, CAPACITY).receipts(obj) == [r0, r1]
    with pytest.raises(MalformedMessage, match="another"):
        st.put_receipt(r0, obj, 1, HOLDER.kid)
    with pytest.raises(MalformedMessage, match="another"):
        st.put_receipt(r0, obj, 0, OTHER.kid)
    with pytest.raises(MalformedMessage):
        st.put_receipt(b"junk", obj, 0, HOLDER.kid)
    assert st.counters().receipts == 2


def test_accepted_receipt_can_be_kept(root: Path) -> None:
    st = ShardStore.open(root, CAPACITY)
    s = make_shard()
    accepted = accept(s, st)
    st.put_shard(accepted)
    st.put_receipt(accepted.signed_receipt, s.header.object_cid, 0, HOLDER.kid)
    assert st.receipts(s.header.object_cid) == [accepted.signed_receipt]


def test_open_validates_arguments(root: Path) -> None:
    with pytest.raises(LocalProtocolError):
        ShardStore.open(root, -1)
    with pytest.raises(LocalProtocolError):
        ShardStore.open(root, 1, tree_cache_bytes=-1)


def test_remove_stale_temps_in_leaves_other_files(tmp_path: Path) -> None:
    for name in (".a.0123456789abcdef.tmp", ".b.0123456789abcdef.tmp", ".a.xyz.tmp", "a"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".c.0123456789abcdef.tmp").mkdir()
    assert fsutil.remove_stale_temps_in(tmp_path, lambda n: n in ("a", "c")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".a.xyz.tmp",
        ".b.0123456789abcdef.tmp",
        ".c.0123456789abcdef.tmp",
        "a",
    ]


def test_atomic_write_chunks(tmp_path: Path) -> None:
    target = tmp_path / "f"
    fsutil.atomic_write_chunks(target, [b"ab", b"", b"cd"], 0o600)
    assert target.read_bytes() == b"abcd" and target.stat().st_mode & 0o777 == 0o600

    def failing() -> list[bytes]:
        raise RuntimeError("boom")

    def chunks() -> object:
        yield b"x"
        failing()

    with pytest.raises(RuntimeError):
        fsutil.atomic_write_chunks(target, chunks(), 0o600)  # type: ignore[arg-type]
    assert target.read_bytes() == b"abcd" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_read_block_answers_a_storage_proof(root: Path) -> None:
    """The store's read_block is what lichen.proofs.answer takes; the hub's check passes."""
    st = ShardStore.open(root, CAPACITY)
    shards = [make_shard(b"p", i, size=4000 + i) for i in range(3)]
    for s in shards:
        put(st, s)
    held = [(i.header.object_cid, i.header.index, i.header.leaf_count) for i in st.shards()]
    roots = {i.key: (i.root, i.header.leaf_count, i.header.block_size) for i in st.shards()}
    challenge = proofs.make_challenge(
        1, bytes(32), HOLDER.kid, NOW + 60, held, 3, 4, random.Random(1)
    )
    response = proofs.answer(challenge, st.read_block, HOLDER)
    result = proofs.verify(challenge, response, HOLDER.public, roots, NOW)
    assert result.all_passed and result.passed == 3
