"""``loadwise ingest``, ``export-parquet`` and ``sql``: the warehouse's commands.

Who calls this: the ``loadwise`` app (``flows/cli/__init__.py``) merges ``app`` into its top level.
Only typer is imported at module level; DuckDB, rich and (for ``ingest --flow``) Prefect are
imported in the command bodies, so ``loadwise sql`` starts fast and plain ``loadwise ingest`` never
starts Prefect. Warehouse errors are one line on stderr (no traceback), exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.shared import JsonOpt, SqlFormat, TraceFormat, WarehouseOpt, echo_json, fail

app = typer.Typer()

SUFFIX_FORMATS = {"ndjson": "jsonl"}
"""``sql --out FILE`` without ``--format``: file extensions that name another format."""


def _cell(value: Any) -> str:
    """A query result's value as a ``table`` cell: Python's exact text (floats round-trip), NULL empty."""
    return "" if value is None else str(value)


def _print_ingest_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ingest → {report.get('warehouse', '')}")
    counts = ("rows_read", "ingested", "quarantined", "duplicates_skipped")
    for column in ("path", "format", "source", "status", *counts):
        table.add_column(column, justify="right" if column in counts else "left")
    for f in report["files"]:
        table.add_row(
            Path(f["path"]).name, f["format"], f["source"], f["status"], *(str(f[c]) for c in counts)
        )
    table.add_row("total", "", "", "", *(str(report[c]) for c in counts), style="bold")
    console = Console()
    console.print(table)
    console.print(
        f"{report['rows_read']} rows read = {report['ingested']} ingested + "
        f"{report['quarantined']} quarantined (reconciled); "
        f"{report['duplicates_skipped']} rows in already-ingested files skipped"
    )
    skipped = [f for f in report["files"] if f.get("status") == "skipped"]
    if skipped:  # one line each: the file and why (the other files were loaded)
        console.print(f"[yellow]{len(skipped)} file(s) skipped, not loaded:[/yellow]", highlight=False)
        for f in skipped:
            console.print(f"  skipped {f['path']}: {f.get('reason')}", highlight=False, markup=False)


@app.command("ingest")
def ingest_cmd(
    paths: Annotated[list[Path], typer.Argument(help="trace files or directories")],
    fmt: Annotated[
        TraceFormat, typer.Option("--format", "-f", help="trace format (auto: detected per file)")
    ] = "auto",
    source: Annotated[str | None, typer.Option(help="source label (default: the format name)")] = None,
    warehouse: WarehouseOpt = None,
    as_json: JsonOpt = False,
    flow: Annotated[bool, typer.Option("--flow", help="run as the Prefect flow ingest-traces")] = False,
) -> None:
    """Ingest trace files into the warehouse (idempotent, atomic; bad rows go to raw.quarantine).

    A file that cannot be read as a trace (no format matches, not text, unreadable) is skipped
    and listed with the reason; the others load. Exit code 1 when every file was skipped.
    """
    from warehouse.errors import WarehouseError

    try:
        if flow:
            from warehouse.settings import prefect_home
            from warehouse.store import check_write_target

            check_write_target(warehouse)  # refused here: one line, not a failed Prefect flow run
            prefect_home()
            from flows.ingest import ingest_traces

            report = ingest_traces(
                [str(p) for p in paths], str(warehouse) if warehouse else None, fmt, source
            )
        else:
            from warehouse.ingest import ingest

            report = ingest(paths, warehouse=warehouse, fmt=fmt, source=source).to_dict()
    except WarehouseError as exc:
        raise fail(str(exc)) from None
    if as_json:
        echo_json(report)
    else:
        _print_ingest_table(report)


@app.command("export-parquet")
def export_parquet_cmd(
    root: Annotated[str, typer.Argument(help="folder (or s3:// URL with a DuckDB secret) to write under")],
    warehouse: WarehouseOpt = None,
) -> None:
    """Export marts.requests as Parquet partitioned by source and day (Hive layout)."""
    from warehouse.errors import WarehouseError
    from warehouse.parquet import export_partitioned

    try:
        counts = export_partitioned(root, warehouse)
    except (WarehouseError, OSError) as exc:
        raise fail(str(exc)) from None
    for table, rows in counts.items():
        typer.echo(f"{table}: {rows} rows -> {root.rstrip('/')}/{table}/source=*/day=*/")


@app.command("sql")
def sql_cmd(
    query: Annotated[str, typer.Argument(help="a read-only query (SELECT, WITH, DESCRIBE, SHOW, EXPLAIN)")],
    warehouse: WarehouseOpt = None,
    out_format: Annotated[
        SqlFormat,
        typer.Option(
            "--format",
            help="table|csv|json|jsonl (stdout; json: one array, jsonl: JSON Lines), "
            "or csv|parquet|json|jsonl with --out",
        ),
    ] = "table",
    out: Annotated[Path | None, typer.Option("--out", help="export the whole result to this file")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="export the result as CSV")] = None,
    parquet_out: Annotated[
        Path | None, typer.Option("--parquet", help="export the result as Parquet")
    ] = None,
    max_rows: Annotated[int, typer.Option(help="rows printed at most (table format)")] = 200,
) -> None:
    """Query the warehouse read-only; print a table, CSV, JSON or JSON Lines, or export to files.

    DuckDB itself keeps the query read-only: it cannot read a file or URL outside the
    warehouse, write, attach, install or load an extension, or change a setting. Every format
    but the table is written by DuckDB from the result (exact values, LF line ends), on stdout
    or, with --out, --csv and --parquet, to files (never the warehouse or its files).
    """
    from warehouse.errors import WarehouseError
    from warehouse.query import export_query, run_query, write_stdout

    exports = [(p, f) for p, f in ((csv_out, "csv"), (parquet_out, "parquet")) if p is not None]
    if out is not None:
        suffix = out.suffix.lstrip(".").lower()
        exports.append((out, out_format if out_format != "table" else SUFFIX_FORMATS.get(suffix, suffix)))
    if not exports and out_format == "parquet":
        raise typer.BadParameter(
            "parquet is binary: give --out FILE.parquet (or --parquet FILE)", param_hint="--format"
        )
    try:
        if exports:
            n = export_query(query, exports, warehouse)
            for path, fmt in exports:
                typer.echo(f"wrote {n} rows to {path} ({fmt})", err=True)
            return
        if out_format != "table":
            write_stdout(query, out_format, sys.stdout.buffer, warehouse)
            return
        table = run_query(query, warehouse, max_rows + 1)
    except WarehouseError as exc:
        raise fail(str(exc)) from None
    from rich.console import Console
    from rich.table import Table

    rich_table = Table(*table.columns)
    for row in table.rows[:max_rows]:
        rich_table.add_row(*(_cell(v) for v in row))
    console = Console()
    console.print(rich_table)
    if len(table.rows) > max_rows:
        console.print(f"(first {max_rows} rows shown; use --max-rows or --out for more)")
