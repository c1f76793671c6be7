"""Router views -> the serving snapshot (``policy_serving.RouterSnapshot``), plus reward inputs.

Who calls this: the RL env and the learned-router adapter (``training.rl.router``), once per routing
decision each. The request's length prediction enters as its expected length and, for policies whose
``ObsSpec.predicted_bucket_edges`` is set, the predictor's bucket probabilities
(``policy_serving.length_bucket_probs``: one-hot on the expected length's bucket for a predictor that
gives only a length). Both build the snapshot here and encode it with THE encoder in
``training.rl.policy_serving``, so what the policy sees in training, in the harness and behind MLflow
is the same function.

The views must carry ``request_stats`` (``ClusterConfig.request_stats``; the env sets it, and the
simulator turns it on for routers with ``needs_request_stats``): per-bucket prefill/decode counts,
the earliest-completion estimate and the reward's progress term are computed from them.

Estimates use the profile's latency model: ``completion_s`` is ``min_min``'s predicted E2E of the
request on the instance and ``mixing_penalty_s`` the paper's mixing penalty (alpha = 0.5; Jain et
al., arXiv 2408.13510, Section 4), both additions to the paper's state (its heuristic guidance enters
the state this way).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from training.impact.penalty import DEFAULT_ALPHA
from training.rl.policy_serving import ObsSpec, RouterSnapshot, length_bucket_probs
from training.routing.estimates import decode_step_s, prefill_s
from training.simulator.interface import BatchStats, ClusterView, InstanceView, RequestStats, RequestView
from training.simulator.latency import LatencyModel


@dataclass(frozen=True)
class DecisionState:
    """A snapshot plus what the reward needs at the same decision (not shown to the policy).

    ``in_system``: requests on each instance (running + waiting); ``pending_weight``: per instance,
    the sum over its requests of ``1 - progress_relief x progress`` (progress = generated / predicted
    tokens, capped at 1).
    """

    snapshot: RouterSnapshot
    in_system: np.ndarray
    pending_weight: np.ndarray


@dataclass(frozen=True, slots=True)
class _Part:
    """What the builder derives from one run of ``request_stats`` entries (cached per instance part).

    ``hist``: int64 counts per histogram cell (decoding x prompt bucket x decode bucket);
    ``progress``: per entry, generated / predicted tokens capped at 1, in the entries' order;
    ``min_remaining``: min over entries of ``max(predicted - generated, 1)`` (inf when none);
    ``min_remaining_decoding``: the same over decoding entries (inf when none decodes);
    ``decoding``: whether any entry decodes.
    """

    hist: np.ndarray
    progress: np.ndarray
    min_remaining: float
    min_remaining_decoding: float
    decoding: bool


_SUM, _MIN, _ANY = np.add.reduce, np.minimum.reduce, np.logical_or.reduce
"""``ndarray.sum`` / ``min`` / ``any`` without their Python wrappers (the same reductions)."""


def _nan_min(a: float, b: float) -> float:
    """``min`` that propagates NaN like ``numpy.min`` (so a split min equals the whole one)."""
    if a != a or b != b:  # NaN
        return float("nan")
    return a if a <= b else b


def _index(entries: tuple[Any, ...], entry: Any) -> int:
    """Position of the first entry equal to ``entry`` (identity first, as ``tuple.index``), or -1."""
    try:
        return entries.index(entry)
    except ValueError:
        return -1


class SnapshotBuilder:
    """Builds snapshots for one cluster shape and latency model.

    Cost (issue 16): the per-request stats are the bulk of a decision (hundreds of requests per
    instance under overload), so the builder keeps, per instance, what it derived last time and
    redoes only what changed:

    - an instance whose view is the very object it saw last (the replay hands out the same frozen
      view while an instance has not changed) keeps its bucket counts, pending weight and
      earliest-completion estimate;
    - otherwise its ``request_stats`` are read in two parts, the queue (waiting and preempted
      requests: they change only when a request joins or leaves) and the running batch (the last
      ``num_running`` entries). A part equal to the cached one (a tuple comparison) is reused, one
      that extends it (a request appended to a FCFS queue) converts only the new entries, others
      convert whole; the entries to convert, of all instances, become one float64 array reduced with
      vectorised numpy (one ``bincount`` for every histogram);
    - stats that are the simulator's ``RequestStats`` (the env's and the learned router's replays)
      skip the tuples (``_fast_stats``): the queue is kept in arrival order, so a new queue is the
      cached one less some requests at the front plus some at the back, applied as a delta
      (``_queue_part``); the running batch comes as ``BatchStats`` arrays per composition, whose
      counts and minima are derived once per composition and whose progress is four array
      operations per decision (``_batch_part``) (issue 16, third pass).

    The caches are keyed by value (and by identity of frozen views), so a snapshot is the same
    function of ``(request, cluster)`` as without them: ``tests/training/rl/test_observation.py``
    holds it equal, bit for bit, to the per-instance reference it replaced, over a real replay and
    Hypothesis-drawn view sequences. They hold the last views' stats (memory O(requests on the
    cluster)) and nothing else between calls. The work left in Python per decision is O(m): the
    latency estimates (``MinMin.completion_s``, ``mixing_penalty_s``) and one pairwise progress sum
    per changed instance (kept per instance, in the stats' order, so that it is bit-equal too).
    """

    def __init__(
        self,
        spec: ObsSpec,
        latency_model: LatencyModel,
        *,
        block_size: int,
        max_batch_size: int,
        alpha: float = DEFAULT_ALPHA,
        progress_relief: float = 0.5,
    ) -> None:
        self.spec = spec
        self.lm = latency_model
        self.block_size = block_size
        self.max_batch = max_batch_size
        self.alpha = alpha
        self.progress_relief = progress_relief
        self._pedges = np.asarray(spec.prompt_edges, dtype=np.float64)
        self._dedges = np.asarray(spec.decode_edges, dtype=np.float64)
        self._pedges_t = tuple(self._pedges.tolist())
        self._dedges_t = tuple(self._dedges.tolist())
        self.small_part = 40
        """Runs of stats entries up to this long are converted in Python, longer ones with numpy
        (``_convert_all``; measured: 21 entries take ~10 us in Python, ~19 us through numpy)."""
        self._bp, self._bd = spec.n_prompt_buckets, spec.n_decode_buckets
        self._cells = 2 * self._bp * self._bd
        """Histogram cells per instance: (prefill | decode) x prompt bucket x decode bucket."""
        self._empty = _Part(np.zeros(self._cells, np.int64), np.zeros(0), np.inf, np.inf, False)
        self._cache: list[tuple[tuple[Any, ...], _Part]] = [
            ((), self._empty) for _ in range(2 * spec.num_instances)
        ]
        """Per (instance, part): the part's last entries and what they gave (``_parts``)."""
        self._last: list[tuple[InstanceView | None, np.ndarray, float, float]] = [
            (None, self._empty.hist, 0.0, 0.0) for _ in range(spec.num_instances)
        ]
        """Per instance: its last view, and the bucket counts, pending weight and earliest-completion
        estimate it gave (``_instance_stats``)."""
        self._bcache: list[tuple[BatchStats | None, tuple[Any, ...]]] = [
            (None, ()) for _ in range(spec.num_instances)
        ]
        """Per instance: the last running batch's ``BatchStats`` and what ``_batch`` derived of it."""
        self._blast: list[tuple[BatchStats | None, int, _Part]] = [
            (None, 0, self._empty) for _ in range(spec.num_instances)
        ]
        """Per instance: the last (batch, tick) ``_batch_part`` saw and the ``_Part`` it gave."""
        self._qfast: list[tuple[tuple[Any, ...] | None, _Part]] = [
            (None, self._empty) for _ in range(spec.num_instances)
        ]
        """Per instance: the last ``RequestStats.queue`` tuple and its ``_Part``."""
        self._qrem: list[np.ndarray] = [np.zeros(0) for _ in range(spec.num_instances)]
        """Per instance: ``max(pred - generated, 1)`` of each entry of its cached queue (``_queue_part``)."""
        self._hsum: list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray]] = [
            (None, None, self._empty.hist) for _ in range(spec.num_instances)
        ]
        """Per instance: the queue's and the batch's counts last summed, and their float64 sum."""
        self._terms: list[tuple[InstanceView | None, tuple[Any, ...]]] = [
            (None, ()) for _ in range(spec.num_instances)
        ]
        """Per instance: its last view and its request-independent terms (``_view_terms``)."""

    def _parts(self, changed: list[tuple[int, InstanceView]]) -> list[_Part]:
        """``_Part`` of the queue and the running batch of each ``(index, view)`` in ``changed``: two
        per instance, in that order. A part equal to the cached one is reused; one that extends it
        (requests appended to a FCFS queue) converts only the new entries; others convert whole."""
        cache = self._cache
        out: list[_Part] = []
        todo: list[
            tuple[int, int, tuple[Any, ...], _Part | None]
        ] = []  # (out position, slot, entries, prefix)
        fresh: list[tuple[Any, ...]] = []
        for k, v in changed:
            s = v.request_stats
            if s is None:
                raise ValueError(
                    "the views carry no request_stats: replay with ClusterConfig(request_stats=True) "
                    "(routers with needs_request_stats=True get it from simulate)"
                )
            split = len(s) - min(max(v.num_running, 0), len(s))
            for j, part in ((2 * k, s[:split]), (2 * k + 1, s[split:])):
                seen, got = cache[j]
                if part == seen:
                    out.append(got)
                    continue
                if not part:
                    cache[j] = ((), self._empty)
                elif seen and len(part) > len(seen) and part[: len(seen)] == seen:
                    todo.append((len(out), j, part, got))
                    fresh.append(part[len(seen) :])
                else:
                    todo.append((len(out), j, part, None))
                    fresh.append(part)
                out.append(self._empty)
        if todo:
            for (i, j, part, prefix), got in zip(todo, self._convert_all(fresh), strict=True):
                if prefix is not None:
                    got = _Part(
                        prefix.hist + got.hist,
                        np.concatenate((prefix.progress, got.progress)),
                        _nan_min(prefix.min_remaining, got.min_remaining),
                        _nan_min(prefix.min_remaining_decoding, got.min_remaining_decoding),
                        prefix.decoding or got.decoding,
                    )
                out[i] = got
                cache[j] = (part, got)
        return out

    def _batch_part(self, k: int, s: RequestStats) -> _Part:
        """``_Part`` of instance ``k``'s running batch from the simulator's arrays: what depends only
        on the batch's composition (bucket counts, ``max(pred, 1)``, the minima of ``pred - generated``
        at tick 0) once per ``BatchStats`` object (``_batch``), then per call the progress in four
        array operations and the minima shifted by the tick. The same values as ``_convert`` of the
        entries: elementwise the same IEEE operations, and ``pred - (base + tick)`` equals
        ``(pred - base) - tick`` because the replay's predictions are multiples of 1/1024 token and
        token counts are integers (every difference is exact), so the minimum commutes with the shift.
        The last result is kept per instance: a view that changed only in its queue (a request routed
        there) has the same batch at the same tick."""
        b = s.batch
        t = s.tick
        lb, lt, lp = self._blast[k]
        if lb is b and lt == t:
            return lp
        seen, got = self._bcache[k]
        if seen is not b:
            got = self._batch(b)
            self._bcache[k] = (b, got)
        hist, pmax, dec_f, r0_dec, r0_pre, decoding = got
        if pmax is None:  # an empty batch
            part = self._empty
        else:
            progress = np.minimum((b.base + t * dec_f) / pmax, 1.0)
            min_dec = r0_dec - t if decoding else math.inf
            if min_dec < 1.0:
                min_dec = 1.0
            min_all = min_dec if min_dec <= r0_pre else (r0_pre if r0_pre >= 1.0 else 1.0)
            part = _Part(hist, progress, min_all, min_dec, decoding)
        self._blast[k] = (b, t, part)
        return part

    def _batch(self, b: BatchStats) -> tuple[Any, ...]:
        """What ``_batch_part`` needs of one batch composition: (bucket counts (cells,) int64,
        ``max(pred, 1)``, ``decoding`` as float64, the minimum of ``pred - base`` over the decoding and
        over the prefilling requests (inf when none), whether any decodes); ``pmax`` None for an empty
        batch. Raises ``ValueError`` on a NaN (the replay's predictions are finite)."""
        n = len(b)
        if n == 0:
            return (self._empty.hist, None, None, math.inf, math.inf, False)
        dec = b.decoding
        idx = self._pedges.searchsorted(b.prompt, side="right") * self._bd
        idx += self._dedges.searchsorted(b.pred, side="right")
        idx += dec * (self._cells // 2)
        hist = np.bincount(idx, minlength=self._cells)
        rem = b.pred - b.base
        n_dec = int(np.count_nonzero(dec))
        r0_dec = float(_MIN(rem[dec])) if n_dec else math.inf
        r0_pre = float(_MIN(rem[~dec])) if n_dec < n else math.inf
        if r0_dec != r0_dec or r0_pre != r0_pre:
            raise ValueError("NaN predicted or generated tokens in the simulator's batch stats")
        return (hist, np.maximum(b.pred, 1.0), dec.astype(np.float64), r0_dec, r0_pre, n_dec > 0)

    def _convert_all(self, parts: list[tuple[Any, ...]]) -> list[_Part]:
        """``_Part`` of each (non-empty) run of entries: runs of at most ``small_part`` entries in plain
        Python (``_convert_small``: a running batch of ~20 requests costs half of a numpy pass), the
        others, and any with a NaN, in one numpy pass (``_convert``)."""
        out: list[_Part | None] = [
            self._convert_small(p) if len(p) <= self.small_part else None for p in parts
        ]
        big = [i for i, got in enumerate(out) if got is None]
        if big:
            for i, got in zip(big, self._convert([parts[i] for i in big]), strict=True):
                out[i] = got
        return [got for got in out if got is not None]

    def _convert_small(self, part: tuple[Any, ...]) -> _Part | None:
        """``_convert`` of one run in Python floats: the same IEEE operations entry by entry, so the
        same values (``test_observation.py`` runs both paths over the same views); None when an entry
        has a NaN (numpy's NaN rules for ``maximum`` / ``minimum`` then differ from these comparisons)."""
        pe, de, bd, half = self._pedges_t, self._dedges_t, self._bd, self._cells // 2
        hist = [0] * self._cells
        progress = []
        min_all = min_dec = math.inf
        decoding = False
        for p, q, g, d in part:
            q = float(q)
            g = float(g)
            r = q - g
            if r != r:  # NaN: a predicted or generated count is NaN (or inf - inf)
                return None
            if r < 1.0:
                r = 1.0
            c = bisect_right(pe, float(p)) * bd + bisect_right(de, q)
            if d > 0.5:
                c += half
                decoding = True
                if r < min_dec:
                    min_dec = r
            if r < min_all:
                min_all = r
            hist[c] += 1
            x = g / (q if q > 1.0 else 1.0)
            progress.append(x if x < 1.0 else 1.0)
        return _Part(np.array(hist, dtype=np.int64), np.array(progress), min_all, min_dec, decoding)

    def _convert(self, parts: list[tuple[Any, ...]]) -> list[_Part]:
        """``_Part`` of each (non-empty) run of entries, with one conversion and one pass of numpy."""
        lens = [len(p) for p in parts]
        n, cells, bd = sum(lens), self._cells, self._bd
        arr = np.fromiter(chain.from_iterable(chain.from_iterable(parts)), np.float64, 4 * n).reshape(n, 4)
        prompt, pred, gen = arr[:, 0], arr[:, 1], arr[:, 2]
        dec = arr[:, 3] > 0.5
        idx = self._pedges.searchsorted(prompt, side="right") * bd
        idx += self._dedges.searchsorted(pred, side="right")
        idx += dec * (cells // 2)
        if len(parts) > 1:
            idx += np.arange(0, len(parts) * cells, cells).repeat(lens)
        hists = np.bincount(idx, minlength=len(parts) * cells).reshape(len(parts), cells)
        progress = np.minimum(gen / np.maximum(pred, 1.0), 1.0)
        remaining = np.maximum(pred - gen, 1.0)
        remaining_dec = np.where(dec, remaining, np.inf)
        if len(parts) == 1:
            return [
                _Part(
                    hists[0],
                    progress,
                    float(_MIN(remaining)),
                    float(_MIN(remaining_dec)),
                    bool(_ANY(dec)),
                )
            ]
        ends = np.cumsum(np.array(lens, dtype=np.intp))
        starts = (ends - lens).astype(np.intp)
        min_all = np.minimum.reduceat(remaining, starts).tolist()
        min_dec = np.minimum.reduceat(remaining_dec, starts).tolist()
        any_dec = np.logical_or.reduceat(dec, starts).tolist()
        return [
            _Part(hists[i], progress[a:b], min_all[i], min_dec[i], any_dec[i])
            for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True))
        ]

    def _instance_stats(self, views: tuple[InstanceView, ...]) -> tuple[np.ndarray, np.ndarray, list[float]]:
        """Per instance, over its ``request_stats``: the 2 x Bp x Bd bucket counts (m, 2 Bp Bd)
        float64, the pending weight (m,) and the earliest-completion estimate (m floats).

        An instance whose view is the very object of the previous call (the replay hands out the
        same frozen view while the instance has not changed) keeps its previous values; one whose
        stats are the simulator's ``RequestStats`` goes through ``_fast_stats``, others through
        ``_parts`` (tuples of entries)."""
        last = self._last
        changed = []
        for k, v in enumerate(views):
            if v is last[k][0]:
                continue
            s = v.request_stats
            if isinstance(s, RequestStats):
                last[k] = (v, *self._fast_stats(k, v, s))
            else:
                changed.append((k, v))
        if changed:
            parts = self._parts(changed)
            for i, (k, v) in enumerate(changed):
                last[k] = (v, *self._stats_of(v, parts[2 * i], parts[2 * i + 1], None))
        hists = np.array([e[1] for e in last], dtype=np.float64)
        weights = np.array([e[2] for e in last], dtype=np.float64)
        return hists, weights, [e[3] for e in last]

    def _stats_of(
        self, v: InstanceView, head: _Part, tail: _Part, hist: np.ndarray | None
    ) -> tuple[np.ndarray, float, float]:
        """(bucket counts, pending weight, earliest-completion estimate) of ``v`` from its queue's
        ``head`` and its running batch's ``tail`` (``hist``: their summed counts, when known)."""
        if hist is None:
            hist = head.hist + tail.hist
        c = len(head.progress) + len(tail.progress)
        if c == 0:
            return hist, 0.0, 0.0
        if len(head.progress) and len(tail.progress):
            progress = np.concatenate((head.progress, tail.progress))
        else:
            progress = head.progress if len(head.progress) else tail.progress
        # one pairwise sum over the instance's requests in their order, as the reference
        weight = float(c - self.progress_relief * _SUM(progress))
        nrun = min(v.num_running, self.max_batch) or 1
        step = decode_step_s(self.lm, nrun, float(v.kv_used_blocks * self.block_size))
        if head.decoding or tail.decoding:
            earliest = _nan_min(head.min_remaining_decoding, tail.min_remaining_decoding) * step
        else:
            first = _nan_min(head.min_remaining, tail.min_remaining)
            earliest = prefill_s(self.lm, v.outstanding_prompt_tokens) + first * step
        return hist, weight, earliest

    def _fast_stats(self, k: int, v: InstanceView, s: RequestStats) -> tuple[np.ndarray, float, float]:
        """``_stats_of`` for the simulator's ``RequestStats``: the queue part cached per queue tuple
        (by identity, then by value, extended when requests were appended: ``_queue_part``), the
        batch part from the arrays (``_batch_part``), their summed counts cached per pair."""
        q = s.queue
        seen, head = self._qfast[k]
        if q is not seen:
            head = self._queue_part(k, q)
            self._qfast[k] = (q, head)
        tail = self._batch_part(k, s)
        hq, hb, hist = self._hsum[k]
        if hq is not head.hist or hb is not tail.hist:
            hist = (head.hist + tail.hist).astype(np.float64)
            self._hsum[k] = (head.hist, tail.hist, hist)
        return self._stats_of(v, head, tail, hist)

    def _queue_part(self, k: int, q: tuple[Any, ...]) -> _Part:
        """``_Part`` of instance ``k``'s queue entries ``q`` (the simulator keeps its waiting requests
        in arrival order, so from one call to the next requests leave at the front, when admitted,
        and join at the back, when routed). Cached by value in slot ``2 k`` of ``_cache`` with the
        entries' ``max(pred - generated, 1)`` in ``_qrem``: a ``q`` equal to the cached entries is
        reused; one that is the cached entries less ``d`` at the front plus some at the back (compared
        by value, so an equal entry matched in place of another gives the same values) converts only
        the entries that changed and slices the rest; others convert whole. The same values as one
        conversion of ``q``: counts are sums of integers, progress and remaining tokens are per entry,
        and the minimum is taken over the whole remaining array."""
        j = 2 * k
        seen, got = self._cache[j]
        if q is seen or q == seen:
            return got
        rem = self._qrem[k]
        part: _Part | None = None
        if q and seen:
            d = _index(seen, q[0])
            kept = len(seen) - d
            if d >= 0 and kept <= len(q) and q[:kept] == seen[d:]:
                part, rem = self._queue_delta(got, rem, seen[:d], q[kept:], d)
        if part is None:
            part, rem = self._queue_whole(q)
        self._cache[j] = (q, part)
        self._qrem[k] = rem
        return part

    def _queue_delta(
        self, got: _Part, rem: np.ndarray, dropped: tuple[Any, ...], added: tuple[Any, ...], d: int
    ) -> tuple[_Part | None, np.ndarray]:
        """``got`` (with its remaining tokens ``rem``) less the ``d`` entries ``dropped`` at the front,
        plus the entries ``added`` at the back; (None, rem) when an entry has a NaN or decodes."""
        hist = got.hist
        progress, rem = got.progress[d:], rem[d:]
        if dropped:
            out = self._queue_small(dropped)
            if out is None:
                return None, rem
            hist = hist - out[0]
        if added:
            out = self._queue_small(added)
            if out is None:
                return None, rem
            hist = hist + out[0]
            progress = np.concatenate((progress, out[1]))
            rem = np.concatenate((rem, out[2]))
        if not len(rem):
            return self._empty, rem
        return _Part(hist, progress, float(_MIN(rem)), math.inf, False), rem

    def _queue_small(self, part: tuple[Any, ...]) -> tuple[np.ndarray, list[float], list[float]] | None:
        """Counts (cells,) int64, progress and ``max(pred - generated, 1)`` per entry of a few queue
        entries, in Python floats (``_convert_small``'s operations); None on a NaN or a decoding
        entry (the caller converts the whole queue)."""
        pe, de, bd = self._pedges_t, self._dedges_t, self._bd
        hist = [0] * self._cells
        progress, rem = [], []
        for p, q, g, dec in part:
            q = float(q)
            g = float(g)
            r = q - g
            if r != r or dec > 0.5:
                return None
            rem.append(r if r >= 1.0 else 1.0)
            hist[bisect_right(pe, float(p)) * bd + bisect_right(de, q)] += 1
            x = g / (q if q > 1.0 else 1.0)
            progress.append(x if x < 1.0 else 1.0)
        return np.array(hist, dtype=np.int64), progress, rem

    def _queue_whole(self, q: tuple[Any, ...]) -> tuple[_Part, np.ndarray]:
        """``_Part`` of the queue entries ``q`` in one conversion, and their remaining tokens."""
        if not q:
            return self._empty, np.zeros(0)
        (got,) = self._convert([q])
        arr = np.fromiter(chain.from_iterable(q), np.float64, 4 * len(q)).reshape(len(q), 4)
        return got, np.maximum(arr[:, 1] - arr[:, 2], 1.0)

    def _view_terms(self, v: InstanceView) -> tuple[Any, ...]:
        """What the latency estimates of ``v`` need that does not depend on the request (cached per
        view object in ``_terms``): the snapshot's first seven fields, then ``MinMin.completion_s``'s
        and ``mixing_penalty_s``'s view-only terms, computed with the same operations as there."""
        lm, block, batch = self.lm, self.block_size, self.max_batch
        busy = v.num_running + v.num_waiting
        opt = v.outstanding_prompt_tokens
        fields = (
            1.0 if v.accepting else 0.0,
            float(v.num_running),
            float(v.num_waiting),
            float(v.kv_used_blocks),
            float(v.kv_total_blocks),
            float(opt),
            float(v.outstanding_decode_tokens),
        )
        # MinMin._shared / _capacity_wait_s / completion_s
        n = min(busy, batch)
        ctx_tokens = float(v.kv_used_blocks * block) + opt
        a_s, b_s = lm.decode_coeffs(n + 1)
        excess = busy + 1 - batch
        cap = None if excess <= 0 or n <= 0 else excess * (v.outstanding_decode_tokens / n) / n
        if busy == 0:  # mixing_impact of an idle instance: (0, 0)
            return (fields, ctx_tokens, a_s, b_s, cap, opt, None)
        # mixing_impact
        ctx = float(v.kv_used_blocks * block)
        d = v.num_decode_requests
        c = int(ctx)
        base_it = lm.iteration_time(0, 0.0, d, c) if d else 0.0
        a0, b0 = lm.decode_coeffs(n)
        a1, b1 = lm.decode_coeffs(min(n + 1, batch))
        ctx_all = ctx + opt
        mix = (busy, d, c, base_it, a1, b1, ctx_all, a0 + b0 * ctx_all, v.outstanding_decode_tokens / busy)
        return (fields, ctx_tokens, a_s, b_s, cap, opt, mix)

    def _rows(
        self, request: RequestView, views: tuple[InstanceView, ...], earliest: list[float]
    ) -> list[tuple[float, ...]]:
        """Per instance, the snapshot's ``INSTANCE_FIELDS`` row: the view's fields, ``earliest``, then
        ``MinMin.completion_s(request, v)`` and ``mixing_penalty_s(request, v, ...)`` (bit-equal to
        calling them: the same IEEE operations in the same order, the request's terms computed once
        per decision and the view's once per view object; ``test_observation.py`` holds it)."""
        alpha = self.alpha
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        lm, terms = self.lm, self._terms
        pf = float(request.prompt_tokens)
        o = max(1.0, float(request.predicted_output_tokens))
        o2 = o / 2.0
        own = prefill_s(lm, pf)
        ppt = own / pf if pf > 0 else 0.0
        pi = max(0, int(request.prompt_tokens))
        pp = float(pi) * pi
        rows = []
        for k, v in enumerate(views):
            seen, t = terms[k]
            if seen is not v:
                t = self._view_terms(v)
                terms[k] = (v, t)
            fields, ctx_tokens, a_s, b_s, cap, opt, mix = t
            step = float(a_s + b_s * max(0.0, ctx_tokens + pf + o2))
            completion = (0.0 if cap is None else cap * step) + ppt * opt + own + o * step
            if mix is None:
                penalty = alpha * 0.0 + (1.0 - alpha) * 0.0
            else:
                busy, d, c, base_it, a1, b1, ctx_all, before, per_seq = mix
                pre = 0.0
                if d and pi:
                    pre = d * max(0.0, lm.iteration_time(pi, pp, d, c) - base_it)
                delta = (a1 + b1 * (ctx_all + pi + o2)) - before
                penalty = alpha * pre + (1.0 - alpha) * (busy * min(o, per_seq) * max(0.0, delta))
            rows.append((*fields, earliest[k], completion, penalty))
        return rows

    def build(self, request: RequestView, cluster: ClusterView) -> DecisionState:
        spec = self.spec
        m = spec.num_instances
        views = cluster.instances
        if len(views) != m:
            raise ValueError(f"cluster has {len(views)} instances, the spec expects {m}")
        bp, bd = self._bp, self._bd
        hists, weights, earliest = self._instance_stats(views)
        rows = self._rows(request, views, earliest)
        inst = np.array(rows, dtype=np.float64)
        in_system = np.fromiter((v.num_running + v.num_waiting for v in views), np.int64, m)
        snap = RouterSnapshot(
            prompt_tokens=float(request.prompt_tokens),
            predicted_output_tokens=float(request.predicted_output_tokens),
            router_queue_len=float(cluster.router_queue_len),
            waited_s=float(request.waited_s),
            instances=inst,
            prefill_hist=hists[:, : bp * bd].reshape(m, bp, bd),
            decode_hist=hists[:, bp * bd :].reshape(m, bp, bd),
            predicted_bucket_probs=length_bucket_probs(
                spec,
                float(request.predicted_output_tokens),
                request.predicted_bucket_probs,
                request.predicted_bucket_edges,
            ),
        )
        return DecisionState(snap, in_system, weights)
