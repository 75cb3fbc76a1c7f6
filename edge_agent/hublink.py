"""The agent's side of the hub control plane: enrollment, presence, receipts, proofs, repairs.

:class:`HubLink` runs beside the CoAP server when ``[hub] url`` and ``token`` are set; without
them the agent runs on its own. It speaks MQTT through :class:`edge_agent.mqtt.MqttClient`
(client id: the node id; a persistent session so QoS 1 messages wait for us across a network
blip) and opens everything that arrives with :func:`lichen.hubwire.open_from_hub`:

- **join**: until the hub answers, a signed ``join`` (with the token's MAC, never the token)
  goes out, with backoff. An accepted ``joined`` that proves the hub knows the token (its MAC)
  is pinned: the hub key goes to ``hub.key`` in the data directory (atomic), and from then on
  only that key is believed, for later ``joined`` answers too (trust on first use, checked by
  the token; delete ``hub.key`` to move to another hub). A refusal that carries the token's MAC
  ends the link: the agent goes on without the hub. A refusal without it (what a hub can send
  an agent whose token is wrong, and what anyone on an open broker could forge) is logged and
  the join is retried, slowly.
- **status**: the last will is the pre-signed offline status (retained); the online status
  (retained: capacity, use, shards, the CoAP address) goes out on every (re)connect, every
  ``status_interval`` seconds, and soon after a shard is stored. A clean stop publishes the
  offline status itself, as the broker discards the will on a clean disconnect.
- **receipts**: :class:`edge_agent.outbox.Outbox` says what the hub has not acknowledged; it
  goes out in ``receipts`` batches as soon as there is something new, and on every reconnect.
- **challenges**: checked against the pinned hub key and addressed to us
  (:func:`lichen.audit.open_challenge`), answered with :func:`lichen.proofs.answer` over the
  store's blocks, the proof published at QoS 1 before the deadline. Anything else is refused
  and logged.
- **repairs**: each order runs as a task (:mod:`edge_agent.repairer`) and ends with a signed
  ``repaired`` report.
- **streams**: every ``status_interval`` seconds, when some stream took readings since the
  last report the hub acknowledged (and once after each connect, so the hub learns the
  counts), a signed ``streams`` report (QoS 1, not retained) of the most recently written
  streams' counts and newest times, and, only with ``[streams] share_readings``, the numeric
  readings accepted since that report (:func:`stream_report`). A report that is not
  acknowledged is built again next round with the same readings; readings that fall out of
  the stream store's small buffer meanwhile are not sent: the dashboard is best-effort, the
  counts are always right.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import lichen
from edge_agent import fsutil, repairer
from edge_agent.coap_client import AgentClient
from edge_agent.mqtt import Message, MqttClient, MqttError, Will, parse_broker_url, settings_for
from edge_agent.outbox import Outbox
from edge_agent.store import ShardStore
from edge_agent.streams import StreamStore
from edge_agent.tasks import BackgroundTasks, wait_event
from lichen import audit, cbor, cose, hubmessages, proofs
from lichen.errors import (
    BadMac,
    BadSignature,
    ConfigError,
    LichenError,
    Refused,
    RemoteProtocolError,
)
from lichen.hubmessages import (
    ChallengeMessage,
    Joined,
    Status,
    make_join,
    make_receipts,
    receipt_batches,
)
from lichen.hubwire import (
    CheckedRepair,
    Name,
    agent_subscriptions,
    open_from_hub,
    parse_topic,
    topic,
)
from lichen.identity import PUBLIC_KEY_SIZE, Identity, PublicIdentity
from lichen.streamreport import stream_report

HUB_KEY_FILE = "hub.key"
STATUS_INTERVAL = 60.0  # seconds between online statuses when nothing changes
STATUS_MIN_GAP = 1.0  # seconds: a burst of stored shards makes one status, not one each
JOIN_RETRY_MIN = 2.0  # seconds before the first join is sent again; doubles each time
JOIN_RETRY_MAX = 300.0
JOIN_PATIENCE = 3  # unanswered joins before the operator is told the hub is silent
CONNECT_RETRY_MAX = 60.0  # seconds between attempts to reach an unreachable broker
PUBLISH_TIMEOUT = 30.0  # seconds to wait for the broker's PUBACK of a status or report
SEND_RETRY = 5.0  # seconds before trying again after a batch could not be sent
OFFLINE_TIMEOUT = 2.0  # seconds a clean stop waits for its offline status to be acknowledged
# The COSE wrapper of a joined answer, read without its MAC to show a refusal's reason.
_JOINED_OUTER = cbor.Limits(max_size=hubmessages.SMALL_SIZE, max_depth=4, max_items=16)

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


def load_pinned(data_dir: Path) -> PublicIdentity | None:
    """The hub key pinned in ``data_dir/hub.key``, or None; :class:`ConfigError` if damaged."""
    path = data_dir / HUB_KEY_FILE
    try:
        text = fsutil.read_bounded(path, 256).decode("ascii").strip()
        key = bytes.fromhex(text)
        if len(key) != PUBLIC_KEY_SIZE:
            raise ValueError("not 32 bytes")
        return PublicIdentity(key)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, LichenError) as exc:
        raise ConfigError(f"{path} is damaged ({exc}): delete it to join the hub again") from None


def pin(data_dir: Path, hub: PublicIdentity) -> None:
    """Write the hub's public key to ``data_dir/hub.key`` (hex, atomic)."""
    fsutil.atomic_write(data_dir / HUB_KEY_FILE, f"{hub.public_key.hex()}\n".encode())


