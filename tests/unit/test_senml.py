"""SenML codec: RFC 8428 examples, round trips, golden bytes and every refused input."""

from __future__ import annotations

import base64
import json
import math

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lichen import senml
from lichen.errors import LocalProtocolError, MalformedMessage, UnsupportedVersion
from lichen.senml import Record

NOW = 1_700_000_000.0
DEV = "urn:dev:ow:10e2073a01080063"

# --- RFC 8428 section 5.1 examples, as printed in the RFC ---------------------------------

EX_SINGLE = b'[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]'  # 5.1.1

EX_MULTIPLE = b"""[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
  {"n":"current","u":"A","v":1.2}
]"""  # 5.1.2, first example

EX_MULTIPLE_TIMED = b"""[
  {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
   "bu":"A","bver":5,
   "n":"voltage","u":"V","v":120.1},
  {"n":"current","t":-5,"v":1.2},
  {"n":"current","t":-4,"v":1.3},
  {"n":"current","t":-3,"v":1.4},
  {"n":"current","t":-2,"v":1.5},
  {"n":"current","t":-1,"v":1.6},
  {"n":"current","v":1.7}
]"""  # 5.1.2, second example

# Section 6: the second example of 5.1.2 in CBOR, byte for byte as the RFC prints it.
EX_MULTIPLE_TIMED_CBOR = bytes.fromhex(
    "87a721781b75726e3a6465763a6f773a3130653230373361303130383030363a"
    "22fb41d303a15b00106223614120050067766f6c746167650161560"
    "2fb405e066666666666a3006763757272656e74062402fb3ff3333333333333"
    "a3006763757272656e74062302fb3ff4cccccccccccda3006763757272656e74"
    "062202fb3ff6666666666666a3006763757272656e74062102f93e00a3006763"
    "757272656e74062002fb3ff999999999999aa3006763757272656e74060002fb"
    "3ffb333333333333"
)

EX_MEASUREMENTS = b"""[
  {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
   "bu":"%RH","v":20},
  {"u":"lon","v":24.30621},
  {"u":"lat","v":60.07965},
  {"t":60,"v":20.3},
  {"u":"lon","t":60,"v":24.30622},
  {"u":"lat","t":60,"v":60.07965},
  {"t":120,"v":20.7},
  {"u":"lon","t":120,"v":24.30623},
  {"u":"lat","t":120,"v":60.07966},
  {"u":"%EL","t":150,"v":98},
  {"t":180,"v":21.2},
  {"u":"lon","t":180,"v":24.30628},
  {"u":"lat","t":180,"v":60.07967}
]"""  # 5.1.3

EX_RESOLVED = b"""[
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,"v":20},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,"v":24.30621},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,"v":60.07965},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,"v":20.3},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,"v":24.30622},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,"v":60.07965},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,"v":20.7},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,"v":24.30623},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,"v":60.07966},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,"v":98},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,"v":21.2},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,"v":24.30628},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,"v":60.07967}
]"""  # 5.1.4

EX_DATA_TYPES = b"""[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
  {"n":"label","vs":"Machine Room"},
  {"n":"open","vb":false},
  {"n":"nfc-reader","vd":"aGkgCg"}
]"""  # 5.1.5

EX_COLLECTION = b"""[
  {"bn":"2001:db8::2/","bt":1.320078429e+09,
   "n":"temperature","u":"Cel","v":25.2},
  {"n":"humidity","u":"%RH","v":30},
  {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
  {"n":"humidity","u":"%RH","v":67}
]"""  # 5.1.6

EX_THERMOSTAT = b"""[
  {"bn":"urn:dev:ow:10e2073a01080063:"},
  {"n":"temp","u":"Cel","v":23.1},
  {"n":"heat","u":"/","v":1},
  {"n":"fan","u":"/","v":0}
]"""  # 5.1.7

EX_LIGHTS_ON = b"""[
  {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":1},
  {"n":"2001:db8::4","v":1}
]"""  # 5.1.7

