"""The router's serving code: snapshot schema (``ObsSpec``), THE observation encoder, the numpy policy
(``PolicyNet``), the tuned rules (``RulePolicy``) and their one MLflow pyfunc (``RouterPolicyModel``).

SELF-CONTAINED: imports numpy and pandas only (``mlflow`` lazily, for ``RouterPolicyModel``), nothing
from this project, so a serving-side router can load the registered model with only the model's own
dependencies: the registry logs a copy of this file as the ``llm-router`` model's code (MLflow
models from code), so a registered model never imports it by its path in the project. The RL env
(``training.rl.env``) imports ``encode_observation`` / ``action_mask`` from here, so training and
serving share one encoder, not two copies.

Who calls this: the env once per routing decision (``encode_observation``), the router adapter
(``training.rl.router``) once per routing decision (``PolicyNet.act`` / ``RulePolicy.act``), and
MLflow's pyfunc ``predict`` once per batch of routing decisions (``RouterPolicyModel``).

The snapshot (one routing decision; Jain et al., arXiv 2408.13510, Section 5: the paper's state)
----------------------------------------------------------------------------------------------------
One row per decision of flattened columns (``snapshot_columns(spec)`` gives the exact ordered list for
a policy; ``m`` = instances, ``a`` / ``b`` = prompt / decode bucket). The registered model's input is a
float64 tensor ``(n, len(snapshot_columns(spec)))``: the columns below in that order (MLflow checks a
tensor's dtype and shape in ~0.05 ms, 140 named columns in ~5 ms); the MLmodel's
``metadata.snapshot_columns`` names them, and its input example is a real row. Versions registered
before issue 15 take the same columns as a named ``pandas.DataFrame`` (their own copy of this code):

| column | unit | meaning |
|---|---|---|
| ``prompt_tokens`` | tokens | the request's prompt length |
| ``predicted_output_tokens`` | tokens | the length predictor's expected output length (never the true one) |
| ``router_queue_len`` | requests | other requests held at the router |
| ``waited_s`` | s | how long this request has been held at the router |
| ``predicted_p_bucket_{j}`` | probability | the predictor's probability of length bucket ``j`` (*) |
| ``i{k}_accepting`` | 0/1 | instance ``k`` may take a request now |
| ``i{k}_num_running`` / ``i{k}_num_waiting`` | requests | vLLM ``num_requests_running`` / ``_waiting`` |
| ``i{k}_kv_used_blocks`` / ``i{k}_kv_total_blocks`` | blocks | KV cache in use / capacity |
| ``i{k}_outstanding_prompt_tokens`` | tokens | prompt tokens not yet prefilled |
| ``i{k}_outstanding_decode_tokens`` | tokens | predicted decode tokens still to generate |
| ``i{k}_prefill_p{a}_d{b}`` | requests | not decoding yet (waiting, prefilling), buckets a, b |
| ``i{k}_decode_p{a}_d{b}`` | requests | decoding requests, same buckets |
| ``i{k}_earliest_completion_s`` | s | estimated time until the instance's earliest completion |
| ``i{k}_completion_s`` | s | ADDITION (not in the paper): predicted E2E of the request on ``k`` |
| ``i{k}_mixing_penalty_s`` | s | ADDITION: the paper's mixing penalty (alpha = 0.5) of placing it on ``k`` |

(*) Only for policies whose ``spec.predicted_bucket_edges`` is set: bucket ``j`` of those edges
(tokens, upper edges inclusive), the length predictor's full distribution (issue 15).

Buckets: prompt bucket ``a`` = number of ``spec.prompt_edges`` <= prompt tokens, decode bucket ``b``
likewise over ``spec.decode_edges`` and the *predicted* output tokens. The last three per-instance
columns need the latency model / impact estimator; the env computes them with the project's, a
production router with the registered impact estimator.

Output: one int per row, the instance index, or ``-1`` (DELAY: hold the request at the router until
the next decision tick). A network policy and a rule policy (``RulePolicy``: the registry's
``workload_impact_greedy`` / ``least_tokens``, with or without ``+hold``, its latency model an artifact
of the version) read the same input and answer the same way: a consumer need not know which one
serves (the version's ``loadwise.policy`` tag says).

The observation (``encode_observation``; float32, every entry clipped to [0, ``OBS_HIGH``])
---------------------------------------------------------------------------------------------
``[mask (m + 1) | request (Bp + Bd + 4 + K) | per instance k: features (10 + 2 Bp Bd)]``: the action
mask first (accepting flags, then "DELAY allowed"), so a Q-network can mask invalid actions from the
observation alone; then the request's bucket one-hots and squashed sizes, then the length
predictor's K bucket probabilities (``spec.predicted_bucket_edges``; K = 0 for policies that read
none; a predictor that gives only a length puts all the probability on its bucket); then per instance the
squashed counts, KV usage and free fraction, time estimates, the predicted completion and mixing
penalty relative to the best accepting instance (``(x - min) / TIME_SCALE_S``: entries
``PRIOR_FEATURES`` of the instance block, what the ``slots`` policy's heuristic prior reads), and
the bucket histograms. ``squash(x, s) = log1p(x / s)``.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TIME_SCALE_S = 10.0
"""Relative time features (seconds above the best accepting instance) are divided by this."""

OBS_HIGH = 10.0
"""Upper bound of every observation entry (entries are non-negative and clipped here)."""

DELAY_OUTPUT = -1
"""What ``predict`` returns for DELAY (the simulator's ``DELAY``)."""

INSTANCE_FIELDS = (
    "accepting",
    "num_running",
    "num_waiting",
    "kv_used_blocks",
    "kv_total_blocks",
    "outstanding_prompt_tokens",
    "outstanding_decode_tokens",
    "earliest_completion_s",
    "completion_s",
    "mixing_penalty_s",
)
"""Per-instance scalar columns of the snapshot, in order (``i{k}_<field>``)."""

REQUEST_FIELDS = ("prompt_tokens", "predicted_output_tokens", "router_queue_len", "waited_s")
"""Request-level columns of the snapshot, in order."""

PRIOR_FEATURES = (9, 10)
"""Positions, within one instance's block of the observation, of the relative completion time and
the relative mixing penalty (the heuristic prior ``-beta x (d_completion + w x d_penalty)``)."""

WEIGHTS_FILE = "policy_weights.npz"
SPEC_FILE = "obs_spec.json"
RULE_FILE = "rule_policy.json"
"""A rule policy's parameters (``RulePolicy``); its presence makes a policy folder a rule's."""
RULE_FORMAT = "loadwise-rule-policy"


@dataclass(frozen=True)
class ObsSpec:
    """How snapshots become observations (saved with every policy as ``obs_spec.json``).

    Attributes:
        num_instances: m; the action space is m instances + DELAY.
        prompt_edges: prompt-token bucket edges (paper: prefill-light vs heavy; 1,500 tokens ~ 0.5 s
            of prefill on the paper's V100).
        decode_edges: predicted-output-token bucket edges (250 tokens ~ the paper's 5 s heavy decode).
        queue_cap: the router queue length is capped here before scaling (the paper caps it).
        allow_delay: whether DELAY is an action at all (off by default: docs/rl_router.md).
        max_delay_s: DELAY is masked once a request has waited this long (so no policy can hold a
            request forever).
        hold_kv_headroom: admission control (``startable``): only instances that can start the
            request now with this fraction of their KV cache to spare are valid actions, and while
            none can, DELAY is the only one (the env then skips the decision). ``None`` = off.
        block_size: KV block size in tokens (turns the prompt into blocks for ``startable``).
        predicted_bucket_edges: the length predictor's output-length bucket edges (tokens) whose
            probabilities the policy reads (request features ``predicted_p_bucket_{j}``, the
            predictor's full distribution, not only its expected length); ``None`` = not read
            (every policy exported before issue 15: their observations are unchanged).
    """

    num_instances: int
    prompt_edges: tuple[float, ...] = (256.0, 1500.0)
    decode_edges: tuple[float, ...] = (128.0, 256.0, 512.0)
    queue_cap: int = 64
    allow_delay: bool = False
    max_delay_s: float = 0.5
    hold_kv_headroom: float | None = None
    block_size: int = 16
    predicted_bucket_edges: tuple[float, ...] | None = None

    def check_block_size(self, block_size: int) -> None:
        """Raise ``ValueError`` when admission control is on and the cluster's KV blocks are not the
        ``block_size`` the policy counts the prompt in."""
        if self.hold_kv_headroom is not None and self.block_size != block_size:
            raise ValueError(
                f"spec.block_size {self.block_size} != the cluster's {block_size} "
                "(admission control counts the prompt in KV blocks)"
            )

    @cached_property
    def n_prompt_buckets(self) -> int:
        return len(self.prompt_edges) + 1

    @cached_property
    def n_decode_buckets(self) -> int:
        return len(self.decode_edges) + 1

    @cached_property
    def n_actions(self) -> int:
        return self.num_instances + 1

    @cached_property
    def per_instance_dim(self) -> int:
        return 11 + 2 * self.n_prompt_buckets * self.n_decode_buckets

    @cached_property
    def n_length_buckets(self) -> int:
        """Bucket probabilities of the length predictor in the request features (0: none read)."""
        return 0 if self.predicted_bucket_edges is None else len(self.predicted_bucket_edges) + 1

    @cached_property
    def request_dim(self) -> int:
        return self.n_prompt_buckets + self.n_decode_buckets + 4 + self.n_length_buckets

    @cached_property
    def obs_dim(self) -> int:
        return self.n_actions + self.request_dim + self.num_instances * self.per_instance_dim

    @property
    def slot_dim(self) -> int:
        """Input width of the ``slots`` architecture's shared scorer (``slot_inputs``)."""
        return self.request_dim + 2 * self.per_instance_dim + 1

    def to_json(self) -> str:
        d = asdict(self)
        if d["predicted_bucket_edges"] is None:  # a spec without it writes what it did before
            del d["predicted_bucket_edges"]
        return json.dumps(d, indent=2)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ObsSpec:
        d = dict(d)
        d["prompt_edges"] = tuple(float(x) for x in d["prompt_edges"])
        d["decode_edges"] = tuple(float(x) for x in d["decode_edges"])
        if d.get("predicted_bucket_edges") is not None:
            d["predicted_bucket_edges"] = tuple(float(x) for x in d["predicted_bucket_edges"])
        return cls(**d)


@dataclass
class RouterSnapshot:
    """One routing decision as numbers (the parsed form of one snapshot row).

    ``instances``: shape (m, len(INSTANCE_FIELDS)), columns in ``INSTANCE_FIELDS`` order.
    ``prefill_hist`` / ``decode_hist``: shape (m, Bp, Bd) request counts.
    ``predicted_bucket_probs``: shape (k,), the length predictor's bucket probabilities over
    ``spec.predicted_bucket_edges`` (``None`` when the spec reads none).
    """

    prompt_tokens: float
    predicted_output_tokens: float
    router_queue_len: float
    waited_s: float
    instances: np.ndarray
    prefill_hist: np.ndarray
    decode_hist: np.ndarray
    extra: dict[str, float] = field(default_factory=dict)
    predicted_bucket_probs: np.ndarray | None = None


def snapshot_columns(spec: ObsSpec) -> list[str]:
    """The ordered snapshot columns for ``spec`` (what ``RouterPolicyModel.predict`` reads)."""
    cols = list(REQUEST_FIELDS) + length_bucket_columns(spec)
    for k in range(spec.num_instances):
        cols += [f"i{k}_{f}" for f in INSTANCE_FIELDS]
        for phase in ("prefill", "decode"):
            cols += [
                f"i{k}_{phase}_p{a}_d{b}"
                for a in range(spec.n_prompt_buckets)
                for b in range(spec.n_decode_buckets)
            ]
    return cols


def length_bucket_columns(spec: ObsSpec) -> list[str]:
    """``predicted_p_bucket_{j}``, one per length bucket the spec reads (none without edges)."""
    return [f"predicted_p_bucket_{j}" for j in range(spec.n_length_buckets)]


def length_bucket_probs(
    spec: ObsSpec,
    predicted_output_tokens: float,
    probs: Sequence[float] | None = None,
    edges: Sequence[float] | None = None,
) -> np.ndarray | None:
    """The bucket probabilities a policy with ``spec`` reads for one request: the predictor's
    (``probs`` over ``edges``), or, from a predictor that gives only a length (task mean, oracle),
    all the probability on the bucket of ``predicted_output_tokens`` (upper edges inclusive, as the
    predictor's buckets). ``None`` when the spec reads none. Raises ``ValueError`` when the
    predictor's edges are not the spec's (a policy trained on other buckets)."""
    want = spec.predicted_bucket_edges
    if want is None:
        return None
    if probs is None:
        out = np.zeros(len(want) + 1)
        out[
            int(np.searchsorted(np.asarray(want, dtype=np.float64), predicted_output_tokens, side="left"))
        ] = 1.0
        return out
    if edges is None or tuple(float(e) for e in edges) != tuple(want):
        raise ValueError(
            f"the policy reads length-bucket probabilities over edges {list(want)}, the predictor gives "
            f"them over {None if edges is None else list(edges)}: replay it with a predictor of the same "
            "buckets (or retrain it with RouterTrainConfig.predicted_bucket_edges)"
        )
    return np.asarray(probs, dtype=np.float64)


def snapshot_to_row(snap: RouterSnapshot) -> list[float]:
    """The snapshot as one row of values in ``snapshot_columns`` order."""
    row = [snap.prompt_tokens, snap.predicted_output_tokens, snap.router_queue_len, snap.waited_s]
    if snap.predicted_bucket_probs is not None:
        row += np.asarray(snap.predicted_bucket_probs, dtype=np.float64).tolist()
    m = snap.instances.shape[0]
    for k in range(m):
        row += snap.instances[k].tolist()
        row += snap.prefill_hist[k].ravel().tolist()
        row += snap.decode_hist[k].ravel().tolist()
    return [float(x) for x in row]


def snapshot_from_row(row: np.ndarray, spec: ObsSpec) -> RouterSnapshot:
    """Inverse of ``snapshot_to_row`` (values in ``snapshot_columns`` order)."""
    m, nf = spec.num_instances, len(INSTANCE_FIELDS)
    bp, bd = spec.n_prompt_buckets, spec.n_decode_buckets
    per = nf + 2 * bp * bd
    head, nk = len(REQUEST_FIELDS), spec.n_length_buckets
    body = np.asarray(row[head + nk :], dtype=np.float64).reshape(m, per)
    probs = np.asarray(row[head : head + nk], dtype=np.float64) if nk else None
    return RouterSnapshot(
        prompt_tokens=float(row[0]),
        predicted_output_tokens=float(row[1]),
        router_queue_len=float(row[2]),
        waited_s=float(row[3]),
        instances=body[:, :nf],
        prefill_hist=body[:, nf : nf + bp * bd].reshape(m, bp, bd),
        decode_hist=body[:, nf + bp * bd :].reshape(m, bp, bd),
        predicted_bucket_probs=probs,
    )


def startable(snap: RouterSnapshot, spec: ObsSpec) -> np.ndarray:
    """Instances (bool, m) that can take the request now under admission control: accepting, and
    empty or with ``ceil(prompt / block_size) + hold_kv_headroom x total`` KV blocks free once the
    prompts already sent there have theirs. The same rule as ``training.routing.estimates.can_start``
    (kept here so that serving imports nothing from the project; a test checks that the two agree).
    All accepting ones when ``spec.hold_kv_headroom`` is None.
    """
    inst = snap.instances
    accepting = inst[:, 0] > 0.5
    if spec.hold_kv_headroom is None:
        return accepting
    running, waiting, used, total, queued = (
        inst[:, INSTANCE_FIELDS.index(f)]
        for f in (
            "num_running",
            "num_waiting",
            "kv_used_blocks",
            "kv_total_blocks",
            "outstanding_prompt_tokens",
        )
    )
    free = total - used - np.ceil(queued / spec.block_size)
    need = np.ceil(snap.prompt_tokens / spec.block_size) + spec.hold_kv_headroom * total
    return accepting & ((running + waiting == 0) | (free >= need))


def action_mask(snap: RouterSnapshot, spec: ObsSpec) -> np.ndarray:
    """Valid actions (bool, length m + 1): accepting (``startable``, under admission control)
    instances, then DELAY.

    DELAY is valid when ``spec.allow_delay`` and the request has waited less than
    ``spec.max_delay_s``, and always when no instance is valid (then it is the only action).
    """
    accepting = startable(snap, spec)
    delay = (spec.allow_delay and snap.waited_s < spec.max_delay_s) or not np.logical_or.reduce(accepting)
    out = np.empty(len(accepting) + 1, dtype=bool)
    out[:-1] = accepting
    out[-1] = delay
    return out


def _squash(x: np.ndarray | float, scale: float | np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(np.asarray(x, dtype=np.float64), 0.0) / scale)


_SQUASHED_FIELDS = (1, 2, 5, 6, 7, 8, 9)
"""``INSTANCE_FIELDS`` positions squashed into the observation (running, waiting, outstanding prompt /
decode tokens, earliest completion, completion, penalty), in their order in an instance's block."""
_SQUASH_SCALES = (16.0, 16.0, 1024.0, 4096.0, 1.0, 10.0, 10.0)
"""Their ``squash`` scales (requests, tokens or seconds, as the field); histograms: 4 (prefill), 8."""


_FIELD_INDEX = np.array(_SQUASHED_FIELDS, dtype=np.intp)


@lru_cache(maxsize=16)
def _squash_scales(m: int, cells: int) -> np.ndarray:
    """Scales of every squashed input of one observation: per instance the fields, then ``cells``
    prefill-histogram and ``cells`` decode-histogram counts; last the request's prompt and predicted
    output tokens (read-only; cached per shape)."""
    per = _SQUASH_SCALES + (4.0,) * cells + (8.0,) * cells
    out = np.array(per * m + (256.0, 256.0), dtype=np.float64)
    out.flags.writeable = False
    return out


def encode_observation(snap: RouterSnapshot, spec: ObsSpec, mask: np.ndarray | None = None) -> np.ndarray:
    """THE observation encoder (env and serving): snapshot -> float32 vector of ``spec.obs_dim``.

    ``mask``: ``action_mask(snap, spec)`` when the caller has it already (the env computes it for
    ``action_masks``), else computed here; the same vector either way.

    Layout and scales are in the module docstring; every entry is in [0, ``OBS_HIGH``]. Called once
    per routing decision, so it writes into one preallocated vector and squashes every input (all
    instances' and the request's) in one call: about 30 numpy calls whatever m is (issue 16),
    elementwise the same operations as one call per feature (``tests/training/rl/
    test_observation.py`` holds the output bit-equal to that reference).
    """
    m = spec.num_instances
    inst = snap.instances
    if inst.shape[0] != m:
        raise ValueError(f"snapshot has {inst.shape[0]} instances, the policy expects {m}")
    n_act, bp, bd, nk = spec.n_actions, spec.n_prompt_buckets, spec.n_decode_buckets, spec.n_length_buckets
    cells, nf = bp * bd, len(_SQUASHED_FIELDS)
    out = np.zeros(spec.obs_dim)
    out[:n_act] = action_mask(snap, spec) if mask is None else mask
    # request: bucket one-hots, squashed sizes, queue and wait fractions, length-bucket probabilities
    r = n_act
    out[r + bisect_right(spec.prompt_edges, snap.prompt_tokens)] = 1.0
    out[r + bp + bisect_right(spec.decode_edges, snap.predicted_output_tokens)] = 1.0
    r += bp + bd
    # every squashed input (per instance, then the request's two sizes), squashed in one call
    width = nf + 2 * cells
    raw = np.empty(m * width + 2)
    grid = raw[: m * width].reshape(m, width)
    grid[:, :nf] = inst[:, _FIELD_INDEX]
    grid[:, nf : nf + cells] = snap.prefill_hist.reshape(m, cells)
    grid[:, nf + cells :] = snap.decode_hist.reshape(m, cells)
    raw[-2] = snap.prompt_tokens
    raw[-1] = snap.predicted_output_tokens
    flat = _squash(raw, _squash_scales(m, cells))
    sq = flat[: m * width].reshape(m, width)
    out[r : r + 2] = flat[-2:]
    out[r + 2] = min(snap.router_queue_len, spec.queue_cap) / spec.queue_cap
    out[r + 3] = min(snap.waited_s, spec.max_delay_s) / spec.max_delay_s if spec.max_delay_s > 0 else 0.0
    r += 4
    if nk:
        probs = snap.predicted_bucket_probs
        if probs is None:  # a snapshot without them: the expected length's bucket, one-hot
            probs = length_bucket_probs(spec, snap.predicted_output_tokens)
        assert probs is not None  # the spec reads buckets
        if len(probs) != nk:
            raise ValueError(f"{len(probs)} length-bucket probabilities, the policy reads {nk}")
        out[r : r + nk] = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
        r += nk
    # per instance k: squashed running, waiting | KV usage, free | squashed outstanding tokens and
    # times | completion and penalty relative to the best accepting instance | squashed histograms
    per = out[r:].reshape(m, spec.per_instance_dim)
    usage = np.minimum(np.maximum(inst[:, 3] / np.maximum(inst[:, 4], 1.0), 0.0), 1.0)  # np.clip, cheaper
    times = inst[:, 8:10]  # completion, penalty
    acc = inst[:, 0] > 0.5
    best = np.minimum.reduce(times[acc] if np.logical_or.reduce(acc) else times, axis=0)
    per[:, 0:2] = sq[:, 0:2]
    per[:, 2] = usage
    per[:, 3] = 1.0 - usage
    per[:, 4:9] = sq[:, 2:nf]
    per[:, 9:11] = (times - best) / TIME_SCALE_S
    per[:, 11:] = sq[:, nf:]
    np.maximum(out, 0.0, out=out)  # np.clip(out, 0, OBS_HIGH) in two calls: clip costs more than both
    return np.minimum(out, OBS_HIGH, out=out).astype(np.float32)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"relu": _relu, "tanh": _tanh}