def advertised_host(bind: str, broker_host: str, broker_port: int) -> str:
    """The address peers reach our CoAP port at: the bind address, or when bound to every
    address, the one this host uses to reach the broker (the LAN address in a LAN mesh)."""
    if bind not in ("0.0.0.0", "::"):
        return bind
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            broker_host, broker_port, type=socket.SOCK_DGRAM
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.connect(address)  # UDP: picks a route, sends nothing
            host = str(probe.getsockname()[0])
    except OSError:
        return ""
    return host.split("%", 1)[0]


@dataclass(frozen=True)
class LinkSettings:
    """What the link needs from the agent's configuration."""

    url: str
    """``mqtt://[user:password@]host[:port]``, from ``[hub] url``."""
    token: str
    name: str
    """Shown on the hub's dashboard."""
    coap_bind: str
    coap_port: int
    status_interval: float = STATUS_INTERVAL
    keepalive: int = 30
    share_readings: bool = False
    """Send reading values in stream reports, not only counts (``[streams] share_readings``)."""


@dataclass
class LinkStats:
    """Counters, for logs and tests."""

    joins_sent: int = 0
    refused: int = 0
    """Messages from the hub's topics that did not open: wrong key, malformed, not for us."""
    statuses: int = 0
    receipts_sent: int = 0
    manifests_sent: int = 0
    challenges_answered: int = 0
    repairs: int = 0
    stream_reports: int = 0