EX_LIGHTS_OFF = b"""[
  {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":0.5},
  {"n":"2001:db8::4","v":0.5},
  {"n":"2001:db8::3","t":0.1,"v":0},
  {"n":"2001:db8::4","t":0.1,"v":0}
]"""  # 5.1.7


def to_cbor(json_pack: bytes) -> bytes:
    """Translate a JSON pack to SenML CBOR (integer labels, vd as bytes), as section 6 does."""
    labels = {name: key for key, name in senml._CBOR_LABELS.items()}
    pack = []
    for record in json.loads(json_pack):
        out = {}
        for label, value in record.items():
            if label == "vd":
                value = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            out[labels[label]] = value
        pack.append(out)
    return cbor2.dumps(pack)


def both(json_pack: bytes) -> list[tuple[Record, ...]]:
    """The pack decoded from JSON and from its CBOR translation (which must agree)."""
    from_json = senml.decode_json(json_pack, NOW)
    from_cbor = senml.decode_cbor(to_cbor(json_pack), NOW)
    assert from_json == from_cbor
    return [from_json, from_cbor]


def test_content_formats() -> None:
    assert senml.CONTENT_FORMAT_JSON == 110
    assert senml.CONTENT_FORMAT_CBOR == 112


def test_single_datapoint_is_now() -> None:
    for records in both(EX_SINGLE):
        assert records == (Record(name=DEV, time=NOW, value=23.1, unit="Cel"),)
        assert records[0].value_label == "v"


def test_multiple_datapoints_share_the_base_name() -> None:
    for records in both(EX_MULTIPLE):
        assert records == (
            Record(name=DEV + ":voltage", time=NOW, value=120.1, unit="V"),
            Record(name=DEV + ":current", time=NOW, value=1.2, unit="A"),
        )


def expected_timed() -> tuple[Record, ...]:
    bt = 1.276020076001e09
    name = "urn:dev:ow:10e2073a0108006:"
    currents = [(-5, 1.2), (-4, 1.3), (-3, 1.4), (-2, 1.5), (-1, 1.6)]
    return (
        *(Record(name=name + "current", time=bt + t, value=v, unit="A") for t, v in currents),
        Record(name=name + "voltage", time=bt, value=120.1, unit="V"),
        Record(name=name + "current", time=bt, value=1.7, unit="A"),
    )


def test_multiple_datapoints_with_base_time_and_version_5() -> None:
    for records in both(EX_MULTIPLE_TIMED):
        # Chronological (section 4.6); the stable sort keeps voltage before current at bt.
        assert records == expected_timed()
        assert records[0].time == pytest.approx(1276020071.001)


def test_rfc_section_6_cbor_bytes() -> None:
    assert senml.decode_cbor(EX_MULTIPLE_TIMED_CBOR, NOW) == expected_timed()
    assert senml.decode(EX_MULTIPLE_TIMED_CBOR, 112, NOW) == expected_timed()
    assert senml.decode(EX_MULTIPLE_TIMED, 110, NOW) == expected_timed()


def test_multiple_measurements_resolve_to_section_5_1_4() -> None:
    resolved = []
    for record in json.loads(EX_RESOLVED):
        resolved.append(
            Record(name=record["n"], unit=record["u"], time=record["t"], value=record["v"])
        )
    for records in both(EX_MEASUREMENTS):
        assert records == tuple(resolved)
    # The resolved form is itself SenML and reads back to the same records.
    for records in both(EX_RESOLVED):
        assert records == tuple(resolved)
    first, last = resolved[0], resolved[-1]
    assert (first.name, first.unit, first.time, first.value) == (DEV, "%RH", 1320067464.0, 20.0)
    assert (last.unit, last.time, last.value) == ("lat", 1320067644.0, 60.07967)
    assert resolved[9] == Record(name=DEV, unit="%EL", time=1320067614.0, value=98.0)


