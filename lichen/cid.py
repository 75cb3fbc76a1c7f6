"""Content addresses: CIDv1 with the raw codec and a sha2-256 multihash, in base32.

Binary form (36 bytes): 0x01 (CIDv1), 0x55 (multicodec raw), 0x12 (sha2-256), 0x20 (32-byte
digest), then the digest. Text form: multibase prefix ``b`` and RFC 4648 base32, lowercase,
unpadded, e.g. ``bafkrei...``. Only this one CID shape is ever produced or accepted, so the
four prefix bytes are constants rather than a general multiformats dependency.
"""

from __future__ import annotations

import base64
import hashlib

from lichen.errors import MalformedMessage

PREFIX = bytes([0x01, 0x55, 0x12, 0x20])
BINARY_SIZE = len(PREFIX) + 32
TEXT_SIZE = 59  # "b" + ceil(36 * 8 / 5) base32 characters


def digest_to_cid(digest: bytes) -> bytes:
    """The binary CID of a sha2-256 digest."""
    if len(digest) != 32:
        raise MalformedMessage("a sha2-256 digest is 32 bytes")
    return PREFIX + digest


def of(data: bytes) -> bytes:
    """The binary CID of ``data``."""
    return PREFIX + hashlib.sha256(data).digest()


def check(raw: bytes) -> bytes:
    """Return ``raw`` if it is a binary CID of the one shape we use; :class:`MalformedMessage`."""
    if not isinstance(raw, bytes) or len(raw) != BINARY_SIZE or not raw.startswith(PREFIX):
        raise MalformedMessage("not a CIDv1 raw sha2-256 content address")
    return raw


def to_text(raw: bytes) -> str:
    """The ``bafk...`` text form of a binary CID."""
    check(raw)
    return "b" + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def from_text(text: str) -> bytes:
    """The binary CID of a ``bafk...`` text address in its one canonical spelling (lowercase, zero
    trailing bits); :class:`MalformedMessage` otherwise."""
    if not isinstance(text, str) or len(text) != TEXT_SIZE or not text.startswith("b"):
        raise MalformedMessage(f"not a Lichen content address: {str(text)[:80]!r}")
    body = text[1:].upper()
    try:
        raw = check(base64.b32decode(body + "=" * (-len(body) % 8)))
    except ValueError as exc:
        raise MalformedMessage(f"not a Lichen content address: {text!r}") from exc
    # b32decode takes either case and ignores the spare bits of the last character: refusing
    # every other spelling gives one text per CID, so file names, topics and rows cannot alias.
    if to_text(raw) != text:
        raise MalformedMessage(f"content address not in canonical form: {text!r}")
    return raw


def text_of(data: bytes) -> str:
    """The text CID of ``data``."""
    return to_text(of(data))
