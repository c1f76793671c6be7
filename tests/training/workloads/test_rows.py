"""Canonical rows (Arrow) → simulator requests."""

from __future__ import annotations

import pyarrow as pa
import pytest

from training.workloads.rows import requests_from_table


def test_sorted_rebased_clipped_with_optional_columns():
    table = pa.table(
        {
            "request_id": ["a", "b", "c"],
            "arrival_s": [12.0, 10.0, 12.0],
            "prompt_tokens": [100, 200, 300],
            "output_tokens": [5, 9000, 7],
            "task": ["code", None, "conv"],
            "prefix_hash_ids": [[1, 2], None, []],
        }
    )
    reqs = requests_from_table(table, max_output_tokens=4096)
    assert [r.request_id for r in reqs] == ["b", "a", "c"]  # stable for equal arrivals
    assert [r.arrival_s for r in reqs] == [0.0, 2.0, 2.0]
    assert reqs[0].output_tokens == 4096
    assert reqs[0].task == ""
    assert reqs[1].prefix_hash_ids == (1, 2)
    assert reqs[2].prefix_hash_ids is None
    assert reqs[0].prompt_text is None


def test_missing_required_column_is_named():
    with pytest.raises(ValueError, match="output_tokens"):
        requests_from_table(pa.table({"request_id": ["a"], "arrival_s": [0.0], "prompt_tokens": [1]}))
