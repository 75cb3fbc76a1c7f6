"""The sensor firmware's own tests, run twice (CPython and MicroPython), and its bytes held
to the agent's reference encoders.

- Every ``fw_unit`` test runs in-process under CPython and, once per session, under the
  MicroPython unix port; both must pass.
- Property tests: for any readings, the firmware's COSE_Mac0 is byte for byte what
  ``lichen.cose.mac0(lichen.senml.encode_cbor(...))`` makes, and the agent reads it back.
- Its CoAP messages are what aiocoap encodes and decodes; its mDNS parser reads what
  python-zeroconf answers.
- ``mpy-cross`` compiles every firmware file.
"""

from __future__ import annotations

import math
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiocoap import Code, Message
from aiocoap.numbers.types import Type
from hypothesis import given, settings
from hypothesis import strategies as st
from lichen_sensor import cbor as fw_cbor
from lichen_sensor import coap as fw_coap
from lichen_sensor import cose as fw_cose
from lichen_sensor import mdns as fw_mdns
from lichen_sensor import senml as fw_senml

from lichen import cbor, cose, senml
from tests.firmware import fw_unit
from tests.firmware.harness import FIRMWARE, mpy_cross, run_unit

UNIT_TESTS = sorted(name for name in dir(fw_unit) if name.startswith("test_"))


class _Context:
    def __init__(self, scratch: Path) -> None:
        self.scratch = str(scratch)


@pytest.mark.parametrize("name", UNIT_TESTS)
def test_unit_under_cpython(name: str, tmp_path: Path) -> None:
    test: Callable[[Any], None] = getattr(fw_unit, name)
    test(_Context(tmp_path))


@pytest.fixture(scope="module")
def micropython_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return run_unit("micropython", tmp_path_factory.mktemp("micropython"))


@pytest.mark.parametrize("name", UNIT_TESTS)
def test_unit_under_micropython(name: str, micropython_results: dict[str, str]) -> None:
    assert micropython_results.get(name) == "PASS", micropython_results.get(name, "not run")


def test_mpy_cross_compiles_every_firmware_file(tmp_path: Path) -> None:
    files = sorted(FIRMWARE.rglob("*.py"))
    assert len(files) >= 12
    for path in files:
        out = tmp_path / (path.stem + ".mpy")
        result = subprocess.run(
            [mpy_cross(), "-o", str(out), str(path)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{path}: {result.stderr}"
        assert out.read_bytes()[:1] == b"M"  # the .mpy magic


# -- the same bytes as the agent's encoders --------------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9_.:/-]{0,20}", fullmatch=True)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.floats(width=16, allow_nan=False, allow_infinity=False),
)
TIMES = st.one_of(
    st.integers(min_value=2**28, max_value=2**40),
    st.floats(min_value=2**28, max_value=2**40, allow_nan=False),
)
VALUES = st.one_of(NUMBERS, st.text(max_size=20), st.booleans(), st.binary(max_size=20))
UNITS = st.one_of(st.none(), st.sampled_from(["Cel", "%RH", "m/s2", "/", "lx"]))


@st.composite
def readings(draw: st.DrawFn) -> dict[str, Any]:
    reading: dict[str, Any] = {"n": draw(NAMES), "t": draw(TIMES), "v": draw(VALUES)}
    unit = draw(UNITS)
    if unit is not None:
        reading["u"] = unit
    if draw(st.booleans()):
        reading["s"] = draw(NUMBERS)
    if draw(st.booleans()):
        reading["ut"] = draw(st.integers(min_value=0, max_value=86400))
    return reading


def _record(reading: dict[str, Any]) -> senml.Record:
    value = reading["v"]
    return senml.Record(
        name=reading["n"],
        time=reading["t"],
        value=value,
        unit=reading.get("u"),
        sum=reading.get("s"),
        update_time=reading.get("ut"),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(readings(), min_size=1, max_size=8), st.integers(0, 2**64 - 1))
def test_firmware_bytes_equal_the_agents_reference(
    pack: list[dict[str, Any]], counter: int
) -> None:
    key, kid = bytes(range(32)), b"greenhouse-1"
    expected_pack = senml.encode_cbor([_record(r) for r in pack])
    assert fw_senml.encode_pack(pack) == expected_pack
    message = fw_cose.mac0(fw_senml.encode_pack(pack), key, kid, counter)
    assert message == cose.mac0(expected_pack, key, kid, counter=counter)
    parsed = cose.parse(message)
    assert parsed.counter == counter and parsed.kid == kid
    back = senml.decode_cbor(parsed.verify_mac(key), now=0)
    assert sorted(r.name for r in back) == sorted(r["n"] for r in pack)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(2**64), max_value=2**64 - 1),
            st.floats(),
            st.binary(max_size=40),
            st.text(max_size=40),
        ),
        lambda inner: st.one_of(
            st.lists(inner, max_size=5),
            st.dictionaries(
                st.one_of(st.integers(-300, 300), st.text(max_size=5)), inner, max_size=5
            ),
        ),
        max_leaves=20,
    )
)
def test_firmware_cbor_equals_cbor2_canonical(value: Any) -> None:
    if isinstance(value, float) and math.isnan(value):
        value = math.nan  # cbor2 writes every NaN as the canonical half-precision one
    assert fw_cbor.encode(value) == cbor.encode(value)


