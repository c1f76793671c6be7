"""The RL env's observation as one compiled kernel (issue 16, fourth pass): snapshot, action mask and
observation of a routing decision from flat arrays, with numba.

Who calls this: ``RouterEnv`` (``training.rl.env``), once per decision, unless the pure-Python path is
chosen (``RouterEnv(compiled=False)`` or ``LOADWISE_RL_KERNEL=0``) or the latency model is not the
linear one. The pure-Python twin is ``training.rl.observation.SnapshotBuilder`` +
``policy_serving.action_mask`` + ``policy_serving.encode_observation``; ``CompiledObserver.observe``
gives, bit for bit, what they give (``tests/training/rl/test_kernel.py``: a real replay, a preempting
one, Hypothesis-drawn view sequences, NaN lengths, whole env episodes). It does the same IEEE
operations in the same order, numpy's pairwise summation included (``_pairwise``); the one step it
leaves to numpy is ``log1p`` (numpy's SIMD ``log1p`` and libm's, which numba calls, differ in the
last bit on ~3 % of inputs), applied between ``decision`` and ``encode_tail``.

Importing this module imports numba (~1.2 s with the module); the first call compiles the kernels
(~9 s once per machine, then loaded from numba's on-disk cache in ~0.9 s). Serving never imports it.

What stays in Python per decision (``CompiledObserver``): reading the changed views' fields, keeping
each instance's queue as rows of a float64 buffer (the simulator's queue, in arrival order, changes
by requests leaving at the front and joining at the back: applied as a delta, like
``SnapshotBuilder._queue_part``) and its running batch (copied when its ``BatchStats`` object
changes), and wrapping the results in a ``DecisionState``.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, TypeGuard

import numba
import numpy as np

from training.rl.observation import DecisionState
from training.rl.policy_serving import _SQUASHED_FIELDS as _SQ
from training.rl.policy_serving import OBS_HIGH, TIME_SCALE_S, ObsSpec, RouterSnapshot, length_bucket_probs
from training.rl.policy_serving import _squash_scales as squash_scales
from training.simulator.interface import BatchStats, ClusterView, InstanceView, RequestStats, RequestView
from training.simulator.latency import LatencyModel, LinearLatencyModel

N_VIEW = 8
"""Columns of the per-instance view matrix: accepting, num_running, num_waiting, kv_used_blocks,
kv_total_blocks, outstanding_prompt_tokens, outstanding_decode_tokens, num_decode_requests."""
N_FIELDS = 10
"""Columns of the snapshot's instance rows (``policy_serving.INSTANCE_FIELDS``)."""


def supports(latency_model: LatencyModel) -> TypeGuard[LinearLatencyModel]:
    """Whether the kernel has ``latency_model``'s formulas: the linear model only (``lmc``)."""
    return type(latency_model) is LinearLatencyModel


# ---------------------------------------------------------------------- scalar helpers (numpy's rules)
@numba.njit(cache=True)
def _block_sum(a: np.ndarray, lo: int, n: int) -> float:
    """numpy's ``pairwise_sum`` of ``a[lo:lo+n]`` for ``n <= 128`` (8 accumulators, then the rest)."""
    if n < 8:
        res = -0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - (n % 8):
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@numba.njit(cache=True)
def _pairwise(a: np.ndarray, n: int) -> float:
    """``np.add.reduce(a[:n])`` bit for bit: numpy's pairwise summation (halves rounded down to a
    multiple of 8 above 128 entries), with an explicit stack (numba's cache crashes on recursion)."""
    if n <= 128:
        return 0.0 + _block_sum(a, 0, n)
    lo_s = np.empty(64, np.int64)
    n_s = np.empty(64, np.int64)
    phase = np.empty(64, np.int64)
    left = np.empty(64)
    top, ret = 0, 0.0
    lo_s[0], n_s[0], phase[0] = 0, n, 0
    while top >= 0:
        lo, nn = lo_s[top], n_s[top]
        if nn <= 128:
            ret = _block_sum(a, lo, nn)
            top -= 1
            continue
        n2 = nn // 2
        n2 -= n2 % 8
        if phase[top] == 0:
            phase[top] = 1
            top += 1
            lo_s[top], n_s[top], phase[top] = lo, n2, 0
        elif phase[top] == 1:
            left[top] = ret
            phase[top] = 2
            top += 1
            lo_s[top], n_s[top], phase[top] = lo + n2, nn - n2, 0
        else:
            ret = left[top] + ret
            top -= 1
    return 0.0 + ret


