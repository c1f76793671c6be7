"""Drift between a training window and a new window of requests: per-task length distributions, rate.

Who calls this: the nightly retraining flow, once per run, on the requests that arrived since the
last watermark vs the window the current champion was trained on; a drift above the configured
threshold forces retraining between schedules. Pure: data frames in, a typed report out.

Per task (and over all tasks) it compares the prompt-length and output-length distributions with

- **PSI** (population stability index) over ``bins`` quantile bins of the reference window:
  ``sum (a - e) x ln(a / e)`` over bin shares ``e`` (reference) and ``a`` (new), shares floored at
  ``1e-4``. Rule of thumb in credit-risk monitoring, where PSI comes from: < 0.1 stable, 0.1-0.25
  moderate, > 0.25 large shift.
- **KS**: the two-sample Kolmogorov-Smirnov statistic and p-value (``scipy.stats.ks_2samp``).

and the arrival rate (requests per second over each window's span) as a ratio new / reference.
A task seen in only one window is reported as drifted (a new or vanished application).

Units: tokens, requests per second.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

REQUIRED_COLUMNS = ("task", "prompt_tokens", "output_tokens", "arrival_s")
MIN_SAMPLES = 30
"""Fewer requests than this in a task's window: its distributions are not compared (too noisy)."""


class DriftThresholds(BaseModel):
    """When a window counts as drifted (any one rule)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    psi: float = Field(default=0.25, gt=0, description="PSI of prompt or output length above this")
    ks_pvalue: float = Field(
        default=1e-3, gt=0, lt=1, description="and KS p-value below this (both must hold)"
    )
    rate_ratio: float = Field(default=1.5, gt=1, description="arrival-rate ratio above this or below 1/this")


class FeatureDrift(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    psi: float
    ks_statistic: float
    ks_pvalue: float
    reference_mean: float
    new_mean: float


class TaskDrift(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    reference_count: int
    new_count: int
    prompt_tokens: FeatureDrift | None
    output_tokens: FeatureDrift | None
    drifted: bool
    reason: str


class DriftReport(BaseModel):
    """Drift of one new window against the reference (training) window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    thresholds: DriftThresholds
    reference_rate_rps: float
    new_rate_rps: float
    rate_ratio: float
    tasks: list[TaskDrift]
    drifted: bool
    reasons: list[str]

    def to_markdown(self) -> str:
        lines = [
            f"Drift: **{'yes' if self.drifted else 'no'}**"
            + (f" ({'; '.join(self.reasons)})" if self.reasons else ""),
            "",
            f"Arrival rate {self.reference_rate_rps:.3g} -> {self.new_rate_rps:.3g} req/s "
            f"(x{self.rate_ratio:.2f}).",
            "",
            "| task | ref n | new n | prompt PSI | prompt KS p | output PSI | output KS p | drifted |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]

        def cells(f: FeatureDrift | None) -> str:
            return f"{f.psi:.3f} | {f.ks_pvalue:.2g}" if f else "- | -"

        for t in self.tasks:
            lines.append(
                f"| {t.task} | {t.reference_count} | {t.new_count} | {cells(t.prompt_tokens)} | "
                f"{cells(t.output_tokens)} | {'**yes**: ' + t.reason if t.drifted else 'no'} |"
            )
        return "\n".join(lines) + "\n"


def psi(reference: np.ndarray, new: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``new`` against ``reference`` over reference quantile bins."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(new, dtype=np.float64)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("psi needs non-empty samples")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1) / ref.size
    a = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1) / cur.size
    e, a = np.maximum(e, 1e-4), np.maximum(a, 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


def _feature(ref: pd.Series, new: pd.Series) -> FeatureDrift:
    from scipy.stats import ks_2samp

    r, n = ref.to_numpy(dtype=np.float64), new.to_numpy(dtype=np.float64)
    ks = ks_2samp(r, n)
    return FeatureDrift(
        psi=psi(r, n),
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        reference_mean=float(r.mean()),
        new_mean=float(n.mean()),
    )


def _rate(frame: pd.DataFrame) -> float:
    if len(frame) < 2:
        return 0.0
    span = float(frame["arrival_s"].max() - frame["arrival_s"].min())
    return (len(frame) - 1) / span if span > 0 else math.inf


def _check(frame: pd.DataFrame, label: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{label} window lacks columns {missing} (needs {list(REQUIRED_COLUMNS)})")
    if frame.empty:
        raise ValueError(f"{label} window has no requests")


def detect_drift(
    reference: pd.DataFrame, new: pd.DataFrame, thresholds: DriftThresholds | None = None
) -> DriftReport:
    """Compare ``new`` to ``reference`` (columns ``task, prompt_tokens, output_tokens, arrival_s``)."""
    th = thresholds or DriftThresholds()
    _check(reference, "reference")
    _check(new, "new")
    tasks: list[TaskDrift] = []
    groups = [("(all)", reference, new)] + [
        (str(task), reference[reference["task"] == task], new[new["task"] == task])
        for task in sorted(set(reference["task"]) | set(new["task"]))
    ]
    for task, ref, cur in groups:
        p = o = None
        if len(ref) == 0 or len(cur) == 0:
            drifted = len(ref) == 0
            why = "task only in the new window" if drifted else "task absent from the new window"
        elif len(ref) < MIN_SAMPLES or len(cur) < MIN_SAMPLES:
            drifted, why = False, f"fewer than {MIN_SAMPLES} requests: not compared"
        else:
            p = _feature(ref["prompt_tokens"], cur["prompt_tokens"])
            o = _feature(ref["output_tokens"], cur["output_tokens"])
            hits = [
                f"{name} PSI {f.psi:.2f}"
                for name, f in (("prompt", p), ("output", o))
                if f.psi > th.psi and f.ks_pvalue < th.ks_pvalue
            ]
            drifted, why = bool(hits), "; ".join(hits)
        tasks.append(
            TaskDrift(
                task=task,
                reference_count=len(ref),
                new_count=len(cur),
                prompt_tokens=p,
                output_tokens=o,
                drifted=drifted,
                reason=why,
            )
        )
    ref_rate, new_rate = _rate(reference), _rate(new)
    ratio = new_rate / ref_rate if ref_rate > 0 else math.inf
    reasons = [f"{t.task}: {t.reason}" for t in tasks if t.drifted]
    if not (1.0 / th.rate_ratio <= ratio <= th.rate_ratio):
        reasons.append(f"arrival rate x{ratio:.2f}")
    return DriftReport(
        thresholds=th,
        reference_rate_rps=ref_rate,
        new_rate_rps=new_rate,
        rate_ratio=ratio,
        tasks=tasks,
        drifted=bool(reasons),
        reasons=reasons,
    )
