"""The embedded MQTT broker: amqtt in the hub's own event loop, for when no broker is configured.

``lichen demo`` and a hub without a ``broker`` URL run this, so nothing has to be installed.
It speaks MQTT 3.1.1 with retained messages, last wills and QoS 1, which is all the control
plane needs. It has no password file or ACL in this setup: anonymous clients are accepted, so
by default it listens on loopback only; every payload is signed anyway (:mod:`lichen.hubwire`),
so a client that can connect can still not speak for a node whose key it lacks. A
deployment that wants broker-side authentication and per-agent ACLs runs Mosquitto and gives
the hub its URL.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from types import TracebackType
from typing import Any

from amqtt.broker import Broker  # type: ignore[import-untyped]  # amqtt ships no types

from lichen.errors import ConfigError

log = logging.getLogger(__name__)
# amqtt's state machines (the transitions package) log every state change at INFO; a hub's log
# is one line per event of ours. Only applied where nobody configured these loggers.
_CHATTY = ("transitions", "amqtt")

_LISTENER = "default"  # amqtt requires a listener of this name


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EmbeddedBroker:
    """An amqtt broker listening on ``host:port`` (port 0: a free port, see :attr:`port`)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 1883, *, allow_anonymous: bool | None = None
    ) -> None:
        """``allow_anonymous`` must be True to listen beyond loopback (the only login mode)."""
        if not 0 <= port < 65536:
            raise ConfigError(f"embedded broker: port {port} out of range")
        if allow_anonymous is None:
            allow_anonymous = _is_loopback(host)
        if not allow_anonymous:
            raise ConfigError(
                f"the embedded broker accepts anonymous clients only; to listen on {host} "
                "say so (allow_anonymous) or configure an external broker with accounts"
            )
        self.host = host
        self._requested_port = port
        self._broker: Broker | None = None
        self._port: int | None = None

    def _config(self) -> dict[str, Any]:
        bind_host = f"[{self.host}]" if ":" in self.host else self.host
        return {
            "listeners": {
                _LISTENER: {"type": "tcp", "bind": f"{bind_host}:{self._requested_port}"}
            },
            # Only the anonymous login: no $SYS publisher, no packet or event logging plugins.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    @property
    def port(self) -> int:
        """The port actually listened on (known once started)."""
        if self._port is None:
            raise RuntimeError("the embedded broker is not started")
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://host:port`` for clients."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    async def start(self) -> None:
        """Start listening; raises OSError (e.g. the port is taken) or amqtt's BrokerError."""
        if self._broker is not None:
            raise RuntimeError("the embedded broker is already started")
        for name in _CHATTY:
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.WARNING)
        broker = Broker(self._config())
        await broker.start()
        self._broker = broker
        self._port = self._bound_port(broker)
        log.info("embedded MQTT broker (amqtt) listening on %s", self.url)

    @staticmethod
    def _bound_port(broker: Broker) -> int:
        # amqtt 0.12 exposes its asyncio servers only through this private table; we need the
        # port the kernel chose when asked for port 0.
        server = broker._servers[_LISTENER].instance
        sockets: tuple[socket.socket, ...] = tuple(getattr(server, "sockets", ()))
        if not sockets:
            raise RuntimeError("the embedded broker has no listening socket")
        return int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Disconnect every client (no wills are sent) and stop listening."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
            log.info("embedded MQTT broker stopped")

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
