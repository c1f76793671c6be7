"""Trace files are read only through the warehouse, and the scratch warehouse of a read is cached."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest

from training.workloads import sources
from training.workloads.catalog import MAX_OUTPUT_TOKENS, WorkloadOptions, get_workload
from training.workloads.sources import (
    clear_scratch_cache,
    scratch_warehouse,
    trace_requests,
    trace_rows,
)
from warehouse.settings import PROJECT_ROOT

AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"

# Readers of files by another name than the warehouse's: a call of one of these, or a DuckDB table
# function in a SQL string, outside warehouse/ reads a file itself.
FILE_READERS = {"read_csv", "read_parquet", "read_json", "read_table", "read_feather", "DictReader", "reader"}
SQL_READERS = ("read_csv(", "read_csv_auto(", "read_parquet(", "read_json(", "read_ndjson(", "parquet_scan(")
# The GPU profiles (Vidur's operator timings) are not traces: the simulator and the estimator's
# linear-layer fit read them directly.
ALLOWED = {
    ("training/simulator/profiles.py", "_read_csv"),
    ("training/simulator/roofline.py", "_read_rows"),  # the GPU / model spec tables, not a trace
    ("eval/fidelity.py", "read_measurements"),  # measured static batches (checked row by row), not a trace
    ("training/impact/fit.py", "fit_linear_part"),
}


def _file_reads(path: Path) -> list[tuple[str, int, str]]:
    """(enclosing function, line, what) for each file read in ``path`` by a reader other than the
    warehouse's."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = func
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = child.name
            if isinstance(child, ast.Call):
                f = child.func
                called = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if called in FILE_READERS:
                    found.append((name, child.lineno, called))
            if isinstance(child, ast.Constant) and isinstance(child.value, str):
                text = child.value.lower()
                found.extend((name, child.lineno, r) for r in SQL_READERS if r in text)
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_only_the_warehouse_reads_trace_files() -> None:
    """Every trace is read through the warehouse's readers (``training.workloads.sources``); the
    estimator's Azure windows and the ``main`` workload's prompt sets used to read the files with
    pandas, bypassing its checks and quarantine."""
    offenders = []
    for package in ("features", "training", "eval", "flows"):
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            rel = path.relative_to(PROJECT_ROOT).as_posix()
            for func, line, what in _file_reads(path):
                if (rel, func) not in ALLOWED:
                    offenders.append(f"{rel}:{line} ({func}) reads with {what}")
    assert offenders == []


def _azure(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(AZURE + "".join(r + "\n" for r in rows))
    return path


def test_trace_reads_are_cached_per_process_by_content(tmp_path: Path) -> None:
    f = _azure(
        tmp_path / "t_code.csv",
        ["2023-11-16 18:00:00.0000000,100,10", "2023-11-16 18:00:01.0000000,200,20"],
    )
    first, report = trace_requests([f], "azure")
    scratch, again = scratch_warehouse([f], "azure")
    assert again is report  # the same ingest, not a second one
    assert trace_requests([f], "azure") == (first, report)
    assert [r.prompt_tokens for r in first] == [100, 200]
    # The same path with other bytes is read afresh.
    _azure(f, ["2023-11-16 18:00:00.0000000,300,10"])
    changed, report2 = trace_requests([f], "azure")
    assert [r.prompt_tokens for r in changed] == [300]
    assert report2.rows_read == 1
    assert scratch_warehouse([f], "azure")[0] != scratch


def test_the_least_recently_used_scratch_is_deleted_over_the_disk_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "SCRATCH_CACHE_BYTES", 1)
    cache = sources._ScratchCache()  # its own folder: the session's cache is left alone
    a = _azure(tmp_path / "a_code.csv", ["2023-11-16 18:00:00.0000000,100,10"])
    b = _azure(tmp_path / "b_code.csv", ["2023-11-16 18:00:00.0000000,200,10"])
    first, _ = cache.get([a], "azure")
    second, _ = cache.get([b], "azure")
    assert not first.exists()  # evicted: over the budget
    assert second.exists()  # the newest is kept whatever its size
    assert cache.get([b], "azure")[0] == second
    cache.clear()
    assert not second.parent.exists()


def test_a_forked_child_never_deletes_its_parents_scratch(tmp_path: Path, monkeypatch) -> None:
    """A child of ``fork`` inherits the cache object: it must start its own folder and never delete
    the parent's, at ``clear_scratch_cache`` or at exit. The child is simulated by its pid (a real
    fork of a process running DuckDB and Prefect threads can hang on a lock held at fork time)."""
    f = _azure(tmp_path / "t_conv.csv", ["2023-11-16 18:00:00.0000000,100,10"])
    parent_pid = os.getpid()
    scratch, _ = scratch_warehouse([f], "azure")
    monkeypatch.setattr(sources.os, "getpid", lambda: parent_pid + 1)  # now "in the child"
    theirs, _ = scratch_warehouse([f], "azure")
    assert theirs.parent != scratch.parent  # the child ingested into its own scratch folder
    clear_scratch_cache()  # deletes the child's own scratch warehouses, never its parent's
    assert not theirs.exists()
    assert scratch.exists()
    sources._remove_folder(scratch.parent, parent_pid)  # the parent's atexit hook, run in the child
    assert scratch.exists()
    monkeypatch.undo()
    assert trace_rows([f], "azure", "prompt_tokens")[0].column(0).to_pylist() == [100]


def test_a_quarantined_row_is_not_replayed_and_is_counted(tmp_path: Path) -> None:
    f = _azure(
        tmp_path / "t_code.csv",
        [
            "2023-11-16 18:00:00.0000000,100,10",
            "2023-11-16 18:00:01.0000000,abc,20",  # bad_prompt_tokens
            "2023-11-16 18:00:02.0000000,300,9000",  # clipped at MAX_OUTPUT_TOKENS by the workloads
        ],
    )
    reqs, report = trace_requests([f], "azure", max_output_tokens=MAX_OUTPUT_TOKENS)
    assert (report.rows_read, report.quarantined) == (3, 1)
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(100, 10), (300, MAX_OUTPUT_TOKENS)]


def test_main_is_built_from_the_cache_without_reading_the_files_again(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``main`` workload ingests ~680k CASTILLO rows once per process (seconds), then reads its
    ~47k rows from the cached scratch warehouse: a second build ingests nothing."""
    options = WorkloadOptions(num_requests=200, data_dir=shared_data)
    first = get_workload("main", options)

    def no_ingest(*args: object, **kwargs: object) -> None:
        raise AssertionError("the second build ingested the trace files again")

    monkeypatch.setattr(sources, "ingest", no_ingest)
    again = get_workload("main", options)
    assert again.sample(0) == first.sample(0)
    assert list(again.train) == list(first.train)


@pytest.mark.parametrize("fmt", ["azure", "auto"])
def test_trace_rows_selects_canonical_columns(tmp_path: Path, fmt: str) -> None:
    f = _azure(tmp_path / "AzureLLMInferenceTrace_code.csv", ["2023-11-16 18:00:00.0000000,100,10"])
    table, _ = trace_rows([f], fmt, "task, prompt_tokens, output_tokens, epoch_ns(arrival_ts) AS t")
    assert table.to_pylist() == [
        {
            "task": "code",
            "prompt_tokens": 100,
            "output_tokens": 10,
            "t": int(np.datetime64("2023-11-16T18:00:00", "ns").astype(np.int64)),
        }
    ]
