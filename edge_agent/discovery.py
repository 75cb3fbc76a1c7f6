"""mDNS/DNS-SD discovery: advertise this agent as ``_lichen._udp`` and browse for peers.

An advert is a hint, never a credential (DESIGN.md "Trust and threats"): a peer proves its
identity with the signed-nonce handshake after we connect. So the TXT record is parsed
defensively: every field is bounded and validated, and the advertised ``id`` must be the node
id derived from the advertised ``pk``. Bad adverts are dropped, counted by reason and logged
once per service name; they never raise out of this module.

TXT record (RFC 6763 §6), keys case-insensitive (§6.4), first occurrence wins::

    txtvers=1
    id=<node id, 32 lowercase base32 characters>
    pk=<Ed25519 public key, base64url without padding, 43 characters>
    coap=<CoAP UDP port, 1..65535>
    tcp=<CoAP over TCP port, 1..65535>

The mDNS protocol itself is python-zeroconf's; this module only maps it to and from adverts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from lichen.errors import (
    IntegrityError,
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    UnsupportedVersion,
)
from lichen.identity import PUBLIC_KEY_SIZE, PublicIdentity

SERVICE_TYPE = "_lichen._udp.local."
TXT_VERSION = "1"
INSTANCE_PREFIX = "lichen-"
INSTANCE_ID_CHARS = 12  # 60 bits of the node id: unique on any LAN; zeroconf renames on a clash

MAX_ADVERTS = 1024  # peers tracked at once; a LAN flooded with adverts cannot grow memory
MAX_TXT_BYTES = 1300  # RFC 6763 §6.2: a TXT record should fit in 1300 bytes; ours is ~110
MAX_TXT_ENTRIES = 16  # we define 5 keys; room for a few future ones, not for a flood
MAX_TXT_VALUE = 64  # our longest value is the 43-character key
MAX_ADDRESSES = 16  # addresses kept per advert; a Pi has a handful
NODE_ID_CHARS = 32  # lichen.identity: 20 bytes in unpadded base32
PK_CHARS = 43  # 32 bytes in unpadded base64url
MAX_PORT_DIGITS = 5
RESOLVE_TIMEOUT_MS = 3000  # zeroconf re-queries with backoff within this window

# Reasons an advert is dropped; the keys of Discovery.stats.
DROP_MALFORMED = "malformed"
DROP_UNSUPPORTED = "unsupported"
DROP_FORGED = "forged"
DROP_OVER_LIMIT = "over_limit"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TxtFields:
    """The validated fields of a Lichen TXT record."""

    node_id: str
    public_key: bytes
    coap_port: int
    tcp_port: int


@dataclass(frozen=True)
class Advert:
    """A peer seen on the LAN: a hint of where a node id may be reached, not a proof."""

    node_id: str
    public_key: bytes
    addresses: tuple[str, ...]
    coap_port: int
    tcp_port: int


def _text(fields: Mapping[bytes, bytes | None], key: bytes) -> str:
    value = fields.get(key)
    if value is None:
        raise MalformedMessage(f"TXT {key.decode()!r} missing or without value")
    if len(value) > MAX_TXT_VALUE:
        raise MalformedMessage(f"TXT {key.decode()!r} is {len(value)} bytes, over {MAX_TXT_VALUE}")
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"TXT {key.decode()!r} is not ASCII") from exc
    if not text.isprintable():
        raise MalformedMessage(f"TXT {key.decode()!r} has control characters")
    return text


def _port(fields: Mapping[bytes, bytes | None], key: bytes) -> int:
    text = _text(fields, key)
    # isdecimal() also accepts non-ASCII digits, but _text already refused non-ASCII.
    # One spelling per port (no sign, spaces or leading zeros), as for every other field.
    if (
        not text.isdecimal()
        or len(text) > MAX_PORT_DIGITS
        or str(int(text)) != text
        or not 0 < int(text) < 65536
    ):
        raise MalformedMessage(f"TXT {key.decode()!r} is not a port: {text!r}")
    return int(text)


def parse_txt(properties: Mapping[bytes, bytes | None]) -> TxtFields:
    """Validate a TXT record's key/value pairs (as zeroconf's ``ServiceInfo.properties``).

    Raises :class:`MalformedMessage` for a missing, oversize or invalid field,
    :class:`UnsupportedVersion` for a ``txtvers`` other than 1, and :class:`IntegrityError`
    when ``id`` is not the node id of ``pk``.
    """
    if len(properties) > MAX_TXT_ENTRIES:
        raise MalformedMessage(f"TXT has {len(properties)} entries, over {MAX_TXT_ENTRIES}")
    fields: dict[bytes, bytes | None] = {}
    for key, value in properties.items():
        fields.setdefault(key.lower(), value)
    version = _text(fields, b"txtvers")
    if version != TXT_VERSION:
        raise UnsupportedVersion(f"TXT txtvers={version!r}, we speak {TXT_VERSION}")
    node_id = _text(fields, b"id")
    if len(node_id) != NODE_ID_CHARS:
        raise MalformedMessage(f"TXT 'id' is not a node id: {node_id!r}")
    pk_text = _text(fields, b"pk")
    if len(pk_text) != PK_CHARS:
        raise MalformedMessage(f"TXT 'pk' is not a base64url key: {pk_text!r}")
    try:
        public_key = base64.urlsafe_b64decode(pk_text + "=")
    except (binascii.Error, ValueError) as exc:
        raise MalformedMessage(f"TXT 'pk' is not a base64url key: {pk_text!r}") from exc
    # Refuse non-canonical encodings (stray low bits in the last character) too.
    if len(public_key) != PUBLIC_KEY_SIZE or encode_public_key(public_key) != pk_text:
        raise MalformedMessage(f"TXT 'pk' is not a base64url key: {pk_text!r}")
    derived = PublicIdentity(public_key).node_id
    if node_id != derived:
        raise IntegrityError(f"TXT 'id' {node_id!r} is not the node id of its key ({derived})")
    return TxtFields(node_id, public_key, _port(fields, b"coap"), _port(fields, b"tcp"))


def encode_public_key(public_key: bytes) -> str:
    """The TXT form of a public key: base64url without padding."""
    return base64.urlsafe_b64encode(public_key).rstrip(b"=").decode("ascii")


def build_txt(public_key: bytes, coap_port: int, tcp_port: int) -> dict[bytes, bytes]:
    """The TXT key/value pairs that advertise ``public_key`` at the given ports."""
    identity = PublicIdentity(public_key)
    for port in (coap_port, tcp_port):
        if not 0 < port < 65536:
            raise LocalProtocolError(f"cannot advertise port {port}: bind first, then advertise")
    return {
        b"txtvers": TXT_VERSION.encode(),
        b"id": identity.node_id.encode(),
        b"pk": encode_public_key(public_key).encode(),
        b"coap": str(coap_port).encode(),
        b"tcp": str(tcp_port).encode(),
    }


def _wanted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, version: IPVersion) -> bool:
    if version is IPVersion.V4Only:
        return address.version == 4
    if version is IPVersion.V6Only:
        return address.version == 6
    return True


def local_addresses(interfaces: Sequence[str] | None, version: IPVersion) -> list[str]:
    """The addresses to advertise: ``interfaces`` if given, else this host's own.

    Loopback and link-local addresses are advertised only when nothing else is left, because a
    peer on another host cannot use them (but peers sharing one loopback can).
    """
    if interfaces:
        candidates: Iterable[str] = interfaces
    else:
        candidates = [
            ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            for adapter in ifaddr.get_adapters()
            for ip in adapter.ips
        ]
    parsed = [ipaddress.ip_address(text.split("%", 1)[0]) for text in candidates]
    wanted = list(dict.fromkeys(a for a in parsed if _wanted(a, version)))
    routable = [a for a in wanted if not (a.is_loopback or a.is_link_local)]
    loopback = [a for a in wanted if a.is_loopback]
    return [str(a) for a in (routable or loopback)]


class Discovery:
    """Advertise one node on mDNS and report the other Lichen nodes seen on the LAN.

    ``on_advert`` is called with each new or changed :class:`Advert`, ``on_gone`` with the
    node id of a peer whose advert was withdrawn or expired, and ``on_drop`` (optional) with
    the drop reason (a ``DROP_*`` constant) and service name of each advert refused.
    Callbacks run in the event loop. ``stats`` counts the dropped adverts by reason.

    Our own addresses are read once, at :meth:`start`; after an address change, stop and
    start again.
    """

    def __init__(
        self,
        public_key: bytes,
        *,
        coap_port: int,
        tcp_port: int,
        on_advert: Callable[[Advert], None],
        on_gone: Callable[[str], None],
        on_drop: Callable[[str, str], None] | None = None,
        interfaces: Sequence[str] | None = None,
        ip_version: IPVersion = IPVersion.V4Only,
        max_adverts: int = MAX_ADVERTS,
    ) -> None:
        if max_adverts < 1:
            raise LocalProtocolError("max_adverts must be at least 1")
        self._txt = build_txt(public_key, coap_port, tcp_port)
        self.node_id = PublicIdentity(public_key).node_id
        self._ports = (coap_port, tcp_port)
        self._on_advert = on_advert
        self._on_gone = on_gone
        self._on_drop = on_drop
        self._interfaces = list(interfaces) if interfaces else None
        self._ip_version = ip_version
        self._max_adverts = max_adverts
        self._adverts: dict[str, Advert] = {}  # service name -> last advert delivered
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._logged: set[str] = set()
        self.stats: Counter[str] = Counter()
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None

    @property
    def service_name(self) -> str | None:
        """Our registered instance name (zeroconf may have renamed it on a clash), once started."""
        return self._info.name if self._info is not None else None

    async def start(self) -> None:
        """Open the mDNS sockets, register our service (probing first) and start browsing."""
        if self._azc is not None:
            raise LocalProtocolError("discovery already started")
        addresses = local_addresses(self._interfaces, self._ip_version)
        if not addresses:
            raise LocalProtocolError(f"no {self._ip_version.name} address to advertise")
        short = self.node_id[:INSTANCE_ID_CHARS]
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{INSTANCE_PREFIX}{short}.{SERVICE_TYPE}",
            port=self._ports[0],
            properties=self._txt,
            server=f"{INSTANCE_PREFIX}{short}.local.",
            parsed_addresses=addresses,
        )
        if self._interfaces:
            self._azc = AsyncZeroconf(interfaces=self._interfaces, ip_version=self._ip_version)
        else:
            self._azc = AsyncZeroconf(ip_version=self._ip_version)
        try:
            self._browser = AsyncServiceBrowser(
                self._azc.zeroconf, SERVICE_TYPE, handlers=[self._on_state_change]
            )
            announced = await self._azc.async_register_service(self._info, allow_name_change=True)
            await announced
        except BaseException:
            await self.stop()
            raise
        _log.info("node %s: advertising %s on %s", self.node_id, self._info.name, addresses)

    async def stop(self) -> None:
        """Stop browsing, withdraw our service (goodbye packets) and close the sockets."""
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        tasks = list(self._resolving.values())
        self._resolving.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._azc is not None:
            azc, self._azc = self._azc, None
            # async_close sends the goodbyes for every registered service before closing.
            await azc.async_close()

    def _on_state_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            task = self._resolving.pop(name, None)
            if task is not None:
                task.cancel()
            self._forget(name)
            return
        if name in self._resolving:
            return
        if name not in self._adverts and len(self._adverts) + len(self._resolving) >= (
            self._max_adverts
        ):
            self._drop(name, DROP_OVER_LIMIT, f"already tracking {self._max_adverts} adverts")
            return
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, name))
        self._resolving[name] = task
        task.add_done_callback(lambda done: self._resolved(name, done))

    def _resolved(self, name: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(name) is task:
            del self._resolving[name]
        if not task.cancelled() and task.exception() is not None:
            _log.error(
                "node %s: resolving %r failed", self.node_id, name, exc_info=task.exception()
            )

    async def _resolve(self, zeroconf: Zeroconf, name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS):
            _log.debug("node %s: no answer resolving %s", self.node_id, name)
            return
        try:
            advert = self._advert_from(info)
        except RemoteProtocolError as exc:
            reason = {
                IntegrityError: DROP_FORGED,
                UnsupportedVersion: DROP_UNSUPPORTED,
            }.get(type(exc), DROP_MALFORMED)
            self._drop(name, reason, str(exc))
            self._forget(name)  # a peer whose advert turned bad is no longer a peer we know
            return
        if advert.node_id == self.node_id or self._adverts.get(name) == advert:
            return
        self._adverts[name] = advert
        try:
            self._on_advert(advert)
        except Exception:
            _log.exception("node %s: on_advert failed for %s", self.node_id, advert.node_id)

    def _advert_from(self, info: AsyncServiceInfo) -> Advert:
        if len(info.text) > MAX_TXT_BYTES:
            raise MalformedMessage(f"TXT record is {len(info.text)} bytes, over {MAX_TXT_BYTES}")
        fields = parse_txt(info.properties)
        addresses: list[str] = []
        for text in info.parsed_scoped_addresses(self._ip_version)[:MAX_ADDRESSES]:
            try:
                ipaddress.ip_address(text)
            except ValueError:
                continue
            addresses.append(text)
        if not addresses:
            raise MalformedMessage("advert has no usable address")
        return Advert(
            fields.node_id, fields.public_key, tuple(addresses), fields.coap_port, fields.tcp_port
        )

    def _forget(self, name: str) -> None:
        advert = self._adverts.pop(name, None)
        if advert is None:
            return
        # Another service name may still carry the same node (a rename); it is gone only when
        # no name does.
        if all(other.node_id != advert.node_id for other in self._adverts.values()):
            try:
                self._on_gone(advert.node_id)
            except Exception:
                _log.exception("node %s: on_gone failed for %s", self.node_id, advert.node_id)

    def _drop(self, name: str, reason: str, detail: str) -> None:
        self.stats[reason] += 1
        # Log each bad name once; past the bound, a flood of new names is only counted.
        if name not in self._logged and len(self._logged) < self._max_adverts:
            self._logged.add(name)
            _log.warning("node %s: dropped advert %r (%s): %s", self.node_id, name, reason, detail)
        else:
            _log.debug("node %s: dropped advert %r (%s): %s", self.node_id, name, reason, detail)
        if self._on_drop is not None:
            try:
                self._on_drop(reason, name)
            except Exception:
                _log.exception("node %s: on_drop failed for %r", self.node_id, name)
