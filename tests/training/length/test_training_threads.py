"""The predictor's training: one thread per numeric library, the side models in a second thread,
and a result that does not depend on the caller's thread settings (issue 16, "the main job")."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from .samples import castillo_rows, tiny_config


def _pool_threads() -> dict[str, int]:
    from threadpoolctl import threadpool_info

    return {f"{i['internal_api']}:{i['filepath']}": int(i["num_threads"]) for i in threadpool_info()}


def test_training_runs_single_threaded_kernels_and_restores_torch(tiny_warehouse: Path, monkeypatch):
    """Reproducer: the encoder ran at torch's default threads (2 here) and the logistic regression /
    gradient boosting fits at OpenBLAS's and OpenMP's 2, which collapses 6-12x when another process
    holds a core. Now every kernel sees 1 thread, the text-free models fit in a second Python thread
    beside the encoder, and the caller's torch setting is back afterwards."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    import training.length.train as train_mod

    seen: list[tuple[str, str, int, dict[str, int]]] = []

    def spy(name: str, real):
        def wrapped(*args, **kwargs):
            seen.append((name, threading.current_thread().name, torch.get_num_threads(), _pool_threads()))
            return real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(train_mod, "encode_texts", spy("encode", train_mod.encode_texts))
    monkeypatch.setattr(LogisticRegression, "fit", spy("lr", LogisticRegression.fit))
    monkeypatch.setattr(
        HistGradientBoostingClassifier, "fit", spy("tabular", HistGradientBoostingClassifier.fit)
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train_mod.train_length_predictor(tiny_warehouse, tiny_config(text_model="ensemble"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    names = {name for name, *_ in seen}
    assert names == {"encode", "lr", "tabular"}
    for name, thread, torch_threads, pools in seen:
        assert set(pools.values()) <= {1}, (name, pools)
        if name == "encode":
            assert (thread, torch_threads) == ("MainThread", 1)
        else:
            assert thread != "MainThread", name  # beside the encoder, not after it


@pytest.mark.parametrize("caller_threads", [1, 2])
def test_trained_model_does_not_depend_on_callers_threads(tiny_warehouse: Path, caller_threads: int):
    """Same rows, same config: bit-identical predictions and report whatever torch's and the BLAS
    pools' thread counts were when training was called."""
    from threadpoolctl import threadpool_limits

    from training.length.train import train_length_predictor

    cfg = tiny_config(text_model="ensemble")
    ref = _reference(tiny_warehouse)
    before = torch.get_num_threads()
    torch.set_num_threads(caller_threads)
    try:
        with threadpool_limits(limits=caller_threads):
            trained = train_length_predictor(tiny_warehouse, cfg)
    finally:
        torch.set_num_threads(before)
    frame = _probe(castillo_rows())
    pd.testing.assert_frame_equal(trained.predict_frame(frame), ref.predict_frame(frame), check_exact=True)
    assert trained.report == ref.report


_REF: dict[str, object] = {}


def _reference(warehouse: Path):
    from training.length.train import train_length_predictor

    if "ref" not in _REF:
        _REF["ref"] = train_length_predictor(warehouse, tiny_config(text_model="ensemble"))
    return _REF["ref"]


def _probe(rows: pd.DataFrame) -> pd.DataFrame:
    first = rows.drop_duplicates("prompt_text")
    return pd.DataFrame(
        {
            "prompt_text": pd.Series([*first["prompt_text"].tolist(), None], dtype=object),
            "prompt_tokens": np.asarray([*first["prompt_tokens"].tolist(), 7], dtype=np.int64),
            "task": pd.Series([*first["task"].tolist(), "Apps"], dtype=object),
        }
    )


def test_c_sweep_shares_one_vocabulary_and_equals_separate_fits():
    """The C sweep fits the TF-IDF features once; each candidate is exactly the pipeline that
    ``fit_tfidf`` fits on the training prompts alone (same validation probabilities, same model)."""
    from training.length import buckets as bk
    from training.length.data import prompts_from_rows
    from training.length.serving import tfidf_input
    from training.length.tfidf import fit_text_tfidf, fit_tfidf, proba_k

    cfg = tiny_config(text_model="tfidf", tfidf_c=(0.5, 2.0), tfidf_refit=False)
    prompts = prompts_from_rows(castillo_rows(n_prompts=60), cfg)
    k = bk.n_buckets(cfg)
    edges = bk.edges_for(cfg, np.concatenate(list(prompts["outputs"])))
    labels = [bk.assign(o, edges) for o in prompts["outputs"]]
    split = prompts["split"].to_numpy()
    train_mask, val_mask = split == "train", split == "val"
    assert val_mask.any()
    model, c_best, p_val, _info = fit_text_tfidf(prompts, labels, train_mask, val_mask, cfg, k)
    frame = tfidf_input(
        prompts["prompt_text"].tolist(), prompts["task"].tolist(), prompts["prompt_tokens"].to_numpy()
    )
    tr, va = np.flatnonzero(train_mask).tolist(), np.flatnonzero(val_mask).tolist()
    alone = fit_tfidf(frame.iloc[tr], [labels[i] for i in tr], cfg, c_best)
    assert p_val is not None
    np.testing.assert_array_equal(p_val, proba_k(alone, frame.iloc[va], k))
    np.testing.assert_array_equal(model.predict_proba(frame), alone.predict_proba(frame))


def test_timing_reports_wall_cpu_and_the_metrics(tiny_warehouse: Path, tmp_path: Path):
    """``python -m training.length.timing`` (BENCHMARKS.md's command) on the tiny warehouse."""
    from training.length.timing import time_training

    lines: list[str] = []
    figures = time_training(tiny_warehouse, tiny_config(text_model="ensemble"), say=lines.append)
    assert figures["cpu_s"] > 0
    assert figures["wall_s"] > 0
    assert 0.0 <= figures["overall"]["accuracy"] <= 1.0
    assert "ece" in figures["calibration"]
    assert "ensemble_weight" in figures["selection"]
    assert any("s CPU]" in line and "test accuracy" in line for line in lines)


def test_batched_predictions_run_single_threaded(tiny_trained, monkeypatch):
    """Reproducer: ``predict_inputs`` (the nightly ``predict-lengths`` step, replays with a predictor)
    encoded at torch's default 2 threads, whose features differ from training's and MLflow serving's
    (1 thread). Now the encoder sees 1 thread and the caller's setting is restored."""
    from training.length.predictor import predict_inputs

    seen: list[tuple[int, dict[str, int]]] = []
    # the module the core's class was defined in (another test may have reloaded ``serving``)
    namespace = type(tiny_trained.core).text_features.__globals__
    real = namespace["encode_texts"]

    def spy(*args, **kwargs):
        seen.append((torch.get_num_threads(), _pool_threads()))
        return real(*args, **kwargs)

    monkeypatch.setitem(namespace, "encode_texts", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        batch = predict_inputs(tiny_trained.core, _probe(castillo_rows()))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen
    assert all(threads == 1 and set(pools.values()) <= {1} for threads, pools in seen)
    assert batch.answered_by[-1] == "tabular"
    assert set(batch.answered_by[:-1]) == {"text"}


def test_overlapping_sections_in_two_threads_restore_only_when_the_last_closes():
    """Sections open in two threads at once (training's second thread, concurrent ``predict_inputs``
    calls): the first one closing leaves the other at one torch thread; the last one restores the
    caller's setting. (The BLAS pools follow the same count; OpenBLAS here ignores a limit set from
    a worker thread once the main thread has set one, so this test watches torch only.)"""
    from training.length import threads as th

    a_open, b_open, a_closed = threading.Event(), threading.Event(), threading.Event()
    inside_b: list[tuple[int, int]] = []

    def a() -> None:
        with th.one_thread(torch_too=True):
            a_open.set()
            b_open.wait(10)
        a_closed.set()

    def b() -> None:
        a_open.wait(10)
        with th.one_thread(torch_too=True):
            b_open.set()
            a_closed.wait(10)
            inside_b.append((torch.get_num_threads(), th._users))

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert inside_b == [(1, 1)]  # A closed first: B still at one thread, the only open section
        assert torch.get_num_threads() == 2  # B closed last: the caller's setting is back
        assert th._users == 0
    finally:
        torch.set_num_threads(before)
