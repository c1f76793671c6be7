"""Fidelity of the replay: measured vLLM static batches vs the simulator, and the roofline calibration.

Who calls this: ``loadwise fidelity`` (``flows/cli/fidelity.py``), ``make bench``, and its tests; once per
command. Reads the measurement CSVs (``../shared/data/serving_measurements``, LLM-Inference-Bench, or
any CSV of the same columns); writes nothing except the plot ``write_plot`` is asked for.

A measured row is one static batch: ``batch_size`` identical requests at t = 0, ``prompt_tokens`` in
and ``output_tokens`` out each, and the wall time until the last one finished (``latency_s``; for the
TTFT rows, ``output_tokens`` = 1 and the time is the time to first token of the whole batch). It is
replayed through ``training.simulator.simulate`` on one instance of the row's profile (the batch at
t = 0, vLLM's engine defaults for that GPU and model: ``roofline.vllm_instance_config``), and the
simulated time the last request finishes is compared with the measurement.

Calibration (``calibrate``): the five shared ``roofline.Efficiency`` parameters minimise the squared
log error over the rows of the calibration pairs (``scipy.optimize.least_squares``, bounded to
physical ranges). ``fit_calibration`` fits on all pairs and leave-one-pair-out (two pairs, predict
the third); its output is ``training/simulator/specs/calibration.json`` (``loadwise fidelity
--calibrate`` rewrites it).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.length.baselines import OraclePredictor
from training.simulator import ClusterConfig, InstanceConfig, LatencyModel, simulate
from training.simulator.interface import ClusterView, RequestView
from training.simulator.request import Request
from training.simulator.roofline import (
    CALIBRATION_JSON,
    Efficiency,
    GpuSpec,
    ModelSpec,
    RooflineLatencyModel,
    calibrated_efficiency,
    calibration_table,
    gpu_specs,
    model_specs,
    split_profile_name,
    vllm_instance_config,
)

HARDWARE_GPU = {
    "Nvidia H100 GPU": "h100",
    "Nvidia A100 GPU": "a100-40gb",
}
"""LLM-Inference-Bench hardware labels -> GPU keys of ``specs/gpus.csv`` (a GPU key is also accepted
as the label). The A100 rows state no memory size; the 40 GB card is the one the data supports
(docs/simulator.md, *Fidelity*)."""

STATIC_COLUMNS = ("hardware", "model", "input_output_tokens", "batch_size", "latency_s")
TTFT_COLUMNS = ("hardware", "model", "input_tokens", "output_tokens", "batch_size", "ttft_s")

EFFICIENCY_BOUNDS = ((0.3, 0.2, 0.0, 0.0, 0.02), (1.0, 1.0, 0.05, 5e-4, 1.0))
"""Physical ranges of (eff_bw, eff_flops, overhead_s, per_seq_s, eff_attn) the fit is bounded to."""


@dataclass(frozen=True, slots=True)
class Measured:
    """One measured static batch. ``kind`` is ``latency`` (end to end) or ``ttft``."""

    gpu: str
    model: str
    prompt_tokens: int
    output_tokens: int
    batch_size: int
    measured_s: float
    kind: str

    @property
    def pair(self) -> str:
        return f"{self.gpu}-{self.model}"


@dataclass(frozen=True, slots=True)
class Replayed:
    """A measured row and its simulated time (seconds); ``error`` = simulated / measured - 1."""

    row: Measured
    simulated_s: float
    preemptions: int

    @property
    def error(self) -> float:
        return self.simulated_s / self.row.measured_s - 1.0

    def as_dict(self) -> dict:
        return {
            **asdict(self.row),
            "pair": self.row.pair,
            "simulated_s": self.simulated_s,
            "error": self.error,
            "preemptions": self.preemptions,
        }


class FidelityError(ValueError):
    """A measurement file that cannot be read as static batches (the message names file and line)."""


def _gpu_key(label: str, where: str) -> str:
    key = HARDWARE_GPU.get(label.strip(), label.strip())
    if key not in gpu_specs():
        raise FidelityError(
            f"{where}: unknown hardware {label!r}; use a GPU key of training/simulator/specs/gpus.csv "
            f"({', '.join(gpu_specs())}) or one of {', '.join(HARDWARE_GPU)}"
        )
    return key


def _model_key(label: str, where: str) -> str:
    label = label.strip()
    models = model_specs()
    if label in models:
        return label
    for key, spec in models.items():
        if spec.hf_id == label:
            return key
    raise FidelityError(
        f"{where}: unknown model {label!r}; add it to training/simulator/specs/models.csv "
        f"(known: {', '.join(s.hf_id for s in models.values())})"
    )


def read_measurements(path: str | Path) -> list[Measured]:
    """Rows of a static-batch CSV (``STATIC_COLUMNS``) or a TTFT CSV (``TTFT_COLUMNS``), by header."""
    path = Path(path)
    if not path.exists():
        raise FidelityError(f"{path}: measurement file not found")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = set(reader.fieldnames or ())
        if set(STATIC_COLUMNS) <= header:
            kind = "latency"
        elif set(TTFT_COLUMNS) <= header:
            kind = "ttft"
        else:
            raise FidelityError(
                f"{path}: expected the columns {', '.join(STATIC_COLUMNS)} (static batches) or "
                f"{', '.join(TTFT_COLUMNS)} (TTFT), got {', '.join(sorted(header))}"
            )
        out = []
        for line, r in enumerate(reader, start=2):
            where = f"{path}:{line}"
            try:
                if kind == "latency":
                    prompt = output = int(r["input_output_tokens"])
                    measured = float(r["latency_s"])
                else:
                    prompt, output = int(r["input_tokens"]), int(r["output_tokens"])
                    measured = float(r["ttft_s"])
                batch = int(r["batch_size"])
            except (TypeError, ValueError) as exc:
                raise FidelityError(f"{where}: {exc}") from None
            if prompt < 1 or output < 1 or batch < 1 or not measured > 0:
                raise FidelityError(f"{where}: tokens and batch size must be >= 1 and the time > 0")
            out.append(
                Measured(
                    _gpu_key(r["hardware"], where),
                    _model_key(r["model"], where),
                    prompt,
                    output,
                    batch,
                    measured,
                    kind,
                )
            )
    if not out:
        raise FidelityError(f"{path}: no rows")
    return out


def default_measurement_files(data_dir: str | Path | None = None) -> list[Path]:
    """The calibration subset in shared data: static batches and TTFT."""
    if data_dir is None:
        from warehouse.settings import shared_data_dir

        data_dir = shared_data_dir()
    base = Path(data_dir) / "serving_measurements"
    return [base / "static_batches_vllm.csv", base / "ttft_vllm.csv"]


class _Only:
    """Every request to instance 0 (a static batch on one instance)."""

    name = "only"

    def reset(self, num_instances: int, seed: int) -> None:
        pass

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        return 0


def replay_batch(row: Measured, latency: LatencyModel, instance: InstanceConfig) -> Replayed:
    """Simulate one measured static batch (all requests at t = 0 on one instance)."""
    requests = [
        Request(f"b{i}", 0.0, row.prompt_tokens, row.output_tokens, "static") for i in range(row.batch_size)
    ]
    res = simulate(
        requests, _Only(), ClusterConfig(num_instances=1, instance=instance), latency, OraclePredictor()
    )
    return Replayed(row, float(np.max(res.finish_s)), int(np.sum(res.preemptions)))


def specs_of(pair: str) -> tuple[GpuSpec, ModelSpec]:
    found = split_profile_name(pair)
    if found is None:
        raise FidelityError(f"{pair!r} is no <gpu>-<model> pair of the spec tables")
    return found


def replay_rows(rows: Sequence[Measured], efficiency: Efficiency) -> list[Replayed]:
    """Every row on the roofline profile of its own pair with ``efficiency``."""
    out = []
    for row in rows:
        gpu, model = specs_of(row.pair)
        latency = RooflineLatencyModel(gpu, model, efficiency)
        out.append(replay_batch(row, latency, vllm_instance_config(gpu, model)))
    return out


def calibrate(rows: Sequence[Measured], start: Efficiency | None = None) -> Efficiency:
    """The ``Efficiency`` that minimises sum of log(simulated / measured)^2 over ``rows``."""
    from scipy.optimize import least_squares

    configs = {}
    for row in rows:
        if row.pair not in configs:
            gpu, model = specs_of(row.pair)
            configs[row.pair] = (gpu, model, vllm_instance_config(gpu, model))
    measured = np.array([r.measured_s for r in rows])

    def residuals(x: np.ndarray) -> np.ndarray:
        eff = Efficiency(*(float(v) for v in x))
        sim = np.empty(len(rows))
        for i, row in enumerate(rows):
            gpu, model, inst = configs[row.pair]
            sim[i] = replay_batch(row, RooflineLatencyModel(gpu, model, eff), inst).simulated_s
        return np.log(sim / measured)

    x0 = np.array(list((start or CALIBRATION_START).as_dict().values()))
    fit = least_squares(
        residuals, x0, bounds=EFFICIENCY_BOUNDS, x_scale=[0.1, 0.1, 0.001, 1e-5, 0.1], diff_step=1e-3
    )
    return Efficiency(*(float(v) for v in fit.x))


def summary(replayed: Sequence[Replayed], kind: str = "latency") -> dict[str, float]:
    """Median and max |error| (fractions) and the row count over rows of ``kind``."""
    errs = np.array([abs(r.error) for r in replayed if r.row.kind == kind])
    if not len(errs):
        return {"rows": 0, "median_abs_error": math.nan, "max_abs_error": math.nan}
    return {
        "rows": len(errs),
        "median_abs_error": float(np.median(errs)),
        "max_abs_error": float(errs.max()),
    }


CALIBRATION_START = Efficiency(0.8, 0.6, 0.003, 1e-5, 0.1)
"""Where every fit starts (the optimum does not depend on it within the bounds, checked by hand)."""


def fit_calibration(rows: Sequence[Measured]) -> dict:
    """The fit on every pair of ``rows`` and the leave-one-pair-out fits, as stored in
    ``training/simulator/specs/calibration.json`` (``loadwise fidelity --calibrate`` writes it)."""
    pairs = sorted({r.pair for r in rows})
    out: dict = {
        "fitted_on": pairs,
        "rows": len(rows),
        "objective": "sum of log(simulated / measured)^2 over static-batch latency and TTFT rows",
        "all_pairs": {"efficiency": calibrate(rows, CALIBRATION_START).as_dict()},
        "leave_one_pair_out": {},
    }
    if len(pairs) > 1:
        for held in pairs:
            eff = calibrate([r for r in rows if r.pair != held], CALIBRATION_START)
            out["leave_one_pair_out"][held] = {"efficiency": eff.as_dict()}
    return out


_VIDUR_GPU = {"a100-80gb": "a100-80gb", "h100-80gb": "h100", "a40": "a40", "v100-32gb": "v100"}
"""GPU names of ``profiles.HardwareProfile`` -> GPU keys of the spec tables (to match rows to a profile)."""


def rows_of_profile(rows: Sequence[Measured], profile: str) -> list[Measured]:
    """The rows measured on ``profile``'s GPU and model (``--profile``)."""
    from training.simulator.profiles import hardware_profile

    hw = hardware_profile(profile)
    gpu = _VIDUR_GPU.get(hw.gpu.name, hw.gpu.name)
    models = model_specs()
    return [r for r in rows if r.gpu == gpu and models[r.model].hf_id == hw.model]


