"""An MQTT 3.1.1 client for the hub and the agent: paho-mqtt's threaded loop, driven from asyncio.

paho-mqtt runs its network loop in a thread of its own (``loop_start``), reconnects with its
own exponential backoff (``reconnect_delay_set``) and queues QoS 1 messages while it is away.
This adapter hands everything paho reports to the asyncio loop with
``loop.call_soon_threadsafe``: incoming messages, in order, to one dispatcher task that calls
the handler of each matching subscription and acknowledges the message (manual ack) only
after the handler returned, so a QoS 1 message is never acknowledged before it was handled (a
handler that raises is logged and its message acknowledged: handling it again would fail
again). Stopping cuts a handler short and handles nothing more: what was not acknowledged,
the broker delivers again in the next session;
PUBACKs and SUBACKs to the coroutines awaiting them; connects and disconnects to hooks (an
agent republishes its status on every reconnect). Nothing in here reads the payloads:
:mod:`lichen.hubwire` does, in the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import threading
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from lichen.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883  # RFC-less but IANA-registered MQTT port
# Large enough for the biggest control-plane message (a proof, bounded by lichen.proofs at
# 64 MiB); lichen.hubwire applies the per-topic bounds. Messages above it are dropped unread.
DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024 + 4096
# QoS 1 messages paho keeps while the broker is unreachable; beyond it publish() fails.
DEFAULT_MAX_QUEUED = 10_000
STOP_TIMEOUT = 5.0  # seconds a stop waits for paho's network thread before closing its socket


@dataclass(frozen=True)
class Message:
    """One message as the broker delivered it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    """True when the broker sent a retained copy (on subscribing), not a live publish."""


MessageHandler = Callable[[Message], Awaitable[None] | None]
"""Called with each message matching a subscription, in the order they arrived."""
ConnectionHook = Callable[[bool], Awaitable[None] | None]
"""Called with True on every (re)connect and with False on every disconnect."""


