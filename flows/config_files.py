"""Config files for the CLI and the flows: TOML, YAML or JSON into a plain dict, and one-line errors.

Who calls this: ``NightlyConfig.from_file`` (``loadwise run/serve --config``) and ``loadwise
train-router --config``, once per command; the caller validates the dict with its pydantic model
(strict, so an unknown key is an error there, not here) and prints ``error_line`` of whatever failed.

Errors are ``ConfigError`` (a ``ValueError``) with one line naming the file and, for a syntax error,
its line and column (``nightly.yaml:3:7: malformed YAML: ...``). A key given twice in a YAML or JSON
table is an error too (both parsers would otherwise keep the last value silently; TOML refuses it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUFFIXES = (".toml", ".yaml", ".yml", ".json")


class ConfigError(ValueError):
    """A config file that cannot be read or parsed; the message is one line naming the file."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The top-level table of a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file.

    Raises ``ConfigError`` for another suffix, an unreadable or non-UTF-8 file, a syntax error
    (with its line and column), a key given twice, or a top level that is not a table.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ConfigError(f"{path}: config must be one of {', '.join(SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if path.suffix == ".toml":
        data = _parse_toml(path, text)
    elif path.suffix == ".json":
        data = _parse_json(path, text)
    else:
        data = _parse_yaml(path, text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table of settings, got {type(data).__name__}")
    return data


def _parse_toml(path: Path, text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends in "(at line L, column C)"
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None


def _parse_json(path: Path, text: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ConfigError(f"{path}: key {key!r} is given twice in one table")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed JSON: nested too deeply") from None


def _parse_yaml(path: Path, text: str) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        """``SafeLoader`` that refuses a key given twice in one mapping."""

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError(
                    f"{path}:{mark.line + 1}:{mark.column + 1}: key {key!r} is given twice in one table"
                )
            seen.add(key)
        return loader.construct_mapping(node)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=Loader) or {}  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = "; ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{where}: malformed YAML: {what}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: malformed YAML: {first}") from None


def validation_message(exc: Any) -> str:
    """A pydantic ``ValidationError`` as one line: ``field.sub: what is wrong; other: ...``."""
    parts = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in error.get("loc", ()))
        msg = str(error.get("msg", "")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or str(exc).splitlines()[0]


def error_line(exc: BaseException, path: str | Path | None = None) -> str:
    """The one line a CLI prints for a config that failed to read or validate (``path``: its file)."""
    from pydantic import ValidationError

    text = validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
    text = " ".join(text.split())  # never more than one line, whatever the message held
    if path is not None and not text.startswith(str(path)):
        text = f"{path}: {text}"
    return text
