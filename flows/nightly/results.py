"""What each step of the nightly flow hands to the next: typed, frozen results (no Prefect import).

Who calls this: the step modules of ``flows.nightly`` (they build these), ``flows.tasks`` (the
``check-drift`` task returns a ``DriftResult``) and the flow, which turns them into the run summary
(``payload``: the ``loadwise run --json`` object) and the report, once per run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from eval.gate import GateResult
    from features.drift import DriftThresholds
    from flows.models.publish import Published

Summary = dict[str, dict[str, float | bool | None]]
"""``EvalReport.summary()``: router -> headline figures (seconds, counts, %)."""


@dataclass(frozen=True)
class IngestResult:
    """The ingest step: what was loaded and the warehouse it now holds.

    Attributes:
        warehouse: the DuckDB file.
        synthetic: no real traces were found; a seeded synthetic Azure-like workload was ingested.
        report: the ingest report (``warehouse.ingest.IngestReport.to_dict``: files, counts).
        summary: the analytics summary tables (title, columns, rows).
        latest_file: the newest ``raw.files.file_id``: the watermark a successful run advances to.
    """

    warehouse: str
    synthetic: bool
    report: dict[str, object]
    summary: list[dict[str, object]]
    latest_file: int


@dataclass(frozen=True)
class DriftResult:
    """The drift step: the new window (files after the watermark) vs the reference window.

    ``drifted`` is ``None`` when the check could not run (``reasons`` says why: a first run has no
    reference window, or nothing arrived since the watermark)."""

    reference_requests: int
    new_requests: int
    drifted: bool | None
    reasons: tuple[str, ...]
    markdown: str

    @classmethod
    def between(cls, reference: pd.DataFrame, new: pd.DataFrame, thresholds: DriftThresholds) -> DriftResult:
        """Per-task PSI / KS of prompt and output lengths and the arrival-rate ratio
        (``features.drift.detect_drift``), or why they were not checked."""
        from features.drift import detect_drift

        if reference.empty or new.empty:
            why = (
                "no reference window (first run)"
                if reference.empty
                else "no new requests since the watermark"
            )
            return cls(len(reference), len(new), None, (why,), f"Drift: not checked ({why}).\n")
        report = detect_drift(reference, new, thresholds)
        return cls(len(reference), len(new), report.drifted, tuple(report.reasons), report.to_markdown())

    def payload(self) -> dict[str, object]:
        """The run summary's ``drift``."""
        return {
            "reference_requests": self.reference_requests,
            "new_requests": self.new_requests,
            "drifted": self.drifted,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class StepOutcome:
    """What one step did: ``ran``, ``cached``, ``skipped: <why>``; ``promote-router``: ``promoted`` or
    ``kept the champion``."""

    step: str
    outcome: str


@dataclass(frozen=True)
class StepEvent:
    """A step starting, ending (its outcome and duration) or advancing (``done`` of ``total``).

    ``outcome``: ``started``, ``progress``, or the step's outcome (``ran``, ``cached``, ``skipped:
    why``, ...); ``seconds``: since the step started (``None`` for a step skipped before it started).
    """

    step: str
    outcome: str
    seconds: float | None = None
    done: int | None = None
    total: int | None = None
    unit: str = ""

    @property
    def ended(self) -> bool:
        return self.outcome not in ("started", "progress")

    def message(self) -> str:
        """One line: ``train-router: started``, ``train-router: ran in 84.2 s``, ``evaluate-router:
        12/40 replays``."""
        if self.outcome == "progress":
            return f"{self.step}: {self.done}/{self.total} {self.unit}".rstrip()
        took = f" in {self.seconds:.1f} s" if self.ended and self.seconds is not None else ""
        return f"{self.step}: {self.outcome}{took}"


class StepLog:
    """The steps of one run in order: their outcomes (the summary's ``steps``), the one running now
    (named in ``ops.nightly_runs`` when the run fails) and, for ``notify``, every step's start, end
    (with its duration) and progress as it happens (the flow logs them to Prefect; ``loadwise run``
    prints them). Written by the flow and its steps only."""

    def __init__(
        self,
        notify: Callable[[StepEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.running = "start"
        self._outcomes: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._cpu_started: dict[str, float] = {}
        self._seconds: dict[str, float] = {}
        self._cpu_seconds: dict[str, float] = {}
        self._notify = notify or (lambda event: None)
        self._clock = clock
        self._cpu_clock = cpu_clock

    def start(self, step: str) -> None:
        """``step`` starts; a step started before and given no outcome (``ingest-traces``,
        ``check-drift``) ends here, as ``done``."""
        for earlier in [s for s in self._started if s != step]:
            self._seconds[earlier] = self._clock() - self._started.pop(earlier)
            self._cpu_seconds[earlier] = self._cpu_clock() - self._cpu_started.pop(earlier)
            self._notify(StepEvent(earlier, "done", self._seconds[earlier]))
        self.running = step
        self._started[step] = self._clock()
        self._cpu_started[step] = self._cpu_clock()
        self._notify(StepEvent(step, "started"))

    def record(self, outcome: StepOutcome) -> None:
        self._outcomes[outcome.step] = outcome.outcome
        began = self._started.pop(outcome.step, None)
        cpu_began = self._cpu_started.pop(outcome.step, None)
        seconds = None if began is None else self._clock() - began
        if seconds is not None:
            self._seconds[outcome.step] = seconds
        if cpu_began is not None:
            self._cpu_seconds[outcome.step] = self._cpu_clock() - cpu_began
        self._notify(StepEvent(outcome.step, outcome.outcome, seconds))

    def progress(self, step: str, done: int, total: int, unit: str = "") -> None:
        """``done`` of ``total`` units of a long step (RL training steps, evaluation replays)."""
        self._notify(StepEvent(step, "progress", self._clock() - self._started.get(step, self._clock()),
                               done, total, unit))  # fmt: skip

    def ran(self, step: str, cached: bool) -> None:
        self.record(StepOutcome(step, "cached" if cached else "ran"))

    def skip(self, steps: Iterable[str], why: str) -> None:
        for step in steps:
            self.record(StepOutcome(step, f"skipped: {why}"))

    def outcomes(self) -> dict[str, str]:
        return dict(self._outcomes)

    def seconds(self) -> dict[str, float]:
        """Wall seconds of every step that has ended, in the order they ended (a step skipped before
        it started has none). The report's and ``ops.nightly_runs``' step times, every night."""
        return dict(self._seconds)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system, every thread of this process: ``time.process_time``) of every
        step that has ended, beside ``seconds``. On a shared machine the wall time counts the waits
        for a core and this does not, so it is the steadier figure of a step's cost; work a step
        hands to other processes (a Dask task runner's workers) is not in it."""
        return dict(self._cpu_seconds)

    def retrained(self) -> list[str]:
        """The steps that ran (not cached, not skipped)."""
        return [step for step, outcome in self._outcomes.items() if outcome == "ran"]

    def skipped(self) -> list[str]:
        return [outcome for outcome in self._outcomes.values() if outcome.startswith("skipped")]


@dataclass(frozen=True)
class CandidateStats:
    """One RL router candidate's training figures (validation on TRAINING-pool windows)."""

    seed: int
    best_validation_e2e_s: float
    steps_per_s: float
    wall_s: float


@dataclass(frozen=True)
class CandidateFigures:
    """One router candidate of the night on the held-out windows (means over seeds; seconds, %).

    ``policy``: ``rl`` or ``rule:<name>``; ``vs_best_baseline_pct``: positive = faster than the best
    baseline's mean E2E; ``chosen``: the night's best, the one registered and gated."""

    name: str
    policy: str
    description: str
    mean_e2e_s: float
    p99_e2e_s: float
    vs_best_baseline_pct: float
    chosen: bool


@dataclass(frozen=True)
class RouterOutcome:
    """The router steps: the registered challenger, its evaluation and the gate's decision.

    Attributes:
        published: the challenger's registration, its ``decision`` the promotion's (``None``: the
            router steps were skipped).
        evaluation: ``EvalReport.summary()`` of the evaluation (``None``: not evaluated this run).
        evaluation_id: that evaluation's id (``EvalReport.stored_id``), the key of its rows in
            ``marts.eval_results`` and of the run's ``ops.nightly_runs.evaluation_id``.
        gate: the statistical gate's result.
        promoted: whether ``champion`` moved to the challenger.
        challenger_version: the ``llm-router`` version judged (or already the champion).
        eval_dir: the evaluation's folder (report, plots).
        candidates: every candidate's held-out figures (RL policies and tuned rules).
        chosen / chosen_policy / chosen_why: the night's best candidate, its kind, why it won.
    """

    published: Published | None = None
    evaluation: Summary | None = None
    evaluation_id: str | None = None
    gate: GateResult | None = None
    promoted: bool = False
    challenger_version: str | None = None
    eval_dir: Path | None = None
    candidates: tuple[CandidateFigures, ...] = ()
    chosen: str | None = None
    chosen_policy: str | None = None
    chosen_why: str | None = None

    def payload(self) -> dict[str, object] | None:
        """The run summary's ``router``: the chosen candidate, its kind and why, every candidate."""
        if not self.candidates:
            return None
        return {
            "chosen": self.chosen,
            "policy": self.chosen_policy,
            "why": self.chosen_why,
            "version": self.challenger_version,
            "promoted": self.promoted,
            "candidates": [asdict(c) for c in self.candidates],
        }


@dataclass(frozen=True)
class PredictionsResult:
    """The ``predict-lengths`` step: the routers' length predictor (its report label: ``task_mean``
    or ``length-predictor v<N>``) and, for a registered one, what was stored
    (``flows.models.predictions.predict_lengths_job``: rows, already stored, written, seconds).
    The run summary's ``predictions``."""

    predictor: str
    stored: dict[str, object] | None = None

    def payload(self) -> dict[str, object]:
        return {"predictor": self.predictor, "stored": self.stored}