class MqttError(ConnectionError):
    """The broker refused us, could not be reached in time, or refused a subscription."""


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is and how to log in to it."""

    host: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        """The address as an ``mqtt://`` URL without the password."""
        user = f"{urllib.parse.quote(self.username, safe='')}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{user}{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://[user[:password]@]host[:port]`` as a :class:`BrokerAddress`; ConfigError."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = DEFAULT_PORT if parts.port is None else parts.port
    except ValueError as exc:
        raise ConfigError(f"bad broker URL {url!r}: {exc}") from exc
    if parts.scheme != "mqtt":
        raise ConfigError(f"broker URL {url!r}: only mqtt:// is supported")
    host = parts.hostname
    if not host or any(c.isspace() for c in host) or not 1 <= port <= 65535:
        raise ConfigError(f"broker URL {url!r}: expected mqtt://[user[:password]@]host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"broker URL {url!r}: expected mqtt://[user[:password]@]host[:port]")
    unquote = urllib.parse.unquote
    return BrokerAddress(
        host,
        port,
        unquote(parts.username) if parts.username is not None else None,
        unquote(parts.password) if parts.password is not None else None,
    )


@dataclass(frozen=True)
class Will:
    """The message the broker publishes for us if we vanish without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class MqttSettings:
    """How one client connects."""

    broker: BrokerAddress
    client_id: str
    """Stable per node: with a persistent session the broker keeps QoS 1 messages for it."""
    keepalive: int = 30
    """Seconds between pings; the broker declares us gone (and sends the will) after 1.5x."""
    clean_session: bool = False
    """False: the broker keeps our subscriptions and queued QoS 1 messages across reconnects."""
    reconnect_min: int = 1
    """First delay before reconnecting, seconds; paho doubles it up to ``reconnect_max``."""
    reconnect_max: int = 30
    connect_timeout: float = 10.0
    """How long :meth:`MqttClient.connect` waits for the first CONNACK."""
    max_payload: int = DEFAULT_MAX_PAYLOAD
    """Incoming messages larger than this are dropped (and counted) without being handled."""
    max_queued: int = DEFAULT_MAX_QUEUED


@dataclass
class MqttStats:
    """Counters for metrics and tests."""

    received: int = 0
    handled: int = 0
    dropped_oversize: int = 0
    handler_errors: int = 0
    connects: int = 0
    disconnects: int = 0


class _Waiters:
    """Futures keyed by paho message id, resolved from paho's thread.

    paho may report a PUBACK or SUBACK before ``publish()``/``subscribe()`` has returned the
    id to us, so a result that arrives first is kept until its future is registered. Our lock
    is never held while calling into paho: paho calls back holding its own locks.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._early: dict[int, Any] = {}

    def register(self, mid: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        with self._lock:
            if mid in self._early:
                future.set_result(self._early.pop(mid))
            else:
                self._pending[mid] = future
        return future

    def resolve(self, mid: int, value: Any) -> None:
        with self._lock:
            future = self._pending.pop(mid, None)
            if future is None:
                self._early[mid] = value
                return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(_settle, future, value)

    def cancel_all(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._early.clear()
        for future in pending.values():
            future.cancel()


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


@dataclass(frozen=True)
class _Incoming:
    message: Message
    mid: int
    generation: int


@dataclass(frozen=True)
class _Connection:
    up: bool
    reason: str
    session_present: bool = False


_STOP = object()


class MqttClient:
    """One MQTT connection: connect, subscribe with handlers, publish, and close.

    An instance connects once; after :meth:`disconnect` or :meth:`abort`, make a new one.
    """

    def __init__(self, settings: MqttSettings, *, will: Will | None = None) -> None:
        self.settings = settings
        self.stats = MqttStats()
        self._will = will
        self._handlers: list[tuple[str, int, MessageHandler]] = []
        self._hooks: list[ConnectionHook] = []
        self._connected = False
        self._closed = False
        self._generation = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[object] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._publishes: _Waiters | None = None
        self._subscribes: _Waiters | None = None
        self._client = self._make_client()

    def _make_client(self) -> paho.Client:
        s = self.settings
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            clean_session=s.clean_session,
            protocol=paho.MQTTv311,
            manual_ack=True,
        )
        if s.broker.username is not None:
            client.username_pw_set(s.broker.username, s.broker.password)
        if self._will is not None:
            w = self._will
            client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        client.reconnect_delay_set(s.reconnect_min, s.reconnect_max)
        client.max_queued_messages_set(s.max_queued)
        # An exception escaping a callback would end paho's network thread; ours log instead.
        client.suppress_exceptions = True
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        return client

    @property
    def connected(self) -> bool:
        """True while a session with the broker is up."""
        return self._connected

    def on_connection(self, hook: ConnectionHook) -> None:
        """Call ``hook(True)`` on every (re)connect and ``hook(False)`` on every loss."""
        self._hooks.append(hook)

    async def connect(self) -> None:
        """Connect and wait for the broker's CONNACK; :class:`MqttError` if refused or late.

        After this, paho reconnects by itself whenever the connection drops.
        """
        if self._loop is not None:
            raise RuntimeError("connect() was already called")
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._publishes = _Waiters(self._loop)
        self._subscribes = _Waiters(self._loop)
        self._first = self._loop.create_future()
        self._dispatcher = asyncio.create_task(self._dispatch(), name=f"mqtt-{self.client_id}")
        broker = self.settings.broker
        self._client.connect_async(broker.host, broker.port, keepalive=self.settings.keepalive)
        self._client.loop_start()
        try:
            await asyncio.wait_for(asyncio.shield(self._first), self.settings.connect_timeout)
        except (TimeoutError, MqttError) as exc:
            await self._stop(send_disconnect=True)
            if isinstance(exc, MqttError):
                raise
            raise MqttError(
                f"no CONNACK from {broker.url} within {self.settings.connect_timeout} s"
            ) from None
        log.info("mqtt %s connected to %s", self.client_id, broker.url)

    @property
    def client_id(self) -> str:
        """The MQTT client id."""
        return self.settings.client_id

    async def subscribe(self, pattern: str, handler: MessageHandler, qos: int = 1) -> int:
        """Subscribe to a topic filter and route its messages to ``handler``; the granted QoS.

        Raises :class:`MqttError` when the broker refuses the subscription (SUBACK 0x80, for
        example an ACL that does not allow it). Subscriptions are renewed on every reconnect.

        Called before :meth:`connect`, it only records the route and returns ``qos``: the
        subscription is made with the connection, and messages the broker kept for a
        persistent session (QoS 1, sent while we were away) arrive with a handler in place.
        A refusal is then only logged.
        """
        self._handlers.append((pattern, qos, handler))
        if self._loop is None:
            return qos
        granted = await self._subscribe(pattern, qos)
        if granted is None:
            self._handlers.remove((pattern, qos, handler))
            raise MqttError(f"the broker refused the subscription to {pattern!r}")
        return granted

    async def _subscribe(self, pattern: str, qos: int) -> int | None:
        assert self._subscribes is not None
        rc, mid = self._client.subscribe(pattern, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"cannot subscribe to {pattern!r} now: {paho.error_string(rc)}")
        codes: list[ReasonCode] = await self._subscribes.register(mid)
        if not codes or codes[0].is_failure:
            return None
        return int(codes[0].value)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Publish and wait until the broker acknowledged it (QoS 1) or it was sent (QoS 0).

        A QoS 1 message published while disconnected waits in paho's queue and goes out on
        reconnect; ``timeout`` bounds the wait (the message stays queued). Raises
        :class:`MqttError` when paho cannot take it (QoS 0 while disconnected, queue full).
        """
        if self._publishes is None or self._closed:
            raise RuntimeError("publish() outside connect() ... disconnect()")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        queued = info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not queued:
            raise MqttError(f"cannot publish to {topic!r}: {paho.error_string(info.rc)}")
        done = self._publishes.register(info.mid)
        await asyncio.wait_for(done, timeout)

    async def disconnect(self) -> None:
        """Close cleanly: send DISCONNECT, so the broker discards our will."""
        await self._stop(send_disconnect=True)

    async def abort(self) -> None:
        """Drop the connection without a DISCONNECT, as a crash would: the broker sends the will."""
        # paho has no public switch for this; without it the loop would reconnect at once.
        self._client._reconnect_on_failure = False
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        await self._stop(send_disconnect=False)

    async def _stop(self, *, send_disconnect: bool) -> None:
        self._closed = True
        if send_disconnect:
            self._client.disconnect()
        await self._stop_network_thread()
        self._connected = False
        if self._publishes is not None and self._subscribes is not None:
            self._publishes.cancel_all()
            self._subscribes.cancel_all()
        if self._queue is not None and self._dispatcher is not None:
            if asyncio.current_task() is self._dispatcher:
                # A handler closing its own client: the dispatcher ends after that handler.
                self._queue.put_nowait(_STOP)
            else:
                # No acknowledgement can go out any more: a handler still at work (say, one
                # waiting for its database) is cut short, and messages not yet handled are
                # left, all unacknowledged, for the broker to deliver in the next session.
                self._dispatcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._dispatcher

    async def _stop_network_thread(self) -> None:
        # paho's loop_stop joins its thread with no time limit, and the thread ends only once
        # the queued messages are sent (a reconnect racing the DISCONNECT keeps it going). Join
        # from a daemon thread of our own, so a stuck join can hold neither this stop nor the
        # interpreter's exit; past STOP_TIMEOUT, close the socket under it and go on.
        loop = asyncio.get_running_loop()
        stopped = loop.create_future()

        def joined() -> None:
            if not stopped.done():
                stopped.set_result(None)

        def join() -> None:
            self._client.loop_stop()
            with contextlib.suppress(RuntimeError):  # the event loop may be gone by now
                loop.call_soon_threadsafe(joined)

        threading.Thread(target=join, name="mqtt-stop", daemon=True).start()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await stopped
        except TimeoutError:
            log.warning(
                "mqtt %s: network thread still busy after %.0f s", self.client_id, STOP_TIMEOUT
            )
            sock = self._client.socket()
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    # --- paho's thread ------------------------------------------------------------------

    def _post(self, item: object) -> None:
        if self._loop is None or self._queue is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are shutting down
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("mqtt %s: broker refused the connection: %s", self.client_id, reason)
            if self._generation == 0:
                # The first attempt: connect() reports it, so stop paho retrying (at once,
                # rather than after its next backoff sleep).
                client.disconnect()
                if self._loop is not None and self._first is not None:
                    error = MqttError(f"broker refused {self.client_id}: {reason}")
                    with contextlib.suppress(RuntimeError):
                        self._loop.call_soon_threadsafe(_fail_once, self._first, error)
            return
        self._connected = True
        self._generation += 1
        self._post(_Connection(True, str(reason), bool(flags.session_present)))

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was = self._connected
        self._connected = False
        if was:
            self._post(_Connection(False, str(reason)))

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic  # paho decodes it as UTF-8 here
        except UnicodeDecodeError:
            log.warning("mqtt %s: dropped a message with a non-UTF-8 topic", self.client_id)
            if message.qos > 0:
                client.ack(message.mid, message.qos)
            return
        delivered = Message(topic, bytes(message.payload), message.qos, bool(message.retain))
        self._post(_Incoming(delivered, message.mid, self._generation))

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        if self._publishes is not None:
            self._publishes.resolve(mid, None)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        if self._subscribes is not None:
            self._subscribes.resolve(mid, codes)

    # --- the asyncio loop ---------------------------------------------------------------

    async def _dispatch(self) -> None:
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, _Connection):
                await self._connection_changed(item)
            elif isinstance(item, _Incoming):
                await self._deliver(item)

    async def _connection_changed(self, event: _Connection) -> None:
        if event.up:
            self.stats.connects += 1
            if self._first is not None and not self._first.done():
                self._first.set_result(None)
            else:
                log.info("mqtt %s reconnected", self.client_id)
            if not event.session_present:
                self._resubscribe()
        else:
            self.stats.disconnects += 1
            level = logging.INFO if self._closed else logging.WARNING
            log.log(level, "mqtt %s disconnected: %s", self.client_id, event.reason)
        for hook in list(self._hooks):
            await self._call(hook, event.up, what="connection hook")

    def _resubscribe(self) -> None:
        # A new session (clean, or one the broker forgot) has no subscriptions. The SUBACKs are
        # not awaited: they come back through this very task.
        assert self._subscribes is not None
        for pattern, qos, _ in list(self._handlers):
            rc, mid = self._client.subscribe(pattern, qos)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                self._subscribes.register(mid)

    async def _deliver(self, incoming: _Incoming) -> None:
        self.stats.received += 1
        message = incoming.message
        if len(message.payload) > self.settings.max_payload:
            self.stats.dropped_oversize += 1
            log.warning(
                "mqtt %s: dropped %d-byte message on %s (limit %d)",
                self.client_id,
                len(message.payload),
                message.topic,
                self.settings.max_payload,
            )
        else:
            for pattern, _, handler in list(self._handlers):
                if paho.topic_matches_sub(pattern, message.topic):
                    await self._call(handler, message, what=message.topic)
            self.stats.handled += 1
        # Not reached when a stop cancelled the handler: the message comes again. Acknowledge
        # only within the connection that delivered it: after a reconnect the broker resends
        # unacknowledged messages and the old id may name another one.
        if message.qos > 0 and incoming.generation == self._generation:
            self._client.ack(incoming.mid, message.qos)

    async def _call(self, callback: Callable[..., Any], *args: Any, what: str) -> None:
        try:
            result = callback(*args)
            if result is not None:
                await result
        except Exception:
            self.stats.handler_errors += 1
            log.exception("mqtt %s: handler for %s failed", self.client_id, what)


def _fail_once(future: asyncio.Future[None], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)


def settings_for(broker: BrokerAddress | str, client_id: str, **overrides: Any) -> MqttSettings:
    """Settings for ``client_id`` at ``broker`` (an address or an ``mqtt://`` URL)."""
    address = parse_broker_url(broker) if isinstance(broker, str) else broker
    return dataclasses.replace(MqttSettings(address, client_id), **overrides)
