"""The agent daemon: opens the store, serves CoAP, finds and verifies peers, keeps house.

:class:`Agent` owns every long-lived piece (store, CoAP context, discovery, metrics server,
background tasks) and starts and stops them in order. The work itself is elsewhere: decisions
in the core, request handling in :mod:`edge_agent.coap_server`, disk in
:mod:`edge_agent.store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiocoap

from edge_agent import coap_server, datapath, fsutil, keys, metrics, sensors
from edge_agent.coap_client import AgentClient
from edge_agent.config import AgentConfig
from edge_agent.discovery import Advert, Discovery
from edge_agent.logs import NodeLog
from edge_agent.observe import LatestReadings
from edge_agent.outbox import Outbox
from edge_agent.peers import PeerTable
from edge_agent.store import ShardStore
from edge_agent.streams import (
    SEAL_RETRY,
    STREAMS_DIR,
    StreamIndexResource,
    StreamStore,
)
from edge_agent.tasks import BackgroundTasks, wait_event
from lichen import cid, messages, placement
from lichen.errors import ConfigError, LichenError
from lichen.identity import Identity

if TYPE_CHECKING:
    from edge_agent.hublink import HubLink

RUNTIME_FILE = "agent.run"  # "<port>\n": how local commands find a running agent
STORE_DIR = "store"
OUTBOX_DIR = "hub"  # what the hub is owed (edge_agent.outbox)
REFRESH_INTERVAL = 30.0  # seconds between checks that verified peers are still there
STATIC_RETRY = 15.0  # seconds between hellos to static peers not yet verified
SCRUB_BYTES_PER_TICK = 64 * 1024 * 1024  # bounded work per scrub pass, so serving stays quick
STOP_TIMEOUT = 20.0  # seconds a clean stop may take before the process exits regardless

log = logging.getLogger("lichen.agent")


def free_port(bind: str) -> int:
    """A port number free for both TCP and UDP on ``bind`` right now, to bind at once."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((bind, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((bind, port))
                except OSError:
                    continue
                return port
    raise ConfigError(f"no free port on {bind}")


EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
SPARE_PORTS_FROM = 10000  # spare ports are drawn from here up to the ephemeral range
_spared: set[int] = set()  # ports this process has handed out, never handed out twice


def spare_port(bind: str) -> int:
    """A port free for TCP and UDP on ``bind`` now, for a process that starts later.

    :func:`free_port` asks the kernel, which answers from its ephemeral range; in the
    seconds before another process binds that number, any outgoing connection on the
    host (an MQTT client, a browser) may be given it as its local port. A spare port is
    drawn at random from below that range instead, where the kernel never puts
    connections, and is not handed out twice by this process.
    """
    try:
        low = int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default, where the range cannot be read
    for _ in range(200) if low - SPARE_PORTS_FROM >= 1000 else ():
        port = random.randrange(SPARE_PORTS_FROM, low)
        if port in _spared:
            continue
        try:
            check_port_free(bind, port)  # the check the agent makes before it binds
        except ConfigError:
            continue
        _spared.add(port)
        return port
    return free_port(bind)


def check_port_free(bind: str, port: int) -> None:
    """Raise :class:`ConfigError` if another process listens on ``port`` (UDP or TCP).

    aiocoap binds with SO_REUSEPORT, which would let two agents share a port silently; a
    plain bind first turns that into a clear error.
    """
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    for kind, name in ((socket.SOCK_STREAM, "TCP"), (socket.SOCK_DGRAM, "UDP")):
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:
                # Lets the probe bind past our own earlier run's TIME_WAIT connections; on
                # Linux it still fails if any socket listens on the port.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((bind, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(
                        f"{name} port {port} on {bind} is in use (another agent?); "
                        "set [coap] port in the config"
                    ) from None
                raise ConfigError(f"cannot listen on {bind} port {port}: {exc.strerror}") from None


