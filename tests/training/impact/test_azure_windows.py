"""The estimator's Azure windows are read through the warehouse, and are the same as before it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from training.impact.fit import EstimatorConfig, azure_windows
from training.simulator.request import Request
from training.workloads.catalog import AZURE_FILES, MAX_OUTPUT_TOKENS

HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def _windows_digest(windows: list[tuple[str, str, list[Request]]]) -> str:
    h = hashlib.sha256()
    for rid, desc, reqs in windows:
        h.update(repr((rid, desc)).encode())
        for r in reqs:
            fields = (r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens, r.task)
            h.update(repr((*fields, r.prefix_hash_ids, r.prompt_text)).encode())
    return h.hexdigest()


def test_bad_rows_are_quarantined_not_a_crash_and_ties_keep_code_first(tmp_path: Path) -> None:
    """A malformed line used to crash the pandas read (a text column compared with 0) and a line
    whose time runs backwards was kept; the warehouse's reader quarantines both, like every trace."""
    folder = tmp_path / "azure_llm_2023"
    folder.mkdir()
    (folder / AZURE_FILES["code"]).write_text(
        HEADER
        + "2023-11-16 18:00:00.0000000,100,10\n"
        + "2023-11-16 18:00:01.0000000,abc,20\n"  # bad_prompt_tokens
        + "2023-11-16 18:00:02.0000000,300,9000\n"  # output clipped at MAX_OUTPUT_TOKENS
        + "2023-11-16 17:59:00.0000000,400,40\n"  # time_backwards
    )
    (folder / AZURE_FILES["conv"]).write_text(
        HEADER + "2023-11-16 18:00:00.0000000,500,50\n" + "2023-11-16 18:00:03.5000000,600,60\n"
    )
    cfg = EstimatorConfig(num_replays=2, holdout_replays=1, requests_per_replay=10, rates_rps=(1.0,))
    windows = azure_windows(cfg, tmp_path)
    got = [[(r.task, r.prompt_tokens, r.output_tokens) for r in reqs] for _, _, reqs in windows]
    assert got == [
        [("code", 100, 10), ("conv", 500, 50)],  # same instant: code before conv, as before
        [("code", 300, MAX_OUTPUT_TOKENS), ("conv", 600, 60)],
    ]
    assert [r.arrival_s for r in windows[1][2]] == pytest.approx([0.0, 1.0])  # time-scaled to 1 req/s
    assert windows[0][1] == "azure window 0 (from 18:00:00) at 1 req/s"


def test_a_missing_trace_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"AzureLLMInferenceTrace_code\.csv"):
        azure_windows(EstimatorConfig(), tmp_path)


# sha256 of the windows as the pandas reader made them (before issue 14): the warehouse's reader
# gives the same requests, arrivals bit for bit, so the fitted coefficients do not change.
WINDOW_DIGESTS = {
    (6, 1500, (4.0, 8.0, 16.0)): "c91139d8451d2d28505801676e0dcaa1289d2a2e97d6b3857d05c82c8cf5b2db",
    (3, 300, (4.0, 8.0, 16.0)): "80e79c9e6425b4b4775f184825f6b4afd80f20ed7c29e35b0a3f866e65c86a1f",
    (7, 5000, (3.0, 5.5)): "a33c83b0a53ba24ef42f4588f838f745aa9fe079c7760fe22246b35e33198f19",
}


@pytest.mark.parametrize("shape", list(WINDOW_DIGESTS))
def test_real_windows_are_the_same_as_before(shared_data: Path, shape: tuple) -> None:
    n, per, rates = shape
    cfg = EstimatorConfig(num_replays=n, holdout_replays=1, requests_per_replay=per, rates_rps=rates)
    assert _windows_digest(azure_windows(cfg, shared_data)) == WINDOW_DIGESTS[shape]
