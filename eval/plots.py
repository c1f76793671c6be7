"""Report plots (matplotlib, Agg backend: no display needed): latency CDFs and queue lengths.

Who calls this: ``eval.harness.write_outputs``, once per evaluation run, on the first seed's replay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_e2e_cdf(
    e2e_by_router: Mapping[str, np.ndarray], path: Path, *, xlabel: str = "E2E latency (s)"
) -> Path:
    """One CDF line per router of per-request latencies (seconds)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = ("-", "--", ":", "-.")  # 10 colours per style: up to 40 routers stay distinct
    for k, (name, values) in enumerate(e2e_by_router.items()):
        x = np.sort(np.asarray(values, dtype=np.float64))
        x = x[np.isfinite(x)]
        if len(x):
            ax.plot(
                x,
                np.arange(1, len(x) + 1) / len(x),
                label=name,
                linewidth=1.2,
                color=f"C{k % 10}",
                linestyle=styles[(k // 10) % len(styles)],
            )
    ax.set_xscale("log")
    ax.set_xlabel(xlabel + ", log scale")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_queue_lengths(series: Sequence[Mapping[str, np.ndarray]], path: Path, *, title: str = "") -> Path:
    """Per instance over simulated time: waiting-queue length (top) and running batch size (bottom).

    The series are sampled when an instance forms a batch (``SimResult.instance_series``); right
    after admission the queue is often empty, so the batch size shows the load imbalance better.
    """
    plt = _pyplot()
    fig, (ax_q, ax_b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for i, s in enumerate(series):
        t = np.asarray(s["time_s"], dtype=np.float64)
        if not len(t):
            continue
        ax_q.step(
            t, np.asarray(s["queue_len"], dtype=np.float64), where="post", label=f"instance {i}", lw=0.9
        )
        ax_b.step(
            t, np.asarray(s["batch_size"], dtype=np.float64), where="post", label=f"instance {i}", lw=0.9
        )
    ax_q.set_ylabel("waiting requests")
    ax_b.set_ylabel("running batch size")
    ax_b.set_xlabel("simulated time (s)")
    ax_q.set_title(f"queue and batch per instance: {title}" if title else "queue and batch per instance")
    for ax in (ax_q, ax_b):
        ax.grid(alpha=0.3)
    ax_q.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
