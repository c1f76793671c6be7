"""Workloads by name (``--workload``), and workloads of a trace file (``--trace``) or of the warehouse.

Who calls this: the evaluation harness, ``loadwise replay/compare`` and the RL episodes
(``training.workloads.episodes``), once per run. A ``Workload`` holds the held-out requests to
replay (a function of the seed: synthetic and sampled workloads draw a new trace per seed, windowed
traces a new window; fixed traces ignore it) and the *training* requests the length predictor is
fitted on. The two never overlap: real prompt sets are split by the warehouse's one prompt split
(``warehouse.prompt_split``: ``test`` prompts are held out, ``train`` and ``val`` prompts train; the
same split the length predictor trains on), traces by time window (``ARCHITECTURE.md``, "Rules").
A workload read from a warehouse also names its rows (``Workload.row_sources``): what a length
predictor's stored predictions must cover (``training.workloads.predictors``).

Workloads:

- ``main``: 4 instances, Poisson arrivals (20 req/s), 2000 requests of a 5-task mix with real output
  lengths and prompts (CASTILLO Llama-3.1-8B-Instruct rows of Apps, ShareGPT, Mbpp and short-answer
  Dolly categories, one of each prompt's 10 sampled generations; AlpacaEval llama-2-7b-chat-hf), read
  through the warehouse like every trace (``sources.trace_rows``); held-out requests are the
  ``test`` prompts of the warehouse's prompt split. Falls back to a synthetic 5-task mix with the
  same means (labelled synthetic) when the data folder is absent.
- ``table2``: the paper's Table 2 setting: 2 instances, 3000 requests of light-prompt/heavy-decode
  (LH) and heavy-prompt/light-decode (HL) classes, in a chosen order (always synthetic).
- ``azure``: the Azure LLM inference traces 2023 (code + conversation) merged, time-scaled to a
  target rate; the first 20 % of the hour fits the predictor, the rest is replayed.
- ``prefix``: a synthetic Mooncake-like trace whose requests share prompt-prefix chains (Zipf
  popular families of 512-token blocks): the effect cache-aware routers exploit.

Units: seconds from trace start, tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from training.simulator.request import Request
from warehouse.settings import shared_data_dir

MAX_OUTPUT_TOKENS = 4096
"""Output lengths are clipped here (a typical ``max_tokens``); CASTILLO holds runaway generations.
The one clip of every replayed trace: the workloads and the impact estimator's Azure windows."""

TRAIN_WINDOW_FRACTION = 0.2
"""Traces: the first 20 % of the time window fits the length predictor; the rest is held out."""


@dataclass(frozen=True)
class RowSource:
    """Warehouse rows a workload's requests replay (their ``Request.row_id``): the replayable rows of
    ``marts.requests`` in ``warehouse`` (a published or a scratch warehouse) matching ``where`` (SQL,
    with ``?`` params)."""

    warehouse: Path
    where: str = "TRUE"
    params: tuple[object, ...] = ()


@dataclass(frozen=True)
class Workload:
    """Held-out requests to replay, plus the disjoint training requests for the length predictor.

    Attributes:
        name: registry name (``main``, ``table2``, ``azure``, ``trace:<file>``).
        description: one line for reports (says "synthetic" when it is).
        synthetic: True when no real lengths are used.
        sample: ``seed -> requests`` (sorted by arrival). Deterministic for a seed.
        train: requests the predictor is fitted on (never replayed).
        num_instances: the setting's instance count (the CLI may override it).
        profile: the latency profile the setting is meant for.
        seed_dependent: whether ``sample`` changes with the seed.
        info: extra facts for reports (rates, counts, sources).
        sample_train: ``seed -> requests`` like ``sample`` but drawn from the TRAINING pool (the RL
            router's episodes; ``None`` where the workload has no sampler over it).
        row_sources: the warehouse rows its requests (both pools) replay; empty for synthetic ones.
    """

    name: str
    description: str
    synthetic: bool
    sample: Callable[[int], list[Request]]
    train: Sequence[Request]
    num_instances: int
    profile: str
    seed_dependent: bool = True
    info: dict[str, object] = field(default_factory=dict)
    sample_train: Callable[[int], list[Request]] | None = None
    row_sources: tuple[RowSource, ...] = ()