@numba.njit(cache=True)
def _bisect_right(edges: np.ndarray, x: float) -> int:
    """``bisect.bisect_right(edges, x)`` for sorted edges (NaN counts past every edge, as there)."""
    c, n = 0, edges.shape[0]
    while c < n and not x < edges[c]:
        c += 1
    return c


@numba.njit(cache=True)
def _py_max(a: float, b: float) -> float:
    """Python's ``max(a, b)``: ``a`` unless ``b > a``."""
    return b if b > a else a


@numba.njit(cache=True)
def _py_min(a: float, b: float) -> float:
    """Python's ``min(a, b)``: ``a`` unless ``b < a``."""
    return b if b < a else a


@numba.njit(cache=True)
def _np_min(a: float, b: float) -> float:
    """``np.minimum(a, b)``: NaN propagates."""
    if a != a or b != b:
        return np.nan
    return b if b < a else a


@numba.njit(cache=True)
def _iteration_s(lmc: np.ndarray, p: float, pp: float, d: float, c: float) -> float:
    """``LinearLatencyModel.iteration_time(p, pp, d, c)`` (seconds), its terms in its order;
    ``lmc`` = (base_s, per_decode_seq_s, grad1, grad2, attention2)."""
    return lmc[0] + lmc[1] * d + lmc[3] * c + lmc[2] * p + lmc[4] * pp


@numba.njit(cache=True)
def _prefill_s(lmc: np.ndarray, tokens: float) -> float:
    """``training.routing.estimates.prefill_s`` (seconds to prefill ``tokens`` alone)."""
    p = _py_max(0.0, np.round(tokens))
    return _iteration_s(lmc, p, p * p, 0.0, 0.0) if p else 0.0


# ---------------------------------------------------------------------- per-instance stats
@numba.njit(cache=True, inline="always")
def _entry(
    p: float, q: float, g: float, dec: bool, pedges: np.ndarray, dedges: np.ndarray, out: np.ndarray, k: int
) -> tuple[float, float]:
    """Count one request (prompt ``p``, predicted ``q``, generated ``g`` tokens) in its histogram cell
    of ``out[k]``; returns (progress, remaining tokens) with numpy's NaN rules
    (``SnapshotBuilder._convert``)."""
    cell = _bisect_right(pedges, p) * (dedges.shape[0] + 1) + _bisect_right(dedges, q)
    if dec:
        cell += (out.shape[1] - 2) // 2
    out[k, cell] += 1.0
    r = q - g
    if r < 1.0:
        r = 1.0
    x = g / (q if (q > 1.0 or q != q) else 1.0)
    return (x if (x < 1.0 or x != x) else 1.0), r


