"""``loadwise ingest``, ``export-parquet`` and ``sql`` (flows/cli/warehouse.py): the ``--json``
contract, output formats and exports, skipped files listed, and every refusal in one line (exit 1)
without a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.flows.cli.results import clean_exit
from tests.warehouse.samples import AZURE_BAD, SAMPLES, write_text

runner = CliRunner()


KEYS = {"rows_read", "ingested", "quarantined", "duplicates_skipped"}


def _ingest(wh: Path, *paths: Path, extra: tuple[str, ...] = ()) -> dict:
    result = runner.invoke(app, ["ingest", *map(str, paths), "--warehouse", str(wh), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_ingest_json_contract(tmp_path: Path, wh: Path) -> None:
    bad = write_text(tmp_path / "in" / "AzureLLMInferenceTrace_conv.csv", AZURE_BAD)
    SAMPLES["mooncake"].write(tmp_path / "in")
    report = _ingest(wh, tmp_path / "in")  # a directory expands to its files
    assert set(report) >= KEYS
    assert len(report["files"]) == 2
    for f in report["files"]:
        assert KEYS | {"path", "format", "source"} <= set(f)
        assert f["rows_read"] == f["ingested"] + f["quarantined"]
    assert report["rows_read"] == sum(f["rows_read"] for f in report["files"])
    assert {f["format"] for f in report["files"]} == {"azure", "mooncake"}
    again = _ingest(wh, bad)
    assert (again["ingested"], again["duplicates_skipped"]) == (0, 10)


def test_ingest_table_output_and_source_option(tmp_path: Path, wh: Path) -> None:
    result = runner.invoke(
        app, ["ingest", str(SAMPLES["azure"].write(tmp_path)), "--warehouse", str(wh), "--source", "eu-west"]
    )
    assert result.exit_code == 0, result.output
    assert "eu-west" in result.stdout
    assert "reconciled" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "/definitely/missing.csv"], "no such file or directory"),
        (["sql", "DROP TABLE marts.requests"], "only read-only queries"),
        (["sql", "INSERT INTO raw.files SELECT * FROM raw.files"], "got an INSERT statement"),
        (["sql", "EXPLAIN ANALYZE COPY (SELECT 1) TO 'x.csv'"], "got a COPY statement inside EXPLAIN"),
        (["sql", "SELECT content FROM read_text('{x}')"], "loadwise sql is read-only"),
        (["sql", "SELECT * FROM nope"], "nope"),
        (["sql", "SELECT 1", "--out", "{x}.txt"], "export format must be csv, parquet, json, jsonl"),
    ],
)
def test_errors_are_one_line_without_traceback(
    tmp_path: Path, wh: Path, args: list[str], message: str
) -> None:
    path = SAMPLES["azure"].write(tmp_path)
    _ingest(wh, path)
    args = [a.replace("{x}", str(path)) for a in args]
    result = runner.invoke(app, [*args, "--warehouse", str(wh)])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_sql_formats_and_exports(tmp_path: Path, wh: Path) -> None:
    _ingest(wh, SAMPLES["azure"].write(tmp_path))
    query = "SELECT line, prompt_tokens FROM marts.requests ORDER BY line"
    table = runner.invoke(app, ["sql", query, "--warehouse", str(wh)])
    assert table.exit_code == 0
    assert "prompt_tokens" in table.stdout
    assert "1200" in table.stdout
    as_json = runner.invoke(app, ["sql", query, "--warehouse", str(wh), "--format", "json"])
    assert json.loads(as_json.stdout) == [
        {"line": 2, "prompt_tokens": 374},
        {"line": 3, "prompt_tokens": 396},
        {"line": 4, "prompt_tokens": 1200},
    ]
    as_csv = runner.invoke(app, ["sql", query, "--warehouse", str(wh), "--format", "csv"])
    assert as_csv.stdout.splitlines()[:2] == ["line,prompt_tokens", "2,374"]
    out = tmp_path / "out.parquet"
    exported = runner.invoke(
        app, ["sql", query, "--warehouse", str(wh), "--out", str(out), "--format", "parquet"]
    )
    assert exported.exit_code == 0, exported.output
    assert pq.read_table(out).num_rows == 3
    csv_out = tmp_path / "out.csv"
    assert runner.invoke(app, ["sql", query, "--warehouse", str(wh), "--csv", str(csv_out)]).exit_code == 0
    assert csv_out.read_text().splitlines()[0] == "line,prompt_tokens"
    described = runner.invoke(
        app, ["sql", "DESCRIBE marts.requests", "--warehouse", str(wh), "--format", "json"]
    )
    assert "request_id" in described.stdout


def test_sql_without_warehouse_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sql", "SELECT 1", "--warehouse", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 1
    assert "no warehouse" in result.output


def test_sql_on_a_file_that_is_not_a_warehouse_says_so(tmp_path: Path) -> None:
    text = write_text(tmp_path / "passwd", "root:x:0:0\n")
    result = runner.invoke(app, ["sql", "SELECT 1", "--warehouse", str(text)])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {text} is not a DuckDB database")
    assert result.output.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd"]


def test_cli_lists_skipped_files_and_exits_1_when_all_are(tmp_path: Path, wh: Path) -> None:
    from flows.cli import app

    runner = CliRunner()
    SAMPLES["azure"].write(tmp_path / "d")
    write_text(tmp_path / "d" / "notes.txt", "hello\n")
    result = runner.invoke(app, ["ingest", str(tmp_path / "d"), "--warehouse", str(wh), "--json"])
    assert result.exit_code == 0, result.output
    files = {Path(f["path"]).name: f for f in json.loads(result.stdout)["files"]}
    assert files["notes.txt"]["status"] == "skipped"
    assert "matches no format" in files["notes.txt"]["reason"]
    vidur = SAMPLES["vidur"].write(tmp_path / "e")
    table = runner.invoke(
        app, ["ingest", str(tmp_path / "d" / "notes.txt"), str(vidur), "--warehouse", str(wh)]
    )
    assert table.exit_code == 0, table.output
    assert "notes.txt" in table.output.split("skipped ", 1)[1]
    alone = runner.invoke(app, ["ingest", str(tmp_path / "d" / "notes.txt"), "--warehouse", str(wh)])
    assert alone.exit_code == 1
    assert "Traceback" not in alone.output
    assert "no file could be loaded" in alone.output


def test_ingest_into_a_text_file_is_one_line(tmp_path: Path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,5\n1,12,6\n")
    for extra in ([], ["--flow"]):  # --flow: refused before Prefect starts, not as a failed flow run
        result = runner.invoke(app, ["ingest", str(trace), "--warehouse", str(text), *extra])
        assert result.exit_code == 1, result.output
        clean_exit(result)
        assert len(result.output.strip().splitlines()) == 1
        assert "not a DuckDB database" in result.output
    assert text.read_text() == "hello\n"


EXACT = (
    "SELECT 1234567.891::DOUBLE AS x, 0.1::DOUBLE AS tenth, 12.30::DECIMAL(10, 2) AS amount, "
    "170141183460469231731687303715884105727::HUGEINT AS huge, 'a,\"b' AS s "
    "UNION ALL SELECT 1e-300, 2, 3, 4, NULL"
)


def _sql(wh: Path, *args: str) -> bytes:
    result = runner.invoke(app, ["sql", *args, "--warehouse", str(wh)])
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


def test_sql_stdout_is_duckdbs_exact_text_with_lf(tmp_path: Path, wh: Path) -> None:
    """Issue 19: ``--format csv`` rounded floats to 6 digits (``1.23457e+06``) and ended lines with
    CRLF; JSON was one line with DECIMALs as strings. Every stdout format is now DuckDB's writer:
    exact values, LF, JSON Lines on request, the same bytes as an export to a file."""
    _ingest(wh, SAMPLES["azure"].write(tmp_path))
    as_csv = _sql(wh, EXACT, "--format", "csv")
    assert as_csv == (
        b"x,tenth,amount,huge,s\n"
        b'1234567.891,0.1,12.30,170141183460469231731687303715884105727,"a,""b"\n'
        b"1e-300,2.0,3.00,4,\n"
    )
    assert b"\r" not in as_csv
    exported = tmp_path / "out.csv"
    _sql(wh, EXACT, "--out", str(exported))
    assert exported.read_bytes() == as_csv  # what is printed is what is exported
    lines = _sql(wh, EXACT, "--format", "jsonl").decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"x": 1234567.891, "tenth": 0.1, "amount": 12.3, "huge": 2**127 - 1, "s": 'a,"b'},
        {"x": 1e-300, "tenth": 2.0, "amount": 3.0, "huge": 4, "s": None},
    ]
    as_json = _sql(wh, EXACT, "--format", "json")
    assert json.loads(as_json) == [json.loads(line) for line in lines]  # DECIMAL: a number
    assert as_json.count(b"\n") == 4  # one object per line, not one 20 MB line
    jsonl_out = tmp_path / "out.ndjson"
    _sql(wh, EXACT, "--out", str(jsonl_out))
    assert jsonl_out.read_bytes().decode().splitlines() == lines
    table = _sql(wh, EXACT).decode()
    assert "1234567.891" in table
    assert "1e-300" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--format", "xml"], "'xml' is not one of"), (["--format", "parquet"], "binary")],
)
def test_sql_format_usage_errors_exit_2(wh: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["sql", "SELECT 1", "--warehouse", str(wh), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
