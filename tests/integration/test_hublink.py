"""The agent's hub link for real: agent processes, a real Mosquitto, and a hub in miniature.

The hub side here is built from :mod:`edge_agent.mqtt` and :mod:`lichen.hubwire` /
:mod:`lichen.hubmessages` only (not the hub service): it enrolls joins made with its token,
refuses the others, and records everything agents publish, so each test can check what an
agent sends (joins, retained statuses, its last will, receipts and manifests, proofs, repair
reports) and how it treats what the hub sends (challenges signed by the right and the wrong
key, a repair order). Waits end on messages or log lines; ``WAIT`` is the last resort.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from edge_agent.coap_client import AgentClient
from edge_agent.mqtt import Message, MqttClient, settings_for
from lichen import audit, cose, objects, proofs
from lichen.errors import BadMac, Refused, RemoteProtocolError
from lichen.hubmessages import (
    Endpoint,
    Join,
    ProofMessage,
    ReceiptBatch,
    Repaired,
    RepairOrder,
    RepairSource,
    RepairTarget,
    Status,
    make_joined,
)
from lichen.hubwire import (
    FromAgent,
    KnownDevice,
    Name,
    hub_subscriptions,
    open_from_agent,
    parse_topic,
    topic,
)
from lichen.identity import Identity, PublicIdentity, parse_node_id
from lichen.messages import PeerInfo
from tests.agents import AgentProc, free_port, mesh
from tests.mosquitto import Mosquitto, agent_account, hub_account, require_mosquitto

WAIT = 30.0
HUB = Identity(bytes(range(32)))
IMPOSTOR = Identity(bytes(range(7, 39)))
TOKEN = "hublink-test-token-0123456789"
MiB = 1024 * 1024


class MiniHub:
    """The hub's end in miniature: enrolls joins with its token and records every message."""

    def __init__(self, url: str, token: str = TOKEN) -> None:
        self.client = MqttClient(settings_for(url, "test-hub", clean_session=True))
        self.token = token
        self.devices: dict[str, KnownDevice] = {}
        self.got: list[FromAgent] = []
        self.refused: list[tuple[str, Exception]] = []
        self._new = asyncio.Event()

    async def start(self) -> None:
        await self.client.connect()
        for pattern in hub_subscriptions():
            await self.client.subscribe(pattern, self.handle)

    async def handle(self, message: Message) -> None:
        try:
            opened = open_from_agent(
                message.topic, message.payload, self.devices.get, join_token=self.token
            )
        except (RemoteProtocolError, Refused) as exc:
            self.refused.append((message.topic, exc))
            node_id, name = parse_topic(message.topic)
            if isinstance(exc, BadMac) and name is Name.JOIN:
                # Refused under our own token: the agent cannot check the MAC with its own.
                answer = make_joined(
                    HUB,
                    parse_node_id(node_id),
                    self.token,
                    accepted=False,
                    reason="wrong join token",
                    now=time.time(),
                )
                await self.client.publish(topic(node_id, Name.JOINED), answer)
            return
        if isinstance(opened.message, Join):
            self.devices[opened.node_id] = KnownDevice(opened.sender)
            answer = make_joined(HUB, opened.sender.kid, self.token, accepted=True, now=time.time())
            await self.client.publish(topic(opened.node_id, Name.JOINED), answer)
        self.got.append(opened)
        self._new.set()

    async def wait(
        self, name: Name, node_id: str | None = None, where: Callable[[Any], bool] = bool
    ) -> FromAgent:
        """The first message (old or new) on ``name`` from ``node_id`` that ``where`` accepts."""
        deadline = time.monotonic() + WAIT
        while True:
            for got in self.got:
                if got.name is name and node_id in (None, got.node_id) and where(got.message):
                    return got
            self._new.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {name} from {node_id} matched; got {self.got}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)

    async def send(self, node_id: str, name: Name, payload: bytes) -> None:
        await self.client.publish(topic(node_id, name), payload)


@contextmanager
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    require_mosquitto()
    with Mosquitto(tmp_path / "mosquitto") as running:
        yield running


