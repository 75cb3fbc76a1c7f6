"""COSE_Mac0 with HMAC 256/256 (RFC 9052 section 6.2): how a sensor authenticates a pack.

The same bytes as the agent's ``lichen.cose.mac0(payload, key, kid, counter=n)``: protected
header ``{1: 5, 6: counter}`` (alg HMAC 256/256, RFC 9053 section 3.1; the message counter as
Partial IV, big-endian without leading zeros), unprotected ``{4: kid}``, the payload attached,
and the tag over the MAC_structure of RFC 9052 section 6.3. CBOR tag 17.
"""

from lichen_sensor import cbor
from lichen_sensor.hmac256 import hmac_sha256

TAG_MAC0 = 17  # RFC 9052 section 2
HEADER_ALG = 1  # RFC 9052 section 3.1
HEADER_KID = 4
HEADER_PARTIAL_IV = 6
ALG_HMAC_256_256 = 5  # RFC 9053 section 3.1
MAX_COUNTER = (1 << 64) - 1  # the agent reads at most 8 bytes of Partial IV
MIN_KEY_SIZE = 16


def counter_bytes(counter):
    """``counter`` as a Partial IV: big-endian, no leading zeros (0 is one zero byte)."""
    if counter < 0 or counter > MAX_COUNTER:
        raise ValueError("a counter is a 64-bit unsigned integer")
    out = []
    while True:
        out.append(counter & 0xFF)
        counter >>= 8
        if not counter:
            break
    out.reverse()
    return bytes(out)


def mac0(payload, key, kid, counter):
    """A tagged COSE_Mac0 of ``payload`` under ``key``, naming ``kid``, with ``counter``."""
    if len(key) < MIN_KEY_SIZE:
        raise ValueError("an HMAC key must be at least 16 bytes")
    protected = cbor.encode(
        {HEADER_ALG: ALG_HMAC_256_256, HEADER_PARTIAL_IV: counter_bytes(counter)}
    )
    # RFC 9052 section 6.3: MAC_structure, with an empty external_aad.
    tag = hmac_sha256(key, cbor.encode(["MAC0", protected, b"", payload]))
    return cbor.encode(cbor.Tag(TAG_MAC0, [protected, {HEADER_KID: kid}, payload, tag]))
