"""The hub's configuration: one TOML file (``hub.toml``), read here and nowhere else.

Same machinery as the agent's (:mod:`edge_agent.tomlconfig`): documented frozen dataclasses,
strict validation naming any bad key, and a commented file written by ``lichen hub init``.
Defaults run a community hub on a LAN with nothing else installed: an embedded MQTT broker,
SQLite in the data directory, the dashboard on port 8080.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent import tomlconfig
from edge_agent.mqtt import parse_broker_url
from edge_agent.tomlconfig import setting
from lichen.errors import ConfigError

CONFIG_FILE = "hub.toml"


@dataclass(frozen=True)
class HubSection:
    """Who this hub is."""

    name: str = setting("A name for the community, shown on the dashboard.", "Lichen community")


@dataclass(frozen=True)
class MqttSection:
    """The control plane: MQTT 3.1.1 between the hub and the agents."""

    broker_url: str = setting(
        "An MQTT broker to use, e.g. mqtt://user:password@127.0.0.1:1883. Empty: the hub runs "
        "an embedded broker on the address below.",
        "",
    )
    bind: str = setting("Address of the embedded broker.", "0.0.0.0")
    port: int = setting(
        "Port of the embedded broker (1883 is MQTT's). 0: any free port.", 1883, min=0, max=65535
    )


@dataclass(frozen=True)
class HttpSection:
    """The dashboard and JSON API."""

    bind: str = setting("Address for the dashboard and API.", "0.0.0.0")
    port: int = setting("Port for the dashboard and API. 0: any free port.", 8080, min=0, max=65535)
    refresh: float = setting(
        "Seconds between live updates of the figures on an open dashboard page.", 5.0, min=0.5
    )


@dataclass(frozen=True)
class DatabaseSection:
    """Where the hub keeps its records."""

    url: str = setting(
        "A database URL, e.g. postgresql+psycopg://lichen@localhost/lichen. Empty: SQLite "
        "(WAL) in the data directory.",
        "",
    )


@dataclass(frozen=True)
class EpochsSection:
    """Storage proofs: how often and how hard each device is challenged."""

    length: float = setting(
        "Seconds per epoch; every device is challenged once per epoch.", 3600.0, min=1
    )
    answer_within: float = setting(
        "Seconds a device has to answer its challenge; later answers fail.", 60.0, min=0.1
    )
    loss_fraction: float = setting(
        "The silent loss a device must not get away with: a device that lost this fraction of "
        "its shards is caught with the probability below, each epoch.",
        0.1,
        min=0.001,
        max=0.999,
    )
    detect_probability: float = setting(
        "Probability of catching such a device in one epoch.", 0.99, min=0.5, max=0.999999
    )
    blocks_per_shard: int = setting("Blocks asked per sampled shard.", 1, min=1, max=16)


@dataclass(frozen=True)
class RewardsSection:
    """What proven storage earns, and what failing costs."""

    pool: int = setting(
        "Units shared among devices each epoch, by proven byte-time.", 1_000_000, min=0
    )
    penalty_per_failed_item: int = setting(
        "Units deducted per failed proof, once penalised.", 1_000, min=0
    )
    penalty_per_missed_answer: int = setting(
        "Units deducted for no answer at all, once penalised.", 10_000, min=0
    )
    warn_after: int = setting("Failing epochs in a row before a device is warned.", 1, min=1)
    penalise_after: int = setting("Failing epochs in a row before penalties start.", 3, min=2)
    evict_after: int = setting("Failing epochs in a row before a device is evicted.", 6, min=3)


@dataclass(frozen=True)
class RepairSection:
    """Rebuilding data when devices die."""

    after: float = setting(
        "Seconds a device may be away (offline or not answering) before its shards count as "
        "lost and are rebuilt elsewhere. Shorter outages start no repair.",
        3600.0,
        min=1,
    )
    margin: int = setting(
        "Repair an object once its live shards fall to k plus this many.", 1, min=0
    )


@dataclass(frozen=True)
class HubConfig:
    """The whole hub configuration."""

    hub: HubSection = field(default_factory=HubSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    http: HttpSection = field(default_factory=HttpSection)
    database: DatabaseSection = field(default_factory=DatabaseSection)
    epochs: EpochsSection = field(default_factory=EpochsSection)
    rewards: RewardsSection = field(default_factory=RewardsSection)
    repair: RepairSection = field(default_factory=RepairSection)


def from_dict(raw: dict[str, Any]) -> HubConfig:
    """Build and validate a config from parsed TOML; :class:`ConfigError` names any bad key."""
    config = tomlconfig.build(HubConfig, raw)
    for key, address in [("mqtt.bind", config.mqtt.bind), ("http.bind", config.http.bind)]:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"{key} must be an IP address, got {address!r}") from None
    r = config.rewards
    if not r.warn_after < r.penalise_after < r.evict_after:
        raise ConfigError("rewards: need warn_after < penalise_after < evict_after")
    if config.epochs.answer_within >= config.epochs.length:
        raise ConfigError("epochs.answer_within must be shorter than epochs.length")
    if config.mqtt.broker_url:
        # The one parser the hub connects with: a URL it accepts here, it can use.
        parse_broker_url(config.mqtt.broker_url)
    return config


def load(path: Path) -> HubConfig:
    """Read and validate the TOML file at ``path``."""
    raw = tomlconfig.read(path, "lichen hub init")
    try:
        return from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def render_default(config: HubConfig | None = None) -> str:
    """A commented TOML file with every setting, its explanation and its value."""
    return tomlconfig.render(config or HubConfig(), "Lichen hub configuration.")


def replace(config: HubConfig, section: str, **changes: Any) -> HubConfig:
    """A copy of ``config`` with fields of one section changed."""
    changed: HubConfig = tomlconfig.replace(config, section, **changes)
    return changed