@numba.njit(cache=True)
def instance_stats(
    changed: np.ndarray,
    strict: np.ndarray,
    vs: np.ndarray,
    qbuf: np.ndarray,
    qstart: np.ndarray,
    qlen: np.ndarray,
    bbuf: np.ndarray,
    blen: np.ndarray,
    tick: np.ndarray,
    pedges: np.ndarray,
    dedges: np.ndarray,
    lmc: np.ndarray,
    par: np.ndarray,
    out: np.ndarray,
    scratch: np.ndarray,
) -> int:
    """Per instance ``k`` with ``changed[k]``: its bucket counts, pending weight and earliest-completion
    estimate into ``out[k]`` (2 Bp Bd counts, weight, seconds), from its queue rows
    ``qbuf[k, qstart[k]:qstart[k]+qlen[k]]`` and batch rows ``bbuf[k, :blen[k]]`` (prompt, predicted,
    generated (batch: generated at tick 0), decoding) at decode tick ``tick[k]``; ``queues`` = (qbuf,
    qstart, qlen), ``batches`` = (bbuf, blen, tick). ``par`` = (block size, max batch size, alpha,
    progress relief). Returns -1, or the first instance with ``strict[k]`` (the simulator's
    ``BatchStats``) whose batch holds a NaN (``SnapshotBuilder._batch`` raises there; elsewhere a NaN
    propagates as in ``SnapshotBuilder._convert``)."""
    cells2 = out.shape[1] - 2
    for k in range(vs.shape[0]):
        if not changed[k]:
            continue
        out[k, :] = 0.0
        c = 0
        decoding = False
        nan_all = nan_dec = False
        min_all = min_dec = np.inf
        for i in range(qstart[k], qstart[k] + qlen[k]):
            dec = qbuf[k, i, 3] > 0.5
            x, r = _entry(qbuf[k, i, 0], qbuf[k, i, 1], qbuf[k, i, 2], dec, pedges, dedges, out, k)
            if r != r:
                nan_all = True
                nan_dec = nan_dec or dec
            if dec:
                decoding = True
                min_dec = r if r < min_dec else min_dec
            min_all = r if r < min_all else min_all
            scratch[c] = x
            c += 1
        for i in range(blen[k]):
            dec = bbuf[k, i, 3] > 0.5
            g = bbuf[k, i, 2] + tick[k] * bbuf[k, i, 3]
            x, r = _entry(bbuf[k, i, 0], bbuf[k, i, 1], g, dec, pedges, dedges, out, k)
            if r != r:
                if strict[k]:
                    return k
                nan_all = True
                nan_dec = nan_dec or dec
            if dec:
                decoding = True
                min_dec = r if r < min_dec else min_dec
            min_all = r if r < min_all else min_all
            scratch[c] = x
            c += 1
        if c == 0:
            continue  # weight and estimate 0
        out[k, cells2] = c - par[3] * _pairwise(scratch, c)
        nrun = min(vs[k, 1], par[1])
        if nrun == 0:
            nrun = 1.0
        step = 0.0
        if nrun > 0:
            step = (lmc[0] + lmc[1] * nrun) + lmc[3] * _py_max(0.0, vs[k, 3] * par[0])
        if decoding:
            out[k, cells2 + 1] = (np.nan if nan_dec else min_dec) * step
        else:
            out[k, cells2 + 1] = _prefill_s(lmc, vs[k, 5]) + (np.nan if nan_all else min_all) * step
    return -1


# ---------------------------------------------------------------------- latency estimates
@numba.njit(cache=True)
def instance_rows(
    vs: np.ndarray, req: np.ndarray, lmc: np.ndarray, par: np.ndarray, stats: np.ndarray, inst: np.ndarray
) -> None:
    """The snapshot's instance rows (m, 10) into ``inst``: the view's fields, the earliest-completion
    estimate (``stats[:, -1]``), ``MinMin.completion_s`` and ``mixing_penalty_s`` of the request
    (``req`` = prompt tokens, predicted output tokens, ...) on each instance, as
    ``SnapshotBuilder._view_terms`` / ``_rows`` compute them (seconds)."""
    block, batch, alpha = par[0], par[1], par[2]
    pf = req[0]
    o = _py_max(1.0, req[1])
    o2 = o / 2.0
    own = _prefill_s(lmc, pf)
    ppt = own / pf if pf > 0 else 0.0
    pi = float(max(0, int(pf)))
    pp = pi * pi
    for k in range(vs.shape[0]):
        nr, nw, used, opt, odt, d = vs[k, 1], vs[k, 2], vs[k, 3], vs[k, 5], vs[k, 6], vs[k, 7]
        busy = nr + nw
        n = min(busy, batch)
        ctx = used * block
        step = (lmc[0] + lmc[1] * (n + 1)) + lmc[3] * _py_max(0.0, ctx + opt + pf + o2)
        excess = busy + 1 - batch
        wait = 0.0 if (excess <= 0 or n <= 0) else excess * (odt / n) / n * step
        completion = wait + ppt * opt + own + o * step
        if busy == 0:
            penalty = alpha * 0.0 + (1.0 - alpha) * 0.0
        else:
            c = float(int(ctx))
            base_it = _iteration_s(lmc, 0.0, 0.0, d, c) if d else 0.0
            ctx_all = ctx + opt
            before = (lmc[0] + lmc[1] * n) + lmc[3] * ctx_all
            pre = 0.0
            if d and pi:
                pre = d * _py_max(0.0, _iteration_s(lmc, pi, pp, d, c) - base_it)
            delta = ((lmc[0] + lmc[1] * min(n + 1, batch)) + lmc[3] * (ctx_all + pi + o2)) - before
            penalty = alpha * pre + (1.0 - alpha) * (busy * _py_min(o, odt / busy) * _py_max(0.0, delta))
        inst[k, :7] = vs[k, :7]
        inst[k, 7] = stats[k, -1]
        inst[k, 8] = completion
        inst[k, 9] = penalty


