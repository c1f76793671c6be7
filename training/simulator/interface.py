"""The simulator's interface to what plugs into it: the Router protocol with the frozen views a router
decides on, and the LengthPredictor protocol.

Who calls this: the simulator, once per routing decision (``Router.route``: when a request arrives at
the router and, if the router chose ``DELAY``, again at every decision tick until it is routed; after
a ``Hold``, only at the ticks where some instance has the room it asked for) and
once per replay (``LengthPredictor.predict_output_tokens``). Routers (``training.routing``), length
predictors (``training.length``) and the RL env (``training.rl``) implement or read these; the
simulator imports nothing of them.

Routers never see live simulator objects, only these frozen views, with the names and units of the
engine metrics a production router scrapes (vLLM ``num_requests_running`` / ``num_requests_waiting`` /
``kv_cache_usage_perc``) plus what the router itself knows (what it sent where, and the predicted
output lengths of those requests).

A router never sees a request's true output length; it sees ``predicted_output_tokens`` (and, from a
predictor that gives them, ``predicted_bucket_probs`` over ``predicted_bucket_edges``) from the
injected length predictor. Only routers registered with ``oracle=True``, or replays configured with
the oracle predictor, see true lengths, and reports label them as such.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, overload, runtime_checkable

import numpy as np

from training.simulator.request import Request

DELAY = -1
"""Returned by ``Router.route`` to hold the request at the router until the next decision tick."""


class Hold(int):
    """``DELAY`` with a promise, so that the replay need not re-offer a request that cannot be placed.

    ``Hold(room_blocks) == DELAY`` (it is the int -1), so anything that reads it as DELAY (the
    contract tests, the eval harness, an older driver) is right; the replay recognises it by type.
    Returning ``Hold(room_blocks)`` for a request promises: whenever no instance is ``accepting`` and
    either empty (``num_requests == 0``) or with ``kv_total_blocks - committed >= room_blocks``, where
    ``committed = kv_used_blocks + ceil(outstanding_prompt_tokens / block_size)`` (``block_size``: the
    replay's ``InstanceConfig.block_size``), this router answers DELAY (or a ``Hold``) for this
    request and changes no state of its own. Nothing else it reads may turn its answer (not
    ``now_s``, ``waited_s``, ``router_queue_len``, prefix hits, other requests).

    The admission rule (``training.routing.admission_rule.can_start``) is exactly of this form, so the
    ``+hold`` routers answer ``Hold(room_needed(...))`` when no instance can start the request. The
    replay then offers a held request at a decision tick only when some instance has that room, and
    skips the ticks where none has (it wakes on the finish, KV release or admission that makes
    room), with the results of offering every held request at every tick (``engine.ReplayState``;
    tests/training/simulator/test_engine_hold.py).

    Attributes:
        room_blocks: KV blocks an instance must have free beyond its committed ones (may be
            fractional: a headroom is a fraction of the cache).
    """

    room_blocks: float

    def __new__(cls, room_blocks: float) -> Hold:
        self = super().__new__(cls, DELAY)
        self.room_blocks = float(room_blocks)
        return self

    def __repr__(self) -> str:
        return f"Hold({self.room_blocks!r})"


@dataclass(frozen=True, slots=True)
class RequestView:
    """What a router knows about the request it must place.

    Units: tokens and seconds of simulated time.
    """

    request_id: str
    arrival_s: float
    now_s: float
    prompt_tokens: int
    task: str
    predicted_output_tokens: float
    prefix_hash_ids: tuple[int, ...] | None = None
    predicted_bucket_probs: tuple[float, ...] | None = None
    """The predictor's probability of each output-length bucket (sum 1), or ``None`` when it gives
    only an expected length (task mean, oracle)."""
    predicted_bucket_edges: tuple[float, ...] | None = None
    """Upper bucket edges in tokens (``len(probs) - 1``; bucket ``i`` holds ``edges[i-1] < n <=
    edges[i]``, the last is open); ``None`` with the probabilities."""

    @property
    def waited_s(self) -> float:
        """Seconds this request has been held at the router so far."""
        return self.now_s - self.arrival_s


StatsEntry = tuple[int, float, int, bool]
"""One request's ``(prompt_tokens, predicted_output_tokens, generated_tokens, decoding)``."""


class BatchStats:
    """The running batch of one instance as arrays, for one batch composition (issue 16).

    Made by the simulator (``Instance.request_stats``) when the batch's members, their phases or
    their token counts change other than by decoding; shared, unchanged, by every view until then.
    Between two such changes every decoding request generates one token per decode iteration, so
    request ``i`` has generated ``base[i] + tick * decoding[i]`` tokens at the instance's decode tick
    ``tick`` (``RequestStats.tick``). Arrays of shape (n,), read-only, in batch (admission) order:

    - ``prompt``: prompt tokens (float64);
    - ``pred``: predicted output tokens (float64; the replay's predictions are multiples of 1/1024
      token, so ``pred - generated`` is exact);
    - ``base``: generated tokens at tick 0 (float64; may be negative for a decoding request);
    - ``decoding``: the request is decoding (bool), else prefilling.

    A consumer may cache what it derives from the object by identity (``SnapshotBuilder`` does).
    """

    __slots__ = ("base", "decoding", "pred", "prompt")

    def __init__(self, prompt: np.ndarray, pred: np.ndarray, base: np.ndarray, decoding: np.ndarray) -> None:
        for a in (prompt, pred, base, decoding):
            a.flags.writeable = False
        self.prompt = prompt
        self.pred = pred
        self.base = base
        self.decoding = decoding

    def __len__(self) -> int:
        return len(self.prompt)


class RequestStats(Sequence[StatsEntry]):
    """``InstanceView.request_stats``: the per-request stats of one instance (waiting, preempted, then
    running), as a read-only sequence of ``StatsEntry`` tuples, kept by the simulator in two parts:

    - ``queue``: the waiting then preempted requests' entries, a tuple kept (the same object) until
      the queue changes;
    - ``batch`` and ``tick``: the running batch (``BatchStats``) and the instance's decode tick, so
      that a consumer can derive the batch's progress with a few array operations and cache the rest
      per ``batch`` object instead of reading one tuple per request.

    Indexing, iteration, ``len`` and ``==`` behave as on the tuple of entries (built on first use and
    cached; ints for token counts, as before issue 16). Who makes it: ``Instance.request_stats``;
    who reads it: ``training.rl.observation.SnapshotBuilder`` (through the arrays) and tests.
    """

    __slots__ = ("_entries", "batch", "queue", "tick")

    def __init__(self, queue: tuple[StatsEntry, ...], batch: BatchStats, tick: int) -> None:
        self.queue = queue
        self.batch = batch
        self.tick = tick
        self._entries: tuple[StatsEntry, ...] | None = None

    def generated(self) -> np.ndarray:
        """Generated tokens of the running batch's requests now (float64, batch order)."""
        b = self.batch
        return b.base + self.tick * b.decoding

    @property
    def entries(self) -> tuple[StatsEntry, ...]:
        """All entries as one tuple (queue, then running batch)."""
        e = self._entries
        if e is None:
            b = self.batch
            run = zip(
                map(int, b.prompt.tolist()),
                b.pred.tolist(),
                map(int, self.generated().tolist()),
                b.decoding.tolist(),
                strict=True,
            )
            e = self._entries = self.queue + tuple(run)
        return e

    def __len__(self) -> int:
        return len(self.queue) + len(self.batch)

    @overload
    def __getitem__(self, i: int) -> StatsEntry: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[StatsEntry, ...]: ...
    def __getitem__(self, i: int | slice) -> StatsEntry | tuple[StatsEntry, ...]:
        return self.entries[i]

    def __iter__(self) -> Iterator[StatsEntry]:
        return iter(self.entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RequestStats):
            return self.entries == other.entries
        if isinstance(other, tuple):
            return self.entries == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.entries)

    def __repr__(self) -> str:
        return f"RequestStats({self.entries!r})"


