"""Each step's CPU seconds beside its wall seconds (issue 16: on the shared 2-core machine the wall
time counts the waits for a core; the CPU time is the steadier cost figure)."""

from __future__ import annotations

import time

from flows.nightly.results import StepLog, StepOutcome


class _Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_steps_record_cpu_seconds_beside_wall_seconds() -> None:
    wall, cpu = _Clock(100.0), _Clock(7.0)
    log = StepLog(clock=wall, cpu_clock=cpu)
    log.start("ingest-traces")
    wall.now, cpu.now = wall.now + 4.0, cpu.now + 3.5
    log.start("retrain-length-predictor")  # ingest-traces ends here, as done
    wall.now, cpu.now = wall.now + 60.0, cpu.now + 30.25  # waited for a core half the time
    log.record(StepOutcome("retrain-length-predictor", "ran"))
    log.skip(["train-router"], "disabled")  # never started: neither figure
    assert log.seconds() == {"ingest-traces": 4.0, "retrain-length-predictor": 60.0}
    assert log.cpu_seconds() == {"ingest-traces": 3.5, "retrain-length-predictor": 30.25}


def test_the_default_cpu_clock_is_this_process_cpu_time() -> None:
    log = StepLog()
    log.start("busy")
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    log.record(StepOutcome("busy", "ran"))
    assert 0.05 <= log.cpu_seconds()["busy"] <= log.seconds()["busy"] + 1.0
