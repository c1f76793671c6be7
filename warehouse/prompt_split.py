"""The one data split of prompts: ``train`` / ``val`` / ``test`` per prompt text, the same everywhere.

Who uses this, once per run each: the length predictor's training data (``training.length.data``:
train / val / test prompts), the ``main`` workload's pools (``training.workloads.catalog``: ``test``
prompts are the held-out replay pool, ``train`` and ``val`` prompts the training pool the RL router's
episodes, validation windows and the task-mean predictor come from), and the warehouse itself (the
macro ``marts.prompt_split(prompt_text)`` and the view ``marts.prompt_split``, created by
``warehouse.store.apply_schema`` before ``warehouse/sql/*.sql``). So no model is trained or
validated on a prompt that a held-out replay sends (``tests/test_one_split.py``).

The rule: ``h`` = the first 12 hex digits of SHA-256 of the prompt's UTF-8 text (exactly as
stored: no normalisation), read as an integer; ``test`` when ``h < TEST_BELOW``, else ``val`` when
``h < VAL_BELOW``, else ``train``: about ``TEST_FRACTION`` / ``VAL_FRACTION`` / the rest of the
distinct prompts. A function of the text alone: the same for every serving model, every source that
carries the text (CASTILLO, AlpacaEval, Dolly, a canonical trace) and every seed. Rows without prompt
text (NULL or empty: Azure, BurstGPT, Mooncake) have no prompt split (``None`` / SQL NULL): their
workloads split by time window instead (``training.workloads.catalog.TRAIN_WINDOW_FRACTION``).

Python (``split_of``) and SQL (the macro) give the same answer, text for text
(``tests/warehouse/test_prompt_split.py``). Pure stdlib: any layer may import it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

TEST_FRACTION = 0.2
"""Share of distinct prompts in ``test`` (held out from every model; the held-out replay pool)."""
VAL_FRACTION = 0.1
"""Share of distinct prompts in ``val`` (early stopping and choices of the length predictor)."""

HASH_HEX_DIGITS = 12
"""Hex digits of the prompt's SHA-256 that decide its split (48 bits)."""
TEST_BELOW = round(TEST_FRACTION * 16**HASH_HEX_DIGITS)
VAL_BELOW = round((TEST_FRACTION + VAL_FRACTION) * 16**HASH_HEX_DIGITS)
SPLITS = ("train", "val", "test")


def _bound(value: int) -> str:
    return format(value, f"0{HASH_HEX_DIGITS}x")


def prompt_sha256(text: str) -> str:
    """SHA-256 (lowercase hex) of the prompt's UTF-8 text: the id ``marts.prompt_split`` shows."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_of(text: str | None) -> str | None:
    """``'train'``, ``'val'`` or ``'test'`` for a prompt text; ``None`` for no text (NULL or empty)."""
    if text is None or text == "":
        return None
    head = int(prompt_sha256(text)[:HASH_HEX_DIGITS], 16)
    if head < TEST_BELOW:
        return "test"
    return "val" if head < VAL_BELOW else "train"


def splits_of(texts: Iterable[str | None]) -> list[str | None]:
    """``split_of`` for every text, in order."""
    return [split_of(t) for t in texts]


SQL = f"""-- Rendered from warehouse/prompt_split.py (the one split); run before warehouse/sql/*.sql.
CREATE SCHEMA IF NOT EXISTS marts;
CREATE OR REPLACE MACRO marts.prompt_split(prompt_text) AS
    CASE WHEN prompt_text IS NULL OR prompt_text = '' THEN NULL
         WHEN substr(sha256(prompt_text), 1, {HASH_HEX_DIGITS}) < '{_bound(TEST_BELOW)}' THEN 'test'
         WHEN substr(sha256(prompt_text), 1, {HASH_HEX_DIGITS}) < '{_bound(VAL_BELOW)}' THEN 'val'
         ELSE 'train' END;
"""
"""The DuckDB macro ``marts.prompt_split(prompt_text)``: the rule above on fixed-width lowercase hex
(string order of equal-width hex is integer order)."""
