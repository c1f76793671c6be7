"""The learned router's serving code: snapshot schema (``ObsSpec``), THE observation encoder, the numpy
policy (``PolicyNet``) and its MLflow pyfunc (``RouterPolicyModel``).

SELF-CONTAINED: imports numpy and pandas only (``mlflow`` lazily, for ``RouterPolicyModel``), nothing
from this project, so a serving-side router can load the registered model with only the model's own
dependencies: the registry logs a copy of this file as the ``llm-router`` model's code (MLflow
models from code), so a registered model never imports it by its path in the project. The RL env
(``training.rl.env``) imports ``encode_observation`` / ``action_mask`` from here, so training and
serving share one encoder, not two copies.

Who calls this: the env once per routing decision (``encode_observation``), the router adapter
(``training.rl.router``) once per routing decision (``PolicyNet.act``), and MLflow's pyfunc
``predict`` once per batch of routing decisions (``RouterPolicyModel``).

The snapshot (one routing decision; Jain et al., arXiv 2408.13510, Section 5: the paper's state)
----------------------------------------------------------------------------------------------------
A ``pandas.DataFrame`` with one row per decision, flattened columns (``snapshot_columns(spec)`` gives
the exact ordered list for a policy; ``m`` = instances, ``a`` / ``b`` = prompt / decode bucket):

| column | unit | meaning |
|---|---|---|
| ``prompt_tokens`` | tokens | the request's prompt length |
| ``predicted_output_tokens`` | tokens | the length predictor's expected output length (never the true one) |
| ``router_queue_len`` | requests | other requests held at the router |
| ``waited_s`` | s | how long this request has been held at the router |
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

Buckets: prompt bucket ``a`` = number of ``spec.prompt_edges`` <= prompt tokens, decode bucket ``b``
likewise over ``spec.decode_edges`` and the *predicted* output tokens. The last three per-instance
columns need the latency model / impact estimator; the env computes them with the project's, a
production router with the registered impact estimator.

Output: one int per row, the instance index, or ``-1`` (DELAY: hold the request at the router until
the next decision tick).

The observation (``encode_observation``; float32, every entry clipped to [0, ``OBS_HIGH``])
---------------------------------------------------------------------------------------------
``[mask (m + 1) | request (Bp + Bd + 4) | per instance k: features (10 + 2 Bp Bd)]``: the action mask
first (accepting flags, then "DELAY allowed"), so a Q-network can mask invalid actions from the
observation alone; then the request's bucket one-hots and squashed sizes; then per instance the
squashed counts, KV usage and free fraction, time estimates, the predicted completion and mixing
penalty relative to the best accepting instance (``(x - min) / TIME_SCALE_S``: entries
``PRIOR_FEATURES`` of the instance block, what the ``slots`` policy's heuristic prior reads), and
the bucket histograms. ``squash(x, s) = log1p(x / s)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
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
    """

    num_instances: int
    prompt_edges: tuple[float, ...] = (256.0, 1500.0)
    decode_edges: tuple[float, ...] = (128.0, 256.0, 512.0)
    queue_cap: int = 64
    allow_delay: bool = False
    max_delay_s: float = 0.5
    hold_kv_headroom: float | None = None
    block_size: int = 16

    def check_block_size(self, block_size: int) -> None:
        """Raise ``ValueError`` when admission control is on and the cluster's KV blocks are not the
        ``block_size`` the policy counts the prompt in."""
        if self.hold_kv_headroom is not None and self.block_size != block_size:
            raise ValueError(
                f"spec.block_size {self.block_size} != the cluster's {block_size} "
                "(admission control counts the prompt in KV blocks)"
            )

    @property
    def n_prompt_buckets(self) -> int:
        return len(self.prompt_edges) + 1

    @property
    def n_decode_buckets(self) -> int:
        return len(self.decode_edges) + 1

    @property
    def n_actions(self) -> int:
        return self.num_instances + 1

    @property
    def per_instance_dim(self) -> int:
        return 11 + 2 * self.n_prompt_buckets * self.n_decode_buckets

    @property
    def request_dim(self) -> int:
        return self.n_prompt_buckets + self.n_decode_buckets + 4

    @property
    def obs_dim(self) -> int:
        return self.n_actions + self.request_dim + self.num_instances * self.per_instance_dim

    @property
    def slot_dim(self) -> int:
        """Input width of the ``slots`` architecture's shared scorer (``slot_inputs``)."""
        return self.request_dim + 2 * self.per_instance_dim + 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ObsSpec:
        d = dict(d)
        d["prompt_edges"] = tuple(float(x) for x in d["prompt_edges"])
        d["decode_edges"] = tuple(float(x) for x in d["decode_edges"])
        return cls(**d)


