"""``loadwise sql`` is read-only for real: escape attempts fail in one line and change nothing.

Every statement of issue 13's "Security" section, and its neighbours, is tried through the Python
API (``run_query``), the CLI, and the CLI's export path. Each must fail with a one-line
``WarehouseError`` (exit code 1, no traceback), leave the warehouse's bytes as they were, create no
file anywhere under the test's folder (the working directory included), and never show the content
of a file outside the warehouse. A second group runs statements straight on
``connect_analyst()``, bypassing the guard, to show that DuckDB itself enforces it; a seeded
Hypothesis test builds statements from a grammar of dangerous pieces.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from flows.cli import app
from tests.warehouse.samples import SAMPLES
from warehouse.errors import ReadOnlyQueryError, WarehouseError
from warehouse.ingest import ingest
from warehouse.query import check_read_only, export_query, run_query
from warehouse.store import connect_analyst, connect_readonly

runner = CliRunner()
SECRET = "TOPSECRET-7f3a"


@dataclass(frozen=True)
class Site:
    """A published warehouse and, beside it, what an attacker would aim at."""

    root: Path  # everything the tests may touch lives here; nothing new may appear
    wh: Path  # the warehouse file
    secret: Path  # a file outside the warehouse that must never be read
    outside: Path  # an existing folder outside the warehouse that must stay empty
    target: Path  # a file in ``outside`` that must never be created


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("sqlsec")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOADWISE_HOME", str(root / "home"))
        wh = root / "wh" / "warehouse.duckdb"
        ingest([SAMPLES["azure"].write(root / "in")], warehouse=wh)
        secret = root / "secret.csv"
        secret.write_text(f"a,b\n{SECRET},1\n")
        outside = root / "outside"
        outside.mkdir()
        yield Site(root, wh, secret, outside, outside / "x.sh")


@pytest.fixture(autouse=True)
def _in_site(site: Site, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Relative paths (``COPY ... TO 'x.csv'``) would land in the site's folder: the check sees them.

    A test that failed by damaging the warehouse gets it restored, so the next test starts clean.
    """
    monkeypatch.chdir(site.root)
    monkeypatch.setenv("LOADWISE_HOME", str(site.root / "home"))
    pristine = site.wh.read_bytes()
    yield
    if site.wh.read_bytes() != pristine:
        site.wh.write_bytes(pristine)


