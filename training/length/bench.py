"""CPU latency of the length predictor per request, at batch 1 and batch 64, on real prompts.

Who calls this: ``loadwise bench predictor`` and ``python -m training.length.report``; once per
benchmark (tens of seconds). The target is the paper's DistilBERT CPU figure, 12.5 ms per request
at batch 64 (Jain et al., arXiv 2408.13510). Threads are whatever ``torch.get_num_threads()`` is
when called (the report sets it); the result records them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from training.length.config import PredictorConfig
from training.length.data import load_rows, prompts_from_rows

TARGET_MS_AT_64 = 12.5


def real_prompts(warehouse: Path, cfg: PredictorConfig, n: int) -> pd.DataFrame:
    """Up to ``n`` test-split prompts of ``cfg.serving_model`` as an input frame (hash order)."""
    prompts = prompts_from_rows(load_rows(warehouse, cfg), cfg)
    test = prompts[prompts["split"] == "test"]
    return test[["prompt_text", "prompt_tokens", "task"]].head(n).reset_index(drop=True)


def benchmark_latency(
    predictor: Any,
    n: int = 256,
    *,
    frame: pd.DataFrame | None = None,
    warehouse: Path | None = None,
    repeats: int = 1,
) -> dict[str, float]:
    """ms per request at batch 1 (``min(n, 64)`` single-row calls) and batch 64 (all ``n`` rows in
    chunks of 64), after one warm-up call. ``predictor`` has ``predict_frame`` (a trained predictor or
    a ``LengthPredictorCore``); prompts come from ``frame`` or the warehouse's test prompts.

    Returns wall-clock ``batch1_ms_per_request``, ``batch1_p50_ms``, ``batch64_ms_per_request``;
    process CPU time ``batch1_cpu_ms_per_request``, ``batch64_cpu_ms_per_request`` (all threads
    summed: on a machine shared with other jobs the wall figures include waiting for a core, the CPU
    figures do not; with one thread, CPU ms is what a dedicated core takes); ``n``, ``threads``,
    ``max_length``, ``meets_target_at_64`` (1.0/0.0, on the wall figure).
    """
    if frame is None:
        from warehouse.settings import default_warehouse_path

        cfg = getattr(predictor, "config", None) or PredictorConfig()
        frame = real_prompts(warehouse or default_warehouse_path(), cfg, n)
    frame = frame.reset_index(drop=True)
    if frame.empty:
        raise ValueError("no prompts to benchmark")
    predictor.predict_frame(frame.iloc[:8])  # warm-up (allocations, lazy init)

    singles, cpu_singles = [], []
    for i in range(min(len(frame), 64)):
        t0, c0 = time.perf_counter(), time.process_time()
        predictor.predict_frame(frame.iloc[[i]])
        singles.append(time.perf_counter() - t0)
        cpu_singles.append(time.process_time() - c0)

    t_batch, cpu_batch = [], []
    for _ in range(max(1, repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        for start in range(0, len(frame), 64):
            predictor.predict_frame(frame.iloc[start : start + 64])
        t_batch.append(time.perf_counter() - t0)
        cpu_batch.append(time.process_time() - c0)
    core = getattr(predictor, "core", predictor)
    batch64 = 1000.0 * min(t_batch) / len(frame)
    return {
        "batch1_ms_per_request": 1000.0 * float(np.mean(singles)),
        "batch1_p50_ms": 1000.0 * float(np.median(singles)),
        "batch64_ms_per_request": batch64,
        "batch1_cpu_ms_per_request": 1000.0 * float(np.mean(cpu_singles)),
        "batch64_cpu_ms_per_request": 1000.0 * min(cpu_batch) / len(frame),
        "n": float(len(frame)),
        "threads": float(torch.get_num_threads()),
        "max_length": float(core.metadata.get("max_length", 0)),
        "meets_target_at_64": float(batch64 <= TARGET_MS_AT_64),
    }