# ---------------------------------------------------------------------- encoder
@numba.njit(cache=True)
def encode_head(
    inst: np.ndarray,
    hist: np.ndarray,
    req: np.ndarray,
    pedges: np.ndarray,
    dedges: np.ndarray,
    enc: np.ndarray,
    scales: np.ndarray,
    probs: np.ndarray,
    obs: np.ndarray,
    raw: np.ndarray,
    mask: np.ndarray,
) -> None:
    """First half of ``encode_observation``: the action mask (``action_mask``) into ``mask`` and
    ``obs``, the request's bucket one-hots, queue and wait fractions and length-bucket probabilities,
    each instance's KV usage and relative times into ``obs`` (float64, zeroed here), and every input
    to squash as ``np.maximum(x, 0) / scale`` into ``raw`` (instances' fields and histograms, then the
    request's two sizes). ``req`` = (prompt, predicted output tokens, router queue length, waited s);
    ``enc`` = (KV headroom or -1, block size, allow DELAY, max delay s, queue cap)."""
    m = inst.shape[0]
    bp, bd = pedges.shape[0] + 1, dedges.shape[0] + 1
    width = len(_SQ) + 2 * bp * bd
    obs[:] = 0.0
    any_ok = False
    for k in range(m):
        ok = inst[k, 0] > 0.5
        if enc[0] >= 0.0:
            free = inst[k, 4] - inst[k, 3] - np.ceil(inst[k, 5] / enc[1])
            need = np.ceil(req[0] / enc[1]) + enc[0] * inst[k, 4]
            ok = ok and ((inst[k, 1] + inst[k, 2] == 0) or (free >= need))
        mask[k] = ok
        any_ok = any_ok or ok
    mask[m] = (enc[2] > 0.5 and req[3] < enc[3]) or not any_ok
    for k in range(m + 1):
        obs[k] = 1.0 if mask[k] else 0.0
    r = m + 1
    obs[r + _bisect_right(pedges, req[0])] = 1.0
    obs[r + bp + _bisect_right(dedges, req[1])] = 1.0
    r += bp + bd
    for k in range(m):
        for j in range(width):
            x = inst[k, _SQ[j]] if j < len(_SQ) else hist[k, j - len(_SQ)]
            raw[k * width + j] = (x if (x > 0.0 or x != x) else 0.0) / scales[k * width + j]
    for j in range(2):
        raw[m * width + j] = (req[j] if (req[j] > 0.0 or req[j] != req[j]) else 0.0) / scales[m * width + j]
    obs[r + 2] = _py_min(req[2], enc[4]) / enc[4]
    obs[r + 3] = _py_min(req[3], enc[3]) / enc[3] if enc[3] > 0 else 0.0
    r += 4
    for j in range(probs.shape[0]):
        x = probs[j]
        obs[r + j] = 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)
    r += probs.shape[0]
    any_acc = False
    for k in range(m):
        any_acc = any_acc or inst[k, 0] > 0.5
    best_c = best_p = np.inf
    for k in range(m):
        if inst[k, 0] > 0.5 or not any_acc:
            best_c = _np_min(best_c, inst[k, 8])
            best_p = _np_min(best_p, inst[k, 9])
    per = 11 + 2 * bp * bd
    for k in range(m):
        b = r + k * per
        u = inst[k, 3] / _py_max(1.0, inst[k, 4])
        u = u if u > 0.0 else 0.0
        u = u if u < 1.0 else 1.0
        obs[b + 2] = u
        obs[b + 3] = 1.0 - u
        obs[b + 9] = (inst[k, 8] - best_c) / TIME_SCALE_S
        obs[b + 10] = (inst[k, 9] - best_p) / TIME_SCALE_S


