"""SenML packs (RFC 8428) in JSON and CBOR: bounded decoding, resolution, encoding.

Sensors write readings as one SenML pack per CoAP datagram, content-format 110
(``application/senml+json``) or 112 (``application/senml+cbor``). Decoding bounds the
untrusted bytes first, checks every field, then resolves the pack (section 4.6): base
fields applied, relative times made absolute against the caller's ``now``, records sorted
by time. Encoding writes resolved records back with full names and absolute times.

Hand-written: the Python SenML packages on PyPI are unmaintained and neither bound nor
validate untrusted input; parsing itself is the stdlib ``json`` module and our bounded
CBOR codec (:mod:`lichen.cbor`). The pack accepted, as CDDL (after RFC 8428 section 11)::

    pack = [* record]                     ; at most MAX_RECORDS; [] decodes to ()
    record = {
      ? bver => uint,                     ; 1..10, default 10
      ? bn => tstr, ? bt => number, ? bu => tstr, ? bv => number, ? bs => number,
      ? n => tstr, ? u => tstr, ? t => number, ? ut => number,
      ? (v => number // vs => tstr // vb => bool // vd => binary-value),
      ? s => number,
      * label => any                      ; ignored, unless the label ends in "_"
    }
    ; JSON labels are the strings "bver", "bn", ...; CBOR labels the integers
    ; bver -1, bn -2, bt -3, bu -4, bv -5, bs -6, n 0, u 1, v 2, vs 3, vb 4, s 5, t 6, ut 7, vd 8.
    ; binary-value is a byte string in CBOR, base64url (padding optional) text in JSON.
    ; number is an int or float; CBOR may also use a decimal fraction (tag 4).

A record holding only base fields (section 5.1.7's first record) sets the bases for the
records after it and resolves to nothing. Base value is added only to a ``v`` the record
carries and base sum only to an ``s`` it carries: a record with neither a value nor a sum is
refused rather than given the base as its value.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NoReturn

from lichen import cbor
from lichen.errors import LocalProtocolError, MalformedMessage, UnsupportedVersion

# CoAP Content-Format ids registered by RFC 8428 (IANA considerations, section 12).
CONTENT_FORMAT_JSON = 110
CONTENT_FORMAT_CBOR = 112

# Section 4.4: the version RFC 8428 defines; also the default when a pack has no bver.
SENML_VERSION = 10

# Section 4.5.3: a time below 2**28 s is relative to "now"; at or above, seconds since 1970.
RELATIVE_TIME_LIMIT = 2**28

MAX_PACK_BYTES = 16 * 1024
"""Largest pack accepted: one datagram from a sensor. RFC 7252 section 4.6 keeps CoAP
messages near 1 KiB; 16 KiB leaves room for batched readings and still bounds memory."""

MAX_RECORDS = 512
"""Most records in one pack: a sensor batching a few minutes of readings stays far below."""

MAX_LABELS_PER_RECORD = 32
"""Most fields in one record: RFC 8428 defines 15, the rest leaves room for extensions."""

MAX_NAME_LENGTH = 255
"""Longest resolved name (base name + name): a URN with a device id and a resource path."""

MAX_UNIT_LENGTH = 64
"""Longest unit: registered units (RFC 8428 section 12.1, RFC 8798) are a few characters."""

MAX_DEPTH = 4
"""Deepest nesting: pack array, record map, and a decimal fraction's tag and array (CBOR)
or an extension's structured value (JSON)."""

CBOR_LIMITS = cbor.Limits(
    max_size=MAX_PACK_BYTES,
    max_depth=MAX_DEPTH,
    # Every item takes at least a byte, so the size bound already caps the count.
    max_items=MAX_PACK_BYTES,
    # Section 6: numbers may be decimal fractions (RFC 8949 section 3.4.4). Nothing else.
    allowed_tags=frozenset({4}),
)

