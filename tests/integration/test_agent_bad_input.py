"""Hostile input to running agents: every refusal is a 4.xx with a reason, counted, and nothing
is kept.

Each test starts real agents (``lichen agent run``) with their Prometheus server on, sends what
a broken client or an attacker would send with a real aiocoap client, and checks three things:
the answer (code and diagnostic payload), the counters the agent exports at ``/metrics``
(``lichen_rejected_total{reason}`` and ``lichen_requests_total{resource,code}``), and, through
``lichen status``, ``lichen peers`` or ``lichen stream read``, that nothing was stored. Where a
refusal could pass merely because the agent refuses everything, a positive control sits beside
it: the same request made right is accepted.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiocoap
import aiocoap.resource as resource
import pytest
from aiocoap import Code, Message
from prometheus_client.parser import text_string_to_metric_families

from edge_agent import datapath
from edge_agent.coap_client import AgentClient
from edge_agent.discovery import build_txt
from lichen import cbor, cid, cose, erasure, identity, messages, placement, seal, shard
from lichen.errors import BadSignature, MalformedMessage
from lichen.holder import receipt_for
from lichen.identity import Identity, PublicIdentity
from tests import netns
from tests.agents import AgentProc, free_port, mesh
from tests.forge import sign_as

pytestmark = pytest.mark.slow

CT_CBOR = 60
CT_COSE_SIGN1 = 18
CT_SENML_JSON = 110
ASK_TIMEOUT = 20.0  # seconds: a last resort; every answer here comes in milliseconds
MAX_BODY = 1024  # [coap] max_body of the agent under attack: /shards takes 1024 + 4096 bytes
PROBE = Path(__file__).with_name("discovery_probe.py")
ROOT = Path(__file__).resolve().parents[2]

OWNER = Identity(bytes(range(32)))
OTHER = Identity(bytes(range(1, 33)))
STRANGER = Identity(bytes(range(2, 34)))

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- helpers -----------------------------------------------------------------------------------


@dataclass
class Target:
    """A running agent with its metrics server."""

    agent: AgentProc
    metrics_port: int

    @property
    def coap(self) -> str:
        return f"coap://127.0.0.1:{self.agent.port}"

    @property
    def tcp(self) -> str:
        return f"coap+tcp://127.0.0.1:{self.agent.port}"


_FETCH = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
)


def scrape(target: Target) -> Samples:
    """Every sample of the agent's ``/metrics``, by name and labels."""
    url = f"http://127.0.0.1:{target.metrics_port}/metrics"
    if target.agent.namespace is None:
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
    else:  # the metrics server listens on the namespace's own loopback
        text = target.agent.namespace.run([sys.executable, "-c", _FETCH, url]).stdout
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the sample ``name{labels}`` grew between two scrapes."""
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def rejected(before: Samples, after: Samples, reason: str) -> float:
    return delta(before, after, "lichen_rejected_total", reason=reason)


def answered(before: Samples, after: Samples, res: str, code: Code) -> float:
    return delta(before, after, "lichen_requests_total", resource=res, code=str(code))


def stored(agent: AgentProc) -> tuple[int, int]:
    """(shards, bytes) the agent says it holds, from ``lichen status``."""
    out = agent.cli("status").stdout.decode()
    match = re.search(r"storage:\s+(\d+) of \d+ bytes used, (\d+) shards", out)
    assert match, out
    return int(match.group(2)), int(match.group(1))


def with_metrics(agent: AgentProc) -> Target:
    port = free_port()
    agent.configure("metrics", "port", str(port))
    return Target(agent, port)


async def ask(
    context: aiocoap.Context, code: Code, uri: str, payload: bytes = b"", ct: int | None = None
) -> Message:
    """One request and its final answer."""
    message = Message(code=code, uri=uri, payload=payload)
    if ct is not None:
        message.opt.content_format = ct
    return await asyncio.wait_for(context.request(message).response, ASK_TIMEOUT)


async def client_context() -> aiocoap.Context:
    return await aiocoap.Context.create_client_context(transports=["udp6", "tcpclient"])


def make_shard(owner: Identity = OWNER, size: int = 1000, seed: int = 1) -> shard.Shard:
    """A real shard of ``size`` bytes (two 512-byte Merkle blocks), an hour from expiry."""
    body = random.Random(seed).randbytes(size)
    return shard.build_shard(
        body,
        object_cid=cid.of(b"object %d" % seed),
        index=0,
        k=1,
        n=1,
        codec=erasure.CODEC,
        object_size=size,
        block_size=shard.MIN_BLOCK_SIZE,
        expiry=int(time.time()) + 3600,
        owner=owner,
    )


def transfer(signed_header: bytes, body: bytes) -> bytes:
    return messages.ShardTransfer(signed_header, body).encode()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One agent on loopback, no mDNS, ``[coap] max_body = 1024``, metrics on."""
    with mesh(tmp_path_factory.mktemp("bad-input"), 1) as (agent,):
        target = with_metrics(agent)
        agent.configure("coap", "max_body", str(MAX_BODY))
        agent.start()
        yield target
        assert agent.running, "the agent died under hostile input:\n" + "\n".join(agent.lines)


