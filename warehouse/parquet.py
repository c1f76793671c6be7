"""Canonical tables as Parquet partitioned by day, so a larger fleet's traces can live in object storage.

Who calls this: ``loadwise export-parquet`` / ``loadwise sql --parquet-root`` and the nightly flow
(exports after a load). Layout (Hive partitioning, readable by DuckDB, Spark, Polars, pyarrow):

    ROOT/requests/source=<source>/day=<YYYY-MM-DD>/data_0.parquet

``day`` is the UTC day of ``arrival_ts``; requests without an absolute timestamp (prompt sets such as
CASTILLO) go to ``day=undated``. An export replaces the partitions it writes (``OVERWRITE_OR_IGNORE``
per partition folder), so re-exporting after a new load is idempotent. ``ROOT`` may be a local folder
or any URL DuckDB's ``httpfs`` extension writes (``s3://bucket/prefix``), given credentials in a
DuckDB secret; only local folders are tested here.

Reading back: ``read_partitioned(root)`` gives a DuckDB relation over the whole dataset with the
partition columns restored, with partition pruning on ``source`` / ``day`` filters.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from warehouse.store import connect_readonly, resolve_path

TABLES = {"requests": "marts.requests"}
UNDATED = "undated"


DAY = f"coalesce(strftime(arrival_ts::DATE, '%Y-%m-%d'), '{UNDATED}')"


def export_partitioned(
    root: str | os.PathLike[str],
    warehouse: str | os.PathLike[str] | None = None,
    tables: tuple[str, ...] = ("requests",),
) -> dict[str, int]:
    """Write ``tables`` (keys of ``TABLES``) under ``root`` partitioned by source and day; row counts."""
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ValueError(f"unknown table(s) {unknown}; one of {sorted(TABLES)}")
    root_s = str(root)
    if "://" not in root_s:
        Path(root_s).mkdir(parents=True, exist_ok=True)
    con = connect_readonly(resolve_path(warehouse))
    counts: dict[str, int] = {}
    try:
        for name in tables:
            target = f"{root_s.rstrip('/')}/{name}"
            query = f"SELECT *, {DAY} AS day FROM {TABLES[name]}"
            counts[name] = int(con.execute(f"SELECT count(*) FROM {TABLES[name]}").fetchall()[0][0])
            con.execute(
                f"COPY ({query}) TO '{target}' "
                f"(FORMAT parquet, PARTITION_BY (source, day), OVERWRITE_OR_IGNORE, COMPRESSION zstd)"
            )
    finally:
        con.close()
    return counts


def read_partitioned(
    root: str | os.PathLike[str], table: str = "requests", con: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyRelation:
    """A relation over ``root/table`` (all partitions, ``source`` / ``day`` columns restored)."""
    pattern = f"{str(root).rstrip('/')}/{table}/**/*.parquet"
    if "://" not in pattern and not list(Path(root, table).rglob("*.parquet")):
        raise FileNotFoundError(f"no Parquet files under {Path(root, table)} (export first)")
    con = con or duckdb.connect()
    return con.sql(f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, union_by_name = true)")
