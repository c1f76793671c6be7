"""Text model kinds (minilm / tfidf / ensemble): contract, save -> load, validation-only choices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.length.serving import mix_proba

from .samples import tiny_config

KINDS = ("minilm", "tfidf", "ensemble")


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt_text": ["Please write a long essay about cats.", None, "answer briefly: 2+2?", "  "],
            "prompt_tokens": np.array([9, 120, 7, 3], dtype=np.int64),
            "task": ["Apps", "ShareGPT", "never seen task", "DollyDataset/open_qa"],
        }
    )


@pytest.fixture(scope="module", params=KINDS)
def trained_kind(request, tiny_warehouse):
    from training.length.train import train_length_predictor

    return train_length_predictor(tiny_warehouse, tiny_config(text_model=request.param, tfidf_c=(0.5, 2.0)))


def test_contract_per_kind(trained_kind):
    kind = trained_kind.config.text_model
    core = trained_kind.core
    assert core.text_model == kind
    assert (core.head is not None) == (kind != "tfidf")
    assert (core.tfidf is not None) == (kind != "minilm")
    out = trained_kind.predict_frame(_frame())
    k = trained_kind.k
    assert list(out.columns) == ["expected_output_tokens", "bucket", *[f"p_bucket_{i}" for i in range(k)]]
    p = out[[f"p_bucket_{i}" for i in range(k)]].to_numpy()
    assert p.dtype == np.float64
    assert out["bucket"].dtype == np.int64
    assert np.allclose(p.sum(axis=1), 1.0)
    assert (p >= 0).all()
    assert (out["expected_output_tokens"] > 0).all()
    assert (out["bucket"].to_numpy() == p.argmax(axis=1)).all()
    # rows without text (None, blank) are the tabular model's, whatever the text model
    tab = core.predict_frame(_frame(), force_tabular=True)
    pd.testing.assert_frame_equal(out.iloc[[1, 3]], tab.iloc[[1, 3]])
    assert trained_kind.report.text_model == kind
    assert len(trained_kind.predict_frame(_frame().iloc[:0])) == 0


def test_ensemble_is_the_weighted_mix(trained_kind):
    core = trained_kind.core
    if core.text_model != "ensemble":
        pytest.skip("ensemble only")
    texts, tasks = ["Please write a long essay", "answer briefly"], ["Apps", "ShareGPT"]
    tokens = np.array([12.0, 40.0])
    p_head = core.head_proba(core.text_features(texts, tasks, tokens))
    p_tfidf = core.tfidf_proba(texts, tasks, tokens)
    w = core.ensemble_weight
    assert 0.0 <= w <= 1.0
    from training.length.serving import temper

    mixed = (1 - w) * p_head + w * p_tfidf
    assert np.allclose(core.text_proba(texts, tasks, tokens), temper(mixed, core.temperature))
    assert {"tfidf_c", "ensemble_weight"} <= set(trained_kind.report.selection)
    assert {"acc_minilm", "acc_tfidf"} <= set(trained_kind.report.components)
    assert "selected.ensemble_weight" in trained_kind.report.metrics()


def test_save_load_identical_per_kind(trained_kind, tmp_path: Path):
    from training.length.train import TrainedLengthPredictor

    trained_kind.save(tmp_path / "p")
    files = {f.name for f in (tmp_path / "p").iterdir()}
    kind = trained_kind.config.text_model
    assert ("tfidf.joblib" in files) == (kind != "minilm")
    assert ("head.pt" in files) == (kind != "tfidf")
    meta = json.loads((tmp_path / "p" / "metadata.json").read_text())
    assert meta["text_model"] == kind
    loaded = TrainedLengthPredictor.load(tmp_path / "p")
    pd.testing.assert_frame_equal(trained_kind.predict_frame(_frame()), loaded.predict_frame(_frame()))
    assert loaded.report == trained_kind.report
    reqs = trained_kind.pip_requirements()
    assert any(r.startswith("scikit-learn==") for r in reqs)
    # the tfidf kind loads no encoder; the others name where it comes from (here: saved in the folder)
    assert (loaded.core.encoder is None) == (kind == "tfidf")


def test_format_1_folder_loads_as_minilm(trained_kind, tmp_path: Path):
    """Folders written before text_model existed (format 1) still load and predict alike."""
    from training.length.serving import LengthPredictorCore

    if trained_kind.config.text_model != "minilm":
        pytest.skip("minilm only")
    trained_kind.save(tmp_path / "p")
    meta_path = tmp_path / "p" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 1
    del meta["text_model"], meta["ensemble_weight"]
    meta_path.write_text(json.dumps(meta))
    old = LengthPredictorCore.load(tmp_path / "p")
    assert old.text_model == "minilm"
    pd.testing.assert_frame_equal(old.predict_frame(_frame()), trained_kind.predict_frame(_frame()))


def test_choices_see_only_validation_prompts(tiny_warehouse, monkeypatch):
    """C and the ensemble weight are chosen by ``select_on_val`` on the validation prompts' rows."""
    import training.length.tfidf as tf
    from training.length.train import train_length_predictor

    calls: list[tuple[list[float], int, int]] = []
    real = tf.select_on_val

    def spy(candidates, val_labels):
        rows = {len(p) for p in candidates.values()}
        assert len(rows) == 1
        calls.append((list(candidates), rows.pop(), sum(len(lab) for lab in val_labels)))
        return real(candidates, val_labels)

    monkeypatch.setattr(tf, "select_on_val", spy)
    cfg = tiny_config(text_model="ensemble", tfidf_c=(0.5, 2.0), ensemble_weights=(0.0, 0.5, 1.0))
    trained = train_length_predictor(tiny_warehouse, cfg)
    rep = trained.report
    assert [c[0] for c in calls] == [[0.5, 2.0], [0.0, 0.5, 1.0]]  # C first, then the weight
    samples = rep.overall.n_pairs // rep.n_test_prompts
    for _values, n_rows, n_pairs in calls:
        assert n_rows == rep.n_val_prompts != rep.n_test_prompts
        assert n_pairs == samples * rep.n_val_prompts
    assert rep.selection["tfidf_c"] in (0.5, 2.0)
    assert rep.selection["ensemble_weight"] in (0.0, 0.5, 1.0)


