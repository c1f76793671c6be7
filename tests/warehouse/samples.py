"""Small trace files of every format, written by tests into a temporary folder.

Each writer returns the path it wrote and is listed in ``SAMPLES`` with the counts the warehouse
must report for it (rows read, ingested, quarantined), so the format contract test covers every
registered format.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

AZURE_GOOD = (
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:15:46.6805900,374,44\n"
    "2023-11-16 18:15:50.9951690,396,109\n"
    "2023-11-16 18:16:01.0000000,1200,7\n"
)
# Lines 3..9 are bad, each for one reason (line numbers are 1-based, the header is line 1).
AZURE_BAD = (
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:15:46.6805900,374,44\n"  # 2 ok
    "2023-11-16 18:15:47.0000000,abc,44\n"  # 3 bad_prompt_tokens
    "\n"  # 4 empty_line
    "2023-11-16 18:15:45.0000000,10,4\n"  # 5 time_backwards (earlier than line 3)
    "2023-11-16 18:15:49.0000000,10\n"  # 6 field_count
    "2023-11-16 18:15:50.0000000,-1,3\n"  # 7 prompt_tokens_not_positive
    "2023-11-16 18:15:51.0000000,10,0\n"  # 8 output_tokens_zero
    "not a time,10,3\n"  # 9 bad_timestamp
    "2023-11-16 18:15:52.0000000,20,-5\n"  # 10 output_tokens_negative
    "2023-11-16 18:15:53.0000000,20,5\n"  # 11 ok
)
AZURE_BAD_REASONS = {
    3: "bad_prompt_tokens",
    4: "empty_line",
    5: "time_backwards",
    6: "field_count: expected 3, got 2",
    7: "prompt_tokens_not_positive",
    8: "output_tokens_zero",
    9: "bad_timestamp",
    10: "output_tokens_negative",
}


@functools.cache
def _empty_template() -> Path:
    from warehouse.store import write_session

    folder = Path(tempfile.mkdtemp(prefix="lw-template-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "empty.duckdb"
    with write_session(path):
        pass
    return path


def empty_warehouse(path: Path) -> Path:
    """A copy of an empty warehouse, schema applied: a test's first load skips ~0.3 s of DDL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_empty_template(), path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def azure(d: Path) -> Path:
    return write_text(d / "AzureLLMInferenceTrace_code.csv", AZURE_GOOD)


def mooncake(d: Path) -> Path:
    rows = [
        {"timestamp": 0, "input_length": 1024, "output_length": 10, "hash_ids": [0, 1]},
        {"timestamp": 250, "input_length": 600, "output_length": 5, "hash_ids": [0, 2]},
        {"timestamp": 1000, "input_length": 100, "output_length": 50},
    ]
    return write_text(d / "conversation_trace.jsonl", "".join(json.dumps(r) + "\n" for r in rows) + "oops\n")


def burstgpt(d: Path) -> Path:
    return write_text(
        d / "BurstGPT_1.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45,ChatGPT,1087,0,1087,Conversation log\n"
        "46,GPT-4,417,276,693,API log\n",
    )


def vidur(d: Path) -> Path:
    return write_text(
        d / "splitwise_conv.csv",
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,100,20\n0.5,200.0,30\n1.25,300,x\n",
    )


def _span(start_s: int, model: str, inp: int | None, out: int | None) -> dict:
    attrs = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": model}},
    ]
    if inp is not None:
        attrs.append({"key": "gen_ai.usage.input_tokens", "value": {"intValue": str(inp)}})
    if out is not None:
        attrs.append({"key": "gen_ai.usage.output_tokens", "value": {"intValue": out}})
    return {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": f"{start_s:016x}",
        "name": f"chat {model}",
        "startTimeUnixNano": str(1_700_000_000_000_000_000 + start_s * 1_000_000_000),
        "endTimeUnixNano": str(1_700_000_000_000_000_000 + (start_s + 1) * 1_000_000_000),
        "attributes": attrs,
    }


def _export(spans: list[dict]) -> dict:
    return {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]}


def otel(d: Path) -> Path:
    doc = _export([_span(0, "gpt-4o", 12, 34), _span(2, "gpt-4o", 7, 9), _span(3, "gpt-4o", 5, None)])
    return write_text(d / "spans.json", json.dumps(doc, indent=2))


def otel_lines(d: Path) -> Path:
    lines = [
        json.dumps(_export([_span(0, "m", 10, 2)])),
        "{not json",
        json.dumps(_export([_span(4, "m", 3, 1)])),
    ]
    return write_text(d / "spans.jsonl", "\n".join(lines) + "\n")