def _snapshot(site: Site) -> dict[str, str]:
    """Every path under the site's folder, with the SHA-256 of each file."""
    return {
        str(p.relative_to(site.root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(site.root.rglob("*"))
    }


# Issue 13's statements first, then their neighbours. {wh}, {target}, {outside}, {secret} are filled in.
ESCAPES = [
    "EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{wh}'",
    "EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{target}'",
    "EXPLAIN ANALYZE SET threads = 1",
    "EXPLAIN ANALYZE CALL pragma_version()",
    "EXPLAIN ANALYZE LOAD httpfs",
    "SELECT content FROM read_text('{secret}')",
    "SELECT * FROM read_csv('{secret}')",
    "SELECT * FROM read_blob('{secret}')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    "ATTACH '{target}' AS x",
    "ATTACH ':memory:' AS m",
    "COPY (SELECT 1 AS a) TO '{target}'",
    "COPY marts.requests TO '{wh}' (FORMAT parquet)",
    "COPY (SELECT 1 AS a) TO 'relative.csv'",
    "EXPORT DATABASE '{outside}'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA threads = 1",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET enable_external_access",
    "CALL pragma_version()",
    "CHECKPOINT",
    "DROP TABLE marts.requests",
    "INSERT INTO raw.files SELECT * FROM raw.files",
    "SELECT * FROM '{secret}'",
    "SELECT * FROM sniff_csv('{secret}')",
    "SELECT * FROM query('SELECT content FROM read_text(''{secret}'')')",
    "SELECT 1; COPY (SELECT 1 AS a) TO '{target}'",
    "SELECT 1; /* x */ cOpY (SELECT 1 AS a) tO '{target}'",
    "-- a comment\nATTACH '{target}' AS x",
    "/* a /* nested */ comment */ ExPlAiN AnAlYzE /* c */ CoPy (SELECT 1) TO '{target}'",
    "EXPLAIN (FORMAT json, ANALYZE) COPY (SELECT 1) TO '{target}'",
    "EXPLAIN COPY (SELECT 1) TO '{target}'",
    "SELECT 1; SELECT 2; EXPLAIN ANALYZE COPY (SELECT 1) TO '{target}'",
]


def _fill(template: str, site: Site) -> str:
    return template.format(wh=site.wh, target=site.target, outside=site.outside, secret=site.secret)


@pytest.mark.parametrize("template", ESCAPES)
def test_escape_fails_cleanly_and_changes_nothing(site: Site, template: str) -> None:
    query = _fill(template, site)
    before = _snapshot(site)
    with pytest.raises(ReadOnlyQueryError) as api:
        run_query(query, site.wh)
    assert "\n" not in str(api.value)
    for args in (
        ["sql", "--warehouse", str(site.wh), "--format", "csv", "--", query],
        ["sql", "--warehouse", str(site.wh), "--out", str(site.root / "export.csv"), "--", query],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("error: ")
        assert result.output.count("\n") == 1, result.output
        assert "Traceback" not in result.output
        assert SECRET not in result.output
    assert _snapshot(site) == before


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("INSERT INTO raw.files SELECT * FROM raw.files", "got an INSERT statement"),
        ("UPDATE raw.files SET path = 'x'", "got an UPDATE statement"),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO 'x'", "got a COPY statement inside EXPLAIN"),
        ("EXPLAIN ANALYZE SET threads = 1", "got a SET statement inside EXPLAIN"),
        ("SELECT content FROM read_text('/etc/hostname')", "loadwise sql is read-only"),
        ("SET threads = 1; SELECT 1", "got a SET statement"),
    ],
)
def test_refusals_say_why(site: Site, query: str, message: str) -> None:
    with pytest.raises(ReadOnlyQueryError, match=re.escape(message)):
        run_query(query, site.wh)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT count(*) FROM marts.requests",
        "WITH t AS (SELECT prompt_tokens FROM marts.requests) SELECT max(prompt_tokens) FROM t",
        "FROM marts.requests SELECT count(*)",
        "DESCRIBE marts.requests",
        "SHOW TABLES",
        "SUMMARIZE marts.requests",
        "EXPLAIN SELECT count(*) FROM marts.requests",
        "EXPLAIN ANALYZE SELECT count(*) FROM marts.requests",
        "EXPLAIN (FORMAT json) SELECT 1",
        "-- leading comment\nSELECT 1; /* between */ SELECT count(*) FROM marts.requests",
        "SELECT content FROM read_text('{wh}') LIMIT 0",  # the warehouse file itself is not outside
    ],
)
def test_read_only_queries_still_work(site: Site, query: str) -> None:
    before = _snapshot(site)
    table = run_query(_fill(query, site), site.wh)
    assert table.columns
    assert _snapshot(site) == before


ENGINE_REFUSES = [
    "COPY (SELECT 1 AS a) TO '{target}'",
    "COPY (SELECT 1 AS a) TO '{wh}'",
    "EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{target}'",
    "EXPORT DATABASE '{outside}'",
    "ATTACH '{target}' AS x",
    "SELECT content FROM read_text('{secret}')",
    "SELECT * FROM read_csv('{secret}')",
    "SELECT * FROM read_blob('{secret}')",
    "SELECT * FROM glob('{outside}/*')",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "PRAGMA threads = 1",
    "SET memory_limit = '1GB'",
    "CREATE TABLE marts.evil AS SELECT 1 AS a",
]


@pytest.mark.parametrize("template", ENGINE_REFUSES)
def test_the_engine_enforces_it_without_the_guard(site: Site, template: str) -> None:
    """Straight on the analyst connection (no ``check_read_only``): DuckDB refuses by itself."""
    before = _snapshot(site)
    con = connect_analyst(site.wh)
    try:
        with pytest.raises(duckdb.Error, match=r"disabled|locked|read-only") as refused:
            con.execute(_fill(template, site)).fetchall()
        assert SECRET not in str(refused.value)
    finally:
        con.close()
    assert _snapshot(site) == before


