"""Tiny CASTILLO-shaped rows, a tiny warehouse and a tiny config for the length predictor tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.length.config import PredictorConfig

TASKS = ("Apps", "ShareGPT", "DollyDataset/open_qa")
MODEL = "meta-llama--Llama-3.1-8B-Instruct"


def castillo_rows(n_prompts: int = 36, samples: int = 4, seed: int = 0) -> pd.DataFrame:
    """CASTILLO-shaped rows: ``n_prompts`` prompts x ``samples`` samples; lengths depend on task and
    a word in the prompt, so a model can learn something."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        task = TASKS[p % len(TASKS)]
        long_ = p % 2 == 0
        text = f"Please {'write a long essay' if long_ else 'answer briefly'} about topic {p} for {task}."
        base = {"Apps": 600, "ShareGPT": 1500, "DollyDataset/open_qa": 120}[task] * (3 if long_ else 1)
        for s in range(samples):
            rows.append(
                {
                    "request_id": f"castillo:{p}:{s}",
                    "prompt_text": text,
                    "prompt_tokens": 10 + p,
                    "output_tokens": int(max(1, base * rng.uniform(0.6, 1.4))),
                    "task": task,
                    "model": MODEL,
                    "sample_index": s,
                    "format": "castillo",
                    "status": "ok",
                }
            )
    return pd.DataFrame(rows)


def write_warehouse(path: Path, rows: pd.DataFrame) -> Path:
    import duckdb

    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE SCHEMA marts")
        con.register("rows_df", rows)
        con.execute("CREATE TABLE marts.requests AS SELECT * FROM rows_df")
        # a Dolly row (no serving model) and another model's row: both must be ignored
        con.execute(
            "INSERT INTO marts.requests (request_id, prompt_text, prompt_tokens, output_tokens, task, model, "
            "sample_index, format, status) VALUES "
            "('dolly:1', 'human prompt', 5, 99, 'open_qa', NULL, 0, 'dolly', 'ok'), "
            "('castillo:x:0', 'other model prompt', 5, 99, 'Apps', 'Qwen--Qwen2.5-7B-Instruct', 0, "
            "'castillo', 'ok')"
        )
    finally:
        con.close()
    return path


def tiny_config(**kw: object) -> PredictorConfig:
    base: dict[str, object] = {
        "encoder": "tiny",
        "max_length": 32,
        "epochs": 15,
        "patience": 5,
        "hidden": 16,
        "tabular_max_iter": 10,
        "bf16": False,
    }
    base.update(kw)
    return PredictorConfig(**base)  # type: ignore[arg-type]
