"""Quarantine, reconciliation, idempotency and the post-load checks (atomic: nothing published)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.warehouse.samples import AZURE_BAD, AZURE_BAD_REASONS, SAMPLES, write_text
from warehouse import checks
from warehouse.errors import DataCheckError
from warehouse.ingest import expand_paths, ingest
from warehouse.store import connect_readonly


def _rows(wh: Path, sql: str) -> list[tuple]:
    con = connect_readonly(wh)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_quarantine_reasons_lines_and_text(tmp_path: Path, wh: Path) -> None:
    path = write_text(tmp_path / "AzureLLMInferenceTrace_conv.csv", AZURE_BAD)
    report = ingest([path], warehouse=wh)
    assert (report.rows_read, report.ingested, report.quarantined) == (10, 2, 8)
    quarantined = _rows(wh, "SELECT line, reason, raw_text, path FROM raw.quarantine ORDER BY line")
    assert {line: reason for line, reason, _, _ in quarantined} == AZURE_BAD_REASONS
    lines = AZURE_BAD.split("\n")
    for line, _, text, source_path in quarantined:
        assert (text or "") == lines[line - 1]  # the source line, verbatim
        assert source_path == str(path)
    assert _rows(wh, "SELECT line FROM marts.requests ORDER BY line") == [(2,), (11,)]


def test_reconciliation_per_file_and_in_registry(tmp_path: Path, wh: Path) -> None:
    paths = [s.write(tmp_path / name) for name, s in SAMPLES.items()]
    report = ingest(paths, warehouse=wh)
    for f in report.files:
        assert f.rows_read == f.ingested + f.quarantined
    assert report.rows_read == sum(s.rows_read for s in SAMPLES.values())
    assert report.ingested == _rows(wh, "SELECT count(*) FROM marts.requests")[0][0]
    assert report.quarantined == _rows(wh, "SELECT count(*) FROM raw.quarantine")[0][0]
    registry = _rows(wh, "SELECT sum(rows_read), sum(ingested), sum(quarantined) FROM raw.files")[0]
    assert registry == (report.rows_read, report.ingested, report.quarantined)
    assert "rows read = " in report.summary()


def test_same_file_twice_adds_nothing(tmp_path: Path, wh: Path) -> None:
    path = SAMPLES["azure"].write(tmp_path / "a")
    first = ingest([path], warehouse=wh)
    digest = hashlib.sha256(wh.read_bytes()).hexdigest()
    again = ingest([path], warehouse=wh)
    assert (again.ingested, again.quarantined, again.duplicates_skipped) == (0, 0, first.rows_read)
    assert again.files[0].status == "duplicate"
    assert hashlib.sha256(wh.read_bytes()).hexdigest() == digest  # not even republished
    # the same content under another name, next to a new file, is still a duplicate
    copy = write_text(tmp_path / "b" / "copy.csv", path.read_text())
    mixed = ingest([copy, SAMPLES["vidur"].write(tmp_path / "b")], warehouse=wh)
    assert [f.status for f in mixed.files] == ["duplicate", "loaded"]
    assert _rows(wh, "SELECT count(*) FROM marts.requests")[0][0] == first.ingested + mixed.ingested
    assert _rows(wh, "SELECT count(*) FROM raw.load_log")[0][0] == 2


def test_request_ids_are_deterministic(tmp_path: Path) -> None:
    path = SAMPLES["mooncake"].write(tmp_path / "in")
    ids = []
    for name in ("one", "two"):
        db = tmp_path / name / "w.duckdb"
        ingest([path], warehouse=db)
        ids.append(_rows(db, "SELECT request_id FROM marts.requests ORDER BY request_id"))
    assert ids[0] == ids[1]
    assert ids[0][0][0].startswith("mooncake:")


def test_same_file_listed_twice_in_one_load(tmp_path: Path, wh: Path) -> None:
    path = SAMPLES["azure"].write(tmp_path)
    report = ingest([path, path], warehouse=wh)
    assert [f.status for f in report.files] == ["loaded", "duplicate"]


def test_failed_check_fails_the_load_atomically_naming_file_and_line(
    tmp_path: Path, wh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest([SAMPLES["canonical"].write(tmp_path / "a")], warehouse=wh)
    before = hashlib.sha256(wh.read_bytes()).hexdigest()
    # Every bad row is quarantined by staging, so only a check staging does not know can fail: add
    # one (no prompt of 1000 tokens or more) that the new file's line 3 breaks.
    monkeypatch.setitem(
        checks.ROW_CHECKS, "marts.requests.prompt_tokens < 1000 (test)", "prompt_tokens >= 1000"
    )
    big = write_text(
        tmp_path / "b" / "big.csv",
        "request_id,arrival_s,prompt_tokens,output_tokens\nr9,0,5,5\nr8,1,5000,5\n",
    )
    with pytest.raises(DataCheckError, match=rf"< 1000 \(test\): 1 offending row\(s\) \(e.g. {big} line 3\)"):
        ingest([SAMPLES["vidur"].write(tmp_path / "b"), big], warehouse=wh)
    assert hashlib.sha256(wh.read_bytes()).hexdigest() == before
    assert not list(wh.parent.glob("*.loading"))


def test_reused_request_id_is_quarantined_not_a_failed_load(tmp_path: Path, wh: Path) -> None:
    ingest([SAMPLES["canonical"].write(tmp_path / "a")], warehouse=wh)
    # r1 is in the warehouse already, r9 twice in this file: the later rows are quarantined.
    clash = write_text(
        tmp_path / "b" / "clash.csv",
        "request_id,arrival_s,prompt_tokens,output_tokens\nr9,0,5,5\nr1,1,5,5\nr9,2,5,5\n",
    )
    (_, file) = ingest([SAMPLES["vidur"].write(tmp_path / "b"), clash], warehouse=wh).files
    assert (file.ingested, file.quarantined) == (1, 2)
    reasons = _rows(wh, f"SELECT line, reason FROM raw.quarantine WHERE path = '{clash}' ORDER BY line")
    assert reasons == [(3, "duplicate_request_id"), (4, "duplicate_request_id")]
    con = connect_readonly(wh)
    try:
        assert checks.failed(checks.run_checks(con)) == []
    finally:
        con.close()


def test_checks_pass_on_a_loaded_warehouse(tmp_path: Path, wh: Path) -> None:
    ingest([s.write(tmp_path / n) for n, s in SAMPLES.items()], warehouse=wh)
    con = connect_readonly(wh)
    results = checks.run_checks(con)
    con.close()
    assert checks.failed(results) == []
    assert len(results) >= 15


def test_directories_expand_to_data_files(tmp_path: Path) -> None:
    SAMPLES["azure"].write(tmp_path / "d")
    SAMPLES["castillo"].write(tmp_path / "d" / "sub")
    write_text(tmp_path / "d" / "README.md", "x")
    write_text(tmp_path / "d" / ".hidden" / "x.csv", "x")
    assert [p.name for p in expand_paths([tmp_path / "d"])] == [
        "AzureLLMInferenceTrace_code.csv", "castillo_lengths.parquet",
    ]  # fmt: skip
