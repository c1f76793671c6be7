"""The bag-of-words text model and the validation-only choices (C, ensemble weight).

Who calls this: ``train_from_rows`` once per training run when ``PredictorConfig.text_model`` is
``tfidf`` or ``ensemble``, in its second thread at one BLAS/OpenMP thread (each logistic-regression
fit is 3-7 s of CPU for 3,300 training prompts; one fit per candidate C, sharing one vocabulary,
plus one refit), and the tests with tiny frames.

Why it exists (docs/length_predictor.md has the numbers): on CASTILLO the frozen, mean-pooled
MiniLM embedding carries little prompt-specific length signal beyond the task, while word n-grams
("write an essay", "in one sentence", "list 10") carry much more. The paper (Jain et al., arXiv
2408.13510) fine-tunes a transformer; on a CPU we add this linear model beside the frozen encoder.

The model: a scikit-learn ``Pipeline`` over the predictor's input frame (so serving only calls
``predict_proba``; nothing of loadwise is pickled): word TF-IDF (1..``tfidf_ngram_max``-grams,
sublinear tf, vocabulary from training prompts only) + task one-hot (the task hint; dropped when
``task_hint="none"``) + log1p(prompt tokens) and its square (max-abs scaled) -> multinomial
``LogisticRegression``. Soft labels: one row per distinct (prompt, bucket) with sample weight = the
number of the prompt's samples in that bucket, i.e. the same loss as one row per sample.

Honesty: ``select_on_val`` and ``choose_ensemble_weight`` take validation arrays only; the test
prompts are never seen by any choice (a test checks that the arrays they get are the validation
prompts').
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from training.length.config import PredictorConfig
from training.length.serving import mix_proba, tfidf_input

Progress = Callable[[str], None]


def build_features(cfg: PredictorConfig) -> Any:
    """An unfitted ``ColumnTransformer`` over ``tfidf_input`` frames (sparse output)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler, OneHotEncoder, PolynomialFeatures

    parts: list[tuple[str, Any, Any]] = [
        (
            "text",
            TfidfVectorizer(
                ngram_range=(1, cfg.tfidf_ngram_max),
                min_df=cfg.tfidf_min_df,
                max_features=cfg.tfidf_max_features,
                sublinear_tf=True,
                dtype=np.float64,
            ),
            "prompt_text",
        ),
        (
            "length",
            make_pipeline(
                FunctionTransformer(np.log1p), PolynomialFeatures(2, include_bias=False), MaxAbsScaler()
            ),
            ["prompt_tokens"],
        ),
    ]
    if cfg.task_hint != "none":
        parts.insert(1, ("task", OneHotEncoder(handle_unknown="ignore"), ["task"]))
    return ColumnTransformer(parts, sparse_threshold=1.0)


def expand_pairs(labels: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prompt row, bucket, weight) per distinct (prompt, bucket): the soft labels as weighted rows."""
    rows, ys, ws = [], [], []
    for i, lab in enumerate(labels):
        b, c = np.unique(np.asarray(lab, dtype=np.int64), return_counts=True)
        rows.append(np.full(len(b), i, dtype=np.int64))
        ys.append(b)
        ws.append(c.astype(np.float64))
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(rows), np.concatenate(ys), np.concatenate(ws)


def fit_tfidf(frame: pd.DataFrame, labels: Sequence[np.ndarray], cfg: PredictorConfig, c: float) -> Any:
    """Fit features + logistic regression on ``frame`` (``tfidf_input`` columns, one row per prompt)
    with ``labels[i]`` = prompt i's samples' buckets. Returns a fitted ``Pipeline``."""
    from sklearn.pipeline import Pipeline

    features = build_features(cfg)
    x = features.fit_transform(frame)
    return Pipeline([("features", features), ("lr", fit_lr(x, labels, c))])


def fit_lr(x: Any, labels: Sequence[np.ndarray], c: float) -> Any:
    """The multinomial logistic regression on feature rows ``x`` (one per prompt, from a fitted
    ``build_features``) with ``labels[i]`` = prompt i's samples' buckets, as weighted pair rows."""
    from sklearn.linear_model import LogisticRegression

    rows, y, w = expand_pairs(labels)
    lr = LogisticRegression(C=c, max_iter=3000)
    lr.fit(x[rows], y, sample_weight=w)
    return lr


def proba_k(model: Any, frame: pd.DataFrame, k: int) -> np.ndarray:
    """(n, k) probabilities of a fitted pipeline (buckets never seen in training get 0)."""
    out = np.zeros((len(frame), k))
    if len(frame):
        out[:, np.asarray(model.classes_, dtype=np.int64)] = model.predict_proba(frame)
    return out


def pair_accuracy(proba: np.ndarray, labels: Sequence[np.ndarray]) -> float:
    """Top-1 accuracy over (prompt, sample) pairs: prompt i's argmax against each of its samples."""
    pred = proba.argmax(axis=1)
    hits = sum(int((np.asarray(lab) == p).sum()) for lab, p in zip(labels, pred, strict=True))
    return hits / max(1, sum(len(lab) for lab in labels))