# Section 6, table 6: CBOR labels, named by their JSON labels (section 4.3, table 4).
_CBOR_LABELS: dict[int, str] = {
    -1: "bver",
    -2: "bn",
    -3: "bt",
    -4: "bu",
    -5: "bv",
    -6: "bs",
    0: "n",
    1: "u",
    2: "v",
    3: "vs",
    4: "vb",
    5: "s",
    6: "t",
    7: "ut",
    8: "vd",
}
_LABEL_TO_CBOR = {name: key for key, name in _CBOR_LABELS.items()}
_JSON_LABELS = frozenset(_CBOR_LABELS.values())
_BASE_LABELS = frozenset({"bver", "bn", "bt", "bu", "bv", "bs"})
_VALUE_LABELS = ("v", "vs", "vb", "vd")

# Section 4.5.1: name characters, and the characters a name may start with.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")
# Units are short printable ASCII tokens ("Cel", "%RH", "m/s2", "/"): no spaces or controls.
_UNIT = re.compile(r"[\x21-\x7e]+")
# Section 5: the Data Value in JSON is base64 with the URL-safe alphabet (RFC 4648 section 5).
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_JSON_SPECIAL = re.compile(r'[\[\]{}"\\]')

Bytes = bytes | bytearray | memoryview
"""What the decoders take: any bytes-like buffer holding the datagram's payload."""


@dataclass(frozen=True)
class Record:
    """One resolved SenML record: full name, absolute time, one value and/or a sum.

    ``value`` is a float (``v``), str (``vs``), bool (``vb``) or bytes (``vd``); it may be
    None only when ``sum`` is set (RFC 8428 section 4.2). Ints given for numbers are stored
    as floats. Construction checks the SenML rules and raises :class:`LocalProtocolError`.
    """

    name: str
    time: float
    value: float | str | bool | bytes | None = None
    unit: str | None = None
    sum: float | None = None
    update_time: float | None = None

    def __post_init__(self) -> None:
        for attr in ("time", "value", "sum", "update_time"):
            field = getattr(self, attr)
            if isinstance(field, int) and not isinstance(field, bool):
                object.__setattr__(self, attr, float(field))
        problem = _record_problem(self)
        if problem is not None:
            raise LocalProtocolError(problem)

    @property
    def value_label(self) -> str | None:
        """The SenML label of the value: "v", "vs", "vb", "vd", or None for a sum only."""
        return None if self.value is None else _value_label(self.value)


def _value_label(value: float | str | bool | bytes) -> str:
    if isinstance(value, bool):
        return "vb"
    if isinstance(value, str):
        return "vs"
    if isinstance(value, bytes):
        return "vd"
    return "v"


def _short(text: object) -> str:
    # Diagnostics go back to the sensor in a CoAP 4.00 payload: keep echoed input short.
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _is_finite_float(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _record_problem(record: Record) -> str | None:
    """What breaks the SenML rules in ``record``, or None when it is valid."""
    name = record.name
    if not isinstance(name, str) or not name:
        return "a record needs a name (base name + name)"
    if len(name) > MAX_NAME_LENGTH:
        return f"name is longer than {MAX_NAME_LENGTH} characters"
    if not _NAME.fullmatch(name):
        return (
            f"name {_short(name)} must start with a letter or digit and use only letters, "
            "digits and - : . / _ (RFC 8428 section 4.5.1)"
        )
    value = record.value
    if value is None:
        if record.sum is None:
            return "a record needs a value (v, vs, vb or vd) or a sum (s)"
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "string value (vs) is not valid Unicode"
    elif not isinstance(value, bool | bytes) and not _is_finite_float(value):
        return "value must be a finite float, a str, a bool or bytes"
    if record.sum is not None and not _is_finite_float(record.sum):
        return "sum (s) must be a finite number"
    unit = record.unit
    if unit is not None:
        if not isinstance(unit, str) or not _UNIT.fullmatch(unit):
            return f"unit {_short(unit)} must be printable ASCII without spaces"
        if len(unit) > MAX_UNIT_LENGTH:
            return f"unit is longer than {MAX_UNIT_LENGTH} characters"
    if not _is_finite_float(record.time):
        return "time must be a finite number"
    ut = record.update_time
    if ut is not None and (not _is_finite_float(ut) or ut < 0):
        return "update time (ut) must be a finite number of seconds, not negative"
    return None


# --- decoding -------------------------------------------------------------------------


def _bounded(data: Bytes) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"SenML decoding takes bytes, not {type(data).__name__}")
    if len(data) > MAX_PACK_BYTES:
        raise MalformedMessage(
            f"SenML pack of {len(data)} bytes exceeds the {MAX_PACK_BYTES}-byte limit"
        )
    return bytes(data)


