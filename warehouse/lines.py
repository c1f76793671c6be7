"""Text trace files as lines: the byte scan that rides on the content hash, and the Python line reader.

Called by ``warehouse.ingest`` once per file: ``scan_file`` while planning a load (it *is* the
content-hash pass: every byte is read once, hashed and scanned), ``read_lines`` when a file's lines
cannot be handed to DuckDB's CSV scanner as they are. ``warehouse.otel`` reads OTLP JSON lines with
``iter_lines`` too, so every line-oriented reader splits lines the same way.

**What a line is** (every reader, both paths): the bytes up to ``\\n``, ``\\r\\n`` or a bare ``\\r``
(old Mac), without that terminator; a UTF-8 byte order mark at the very start of the file is not
part of line 1. DuckDB's CSV scanner (the fast path of the line formats, ``new_line='\\r\\n'``)
agrees with this definition only on files without a bare ``\\r``: on a bare ``\\r`` it drops the
next character (``10.5,100,10`` became ``0.5,100,10``). It also cuts a line at a NUL byte (its
delimiter) and refuses the whole file on a line that is not UTF-8 or longer than its
``max_line_size`` (2 MiB). So ``scan_file`` flags every such file and ``warehouse.ingest`` reads
them with ``read_lines`` instead (~1-2 s per million lines, against ~0.1 s for DuckDB):

- a bare ``\\r`` ends a line, like ``\\n`` (the file is read correctly, not refused);
- a line holding a NUL byte is kept whole and quarantined (``nul_byte``);
- a line that is not UTF-8 is quarantined (``invalid_utf8``; its text kept with the bad bytes as
  ``\\xNN`` escapes);
- a line longer than ``MAX_LINE_BYTES`` (64 MiB) is quarantined (``line_too_long: N bytes``) without
  its text, and never held in memory whole.

Whether a *file* is text at all is decided by detection (``warehouse.formats``): a file whose first
line holds a NUL byte or is not UTF-8 is skipped as binary.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from warehouse.errors import UnreadableFileError

MAX_LINE_BYTES = 64 << 20  # longer lines are quarantined (line_too_long) without their text
FAST_LINE_BYTES = 1 << 20  # DuckDB's max_line_size is 2 MiB: files with longer lines take read_lines
BOM = b"\xef\xbb\xbf"
# A line that ends with a comma (a compiled search is ~1.5x faster than ``bytes.__contains__`` here).
_COMMA_LF, _COMMA_CRLF = re.compile(rb",\n"), re.compile(rb",\r\n")
LINES_SCHEMA = pa.schema(
    [pa.field("n", pa.int64()), pa.field("text", pa.string()), pa.field("parse_error", pa.string())]
)


@dataclass(frozen=True)
class FileScan:
    """What one pass over a file's bytes found: its SHA-256 and the features DuckDB's scan misreads.

    ``bare_cr``: a ``\\r`` not followed by ``\\n``; ``nul``: a NUL byte; ``not_utf8``: bytes that do
    not decode as UTF-8; ``long_line``: a line over ``FAST_LINE_BYTES``. ``lines``: ``\\n`` count;
    ``cr``: ``\\r`` count (exact while ``bare_cr`` is False: then every ``\\r`` starts a ``\\r\\n``);
    ``ends_newline``: the last byte is ``\\n``; ``trailing_comma`` (scanned as CSV only): a line ends
    with ``,`` (DuckDB's CSV reader drops empty fields after the last column: ``1,2,3,,`` is read as
    3 fields; exact when ``one_line_ending``).
    """

    content_hash: str
    size_bytes: int
    lines: int = 0
    bare_cr: bool = False
    nul: bool = False
    not_utf8: bool = False
    long_line: bool = False
    cr: int = 0
    ends_newline: bool = False
    trailing_comma: bool = False

    @property
    def duckdb_safe(self) -> bool:
        """True when DuckDB's line scan reads the file exactly as ``read_lines`` would."""
        return not (self.bare_cr or self.nul or self.not_utf8 or self.long_line)

    @property
    def line_count(self) -> int:
        """Lines in the file as every reader numbers them: ``\\n`` count, plus an unterminated last line."""
        return self.lines + (0 if self.ends_newline or not self.size_bytes else 1)

    @property
    def one_line_ending(self) -> bool:
        """True when every line ends the same way: all ``\\n`` or all ``\\r\\n`` (no bare ``\\r``)."""
        return not self.bare_cr and self.cr in (0, self.lines)


