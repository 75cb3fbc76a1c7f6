"""COSE_Sign1 with EdDSA/Ed25519 and COSE_Mac0 with HMAC 256/256 (RFC 9052).

Only the two structures Lichen uses are implemented, over our bounded CBOR codec, so that
untrusted input is size- and depth-checked before it is parsed; the test suite verifies what
we sign with an independent COSE library and the other way round.

- COSE_Sign1 (tag 18, RFC 9052 section 4.2): protected header ``{1: -8}`` (alg EdDSA), the
  signer's 20-byte node id as ``kid`` (label 4) in the unprotected header. Verification
  accepts alg -8 (EdDSA) and -19 (Ed25519, RFC 9864).
- COSE_Mac0 (tag 17, RFC 9052 section 6.2): protected header ``{1: 5}`` (HMAC 256/256,
  RFC 9053 section 3.1), optionally with a Partial IV (label 6, the sender's message
  counter, big-endian without leading zeros, so replays can be refused), and the sensor's key
  id as ``kid``. Used by sensors, because stock MicroPython has SHA-256 and HMAC but no
  Ed25519.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from lichen import cbor
from lichen.errors import BadMac, BadSignature, LocalProtocolError, MalformedMessage
from lichen.identity import Identity, PublicIdentity

TAG_MAC0 = 17  # RFC 9052 section 2, table 1
TAG_SIGN1 = 18
HEADER_ALG = 1  # RFC 9052 section 3.1, table 2
HEADER_KID = 4
HEADER_PARTIAL_IV = 6  # RFC 9052 section 3.1: carries a sensor's message counter
MAX_PARTIAL_IV = 8  # a 64-bit counter
ALG_EDDSA = -8  # RFC 9053 section 2.2
ALG_ED25519 = -19  # RFC 9864 section 2.2: Ed25519, fully specified
ALG_HMAC_256_256 = 5  # RFC 9053 section 3.1, table 7
ACCEPTED_SIGN_ALGS = frozenset({ALG_EDDSA, ALG_ED25519})
HMAC_TAG_SIZE = 32
MAX_KID_SIZE = 64

_PROTECTED_EDDSA = cbor.encode({HEADER_ALG: ALG_EDDSA})
_PROTECTED_HMAC = cbor.encode({HEADER_ALG: ALG_HMAC_256_256})
# Protected headers are tiny maps; bound them hard.
_HEADER_LIMITS = cbor.Limits(max_size=256, max_depth=2, max_items=32, allowed_tags=frozenset())


def _sig_structure(protected: bytes, external_aad: bytes, payload: bytes) -> bytes:
    # RFC 9052 section 4.4: Sig_structure for COSE_Sign1.
    return cbor.encode(["Signature1", protected, external_aad, payload])


def _mac_structure(protected: bytes, external_aad: bytes, payload: bytes) -> bytes:
    # RFC 9052 section 6.3: MAC_structure for COSE_Mac0.
    return cbor.encode(["MAC0", protected, external_aad, payload])


def sign1(payload: bytes, identity: Identity, external_aad: bytes = b"") -> bytes:
    """A tagged COSE_Sign1 over ``payload`` by ``identity`` (alg EdDSA, kid = node id)."""
    signature = identity.sign(_sig_structure(_PROTECTED_EDDSA, external_aad, payload))
    message = [_PROTECTED_EDDSA, {HEADER_KID: identity.kid}, payload, signature]
    return cbor.encode(cbor2.CBORTag(TAG_SIGN1, message))


def counter_bytes(counter: int) -> bytes:
    """A message counter as a Partial IV: big-endian, no leading zeros (0 is one zero byte)."""
    if not 0 <= counter < 2 ** (8 * MAX_PARTIAL_IV):
        raise LocalProtocolError("a counter is a 64-bit unsigned integer")
    return counter.to_bytes(max(1, (counter.bit_length() + 7) // 8), "big")


def mac0(
    payload: bytes,
    key: bytes,
    kid: bytes,
    external_aad: bytes = b"",
    *,
    counter: int | None = None,
) -> bytes:
    """A tagged COSE_Mac0 over ``payload`` with HMAC-SHA-256 under ``key``.

    With ``counter``, the protected header carries it as the Partial IV.
    """
    if len(key) < 16:
        raise LocalProtocolError("an HMAC key must be at least 16 bytes")
    if not 0 < len(kid) <= MAX_KID_SIZE:
        raise LocalProtocolError(f"a kid is 1 to {MAX_KID_SIZE} bytes")
    protected = _PROTECTED_HMAC
    if counter is not None:
        protected = cbor.encode(
            {HEADER_ALG: ALG_HMAC_256_256, HEADER_PARTIAL_IV: counter_bytes(counter)}
        )
    tag = hmac.digest(key, _mac_structure(protected, external_aad, payload), "sha256")
    message = [protected, {HEADER_KID: kid}, payload, tag]
    return cbor.encode(cbor2.CBORTag(TAG_MAC0, message))


@dataclass(frozen=True)
class CoseMessage:
    """A parsed, not yet verified, COSE_Sign1 or COSE_Mac0."""

    tag: int
    protected: bytes
    alg: int
    kid: bytes
    payload: bytes
    authenticator: bytes
    """The signature (Sign1) or MAC tag (Mac0)."""
    counter: int | None = None
    """The protected Partial IV as a number, when the sender put one there."""

    def verify_signature(self, signer: PublicIdentity, external_aad: bytes = b"") -> bytes:
        """Check the signature is ``signer``'s and return the payload; :class:`BadSignature`."""
        if self.tag != TAG_SIGN1:
            raise LocalProtocolError("verify_signature() is for COSE_Sign1 messages")
        if self.kid != signer.kid:
            raise BadSignature(f"COSE_Sign1 kid does not name node {signer.node_id}")
        signer.verify(
            _sig_structure(self.protected, external_aad, self.payload), self.authenticator
        )
        return self.payload

    def verify_mac(self, key: bytes, external_aad: bytes = b"") -> bytes:
        """Check the MAC under ``key`` and return the payload; :class:`BadMac`."""
        if self.tag != TAG_MAC0:
            raise LocalProtocolError("verify_mac() is for COSE_Mac0 messages")
        expected = hmac.digest(
            key, _mac_structure(self.protected, external_aad, self.payload), "sha256"
        )
        if not hmac.compare_digest(expected, self.authenticator):
            raise BadMac("COSE_Mac0 tag does not verify")
        return self.payload


