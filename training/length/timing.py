"""Time one training of the length predictor: each progress line with the wall and process CPU
seconds since the previous one, the totals, and the test metrics (a JSON file to compare runs).

Who calls this: a person measuring the training's cost (BENCHMARKS.md, "Length predictor in the
nightly"; docs/length_predictor.md, "Training time on the 2-core CPU"), once per measurement:

    .venv/bin/python -m training.length.timing --warehouse PATH [--json OUT.json]

It trains ``PredictorConfig()`` (the nightly's default) on the warehouse's rows (read-only) and
saves nothing. CPU seconds are ``time.process_time`` (every thread of the process); on the shared
2-core machine they are the steadier figure, the wall seconds count the waits for a core.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from training.length.config import PredictorConfig


def time_training(warehouse: Path, cfg: PredictorConfig | None = None, say: Any = print) -> dict[str, Any]:
    """Train ``cfg`` (default: ``PredictorConfig()``) on ``warehouse``; returns wall and CPU seconds,
    the load average before and after, and the report's overall scores, calibration and selection."""
    from training.length.train import train_length_predictor

    load_before = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    last = [t0, c0]

    def progress(msg: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        say(f"[{now - t0:7.1f} s wall | +{now - last[0]:6.1f} s wall, +{cpu - last[1]:6.1f} s CPU] {msg}")
        last[0], last[1] = now, cpu

    trained = train_length_predictor(Path(warehouse), cfg or PredictorConfig(), progress=progress)
    report = trained.report
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "overall": {k: v for k, v in report.overall.model_dump().items() if not isinstance(v, dict | list)},
        "calibration": report.calibration,
        "selection": report.selection,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--warehouse", type=Path, required=True, help="DuckDB file with CASTILLO rows")
    p.add_argument("--json", type=Path, default=None, help="write the figures and metrics here")
    args = p.parse_args(argv)
    figures = time_training(args.warehouse)
    print(
        f"total: {figures['wall_s']:.1f} s wall, {figures['cpu_s']:.1f} s CPU; load average "
        f"{figures['load_before'][0]:.1f} -> {figures['load_after'][0]:.1f}; test accuracy "
        f"{figures['overall']['accuracy']:.4f}, MAE {figures['overall']['mae_tokens']:.3f} tokens, "
        f"ECE {figures['calibration'].get('ece', float('nan')):.6f}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
