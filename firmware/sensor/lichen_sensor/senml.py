"""SenML+CBOR packs (RFC 8428 section 6), encoded as the agent's ``lichen.senml`` does.

A reading is a plain dict with SenML's JSON labels: ``{"n": name, "v": value, "u": unit,
"t": time}``, and optionally ``"s"`` (sum) and ``"ut"`` (update time). The value's label
follows its type: a number is ``v``, a str ``vs``, a bool ``vb``, bytes ``vd``. Each record
is written with its full name and its time, and numbers as ``lichen.senml.encode_cbor``
writes them (a whole number from 0 up as an integer, any other as the shortest exact float),
so both runtimes and the agent's encoder give the same bytes for the same readings.
"""

import math

from lichen_sensor import cbor

# Section 6, table 6: integer labels for CBOR.
LABELS = {
    "bver": -1,
    "bn": -2,
    "bt": -3,
    "bu": -4,
    "bv": -5,
    "bs": -6,
    "n": 0,
    "u": 1,
    "v": 2,
    "vs": 3,
    "vb": 4,
    "s": 5,
    "t": 6,
    "ut": 7,
    "vd": 8,
}
_EXACT_INT = 1 << 53  # beyond this a double no longer holds every whole number


def number(value):
    """``value`` as the agent writes it: a whole number from 0 up to 2**53 as an int,
    anything else as a float (``lichen.senml`` keeps negative numbers and -0.0 floats)."""
    if value is True or value is False:
        raise TypeError("a bool is not a SenML number")
    if isinstance(value, int):
        # Kept an int: on a board whose floats are 32-bit, float() would round a time.
        return value if 0 <= value < _EXACT_INT else float(value)
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("SenML numbers are finite")
    if 0 <= value < _EXACT_INT and value == int(value) and math.copysign(1.0, value) > 0:
        return int(value)
    return value


def _value_label(value):
    if value is True or value is False:
        return "vb"
    if isinstance(value, str):
        return "vs"
    if isinstance(value, (bytes, bytearray)):
        return "vd"
    return "v"


def record(reading):
    """One reading dict as a CBOR-labelled SenML record (a dict with integer keys)."""
    out = {LABELS["n"]: reading["n"]}
    if reading.get("u") is not None:
        out[LABELS["u"]] = reading["u"]
    value = reading.get("v")
    if value is not None:
        label = _value_label(value)
        out[LABELS[label]] = number(value) if label == "v" else value
    if reading.get("s") is not None:
        out[LABELS["s"]] = number(reading["s"])
    out[LABELS["t"]] = number(reading.get("t", 0))
    if reading.get("ut") is not None:
        out[LABELS["ut"]] = number(reading["ut"])
    return out


def encode_pack(readings):
    """The ``application/senml+cbor`` bytes of a list of reading dicts."""
    return cbor.encode([record(r) for r in readings])