def test_internal_readers_keep_an_unlocked_connection(site: Site) -> None:
    """``connect_readonly`` is for the project's own SQL: it may still read files (Parquet export)."""
    con = connect_readonly(site.wh)
    try:
        assert con.execute(f"SELECT count(*) FROM read_csv('{site.secret}')").fetchone() == (1,)
    finally:
        con.close()


# --- exports: written by loadwise from the result, atomically, never over the warehouse ------------


@pytest.mark.parametrize(
    "name",
    ["warehouse.duckdb", "warehouse.duckdb.wal", "warehouse.duckdb.lock", "warehouse.duckdb.tmp/spill.csv",
     ".warehouse.duckdb.123-abcd1234.loading", ".warehouse.duckdb.123-abcd1234.loading.wal"],
)  # fmt: skip
def test_export_refuses_the_warehouse_and_its_side_files(site: Site, name: str) -> None:
    before = _snapshot(site)
    out = site.wh.parent / name
    result = runner.invoke(
        app, ["sql", "SELECT 1 AS a", "--warehouse", str(site.wh), "--out", str(out), "--format", "csv"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("error: refusing to export")
    assert result.output.count("\n") == 1
    assert _snapshot(site) == before


def test_export_refuses_a_hard_link_to_the_warehouse(site: Site, tmp_path: Path) -> None:
    link = tmp_path / "innocent.csv"
    link.hardlink_to(site.wh)
    before = _snapshot(site)
    with pytest.raises(WarehouseError, match="refusing to export"):
        export_query("SELECT 1 AS a", [(link, "csv")], site.wh)
    assert _snapshot(site) == before


def test_a_failing_export_leaves_no_file_and_keeps_the_old_one(site: Site, tmp_path: Path) -> None:
    old = tmp_path / "keep.csv"
    old.write_text("old\n")
    missing = tmp_path / "new" / "dir" / "out.parquet"
    for query in ("SELECT * FROM nope", "SELECT error('boom')", "COPY (SELECT 1) TO 'x'"):
        for out, fmt in ((old, "csv"), (missing, "parquet")):
            with pytest.raises(WarehouseError):
                export_query(query, [(out, fmt)], site.wh)
    assert old.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.csv"]  # no partial file, no folder


def test_export_runs_the_query_once_and_counts_rows_from_the_result(site: Site, tmp_path: Path) -> None:
    # random() differs per run: if the query ran twice (once to write, once to count), or once per
    # file, the two files would hold different numbers.
    query = "SELECT i, random() AS r FROM range(1000) t(i)"
    csv_out, parquet_out = tmp_path / "a.csv", tmp_path / "a.parquet"
    result = runner.invoke(
        app, ["sql", query, "--warehouse", str(site.wh), "--csv", str(csv_out), "--parquet", str(parquet_out)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("wrote 1000 rows") == 2
    from_csv = [float(row["r"]) for row in csv.DictReader(io.StringIO(csv_out.read_text()))]
    assert from_csv == pq.read_table(parquet_out).column("r").to_pylist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.parquet"]  # no temporary left


def test_export_values_are_exact(site: Site, tmp_path: Path) -> None:
    """Every DuckDB type keeps its value through the Arrow hand-off: same bytes as DuckDB's own COPY.

    ``tuple`` (an unnamed STRUCT, which Arrow must name) and ``empty_struct`` (no Parquet
    equivalent) are left out.
    """
    query = "SELECT * EXCLUDE (tuple, empty_struct) FROM test_all_types()"
    csv_out, parquet_out = tmp_path / "all.csv", tmp_path / "all.parquet"
    assert export_query(query, [(csv_out, "csv"), (parquet_out, "parquet")], site.wh) == 3
    with duckdb.connect() as reference:
        reference.sql(query).write_csv(str(tmp_path / "ref.csv"), header=True)
        reference.sql(query).write_parquet(str(tmp_path / "ref.parquet"))
        assert csv_out.read_text() == (tmp_path / "ref.csv").read_text()
        ours, ref = f"FROM '{parquet_out}'", f"FROM '{tmp_path / 'ref.parquet'}'"
        assert reference.sql(ours).types == reference.sql(ref).types
        assert reference.execute(f"SELECT count(*) FROM (({ours}) EXCEPT ALL ({ref}))").fetchone() == (0,)


# --- property: statements built from dangerous pieces --------------------------------------------

DANGER = [
    "COPY (SELECT 1 AS a) TO '{target}'",
    "COPY marts.requests TO '{wh}' (FORMAT parquet)",
    "ATTACH '{target}' AS x",
    "EXPORT DATABASE '{outside}'",
    "SELECT * FROM read_text('{secret}')",
    "SELECT * FROM read_csv('{secret}')",
    "SELECT * FROM read_blob('{secret}')",
    "SELECT * FROM read_json('{secret}')",
    "SELECT * FROM glob('{outside}/*')",
    "SELECT * FROM '{secret}'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA threads = 1",
    "CALL pragma_version()",
    "DROP TABLE marts.requests",
    "INSERT INTO raw.files SELECT * FROM raw.files",
]
PREFIX = ["", "EXPLAIN ", "EXPLAIN ANALYZE ", "EXPLAIN (ANALYZE) ", "SELECT 1; ", "SELECT 1; /* x */ ",
          "-- c\n", "/* a /* b */ */ ", "SELECT 1;\n--\n"]  # fmt: skip
SUFFIX = ["", ";", "; SELECT 1", " -- trailing", "/* */;", ";;"]
_PLACEHOLDER = re.compile(r"(\{\w+\})")


def _recase(template: str, flips: list[bool]) -> str:
    """Flip the case of the template's letters (never of the placeholders: paths keep their case)."""
    parts, k = [], 0
    for part in _PLACEHOLDER.split(template):
        if _PLACEHOLDER.fullmatch(part):
            parts.append(part)
            continue
        chars = []
        for c in part:
            chars.append(c.swapcase() if flips[k % len(flips)] else c)
            k += 1
        parts.append("".join(chars))
    return "".join(parts)


@st.composite
def dangerous(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(st.sampled_from(DANGER), min_size=1, max_size=2))
    flips = draw(st.lists(st.booleans(), min_size=1, max_size=8))
    body = "; ".join(_recase(p, flips) for p in pieces)
    return draw(st.sampled_from(PREFIX)) + body + draw(st.sampled_from(SUFFIX))


_FIXTURE = [HealthCheck.function_scoped_fixture]  # the site and the working directory are per test


def _check_no_escape(site: Site, template: str) -> None:
    query = _fill(template, site)
    before = _snapshot(site)
    try:  # a plain EXPLAIN of a reader may plan without reading: fine, as long as nothing leaked
        shown = repr(run_query(query, site.wh).rows)
    except WarehouseError as exc:  # anything else (a DuckDB exception, a crash) fails the test
        shown = str(exc)
        assert shown.count("\n") == 0
    assert SECRET not in shown
    assert _snapshot(site) == before


@settings(derandomize=True, max_examples=150, deadline=None, suppress_health_check=_FIXTURE)
@given(template=dangerous())
def test_generated_escapes_never_change_anything(site: Site, template: str) -> None:
    _check_no_escape(site, template)


@pytest.mark.slow
@settings(derandomize=True, max_examples=2000, deadline=None, suppress_health_check=_FIXTURE)
@given(template=dangerous())
def test_generated_escapes_never_change_anything_long(site: Site, template: str) -> None:
    _check_no_escape(site, template)


def test_guard_message_only_mentions_the_first_refused_statement() -> None:
    with pytest.raises(ReadOnlyQueryError, match="got an ATTACH statement"):
        check_read_only("SELECT 1; ATTACH 'x' AS y; COPY (SELECT 1) TO 'z'")
