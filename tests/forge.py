"""Forged COSE_Sign1 messages for tests: one node's signature under another node's kid."""

from __future__ import annotations

import cbor2

from lichen import cbor, cose
from lichen.identity import Identity


def swap_kid(signed: bytes, kid: bytes) -> bytes:
    """The COSE_Sign1 ``signed`` with ``kid`` as its (unprotected) kid; all else unchanged."""
    # Our own message, of any size: an item takes at least one byte, hence the item bound.
    message = cose.parse(signed, cbor.Limits(max_size=len(signed), max_items=len(signed)))
    if message.tag != cose.TAG_SIGN1:
        raise ValueError("swap_kid() takes a COSE_Sign1")
    body = [message.protected, {cose.HEADER_KID: kid}, message.payload, message.authenticator]
    return cbor.encode(cbor2.CBORTag(cose.TAG_SIGN1, body))


def sign_as(payload: bytes, signer: Identity, kid: bytes) -> bytes:
    """A COSE_Sign1 over ``payload`` whose signature is ``signer``'s but whose kid is ``kid``."""
    return swap_kid(cose.sign1(payload, signer), kid)
