"""Enrolled sensors and a real agent: MACs, counters, revocation, tokens, Observe.

Each test enrolls sensors with ``lichen sensor add`` on a running agent (the agent picks the
registry change up by itself) and talks to it with a real aiocoap client, or with
``aiocoap-client``, the stock command-line CoAP client, as a sensor that cannot MAC would.
Every refusal is checked for its code and its diagnostic, and, through ``lichen stream
read``, for having stored nothing; each has a positive control beside it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiocoap
import pytest
from aiocoap import Code, Message
from aiocoap.numbers.types import Type

from lichen import cose, senml
from tests.agents import AgentProc, mesh

pytestmark = pytest.mark.slow

CT_MAC0 = 17
CT_CBOR = 60
CT_SENML_JSON = 110
CT_SENML_CBOR = 112
ASK_TIMEOUT = 20.0  # seconds: a last resort; every answer here comes in milliseconds
STREAM = "garden"
T0 = 1735689600
AIOCOAP_CLIENT = str(Path(sys.executable).with_name("aiocoap-client"))


@dataclass
class Enrolled:
    name: str
    key: bytes
    token: str | None


def enroll(agent: AgentProc, name: str, stream: str = STREAM, *extra: str) -> Enrolled:
    out = agent.cli("sensor", "add", name, "--stream", stream, *extra).stdout.decode()
    config = json.loads(out[out.index("{") :])
    assert "token" not in config  # the board MACs its readings; a token is for stock clients
    token = re.search(r"^token: (\S+)$", out, re.MULTILINE)
    return Enrolled(name, bytes.fromhex(config["key"]), token.group(1) if token else None)


def reading(sensor: Enrolled, counter: int, value: float, *, key: bytes | None = None) -> bytes:
    """A COSE_Mac0 of one reading, made with the agent's own reference encoders."""
    pack = senml.encode_cbor([senml.Record("temp", T0 + counter, value, "Cel")])
    return cose.mac0(pack, key or sensor.key, sensor.name.encode(), counter=counter)


async def ask(
    uri: str,
    payload: bytes = b"",
    ct: int | None = CT_MAC0,
    code: Code = Code.POST,
    accept: int | None = None,
) -> Message:
    context = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        message = Message(code=code, uri=uri, payload=payload)
        if ct is not None:
            message.opt.content_format = ct
        if accept is not None:
            message.opt.accept = accept
        return await asyncio.wait_for(context.request(message).response, ASK_TIMEOUT)
    finally:
        await context.shutdown()


def post(agent: AgentProc, payload: bytes, ct: int | None = CT_MAC0, path: str = STREAM) -> Message:
    return asyncio.run(ask(f"coap://127.0.0.1:{agent.port}/s/{path}", payload, ct))


def values(agent: AgentProc, stream: str = STREAM) -> list[tuple[str, float]]:
    result = agent.cli("stream", "read", stream, "--format", "json", check=False)
    if result.returncode != 0:
        assert b"no stream named" in result.stderr, result.stderr
        return []
    return [(r["name"], r["value"]) for r in json.loads(result.stdout)]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProc]:
    with mesh(tmp_path, 1) as (agent,):
        agent.start()
        yield agent
        assert agent.running, "the agent died:\n" + "\n".join(agent.lines)


