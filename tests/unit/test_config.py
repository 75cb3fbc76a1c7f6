"""Agent configuration: defaults, the commented file, and refusal of bad values."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from edge_agent import config
from lichen.errors import ConfigError


def test_rendered_default_parses_back_to_the_defaults() -> None:
    text = config.render_default()
    assert config.from_dict(tomllib.loads(text)) == config.AgentConfig()
    assert "# Most MiB of shards" in text
    assert all(len(line) <= 100 for line in text.splitlines())


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("")
    assert config.load(path) == config.AgentConfig()


def test_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        "[coap]\nport = 0\n[store]\ncapacity_mib = 10\nscrub_interval = 5\n"
        '[discovery]\nstatic_peers = ["10.0.0.2:5683"]\n[agent]\ntags = ["solar"]\n'
    )
    loaded = config.load(path)
    assert loaded.coap.port == 0
    assert loaded.store.capacity_mib == 10
    assert loaded.store.scrub_interval == 5.0
    assert loaded.discovery.static_peers == ("10.0.0.2:5683",)
    assert loaded.agent.tags == ("solar",)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[coap]\nport = 70000\n", "coap.port must be at most 65535"),
        ("[coap]\nport = '5683'\n", "coap.port must be a whole number"),
        ("[coap]\nport = true\n", "coap.port must be a whole number"),
        ("[coap]\nbind = 'localhost'\n", "coap.bind must be an IP address"),
        ("[store]\ncapacity_mib = 0\n", "at least 1"),
        ("[store]\nscrub_interval = 'hourly'\n", "must be a number"),
        ("[discovery]\nmdns = 1\n", "true or false"),
        ("[discovery]\nstatic_peers = 'x'\n", "list of strings"),
        ("[discovery]\nstatic_peers = ['nohost']\n", "not 'host:port'"),
        ("[hub]\nurl = 'mqtt://hub'\n", "go together"),
        ("[hub]\nurl = 'mqtt://hub'\ntoken = 'short'\n", "hub.token must be 16 to 256"),
        (f"[hub]\nurl = 'http://hub/x'\ntoken = '{'t' * 16}'\n", "hub.url: .*mqtt://"),
        (f"[hub]\nurl = 'mqtt://hub'\ntoken = '{'t' * 257}'\n", "hub.token must be 16 to 256"),
        ("[coap]\nudp_prot = 1\n", r"unknown key\(s\) in \[coap\]: udp_prot"),
        ("[cope]\n", r"unknown section\(s\): cope"),
        ("coap = 3\n", r"\[coap\] must be a table"),
        ("[coap\n", "agent.toml"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=why):
        config.load(path)


def test_missing_binary_and_huge_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lichen agent init"):
        config.load(tmp_path / "absent.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="UTF-8"):
        config.load(binary)
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"#" * (config.MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="not a config file"):
        config.load(huge)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer that never comes
    with pytest.raises(ConfigError, match="not a config file"):
        config.load(fifo)


def test_replace_changes_one_section() -> None:
    changed = config.replace(config.AgentConfig(), "coap", port=0)
    assert changed.coap.port == 0 and changed.store == config.StoreSection()
    with pytest.raises(ConfigError):
        config.replace(config.AgentConfig(), "nope")
