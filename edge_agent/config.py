"""The agent's configuration: one TOML file, read here and nowhere else.

Each section is a frozen dataclass; each field carries its documentation in its metadata, so
the commented file ``lichen agent init`` writes and the validation messages come from one
place. Every default works on a LAN with no edits. Unknown keys, wrong types and values out of
range are refused with a :class:`~lichen.errors.ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import textwrap
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lichen.errors import ConfigError

CONFIG_FILE = "agent.toml"
MAX_CONFIG_BYTES = 256 * 1024  # a config file is a page of text; refuse anything absurd


def _doc(text: str, default: Any, **bounds: Any) -> Any:
    return field(default=default, metadata={"doc": text, **bounds})


def _docs(text: str, default_factory: Any) -> Any:
    return field(default_factory=default_factory, metadata={"doc": text})


@dataclass(frozen=True)
class AgentSection:
    """Who this agent is on the mesh."""

    name: str = _doc("A label for people: shown on the hub dashboard. Empty: the host name.", "")
    domain: str = _doc(
        "Failure domain: agents sharing a power supply or a house should share it, so that "
        "no two shards of an object land in the same one. Empty: this agent alone.",
        "",
    )
    tags: tuple[str, ...] = _docs("Free-form tags owners can require or exclude.", tuple)


@dataclass(frozen=True)
class CoapSection:
    """The CoAP endpoints (RFC 7252 over UDP, RFC 8323 over TCP)."""

    bind: str = _doc(
        "Address to listen on. '0.0.0.0': every IPv4 address (the LAN default, as mDNS "
        "advertises IPv4). '::' serves IPv6, where CoAP over TCP is IPv6 only.",
        "0.0.0.0",
    )
    port: int = _doc(
        "Port for CoAP over UDP (sensors, small messages) and over TCP (bulk shard transfer "
        "between agents); 5683 is CoAP's. 0: any free port.",
        5683,
        min=0,
        max=65535,
    )
    max_body: int = _doc(
        "Largest request body accepted, in bytes; larger ones get 4.13. Bounds one shard.",
        64 * 1024 * 1024,
        min=1024,
        max=1024 * 1024 * 1024,
    )


@dataclass(frozen=True)
class DiscoverySection:
    """Finding peers: mDNS on the LAN, plus static peers where multicast does not work."""

    mdns: bool = _doc("Advertise and browse _lichen._udp with mDNS.", True)
    interfaces: tuple[str, ...] = _docs(
        "IP addresses whose interfaces mDNS uses. Empty: all of them.", tuple
    )
    static_peers: tuple[str, ...] = _docs(
        "Peers to contact without mDNS, as 'host:port' (the peer's CoAP UDP port).", tuple
    )
    max_peers: int = _doc("Most peers tracked at once; adverts beyond it are ignored.", 256, min=1)


@dataclass(frozen=True)
class StoreSection:
    """The on-disk shard store."""

    capacity_mib: int = _doc(
        "Most MiB of shards this agent keeps for others. Offers beyond it are refused.",
        1024,
        min=1,
    )
    scrub_interval: float = _doc(
        "Seconds between checks of every stored shard against its Merkle root.", 3600.0, min=1
    )
    gc_interval: float = _doc("Seconds between removals of expired shards.", 600.0, min=1)


@dataclass(frozen=True)
class StreamsSection:
    """Sensor readings: how they are batched into sealed segments."""

    segment_readings: int = _doc("Seal a segment once it holds this many readings.", 1000, min=1)
    segment_seconds: float = _doc(
        "Seal a segment once its first reading is this many seconds old.", 300.0, min=0.1
    )
    accept_unauthenticated_local: bool = _doc(
        "Accept readings without a sensor key from this host (127.0.0.1, ::1) only.", True
    )


@dataclass(frozen=True)
class MetricsSection:
    """Prometheus metrics over HTTP."""

    bind: str = _doc("Address for /metrics. Loopback keeps it private to this host.", "127.0.0.1")
    port: int = _doc("Port for /metrics; 0: any free port; -1: no metrics server.", 9464, min=-1)


@dataclass(frozen=True)
class HubSection:
    """The community hub. Leave empty to run on the LAN alone."""

    url: str = _doc("The hub's address, as given by 'lichen hub token'.", "")
    token: str = _doc("The join token from the hub operator.", "")


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


def _check_value(section: str, f: dataclasses.Field[Any], value: Any, hint: Any) -> Any:
    key = f"{section}.{f.name}"
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings")
        return tuple(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        value = float(value)
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
    elif hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
    elif hint is str and not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    low, high = f.metadata.get("min"), f.metadata.get("max")
    if low is not None and value < low:
        raise ConfigError(f"{key} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{key} must be at most {high}, got {value}")
    return value


def from_dict(raw: dict[str, Any]) -> AgentConfig:
    """Build and validate a config from parsed TOML; :class:`ConfigError` names any bad key."""
    sections: dict[str, Any] = {}
    top_hints = typing.get_type_hints(AgentConfig)
    unknown = set(raw) - set(top_hints)
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(sorted(unknown))}")
    for name, cls in top_hints.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(table) - set(fields)
        if unknown:
            raise ConfigError(f"unknown key(s) in [{name}]: {', '.join(sorted(unknown))}")
        values = {k: _check_value(name, fields[k], v, hints[k]) for k, v in table.items()}
        sections[name] = cls(**values)
    config = AgentConfig(**sections)
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


def load(path: Path) -> AgentConfig:
    """Read and validate the TOML file at ``path``."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (run 'lichen agent init')") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a config file")
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        return from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def render_default(config: AgentConfig | None = None) -> str:
    """A commented TOML file with every setting, its explanation and its value."""
    config = config or AgentConfig()
    lines = [
        "# Lichen agent configuration.",
        "# Every setting below shows its default; delete or comment out what you do not change.",
        "",
    ]
    for top in dataclasses.fields(AgentConfig):
        section = getattr(config, top.name)
        lines.append(f"# {(type(section).__doc__ or '').strip()}")
        lines.append(f"[{top.name}]")
        for f in dataclasses.fields(section):
            lines += textwrap.wrap(
                f.metadata["doc"], 90, initial_indent="# ", subsequent_indent="# "
            )
            lines.append(f"{f.name} = {_toml_value(getattr(section, f.name))}")
        lines.append("")
    return "\n".join(lines)


def replace(config: AgentConfig, section: str, **changes: Any) -> AgentConfig:
    """A copy of ``config`` with fields of one section changed (for init options and tests)."""
    if section not in {f.name for f in dataclasses.fields(AgentConfig)}:
        raise ConfigError(f"no section [{section}]")
    current = getattr(config, section)
    return dataclasses.replace(config, **{section: dataclasses.replace(current, **changes)})