def test_multiple_data_types() -> None:
    for records in both(EX_DATA_TYPES):
        assert records == (
            Record(name=DEV + ":temp", time=NOW, value=23.1, unit="Cel"),
            Record(name=DEV + ":label", time=NOW, value="Machine Room"),
            Record(name=DEV + ":open", time=NOW, value=False),
            Record(name=DEV + ":nfc-reader", time=NOW, value=b"hi \n"),
        )
        assert [r.value_label for r in records] == ["v", "vs", "vb", "vd"]
        assert records[2].value is False


def test_collection_of_resources() -> None:
    bt = 1320078429.0
    for records in both(EX_COLLECTION):
        # The last record keeps the base time of the first and the base name of the third.
        assert records == (
            Record(name="2001:db8::2/temperature", time=bt, value=25.2, unit="Cel"),
            Record(name="2001:db8::2/humidity", time=bt, value=30.0, unit="%RH"),
            Record(name="2001:db8::1/temperature", time=bt, value=12.3, unit="Cel"),
            Record(name="2001:db8::1/humidity", time=bt, value=67.0, unit="%RH"),
        )


def test_setting_an_actuator() -> None:
    for records in both(EX_THERMOSTAT):
        # The first record holds only the base name and resolves to nothing.
        assert records == (
            Record(name=DEV + ":temp", time=NOW, value=23.1, unit="Cel"),
            Record(name=DEV + ":heat", time=NOW, value=1.0, unit="/"),
            Record(name=DEV + ":fan", time=NOW, value=0.0, unit="/"),
        )


def test_lights_on_and_off() -> None:
    bt = 1320078429.0
    for records in both(EX_LIGHTS_ON):
        assert records == (
            Record(name="2001:db8::3", time=bt, value=1.0, unit="/"),
            Record(name="2001:db8::4", time=bt, value=1.0, unit="/"),
        )
    for records in both(EX_LIGHTS_OFF):
        assert records == (
            Record(name="2001:db8::3", time=bt, value=0.5, unit="/"),
            Record(name="2001:db8::4", time=bt, value=0.5, unit="/"),
            Record(name="2001:db8::3", time=bt + 0.1, value=0.0, unit="/"),
            Record(name="2001:db8::4", time=bt + 0.1, value=0.0, unit="/"),
        )


# --- resolution rules ------------------------------------------------------------------


def test_relative_times_are_anchored_on_now() -> None:
    pack = (
        b'[{"n":"a","v":1,"t":-30},{"n":"b","v":2},{"n":"c","v":3,"t":5},'
        b'{"n":"d","v":4,"bt":-60,"t":10}]'
    )
    times = {r.name: r.time for r in senml.decode_json(pack, NOW)}
    assert times == {"a": NOW - 30, "b": NOW, "c": NOW + 5, "d": NOW - 50}
    # At 2**28 a time is absolute, just below it is relative.
    absolute = senml.decode_json(b'[{"n":"a","v":1,"t":268435456}]', NOW)
    assert absolute[0].time == 2.0**28
    relative = senml.decode_json(b'[{"n":"a","v":1,"t":268435455}]', NOW)
    assert relative[0].time == NOW + 268435455


def test_base_value_sum_and_unit() -> None:
    pack = [
        {-5: 100, -6: 1000, -4: "W", 0: "p1", 2: 1.5},
        {0: "p2", 2: -2, 1: "kW"},
        {0: "e", 5: 25, 7: 60},
        {0: "both", 2: 3, 5: 7},
        {0: "label", 3: "x"},
    ]
    records = senml.decode_cbor(cbor2.dumps(pack), NOW)
    assert records == (
        Record(name="p1", time=NOW, value=101.5, unit="W"),
        Record(name="p2", time=NOW, value=98.0, unit="kW"),
        Record(name="e", time=NOW, sum=1025.0, unit="W", update_time=60.0),
        Record(name="both", time=NOW, value=103.0, sum=1007.0, unit="W"),
        Record(name="label", time=NOW, value="x", unit="W"),
    )
    assert records[2].value_label is None


