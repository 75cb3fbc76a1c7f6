"""A hub in the test process and fake agents that speak its control plane by hand.

:func:`running_hub` starts a real :class:`hub.service.Hub` (a real broker, a real database, the
HTTP API on a free port) with its epoch loop off: a test runs each epoch with
:meth:`Hub.run_epoch`, so an epoch lasts only as long as its answer deadline and the hub's grace
for late answers. A :class:`FakeAgent` is an MQTT client that speaks the real control plane
(:mod:`lichen.hubmessages`) and answers challenges with :func:`lichen.proofs.answer` over real
shards of a real object (:func:`make_object`), so a test can send exactly the message it means
to, hostile or honest, when it means to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from edge_agent.mqtt import Message, MqttClient, settings_for
from hub import config as hub_config
from hub.db import Database
from hub.service import Hub
from lichen import audit, objects, proofs, shard
from lichen.holder import receipt_for
from lichen.hubmessages import Joined, Status, make_join
from lichen.hubwire import Name, agent_subscriptions, open_from_hub, parse_topic, topic
from lichen.identity import Identity
from lichen.testing.holder import MemoryHolder

T = TypeVar("T")

WAIT = 10.0  # seconds: a last resort, every wait ends on an event long before
TOKEN = "hostile-hub-join-token-0123456789"
HUB_KEY = Identity(bytes(range(32)))
BLOCK = 512
POOL = 1_000_000
PENALTY_ITEM = 1_000
PENALTY_MISSED = 10_000
# Seconds; the hub rounds the deadline up to a whole second, so agents get 1 to 2 s: room for
# the hub to send five challenges and judge the answers on a busy machine.
ANSWER_WITHIN = 1.0


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, WAIT)


def identity(name: str) -> Identity:
    """A fixed identity per role, so failures are reproducible."""
    return Identity(name.encode().ljust(32, b"."))


# --- the hub --------------------------------------------------------------------------------


def hub_settings(broker_url: str, database: str = "") -> hub_config.HubConfig:
    """Short epochs and small, round reward figures; SQLite in the data directory unless
    ``database`` names another."""
    replace = hub_config.replace
    cfg = hub_config.HubConfig()
    cfg = replace(cfg, "database", url=database)
    cfg = replace(cfg, "mqtt", broker_url=broker_url, bind="127.0.0.1", port=0)
    cfg = replace(cfg, "http", bind="127.0.0.1", port=0)
    cfg = replace(cfg, "epochs", length=3.0, answer_within=ANSWER_WITHIN)
    return replace(
        cfg,
        "rewards",
        pool=POOL,
        penalty_per_failed_item=PENALTY_ITEM,
        penalty_per_missed_answer=PENALTY_MISSED,
        warn_after=1,
        penalise_after=2,
        evict_after=3,
    )


@asynccontextmanager
async def running_hub(tmp_path: Path, broker_url: str, database: str = "") -> AsyncIterator[Hub]:
    """A hub in this process with its epoch loop off (run each epoch with ``run_epoch``)."""
    data_dir = tmp_path / "hub"
    data_dir.mkdir(exist_ok=True)
    hub = Hub(data_dir, hub_settings(broker_url, database), HUB_KEY, TOKEN)
    await hub.start(epoch_loop=False)
    try:
        yield hub
    finally:
        await within(hub.stop())


def db_of(hub: Hub) -> Database:
    assert hub.db is not None
    return hub.db


async def get_json(hub: Hub, path: str) -> Any:
    return json.loads(await get_text(hub, path))


async def get_text(hub: Hub, path: str) -> str:
    url = f"http://127.0.0.1:{hub.http_port}{path}"

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            return str(response.read().decode())

    return await asyncio.to_thread(fetch)


# --- fake agents ----------------------------------------------------------------------------


class FakeAgent:
    """An agent's control-plane side, done by hand, with the shards it was given."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.identity = identity(name)
        self.node_id = self.identity.node_id
        self.client = MqttClient(settings_for(url, f"fake-{name}"))
        self.inbox: dict[Name, asyncio.Queue[Message]] = {
            Name.JOINED: asyncio.Queue(),
            Name.CHALLENGE: asyncio.Queue(),
            Name.REPAIR: asyncio.Queue(),
        }
        self.holder = MemoryHolder()

    async def connect(self) -> None:
        await self.client.connect()
        for pattern in agent_subscriptions(self.node_id):
            await self.client.subscribe(pattern, self._deliver)

    async def _deliver(self, message: Message) -> None:
        _, name = parse_topic(message.topic)
        await self.inbox[name].put(message)

    async def publish(self, name: Name, payload: bytes, *, on: str | None = None) -> None:
        """Publish ``payload`` on our topic ``name`` (or on node ``on``'s)."""
        await within(self.client.publish(topic(on or self.node_id, name), payload, qos=1))

    async def join(self, token: str = TOKEN) -> Joined:
        """Send a join and return the hub's answer, checked against the hub's key."""
        join = make_join(self.identity, token, name=self.name, capacity=1 << 20, now=time.time())
        await self.publish(Name.JOIN, join)
        message = await within(self.inbox[Name.JOINED].get())
        opened = open_from_hub(message.topic, message.payload, me=self.node_id, hub=HUB_KEY.public)
        assert isinstance(opened, Joined)
        return opened

    async def sync(self) -> None:
        """Wait until the hub has handled everything we published so far.

        The hub handles messages one at a time, in the order the broker delivers them, and
        the broker keeps one client's order: the answer to a join sent now comes after all
        of it was handled.
        """
        joined = await self.join()
        assert joined.accepted, joined.reason

    async def status(self) -> None:
        online = Status(True, int(time.time()), b"session!", 1 << 20, 0, len(self.holder))
        await self.publish(Name.STATUS, online.sign(self.identity))

    async def challenge(self) -> proofs.Challenge:
        message = await within(self.inbox[Name.CHALLENGE].get())
        return audit.open_challenge(message.payload, HUB_KEY.public, holder_kid=self.identity.kid)

    def answer(self, challenge: proofs.Challenge, *, flip: bool = False) -> bytes:
        """Our signed answer; with ``flip``, one byte of one proof block is wrong."""

        def tampered(object_cid: bytes, index: int, block_index: int) -> Any:
            got = self.holder.read_block(object_cid, index, block_index)
            assert got is not None
            block, path = got
            return bytes([block[0] ^ 0x01]) + block[1:], path

        return proofs.answer(challenge, tampered if flip else self.holder.read_block, self.identity)

    def receipt(
        self, held: shard.Shard, *, root: bytes | None = None, index: int | None = None
    ) -> bytes:
        """Our signed receipt for ``held`` (optionally lying about its root or index)."""
        honest = receipt_for(held.header, self.identity, int(time.time()))
        told = dataclasses.replace(
            honest,
            index=honest.index if index is None else index,
            root=honest.root if root is None else root,
        )
        return told.sign(self.identity)


