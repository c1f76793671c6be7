"""Format detection and per-format reading: every registered format has a sample and loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.warehouse.samples import SAMPLES, write_text
from training.simulator.request import Request
from warehouse.errors import NoFileLoadedError, UnknownFormatError, UnreadableFileError
from warehouse.formats import FORMATS, detect, task_from_filename
from warehouse.ingest import RAW_TABLE, ingest
from warehouse.store import connect_readonly


def test_every_format_has_a_sample_and_a_raw_table() -> None:
    assert {s.format for s in SAMPLES.values()} == set(FORMATS)
    assert set(RAW_TABLE) == set(FORMATS)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_detects_format(name: str, tmp_path: Path) -> None:
    sample = SAMPLES[name]
    assert detect(sample.write(tmp_path)).format == sample.format


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_reads_sample_into_canonical_rows(name: str, tmp_path: Path, wh: Path) -> None:
    sample = SAMPLES[name]
    report = ingest([sample.write(tmp_path / "in")], warehouse=wh)
    (file,) = report.files
    assert (file.format, file.rows_read, file.ingested, file.quarantined) == (
        sample.format, sample.rows_read, sample.ingested, sample.quarantined,
    )  # fmt: skip
    con = connect_readonly(wh)
    rows = con.execute(
        "SELECT request_id, arrival_s, prompt_tokens, output_tokens, task, prefix_hash_ids, prompt_text, "
        "status FROM marts.requests ORDER BY arrival_s, request_id"
    ).fetchall()
    con.close()
    assert len(rows) == sample.ingested
    assert rows[0][1] == 0.0 or sample.format == "canonical"  # trace-relative arrivals start at 0
    for rid, arrival, prompt, output, task, hashes, text, status in rows:
        if status == "ok":  # every successful canonical row is a valid simulator request
            Request(rid, arrival, prompt, output, task, tuple(hashes) if hashes else None, text)


def _one(wh: Path, sql: str) -> tuple:
    con = connect_readonly(wh)
    try:
        return con.execute(sql).fetchone()
    finally:
        con.close()


def test_azure_values_and_task_from_filename(tmp_path: Path, wh: Path) -> None:
    ingest([SAMPLES["azure"].write(tmp_path)], warehouse=wh)
    row = _one(
        wh,
        "SELECT arrival_s, prompt_tokens, output_tokens, task, arrival_ts FROM marts.requests WHERE line = 3",
    )
    assert row[0] == pytest.approx(50.9951690 - 46.6805900, abs=1e-6)
    assert row[1:4] == (396, 109, "code")
    assert str(row[4]) == "2023-11-16 18:15:50.995169"


def test_mooncake_hash_ids_and_ms_timestamps(tmp_path: Path, wh: Path) -> None:
    ingest([SAMPLES["mooncake"].write(tmp_path)], warehouse=wh)
    row = _one(wh, "SELECT arrival_s, prefix_hash_ids, task FROM marts.requests WHERE line = 2")
    assert row == (0.25, [0, 2], "conversation")
    assert _one(wh, "SELECT prefix_hash_ids FROM marts.requests WHERE line = 3") == (None,)


def test_burstgpt_zero_response_is_failed_not_success(tmp_path: Path, wh: Path) -> None:
    ingest([SAMPLES["burstgpt"].write(tmp_path)], warehouse=wh)
    assert _one(wh, "SELECT status, output_tokens, model, task FROM marts.requests WHERE line = 3") == (
        "failed", 0, "ChatGPT", "conv",
    )  # fmt: skip
    assert _one(wh, "SELECT count(*) FROM marts.request_classes") == (2,)  # failed rows are not classed


def test_castillo_one_row_per_sample(tmp_path: Path, wh: Path) -> None:
    ingest([SAMPLES["castillo"].write(tmp_path)], warehouse=wh)
    con = connect_readonly(wh)
    rows = con.execute(
        "SELECT line, sample_index, output_tokens, task, split, model FROM marts.requests "
        "ORDER BY line, sample_index"
    ).fetchall()
    reasons = con.execute("SELECT line, record_index, reason FROM raw.quarantine ORDER BY line").fetchall()
    con.close()
    assert rows[:3] == [
        (1, 0, 10, "Alpaca", "train", "m1"),
        (1, 1, 20, "Alpaca", "train", "m1"),
        (1, 2, 30, "Alpaca", "train", "m1"),
    ]
    assert rows[3][3] == "DollyDataset/open_qa"
    assert reasons == [(2, 1, "output_tokens_zero"), (3, None, "missing_output_sizes")]


def test_dolly_token_approximation(tmp_path: Path, wh: Path) -> None:
    ingest([SAMPLES["dolly"].write(tmp_path)], warehouse=wh)
    # "Summarise" + "one two three four" = 5 words -> ceil(6.5) = 7; "one" -> ceil(1.3) = 2
    row = _one(
        wh, "SELECT prompt_tokens, output_tokens, task, prompt_text FROM marts.requests WHERE line = 2"
    )
    assert row == (7, 2, "summarization", "Summarise\n\none two three four")


def test_otel_spans(tmp_path: Path, wh: Path) -> None:
    ingest([SAMPLES["otel"].write(tmp_path)], warehouse=wh)
    row = _one(
        wh,
        "SELECT arrival_s, prompt_tokens, output_tokens, model, task FROM marts.requests "
        "ORDER BY arrival_s DESC",
    )
    assert row == (2.0, 7, 9, "gpt-4o", "chat")
    assert _one(wh, "SELECT reason FROM raw.quarantine") == ("bad_output_tokens",)


def test_canonical_keeps_ids_quoting_and_status(tmp_path: Path, wh: Path) -> None:
    ingest([SAMPLES["canonical"].write(tmp_path)], warehouse=wh)
    row = _one(wh, "SELECT source, prompt_text, prefix_hash_ids FROM marts.requests WHERE request_id = 'r1'")
    assert row == ("mine", 'hello, "world"', [1, 2])
    assert _one(wh, "SELECT status FROM marts.requests WHERE request_id = 'r2'") == ("failed",)


def test_forced_format_and_source(tmp_path: Path, wh: Path) -> None:
    path = SAMPLES["azure"].write(tmp_path)
    report = ingest([path], warehouse=wh, fmt="azure", source="prod-eu")
    assert report.files[0].source == "prod-eu"
    assert _one(wh, "SELECT DISTINCT source FROM marts.requests") == ("prod-eu",)
    with pytest.raises(UnreadableFileError, match="lacks the vidur fields"):
        detect(path, "vidur")


@pytest.mark.parametrize(
    ("name", "content", "error", "match"),
    [
        ("x.csv", "a,b\n1,2\n", UnknownFormatError, "matches no format"),
        ("x.jsonl", '{"foo": 1}\n', UnknownFormatError, "first JSON record matches no format"),
        ("x.json", "", UnreadableFileError, "empty file"),
        ("x.parquet", "not parquet", UnreadableFileError, "not a readable Parquet file"),
    ],
)
def test_unknown_or_unreadable_files_are_clear_errors(
    tmp_path: Path, wh: Path, name: str, content: str, error: type, match: str
) -> None:
    path = write_text(tmp_path / name, content)
    with pytest.raises(error, match=match):
        detect(path)
    # Alone in a load, the file is skipped with that reason: nothing loads, nothing is published.
    with pytest.raises(NoFileLoadedError, match=match) as info:
        ingest([path], warehouse=wh)
    assert str(path) in str(info.value)
    assert not wh.exists()


def test_non_utf8_line_is_quarantined_the_rest_loads(tmp_path: Path, wh: Path) -> None:
    path = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    path.write_bytes(
        b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,1,\xff\xfe\n"
        b"2023-11-16 18:15:47.0000000,5,6\n"
    )
    (file,) = ingest([path], warehouse=wh).files
    assert (file.status, file.rows_read, file.ingested, file.quarantined) == ("loaded", 2, 1, 1)
    assert _one(wh, "SELECT line, reason, raw_text FROM raw.quarantine") == (
        2, "invalid_utf8", "2023-11-16 18:15:46.6805900,1,\\xff\\xfe",
    )  # fmt: skip


def test_file_that_is_not_utf8_text_is_skipped(tmp_path: Path, wh: Path) -> None:
    path = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    path.write_bytes("TIMESTAMP,ContextTokens,GeneratedTokens\n".encode("utf-16"))
    with pytest.raises(UnreadableFileError, match=r"line 1 is not UTF-8 text|NUL byte in line 1"):
        detect(path)
    with pytest.raises(NoFileLoadedError, match=r"line 1 is not UTF-8 text|NUL byte in line 1"):
        ingest([path], warehouse=wh)


def test_unknown_format_name_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UnknownFormatError, match="unknown format 'nope'"):
        detect(SAMPLES["azure"].write(tmp_path), "nope")


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("AzureLLMInferenceTrace_code.csv", "code"),
        ("conversation_trace.jsonl", "conversation"),
        ("trace.csv", "trace"),
    ],
)
def test_task_from_filename(name: str, task: str) -> None:
    assert task_from_filename(Path(name)) == task
