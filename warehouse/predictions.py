"""``marts.length_predictions``: output-length predictions stored as data, read and written in batches.

Who calls this: ``training.length.stored`` (``store_predictions`` writes what a length-predictor
version predicted for warehouse rows; ``StoredPredictor`` reads them for a replay), through
``loadwise predict``, the nightly ``predict-lengths`` step and replays that find requests missing;
analysts read the table and its views (``marts.length_prediction_errors``,
``marts.length_calibration``, ``marts.length_calibration_summary``; docs/warehouse.md). The warehouse
stores numbers and knows nothing of the model that made them.

One row per (request_id, model_name, model_version) (the table's primary key). ``input_hash``
(``input_hash``: the model input, prompt text + prompt tokens + task) makes the cache exact: a row
whose input is unchanged is never predicted again by the same version (``stored_hashes``); a changed
input is predicted again and replaced. Writes go through the copy-on-write ``write_session``
(a failed write publishes nothing) and are checked first (``check_rows``): a row that breaks the
contract raises ``ValueError`` and nothing is written.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Sequence

import pyarrow as pa

from warehouse.errors import WarehouseMissingError
from warehouse.store import connect_readonly, resolve_path, write_session

TABLE = "marts.length_predictions"
ANSWERED_BY = ("text", "tabular")
"""Which of the predictor's models answered a row: the prompt-text model, or the text-less one
(prompt length + task) for rows without text."""

SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("input_hash", pa.string()),
        ("expected_output_tokens", pa.float64()),
        ("bucket_probs", pa.list_(pa.float64())),
        ("bucket_edges", pa.list_(pa.float64())),
        ("answered_by", pa.string()),
    ]
)
"""The columns a writer hands ``write_predictions`` (``created_at`` is set on write)."""


def input_hash(prompt_text: str | None, prompt_tokens: int, task: str | None) -> str:
    """SHA-256 (hex) of a row's model input: the prompt text (``""`` when none), the prompt length in
    tokens and the task label (``""`` when none). Equal inputs get equal predictions."""
    key = json.dumps([prompt_text or "", int(prompt_tokens), task or ""], ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _has_table(warehouse: str | os.PathLike[str] | None) -> bool:
    return resolve_path(warehouse).exists()


def stored_hashes(
    warehouse: str | os.PathLike[str] | None, model_name: str, model_version: str
) -> dict[str, str]:
    """``request_id -> input_hash`` of the rows stored for one model version (read-only; empty when
    the warehouse or the table does not exist yet)."""
    if not _has_table(warehouse):
        return {}
    try:
        con = connect_readonly(warehouse)
    except WarehouseMissingError:
        return {}
    try:
        if not _table_exists(con):
            return {}
        rows = con.execute(
            f"SELECT request_id, input_hash FROM {TABLE} WHERE model_name = ? AND model_version = ?",
            [model_name, model_version],
        ).fetchall()
    finally:
        con.close()
    return dict(rows)


def read_predictions(
    warehouse: str | os.PathLike[str] | None,
    model_name: str,
    model_version: str,
    request_ids: Sequence[str] | None = None,
) -> pa.Table:
    """The stored rows of one model version (``request_ids``: only those), read-only: columns
    ``request_id, expected_output_tokens, bucket_probs, bucket_edges, answered_by``. Empty when the
    warehouse or the table does not exist yet."""
    empty = pa.table({n: pa.array([], SCHEMA.field(n).type) for n in _READ_COLUMNS})
    if not _has_table(warehouse):
        return empty
    con = connect_readonly(warehouse)
    try:
        if not _table_exists(con):
            return empty
        cols = ", ".join(f"p.{c}" for c in _READ_COLUMNS)
        if request_ids is None:
            return con.sql(
                f"SELECT {cols} FROM {TABLE} AS p WHERE model_name = ? AND model_version = ? "
                "ORDER BY request_id",
                params=[model_name, model_version],
            ).to_arrow_table()
        wanted = pa.table({"request_id": pa.array(list(dict.fromkeys(request_ids)), pa.string())})
        con.register("wanted_ids", wanted)
        return con.sql(
            f"SELECT {cols} FROM {TABLE} AS p JOIN wanted_ids USING (request_id) "
            "WHERE model_name = ? AND model_version = ? ORDER BY request_id",
            params=[model_name, model_version],
        ).to_arrow_table()
    finally:
        con.close()


_READ_COLUMNS = ("request_id", "expected_output_tokens", "bucket_probs", "bucket_edges", "answered_by")


def _table_exists(con: object) -> bool:
    found = con.execute(  # type: ignore[attr-defined]
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'marts' "
        "AND table_name = 'length_predictions'"
    ).fetchall()
    return bool(found[0][0])


def check_rows(rows: pa.Table) -> None:
    """Raise ``ValueError`` (naming the first bad row) unless every row keeps the table's contract:
    the ``SCHEMA`` columns, non-empty keys, an expected length that is finite and > 0, ``k`` bucket
    probabilities in [0, 1] summing to 1 (1e-6) with ``k - 1`` strictly increasing edges, and
    ``answered_by`` in ``ANSWERED_BY``."""
    missing = [n for n in SCHEMA.names if n not in rows.column_names]
    if missing:
        raise ValueError(f"prediction rows lack columns {missing}")
    cols = {n: rows.column(n).to_pylist() for n in SCHEMA.names}
    for i in range(rows.num_rows):
        rid = cols["request_id"][i]

        def bad(why: str, rid: object = rid) -> ValueError:
            return ValueError(f"prediction for request {rid!r}: {why}")

        if not rid or not cols["model_name"][i] or not cols["model_version"][i] or not cols["input_hash"][i]:
            raise bad("empty request_id, model_name, model_version or input_hash")
        expected = cols["expected_output_tokens"][i]
        if expected is None or not math.isfinite(expected) or expected <= 0:
            raise bad(f"expected_output_tokens must be finite and > 0, got {expected!r}")
        probs, edges = cols["bucket_probs"][i] or [], cols["bucket_edges"][i] or []
        if len(probs) != len(edges) + 1:
            raise bad(f"{len(probs)} bucket probabilities for {len(edges)} edges (need edges + 1)")
        if any(p is None or not 0.0 <= p <= 1.0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
            raise bad(f"bucket probabilities must lie in [0, 1] and sum to 1, got {probs}")
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise bad(f"bucket edges must increase strictly, got {edges}")
        if cols["answered_by"][i] not in ANSWERED_BY:
            raise bad(f"answered_by must be one of {ANSWERED_BY}, got {cols['answered_by'][i]!r}")


def write_predictions(warehouse: str | os.PathLike[str] | None, rows: pa.Table) -> int:
    """Insert (or replace, same key) ``rows`` (``SCHEMA`` columns) in one copy-on-write session;
    returns the rows written. Checked first (``check_rows``); nothing is written for zero rows."""
    if rows.num_rows == 0:
        return 0
    rows = rows.select(list(SCHEMA.names)).cast(SCHEMA)
    check_rows(rows)
    with write_session(warehouse) as con:
        con.register("new_predictions", rows)
        con.execute(
            f"INSERT OR REPLACE INTO {TABLE} SELECT {', '.join(SCHEMA.names)}, now() AS created_at "
            "FROM new_predictions"
        )
        con.unregister("new_predictions")
    return rows.num_rows
