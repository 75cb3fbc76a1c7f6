"""Manifests (owner-signed records of an object) and receipts (holder-signed acceptances).

A manifest says what an object is and where its shards went when it was written. A receipt is
a holder's signed statement that it accepted one shard; placements are learnt from receipts,
never from unsigned claims, so after a repair the receipts, not the manifest, say who holds
what. Both travel as COSE_Sign1 (see :mod:`lichen.cose`) around these payloads::

    manifest = {
      0 => 1, 1 => 3,              ; envelope: v, kind MANIFEST
      2 => bstr .size 36,          ; object CID (of the sealed bytes)
      3 => uint,                   ; sealed object size in bytes
      4 => tstr,                   ; erasure codec, e.g. "zfec-rs/1"
      5 => uint,                   ; k: shards needed to rebuild
      6 => uint,                   ; n: shards written
      7 => uint,                   ; piece (shard body) size in bytes
      8 => uint,                   ; Merkle block size in bytes
      9 => [+ bstr .size 32],      ; Merkle root of each shard, by index (n entries)
      10 => [+ bstr .size 20],     ; holder node id of each shard at write time (n entries)
      11 => uint,                  ; created, unix seconds
      12 => uint,                  ; expiry, unix seconds
      13 => bstr .size 32,         ; owner Ed25519 public key (the signer)
      ? 14 => tstr,                ; label chosen by the owner, e.g. a file name
    }

    receipt = {
      0 => 1, 1 => 4,              ; envelope: v, kind RECEIPT
      2 => bstr .size 36,          ; object CID
      3 => uint,                   ; shard index
      4 => bstr .size 32,          ; Merkle root of the shard accepted
      5 => uint,                   ; shard body size in bytes
      6 => uint,                   ; expiry the holder agreed to keep it until
      7 => uint,                   ; accepted at, unix seconds
      8 => bstr .size 20,          ; holder node id (the signer)
      9 => bstr .size 20,          ; owner node id (who asked)
    }
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lichen import cbor, cid, cose, wire
from lichen.errors import BadSignature, IntegrityError, LocalProtocolError, MalformedMessage
from lichen.fieldcheck import local_check, remote_build
from lichen.identity import NODE_ID_SIZE, PUBLIC_KEY_SIZE, Identity, PublicIdentity
from lichen.shard import MAX_SHARDS, ROOT_SIZE, ShardHeader, open_header

MAX_LABEL = 256  # characters: a file name, not a document
# A manifest with 256 shards is about 14 KiB; receipts are tiny.
MANIFEST_LIMITS = cbor.Limits(max_size=32 * 1024, max_depth=4, max_items=2048)
RECEIPT_LIMITS = cbor.Limits(max_size=1024, max_depth=4, max_items=64)


@dataclass(frozen=True)
class Manifest:
    """The owner's signed record of an object, its erasure parameters and first placement."""

    object_cid: bytes
    size: int
    codec: str
    k: int
    n: int
    piece_size: int
    block_size: int
    roots: tuple[bytes, ...]
    holders: tuple[bytes, ...]
    created: int
    expiry: int
    owner: bytes
    label: str | None = None

    def __post_init__(self) -> None:
        local_check(lambda: _check_manifest(self))

    @property
    def cid_text(self) -> str:
        """The object's ``bafk...`` address."""
        return cid.to_text(self.object_cid)

    def to_payload(self) -> bytes:
        """The deterministic CBOR payload that the owner signs."""
        fields: dict[int, Any] = {
            2: self.object_cid,
            3: self.size,
            4: self.codec,
            5: self.k,
            6: self.n,
            7: self.piece_size,
            8: self.block_size,
            9: list(self.roots),
            10: list(self.holders),
            11: self.created,
            12: self.expiry,
            13: self.owner,
        }
        if self.label is not None:
            fields[14] = self.label
        return wire.encode(wire.Kind.MANIFEST, fields)

    def sign(self, owner: Identity) -> bytes:
        """The manifest as a COSE_Sign1 by ``owner``, who must be the manifest's owner."""
        if owner.public.public_key != self.owner:
            raise LocalProtocolError("a manifest is signed by its owner")
        return cose.sign1(self.to_payload(), owner)