# -- shards ------------------------------------------------------------------------------------


def test_shard_whose_body_does_not_match_its_root_is_refused(target: Target) -> None:
    genuine = make_shard()
    tampered = bytearray(genuine.body)
    tampered[700] ^= 0x01
    cases = [
        (bytes(tampered), "shard body does not match its Merkle root"),
        (genuine.body[:-1], "shard body is 999 bytes, its header says 1000"),
    ]
    before, held = scrape(target), stored(target.agent)

    async def run() -> list[Message]:
        context = await client_context()
        try:
            answers = []
            for body, _ in cases:
                answers.append(
                    await ask(
                        context,
                        Code.PUT,
                        f"{target.tcp}/shards",
                        transfer(genuine.signed_header, body),
                        CT_CBOR,
                    )
                )
            return answers
        finally:
            await context.shutdown()

    for answer, (_, why) in zip(asyncio.run(run()), cases, strict=True):
        assert answer.code == Code.BAD_REQUEST, answer
        assert answer.payload.decode() == why
    after = scrape(target)
    assert rejected(before, after, "IntegrityError") == 2
    assert answered(before, after, "shards", Code.BAD_REQUEST) == 2
    assert stored(target.agent) == held
    target.agent.wait_for(r"refused PUT shards from 127\.0\.0\.1.*does not match its Merkle root")

    # Control: the untouched shard is accepted and a receipt signed by the agent comes back.
    async def control() -> Message:
        context = await client_context()
        try:
            return await ask(
                context,
                Code.PUT,
                f"{target.tcp}/shards",
                transfer(genuine.signed_header, genuine.body),
                CT_CBOR,
            )
        finally:
            await context.shutdown()

    answer = asyncio.run(control())
    assert answer.code == Code.CREATED, answer
    shards, used = stored(target.agent)
    assert shards == held[0] + 1 and used > held[1] + 1000  # the body, its header and leaves


def test_shard_header_signed_by_another_key_than_its_owner_is_refused(target: Target) -> None:
    real = make_shard(seed=2)
    payload = real.header.to_payload()  # names OWNER as the owner
    cases = [
        # OTHER signs openly, under its own kid.
        (cose.sign1(payload, OTHER), f"COSE_Sign1 kid does not name node {OWNER.node_id}"),
        # OTHER signs but claims OWNER's kid: the signature itself fails.
        (sign_as(payload, OTHER, OWNER.kid), "signature"),
    ]
    before, held = scrape(target), stored(target.agent)

    async def run() -> list[Message]:
        context = await client_context()
        try:
            return [
                await ask(
                    context, Code.PUT, f"{target.tcp}/shards", transfer(header, real.body), CT_CBOR
                )
                for header, _ in cases
            ]
        finally:
            await context.shutdown()

    for answer, (_, why) in zip(asyncio.run(run()), cases, strict=True):
        assert answer.code == Code.UNAUTHORIZED, answer
        assert why in answer.payload.decode()
    after = scrape(target)
    assert rejected(before, after, "BadSignature") == 2
    assert answered(before, after, "shards", Code.UNAUTHORIZED) == 2
    assert stored(target.agent) == held


# -- a holder that signs its receipt with the wrong key -------------------------------------------


