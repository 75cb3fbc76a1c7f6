"""Object encryption: XChaCha20-Poly1305 under the owner's key, and read capabilities.

An object is sealed on the writer's device before it leaves, so holders and the hub only ever
see ciphertext. A sealed blob is raw bytes, not CBOR, because it is the payload that gets
erasure coded::

    sealed = magic ("LS", 2 bytes) || version (0x01) || nonce (24 bytes)
             || ciphertext (len(plaintext) bytes) || Poly1305 tag (16 bytes)

The AEAD is libsodium's crypto_aead_xchacha20poly1305_ietf (draft-irtf-cfrg-xchacha-03,
built on RFC 8439's ChaCha20-Poly1305). Its associated data is the 27-byte header followed by
the caller's AAD, so the header cannot be altered and a blob cannot be opened in a context
(AAD) other than the one it was sealed for. The nonce comes from the caller: the core draws no
randomness. It must never repeat under one key; at 24 bytes a random nonce is safe.

Each object has its own key, derived from the owner's master key and the object's nonce
(:func:`object_key`), so the owner needs to keep one secret and sharing one object's key opens
that object and no other. A :class:`ReadCapability` is an object's CID with its key, written
``<cid>#<key>``, the one string someone needs to fetch and read an object.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field

from nacl import bindings
from nacl.exceptions import CryptoError

from lichen import cid
from lichen.errors import IntegrityError, LocalProtocolError, MalformedMessage, UnsupportedVersion

MAGIC = b"LS"
"""Marks a Lichen sealed blob, so a stray file is refused before any decryption is tried."""
VERSION = 1
KEY_SIZE = bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES  # 32
NONCE_SIZE = bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_SIZE = bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
HEADER = MAGIC + bytes([VERSION])
HEADER_SIZE = len(HEADER) + NONCE_SIZE
OVERHEAD = HEADER_SIZE + TAG_SIZE
"""Bytes a sealed blob adds to its plaintext: header, nonce and tag."""
MAX_PLAINTEXT_SIZE = bindings.crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX
"""libsodium's own limit for one AEAD message."""

DECRYPT_FAILED = "cannot decrypt: wrong key or the data was altered"

KEY_TEXT_SIZE = 43  # ceil(32 * 8 / 6) base64url characters, unpadded (RFC 4648 section 5)
CAPABILITY_TEXT_SIZE = cid.TEXT_SIZE + 1 + KEY_TEXT_SIZE
"""The exact length of a capability's text form; anything else is refused before parsing."""
_KEY_TEXT = re.compile(r"[A-Za-z0-9_-]{43}")


def sealed_size(plaintext_size: int) -> int:
    """The length of the sealed blob of a ``plaintext_size``-byte object."""
    if (
        not isinstance(plaintext_size, int)
        or isinstance(plaintext_size, bool)
        or plaintext_size < 0
    ):
        raise LocalProtocolError(
            f"plaintext size must be a non-negative int, got {plaintext_size!r}"
        )
    return plaintext_size + OVERHEAD


BytesLike = bytes | bytearray | memoryview


def seal(plaintext: BytesLike, key: bytes, nonce: bytes, aad: BytesLike = b"") -> bytes:
    """Encrypt and authenticate ``plaintext`` under ``key``, binding the header and ``aad``."""
    _check_key(key)
    _check_bytes("aad", aad)
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise LocalProtocolError(f"the nonce must be {NONCE_SIZE} bytes")
    _check_bytes("plaintext", plaintext)
    if len(plaintext) > MAX_PLAINTEXT_SIZE:
        raise LocalProtocolError(f"cannot seal more than {MAX_PLAINTEXT_SIZE} bytes at once")
    header = HEADER + nonce
    body = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        bytes(plaintext), header + bytes(aad), nonce, key
    )
    return header + body