def test_bad_sensor_messages_get_4xx_and_store_nothing(agent: AgentProc) -> None:
    good = enroll(agent, "probe-1")
    gone = enroll(agent, "probe-2")
    agent.cli("sensor", "revoke", "probe-2")
    other = enroll(agent, "probe-3", "cellar")

    assert post(agent, reading(good, 1, 1.0)).code == Code.CHANGED  # control
    first_of_two = reading(good, 2, 2.0)
    assert post(agent, first_of_two).code == Code.CHANGED
    assert post(agent, reading(good, 3, 3.0)).code == Code.CHANGED

    big = reading(good, 50, 5.0)
    big = big + b"\x00" * (16 * 1024 + 1 - len(big))
    no_counter = cose.mac0(senml.encode_cbor([senml.Record("t", T0, 1.0)]), good.key, b"probe-1")
    malformed = cose.mac0(b"\x81\xa1\x00\x61x", good.key, b"probe-1", counter=60)  # no value
    not_cbor = cose.mac0(b"\xff\xfe", good.key, b"probe-1", counter=61)
    cases = [
        ("wrong MAC", reading(good, 10, 9.0, key=os.urandom(32)), CT_MAC0, STREAM,
         Code.UNAUTHORIZED, "does not verify"),
        ("unknown sensor", reading(Enrolled("probe-9", good.key, None), 11, 9.0), CT_MAC0,
         STREAM, Code.UNAUTHORIZED, "no sensor 'probe-9' is enrolled"),
        ("revoked", reading(gone, 12, 9.0), CT_MAC0, STREAM, Code.FORBIDDEN, "revoked"),
        ("replay", first_of_two, CT_MAC0, STREAM, Code.UNAUTHORIZED,
         "replay: counter 2 is not above 3"),
        ("another stream", reading(other, 13, 9.0), CT_MAC0, STREAM, Code.FORBIDDEN,
         "writes to stream cellar"),
        ("no counter", no_counter, CT_MAC0, STREAM, Code.UNAUTHORIZED, "needs a counter"),
        ("malformed pack", malformed, CT_MAC0, STREAM, Code.BAD_REQUEST, "no value"),
        ("not CBOR", not_cbor, CT_MAC0, STREAM, Code.BAD_REQUEST, "CBOR"),
        ("not COSE", b"\xa0", CT_MAC0, STREAM, Code.BAD_REQUEST, "COSE"),
        ("unsupported format", reading(good, 14, 9.0), CT_CBOR, STREAM,
         Code.UNSUPPORTED_CONTENT_FORMAT, "COSE_Mac0 (17)"),
        ("over the size limit", big, CT_MAC0, STREAM, Code.REQUEST_ENTITY_TOO_LARGE,
         "over the limit of 16384 bytes"),
    ]  # fmt: skip
    for what, payload, ct, stream, code, diagnostic in cases:
        answer = post(agent, payload, ct, stream)
        assert answer.code == code, (what, answer, answer.payload)
        assert diagnostic in answer.payload.decode(), (what, answer.payload)
    # After all that, the sensor's next counter is still taken: nothing above moved it.
    assert post(agent, reading(good, 4, 4.0)).code == Code.CHANGED
    assert values(agent) == [("probe-1:temp", v) for v in (1.0, 2.0, 3.0, 4.0)]
    assert values(agent, "cellar") == []


def test_counters_survive_kill_9_and_sealing(tmp_path: Path) -> None:
    with mesh(tmp_path, 1) as (agent,):
        agent.configure("streams", "segment_readings", "2")
        agent.start()
        sensor = enroll(agent, "probe-1")
        messages = [reading(sensor, n, float(n)) for n in range(1, 6)]
        for message in messages:
            assert post(agent, message).code == Code.CHANGED
        agent.wait_for(r"sealed segment 1 ")  # readings 1-4 sealed: their log entries trimmed
        agent.kill()
        agent.start()
        for message in messages[:4]:  # replays of readings now only in sealed segments
            answer = post(agent, message)
            assert answer.code == Code.UNAUTHORIZED and b"replay" in answer.payload, answer
        # The last message again, byte for byte (a sensor whose answer was lost in the crash
        # resends it): acknowledged, not stored twice.
        again = post(agent, messages[4])
        assert again.code == Code.CHANGED and again.payload == b"already stored"
        assert post(agent, reading(sensor, 6, 6.0)).code == Code.CHANGED
        listed = agent.cli("sensor", "list").stdout.decode()
        assert "probe-1" in listed and "active" in listed
        assert [v for _, v in values(agent)] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_revoking_a_running_agents_sensor_takes_effect_at_once(agent: AgentProc) -> None:
    sensor = enroll(agent, "probe-1")
    assert post(agent, reading(sensor, 1, 1.0)).code == Code.CHANGED
    agent.cli("sensor", "revoke", "probe-1")
    answer = post(agent, reading(sensor, 2, 2.0))
    assert answer.code == Code.FORBIDDEN and answer.payload == b"sensor probe-1 is revoked"
    again = agent.cli("sensor", "add", "probe-1", "--stream", STREAM, check=False)
    assert again.returncode == 0  # a revoked name may be enrolled again, with a new key
    renewed = enroll_output_key(again.stdout.decode())
    assert post(agent, reading(Enrolled("probe-1", renewed, None), 1, 7.0)).code == Code.CHANGED
    assert post(agent, reading(sensor, 3, 3.0)).code == Code.UNAUTHORIZED  # the old key
    assert [v for _, v in values(agent)] == [1.0, 7.0]


