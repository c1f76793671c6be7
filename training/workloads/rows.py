"""Canonical request rows (Arrow) → the simulator's ``Request`` objects. Pure: tables in, objects out.

Who calls this: ``sources`` (the workloads of the warehouse and of trace files), once per replayed
trace, after it has read rows of ``marts.requests`` (or a warehouse built from a trace file) into an
Arrow table. It never touches the DuckDB file. Columns used: ``request_id, arrival_s, prompt_tokens,
output_tokens`` (required), ``task, prefix_hash_ids, prompt_text`` (optional). Rows must already be
valid (the warehouse's staging checks quarantine bad ones); only successful requests should be
passed (``status = 'ok'``).
"""

from __future__ import annotations

import pyarrow as pa

from training.simulator.request import Request

REQUIRED_COLUMNS = ("request_id", "arrival_s", "prompt_tokens", "output_tokens")


def requests_from_table(
    table: pa.Table, *, max_output_tokens: int | None = None, rebase: bool = True
) -> list[Request]:
    """Requests sorted by arrival (stable), arrivals rebased to start at 0 when ``rebase``; each
    request's ``row_id`` is its ``request_id`` (the warehouse row it replays).

    ``max_output_tokens`` clips output lengths (a serving ``max_tokens``; real prompt sets hold
    runaway generations). Raises ``ValueError`` naming missing columns.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"canonical request table lacks columns {missing}")
    n = table.num_rows
    cols = {c: table.column(c).to_pylist() for c in table.column_names}
    none: list[None] = [None] * n
    tasks, prefixes, texts = (
        cols.get("task", none),
        cols.get("prefix_hash_ids", none),
        cols.get("prompt_text", none),
    )
    arrivals = cols["arrival_s"]
    order = sorted(range(n), key=arrivals.__getitem__)
    t0 = float(arrivals[order[0]]) if (rebase and n) else 0.0
    out: list[Request] = []
    for i in order:
        out_tokens = int(cols["output_tokens"][i])
        if max_output_tokens is not None:
            out_tokens = min(out_tokens, max_output_tokens)
        prefix = prefixes[i]
        out.append(
            Request(
                request_id=str(cols["request_id"][i]),
                arrival_s=float(arrivals[i]) - t0,
                prompt_tokens=int(cols["prompt_tokens"][i]),
                output_tokens=out_tokens,
                task=tasks[i] or "",
                prefix_hash_ids=tuple(prefix) if prefix else None,
                prompt_text=texts[i],
                row_id=str(cols["request_id"][i]),
            )
        )
    return out
