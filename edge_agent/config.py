"""The agent's configuration: one TOML file, read here and nowhere else.

Each section is a frozen dataclass; each field carries its documentation in its metadata, so
the commented file ``lichen agent init`` writes and the validation messages come from one
place. Every default works on a LAN with no edits. Unknown keys, wrong types and values out of
range are refused with a :class:`~lichen.errors.ConfigError` that names the key.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent import tomlconfig
from edge_agent.tomlconfig import setting, settings
from lichen.errors import ConfigError
from lichen.hubmessages import MAX_TOKEN_LENGTH, MIN_TOKEN_LENGTH

CONFIG_FILE = "agent.toml"
MAX_CONFIG_BYTES = tomlconfig.MAX_CONFIG_BYTES


@dataclass(frozen=True)
class AgentSection:
    """Who this agent is on the mesh."""

    name: str = setting("A label for people: shown on the hub dashboard. Empty: the host name.", "")
    domain: str = setting(
        "Failure domain: agents sharing a power supply or a house should share it, so that "
        "no two shards of an object land in the same one. Empty: this agent alone.",
        "",
    )
    tags: tuple[str, ...] = settings("Free-form tags owners can require or exclude.", tuple)


@dataclass(frozen=True)
class CoapSection:
    """The CoAP endpoints (RFC 7252 over UDP, RFC 8323 over TCP)."""

    bind: str = setting(
        "Address to listen on. '0.0.0.0': every IPv4 address (the LAN default, as mDNS "
        "advertises IPv4). '::' serves IPv6, where CoAP over TCP is IPv6 only.",
        "0.0.0.0",
    )
    port: int = setting(
        "Port for CoAP over UDP (sensors, small messages) and over TCP (bulk shard transfer "
        "between agents); 5683 is CoAP's. 0: any free port.",
        5683,
        min=0,
        max=65535,
    )
    max_body: int = setting(
        "Largest request body accepted, in bytes; larger ones get 4.13. Bounds one shard.",
        64 * 1024 * 1024,
        min=1024,
        max=1024 * 1024 * 1024,
    )


@dataclass(frozen=True)
class DiscoverySection:
    """Finding peers: mDNS on the LAN, plus static peers where multicast does not work."""

    mdns: bool = setting("Advertise and browse _lichen._udp with mDNS.", True)
    interfaces: tuple[str, ...] = settings(
        "IP addresses whose interfaces mDNS uses. Empty: all of them.", tuple
    )
    static_peers: tuple[str, ...] = settings(
        "Peers to contact without mDNS, as 'host:port' (the peer's CoAP UDP port).", tuple
    )
    max_peers: int = setting(
        "Most peers tracked at once; adverts beyond it are ignored.", 256, min=1
    )


@dataclass(frozen=True)
class StoreSection:
    """The on-disk shard store."""

    capacity_mib: int = setting(
        "Most MiB of shards this agent keeps for others. Offers beyond it are refused.",
        1024,
        min=1,
    )
    scrub_interval: float = setting(
        "Seconds between checks of every stored shard against its Merkle root.", 3600.0, min=1
    )
    gc_interval: float = setting("Seconds between removals of expired shards.", 600.0, min=1)


@dataclass(frozen=True)
class StreamsSection:
    """Sensor readings: how they are batched into sealed segments, and what the hub sees."""

    segment_readings: int = setting("Seal a segment once it holds this many readings.", 1000, min=1)
    segment_seconds: float = setting(
        "Seal a segment once its first reading is this many seconds old.", 300.0, min=0.1
    )
    accept_unauthenticated_local: bool = setting(
        "Accept readings without a sensor key from this host (127.0.0.1, ::1) only.", True
    )
    share_readings: bool = setting(
        "Send the newest readings' values to the hub, for its dashboard. Off: the hub sees "
        "stream names and counts only.",
        False,
    )


@dataclass(frozen=True)
class MetricsSection:
    """Prometheus metrics over HTTP."""

    bind: str = setting(
        "Address for /metrics. Loopback keeps it private to this host.", "127.0.0.1"
    )
    port: int = setting("Port for /metrics; 0: any free port; -1: no metrics server.", 9464, min=-1)


@dataclass(frozen=True)
class HubSection:
    """The community hub. Leave empty to run on the LAN alone."""

    url: str = setting("The hub's address, as given by 'lichen hub token'.", "")
    token: str = setting("The join token from the hub operator.", "")
    status_interval: float = setting(
        "Seconds between status and stream reports to the hub when nothing prompts one sooner.",
        60.0,
        min=1,
    )


@dataclass(frozen=True)
class AgentConfig:
    """The whole agent configuration."""

    agent: AgentSection = field(default_factory=AgentSection)
    coap: CoapSection = field(default_factory=CoapSection)
    discovery: DiscoverySection = field(default_factory=DiscoverySection)
    store: StoreSection = field(default_factory=StoreSection)
    streams: StreamsSection = field(default_factory=StreamsSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    hub: HubSection = field(default_factory=HubSection)


def from_dict(raw: dict[str, Any]) -> AgentConfig:
    """Build and validate a config from parsed TOML; :class:`ConfigError` names any bad key."""
    config = tomlconfig.build(AgentConfig, raw)
    _check_semantics(config)
    return config


def _check_semantics(config: AgentConfig) -> None:
    for key, address in [("coap.bind", config.coap.bind), ("metrics.bind", config.metrics.bind)]:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"{key} must be an IP address, got {address!r}") from None
    for peer in config.discovery.static_peers:
        host, sep, port = peer.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"discovery.static_peers: {peer!r} is not 'host:port'")
    if bool(config.hub.url) != bool(config.hub.token):
        raise ConfigError("hub.url and hub.token go together: set both or neither")
    if config.hub.url:
        from edge_agent.mqtt import parse_broker_url  # paho: only for configs that use it

        try:
            parse_broker_url(config.hub.url)
        except ConfigError as exc:
            raise ConfigError(f"hub.url: {exc}") from None
    if config.hub.token and not MIN_TOKEN_LENGTH <= len(config.hub.token) <= MAX_TOKEN_LENGTH:
        raise ConfigError(
            f"hub.token must be {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters "
            "(as 'lichen hub token' prints it)"
        )


def load(path: Path) -> AgentConfig:
    """Read and validate the TOML file at ``path``."""
    return parse(tomlconfig.read_text(path, "lichen agent init"), path)


def parse(text: str, path: Path) -> AgentConfig:
    """Validate ``text``, the TOML read from ``path`` (named in every error)."""
    try:
        return from_dict(tomlconfig.parse(text, path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def render_default(config: AgentConfig | None = None) -> str:
    """A commented TOML file with every setting, its explanation and its value."""
    return tomlconfig.render(config or AgentConfig(), "Lichen agent configuration.")


_HUB_HEADER = re.compile(r"\s*\[\s*hub\s*\]\s*(#.*)?")
_ANY_HEADER = re.compile(r"\s*\[")
_HUB_KEY = re.compile(r"\s*(url|token)\s*=")


def with_hub(text: str, url: str, token: str) -> str:
    """The agent.toml ``text`` with ``[hub] url`` and ``token`` set and every other line kept
    (comments too); :class:`ConfigError` if the result would not be a valid config."""
    values = {"url": url, "token": token}
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _HUB_HEADER.fullmatch(line.rstrip())), None)
    if start is None:
        lines += ["\n"] if lines and not lines[-1].endswith("\n") else []
        lines += ["\n[hub]\n"] + [f"{k} = {tomlconfig.toml_value(v)}\n" for k, v in values.items()]
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if _ANY_HEADER.match(lines[i])), len(lines)
        )
        seen = set()
        for i in range(start + 1, end):
            match = _HUB_KEY.match(lines[i])
            if match:
                key = match.group(1)
                lines[i] = f"{key} = {tomlconfig.toml_value(values[key])}\n"
                seen.add(key)
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        lines[end:end] = [
            f"{k} = {tomlconfig.toml_value(v)}\n" for k, v in values.items() if k not in seen
        ]
    result = "".join(lines)
    try:
        parsed = from_dict(tomllib.loads(result))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the [hub] section could not be updated: {exc}") from None
    if (parsed.hub.url, parsed.hub.token) != (url, token):
        raise ConfigError("the [hub] section could not be updated safely: edit it by hand")
    return result


def replace(config: AgentConfig, section: str, **changes: Any) -> AgentConfig:
    """A copy of ``config`` with fields of one section changed (for init options and tests)."""
    changed: AgentConfig = tomlconfig.replace(config, section, **changes)
    return changed