def enroll_output_key(out: str) -> bytes:
    return bytes.fromhex(json.loads(out[out.index("{") :])["key"])


def client(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``aiocoap-client ARGS``: a CoAP client that knows nothing of Lichen."""
    return subprocess.run(
        [AIOCOAP_CLIENT, "--no-color", "--no-pretty-print", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_stock_coap_client_writes_with_a_token_and_reads_back(
    tmp_path: Path,
) -> None:
    with mesh(tmp_path, 1) as (agent,):
        agent.configure("streams", "accept_unauthenticated_local", "false")
        agent.start()
        stock = enroll(agent, "stock-1", STREAM, "--token")
        macs_only = enroll(agent, "probe-1")
        assert stock.token is not None and macs_only.token is None  # tokens: off by default
        base = f"coap://127.0.0.1:{agent.port}/s/{STREAM}"
        pack = tmp_path / "pack.json"
        pack.write_text(json.dumps([{"n": "temp", "u": "Cel", "v": 21.5, "t": T0}]))

        wrote = client("-v", "-m", "POST", "--content-format", "110", "--payload", f"@{pack}",
                       f"{base}?t={stock.token}")  # fmt: skip
        assert wrote.returncode == 0 and "2.04 Changed" in wrote.stderr, wrote.stderr

        read = client(f"{base}?t={stock.token}")
        assert read.returncode == 0, read.stderr
        assert json.loads(read.stdout) == [{"n": "stock-1:temp", "u": "Cel", "v": 21.5, "t": T0}]
        as_cbor = asyncio.run(
            ask(f"{base}?t={stock.token}", code=Code.GET, ct=None, accept=CT_SENML_CBOR)
        )
        assert as_cbor.code == Code.CONTENT
        assert senml.decode_cbor(as_cbor.payload, now=0)[0].value == 21.5

        # Refusals: no token (and this agent takes nothing unauthenticated), a wrong token,
        # a token on another stream, a revoked token, and a format that is not SenML.
        body = pack.read_bytes()
        refusals = [
            (f"{base}", CT_SENML_JSON, Code.UNAUTHORIZED, "need an enrolled sensor key"),
            (f"{base}?t={'A' * 43}", CT_SENML_JSON, Code.UNAUTHORIZED, "unknown sensor token"),
            (f"coap://127.0.0.1:{agent.port}/s/other?t={stock.token}", CT_SENML_JSON,
             Code.FORBIDDEN, "writes to stream garden"),
            (f"{base}?t={stock.token}", 50, Code.UNSUPPORTED_CONTENT_FORMAT, "SenML+JSON (110)"),
        ]  # fmt: skip
        for uri, ct, code, diagnostic in refusals:
            answer = asyncio.run(ask(uri, body, ct))
            assert answer.code == code and diagnostic in answer.payload.decode(), (uri, answer)
        agent.cli("sensor", "revoke", "stock-1")
        answer = asyncio.run(ask(f"{base}?t={stock.token}", body, CT_SENML_JSON))
        assert answer.code == Code.FORBIDDEN and b"revoked" in answer.payload
        denied = client(f"{base}?t={stock.token}")
        assert denied.returncode == 1, denied
        assert "4.03 Forbidden" in denied.stdout + denied.stderr, denied
        assert values(agent) == [("stock-1:temp", 21.5)]


def test_observe_the_latest_reading(agent: AgentProc) -> None:
    sensor = enroll(agent, "probe-1")
    uri = f"coap://127.0.0.1:{agent.port}/s/{STREAM}"

    async def run() -> list[float]:
        context = await aiocoap.Context.create_client_context(transports=["udp6"])
        try:
            none_yet = await ask(uri, code=Code.GET, ct=None)
            assert none_yet.code == Code.NOT_FOUND, none_yet
            answer = await ask(uri, reading(sensor, 1, 1.0))
            assert answer.code == Code.CHANGED
            request = Message(code=Code.GET, uri=uri, observe=0)
            observed = context.request(request)
            first = await asyncio.wait_for(observed.response, ASK_TIMEOUT)
            seen = [json.loads(first.payload)[0]["v"]]
            assert first.opt.observe is not None  # the observation was accepted
            notifications = aiter(observed.observation)
            async with asyncio.timeout(ASK_TIMEOUT):
                for counter in (2, 3, 4):
                    answer = await ask(uri, reading(sensor, counter, float(counter)))
                    assert answer.code == Code.CHANGED
                    notification = await anext(notifications)
                    seen.append(json.loads(notification.payload)[0]["v"])
            observed.observation.cancel()
            return seen
        finally:
            await context.shutdown()

    assert asyncio.run(run()) == [1.0, 2.0, 3.0, 4.0]
    links = asyncio.run(
        ask(f"coap://127.0.0.1:{agent.port}/.well-known/core", code=Code.GET, ct=None)
    )
    assert b'</s>;rt="lichen.sensor";obs' in links.payload, links.payload


def test_sensor_commands_without_a_running_agent(tmp_path: Path) -> None:
    agent = AgentProc(tmp_path / "agent", 5683)
    agent.init("--no-mdns")
    out = agent.cli("sensor", "add", "probe-1", "--stream", STREAM, "--agent", "10.0.0.2:5683",
                    "-o", str(tmp_path / "lichen.json")).stdout.decode()  # fmt: skip
    config = json.loads((tmp_path / "lichen.json").read_text())
    assert (tmp_path / "lichen.json").stat().st_mode & 0o777 == 0o600
    assert config["agent"] == "10.0.0.2:5683" and config["kid"] == "probe-1"
    assert config["key"] in out and len(bytes.fromhex(config["key"])) == 32
    registry = agent.data_dir / "sensors.cbor"
    assert registry.stat().st_mode & 0o777 == 0o600  # it holds keys
    twice = agent.cli("sensor", "add", "probe-1", "--stream", STREAM, check=False)
    assert twice.returncode == 2 and b"already enrolled" in twice.stderr
    bad = agent.cli("sensor", "add", "no spaces", "--stream", STREAM, check=False)
    assert bad.returncode == 2 and b"sensor name" in bad.stderr
    missing = agent.cli("sensor", "revoke", "nobody", check=False)
    assert missing.returncode == 2 and b"no sensor named 'nobody'" in missing.stderr
    listed = agent.cli("sensor", "list").stdout.decode().splitlines()
    assert listed[0].split() == ["NAME", "STREAM", "STATE", "TOKEN", "COUNTER", "ADDED"]
    assert listed[1].split()[:5] == ["probe-1", STREAM, "active", "no", "0"]


def raw_exchange(agent: AgentProc, datagram: bytes) -> Message:
    """Send one UDP datagram as it is (no blockwise); the answer (after any empty ACK)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(ASK_TIMEOUT)
        sock.sendto(datagram, ("127.0.0.1", agent.port))
        while True:
            answer = Message.decode(sock.recvfrom(65535)[0])
            if answer.code != Code.EMPTY:
                return answer


def test_single_datagrams_up_to_the_limit_and_over_it(agent: AgentProc) -> None:
    sensor = enroll(agent, "probe-1")

    def datagram(counter: int, readings: int) -> bytes:
        pack = senml.encode_cbor(
            [senml.Record(f"r{i}", T0 + i, float(i) + 0.5) for i in range(readings)]
        )
        message = Message(code=Code.POST, uri_path=("s", STREAM), content_format=CT_MAC0)
        message.payload = cose.mac0(pack, sensor.key, b"probe-1", counter=counter)
        message.mtype, message.mid, message.token = Type.CON, counter, b"tk"
        return bytes(message.encode())

    fits = datagram(1, 500)  # one datagram of about 12 KiB: more than aiocoap reads by default
    assert 8192 < len(fits) < 16384
    assert raw_exchange(agent, fits).code == Code.CHANGED
    over = datagram(2, 1000)  # about 17 KiB of payload in one datagram
    assert len(over) > 16384 + 20
    answer = raw_exchange(agent, over)
    assert answer.code == Code.REQUEST_ENTITY_TOO_LARGE, answer
    assert answer.payload == b"body over the limit of 16384 bytes"
    assert len(values(agent)) == 500
