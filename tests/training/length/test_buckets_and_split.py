"""Bucket edges (upper edge inclusive) and the by-prompt split (no prompt on both sides)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.length import buckets as bk
from training.length.config import LOG2_EDGES, TIME_EDGES, PredictorConfig
from training.length.data import prompts_from_rows, split_prompts

from .samples import castillo_rows


def test_time_edges_are_upper_inclusive():
    lengths = np.array([1, 250, 251, 1000, 1001, 4000, 4001, 15000])
    assert bk.assign(lengths, TIME_EDGES).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_log2_edges():
    lengths = np.array([1, 32, 33, 64, 2048, 2049])
    assert bk.assign(lengths, LOG2_EDGES).tolist() == [0, 0, 1, 1, 6, 7]
    assert bk.n_buckets(PredictorConfig(buckets="log2")) == 8


def test_equal_and_quantile_edges():
    lengths = np.arange(1, 1001)
    eq = bk.equal_edges(lengths, 4)
    assert len(eq) == 3
    assert np.allclose(np.diff([0, *eq]), eq[0])
    q = bk.quantile_edges(lengths, 4)
    assert len(q) == 3
    counts = np.bincount(bk.assign(lengths, q), minlength=4)
    assert counts.min() >= 240
    # ties collapse but edges stay strictly increasing
    assert np.all(np.diff(bk.quantile_edges(np.full(100, 7), 4)) > 0)


def test_soft_labels_sum_to_one():
    outs = [np.array([10, 300, 300, 5000]), np.array([1000])]
    soft = bk.soft_labels(outs, [TIME_EDGES, TIME_EDGES], 4)
    assert soft.tolist() == [[0.25, 0.5, 0.0, 0.25], [0.0, 1.0, 0.0, 0.0]]


def test_bucket_means_fill_empty_buckets():
    means = bk.bucket_means(np.array([100, 200, 2000]), TIME_EDGES, 4)
    assert means[0] == 150
    assert means[2] == 2000
    assert means[1] > 250
    assert means[3] > 4000


def test_split_is_deterministic_and_by_prompt():
    rows = castillo_rows(n_prompts=60, samples=3)
    cfg = PredictorConfig(seed=3)
    a = prompts_from_rows(rows, cfg)
    b = prompts_from_rows(rows.sample(frac=1.0, random_state=1), cfg)
    pd.testing.assert_frame_equal(a.drop(columns="outputs"), b.drop(columns="outputs"))
    # every prompt in exactly one split, with all its samples
    assert a["prompt_text"].is_unique
    assert sum(len(o) for o in a["outputs"]) == len(rows)
    sets = {s: set(a.loc[a["split"] == s, "prompt_text"]) for s in ("train", "val", "test")}
    assert not (sets["train"] & sets["test"])
    assert not (sets["val"] & sets["test"])
    assert not (sets["train"] & sets["val"])
    assert all(sets.values())


def test_split_is_the_warehouse_split_whatever_the_seed():
    """The predictor's split is the warehouse's one split (``warehouse.prompt_split``): a function of
    the text alone, the same for every config seed, about 20 % test and 10 % val."""
    from warehouse.prompt_split import splits_of

    rows = castillo_rows(n_prompts=60, samples=2)
    a, b = prompts_from_rows(rows, PredictorConfig(seed=0)), prompts_from_rows(rows, PredictorConfig(seed=7))
    assert a["split"].tolist() == b["split"].tolist() == splits_of(a["prompt_text"].tolist())
    texts = pd.Series([f"prompt {i}" for i in range(2000)])
    s0 = split_prompts(texts)
    assert abs((s0 == "test").mean() - 0.2) < 0.03
    assert abs((s0 == "val").mean() - 0.1) < 0.03


def test_the_predictor_no_longer_takes_split_fractions():
    with pytest.raises(ValueError, match=r"warehouse/prompt_split\.py"):
        PredictorConfig(test_fraction=0.3)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", ["meta-llama--Llama-3.1-8B-Instruct", "Llama-3.1-8B-Instruct"])
def test_serving_model_names(name: str):
    assert PredictorConfig(serving_model=name).serving_model_short == "Llama-3.1-8B-Instruct"


def test_config_is_strict():
    with pytest.raises(ValueError, match="extra"):
        PredictorConfig(bogus=1)  # type: ignore[call-arg]
