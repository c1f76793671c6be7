"""Latency profiles from a GPU's datasheet and a model's config: an operator-level roofline (issue 18).

Who calls this: ``profiles.load_latency_model`` / ``profiles.default_instance_config`` for profile names
``<gpu>-<model>`` that have no Vidur operator profile (e.g. ``a100-40gb-mistral-7b``,
``h100-llama3-8b``), once per replay (tables are cached per process), and ``eval.fidelity`` when it
calibrates or checks the model against measured vLLM latencies. Pure Python + numpy; reads only the
small CSV / JSON tables next to this file (``specs/``).

The specs are data: ``specs/gpus.csv`` (memory GiB, HBM bandwidth GB/s, dense fp16/bf16 tensor TFLOP/s,
one row per GPU with its datasheet URL) and ``specs/models.csv`` (a Hugging Face config's shape, with
its URL). Adding a GPU is one row of ``gpus.csv``.

One iteration (``iteration_time``), in seconds, with T = prefill tokens + decoding sequences in the
batch, n = decoding sequences (+ 1 when the iteration has a prefill), C = decode context tokens and
A2 = the prefills' attention work (sum of chunk * (cached + chunk), tokens^2)::

    overhead_s + per_seq_s * n                                  (CPU: schedule, prepare, sample)
    + max(weight bytes / (eff_bw * bandwidth), 2 * matmul params * T / (eff_flops * tensor FLOP/s))
    + C * max(KV bytes per token / (eff_bw * bandwidth),      (decode attention: KV reads, or
              4 * layers * query heads * head dim / (eff_attn * FP32 FLOP/s))   FP32 FMAs on CUDA cores)
    + 2 * layers * query heads * head dim * A2 / (eff_flops * tensor FLOP/s)   (causal prefill attention)

The linear layers are one roofline (weights streamed once per iteration vs the GEMM FLOPs, whichever
bounds); decode attention is memory-bound and prefill attention compute-bound, as in Vidur's operator
profiles. KV bytes per token use the *KV* heads (2 * layers * KV heads * head dim * 2 bytes), so GQA /
MQA models (Llama-3-8B, Mistral-7B: 8 KV heads) read 4x less KV than Llama-2-7B. Mistral's sliding
window (4,096 tokens) is ignored: no measured context exceeds 4,096 tokens. The lm head's FLOPs count
only the sampled tokens (n), the embedding table is a lookup (not streamed).

The five efficiency parameters (``Efficiency``) are physical and shared by every GPU and model:
achieved fraction of HBM bandwidth, of dense tensor FLOP/s and of FP32 CUDA-core FLOP/s (decode
attention), fixed per-iteration CPU overhead and per-sequence CPU overhead. They are fitted by
``eval.fidelity.calibrate`` on the measured vLLM static batches in
``../shared/data/serving_measurements`` and stored in ``specs/calibration.json`` (all pairs, and the
leave-one-pair-out fits that the fidelity report uses).

Engine settings (``vllm_instance_config``): vLLM's defaults at the measured version (v0 engine, no
chunked prefill): ``gpu_memory_utilization`` 0.9, block size 16, ``max_num_seqs`` 256,
``max_num_batched_tokens`` = max(max_model_len, 2048); the KV cache gets 0.9 x GPU memory minus the
fp16 weights minus the peak of vLLM's profiling forward pass (``activation_reserve_gib``), and a
request that needs a block when none is free is preempted and recomputed (the simulator's only
preemption mode).
"""

from __future__ import annotations

import csv
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from training.simulator.config import GIB, InstanceConfig

SPECS_DIR = Path(__file__).resolve().parent / "specs"
GPUS_CSV = SPECS_DIR / "gpus.csv"
MODELS_CSV = SPECS_DIR / "models.csv"
CALIBRATION_JSON = SPECS_DIR / "calibration.json"

