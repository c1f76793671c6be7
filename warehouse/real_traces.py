"""Which real trace files the pipeline ingests from the shared data folder.

Called by the ``nightly-retrain`` flow once per run. Pure path logic: returns only files that
exist, so a partial data folder ingests what it has; an empty list means "generate synthetic".
"""

from __future__ import annotations

from pathlib import Path

REAL_TRACES: tuple[str, ...] = (
    "azure_llm_2023/AzureLLMInferenceTrace_code.csv",
    "azure_llm_2023/AzureLLMInferenceTrace_conv.csv",
    "castillo/castillo_lengths.parquet",
    "alpaca_eval_outputs/alpaca_eval_outputs_10models.parquet",
    "dolly_partial/dolly_castillo_subset_train.json",
    "dolly_partial/dolly_complete_test.json",
    "dolly_partial/dolly_complete_validate.json",
)


def real_trace_paths(data_dir: Path) -> list[Path]:
    """The files of ``REAL_TRACES`` present under ``data_dir`` (empty when the folder is absent)."""
    return [data_dir / rel for rel in REAL_TRACES if (data_dir / rel).is_file()]
