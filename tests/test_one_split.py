"""One split, owned by the warehouse (issue 15): no prompt a held-out replay of the ``main`` workload
sends is in the length predictor's training or validation data.

The ``main`` workload and the predictor's data are built from the same warehouse rows and their
prompt texts intersected: on hand-made prompt sets (always) and on the real CASTILLO data (when the
data folder is there). Before issue 15 the predictor split CASTILLO by its own seeded hash while
``main`` held out CASTILLO's upstream test split: about 70 % of the held-out prompts were training
data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from training.length.config import PredictorConfig
from training.length.data import load_rows, prompts_from_rows
from training.workloads.catalog import (
    ALPACA_EVAL_FILE,
    ALPACA_EVAL_GENERATOR,
    CASTILLO_FILE,
    CASTILLO_MODEL,
    CASTILLO_TASKS,
    Workload,
    WorkloadOptions,
    get_workload,
)


def _prompt_sets(data: Path, per_task: int = 40) -> None:
    """CASTILLO-shaped rows of every ``main`` task for the serving model and a second model (same
    prompts), with an upstream split unrelated to ours, and AlpacaEval-shaped rows."""
    rng = np.random.default_rng(0)
    keys = ("sample_id", "prompt_id", "model", "dataset", "category", "prompt_text", "input_size",
            "output_sizes", "split")  # fmt: skip
    recs: dict[str, list] = {k: [] for k in keys}
    for task in CASTILLO_TASKS:
        dataset, _, category = task.partition("/")
        for i in range(per_task):
            text = f"{task} prompt {i}: please answer in {int(rng.integers(1, 400))} words"
            for model in (CASTILLO_MODEL, "Qwen--Qwen2.5-7B-Instruct"):
                recs["sample_id"].append(f"{task}-{i}-{model}")
                recs["prompt_id"].append(f"{task}-{i}")
                recs["model"].append(model)
                recs["dataset"].append(dataset)
                recs["category"].append(category or "undefined")
                recs["prompt_text"].append(text)
                recs["input_size"].append(int(rng.integers(5, 500)))
                recs["output_sizes"].append([int(x) for x in rng.integers(1, 900, size=4)])
                recs["split"].append(str(rng.choice(["train", "validate", "test"])))
    (data / CASTILLO_FILE).parent.mkdir(parents=True)
    pq.write_table(pa.table(recs), data / CASTILLO_FILE)
    n = 60
    alpaca = pa.table(
        {
            "idx": list(range(n)),
            "generator": [ALPACA_EVAL_GENERATOR] * n,
            "dataset": ["koala"] * n,
            "instruction": [f"instruction {i}" for i in range(n)],
            "instruction_tokens_llama2": [10 + i for i in range(n)],
            "output_tokens_llama2": [50 + 7 * i for i in range(n)],
        }
    )
    (data / ALPACA_EVAL_FILE).parent.mkdir(parents=True)
    pq.write_table(alpaca, data / ALPACA_EVAL_FILE)


def _held_out_and_training_texts(wl: Workload) -> tuple[set[str], set[str]]:
    held = {r.prompt_text for seed in range(6) for r in wl.sample(seed)}
    train = {r.prompt_text for r in wl.train} | {r.prompt_text for r in wl.sample_train(0)}  # type: ignore[misc]
    assert None not in held
    assert None not in train
    return held, train  # type: ignore[return-value]


def _predictor_split(warehouse: Path) -> dict[str, set[str]]:
    prompts = prompts_from_rows(load_rows(warehouse, PredictorConfig()), PredictorConfig())
    return {s: set(prompts.loc[prompts["split"] == s, "prompt_text"]) for s in ("train", "val", "test")}


def _check(wl: Workload, split: dict[str, set[str]]) -> None:
    held, train = _held_out_and_training_texts(wl)
    assert held
    assert split["test"]
    assert not held & (split["train"] | split["val"]), "a held-out replay prompt is predictor training data"
    castillo_held = held & (split["train"] | split["val"] | split["test"])
    assert castillo_held
    assert castillo_held <= split["test"]
    assert not train & split["test"], "a routing training prompt is a predictor test prompt"


def test_no_held_out_replay_prompt_is_in_the_predictors_training_data(tmp_path: Path):
    from warehouse.ingest import ingest

    data = tmp_path / "data"
    _prompt_sets(data)
    warehouse = tmp_path / "w.duckdb"
    ingest([data / CASTILLO_FILE, data / ALPACA_EVAL_FILE], warehouse=warehouse)
    wl = get_workload("main", WorkloadOptions(num_requests=300, data_dir=data))
    assert not wl.synthetic
    _check(wl, _predictor_split(warehouse))
    # the workload replays rows of that warehouse: the ids stored predictions are keyed by
    from warehouse.store import connect_readonly

    con = connect_readonly(warehouse)
    try:
        ids = {r[0] for r in con.execute("SELECT request_id FROM marts.requests").fetchall()}
    finally:
        con.close()
    assert {r.row_id for r in wl.sample(0)} <= ids


def test_no_held_out_replay_prompt_is_in_the_predictors_training_data_real(shared_data: Path):
    wl = get_workload("main", WorkloadOptions(num_requests=2000, data_dir=shared_data))
    assert not wl.synthetic
    castillo_rows = wl.row_sources[0].warehouse  # the warehouse main read its CASTILLO rows from
    _check(wl, _predictor_split(castillo_rows))
