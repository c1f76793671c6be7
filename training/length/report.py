"""The paper's Table 1 on our data: bucket schemes x task hint, next to model-free baselines.

Who calls this: a person or CI regenerating docs/length_predictor.md, once per change of the
predictor (about 10 minutes on a 2-core CPU for the default sweep: the encoder runs once per hint
mode, every head trains on cached features):

    python -m training.length.report --out /tmp/length_table1.md

Jain et al. (arXiv 2408.13510), Table 1: top-1 bucket accuracy for time-based and equal buckets,
with and without the task hint. We add the finer log2 buckets, the per-prompt ceiling, the honest
score (share of the gap from per-task majority to the ceiling that the model closes), Kendall's
tau and MAE, and the CPU latency of the default predictor.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from training.length.config import PredictorConfig
from training.length.metrics import LengthReport


class Table1Report(BaseModel):
    """Several runs on the same split (same serving model and seed), one row per (scheme, hint)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    serving_model: str
    seed: int
    runs: list[LengthReport]
    train_seconds: list[float]
    latency: dict[str, float] | None = None
    command: str = ""

    def to_markdown(self) -> str:
        lines = [
            f"## Table 1 on our data: {self.serving_model} (seed {self.seed})",
            "",
        ]
        if self.command:
            lines += [f"Produced by `{self.command}`.", ""]
        lines += [
            "Top-1 bucket accuracy over (prompt, sample) pairs of the test prompts. *model* = the "
            "text model (*minilm*: frozen MiniLM + head; *tfidf*: TF-IDF + logistic regression; "
            "*ensemble*: their probabilities averaged, TF-IDF weight *w*); *tabular* = gradient boosting "
            "on prompt length + task (no text). *gap closed* = "
            "(model - task majority) / (ceiling - task majority). *C*, *w*: chosen on the validation "
            "prompts; *MiniLM alone* / *TF-IDF alone*: the ensemble's parts on the test prompts.",
            "",
            "| buckets | hint | text model | model | tabular | task majority | global majority | ceiling "
            "| gap closed | gap closed (tabular) | gap closed (MiniLM alone / TF-IDF alone) | C, w "
            "| tau | MAE (tokens) | ECE (T) | ECE tabular (T) | train s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for run, secs in zip(self.runs, self.train_seconds, strict=True):
            o = run.overall
            comp = run.components
            parts = (
                f"{_num(comp.get('honest_score_minilm'))} / {_num(comp.get('honest_score_tfidf'))}"
                if comp
                else ""
            )
            sel = run.selection
            chosen = ", ".join(
                f"{name} {sel[key]:g}"
                for key, name in (("tfidf_c", "C"), ("ensemble_weight", "w"))
                if key in sel
            )
            lines.append(
                f"| {run.buckets} (k={run.k}) | {run.task_hint} | {run.text_model} | {_pct(o.accuracy)} "
                f"| {_pct(o.accuracy_tabular)} "
                f"| {_pct(o.task_majority)} | {_pct(o.global_majority)} | {_pct(o.ceiling)} "
                f"| {_num(o.honest_score)} | {_num(o.honest_score_tabular)} | {parts} | {chosen} "
                f"| {_num(o.kendall_tau)} | {o.mae_tokens:.0f} | {_ece(run.calibration, '')} "
                f"| {_ece(run.calibration, '_tabular')} | {secs:.0f} |"
            )
        # per-task accuracy, one column per run
        tasks = sorted({t for r in self.runs for t in r.per_task})
        heads = [f"{r.buckets}/{r.task_hint}" for r in self.runs]
        lines += [
            "",
            "Per task: model accuracy per run; task majority and ceiling of each bucket scheme.",
            "",
            "| task | pairs | "
            + " | ".join(heads)
            + " | "
            + " | ".join(f"{s} maj / ceil" for s in self._schemes())
            + " |",
            "|---|---:|" + "---:|" * (len(heads) + len(self._schemes())),
        ]
        for t in tasks:
            cells = [_pct(r.per_task[t].accuracy) if t in r.per_task else "" for r in self.runs]
            base = []
            for s in self._schemes():
                r = next(r for r in self.runs if r.buckets == s)
                ps = r.per_task.get(t)
                base.append(f"{_pct(ps.task_majority)} / {_pct(ps.ceiling)}" if ps else "")
            n = next((r.per_task[t].n_pairs for r in self.runs if t in r.per_task), 0)
            lines.append(f"| {t} | {n} | " + " | ".join(cells) + " | " + " | ".join(base) + " |")
        if self.latency:
            lat = self.latency
            lines += [
                "",
                f"CPU latency of the first run's predictor ({lat.get('threads', 0):.0f} threads, "
                f"max_length {lat.get('max_length', 0):.0f}, {lat.get('n', 0):.0f} real test prompts): "
                f"batch 1 {lat['batch1_ms_per_request']:.1f} ms/request (p50 {lat['batch1_p50_ms']:.1f} ms), "
                f"batch 64 {lat['batch64_ms_per_request']:.1f} ms/request (target <= 12.5).",
            ]
        return "\n".join(lines) + "\n"

    def _schemes(self) -> list[str]:
        seen: list[str] = []
        for r in self.runs:
            if r.buckets not in seen:
                seen.append(r.buckets)
        return seen


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ece(cal: dict[str, float], part: str) -> str:
    """``0.021 (T 0.99)``: test ECE with the validation-fitted temperature; ``n/a`` without."""
    if f"ece{part}" not in cal:
        return "n/a"
    return f"{cal[f'ece{part}']:.3f} (T {cal.get(f'temperature{part}', 1.0):.2f})"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def build_table1(
    warehouse: Path,
    base: PredictorConfig,
    *,
    schemes: Sequence[str] = ("time", "equal", "log2"),
    hints: Sequence[str] = ("prefix", "none"),
    bench_n: int = 256,
    progress: Callable[[str], None] | None = None,
    save_first: Path | None = None,
    command: str = "",
) -> Table1Report:
    """Train one predictor per (scheme, hint) on the same data and split, sharing encoder features.

    ``bench_n > 0`` also measures the first run's CPU latency on ``bench_n`` real test prompts;
    ``save_first`` saves the first run's predictor there.
    """
    from training.length.bench import benchmark_latency, real_prompts
    from training.length.train import FeatureCache, train_length_predictor

    say = progress or (lambda _m: None)
    cache = FeatureCache()
    runs: list[LengthReport] = []
    secs: list[float] = []
    latency = None
    for hint in hints:
        for scheme in schemes:
            cfg = base.model_copy(update={"buckets": scheme, "task_hint": hint})
            say(f"== {scheme} buckets, hint={hint}")
            t0 = time.perf_counter()
            trained = train_length_predictor(warehouse, cfg, say, cache=cache)
            secs.append(time.perf_counter() - t0)
            runs.append(trained.report)
            if len(runs) == 1:
                if save_first is not None:
                    trained.save(save_first)
                if bench_n > 0:
                    say(f"benchmarking on {bench_n} real prompts")
                    latency = benchmark_latency(trained, bench_n, frame=real_prompts(warehouse, cfg, bench_n))
    return Table1Report(
        serving_model=base.serving_model, seed=base.seed, runs=runs, train_seconds=secs, latency=latency,
        command=command,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from warehouse.settings import default_warehouse_path

    p = argparse.ArgumentParser(prog="python -m training.length.report", description=__doc__.split("\n")[0])
    p.add_argument("--warehouse", type=Path, default=None, help="DuckDB warehouse (default: the project's)")
    p.add_argument("--serving-model", default=PredictorConfig().serving_model)
    p.add_argument("--schemes", default="time,equal,log2")
    p.add_argument("--hints", default="prefix,none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=PredictorConfig().max_length)
    p.add_argument(
        "--text-model", default=PredictorConfig().text_model, choices=["minilm", "tfidf", "ensemble"]
    )
    p.add_argument(
        "--finetune-layers",
        type=int,
        default=PredictorConfig().finetune_layers,
        help="encoder layers fine-tuned with the head (0: frozen encoder)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads of the latency benchmark (training always runs one per library: train.py)",
    )
    p.add_argument("--bench-n", type=int, default=256)
    p.add_argument("--out", type=Path, default=None, help="write the markdown here (else stdout)")
    p.add_argument("--json", type=Path, default=None, help="write the Table1Report JSON here")
    p.add_argument("--save-first", type=Path, default=None, help="save the first run's predictor folder")
    p.add_argument("--full", action="store_true", help="also append every run's per-task report")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = PredictorConfig(
        serving_model=args.serving_model,
        seed=args.seed,
        max_length=args.max_length,
        text_model=args.text_model,
        finetune_layers=args.finetune_layers,
    )
    command = "python -m training.length.report " + " ".join(argv if argv is not None else sys.argv[1:])
    table = build_table1(
        args.warehouse or default_warehouse_path(),
        base,
        schemes=[s for s in args.schemes.split(",") if s],
        hints=[h for h in args.hints.split(",") if h],
        bench_n=args.bench_n,
        progress=lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True),
        save_first=args.save_first,
        command=command.strip(),
    )
    md = table.to_markdown()
    if args.full:
        md += "\n" + "\n".join(r.to_markdown() for r in table.runs)
    if args.json:
        args.json.write_text(table.model_dump_json(indent=2))
    if args.out:
        args.out.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