VLLM_GPU_MEMORY_UTILIZATION = 0.9
VLLM_BLOCK_SIZE = 16
VLLM_MAX_NUM_SEQS = 256
VLLM_MIN_BATCHED_TOKENS = 2048
NON_TORCH_RESERVE_GIB = 1.0
"""CUDA context, cuBLAS workspace and allocator slack that vLLM's profiling run counts as used (GiB)."""


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One row of ``specs/gpus.csv``. Units: GiB, GB/s (1e9 bytes/s), dense fp16/bf16 tensor TFLOP/s,
    FP32 non-tensor (CUDA-core) TFLOP/s."""

    gpu: str
    name: str
    memory_gib: float
    bandwidth_gbs: float
    fp16_tflops: float
    fp32_tflops: float
    source: str


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One row of ``specs/models.csv``: a Hugging Face config's shape (fp16/bf16 weights)."""

    model: str
    hf_id: str
    params_b: float
    n_layers: int
    hidden_size: int
    intermediate_size: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    max_model_len: int
    sliding_window: int | None
    source: str
    dtype_bytes: int = 2

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of every layer for one token: 2 * layers * KV heads * head dim * dtype bytes."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * self.dtype_bytes

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def streamed_weight_bytes(self) -> float:
        """Weights read once per forward pass: all but the input embedding table (a lookup)."""
        params = self.params_b * 1e9 - (0 if self.tied_embeddings else self.embedding_params)
        return params * self.dtype_bytes

    @property
    def layer_matmul_params(self) -> float:
        """Parameters of the per-token matmuls of all layers (everything but embedding and lm head)."""
        heads = 1 if self.tied_embeddings else 2
        return self.params_b * 1e9 - heads * self.embedding_params