@dataclass(frozen=True)
class WorkloadOptions:
    """CLI-level overrides; ``None`` keeps the workload's default.

    Checked when built (``ValueError``): a count must be >= 1 and a rate a finite number > 0, so no
    value can silently stand for the default (``rate=0`` used to mean each workload's default rate,
    through ``options.rate or 20.0``), and a table2 ``order`` must be one of ``TABLE2_ORDERS``.
    """

    num_requests: int | None = None
    rate: float | None = None
    num_instances: int | None = None
    order: str | None = None
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        for name in ("num_requests", "num_instances"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate must be a finite number > 0 req/s, got {self.rate!r}")
        if self.order is not None and self.order not in TABLE2_ORDERS:
            raise ValueError(f"table2 order must be one of {', '.join(TABLE2_ORDERS)}, got {self.order!r}")


WorkloadBuilder = Callable[[WorkloadOptions], Workload]
_WORKLOADS: dict[str, WorkloadBuilder] = {}


def register_workload(name: str, builder: WorkloadBuilder) -> None:
    if name in _WORKLOADS:
        raise ValueError(f"workload {name!r} is already registered")
    _WORKLOADS[name] = builder


def workload_names() -> list[str]:
    return list(_WORKLOADS)


def get_workload(name: str, options: WorkloadOptions | None = None) -> Workload:
    try:
        builder = _WORKLOADS[name]
    except KeyError:
        raise KeyError(f"unknown workload {name!r}; known: {', '.join(_WORKLOADS)}") from None
    wl = builder(options or WorkloadOptions())
    if options is not None and options.num_instances is not None:
        wl = replace(wl, num_instances=options.num_instances)
    return wl


def poisson_arrivals(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """``n`` Poisson arrival times (seconds) at ``rate`` requests per second, starting at 0."""
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a finite number > 0 req/s, got {rate}")
    gaps = rng.exponential(1.0 / rate, size=n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


# ---------------------------------------------------------------------------------------------
# main: 5-task mix with real output lengths
# ---------------------------------------------------------------------------------------------

CASTILLO_MODEL = "meta-llama--Llama-3.1-8B-Instruct"
DOLLY_SHORT = ("classification", "closed_qa", "information_extraction", "summarization")


@dataclass(frozen=True)
class _TaskPool:
    """Prompts of one task: prompt lengths and, per prompt, the sampled output lengths; for real
    prompt sets also the prompt texts and, per generation, the warehouse row it came from."""

    prompt_tokens: np.ndarray  # (n,)
    outputs: list[np.ndarray]  # n arrays of output lengths (1 or 10 generations)
    texts: list[str | None] | None = None  # n prompt texts (None: synthetic)
    row_ids: list[list[str]] | None = None  # n lists, one marts.requests id per generation

    def text(self, i: int) -> str | None:
        return None if self.texts is None else self.texts[i]

    def row_id(self, i: int, j: int) -> str | None:
        return None if self.row_ids is None else self.row_ids[i][j]

    def requests(self, task: str, prefix: str) -> list[Request]:
        """One request per (prompt, generation): the training set for a task-mean predictor."""
        out = []
        for i, (p, gens) in enumerate(zip(self.prompt_tokens, self.outputs, strict=True)):
            for j, o in enumerate(gens):
                out.append(
                    Request(
                        f"{prefix}{task}-{i}-{j}",
                        0.0,
                        max(1, int(p)),
                        int(np.clip(o, 1, MAX_OUTPUT_TOKENS)),
                        task,
                        prompt_text=self.text(i),
                        row_id=self.row_id(i, j),
                    )
                )
        return out


MAIN_TASKS = ("code_apps", "chat_sharegpt", "code_mbpp", "dolly_short", "alpaca_llama2")

SYNTHETIC_MAIN = {
    # task: (prompt median, prompt sigma, output median, output sigma) of lognormals, matched to the
    # real pools' means (see docs/evaluation.md).
    "code_apps": (480.0, 0.45, 560.0, 0.5),
    "chat_sharegpt": (150.0, 0.9, 560.0, 0.55),
    "code_mbpp": (145.0, 0.3, 380.0, 0.5),
    "dolly_short": (180.0, 0.9, 120.0, 0.7),
    "alpaca_llama2": (25.0, 0.9, 300.0, 0.6),
}


CASTILLO_FILE = Path("castillo") / "castillo_lengths.parquet"
ALPACA_EVAL_FILE = Path("alpaca_eval_outputs") / "alpaca_eval_outputs_10models.parquet"
ALPACA_EVAL_GENERATOR = "llama-2-7b-chat-hf"
CASTILLO_TASKS = {
    # task of marts.requests (CASTILLO: the dataset, or DollyDataset/<category>) -> main's task
    "Apps": "code_apps",
    "ShareGPT": "chat_sharegpt",
    "Mbpp": "code_mbpp",
    **{f"DollyDataset/{category}": "dolly_short" for category in DOLLY_SHORT},
}


def _load_main_pools(
    data: Path,
) -> tuple[dict[str, _TaskPool], dict[str, _TaskPool], tuple[RowSource, ...]]:
    """Held-out and training pools per task from CASTILLO + AlpacaEval, read through the warehouse
    (``sources.trace_rows``: its Parquet readers and checks, cached per process), and the rows they
    replay.

    CASTILLO: the ``CASTILLO_MODEL`` rows of the ``CASTILLO_TASKS`` tasks, one prompt per record (its
    10 generations). AlpacaEval: the ``ALPACA_EVAL_GENERATOR`` rows. Both split by the warehouse's
    one prompt split (``warehouse.prompt_split``): ``test`` prompts are held out, ``train`` and
    ``val`` prompts make the training pool, in file order within each (split, task).
    """
    from training.workloads.sources import scratch_warehouse, trace_rows  # the warehouse reader
    from warehouse.prompt_split import split_of

    cas_where = f"model = ? AND task IN ({', '.join('?' * len(CASTILLO_TASKS))})"
    cas_params = (CASTILLO_MODEL, *CASTILLO_TASKS)
    cas, _ = trace_rows(
        [data / CASTILLO_FILE],
        "castillo",
        "request_id, line, task, prompt_text, prompt_tokens, output_tokens",
        where=cas_where,
        params=list(cas_params),
        order_by="line, sample_index",
    )
    line = cas.column("line").to_numpy()
    first = np.flatnonzero(np.r_[True, line[1:] != line[:-1]])  # each record's first generation
    ends = np.r_[first[1:], len(line)]
    tasks = [CASTILLO_TASKS[t] for t in cas.column("task").take(first).to_pylist()]
    texts = cas.column("prompt_text").take(first).to_pylist()
    prompts = cas.column("prompt_tokens").to_numpy()[first].astype(np.int64)
    outputs = cas.column("output_tokens").to_numpy().astype(np.int64)
    ids = cas.column("request_id").to_pylist()
    records: dict[
        tuple[bool, str], tuple[list[int], list[np.ndarray], list[str | None], list[list[str]]]
    ] = {}
    for k, task in enumerate(tasks):  # file order within each (split, task)
        ps, outs, txt, rids = records.setdefault((split_of(texts[k]) == "test", task), ([], [], [], []))
        ps.append(int(prompts[k]))
        outs.append(outputs[first[k] : ends[k]])
        txt.append(texts[k])
        rids.append(ids[first[k] : ends[k]])
    held: dict[str, _TaskPool] = {}
    train: dict[str, _TaskPool] = {}
    for (is_held, task), (ps, outs, txt, rids) in records.items():
        (held if is_held else train)[task] = _TaskPool(np.array(ps, dtype=np.int64), outs, txt, rids)
    alp, _ = trace_rows(
        [data / ALPACA_EVAL_FILE],
        "alpaca-eval",
        "request_id, prompt_text, prompt_tokens, output_tokens",
        where="model = ?",
        params=[ALPACA_EVAL_GENERATOR],
        order_by="line",
    )
    alp_texts = alp.column("prompt_text").to_pylist()
    alp_ids = alp.column("request_id").to_pylist()
    is_test = np.array([split_of(t) == "test" for t in alp_texts], dtype=bool)
    prompt_tokens = alp.column("prompt_tokens").to_numpy().astype(np.int64)
    output_tokens = alp.column("output_tokens").to_numpy()
    for pool, keep in ((held, is_test), (train, ~is_test)):
        rows = np.flatnonzero(keep)
        pool["alpaca_llama2"] = _TaskPool(
            prompt_tokens[keep].clip(min=1),
            [np.array([max(1, int(o))]) for o in output_tokens[keep]],
            [alp_texts[i] for i in rows],
            [[alp_ids[i]] for i in rows],
        )
    for task in MAIN_TASKS:
        if task not in held or task not in train:
            raise ValueError(f"main workload: task {task} has an empty split")
    sources = (
        RowSource(scratch_warehouse([data / CASTILLO_FILE], "castillo")[0], cas_where, cas_params),
        RowSource(
            scratch_warehouse([data / ALPACA_EVAL_FILE], "alpaca-eval")[0],
            "model = ?",
            (ALPACA_EVAL_GENERATOR,),
        ),
    )
    return held, train, sources


def _synthetic_pools(seed: int, n_prompts: int) -> dict[str, _TaskPool]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7331]))
    pools = {}
    for task, (pm, ps, om, osd) in SYNTHETIC_MAIN.items():
        prompts = np.maximum(1, rng.lognormal(np.log(pm), ps, size=n_prompts).astype(np.int64))
        outs = [
            np.maximum(1, rng.lognormal(np.log(om), osd, size=10).astype(np.int64)) for _ in range(n_prompts)
        ]
        pools[task] = _TaskPool(prompts, outs)
    return pools