@asynccontextmanager
async def agents(url: str, *names: str) -> AsyncIterator[dict[str, FakeAgent]]:
    made = {name: FakeAgent(name, url) for name in names}
    try:
        await asyncio.gather(*(a.connect() for a in made.values()))
        yield made
    finally:
        await asyncio.gather(*(a.client.disconnect() for a in made.values()))
    # The MQTT client logs and swallows what a handler raises: fail here instead.
    assert [a.client.stats.handler_errors for a in made.values()] == [0] * len(made)


def make_object(owner: Identity, n: int, seed: int) -> objects.EncodedObject:
    """A real object of ``n`` shards (k = 2) of a few 512-byte blocks each."""
    rng = random.Random(seed)
    return objects.encode_object(
        rng.randbytes(3000),
        key=rng.randbytes(32),
        nonce=rng.randbytes(24),
        k=2,
        n=n,
        owner=owner,
        expiry=int(time.time()) + 86_400,
        block_size=BLOCK,
    )


def upload(
    owner: Identity, encoded: objects.EncodedObject, holders: list[bytes]
) -> tuple[bytes, list[bytes]]:
    """The owner-signed manifest and headers, as an owner forwards them to the hub."""
    manifest = objects.make_manifest(encoded, holders, owner=owner, created=int(time.time()))
    return manifest.sign(owner), [s.signed_header for s in encoded.shards]