def scan_file(path: Path, *, text: bool = True, csv: bool = False, chunk: int = 1 << 20) -> FileScan:
    """Hash ``path`` and, for a text file (``text``), scan it (see ``FileScan``); one read of the file.

    ``csv``: also look for a line that ends with a comma (``FileScan.trailing_comma``; the CSV
    trace formats' fast path needs it, ~0.03 s per 36 MB).

    Cost on top of the hash: a few C-speed passes per 1 MiB block (``count``, ``find``, ``isascii``;
    a UTF-8 decode only for blocks that are not ASCII): ~5 ms per 10 MB. Raises
    ``UnreadableFileError`` when the file cannot be read.
    """
    # A line that starts and ends inside one block is shorter than the block, so only lines that
    # cross a block border need measuring when blocks are at most FAST_LINE_BYTES.
    chunk = min(chunk, FAST_LINE_BYTES)
    digest = hashlib.sha256()
    size = lines = cr = 0
    last = tail = b""
    trailing_comma = False
    bare_cr = nul = not_utf8 = long_line = False
    decoder = codecs.getincrementaldecoder("utf-8")()
    since_newline = 0  # bytes of the current line seen so far (it started in an earlier block)
    prev_cr = False  # the previous block ended with '\r'
    # The hash runs in a second thread, one block behind the scan (hashlib releases the GIL on
    # large updates): the scan's counts and the SHA-256 overlap on two cores.
    hashing: Future[None] | None = None
    try:
        with open(path, "rb") as handle, ThreadPoolExecutor(1) as pool:
            while block := handle.read(chunk):
                if hashing is not None:
                    hashing.result()
                hashing = pool.submit(digest.update, block)
                size += len(block)
                last = block[-1:]
                if not text:
                    continue
                lines += block.count(b"\n")
                if not bare_cr:
                    if prev_cr and block[:1] != b"\n":
                        bare_cr = True
                    # a '\r' at the block's end is decided by the next block's first byte
                    ends_cr = block.endswith(b"\r")
                    # (the counts only when the block has a '\r': a memchr instead of two counts)
                    if b"\r" in block:
                        block_cr = block.count(b"\r")
                        cr += block_cr
                        if block_cr - block.count(b"\r\n") - ends_cr > 0:
                            bare_cr = True
                    prev_cr = ends_cr
                if csv and not trailing_comma:
                    # one search per block (~0.7 ms per MB): ",\r\n" in a block holding a '\r', else ",\n"
                    # (exact when every line ends the same way; a file that mixes them is not read fast)
                    ending = _COMMA_CRLF if b"\r" in block or b"\r" in tail else _COMMA_LF
                    trailing_comma = bool(ending.search(tail + block[:2]) or ending.search(block))
                    tail = (tail + block[:2])[-2:] if len(block) < 2 else block[-2:]
                if not nul and b"\x00" in block:
                    nul = True
                if not not_utf8 and not block.isascii():
                    try:
                        decoder.decode(block)
                    except UnicodeDecodeError:
                        not_utf8 = True
                elif not not_utf8:
                    decoder.decode(b"")  # an ASCII block: only a pending partial character matters
                    if decoder.getstate()[0]:
                        not_utf8 = True
                first = block.find(b"\n")
                if first < 0:
                    since_newline += len(block)
                else:
                    if since_newline + first > FAST_LINE_BYTES:
                        long_line = True
                    since_newline = len(block) - block.rfind(b"\n") - 1
                if since_newline > FAST_LINE_BYTES:
                    long_line = True
            if hashing is not None:
                hashing.result()
            if text:
                bare_cr = bare_cr or prev_cr
                trailing_comma = trailing_comma or (csv and last == b",")
                try:
                    decoder.decode(b"", final=True)
                except UnicodeDecodeError:
                    not_utf8 = True
    except OSError as exc:
        raise UnreadableFileError(f"{path}: cannot read ({exc.strerror})") from exc
    return FileScan(
        digest.hexdigest(), size, lines, bare_cr, nul, not_utf8, long_line, cr, last == b"\n", trailing_comma
    )