def slot_inputs(obs: np.ndarray, spec: ObsSpec) -> np.ndarray:
    """Per-action inputs of the ``slots`` architecture: (..., m + 1, R + 2P + 1).

    Slot ``k < m`` = [request features, instance k's features, mean over instances, 0]; the DELAY
    slot = [request features, zeros, mean over instances, 1]. One shared MLP scores every slot, so
    the policy is equivariant to instance order (no instance index is special) and every sample
    trains the scorer of every instance.
    """
    x = np.asarray(obs, dtype=np.float32)
    lead = x.shape[:-1]
    m, n_act = spec.num_instances, spec.n_actions
    r = spec.request_dim
    p = spec.per_instance_dim
    req = x[..., n_act : n_act + r]
    inst = x[..., n_act + r :].reshape(*lead, m, p)
    mean = inst.mean(axis=-2, keepdims=True)
    req_m = np.broadcast_to(req[..., None, :], (*lead, m, r))
    slots = np.concatenate(
        [req_m, inst, np.broadcast_to(mean, (*lead, m, p)), np.zeros((*lead, m, 1), np.float32)], axis=-1
    )
    delay = np.concatenate(
        [req[..., None, :], np.zeros((*lead, 1, p), np.float32), mean, np.ones((*lead, 1, 1), np.float32)],
        axis=-1,
    )
    return np.concatenate([slots, delay], axis=-2)