@dataclass(frozen=True, slots=True)
class InstanceView:
    """One instance as a router sees it at decision time.

    Attributes:
        index: the instance's position (the value ``route`` returns to pick it).
        num_running: requests in the running batch (prefilling or decoding).
        num_waiting: requests queued at the instance (including preempted ones).
        kv_used_blocks / kv_total_blocks: KV-cache blocks in use / capacity.
        outstanding_prompt_tokens: prompt tokens not yet prefilled, over waiting and running requests.
        outstanding_decode_tokens: predicted decode tokens still to generate (predicted output minus
            tokens generated so far, floored at 0), over waiting and running requests.
        num_prefill_requests: requests routed here whose prefill has not finished.
        num_decode_requests: requests routed here that are decoding.
        cached_prefix_blocks: how many of the *current request's* leading prefix blocks are in this
            instance's prefix cache (0 when the request carries no prefix ids), as a cache-aware
            router (SGLang, llm-d prefix scorer) approximates by its own index.
        accepting: False when the instance's queue is at its configured limit; a router must then not
            pick it.
        request_stats: only when the replay's ``ClusterConfig.request_stats`` is set (the RL env):
            one ``(prompt_tokens, predicted_output_tokens, generated_tokens, decoding)`` tuple per
            request on the instance (waiting, preempted, then running), what a proxying router knows
            from its own bookkeeping and the tokens it streamed back. ``None`` otherwise. The
            simulator gives a ``RequestStats`` (a sequence of those tuples that also exposes the
            running batch as arrays); views built elsewhere (tests, a serving router) may give a
            plain tuple of tuples.
    """

    index: int
    num_running: int
    num_waiting: int
    kv_used_blocks: int
    kv_total_blocks: int
    outstanding_prompt_tokens: int
    outstanding_decode_tokens: float
    num_prefill_requests: int
    num_decode_requests: int
    cached_prefix_blocks: int = 0
    accepting: bool = True
    request_stats: RequestStats | tuple[StatsEntry, ...] | None = None

    @property
    def kv_usage(self) -> float:
        """Fraction of KV-cache blocks in use, in [0, 1] (vLLM ``kv_cache_usage_perc``)."""
        return self.kv_used_blocks / self.kv_total_blocks if self.kv_total_blocks else 0.0

    @property
    def num_requests(self) -> int:
        """Running plus waiting requests."""
        return self.num_running + self.num_waiting