def test_every_half_and_many_single_floats_take_cbor2s_width() -> None:
    for bits in range(0x10000):
        value = struct.unpack(">e", bits.to_bytes(2, "big"))[0]
        if not math.isnan(value):
            assert fw_cbor.encode(value) == cbor.encode(value), value
    for bits in range(0, 2**32, 65537):
        value = struct.unpack(">f", bits.to_bytes(4, "big"))[0]
        if not math.isnan(value):
            assert fw_cbor.encode(value) == cbor.encode(value), value


# -- CoAP as aiocoap speaks it -----------------------------------------------------------------


def test_firmware_coap_request_is_what_aiocoap_encodes() -> None:
    uri_query = [(15, b"t=abc"), (15, b"x=1")]  # RFC 7252 section 5.10: Uri-Query is 15
    options = fw_coap.request_options(["s", "kitchen.temp"], 17) + uri_query
    ours = fw_coap.encode(fw_coap.CON, fw_coap.POST, 0xBEEF, b"\x01\x02", options, b"payload")
    theirs = Message(
        code=Code.POST,
        uri_path=("s", "kitchen.temp"),
        uri_query=("t=abc", "x=1"),
        content_format=17,
        payload=b"payload",
    )
    theirs.mtype, theirs.mid, theirs.token = Type.CON, 0xBEEF, b"\x01\x02"
    assert ours == theirs.encode()
    decoded = Message.decode(ours)
    assert decoded.opt.uri_path == ("s", "kitchen.temp") and int(decoded.opt.content_format) == 17


def test_firmware_reads_responses_aiocoap_encodes() -> None:
    response = Message(code=Code.UNAUTHORIZED, payload=b"bad MAC")
    response.mtype, response.mid, response.token = Type.ACK, 7, b"tok"
    response.opt.content_format = 0
    mtype, code, mid, token, _, payload = fw_coap.decode(response.encode())
    assert (mtype, code, mid, token, payload) == (fw_coap.ACK, 0x81, 7, b"tok", b"bad MAC")
    assert fw_coap.code_text(code) == "4.01"


# -- mDNS as python-zeroconf answers ------------------------------------------------------------


def test_firmware_finds_the_agent_in_a_zeroconf_answer() -> None:
    from zeroconf import DNSAddress, DNSOutgoing, DNSPointer, DNSService, DNSText
    from zeroconf.const import (
        _CLASS_IN,
        _FLAGS_AA,
        _FLAGS_QR_RESPONSE,
        _TYPE_A,
        _TYPE_PTR,
        _TYPE_SRV,
        _TYPE_TXT,
    )

    service = "_lichen._udp.local."
    instance = "lichen-abcdef123456." + service
    out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA, multicast=False, id_=0x4242)
    out.add_answer_at_time(DNSPointer(service, _TYPE_PTR, _CLASS_IN, 120, instance), 0)
    out.add_additional_answer(
        DNSService(instance, _TYPE_SRV, _CLASS_IN, 120, 0, 0, 5700, "pi-kitchen.local.")
    )
    out.add_additional_answer(
        DNSText(instance, _TYPE_TXT, _CLASS_IN, 120, b"\x09txtvers=1\x09coap=5701")
    )
    out.add_additional_answer(
        DNSAddress("pi-kitchen.local.", _TYPE_A, _CLASS_IN, 120, bytes([10, 0, 0, 7]))
    )
    (packet,) = out.packets()
    assert fw_mdns.agents_in(packet) == [("10.0.0.7", 5701)]
