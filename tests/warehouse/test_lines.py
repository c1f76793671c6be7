"""The line rules of every text reader (warehouse/lines.py): the splitter, the scan, the fast path.

- ``_split`` (Python) gives the lines of ``re.split(rb"\\r\\n|\\r|\\n")`` whatever the chunk borders;
- ``scan_file`` flags exactly the files with a bare CR, a NUL, bytes that are not UTF-8 or a long
  line, whatever the chunk borders (its hash is the file's SHA-256);
- on a file the scan does not flag, DuckDB's CSV line scan (the fast path of the line formats)
  gives the same ``(line, text)`` rows as the Python reader.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from warehouse import lines
from warehouse.lines import BOM, FAST_LINE_BYTES, _split, iter_lines, scan_file

SETTINGS = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
PIECES = st.sampled_from(
    [b"a", b"1,2", b"abcd", b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b"\xc3\xa9", b"\xc3", b" "]
)
DATA = st.lists(PIECES, max_size=30).map(b"".join)


def _oracle(data: bytes) -> list[bytes]:
    parts = re.split(rb"\r\n|\r|\n", data)
    return parts[:-1] if parts and parts[-1] == b"" else parts


@SETTINGS
@given(data=DATA, chunk=st.integers(1, 7))
def test_split_equals_universal_newlines(data: bytes, chunk: int) -> None:
    got = [raw for raw, _ in _split(io.BytesIO(data), chunk=chunk)]
    assert got == _oracle(data)


@SETTINGS
@given(data=DATA, chunk=st.integers(1, 7))
def test_split_drops_too_long_lines_without_holding_them(data: bytes, chunk: int) -> None:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(lines, "MAX_LINE_BYTES", 3)
        got = list(_split(io.BytesIO(data), chunk=chunk))
    want = _oracle(data)
    assert [length for _, length in got] == [len(w) for w in want]
    assert [raw for raw, _ in got] == [w if len(w) <= 3 else None for w in want]


@SETTINGS
@given(data=DATA, chunk=st.integers(1, 7), long_at=st.integers(2, 6))
@example(data=b"\nabcde\n", chunk=7, long_at=2)  # a long line inside one block
def test_scan_flags_exactly_what_duckdb_misreads(
    data: bytes, chunk: int, long_at: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("scan") / "f.csv"
    path.write_bytes(data)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(lines, "FAST_LINE_BYTES", long_at)
        scan = scan_file(path, chunk=chunk)
    assert scan.content_hash == hashlib.sha256(data).hexdigest()
    assert scan.size_bytes == len(data)
    assert scan.bare_cr == bool(re.search(rb"\r(?!\n)", data))
    assert scan.nul == (b"\x00" in data)
    try:
        data.decode("utf-8")
        assert not scan.not_utf8
    except UnicodeDecodeError:
        assert scan.not_utf8
    # a line (between \n) longer than the threshold, \r counted as a byte
    assert scan.long_line == any(len(part) > long_at for part in data.split(b"\n"))


def test_iter_lines_reasons(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(BOM + b"first\r\nnul\x00here\rbad\xff\n\nlast")
    assert list(iter_lines(path)) == [
        (1, "first", None),
        (2, "nul\x00here", "nul_byte"),
        (3, "bad\\xff", "invalid_utf8"),
        (4, "", None),
        (5, "last", None),
    ]


TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=12
)


@SETTINGS
@given(
    texts=st.lists(TEXT, min_size=1, max_size=12),
    ends=st.lists(st.sampled_from(["\n", "\r\n"]), min_size=12, max_size=12),
    bom=st.booleans(),
    trailing=st.booleans(),
)
def test_duckdb_fast_path_equals_python_reader(
    texts: list[str], ends: list[str], bom: bool, trailing: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    body = "".join(t + e for t, e in zip(texts, ends, strict=False))
    if not trailing:
        body = body[: -len(ends[len(texts) - 1])]
    path = tmp_path_factory.mktemp("fast") / "f.csv"
    path.write_bytes((BOM if bom else b"") + body.encode("utf-8"))
    scan = scan_file(path)
    assert scan.duckdb_safe
    from warehouse.ingest import _LINES, _q

    con = duckdb.connect()
    try:
        fast = con.execute(
            f"SELECT row_number() OVER () AS n, coalesce(text, '') FROM {_LINES.format(path=_q(str(path)))}"
        ).fetchall()
    finally:
        con.close()
    slow = [(n, text) for n, text, error in iter_lines(path) if error is None]
    assert fast == slow


def test_fast_line_threshold_is_below_duckdbs_line_limit() -> None:
    assert FAST_LINE_BYTES < 2 * 1024 * 1024