def _check_now(now: float) -> float:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise LocalProtocolError(f"now must be a finite number of seconds, not {now!r}")
    return float(now)


def _check_json_depth(text: str) -> None:
    # json.loads recurses per nesting level: 16 KiB of "[" would hit RecursionError deep in
    # the parser. Count brackets outside strings first; linear, builds nothing.
    depth = 0
    in_string = False
    skip_to = -1
    for match in _JSON_SPECIAL.finditer(text):
        pos = match.start()
        if pos < skip_to:
            continue
        char = match.group()
        if in_string:
            if char == "\\":
                skip_to = pos + 2
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise MalformedMessage(f"JSON nested deeper than {MAX_DEPTH}")
        elif char in "]}":
            depth -= 1


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # The stdlib keeps the last of two equal keys silently; SenML fields must be unique.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise MalformedMessage(f"duplicate JSON key {_short(key)}")
        obj[key] = value
    return obj


def _json_constant(name: str) -> NoReturn:
    raise MalformedMessage(f"JSON {name} is not a number SenML accepts")


def _records_of(pack: Any, what: str) -> list[Any]:
    if not isinstance(pack, list):
        raise MalformedMessage(f"a SenML pack must be a {what} array, got {type(pack).__name__}")
    if len(pack) > MAX_RECORDS:
        raise MalformedMessage(f"SenML pack has more than {MAX_RECORDS} records")
    return pack


def _labelled(index: int, record: Any, json_labels: bool) -> dict[str, Any]:
    """The known fields of one raw record, keyed by JSON label; refuses must-understand ones."""
    if not isinstance(record, dict):
        raise MalformedMessage(f"record {index} must be a map, got {type(record).__name__}")
    if len(record) > MAX_LABELS_PER_RECORD:
        raise MalformedMessage(f"record {index} has more than {MAX_LABELS_PER_RECORD} fields")
    fields: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(key, str) and key.endswith("_"):
            # Section 4.4: a label ending in "_" must be understood, or the pack refused.
            raise UnsupportedVersion(
                f"record {index}: must-understand label {_short(key)} is not supported"
            )
        if json_labels:
            label = key if key in _JSON_LABELS else None
        else:
            # Section 6: CBOR uses integer labels; text labels are extensions.
            label = _CBOR_LABELS.get(key) if isinstance(key, int) else None
        if label is not None:
            fields[label] = value
        # Any other label is an extension we may ignore (section 4.4).
    return fields


def _check_version(index: int, fields: dict[str, Any]) -> None:
    if "bver" not in fields:
        return
    bver = fields["bver"]
    if isinstance(bver, bool) or not isinstance(bver, int) or bver < 1:
        raise MalformedMessage(f"record {index}: bver must be a positive integer")
    if bver > SENML_VERSION:
        # Section 4.4: a newer version may hold fields we would misread; do not use the pack.
        raise UnsupportedVersion(
            f"SenML version {bver} is not supported (this node speaks up to {SENML_VERSION})"
        )


class _Fields:
    """Typed access to one record's labelled fields, with errors naming record and label."""

    def __init__(self, index: int, fields: dict[str, Any]) -> None:
        self.index = index
        self.fields = fields

    def bad(self, label: str, expected: str) -> NoReturn:
        got = type(self.fields[label]).__name__
        raise MalformedMessage(f"record {self.index}: {label} must be {expected}, got {got}")

    def number(self, label: str) -> float:
        raw = self.fields[label]
        if isinstance(raw, bool) or not isinstance(raw, int | float | Decimal):
            self.bad(label, "a number")
        try:
            value = float(raw)
        except (OverflowError, ValueError):
            value = math.inf
        if not math.isfinite(value):
            raise MalformedMessage(f"record {self.index}: {label} must be a finite number")
        return value

    def text(self, label: str) -> str:
        raw = self.fields[label]
        if not isinstance(raw, str):
            self.bad(label, "a string")
        return raw

    def data(self, label: str, json_labels: bool) -> bytes:
        raw = self.fields[label]
        if not json_labels:
            if not isinstance(raw, bytes):
                self.bad(label, "a byte string")
            return raw
        if not isinstance(raw, str):
            self.bad(label, "a base64url string")
        # One leftover character cannot hold a whole byte: no valid encoding ends that way.
        if not _BASE64URL.fullmatch(raw) or len(raw.rstrip("=")) % 4 == 1:
            raise MalformedMessage(
                f"record {self.index}: vd must be base64url (RFC 4648 section 5) text"
            )
        unpadded = raw.rstrip("=")
        try:
            return base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
        except (binascii.Error, ValueError) as exc:
            raise MalformedMessage(f"record {self.index}: vd is not valid base64url") from exc