def test_unknown_labels_are_ignored() -> None:
    records = senml.decode_json(b'[{"n":"a","v":1,"foo":{"x":[1]},"l":"link"}]', NOW)
    assert records == (Record(name="a", time=NOW, value=1.0),)
    pack = cbor2.dumps([{0: "a", 2: 1, 99: "later", -99: 1, "foo": [1, 2]}])
    assert senml.decode_cbor(pack, NOW) == (Record(name="a", time=NOW, value=1.0),)


def test_versions_up_to_10_are_accepted() -> None:
    for bver in (1, 5, 10):
        pack = json.dumps([{"bver": bver, "n": "a", "v": 1}]).encode()
        assert senml.decode_json(pack, NOW) == (Record(name="a", time=NOW, value=1.0),)


def test_empty_pack_and_padded_base64() -> None:
    assert senml.decode_json(b"[]", NOW) == ()
    assert senml.decode_cbor(b"\x80", NOW) == ()
    records = senml.decode_json(b'[{"n":"a","vd":"aGkgCg=="},{"n":"b","vd":""}]', NOW)
    assert [r.value for r in records] == [b"hi \n", b""]


def test_cbor_decimal_fraction_number() -> None:
    # Section 6 allows decimal fractions (tag 4): 4([-1, 231]) is 23.1.
    pack = cbor2.dumps([{0: "a", 2: cbor2.CBORTag(4, [-1, 231])}])
    assert senml.decode_cbor(pack, NOW) == (Record(name="a", time=NOW, value=23.1),)


def test_bytearray_and_memoryview_input() -> None:
    assert senml.decode_json(bytearray(EX_SINGLE), NOW) == senml.decode_json(EX_SINGLE, NOW)
    assert senml.decode_cbor(memoryview(to_cbor(EX_SINGLE)), NOW)[0].value == 23.1


# --- encoding, round trips and golden bytes ---------------------------------------------

GOLDEN_PACK = (
    Record(name=DEV + ":temp", time=1_700_000_000.0, value=23.5, unit="Cel"),
    Record(name=DEV + ":door", time=1_700_000_000.25, value=True),
    Record(name=DEV + ":label", time=1_700_000_000.25, value="Room 1"),
    Record(name=DEV + ":blob", time=1_700_000_001.0, value=b"\x00\xff"),
    Record(name=DEV + ":energy", time=1_700_000_060.0, sum=1.5, unit="J", update_time=60.0),
)


def test_golden_cbor() -> None:
    assert senml.encode_cbor(GOLDEN_PACK).hex() == (
        "85"
        "a4"  # {n, u, v, t}
        "00"
        "782075726e3a6465763a6f773a313065323037336130313038303036333a74656d70"
        "01"
        "6343656c"
        "02"
        "f94de0"  # 23.5 as a half float
        "06"
        "1a6553f100"  # 1700000000 as an integer
        "a3"
        "00"
        "782075726e3a6465763a6f773a313065323037336130313038303036333a646f6f72"
        "04"
        "f5"
        "06"
        "fb41d954fc40100000"  # 1700000000.25
        "a3"
        "00"
        "782175726e3a6465763a6f773a313065323037336130313038303036333a6c6162656c"
        "03"
        "66526f6f6d2031"
        "06"
        "fb41d954fc40100000"
        "a3"
        "00"
        "782075726e3a6465763a6f773a313065323037336130313038303036333a626c6f62"
        "06"
        "1a6553f101"
        "08"
        "4200ff"
        "a5"
        "00"
        "782275726e3a6465763a6f773a313065323037336130313038303036333a656e65726779"
        "01"
        "614a"
        "05"
        "f93e00"  # 1.5
        "06"
        "1a6553f13c"
        "07"
        "183c"  # ut 60
    )