@numba.njit(cache=True)
def decision(
    vs: np.ndarray,
    req: np.ndarray,
    lmc: np.ndarray,
    par: np.ndarray,
    stats: np.ndarray,
    pedges: np.ndarray,
    dedges: np.ndarray,
    enc: np.ndarray,
    scales: np.ndarray,
    probs: np.ndarray,
    inst: np.ndarray,
    hist: np.ndarray,
    in_system: np.ndarray,
    weights: np.ndarray,
    obs: np.ndarray,
    raw: np.ndarray,
    mask: np.ndarray,
) -> None:
    """One decision's outputs from the instances' ``stats`` rows: ``instance_rows`` into ``inst``, the
    counts into ``hist`` (m, 2, Bp, Bd: prefill, decode), requests on each instance into
    ``in_system`` (int64), pending weights into ``weights``, then ``encode_head``."""
    instance_rows(vs, req, lmc, par, stats, inst)
    m, cells = hist.shape[0], hist.shape[2] * hist.shape[3]
    for k in range(m):
        for j in range(2 * cells):
            hist[k, j // cells, (j % cells) // hist.shape[3], j % hist.shape[3]] = stats[k, j]
        in_system[k] = int(vs[k, 1] + vs[k, 2])
        weights[k] = stats[k, 2 * cells]
    encode_head(inst, stats[:, : 2 * cells], req, pedges, dedges, enc, scales, probs, obs, raw, mask)


@numba.njit(cache=True)
def encode_tail(obs: np.ndarray, sq: np.ndarray, m: int, cells: int, r_req: int, out: np.ndarray) -> None:
    """Second half of ``encode_observation``: the squashed inputs ``sq`` (``encode_head``'s ``raw``
    after ``np.log1p``) into their places in ``obs``, then ``obs`` clipped to [0, OBS_HIGH] (NaN kept,
    as ``np.maximum`` / ``np.minimum``) and cast to float32 into ``out``. ``r_req``: the position of
    the request's squashed prompt tokens."""
    nf = len(_SQ)
    width = nf + 2 * cells
    per = 11 + 2 * cells
    r = obs.shape[0] - m * per
    for k in range(m):
        b, s = r + k * per, k * width
        obs[b] = sq[s]
        obs[b + 1] = sq[s + 1]
        obs[b + 4 : b + 9] = sq[s + 2 : s + nf]
        obs[b + 11 : b + per] = sq[s + nf : s + width]
    obs[r_req] = sq[m * width]
    obs[r_req + 1] = sq[m * width + 1]
    for i in range(obs.shape[0]):
        x = obs[i]
        x = x if (x > 0.0 or x != x) else 0.0
        x = x if (x < OBS_HIGH or x != x) else OBS_HIGH
        out[i] = np.float32(x)


# ---------------------------------------------------------------------- the Python side
class CompiledObserver:
    """``SnapshotBuilder.build`` + ``action_mask`` + ``encode_observation`` of one decision through the
    kernels above (the same arguments as ``SnapshotBuilder``; the latency model must be linear:
    ``supports``). State between calls: each instance's last view, queue rows and batch rows, and its
    stats row (counts, weight, estimate), recomputed by ``instance_stats`` only for the instances
    whose view is a new object. Memory: O(requests on the cluster)."""

    def __init__(
        self,
        spec: ObsSpec,
        latency_model: LatencyModel,
        *,
        block_size: int,
        max_batch_size: int,
        alpha: float,
        progress_relief: float,
    ) -> None:
        if not supports(latency_model):
            raise TypeError(f"the kernel needs a LinearLatencyModel, got {type(latency_model).__name__}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        lm = latency_model
        self.spec = spec
        m = self.m = spec.num_instances
        self.bp, self.bd = spec.n_prompt_buckets, spec.n_decode_buckets
        self.cells = self.bp * self.bd
        self.edges = (
            np.asarray(spec.prompt_edges, dtype=np.float64),
            np.asarray(spec.decode_edges, dtype=np.float64),
        )
        self.lmc = np.array(
            [lm.base_s, lm.per_decode_seq_s, lm.grad1, lm.grad2, lm.attention2], dtype=np.float64
        )
        self.par = np.array([block_size, max_batch_size, alpha, progress_relief], dtype=np.float64)
        h = spec.hold_kv_headroom
        self.enc = np.array(
            [
                -1.0 if h is None else h,
                spec.block_size,
                float(spec.allow_delay),
                spec.max_delay_s,
                spec.queue_cap,
            ],
            dtype=np.float64,
        )
        self.scales = np.ascontiguousarray(squash_scales(m, self.cells))
        self.r_req = m + 1 + self.bp + self.bd
        self.vs = np.zeros((m, N_VIEW))
        self.changed = np.zeros(m, dtype=np.bool_)
        self.qbuf = np.zeros((m, 256, 4))
        self.qstart = np.zeros(m, dtype=np.int64)
        self.qlen = np.zeros(m, dtype=np.int64)
        self.bbuf = np.zeros((m, max(max_batch_size, 1), 4))
        self.blen = np.zeros(m, dtype=np.int64)
        self.tick = np.zeros(m)
        self.fast = np.zeros(m, dtype=np.bool_)
        self.stats = np.zeros((m, 2 * self.cells + 2))
        self.scratch = np.zeros(self.qbuf.shape[1] + self.bbuf.shape[1])
        self._views: list[InstanceView | None] = [None] * m
        self._queues: list[tuple[Any, ...]] = [()] * m
        self._batches: list[BatchStats | None] = [None] * m
        self._no_probs = np.zeros(0)
        self._obs = np.empty(spec.obs_dim)
        """Scratch: the observation in float64 before its float32 copy (``encode_head``)."""
        self._raw = np.empty(len(self.scales))
        """Scratch: the inputs to squash (``encode_head``), squashed in place by ``np.log1p``."""

    # -------------------------------------------------------------- buffers
    def _grow(self, queue: int, batch: int) -> None:
        """Room for ``queue`` queue rows and ``batch`` batch rows per instance (doubling)."""
        if queue > self.qbuf.shape[1]:
            q = np.zeros((self.m, max(queue, 2 * self.qbuf.shape[1]), 4))
            for k in range(self.m):
                s, n = int(self.qstart[k]), int(self.qlen[k])
                q[k, :n] = self.qbuf[k, s : s + n]
            self.qbuf = q
            self.qstart[:] = 0
        if batch > self.bbuf.shape[1]:
            b = np.zeros((self.m, max(batch, 2 * self.bbuf.shape[1]), 4))
            b[:, : self.bbuf.shape[1]] = self.bbuf
            self.bbuf = b
        self.scratch = np.zeros(self.qbuf.shape[1] + self.bbuf.shape[1])

    def _append(self, k: int, entries: tuple[Any, ...]) -> None:
        """Entries (prompt, predicted, generated, decoding) after instance ``k``'s queue rows."""
        n = len(entries)
        s, used = int(self.qstart[k]), int(self.qlen[k])
        if s + used + n > self.qbuf.shape[1]:
            if used + n > self.qbuf.shape[1]:
                self._grow(used + n, 0)
            else:  # slide the rows to the front
                self.qbuf[k, :used] = self.qbuf[k, s : s + used]
                self.qstart[k] = 0
            s = int(self.qstart[k])
        rows = self.qbuf[k, s + used : s + used + n]
        if n == 1:
            rows[0] = entries[0]
        else:
            rows[:] = np.fromiter(chain.from_iterable(entries), np.float64, 4 * n).reshape(n, 4)
        self.qlen[k] = used + n

    def _set_queue(self, k: int, q: tuple[Any, ...]) -> None:
        """Instance ``k``'s queue rows become ``q``: the cached entries less ``d`` at the front plus
        some at the back when ``q`` is that (compared by value), else ``q`` whole."""
        seen = self._queues[k]
        if q is seen:
            return
        self._queues[k] = q
        if q and seen:
            try:
                d = seen.index(q[0])
            except ValueError:
                d = -1
            kept = len(seen) - d
            if d >= 0 and kept <= len(q) and q[:kept] == seen[d:]:
                self.qstart[k] += d
                self.qlen[k] -= d
                if kept < len(q):
                    self._append(k, q[kept:])
                return
        self.qstart[k] = self.qlen[k] = 0
        if q:
            self._append(k, q)

    def _set_batch(self, k: int, b: BatchStats) -> None:
        """Instance ``k``'s batch rows become the simulator's ``BatchStats`` ``b`` (copied when new)."""
        if b is self._batches[k]:
            return
        self._batches[k] = b
        n = len(b)
        if n > self.bbuf.shape[1]:
            self._grow(0, n)
        rows = self.bbuf[k]
        rows[:n, 0] = b.prompt
        rows[:n, 1] = b.pred
        rows[:n, 2] = b.base
        rows[:n, 3] = b.decoding
        self.blen[k] = n

    def _set_view(self, k: int, v: InstanceView) -> None:
        """Instance ``k``'s view fields and stats rows from ``v``."""
        self.vs[k] = (
            1.0 if v.accepting else 0.0,
            v.num_running,
            v.num_waiting,
            v.kv_used_blocks,
            v.kv_total_blocks,
            v.outstanding_prompt_tokens,
            v.outstanding_decode_tokens,
            v.num_decode_requests,
        )
        s = v.request_stats
        if s is None:
            raise ValueError(
                "the views carry no request_stats: replay with ClusterConfig(request_stats=True) "
                "(routers with needs_request_stats=True get it from simulate)"
            )
        if isinstance(s, RequestStats):
            self._set_queue(k, s.queue)
            self._set_batch(k, s.batch)
            self.tick[k] = s.tick
            self.fast[k] = True
            return
        # a plain sequence of entries: the queue, then the running batch (its last num_running)
        entries = tuple(s)
        split = len(entries) - min(max(v.num_running, 0), len(entries))
        self._set_queue(k, entries[:split])
        self._batches[k] = None
        run = entries[split:]
        if len(run) > self.bbuf.shape[1]:
            self._grow(0, len(run))
        if run:
            self.bbuf[k, : len(run)] = np.fromiter(
                chain.from_iterable(run), np.float64, 4 * len(run)
            ).reshape(len(run), 4)
        self.blen[k] = len(run)
        self.tick[k] = 0.0
        self.fast[k] = False

    # -------------------------------------------------------------- one decision
    def observe(
        self, request: RequestView, cluster: ClusterView
    ) -> tuple[DecisionState, np.ndarray, np.ndarray]:
        """(the decision's ``DecisionState``, its action mask (bool, m + 1), its observation (float32,
        ``spec.obs_dim``)): what ``SnapshotBuilder.build``, ``action_mask`` and ``encode_observation``
        give. Raises ``ValueError`` like them (views without stats, a NaN in the simulator's batch)."""
        m = self.m
        views = cluster.instances
        if len(views) != m:
            raise ValueError(f"cluster has {len(views)} instances, the spec expects {m}")
        changed = False
        for k, v in enumerate(views):
            new = v is not self._views[k]
            self.changed[k] = new
            if new:
                self._set_view(k, v)
                self._views[k] = v
                changed = True
        if changed:
            self._run_stats()
        req_t = (
            float(request.prompt_tokens),
            float(request.predicted_output_tokens),
            float(cluster.router_queue_len),
            float(request.waited_s),
        )
        req = np.array(req_t)
        probs = None
        if self.spec.n_length_buckets:
            probs = length_bucket_probs(
                self.spec, req_t[1], request.predicted_bucket_probs, request.predicted_bucket_edges
            )
            if probs is None or len(probs) != self.spec.n_length_buckets:  # None: the spec reads none
                raise ValueError(
                    f"{0 if probs is None else len(probs)} length-bucket probabilities, "
                    f"the policy reads {self.spec.n_length_buckets}"
                )
        inst = np.empty((m, N_FIELDS))
        hist = np.empty((m, 2, self.bp, self.bd))
        in_system = np.empty(m, dtype=np.int64)
        weights = np.empty(m)
        mask = np.empty(m + 1, dtype=np.bool_)
        obs, raw = self._obs, self._raw
        decision(
            self.vs,
            req,
            self.lmc,
            self.par,
            self.stats,
            *self.edges,
            self.enc,
            self.scales,
            self._no_probs if probs is None else probs,
            inst,
            hist,
            in_system,
            weights,
            obs,
            raw,
            mask,
        )
        np.log1p(raw, out=raw)
        out = np.empty(self.spec.obs_dim, dtype=np.float32)
        encode_tail(obs, raw, m, self.cells, self.r_req, out)
        snap = RouterSnapshot(
            prompt_tokens=req_t[0],
            predicted_output_tokens=req_t[1],
            router_queue_len=req_t[2],
            waited_s=req_t[3],
            instances=inst,
            prefill_hist=hist[:, 0],
            decode_hist=hist[:, 1],
            predicted_bucket_probs=probs,
        )
        return DecisionState(snap, in_system, weights), mask, out

    def _run_stats(self) -> None:
        """``instance_stats`` over the changed instances; a NaN in a simulator batch raises."""
        bad = instance_stats(
            self.changed,
            self.fast,
            self.vs,
            self.qbuf,
            self.qstart,
            self.qlen,
            self.bbuf,
            self.blen,
            self.tick,
            *self.edges,
            self.lmc,
            self.par,
            self.stats,
            self.scratch,
        )
        if bad >= 0:
            for k in np.flatnonzero(self.changed).tolist():
                self._views[k] = None  # recomputed at the next call
            raise ValueError("NaN predicted or generated tokens in the simulator's batch stats")
