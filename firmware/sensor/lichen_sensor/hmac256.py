"""HMAC-SHA-256 (RFC 2104) over ``hashlib.sha256``, which MicroPython has; it has no hmac."""

import hashlib

BLOCK_SIZE = 64  # SHA-256 block size in bytes (RFC 2104 section 2: B)
_IPAD = 0x36
_OPAD = 0x5C


def hmac_sha256(key, message):
    """The 32-byte HMAC-SHA-256 tag of ``message`` under ``key``."""
    if len(key) > BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + b"\x00" * (BLOCK_SIZE - len(key))
    inner = hashlib.sha256(bytes(b ^ _IPAD for b in key))
    inner.update(message)
    outer = hashlib.sha256(bytes(b ^ _OPAD for b in key))
    outer.update(inner.digest())
    return outer.digest()