def test_golden_json() -> None:
    assert senml.encode_json(GOLDEN_PACK) == (
        b'[{"n":"urn:dev:ow:10e2073a01080063:temp","u":"Cel","v":23.5,"t":1700000000},'
        b'{"n":"urn:dev:ow:10e2073a01080063:door","vb":true,"t":1700000000.25},'
        b'{"n":"urn:dev:ow:10e2073a01080063:label","vs":"Room 1","t":1700000000.25},'
        b'{"n":"urn:dev:ow:10e2073a01080063:blob","vd":"AP8","t":1700000001},'
        b'{"n":"urn:dev:ow:10e2073a01080063:energy","u":"J","s":1.5,"t":1700000060,"ut":60}]'
    )


def test_golden_pack_reads_back() -> None:
    assert senml.decode_cbor(senml.encode_cbor(GOLDEN_PACK), 0) == GOLDEN_PACK
    assert senml.decode_json(senml.encode_json(GOLDEN_PACK), 0) == GOLDEN_PACK


def test_negative_zero_keeps_its_sign() -> None:
    record = Record(name="z", time=NOW, value=-0.0)
    for back in (
        senml.decode_cbor(senml.encode_cbor([record]), 0),
        senml.decode_json(senml.encode_json([record]), 0),
    ):
        value = back[0].value
        assert isinstance(value, float) and math.copysign(1.0, value) == -1.0


names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9\-:./_]{0,60}", fullmatch=True)
units = st.none() | st.from_regex(r"[\x21-\x7e]{1,10}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False)
values = st.none() | finite | st.text(max_size=40) | st.booleans() | st.binary(max_size=40)


@st.composite
def records(draw: st.DrawFn) -> Record:
    value = draw(values)
    total = draw(finite if value is None else st.none() | finite)
    return Record(
        name=draw(names),
        time=draw(st.floats(min_value=2.0**28, max_value=4e9)),
        value=value,
        unit=draw(units),
        sum=total,
        update_time=draw(st.none() | st.floats(min_value=0, max_value=1e7)),
    )


def same(a: tuple[Record, ...], b: tuple[Record, ...]) -> bool:
    # Record equality treats True == 1.0; the value kinds must survive too.
    return a == b and [r.value_label for r in a] == [r.value_label for r in b]


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), max_size=8))
def test_round_trip_cbor(pack: list[Record]) -> None:
    expected = tuple(sorted(pack, key=lambda r: r.time))
    assert same(senml.decode_cbor(senml.encode_cbor(pack), NOW), expected)


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), max_size=8))
def test_round_trip_json(pack: list[Record]) -> None:
    expected = tuple(sorted(pack, key=lambda r: r.time))
    assert same(senml.decode_json(senml.encode_json(pack), NOW), expected)


