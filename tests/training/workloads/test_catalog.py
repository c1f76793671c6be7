"""Workload loaders: real data (skips without it), synthetic fallback, table2 orders, trace readers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.simulator.request import Request
from training.workloads.catalog import (
    MAIN_TASKS,
    WorkloadOptions,
    get_workload,
    split_and_scale,
    trace_workload,
    workload_names,
)
from training.workloads.sources import trace_requests
from warehouse.errors import WarehouseError


def test_registry_names():
    assert {"main", "table2", "azure"} <= set(workload_names())
    with pytest.raises(KeyError, match="main"):
        get_workload("nope")


def test_main_synthetic_fallback_when_data_absent(tmp_path):
    wl = get_workload("main", WorkloadOptions(num_requests=300, data_dir=tmp_path))
    assert wl.synthetic
    assert "SYNTHETIC" in wl.description
    reqs = wl.sample(0)
    assert len(reqs) == 300
    assert {r.task for r in reqs} == set(MAIN_TASKS)
    assert wl.sample(0) == reqs
    assert wl.sample(1) != reqs
    arrivals = np.array([r.arrival_s for r in reqs])
    assert np.all(np.diff(arrivals) >= 0)
    assert 300 / arrivals[-1] == pytest.approx(20.0, rel=0.2)  # Poisson at the default 20 req/s
    assert {r.task for r in wl.train} == set(MAIN_TASKS)


def test_main_real_data(shared_data):
    wl = get_workload("main", WorkloadOptions(num_requests=500, data_dir=shared_data))
    assert not wl.synthetic
    assert wl.num_instances == 4
    assert wl.profile == "v100-llama2-7b-paper"
    reqs = wl.sample(0)
    assert {r.task for r in reqs} == set(MAIN_TASKS)
    assert all(1 <= r.output_tokens <= 4096 for r in reqs)
    by_task = {t: np.mean([r.output_tokens for r in reqs if r.task == t]) for t in MAIN_TASKS}
    assert by_task["dolly_short"] < by_task["chat_sharegpt"]  # short answers vs conversations
    # training pool comes from other splits: its per-(prompt, generation) rows are not replayed ids
    assert not {r.request_id for r in wl.train} & {r.request_id for r in reqs}
    assert len(wl.train) > 5 * len({r.prompt_tokens for r in reqs})


def test_table2_orders():
    wl = get_workload("table2", WorkloadOptions(num_requests=10, order="alternating"))
    assert [r.task for r in wl.sample(0)] == ["LH", "HL"] * 5
    first = [
        r.task for r in get_workload("table2", WorkloadOptions(num_requests=10, order="lh_first")).sample(0)
    ]
    assert first == ["LH"] * 5 + ["HL"] * 5
    rnd = get_workload("table2", WorkloadOptions(num_requests=3000)).sample(0)
    assert len(rnd) == 3000
    assert sum(r.task == "LH" for r in rnd) == 1500
    assert get_workload("table2").num_instances == 2
    with pytest.raises(ValueError, match="order"):
        get_workload("table2", WorkloadOptions(order="sideways")).sample(0)


def test_azure_real_traces(shared_data):
    wl = get_workload("azure", WorkloadOptions(num_requests=1000, rate=8.0, data_dir=shared_data))
    reqs = wl.sample(0)
    assert len(reqs) == 1000
    assert {r.task for r in reqs} == {"code", "conv"}
    assert wl.sample(5) == reqs
    assert not wl.seed_dependent
    assert 1000 / reqs[-1].arrival_s == pytest.approx(8.0, rel=0.25)
    assert wl.profile == "a100-llama3-8b"
    assert wl.num_instances == 4
    assert len(wl.train) > 1000


def test_split_is_by_time_window_and_scales_rate():
    reqs = [Request(f"r{i}", float(i), 10, 5, "t") for i in range(101)]
    train, held, info = split_and_scale(reqs, rate=2.0, num_requests=None)
    assert max(r.arrival_s for r in train) < 20.0 <= min(int(r.request_id[1:]) for r in held)
    assert held[0].arrival_s == 0.0
    assert (len(held) - 1) / held[-1].arrival_s == pytest.approx(2.0)
    assert info["time_scale"] == pytest.approx(0.5)


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_canonical_reader_formats(tmp_path, ext):
    import pandas as pd

    df = pd.DataFrame(
        {
            "arrival_s": [5.0, 1.0, 3.0],
            "prompt_tokens": [10, 20, 30],
            "output_tokens": [1, 2, 3],
            "task": ["a", "b", "a"],
            "request_id": ["x", "y", "z"],
        }
    )
    path = tmp_path / f"t.{ext}"
    if ext == "csv":
        df.to_csv(path, index=False)
    elif ext == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")))
    else:
        df.to_parquet(path)
    reqs, report = trace_requests([path], "canonical")
    assert report.rows_read == report.ingested == 3
    assert [r.request_id for r in reqs] == ["y", "z", "x"]
    assert [r.arrival_s for r in reqs] == [0.0, 2.0, 4.0]
    assert reqs[0].task == "b"
    assert reqs[0].prompt_tokens == 20


def test_canonical_reader_optional_columns_and_errors(tmp_path):
    import pandas as pd

    p = tmp_path / "p.parquet"
    pd.DataFrame(
        {
            "arrival_s": [0.0, 1.0],
            "prompt_tokens": [600, 700],
            "output_tokens": [4, 5],
            "prefix_hash_ids": [[1, 2], [1]],
        }
    ).to_parquet(p)
    reqs, _ = trace_requests([p], "canonical")
    assert reqs[0].prefix_hash_ids == (1, 2)
    assert reqs[1].task in ("", "unknown")
    assert len({r.request_id for r in reqs}) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,prompt_tokens\n0,1\n")
    with pytest.raises(WarehouseError, match=r"bad\.csv"):
        trace_requests([bad], "canonical")
    with pytest.raises(WarehouseError, match=r"x\.txt"):
        trace_requests([tmp_path / "x.txt"], "canonical")


def test_trace_rows_with_bad_tokens_are_quarantined_not_replayed(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,5\n1,-3,5\n2,10,oops\n3,10,7\n")
    reqs, report = trace_requests([path], "canonical")
    assert [r.output_tokens for r in reqs] == [5, 7]
    assert (report.rows_read, report.ingested, report.quarantined) == (4, 2, 2)


def test_trace_workload(tmp_path):
    path = tmp_path / "trace.csv"
    rows = ["arrival_s,prompt_tokens,output_tokens,task"] + [
        f"{i * 0.5},{100 + i},{10 + i},t{i % 2}" for i in range(50)
    ]
    path.write_text("\n".join(rows))
    wl = trace_workload(path, "canonical", WorkloadOptions(num_requests=20))
    assert len(wl.sample(0)) == 20
    assert not wl.synthetic
    assert wl.train
    assert wl.info["rows_read"] == 50
    assert wl.info["quarantined"] == 0
    with pytest.raises(WarehouseError, match="format"):
        trace_workload(path, "no-such-format")


def test_prefix_workload_shares_prefix_chains_and_is_seeded():
    wl = get_workload("prefix", WorkloadOptions(num_requests=200))
    assert wl.synthetic
    a, b, c = wl.sample(0), wl.sample(0), wl.sample(1)
    assert a == b
    assert a != c
    first_blocks = [r.prefix_hash_ids[0] for r in a if r.prefix_hash_ids]
    assert len(first_blocks) == 200
    assert len(set(first_blocks)) < 60  # families share their chains
    assert all(r.prompt_tokens > 512 * len(r.prefix_hash_ids) - 512 for r in a)


def test_rate_zero_no_longer_means_the_default():
    """The library refuses what the CLI refuses: a workload option cannot stand for 'default'."""
    for bad in ({"rate": 0.0}, {"rate": float("nan")}, {"rate": float("inf")}, {"num_requests": 0},
                {"num_instances": 0}, {"order": "sideways"}):  # fmt: skip
        with pytest.raises(ValueError, match=r"must be|order must be one of"):
            WorkloadOptions(**bad)  # type: ignore[arg-type]