def _check_manifest(m: Manifest) -> None:
    cid.check(m.object_cid)
    if not 1 <= m.k <= m.n <= MAX_SHARDS:
        raise MalformedMessage(f"manifest: need 1 <= k <= n <= {MAX_SHARDS}, got k={m.k} n={m.n}")
    if len(m.roots) != m.n or len(m.holders) != m.n:
        raise MalformedMessage("manifest: one root and one holder per shard")
    if any(len(r) != ROOT_SIZE for r in m.roots):
        raise MalformedMessage("manifest: Merkle roots are 32 bytes")
    if any(len(h) != NODE_ID_SIZE for h in m.holders):
        raise MalformedMessage("manifest: holder node ids are 20 bytes")
    if m.piece_size * m.k < m.size:
        raise MalformedMessage("manifest: k pieces cannot hold the object")
    if m.expiry < m.created:
        raise MalformedMessage("manifest: expires before it was created")
    if len(m.owner) != PUBLIC_KEY_SIZE:
        raise MalformedMessage("manifest: the owner key is 32 bytes")
    if m.label is not None and len(m.label) > MAX_LABEL:
        raise MalformedMessage(f"manifest: label longer than {MAX_LABEL} characters")


def open_manifest(data: bytes) -> Manifest:
    """Parse a signed manifest from untrusted bytes and check the owner's signature.

    Raises :class:`MalformedMessage` or :class:`BadSignature`.
    """
    message = cose.parse(data, MANIFEST_LIMITS)
    fields = wire.decode(message.payload, wire.Kind.MANIFEST, MANIFEST_LIMITS)
    owner = fields.bstr(13, size=PUBLIC_KEY_SIZE)
    label = fields.optional(14)
    if label is not None and not isinstance(label, str):
        raise MalformedMessage("manifest: label must be text")
    roots = fields.array(9, max_len=MAX_SHARDS)
    holders = fields.array(10, max_len=MAX_SHARDS)
    if not all(isinstance(x, bytes) for x in [*roots, *holders]):
        raise MalformedMessage("manifest: roots and holders are byte strings")
    manifest = remote_build(
        lambda: Manifest(
            object_cid=fields.bstr(2, size=cid.BINARY_SIZE),
            size=fields.uint(3),
            codec=fields.tstr(4, max_size=32),
            k=fields.uint(5, max_value=MAX_SHARDS),
            n=fields.uint(6, max_value=MAX_SHARDS),
            piece_size=fields.uint(7),
            block_size=fields.uint(8),
            roots=tuple(roots),
            holders=tuple(holders),
            created=fields.uint(11),
            expiry=fields.uint(12),
            owner=owner,
            label=label,
        )
    )
    fields.finish()
    message.verify_signature(PublicIdentity(owner))
    return manifest


@dataclass(frozen=True)
class Receipt:
    """A holder's signed statement that it accepted shard ``index`` of ``object_cid``."""

    object_cid: bytes
    index: int
    root: bytes
    piece_size: int
    expiry: int
    accepted_at: int
    holder: bytes
    owner: bytes

    def __post_init__(self) -> None:
        local_check(lambda: _check_receipt(self))

    def to_payload(self) -> bytes:
        """The deterministic CBOR payload that the holder signs."""
        return wire.encode(
            wire.Kind.RECEIPT,
            {
                2: self.object_cid,
                3: self.index,
                4: self.root,
                5: self.piece_size,
                6: self.expiry,
                7: self.accepted_at,
                8: self.holder,
                9: self.owner,
            },
        )

    def sign(self, holder: Identity) -> bytes:
        """The receipt as a COSE_Sign1 by ``holder``, who must be the receipt's holder."""
        if holder.kid != self.holder:
            raise LocalProtocolError("a receipt is signed by its holder")
        return cose.sign1(self.to_payload(), holder)


