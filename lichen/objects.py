"""From a user's bytes to signed shards and back: the whole object pipeline in one place.

Writing: seal the bytes under the owner's key (:mod:`lichen.seal`), address the sealed bytes
(:mod:`lichen.cid`), cut them into k-of-n pieces (:mod:`lichen.erasure`) and turn each piece
into an owner-signed shard (:mod:`lichen.shard`). Once holders have accepted the shards, the
owner signs a manifest naming them (:func:`make_manifest`).

Reading: any k shards that match the manifest's roots rebuild the sealed bytes, which must
hash to the object's CID before they are unsealed. Shards that fail a check are set aside and
reported, never used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lichen import cid, erasure, merkle, seal, shard
from lichen.errors import IntegrityError, LocalProtocolError, NotEnoughShards, RemoteProtocolError
from lichen.identity import Identity
from lichen.manifest import Manifest, check_header


@dataclass(frozen=True)
class EncodedObject:
    """An object ready to be placed: its address and one signed shard per index."""

    object_cid: bytes
    sealed_size: int
    k: int
    n: int
    shards: tuple[shard.Shard, ...] = field(repr=False)

    @property
    def cid_text(self) -> str:
        """The object's ``bafk...`` address."""
        return cid.to_text(self.object_cid)

    @property
    def piece_size(self) -> int:
        """Bytes in each shard body."""
        return self.shards[0].header.piece_size


def encode_object(
    plaintext: bytes,
    *,
    key: bytes,
    nonce: bytes,
    k: int,
    n: int,
    owner: Identity,
    expiry: int,
    block_size: int = shard.DEFAULT_BLOCK_SIZE,
) -> EncodedObject:
    """Seal, address, erasure-code and shard ``plaintext``; ``nonce`` is 24 fresh random bytes."""
    erasure.check_params(k, n)
    sealed = seal.seal(plaintext, key, nonce)
    object_cid = cid.of(sealed)
    pieces = erasure.encode(sealed, k, n)
    shards = tuple(
        shard.build_shard(
            piece,
            object_cid=object_cid,
            index=index,
            k=k,
            n=n,
            codec=erasure.CODEC,
            object_size=len(sealed),
            block_size=block_size,
            expiry=expiry,
            owner=owner,
        )
        for index, piece in enumerate(pieces)
    )
    return EncodedObject(object_cid, len(sealed), k, n, shards)


def make_manifest(
    encoded: EncodedObject,
    holders: Sequence[bytes],
    *,
    owner: Identity,
    created: int,
    label: str | None = None,
) -> Manifest:
    """The manifest of ``encoded`` with the node id that accepted each shard, by index."""
    first = encoded.shards[0].header
    if first.owner != owner.public.public_key:
        raise LocalProtocolError("the manifest's owner is the shards' owner")
    return Manifest(
        object_cid=encoded.object_cid,
        size=encoded.sealed_size,
        codec=erasure.CODEC,
        k=encoded.k,
        n=encoded.n,
        piece_size=first.piece_size,
        block_size=first.block_size,
        roots=tuple(s.header.root for s in encoded.shards),
        holders=tuple(holders),
        created=created,
        expiry=first.expiry,
        owner=owner.public.public_key,
        label=label,
    )


def check_shard(manifest: Manifest, index: int, signed_header: bytes, body: bytes) -> shard.Shard:
    """Check a fetched shard is shard ``index`` of ``manifest`` and its body matches; return it.

    Raises :class:`RemoteProtocolError` subclasses: the holder sent something wrong.
    """
    header = check_header(manifest, index, signed_header)
    shard.verify_body(header, body)
    return shard.Shard(signed_header, header, body)


@dataclass(frozen=True)
class Decoded:
    """The plaintext of an object and what was learnt about the shards offered."""

    plaintext: bytes = field(repr=False)
    used: tuple[int, ...]
    rejected: Mapping[int, str]
    """Shard index -> why it was not used."""