@dataclass
class RouterSnapshot:
    """One routing decision as numbers (the parsed form of one snapshot row).

    ``instances``: shape (m, len(INSTANCE_FIELDS)), columns in ``INSTANCE_FIELDS`` order.
    ``prefill_hist`` / ``decode_hist``: shape (m, Bp, Bd) request counts.
    """

    prompt_tokens: float
    predicted_output_tokens: float
    router_queue_len: float
    waited_s: float
    instances: np.ndarray
    prefill_hist: np.ndarray
    decode_hist: np.ndarray
    extra: dict[str, float] = field(default_factory=dict)


def snapshot_columns(spec: ObsSpec) -> list[str]:
    """The ordered snapshot columns for ``spec`` (what ``RouterPolicyModel.predict`` reads)."""
    cols = list(REQUEST_FIELDS)
    for k in range(spec.num_instances):
        cols += [f"i{k}_{f}" for f in INSTANCE_FIELDS]
        for phase in ("prefill", "decode"):
            cols += [
                f"i{k}_{phase}_p{a}_d{b}"
                for a in range(spec.n_prompt_buckets)
                for b in range(spec.n_decode_buckets)
            ]
    return cols


def snapshot_to_row(snap: RouterSnapshot) -> list[float]:
    """The snapshot as one row of values in ``snapshot_columns`` order."""
    row = [snap.prompt_tokens, snap.predicted_output_tokens, snap.router_queue_len, snap.waited_s]
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
    body = np.asarray(row[len(REQUEST_FIELDS) :], dtype=np.float64).reshape(m, per)
    return RouterSnapshot(
        prompt_tokens=float(row[0]),
        predicted_output_tokens=float(row[1]),
        router_queue_len=float(row[2]),
        waited_s=float(row[3]),
        instances=body[:, :nf],
        prefill_hist=body[:, nf : nf + bp * bd].reshape(m, bp, bd),
        decode_hist=body[:, nf + bp * bd :].reshape(m, bp, bd),
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
    delay = (spec.allow_delay and snap.waited_s < spec.max_delay_s) or not accepting.any()
    return np.append(accepting, delay)


def _squash(x: np.ndarray | float, scale: float) -> np.ndarray:
    return np.log1p(np.maximum(np.asarray(x, dtype=np.float64), 0.0) / scale)


def encode_observation(snap: RouterSnapshot, spec: ObsSpec) -> np.ndarray:
    """THE observation encoder (env and serving): snapshot -> float32 vector of ``spec.obs_dim``.

    Layout and scales are in the module docstring; every entry is in [0, ``OBS_HIGH``].
    """
    m = spec.num_instances
    if snap.instances.shape[0] != m:
        raise ValueError(f"snapshot has {snap.instances.shape[0]} instances, the policy expects {m}")
    mask = action_mask(snap, spec).astype(np.float64)
    pb = int(np.searchsorted(spec.prompt_edges, snap.prompt_tokens, side="right"))
    db = int(np.searchsorted(spec.decode_edges, snap.predicted_output_tokens, side="right"))
    req = np.zeros(spec.n_prompt_buckets + spec.n_decode_buckets + 4)
    req[pb] = 1.0
    req[spec.n_prompt_buckets + db] = 1.0
    req[-4] = _squash(snap.prompt_tokens, 256.0)
    req[-3] = _squash(snap.predicted_output_tokens, 256.0)
    req[-2] = min(snap.router_queue_len, spec.queue_cap) / spec.queue_cap
    req[-1] = min(snap.waited_s, spec.max_delay_s) / spec.max_delay_s if spec.max_delay_s > 0 else 0.0
    inst = snap.instances
    kv_total = np.maximum(inst[:, 4], 1.0)
    usage = np.clip(inst[:, 3] / kv_total, 0.0, 1.0)
    comp, pen = inst[:, 8], inst[:, 9]
    acc = inst[:, 0] > 0.5
    best_comp = comp[acc].min() if acc.any() else comp.min()
    best_pen = pen[acc].min() if acc.any() else pen.min()
    per = np.column_stack(
        [
            _squash(inst[:, 1], 16.0),
            _squash(inst[:, 2], 16.0),
            usage,
            1.0 - usage,
            _squash(inst[:, 5], 1024.0),
            _squash(inst[:, 6], 4096.0),
            _squash(inst[:, 7], 1.0),
            _squash(comp, 10.0),
            _squash(pen, 10.0),
            (comp - best_comp) / TIME_SCALE_S,
            (pen - best_pen) / TIME_SCALE_S,
            _squash(snap.prefill_hist.reshape(m, -1), 4.0),
            _squash(snap.decode_hist.reshape(m, -1), 8.0),
        ]
    )
    out = np.concatenate([mask, req, per.ravel()])
    return np.clip(out, 0.0, OBS_HIGH).astype(np.float32)


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


def load_policy(folder: str | Path) -> PolicyNet:
    """Load ``policy_weights.npz`` + ``obs_spec.json`` from a policy folder."""
    folder = Path(folder)
    spec = ObsSpec.from_dict(json.loads((folder / SPEC_FILE).read_text()))
    with np.load(folder / WEIGHTS_FILE) as z:
        n = sum(1 for k in z.files if k.startswith("w"))
        layers = [(z[f"w{i}"], z[f"b{i}"]) for i in range(n)]
        activation = str(z["activation"])
        architecture = str(z["architecture"]) if "architecture" in z.files else "mlp"
        prior = (float(z["prior"][0]), float(z["prior"][1])) if "prior" in z.files else None
        bound = float(z["residual_bound"]) if "residual_bound" in z.files else None
    return PolicyNet(layers, activation, spec, architecture, prior, bound)


def predict_frame(policy: PolicyNet, frame: pd.DataFrame) -> np.ndarray:
    """Actions (int64, instance index or -1) for every row of a snapshot frame (any column order)."""
    cols = policy.columns
    if tuple(frame.columns) == cols:  # the documented order: no re-indexing
        values = frame.to_numpy(dtype=np.float64)
    else:
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"snapshot frame lacks columns {missing[:5]}{'...' if len(missing) > 5 else ''}")
        values = frame[list(cols)].to_numpy(np.float64)
    return np.array([policy.act(snapshot_from_row(v, policy.spec)) for v in values], dtype=np.int64)


class _RouterPolicyModelImpl:
    """The pyfunc body; ``RouterPolicyModel`` mixes it with ``mlflow.pyfunc.PythonModel``.

    Artifacts: ``policy_dir`` = a folder holding ``policy_weights.npz`` and ``obs_spec.json``.
    Input: a snapshot ``DataFrame`` (module docstring; ``snapshot_columns``). Output: int64 array.
    """

    policy: PolicyNet | None = None

    def __init__(self, policy_dir: str | Path | None = None) -> None:
        if policy_dir is not None:
            self.policy = load_policy(policy_dir)

    def load_context(self, context: Any) -> None:
        self.policy = load_policy(context.artifacts["policy_dir"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        if self.policy is None:
            raise RuntimeError("RouterPolicyModel has no policy: load_context was not called")
        return predict_frame(self.policy, model_input)


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
