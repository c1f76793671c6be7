"""The one prompt split (warehouse/prompt_split.py): Python and the warehouse's SQL agree, text by text;
the view marts.prompt_split lists every request with text, once, with its split."""

from __future__ import annotations

from pathlib import Path

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from warehouse.prompt_split import SQL, TEST_FRACTION, VAL_FRACTION, split_of, splits_of
from warehouse.store import connect_readonly, write_session

_CON = duckdb.connect()
_CON.execute(SQL)


def _sql(text: str | None) -> str | None:
    return _CON.execute("SELECT marts.prompt_split(?)", [text]).fetchall()[0][0]


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_python_and_sql_give_the_same_split(text: str):
    assert split_of(text) == _sql(text)


def test_no_text_has_no_split_and_the_shares_are_the_documented_ones():
    for nothing in (None, ""):
        assert split_of(nothing) is None
        assert _sql(nothing) is None
    splits = splits_of([f"prompt number {i}" for i in range(5000)])
    assert abs(splits.count("test") / 5000 - TEST_FRACTION) < 0.02
    assert abs(splits.count("val") / 5000 - VAL_FRACTION) < 0.02
    # a function of the text alone: whitespace is part of it, nothing else is
    assert splits_of(["a", "a", "a "]) == [split_of("a"), split_of("a"), split_of("a ")]


def test_the_view_lists_every_request_with_text_and_its_split(tmp_path: Path):
    db = tmp_path / "w.duckdb"
    with write_session(db) as con:
        con.execute(
            "INSERT INTO marts.requests_stored "
            "(request_id, prompt_text, prompt_tokens, output_tokens, model, status) VALUES "
            "('a', 'same prompt', 3, 10, 'm1', 'ok'), ('b', 'same prompt', 3, 12, 'm2', 'ok'), "
            "('c', 'another one', 3, 5, 'm1', 'ok'), ('d', NULL, 3, 5, NULL, 'ok'), "
            "('e', '', 3, 5, NULL, 'ok')"
        )
    con = connect_readonly(db)
    try:
        rows = con.execute("SELECT request_id, split FROM marts.prompt_split ORDER BY 1").fetchall()
    finally:
        con.close()
    assert rows == [
        ("a", split_of("same prompt")),
        ("b", split_of("same prompt")),
        ("c", split_of("another one")),
    ]
