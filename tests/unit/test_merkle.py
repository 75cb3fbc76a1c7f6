"""Merkle trees and inclusion proofs, against a literal reading of RFC 9162 section 2.1."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lichen import merkle
from lichen.errors import IntegrityError, LocalProtocolError


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (RFC 9162 section 2.1.1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 9162 section 2.1.1 defines it, recursively."""
    if not d:
        return _h(b"")
    if len(d) == 1:
        return _h(b"\x00" + d[0])
    k = _split(len(d))
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) exactly as RFC 9162 section 2.1.3.1 defines it, recursively."""
    if len(d) == 1:
        return []
    k = _split(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def _blocks(count: int, seed: int = 0) -> list[bytes]:
    # Distinct blocks of varied lengths, including an empty one, so no two leaves collide.
    return [bytes([seed, i % 256, i // 256]) * (i % 5) + bytes([i % 7]) for i in range(count)]


def test_empty_tree_root_is_hash_of_nothing() -> None:
    assert merkle.MerkleTree([]).root == _h(b"")
    assert merkle.MerkleTree([]).leaf_count == 0


def test_single_leaf_root_and_empty_path() -> None:
    tree = merkle.MerkleTree([b"only"])
    assert tree.root == _h(b"\x00only")
    assert tree.inclusion_path(0) == []
    merkle.verify_inclusion(tree.root, 0, 1, b"only", [])


# The reference vectors of Certificate Transparency's merkle_tree_test (RFC 6962 and RFC 9162
# share the tree): eight leaves, the root at every size, and two audit paths in the 8-tree.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PATHS = {
    0: [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    5: [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}


def test_certificate_transparency_reference_vectors() -> None:
    for size in range(1, 9):
        assert merkle.MerkleTree(CT_LEAVES[:size]).root.hex() == CT_ROOTS[size - 1]
    tree = merkle.MerkleTree(CT_LEAVES)
    for index, expected in CT_PATHS.items():
        path = tree.inclusion_path(index)
        assert [p.hex() for p in path] == expected
        merkle.verify_inclusion(bytes.fromhex(CT_ROOTS[7]), index, 8, CT_LEAVES[index], path)


@settings(max_examples=70, deadline=None)
@given(st.integers(min_value=1, max_value=70), st.integers(min_value=0, max_value=255))
def test_matches_rfc_definition_for_every_index(count: int, seed: int) -> None:
    blocks = _blocks(count, seed)
    tree = merkle.MerkleTree(blocks)
    root = ref_mth(blocks)
    assert tree.root == root
    assert merkle.MerkleTree(blocks).root == root
    for index in range(count):
        path = tree.inclusion_path(index)
        assert path == ref_path(index, blocks)
        assert merkle.path_length(index, count) == len(path)
        merkle.verify_inclusion(root, index, count, blocks[index], path)


def test_every_leaf_count_up_to_70_exhaustively() -> None:
    for count in range(1, 71):
        blocks = _blocks(count)
        tree = merkle.MerkleTree(blocks)
        assert tree.root == ref_mth(blocks)
        for index in range(count):
            assert tree.inclusion_path(index) == ref_path(index, blocks)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_change_to_block_path_index_or_size_is_caught(data: st.DataObject) -> None:
    count = data.draw(st.integers(min_value=2, max_value=70))
    index = data.draw(st.integers(min_value=0, max_value=count - 1))
    blocks = _blocks(count)
    tree = merkle.MerkleTree(blocks)
    path = tree.inclusion_path(index)
    root = tree.root

    bad_block = bytearray(blocks[index])
    bit = data.draw(st.integers(min_value=0, max_value=len(bad_block) * 8 - 1))
    bad_block[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IntegrityError):
        merkle.verify_inclusion(root, index, count, bytes(bad_block), path)

    if path:
        which = data.draw(st.integers(min_value=0, max_value=len(path) - 1))
        bad_path = list(path)
        bad_path[which] = bytes([bad_path[which][0] ^ 0x80]) + bad_path[which][1:]
        with pytest.raises(IntegrityError):
            merkle.verify_inclusion(root, index, count, blocks[index], bad_path)
        with pytest.raises(IntegrityError):
            merkle.verify_inclusion(root, index, count, blocks[index], path[:-1])

    other = data.draw(st.integers(min_value=0, max_value=count - 1).filter(lambda i: i != index))
    with pytest.raises(IntegrityError):
        merkle.verify_inclusion(root, other, count, blocks[index], path)

    with pytest.raises(IntegrityError):
        merkle.verify_inclusion(root, index, count, blocks[index], [*path, root])


def test_wrong_leaf_count_is_caught() -> None:
    blocks = _blocks(6)
    tree = merkle.MerkleTree(blocks)
    for wrong in (5, 7, 8, 12):
        with pytest.raises(IntegrityError):
            merkle.verify_inclusion(tree.root, 4, wrong, blocks[4], tree.inclusion_path(4))


def test_index_outside_tree_is_caught() -> None:
    tree = merkle.MerkleTree(_blocks(4))
    with pytest.raises(IntegrityError, match="cannot be in a tree"):
        merkle.verify_inclusion(tree.root, 4, 4, b"x", [])
    with pytest.raises(IntegrityError, match="cannot be in a tree"):
        merkle.verify_inclusion(tree.root, -1, 4, b"x", [])
    with pytest.raises(IntegrityError, match="cannot be in a tree"):
        merkle.verify_inclusion(tree.root, 0, merkle.MAX_LEAVES + 1, b"x", [])


def test_overlong_path_is_refused_before_hashing() -> None:
    path = [b"\x00" * 32] * (merkle.MAX_PATH_LENGTH + 1)
    with pytest.raises(IntegrityError, match="longer than"):
        merkle.verify_inclusion(b"\x00" * 32, 0, merkle.MAX_LEAVES, b"x", path)


def test_path_entries_must_be_32_byte_hashes() -> None:
    blocks = _blocks(2)
    tree = merkle.MerkleTree(blocks)
    with pytest.raises(IntegrityError, match="32-byte"):
        merkle.verify_inclusion(tree.root, 0, 2, blocks[0], [b"\x00" * 31])
    with pytest.raises(IntegrityError, match="32-byte"):
        merkle.verify_inclusion(tree.root, 0, 2, blocks[0], ["not bytes"])  # type: ignore[list-item]


def test_leaf_cannot_pose_as_interior_node() -> None:
    # The 0x00/0x01 prefixes: a one-leaf tree whose block is two child hashes has another root.
    blocks = [b"left", b"right"]
    two = merkle.MerkleTree(blocks)
    forged = merkle.leaf_hash(blocks[0]) + merkle.leaf_hash(blocks[1])
    assert merkle.MerkleTree([forged]).root != two.root


def test_from_body_cuts_fixed_blocks_with_short_last() -> None:
    body = bytes(range(256)) * 10
    tree = merkle.MerkleTree.from_body(body, 512)
    expected = [body[i : i + 512] for i in range(0, len(body), 512)]
    assert tree.leaf_count == 5
    assert tree.root == ref_mth(expected)
    assert merkle.MerkleTree.from_body(b"", 512).leaf_count == 0
    with pytest.raises(LocalProtocolError):
        merkle.MerkleTree.from_body(body, 0)


def test_inclusion_path_refuses_index_outside_tree() -> None:
    tree = merkle.MerkleTree(_blocks(3))
    with pytest.raises(LocalProtocolError):
        tree.inclusion_path(3)
    with pytest.raises(LocalProtocolError):
        tree.inclusion_path(-1)
    with pytest.raises(LocalProtocolError):
        merkle.path_length(3, 3)


def test_path_lengths_are_bounded_by_depth() -> None:
    assert merkle.path_length(0, 1) == 0
    assert merkle.path_length(4, 5) == 1
    assert merkle.path_length(0, 5) == 3
    assert merkle.path_length(0, merkle.MAX_LEAVES) == merkle.MAX_PATH_LENGTH
    assert merkle.path_length(merkle.MAX_LEAVES - 1, merkle.MAX_LEAVES) == merkle.MAX_PATH_LENGTH


def test_tree_rebuilds_from_its_leaf_hashes() -> None:
    blocks = _blocks(13)
    tree = merkle.MerkleTree(blocks)
    assert tree.leaf_hashes == b"".join(merkle.leaf_hash(b) for b in blocks)
    again = merkle.MerkleTree.from_leaf_hashes(tree.leaf_hashes)
    assert again.root == tree.root and again.leaf_count == 13
    assert [again.inclusion_path(i) for i in range(13)] == [
        tree.inclusion_path(i) for i in range(13)
    ]
    assert merkle.MerkleTree.from_leaf_hashes(b"").root == _h(b"")
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        merkle.MerkleTree.from_leaf_hashes(bytes(33))