def _sample_mix(
    pools: dict[str, _TaskPool], n: int, rate: float, rng: np.random.Generator, prefix: str
) -> list[Request]:
    tasks = sorted(pools)
    arrivals = poisson_arrivals(rng, n, rate)
    which = rng.integers(len(tasks), size=n)
    out = []
    for k in range(n):
        task = tasks[int(which[k])]
        pool = pools[task]
        i = int(rng.integers(len(pool.prompt_tokens)))
        gens = pool.outputs[i]
        j = int(rng.integers(len(gens)))
        out.append(
            Request(
                f"{prefix}{k}",
                float(arrivals[k]),
                max(1, int(pool.prompt_tokens[i])),
                int(np.clip(int(gens[j]), 1, MAX_OUTPUT_TOKENS)),
                task,
                prompt_text=pool.text(i),
                row_id=pool.row_id(i, j),
            )
        )
    return out


def build_main(options: WorkloadOptions) -> Workload:
    n = options.num_requests or 2000
    rate = options.rate or 20.0
    data = options.data_dir or shared_data_dir()
    synthetic = not (data / CASTILLO_FILE).is_file() or not (data / ALPACA_EVAL_FILE).is_file()
    sources: tuple[RowSource, ...] = ()
    if synthetic:
        held, train = _synthetic_pools(1, 200), _synthetic_pools(2, 200)
        desc = f"SYNTHETIC 5-task mix (data folder absent), {n} requests, Poisson {rate:g} req/s"
    else:
        held, train, sources = _load_main_pools(data)
        desc = (
            f"5-task mix with real output lengths (CASTILLO Llama-3.1-8B + AlpacaEval llama-2-7b-chat, "
            f"test prompts of the warehouse split), {n} requests, Poisson {rate:g} req/s"
        )
    train_requests = [r for task in sorted(train) for r in train[task].requests(task, "train-")]

    def sample(seed: int) -> list[Request]:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1001]))
        return _sample_mix(held, n, rate, rng, "main-")

    def sample_train(seed: int) -> list[Request]:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1002]))
        return _sample_mix(train, n, rate, rng, "main-train-")

    return Workload(
        name="main",
        description=desc,
        synthetic=synthetic,
        sample=sample,
        train=train_requests,
        num_instances=4,
        profile="v100-llama2-7b-paper",
        info={"num_requests": n, "rate_rps": rate, "tasks": list(MAIN_TASKS)},
        sample_train=sample_train,
        row_sources=sources,
    )