def unseal(sealed: BytesLike, key: bytes, aad: BytesLike = b"") -> bytes:
    """The plaintext of a sealed blob; :class:`IntegrityError` if the key, AAD or bytes are wrong.

    A blob too short to hold a header and tag, or without the magic, is
    :class:`MalformedMessage`; a sealed blob of another version is :class:`UnsupportedVersion`.
    """
    _check_key(key)
    _check_bytes("aad", aad)
    _check_bytes("sealed", sealed)
    if len(sealed) < OVERHEAD:
        raise MalformedMessage(f"sealed blob truncated: {len(sealed)} bytes, at least {OVERHEAD}")
    view = memoryview(sealed)
    if view[: len(MAGIC)] != MAGIC:
        raise MalformedMessage("not a Lichen sealed blob (bad magic)")
    version = view[len(MAGIC)]
    if version != VERSION:
        raise UnsupportedVersion(f"sealed blob version {version} is not supported")
    header = bytes(view[:HEADER_SIZE])
    try:
        return bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            bytes(view[HEADER_SIZE:]), header + bytes(aad), header[len(HEADER) :], key
        )
    except CryptoError as exc:
        raise IntegrityError(DECRYPT_FAILED) from exc


_OBJECT_KEY_PERSON = b"lichen-objkey/1"  # BLAKE2b personalisation: domain-separates this use


def object_key(master: bytes, nonce: bytes) -> bytes:
    """The key of the object sealed with ``nonce``, derived from the owner's ``master`` key.

    A keyed BLAKE2b (RFC 7693) of the nonce: one-way, so an object key reveals neither the
    master key nor any other object's key.
    """
    _check_key(master)
    if len(nonce) != NONCE_SIZE:
        raise LocalProtocolError(f"a nonce is {NONCE_SIZE} bytes")
    return hashlib.blake2b(
        nonce, key=master, digest_size=KEY_SIZE, person=_OBJECT_KEY_PERSON
    ).digest()


def nonce_of(sealed: BytesLike) -> bytes:
    """The nonce a sealed blob was sealed with (to derive its key with :func:`object_key`)."""
    if len(sealed) < OVERHEAD or bytes(memoryview(sealed)[: len(MAGIC)]) != MAGIC:
        raise MalformedMessage("not a Lichen sealed blob")
    return bytes(memoryview(sealed)[len(HEADER) : HEADER_SIZE])


@dataclass(frozen=True)
class ReadCapability:
    """What a reader needs for one object: its binary CID and the key it was sealed under."""

    cid: bytes
    """The object's binary CIDv1 (see :mod:`lichen.cid`)."""
    key: bytes = field(repr=False)
    """The 32-byte XChaCha20-Poly1305 key; kept out of ``repr`` so it does not reach logs."""

    def __post_init__(self) -> None:
        try:
            cid.check(self.cid)
        except MalformedMessage as exc:
            raise LocalProtocolError(f"ReadCapability: {exc}") from exc
        _check_key(self.key)

    def to_text(self) -> str:
        """``<cid text>#<key as unpadded base64url>``: one string to share an object."""
        key_text = base64.urlsafe_b64encode(self.key).rstrip(b"=").decode("ascii")
        return f"{cid.to_text(self.cid)}#{key_text}"

    @classmethod
    def parse(cls, text: str) -> ReadCapability:
        """The capability written by :meth:`to_text`; :class:`MalformedMessage` on bad input."""
        # The messages never echo the key part: the text is a secret.
        if not isinstance(text, str) or len(text) != CAPABILITY_TEXT_SIZE:
            raise MalformedMessage(
                f"a read capability is {CAPABILITY_TEXT_SIZE} characters: <cid>#<key>"
            )
        address, sep, key_text = text.partition("#")
        if sep != "#" or len(address) != cid.TEXT_SIZE or not _KEY_TEXT.fullmatch(key_text):
            raise MalformedMessage("a read capability is <cid>#<43-character base64url key>")
        key = base64.urlsafe_b64decode(key_text + "=")
        if base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii") != key_text:
            # The last character carries 2 unused bits; only one spelling per key is accepted.
            raise MalformedMessage("the read capability's key is not canonical base64url")
        return cls(cid.from_text(address), key)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise LocalProtocolError(f"the key must be {KEY_SIZE} bytes")


def _check_bytes(name: str, value: BytesLike) -> None:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"{name} must be bytes, got {type(value).__name__}")
