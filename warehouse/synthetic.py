"""A seeded, Azure-like synthetic workload, written in the Azure LLM inference trace CSV schema.

Called by the pipeline when the shared data folder is absent (so ``loadwise run`` works anywhere)
and by the ingest benchmark (a >= 1M-row file). The files go through the same reader as the real
Azure traces; the pipeline labels their source ``synthetic``.

The mix imitates the two Azure 2023 services (see ../shared/data/README.md): ``code`` requests
have long prompts and short outputs (prompt median ~1500, output median ~13 tokens), ``conv``
requests shorter prompts and longer outputs (~1000 / ~130). Arrivals are Poisson at
``rate_per_s`` (code : conv = 1 : 2). Lengths are log-normal, clipped to [1, 8192].
Deterministic: same config → byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

SERVICES = {
    # task: (share of requests, prompt median, prompt sigma, output median, output sigma)
    "code": (1 / 3, 1500.0, 0.9, 13.0, 1.3),
    "conv": (2 / 3, 1000.0, 0.8, 130.0, 0.9),
}
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


@dataclass(frozen=True)
class SyntheticConfig:
    """How much to generate. ``rate_per_s``: mean arrivals per second over both services."""

    rows: int = 20_000
    seed: int = 0
    rate_per_s: float = 8.0
    start: datetime = datetime(2023, 11, 16, 18, 15, 0)


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return np.clip(np.rint(rng.lognormal(np.log(median), sigma, n)), 1, 8192).astype(np.int64)


def _timestamps(start: datetime, seconds: np.ndarray) -> list[str]:
    """Azure-style timestamps with 7 fractional digits (100 ns ticks)."""
    base = np.datetime64(start, "ns")
    stamps = base + np.rint(seconds * 1e9 / 100).astype(np.int64) * 100
    text = np.datetime_as_string(stamps, unit="ns")  # 2023-11-16T18:15:00.123456700
    return [t.replace("T", " ")[:27] for t in text.tolist()]


def write_azure_file(
    path: Path, rows: int, task: str = "conv", *, seed: int = 0, rate_per_s: float = 8.0,
    start: datetime = SyntheticConfig.start, chunk: int = 200_000,
) -> Path:  # fmt: skip
    """Write one Azure-schema CSV of ``rows`` requests of service ``task`` (streamed in chunks)."""
    _, p_med, p_sig, o_med, o_sig = SERVICES[task]
    rng = np.random.default_rng(seed)
    clock = 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(HEADER)
        for begin in range(0, rows, chunk):
            k = min(chunk, rows - begin)
            seconds = clock + np.cumsum(rng.exponential(1.0 / rate_per_s, k))
            clock = float(seconds[-1])
            prompts = _lognormal(rng, p_med, p_sig, k).tolist()
            outputs = _lognormal(rng, o_med, o_sig, k).tolist()
            stamps = _timestamps(start, seconds)
            handle.writelines(f"{s},{p},{o}\n" for s, p, o in zip(stamps, prompts, outputs, strict=True))
    return path


def write_azure_like(out_dir: Path, config: SyntheticConfig = SyntheticConfig()) -> list[Path]:
    """Write ``synthetic_code.csv`` and ``synthetic_conv.csv`` (``config.rows`` rows in all) to ``out_dir``.

    Code gets a third of the rows and of the arrival rate, conv the rest; each file has its own
    seed derived from ``config.seed``. Returns the two paths.
    """
    code_rows = max(1, round(config.rows / 3))
    return [
        write_azure_file(
            out_dir / f"synthetic_{task}.csv",
            rows,
            task,
            seed=config.seed * 2 + i,
            rate_per_s=config.rate_per_s * SERVICES[task][0],
            start=config.start,
        )
        for i, (task, rows) in enumerate((("code", code_rows), ("conv", max(1, config.rows - code_rows))))
    ]