def test_encode_refuses_relative_time_and_non_records() -> None:
    with pytest.raises(LocalProtocolError, match="relative"):
        senml.encode_cbor([Record(name="a", time=5.0, value=1.0)])
    with pytest.raises(LocalProtocolError, match="Record"):
        senml.encode_json([{"n": "a", "v": 1}])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "", "value": 1.0}, "name"),
        ({"name": "-a", "value": 1.0}, "start with a letter"),
        ({"name": "a b", "value": 1.0}, "letters"),
        ({"name": "a" * 256, "value": 1.0}, "longer"),
        ({"name": "a"}, "value"),
        ({"name": "a", "value": math.nan}, "finite"),
        ({"name": "a", "value": [1]}, "value"),
        ({"name": "a", "value": "\ud800"}, "Unicode"),
        ({"name": "a", "sum": math.inf}, "sum"),
        ({"name": "a", "value": 1.0, "unit": "deg C"}, "unit"),
        ({"name": "a", "value": 1.0, "unit": "U" * 65}, "unit"),
        ({"name": "a", "value": 1.0, "update_time": -1.0}, "update time"),
    ],
)
def test_record_refuses_invalid_fields(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        Record(time=NOW, **kwargs)  # type: ignore[arg-type]


def test_record_stores_ints_as_floats() -> None:
    record = Record(name="a", time=1_700_000_000, value=3, sum=4, update_time=5)
    assert [type(x) for x in (record.time, record.value, record.sum, record.update_time)] == [
        float
    ] * 4
    assert Record(name="a", time=NOW, value=True).value is True


# --- refused input -----------------------------------------------------------------------


def rejects_json(data: bytes, match: str, error: type[Exception] = MalformedMessage) -> None:
    with pytest.raises(error, match=match):
        senml.decode_json(data, NOW)


def rejects_cbor(pack: object, match: str, error: type[Exception] = MalformedMessage) -> None:
    data = pack if isinstance(pack, bytes) else cbor2.dumps(pack)
    with pytest.raises(error, match=match):
        senml.decode_cbor(data, NOW)


def test_oversize_input() -> None:
    big = b'[{"n":"a","vs":"' + b"x" * senml.MAX_PACK_BYTES + b'"}]'
    rejects_json(big, "exceeds")
    rejects_cbor([{0: "a", 3: "x" * senml.MAX_PACK_BYTES}], "exceeds")


def test_not_a_list() -> None:
    rejects_json(b'{"n":"a","v":1}', "array")
    rejects_json(b'"text"', "array")
    rejects_cbor({0: "a", 2: 1}, "array")


def test_record_not_a_map() -> None:
    rejects_json(b'[{"n":"a","v":1}, [1]]', "record 1 must be a map")
    rejects_json(b"[1]", "record 0 must be a map")
    rejects_cbor(["a"], "record 0 must be a map")


def test_no_value() -> None:
    rejects_json(b'[{"n":"a"}]', "no value")
    rejects_json(b'[{"n":"a","u":"Cel","t":-1}]', "no value")
    rejects_json(b"[{}]", "no value")
    rejects_json(b'[{"n":"a","foo":1}]', "no value")
    rejects_cbor([{0: "a", 1: "Cel"}], "no value")
    # Text labels are extensions in CBOR: a pack written with JSON names says so clearly.
    rejects_cbor([{"n": "a", "v": 1}], "no value")


def test_two_values() -> None:
    rejects_json(b'[{"n":"a","v":1,"vs":"1"}]', "exactly one")
    rejects_json(b'[{"n":"a","vb":true,"vd":"AA"}]', "exactly one")
    rejects_cbor([{0: "a", 2: 1.0, 4: True}], "exactly one")


@pytest.mark.parametrize(
    "name", ["a b", "-a", "_a", ".a", "/a", "a\u00e9", "a?", "a#b", "a\n", "\u0661"]
)
def test_bad_name_characters(name: str) -> None:
    rejects_json(json.dumps([{"n": name, "v": 1}]).encode(), "section 4.5.1")
    rejects_cbor([{0: name, 2: 1}], "section 4.5.1")


def test_name_from_base_name_alone_and_bad_base_name() -> None:
    assert senml.decode_json(b'[{"bn":"dev1","v":1}]', NOW)[0].name == "dev1"
    rejects_json(b'[{"bn":":dev","n":"x","v":1}]', "section 4.5.1")
    rejects_json(b'[{"v":1}]', "needs a name")


def test_name_too_long() -> None:
    rejects_json(json.dumps([{"n": "a" * 256, "v": 1}]).encode(), "longer than 255")
    rejects_json(json.dumps([{"bn": "a" * 200, "n": "b" * 56, "v": 1}]).encode(), "longer")
    rejects_json(json.dumps([{"bn": "a" * 300}]).encode(), "bn is longer")
    assert senml.decode_json(json.dumps([{"n": "a" * 255, "v": 1}]).encode(), NOW)


def test_duplicate_json_keys() -> None:
    rejects_json(b'[{"n":"a","v":1,"v":2}]', "duplicate JSON key 'v'")
    rejects_json(b'[{"n":"a","v":1,"x":{"k":1,"k":2}}]', "duplicate")


def test_duplicate_cbor_labels() -> None:
    # {0: "a", 2: 1, 2: 2}: cbor2 would keep the last silently.
    rejects_cbor(bytes.fromhex("81a3006161020102 02".replace(" ", "")), "duplicate")


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"])
def test_non_finite_json_numbers(number: bytes) -> None:
    rejects_json(b'[{"n":"a","v":' + number + b"}]", "number")
    rejects_json(b'[{"n":"a","v":1,"t":' + number + b"}]", "number")


def test_huge_json_integer() -> None:
    rejects_json(b'[{"n":"a","v":' + b"9" * 400 + b"}]", "finite")
    rejects_json(b'[{"n":"a","v":' + b"9" * 5000 + b"}]", "JSON")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_cbor_numbers(value: float) -> None:
    rejects_cbor([{0: "a", 2: value}], "finite")
    rejects_cbor([{0: "a", 2: 1, -3: value}], "finite")


def test_sums_that_overflow() -> None:
    rejects_cbor([{0: "a", -5: 1.7e308, 2: 1.7e308}], "finite")
    rejects_cbor([{0: "a", -3: 1.7e308, 6: 1.7e308, 2: 1}], "finite")


def test_deep_nesting() -> None:
    rejects_json(b"[" * 5000 + b"]" * 5000, "deeper")
    rejects_json(b'[{"n":"a","v":1,"x":[[[1]]]}]', "deeper")
    # Brackets inside strings do not count, escaped quotes do not end a string.
    ok = b'[{"n":"a","vs":"[[[[[[{{{{\\"[[[[[\\\\"}]'
    assert senml.decode_json(ok, NOW)[0].value == '[[[[[[{{{{"[[[[[\\'
    rejects_cbor(b"\x81" * 20 + b"\x01", "deeper")
    rejects_cbor([{0: "a", 2: 1, "x": [[[1]]]}], "deeper")
    assert senml.decode_cbor(cbor2.dumps([{0: "a", 2: 1, "x": [[1]]}]), NOW)


def test_huge_cbor_counts() -> None:
    rejects_cbor(bytes.fromhex("9bffffffffffffffff"), "more items")
    rejects_cbor(bytes.fromhex("9a7fffffff") + b"\xa0" * 10, "more items")
    rejects_cbor(bytes.fromhex("81bbffffffffffffffff"), "more items")
    rejects_cbor(bytes.fromhex("81a10061"), "past the end")


def test_too_many_records_and_fields() -> None:
    rejects_json(json.dumps([{"n": "a", "v": 1}] * 513).encode(), "more than 512 records")
    rejects_cbor(b"\x99\x02\x01" + b"\xa0" * 513, "more than 512 records")
    record = {f"x{i}": 1 for i in range(40)} | {"n": "a", "v": 1}
    rejects_json(json.dumps([record]).encode(), "more than 32 fields")


def test_must_understand_label() -> None:
    rejects_json(b'[{"n":"a","v":1,"foo_":1}]', "must-understand", UnsupportedVersion)
    rejects_cbor([{0: "a", 2: 1, "foo_": 1}], "must-understand", UnsupportedVersion)
    # Refused before any other check of the pack.
    rejects_json(b'[{"n":"a b"},{"x_":1}]', "must-understand", UnsupportedVersion)


def test_newer_version_is_unsupported() -> None:
    rejects_json(b'[{"bver":11,"n":"a","v":1}]', "version 11", UnsupportedVersion)
    rejects_cbor([{-1: 11, 0: "a", 2: 1}], "version 11", UnsupportedVersion)
    # Even when a later record of the pack uses fields this version would refuse.
    rejects_json(b'[{"bver":12,"n":"a","v":1},{"n":"b","v":"x"}]', "version", UnsupportedVersion)


@pytest.mark.parametrize("bver", [0, -1, 10.0, "10", True, None])
def test_bad_version_field(bver: object) -> None:
    rejects_json(json.dumps([{"bver": bver, "n": "a", "v": 1}]).encode(), "bver")
    rejects_cbor([{-1: bver, 0: "a", 2: 1}], "bver")


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"n": 1, "v": 1}, "n must be a string"),
        ({"bn": ["a"], "v": 1}, "bn must be a string"),
        ({"n": "a", "v": "1"}, "v must be a number"),
        ({"n": "a", "v": True}, "v must be a number"),
        ({"n": "a", "v": None}, "v must be a number"),
        ({"n": "a", "vs": 1}, "vs must be a string"),
        ({"n": "a", "vb": 1}, "vb must be a boolean"),
        ({"n": "a", "vd": 1}, "vd must be a base64url string"),
        ({"n": "a", "vd": "a+b/"}, "base64url"),
        ({"n": "a", "vd": "abcde"}, "base64url"),
        ({"n": "a", "vd": "ab=c"}, "base64url"),
        ({"n": "a", "s": "1"}, "s must be a number"),
        ({"n": "a", "v": 1, "t": "now"}, "t must be a number"),
        ({"n": "a", "v": 1, "bt": None}, "bt must be a number"),
        ({"n": "a", "v": 1, "ut": -5}, "update time"),
        ({"n": "a", "v": 1, "u": 5}, "u must be a string"),
        ({"n": "a", "v": 1, "u": ""}, "unit"),
        ({"n": "a", "v": 1, "u": "deg C"}, "unit"),
        ({"n": "a", "v": 1, "bu": "U" * 65}, "unit"),
        ({"n": "a", "vs": "\ud800"}, "Unicode"),
    ],
)
def test_wrong_field_types_json(record: dict[str, object], match: str) -> None:
    rejects_json(json.dumps([record]).encode(), match)


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({0: b"a", 2: 1}, "n must be a string"),
        ({0: "a", 2: b"\x01"}, "v must be a number"),
        ({0: "a", 8: "aGkgCg"}, "vd must be a byte string"),
        ({0: "a", 4: None}, "vb must be a boolean"),
        ({0: "a", 2: cbor2.CBORTag(4, [2**62, 5])}, "decimal fraction"),
        ({0: "a", 2: cbor2.CBORTag(4, [-(2**62), 5])}, "decimal fraction"),
        ({0: "a", 2: cbor2.CBORTag(4, [999999999, 5])}, "finite"),
        ({0: "a", 2: cbor2.CBORTag(1, 5)}, "tag 1"),
        ({0: "a", 2: cbor2.CBORTag(2, b"\x01")}, "tag 2"),
    ],
)
def test_wrong_field_types_cbor(record: dict[object, object], match: str) -> None:
    rejects_cbor([record], match)


def test_invalid_encodings() -> None:
    rejects_json(b"", "invalid JSON")
    rejects_json(b'[{"n":"a","v":1}', "invalid JSON")
    rejects_json(b'[{"n":"a","v":1}] x', "invalid JSON")
    rejects_json(b'[{"n":"a","vs":"\xff"}]', "UTF-8")
    rejects_json(b'\xef\xbb\xbf[{"n":"a","v":1}]', "JSON")
    rejects_json('[{"n":"a","v":1}]'.encode("utf-16"), "UTF-8")
    rejects_cbor(b"", "empty")
    rejects_cbor(to_cbor(EX_SINGLE) + b"\x00", "trailing")
    rejects_cbor(bytes.fromhex("81a2006161037f"), "indefinite")


def test_content_format_and_argument_checks() -> None:
    with pytest.raises(MalformedMessage, match="content-format 50"):
        senml.decode(EX_SINGLE, 50, NOW)
    with pytest.raises(LocalProtocolError, match="bytes"):
        senml.decode_json(EX_SINGLE.decode(), NOW)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="now"):
        senml.decode_cbor(to_cbor(EX_SINGLE), math.nan)