# ---------------------------------------------------------------------------------------------
# prefix: shared prompt prefixes (system prompts, few-shot templates, chat histories)
# ---------------------------------------------------------------------------------------------

PREFIX_BLOCK_TOKENS = 512
"""Prefix block size of the ids (Mooncake's hash_ids: 512-token blocks)."""
PREFIX_DEFAULT_RATE = 4.0
PREFIX_FAMILIES = 48
PREFIX_ZIPF_S = 1.1


def _prefix_requests(n: int, rate: float, rng: np.random.Generator, id_prefix: str) -> list[Request]:
    """Mooncake-like requests: a family's shared chain of 512-token blocks, then a private suffix.

    Family popularity is Zipf(``PREFIX_ZIPF_S``) over ``PREFIX_FAMILIES`` families; each family's
    shared prefix is 2-8 blocks (1-4k tokens); the private suffix 50-1,000 tokens gets its own
    block ids (never shared); outputs are lognormal (median 150, capped at 1,024).
    """
    weights = 1.0 / np.arange(1, PREFIX_FAMILIES + 1) ** PREFIX_ZIPF_S
    family_blocks = np.random.default_rng(7).integers(2, 9, PREFIX_FAMILIES)  # fixed family shapes
    families = rng.choice(PREFIX_FAMILIES, size=n, p=weights / weights.sum())
    arrivals = poisson_arrivals(rng, n, rate)
    out = []
    for k in range(n):
        f = int(families[k])
        shared = int(family_blocks[f])
        suffix = int(rng.integers(50, 1001))
        prompt = shared * PREFIX_BLOCK_TOKENS + suffix
        own = -(-suffix // PREFIX_BLOCK_TOKENS)
        ids = tuple(f * 1000 + b for b in range(shared)) + tuple(10**7 + k * 10 + b for b in range(own))
        output = int(min(1024, max(1, round(rng.lognormal(np.log(150), 0.8)))))
        out.append(Request(f"{id_prefix}{k}", float(arrivals[k]), prompt, output, f"family{f:02d}", ids))
    return out


def build_prefix(options: WorkloadOptions) -> Workload:
    n = options.num_requests or 3000
    rate = options.rate or PREFIX_DEFAULT_RATE
    train = _prefix_requests(2000, rate, np.random.default_rng(515151), "train-")

    def sample(seed: int) -> list[Request]:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 3003]))
        return _prefix_requests(n, rate, rng, "px-")

    return Workload(
        name="prefix",
        description=(
            f"SYNTHETIC shared-prefix (Mooncake-like) trace: {n} requests over {PREFIX_FAMILIES} "
            f"Zipf({PREFIX_ZIPF_S:g}) prefix families, Poisson {rate:g} req/s"
        ),
        synthetic=True,
        sample=sample,
        train=train,
        num_instances=4,
        profile="v100-llama2-7b-paper",
        info={"num_requests": n, "rate_rps": rate, "families": PREFIX_FAMILIES},
    )