def parse(data: bytes, limits: cbor.Limits = cbor.DEFAULT_LIMITS) -> CoseMessage:
    """Parse a tagged COSE_Sign1 or COSE_Mac0 from untrusted bytes, without verifying it.

    Raises :class:`MalformedMessage` for anything but a well-formed, supported message.
    """
    value = cbor.decode(data, limits)
    if not isinstance(value, cbor2.CBORTag) or value.tag not in (TAG_SIGN1, TAG_MAC0):
        raise MalformedMessage("expected a tagged COSE_Sign1 (18) or COSE_Mac0 (17)")
    body = value.value
    what = "COSE_Sign1" if value.tag == TAG_SIGN1 else "COSE_Mac0"
    if not isinstance(body, list) or len(body) != 4:
        raise MalformedMessage(f"{what} must be an array of 4 items")
    protected, unprotected, payload, authenticator = body
    if not isinstance(protected, bytes) or not isinstance(unprotected, dict):
        raise MalformedMessage(f"{what} headers are malformed")
    if not isinstance(payload, bytes):
        raise MalformedMessage(f"{what} must carry an attached payload")
    if not isinstance(authenticator, bytes):
        raise MalformedMessage(f"{what} signature or tag must be a byte string")
    prot: dict[Any, Any] = cbor.decode_map(protected, _HEADER_LIMITS) if protected else {}
    if HEADER_ALG in unprotected:
        raise MalformedMessage(f"{what}: alg must be in the protected header")
    alg = prot.get(HEADER_ALG)
    if value.tag == TAG_SIGN1:
        if alg not in ACCEPTED_SIGN_ALGS:
            raise MalformedMessage(f"COSE_Sign1 alg {alg!r} is not supported (want -8 or -19)")
        if len(authenticator) != 64:
            raise MalformedMessage("an Ed25519 signature is 64 bytes")
    else:
        if alg != ALG_HMAC_256_256:
            raise MalformedMessage(f"COSE_Mac0 alg {alg!r} is not supported (want 5)")
        if len(authenticator) != HMAC_TAG_SIZE:
            raise MalformedMessage("an HMAC 256/256 tag is 32 bytes")
    kid = prot.get(HEADER_KID, unprotected.get(HEADER_KID))
    if not isinstance(kid, bytes) or not 0 < len(kid) <= MAX_KID_SIZE:
        raise MalformedMessage(f"{what} needs a kid of 1 to {MAX_KID_SIZE} bytes")
    if HEADER_PARTIAL_IV in unprotected:
        raise MalformedMessage(f"{what}: the Partial IV must be protected")
    partial_iv = prot.get(HEADER_PARTIAL_IV)
    counter = None
    if partial_iv is not None:
        if not isinstance(partial_iv, bytes) or not 0 < len(partial_iv) <= MAX_PARTIAL_IV:
            raise MalformedMessage(f"{what}: Partial IV is 1 to {MAX_PARTIAL_IV} bytes")
        counter = int.from_bytes(partial_iv, "big")
    return CoseMessage(value.tag, protected, alg, kid, payload, authenticator, counter)


def open_signed(
    data: bytes,
    signer: PublicIdentity | Callable[[bytes], PublicIdentity | None],
    *,
    limits: cbor.Limits = cbor.DEFAULT_LIMITS,
    external_aad: bytes = b"",
) -> tuple[PublicIdentity, bytes]:
    """Parse and verify a COSE_Sign1; return the signer and the payload.

    ``signer`` is the expected key, or a lookup from kid to key (None when unknown, which
    raises :class:`BadSignature`).
    """
    message = parse(data, limits)
    if message.tag != TAG_SIGN1:
        raise MalformedMessage("expected a COSE_Sign1, got a COSE_Mac0")
    key = signer if isinstance(signer, PublicIdentity) else signer(message.kid)
    if key is None:
        raise BadSignature(f"COSE_Sign1 signed by unknown kid {message.kid.hex()}")
    return key, message.verify_signature(key, external_aad)