class FakeHolder:
    """A CoAP server that proves ``proves`` in /hello but signs receipts with ``signs``."""

    def __init__(self, proves: Identity, signs: Identity) -> None:
        self.proves = proves
        self.signs = signs
        self.forge_kid = False  # True: the receipt names and claims ``proves``, signed by ``signs``
        self.offers = 0
        self.port = free_port()
        self.context: aiocoap.Context | None = None

    def info(self) -> messages.PeerInfo:
        return messages.PeerInfo(
            self.proves.public.public_key, "127.0.0.1", self.port, "", (), 1 << 30
        )

    async def start(self) -> None:
        fake = self

        class Hello(resource.Resource):  # type: ignore[misc]  # aiocoap is untyped
            async def render_post(self, request: Message) -> Message:
                asked = messages.HelloRequest.decode(request.payload)
                proof = identity.make_hello(fake.proves, asked.nonce, asked.asker)
                return Message(code=Code.CONTENT, payload=proof, content_format=CT_CBOR)

        class Shards(resource.Resource):  # type: ignore[misc]
            async def render_put(self, request: Message) -> Message:
                fake.offers += 1
                offer = messages.ShardTransfer.decode(request.payload, 1 << 20)
                header = shard.open_shard(offer.signed_header, offer.body).header
                named = fake.proves if fake.forge_kid else fake.signs
                receipt = receipt_for(header, named, int(time.time()))
                if fake.forge_kid:
                    signed = sign_as(receipt.to_payload(), fake.signs, fake.proves.kid)
                else:
                    signed = receipt.sign(fake.signs)
                return Message(code=Code.CREATED, payload=signed, content_format=CT_COSE_SIGN1)

        site = resource.Site()
        site.add_resource(["hello"], Hello())
        site.add_resource(["shards"], Shards())
        self.context = await aiocoap.Context.create_server_context(
            site, bind=("127.0.0.1", self.port), transports=["udp6", "tcpserver"]
        )

    async def stop(self) -> None:
        if self.context is not None:
            await self.context.shutdown()


async def _peer_info(client: AgentClient, agent: AgentProc) -> messages.PeerInfo:
    status = await client.get_status("127.0.0.1", agent.port)
    return messages.PeerInfo(
        status.public_key, "127.0.0.1", agent.port, status.domain, status.tags, status.free_bytes
    )


def _nonce_placing_on(
    data: bytes, key: bytes, wanted: str, peers: list[messages.PeerInfo], n: int
) -> bytes:
    """A sealing nonce for which rendezvous placement puts one of the n shards on ``wanted``."""
    ranked = [placement.Peer(p.node_id, p.domain, frozenset(p.tags), p.free_bytes) for p in peers]
    for attempt in range(1000):
        nonce = attempt.to_bytes(seal.NONCE_SIZE, "big")
        object_cid = cid.of(seal.seal(data, key, nonce))
        if wanted in placement.place(object_cid, n, ranked):
            return nonce
    raise AssertionError("no nonce places a shard on the fake holder")


def test_receipt_signed_by_another_key_is_not_counted_as_accepted(tmp_path: Path) -> None:
    with mesh(tmp_path, 2) as agents:
        for agent in agents:
            agent.start()

        async def run() -> None:
            fake = FakeHolder(proves=STRANGER, signs=OTHER)
            await fake.start()
            client = await AgentClient.create(OWNER)
            try:
                # The fake proves the key it is listed under: the handshake alone cannot tell.
                proven = await client.hello("127.0.0.1", fake.port)
                assert proven.node_id == STRANGER.node_id
                real = make_shard(seed=3)
                offer = messages.ShardTransfer(real.signed_header, real.body)
                for forge, why in (
                    (False, f"COSE_Sign1 kid does not name node {STRANGER.node_id}"),
                    (True, f"signature does not verify for node {STRANGER.node_id}"),
                ):
                    fake.forge_kid = forge
                    with pytest.raises(BadSignature, match=why):
                        await client.put_shard(fake.info(), offer)
                a, b = [await _peer_info(client, agent) for agent in agents]

                # Two peers for two shards: the fake's shard has nowhere else to go.
                data = b"readings of a kitchen" * 10
                key = bytes(32)
                with pytest.raises(datapath.NotEnoughPeers) as refused:
                    await datapath.put(
                        client,
                        data,
                        owner=OWNER,
                        key_for_new_object=lambda: (bytes(24), key),
                        peers=[a, fake.info()],
                        k=1,
                        n=2,
                    )
                message = str(refused.value)
                assert message.startswith("no peer accepted shard"), message
                assert f"on {STRANGER.node_id[:8]}: signature does not verify" in message, message

                # With a spare peer, the put moves on and the manifest never names the fake.
                fake.forge_kid = False
                peers = [a, b, fake.info()]
                nonce = _nonce_placing_on(data, key, STRANGER.node_id, peers, 2)
                offers = fake.offers
                result = await datapath.put(
                    client,
                    data,
                    owner=OWNER,
                    key_for_new_object=lambda: (nonce, key),
                    peers=peers,
                    k=1,
                    n=2,
                )
                assert fake.offers == offers + 1  # it was asked, and its receipt refused
                holders = set(result.manifest.holders)
                assert holders == {
                    PublicIdentity(a.public_key).kid,
                    PublicIdentity(b.public_key).kid,
                }
                assert STRANGER.kid not in holders
                assert len(result.receipts) == 2
            finally:
                await client.close()
                await fake.stop()

        asyncio.run(run())