class PolicyNet:
    """An exported policy (Q-network or policy logits) evaluated in numpy.

    ``layers``: [(W (in, out), b (out,)), ...]; the activation follows every layer but the last.
    ``architecture``: ``mlp`` (one MLP from the observation to m + 1 outputs) or ``slots`` (one MLP
    scoring each action's slot, ``slot_inputs``). ``prior = (beta, w)`` (``slots`` only): the
    heuristic prior ``beta x (d_completion + w x d_penalty)`` is subtracted from every instance's
    score (``PRIOR_FEATURES``). ``residual_bound = c`` (``slots`` only): the slot scorer's output r is
    squashed to ``c x tanh(r / c)`` before the prior is subtracted (``training.rl.algos.MaskedQNetwork``).
    ``act`` returns the masked argmax over the m + 1 outputs: an
    instance index or ``DELAY_OUTPUT``.
    """

    def __init__(
        self,
        layers: Sequence[tuple[np.ndarray, np.ndarray]],
        activation: str,
        spec: ObsSpec,
        architecture: str = "mlp",
        prior: tuple[float, float] | None = None,
        residual_bound: float | None = None,
    ) -> None:
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(_ACTIVATIONS)}")
        if architecture not in ("mlp", "slots"):
            raise ValueError(f"unknown architecture {architecture!r}")
        if residual_bound is not None and (architecture != "slots" or residual_bound <= 0):
            raise ValueError("residual_bound needs the 'slots' architecture and must be > 0")
        self.layers = [(np.asarray(w, dtype=np.float32), np.asarray(b, dtype=np.float32)) for w, b in layers]
        self.activation = activation
        self.architecture = architecture
        self.prior = None if prior is None else (float(prior[0]), float(prior[1]))
        self.residual_bound = None if residual_bound is None else float(residual_bound)
        self._act = _ACTIVATIONS[activation]
        self.spec = spec
        self.columns = tuple(snapshot_columns(spec))
        n_in, n_out = (spec.slot_dim, 1) if architecture == "slots" else (spec.obs_dim, spec.n_actions)
        if self.layers[0][0].shape[0] != n_in or self.layers[-1][0].shape[1] != n_out:
            raise ValueError("policy weights do not match the observation spec")

    def scores(self, obs: np.ndarray) -> np.ndarray:
        """Network outputs (..., m + 1) for a batch (n, obs_dim) or one observation (obs_dim,)."""
        x = slot_inputs(obs, self.spec) if self.architecture == "slots" else np.asarray(obs, dtype=np.float32)
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                x = self._act(x)
        if self.architecture != "slots":
            return x
        out = x[..., 0]
        if self.residual_bound is not None:
            out = np.float32(self.residual_bound) * np.tanh(out / np.float32(self.residual_bound))
        if self.prior is not None:
            out = out - self._prior_term(obs)
        return out

    def _prior_term(self, obs: np.ndarray) -> np.ndarray:
        """``beta x (d_completion + w x d_penalty)`` per instance slot, 0 for the DELAY slot."""
        assert self.prior is not None
        beta, w = self.prior
        spec = self.spec
        x = np.asarray(obs, dtype=np.float32)
        inst = x[..., spec.n_actions + spec.request_dim :].reshape(
            *x.shape[:-1], spec.num_instances, spec.per_instance_dim
        )
        a, b = PRIOR_FEATURES
        term = beta * (inst[..., a] + w * inst[..., b])
        return np.concatenate([term, np.zeros((*x.shape[:-1], 1), np.float32)], axis=-1)

    def act_obs(self, obs: np.ndarray) -> int:
        """Masked argmax for one encoded observation (the mask is its first m + 1 entries)."""
        s = self.scores(obs)
        mask = obs[: self.spec.n_actions] > 0.5
        a = int(np.argmax(np.where(mask, s, -np.inf)))
        return DELAY_OUTPUT if a == self.spec.num_instances else a

    def act(self, snap: RouterSnapshot) -> int:
        return self.act_obs(encode_observation(snap, self.spec))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"] = w
            arrays[f"b{i}"] = b
        arrays["activation"] = np.array(self.activation)
        arrays["architecture"] = np.array(self.architecture)
        if self.prior is not None:
            arrays["prior"] = np.array(self.prior, dtype=np.float64)
        if self.residual_bound is not None:
            arrays["residual_bound"] = np.array(self.residual_bound, dtype=np.float64)
        np.savez(folder / WEIGHTS_FILE, **arrays)  # type: ignore[arg-type]
        (folder / SPEC_FILE).write_text(self.spec.to_json())


