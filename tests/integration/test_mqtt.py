"""The MQTT control plane for real: paho clients, signed messages, Mosquitto and amqtt brokers.

A miniature hub and two agents exchange the signed control-plane messages of
:mod:`lichen.hubwire` at QoS 1 through a real broker: joins and answers, retained status, a last
will on an abrupt disconnect, a challenge and its proof. A message on the right topic signed by
the wrong key is refused and counted. With Mosquitto's password file and ACL, an agent cannot
publish to or read another agent's topics. Every wait ends on an event (a message, a log line);
``WAIT`` is only the last resort.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edge_agent.mqtt import Message, MqttClient, MqttError, Will, settings_for
from hub.broker import EmbeddedBroker
from lichen import audit, objects, proofs
from lichen.errors import BadSignature, ConfigError, Refused, RemoteProtocolError
from lichen.hubmessages import (
    ChallengeMessage,
    Join,
    Joined,
    ProofMessage,
    Status,
    make_join,
    make_joined,
)
from lichen.hubwire import (
    FromAgent,
    HubMessage,
    KnownDevice,
    Name,
    agent_subscriptions,
    hub_subscriptions,
    open_from_agent,
    open_from_hub,
    topic,
)
from lichen.identity import Identity
from lichen.testing.holder import MemoryHolder
from tests.mosquitto import Account, Mosquitto, agent_account, hub_account, require_mosquitto

T = TypeVar("T")
WAIT = 10.0
HUB = Identity(bytes(range(32)))
A = Identity(bytes(range(1, 33)))
B = Identity(bytes(range(2, 34)))
TOKEN = "integration-join-token-0123"
NOW = 1_700_000_000
BLOCK = 512


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, WAIT)


async def next_live(queue: asyncio.Queue[Message]) -> Message:
    """The next message that is not a retained copy.

    amqtt 0.12 sends a connecting client the retained messages matching *any* client's
    subscriptions, and again on its own subscribe, so retained copies may repeat.
    """
    while (message := await within(queue.get())).retain:
        pass
    return message


class HubSide:
    """The hub's end in miniature: opens every message, enrolls joins, counts refusals."""

    def __init__(self, url: str, client_id: str = "lichen-hub") -> None:
        self.client = MqttClient(settings_for(url, client_id, reconnect_min=1, reconnect_max=2))
        self.devices: dict[str, KnownDevice] = {}
        self.inbox: asyncio.Queue[FromAgent] = asyncio.Queue()
        self.refusals: asyncio.Queue[tuple[str, Exception]] = asyncio.Queue()
        self.refused = 0
        self.topics: list[str] = []

    async def start(self) -> None:
        await self.client.connect()
        for pattern in hub_subscriptions():
            await self.client.subscribe(pattern, self.handle)

    async def handle(self, message: Message) -> None:
        assert message.qos == 1
        self.topics.append(message.topic)
        try:
            opened = open_from_agent(
                message.topic, message.payload, self.devices.get, join_token=TOKEN
            )
        except (RemoteProtocolError, Refused) as exc:
            self.refused += 1
            self.refusals.put_nowait((message.topic, exc))
            return
        if isinstance(opened.message, Join):
            self.devices[opened.node_id] = KnownDevice(opened.sender)
            answer = make_joined(HUB, opened.sender.kid, TOKEN, accepted=True, now=NOW)
            await self.client.publish(topic(opened.node_id, Name.JOINED), answer)
        self.inbox.put_nowait(opened)

    async def next(self, kind: type[T]) -> tuple[FromAgent, T]:
        got = await within(self.inbox.get())
        assert isinstance(got.message, kind), got
        return got, got.message


