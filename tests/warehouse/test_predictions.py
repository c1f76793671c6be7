"""marts.length_predictions (warehouse/predictions.py): checked writes, the cache key, and the
calibration views analysts read."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from warehouse.predictions import input_hash, read_predictions, stored_hashes, write_predictions
from warehouse.store import connect_readonly, write_session

EDGES = [250.0, 1000.0, 4000.0]


def _rows(**over: list) -> pa.Table:
    cols = {
        "request_id": ["a", "b", "c"],
        "model_name": ["length-predictor"] * 3,
        "model_version": ["1"] * 3,
        "input_hash": ["h-a", "h-b", "h-c"],
        "expected_output_tokens": [200.0, 60.0, 900.0],
        "bucket_probs": [[0.7, 0.2, 0.1, 0.0], [1.0, 0.0, 0.0, 0.0], [0.1, 0.6, 0.3, 0.0]],
        "bucket_edges": [EDGES] * 3,
        "answered_by": ["text", "tabular", "text"],
    }
    cols.update(over)
    return pa.table(cols)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    with write_session(path) as con:
        con.execute(
            "INSERT INTO marts.requests_stored "
            "(request_id, prompt_text, prompt_tokens, output_tokens, task, status) VALUES "
            "('a', 'p1', 5, 300, 'code', 'ok'), ('b', NULL, 5, 10, 'code', 'ok'), "
            "('c', 'p2', 5, 2000, 'chat', 'ok')"
        )
    return path


def test_write_read_and_the_cache_key(db: Path):
    assert stored_hashes(db, "length-predictor", "1") == {}
    assert write_predictions(db, _rows()) == 3
    assert stored_hashes(db, "length-predictor", "1") == {"a": "h-a", "b": "h-b", "c": "h-c"}
    got = read_predictions(db, "length-predictor", "1", ["c", "a", "zzz"]).to_pylist()
    assert [r["request_id"] for r in got] == ["a", "c"]
    assert got[1]["bucket_probs"] == [0.1, 0.6, 0.3, 0.0]
    assert got[1]["bucket_edges"] == EDGES
    # the same key again replaces the row (a changed input is predicted again)
    write_predictions(db, _rows(input_hash=["h-a2", "h-b", "h-c"]).slice(0, 1))
    assert stored_hashes(db, "length-predictor", "1")["a"] == "h-a2"
    assert read_predictions(db, "length-predictor", "2").num_rows == 0  # another version: nothing
    assert input_hash("x", 3, "t") == input_hash("x", 3, "t") != input_hash("x", 4, "t")
    assert input_hash(None, 3, None) == input_hash("", 3, "")


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"bucket_probs": [[0.5, 0.4, 0.0, 0.0]] * 3}, "sum to 1"),
        ({"bucket_probs": [[1.0, 0.0, 0.0]] * 3}, "need edges \\+ 1"),
        ({"expected_output_tokens": [0.0, 1.0, 1.0]}, "> 0"),
        ({"answered_by": ["text", "guess", "text"]}, "answered_by"),
        ({"bucket_edges": [[250.0, 250.0, 4000.0]] * 3}, "increase"),
    ],
)
def test_a_row_that_breaks_the_contract_writes_nothing(db: Path, bad: dict, why: str):
    with pytest.raises(ValueError, match=why):
        write_predictions(db, _rows(**bad))
    assert stored_hashes(db, "length-predictor", "1") == {}


def test_the_calibration_views(db: Path):
    write_predictions(db, _rows())
    con = connect_readonly(db)
    try:
        errors = con.execute(
            "SELECT request_id, predicted_bucket, actual_bucket, abs_error_tokens, confidence "
            "FROM marts.length_prediction_errors ORDER BY 1"
        ).fetchall()
        by_bucket = con.execute(
            "SELECT task, predicted_bucket, requests, bucket_accuracy, mean_confidence, mae_tokens "
            "FROM marts.length_calibration ORDER BY 1, 2"
        ).fetchall()
        summary = con.execute(
            "SELECT task, requests, bucket_accuracy, ece, mae_tokens FROM marts.length_calibration_summary "
            "ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    # a: 300 tokens is bucket 1 (250 < n <= 1000), predicted 0; b: 10 -> 0 = 0; c: 2000 -> 2, predicted 1
    assert errors == [("a", 0, 1, 100.0, 0.7), ("b", 0, 0, 50.0, 1.0), ("c", 1, 2, 1100.0, 0.6)]
    assert by_bucket == [("chat", 1, 1, 0.0, 0.6, 1100.0), ("code", 0, 2, 0.5, 0.85, 75.0)]
    # ECE: confidence bins 0.6 (c: acc 0), 0.7 (a: acc 0), 1.0 (b: acc 1) -> (0.6 + 0.7 + 0) / 3
    assert summary[0][:3] == ("(all)", 3, pytest.approx(1 / 3))
    assert summary[0][3] == pytest.approx((0.6 + 0.7 + 0.0) / 3)
    assert [s[0] for s in summary] == ["(all)", "chat", "code"]