def load_policy(folder: str | Path) -> Policy:
    """Load the policy of a policy folder: a rule (``rule_policy.json``: ``RulePolicy.load``) or a
    network (``policy_weights.npz`` + ``obs_spec.json``)."""
    folder = Path(folder)
    if (folder / RULE_FILE).exists():
        return RulePolicy.load(folder)
    spec = ObsSpec.from_dict(json.loads((folder / SPEC_FILE).read_text()))
    with np.load(folder / WEIGHTS_FILE) as z:
        n = sum(1 for k in z.files if k.startswith("w"))
        layers = [(z[f"w{i}"], z[f"b{i}"]) for i in range(n)]
        activation = str(z["activation"])
        architecture = str(z["architecture"]) if "architecture" in z.files else "mlp"
        prior = (float(z["prior"][0]), float(z["prior"][1])) if "prior" in z.files else None
        bound = float(z["residual_bound"]) if "residual_bound" in z.files else None
    return PolicyNet(layers, activation, spec, architecture, prior, bound)


@dataclass(frozen=True)
class LinearLatency:
    """The latency model a rule policy estimates with: ``LinearLatencyModel``'s formula (the impact
    estimator's), seconds per iteration

        base_s + per_decode_seq_s x decode_seqs + grad2 x decode_context_tokens
               + grad1 x prefill_tokens + attention2 x prefill_attention_tokens2,

    evaluated in that order (float64), so a rule computes the very numbers the simulator's routers
    compute with the same coefficients. ``source``: where the coefficients come from (e.g.
    ``impact-estimator v3``), for reports."""

    base_s: float
    grad1_s_per_prefill_token: float
    grad2_s_per_decode_context_token: float
    per_decode_seq_s: float = 0.0
    attention2_s_per_token2: float = 0.0
    source: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinearLatency:
        """From ``{"coefficients": {...}, "source": ...}``, an impact estimator's JSON
        (``FittedEstimator.to_json``: ``coefficients`` and ``name``) or the coefficients alone."""
        coef = d.get("coefficients", d)
        fields = ("base_s", "grad1_s_per_prefill_token", "grad2_s_per_decode_context_token")
        missing = [k for k in fields if k not in coef]
        if missing:
            raise ValueError(f"latency model lacks coefficients {missing}")
        return cls(
            base_s=float(coef["base_s"]),
            grad1_s_per_prefill_token=float(coef["grad1_s_per_prefill_token"]),
            grad2_s_per_decode_context_token=float(coef["grad2_s_per_decode_context_token"]),
            per_decode_seq_s=float(coef.get("per_decode_seq_s", 0.0)),
            attention2_s_per_token2=float(coef.get("attention2_s_per_token2", 0.0)),
            source=str(d.get("source", d.get("name", ""))),
        )

    def to_dict(self) -> dict[str, Any]:
        coef = {k: v for k, v in asdict(self).items() if k != "source"}
        return {"coefficients": coef, "source": self.source}

    def prefill_s(self, prompt_tokens: float) -> float:
        """One prompt prefilled alone (``training.routing.estimates.prefill_s``)."""
        p = max(0, round(prompt_tokens))
        if not p:
            return 0.0
        return (
            self.base_s
            + self.per_decode_seq_s * 0
            + self.grad2_s_per_decode_context_token * 0
            + self.grad1_s_per_prefill_token * p
            + self.attention2_s_per_token2 * (float(p) * p)
        )

    def decode_step_s(self, decode_seqs: np.ndarray, context_tokens: np.ndarray) -> np.ndarray:
        """Decode-only iterations of ``decode_seqs`` sequences over ``context_tokens`` (0 where no
        sequence), per instance (``training.routing.estimates.decode_step_s``)."""
        a = self.base_s + self.per_decode_seq_s * decode_seqs
        step = a + self.grad2_s_per_decode_context_token * np.maximum(0.0, context_tokens)
        return np.where(decode_seqs > 0, step, 0.0)


