"""Latency profiles: the paper's linear V100 model and models built from Vidur's GPU operator profiles.

Who calls this: eval / RL env / benchmarks, once per replay (``load_latency_model``, parsed files are
cached per process) and ``default_instance_config`` to size an instance's KV cache for the profile.

``ProfileLatencyModel`` (file-based profiles) predicts one iteration, in seconds, as

    cpu(batch) + [emb(T) + n_layers * (linear(T) + attn_prefill + attn_decode)] / 1000

with T = prefill_tokens + decode_seqs tokens in the batch and, per layer (milliseconds):

- ``linear(T)``: sum of the median times of the per-layer ops of Vidur's ``mlp.csv`` (input / post-
  attention layernorm, attn pre-proj (QKV), rope, attn post-proj, MLP up, act, down, residual add) at
  tensor parallelism 1, linearly interpolated in ``num_tokens`` (duplicate rows averaged; beyond the
  last profiled size, extrapolated with the last per-token slope), made non-decreasing in T (a running
  maximum removes profiling noise). ``emb(T)`` is the embedding op, once per iteration.
- attention, an analytic model fitted by least squares to the complete 7B-class attention profile we
  have (A30, Qwen-2-7B, FlashInfer; ``attention.csv``) and rescaled to the target GPU and model:
  ``attn_decode = d0 + d1 * decode_context_tokens`` (memory-bound: reading the KV cache) with d1 scaled
  by (target KV heads / 4) * (A30 bandwidth / target bandwidth); ``attn_prefill = p0 + p1 *
  prefill_attention_tokens2`` (compute-bound: QK^T and PV) with p1 scaled by (target query heads / 28) *
  (A30 fp16 tensor FLOP/s / target FLOP/s). Both include the KV-cache save op. d0 / p0 are kernel-launch
  costs and are not rescaled; p0 is counted once per iteration that has a prefill (the contract gives
  token totals, not the number of prefills). The legacy A100 attention file (70B at TP2: 32 query and
  4 KV heads per GPU) is not used for the fit; it serves as a held-out check of the scaling rule: the
  rescaled model predicts its measurements with median ratio 1.02 (prefill) and 0.97 (decode),
  10-90 % range about 0.85-1.14 (tested). The A30 fit itself has a median relative error of ~5 %.
- ``cpu(batch)``: per-iteration CPU overhead (schedule + sampler + prepare inputs + process outputs,
  medians) of Llama-2-7B at TP1 from ``legacy_2024-05/{a100,a40}_cpu_overheads.csv``, interpolated in
  batch size (held constant below 8, extrapolated linearly above 128). H100 uses the A100 file and
  Llama-3-8B uses the Llama-2-7B rows (no other rows exist). batch = decode_seqs + 1 if any prefill.
  Vidur also adds a Ray communication time; it is left out here (TP1 engines run no Ray workers).

The per-layer composition (linear ops + attention + one residual add, times the number of layers,
plus CPU overhead) follows Vidur's ``ExecutionTime``; unlike Vidur, the embedding op is counted
(once per iteration, ~0.2 ms).

GPU figures used for scaling (vendor datasheets, dense fp16 tensor): A30 933 GB/s, 165 TFLOP/s; A100
80GB SXM 2039 GB/s, 312 TFLOP/s; H100 SXM 3350 GB/s, 989 TFLOP/s; A40 696 GB/s, 150 TFLOP/s.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.simulator import roofline
from training.simulator.config import InstanceConfig
from training.simulator.latency import LatencyModel, LinearLatencyModel

PAPER_PROFILE = "v100-llama2-7b-paper"
PAPER_CONTEXT_PROFILE = "v100-llama2-7b-paper-context"
PAPER_GRAD2_S = 3.3e-5
PROFILE_NAMES: tuple[str, ...] = (
    PAPER_PROFILE,
    PAPER_CONTEXT_PROFILE,
    "a100-llama2-7b",
    "h100-llama2-7b",
    "a40-llama2-7b",
    "a100-llama3-8b",
)

_BYTES_FP16 = 2


@dataclass(frozen=True, slots=True)
class Gpu:
    name: str
    mem_gib: float
    bandwidth_gbs: float
    fp16_tflops: float


@dataclass(frozen=True, slots=True)
class HardwareProfile:
    """What a profile needs besides timings: the GPU, the model shape, and where the files are.

    Units: GiB, billions of parameters, bytes per token of KV cache (all layers, K and V, fp16).
    """

    name: str
    gpu: Gpu
    model: str  # Hugging Face id as in the Vidur folders
    model_params_b: float
    n_layers: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int
    compute_dir: str | None  # Vidur profile folder name of the GPU (None: paper linear model)
    cpu_overhead_file: str | None

    @property
    def gpu_mem_gib(self) -> float:
        return self.gpu.mem_gib

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * _BYTES_FP16


_A30 = Gpu("a30", 24.0, 933.0, 165.0)
_V100 = Gpu("v100-32gb", 32.0, 900.0, 125.0)
_A100 = Gpu("a100-80gb", 80.0, 2039.0, 312.0)
_H100 = Gpu("h100-80gb", 80.0, 3350.0, 989.0)
_A40 = Gpu("a40", 48.0, 696.0, 150.0)


def _llama2_7b(name: str, gpu: Gpu, gpu_dir: str, cpu_file: str) -> HardwareProfile:
    return HardwareProfile(name, gpu, "meta-llama/Llama-2-7b-hf", 6.74, 32, 32, 32, 128, gpu_dir, cpu_file)


_HARDWARE: dict[str, HardwareProfile] = {
    PAPER_PROFILE: HardwareProfile(
        PAPER_PROFILE, _V100, "meta-llama/Llama-2-7b-hf", 7.0, 32, 32, 32, 128, None, None
    ),
    PAPER_CONTEXT_PROFILE: HardwareProfile(
        PAPER_CONTEXT_PROFILE, _V100, "meta-llama/Llama-2-7b-hf", 7.0, 32, 32, 32, 128, None, None
    ),
    "a100-llama2-7b": _llama2_7b("a100-llama2-7b", _A100, "a100", "a100_cpu_overheads.csv"),
    "h100-llama2-7b": _llama2_7b("h100-llama2-7b", _H100, "h100", "a100_cpu_overheads.csv"),
    "a40-llama2-7b": _llama2_7b("a40-llama2-7b", _A40, "a40", "a40_cpu_overheads.csv"),
    "a100-llama3-8b": HardwareProfile(
        "a100-llama3-8b",
        _A100,
        "meta-llama/Meta-Llama-3-8B",
        8.03,
        32,
        32,
        8,
        128,
        "a100",
        "a100_cpu_overheads.csv",
    ),
}

_A30_QWEN_Q_HEADS = 28
_A30_QWEN_KV_HEADS = 4
ATTENTION_CSV = "a30_from_AKafakA_vidur_opt_scheduler/compute/a30/Qwen/Qwen-2-7B/attention.csv"
"""The complete 7B-class attention profile the analytic attention model is fitted to (A30, Qwen-2-7B)."""
LINEAR_OPS = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)
_CPU_COLUMNS = (
    "schedule_median",
    "sampler_e2e_median",
    "prepare_inputs_e2e_median",
    "process_model_outputs_median",
)
_MAX_TABLE_TOKENS = 16384
_MAX_TABLE_BATCH = 4096


ROOFLINE_SUFFIX = "-roofline"
"""``<gpu>-<model>-roofline`` forces the spec-built model where a Vidur profile has the same name."""


def _spec_pair(name: str) -> tuple[roofline.GpuSpec, roofline.ModelSpec] | None:
    """(GpuSpec, ModelSpec) of a spec profile name (``<gpu>-<model>[-roofline]``) that is not one of
    ``PROFILE_NAMES``, else None (issue 18; ``roofline.py``)."""
    if name in _HARDWARE:
        return None
    return roofline.split_profile_name(name.removesuffix(ROOFLINE_SUFFIX))


def profile_names() -> tuple[str, ...]:
    """``PROFILE_NAMES``, then every ``<gpu>-<model>`` of the spec tables (``roofline.spec_profile_names``),
    with ``-roofline`` appended where a Vidur profile holds the name (``h100-llama2-7b-roofline``)."""
    specs = roofline.spec_profile_names()
    return PROFILE_NAMES + tuple(n + ROOFLINE_SUFFIX if n in _HARDWARE else n for n in specs)


def hardware_profile(name: str) -> HardwareProfile:
    try:
        return _HARDWARE[name]
    except KeyError:
        pair = _spec_pair(name)
        if pair is None:
            raise ValueError(
                f"unknown latency profile {name!r}; known: {', '.join(PROFILE_NAMES)}, or <gpu>-<model> "
                "from training/simulator/specs (gpus.csv, models.csv)"
            ) from None
    g, m = pair
    return HardwareProfile(
        name,
        Gpu(g.gpu, g.memory_gib, g.bandwidth_gbs, g.fp16_tflops),
        m.hf_id,
        m.params_b,
        m.n_layers,
        m.n_q_heads,
        m.n_kv_heads,
        m.head_dim,
        None,
        None,
    )


def default_instance_config(profile_name: str, **overrides) -> InstanceConfig:
    """``InstanceConfig.from_hardware`` with the profile's GPU memory, model size and KV bytes/token;
    for spec profiles, vLLM's engine defaults (``roofline.vllm_instance_config``)."""
    pair = _spec_pair(profile_name)
    if pair is not None:
        return roofline.vllm_instance_config(*pair, **overrides)
    hw = hardware_profile(profile_name)
    return InstanceConfig.from_hardware(
        gpu_mem_gib=hw.gpu_mem_gib,
        model_params_b=hw.model_params_b,
        kv_bytes_per_token=hw.kv_bytes_per_token,
        **overrides,
    )


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the profile latency models read Vidur's GPU profiles from "
            "../shared/data/vidur_profiling (or $LOADWISE_DATA_DIR/vidur_profiling)"
        )
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with _require(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


@functools.lru_cache(maxsize=32)
def _linear_table(mlp_csv: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(num_tokens, per-layer linear ms, embedding ms) at TP1, duplicates averaged, sorted."""
    rows = [r for r in _read_csv(Path(mlp_csv)) if int(float(r["num_tensor_parallel_workers"])) == 1]
    if not rows:
        raise ValueError(f"{mlp_csv}: no tensor-parallel-1 rows")
    by_tokens: dict[int, list[tuple[float, float]]] = {}
    for r in rows:
        layer = sum(float(r[f"time_stats.{op}.median"]) for op in LINEAR_OPS)
        by_tokens.setdefault(int(float(r["num_tokens"])), []).append(
            (layer, float(r["time_stats.emb.median"]))
        )
    tokens = np.array(sorted(by_tokens), dtype=np.float64)
    layer_ms = np.array([np.mean([v[0] for v in by_tokens[int(t)]]) for t in tokens])
    emb_ms = np.array([np.mean([v[1] for v in by_tokens[int(t)]]) for t in tokens])
    return tokens, layer_ms, emb_ms, np.array([len(rows)])


@functools.lru_cache(maxsize=8)
def _attention_fit(attention_csv: str) -> tuple[float, float, float, float]:
    """Least-squares (p0, p1, d0, d1) in ms per layer on the A30 Qwen-2-7B attention profile."""
    rows = _read_csv(Path(attention_csv))
    px, py, dx, dy = [], [], [], []
    for r in rows:
        save = float(r["time_stats.attn_kv_cache_save.median"])
        chunk = int(float(r["prefill_chunk_size"]))
        kv = int(float(r["kv_cache_size"]))
        batch = int(float(r["batch_size"]))
        if r["is_prefill"] == "True":
            px.append(chunk * (kv + chunk) * batch)
            py.append(float(r["time_stats.attn_prefill.median"]) + save)
        else:
            dx.append(batch * kv)
            dy.append(float(r["time_stats.attn_decode.median"]) + save)
    p1, p0 = np.polyfit(np.asarray(px, dtype=np.float64), np.asarray(py), 1)
    d1, d0 = np.polyfit(np.asarray(dx, dtype=np.float64), np.asarray(dy), 1)
    return float(max(p0, 0.0)), float(p1), float(max(d0, 0.0)), float(d1)


@functools.lru_cache(maxsize=8)
def _cpu_table(cpu_csv: str, model: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [
        r
        for r in _read_csv(Path(cpu_csv))
        if r["model_name"] == model and int(float(r["tensor_parallel_degree"])) == 1
    ]
    if not rows:
        raise ValueError(f"{cpu_csv}: no rows for {model} at tensor parallelism 1")
    by_batch: dict[int, list[float]] = {}
    for r in rows:
        by_batch.setdefault(int(float(r["batch_size"])), []).append(sum(float(r[c]) for c in _CPU_COLUMNS))
    batch = np.array(sorted(by_batch), dtype=np.float64)
    ms = np.array([np.mean(by_batch[int(b)]) for b in batch])
    return batch, ms


def _interp_extrapolate(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """np.interp, held at the first value below xp[0], extended with the last slope beyond xp[-1]."""
    y = np.interp(x, xp, fp)
    if len(xp) >= 2:
        slope = max((fp[-1] - fp[-2]) / (xp[-1] - xp[-2]), 0.0)
        beyond = x > xp[-1]
        y[beyond] = fp[-1] + slope * (x[beyond] - xp[-1])
    return y


class ProfileLatencyModel:
    """Iteration time from Vidur GPU operator profiles (see the module docstring for the model).

    Lookup tables are precomputed over tokens in the batch (0..16384, linear per-token extension
    beyond) and batch size (0..4096) so ``iteration_time`` is a few array reads and multiplies.
    """

    def __init__(self, hardware: HardwareProfile, data_dir: Path) -> None:
        self.name = hardware.name
        self.hardware = hardware
        prof = Path(data_dir) / "vidur_profiling"
        mlp = prof / "compute" / str(hardware.compute_dir) / hardware.model / "mlp.csv"
        att = prof / ATTENTION_CSV
        cpu = prof / "legacy_2024-05" / str(hardware.cpu_overhead_file)
        tokens, layer_ms, emb_ms, _ = _linear_table(str(_require(mlp)))
        p0, p1, d0, d1 = _attention_fit(str(_require(att)))
        cpu_batch, cpu_ms = _cpu_table(str(_require(cpu)), "meta-llama/Llama-2-7b-hf")

        gpu = hardware.gpu
        self.attn_p0_ms = p0
        self.attn_p1_ms = p1 * (hardware.n_q_heads / _A30_QWEN_Q_HEADS) * (_A30.fp16_tflops / gpu.fp16_tflops)
        self.attn_d0_ms = d0
        self.attn_d1_ms = (
            d1 * (hardware.n_kv_heads / _A30_QWEN_KV_HEADS) * (_A30.bandwidth_gbs / gpu.bandwidth_gbs)
        )
        L = hardware.n_layers

        t = np.arange(_MAX_TABLE_TOKENS + 1, dtype=np.float64)
        lin = _interp_extrapolate(t, tokens, layer_ms * L + emb_ms)
        lin[0] = 0.0
        self._lin_s = np.maximum.accumulate(lin) / 1000.0
        last = len(tokens) - 1
        self._lin_slope_s = (
            max(
                (layer_ms[last] * L + emb_ms[last] - layer_ms[last - 1] * L - emb_ms[last - 1])
                / (tokens[last] - tokens[last - 1]),
                0.0,
            )
            / 1000.0
        )
        b = np.arange(_MAX_TABLE_BATCH + 1, dtype=np.float64)
        self._cpu_s = np.maximum.accumulate(_interp_extrapolate(b, cpu_batch, cpu_ms)) / 1000.0
        self._cpu_s[0] = 0.0
        self._prefill_fixed_s = L * self.attn_p0_ms / 1000.0
        self._prefill_per_tok2_s = L * self.attn_p1_ms / 1000.0
        self._decode_fixed_s = L * self.attn_d0_ms / 1000.0
        self._decode_per_ctx_s = L * self.attn_d1_ms / 1000.0
        # decode-only iteration: a[n] + b * C
        n = np.arange(_MAX_TABLE_BATCH + 1)
        self._dec_a = self._lin_s[np.minimum(n, _MAX_TABLE_TOKENS)] + self._cpu_s + self._decode_fixed_s
        self._dec_a_list = self._dec_a.tolist()
        self._lin_list = self._lin_s.tolist()
        self._cpu_list = self._cpu_s.tolist()

    def _lin(self, tokens: int) -> float:
        if tokens <= _MAX_TABLE_TOKENS:
            return self._lin_list[tokens]
        return self._lin_list[_MAX_TABLE_TOKENS] + self._lin_slope_s * (tokens - _MAX_TABLE_TOKENS)

    def _cpu(self, batch: int) -> float:
        return self._cpu_list[min(batch, _MAX_TABLE_BATCH)]

    def decode_coeffs(self, decode_seqs: int) -> tuple[float, float]:
        if decode_seqs <= _MAX_TABLE_BATCH:
            a = self._dec_a_list[decode_seqs]
        else:
            a = self._lin(decode_seqs) + self._cpu(decode_seqs) + self._decode_fixed_s
        return (a, self._decode_per_ctx_s)

    def iteration_time(
        self,
        prefill_tokens: int,
        prefill_attention_tokens2: float,
        decode_seqs: int,
        decode_context_tokens: int,
    ) -> float:
        if prefill_tokens == 0:
            a, b = self.decode_coeffs(decode_seqs)
            return a + b * decode_context_tokens
        t = self._lin(prefill_tokens + decode_seqs) + self._cpu(decode_seqs + 1)
        t += self._prefill_fixed_s + self._prefill_per_tok2_s * prefill_attention_tokens2
        if decode_seqs:
            t += self._decode_fixed_s + self._decode_per_ctx_s * decode_context_tokens
        return t

    def __repr__(self) -> str:
        return f"ProfileLatencyModel({self.name!r})"


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, data_dir: str) -> LatencyModel:
    return ProfileLatencyModel(hardware_profile(name), Path(data_dir))


def load_latency_model(name: str, data_dir: str | Path | None = None) -> LatencyModel:
    """The latency model of a named profile (``PROFILE_NAMES``); cached per process.

    ``v100-llama2-7b-paper``, ``v100-llama2-7b-paper-context`` and the spec profiles ``<gpu>-<model>``
    (``roofline.RooflineLatencyModel``, calibrated on measured vLLM) need no files. The others read
    ``<data_dir>/vidur_profiling`` (default: ``warehouse.settings.shared_data_dir()``) and raise
    FileNotFoundError naming the missing path when it is absent.
    """
    hardware_profile(name)
    pair = _spec_pair(name)
    if pair is not None:  # spec profiles need no data files
        return roofline.RooflineLatencyModel(*pair, roofline.calibrated_efficiency(), name=name)
    if name == PAPER_PROFILE:
        # grad2 per decode token in the batch (one per decoding sequence); see LinearLatencyModel.
        return LinearLatencyModel(
            grad2_s_per_decode_context_token=0.0, per_decode_seq_s=PAPER_GRAD2_S, name=PAPER_PROFILE
        )
    if name == PAPER_CONTEXT_PROFILE:
        # grad2 per token of decode context: the literal reading.
        return LinearLatencyModel(grad2_s_per_decode_context_token=PAPER_GRAD2_S, name=PAPER_CONTEXT_PROFILE)
    if data_dir is None:
        from warehouse.settings import shared_data_dir

        data_dir = shared_data_dir()
    return _load_cached(name, str(Path(data_dir).resolve()))
