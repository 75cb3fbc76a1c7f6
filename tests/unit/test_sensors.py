"""Sensor registry and admission (edge_agent.sensors), in process: every check, every refusal,
counters across crashes and concurrent writers, and the golden bytes of the files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge_agent import sensors
from edge_agent.sensors import CT_COSE_MAC0, SensorRegistry
from lichen import cbor, cose, senml
from lichen.errors import BadMac, ConfigError, MalformedMessage, NotAuthorised, Refused

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
TOKEN = bytes(range(100, 132))
T0 = 1735689600
NOW = float(T0 + 10)


def pack(*values: float, name: str = "temp") -> bytes:
    return senml.encode_cbor([senml.Record(name, T0 + i, v, "Cel") for i, v in enumerate(values)])


def mac0(counter: int | None, *values: float, key: bytes = KEY, kid: bytes = b"probe-1") -> bytes:
    return cose.mac0(pack(*values), key, kid, counter=counter)


@pytest.fixture
def registry(tmp_path: Path) -> SensorRegistry:
    reg = SensorRegistry.open(tmp_path)
    reg.add("probe-1", "garden", key=KEY, token=None, now=T0)
    reg.add("stock-1", "garden", key=OTHER_KEY, token=TOKEN, now=T0)
    return reg


def admit_mac(reg: SensorRegistry, message: bytes, stream: str = "garden") -> sensors.Admission:
    return reg.admit(stream, CT_COSE_MAC0, message, (), local=False, now=NOW)


def accept(reg: SensorRegistry, message: bytes) -> sensors.Admission:
    admission = admit_mac(reg, message)
    admission.commit()
    return admission


# -- enrollment ---------------------------------------------------------------------------------


def test_registry_file_is_private_and_reads_back(registry: SensorRegistry, tmp_path: Path) -> None:
    path = tmp_path / sensors.REGISTRY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = SensorRegistry.open(tmp_path)
    listed = again.sensors()
    assert [(s.name, s.stream, s.key, s.token, s.revoked) for s in listed] == [
        ("probe-1", "garden", KEY, None, False),
        ("stock-1", "garden", OTHER_KEY, TOKEN, False),
    ]
    assert listed[0].kid == b"probe-1"
    assert "key" not in repr(listed[0]).replace("kid", "")  # secrets stay out of logs


def test_registry_golden_bytes(tmp_path: Path) -> None:
    reg = SensorRegistry.open(tmp_path)
    reg.add("p", "s", key=KEY, token=None, now=T0)
    assert (tmp_path / sensors.REGISTRY_FILE).read_bytes().hex() == (
        "a26176016773656e736f727381a8636b6579582000"
        "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "6374616740646e616d6561706561646465641a6774858065746f6b656ef666"
        "73747265616d617367636f756e74657200677265766f6b6564f4"
    )


def test_mark_golden_bytes(registry: SensorRegistry) -> None:
    message = mac0(7, 21.5)
    admission = admit_mac(registry, message)
    tag = cose.parse(message).authenticator
    assert admission.mark == bytes.fromhex(
        "846770726f62652d3148" + sensors.key_id(KEY).hex() + "075820" + tag.hex()
    )
    assert sensors.key_id(KEY).hex() == "077bf96759d3711e"


@pytest.mark.parametrize(
    ("name", "stream", "message"),
    [
        ("no spaces", "garden", "sensor name"),
        ("-leading", "garden", "sensor name"),
        ("x" * 64, "garden", "sensor name"),
        ("ok", "", "stream"),
    ],
)
def test_bad_enrollments_are_refused(
    registry: SensorRegistry, name: str, stream: str, message: str
) -> None:
    with pytest.raises((ConfigError, MalformedMessage), match=message):
        registry.add(name, stream, key=KEY, token=None, now=T0)


def test_enrolled_twice_revoked_and_enrolled_again(registry: SensorRegistry) -> None:
    with pytest.raises(ConfigError, match="already enrolled"):
        registry.add("probe-1", "garden", key=os.urandom(32), token=None, now=T0)
    with pytest.raises(ConfigError, match="no sensor named"):
        registry.revoke("nobody")
    with pytest.raises(ConfigError, match="32 bytes"):
        registry.add("new", "garden", key=b"short", token=None, now=T0)
    accept(registry, mac0(5, 1.0))
    registry.revoke("probe-1")
    with pytest.raises(Refused, match="revoked"):
        admit_mac(registry, mac0(6, 1.0))
    with pytest.raises(ConfigError, match="use a new key"):
        registry.add("probe-1", "garden", key=KEY, token=None, now=T0)
    registry.add("probe-1", "garden", key=OTHER_KEY, token=None, now=T0)
    # A new enrollment starts from counter 0; the old key is worthless.
    accept(registry, mac0(1, 1.0, key=OTHER_KEY))
    with pytest.raises(BadMac):
        admit_mac(registry, mac0(9, 1.0))


def test_a_broken_registry_file_stops_the_agent_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / sensors.REGISTRY_FILE).write_bytes(b"\xa1\x61v\x02")
    with pytest.raises(ConfigError, match="cannot read the sensor registry"):
        SensorRegistry.open(tmp_path)
    (tmp_path / sensors.REGISTRY_FILE).write_bytes(b"\xff")
    with pytest.raises(ConfigError, match="cannot read the sensor registry"):
        SensorRegistry.open(tmp_path)


# -- admission ----------------------------------------------------------------------------------


def test_a_maced_reading_is_admitted_renamed_after_its_sensor(registry: SensorRegistry) -> None:
    admission = admit_mac(registry, mac0(1, 21.5, 22.0))
    assert admission.sensor == "probe-1" and not admission.duplicate
    assert [(r.name, r.value) for r in admission.records] == [
        ("probe-1:temp", 21.5),
        ("probe-1:temp", 22.0),
    ]


@pytest.mark.parametrize(
    ("message", "stream", "error", "text"),
    [
        (mac0(1, 1.0, key=OTHER_KEY), "garden", BadMac, "does not verify"),
        (mac0(1, 1.0, kid=b"probe-9"), "garden", NotAuthorised, "no sensor 'probe-9'"),
        (mac0(None, 1.0), "garden", NotAuthorised, "needs a counter"),
        (mac0(1, 1.0), "cellar", Refused, "writes to stream garden"),
        (cose.mac0(b"\x80", KEY, b"probe-1", counter=1), "garden", MalformedMessage, "no readings"),
        (cose.mac0(b"\x81\xa0", KEY, b"probe-1", counter=1), "garden", MalformedMessage, "value"),
        (b"\xd1\x80", "garden", MalformedMessage, "4 items"),
        (b"\xa0", "garden", MalformedMessage, "COSE"),
        (b"\xd2" + mac0(1, 1.0)[1:], "garden", MalformedMessage, "tag 18"),
        (mac0(1, *range(1000)), "garden", MalformedMessage, "exceeds"),
    ],
)
def test_bad_messages_are_refused(
    registry: SensorRegistry, message: bytes, stream: str, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        admit_mac(registry, message, stream)
    # Nothing moved: counter 1 is still free.
    accept(registry, mac0(1, 1.0))


def test_replays_are_refused_and_the_last_message_is_idempotent(registry: SensorRegistry) -> None:
    first, second = mac0(1, 1.0), mac0(2, 2.0)
    accept(registry, first)
    accept(registry, second)
    with pytest.raises(NotAuthorised, match="replay: counter 1 is not above 2"):
        admit_mac(registry, first)
    again = admit_mac(registry, second)
    assert again.duplicate and again.records == ()
    # Same counter, other content: a forgery of a duplicate is still a replay.
    with pytest.raises(NotAuthorised, match="replay"):
        admit_mac(registry, mac0(2, 99.0))


def test_a_counter_is_reserved_while_its_readings_are_stored(registry: SensorRegistry) -> None:
    in_flight = admit_mac(registry, mac0(3, 1.0))
    with pytest.raises(NotAuthorised, match="replay: counter 3 is not above 3"):
        admit_mac(registry, mac0(3, 1.0))
    in_flight.release()  # storing failed: the sensor may send it again
    admit_mac(registry, mac0(3, 1.0)).commit()
    assert registry.get("probe-1") is not None
    assert registry.get("probe-1").counter == 3  # type: ignore[union-attr]


def test_tokens_and_local_readings(registry: SensorRegistry) -> None:
    body = b'[{"n":"temp","v":1.5,"t":1735689600}]'
    token = sensors.token_text(TOKEN)
    admission = registry.admit("garden", 110, body, (f"t={token}",), local=False, now=NOW)
    assert [r.name for r in admission.records] == ["stock-1:temp"]
    assert admission.mark is None  # a token carries no counter
    with pytest.raises(NotAuthorised, match="unknown sensor token"):
        registry.admit("garden", 110, body, ("t=" + "A" * 43,), local=True, now=NOW)
    with pytest.raises(NotAuthorised, match="unknown sensor token"):
        registry.admit("garden", 110, body, ("t=short",), local=True, now=NOW)
    with pytest.raises(Refused, match="writes to stream garden"):
        registry.admit("cellar", 110, body, (f"t={token}",), local=False, now=NOW)
    with pytest.raises(NotAuthorised, match="readings need an enrolled sensor key"):
        registry.admit("garden", 110, body, (), local=False, now=NOW)
    local = registry.admit("garden", 110, body, (), local=True, now=NOW)
    assert [r.name for r in local.records] == ["temp"] and local.sensor is None
    assert registry.check_reader("garden", token).name == "stock-1"
    registry.revoke("stock-1")
    with pytest.raises(Refused, match="revoked"):
        registry.admit("garden", 110, body, (f"t={token}",), local=False, now=NOW)
    with pytest.raises(Refused, match="revoked"):
        registry.check_reader("garden", token)


def test_a_long_name_with_the_prefix_is_refused(registry: SensorRegistry) -> None:
    with pytest.raises(MalformedMessage, match="too long"):
        admit_mac(registry, cose.mac0(pack(1.0, name="n" * 250), KEY, b"probe-1", counter=1))


# -- counters across crashes and writers ----------------------------------------------------------


def test_marks_recover_counters_a_crash_kept_out_of_the_file(tmp_path: Path) -> None:
    agent = SensorRegistry.open(tmp_path)
    agent.add("probe-1", "garden", key=KEY, token=None, now=T0)
    marks = []
    for counter in (1, 2, 3):
        admission = admit_mac(agent, mac0(counter, 1.0))
        assert admission.mark is not None
        marks.append(admission.mark)
        admission.commit()
    # The agent dies before any checkpoint: the file still says 0; the log has the marks.
    restarted = SensorRegistry.open(tmp_path)
    assert restarted.get("probe-1").counter == 0  # type: ignore[union-attr]
    assert restarted.recover([*marks, b"\xff", cbor.encode(["nobody", b"x" * 8, 9, b""])]) == 3
    with pytest.raises(NotAuthorised, match="replay"):
        admit_mac(restarted, mac0(2, 1.0))
    assert admit_mac(restarted, mac0(3, 1.0)).duplicate
    # A mark of an earlier enrollment of the same name (another key) is ignored.
    agent.revoke("probe-1")
    renewed = SensorRegistry.open(tmp_path)
    renewed.add("probe-1", "garden", key=OTHER_KEY, token=None, now=T0)
    assert renewed.recover(marks) == 0
    accept(renewed, mac0(1, 1.0, key=OTHER_KEY))


def test_checkpoint_and_the_command_line_do_not_lose_each_others_changes(
    tmp_path: Path,
) -> None:
    agent = SensorRegistry.open(tmp_path)
    agent.add("probe-1", "garden", key=KEY, token=None, now=T0)
    accept(agent, mac0(5, 1.0))
    cli = SensorRegistry.open(tmp_path)  # another process: knows nothing of counter 5
    cli.add("probe-2", "garden", key=OTHER_KEY, token=None, now=T0)
    agent.checkpoint()
    after = SensorRegistry.open(tmp_path)
    assert after.get("probe-1").counter == 5  # type: ignore[union-attr]
    assert after.get("probe-2") is not None
    cli.revoke("probe-1")  # the command line's revocation keeps the agent's counter too
    assert SensorRegistry.open(tmp_path).get("probe-1").counter == 5  # type: ignore[union-attr]
    # The running agent notices the revocation before the next admission.
    with pytest.raises(Refused, match="revoked"):
        admit_mac(agent, mac0(6, 1.0))
