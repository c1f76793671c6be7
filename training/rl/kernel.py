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

What stays in Python per decision (``CompiledObserver``): reading the changed views' fields and
listing them, with each changed queue's delta (the simulator's queue, in arrival order, changes by
requests leaving at the front and joining at the back: only the new entries are listed, like
``SnapshotBuilder._queue_part``), as packed floats into one preallocated buffer; copying a running
batch when its ``BatchStats`` object changes; one kernel call (``observe_kernel``: the deltas applied,
stats, estimates, mask, encoder up to ``log1p``), ``np.log1p``, ``encode_tail``, and wrapping the
results in a ``DecisionState``. A queued request's histogram cell, progress and remaining tokens are
derived once, when it joins the kernel's copy of the queue (issue 16, fifth pass).
"""

from __future__ import annotations

import struct
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
QPLANES = 3
"""Planes of the queue buffer (``CompiledObserver.qbuf``, shape (3, m, rows)): per queued request,
what ``_derive`` gives for its entry, kept while it waits: its histogram cell (in the decode half
when it decodes), its progress and its remaining tokens. Plane by plane, so that a queue's scan reads
three contiguous runs."""


@numba.njit(cache=True, inline="always")
def _derive(
    p: float, q: float, g: float, dec: bool, pedges: np.ndarray, dedges: np.ndarray, half: int
) -> tuple[int, float, float]:
    """One request (prompt ``p``, predicted ``q``, generated ``g`` tokens, decoding ``dec``): its
    histogram cell (``half`` more when decoding), progress and remaining tokens, with numpy's NaN
    rules (``SnapshotBuilder._convert``)."""
    cell = _bisect_right(pedges, p) * (dedges.shape[0] + 1) + _bisect_right(dedges, q)
    if dec:
        cell += half
    r = q - g
    if r < 1.0:
        r = 1.0
    x = g / (q if (q > 1.0 or q != q) else 1.0)
    return cell, (x if (x < 1.0 or x != x) else 1.0), r


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
    ``qbuf[:, k, qstart[k]:qstart[k]+qlen[k]]`` (``QPLANES``: each entry's cell, progress and remaining
    tokens) and batch rows ``bbuf[k, :blen[k]]`` (prompt, predicted, generated at tick 0,
    decoding) at decode tick ``tick[k]``. ``par`` = (block size, max batch size, alpha,
    progress relief). Returns -1, or the first instance with ``strict[k]`` (the simulator's
    ``BatchStats``) whose batch holds a NaN (``SnapshotBuilder._batch`` raises there; elsewhere a NaN
    propagates as in ``SnapshotBuilder._convert``)."""
    cells2 = out.shape[1] - 2
    half = cells2 // 2
    for k in range(vs.shape[0]):
        if not changed[k]:
            continue
        out[k, :] = 0.0
        c = 0
        decoding = False
        nan_all = nan_dec = False
        min_all = min_dec = np.inf
        for i in range(qstart[k], qstart[k] + qlen[k]):
            cell = int(qbuf[0, k, i])
            dec = cell >= half
            out[k, cell] += 1.0
            x, r = qbuf[1, k, i], qbuf[2, k, i]
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
            cell, x, r = _derive(bbuf[k, i, 0], bbuf[k, i, 1], g, dec, pedges, dedges, half)
            out[k, cell] += 1.0
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
) -> tuple[float, int]:
    """One decision's outputs from the instances' ``stats`` rows: ``instance_rows`` into ``inst``, the
    counts into ``hist`` (m, 2, Bp, Bd: prefill, decode), requests on each instance into
    ``in_system`` (int64), pending weights into ``weights``, then ``encode_head``. Returns the sums
    of ``weights`` (``np.add.reduce``'s, bit for bit) and of ``in_system``: what the reward reads."""
    instance_rows(vs, req, lmc, par, stats, inst)
    m, cells = hist.shape[0], hist.shape[2] * hist.shape[3]
    for k in range(m):
        for j in range(2 * cells):
            hist[k, j // cells, (j % cells) // hist.shape[3], j % hist.shape[3]] = stats[k, j]
        in_system[k] = int(vs[k, 1] + vs[k, 2])
        weights[k] = stats[k, 2 * cells]
    encode_head(inst, stats[:, : 2 * cells], req, pedges, dedges, enc, scales, probs, obs, raw, mask)
    total = 0
    for k in range(m):
        total += in_system[k]
    return _pairwise(weights, m), total


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


# ---------------------------------------------------------------------- one call per decision
REQ = 4
"""Leading entries of ``observe_kernel``'s ``upd``: the request's prompt tokens, predicted output
tokens, the router queue length and the seconds it waited (``encode_head``'s ``req``)."""
HEAD = 8
"""Fields of one instance's record in ``upd`` before its view fields: instance, queue start, queue
length, row where its new queue entries go, their number, decode tick, simulator stats (1.0) or not,
running-batch rows."""
RECORD = HEAD + N_VIEW
_REQ_BYTES = struct.Struct(f"={REQ}d")
_RECORD_BYTES = struct.Struct(f"={RECORD}d")
_ENTRY_BYTES = struct.Struct("=4d")
"""``upd``'s parts as packed native float64 (``struct`` converts ints and bools as ``float()`` does)."""


@numba.njit(cache=True)
def apply_updates(
    upd: np.ndarray,
    n_upd: int,
    changed: np.ndarray,
    vs: np.ndarray,
    qbuf: np.ndarray,
    qstart: np.ndarray,
    qlen: np.ndarray,
    blen: np.ndarray,
    tick: np.ndarray,
    fast: np.ndarray,
    pedges: np.ndarray,
    dedges: np.ndarray,
    half: int,
) -> None:
    """The changed instances' records of ``upd[:n_upd]`` (after its ``REQ`` request entries) into the state
    arrays: ``changed[k]`` set for each and cleared for the others, the view fields into ``vs[k]``,
    queue start and length, decode tick, stats kind and batch length, and the new queue entries
    (4 floats each, after the record: prompt, predicted, generated tokens, decoding) as their
    ``_derive``d cell, progress and remaining tokens into ``qbuf[:, k]`` (``QPLANES``) from the
    record's row on (``half``: the decode half's first cell). Records are
    ``RECORD`` floats (``HEAD`` then ``N_VIEW``), written by ``CompiledObserver.observe``."""
    changed[:] = False
    i = REQ
    while i < n_upd:
        k = int(upd[i])
        changed[k] = True
        qstart[k] = int(upd[i + 1])
        qlen[k] = int(upd[i + 2])
        row, n = int(upd[i + 3]), int(upd[i + 4])
        tick[k] = upd[i + 5]
        fast[k] = upd[i + 6] > 0.5
        blen[k] = int(upd[i + 7])
        vs[k, :] = upd[i + HEAD : i + RECORD]
        i += RECORD
        for j in range(n):
            cell, x, r = _derive(upd[i], upd[i + 1], upd[i + 2], upd[i + 3] > 0.5, pedges, dedges, half)
            qbuf[0, k, row + j] = cell
            qbuf[1, k, row + j] = x
            qbuf[2, k, row + j] = r
            i += 4


@numba.njit(cache=True)
def observe_kernel(
    upd: np.ndarray,
    n_upd: int,
    changed: np.ndarray,
    fast: np.ndarray,
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
    stats: np.ndarray,
    scratch: np.ndarray,
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
) -> tuple[int, float, int]:
    """A decision up to the squashing, in one call: ``apply_updates``, ``instance_stats`` over the
    changed instances, then ``decision`` with the request ``upd[:REQ]``. Returns (-1 or the instance
    whose simulator batch holds a NaN: nothing after the stats is computed then, the weight sum, the
    request count), the sums as ``decision`` gives them."""
    half = stats.shape[1] // 2 - 1  # the decode half's first histogram cell
    apply_updates(upd, n_upd, changed, vs, qbuf, qstart, qlen, blen, tick, fast, pedges, dedges, half)
    bad = instance_stats(
        changed, fast, vs, qbuf, qstart, qlen, bbuf, blen, tick, pedges, dedges, lmc, par, stats, scratch
    )
    if bad >= 0:
        return bad, 0.0, 0
    req = upd[:REQ]
    w, n = decision(
        vs,
        req,
        lmc,
        par,
        stats,
        pedges,
        dedges,
        enc,
        scales,
        probs,
        inst,
        hist,
        in_system,
        weights,
        obs,
        raw,
        mask,
    )
    return -1, w, n


# ---------------------------------------------------------------------- the Python side
def _extends(q: tuple[Any, ...], seen: tuple[Any, ...], d: int, kept: int) -> bool:
    """``q[:kept] == seen[d:]`` (``kept = len(seen) - d <= len(q)``), slicing only one side when the
    other is whole (nothing dropped, or nothing added: the usual cases)."""
    if d == 0:
        return (q if kept == len(q) else q[:kept]) == seen
    if kept == len(q):
        return q == seen[d:]
    return q[:kept] == seen[d:]


class CompiledObserver:
    """``SnapshotBuilder.build`` + ``action_mask`` + ``encode_observation`` of one decision through the
    kernels above (the same arguments as ``SnapshotBuilder``; the latency model must be linear:
    ``supports``). State between calls: each instance's last view, queue rows and batch rows, and its
    stats row (counts, weight, estimate), recomputed by ``instance_stats`` only for the instances
    whose view is a new object. Memory: O(requests on the cluster).

    Per decision the Python side only reads the changed views and lists what changed as floats
    (``upd``: the request, then one record per changed instance with its new queue entries, see
    ``apply_updates``); a batch whose ``BatchStats`` object is new is copied here. One kernel call
    (``observe_kernel``) then applies the records and computes everything up to the squashing,
    ``np.log1p`` squashes, ``encode_tail`` finishes. Who keeps the queues' positions: this object
    (``_qs``, ``_ql``, the truth), mirrored in ``qstart`` / ``qlen`` by the kernel."""

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
        self.qbuf = np.zeros((QPLANES, m, 256))
        self.qstart = np.zeros(m, dtype=np.int64)
        self.qlen = np.zeros(m, dtype=np.int64)
        self.bbuf = np.zeros((m, max(max_batch_size, 1), 4))
        self.blen = np.zeros(m, dtype=np.int64)
        self.tick = np.zeros(m)
        self.fast = np.zeros(m, dtype=np.bool_)
        self.stats = np.zeros((m, 2 * self.cells + 2))
        self.scratch = np.zeros(self.qbuf.shape[2] + self.bbuf.shape[1])
        self._views: list[InstanceView | None] = [None] * m
        self._queues: list[tuple[Any, ...]] = [()] * m
        self._batches: list[BatchStats | None] = [None] * m
        self._qs = [0] * m
        """Per instance, the row of ``qbuf`` where its queue starts (the kernel's ``qstart`` follows)."""
        self._ql = [0] * m
        """Per instance, its queue rows (the kernel's ``qlen`` follows)."""
        self._set_upd(np.zeros(REQ + m * (RECORD + 4)))
        self._no_probs = np.zeros(0)
        self._n_probs = spec.n_length_buckets
        self._obs_dim = spec.obs_dim
        self._hist_shape = (m, 2, self.bp, self.bd)
        self._obs = np.empty(spec.obs_dim)
        """Scratch: the observation in float64 before its float32 copy (``encode_head``)."""
        self._raw = np.empty(len(self.scales))
        """Scratch: the inputs to squash (``encode_head``), squashed in place by ``np.log1p``."""
        self.weight_sum = 0.0
        """The last ``observe``'s pending weights summed (``np.add.reduce(pending_weight)``, bit for bit)."""
        self.in_system_sum = 0
        """The last ``observe``'s requests on the cluster (the sum of ``in_system``)."""

    # -------------------------------------------------------------- buffers
    def _set_upd(self, upd: np.ndarray) -> None:
        """``upd`` (float64) becomes the change buffer: one decision's changes (``apply_updates``),
        rewritten from the front at every call, packed through ``_updv`` (its memoryview)."""
        self.upd = upd
        self._updv = upd.data

    def _grow(self, queue: int, batch: int) -> None:
        """Room for ``queue`` queue rows and ``batch`` batch rows per instance (at least doubling).
        Rows keep their places, so the rows of records already listed for this decision stay right."""
        if queue > self.qbuf.shape[2]:
            q = np.zeros((QPLANES, self.m, max(queue, 2 * self.qbuf.shape[2])))
            q[:, :, : self.qbuf.shape[2]] = self.qbuf
            self.qbuf = q
        if batch > self.bbuf.shape[1]:
            b = np.zeros((self.m, max(batch, 2 * self.bbuf.shape[1]), 4))
            b[:, : self.bbuf.shape[1]] = self.bbuf
            self.bbuf = b
        self.scratch = np.zeros(self.qbuf.shape[2] + self.bbuf.shape[1])

    def _reserve(self, k: int, n: int) -> int:
        """Room for ``n`` more queue rows of instance ``k`` (its rows slid to the front, or the buffer
        grown, when its tail is full); counts them in its length and returns the first new row."""
        s, used = self._qs[k], self._ql[k]
        if s + used + n > self.qbuf.shape[2]:
            if used + n > self.qbuf.shape[2]:
                self._grow(s + used + n, 0)
            else:  # slide the rows to the front
                self.qbuf[:, k, :used] = self.qbuf[:, k, s : s + used]
                self._qs[k] = s = 0
        self._ql[k] = used + n
        return s + used

    def _queue(self, k: int, q: tuple[Any, ...]) -> tuple[int, tuple[Any, ...]]:
        """Instance ``k``'s queue becomes ``q``: the cached entries less ``d`` at the front plus some at
        the back when ``q`` is that (compared by value), else ``q`` whole. Returns the first row for
        the entries to add and those entries (the kernel writes them)."""
        seen = self._queues[k]
        if q is seen:
            return 0, ()
        self._queues[k] = q
        if q and seen:
            try:
                d = seen.index(q[0])
            except ValueError:
                d = -1
            kept = len(seen) - d
            if d >= 0 and kept <= len(q) and _extends(q, seen, d, kept):
                self._qs[k] += d
                self._ql[k] -= d
                new = q[kept:]
                return (self._reserve(k, len(new)), new) if new else (0, ())
        self._qs[k] = self._ql[k] = 0
        return (self._reserve(k, len(q)), q) if q else (0, ())

    def _batch(self, k: int, b: BatchStats) -> None:
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

    def _plain_batch(self, k: int, run: tuple[Any, ...]) -> None:
        """Instance ``k``'s batch rows from plain entries (views not made by the simulator)."""
        self._batches[k] = None
        if len(run) > self.bbuf.shape[1]:
            self._grow(0, len(run))
        if run:
            self.bbuf[k, : len(run)] = np.fromiter(
                chain.from_iterable(run), np.float64, 4 * len(run)
            ).reshape(len(run), 4)

    def _record(self, k: int, v: InstanceView, at: int) -> int:
        """Instance ``k``'s record (``apply_updates``) for its new view ``v`` into ``self.upd`` at entry
        ``at``, its new queue entries after it (its batch rows copied when new); returns the entry
        after them."""
        s = v.request_stats
        if s is None:
            raise ValueError(
                "the views carry no request_stats: replay with ClusterConfig(request_stats=True) "
                "(routers with needs_request_stats=True get it from simulate)"
            )
        if isinstance(s, RequestStats):
            q = s.queue
            row, new = (0, ()) if q is self._queues[k] else self._queue(k, q)
            b = s.batch
            if b is not self._batches[k]:
                self._batch(k, b)
            nb, tick, fast = len(b.prompt), s.tick, 1.0
        else:  # a plain sequence of entries: the queue, then the running batch (its last num_running)
            entries = tuple(s)
            split = len(entries) - min(max(v.num_running, 0), len(entries))
            row, new = self._queue(k, entries[:split])
            run = entries[split:]
            self._plain_batch(k, run)
            nb, tick, fast = len(run), 0, 0.0
        n = len(new)
        end = at + RECORD + 4 * n
        if end > len(self.upd):
            self._set_upd(np.concatenate((self.upd, np.zeros(max(end, 2 * len(self.upd))))))
        buf = self._updv
        _RECORD_BYTES.pack_into(
            buf,
            8 * at,
            k,
            self._qs[k],
            self._ql[k],
            row,
            n,
            tick,
            fast,
            nb,
            1.0 if v.accepting else 0.0,
            v.num_running,
            v.num_waiting,
            v.kv_used_blocks,
            v.kv_total_blocks,
            v.outstanding_prompt_tokens,
            v.outstanding_decode_tokens,
            v.num_decode_requests,
        )
        if n == 1:
            _ENTRY_BYTES.pack_into(buf, 8 * (at + RECORD), *new[0])
        elif n:
            self.upd[at + RECORD : end] = np.fromiter(chain.from_iterable(new), np.float64, 4 * n)
        return end

    def _forget(self) -> None:
        """Drop every cache (after an error while listing a decision's changes): the next call
        rebuilds each instance from its view."""
        m = self.m
        self._views = [None] * m
        self._queues = [()] * m
        self._batches = [None] * m
        self._qs = [0] * m
        self._ql = [0] * m

    # -------------------------------------------------------------- one decision
    def observe(
        self, request: RequestView, cluster: ClusterView
    ) -> tuple[DecisionState, np.ndarray, np.ndarray]:
        """(the decision's ``DecisionState``, its action mask (bool, m + 1), its observation (float32,
        ``spec.obs_dim``)): what ``SnapshotBuilder.build``, ``action_mask`` and ``encode_observation``
        give. Also sets ``weight_sum`` and ``in_system_sum`` (the reward's sums). Raises
        ``ValueError`` like them (views without stats, a NaN in the simulator's batch)."""
        m = self.m
        views = cluster.instances
        if len(views) != m:
            raise ValueError(f"cluster has {len(views)} instances, the spec expects {m}")
        req = (
            float(request.prompt_tokens),
            float(request.predicted_output_tokens),
            float(cluster.router_queue_len),
            float(request.waited_s),
        )
        _REQ_BYTES.pack_into(self._updv, 0, *req)
        seen = self._views
        probs = None
        at = REQ
        try:
            for k in range(m):
                v = views[k]
                if v is not seen[k]:
                    at = self._record(k, v, at)
                    seen[k] = v
            if self._n_probs:
                probs = length_bucket_probs(
                    self.spec, req[1], request.predicted_bucket_probs, request.predicted_bucket_edges
                )
                if probs is None or len(probs) != self._n_probs:  # None: the spec reads none
                    raise ValueError(
                        f"{0 if probs is None else len(probs)} length-bucket probabilities, "
                        f"the policy reads {self._n_probs}"
                    )
        except BaseException:  # the caches no longer match the kernel's state: rebuild them next time
            self._forget()
            raise
        inst = np.empty((m, N_FIELDS))
        hist = np.empty(self._hist_shape)
        in_system = np.empty(m, dtype=np.int64)
        weights = np.empty(m)
        mask = np.empty(m + 1, dtype=np.bool_)
        raw = self._raw
        bad, self.weight_sum, self.in_system_sum = observe_kernel(
            self.upd,
            at,
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
            self.enc,
            self.scales,
            self._no_probs if probs is None else probs,
            inst,
            hist,
            in_system,
            weights,
            self._obs,
            raw,
            mask,
        )
        if bad >= 0:
            for k in np.flatnonzero(self.changed).tolist():
                self._views[k] = None  # recomputed at the next call
            raise ValueError("NaN predicted or generated tokens in the simulator's batch stats")
        np.log1p(raw, out=raw)
        out = np.empty(self._obs_dim, dtype=np.float32)
        encode_tail(self._obs, raw, m, self.cells, self.r_req, out)
        snap = RouterSnapshot(*req, inst, hist[:, 0], hist[:, 1], {}, probs)  # the fields in their order
        return DecisionState(snap, in_system, weights), mask, out