class HubLink:
    """One agent's connection to its hub; :meth:`start` returns at once, :meth:`stop` cleans up."""

    def __init__(
        self,
        settings: LinkSettings,
        *,
        identity: Identity,
        data_dir: Path,
        store: ShardStore,
        outbox: Outbox,
        client: AgentClient,
        log: Logger,
        streams: StreamStore | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.node_id = identity.node_id
        self.data_dir = data_dir
        self.store = store
        self.outbox = outbox
        self.coap = client
        self.log = log
        self.streams = streams
        self._tasks = BackgroundTasks(self.log, "hub link")
        self.stats = LinkStats()
        self.broker = parse_broker_url(settings.url)
        self.hub: PublicIdentity | None = None
        self.host = ""
        self._client: MqttClient | None = None
        self._session = b""
        self._answered = asyncio.Event()
        self._status_wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self._repairing: set[int] = set()
        self._refused = False
        self._announced = False
        self._streams_wake = asyncio.Event()
        self._streams_sent: dict[str, int] = {}  # stream -> count in the last acknowledged report
        self._streams_everything = True  # after a (re)connect: report every stream's count

    @property
    def joined(self) -> bool:
        """True once a hub key is pinned and the hub has not refused us."""
        return self.hub is not None and not self._refused

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the pinned hub key and start connecting in the background.

        Raises :class:`ConfigError` when ``hub.key`` is damaged.
        """
        self.hub = await asyncio.to_thread(load_pinned, self.data_dir)
        if self.hub is not None:
            await asyncio.to_thread(self.outbox.use_hub, self.hub.public_key)
        self.host = await asyncio.to_thread(
            advertised_host, self.settings.coap_bind, self.broker.host, self.broker.port
        )
        loop = asyncio.get_running_loop()

        def wake() -> None:  # called from the CoAP resources' worker threads too
            with contextlib.suppress(RuntimeError):  # the loop is closed: we are stopping
                loop.call_soon_threadsafe(self._something_to_send)

        self.outbox.wake = wake
        self._tasks.spawn(self._connect())

    async def stop(self) -> None:
        """Say we are going offline, disconnect cleanly and end every task."""
        self.outbox.wake = None
        await self._tasks.cancel_all()
        client, self._client = self._client, None
        if client is None:
            return
        if client.connected and self.joined:
            offline = Status.offline(int(time.time()), self._session).sign(self.identity)
            with contextlib.suppress(MqttError, TimeoutError, RuntimeError):
                await client.publish(
                    topic(self.node_id, Name.STATUS), offline, retain=True, timeout=OFFLINE_TIMEOUT
                )
        await client.disconnect()

    def _something_to_send(self) -> None:
        self._send_wake.set()
        self._status_wake.set()

    async def _connect(self) -> None:
        delay = 1.0
        settings = settings_for(
            self.broker, self.node_id, keepalive=self.settings.keepalive, reconnect_max=30
        )
        while True:
            # A session id per connection attempt, shared by its will and its statuses.
            self._session = os.urandom(hubmessages.SESSION_SIZE)
            will = Status.offline(int(time.time()), self._session).sign(self.identity)
            client = MqttClient(settings, will=Will(topic(self.node_id, Name.STATUS), will))
            client.on_connection(self._on_connection)
            self._client = client
            # Routes first: challenges and repair orders the broker kept for our session
            # while we were away are delivered right after the CONNACK.
            for pattern in agent_subscriptions(self.node_id):
                await client.subscribe(pattern, self._on_message)
            try:
                await client.connect()
                break
            except MqttError as exc:
                self.log.warning(
                    "hub: broker %s not reachable (%s); trying again in %.0f s",
                    self.broker.url,
                    exc,
                    delay,
                )
                await client.disconnect()
                await asyncio.sleep(delay)
                delay = min(delay * 2, CONNECT_RETRY_MAX)
        self.log.info("hub: connected to broker %s as %s", self.broker.url, self.node_id)
        self._tasks.spawn(self._join())
        self._tasks.spawn(self._status_loop())
        self._tasks.spawn(self._send_loop())
        if self.streams is not None:
            self._tasks.spawn(self._streams_loop())

    def _on_connection(self, up: bool) -> None:
        if up:
            self._announced = False
            self._streams_everything = True
            self._streams_wake.set()
            self._something_to_send()

    # -- joining -----------------------------------------------------------------------------

    async def _join(self) -> None:
        assert self._client is not None
        delay, unanswered = JOIN_RETRY_MIN, 0
        capacity = self.store.capacity_bytes
        name = self.settings.name[: hubmessages.MAX_NAME]
        while not self._answered.is_set():
            join = make_join(
                self.identity, self.settings.token, name=name, capacity=capacity, now=time.time()
            )
            with contextlib.suppress(MqttError, TimeoutError):
                await self._client.publish(topic(self.node_id, Name.JOIN), join, timeout=delay)
                self.stats.joins_sent += 1
            if await wait_event(self._answered, delay):
                return
            unanswered += 1
            if unanswered == JOIN_PATIENCE:
                self.log.warning(
                    "hub: no answer to %d joins; is the hub running, and is [hub] token right?",
                    unanswered,
                )
            delay = min(delay * 2, JOIN_RETRY_MAX)

    async def _on_joined(self, joined: Joined) -> None:
        self._answered.set()
        if not joined.accepted:
            self._refused = True
            self.log.error(
                "hub: join refused by hub %s: %s; running without the hub (fix [hub] in "
                "agent.toml and restart)",
                joined.hub.node_id,
                joined.reason or "no reason given",
            )
            self._tasks.spawn(self._leave())
            return
        if self.hub is None:
            await asyncio.to_thread(pin, self.data_dir, joined.hub)
            self.log.info("hub: pinned hub key %s in %s", joined.hub_key.hex(), HUB_KEY_FILE)
        self.hub = joined.hub
        await asyncio.to_thread(self.outbox.use_hub, joined.hub_key)
        self.log.info("hub: joined hub %s at %s", joined.hub.node_id, self.broker.url)
        self._streams_wake.set()
        self._something_to_send()

    def _unverified_joined(self, payload: bytes) -> None:
        """A ``joined`` whose token MAC is not ours: show a refusal's reason, trust nothing."""
        try:
            peek = Joined.from_payload(cose.parse(payload, _JOINED_OUTER).payload)
        except RemoteProtocolError:
            return
        if peek.accepted:
            self.log.warning("hub: ignored a 'joined' that does not prove it knows our token")
        else:
            self.log.error(
                "hub: join refused: %s (the refusal does not carry our token's MAC: is [hub] "
                "token right?); asking again later",
                peek.reason or "no reason given",
            )

    async def _leave(self) -> None:
        client = self._client
        await self._tasks.cancel_all(except_current=True)
        if client is not None:
            await client.disconnect()

    # -- incoming ----------------------------------------------------------------------------

    async def _on_message(self, message: Message) -> None:
        try:
            _, name = parse_topic(message.topic)
            opened = await asyncio.to_thread(
                open_from_hub,
                message.topic,
                message.payload,
                me=self.node_id,
                hub=self.hub,
                join_token=self.settings.token,
            )
        except BadMac:
            self.stats.refused += 1
            if name is Name.JOINED:
                self._unverified_joined(message.payload)
            else:
                self.log.warning("hub: refused a message on %s: bad MAC", message.topic)
            return
        except (RemoteProtocolError, Refused) as exc:
            self.stats.refused += 1
            hint = ""
            if isinstance(exc, BadSignature) and self.hub is not None:
                hint = f" (only hub {self.hub.node_id} is trusted: delete {HUB_KEY_FILE} to move)"
            self.log.warning("hub: refused a message on %s: %s%s", message.topic, exc, hint)
            return
        if isinstance(opened, Joined):
            await self._on_joined(opened)
        elif isinstance(opened, ChallengeMessage):
            await self._answer(opened)
        elif isinstance(opened, CheckedRepair):
            self._start_repair(opened)
        else:
            self.log.warning("hub: nothing to do with %s on %s", type(opened).__name__, name)

    async def _answer(self, carried: ChallengeMessage) -> None:
        assert self.hub is not None and self._client is not None
        try:
            challenge = audit.open_challenge(carried.signed, self.hub, holder_kid=self.identity.kid)
        except RemoteProtocolError as exc:
            self.stats.refused += 1
            self.log.warning("hub: refused a challenge: %s", exc)
            return
        started = time.monotonic()
        try:
            signed = await asyncio.to_thread(
                proofs.answer, challenge, self.store.read_block, self.identity
            )
        except RemoteProtocolError as exc:
            self.log.warning(
                "hub: cannot answer the challenge of epoch %d: %s", challenge.epoch, exc
            )
            return
        held = sum(1 for i in challenge.items if self.store.shard_info(i.object_cid, i.shard_index))
        remaining = max(challenge.deadline - time.time(), 1.0)
        try:
            await self._client.publish(topic(self.node_id, Name.PROOF), signed, timeout=remaining)
        except (MqttError, TimeoutError) as exc:
            self.log.warning(
                "hub: proof for epoch %d not acknowledged before the deadline: %s",
                challenge.epoch,
                exc or "timed out",
            )
            return
        self.stats.challenges_answered += 1
        self.log.info(
            "hub: answered the challenge of epoch %d: %d of %d shards held, %d bytes, %.3f s",
            challenge.epoch,
            held,
            len(challenge.items),
            len(signed),
            time.monotonic() - started,
        )

    def _start_repair(self, checked: CheckedRepair) -> None:
        repair_id = checked.order.repair_id
        if repair_id in self._repairing:
            self.log.info("hub: repair %d is already under way", repair_id)
            return
        self._repairing.add(repair_id)
        self._tasks.spawn(self._repair(checked))

    async def _repair(self, checked: CheckedRepair) -> None:
        assert self._client is not None
        order = checked.order
        try:
            report = await repairer.carry_out(
                checked, self.coap, self.identity, self.store, self.log
            )
            self.stats.repairs += 1
            self.log.info(
                "hub: repair %d: placed %s, failed %s%s",
                order.repair_id,
                [i for i, _ in report.placed],
                list(report.failed),
                f" ({report.detail})" if report.detail else "",
            )
            payload = report.sign(self.identity)
            await self._client.publish(
                topic(self.node_id, Name.REPAIRED), payload, timeout=PUBLISH_TIMEOUT
            )
        except (MqttError, TimeoutError) as exc:
            self.log.warning("hub: repair %d report not sent: %s", order.repair_id, exc)
        finally:
            self._repairing.discard(order.repair_id)

    # -- outgoing ----------------------------------------------------------------------------

    def _status(self) -> Status:
        return Status(
            True,
            int(time.time()),
            self._session,
            self.store.capacity_bytes,
            self.store.used_bytes(),
            self.store.shard_count(),
            self.host,
            self.settings.coap_port,
            lichen.__version__[: hubmessages.MAX_VERSION],
        )

    async def _status_loop(self) -> None:
        assert self._client is not None
        last = -STATUS_MIN_GAP
        while True:
            await wait_event(self._status_wake, self.settings.status_interval)
            gap = STATUS_MIN_GAP - (time.monotonic() - last)
            if gap > 0:
                await asyncio.sleep(gap)
            self._status_wake.clear()
            if not self.joined or not self._client.connected:
                continue
            status = self._status()
            try:
                await self._client.publish(
                    topic(self.node_id, Name.STATUS),
                    status.sign(self.identity),
                    retain=True,
                    timeout=PUBLISH_TIMEOUT,
                )
            except (MqttError, TimeoutError) as exc:
                self.log.warning("hub: status not published: %s", exc or "timed out")
                continue
            last = time.monotonic()
            self.stats.statuses += 1
            if not self._announced:
                self._announced = True
                self.log.info(
                    "hub: online at %s port %d: %d shards, %d of %d bytes used",
                    status.host or "?",
                    status.port,
                    status.shards,
                    status.used,
                    status.capacity,
                )

    async def _send_loop(self) -> None:
        while True:
            await wait_event(self._send_wake, self.settings.status_interval)
            self._send_wake.clear()
            if not self.joined:
                continue
            try:
                await self._send_pending()
            except (MqttError, TimeoutError, LichenError, OSError) as exc:
                self.log.warning("hub: receipts not sent yet (%s); trying again", exc)
                await asyncio.sleep(SEND_RETRY)
                self._send_wake.set()

    async def _send_pending(self) -> None:
        assert self._client is not None
        pending = await asyncio.to_thread(self.outbox.pending, time.time())
        if not pending:
            return
        for some, owned in receipt_batches(pending.receipts, pending.manifests):
            payload = await asyncio.to_thread(
                make_receipts,
                self.identity,
                [signed for _, signed in some],
                [upload for _, upload in owned],
                now=time.time(),
            )
            # No timeout: a QoS 1 message waits in paho's queue across reconnects.
            await self._client.publish(topic(self.node_id, Name.RECEIPTS), payload)
            keys = [k for k, _ in some] + [k for k, _ in owned]
            await asyncio.to_thread(self.outbox.mark_sent, keys)
            self.stats.receipts_sent += len(some)
            self.stats.manifests_sent += len(owned)
            self.log.info(
                "hub: sent %d receipts and %d manifests (%d bytes)",
                len(some),
                len(owned),
                len(payload),
            )

    async def _streams_loop(self) -> None:
        assert self._client is not None and self.streams is not None
        while True:
            await wait_event(self._streams_wake, self.settings.status_interval)
            self._streams_wake.clear()
            if not self.joined or not self._client.connected:
                continue
            snapshots = await asyncio.to_thread(self.streams.snapshot)
            built = stream_report(
                snapshots,
                self._streams_sent,
                share=self.settings.share_readings,
                everything=self._streams_everything,
                now=time.time(),
            )
            if built is None:
                continue
            report, sent = built
            try:
                await self._client.publish(
                    topic(self.node_id, Name.STREAMS),
                    report.sign(self.identity),
                    timeout=PUBLISH_TIMEOUT,
                )
            except (MqttError, TimeoutError) as exc:
                # Not remembered as sent: the next round reports the same readings again.
                self.log.warning("hub: stream report not published: %s", exc or "timed out")
                continue
            first = self._streams_everything
            self._streams_everything = False
            self._streams_sent.update(sent)
            self.stats.stream_reports += 1
            readings = sum(len(f.latest) for f in report.streams)
            (self.log.info if first else self.log.debug)(
                "hub: stream report sent: %d streams, %d readings", len(report.streams), readings
            )