class AgentSide:
    """An agent's end: joins, pins the hub, publishes status with an offline will."""

    def __init__(self, url: str, identity: Identity) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.session = random.Random(identity.node_id).randbytes(8)
        will = Will(
            topic(self.node_id, Name.STATUS), Status.offline(NOW, self.session).sign(identity)
        )
        settings = settings_for(url, f"lichen-{self.node_id}", reconnect_min=1, reconnect_max=2)
        self.client = MqttClient(settings, will=will)
        self.hub_key = None
        self.inbox: asyncio.Queue[HubMessage] = asyncio.Queue()
        self.topics: list[str] = []

    async def start(self) -> None:
        await self.client.connect()
        for pattern in agent_subscriptions(self.node_id):
            await self.client.subscribe(pattern, self.handle)

    def handle(self, message: Message) -> None:
        self.topics.append(message.topic)
        opened = open_from_hub(
            message.topic, message.payload, me=self.node_id, hub=self.hub_key, join_token=TOKEN
        )
        self.inbox.put_nowait(opened)

    async def join(self) -> None:
        signed = make_join(self.identity, TOKEN, name="test", capacity=10**9, now=NOW)
        await self.client.publish(topic(self.node_id, Name.JOIN), signed)
        joined = await self.next(Joined)
        assert joined.accepted and joined.hub == HUB.public
        self.hub_key = joined.hub  # type: ignore[assignment]

    def status(self, shards: int = 0) -> Status:
        return Status(True, NOW, self.session, 10**9, 0, shards, "127.0.0.1", 5683, "test")

    async def publish_status(self, shards: int = 0) -> Status:
        status = self.status(shards)
        payload = status.sign(self.identity)
        await self.client.publish(topic(self.node_id, Name.STATUS), payload, retain=True)
        return status

    async def next(self, kind: type[T]) -> T:
        got = await within(self.inbox.get())
        assert isinstance(got, kind), got
        return got


@asynccontextmanager
async def mesh(url: str, hub_url: str | None = None, **agent_urls: str) -> AsyncIterator[Any]:
    """A started hub and agents A and B (each URL may carry that account's credentials)."""
    hub = HubSide(hub_url or url)
    a = AgentSide(agent_urls.get("a", url), A)
    b = AgentSide(agent_urls.get("b", url), B)
    await hub.start()
    await a.start()
    await b.start()
    try:
        yield hub, a, b
    finally:
        for side in (b, a, hub):
            await side.client.disconnect()
    # The client logs and swallows what a handler raises (its asserts too): fail here instead.
    assert [side.client.stats.handler_errors for side in (hub, a, b)] == [0, 0, 0]


@contextmanager
def mosquitto(
    tmp_path: Path, accounts: list[Account] | None = None, **options: Any
) -> Iterator[Mosquitto]:
    require_mosquitto()
    with Mosquitto(tmp_path / "mosquitto", accounts, **options) as broker:
        yield broker


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def stored_object() -> objects.EncodedObject:
    return objects.encode_object(
        b"held by agent A" * 100,
        key=bytes(32),
        nonce=bytes(24),
        k=2,
        n=3,
        owner=A,
        expiry=NOW + 3600,
        block_size=BLOCK,
    )


async def exchange(url: str) -> None:
    """The whole exchange, against any broker at ``url`` (anonymous logins)."""
    async with mesh(url) as (hub, a, b):
        # Enrollment: the join goes up, the hub-signed answer comes back, the hub key is pinned.
        await a.join()
        got, join = await hub.next(Join)
        assert got.node_id == A.node_id and join.capacity == 10**9
        await b.join()
        await hub.next(Join)
        assert set(hub.devices) == {A.node_id, B.node_id}

        # Presence: a retained status, which a subscriber arriving later still gets.
        status = await a.publish_status(shards=3)
        got, seen = await hub.next(Status)
        assert got.node_id == A.node_id and seen == status
        late: asyncio.Queue[Message] = asyncio.Queue()
        observer = MqttClient(settings_for(url, "late-observer", clean_session=True))
        await observer.connect()
        await observer.subscribe(topic(A.node_id, Name.STATUS), late.put_nowait)
        retained = await within(late.get())
        assert retained.retain and retained.payload == status.sign(A)

        # The right topic with the wrong key: refused and counted, never delivered.
        await b.client.publish(topic(A.node_id, Name.STATUS), status.sign(B))
        where, error = await within(hub.refusals.get())
        assert where == topic(A.node_id, Name.STATUS) and isinstance(error, BadSignature)
        assert hub.refused == 1 and hub.inbox.empty()
        # The broker itself checks nothing: any subscriber gets the forgery, and must refuse it.
        assert (await next_live(late)).payload == status.sign(B)

        # A challenge down at QoS 1 and its proof up, verified against the shards' roots.
        shards = MemoryHolder(stored_object().shards)
        challenge = proofs.make_challenge(
            7, os.urandom(32), A.kid, NOW + 60, shards.held(), 3, 2, random.Random(0)
        )
        signed = audit.sign_challenge(challenge, HUB)
        await hub.client.publish(topic(A.node_id, Name.CHALLENGE), signed)
        carried = await a.next(ChallengeMessage)
        asked = audit.open_challenge(carried.signed, HUB.public, holder_kid=A.kid)
        assert asked == challenge

        answer = proofs.answer(asked, shards.read_block, A)
        await a.client.publish(topic(A.node_id, Name.PROOF), answer)
        got, proof = await hub.next(ProofMessage)
        assert (proof.epoch, proof.nonce) == (7, challenge.nonce)
        assert proofs.verify(challenge, proof.signed, got.sender, shards.roots(), NOW).all_passed

        # A vanishes without a DISCONNECT: the broker publishes its pre-signed offline will.
        await a.client.abort()
        got, offline = await hub.next(Status)
        assert got.node_id == A.node_id
        assert offline == Status.offline(NOW, a.session)
        will = Status.offline(NOW, a.session).sign(A)
        assert (await next_live(late)).payload == will
        await observer.disconnect()
        # The will was published retained: a newcomer learns that A is offline.
        newcomer = MqttClient(settings_for(url, "newcomer", clean_session=True))
        await newcomer.connect()
        await newcomer.subscribe(topic(A.node_id, Name.STATUS), late.put_nowait)
        retained = await within(late.get())
        assert retained.retain and retained.payload == will
        await newcomer.disconnect()


