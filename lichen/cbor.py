"""Bounded CBOR decoding and deterministic CBOR encoding (RFC 8949).

Decoding is two passes. First a small structural walker checks the untrusted bytes against
:class:`Limits` (size, nesting depth, item count, tags) and rejects duplicate map keys,
indefinite lengths and trailing bytes, without building any value. Only then does cbor2 build
the Python objects. The walker is written here because cbor2 has no option for any of those
bounds: it keeps the last of two duplicate keys silently, and it honours tags such as 28/29
(shared references) that let a few bytes build cyclic or huge structures.

Encoding uses cbor2's canonical mode (RFC 7049 section 3.9 order: shorter keys first, then
bytewise), so anything that is hashed or signed has exactly one byte form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import cbor2

from lichen.errors import LocalProtocolError, MalformedMessage

# COSE_Mac0 (17) and COSE_Sign1 (18), RFC 9052 section 2. Every other tag is refused unless a
# caller names it: cbor2 gives many tags meanings (dates, bignums, shared references) that a
# peer should not be able to switch on.
COSE_TAGS = frozenset({17, 18})


@dataclass(frozen=True)
class Limits:
    """Bounds applied to untrusted CBOR before any value is built."""

    max_size: int = 64 * 1024
    """Largest input in bytes. Control messages are small; shard bodies pass a larger bound."""

    max_depth: int = 16
    """Deepest nesting of arrays, maps and tags. Our formats nest at most 6 deep."""

    max_items: int = 4096
    """Most data items in one input, counting every key, value and element."""

    allowed_tags: frozenset[int] = field(default=COSE_TAGS)
    """CBOR tags the input may use; any other tag is refused."""


DEFAULT_LIMITS = Limits()


def encode(value: Any) -> bytes:
    """Encode ``value`` deterministically; raise :class:`LocalProtocolError` if it cannot be."""
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise LocalProtocolError(f"cannot encode {type(value).__name__} as CBOR: {exc}") from exc


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode one CBOR item from untrusted ``data`` within ``limits``.

    Raises :class:`MalformedMessage` for anything that is not exactly one well-formed item
    within the bounds, without duplicate map keys.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"decode() takes bytes, not {type(data).__name__}")
    data = bytes(data)
    check_structure(data, limits)
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, UnicodeDecodeError) as exc:
        # The walker has checked structure, so this is e.g. invalid UTF-8 in a text string.
        raise MalformedMessage(f"invalid CBOR: {exc}") from exc
    except ArithmeticError as exc:
        # cbor2 builds a decimal fraction (tag 4, where a caller allows it) with the decimal
        # module, which raises InvalidOperation for exponents beyond its range.
        raise MalformedMessage("CBOR decimal fraction out of range") from exc


def decode_map(data: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[Any, Any]:
    """Decode untrusted ``data`` that must be a CBOR map."""
    value = decode(data, limits)
    if not isinstance(value, dict):
        raise MalformedMessage(f"expected a CBOR map, got {type(value).__name__}")
    return value


def _fail(msg: str, offset: int) -> NoReturn:
    raise MalformedMessage(f"{msg} (at byte {offset})")


def check_structure(data: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    """Check ``data`` is exactly one CBOR item within ``limits``; build nothing.

    Raises :class:`MalformedMessage` on truncation, reserved or indefinite lengths, trailing
    bytes, a disallowed tag or simple value, duplicate or non-int/text map keys, or any bound.
    """
    size = len(data)
    if size > limits.max_size:
        raise MalformedMessage(f"CBOR input of {size} bytes exceeds the {limits.max_size} limit")
    if size == 0:
        raise MalformedMessage("empty input where a CBOR item was expected")

    pos = 0
    items = 0
    # Each open container: [children still to read, keys seen (maps only) or None,
    # True when the next child is a map key].
    stack: list[list[Any]] = [[1, None, False]]

    while stack:
        top = stack[-1]
        if top[0] == 0:
            stack.pop()
            continue
        top[0] -= 1
        is_key = top[1] is not None and top[2]
        if top[1] is not None:
            top[2] = not top[2]

        items += 1
        if items > limits.max_items:
            _fail(f"more than {limits.max_items} CBOR items", pos)
        if pos >= size:
            _fail("truncated CBOR", pos)
        start = pos
        initial = data[pos]
        major, info = initial >> 5, initial & 0x1F
        pos += 1
        if info < 24:
            arg = info
        elif info <= 27:
            width = 1 << (info - 24)
            if pos + width > size:
                _fail("truncated CBOR argument", start)
            arg = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        elif info == 31:
            _fail("indefinite-length CBOR items are not accepted", start)
        else:
            _fail(f"reserved additional information {info}", start)

        if is_key:
            if major == 0:
                key: Any = arg
            elif major == 1:
                key = -1 - arg
            elif major == 3:
                if pos + arg > size:
                    _fail("truncated CBOR text key", start)
                key = ("t", data[pos : pos + arg])
            else:
                _fail("map keys must be integers or text strings", start)
            if key in top[1]:
                _fail("duplicate map key", start)
            top[1].add(key)

        if major in (0, 1):
            continue
        if major in (2, 3):
            if arg > size - pos:
                _fail("CBOR string runs past the end of the input", start)
            pos += arg
        elif major in (4, 5):
            children = arg * 2 if major == 5 else arg
            # Every child takes at least one byte: refuse counts the input cannot hold
            # before allocating anything for them.
            if children > size - pos:
                _fail("CBOR container claims more items than the input holds", start)
            if len(stack) > limits.max_depth:
                _fail(f"CBOR nested deeper than {limits.max_depth}", start)
            stack.append([children, set() if major == 5 else None, True])
        elif major == 6:
            if arg not in limits.allowed_tags:
                _fail(f"CBOR tag {arg} is not accepted here", start)
            if len(stack) > limits.max_depth:
                _fail(f"CBOR nested deeper than {limits.max_depth}", start)
            stack.append([1, None, False])
        else:  # major 7: simple values and floats
            if info in (20, 21, 22):  # false, true, null
                continue
            if info in (25, 26, 27):  # half, single, double float: argument already skipped
                continue
            _fail(f"CBOR simple value {arg} is not accepted", start)

    if pos != size:
        _fail(f"{size - pos} trailing bytes after the CBOR item", pos)


class MapReader:
    """Typed, checked access to the fields of a decoded CBOR map.

    Every accessor raises :class:`MalformedMessage` naming the message and the field, so
    codecs stay short and every malformed input gets the same kind of clear error.
    """

    def __init__(self, fields: Mapping[Any, Any], what: str) -> None:
        self._fields = fields
        self._what = what
        self._read: set[Any] = set()

    def _get(self, key: int | str, optional: bool) -> Any:
        self._read.add(key)
        if key not in self._fields:
            if optional:
                return None
            raise MalformedMessage(f"{self._what}: field {key!r} is missing")
        return self._fields[key]

    def _bad(self, key: int | str, expected: str) -> NoReturn:
        got = type(self._fields[key]).__name__
        raise MalformedMessage(f"{self._what}: field {key!r} must be {expected}, got {got}")

    def uint(self, key: int | str, *, max_value: int = 2**64 - 1) -> int:
        """A non-negative integer no larger than ``max_value``."""
        value = self._get(key, False)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            self._bad(key, "an unsigned integer")
        if value > max_value:
            raise MalformedMessage(f"{self._what}: field {key!r} exceeds {max_value}")
        return value

    def bstr(
        self, key: int | str, *, size: int | None = None, max_size: int | None = None
    ) -> bytes:
        """A byte string, of exactly ``size`` or at most ``max_size`` bytes."""
        value = self._get(key, False)
        if not isinstance(value, bytes):
            self._bad(key, "a byte string")
        if size is not None and len(value) != size:
            raise MalformedMessage(f"{self._what}: field {key!r} must be {size} bytes")
        if max_size is not None and len(value) > max_size:
            raise MalformedMessage(f"{self._what}: field {key!r} exceeds {max_size} bytes")
        return value

    def tstr(self, key: int | str, *, max_size: int = 256) -> str:
        """A text string of at most ``max_size`` characters."""
        value = self._get(key, False)
        if not isinstance(value, str):
            self._bad(key, "a text string")
        if len(value) > max_size:
            raise MalformedMessage(f"{self._what}: field {key!r} exceeds {max_size} characters")
        return value

    def array(self, key: int | str, *, max_len: int) -> list[Any]:
        """An array of at most ``max_len`` elements (elements are checked by the caller)."""
        value = self._get(key, False)
        if not isinstance(value, list):
            self._bad(key, "an array")
        if len(value) > max_len:
            raise MalformedMessage(f"{self._what}: field {key!r} has more than {max_len} items")
        return value

    def map(self, key: int | str) -> dict[Any, Any]:
        """A nested map."""
        value = self._get(key, False)
        if not isinstance(value, dict):
            self._bad(key, "a map")
        return value

    def optional(self, key: int | str) -> Any:
        """The raw value of an optional field, or None when absent."""
        return self._get(key, True)

    def finish(self) -> None:
        """Refuse fields this version of the message does not define."""
        unknown = [k for k in self._fields if k not in self._read]
        if unknown:
            raise MalformedMessage(f"{self._what}: unknown field(s) {sorted(map(repr, unknown))}")
