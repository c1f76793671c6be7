"""Fit the workload impact estimator (iteration time vs batch composition) from GPU profiles.

Who calls this: ``loadwise fit-estimator`` and the retraining flow (through ``fit_impact_estimator``,
once per run, seconds of CPU), ``python -m training.impact.fit --profile NAME`` (prints the report),
and the tests. The result is a ``LinearLatencyModel`` that the mixing penalty
(``training.impact.penalty``), the latency-aware routers and the RL reward use in place of a profile.

Jain et al. (arXiv 2408.13510, Section 4) model an iteration of Llama-2-7B on a V100 as linear in the
batch's prefill tokens (grad1, s per prefill token) and decode tokens (grad2, s per decode token in
the batch), on top of a fixed cost. Two variants are fitted here, both ``LinearLatencyModel``:

- ``paper`` (2 terms + base): ``base_s + grad1 * prefill_tokens + per_decode_seq_s * decode_seqs``
  (the paper's grad2 read as "per decode token in the batch", as the ``v100-llama2-7b-paper`` preset).
- ``rich`` (4 terms + base): adds attention terms: decode attention per token of KV context read
  (``grad2_s_per_decode_context_token``) and prefill attention per sum of ``chunk x (cached + chunk)``
  (``attention2_s_per_token2``); ``per_decode_seq_s`` then carries the linear layers' and CPU
  per-sequence cost of a decode.

Data ("truth"): the simulator's profile model of the named profile (Vidur operator profiles; see
``training.simulator.profiles``), timed on the batch compositions the engine actually forms when it
replays windows of the Azure LLM 2023 trace (code + conversation merged; ``training.impact.recording``).
Each window is one replay; whole replays are held out (chosen by ``seed``), never random rows. The
linear layers are also fitted directly on Vidur's raw ``mlp.csv`` rows (held out by ``num_tokens``
value). Fits are non-negative least squares on relative error (rows weighted by 1 / time), so a
20 ms decode iteration counts as much as a 300 ms prefill; the scores are R^2 and MAPE on the held-out
replays. ``rich`` is chosen only when it is clearly better (``EstimatorConfig.min_relative_gain``).

Profiles without profiling data (the paper's V100 ones) are the paper's published figures, not fitted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.impact.recording import FEATURES, TARGET, record_replay
from training.impact.report import EstimatorReport, LinearPartFit, ReplayInfo, VariantFit
from training.simulator.config import ClusterConfig
from training.simulator.latency import LatencyModel, LinearLatencyModel
from training.simulator.profiles import (
    ATTENTION_CSV,
    LINEAR_OPS,
    PAPER_CONTEXT_PROFILE,
    PAPER_PROFILE,
    PROFILE_NAMES,
    HardwareProfile,
    default_instance_config,
    hardware_profile,
    load_latency_model,
)
from training.simulator.request import Request
from training.workloads.catalog import AZURE_FILES, MAX_OUTPUT_TOKENS

FORMAT = "loadwise-impact-estimator"
FORMAT_VERSION = 1

TERMS: dict[str, str | None] = {
    "base_s": None,
    "grad1_s_per_prefill_token": "prefill_tokens",
    "grad2_s_per_decode_context_token": "decode_context_tokens",
    "per_decode_seq_s": "decode_seqs",
    "attention2_s_per_token2": "prefill_attention_tokens2",
}
"""``LinearLatencyModel`` keyword -> the iteration-log column it multiplies (None: the constant)."""

VARIANT_TERMS: dict[str, tuple[str, ...]] = {
    "paper": ("base_s", "grad1_s_per_prefill_token", "per_decode_seq_s"),
    "rich": tuple(TERMS),
}
"""The fitted variants and their terms; a term left out is 0 in the ``LinearLatencyModel``."""

REGIMES: dict[str, Callable[[pd.DataFrame], pd.Series]] = {  # keys: report.REGIME_NAMES
    "decode_only": lambda f: f["prefill_tokens"] == 0,
    "with_prefill": lambda f: f["prefill_tokens"] > 0,
    "batch_over_4096_tokens": lambda f: f["prefill_tokens"] + f["decode_seqs"] > 4096,
}
"""Slices of the held-out iterations scored separately (4096: the largest size in Vidur's 7B mlp.csv)."""

PRESET_PROFILES = (PAPER_PROFILE, PAPER_CONTEXT_PROFILE)


class EstimatorFitError(ValueError):
    """The points cannot determine the coefficients (too few, non-positive times, or degenerate)."""


class EstimatorConfig(BaseModel):
    """What to fit and on which replays. Saved with every run (and logged to MLflow by the flow).

    Attributes:
        profile: a name of ``PROFILE_NAMES``; the V100 ones give the paper's preset (no fit).
        seed: picks the held-out replays and the held-out ``mlp.csv`` token sizes.
        num_replays: Azure trace windows replayed (consecutive, equal request counts), >= 2.
        holdout_replays: how many of them are held out (scored, never fitted).
        requests_per_replay: requests from the start of each window.
        num_instances: instances per replay (round robin).
        rates_rps: cluster arrival rates, requests/s, cycled over the replays (arrivals of a window
            are time-scaled to it) so that light and heavy load are both seen.
        min_relative_gain: ``rich`` is chosen when its held-out MAPE is at most (1 - this) x the
            paper variant's and its held-out R^2 is at most ``max_r2_drop`` lower (MAPE leads: the fit
            minimises relative error; R^2 is dominated by the few longest prefill iterations).
        max_r2_drop: see ``min_relative_gain``.
        min_points: fewest training points a fit accepts (and at least 2 per coefficient).
        mlp_holdout_fraction: share of distinct ``num_tokens`` values of ``mlp.csv`` held out.
        data_dir: the shared data folder (default: ``warehouse.settings.shared_data_dir()``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: str = "a100-llama2-7b"
    seed: int = Field(default=0, ge=0)
    num_replays: int = Field(default=6, ge=2)
    holdout_replays: int = Field(default=2, ge=1)
    requests_per_replay: int = Field(default=1500, ge=10)
    num_instances: int = Field(default=2, ge=1)
    rates_rps: tuple[float, ...] = (4.0, 8.0, 16.0)
    min_relative_gain: float = Field(default=0.2, ge=0.0, lt=1.0)
    max_r2_drop: float = Field(default=0.02, ge=0.0)
    min_points: int = Field(default=50, ge=1)
    mlp_holdout_fraction: float = Field(default=0.3, gt=0.0, lt=1.0)
    data_dir: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> EstimatorConfig:
        if self.profile not in PROFILE_NAMES:
            raise ValueError(f"unknown profile {self.profile!r}; known: {', '.join(PROFILE_NAMES)}")
        if self.holdout_replays >= self.num_replays:
            raise ValueError(
                f"holdout_replays ({self.holdout_replays}) must be < num_replays ({self.num_replays})"
            )
        if not self.rates_rps or any(not r > 0 for r in self.rates_rps):
            raise ValueError(f"rates_rps must be positive, got {self.rates_rps}")
        return self


@dataclass(frozen=True)
class ReplayLog:
    """The iteration log of one replay (``recording.record_replay``) and what it replayed."""

    replay_id: str
    description: str
    num_requests: int
    frame: pd.DataFrame


@dataclass(frozen=True)
class FittedEstimator:
    """A fitted (or preset) impact estimator: the chosen ``LinearLatencyModel`` and its report."""

    config: EstimatorConfig
    latency_model: LinearLatencyModel
    report: EstimatorReport
    training_frame: pd.DataFrame | None = field(default=None, compare=False, repr=False)
    """The iterations it was fitted on (one row per engine iteration of the training replays; ``None``
    for a preset or a reloaded estimator): the registered version's input dataset."""

    @property
    def variants(self) -> dict[str, VariantFit]:
        return {v.name: v for v in self.report.variants}

    @property
    def chosen(self) -> str:
        return self.report.chosen

    @property
    def data_fingerprint(self) -> str:
        return self.report.data_fingerprint

    @property
    def coefficients(self) -> dict[str, float]:
        return dict(self.variants[self.chosen].coefficients)

    def to_json(self) -> str:
        """Coefficients + metadata; what the served model (``serving.ImpactEstimatorModel``) reads."""
        return json.dumps(
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "name": self.latency_model.name,
                "profile": self.config.profile,
                "chosen": self.chosen,
                "coefficients": self.coefficients,
                "features": list(FEATURES),
                "output": TARGET,
                "data_fingerprint": self.data_fingerprint,
                "config": self.config.model_dump(mode="json"),
                "report": self.report.model_dump(mode="json"),
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> FittedEstimator:
        obj = json.loads(text)
        if obj.get("format") != FORMAT or obj.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"not a {FORMAT} v{FORMAT_VERSION} document: {obj.get('format')} v{obj.get('version')}"
            )
        report = EstimatorReport.model_validate(obj["report"])
        model = LinearLatencyModel(**obj["coefficients"], name=obj["name"])
        return cls(EstimatorConfig.model_validate(obj["config"]), model, report)

    def input_example(self) -> pd.DataFrame:
        """Four batch compositions (decode-only, prefill-only, mixed, empty-ish) in the served schema."""
        return pd.DataFrame(
            {
                "prefill_tokens": np.array([0, 1024, 512, 0], dtype=np.int64),
                "prefill_attention_tokens2": np.array([0.0, 1024.0**2, 512.0 * 512, 0.0]),
                "decode_seqs": np.array([32, 0, 16, 1], dtype=np.int64),
                "decode_context_tokens": np.array([32 * 900, 0, 16 * 1200, 300], dtype=np.int64),
            }
        )


# ---------------------------------------------------------------------------------------------
# least squares
# ---------------------------------------------------------------------------------------------


def _design(frame: pd.DataFrame, terms: Sequence[str]) -> np.ndarray:
    cols = []
    for term in terms:
        feature = TERMS[term]
        cols.append(np.ones(len(frame)) if feature is None else frame[feature].to_numpy(np.float64))
    return np.column_stack(cols) if cols else np.empty((len(frame), 0))


def fit_coefficients(frame: pd.DataFrame, terms: Sequence[str], *, min_points: int = 50) -> dict[str, float]:
    """Non-negative least squares of ``TARGET`` on ``terms`` (rows weighted by 1 / time: relative error).

    Returns every ``TERMS`` keyword (those not in ``terms`` are 0). Raises ``EstimatorFitError`` when
    there are fewer than ``max(min_points, 2 x len(terms))`` rows, a time is not finite and positive,
    a term's column is constant (its coefficient cannot be told apart from the base), or the columns
    are collinear.
    """
    unknown = set(terms) - set(TERMS)
    if unknown or not terms:
        raise ValueError(f"terms must be a non-empty subset of {list(TERMS)}, got {list(terms)}")
    need = max(min_points, 2 * len(terms))
    if len(frame) < need:
        raise EstimatorFitError(f"too few points to fit {len(terms)} coefficients: {len(frame)} < {need}")
    y = frame[TARGET].to_numpy(np.float64)
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise EstimatorFitError("iteration times must be finite and > 0 s")
    X = _design(frame, terms)
    if not np.all(np.isfinite(X)) or np.any(X < 0):
        raise EstimatorFitError("batch-composition features must be finite and >= 0")
    for j, term in enumerate(terms):
        feature = TERMS[term]
        if feature is not None and np.ptp(X[:, j]) == 0:
            raise EstimatorFitError(
                f"degenerate points: {feature} is {X[0, j]:g} in all {len(frame)} rows, "
                f"so {term} cannot be fitted"
            )
    Xw = X / y[:, None]
    scale = np.linalg.norm(Xw, axis=0)
    A = Xw / scale
    if np.linalg.matrix_rank(A) < len(terms):
        raise EstimatorFitError(f"degenerate points: the columns of {list(terms)} are collinear")
    from sklearn.linear_model import LinearRegression  # lazy: importing this module stays light

    # non-negative least squares (sklearn solves it with scipy's NNLS); relative error: target 1
    coef = LinearRegression(fit_intercept=False, positive=True).fit(A, np.ones(len(y))).coef_
    out = dict.fromkeys(TERMS, 0.0)
    for term, c, s in zip(terms, coef, scale, strict=True):
        out[term] = float(c / s)
    if out["base_s"] + out["grad1_s_per_prefill_token"] <= 0 or (
        out["base_s"] + out["per_decode_seq_s"] + out["grad2_s_per_decode_context_token"] <= 0
    ):
        raise EstimatorFitError(f"the fit gives some non-empty iteration zero time: {out}")
    return out


def predict_frame(coefficients: dict[str, float], frame: pd.DataFrame) -> np.ndarray:
    """Iteration times (s) of a ``LinearLatencyModel`` with ``coefficients`` for the rows of ``frame``."""
    terms = list(TERMS)
    return _design(frame, terms) @ np.array([coefficients.get(t, 0.0) for t in terms])


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """(R^2, MAPE %, 90th percentile of the absolute percentage error %); R^2 is NaN when the true
    times are all equal and the predictions are not (undefined)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    resid = y_true - np.asarray(y_pred, dtype=np.float64)
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else (1.0 if not np.any(resid) else math.nan)
    ape = np.abs(resid) / y_true * 100.0
    return r2, float(ape.mean()), float(np.percentile(ape, 90))


def split_replays(replay_ids: Sequence[str], holdout: int, seed: int) -> tuple[list[str], list[str]]:
    """(train ids, held-out ids): ``holdout`` whole replays drawn with ``seed``; disjoint, order kept."""
    ids = list(replay_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("replay ids must be unique")
    if not 1 <= holdout < len(ids):
        raise EstimatorFitError(f"need 1 <= holdout ({holdout}) < number of replays ({len(ids)})")
    picked = set(np.random.default_rng(np.random.SeedSequence(seed)).choice(len(ids), holdout, replace=False))
    return [r for i, r in enumerate(ids) if i not in picked], [r for i, r in enumerate(ids) if i in picked]


def fit_variants(
    train: pd.DataFrame, holdout: pd.DataFrame, *, min_points: int = 50
) -> dict[str, VariantFit]:
    """Fit every ``VARIANT_TERMS`` variant on ``train`` and score it on ``holdout``."""
    y_tr = train[TARGET].to_numpy(np.float64)
    y_ho = holdout[TARGET].to_numpy(np.float64)
    if len(holdout) == 0:
        raise EstimatorFitError("the held-out replays produced no iterations")
    out = {}
    for name, terms in VARIANT_TERMS.items():
        coef = fit_coefficients(train, terms, min_points=min_points)
        tr = scores(y_tr, predict_frame(coef, train))
        p_ho = predict_frame(coef, holdout)
        ho = scores(y_ho, p_ho)
        regimes = {}
        for regime, select in REGIMES.items():
            mask = select(holdout).to_numpy()
            if mask.any():
                regimes[regime] = scores(y_ho[mask], p_ho[mask])[1]
        out[name] = VariantFit(
            name=name,
            coefficients=coef,
            train_r2=tr[0],
            train_mape_pct=tr[1],
            holdout_r2=ho[0],
            holdout_mape_pct=ho[1],
            holdout_p90_ape_pct=ho[2],
            holdout_mape_pct_by_regime=regimes,
        )
    return out


def choose_variant(
    variants: dict[str, VariantFit], min_relative_gain: float, max_r2_drop: float = 0.02
) -> tuple[str, str]:
    """(name, reason): ``rich`` when it is clearly better on the held-out replays, else ``paper``."""
    paper, rich = variants["paper"], variants["rich"]
    assert paper.holdout_mape_pct is not None
    assert rich.holdout_mape_pct is not None
    assert paper.holdout_r2 is not None
    assert rich.holdout_r2 is not None
    limit = (1.0 - min_relative_gain) * paper.holdout_mape_pct
    facts = (
        f"held-out MAPE rich {rich.holdout_mape_pct:.2f}% vs paper {paper.holdout_mape_pct:.2f}%, "
        f"R^2 {rich.holdout_r2:.4f} vs {paper.holdout_r2:.4f}"
    )
    rule = f"rule: MAPE <= {limit:.2f}% and R^2 >= {paper.holdout_r2 - max_r2_drop:.4f}"
    if rich.holdout_mape_pct <= limit and rich.holdout_r2 >= paper.holdout_r2 - max_r2_drop:
        return "rich", f"The richer model fits clearly better ({facts}; {rule})."
    return "paper", f"The richer model is not clearly better ({facts}; {rule})."


# ---------------------------------------------------------------------------------------------
# data: raw mlp.csv, Azure windows, fingerprint
# ---------------------------------------------------------------------------------------------


def _data_dir(cfg: EstimatorConfig) -> Path:
    if cfg.data_dir is not None:
        return Path(cfg.data_dir)
    from warehouse.settings import shared_data_dir

    return shared_data_dir()


def profile_files(hw: HardwareProfile, data_dir: Path) -> list[Path]:
    """The Vidur files a profile model reads (the same paths as ``training.simulator.profiles``)."""
    prof = data_dir / "vidur_profiling"
    return [
        prof / "compute" / str(hw.compute_dir) / hw.model / "mlp.csv",
        prof / ATTENTION_CSV,
        prof / "legacy_2024-05" / str(hw.cpu_overhead_file),
    ]


def fit_linear_part(mlp_csv: Path, n_layers: int, seed: int, holdout_fraction: float) -> LinearPartFit:
    """``intercept + slope x tokens`` for one iteration's linear layers (all layers) + embedding, in s,
    fitted on the raw TP1 rows of Vidur's ``mlp.csv`` (medians; duplicate sizes kept as measurements)
    by relative least squares; a ``holdout_fraction`` of the distinct ``num_tokens`` values is held out."""
    df = pd.read_csv(mlp_csv)
    df = df[df["num_tensor_parallel_workers"].astype(int) == 1]
    if len(df) < 4:
        raise EstimatorFitError(f"{mlp_csv}: too few tensor-parallel-1 rows ({len(df)})")
    tokens = df["num_tokens"].to_numpy(np.float64)
    y = n_layers * sum(df[f"time_stats.{op}.median"] for op in LINEAR_OPS) + df["time_stats.emb.median"]
    y_s = y.to_numpy(np.float64) / 1000.0
    sizes = np.unique(tokens)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    n_ho = max(1, round(holdout_fraction * len(sizes)))
    held = np.isin(tokens, rng.choice(sizes, n_ho, replace=False))
    X = np.column_stack([np.ones(len(tokens)), tokens])
    w = 1.0 / y_s
    coef, *_ = np.linalg.lstsq(X[~held] * w[~held, None], np.ones(int((~held).sum())), rcond=None)
    pred = X[held] @ coef
    r2, mape, _ = scores(y_s[held], pred)
    big = held & (tokens >= 256)
    _, mape_big, _ = scores(y_s[big], X[big] @ coef) if big.any() else (0.0, float("nan"), 0.0)
    return LinearPartFit(
        file=str(Path(*mlp_csv.parts[-4:])),
        intercept_s=float(coef[0]),
        slope_s_per_token=float(coef[1]),
        n_train=int((~held).sum()),
        n_holdout=int(held.sum()),
        holdout_r2=r2,
        holdout_mape_pct=mape,
        holdout_mape_pct_ge_256_tokens=mape_big,
    )


def azure_windows(cfg: EstimatorConfig, data_dir: Path) -> list[tuple[str, str, list[Request]]]:
    """``num_replays`` consecutive windows of the merged Azure LLM 2023 hour (code + conversation):
    (replay id, description, requests). Each keeps its first ``requests_per_replay`` requests, rebased
    to 0 s and time-scaled to a rate of ``rates_rps`` (cycled).

    The traces are read through the warehouse (``training.workloads.sources.trace_rows``: its Azure
    reader, checks and quarantine, cached per process), in order of absolute arrival (ns), then task
    (``code`` before ``conv``), then line; output lengths are clipped at the workloads'
    ``MAX_OUTPUT_TOKENS``.
    """
    from training.workloads.sources import trace_rows  # the warehouse reader: imported when read

    paths = [data_dir / "azure_llm_2023" / name for name in AZURE_FILES.values()]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: the estimator replays the Azure LLM 2023 traces")
    rows, _ = trace_rows(
        paths,
        "azure",
        "epoch_ns(arrival_ts) AS t_ns, arrival_ts, task, prompt_tokens, output_tokens",
        order_by="t_ns, task, line",
    )
    t_all = rows.column("t_ns").to_numpy() / 1e9  # int64 ns -> float64 s
    ts = rows.column("arrival_ts").to_pylist()
    prompts = rows.column("prompt_tokens").to_numpy()
    outputs = rows.column("output_tokens").to_numpy()
    tasks = rows.column("task").to_pylist()
    out = []
    for k, idx in enumerate(np.array_split(np.arange(rows.num_rows), cfg.num_replays)):
        w = idx[: cfg.requests_per_replay]
        t = t_all[w] - t_all[w[0]]
        rate = cfg.rates_rps[k % len(cfg.rates_rps)]
        natural = (len(t) - 1) / t[-1] if t[-1] > 0 else rate
        t = t * (natural / rate)
        reqs = [
            Request(
                f"azure-w{k}-{i}",
                float(ti),
                int(prompts[j]),
                int(min(outputs[j], MAX_OUTPUT_TOKENS)),
                task=tasks[j],
            )
            for i, (ti, j) in enumerate(zip(t, w, strict=True))
        ]
        start = ts[w[0]].strftime("%H:%M:%S")
        out.append((f"azure-w{k}", f"azure window {k} (from {start}) at {rate:g} req/s", reqs))
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(files: Sequence[Path], logs: Sequence[ReplayLog], cfg: EstimatorConfig) -> str:
    """sha256 over the input files' contents, the recorded points and the config (minus data_dir)."""
    h = hashlib.sha256()
    h.update(cfg.model_dump_json(exclude={"data_dir"}).encode())
    for path in files:
        h.update(path.name.encode())
        h.update(_sha256_file(path).encode())
    for log in logs:
        h.update(log.replay_id.encode())
        h.update(np.ascontiguousarray(log.frame[[*FEATURES, TARGET]].to_numpy(np.float64)).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# the API
# ---------------------------------------------------------------------------------------------


def command_for(cfg: EstimatorConfig) -> str:
    return f"python -m training.impact.fit --profile {cfg.profile} --seed {cfg.seed}"


def preset_estimator(cfg: EstimatorConfig) -> FittedEstimator:
    """The paper's published V100 figures (Jain et al., arXiv 2408.13510) for a V100 profile: no fit."""
    model = load_latency_model(cfg.profile)
    assert isinstance(model, LinearLatencyModel)
    coef = {
        "base_s": model.base_s,
        "grad1_s_per_prefill_token": model.grad1,
        "grad2_s_per_decode_context_token": model.grad2,
        "per_decode_seq_s": model.per_decode_seq_s,
        "attention2_s_per_token2": model.attention2,
    }
    h = hashlib.sha256(
        (cfg.model_dump_json(exclude={"data_dir"}) + json.dumps(coef, sort_keys=True)).encode()
    )
    report = EstimatorReport(
        profile=cfg.profile,
        fitted=False,
        chosen="paper",
        reason="no V100 profiling data exists; these are the paper's published Llama-2-7B V100 figures "
        "(grad1 3.2e-4 s per prefill token, grad2 3.3e-5 s per decode "
        + ("context token" if cfg.profile == PAPER_CONTEXT_PROFILE else "token in the batch")
        + ", base 0.02 s).",
        variants=[VariantFit(name="paper", coefficients=coef)],
        data_fingerprint=h.hexdigest(),
        command=command_for(cfg),
    )
    return FittedEstimator(cfg, model, report)


def fit_from_logs(
    cfg: EstimatorConfig,
    logs: Sequence[ReplayLog],
    *,
    linear_part: LinearPartFit | None = None,
    input_files: Sequence[Path] = (),
    progress: Callable[[str], None] | None = None,
) -> FittedEstimator:
    """Fit both variants on the training replays of ``logs``, score them on the held-out ones, choose.

    The split is ``split_replays([log ids], cfg.holdout_replays, cfg.seed)``. Raises
    ``EstimatorFitError`` on too few or degenerate points.
    """
    say = progress or (lambda _msg: None)
    train_ids, held_ids = split_replays([log.replay_id for log in logs], cfg.holdout_replays, cfg.seed)
    by_id = {log.replay_id: log for log in logs}
    train = pd.concat([by_id[i].frame for i in train_ids], ignore_index=True)
    held = pd.concat([by_id[i].frame for i in held_ids], ignore_index=True)
    say(
        f"fitting on {len(train)} iterations of {len(train_ids)} replays; "
        f"holding out {len(held)} iterations of {held_ids}"
    )
    variants = fit_variants(train, held, min_points=cfg.min_points)
    chosen, reason = choose_variant(variants, cfg.min_relative_gain, cfg.max_r2_drop)
    say(f"chosen: {chosen}. {reason}")
    held_set = set(held_ids)
    report = EstimatorReport(
        profile=cfg.profile,
        fitted=True,
        chosen=chosen,
        reason=reason,
        variants=list(variants.values()),
        replays=[
            ReplayInfo(
                replay_id=log.replay_id,
                description=log.description,
                num_requests=log.num_requests,
                num_iterations=len(log.frame),
                heldout=log.replay_id in held_set,
            )
            for log in logs
        ],
        linear_part=linear_part,
        n_train_points=len(train),
        n_holdout_points=len(held),
        data_fingerprint=fingerprint(input_files, logs, cfg),
        command=command_for(cfg),
    )
    model = variants[chosen].latency_model(f"impact-{cfg.profile}-{chosen}")
    return FittedEstimator(cfg, model, report, training_frame=train)


def record_logs(
    truth: LatencyModel,
    replays: Sequence[tuple[str, str, Sequence[Request]]],
    config: ClusterConfig,
    progress: Callable[[str], None] | None = None,
) -> list[ReplayLog]:
    """Replay each (id, description, requests) with ``truth`` timing the iterations; their logs."""
    logs = []
    for k, (rid, desc, reqs) in enumerate(replays):
        frame = record_replay(reqs, truth, config)
        logs.append(ReplayLog(rid, desc, len(reqs), frame))
        if progress:
            progress(f"replay {k + 1}/{len(replays)} {rid}: {len(reqs)} requests -> {len(frame)} iterations")
    return logs


def fit_impact_estimator(
    cfg: EstimatorConfig, progress: Callable[[str], None] | None = None
) -> FittedEstimator:
    """Fit the impact estimator of ``cfg.profile`` (see the module docstring); seconds of CPU.

    V100 profiles return the paper's preset. File-based profiles need ``<data_dir>/vidur_profiling``
    and ``<data_dir>/azure_llm_2023`` (FileNotFoundError naming the missing path otherwise).
    """
    if cfg.profile in PRESET_PROFILES:
        return preset_estimator(cfg)
    data_dir = _data_dir(cfg)
    hw = hardware_profile(cfg.profile)
    files = profile_files(hw, data_dir)
    for path in files:
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: fitting {cfg.profile} needs Vidur's GPU profiles")
    truth = load_latency_model(cfg.profile, data_dir)
    windows = azure_windows(cfg, data_dir)
    cluster = ClusterConfig(num_instances=cfg.num_instances, instance=default_instance_config(cfg.profile))
    logs = record_logs(truth, windows, cluster, progress)
    linear = fit_linear_part(files[0], hw.n_layers, cfg.seed, cfg.mlp_holdout_fraction)
    trace_files = [data_dir / "azure_llm_2023" / name for name in AZURE_FILES.values()]
    return fit_from_logs(cfg, logs, linear_part=linear, input_files=[*files, *trace_files], progress=progress)


def profiles_with_data(data_dir: Path | None = None) -> list[str]:
    """``PROFILE_NAMES`` whose files are present (the V100 presets always are)."""
    if data_dir is None:
        from warehouse.settings import shared_data_dir

        data_dir = shared_data_dir()
    out = []
    for name in PROFILE_NAMES:
        hw = hardware_profile(name)
        if name in PRESET_PROFILES or all(p.exists() for p in profile_files(hw, Path(data_dir))):
            out.append(name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.impact.fit --profile NAME [--seed N] [--json PATH]``: fit and print the report."""
    parser = argparse.ArgumentParser(prog="python -m training.impact.fit", description=main.__doc__)
    parser.add_argument("--profile", action="append", help=f"one of {', '.join(PROFILE_NAMES)}; repeatable")
    parser.add_argument("--all", action="store_true", help="every profile whose data files are present")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the estimator JSON here (one profile only)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    names = profiles_with_data() if args.all else (args.profile or [EstimatorConfig().profile])
    if args.json and len(names) != 1:
        parser.error("--json needs exactly one profile")
    import sys

    for name in names:
        est = fit_impact_estimator(
            EstimatorConfig(profile=name, seed=args.seed),
            progress=None if args.quiet else lambda msg: print(msg, file=sys.stderr),
        )
        print(est.report.to_markdown())
        if args.json:
            args.json.write_text(est.to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