def chained(agents: list[AgentProc]) -> None:
    """Give each agent the agents before it as static peers: started in order, each verifies
    its peers at once (a peer not up yet would be retried only after 15 s)."""
    for i, agent in enumerate(agents):
        peers = ", ".join(f'"127.0.0.1:{a.port}"' for a in agents[:i])
        agent.configure("discovery", "static_peers", f"[{peers}]")


async def start_all(agents: list[AgentProc]) -> None:
    for agent in agents:
        await asyncio.to_thread(agent.start)


async def logged(agent: AgentProc, pattern: str) -> re.Match[str]:
    return await asyncio.to_thread(agent.wait_for, pattern, WAIT)


async def joined(hub: MiniHub, agents: list[AgentProc]) -> None:
    for agent in agents:
        await logged(agent, r"hub: joined hub")
        await hub.wait(Name.STATUS, agent.node_id, lambda s: s.online)


def run(test: Callable[[], Any]) -> None:
    asyncio.run(test())


def test_join_status_will_and_a_wrong_token(tmp_path: Path) -> None:
    with broker(tmp_path) as mosquitto, mesh(tmp_path, 2) as (good, bad):
        result = good.cli("agent", "join", mosquitto.url, TOKEN).stdout.decode()
        assert "will join the hub at" in result and "start the agent" in result
        config = (good.data_dir / "agent.toml").read_text()
        assert f'url = "{mosquitto.url}"' in config and f'token = "{TOKEN}"' in config
        assert "# The community hub." in config  # the comments are kept
        assert (good.data_dir / "agent.toml").stat().st_mode & 0o077 == 0
        bad.cli("agent", "join", mosquitto.url, "not-the-token-0123456789")

        async def test() -> None:
            hub = MiniHub(mosquitto.url)
            await hub.start()
            await start_all([good, bad])

            # Enrollment with the right token: the hub key is pinned, status goes out retained.
            await hub.wait(Name.JOIN, good.node_id)
            await logged(good, r"hub: joined hub")
            pinned = (good.data_dir / "hub.key").read_text().strip()
            assert pinned == HUB.public.public_key.hex()
            online = await hub.wait(Name.STATUS, good.node_id, lambda s: s.online)
            status = online.message
            assert isinstance(status, Status)
            assert (status.host, status.port) == ("127.0.0.1", good.port)
            assert status.capacity == 1024 * MiB and status.shards == 0 and status.version

            # The wrong token: refused, logged, and the agent goes on serving without the hub.
            await logged(bad, r"hub: join refused: wrong join token .*is \[hub\] token right")
            assert bad.node_id not in hub.devices
            assert "storage:" in bad.cli("status").stdout.decode()

            # A late subscriber gets the retained online status.
            seen: asyncio.Queue[Message] = asyncio.Queue()
            observer = MqttClient(settings_for(mosquitto.url, "observer", clean_session=True))
            await observer.connect()
            await observer.subscribe(topic(good.node_id, Name.STATUS), seen.put_nowait)
            retained = await asyncio.wait_for(seen.get(), WAIT)
            assert retained.retain
            assert Status.from_payload(_payload(retained.payload)).online

            # A joined from another hub key is refused: only the pinned hub is believed.
            forged = make_joined(IMPOSTOR, parse_node_id(good.node_id), TOKEN, accepted=True, now=1)
            await hub.send(good.node_id, Name.JOINED, forged)
            await logged(good, r"refused a message on \S+/joined: .*only hub \w+ is trusted")

            # SIGKILL: the broker publishes the pre-signed offline will, retained.
            await asyncio.to_thread(good.kill)
            offline = await hub.wait(Name.STATUS, good.node_id, lambda s: not s.online)
            assert isinstance(offline.message, Status)
            assert offline.message.session == status.session
            newcomer: asyncio.Queue[Message] = asyncio.Queue()
            late = MqttClient(settings_for(mosquitto.url, "newcomer", clean_session=True))
            await late.connect()
            await late.subscribe(topic(good.node_id, Name.STATUS), newcomer.put_nowait)
            will = await asyncio.wait_for(newcomer.get(), WAIT)
            assert will.retain and not Status.from_payload(_payload(will.payload)).online

            # Restarted, it trusts the pinned key, joins again and is online once more.
            await asyncio.to_thread(good.start)
            await logged(good, r"hub: joined hub")
            assert good.count(r"pinned hub key") == 0
            again = await hub.wait(
                Name.STATUS, good.node_id, lambda s: s.online and s.session != status.session
            )
            assert isinstance(again.message, Status)
            session = again.message.session

            # A clean stop: the broker drops the will, so the agent says it is offline itself.
            assert await asyncio.to_thread(good.stop) == 0
            await hub.wait(
                Name.STATUS, good.node_id, lambda s: not s.online and s.session == session
            )
            for client in (observer, late, hub.client):
                await client.disconnect()

        run(test)