def test_exchange_through_mosquitto(tmp_path: Path) -> None:
    with mosquitto(tmp_path) as broker:
        run(lambda: exchange(broker.url))


def test_exchange_through_the_embedded_broker() -> None:
    async def test() -> None:
        async with EmbeddedBroker("127.0.0.1", 0) as broker:
            assert broker.port > 0
            await exchange(broker.url)

    run(test)


def test_acl_keeps_each_agent_to_its_own_topics(tmp_path: Path) -> None:
    accounts = [
        hub_account(),
        agent_account(A.node_id, "pass-a"),
        agent_account(B.node_id, "pass-b"),
    ]
    with mosquitto(tmp_path, accounts) as broker:
        urls = {"a": broker.url_for(accounts[1]), "b": broker.url_for(accounts[2])}

        async def test() -> None:
            async with mesh(broker.url, broker.url_for(accounts[0]), **urls) as (hub, a, b):
                await a.join()
                await b.join()
                await hub.next(Join)
                await hub.next(Join)

                # A publishes on B's topic: the broker drops it. Mosquitto keeps one client's
                # messages in order, so once A's next (own) status arrives, the dropped one
                # would have arrived first had it been delivered.
                forged = b.status().sign(A)
                await a.client.publish(topic(B.node_id, Name.STATUS), forged)
                broker.wait_for_log(f"Denied PUBLISH from lichen-{A.node_id} .*{B.node_id}/status")
                await a.publish_status()
                got, _ = await hub.next(Status)
                assert got.node_id == A.node_id
                assert topic(B.node_id, Name.STATUS) not in hub.topics and hub.refused == 0

                # A subscribes to B's topics: Mosquitto 2.0 grants it (MQTT 3.1.1 has no way to
                # say why) or refuses it, but either way delivers nothing of B's to A.
                with contextlib.suppress(MqttError):
                    await a.client.subscribe(f"lichen/v1/{B.node_id}/#", a.handle)
                challenge_b = make_joined(HUB, B.kid, TOKEN, accepted=True, now=NOW + 1)
                await hub.client.publish(topic(B.node_id, Name.JOINED), challenge_b)
                assert (await b.next(Joined)).time == NOW + 1
                mine = make_joined(HUB, A.kid, TOKEN, accepted=True, now=NOW + 2)
                await hub.client.publish(topic(A.node_id, Name.JOINED), mine)
                assert (await a.next(Joined)).time == NOW + 2
                assert not any(B.node_id in t for t in a.topics)
                assert a.inbox.empty()

        run(test)