def _add_base(base: float, number: float) -> float:
    # No base (zero) leaves the number as sent: 0.0 + -0.0 would lose the sign of -0.0.
    return number if base == 0 else base + number


def _resolve(raw_records: list[dict[str, Any]], now: float, json_labels: bool) -> list[Record]:
    """Apply base fields and relative times in pack order (RFC 8428 section 4.6)."""
    base_name = ""
    base_time = 0.0
    base_unit: str | None = None
    base_value = 0.0
    base_sum = 0.0
    records: list[Record] = []
    for index, labelled in enumerate(raw_records):
        f = _Fields(index, labelled)
        # Section 4.1: a base field applies to its own record and all later ones until the
        # next base field of the same kind.
        if "bn" in labelled:
            base_name = f.text("bn")
            if len(base_name) > MAX_NAME_LENGTH:
                raise MalformedMessage(
                    f"record {index}: bn is longer than {MAX_NAME_LENGTH} characters"
                )
        if "bt" in labelled:
            base_time = f.number("bt")
        if "bu" in labelled:
            base_unit = f.text("bu")
        if "bv" in labelled:
            base_value = f.number("bv")
        if "bs" in labelled:
            base_sum = f.number("bs")
        regular = [label for label in labelled if label not in _BASE_LABELS]
        if not regular and labelled:
            continue  # a record of base fields only, as in section 5.1.7

        values = [label for label in _VALUE_LABELS if label in labelled]
        if len(values) > 1:
            raise MalformedMessage(
                f"record {index} has {len(values)} values ({', '.join(values)}): "
                "exactly one is allowed (RFC 8428 section 4.2)"
            )
        value: float | str | bool | bytes | None = None
        if values == ["v"]:
            value = _add_base(base_value, f.number("v"))
        elif values == ["vs"]:
            value = f.text("vs")
        elif values == ["vb"]:
            if not isinstance(labelled["vb"], bool):
                f.bad("vb", "a boolean")
            value = labelled["vb"]
        elif values == ["vd"]:
            value = f.data("vd", json_labels)
        total = _add_base(base_sum, f.number("s")) if "s" in labelled else None
        if value is None and total is None:
            raise MalformedMessage(f"record {index} has no value (v, vs, vb or vd) and no sum (s)")

        name = f.text("n") if "n" in labelled else ""
        if len(base_name) + len(name) > MAX_NAME_LENGTH:
            raise MalformedMessage(
                f"record {index}: name is longer than {MAX_NAME_LENGTH} characters"
            )
        time = base_time + (f.number("t") if "t" in labelled else 0.0)
        if time < RELATIVE_TIME_LIMIT:
            time += now  # section 4.5.3: zero is "now", negative is in the past
        try:
            records.append(
                Record(
                    name=base_name + name,
                    time=time,
                    value=value,
                    unit=f.text("u") if "u" in labelled else base_unit,
                    sum=total,
                    update_time=f.number("ut") if "ut" in labelled else None,
                )
            )
        except LocalProtocolError as exc:
            # Record's own checks (name characters, unit, finiteness): here the data came
            # from outside, so the fault is the sender's.
            raise MalformedMessage(f"record {index}: {exc}") from None
    # Section 4.6: resolved records are in chronological order. The sort is stable.
    return sorted(records, key=lambda record: record.time)


