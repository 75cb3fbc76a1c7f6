"""``lichen agent join``'s rewrite of agent.toml: [hub] url and token set, everything else kept."""

from __future__ import annotations

import tomllib

import pytest

from edge_agent import config
from lichen.errors import ConfigError

URL = "mqtt://agent:p%40ss@192.168.1.10:1883"
TOKEN = "abcdefghijklmnop-0123"


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    return [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]


def test_the_default_file_changes_in_two_lines_only() -> None:
    before = config.render_default()
    after = config.with_hub(before, URL, TOKEN)
    assert changed_lines(before, after) == [
        ('url = ""', f'url = "{URL}"'),
        ('token = ""', f'token = "{TOKEN}"'),
    ]
    parsed = config.from_dict(tomllib.loads(after))
    assert (parsed.hub.url, parsed.hub.token) == (URL, TOKEN)
    # Joining again replaces the values in place.
    again = config.with_hub(after, "mqtt://10.0.0.1", TOKEN + "x")
    assert len(again.splitlines()) == len(before.splitlines())
    assert 'url = "mqtt://10.0.0.1"' in again


def test_a_missing_section_or_key_is_added() -> None:
    text = "# mine\n[coap]\nport = 0\n"
    after = config.with_hub(text, URL, TOKEN)
    assert after.startswith(text) and after.endswith(f'[hub]\nurl = "{URL}"\ntoken = "{TOKEN}"\n')
    partial = f'[hub]\n# set by hand\nurl = "{URL}"\n\n[store]\ncapacity_mib = 5\n'
    after = config.with_hub(partial, URL, TOKEN)
    assert f'url = "{URL}"\ntoken = "{TOKEN}"\n\n[store]' in after
    assert "# set by hand" in after


def test_quotes_and_backslashes_survive_and_control_characters_are_refused() -> None:
    token = 'a"b\\c-0123456789abcdef'
    parsed = tomllib.loads(config.with_hub(config.render_default(), URL, token))
    assert parsed["hub"]["token"] == token
    with pytest.raises(ConfigError, match="control"):
        config.with_hub(config.render_default(), URL, "abc\ndef-0123456789abc")


def test_a_result_that_is_not_a_valid_config_is_refused() -> None:
    with pytest.raises(ConfigError):
        config.with_hub("[hub\nurl = 1\n", URL, TOKEN)
    with pytest.raises(ConfigError):  # url without token fails the config's own check
        config.with_hub(config.render_default(), URL, "")
