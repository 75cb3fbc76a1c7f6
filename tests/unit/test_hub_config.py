"""The hub's configuration: defaults, the commented file, refusal of bad values."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

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


def test_missing_file_names_the_init_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lichen hub init"):
        config.load(tmp_path / "hub.toml")
