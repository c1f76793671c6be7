"""The impact estimator's typed report: coefficients and held-out scores per variant, and its data.

Who calls this: ``training.impact.fit`` builds it (once per fit); the registry flow logs
``EstimatorReport.metrics()`` to MLflow and ``to_markdown()`` as a run artifact;
``python -m training.impact.fit`` prints it. Units: seconds, tokens; scores are R^2 (unitless) and
absolute percentage errors in % (MAPE = mean, p90 = 90th percentile) over held-out iterations.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from training.simulator.latency import LinearLatencyModel

REGIME_NAMES = ("decode_only", "with_prefill", "batch_over_4096_tokens")
"""Slices of the held-out iterations scored separately (``fit.REGIMES`` selects them)."""


class VariantFit(BaseModel):
    """One fitted variant: its ``LinearLatencyModel`` coefficients and scores (None: not fitted)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    coefficients: dict[str, float]
    train_r2: float | None = None
    train_mape_pct: float | None = None
    holdout_r2: float | None = None
    holdout_mape_pct: float | None = None
    holdout_p90_ape_pct: float | None = None
    holdout_mape_pct_by_regime: dict[str, float] = {}
    """Held-out MAPE per ``REGIMES`` key (only regimes with held-out rows)."""

    def latency_model(self, name: str) -> LinearLatencyModel:
        return LinearLatencyModel(**self.coefficients, name=name)


class LinearPartFit(BaseModel):
    """Linear layers (+ embedding) of one iteration vs tokens in the batch, fitted on raw ``mlp.csv``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    intercept_s: float
    slope_s_per_token: float
    n_train: int
    n_holdout: int
    holdout_r2: float
    holdout_mape_pct: float
    holdout_mape_pct_ge_256_tokens: float


class ReplayInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    replay_id: str
    description: str
    num_requests: int
    num_iterations: int
    heldout: bool


class EstimatorReport(BaseModel):
    """What was fitted, on what, and how well. ``metrics()`` for MLflow, ``to_markdown()`` for people."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: str
    fitted: bool
    chosen: str
    reason: str
    variants: list[VariantFit]
    replays: list[ReplayInfo] = []
    linear_part: LinearPartFit | None = None
    n_train_points: int = 0
    n_holdout_points: int = 0
    data_fingerprint: str
    command: str

    def variant(self, name: str) -> VariantFit:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"no variant {name!r}; have {[v.name for v in self.variants]}")

    def metrics(self) -> dict[str, float]:
        """Flat ``name -> float`` (MLflow metric names): scores per variant and of the chosen one,
        the chosen coefficients, point counts, and the ``mlp.csv`` linear-part fit. Only finite values:
        a score that does not exist (preset) or is undefined (NaN) is left out."""
        out: dict[str, float] = {"fitted": float(self.fitted)}
        chosen = self.variant(self.chosen)
        for v in self.variants:
            for key in (
                "train_r2",
                "train_mape_pct",
                "holdout_r2",
                "holdout_mape_pct",
                "holdout_p90_ape_pct",
            ):
                value = getattr(v, key)
                if value is not None and math.isfinite(value):
                    out[f"{v.name}.{key}"] = float(value)
                    if v.name == self.chosen:
                        out[f"chosen.{key}"] = float(value)
            for regime, value in v.holdout_mape_pct_by_regime.items():
                out[f"{v.name}.holdout_mape_pct.{regime}"] = float(value)
        for term, value in chosen.coefficients.items():
            out[f"chosen.{term}"] = float(value)
        if self.fitted:
            out["n_train_points"] = float(self.n_train_points)
            out["n_holdout_points"] = float(self.n_holdout_points)
        if self.linear_part is not None:
            lp = self.linear_part
            out["mlp_linear.holdout_r2"] = lp.holdout_r2
            out["mlp_linear.holdout_mape_pct"] = lp.holdout_mape_pct
            out["mlp_linear.slope_s_per_token"] = lp.slope_s_per_token
            out["mlp_linear.intercept_s"] = lp.intercept_s
        return out

    def to_markdown(self) -> str:
        lines = [f"### Impact estimator: `{self.profile}`", ""]
        if not self.fitted:
            lines += [f"Preset, not fitted: {self.reason}", ""]
        else:
            lines += [
                f"Chosen variant: **{self.chosen}**. {self.reason}",
                "",
                f"Points (engine iterations): {self.n_train_points} train, {self.n_holdout_points} held out "
                f"({sum(r.heldout for r in self.replays)} of {len(self.replays)} replays held out).",
                "",
            ]
        lines += [
            "| variant | base_s | grad1 (s/prefill tok) | per_decode_seq_s | grad2 (s/ctx tok) "
            "| attention2 (s/tok^2) "
            "| train R^2 | train MAPE | held-out R^2 | held-out MAPE | held-out p90 APE |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for v in self.variants:
            c = v.coefficients
            lines.append(
                f"| {v.name}{' (chosen)' if v.name == self.chosen else ''} | {c['base_s']:.4g} "
                f"| {c['grad1_s_per_prefill_token']:.4g} | {c['per_decode_seq_s']:.4g} "
                f"| {c['grad2_s_per_decode_context_token']:.4g} | {c['attention2_s_per_token2']:.4g} "
                f"| {_fmt(v.train_r2, '.4f')} | {_fmt(v.train_mape_pct, '.2f', '%')} "
                f"| {_fmt(v.holdout_r2, '.4f')} | {_fmt(v.holdout_mape_pct, '.2f', '%')} "
                f"| {_fmt(v.holdout_p90_ape_pct, '.2f', '%')} |"
            )
        regimes = [r for r in REGIME_NAMES if any(r in v.holdout_mape_pct_by_regime for v in self.variants)]
        if regimes:
            lines += ["", "Held-out MAPE by kind of iteration:", ""]
            lines += ["| variant | " + " | ".join(regimes) + " |", "|---" * (len(regimes) + 1) + "|"]
            for v in self.variants:
                cells = [_fmt(v.holdout_mape_pct_by_regime.get(r), ".2f", "%") for r in regimes]
                lines.append(f"| {v.name} | " + " | ".join(cells) + " |")
        if self.linear_part is not None:
            lp = self.linear_part
            lines += [
                "",
                f"Linear layers + embedding on raw `{lp.file}` (TP1, all layers, one iteration): "
                f"{lp.intercept_s:.4g} s + {lp.slope_s_per_token:.4g} s/token; held out "
                f"{lp.n_holdout} of {lp.n_train + lp.n_holdout} rows (by `num_tokens` value): "
                f"R^2 {lp.holdout_r2:.4f}, MAPE {lp.holdout_mape_pct:.2f}% "
                f"({lp.holdout_mape_pct_ge_256_tokens:.2f}% at >= 256 tokens).",
            ]
        if self.replays:
            lines += ["", "| replay | requests | iterations | split |", "|---|---|---|---|"]
            for r in self.replays:
                lines.append(
                    f"| {r.description} | {r.num_requests} | {r.num_iterations} | "
                    f"{'held out' if r.heldout else 'train'} |"
                )
        lines += ["", f"Data fingerprint: `{self.data_fingerprint[:16]}`. Command: `{self.command}`", ""]
        return "\n".join(lines)


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"
