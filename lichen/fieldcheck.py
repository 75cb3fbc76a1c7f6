"""Field checks shared by the message codecs of :mod:`lichen`.

A message's fields are checked once, in its ``__post_init__``, whoever built it. The same
check is the caller's bug when the caller built the message (:func:`local_check` turns it into
:class:`LocalProtocolError`) and the peer's fault when a decoder built it from the wire
(:func:`remote_build` turns it into :class:`MalformedMessage`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from lichen import cbor
from lichen.errors import LocalProtocolError, MalformedMessage

T = TypeVar("T")


def no_tag_limits(size: int, depth: int, items: int) -> cbor.Limits:
    """Decoding limits for a payload that holds no CBOR tag (signed items in it are opaque
    byte strings)."""
    return cbor.Limits(max_size=size, max_depth=depth, max_items=items, allowed_tags=frozenset())


def is_uint(value: object, limit: int = 2**64) -> bool:
    """A whole number in [0, limit), not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < limit


def is_bytes(value: object, size: int) -> bool:
    """Bytes of exactly ``size``."""
    return isinstance(value, bytes) and len(value) == size


def is_text(value: object, max_size: int) -> bool:
    """Text of at most ``max_size`` characters."""
    return isinstance(value, str) and len(value) <= max_size


def is_number(value: object) -> bool:
    """A finite number; an encoder may send a whole number as an int (RFC 8949 section 3.3)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def require(ok: bool, what: str) -> None:
    """:class:`MalformedMessage` saying ``what`` unless ``ok``."""
    if not ok:
        raise MalformedMessage(what)


def local_check(check: Callable[[], T]) -> T:
    """Run a field check on locally built values, returning its result: a failure is the
    caller's bug."""
    try:
        return check()
    except MalformedMessage as exc:
        raise LocalProtocolError(str(exc)) from exc


def remote_build(build: Callable[[], T]) -> T:
    """Build a message from decoded values: a failed check is the peer's fault."""
    try:
        return build()
    except LocalProtocolError as exc:
        raise MalformedMessage(str(exc)) from exc