def pair_cross_entropy(proba: np.ndarray, labels: Sequence[np.ndarray]) -> float:
    """Mean -log p(sample's bucket) over (prompt, sample) pairs (probabilities floored at 1e-12)."""
    total = sum(
        float(-np.log(np.maximum(p[np.asarray(lab, dtype=np.int64)], 1e-12)).sum())
        for lab, p in zip(labels, proba, strict=True)
    )
    return total / max(1, sum(len(lab) for lab in labels))


def select_on_val(candidates: Mapping[float, np.ndarray], val_labels: Sequence[np.ndarray]) -> float:
    """The candidate whose VALIDATION probabilities have the best pair accuracy (the metric the
    issue's target is set on); ties go to the lower pair cross-entropy, then to the first listed.

    ``candidates`` maps a candidate value (a C, an ensemble weight) to its (n_val, k) probabilities
    on the validation prompts; ``val_labels`` are those prompts' sample buckets. Nothing else is
    passed in, so no test prompt can influence the choice.
    """
    if not candidates:
        raise ValueError("no candidates")
    best_key: tuple[float, float] | None = None
    best = next(iter(candidates))
    for value, proba in candidates.items():
        if len(proba) != len(val_labels):
            raise ValueError(f"candidate {value}: {len(proba)} rows for {len(val_labels)} validation prompts")
        key = (-pair_accuracy(proba, val_labels), pair_cross_entropy(proba, val_labels))
        if best_key is None or key < best_key:
            best_key, best = key, value
    return best


def choose_ensemble_weight(
    p_head_val: np.ndarray,
    p_tfidf_val: np.ndarray,
    val_labels: Sequence[np.ndarray],
    weights: Sequence[float],
) -> float:
    """The TF-IDF share ``w`` in ``(1 - w) * p_head + w * p_tfidf``, chosen on validation prompts."""
    return select_on_val(
        {float(w): mix_proba(p_head_val, p_tfidf_val, float(w)) for w in weights}, val_labels
    )


def fit_text_tfidf(
    prompts: pd.DataFrame,
    labels: Sequence[np.ndarray],
    train_mask: np.ndarray,
    val_mask: np.ndarray,
    cfg: PredictorConfig,
    k: int,
    progress: Progress | None = None,
) -> tuple[Any, float, np.ndarray | None, dict[str, float]]:
    """Fit one pipeline per ``cfg.tfidf_c`` on the training prompts, keep the C with the best
    validation accuracy, and (``cfg.tfidf_refit``) refit it on train + validation prompts.

    Returns (the final pipeline, the chosen C, the chosen train-only fit's validation probabilities
    (for the ensemble weight; ``None`` without validation prompts), selection info for the report:
    ``tfidf_c``, ``val_acc_tfidf``).
    """
    say = progress or (lambda _m: None)
    frame = tfidf_input(
        prompts["prompt_text"].tolist(), prompts["task"].tolist(), prompts["prompt_tokens"].to_numpy()
    )
    tr, va = np.flatnonzero(train_mask).tolist(), np.flatnonzero(val_mask).tolist()
    val_labels = [labels[i] for i in va]
    # One vocabulary and one feature matrix for every candidate C: fitting the features is
    # deterministic, so each candidate's pipeline is the one ``fit_tfidf`` would fit on its own.
    from sklearn.pipeline import Pipeline

    features = build_features(cfg)
    x_train = features.fit_transform(frame.iloc[tr])
    x_val = features.transform(frame.iloc[va]) if len(va) else None
    train_labels = [labels[i] for i in tr]
    fits: dict[float, Any] = {}
    val_proba: dict[float, np.ndarray] = {}
    for c in cfg.tfidf_c:
        lr = fit_lr(x_train, train_labels, c)
        fits[c] = Pipeline([("features", features), ("lr", lr)])
        if x_val is not None:
            val_proba[c] = np.zeros((len(va), k))
            val_proba[c][:, np.asarray(lr.classes_, dtype=np.int64)] = lr.predict_proba(x_val)
            say(f"tfidf C={c}: validation pair accuracy {pair_accuracy(val_proba[c], val_labels):.4f}")
    c_best = select_on_val(val_proba, val_labels) if len(va) and len(cfg.tfidf_c) > 1 else cfg.tfidf_c[0]
    info = {"tfidf_c": float(c_best)}
    if len(va):
        info["val_acc_tfidf"] = pair_accuracy(val_proba[c_best], val_labels)
    model = fits[c_best]
    if cfg.tfidf_refit and len(va):
        both = np.flatnonzero(train_mask | val_mask).tolist()
        model = fit_tfidf(frame.iloc[both], [labels[i] for i in both], cfg, c_best)
        say(f"tfidf: C={c_best} refitted on {len(both)} train + validation prompts")
    return model, float(c_best), val_proba.get(c_best), info
