"""The envelope every Lichen CBOR object shares: a version key and a kind key.

Every message and signed object is a CBOR map. Key 0 is the protocol version, key 1 the
kind of object, so that a signature made over one kind can never be read as another. The
remaining keys belong to the kind and are documented, as CDDL, next to its codec::

    envelope = {
      0 => 1,         ; v: protocol version
      1 => kind,      ; what this map is, one of the Kind values below
      * int => any,   ; the kind's own fields
    }
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from lichen import cbor
from lichen.errors import MalformedMessage, UnsupportedVersion

PROTOCOL_VERSION = 1
KEY_VERSION = 0
KEY_KIND = 1


class Kind(IntEnum):
    """Registry of object kinds. Values are wire constants: never reuse or renumber one."""

    HELLO = 1
    SHARD_HEADER = 2
    MANIFEST = 3
    RECEIPT = 4
    SEGMENT = 5
    CHALLENGE = 6
    PROOF = 7
    EPOCH_REWARDS = 8
    SHARD = 9
    HELLO_REQUEST = 10
    PEERS = 11
    STATUS = 12
    STREAM_INDEX = 13
    LEDGER_RECORD = 14
    JOIN = 15
    JOINED = 16
    PRESENCE = 17
    RECEIPT_BATCH = 18
    REPAIR_ORDER = 19
    REPAIRED = 20
    STREAM_REPORT = 21


def pack(kind: Kind, fields: dict[int, Any]) -> dict[int, Any]:
    """Wrap a kind's fields in the envelope."""
    return {KEY_VERSION: PROTOCOL_VERSION, KEY_KIND: int(kind), **fields}


def encode(kind: Kind, fields: dict[int, Any]) -> bytes:
    """Encode a kind's fields, deterministically, inside the envelope."""
    return cbor.encode(pack(kind, fields))


def reader(value: Any, kind: Kind) -> cbor.MapReader:
    """Check an already-decoded value is an envelope of ``kind`` and return its field reader."""
    if not isinstance(value, dict):
        raise MalformedMessage(f"{kind.name}: expected a CBOR map, got {type(value).__name__}")
    version = value.get(KEY_VERSION)
    if version != PROTOCOL_VERSION:
        if isinstance(version, int) and not isinstance(version, bool):
            raise UnsupportedVersion(f"{kind.name}: protocol version {version} is not supported")
        raise MalformedMessage(f"{kind.name}: missing or invalid version field")
    if value.get(KEY_KIND) != int(kind):
        raise MalformedMessage(f"expected a {kind.name} object, got kind {value.get(KEY_KIND)!r}")
    fields = cbor.MapReader(value, kind.name)
    fields.optional(KEY_VERSION)
    fields.optional(KEY_KIND)
    return fields


def decode(data: bytes, kind: Kind, limits: cbor.Limits = cbor.DEFAULT_LIMITS) -> cbor.MapReader:
    """Decode untrusted bytes that must hold an envelope of ``kind``."""
    return reader(cbor.decode(data, limits), kind)