# -- oversized bodies --------------------------------------------------------------------------


def _senml_pack(readings: int, name: str = "x") -> bytes:
    now = int(time.time())
    return json.dumps(
        [{"n": name, "v": float(i), "t": now - readings + i} for i in range(readings)]
    ).encode()


def test_oversized_bodies_get_413_and_are_counted(target: Target) -> None:
    shard_body = os.urandom(10 * 1024)
    pack = _senml_pack(500)
    assert len(pack) > 16 * 1024
    before, held = scrape(target), stored(target.agent)

    async def run() -> list[Message]:
        context = await client_context()
        try:
            return [
                await ask(context, Code.PUT, f"{target.tcp}/shards", shard_body, CT_CBOR),
                await ask(context, Code.PUT, f"{target.coap}/shards", shard_body, CT_CBOR),
                await ask(context, Code.POST, f"{target.coap}/s/x", pack, CT_SENML_JSON),
                await ask(context, Code.POST, f"{target.tcp}/s/x", pack, CT_SENML_JSON),
            ]
        finally:
            await context.shutdown()

    answers = asyncio.run(run())
    for answer, limit in zip(answers, [MAX_BODY + 4096] * 2 + [16 * 1024] * 2, strict=True):
        assert answer.code == Code.REQUEST_ENTITY_TOO_LARGE, answer
        assert answer.payload.decode() == f"body over the limit of {limit} bytes"
        assert answer.opt.size1 == limit
    after = scrape(target)
    assert rejected(before, after, "TooLarge") == 4
    assert answered(before, after, "shards", Code.REQUEST_ENTITY_TOO_LARGE) == 2
    assert answered(before, after, "sensor", Code.REQUEST_ENTITY_TOO_LARGE) == 2
    assert delta(before, after, "lichen_readings_total", stream="x") == 0
    assert stored(target.agent) == held
    assert not (target.agent.data_dir / "streams" / "x").exists()
    failed = target.agent.cli("stream", "read", "x", check=False)
    assert failed.returncode == 1 and b"no stream named 'x'" in failed.stderr


# -- malformed CBOR ----------------------------------------------------------------------------


