"""A cached RL training in a data home that was moved (issue 19): its result names the old home's
folders by absolute path; the router step uses the same folders under the new home."""

from __future__ import annotations

from pathlib import Path

from flows.nightly.router import in_this_home
from training.rl.config import RouterTrainConfig
from training.rl.train import TrainedRouter


def _trained(home: Path, key: str) -> TrainedRouter:
    cfg = RouterTrainConfig(workload="warehouse", warehouse=str(home / "warehouse.duckdb"))
    return TrainedRouter(cfg, home / "nightly" / "router" / key / "policy", {"steps": 10})


def test_a_moved_homes_cached_training_names_the_folders_in_the_new_home(tmp_path: Path):
    old, new = tmp_path / "old", tmp_path / "new"
    (new / "nightly" / "router" / "k1" / "policy").mkdir(parents=True)  # moved: the old folder is gone
    got = in_this_home(_trained(old, "k1"), new / "nightly" / "router" / "k1")
    assert got.policy_dir == new / "nightly" / "router" / "k1" / "policy"
    assert got.config.warehouse == str(new / "warehouse.duckdb")
    assert got.train_stats == {"steps": 10}


def test_a_result_whose_folder_exists_is_unchanged(tmp_path: Path):
    home = tmp_path / "home"
    (home / "nightly" / "router" / "k1" / "policy").mkdir(parents=True)  # same home, or a copied one
    trained = _trained(home, "k1")
    assert in_this_home(trained, tmp_path / "copy" / "nightly" / "router" / "k1") is trained
    # a warehouse outside the home is left where it is
    outside = RouterTrainConfig(workload="warehouse", warehouse=str(tmp_path / "elsewhere.duckdb"))
    gone = TrainedRouter(outside, tmp_path / "old" / "nightly" / "router" / "k1" / "policy")
    moved = in_this_home(gone, home / "nightly" / "router" / "k1")
    assert moved.config.warehouse == str(tmp_path / "elsewhere.duckdb")