def _decode_pack(pack: Any, now: float, json_labels: bool) -> tuple[Record, ...]:
    raw = _records_of(pack, "JSON" if json_labels else "CBOR")
    # Labels and versions first, for the whole pack: a newer pack is refused as such, not
    # as malformed because of a field this version does not know.
    labelled = [_labelled(index, record, json_labels) for index, record in enumerate(raw)]
    for index, fields in enumerate(labelled):
        _check_version(index, fields)
    return tuple(_resolve(labelled, now, json_labels))


def decode_json(data: Bytes, now: float) -> tuple[Record, ...]:
    """Decode and resolve an untrusted ``application/senml+json`` pack.

    ``now`` (seconds since 1970) anchors relative times. Raises :class:`MalformedMessage`
    for anything that is not a valid, bounded pack, :class:`UnsupportedVersion` for a bver
    above 10 or a must-understand label.
    """
    now = _check_now(now)
    raw = _bounded(data)
    try:
        # Section 5: only the UTF-8 form of JSON is allowed.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"SenML JSON is not valid UTF-8: {exc.reason}") from exc
    _check_json_depth(text)
    try:
        pack = json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage(f"invalid JSON: {exc}") from exc
    return _decode_pack(pack, now, json_labels=True)


def decode_cbor(data: Bytes, now: float) -> tuple[Record, ...]:
    """Decode and resolve an untrusted ``application/senml+cbor`` pack.

    Same contract as :func:`decode_json`; the CBOR is checked against :data:`CBOR_LIMITS`.
    """
    now = _check_now(now)
    raw = _bounded(data)
    pack = cbor.decode(raw, CBOR_LIMITS)
    return _decode_pack(pack, now, json_labels=False)


def decode(data: Bytes, content_format: int, now: float) -> tuple[Record, ...]:
    """Decode a pack of either format, chosen by the CoAP Content-Format of the request."""
    if content_format == CONTENT_FORMAT_JSON:
        return decode_json(data, now)
    if content_format == CONTENT_FORMAT_CBOR:
        return decode_cbor(data, now)
    raise MalformedMessage(
        f"content-format {content_format!r} is not SenML "
        f"({CONTENT_FORMAT_JSON} for JSON or {CONTENT_FORMAT_CBOR} for CBOR)"
    )


# --- encoding -------------------------------------------------------------------------


def _compact(number: float) -> float | int:
    # Integral numbers go out as integers (shorter in both formats); every decoder reads
    # them back as the same double. -0.0 stays a float to keep its sign.
    if number.is_integer() and abs(number) < 2**53 and math.copysign(1.0, number) > 0:
        return int(number)
    return number


def _fields_of(records: Iterable[Record]) -> list[list[tuple[str, Any]]]:
    """Each record's fields as (JSON label, value) pairs, with full names and absolute time."""
    out = []
    for record in records:
        if not isinstance(record, Record):
            raise LocalProtocolError(f"expected a senml.Record, got {type(record).__name__}")
        if record.time < RELATIVE_TIME_LIMIT:
            raise LocalProtocolError(
                f"record time {record.time} is below 2**28 and would read back as relative"
            )
        fields: list[tuple[str, Any]] = [("n", record.name)]
        if record.unit is not None:
            fields.append(("u", record.unit))
        if record.value is not None:
            label = _value_label(record.value)
            value = record.value
            fields.append((label, _compact(value) if isinstance(value, float) else value))
        if record.sum is not None:
            fields.append(("s", _compact(record.sum)))
        fields.append(("t", _compact(record.time)))
        if record.update_time is not None:
            fields.append(("ut", _compact(record.update_time)))
        out.append(fields)
    return out


def encode_json(records: Iterable[Record]) -> bytes:
    """Encode resolved records as compact ``application/senml+json`` (UTF-8)."""
    pack = []
    for fields in _fields_of(records):
        obj: dict[str, Any] = {}
        for label, value in fields:
            if label == "vd":
                # Section 5: base64url; padding is left out, as JSON web formats do.
                value = base64.urlsafe_b64encode(value).rstrip(b"=").decode("ascii")
            obj[label] = value
        pack.append(obj)
    text = json.dumps(pack, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def encode_cbor(records: Iterable[Record]) -> bytes:
    """Encode resolved records as deterministic ``application/senml+cbor``."""
    pack = [
        {_LABEL_TO_CBOR[label]: value for label, value in fields} for fields in _fields_of(records)
    ]
    return cbor.encode(pack)