def _split(handle: BinaryIO, chunk: int = 1 << 20) -> Iterator[tuple[bytes | None, int]]:
    """Raw lines of ``handle`` (terminators ``\\n``, ``\\r\\n``, ``\\r`` removed) and their byte length.

    A line longer than ``MAX_LINE_BYTES`` is yielded as ``(None, length)`` and never held whole.
    """
    buf = b""
    skipping = -1  # >= 0: inside a too-long line, this many bytes dropped so far
    pending_cr = False  # the previous chunk ended a line with '\r': drop a '\n' that starts this one
    while True:
        block = handle.read(chunk)
        if not block:
            break
        if pending_cr and block[:1] == b"\n":
            block = block[1:]
        pending_cr = False
        buf += block
        start = 0
        while True:
            n = buf.find(b"\n", start)
            r = buf.find(b"\r", start, n if n >= 0 else len(buf))
            end = r if r >= 0 else n
            if end < 0:
                break
            line = buf[start:end]
            if skipping >= 0:
                yield None, skipping + len(line)
                skipping = -1
            elif len(line) > MAX_LINE_BYTES:
                yield None, len(line)
            else:
                yield line, len(line)
            if end == r:
                if r + 1 < len(buf):
                    start = r + 2 if buf[r + 1 : r + 2] == b"\n" else r + 1
                else:
                    start = r + 1
                    pending_cr = True
            else:
                start = n + 1
        buf = buf[start:]
        if skipping >= 0:
            skipping += len(buf)
            buf = b""
        elif len(buf) > MAX_LINE_BYTES:
            skipping = len(buf)
            buf = b""
    if skipping >= 0:
        yield None, skipping + len(buf)
    elif buf:
        yield (None if len(buf) > MAX_LINE_BYTES else buf), len(buf)


def iter_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """``(line number, text, parse_error)`` for every line of ``path`` (see the module doc).

    ``parse_error`` is None, ``nul_byte``, ``invalid_utf8`` (text with ``\\xNN`` escapes) or
    ``line_too_long: N bytes (max M)`` (text empty). Line numbers start at 1.
    """
    try:
        with open(path, "rb") as handle:
            for number, (raw, length) in enumerate(_split(handle), start=1):
                if number == 1 and raw is not None and raw.startswith(BOM):
                    raw = raw[len(BOM) :]
                if raw is None:
                    yield number, "", f"line_too_long: {length} bytes (max {MAX_LINE_BYTES})"
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield number, raw.decode("utf-8", errors="backslashreplace"), "invalid_utf8"
                    continue
                yield number, text, ("nul_byte" if "\x00" in text else None)
    except OSError as exc:
        raise UnreadableFileError(f"{path}: cannot read ({exc.strerror})") from exc


def read_lines(path: Path, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """``iter_lines`` as Arrow batches of ``LINES_SCHEMA`` (``n``, ``text``, ``parse_error``)."""
    ns: list[int] = []
    texts: list[str] = []
    errors: list[str | None] = []
    for n, text, error in iter_lines(path):
        ns.append(n)
        texts.append(text)
        errors.append(error)
        if len(ns) >= batch_rows:
            yield pa.RecordBatch.from_arrays(
                [pa.array(ns, pa.int64()), pa.array(texts), pa.array(errors, pa.string())],
                schema=LINES_SCHEMA,
            )
            ns, texts, errors = [], [], []
    if ns:
        yield pa.RecordBatch.from_arrays(
            [pa.array(ns, pa.int64()), pa.array(texts), pa.array(errors, pa.string())], schema=LINES_SCHEMA
        )