@dataclass(frozen=True, slots=True)
class Efficiency:
    """The fitted, GPU- and model-independent parameters of the roofline.

    eff_bw: achieved fraction of datasheet HBM bandwidth (weights and KV reads), in (0, 1].
    eff_flops: achieved fraction of datasheet dense tensor FLOP/s, in (0, 1].
    overhead_s: fixed CPU time per iteration (scheduler, input preparation, sampling launch), seconds.
    per_seq_s: CPU time per sequence in the batch per iteration, seconds.
    eff_attn: achieved fraction of the datasheet FP32 (CUDA-core, non-tensor) FLOP/s in decode
        attention. vLLM's v0 paged-attention kernel computes QK^T and PV with FP32 FMAs on CUDA cores,
        4 * layers * query heads * head dim FLOPs per context token; for GQA models that bounds the
        kernel before the (4x smaller) KV reads do.
    """

    eff_bw: float
    eff_flops: float
    overhead_s: float
    per_seq_s: float
    eff_attn: float = 1.0

    def __post_init__(self) -> None:
        for label in ("eff_bw", "eff_flops", "eff_attn"):
            value = getattr(self, label)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{label} must be in (0, 1], got {value}")
        if not (self.overhead_s >= 0.0 and self.per_seq_s >= 0.0):
            raise ValueError(f"overheads must be >= 0, got {self.overhead_s}, {self.per_seq_s}")

    def as_dict(self) -> dict[str, float]:
        return {
            "eff_bw": self.eff_bw,
            "eff_flops": self.eff_flops,
            "overhead_s": self.overhead_s,
            "per_seq_s": self.per_seq_s,
            "eff_attn": self.eff_attn,
        }


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (the GPU / model spec tables of the roofline profiles)")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@functools.lru_cache(maxsize=8)
def _gpus(path: str) -> dict[str, GpuSpec]:
    out: dict[str, GpuSpec] = {}
    for line, r in enumerate(_read_rows(Path(path)), start=2):
        try:
            spec = GpuSpec(
                r["gpu"].strip(),
                r["name"],
                float(r["memory_gib"]),
                float(r["bandwidth_gbs"]),
                float(r["fp16_tflops"]),
                float(r["fp32_tflops"]),
                r["source"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{path}:{line}: bad GPU row ({exc}); columns: {', '.join(GPU_COLUMNS)}"
            ) from None
        if not spec.gpu or min(spec.memory_gib, spec.bandwidth_gbs, spec.fp16_tflops, spec.fp32_tflops) <= 0:
            raise ValueError(f"{path}:{line}: a gpu key and positive memory / bandwidth / FLOP/s are needed")
        if spec.gpu in out:
            raise ValueError(f"{path}:{line}: duplicate gpu {spec.gpu!r}")
        out[spec.gpu] = spec
    return out


@functools.lru_cache(maxsize=8)
def _models(path: str) -> dict[str, ModelSpec]:
    out: dict[str, ModelSpec] = {}
    for line, r in enumerate(_read_rows(Path(path)), start=2):
        try:
            spec = ModelSpec(
                r["model"].strip(),
                r["hf_id"],
                float(r["params_b"]),
                int(r["n_layers"]),
                int(r["hidden_size"]),
                int(r["intermediate_size"]),
                int(r["n_q_heads"]),
                int(r["n_kv_heads"]),
                int(r["head_dim"]),
                int(r["vocab_size"]),
                r["tied_embeddings"].strip().lower() == "true",
                int(r["max_model_len"]),
                int(r["sliding_window"]) if r["sliding_window"].strip() else None,
                r["source"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{line}: bad model row ({exc})") from None
        if spec.n_q_heads % spec.n_kv_heads:
            raise ValueError(f"{path}:{line}: query heads must be a multiple of KV heads")
        if spec.model in out:
            raise ValueError(f"{path}:{line}: duplicate model {spec.model!r}")
        out[spec.model] = spec
    return out


GPU_COLUMNS = ("gpu", "name", "memory_gib", "bandwidth_gbs", "fp16_tflops", "fp32_tflops", "source", "notes")


def gpu_specs(path: str | Path = GPUS_CSV) -> dict[str, GpuSpec]:
    """GPU key (``a100-40gb``) -> spec, from ``specs/gpus.csv`` (or ``path``); cached per process."""
    return _gpus(str(Path(path).resolve()))


def model_specs(path: str | Path = MODELS_CSV) -> dict[str, ModelSpec]:
    """Model key (``mistral-7b``) -> spec, from ``specs/models.csv`` (or ``path``); cached per process."""
    return _models(str(Path(path).resolve()))


@functools.lru_cache(maxsize=4)
def calibration_table(path: str) -> dict:
    """The parsed ``calibration.json`` at ``path`` (an absolute path string); cached per process
    (``calibration_table.cache_clear()`` after rewriting it)."""
    with Path(path).open() as fh:
        return json.load(fh)


def calibrated_efficiency(held_out: str | None = None, path: str | Path = CALIBRATION_JSON) -> Efficiency:
    """The stored fit: on every measured pair (``held_out=None``, what the profiles use), or the
    leave-one-pair-out fit that excluded ``held_out`` (a pair name such as ``h100-llama2-7b``)."""
    cal = calibration_table(str(Path(path).resolve()))
    if held_out is None:
        return Efficiency(**cal["all_pairs"]["efficiency"])
    try:
        return Efficiency(**cal["leave_one_pair_out"][held_out]["efficiency"])
    except KeyError:
        known = ", ".join(cal["leave_one_pair_out"])
        raise ValueError(f"no leave-one-pair-out fit without {held_out!r}; known: {known}") from None


def split_profile_name(
    name: str, gpus: dict[str, GpuSpec] | None = None, models: dict[str, ModelSpec] | None = None
) -> tuple[GpuSpec, ModelSpec] | None:
    """``<gpu>-<model>`` -> (GpuSpec, ModelSpec), or None when the name is no such pair.

    GPU keys contain dashes (``a100-40gb``), so every split point is tried; keys are unique, and a
    name that splits two ways would be ambiguous (``ValueError``)."""
    gpus = gpu_specs() if gpus is None else gpus
    models = model_specs() if models is None else models
    found = [
        (gpus[name[:i]], models[name[i + 1 :]])
        for i, ch in enumerate(name)
        if ch == "-" and name[:i] in gpus and name[i + 1 :] in models
    ]
    if len(found) > 1:
        raise ValueError(f"profile name {name!r} is ambiguous in the spec tables")
    return found[0] if found else None


def spec_profile_names(
    gpus: dict[str, GpuSpec] | None = None, models: dict[str, ModelSpec] | None = None
) -> tuple[str, ...]:
    """Every ``<gpu>-<model>`` of the spec tables whose fp16 weights fit on one GPU with KV left."""
    gpus = gpu_specs() if gpus is None else gpus
    models = model_specs() if models is None else models
    names = []
    for g in gpus.values():
        for m in models.values():
            try:
                vllm_kv_blocks(g, m)
            except ValueError:
                continue
            names.append(f"{g.gpu}-{m.model}")
    return tuple(names)


def vllm_max_batched_tokens(model: ModelSpec) -> int:
    """vLLM (v0, no chunked prefill) default ``max_num_batched_tokens``: max(max_model_len, 2048)."""
    return max(model.max_model_len, VLLM_MIN_BATCHED_TOKENS)


def activation_reserve_gib(model: ModelSpec, max_batched_tokens: int, max_num_seqs: int) -> float:
    """Peak non-weight memory of vLLM's profiling forward pass, GiB (what ``gpu_memory_utilization``
    leaves to the KV cache after it): ``NON_TORCH_RESERVE_GIB`` plus the largest live activations of
    one layer over ``max_batched_tokens`` tokens (the MLP's gate and up outputs, fp16, twice for the
    act-mul output and the residual stream) plus fp32 logits of ``max_num_seqs`` sampled tokens (x2:
    logits and probabilities). An approximation of vLLM's measured peak, documented in
    docs/simulator.md."""
    mlp = max_batched_tokens * (3 * model.intermediate_size + 2 * model.hidden_size) * model.dtype_bytes
    logits = 2 * max_num_seqs * model.vocab_size * 4
    return NON_TORCH_RESERVE_GIB + (mlp + logits) / GIB


def vllm_kv_blocks(
    gpu: GpuSpec,
    model: ModelSpec,
    gpu_memory_utilization: float = VLLM_GPU_MEMORY_UTILIZATION,
    block_size: int = VLLM_BLOCK_SIZE,
    max_num_seqs: int = VLLM_MAX_NUM_SEQS,
    max_batched_tokens: int | None = None,
) -> int:
    """KV blocks as vLLM sizes them: (utilization x memory - weights - activation reserve) / block bytes."""
    tokens = vllm_max_batched_tokens(model) if max_batched_tokens is None else max_batched_tokens
    free = (
        gpu_memory_utilization * gpu.memory_gib * GIB
        - model.params_b * 1e9 * model.dtype_bytes
        - activation_reserve_gib(model, tokens, max_num_seqs) * GIB
    )
    blocks = math.floor(free / (model.kv_bytes_per_token * block_size))
    if blocks < 1:
        raise ValueError(
            f"{model.model} ({model.params_b} B params) leaves no KV memory on {gpu.gpu} "
            f"({gpu.memory_gib} GiB)"
        )
    return blocks


def vllm_instance_config(gpu: GpuSpec, model: ModelSpec, **overrides) -> InstanceConfig:
    """``InstanceConfig`` with vLLM's defaults for this GPU and model (module docstring); ``overrides``
    replace any field (``max_batch_size``, ``max_batched_tokens``, ``chunked_prefill_tokens``, ...).
    ``kv_blocks`` follows the overridden ``max_batched_tokens`` / ``max_batch_size`` / ``block_size``."""
    tokens = overrides.pop("max_batched_tokens", vllm_max_batched_tokens(model))
    seqs = overrides.pop("max_batch_size", VLLM_MAX_NUM_SEQS)
    block = overrides.pop("block_size", VLLM_BLOCK_SIZE)
    if "kv_blocks" not in overrides:
        overrides["kv_blocks"] = vllm_kv_blocks(
            gpu, model, block_size=block, max_num_seqs=seqs, max_batched_tokens=tokens
        )
    return InstanceConfig(max_batch_size=seqs, max_batched_tokens=tokens, block_size=block, **overrides)


class RooflineLatencyModel:
    """Iteration time of ``model`` on ``gpu`` from their specs and the fitted ``Efficiency``
    (formula in the module docstring). ``iteration_time`` is a handful of float operations;
    ``decode_coeffs(n) = (a, b)`` is exact: a decode-only iteration costs ``a + b * C``."""

    def __init__(
        self, gpu: GpuSpec, model: ModelSpec, efficiency: Efficiency, name: str | None = None
    ) -> None:
        self.name = name or f"{gpu.gpu}-{model.model}"
        self.gpu = gpu
        self.model = model
        self.efficiency = efficiency
        bw = efficiency.eff_bw * gpu.bandwidth_gbs * 1e9  # bytes/s
        flops = efficiency.eff_flops * gpu.fp16_tflops * 1e12  # FLOP/s
        self._weights_s = model.streamed_weight_bytes / bw
        self._matmul_s_per_token = 2.0 * model.layer_matmul_params / flops
        self._lm_head_s_per_seq = 2.0 * model.embedding_params / flops
        attn_flops = efficiency.eff_attn * gpu.fp32_tflops * 1e12  # FLOP/s
        self._kv_s_per_token = max(
            model.kv_bytes_per_token / bw,
            4.0 * model.n_layers * model.n_q_heads * model.head_dim / attn_flops,
        )
        self._prefill_attn_s_per_token2 = 2.0 * model.n_layers * model.n_q_heads * model.head_dim / flops
        self._overhead_s = efficiency.overhead_s
        self._per_seq_s = efficiency.per_seq_s

    def _fixed(self, tokens: int, seqs: int) -> float:
        compute = self._matmul_s_per_token * tokens + self._lm_head_s_per_seq * seqs
        return self._overhead_s + self._per_seq_s * seqs + max(self._weights_s, compute)

    def decode_coeffs(self, decode_seqs: int) -> tuple[float, float]:
        return (self._fixed(decode_seqs, decode_seqs), self._kv_s_per_token)

    def iteration_time(
        self,
        prefill_tokens: int,
        prefill_attention_tokens2: float,
        decode_seqs: int,
        decode_context_tokens: int,
    ) -> float:
        if prefill_tokens == 0:
            return self._fixed(decode_seqs, decode_seqs) + self._kv_s_per_token * decode_context_tokens
        return (
            self._fixed(prefill_tokens + decode_seqs, decode_seqs + 1)
            + self._kv_s_per_token * decode_context_tokens
            + self._prefill_attn_s_per_token2 * prefill_attention_tokens2
        )

    def __repr__(self) -> str:
        return f"RooflineLatencyModel({self.name!r}, {self.efficiency})"


def roofline_latency_model(
    name: str,
    efficiency: Efficiency | None = None,
    gpus_csv: str | Path = GPUS_CSV,
    models_csv: str | Path = MODELS_CSV,
) -> RooflineLatencyModel:
    """The roofline model of profile ``<gpu>-<model>`` with ``efficiency`` (default: the stored fit on
    every measured pair). Raises ValueError for a name that is no pair of the tables."""
    pair = split_profile_name(name, gpu_specs(gpus_csv), model_specs(models_csv))
    if pair is None:
        raise ValueError(
            f"unknown spec profile {name!r}: expected <gpu>-<model> with gpu in "
            f"{', '.join(gpu_specs(gpus_csv))} and model in {', '.join(model_specs(models_csv))}"
        )
    return RooflineLatencyModel(pair[0], pair[1], efficiency or calibrated_efficiency(), name=name)
