"""Scores of one length predictor on held-out prompts: the paper's Table 1 quantities, typed.

Who calls this: ``train_length_predictor`` once per run (``evaluate``); MLflow logging reads
``LengthReport.metrics()``; docs and the CLI print ``LengthReport.to_markdown()``.

All accuracies are over (prompt, sample) pairs of the TEST prompts: a prompt with 10 CASTILLO
samples counts 10 times, each against its own sample's bucket (Jain et al., arXiv 2408.13510,
Table 1 reports top-1 bucket accuracy). Baselines, all model-free:
- ``global_majority``: the most frequent bucket over training pairs, for every request;
- ``task_majority``: the most frequent training bucket of the request's task;
- ``ceiling``: each test prompt's own most frequent bucket over its samples (no predictor that
  sees only the prompt can beat it: the rest is sampling noise);
- ``honest_score``: (accuracy - task_majority) / (ceiling - task_majority), the share of the gap
  between the per-task majority and the ceiling that the model closes.
Kendall's tau (tau-b) and MAE (tokens) compare the expected length with every sample's length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Scores(BaseModel):
    """Scores over one set of test pairs (all tasks, or one task). Accuracies in [0, 1]."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_prompts: int
    n_pairs: int
    accuracy: float
    accuracy_tabular: float
    task_majority: float
    global_majority: float
    ceiling: float
    honest_score: float | None
    honest_score_tabular: float | None
    kendall_tau: float | None
    kendall_tau_tabular: float | None
    mae_tokens: float
    mae_tokens_tabular: float


