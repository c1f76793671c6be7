"""Every option with a fixed set of values is a typer choice (flows/cli/shared.py's ``Literal`` types):
a bad value is a usage error, exit 2, before any work; ``--help`` lists the values; shell completion
offers them (issue 19).

Before: ``sql --format xml``, ``ingest --format bogus``, ``train-router --variant bogus``,
``train-predictor --buckets bogus`` (and ``--algo``, ``fit-estimator --profile``) were checked by hand
and exited 1, like a failure at run time; the choices typer did check were not listed in ``--help``.

Options that take free text stay strings, for a reason each: ``replay --router`` / ``compare
--routers`` (registered routers, and a learned router's registry reference or policy folder),
``--predictor`` (a folder or ``registered:VERSION``), ``run --task-runner`` (a scheduler address),
``bench router|predictor --model`` (``NAME@ALIAS`` / ``NAME/VERSION``: a bad form is exit 2 too),
``serve --cron`` / ``--timezone`` (checked by Prefect's schedule, exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from typer.testing import CliRunner

from flows.cli import app, shared
from tests.flows.cli.results import clean_exit, one_json

runner = CliRunner()

FORMATS = get_args(shared.TraceFormat)
WORKLOADS = get_args(shared.WorkloadName)
PROFILES = get_args(shared.ProfileName)
REPLAY_PROFILES = tuple(shared.replay_profile_names())  # read from the spec tables at run time
TABLE2 = ["--workload", "table2", "--requests", "20"]

CHOICES: list[tuple[list[str], str, tuple[str, ...]]] = [
    # (the command before the option, the option, its values)
    (["ingest", "x.csv"], "--format", FORMATS),
    (["sql", "SELECT"], "--format", get_args(shared.SqlFormat)),
    (["train-predictor"], "--buckets", get_args(shared.BucketKind)),
    (["fit-estimator"], "--profile", PROFILES),
    (["train-router"], "--variant", get_args(shared.RewardVariant)),
    (["train-router"], "--algo", get_args(shared.RlAlgo)),
    (["train-router"], "--workload", get_args(shared.TrainWorkload)),
    (["train-router"], "--profile", PROFILES),
    *(
        (cmd, option, values)
        for cmd in (["replay", "--router", "round_robin"], ["compare"])
        for option, values in (
            ("--workload", WORKLOADS),
            ("--format", FORMATS),
            ("--profile", REPLAY_PROFILES),
            ("--queue-policy", get_args(shared.QueuePolicyName)),
            ("--order", get_args(shared.Table2Order)),
            ("--hold-order", get_args(shared.HoldOrderName)),
        )
    ),
]
IDS = [f"{cmd[0]} {option}" for cmd, option, _ in CHOICES]


@pytest.mark.parametrize(("command", "option", "values"), CHOICES, ids=IDS)
def test_a_value_outside_the_choices_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], option: str, values: tuple[str, ...]
):
    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")  # a trainer that ran would exit 1
    result = runner.invoke(app, [*command, option, "bogus"])
    assert result.exit_code == 2, result.output
    clean_exit(result)
    said = " ".join(result.output.replace("│", " ").split())
    assert f"Invalid value for '{option}'" in said
    assert "'bogus' is not one of" in said
    assert not (tmp_path / "home").exists()  # nothing was done: no warehouse, no registry


@pytest.mark.parametrize(("command", "option", "values"), CHOICES, ids=IDS)
def test_help_lists_the_choices_and_completion_offers_them(
    command: list[str], option: str, values: tuple[str, ...]
):
    shown = runner.invoke(app, [command[0], "--help"], env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    if values == REPLAY_PROFILES:  # too many to list: --help names the pattern, completion lists them
        assert "PROFILE" in shown.output
        assert "<gpu>-<model>" in shown.output
    else:
        assert f"<{'|'.join(values)}>" in shown.output
    words = ["loadwise", *command, option, ""]
    completed = runner.invoke(
        app,
        [],
        prog_name="loadwise",
        env={
            "_LOADWISE_COMPLETE": "complete_bash",
            "COMP_WORDS": " ".join(words),
            "COMP_CWORD": str(len(words) - 1),
        },
    )
    assert completed.exit_code == 0, completed.output
    assert tuple(completed.output.split()) == values


def test_the_choices_are_the_lists_they_copy():
    """The ``Literal`` types spell their values out (``loadwise --help`` imports no project package):
    each must equal the list the code below the CLI accepts."""
    from training.length.config import BucketKind
    from training.rl.config import RouterTrainConfig
    from training.rl.rewards import Variant
    from training.simulator import QueuePolicy, RouterQueueOrder
    from training.simulator.profiles import PROFILE_NAMES
    from training.workloads.catalog import TABLE2_ORDERS, workload_names
    from training.workloads.episodes import WAREHOUSE_WORKLOAD
    from warehouse.formats import FORMAT_CHOICES
    from warehouse.query import EXPORT_FORMATS

    assert FORMATS == FORMAT_CHOICES
    assert get_args(shared.SqlFormat) == ("table", *EXPORT_FORMATS)
    assert list(WORKLOADS) == workload_names()
    assert get_args(shared.TrainWorkload) == (*WORKLOADS, WAREHOUSE_WORKLOAD)
    assert PROFILES == PROFILE_NAMES
    assert get_args(shared.QueuePolicyName) == tuple(p.value for p in QueuePolicy)
    assert get_args(shared.HoldOrderName) == tuple(o.value for o in RouterQueueOrder)
    assert get_args(shared.Table2Order) == TABLE2_ORDERS
    assert get_args(shared.BucketKind) == get_args(BucketKind)
    assert get_args(shared.RewardVariant) == get_args(Variant)
    assert get_args(shared.RlAlgo) == get_args(RouterTrainConfig.model_fields["algo"].annotation)


def test_queue_policy_and_hold_order_stay_case_insensitive():
    """``--queue-policy LWL`` worked before (the hand check lowered it): it still does."""
    args = ["replay", "--router", "round_robin", *TABLE2, "--queue-policy", "LWL", "--hold-order", "Shortest"]
    assert one_json(runner.invoke(app, [*args, "--json"]))["hold_order"] == "shortest"


@pytest.mark.parametrize("command", ["router", "predictor"])
def test_a_malformed_model_reference_is_a_usage_error(command: str):
    result = runner.invoke(app, ["bench", command, "--model", "no-alias"])
    assert result.exit_code == 2, result.output  # before: 1
    assert "must be NAME@ALIAS or NAME/VERSION" in " ".join(result.output.replace("│", " ").split())