# ---------------------------------------------------------------------------------------------
# table2: the paper's LH / HL setting
# ---------------------------------------------------------------------------------------------

TABLE2_ORDERS = ("random", "alternating", "lh_first", "hl_first")
TABLE2_DEFAULT_RATE = 3.0
"""req/s on 2 instances: busy but stable for round robin under the paper's V100 model (its
capacity for this mix is about 3.3 req/s; see docs/evaluation.md)."""
TABLE2_CLASSES = {
    # class: (prompt tokens low, high), (output tokens low, high): uniform integers. Under the paper's
    # V100 profile LH prefill < 0.1 s and decode >= 5 s; HL prefill >= 0.5 s and decode < 2 s.
    "LH": ((32, 256), (300, 700)),
    "HL": ((1600, 3000), (8, 64)),
}


def _table2_requests(n: int, rate: float, order: str, rng: np.random.Generator, prefix: str) -> list[Request]:
    if order not in TABLE2_ORDERS:
        raise ValueError(f"table2 order must be one of {TABLE2_ORDERS}, got {order!r}")
    half = n // 2
    labels = np.array(["LH"] * (n - half) + ["HL"] * half)
    if order == "random":
        labels = labels[rng.permutation(n)]
    elif order == "alternating":
        labels = np.array(["LH" if k % 2 == 0 else "HL" for k in range(n)])
    elif order == "hl_first":
        labels = labels[::-1]
    arrivals = poisson_arrivals(rng, n, rate)
    out = []
    for k, cls in enumerate(labels):
        (pl, ph), (ol, oh) = TABLE2_CLASSES[str(cls)]
        out.append(
            Request(
                f"{prefix}{k}",
                float(arrivals[k]),
                int(rng.integers(pl, ph + 1)),
                int(rng.integers(ol, oh + 1)),
                str(cls),
            )
        )
    return out


