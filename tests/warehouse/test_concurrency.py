"""Atomic publish: a killed load leaves the warehouse as it was; readers query during a load."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.warehouse.samples import SAMPLES
from warehouse.errors import WarehouseBusyError
from warehouse.ingest import FileReport, ingest
from warehouse.paths import PROJECT_ROOT
from warehouse.store import connect_readonly

COUNT = (
    "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True); "
    "print(c.execute('SELECT count(*) FROM marts.requests').fetchone()[0])"
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _python(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_load_killed_mid_way_leaves_warehouse_unchanged_and_rerun_completes(tmp_path: Path, wh: Path) -> None:
    first = ingest([SAMPLES["azure"].write(tmp_path / "a")], warehouse=wh)
    before = _digest(wh)
    later = [SAMPLES["castillo"].write(tmp_path / "b"), SAMPLES["mooncake"].write(tmp_path / "b")]
    marker = tmp_path / "staged"
    code = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from warehouse.ingest import ingest

        def hang(report):
            Path(sys.argv[2]).write_text(report.path)
            time.sleep(120)

        ingest(sys.argv[3:], warehouse=sys.argv[1], on_file=hang)
        """
    )
    proc = _python(code, str(wh), str(marker), *map(str, later))
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "load never reached its first file"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert _digest(wh) == before  # the published file was never touched
    assert list(wh.parent.glob("*.loading"))  # the killed load's private copy is left over...
    rerun = ingest(later, warehouse=wh)
    assert not list(wh.parent.glob("*.loading"))  # ...and cleaned up by the next load
    assert [f.status for f in rerun.files] == ["loaded", "loaded"]
    con = connect_readonly(wh)
    total = con.execute("SELECT count(*) FROM marts.requests").fetchone()[0]
    con.close()
    assert total == first.ingested + rerun.ingested


def test_reader_in_another_process_queries_during_a_load(tmp_path: Path, wh: Path) -> None:
    first = ingest([SAMPLES["azure"].write(tmp_path / "a")], warehouse=wh)
    seen: list[str] = []

    def query_from_another_process(report: FileReport) -> None:
        out, err = _python(COUNT, str(wh)).communicate(timeout=60)
        assert not err.strip() or "Error" not in err, err
        seen.append(out.strip())

    second = ingest(
        [SAMPLES["vidur"].write(tmp_path / "b")], warehouse=wh, on_file=query_from_another_process
    )
    assert seen == [str(first.ingested)]  # the reader saw the published (pre-load) warehouse
    out, _ = _python(COUNT, str(wh)).communicate(timeout=60)
    assert out.strip() == str(first.ingested + second.ingested)


def test_readers_retry_while_a_foreign_writer_holds_the_lock(tmp_path: Path, wh: Path) -> None:
    ingest([SAMPLES["azure"].write(tmp_path)], warehouse=wh)
    hold = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
        "time.sleep(1.5)"
    )
    proc = _python(hold, str(wh))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(WarehouseBusyError, match="locked"):
        connect_readonly(wh, retry_s=0.1)
    con = connect_readonly(wh, retry_s=30)  # succeeds once the writer is gone
    assert con.execute("SELECT count(*) FROM marts.requests").fetchone()[0] == 3
    con.close()
    proc.wait(10)