def _malformed() -> list[tuple[str, str, bytes]]:
    """(resource, what, body): undecodable or wrongly shaped bodies for /hello and /shards."""
    hello = messages.HelloRequest(bytes(32), OWNER.kid).encode()
    a_shard = make_shard(seed=4)
    shard_msg = transfer(a_shard.signed_header, a_shard.body)
    noise = random.Random(5).randbytes(64)
    duplicate = bytes([0xA4]) + b"".join(  # {0: 1, 1: K, 2: h'00..', 2: h'00..'}
        cbor.encode(x) for x in (0, 1, 1, 10, 2, bytes(32), 2, bytes(32))
    )
    cases = []
    for res, good, kind in (("hello", hello, 10), ("shards", shard_msg, 9)):
        dup = duplicate.replace(cbor.encode(10), cbor.encode(kind), 1)
        cases += [
            (res, "random bytes", noise),
            (res, "truncated", good[: len(good) // 2]),
            (res, "duplicate keys", dup),
            (res, "wrong kind", shard_msg if res == "hello" else hello),
            (res, "not a map", cbor.encode([1, 2, 3])),
            (res, "empty", b""),
        ]
    return cases


def _core_verdict(res: str, body: bytes) -> str:
    """What the core decoder says about ``body``: the diagnostic the agent must send back."""
    try:
        if res == "hello":
            messages.HelloRequest.decode(body)
        else:
            messages.ShardTransfer.decode(body, MAX_BODY)
    except MalformedMessage as exc:  # what the decoders document: its words are the diagnostic
        return str(exc)
    raise AssertionError(f"{body.hex()} decodes")


def test_malformed_cbor_gets_400_saying_what_is_wrong(target: Target) -> None:
    cases = _malformed()
    before, held = scrape(target), stored(target.agent)

    async def run() -> list[Message]:
        context = await client_context()
        try:
            answers = []
            for res, _, body in cases:
                base = target.coap if res == "hello" else target.tcp
                method = Code.POST if res == "hello" else Code.PUT
                answers.append(await ask(context, method, f"{base}/{res}", body, CT_CBOR))
            return answers
        finally:
            await context.shutdown()

    answers = asyncio.run(run())
    for answer, (res, what, body) in zip(answers, cases, strict=True):
        assert answer.code == Code.BAD_REQUEST, (res, what, answer, answer.payload)
        diagnostic = answer.payload.decode()
        assert diagnostic == _core_verdict(res, body), (res, what)
    by_what = {
        (res, what): a.payload.decode() for a, (res, what, _) in zip(answers, cases, strict=True)
    }
    assert "duplicate map key" in by_what["hello", "duplicate keys"]
    assert "duplicate map key" in by_what["shards", "duplicate keys"]
    assert "expected a HELLO_REQUEST object, got kind 9" in by_what["hello", "wrong kind"]
    assert "expected a SHARD object, got kind 10" in by_what["shards", "wrong kind"]
    assert "past the end" in by_what["hello", "truncated"]
    after = scrape(target)
    assert rejected(before, after, "MalformedMessage") == len(cases)
    assert answered(before, after, "hello", Code.BAD_REQUEST) == len(cases) // 2
    assert answered(before, after, "shards", Code.BAD_REQUEST) == len(cases) // 2
    assert stored(target.agent) == held


# -- content formats and who may write readings ------------------------------------------------


def test_unsupported_content_formats_get_415(target: Target) -> None:
    reading = _senml_pack(1, name="kitchen.temp")
    cases = [
        ("s/ct.test", 50, reading),  # application/json: not SenML
        ("s/ct.test", CT_CBOR, cbor.encode([{0: "kitchen.temp", 2: 1.0}])),
        ("s/ct.test", None, reading),  # no format at all
        ("hello", 0, b"hello?"),  # text/plain where CBOR is expected
    ]
    before = scrape(target)

    async def run() -> tuple[list[Message], Message]:
        context = await client_context()
        try:
            answers = [
                await ask(context, Code.POST, f"{target.coap}/{path}", body, ct)
                for path, ct, body in cases
            ]
            control = await ask(
                context, Code.POST, f"{target.coap}/s/ct.test", reading, CT_SENML_JSON
            )
            return answers, control
        finally:
            await context.shutdown()

    answers, control = asyncio.run(run())
    for answer, (path, ct, _) in zip(answers, cases, strict=True):
        assert answer.code == Code.UNSUPPORTED_CONTENT_FORMAT, (path, ct, answer)
        assert answer.payload, (path, ct)
    assert b"SenML+JSON (110) or SenML+CBOR (112)" in answers[0].payload
    assert control.code == Code.CHANGED, control
    after = scrape(target)
    assert rejected(before, after, "UnsupportedFormat") == len(cases)
    assert answered(before, after, "sensor", Code.UNSUPPORTED_CONTENT_FORMAT) == 3
    assert answered(before, after, "hello", Code.UNSUPPORTED_CONTENT_FORMAT) == 1
    assert delta(before, after, "lichen_readings_total", stream="ct.test") == 1
    rows = json.loads(target.agent.cli("stream", "read", "ct.test", "--format", "json").stdout)
    assert [row["value"] for row in rows] == [0.0]  # the control reading, and only it


_POST = """
import asyncio, sys, aiocoap
async def main():
    context = await aiocoap.Context.create_client_context(transports=["udp6"])
    message = aiocoap.Message(code=aiocoap.POST, uri=sys.argv[1], payload=sys.argv[2].encode())
    message.opt.content_format = int(sys.argv[3])
    answer = await asyncio.wait_for(context.request(message).response, 20)
    print(answer.code.dotted, answer.payload.decode(errors="replace"))
    await context.shutdown()
asyncio.run(main())
"""


def test_reading_from_another_host_needs_a_sensor_key(tmp_path: Path) -> None:
    netns.require_netns()
    with netns.bridged_hosts(2) as lan:
        agent_host, sensor_host = lan.hosts
        agent = AgentProc(tmp_path / "agent", 5683, agent_host)
        try:
            agent.init("--no-mdns")
            target = with_metrics(agent)
            agent.start()
            before = scrape(target)
            reading = _senml_pack(1, name="kitchen.temp").decode()
            uri = f"coap://{agent_host.address}:5683/s/kitchen.temp"
            remote = sensor_host.run(
                [sys.executable, "-c", _POST, uri, reading, str(CT_SENML_JSON)], timeout=60
            ).stdout.split(maxsplit=1)
            assert remote == ["4.01", "readings need an enrolled sensor key\n"], remote
            # Control: the same reading from the agent's own host is accepted.
            local = agent_host.run(
                [
                    sys.executable,
                    "-c",
                    _POST,
                    "coap://127.0.0.1:5683/s/kitchen.temp",
                    reading,
                    str(CT_SENML_JSON),
                ],
                timeout=60,
            ).stdout.split()
            assert local == ["2.04"], local
            after = scrape(target)
            assert rejected(before, after, "NotAuthorised") == 1
            assert answered(before, after, "sensor", Code.UNAUTHORIZED) == 1
            assert delta(before, after, "lichen_readings_total", stream="kitchen.temp") == 1
            agent.wait_for(rf"refused POST sensor from {re.escape(sensor_host.address)}")
            rows = json.loads(
                agent.cli("stream", "read", "kitchen.temp", "--format", "json").stdout
            )
            assert len(rows) == 1  # the local reading only
        finally:
            agent.kill()


# -- mDNS adverts ------------------------------------------------------------------------------


def test_advert_whose_key_the_handshake_does_not_prove_is_dropped(tmp_path: Path) -> None:
    netns.require_netns()
    with netns.isolated_loopback() as ns, mesh(tmp_path, 2, namespace=ns, mdns=True) as agents:
        a, b = agents
        target = with_metrics(b)
        with ThreadPoolExecutor() as pool:  # each start waits out mDNS probing: run both at once
            list(pool.map(AgentProc.start, agents))
        a.wait_for(rf"peer {b.node_id} verified")
        b.wait_for(rf"peer {a.node_id} verified")
        before = scrape(target)

        # X's advert (a valid id/pk pair) pointing at A's port: whoever answers there is A.
        txt = build_txt(STRANGER.public.public_key, a.port, a.port)
        records = {"lichen-forged": {k.decode(): v.decode() for k, v in txt.items()}}
        publisher = ns.popen(
            [sys.executable, str(PROBE), "publish", "--records", json.dumps(records),
             "--address", "127.0.0.1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            assert publisher.stdout is not None
            line = publisher.stdout.readline()
            assert json.loads(line)["event"] == "published", publisher.stderr
            b.wait_for(
                rf"port {a.port} not verified: peer advertised node id {STRANGER.node_id} "
                rf"but proved key of {a.node_id}"
            )
            a.wait_for(rf"not verified: peer advertised node id {STRANGER.node_id}")
            after = scrape(target)
            assert delta(before, after, "lichen_adverts_dropped_total", reason="BadSignature") == 1
            for agent, other in ((a, b), (b, a)):
                peers = agent.cli("peers").stdout.decode()
                assert STRANGER.node_id not in peers
                assert other.node_id in peers
        finally:
            publisher.terminate()
            publisher.wait(10)
