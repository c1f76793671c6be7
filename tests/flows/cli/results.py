"""What the CLI tests check of a command's result (``typer.testing.CliRunner``)."""

from __future__ import annotations

import json
from typing import Any


def clean_exit(result: Any) -> None:
    """No traceback: the command ended through ``typer.Exit`` / a usage error, or returned."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def one_json(result: Any) -> dict:
    """The command succeeded and its stdout is exactly one JSON document (raises otherwise)."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
