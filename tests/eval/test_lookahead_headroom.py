"""``python -m eval.lookahead_headroom``: the teacher's headroom script, on the synthetic ``table2``
workload with task-mean lengths (no registered predictor, no shared data)."""

from __future__ import annotations

import json

import pytest

from eval.lookahead_headroom import main

ARGS = [
    "--workload", "table2", "--predictor", "task-mean", "--requests", "40", "--seeds", "0,1",
    "--rate", "4", "--instances", "2", "--samples", "2", "--horizon", "0.5",
    "--base", "workload_impact_greedy", "--baselines", "round_robin,workload_impact_greedy",
]  # fmt: skip


def _rows(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[dict]:
    assert main(argv) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_one_json_line_per_seed_with_every_router_and_the_teacher(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows(capsys, ARGS)
    assert [r["seed"] for r in rows] == [0, 1]
    for row in rows:
        assert row["requests"] == 40
        for name in ("round_robin", "workload_impact_greedy", "lookahead"):
            assert row[name]["mean"] > 0
            assert row[name]["p99"] >= row[name]["mean"]
            tail = row[name]["tail"]
            parts = tail["router_wait_s"] + tail["queue_wait_s"] + tail["running_s"]
            assert parts >= row[name]["p99"] - 0.02  # the requests at or above the p99, whole
            assert tail["output_tokens"] >= 1
        teacher = row["lookahead"]
        assert 0 < teacher["decisions"] <= 40
        assert teacher["rollouts"] >= teacher["decisions"]
        assert teacher["delays"] == 0  # no --admission: never DELAY
        assert row["params"]["samples"] == 2
        assert row["params"]["seed"] == row["seed"]
        assert row["paired"]["decisions"] == teacher["decisions"]
    # the same arguments replay the same figures (wall times aside)
    again = _rows(capsys, ARGS)
    strip = ("wall_s", "teacher_wall_s", "decisions_per_s", "ms_per_decision", "forks_per_s")

    def figures(r: dict) -> dict:
        return {k: ({kk: vv for kk, vv in v.items() if kk not in strip} if isinstance(v, dict) else v)
                for k, v in r.items()}  # fmt: skip

    assert [figures(r) for r in again] == [figures(r) for r in rows]


def test_the_oracle_is_labelled_a_diagnostic(capsys: pytest.CaptureFixture[str]) -> None:
    (row,) = _rows(capsys, [*ARGS[:7], "0", *ARGS[8:], "--oracle", "all", "--conservative"])
    assert "lookahead" not in row
    assert row["lookahead_ORACLE_all_diagnostic"]["decisions"] > 0
    assert row["params"]["conservative"] is True
