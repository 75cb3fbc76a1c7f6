"""Deterministic CBOR encoding (RFC 8949): the subset a sensor sends.

The bytes equal what the agent's ``lichen.cbor.encode`` (cbor2 in canonical mode) makes of
the same value, on CPython and on MicroPython alike: the shortest head for every length,
map keys sorted by their encoded length and then bytewise (RFC 7049 section 3.9), and a
float in the smallest width that holds it exactly (half, single, double; like cbor2, half
only below 32768 in magnitude). Hand-written because MicroPython ships no CBOR module; the
sensor only encodes, so there is no decoder here.
"""

import struct

_INF = float("inf")


class Tag:
    """A tagged item (RFC 8949 section 3.4), e.g. ``Tag(17, [...])`` for a COSE_Mac0."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value


def _head(major, arg):
    # RFC 8949 section 3: the argument in the fewest bytes (section 4.2.1, preferred form).
    first = major << 5
    if arg < 24:
        return bytes((first | arg,))
    if arg < 0x100:
        return bytes((first | 24, arg))
    if arg < 0x10000:
        return struct.pack(">BH", first | 25, arg)
    if arg < 0x100000000:
        return struct.pack(">BI", first | 26, arg)
    if arg < 0x10000000000000000:
        return struct.pack(">BQ", first | 27, arg)
    raise ValueError("integer out of the 64-bit range CBOR heads hold")


def _half(single):
    """The binary16 bits of a binary32 value (4 bytes), or None when it does not fit."""
    bits = struct.unpack(">I", single)[0]
    sign = (bits >> 16) & 0x8000
    exponent = (bits >> 23) & 0xFF
    mantissa = bits & 0x7FFFFF
    if exponent == 0:
        # Zero keeps its sign; a binary32 subnormal is far below the smallest half (2**-24).
        return struct.pack(">H", sign) if mantissa == 0 else None
    e = exponent - 127
    if -14 <= e <= 14:
        # Normal half, with cbor2's limit of 32768 (2**15) kept so the bytes match it.
        if mantissa & 0x1FFF:
            return None
        return struct.pack(">H", sign | ((e + 15) << 10) | (mantissa >> 13))
    if -24 <= e < -14:
        # Subnormal half: the value is m * 2**-24 for a whole m below 1024.
        significand = mantissa | 0x800000
        shift = -(e + 1)
        if significand & ((1 << shift) - 1):
            return None
        return struct.pack(">H", sign | (significand >> shift))
    return None


def _float(value):
    if value != value:
        return b"\xf9\x7e\x00"  # NaN, as cbor2 writes it
    if value == _INF:
        return b"\xf9\x7c\x00"
    if value == -_INF:
        return b"\xf9\xfc\x00"
    try:
        single = struct.pack(">f", value)
    except OverflowError:  # CPython refuses what MicroPython packs as infinity
        single = b"\x7f\x80\x00\x00"
    if struct.unpack(">f", single)[0] != value:
        return b"\xfb" + struct.pack(">d", value)
    half = _half(single)
    if half is not None:
        return b"\xf9" + half
    return b"\xfa" + single


def _encode(value, out):
    # bool before int: True and False are ints on both runtimes.
    if value is True:
        out.append(b"\xf5")
    elif value is False:
        out.append(b"\xf4")
    elif value is None:
        out.append(b"\xf6")
    elif isinstance(value, int):
        if value >= 0:
            out.append(_head(0, value))
        else:
            out.append(_head(1, -1 - value))
    elif isinstance(value, float):
        out.append(_float(value))
    elif isinstance(value, (bytes, bytearray)):
        out.append(_head(2, len(value)))
        out.append(bytes(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(_head(3, len(raw)))
        out.append(raw)
    elif isinstance(value, (list, tuple)):
        out.append(_head(4, len(value)))
        for item in value:
            _encode(item, out)
    elif isinstance(value, dict):
        pairs = []
        for key in value:
            pairs.append((encode(key), encode(value[key])))
        # RFC 7049 section 3.9 (cbor2's canonical order): shorter key first, then bytewise.
        pairs.sort(key=lambda pair: (len(pair[0]), pair[0]))
        out.append(_head(5, len(pairs)))
        for key, item in pairs:
            out.append(key)
            out.append(item)
    elif isinstance(value, Tag):
        out.append(_head(6, value.tag))
        _encode(value.value, out)
    else:
        raise TypeError("cannot encode a " + type(value).__name__ + " as CBOR")


def encode(value):
    """The deterministic CBOR encoding of ``value``; TypeError or ValueError if it has none."""
    out = []
    _encode(value, out)
    return b"".join(out)