class LengthReport(BaseModel):
    """One trained predictor's report (one bucket scheme, one hint mode, one serving model).

    ``text_model`` is the kind that answered text rows; ``selection`` what the validation prompts
    chose (``tfidf_c``, ``ensemble_weight``) and the validation accuracies behind it
    (``val_acc_tfidf``, ``val_acc_minilm``, ``val_acc_ensemble``); never anything from test prompts.
    ``components`` (ensemble only) reports each part alone on the test prompts (``acc_minilm``,
    ``acc_tfidf``, ``honest_score_minilm``, ``honest_score_tfidf``), for the docs' model choice; it
    is computed after every choice is made and feeds none.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    serving_model: str
    buckets: str
    task_hint: str
    text_model: str = "minilm"
    selection: dict[str, float] = Field(default_factory=dict)
    components: dict[str, float] = Field(default_factory=dict)
    k: int
    edges: list[float] | None
    edges_by_task: dict[str, list[float]] | None
    n_train_prompts: int
    n_val_prompts: int
    n_test_prompts: int
    overall: Scores
    per_task: dict[str, Scores]
    calibration: dict[str, float] = Field(default_factory=dict)
    """Expected calibration error (``expected_calibration_error``) of the served probabilities:
    ``ece`` / ``ece_tabular`` on the test prompts with the validation-fitted temperatures
    (``temperature`` / ``temperature_tabular``), ``ece_uncalibrated`` / ``ece_tabular_uncalibrated``
    without them, and the validation figures the choice was made on (``val_ece*``)."""

    def metrics(self) -> dict[str, float]:
        """Flat metric names for MLflow: ``acc``, ``acc_tabular``, ``baseline_task_majority``, ...,
        and ``task.<task>.acc`` etc. per task (task names sanitised to MLflow's allowed characters).
        Undefined values (e.g. tau of a constant prediction) are left out."""
        out: dict[str, float] = {
            "n_train_prompts": float(self.n_train_prompts),
            "n_test_prompts": float(self.n_test_prompts),
        }
        out.update(_flat("", self.overall))
        out.update({f"selected.{k}": float(v) for k, v in sorted(self.selection.items())})
        out.update({f"component.{k}": float(v) for k, v in sorted(self.components.items())})
        out.update({f"calibration.{k}": float(v) for k, v in sorted(self.calibration.items())})
        for task, s in sorted(self.per_task.items()):
            out.update(_flat(f"task.{_metric_name(task)}.", s))
        return out

    def to_markdown(self) -> str:
        o = self.overall
        edges = self.edges if self.edges is not None else "per task (quantile)"
        lines = [
            f"### {self.serving_model}: {self.buckets} buckets (k={self.k}, edges {edges}), "
            f"hint={self.task_hint}, text model {self.text_model}"
            + (
                " (" + ", ".join(f"{k} {v:.3g}" for k, v in sorted(self.selection.items())) + ")"
                if self.selection
                else ""
            ),
            "",
            f"Prompts: {self.n_train_prompts} train, {self.n_val_prompts} val, {self.n_test_prompts} test "
            f"({o.n_pairs} test (prompt, sample) pairs).",
            "",
        ]
        if self.calibration:
            c = dict(self.calibration)
            nan = float("nan")
            lines += [
                "Calibration (expected calibration error, 15 bins, test pairs): text model "
                f"{c.get('ece', nan):.4f} (temperature {c.get('temperature', 1.0):.3g}; "
                f"{c.get('ece_uncalibrated', nan):.4f} without), tabular "
                f"{c.get('ece_tabular', nan):.4f} (temperature {c.get('temperature_tabular', 1.0):.3g}; "
                f"{c.get('ece_tabular_uncalibrated', nan):.4f} without).",
                "",
            ]
        lines += [
            "| task | pairs | model acc | tabular acc | task majority | global majority | ceiling "
            "| gap closed | tau | MAE (tokens) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for task, s in [*sorted(self.per_task.items()), ("**overall**", o)]:
            lines.append(
                f"| {task} | {s.n_pairs} | {_pct(s.accuracy)} | {_pct(s.accuracy_tabular)} "
                f"| {_pct(s.task_majority)} | {_pct(s.global_majority)} | {_pct(s.ceiling)} "
                f"| {_num(s.honest_score)} | {_num(s.kendall_tau)} | {s.mae_tokens:.0f} |"
            )
        return "\n".join(lines) + "\n"


def _metric_name(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", task) or "_empty"


def _flat(prefix: str, s: Scores) -> dict[str, float]:
    named = {
        "acc": s.accuracy,
        "acc_tabular": s.accuracy_tabular,
        "baseline_task_majority": s.task_majority,
        "baseline_global_majority": s.global_majority,
        "ceiling": s.ceiling,
        "honest_score": s.honest_score,
        "honest_score_tabular": s.honest_score_tabular,
        "kendall_tau": s.kendall_tau,
        "kendall_tau_tabular": s.kendall_tau_tabular,
        "mae_tokens": s.mae_tokens,
        "mae_tokens_tabular": s.mae_tokens_tabular,
        "n_pairs": float(s.n_pairs),
    }
    return {f"{prefix}{k}": float(v) for k, v in named.items() if v is not None and np.isfinite(v)}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _tau(pred: np.ndarray, true: np.ndarray) -> float | None:
    from scipy.stats import kendalltau

    if len(pred) < 2 or np.all(pred == pred[0]) or np.all(true == true[0]):
        return None
    value = float(kendalltau(pred, true).statistic)
    return value if np.isfinite(value) else None


def _gap(acc: float, base: float, ceiling: float) -> float | None:
    return (acc - base) / (ceiling - base) if ceiling - base > 1e-12 else None


def score_pairs(
    labels: Sequence[np.ndarray],
    lengths: Sequence[np.ndarray],
    pred_bucket: np.ndarray,
    pred_bucket_tab: np.ndarray,
    expected: np.ndarray,
    expected_tab: np.ndarray,
    task_majority: np.ndarray,
    global_majority: int,
) -> Scores:
    """Scores for a set of test prompts: ``labels[i]``/``lengths[i]`` are prompt i's samples'
    buckets/lengths; the other arrays have one entry per prompt."""
    counts = np.array([len(x) for x in labels], dtype=np.int64)
    y = np.concatenate(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    n_true = np.concatenate(lengths).astype(np.float64) if len(lengths) else np.zeros(0)

    def rep(a: np.ndarray) -> np.ndarray:
        return np.repeat(a, counts)

    ceiling_hits = [int((lab == np.bincount(lab).argmax()).sum()) for lab in labels]
    n = max(len(y), 1)
    acc = float((rep(pred_bucket) == y).sum() / n)
    acc_tab = float((rep(pred_bucket_tab) == y).sum() / n)
    task_maj = float((rep(task_majority) == y).sum() / n)
    ceiling = float(sum(ceiling_hits) / n)
    return Scores(
        n_prompts=len(labels),
        n_pairs=len(y),
        accuracy=acc,
        accuracy_tabular=acc_tab,
        task_majority=task_maj,
        global_majority=float((y == global_majority).sum() / n),
        ceiling=ceiling,
        honest_score=_gap(acc, task_maj, ceiling),
        honest_score_tabular=_gap(acc_tab, task_maj, ceiling),
        kendall_tau=_tau(rep(expected), n_true),
        kendall_tau_tabular=_tau(rep(expected_tab), n_true),
        mae_tokens=float(np.abs(rep(expected) - n_true).mean()) if len(y) else 0.0,
        mae_tokens_tabular=float(np.abs(rep(expected_tab) - n_true).mean()) if len(y) else 0.0,
    )


ECE_BINS = 15


def expected_calibration_error(
    proba: np.ndarray, labels: Sequence[np.ndarray], bins: int = ECE_BINS
) -> float:
    """Expected calibration error over (prompt, sample) pairs: the top bucket's probability
    (confidence) is put in ``bins`` equal-width bins over [0, 1]; ECE = sum over bins of (share of
    pairs) x |accuracy - mean confidence|. Prompt i's confidence counts once per sample, each
    against its own sample's bucket (``labels[i]``), like the accuracies. NaN when there are no pairs."""
    counts = np.array([len(lab) for lab in labels], dtype=np.int64)
    if counts.sum() == 0:
        return float("nan")
    conf = np.repeat(proba.max(axis=1), counts)
    pred = np.repeat(proba.argmax(axis=1), counts)
    hit = (pred == np.concatenate([np.asarray(lab, dtype=np.int64) for lab in labels])).astype(np.float64)
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)  # (j/bins, (j+1)/bins]
    total = 0.0
    for b in np.unique(idx):
        m = idx == b
        total += m.sum() * abs(hit[m].mean() - conf[m].mean())
    return float(total / len(conf))


TEMPERATURE_GRID = tuple(float(t) for t in np.exp(np.linspace(np.log(0.25), np.log(4.0), 97)))
"""Temperatures ``fit_temperature`` tries (log-spaced, 0.25-4)."""


def fit_temperature(proba_val: np.ndarray, labels_val: Sequence[np.ndarray]) -> float:
    """The temperature (``serving.temper``) with the lowest pair cross-entropy on the VALIDATION
    prompts' probabilities; 1.0 when there are none. Deterministic grid search (``TEMPERATURE_GRID``)."""
    from training.length.serving import temper
    from training.length.tfidf import pair_cross_entropy

    if len(proba_val) == 0 or sum(len(lab) for lab in labels_val) == 0:
        return 1.0
    return min(TEMPERATURE_GRID, key=lambda t: pair_cross_entropy(temper(proba_val, t), labels_val))
