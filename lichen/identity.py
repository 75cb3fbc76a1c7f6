"""Node identities: Ed25519 keys, node ids derived from them, and the signed-nonce handshake.

A node id is the first 20 bytes of SHA-256 over the Ed25519 public key, written in lowercase
base32 without padding (32 characters). mDNS adverts and MQTT topics carry node ids, but an id
authorises nothing until its holder has signed a fresh nonce (:func:`make_hello`).

Handshake (CDDL)::

    hello = {
      0 => 1, 1 => 1,        ; envelope: v, kind HELLO
      2 => bstr .size 32,    ; Ed25519 public key of the prover
      3 => bstr,             ; the verifier's nonce, 16 to 64 bytes
      4 => bstr .size 20,    ; audience: the verifier's node id, so a hello cannot be relayed
      5 => bstr .size 64,    ; Ed25519 signature over ["lichen-hello", pk, nonce, audience]
    }
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from lichen import cbor, wire
from lichen.errors import BadSignature, LocalProtocolError, MalformedMessage

PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
SIGNATURE_SIZE = 64
NODE_ID_SIZE = 20
NONCE_MIN, NONCE_MAX = 16, 64


def node_id_bytes(public_key: bytes) -> bytes:
    """The 20-byte node id of an Ed25519 public key (used as the COSE ``kid``)."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise LocalProtocolError("an Ed25519 public key is 32 bytes")
    return hashlib.sha256(public_key).digest()[:NODE_ID_SIZE]


def format_node_id(raw: bytes) -> str:
    """The text form of a 20-byte node id: 32 lowercase base32 characters."""
    if len(raw) != NODE_ID_SIZE:
        raise LocalProtocolError("a node id is 20 bytes")
    return base64.b32encode(raw).decode("ascii").lower()


def parse_node_id(text: str) -> bytes:
    """The 20 raw bytes of a node id in its canonical text form (32 lowercase base32
    characters); :class:`MalformedMessage` otherwise."""
    if not isinstance(text, str) or len(text) != 32:
        raise MalformedMessage(f"not a node id: {text!r}")
    try:
        raw = base64.b32decode(text.upper())
    except ValueError as exc:
        raise MalformedMessage(f"not a node id: {text!r}") from exc
    # One spelling per node: ids name topics, files and rows, where an alias would be a second key.
    if format_node_id(raw) != text:
        raise MalformedMessage(f"node id not in canonical form: {text!r}")
    return raw


@dataclass(frozen=True)
class PublicIdentity:
    """A peer's public key and the node id derived from it."""

    public_key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, bytes) or len(self.public_key) != PUBLIC_KEY_SIZE:
            raise LocalProtocolError("an Ed25519 public key is 32 bytes")

    @functools.cached_property
    def kid(self) -> bytes:
        """The raw node id, as carried in COSE ``kid`` headers (hashed once, then kept)."""
        return node_id_bytes(self.public_key)

    @functools.cached_property
    def node_id(self) -> str:
        """The node id in text form."""
        return format_node_id(self.kid)

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise :class:`BadSignature` unless ``signature`` signs ``message`` under this key."""
        try:
            nacl.signing.VerifyKey(self.public_key).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as exc:
            raise BadSignature(f"signature does not verify for node {self.node_id}") from exc


class Identity:
    """A node's private Ed25519 key. Build it from a 32-byte seed the caller draws or loads."""

    __slots__ = ("_key", "public")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise LocalProtocolError("an Ed25519 seed is 32 bytes")
        self._key = nacl.signing.SigningKey(seed)
        self.public = PublicIdentity(bytes(self._key.verify_key))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed, for the key file."""
        return bytes(self._key)

    @property
    def node_id(self) -> str:
        """The node id in text form."""
        return self.public.node_id

    @property
    def kid(self) -> bytes:
        """The raw node id."""
        return self.public.kid

    def sign(self, message: bytes) -> bytes:
        """A detached 64-byte Ed25519 signature over ``message``."""
        return self._key.sign(message).signature

    def __repr__(self) -> str:
        return f"Identity(node_id={self.node_id!r})"


def _hello_input(public_key: bytes, nonce: bytes, audience: bytes) -> bytes:
    return cbor.encode(["lichen-hello", public_key, nonce, audience])


def make_hello(identity: Identity, nonce: bytes, audience: bytes) -> bytes:
    """Answer a verifier's ``nonce``: prove we hold ``identity`` to the node ``audience``."""
    if not NONCE_MIN <= len(nonce) <= NONCE_MAX:
        raise LocalProtocolError(f"a handshake nonce is {NONCE_MIN} to {NONCE_MAX} bytes")
    if len(audience) != NODE_ID_SIZE:
        raise LocalProtocolError("the audience is a 20-byte node id")
    signature = identity.sign(_hello_input(identity.public.public_key, nonce, audience))
    return wire.encode(
        wire.Kind.HELLO,
        {2: identity.public.public_key, 3: nonce, 4: audience, 5: signature},
    )


def verify_hello(
    data: bytes,
    *,
    nonce: bytes,
    audience: bytes,
    expected_node_id: str | None = None,
) -> PublicIdentity:
    """Check a hello answers our ``nonce`` for us (``audience``) and return the proven identity.

    With ``expected_node_id`` (for example from an mDNS advert), the proven key must also
    match it. Raises :class:`BadSignature` or :class:`MalformedMessage`.
    """
    fields = wire.decode(data, wire.Kind.HELLO)
    public_key = fields.bstr(2, size=PUBLIC_KEY_SIZE)
    got_nonce = fields.bstr(3, max_size=NONCE_MAX)
    got_audience = fields.bstr(4, size=NODE_ID_SIZE)
    signature = fields.bstr(5, size=SIGNATURE_SIZE)
    fields.finish()
    peer = PublicIdentity(public_key)
    if got_nonce != nonce:
        raise BadSignature(f"hello from {peer.node_id} answers another nonce")
    if got_audience != audience:
        raise BadSignature(f"hello from {peer.node_id} is addressed to another node")
    peer.verify(_hello_input(public_key, got_nonce, got_audience), signature)
    if expected_node_id is not None and peer.node_id != expected_node_id:
        raise BadSignature(
            f"peer advertised node id {expected_node_id} but proved key of {peer.node_id}"
        )
    return peer
