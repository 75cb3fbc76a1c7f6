"""Typed configuration from TOML: documented frozen dataclasses, strict validation.

A configuration is a frozen dataclass whose fields are sections, each a frozen dataclass
whose fields carry their documentation (and bounds) in metadata, via :func:`setting`. From
that one description come the validation (:func:`build`, which names any bad key) and the
commented file written at init (:func:`render`). The agent and the hub use it alike.
"""

from __future__ import annotations

import dataclasses
import textwrap
import tomllib
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

from edge_agent import fsutil
from lichen.errors import ConfigError, MalformedMessage

MAX_CONFIG_BYTES = 256 * 1024  # a config file is a page of text; refuse anything absurd
T = TypeVar("T")


def setting(text: str, default: Any, **bounds: Any) -> Any:
    """A field with its documentation and optional ``min``/``max`` bounds."""
    return field(default=default, metadata={"doc": text, **bounds})


def settings(text: str, default_factory: Any) -> Any:
    """A list-valued field (read as a tuple) with its documentation."""
    return field(default_factory=default_factory, metadata={"doc": text})


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


def build(cls: type[T], raw: dict[str, Any]) -> T:
    """Build and validate a ``cls`` from parsed TOML; :class:`ConfigError` names any bad key."""
    sections: dict[str, Any] = {}
    top_hints = typing.get_type_hints(cls)
    unknown = set(raw) - set(top_hints)
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(sorted(unknown))}")
    for name, section_cls in top_hints.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table")
        hints = typing.get_type_hints(section_cls)
        fields = {f.name: f for f in dataclasses.fields(section_cls)}
        unknown = set(table) - set(fields)
        if unknown:
            raise ConfigError(f"unknown key(s) in [{name}]: {', '.join(sorted(unknown))}")
        values = {k: _check_value(name, fields[k], v, hints[k]) for k, v in table.items()}
        sections[name] = section_cls(**values)
    return cls(**sections)


def read_text(path: Path, init_command: str) -> str:
    """The text of the config file at ``path``, bounded; :class:`ConfigError` with the path.

    ``init_command`` is what creates the file, named in the error when it is missing.
    """
    try:
        return fsutil.read_bounded(path, MAX_CONFIG_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (run '{init_command}')") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except MalformedMessage as exc:
        raise ConfigError(f"{path}: not a config file ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def parse(text: str, path: Path) -> dict[str, Any]:
    """The TOML ``text`` of the file at ``path`` parsed; :class:`ConfigError` with the path."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def read(path: Path, init_command: str) -> dict[str, Any]:
    """Parse the TOML file at ``path`` (:func:`read_text`, then :func:`parse`)."""
    return parse(read_text(path, init_command), path)


def toml_value(value: Any) -> str:
    """``value`` (a bool, number, string or tuple of them) as TOML; :class:`ConfigError` for a
    string with control characters, which a one-line TOML string cannot hold as they are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ConfigError(f"{value[:40]!r} holds control characters")
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def render(config: Any, title: str) -> str:
    """A commented TOML file with every setting, its explanation and its value."""
    lines = [
        f"# {title}",
        "# Every setting below shows its default; delete or comment out what you do not change.",
        "",
    ]
    for top in dataclasses.fields(config):
        section = getattr(config, top.name)
        lines.append(f"# {(type(section).__doc__ or '').strip()}")
        lines.append(f"[{top.name}]")
        for f in dataclasses.fields(section):
            lines += textwrap.wrap(
                f.metadata["doc"], 90, initial_indent="# ", subsequent_indent="# "
            )
            lines.append(f"{f.name} = {toml_value(getattr(section, f.name))}")
        lines.append("")
    return "\n".join(lines)


def replace(config: Any, section: str, **changes: Any) -> Any:
    """A copy of ``config`` with fields of one section changed (for init options and tests)."""
    if section not in {f.name for f in dataclasses.fields(config)}:
        raise ConfigError(f"no section [{section}]")
    current = getattr(config, section)
    return dataclasses.replace(config, **{section: dataclasses.replace(current, **changes)})