def test_the_agent_serves_while_the_broker_is_away_and_joins_when_it_comes(
    tmp_path: Path,
) -> None:
    require_mosquitto()
    mosquitto = Mosquitto(tmp_path / "mosquitto")
    port = free_port()
    with mesh(tmp_path, 1) as (agent,):
        agent.cli("agent", "join", f"mqtt://127.0.0.1:{port}", TOKEN)

        async def test() -> None:
            await asyncio.to_thread(agent.start)  # ready at once: the link connects later
            assert "storage:" in agent.cli("status").stdout.decode()
            started = time.monotonic()
            await asyncio.to_thread(mosquitto.start_on, port)
            try:
                hub = MiniHub(mosquitto.url)
                await hub.start()
                await hub.wait(Name.STATUS, agent.node_id, lambda s: s.online)
                print(f"\njoined {time.monotonic() - started:.2f} s after the broker started")
                await hub.client.disconnect()
            finally:
                await asyncio.to_thread(mosquitto.stop)

        run(test)


def test_join_through_a_broker_with_passwords_and_an_acl(tmp_path: Path) -> None:
    require_mosquitto()
    with mesh(tmp_path, 1) as (agent,):
        accounts = [hub_account(), agent_account(agent.node_id, "p@ss:w/rd")]
        with Mosquitto(tmp_path / "mosquitto", accounts) as mosquitto:
            secret = urllib.parse.quote(accounts[1].password, safe="")
            url = f"mqtt://{agent.node_id}:{secret}@127.0.0.1:{mosquitto.port}"
            agent.cli("agent", "join", url, TOKEN)

            async def test() -> None:
                hub = MiniHub(mosquitto.url_for(accounts[0]))
                await hub.start()
                await asyncio.to_thread(agent.start)
                await logged(agent, r"hub: joined hub")
                await hub.wait(Name.STATUS, agent.node_id, lambda s: s.online)
                await hub.client.disconnect()

            run(test)


def _payload(signed: bytes) -> bytes:
    return cose.parse(signed).payload


def _upload(hub: MiniHub, owner: str) -> tuple[Any, tuple[bytes, ...]]:
    for got in hub.got:
        if got.node_id == owner and isinstance(got.message, ReceiptBatch):
            for upload in got.message.manifests:
                return upload.manifest, upload.headers
    raise AssertionError("no manifest upload")


def _holders(hub: MiniHub, object_cid: bytes) -> dict[int, tuple[str, Any, bytes]]:
    """Shard index -> (holder node id, receipt, signed receipt) from the batches received."""
    found = {}
    for got in hub.got:
        if isinstance(got.message, ReceiptBatch):
            for item in got.message.receipts:
                if item.receipt.object_cid == object_cid:
                    found[item.receipt.index] = (got.node_id, item.receipt, item.signed)
    return found