def build_table2(options: WorkloadOptions) -> Workload:
    n = options.num_requests or 3000
    rate = options.rate or TABLE2_DEFAULT_RATE
    order = options.order or "random"
    train = _table2_requests(2000, rate, "random", np.random.default_rng(424242), "train-")

    def sample(seed: int) -> list[Request]:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 2002]))
        return _table2_requests(n, rate, order, rng, "t2-")

    return Workload(
        name="table2",
        description=(
            f"SYNTHETIC paper Table 2 setting: {n} LH/HL requests ({order} order), Poisson {rate:g} req/s"
        ),
        synthetic=True,
        sample=sample,
        train=train,
        num_instances=2,
        profile="v100-llama2-7b-paper",
        info={"num_requests": n, "rate_rps": rate, "order": order, "classes": TABLE2_CLASSES},
    )


# ---------------------------------------------------------------------------------------------
# traces: Azure 2023 and canonical files
# ---------------------------------------------------------------------------------------------

AZURE_FILES = {"code": "AzureLLMInferenceTrace_code.csv", "conv": "AzureLLMInferenceTrace_conv.csv"}
"""The Azure LLM 2023 trace files under ``<data>/azure_llm_2023`` (service -> file), also the impact
estimator's."""


def _split_by_time(requests: Sequence[Request]) -> tuple[list[Request], list[Request]]:
    """Sorted by arrival, then cut at ``TRAIN_WINDOW_FRACTION`` of the time span: (training pool,
    held-out pool), disjoint. The training pool is empty only when every arrival is the same."""
    reqs = sorted(requests, key=lambda r: r.arrival_s)
    if not reqs:
        raise ValueError("empty trace")
    t0, t1 = reqs[0].arrival_s, reqs[-1].arrival_s
    cut = t0 + TRAIN_WINDOW_FRACTION * (t1 - t0)
    return [r for r in reqs if r.arrival_s < cut], [r for r in reqs if r.arrival_s >= cut]


def _rebase_and_scale(requests: Sequence[Request], rate: float | None) -> tuple[list[Request], float, float]:
    """Arrivals (sorted) rebased to 0 and multiplied so that the mean rate ``(n - 1) / span`` is
    ``rate`` req/s (``None``, or a zero span: unchanged). Returns (requests, natural rate, time scale)."""
    h0 = requests[0].arrival_s
    span = requests[-1].arrival_s - h0
    natural = (len(requests) - 1) / span if span > 0 else float("nan")
    scale = natural / rate if rate and span > 0 else 1.0
    return [replace(r, arrival_s=(r.arrival_s - h0) * scale) for r in requests], natural, scale


def split_and_scale(
    requests: Sequence[Request], *, rate: float | None, num_requests: int | None
) -> tuple[list[Request], list[Request], dict[str, object]]:
    """Time-window split (first ``TRAIN_WINDOW_FRACTION`` of the span trains) and time scaling.

    Held-out arrivals are rebased to 0 and multiplied so that their mean rate is ``rate`` req/s
    (``None``: unchanged); then the first ``num_requests`` are kept.
    """
    train, held = _split_by_time(requests)
    reqs = train + held
    train = train or reqs[:1]
    held, natural, scale = _rebase_and_scale(held or reqs, rate)
    if num_requests:
        held = held[:num_requests]
    info: dict[str, object] = {"natural_rate_rps": natural, "time_scale": scale, "train_requests": len(train)}
    return train, held, info