def castillo(d: Path) -> Path:
    table = pa.table(
        {
            "sample_id": ["s1", "s2", "s3"],
            "prompt_id": ["p1", "p2", "p3"],
            "model": ["m1", "m1", "m2"],
            "dataset": ["Alpaca", "DollyDataset", "Mbpp"],
            "category": ["undefined", "open_qa", "undefined"],
            "prompt_text": ["Write a poem", "Why is the sky blue?", "Sum a list"],
            "input_size": [12, 8, 5],
            "output_sizes": [[10, 20, 30], [5, 0, 7], None],
            "split": ["train", "test", "validate"],
        }
    )
    path = d / "castillo_lengths.parquet"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def alpaca_eval(d: Path) -> Path:
    table = pa.table(
        {
            "idx": [0, 1, 2],
            "model_dir": ["llama-2-7b-chat-hf"] * 3,
            "generator": ["llama-2-7b-chat-hf"] * 3,
            "dataset": ["koala", "vicuna", "oasst"],
            "instruction": ["a", "b", "c"],
            "output": ["x", "y", ""],
            "output_chars": [1, 1, 0],
            "instruction_tokens_llama2": [16, 20, 9],
            "output_tokens_llama2": [451, 12, 0],
        }
    )
    path = d / "alpaca_eval_outputs.parquet"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def dolly(d: Path) -> Path:
    records = [
        {"instruction": "Say hi", "context": "", "response": "hi there friend", "category": "open_qa"},
        {
            "instruction": "Summarise",
            "context": "one two three four",
            "response": "one",
            "category": "summarization",
        },
        {"instruction": "Empty", "context": "", "response": "", "category": "open_qa"},
    ]
    return write_text(d / "dolly_sample.json", json.dumps(records))


def canonical(d: Path) -> Path:
    return write_text(
        d / "canonical.csv",
        "request_id,source,trace_id,arrival_s,prompt_tokens,output_tokens,task,model,prompt_text,prefix_hash_ids,status\n"
        'r1,mine,t1,0.5,10,3,chat,m,"hello, ""world""","[1,2]",ok\n'
        "r2,mine,t1,1.0,10,0,chat,m,,,failed\n"
        "r3,mine,t1,x,10,3,chat,m,,,ok\n",
    )


def canonical_jsonl(d: Path) -> Path:
    rows = [
        {
            "request_id": "j1",
            "arrival_s": 0.0,
            "prompt_tokens": 5,
            "output_tokens": 2,
            "task": "t",
            "prefix_hash_ids": [7],
        },
        {
            "request_id": "j2",
            "arrival_s": 1.5,
            "prompt_tokens": 6,
            "output_tokens": 3,
            "prompt_text": "multi\nline",
        },
    ]
    return write_text(d / "canonical.jsonl", "".join(json.dumps(r) + "\n" for r in rows) + "[1]\n")


def canonical_parquet(d: Path) -> Path:
    table = pa.table(
        {
            "request_id": ["p1", "p2"],
            "arrival_s": [0.0, 2.0],
            "prompt_tokens": [10, 0],
            "output_tokens": [4, 4],
            "task": ["x", "x"],
            "prefix_hash_ids": pa.array([[1, 2], None], type=pa.list_(pa.int64())),
        }
    )
    path = d / "canonical.parquet"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


@dataclass(frozen=True)
class Sample:
    """A writer and the format / counts the warehouse must report for its file."""

    write: Callable[[Path], Path]
    format: str
    rows_read: int
    ingested: int

    @property
    def quarantined(self) -> int:
        return self.rows_read - self.ingested


SAMPLES: dict[str, Sample] = {
    "azure": Sample(azure, "azure", 3, 3),
    "mooncake": Sample(mooncake, "mooncake", 4, 3),
    "burstgpt": Sample(burstgpt, "burstgpt", 3, 3),
    "vidur": Sample(vidur, "vidur", 3, 2),
    "otel": Sample(otel, "otel", 3, 2),
    "otel-jsonl": Sample(otel_lines, "otel", 3, 2),
    "castillo": Sample(castillo, "castillo", 7, 5),
    "alpaca-eval": Sample(alpaca_eval, "alpaca-eval", 3, 2),
    "dolly": Sample(dolly, "dolly", 3, 2),
    "canonical": Sample(canonical, "canonical", 3, 2),
    "canonical-jsonl": Sample(canonical_jsonl, "canonical", 3, 2),
    "canonical-parquet": Sample(canonical_parquet, "canonical", 2, 1),
}
