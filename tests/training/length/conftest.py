"""Fixtures for the length predictor tests: a tiny warehouse with CASTILLO-shaped rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from .samples import castillo_rows, tiny_config, write_warehouse


@pytest.fixture(scope="session")
def tiny_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_warehouse(tmp_path_factory.mktemp("wh") / "warehouse.duckdb", castillo_rows())


@pytest.fixture(scope="session")
def tiny_trained(tiny_warehouse: Path):
    from training.length.train import train_length_predictor

    return train_length_predictor(tiny_warehouse, tiny_config())