class Agent:
    """One running agent."""

    def __init__(self, data_dir: Path, config: AgentConfig, identity: Identity) -> None:
        self.data_dir = data_dir
        self.config = config
        self.identity = identity
        self.metrics = metrics.AgentMetrics()
        self.peers = PeerTable(config.discovery.max_peers)
        self.port = 0
        self.store: ShardStore | None = None
        self.client: AgentClient | None = None
        self._context: aiocoap.Context | None = None
        self._discovery: Discovery | None = None
        self._metrics_server: metrics.MetricsServer | None = None
        self._verifying: set[str] = set()
        self._seal_wakeup = asyncio.Event()
        self.keyring: keys.Keyring | None = None
        self.streams: StreamStore | None = None
        self.sensors: sensors.SensorRegistry | None = None
        self.outbox: Outbox | None = None
        self.hub_link: HubLink | None = None
        self.log = NodeLog(log, identity.node_id)
        self._tasks = BackgroundTasks(self.log, "agent background")

    @property
    def services(self) -> coap_server.Services:
        """What the CoAP resources use."""
        assert self.store is not None, "agent not started"
        return coap_server.Services(
            identity=self.identity,
            store=self.store,
            peers=self.peers,
            metrics=self.metrics,
            max_body=self.config.coap.max_body,
            now=time.time,
            domain=self.config.agent.domain,
            tags=self.config.agent.tags,
            on_receipt=self.outbox.notify if self.outbox is not None else None,
            keep_owned=self.outbox.keep_owned if self.outbox is not None else None,
        )

    async def start(self) -> None:
        """Open everything and start serving; raise :class:`ConfigError` on a bad setup."""
        cfg = self.config
        bind = cfg.coap.bind
        self.port = cfg.coap.port or free_port(bind)
        check_port_free(bind, self.port)
        self.store = await asyncio.to_thread(
            ShardStore.open, self.data_dir / STORE_DIR, cfg.store.capacity_mib * 1024 * 1024
        )
        self.outbox = await asyncio.to_thread(
            Outbox.open, self.data_dir / OUTBOX_DIR, self.store, self.identity, self.log
        )
        self.keyring = keys.Keyring.load(self.data_dir)
        self.sensors = await asyncio.to_thread(sensors.SensorRegistry.open, self.data_dir)
        self.streams = StreamStore(
            self.data_dir / STREAMS_DIR,
            self.identity,
            segment_readings=cfg.streams.segment_readings,
            segment_seconds=cfg.streams.segment_seconds,
            seal_object=self._seal_object,
            on_sealed=lambda name, count: self.metrics.segments.labels(name).inc(),
            before_trim=self.sensors.checkpoint,
        )
        await asyncio.to_thread(self.streams.open_all)
        # Counters accepted just before a crash are in the logs, not yet in the registry.
        self.sensors.recover(self.streams.marks)
        self.metrics.capacity_bytes.set(self.store.capacity_bytes)
        site = coap_server.build_site(self.services, self.extra_resources())
        self._context = await coap_server.start(site, bind, self.port)
        self.client = AgentClient(self._context, self.identity)
        if cfg.metrics.port >= 0:
            self._metrics_server = metrics.serve(self.metrics, cfg.metrics.bind, cfg.metrics.port)
        if cfg.discovery.mdns:
            self._discovery = Discovery(
                self.identity.public.public_key,
                coap_port=self.port,
                tcp_port=self.port,
                on_advert=self._on_advert,
                on_gone=self.peers.remove,
                on_drop=lambda reason, name: self.metrics.adverts_dropped.labels(reason).inc(),
                interfaces=list(cfg.discovery.interfaces) or None,
                max_adverts=cfg.discovery.max_peers,
            )
            await self._discovery.start()
        self._tasks.spawn(self._static_peers())
        self._tasks.spawn(self._refresh_peers())
        self._tasks.spawn(self._housekeeping())
        self._tasks.spawn(self._sealer())
        if cfg.hub.url:
            await self._start_hub_link()
        await asyncio.to_thread(
            fsutil.atomic_write, self.data_dir / RUNTIME_FILE, f"{self.port}\n".encode()
        )
        self.log.info(
            "agent %s ready: CoAP on %s port %d (UDP and TCP), %d shards held, metrics %s",
            self.identity.node_id,
            bind,
            self.port,
            self.store.shard_count(),
            f"on port {self._metrics_server.port}" if self._metrics_server else "off",
        )

    def extra_resources(self) -> dict[tuple[str, ...], coap_server.LichenResource]:
        """The stream resources, beside the core set."""
        assert self.streams is not None and self.sensors is not None
        return {
            ("s",): LatestReadings(
                self.services,
                self.streams,
                self.config.streams.accept_unauthenticated_local,
                self._seal_wakeup.set,
                self.sensors,
            ),
            ("streams",): StreamIndexResource(self.services, self.streams),
        }

    def self_info(self) -> messages.PeerInfo:
        """This agent as a peer of its own mesh (it holds shards of what it writes too)."""
        assert self.store is not None
        bind = self.config.coap.bind
        host = "127.0.0.1" if bind in ("::", "0.0.0.0") else bind
        return messages.PeerInfo(
            self.identity.public.public_key,
            host,
            self.port,
            self.config.agent.domain,
            self.config.agent.tags,
            self.store.free_bytes(),
        )

    def mesh(self) -> list[messages.PeerInfo]:
        """This agent and every verified peer."""
        return [self.self_info(), *self.peers.infos()]

    async def _seal_object(self, name: str, pack: bytes, seq: int) -> bytes:
        assert self.client is not None and self.keyring is not None
        mesh = self.mesh()
        k, n = placement.default_k_n(len(mesh))
        result = await datapath.put(
            self.client,
            pack,
            owner=self.identity,
            key_for_new_object=self.keyring.new_object_key,
            peers=mesh,
            k=k,
            n=n,
            label=f"{name}/{seq}",
        )
        if self.outbox is not None:
            # This agent owns the segment: the hub gets its manifest and headers from here.
            await asyncio.to_thread(
                self.outbox.keep_owned, result.signed_manifest, result.signed_headers
            )
        return result.manifest.object_cid

    async def _start_hub_link(self) -> None:
        """Connect to the hub in the background ([hub] url and token are set)."""
        from edge_agent import hublink

        assert self.store is not None and self.outbox is not None and self.client is not None
        cfg = self.config
        settings = hublink.LinkSettings(
            url=cfg.hub.url,
            token=cfg.hub.token,
            name=cfg.agent.name or socket.gethostname(),
            coap_bind=cfg.coap.bind,
            coap_port=self.port,
            status_interval=cfg.hub.status_interval,
            share_readings=cfg.streams.share_readings,
        )
        self.hub_link = hublink.HubLink(
            settings,
            identity=self.identity,
            data_dir=self.data_dir,
            store=self.store,
            outbox=self.outbox,
            client=self.client,
            log=self.log,
            streams=self.streams,
        )
        await self.hub_link.start()

    async def _sealer(self) -> None:
        assert self.streams is not None
        while True:
            await wait_event(self._seal_wakeup, 1.0)
            self._seal_wakeup.clear()
            for name in self.streams.due():
                try:
                    await self.streams.seal(name)
                except LichenError as exc:
                    self.log.warning("stream %s not sealed yet (kept on disk): %s", name, exc)
                    await asyncio.sleep(SEAL_RETRY)

    async def stop(self) -> None:
        """Stop serving and close everything, in reverse order of start."""
        if self.hub_link is not None:
            await self.hub_link.stop()
        await self._tasks.cancel_all()
        if self._discovery is not None:
            await self._discovery.stop()
        if self._context is not None:
            await self._context.shutdown()
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self.streams is not None:
            self.streams.close()
        if self.sensors is not None:
            await asyncio.to_thread(self.sensors.checkpoint)
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / RUNTIME_FILE).unlink()
        self.log.info("agent %s stopped", self.identity.node_id)

    async def run_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self.stop()
            except TimeoutError:
                self.log.error("did not stop within %.0f s; exiting anyway", STOP_TIMEOUT)

    # -- peers ---------------------------------------------------------------------------------

    def _on_advert(self, advert: Advert) -> None:
        if advert.node_id in self.peers or advert.node_id in self._verifying:
            return
        self._verifying.add(advert.node_id)
        self._tasks.spawn(self._verify_advert(advert))

    async def _verify_advert(self, advert: Advert) -> None:
        try:
            for host in advert.addresses:
                if await self.verify_peer(host, advert.coap_port, advert.node_id):
                    return
        finally:
            self._verifying.discard(advert.node_id)

    async def verify_peer(self, host: str, port: int, expected: str | None) -> bool:
        """Make host:port prove its key (the advertised one, if ``expected``); add it."""
        assert self.client is not None
        try:
            proven = await self.client.hello(host, port, expected_node_id=expected)
            status = await self.client.get_status(host, port)
        except LichenError as exc:
            reason = type(exc).__name__
            self.metrics.adverts_dropped.labels(reason).inc()
            self.log.warning("peer at %s port %d not verified: %s", host, port, exc)
            return False
        if status.public_key != proven.public_key:
            self.metrics.adverts_dropped.labels("status_key").inc()
            self.log.warning("peer at %s port %d: status from another key", host, port)
            return False
        if proven.node_id == self.identity.node_id:
            return True  # a static peer list may name this agent itself
        info = messages.PeerInfo(
            proven.public_key, host, port, status.domain, status.tags, status.free_bytes
        )
        if self.peers.add(info, time.time()):
            self.metrics.peers.set(len(self.peers))
            self.log.info("peer %s verified at %s port %d", proven.node_id, host, port)
        return True

    async def _static_peers(self) -> None:
        pending = list(self.config.discovery.static_peers)
        delay = 1.0  # agents often boot together: retry soon, then back off to STATIC_RETRY
        while pending:

            async def verified(peer: str) -> bool:
                host, _, port = peer.rpartition(":")
                return await self.verify_peer(host.strip("[]"), int(port), None)

            results = await asyncio.gather(*(verified(peer) for peer in pending))
            pending = [peer for peer, ok in zip(pending, results, strict=True) if not ok]
            if pending:
                await asyncio.sleep(delay)
                delay = min(delay * 2, STATIC_RETRY)

    async def _refresh_peers(self) -> None:
        assert self.client is not None
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            for info in self.peers.infos():
                try:
                    status = await self.client.get_status(info.host, info.port)
                except LichenError:
                    self.peers.failed(info.node_id)
                    continue
                if status.public_key == info.public_key:
                    self.peers.seen(info.node_id, time.time())
                else:
                    self.peers.remove(info.node_id)
            self.metrics.peers.set(len(self.peers))

    # -- housekeeping --------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        assert self.store is not None
        store = self.store
        next_gc = next_scrub = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_gc:
                # The store logs what it removed (shards, manifests and receipts alike).
                await asyncio.to_thread(store.collect_garbage, time.time())
                next_gc = now + self.config.store.gc_interval
            if now >= next_scrub:
                report = await asyncio.to_thread(store.scrub, SCRUB_BYTES_PER_TICK)
                for object_cid, index in report.corrupt:
                    self.metrics.corrupt_shards.inc()
                    self.log.error(
                        "scrubber: shard %d of %s is corrupt; quarantined, no longer served",
                        index,
                        cid.to_text(object_cid),
                    )
                next_scrub = now + (
                    self.config.store.scrub_interval if report.finished_pass else 1.0
                )
            self.metrics.stored_bytes.set(store.used_bytes())
            self.metrics.shards.set(store.shard_count())
            await asyncio.sleep(max(0.5, min(next_gc, next_scrub) - time.monotonic()))
