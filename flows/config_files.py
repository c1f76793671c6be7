"""Config files for the CLI and the flows: TOML, YAML or JSON into a plain dict.

Who calls this: ``NightlyConfig.from_file`` (``loadwise run/serve --config``) and ``loadwise
train-router --config``, once per command; the caller validates the dict with its pydantic model
(strict, so an unknown key is an error there, not here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUFFIXES = (".toml", ".yaml", ".yml", ".json")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The top-level table of a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file.

    Raises ``ValueError`` for another suffix or a file whose top level is not a table.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: config must be one of {', '.join(SUFFIXES)}")
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        data: Any = tomllib.loads(text)
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a table of settings, got {type(data).__name__}")
    return data