def test_broker_refuses_bad_logins(tmp_path: Path) -> None:
    accounts = [hub_account(), agent_account(A.node_id, "pass-a")]
    with mosquitto(tmp_path, accounts) as broker:

        async def test() -> None:
            for url in (
                broker.url,  # anonymous
                broker.url_for(agent_account(A.node_id, "wrong")),
                broker.url_for(agent_account(B.node_id, "pass-a")),
            ):
                client = MqttClient(settings_for(url, "intruder"))
                with pytest.raises(MqttError, match="Not authorized"):
                    await client.connect()

        run(test)


def test_password_file_written_without_mosquitto_passwd(tmp_path: Path) -> None:
    accounts = [hub_account("s3cret:with:colons")]
    with mosquitto(tmp_path, accounts, use_mosquitto_passwd=False) as broker:
        assert (tmp_path / "mosquitto" / "passwd").read_text().startswith("hub:$7$101$")

        async def test() -> None:
            client = MqttClient(settings_for(broker.url_for(accounts[0]), "hub"))
            await client.connect()
            await client.disconnect()

        run(test)


def test_reconnects_after_the_broker_restarts(tmp_path: Path) -> None:
    with mosquitto(tmp_path) as broker:

        async def test() -> None:
            async with mesh(broker.url) as (hub, a, _):
                await a.join()
                await hub.next(Join)
                ups: asyncio.Queue[bool] = asyncio.Queue()
                hub.client.on_connection(ups.put_nowait)
                a.client.on_connection(ups.put_nowait)
                await asyncio.to_thread(broker.stop)
                assert [await within(ups.get()), await within(ups.get())] == [False, False]
                # A QoS 1 publish while the broker is away waits in paho's queue: the restarted
                # broker (whose log starts empty) receives it from A once A reconnects.
                status = topic(A.node_id, Name.STATUS)
                queued = asyncio.create_task(a.client.publish(status, a.status().sign(A)))
                await asyncio.to_thread(broker.start_on, broker.port)
                assert [await within(ups.get()), await within(ups.get())] == [True, True]
                await asyncio.to_thread(
                    broker.wait_for_log, f"Received PUBLISH from lichen-{A.node_id} .*'{status}'"
                )
                await within(queued)  # acknowledged by the restarted broker
                # persistence is off: the sessions are new, so the subscriptions were renewed.
                await a.publish_status()
                got, _ = await hub.next(Status)
                assert got.node_id == A.node_id

        run(test)


def test_embedded_broker_refuses_anonymous_beyond_loopback() -> None:
    with pytest.raises(ConfigError):
        EmbeddedBroker("0.0.0.0", 1883)
    EmbeddedBroker("0.0.0.0", 1883, allow_anonymous=True)
    EmbeddedBroker("::1", 0)


def test_connect_gives_up_on_an_unreachable_broker() -> None:
    async def test() -> None:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
            url = f"mqtt://127.0.0.1:{unused.getsockname()[1]}"
            client = MqttClient(settings_for(url, "nobody", connect_timeout=0.5))
            with pytest.raises(MqttError, match="no CONNACK"):
                await client.connect()
            with pytest.raises(RuntimeError):
                await client.publish("x", b"y")

    run(test)


def test_messages_kept_while_away_reach_a_route_set_before_connecting(tmp_path: Path) -> None:
    """A challenge sent while an agent was offline is delivered to it when it comes back."""
    require_mosquitto()

    async def scenario(broker: Mosquitto) -> bytes:
        away = MqttClient(settings_for(broker.url, "agent-a"))
        await away.subscribe("lichen/v1/a/challenge", lambda m: None)  # before connect: a route
        await away.connect()
        await away.disconnect()  # the broker keeps the session: clean_session is False
        sender = MqttClient(settings_for(broker.url, "hub"))
        await sender.connect()
        await sender.publish("lichen/v1/a/challenge", b"kept for you", qos=1)
        await sender.disconnect()
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        back = MqttClient(settings_for(broker.url, "agent-a"))

        def keep(message: Message) -> None:
            if not got.done():
                got.set_result(message.payload)

        await back.subscribe("lichen/v1/a/challenge", keep)
        await back.connect()
        try:
            return await asyncio.wait_for(got, 10)
        finally:
            await back.disconnect()

    with Mosquitto(tmp_path) as broker:
        assert asyncio.run(scenario(broker)) == b"kept for you"