@dataclass(frozen=True, slots=True)
class ClusterView:
    """All instances at decision time, plus the router's own queue."""

    now_s: float
    instances: tuple[InstanceView, ...]
    router_queue_len: int = 0

    @property
    def accepting(self) -> tuple[int, ...]:
        """Indices of instances that may be picked now."""
        return tuple(v.index for v in self.instances if v.accepting)


@runtime_checkable
class Router(Protocol):
    """Places requests on instances.

    ``reset`` is called once before a replay with the number of instances and a seed (the router's
    only source of randomness: derive ``numpy.random.Generator``s from it). ``route`` returns an
    instance index in ``cluster.accepting`` or ``DELAY``; it may keep internal state (e.g. a round
    robin pointer) but must be deterministic given the seed and the sequence of calls.
    """

    name: str

    def reset(self, num_instances: int, seed: int) -> None: ...

    def route(self, request: RequestView, cluster: ClusterView) -> int: ...


@dataclass(frozen=True)
class LengthPrediction:
    """What a length predictor gives for a list of requests.

    Attributes:
        expected_tokens: expected output length per request, tokens, shape (n,).
        bucket_probs: probability of each output-length bucket per request, shape (n, k), rows
            summing to 1; ``None`` for predictors that give a length only (task mean, oracle).
        bucket_edges: the k - 1 upper bucket edges in tokens (bucket ``i`` holds ``edges[i-1] < n <=
            edges[i]``, the last is open); ``None`` exactly when ``bucket_probs`` is.
    """

    expected_tokens: np.ndarray
    bucket_probs: np.ndarray | None = None
    bucket_edges: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.expected_tokens)
        if (self.bucket_probs is None) != (self.bucket_edges is None):
            raise ValueError("bucket_probs and bucket_edges come together (both or neither)")
        if self.bucket_probs is not None and self.bucket_edges is not None:
            k = len(self.bucket_edges) + 1
            if self.bucket_probs.shape != (n, k):
                raise ValueError(
                    f"bucket_probs has shape {self.bucket_probs.shape}, expected ({n}, {k}) for "
                    f"{len(self.bucket_edges)} edges"
                )


@runtime_checkable
class LengthPredictor(Protocol):
    """Maps requests to predicted output lengths in tokens (float, > 0).

    The replay asks once per replay, before the first routing decision (``predict_lengths`` below):
    length-aware routers and the LWL / BINPACK queue policies read these predictions, never the true
    lengths. ``is_oracle``: the predictor reads true lengths (an upper bound; reports say so). The
    kinds: ``training.length.baselines`` (oracle, task mean), ``training.length.predictor`` (the
    trained model in this process) and ``training.length.stored`` (the trained model's predictions
    stored in the warehouse). A predictor that also gives bucket probabilities has a
    ``predict_lengths(requests) -> LengthPrediction`` method; ``predict_output_tokens`` must return
    the same expected lengths.
    """

    name: str
    is_oracle: bool

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray: ...


def predict_lengths(predictor: LengthPredictor, requests: Sequence[Request]) -> LengthPrediction:
    """The predictor's ``predict_lengths`` when it has one, else its expected lengths with no bucket
    probabilities. Who calls this: the replay, once per replay; the evaluation harness, once per
    held-out trace."""
    method = getattr(predictor, "predict_lengths", None)
    if method is not None:
        out = method(requests)
        if not isinstance(out, LengthPrediction):
            raise TypeError(f"{type(predictor).__name__}.predict_lengths returned {type(out).__name__}")
        return out
    return LengthPrediction(np.asarray(predictor.predict_output_tokens(requests), dtype=np.float64))