def test_select_on_val_picks_best_accuracy_then_cross_entropy():
    from training.length.tfidf import pair_accuracy, pair_cross_entropy, select_on_val

    labels = [np.array([0, 0, 1]), np.array([1, 1])]
    good = np.array([[0.9, 0.1], [0.2, 0.8]])
    same_argmax_less_sure = np.array([[0.6, 0.4], [0.4, 0.6]])
    bad = np.array([[0.1, 0.9], [0.9, 0.1]])
    assert pair_accuracy(good, labels) == pytest.approx(4 / 5)
    assert pair_cross_entropy(good, labels) < pair_cross_entropy(same_argmax_less_sure, labels)
    assert select_on_val({1.0: bad, 2.0: same_argmax_less_sure, 3.0: good}, labels) == 3.0
    with pytest.raises(ValueError, match="validation prompts"):
        select_on_val({1.0: good[:1]}, labels)


def test_mix_proba():
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    assert np.allclose(mix_proba(a, b, 0.25), [[0.75, 0.25]])
    assert mix_proba(a, None, 0.5) is a
    assert mix_proba(None, b, 0.5) is b
    with pytest.raises(ValueError, match="at least one"):
        mix_proba(None, None, 0.5)


def test_config_rejects_bad_candidates():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        tiny_config(tfidf_c=())
    with pytest.raises(ValidationError):
        tiny_config(tfidf_c=(0.0,))
    with pytest.raises(ValidationError):
        tiny_config(ensemble_weights=(1.5,))


@pytest.mark.parametrize("hint", ["prefix", "none"])
def test_tfidf_fast_path_equals_pipeline(tiny_warehouse, hint):
    """Serving computes the TF-IDF model's probabilities from its fitted parts; same as predict_proba."""
    from training.length.serving import tfidf_fast_proba, tfidf_input
    from training.length.tfidf import fit_tfidf

    from .samples import castillo_rows

    rows = castillo_rows(n_prompts=30)
    prompts = rows.groupby("prompt_text").agg(task=("task", "first"), prompt_tokens=("prompt_tokens", "max"))
    labels = [np.array([i % 4, (i + 1) % 4, i % 4]) for i in range(len(prompts))]
    frame = tfidf_input(list(prompts.index), prompts["task"].tolist(), prompts["prompt_tokens"].to_numpy())
    model = fit_tfidf(frame, labels, tiny_config(task_hint=hint), 1.0)
    texts, tasks = ["write a long essay about topic 3", "answer briefly"], ["Apps", "never seen"]
    tokens = np.array([12.0, 0.0])
    fast = tfidf_fast_proba(model, texts, tasks, tokens)
    assert fast is not None
    np.testing.assert_allclose(fast, model.predict_proba(tfidf_input(texts, tasks, tokens)), atol=1e-12)
