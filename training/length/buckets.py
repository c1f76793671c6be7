"""Output-length buckets: edges, assignment, soft labels, representative lengths.

Who calls this: the length predictor's training and report code, once per run. Pure numpy.

Convention (tested): bucket ``i`` holds lengths ``n`` with ``edges[i-1] < n <= edges[i]``: upper
edges are INCLUSIVE, lower edges exclusive; the last bucket is open (``n > edges[-1]``). So with the
paper's time-based edges (250, 1000, 4000) a 250-token output is in bucket 0 and 251 in bucket 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.length.config import LOG2_EDGES, TIME_EDGES, PredictorConfig


def assign(lengths: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bucket index per length (int64), upper edges inclusive."""
    return np.searchsorted(
        np.asarray(edges, dtype=np.float64), np.asarray(lengths, dtype=np.float64), side="left"
    )


def equal_edges(lengths: np.ndarray, n_buckets: int) -> list[float]:
    """``n_buckets`` equal-width buckets over [0, p99 of ``lengths``] (the top one open-ended)."""
    top = float(np.quantile(np.asarray(lengths, dtype=np.float64), 0.99))
    width = max(1.0, round(top / n_buckets))
    return [width * (i + 1) for i in range(n_buckets - 1)]


def quantile_edges(lengths: np.ndarray, n_buckets: int) -> list[float]:
    """Edges at the 1/n, 2/n, ... quantiles (rounded to whole tokens, made strictly increasing)."""
    qs = np.quantile(np.asarray(lengths, dtype=np.float64), [i / n_buckets for i in range(1, n_buckets)])
    edges: list[float] = []
    for q in np.round(qs):
        edges.append(float(q) if not edges or q > edges[-1] else edges[-1] + 1.0)
    return edges


def edges_for(cfg: PredictorConfig, train_lengths: np.ndarray) -> list[float]:
    """Global edges for ``time`` / ``equal`` / ``log2`` (``quantile`` is per task: ``task_edges``)."""
    if cfg.buckets == "time":
        return [float(e) for e in TIME_EDGES]
    if cfg.buckets == "log2":
        return [float(e) for e in LOG2_EDGES]
    if cfg.buckets == "equal":
        return equal_edges(train_lengths, cfg.n_buckets)
    return quantile_edges(train_lengths, cfg.n_buckets)


def n_buckets(cfg: PredictorConfig) -> int:
    if cfg.buckets == "time":
        return len(TIME_EDGES) + 1
    if cfg.buckets == "log2":
        return len(LOG2_EDGES) + 1
    return cfg.n_buckets


def soft_labels(
    outputs: Sequence[np.ndarray], edges_per_prompt: Sequence[Sequence[float]], k: int
) -> np.ndarray:
    """Share of each prompt's samples in each bucket, shape (n_prompts, k); rows sum to 1."""
    out = np.zeros((len(outputs), k), dtype=np.float64)
    for i, (o, e) in enumerate(zip(outputs, edges_per_prompt, strict=True)):
        out[i] = np.bincount(assign(o, e), minlength=k)[:k] / len(o)
    return out


def bucket_means(
    lengths: np.ndarray, edges: Sequence[float], k: int, fallback: np.ndarray | None = None
) -> list[float]:
    """Mean length (tokens) of the given lengths in each bucket; empty buckets take ``fallback[i]``
    or the bucket's midpoint (the last one: 1.5x its lower edge)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    idx = assign(lengths, edges)
    out: list[float] = []
    for b in range(k):
        sel = lengths[idx == b]
        if len(sel):
            out.append(float(sel.mean()))
        elif fallback is not None:
            out.append(float(fallback[b]))
        else:
            lo = float(edges[b - 1]) if b > 0 else 0.0
            hi = float(edges[b]) if b < len(edges) else 1.5 * max(lo, 1.0)
            out.append(max(1.0, (lo + hi) / 2.0))
    return out