def decode_object(
    manifest: Manifest,
    fetched: Mapping[int, tuple[bytes, bytes]],
    key: bytes | Callable[[bytes], bytes],
) -> Decoded:
    """Rebuild and unseal an object from fetched ``index -> (signed header, body)`` pairs.

    ``key`` is the object's key, or a function from the object's nonce to its key (the
    owner's :func:`lichen.seal.object_key` with the master key bound).

    Bad shards are rejected (and named in the result), not trusted. Raises
    :class:`NotEnoughShards` when fewer than k good shards remain, :class:`IntegrityError`
    when the rebuilt bytes do not hash to the object's CID or do not unseal under ``key``.
    """
    erasure.check_codec(manifest.codec)
    good: dict[int, bytes] = {}
    rejected: dict[int, str] = {}
    for index, (signed_header, body) in sorted(fetched.items()):
        try:
            good[index] = check_shard(manifest, index, signed_header, body).body
        except RemoteProtocolError as exc:
            rejected[index] = str(exc)
    if len(good) < manifest.k:
        found = tuple(sorted(good))
        detail = "; ".join(f"shard {i}: {why}" for i, why in sorted(rejected.items()))
        raise NotEnoughShards(
            f"object {manifest.cid_text} needs {manifest.k} of {manifest.n} shards, "
            f"found {len(found)} good {list(found)}" + (f" ({detail})" if detail else ""),
            found=found,
            needed=manifest.k,
        )
    return decode_checked(manifest, good, key, rejected)


def decode_checked(
    manifest: Manifest,
    bodies: Mapping[int, bytes],
    key: bytes | Callable[[bytes], bytes],
    rejected: Mapping[int, str] | None = None,
) -> Decoded:
    """Rebuild and unseal an object from ``index -> body`` of at least k shards that already
    passed :func:`check_shard` (a fetcher that checks each shard as it arrives, to fetch
    another in its place, need not pay for the check twice)."""
    sealed = decode_sealed(manifest, bodies)
    object_key = key if isinstance(key, bytes) else key(seal.nonce_of(sealed))
    used = tuple(sorted(bodies)[: manifest.k])
    return Decoded(seal.unseal(sealed, object_key), used, dict(rejected or {}))


def decode_sealed(manifest: Manifest, bodies: Mapping[int, bytes]) -> bytes:
    """The sealed object bytes, rebuilt from the first k of ``index -> body`` (checked shards).

    Raises :class:`NotEnoughShards`, or :class:`IntegrityError` when the rebuilt bytes do not
    hash to the object's CID.
    """
    erasure.check_codec(manifest.codec)
    use = dict(sorted(bodies.items())[: manifest.k])
    sealed = erasure.decode(use, manifest.k, manifest.n, manifest.size)
    if cid.of(sealed) != manifest.object_cid:
        raise IntegrityError(f"rebuilt bytes do not match address {manifest.cid_text}")
    return sealed


def rebuild_pieces(
    manifest: Manifest, bodies: Mapping[int, bytes], indices: Iterable[int]
) -> dict[int, bytes]:
    """The pieces of shards ``indices``, rebuilt from ``index -> body`` of k checked shards.

    Each is checked against its root in the manifest before it is returned, so it can go out
    under the owner's original header. Raises :class:`NotEnoughShards` or
    :class:`IntegrityError` (the rebuilt bytes are not the object's).
    """
    again = erasure.encode(decode_sealed(manifest, bodies), manifest.k, manifest.n)
    pieces = {}
    for index in indices:
        piece = again[index]
        if len(piece) != manifest.piece_size:
            raise IntegrityError(f"rebuilt piece {index} is not {manifest.piece_size} bytes")
        if merkle.MerkleTree.from_body(piece, manifest.block_size).root != manifest.roots[index]:
            raise IntegrityError(f"rebuilt piece {index} does not match its Merkle root")
        pieces[index] = piece
    return pieces