def run_fidelity(rows: Sequence[Measured], profile: str | None = None) -> dict:
    """Replay every row and summarise (one JSON-able dict; ``loadwise fidelity`` prints it).

    Without ``profile``: each row on the roofline profile of its own pair, twice: with the fit on all
    calibration pairs (``calibrated``) and with the leave-one-pair-out fit that never saw the row's
    pair (``held_out``; pairs that were not in the calibration use the all-pairs fit, which never saw
    them either). With ``profile`` (any name ``load_latency_model`` takes, e.g. the Vidur-based
    ``h100-llama2-7b``): only the rows of that profile's GPU and model, on that profile and its
    ``default_instance_config``. Raises FidelityError when no row matches.
    """
    from training.simulator.profiles import default_instance_config, load_latency_model

    if profile is not None:
        picked = rows_of_profile(rows, profile)
        if not picked:
            known = ", ".join(sorted({r.pair for r in rows}))
            raise FidelityError(
                f"no measured rows for profile {profile!r} (pairs in the measurements: {known})"
            )
        latency = load_latency_model(profile)
        inst = default_instance_config(profile)
        runs = {profile: [replay_batch(r, latency, inst) for r in picked]}
    else:
        loo = calibration_table(str(CALIBRATION_JSON))["leave_one_pair_out"]
        calibrated = replay_rows(rows, calibrated_efficiency())
        held_out = []
        for r in rows:
            eff = calibrated_efficiency(r.pair) if r.pair in loo else calibrated_efficiency()
            held_out.extend(replay_rows([r], eff))
        runs = {"calibrated": calibrated, "held_out": held_out}
    out_rows = []
    names = list(runs)
    for i, row in enumerate(next(iter(runs.values()))):
        entry = row.as_dict()
        del entry["simulated_s"], entry["error"], entry["preemptions"]
        for name in names:
            rep = runs[name][i]
            entry[name] = {"simulated_s": rep.simulated_s, "error": rep.error, "preemptions": rep.preemptions}
        out_rows.append(entry)
    pairs = sorted({r["pair"] for r in out_rows})
    summaries = {
        name: {
            pair: {
                kind: summary([x for x in runs[name] if x.row.pair == pair], kind)
                for kind in ("latency", "ttft")
            }
            for pair in pairs
        }
        for name in names
    }
    return {"profile": profile, "runs": names, "rows": out_rows, "summary": summaries}


def write_plot(report: dict, path: str | Path) -> Path:
    """Predicted vs measured seconds (log-log), one colour per pair, one marker per run, the y = x line
    and a +-20 % band. Returns the path (parents created)."""
    from eval.plots import _pyplot

    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    pairs = sorted({r["pair"] for r in report["rows"]})
    markers = ("o", "x", "s", "^")
    lo, hi = math.inf, 0.0
    for k, run in enumerate(report["runs"]):
        for j, pair in enumerate(pairs):
            picked = [r for r in report["rows"] if r["pair"] == pair]
            x = np.array([r["measured_s"] for r in picked])
            y = np.array([r[run]["simulated_s"] for r in picked])
            lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
            ax.scatter(
                x, y, s=22, marker=markers[k % len(markers)], color=f"C{j % 10}", label=f"{pair} ({run})"
            )
    line = np.array([lo * 0.8, hi * 1.25])
    ax.plot(line, line, color="black", linewidth=0.8)
    ax.fill_between(line, line * 0.8, line * 1.2, color="grey", alpha=0.15, label="±20 %")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured (s)")
    ax.set_ylabel("simulated (s)")
    ax.set_title("vLLM static batches: simulated vs measured")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
