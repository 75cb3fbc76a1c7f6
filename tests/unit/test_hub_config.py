"""The hub's configuration: defaults, the commented file, refusal of bad values."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge_agent.mqtt import BrokerAddress, parse_broker_url
from hub import config
from lichen.errors import ConfigError


def test_rendered_default_parses_back_to_the_defaults() -> None:
    text = config.render_default()
    assert config.from_dict(tomllib.loads(text)) == config.HubConfig()
    assert all(len(line) <= 100 for line in text.splitlines())


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[rewards]\nwarn_after = 3\npenalise_after = 3\n", "warn_after < penalise_after"),
        ("[epochs]\nlength = 10\nanswer_within = 10\n", "shorter than epochs.length"),
        ("[epochs]\nloss_fraction = 1.5\n", "at most 0.999"),
        ("[mqtt]\nbroker_url = 'http://x'\n", "mqtt://"),
        ("[http]\nbind = 'everywhere'\n", "http.bind must be an IP address"),
        ("[repair]\nafter = 0\n", "at least 1"),
        ("[dashboard]\n", "unknown section"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=why):
        config.load(path)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mqtts://broker.example:8883", "only mqtt:// is supported"),  # no TLS client
        ("broker.example:1883", "only mqtt:// is supported"),
        ("mqtt://broker.example/lichen", "expected mqtt://"),  # a path
        ("mqtt://broker.example?x=1", "expected mqtt://"),
        ("mqtt://broker.example#top", "expected mqtt://"),
        ("mqtt://:1883", "expected mqtt://"),  # no host
        ("mqtt://user@:1883", "expected mqtt://"),
        ("mqtt://", "expected mqtt://"),
        ("mqtt://broker.example:99999", "bad broker URL .*out of range"),
        ("mqtt://broker.example:port", "bad broker URL"),
        ("mqtt://broker.example:-1", "bad broker URL"),
        ("mqtt://[::1", "bad broker URL .*IPv6"),
        ("mqtt://broker.example:0", "expected mqtt://"),  # was taken as 1883
        ("mqtt://bro ker:1883", "expected mqtt://"),
    ],
)
def test_bad_broker_urls_are_refused(tmp_path: Path, url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_broker_url(url)
    path = tmp_path / "hub.toml"
    path.write_text(f"[mqtt]\nbroker_url = '{url}'\n")
    with pytest.raises(ConfigError, match=why):
        config.load(path)


def test_a_broker_url_with_credentials_is_accepted(tmp_path: Path) -> None:
    url = "mqtt://hub:p%40ss@broker.example:1884"
    assert parse_broker_url(url) == BrokerAddress("broker.example", 1884, "hub", "p@ss")
    path = tmp_path / "hub.toml"
    path.write_text(f"[mqtt]\nbroker_url = '{url}'\n")
    assert config.load(path).mqtt.broker_url == url


def test_missing_file_names_the_init_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lichen hub init"):
        config.load(tmp_path / "hub.toml")


def test_hub_keys_are_refused_when_exposed_damaged_or_missing(tmp_path: Path) -> None:
    from hub import service

    identity, token = service.create_keys(tmp_path)
    loaded, loaded_token = service.load_keys(tmp_path)
    assert (loaded.node_id, loaded_token) == (identity.node_id, token)
    key = tmp_path / service.HUB_KEY_FILE
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        service.load_keys(tmp_path)
    key.chmod(0o600)
    key.write_bytes(key.read_bytes()[:-1])
    with pytest.raises(ConfigError, match="not a Lichen key file"):
        service.load_keys(tmp_path)
    key.unlink()
    with pytest.raises(ConfigError, match=r"missing .*lichen hub init"):
        service.load_keys(tmp_path)
    service.create_keys(tmp_path)
    (tmp_path / service.TOKEN_FILE).unlink()
    with pytest.raises(ConfigError, match="no join token"):
        service.load_keys(tmp_path)