def _check_receipt(r: Receipt) -> None:
    cid.check(r.object_cid)
    if not 0 <= r.index < MAX_SHARDS:
        raise MalformedMessage(f"receipt: shard index {r.index} out of range")
    if len(r.root) != ROOT_SIZE:
        raise MalformedMessage("receipt: Merkle root is 32 bytes")
    if len(r.holder) != NODE_ID_SIZE or len(r.owner) != NODE_ID_SIZE:
        raise MalformedMessage("receipt: node ids are 20 bytes")


def _receipt_fields(payload: bytes) -> Receipt:
    fields = wire.decode(payload, wire.Kind.RECEIPT, RECEIPT_LIMITS)
    receipt = remote_build(
        lambda: Receipt(
            object_cid=fields.bstr(2, size=cid.BINARY_SIZE),
            index=fields.uint(3, max_value=MAX_SHARDS - 1),
            root=fields.bstr(4, size=ROOT_SIZE),
            piece_size=fields.uint(5),
            expiry=fields.uint(6),
            accepted_at=fields.uint(7),
            holder=fields.bstr(8, size=NODE_ID_SIZE),
            owner=fields.bstr(9, size=NODE_ID_SIZE),
        )
    )
    fields.finish()
    return receipt


def open_receipt(
    data: bytes, holder: PublicIdentity | Callable[[bytes], PublicIdentity | None]
) -> Receipt:
    """Parse a signed receipt and check it is signed by the holder it names.

    ``holder`` is the expected key or a lookup from node id to key (for example the hub's
    table of enrolled devices). Raises :class:`MalformedMessage` or :class:`BadSignature`.
    """
    signer, payload = cose.open_signed(data, holder, limits=RECEIPT_LIMITS)
    receipt = _receipt_fields(payload)
    if receipt.holder != signer.kid:
        raise BadSignature("receipt names a holder other than its signer")
    return receipt


def parse_receipt_unverified(data: bytes) -> Receipt:
    """A receipt's fields, with the COSE framing checked but NOT the signature.

    For a store that keeps receipts it has no keys for; anything that trusts a receipt calls
    :func:`open_receipt`. Raises :class:`MalformedMessage`.
    """
    message = cose.parse(data, RECEIPT_LIMITS)
    if message.tag != cose.TAG_SIGN1:
        raise MalformedMessage("a receipt is a COSE_Sign1")
    receipt = _receipt_fields(message.payload)
    if receipt.holder != message.kid:
        raise MalformedMessage("receipt names a holder other than its signer's kid")
    return receipt


def check_receipt_matches(receipt: Receipt, manifest: Manifest) -> None:
    """Raise :class:`MalformedMessage` unless ``receipt`` is for a shard ``manifest`` lists."""
    if receipt.object_cid != manifest.object_cid:
        raise MalformedMessage("receipt is for another object")
    if receipt.index >= manifest.n:
        raise MalformedMessage(f"receipt for shard {receipt.index} of an object with {manifest.n}")
    if receipt.root != manifest.roots[receipt.index]:
        raise MalformedMessage(f"receipt root does not match shard {receipt.index}'s")
    if receipt.piece_size != manifest.piece_size:
        raise MalformedMessage("receipt shard size does not match the manifest")


def check_header(manifest: Manifest, index: int, signed: object) -> ShardHeader:
    """The owner-signed header of shard ``index`` that ``manifest`` lists, parsed from ``signed``.

    Raises :class:`MalformedMessage`, :class:`BadSignature` or :class:`IntegrityError`.
    """
    if not isinstance(signed, bytes):
        raise MalformedMessage("a signed shard header is a byte string")
    header = open_header(signed, owner=PublicIdentity(manifest.owner))
    if header.object_cid != manifest.object_cid:
        raise IntegrityError("shard is for another object")
    if header.index != index:
        raise IntegrityError(f"offered as shard {index} but is shard {header.index}")
    said = (header.k, header.n, header.codec, header.object_size, header.piece_size)
    if said != (manifest.k, manifest.n, manifest.codec, manifest.size, manifest.piece_size):
        raise IntegrityError(f"shard header {index} disagrees with the manifest's parameters")
    if (header.root, header.block_size) != (manifest.roots[index], manifest.block_size):
        raise IntegrityError(f"shard {index} root is not the manifest's")
    return header
