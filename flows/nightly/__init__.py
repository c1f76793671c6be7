"""The ``nightly-retrain`` flow as a package: one module per step, the flow that sequences them.

| module | holds |
|---|---|
| ``config`` | ``NightlyConfig`` and its typed sub-configs (no Prefect import: a bad config fails fast) |
| ``results`` | typed step results: ``IngestResult``, ``DriftResult``, ``StepOutcome``, ``RouterOutcome`` |
| ``keys`` | the step caches: explicit keys over each step's inputs (``step_key``, ``StepCache``) |
| ``ingest`` | step 1, ``ingest-traces`` |
| ``drift`` | step 2, ``check-drift`` |
| ``models`` | step 3, ``retrain-impact-estimator`` and ``retrain-length-predictor`` |
| ``router`` | step 4, ``train-router``, ``evaluate-router``, ``register-router``, ``promote-router`` |
| ``report`` | step 5, ``publish-report``: report, artifacts, the ``ops.nightly_runs`` row |
| ``flow`` | ``nightly_retrain`` (the Prefect flow) and ``run_nightly`` (``loadwise run``) |

Each step's work is a task of ``flows.tasks`` (shared with the standalone flows) calling a library
(``warehouse``, ``features``, ``eval``, ``flows.models``). Importing the package imports its config
only; the flow is ``flows.nightly.flow.nightly_retrain``.
"""

from flows.nightly.config import NightlyConfig

__all__ = ["NightlyConfig"]
