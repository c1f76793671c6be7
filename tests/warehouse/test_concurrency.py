"""Atomic publish: a killed load leaves the warehouse as it was; readers query during a load.

And the store refuses a damaged warehouse, a file that is not one, or a folder it cannot write,
before it creates any file."""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.warehouse.samples import SAMPLES
from warehouse.errors import InvalidWarehouseError, WarehouseBusyError, WarehouseNotWritableError
from warehouse.ingest import FileReport, ingest
from warehouse.settings import PROJECT_ROOT
from warehouse.store import connect_analyst, connect_readonly, write_session

runner = CliRunner()

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


# --- the store refuses bad files before touching anything (issue 13) -----------------------------


def _listing(folder: Path) -> dict[str, str]:
    return {p.name: _digest(p) if p.is_file() else "dir" for p in sorted(folder.iterdir())}


def _corrupt(kind: str, wh: Path) -> None:
    data = wh.read_bytes()
    if kind == "truncated_half":
        wh.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_one_byte":  # DuckDB still opens it and reads some tables
        wh.write_bytes(data[:-1])
    elif kind == "header_only":
        wh.write_bytes(data[:100])
    elif kind == "random_bytes":
        wh.write_bytes(random.Random(0).randbytes(len(data)))
    elif kind == "empty":
        wh.write_bytes(b"")
    else:
        wh.write_text("root:x:0:0:root:/root:/bin/bash\n")


@pytest.mark.parametrize(
    "kind", ["truncated_half", "truncated_one_byte", "header_only", "random_bytes", "empty", "text"]
)
def test_a_corrupt_warehouse_is_refused_and_left_as_it_is(tmp_path: Path, wh: Path, kind: str) -> None:
    ingest([SAMPLES["azure"].write(tmp_path / "a")], warehouse=wh)
    connect_readonly(wh, retry_s=0).close()  # found complete (store._VERIFIED): the change must be seen
    _corrupt(kind, wh)
    before = _listing(wh.parent)
    later = SAMPLES["vidur"].write(tmp_path / "b")
    for attempt in (
        lambda: ingest([later], warehouse=wh),
        lambda: connect_readonly(wh, retry_s=0),
        lambda: connect_analyst(wh, retry_s=0),
        lambda: write_session(wh).__enter__(),
    ):
        with pytest.raises(InvalidWarehouseError, match=re.escape(str(wh))) as refused:
            attempt()
        assert "\n" not in str(refused.value)
    for args in (["ingest", str(later)], ["sql", "SELECT 1"]):
        result = runner.invoke(app, [*args, "--warehouse", str(wh)])
        assert result.exit_code == 1, result.output
        assert result.output.startswith("error: "), result.output
        assert result.output.count("\n") == 1, result.output
    assert _listing(wh.parent) == before  # no lock file, no copy, same bytes


def test_a_load_into_a_file_that_is_not_a_warehouse_leaves_nothing_behind(tmp_path: Path) -> None:
    """``compare --store /etc/passwd`` left ``/etc/.passwd.<pid>.loading`` and ``/etc/passwd.lock``."""
    folder = tmp_path / "etc"
    folder.mkdir()
    passwd = folder / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    before = _listing(folder)
    with pytest.raises(InvalidWarehouseError, match="is not a DuckDB database"), write_session(passwd) as con:
        con.execute("SELECT 1")
    with pytest.raises(InvalidWarehouseError, match="is a folder"), write_session(folder):
        pass
    assert _listing(folder) == before


def test_a_load_whose_lock_cannot_be_created_is_refused_cleanly(tmp_path: Path, wh: Path) -> None:
    """Works as root too (a folder where the lock file should be), unlike a read-only folder."""
    ingest([SAMPLES["azure"].write(tmp_path / "a")], warehouse=wh)
    (wh.parent / "warehouse.duckdb.lock").unlink()
    (wh.parent / "warehouse.duckdb.lock").mkdir()
    before = _listing(wh.parent)
    with pytest.raises(WarehouseNotWritableError, match="cannot create the load lock"):
        ingest([SAMPLES["vidur"].write(tmp_path / "b")], warehouse=wh)
    assert _listing(wh.parent) == before
    file_as_folder = tmp_path / "a" / "AzureLLMInferenceTrace_code.csv" / "warehouse.duckdb"
    with pytest.raises(WarehouseNotWritableError, match="is not a folder"), write_session(file_as_folder):
        pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_load_into_a_read_only_folder_is_refused_before_any_file_is_created(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    ingest([SAMPLES["azure"].write(tmp_path / "a")], warehouse=folder / "warehouse.duckdb")
    (folder / "warehouse.duckdb.lock").unlink()
    before = _listing(folder)
    folder.chmod(0o555)
    try:
        for target in (folder / "warehouse.duckdb", folder / "new.duckdb"):
            with pytest.raises(WarehouseNotWritableError, match="not writable"), write_session(target):
                pass
        assert _listing(folder) == before
    finally:
        folder.chmod(0o755)