async def put_and_collect(
    tmp_path: Path, hub: MiniHub, writer: AgentProc, k: int, n: int
) -> tuple[Any, tuple[bytes, ...], dict[int, tuple[str, Any, bytes]]]:
    """``lichen put`` on ``writer``; wait until the hub has every receipt and the manifest."""
    (tmp_path / "in.bin").write_bytes(os.urandom(MiB))
    put = await asyncio.to_thread(
        writer.cli, "put", str(tmp_path / "in.bin"), "--k", str(k), "--n", str(n)
    )
    address = put.stdout.decode().strip()
    got = await hub.wait(
        Name.RECEIPTS, writer.node_id, lambda b: any(m.manifest for m in b.manifests)
    )
    assert isinstance(got.message, ReceiptBatch)
    manifest, headers = _upload(hub, writer.node_id)
    assert manifest.cid_text == address and len(headers) == n
    while len(holders := _holders(hub, manifest.object_cid)) < n:
        await hub.wait(Name.RECEIPTS, where=lambda b: len(_holders(hub, manifest.object_cid)) >= n)
    for index, (_, receipt, _) in holders.items():
        assert receipt.root == manifest.roots[index]
    return manifest, headers, holders


def test_receipts_and_challenges(tmp_path: Path) -> None:
    with broker(tmp_path) as mosquitto, mesh(tmp_path, 3) as agents:
        chained(agents)
        for agent in agents:
            agent.cli("agent", "join", mosquitto.url, TOKEN)

        async def test() -> None:
            hub = MiniHub(mosquitto.url)
            await hub.start()
            await start_all(agents)
            await joined(hub, agents)
            writer = agents[-1]
            for other in agents[:-1]:
                await logged(writer, f"peer {other.node_id} verified")

            # A put: every holder forwards its receipt, the owner its manifest and n headers.
            started = time.monotonic()
            manifest, _, holders = await put_and_collect(tmp_path, hub, writer, 2, 3)
            forwarded = time.monotonic() - started
            assert {holder for holder, _, _ in holders.values()} == {a.node_id for a in agents}
            for agent in agents:
                sent = (agent.data_dir / "hub" / "sent").read_text()
                assert sent.startswith(f"hub {HUB.public.public_key.hex()}\n")
                assert f"r {manifest.object_cid.hex()} " in sent
            assert (
                f"m {manifest.object_cid.hex()}" in (writer.data_dir / "hub" / "sent").read_text()
            )

            # A challenge signed by the hub: answered, and the proof verifies.
            target = agents[0]
            key = PublicIdentity(hub.devices[target.node_id].public.public_key)
            index = next(i for i, (h, _, _) in holders.items() if h == target.node_id)
            placement = audit.Placement(
                manifest.object_cid,
                index,
                manifest.roots[index],
                manifest.block_size,
                manifest.piece_size,
            )
            roots = {
                (manifest.object_cid, index): (
                    manifest.roots[index],
                    placement.leaf_count,
                    manifest.block_size,
                )
            }

            def challenge_for(epoch: int, nonce: bytes) -> proofs.Challenge:
                plan = audit.plan(
                    epoch,
                    {target.node_id: [placement]},
                    {target.node_id: nonce},
                    int(time.time()) + 30,
                    audit.AuditTarget(blocks_per_shard=4),
                )
                return plan[target.node_id]

            first = challenge_for(1, os.urandom(32))
            sent_at = time.monotonic()
            await hub.send(target.node_id, Name.CHALLENGE, audit.sign_challenge(first, HUB))
            proof = await hub.wait(Name.PROOF, target.node_id, lambda p: p.epoch == 1)
            answered = time.monotonic() - sent_at
            assert isinstance(proof.message, ProofMessage)
            result = proofs.verify(first, proof.message.signed, key, roots, time.time())
            assert result.all_passed and not result.late

            # A challenge signed by another key: refused and logged, never answered.
            forged = challenge_for(2, os.urandom(32))
            await hub.send(target.node_id, Name.CHALLENGE, audit.sign_challenge(forged, IMPOSTOR))
            await logged(target, r"refused a message on \S+/challenge: .*not by the pinned hub")
            second = challenge_for(3, os.urandom(32))
            await hub.send(target.node_id, Name.CHALLENGE, audit.sign_challenge(second, HUB))
            await hub.wait(Name.PROOF, target.node_id, lambda p: p.epoch == 3)
            epochs = [g.message.epoch for g in hub.got if isinstance(g.message, ProofMessage)]
            assert epochs == [1, 3]
            print(
                f"\nreceipts forwarded {forwarded:.2f} s after put began; "
                f"challenge answered in {answered * 1000:.0f} ms"
            )
            await hub.client.disconnect()

        run(test)


