"""Fixtures of the warehouse tests: a warehouse path in a temporary folder, never in the repo."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def wh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A (not yet created) warehouse file under tmp_path; LOADWISE_HOME points there too."""
    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    return tmp_path / "wh" / "warehouse.duckdb"