def fixed_trace_workload(
    name: str,
    what: str,
    requests: Sequence[Request],
    options: WorkloadOptions,
    *,
    num_instances: int,
    profile: str,
    synthetic: bool = False,
    info: dict[str, object] | None = None,
    row_sources: tuple[RowSource, ...] = (),
) -> Workload:
    """A workload replaying one fixed trace: split by time window (``split_and_scale``), the held-out
    part time-scaled to ``options.rate`` and cut to ``options.num_requests``; seeds change only the
    routers' randomness. ``what`` names the trace in the description; ``row_sources`` the warehouse
    rows it was read from."""
    train, held, split_info = split_and_scale(requests, rate=options.rate, num_requests=options.num_requests)
    rate = f", time-scaled to {options.rate:g} req/s" if options.rate else ""
    return Workload(
        name=name,
        description=f"{'SYNTHETIC ' if synthetic else ''}{what}: {len(held)} held-out requests after the "
        f"first {TRAIN_WINDOW_FRACTION:.0%} of its time span{rate}",
        synthetic=synthetic,
        sample=lambda seed: list(held),
        train=train,
        num_instances=options.num_instances or num_instances,
        profile=profile,
        seed_dependent=False,
        info={"num_requests": len(held), **(info or {}), **split_info},
        row_sources=row_sources,
    )


_WINDOW_STREAMS = {"held_out": 4001, "train": 4002}
"""Second word of each pool's ``SeedSequence([seed, stream])``: the two pools draw independently."""


