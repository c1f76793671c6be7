"""What a Prefect operator sees of the nightly flow: the steps' logs in Prefect (not on the terminal),
named runs, a row in ``ops.nightly_runs`` for a cancelled or crashed run, and the step events that
``loadwise run`` prints (``flows.nightly.results.StepLog``, ``flows.nightly.router``'s progress)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from flows.nightly.results import StepEvent, StepLog, StepOutcome


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_step_reports_its_start_and_its_end_with_the_duration() -> None:
    clock, events = _Clock(), list[StepEvent]()
    log = StepLog(notify=events.append, clock=clock)
    log.start("ingest-traces")
    clock.now += 4.0
    log.start("check-drift")  # ingest-traces has no outcome of its own: it ends here, as done
    clock.now += 0.5
    log.start("train-router")
    log.progress("train-router", 500, 2000, "steps")
    clock.now += 80.25
    log.record(StepOutcome("train-router", "ran"))
    log.skip(["retrain-length-predictor"], "no prompt texts")  # never started: no duration
    assert [e.message() for e in events] == [
        "ingest-traces: started",
        "ingest-traces: done in 4.0 s",
        "check-drift: started",
        "check-drift: done in 0.5 s",
        "train-router: started",
        "train-router: 500/2000 steps",
        "train-router: ran in 80.2 s",
        "retrain-length-predictor: skipped: no prompt texts",
    ]
    # the run summary's steps are what they were: outcomes only, "done" is not one
    assert log.outcomes() == {"train-router": "ran", "retrain-length-predictor": "skipped: no prompt texts"}
    # each ended step's wall time (issue 16: the report and ops.nightly_runs show them every night)
    assert log.seconds() == {"ingest-traces": 4.0, "check-drift": 0.5, "train-router": 80.25}


def test_the_training_progress_is_read_from_the_candidates_own_log(tmp_path: Path) -> None:
    from flows.nightly.router import trained_steps

    assert trained_steps(tmp_path) == 0  # no log yet (or a cached candidate)
    rows = [json.dumps({"kind": "episode", "step": 30 * i, "pad": "x" * 300}) for i in range(1, 40)]
    (tmp_path / "train_log.jsonl").write_text("\n".join(rows) + '\n{"kind": "episode", "st')  # being written
    assert trained_steps(tmp_path) == 30 * 39


def test_loadwise_run_prints_each_step_as_it_happens_into_a_pipe(tmp_path: Path) -> None:
    """Before, ``loadwise run`` printed nothing until the run ended when stdout was not a terminal
    (cron, CI, a log file): each line is now written and flushed as the step starts or ends."""
    from flows.cli.nightly import StepPrinter

    out = tmp_path / "run.log"
    with out.open("w") as stream:  # block-buffered, as a redirected stdout is
        printer = StepPrinter(stream)
        assert not printer.live
        printer(StepEvent("ingest-traces", "started"))
        assert out.read_text().endswith("ingest-traces: started\n")  # on disk before the step ends
        for done in range(0, 2001, 100):
            printer(StepEvent("train-router", "progress", 1.0, done, 2000, "steps"))
        printer(StepEvent("train-router", "ran", 84.2))
        lines = [line.split(" ", 1)[1] for line in out.read_text().splitlines()]
    assert lines == [
        "ingest-traces: started",
        *(f"train-router: {200 * k}/2000 steps" for k in range(1, 11)),  # a line per tenth
        "train-router: ran in 84.2 s",
    ]


def test_loadwise_run_draws_a_progress_bar_in_a_terminal() -> None:
    import os
    import pty
    import select

    from flows.cli.nightly import StepPrinter

    main, secondary = pty.openpty()
    with os.fdopen(secondary, "w") as stream:
        printer = StepPrinter(stream)
        assert printer.live
        printer(StepEvent("evaluate-router", "started"))
        printer(StepEvent("evaluate-router", "progress", 1.0, 3, 12, "replays"))
        assert printer._bar is not None  # a rich progress bar under the lines
        printer(StepEvent("evaluate-router", "ran", 9.5))
        assert printer._bar is None
        printer.close()
        chunks = []
        while select.select([main], [], [], 0.5)[0]:
            chunks.append(os.read(main, 65536))
        written = b"".join(chunks).decode(errors="replace")
    os.close(main)
    assert "evaluate-router: started" in written
    assert "evaluate-router: ran in 9.5 s" in written


def _config(db: Path) -> dict[str, Any]:
    return {"warehouse": str(db), "synthetic_rows": 1200, "profile": "v100-llama2-7b-paper"}


async def _logs_and_name(flow_run_id: str) -> tuple[list[str], str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        run = await client.read_flow_run(flow_run_id)
    return [entry.message for entry in logs], run.name


@pytest.mark.prefect
def test_step_logs_go_to_prefect_not_the_terminal_and_runs_are_named(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Before, the CLI's ``PREFECT_LOGGING_LEVEL=WARNING`` dropped every INFO log, so a completed
    run's Logs tab was empty, and runs had Prefect's random names."""
    from prefect.logging.handlers import APILogHandler

    from flows.nightly.config import NightlyConfig
    from flows.nightly.flow import nightly_retrain
    from warehouse.ops import record_run

    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOADWISE_DATA_DIR", str(tmp_path / "no-data"))
    db = tmp_path / "home" / "warehouse.duckdb"

    def no_drift_check(*args: object) -> None:
        raise RuntimeError("stop after ingest")

    monkeypatch.setattr("flows.nightly.flow.drift_step", no_drift_check)
    state = nightly_retrain(NightlyConfig.model_validate(_config(db)), return_state=True)
    assert state.is_failed()
    record_run(db, run_id="earlier", started_at=state.timestamp, status="ok", watermark_file_id=1)
    again = nightly_retrain(NightlyConfig.model_validate(_config(db)), return_state=True)
    APILogHandler().flush()
    messages, name = asyncio.run(_logs_and_name(str(state.state_details.flow_run_id)))
    assert "ingest-traces: started" in messages
    assert any(m.startswith("ingest-traces: done in ") for m in messages)
    assert "check-drift: started" in messages
    assert any(m.startswith("ingest: 1200 rows read") for m in messages)  # the flow's prints too
    assert name.endswith("Z run, watermark none"), name
    assert name[:4].isdigit(), name
    assert asyncio.run(_logs_and_name(str(again.state_details.flow_run_id)))[1].endswith("run, watermark 1")
    terminal = capfd.readouterr()
    assert "ingest-traces: started" not in terminal.out + terminal.err  # the console handler: WARNING