def test_repair_order(tmp_path: Path) -> None:
    with broker(tmp_path) as mosquitto, mesh(tmp_path, 4) as agents:
        chained(agents)
        for agent in agents:
            agent.cli("agent", "join", mosquitto.url, TOKEN)
        by_id = {a.node_id: a for a in agents}

        async def test() -> None:
            hub = MiniHub(mosquitto.url)
            await hub.start()
            await start_all(agents)
            await joined(hub, agents)
            writer = agents[-1]
            for other in agents[:-1]:
                await logged(writer, f"peer {other.node_id} verified")
            manifest, headers, holders = await put_and_collect(tmp_path, hub, writer, 2, 3)

            # A holder dies. Another live holder is ordered to rebuild its shard on the agent
            # that holds none of this object.
            lost, (victim_id, _, _) = next(
                (i, h) for i, h in sorted(holders.items()) if h[0] != writer.node_id
            )
            victim = by_id[victim_id]
            await asyncio.to_thread(victim.kill)
            live = {i: by_id[h] for i, (h, _, _) in holders.items() if i != lost}
            repairer = next(iter(live.values()))
            spare = next(a for a in agents if a.node_id not in {h for h, _, _ in holders.values()})

            def endpoint(agent: AgentProc) -> Endpoint:
                return Endpoint(parse_node_id(agent.node_id), "127.0.0.1", agent.port)

            now = int(time.time())
            order = RepairOrder(
                repair_id=7,
                repairer=parse_node_id(repairer.node_id),
                signed_manifest=_signed_manifest(hub, writer.node_id),
                targets=(RepairTarget(lost, headers[lost], endpoint(spare)),),
                sources=tuple(RepairSource(i, endpoint(a)) for i, a in sorted(live.items())),
                issued=now,
                deadline=now + 60,
            )
            started = time.monotonic()
            await hub.send(repairer.node_id, Name.REPAIR, order.sign(HUB))
            report = await hub.wait(Name.REPAIRED, repairer.node_id, lambda r: r.repair_id == 7)
            took = time.monotonic() - started
            assert isinstance(report.message, Repaired)
            assert report.message.placed == ((lost, parse_node_id(spare.node_id)),)
            assert report.message.failed == () and report.message.object_cid == manifest.object_cid

            # The new holder has the shard, byte for byte, and told the hub with its receipt.
            got = await hub.wait(
                Name.RECEIPTS,
                spare.node_id,
                lambda b: any(r.receipt.object_cid == manifest.object_cid for r in b.receipts),
            )
            assert isinstance(got.message, ReceiptBatch)
            (receipt,) = [r.receipt for r in got.message.receipts]
            assert (receipt.index, receipt.root) == (lost, manifest.roots[lost])
            client = await AgentClient.create(Identity(os.urandom(32)))
            try:
                key = hub.devices[spare.node_id].public.public_key
                fetched = await client.get_shard(
                    PeerInfo(key, "127.0.0.1", spare.port),
                    manifest.object_cid,
                    lost,
                    manifest.piece_size,
                )
            finally:
                await client.close()
            assert fetched is not None and fetched.signed_header == headers[lost]
            objects.check_shard(manifest, lost, fetched.signed_header, fetched.body)
            await logged(repairer, rf"hub: repair 7: placed \[{lost}\], failed \[\]")
            print(f"\nrepair of a 1 MiB object (k=2, n=3) took {took:.2f} s")
            await hub.client.disconnect()

        run(test)


def _signed_manifest(hub: MiniHub, owner: str) -> bytes:
    for got in hub.got:
        if got.node_id == owner and isinstance(got.message, ReceiptBatch):
            for upload in got.message.manifests:
                return upload.signed
    raise AssertionError("no manifest upload")


pytestmark = pytest.mark.slow