def _seeded_window(
    pool: Sequence[Request], size: int, seed: int, stream: int, rate: float | None
) -> list[Request]:
    """``size`` consecutive requests of ``pool`` (sorted) from a seeded offset, rebased and scaled."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
    start = int(rng.integers(len(pool) - size + 1))
    return _rebase_and_scale(pool[start : start + size], rate)[0]


def windowed_trace_workload(
    name: str,
    what: str,
    requests: Sequence[Request],
    options: WorkloadOptions,
    *,
    num_instances: int,
    profile: str,
    synthetic: bool = False,
    info: dict[str, object] | None = None,
    row_sources: tuple[RowSource, ...] = (),
) -> Workload:
    """A workload of seeded windows of one trace, for RL training and evaluation over many seeds.

    The trace is split by time like ``split_and_scale`` (the first ``TRAIN_WINDOW_FRACTION`` of its
    span is the training pool, the rest the held-out pool; disjoint). ``sample(seed)`` is a window of
    ``options.num_requests`` consecutive held-out requests (by arrival) from an offset drawn from the
    seed, rebased to 0 and time-scaled so that the window's own mean rate is ``options.rate`` req/s
    (``None``: unchanged); ``sample_train(seed)`` the same over the training pool (its own random
    stream). A pool shorter than the window is used whole (listed in ``info["whole_pools"]``);
    ``options.num_requests = None`` means whole pools. ``train`` is the training pool as recorded.
    """
    train, held = _split_by_time(requests)
    if not train:
        raise ValueError(f"{what}: every request arrives at the same time; no time span to split")
    n = options.num_requests
    sizes = {"held_out": min(n or len(held), len(held)), "train": min(n or len(train), len(train))}
    whole = [pool for pool, size in (("held_out", len(held)), ("train", len(train))) if n and size < n]
    rate = options.rate

    def sample(seed: int) -> list[Request]:
        return _seeded_window(held, sizes["held_out"], seed, _WINDOW_STREAMS["held_out"], rate)

    def sample_train(seed: int) -> list[Request]:
        return _seeded_window(train, sizes["train"], seed, _WINDOW_STREAMS["train"], rate)

    scaled = f", time-scaled to {rate:g} req/s" if rate else ""
    return Workload(
        name=name,
        description=f"{'SYNTHETIC ' if synthetic else ''}{what}: seeded windows of {sizes['held_out']} "
        f"consecutive held-out requests (of {len(held)} after the first {TRAIN_WINDOW_FRACTION:.0%} of its "
        f"time span){scaled}",
        synthetic=synthetic,
        sample=sample,
        train=train,
        num_instances=options.num_instances or num_instances,
        profile=profile,
        seed_dependent=sizes["held_out"] < len(held),
        info={
            "num_requests": sizes["held_out"],
            "train_window_requests": sizes["train"],
            **(info or {}),
            "held_out_pool_requests": len(held),
            "train_requests": len(train),
            "whole_pools": whole,
        },
        sample_train=sample_train,
        row_sources=row_sources,
    )


def build_azure(options: WorkloadOptions) -> Workload:
    data = options.data_dir or shared_data_dir()
    folder = data / "azure_llm_2023"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: the azure workload needs the Azure LLM 2023 traces")
    rate = options.rate or 12.0
    n = options.num_requests or 4000
    from training.workloads.sources import scratch_warehouse, trace_requests  # imported when read

    files = [folder / f for f in AZURE_FILES.values()]
    merged, report = trace_requests(files, "azure", max_output_tokens=MAX_OUTPUT_TOKENS)
    return fixed_trace_workload(
        "azure",
        "Azure LLM 2023 code+conv merged",
        merged,
        replace(options, rate=rate, num_requests=n),
        num_instances=4,
        profile="a100-llama3-8b",
        info={"rate_rps": rate, "rows_read": report.rows_read, "quarantined": report.quarantined},
        row_sources=(RowSource(scratch_warehouse(files, "azure")[0]),),
    )


def trace_workload(
    path: Path,
    fmt: str = "auto",
    options: WorkloadOptions | None = None,
    *,
    num_instances: int = 4,
    profile: str = "v100-llama2-7b-paper",
) -> Workload:
    """A workload replaying a trace file in any warehouse format (``--trace FILE --format F``).

    The file is read by the warehouse's own reader (``sources.trace_requests``), so malformed
    rows are quarantined with their reason and reported in ``info``, never silently dropped.
    """
    options = options or WorkloadOptions()
    from training.workloads.sources import scratch_warehouse, trace_requests

    requests, report = trace_requests([path], fmt, max_output_tokens=MAX_OUTPUT_TOKENS)
    return fixed_trace_workload(
        f"trace:{path.name}",
        f"trace {path.name} ({fmt})",
        requests,
        options,
        num_instances=num_instances,
        profile=profile,
        info={"rows_read": report.rows_read, "quarantined": report.quarantined},
        row_sources=(RowSource(scratch_warehouse([path], fmt)[0]),),
    )


def warehouse_workload(
    warehouse: str | Path | None,
    where: str,
    options: WorkloadOptions | None = None,
    *,
    num_instances: int = 4,
    profile: str = "v100-llama2-7b-paper",
    synthetic: bool = False,
    windows: bool = False,
) -> Workload:
    """A workload replaying requests of the published warehouse (``marts.requests`` rows matching
    ``where``, e.g. ``format = 'azure'``): the first ``TRAIN_WINDOW_FRACTION`` of their time span
    fits the predictor, the rest is replayed (time-scaled to ``options.rate`` when given).

    ``windows=False``: one fixed held-out slice (``fixed_trace_workload``); ``True``: seeded windows of
    both pools (``windowed_trace_workload``, what the RL router trains and is evaluated on)."""
    from training.workloads.sources import warehouse_requests
    from warehouse.store import resolve_path

    options = options or WorkloadOptions()
    requests = warehouse_requests(warehouse, where=where, max_output_tokens=MAX_OUTPUT_TOKENS)
    build = windowed_trace_workload if windows else fixed_trace_workload
    return build(
        "warehouse",
        f"warehouse requests where {where}",
        requests,
        options,
        num_instances=num_instances,
        profile=profile,
        synthetic=synthetic,
        info={"where": where},
        row_sources=(RowSource(resolve_path(warehouse), where),),
    )


register_workload("main", build_main)
register_workload("table2", build_table2)
register_workload("azure", build_azure)
register_workload("prefix", build_prefix)