def _rows(db: Path) -> list[tuple[Any, ...]]:
    """In a frame of its own: a connection bound in the test's frame would live as long as the
    interrupted run's traceback, which Prefect keeps to the end of the process (nanobind leak)."""
    from warehouse.store import connect_readonly

    with connect_readonly(db) as con:
        return con.execute(
            "SELECT status, watermark_file_id, decision FROM ops.nightly_runs ORDER BY finished_at"
        ).fetchall()


@pytest.mark.prefect
def test_a_cancelled_or_interrupted_run_writes_its_row(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, only ``ok`` and ``failed`` runs were logged: a run cancelled from the UI (or stopped by
    Ctrl-C / SIGTERM) left no row in ``ops.nightly_runs``."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    from flows.nightly.config import NightlyConfig
    from flows.nightly.flow import nightly_retrain
    from flows.nightly.report import record_interrupted

    assert record_interrupted in nightly_retrain.on_cancellation_hooks
    assert record_interrupted in nightly_retrain.on_crashed_hooks
    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOADWISE_DATA_DIR", str(tmp_path / "no-data"))
    db = tmp_path / "home" / "warehouse.duckdb"

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C during the drift check

    monkeypatch.setattr("flows.nightly.flow.drift_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        nightly_retrain(NightlyConfig.model_validate(_config(db)))

    async def cancelled_from_the_ui() -> None:  # the hook as Prefect's runner calls it
        async with get_client() as client:
            run = await client.create_flow_run(nightly_retrain, parameters={"config": _config(db)})
            run = await client.read_flow_run(run.id)
        record_interrupted(nightly_retrain, run, Cancelled(message="Flow run was cancelled."))
        record_interrupted(nightly_retrain, run, Cancelled(message="again"))  # one row per run

    asyncio.run(cancelled_from_the_ui())
    rows = _rows(db)
    assert [r[:2] for r in rows] == [("crashed", None), ("cancelled", None)]
    assert rows[0][2].startswith("crashed during check-drift: ")
    assert rows[1][2] == "cancelled during a step: Flow run was cancelled."
