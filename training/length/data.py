"""Training data for the length predictor: warehouse rows -> one row per prompt, split by prompt.

Who calls this: ``train_length_predictor`` once per run (reads the warehouse read-only), and the
tests with hand-built frames (``prompts_from_rows``, ``split_prompts``).

What is used (docs/length_predictor.md says why):
- CASTILLO (``format='castillo'``): one warehouse row per (prompt, serving model, sample); the 10
  samples of a prompt become that prompt's soft label (the share of samples in each bucket) and
  every sample is scored in evaluation. This is the main data.
- AlpacaEval (``format='alpaca-eval'``): one output per (instruction, generator). Used only when the
  serving model IS one of its generators (e.g. ``llama-2-7b-chat-hf``); never mixed into another
  model's labels, since another model family writes different lengths.
- Dolly (``format='dolly'``): human-written responses, not a serving model's outputs: never used
  as labels (its model column is null, so no serving model matches it).

The split is the warehouse's one split of prompts (``warehouse.prompt_split``: a hash of the prompt
text puts every prompt, with all its samples, in exactly one of train / val / test), the same split
that makes the ``main`` workload's held-out replay pool (its ``test`` prompts): the predictor never
trains or early-stops on a prompt a held-out replay sends (``tests/test_one_split.py``). The upstream
CASTILLO split is not used (most of its train split is missing from our copy; see the data README).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from training.length.config import PredictorConfig


def load_rows(warehouse: Path, cfg: PredictorConfig) -> pd.DataFrame:
    """Rows of ``marts.requests`` for the serving model, with prompt text, read-only.

    Matches ``model`` equal to ``cfg.serving_model`` or ending in ``--<short name>``. Raises
    ``ValueError`` when no row matches (names the models that exist).
    """
    from warehouse.store import connect_readonly

    con = connect_readonly(warehouse)
    try:
        short = cfg.serving_model_short
        frame = con.execute(
            """
            SELECT request_id, prompt_text, prompt_tokens, output_tokens, task, model,
                   coalesce(sample_index, 0) AS sample_index
            FROM marts.requests
            WHERE format IN ('castillo', 'alpaca-eval') AND status = 'ok'
              AND prompt_text IS NOT NULL AND length(prompt_text) > 0
              AND output_tokens > 0
              AND (model = ? OR model = ? OR model LIKE ?)
            ORDER BY request_id
            """,
            [cfg.serving_model, short, f"%--{short}"],
        ).df()
        if frame.empty:
            models = [
                r[0] for r in con.execute("SELECT DISTINCT model FROM marts.requests ORDER BY 1").fetchall()
            ]
            raise ValueError(
                f"no rows with prompt text for serving model {cfg.serving_model!r}; models: {models}"
            )
    finally:
        con.close()
    return frame


def split_prompts(texts: pd.Series) -> np.ndarray:
    """``'test'`` / ``'val'`` / ``'train'`` per prompt: the warehouse's split (``warehouse.prompt_split``)."""
    from warehouse.prompt_split import splits_of

    return np.array(splits_of(texts.tolist()), dtype=object)


def prompts_from_rows(rows: pd.DataFrame, cfg: PredictorConfig) -> pd.DataFrame:
    """One row per distinct (prompt text, task): ``prompt_text, task, prompt_tokens, outputs``
    (int64 array of every sample's output tokens, clipped at ``cfg.max_output_tokens`` when set),
    ``split``. Sorted by prompt text so the result does not depend on row order.
    """
    missing = [c for c in ("prompt_text", "prompt_tokens", "output_tokens", "task") if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack columns {missing}")
    rows = rows.assign(task=rows["task"].fillna("").astype(str))
    grouped = (
        rows.sort_values(["prompt_text", "task", *(["sample_index"] if "sample_index" in rows else [])])
        .groupby(["prompt_text", "task"], sort=True)
        .agg(prompt_tokens=("prompt_tokens", "max"), outputs=("output_tokens", list))
        .reset_index()
    )
    cap = cfg.max_output_tokens
    arrays = [
        np.minimum(np.asarray(o, dtype=np.int64), cap) if cap else np.asarray(o, dtype=np.int64)
        for o in grouped["outputs"]
    ]
    grouped["outputs"] = pd.Series(arrays, index=grouped.index, dtype=object)
    grouped["prompt_tokens"] = grouped["prompt_tokens"].astype(np.int64)
    grouped["split"] = split_prompts(grouped["prompt_text"])
    return grouped


def fingerprint(rows: pd.DataFrame) -> str:
    """sha256 over the sorted (request_id, output_tokens) of the rows used: the data's lineage id."""
    ids = rows["request_id"].astype(str) if "request_id" in rows else rows.index.astype(str)
    pairs = sorted(zip(ids.tolist(), rows["output_tokens"].astype(int).tolist(), strict=True))
    h = hashlib.sha256()
    for rid, out in pairs:
        h.update(f"{rid}\t{out}\n".encode())
    return h.hexdigest()