RULES = ("least_tokens", "workload_impact_greedy")
"""The placement rules a ``RulePolicy`` implements (the registry routers of the same names)."""

HOLD_SUFFIX = "+hold"


class RulePolicy:
    """A placement rule on the snapshot: a registry router (``RULES``), with or without admission
    control (``+hold``), in numpy, so a tuned heuristic ships as the same ``llm-router`` pyfunc as a
    learned policy (same input, same output).

    - ``least_tokens``: the accepting instance with the fewest outstanding prompt + predicted decode
      tokens (``training.routing.baselines.LeastTokens``).
    - ``workload_impact_greedy``: the least own predicted latency + prefill and decode impact on the
      requests already there (``training.routing.latency_aware.WorkloadImpactGreedy``), estimated
      with ``latency`` (``LinearLatency``: the impact estimator's coefficients, an artifact of the
      version), ``max_batch_size`` and ``block_size``; an instance's decoding requests are its
      snapshot's decode histogram total.
    - ``hold_kv_headroom = h``: only instances that can start the request with ``h`` of their KV cache
      to spare (``startable``) are candidates, and DELAY while none can
      (``training.routing.admission.HoldForHeadroom``).

    Ties (scores within 1e-12 relative of the minimum) go to ``rng`` when ``act`` is given one (the
    simulator's adapter passes the registry router's seeded generator, so a replay is bit-for-bit the
    registry router's) and to the lowest instance index otherwise (serving: deterministic).
    """

    def __init__(
        self,
        rule: str,
        spec: ObsSpec,
        *,
        latency: LinearLatency | None = None,
        max_batch_size: int = 256,
        block_size: int = 16,
        hold_kv_headroom: float | None = None,
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
        if rule == "workload_impact_greedy" and latency is None:
            raise ValueError("rule workload_impact_greedy needs a latency model")
        if hold_kv_headroom is not None and not 0.0 <= hold_kv_headroom < 1.0:
            raise ValueError(f"hold_kv_headroom must be in [0, 1), got {hold_kv_headroom}")
        if max_batch_size < 1 or block_size < 1:
            raise ValueError("max_batch_size and block_size must be >= 1")
        self.rule = rule
        self.spec = spec
        self.latency = latency
        self.max_batch_size = int(max_batch_size)
        self.block_size = int(block_size)
        self.hold_kv_headroom = None if hold_kv_headroom is None else float(hold_kv_headroom)
        self.columns = tuple(snapshot_columns(spec))
        self._hold_spec = replace(spec, hold_kv_headroom=self.hold_kv_headroom, block_size=self.block_size)

    @property
    def name(self) -> str:
        """``<rule>`` or ``<rule>+hold``: the registry router it routes like."""
        return self.rule + (HOLD_SUFFIX if self.hold_kv_headroom is not None else "")

    @property
    def kind(self) -> str:
        """The ``policy`` kind recorded on a registered version: ``rule:<name>``."""
        return f"rule:{self.name}"

    def params(self) -> dict[str, Any]:
        """What ``rule_policy.json`` holds (the version's parameters)."""
        return {
            "format": RULE_FORMAT,
            "rule": self.rule,
            "hold_kv_headroom": self.hold_kv_headroom,
            "max_batch_size": self.max_batch_size,
            "block_size": self.block_size,
            "latency": None if self.latency is None else self.latency.to_dict(),
        }

    def scores(self, snap: RouterSnapshot) -> np.ndarray:
        """The rule's score per instance (seconds, or tokens for ``least_tokens``); lowest wins."""
        inst = snap.instances
        prompt_q = inst[:, INSTANCE_FIELDS.index("outstanding_prompt_tokens")]
        decode_q = inst[:, INSTANCE_FIELDS.index("outstanding_decode_tokens")]
        if self.rule == "least_tokens":
            return prompt_q + decode_q
        return self._impact_s(snap, inst, prompt_q, decode_q)

    def _impact_s(
        self, snap: RouterSnapshot, inst: np.ndarray, prompt_q: np.ndarray, decode_q: np.ndarray
    ) -> np.ndarray:
        """``WorkloadImpactGreedy.impact_s`` for every instance, operation for operation."""
        lm = self.latency
        assert lm is not None
        m = inst.shape[0]
        running = inst[:, INSTANCE_FIELDS.index("num_running")]
        waiting = inst[:, INSTANCE_FIELDS.index("num_waiting")]
        used = inst[:, INSTANCE_FIELDS.index("kv_used_blocks")]
        decoding = snap.decode_hist.reshape(m, -1).sum(axis=1)
        p = float(snap.prompt_tokens)
        o = max(1.0, float(snap.predicted_output_tokens))
        own_prefill = lm.prefill_s(p)
        in_system = running + waiting
        n = np.minimum(in_system, self.max_batch_size)
        ctx = used * self.block_size + prompt_q
        step = lm.decode_step_s(n + 1, ctx + p + o / 2.0)
        per_token = own_prefill / p if p > 0 else 0.0
        excess = in_system + 1 - self.max_batch_size
        with np.errstate(divide="ignore", invalid="ignore"):
            capacity = np.where((excess > 0) & (n > 0), excess * (decode_q / n) / n * step, 0.0)
            own = capacity + per_token * prompt_q + own_prefill + o * step
            without = lm.decode_step_s(n, ctx)
            overlap = np.minimum(o, decode_q / in_system)
            impact = in_system * overlap * np.maximum(0.0, step - without)
            total = own + decoding * own_prefill + impact
        return np.where(in_system == 0, own, total)

    def act(self, snap: RouterSnapshot, rng: np.random.Generator | None = None) -> int:
        """An instance index, or ``DELAY_OUTPUT`` when no instance is a candidate."""
        if snap.instances.shape[0] != self.spec.num_instances:
            raise ValueError(
                f"snapshot has {snap.instances.shape[0]} instances, the policy expects "
                f"{self.spec.num_instances}"
            )
        ok = startable(snap, self._hold_spec)
        if not ok.any():
            return DELAY_OUTPUT
        candidates = np.flatnonzero(ok)
        s = self.scores(snap)[candidates]
        low = s.min()
        best = np.flatnonzero(s <= low + 1e-12 * max(1.0, abs(float(low))))
        k = int(best[0]) if rng is None or len(best) == 1 else int(best[rng.integers(len(best))])
        return int(candidates[k])

    def save(self, folder: Path) -> None:
        """``rule_policy.json`` (the parameters and the latency model) and ``obs_spec.json``."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RULE_FILE).write_text(json.dumps(self.params(), indent=2, sort_keys=True))
        (folder / SPEC_FILE).write_text(self.spec.to_json())

    @classmethod
    def load(cls, folder: str | Path) -> RulePolicy:
        folder = Path(folder)
        d = json.loads((folder / RULE_FILE).read_text())
        if d.get("format") != RULE_FORMAT:
            raise ValueError(f"{folder / RULE_FILE} is not a {RULE_FORMAT} document")
        spec = ObsSpec.from_dict(json.loads((folder / SPEC_FILE).read_text()))
        latency = None if d.get("latency") is None else LinearLatency.from_dict(d["latency"])
        return cls(
            d["rule"],
            spec,
            latency=latency,
            max_batch_size=int(d["max_batch_size"]),
            block_size=int(d["block_size"]),
            hold_kv_headroom=d.get("hold_kv_headroom"),
        )


Policy = PolicyNet | RulePolicy
"""What a policy folder holds: a network or a rule; both route a ``RouterSnapshot`` with ``act``."""


def policy_kind(policy: Policy) -> str:
    """``rl`` for a network, ``rule:<name>`` for a rule: the ``policy`` kind of a registered version."""
    return policy.kind if isinstance(policy, RulePolicy) else "rl"


def snapshot_values(policy: Policy, model_input: Any) -> np.ndarray:
    """The serving input as a float64 matrix (n, ``len(snapshot_columns)``) in the documented order.

    ``model_input``: a 2-D array (the registered signature: a float64 tensor ``(-1, C)``, what MLflow
    hands ``predict``), one row (1-D), a ``DataFrame`` with the ``snapshot_columns`` names (any order,
    extra columns ignored; what versions registered before the tensor signature took) or, without those
    names, exactly ``C`` columns in the documented order.
    """
    cols = policy.columns
    if isinstance(model_input, pd.DataFrame):
        names = tuple(model_input.columns)
        if names == cols:
            values = model_input.to_numpy(dtype=np.float64)
        elif all(isinstance(c, str) for c in names) and set(cols) & set(names):
            missing = [c for c in cols if c not in names]
            if missing:
                more = "..." if len(missing) > 5 else ""
                raise ValueError(f"snapshot frame lacks columns {missing[:5]}{more}")
            values = model_input[list(cols)].to_numpy(np.float64)
        else:
            values = model_input.to_numpy(dtype=np.float64)
    else:
        values = np.asarray(model_input, dtype=np.float64)
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2 or values.shape[1] != len(cols):
        raise ValueError(
            f"snapshot input has shape {values.shape}; expected (n, {len(cols)}): one row per decision, "
            "the columns of snapshot_columns(spec) in order"
        )
    return values


def predict_rows(policy: Policy, model_input: Any) -> np.ndarray:
    """Actions (int64, instance index or -1) for every snapshot row of ``model_input``
    (``snapshot_values``: a tensor in ``snapshot_columns`` order or a named snapshot frame)."""
    spec = policy.spec
    rows = snapshot_values(policy, model_input)
    return np.array([policy.act(snapshot_from_row(v, spec)) for v in rows], dtype=np.int64)


def predict_frame(policy: Policy, frame: pd.DataFrame) -> np.ndarray:
    """Actions for every row of a snapshot frame (any column order): ``predict_rows``."""
    return predict_rows(policy, frame)


class _RouterPolicyModelImpl:
    """The pyfunc body; ``RouterPolicyModel`` mixes it with ``mlflow.pyfunc.PythonModel``.

    Artifacts: ``policy_dir`` = a policy folder (a network: ``policy_weights.npz`` + ``obs_spec.json``;
    a rule: ``rule_policy.json`` + ``obs_spec.json``). Input: snapshot rows (module docstring:
    a float64 tensor ``(n, len(snapshot_columns(spec)))`` in that column order, or a named snapshot
    frame). Output: int64 array, one instance index (or -1, DELAY) per row.
    """

    policy: Policy | None = None

    def __init__(self, policy_dir: str | Path | None = None) -> None:
        if policy_dir is not None:
            self.policy = load_policy(policy_dir)

    def load_context(self, context: Any) -> None:
        self.policy = load_policy(context.artifacts["policy_dir"])

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """``model_input``: what ``snapshot_values`` reads (MLflow hands the tensor signature an
        array; the unwrapped model also takes a named snapshot frame)."""
        if self.policy is None:
            raise RuntimeError("RouterPolicyModel has no policy: load_context was not called")
        return predict_rows(self.policy, model_input)


_MODEL_CLASS: type | None = None


def __getattr__(name: str) -> Any:
    """``RouterPolicyModel`` is built on first access so that importing this module (the env does,
    once per process) does not import MLflow (~5 s here). It is a real ``mlflow.pyfunc.PythonModel``
    subclass, picklable by reference as ``training.rl.policy_serving.RouterPolicyModel``."""
    global _MODEL_CLASS
    if name == "RouterPolicyModel":
        if _MODEL_CLASS is None:
            from mlflow.pyfunc import PythonModel

            _MODEL_CLASS = type(
                "RouterPolicyModel",
                (_RouterPolicyModelImpl, PythonModel),
                {
                    "__module__": __name__,
                    "__qualname__": "RouterPolicyModel",
                    "__doc__": _RouterPolicyModelImpl.__doc__,
                },
            )
        return _MODEL_CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
