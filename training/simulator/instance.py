"""One simulated vLLM-like engine instance: waiting queue, running batch, KV blocks, prefix cache.

Who calls this: ``engine.simulate`` only: ``enqueue`` when a request is routed here, ``step`` when the
instance forms its next batch (returns when that iteration, or decode stretch, ends), ``end_iteration``
when it ends, ``sync`` before a router snapshot, ``cut_stretch`` when a routed request must be
considered at the next iteration boundary; ``fork`` for lookahead rollouts, ``refresh_requests`` /
``set_output_tokens`` before reading or changing a running request from outside (the running batch
is kept per batch, not per request: see ``Instance``). It never reads the wall clock and holds no
global state.

Scheduling (one ``step``, vLLM v1 style, mixed prefill + decode batches):

1. Running requests, oldest admission first, each get their tokens for this iteration (1 for a
   decode, the next chunk for a chunked prefill) within the token budget. If a request needs a new
   KV block and none is free, the newest running request is preempted (KV freed, recompute later)
   until it fits, possibly preempting the request itself (vLLM's recompute preemption).
2. If nothing was preempted in this step, waiting requests are admitted in queue order (preempted
   first, then by the queue policy) while the batch has room, the token budget allows, and their KV
   blocks fit; admission stops at the first request that does not fit (no skipping ahead).

Decode stretches (``fast_forward``): when a step admits nothing, preempts nothing and every running
request decodes, the following iterations are identical in composition until the first of (a) a
request finishes, (b) the KV cache could run out, (c) a request is routed here (``cut_stretch``). The
instance then schedules k iterations at once; iteration i (0-based) takes a + b * (C + i * n) seconds
with (a, b) = ``latency.decode_coeffs(n)``, n decoding requests and C their context sum.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import OrderedDict, deque
from operator import attrgetter, itemgetter

import numpy as np

from training.simulator.config import InstanceConfig, QueuePolicy
from training.simulator.interface import BatchStats, RequestStats
from training.simulator.latency import IterationObserver, LatencyModel
from training.simulator.request import RequestStatus
from training.simulator.state import ReqState

_PREFILLING = RequestStatus.PREFILLING
_DECODING = RequestStatus.DECODING
_WAITING = RequestStatus.WAITING_AT_INSTANCE
_PREEMPTED = RequestStatus.PREEMPTED
_FINISHED = RequestStatus.FINISHED
_GREW, _GREW_AFTER_PREEMPTING, _SELF_PREEMPTED = 0, 1, 2


class Stretch:
    """k decode-only iterations of an unchanged batch, scheduled at once.

    ``ends[i]`` is when iteration i + 1 ends. The times are accumulated one iteration at a time,
    exactly as step-by-step mode adds them (``end = start + (a + b * context)``), so both modes give
    bit-identical times: a Python loop for short stretches (most are a few iterations: a finish or an
    arrival ends them), ``numpy.cumsum`` (a sequential accumulation, same sums) for long ones.
    ``applied`` iterations have been applied to the requests; ``ahead`` says whether they also hold
    the KV blocks of the iteration in progress.
    """

    __slots__ = ("ahead", "applied", "ends", "k")

    def __init__(self, start: float, a: float, b: float, n: int, context: int, k: int) -> None:
        if k <= _SHORT_STRETCH:
            ends = []
            t = start
            for i in range(k):
                t = t + (a + b * (context + n * i))
                ends.append(t)
            self.ends: list[float] = ends
        else:
            steps = np.empty(k + 1)
            steps[0] = start
            steps[1:] = a + b * (context + n * np.arange(k, dtype=np.int64))
            self.ends = np.cumsum(steps)[1:].tolist()
        self.k = k
        self.applied = 0
        self.ahead = True  # the first iteration's blocks were allocated by the step

    def copy(self) -> Stretch:
        """An independent copy; ``ends`` is never written after construction, so it is shared."""
        new = Stretch.__new__(Stretch)
        new.ends = self.ends
        new.k = self.k
        new.applied = self.applied
        new.ahead = self.ahead
        return new

    def end(self, i: int) -> float:
        """End time of iteration i (1-based)."""
        return self.ends[i - 1]

    def done_by(self, now: float) -> int:
        """Iterations that have ended at or before ``now``."""
        return bisect_right(self.ends, now)


_SHORT_STRETCH = 48
"""Stretches up to this many iterations accumulate their end times in a Python loop (cheaper than
numpy's call overhead at that size; identical sums)."""


class Instance:
    """State of one instance. Units: tokens, KV blocks, simulated seconds.

    Layout (issue 16): the running batch is ``_run`` (admission order) split into the prefilling
    requests ``_pref`` (explicit token counts) and the decoding requests, which all advance by one
    token per iteration. A decoding request's ``computed`` / ``generated`` are stored at the decode
    tick ``anchor`` and equal ``stored + (tick - anchor)`` now, so an iteration or a whole stretch
    advances the batch by ``tick += k`` (O(1)), and what the step needs is kept per batch, not per
    request: the context sum ``_csum``, a histogram ``_hist`` of contexts modulo ``block_size`` (the
    block crossings of the next k iterations, O(block_size)), a heap of finish ticks ``_fin`` and a
    heap of the ticks where predicted decode tokens run out ``_dlh`` (with ``_dl_sum`` / ``_dl_n``, the
    sum of those ticks and their count over requests still predicted to decode). A step whose
    decodes all fit (token budget and KV blocks for every request, no preemption) uses them; any
    other step writes the counts back (``_flush``), runs the request-by-request schedule below
    (``_explicit``: the pre-issue-16 code), and rebuilds the batch aggregates when its iteration ends.
    Both give the same results bit for bit (tests/test_replay_digest.py).
    """

    batch_steps = True
    """Schedule with the batch aggregates where they apply (else every step goes request by
    request, the pre-issue-16 path, and decode stretches are never formed). Tests turn it off to
    compare the two: same per-request results as ``fast_forward=False``, bit for bit."""

    def __init__(
        self,
        index: int,
        config: InstanceConfig,
        latency: LatencyModel,
        fast_forward: bool,
        observer: IterationObserver | None = None,
    ) -> None:
        self.index = index
        self.observer = observer
        self.config = config
        self.latency = latency
        self.fast_forward = fast_forward
        self.block_size = config.block_size
        self.total_blocks = config.total_kv_blocks
        self.token_budget = config.token_budget
        self.chunked = config.chunked_prefill_tokens is not None
        self.max_batch = config.max_batch_size
        self.prefix_caching = config.prefix_caching
        self.prefix_tokens = config.prefix_block_tokens
        self.ratio = config.prefix_block_tokens // config.block_size
        self.policy = config.queue_policy
        self.max_waiting = config.max_waiting

        self._run: list[ReqState] = []
        self.preempted: deque[ReqState] = deque()
        self.waiting: list[tuple[float, int, ReqState]] = []
        self.route_seq = 0
        self.wait_prompt_sum = 0
        self.wait_decode_sum = 0.0
        # running-batch aggregates for router snapshots (kept exact)
        self.run_prefilling = 0
        self.run_prefill_left = 0

        # The decoding requests as a batch (see the class docstring).
        self.tick = 0  # decode iterations applied so far
        self.ahead = 0  # 1 while the decodes hold the KV blocks of the iteration in progress
        self._order = 0  # next admission order
        self._pref: list[ReqState] = []  # prefilling requests of the running batch, in batch order
        self._ndec = 0
        self._csum = 0  # sum of the decodes' contexts (computed tokens) at ``tick``
        self._hist = [0] * self.block_size  # decodes by (computed - tick) % block_size
        self._fin: list[tuple[int, int, ReqState]] = []  # (tick when it has generated all, order, r)
        self._dlh: list[tuple[float, int, ReqState]] = []  # (tick when pred - generated hits 0, ...)
        self._dl_sum = 0.0  # sum of those ticks over the decodes with pred > generated
        self._dl_n = 0  # how many
        self._pdl = 0.0  # predicted decode tokens left of the prefilling requests in the batch
        self._explicit = False  # the iteration in progress was scheduled request by request
        self._rdl = 0.0  # run_decode_left while ``_explicit``

        # KV accounting: private blocks of running requests + prefix-cache blocks (pinned or evictable).
        self.used_private = 0
        self.cache_ref: dict[int, int] = {}
        self.evictable: OrderedDict[int, None] = OrderedDict()
        self.cached_blocks = 0
        self.pinned_cached_blocks = 0

        # The iteration (or decode stretch) in progress.
        self.busy = False
        self.schedule_pending = False
        self.version = 0
        self.mut = 0  # bumped by every change a router view shows (``Cluster`` reuses unchanged views)
        self._qstats: tuple[tuple[int, float, int, bool], ...] | None = None
        """``request_stats`` of the queue (waiting, then preempted), kept until the queue changes
        (``_push_waiting``, ``_pop_waiting``, ``_preempt`` drop it): queued requests do not progress."""
        self._wq: tuple[tuple[int, float, int, bool], ...] | None = None
        """The waiting requests' ``request_stats`` entries in arrival (routing) order, kept from the
        first ``request_stats`` call on (None before: a replay without stats never pays for it):
        a routed request's entry is appended, an admitted one's removed, so between two calls the
        tuple changes by a few entries at its ends (``SnapshotBuilder`` updates what it derived)."""
        self._bstats: BatchStats | None = None
        """The running batch's ``BatchStats``, kept until its composition changes (a request joins or
        leaves it, starts decoding, or gets tokens other than by a batch decode step: ``_admit``,
        ``_preempt``, ``_add_decode``, ``_drop_decode``, ``_rebuild`` drop it)."""
        self.decs: list[ReqState] = []  # explicit iterations only
        self.pres: list[tuple[ReqState, int]] = []
        self.stretch: Stretch | None = None
        self.end_s = 0.0

        self.num_iterations = 0
        # The sampled series, flat: (time, batch, queue, kv) per batch formed. This instance's own
        # samples come after the frozen samples of the instances it was forked from (``_series_base``:
        # their lists and how many entries belong to this history). Lists are only ever appended to,
        # so a prefix stays valid and a fork never copies the series.
        self._s: list[float | int] = []
        self._series_base: tuple[tuple[list[float | int], int], ...] = ()

    # ------------------------------------------------------------------ fork
    def fork(self, memo: dict[int, ReqState] | None = None) -> Instance:
        """An independent copy of this instance's mutable state; config, latency model and observer
        are shared. The copy and the original then evolve independently (the same calls give the
        same state).

        ``memo`` maps ``id(original ReqState)`` to its copy (``state.fork_state``): pass the same
        dict to every instance of one fork and use it to remap the caller's own references (the
        engine's request list). Who calls this: ``Cluster.fork`` (lookahead rollouts, the replay's
        fork). Cost: O(requests on the instance + prefix-cache entries), no series copy.
        """
        if memo is None:
            memo = {}
        new = Instance.__new__(Instance)
        new.__dict__.update(self.__dict__)  # immutable fields and scalars; the mutable ones below

        get = memo.get

        def cp(r: ReqState) -> ReqState:
            c = get(id(r))
            if c is None:
                c = memo[id(r)] = r.copy()
            return c

        new._run = [cp(r) for r in self._run]
        new._pref = [get(id(r)) for r in self._pref]  # type: ignore[misc]  # all in the batch
        new.preempted = deque(cp(r) for r in self.preempted)
        new.waiting = [(key, seq, cp(r)) for key, seq, r in self.waiting]  # same order: still a heap
        new._hist = list(self._hist)
        # A heap entry whose request is not on the instance any more is stale (it finished: its
        # status says so forever), so it may keep pointing at the original.
        new._fin = [(f, o, get(id(r), r)) for f, o, r in self._fin]
        new._dlh = [(e, o, get(id(r), r)) for e, o, r in self._dlh]
        new.cache_ref = dict(self.cache_ref)
        new.evictable = OrderedDict(self.evictable)
        new.decs = [cp(r) for r in self.decs]
        new.pres = [(cp(r), n) for r, n in self.pres]
        new.stretch = self.stretch.copy() if self.stretch is not None else None
        new._series_base = (*self._series_base, (self._s, len(self._s)))
        new._s = []
        return new

    def _series(self, j: int) -> list:
        if not self._series_base:
            return self._s[j::4]
        out: list = []
        for seg, n in self._series_base:
            out.extend(seg[j:n:4])
        out.extend(self._s[j::4])
        return out

    @property
    def s_time(self) -> list[float]:
        """Start time of every batch formed (seconds), forks' parents' samples first."""
        return self._series(0)

    @property
    def s_batch(self) -> list[int]:
        """Batch size of every batch formed."""
        return self._series(1)

    @property
    def s_queue(self) -> list[int]:
        """Waiting-queue length (preempted included) when each batch was formed."""
        return self._series(2)

    @property
    def s_kv(self) -> list[int]:
        """KV blocks in use when each batch was formed."""
        return self._series(3)

    # ------------------------------------------------------------------ the running batch
    @property
    def running(self) -> list[ReqState]:
        """The running batch in admission order, with every request's token counts and blocks written
        back (O(batch); for tests and per-request stats, never on the replay's hot path)."""
        self._flush()
        return self._run

    @property
    def num_running(self) -> int:
        return len(self._run)

    def refresh_requests(self) -> None:
        """Write the current ``computed`` / ``generated`` / ``alloc`` of the decoding requests back
        into their states (they are kept per batch between calls). Who calls this: anyone outside
        the instance about to read those fields of a request on it (the replay's ``unfinished``, a
        fork replacing lengths); O(batch)."""
        self._flush()

    def set_output_tokens(self, r: ReqState, output: int) -> None:
        """Replace the true output length of request ``r`` on this instance (a rollout's sampled
        length), at least its generated tokens + 1. The caller cuts a decode stretch in progress
        (its length came from the old value). Who calls this: ``ReplayState.fork(lengths=...)``."""
        if r.status is _DECODING and not self._explicit:
            self._flush_one(r)
            r.output = output
            fin = [e for e in self._fin if e[2] is not r]  # O(batch): one entry per request
            fin.append((output - r.generated + self.tick, r.order, r))
            heapq.heapify(fin)
            self._fin = fin
        else:
            r.output = output

    @property
    def run_decode_left(self) -> float:
        """Predicted decode tokens still to generate over the running batch (exact: predictions are
        multiples of 1/1024 token)."""
        if self._explicit:
            return self._rdl
        return self._pdl + (self._dl_sum - self._dl_n * self.tick)

    def _flush(self) -> None:
        """Write the decodes' current ``computed`` / ``generated`` / ``alloc`` into their states."""
        if self._explicit:
            return
        tick, ahead, bs = self.tick, self.ahead, self.block_size
        for r in self._run:
            if r.status is _DECODING:
                d = tick - r.anchor
                if d:
                    r.computed += d
                    r.generated += d
                    r.anchor = tick
                r.alloc = -(-(r.computed + ahead) // bs)

    def _flush_one(self, r: ReqState) -> None:
        d = self.tick - r.anchor
        if d:
            r.computed += d
            r.generated += d
            r.anchor = self.tick
        r.alloc = -(-(r.computed + self.ahead) // self.block_size)

    def _add_decode(self, r: ReqState) -> None:
        """``r`` (explicit counts, ``alloc == ceil((computed + ahead) / block_size)``) joins the
        decoding batch at the current tick."""
        tick = self.tick
        r.anchor = tick
        self._bstats = None
        c = r.computed
        self._ndec += 1
        self._csum += c
        self._hist[(c - tick) % self.block_size] += 1
        heapq.heappush(self._fin, (r.output - r.generated + tick, r.order, r))
        left = r.pred - r.generated
        if left > 0:
            e = left + tick
            self._dl_sum += e
            self._dl_n += 1
            heapq.heappush(self._dlh, (e, r.order, r))

    def _drop_decode(self, r: ReqState) -> None:
        """``r`` (flushed) leaves the decoding batch; its heap entries go stale (its status or order
        no longer match them)."""
        tick = self.tick
        self._bstats = None
        c = r.computed
        self._ndec -= 1
        self._csum -= c
        self._hist[(c - tick) % self.block_size] -= 1
        left = r.pred - r.generated
        if left > 0:
            self._dl_sum -= left + tick
            self._dl_n -= 1

    def _advance(self, d: int, ahead: int) -> None:
        """Every decode generates ``d`` tokens; afterwards they hold the blocks of ``ahead`` more."""
        bs = self.block_size
        t1 = self.tick + self.ahead
        tick = self.tick + d
        self.tick = tick
        self.ahead = ahead
        t2 = tick + ahead
        if t2 != t1 and self._ndec:
            lo, hi, sign = (t1, t2, 1) if t2 > t1 else (t2, t1, -1)
            full, rest = divmod(hi - lo, bs)
            n = self._ndec * full
            hist = self._hist
            for t in range(hi - rest + 1, hi + 1):
                n += hist[(1 - t) % bs]
            self.used_private += sign * n
        if d:
            self._csum += self._ndec * d
            dlh = self._dlh
            while dlh and dlh[0][0] <= tick:
                e, order, r = heapq.heappop(dlh)
                if r.order == order and r.status is _DECODING:
                    self._dl_sum -= e
                    self._dl_n -= 1

    def _crossings(self, m: int) -> int:
        """Blocks the decodes need beyond their current ones to hold m - ahead more tokens each
        (the block crossings between tick + ahead and tick + m)."""
        bs = self.block_size
        span = m - self.ahead
        if span <= 0:
            return 0
        full, rest = divmod(span, bs)
        n = self._ndec * full
        hist = self._hist
        top = self.tick + m
        for t in range(top - rest + 1, top + 1):
            n += hist[(1 - t) % bs]
        return n

    def _pop_finished(self) -> list[ReqState]:
        """The decodes that have generated all their tokens, in batch order."""
        fin = self._fin
        tick = self.tick
        out = []
        while fin and fin[0][0] <= tick:
            f, order, r = heapq.heappop(fin)
            if r.order == order and r.status is _DECODING and f == r.output - r.generated + r.anchor:
                out.append(r)
        if len(out) > 1:
            out.sort(key=_by_order)
        return out

    def _rebuild(self) -> None:
        """Batch aggregates from the requests' explicit counts (after a request-by-request iteration)."""
        tick = self.tick
        self._bstats = None
        self._ndec = 0
        self._csum = 0
        self._hist = [0] * self.block_size
        self._fin = []
        self._dlh = []
        self._dl_sum = 0.0
        self._dl_n = 0
        self._pdl = 0.0
        pref = []
        bs = self.block_size
        hist = self._hist
        fin = self._fin
        dlh = self._dlh
        for r in self._run:
            if r.status is _DECODING:
                r.anchor = tick
                c = r.computed
                self._ndec += 1
                self._csum += c
                hist[(c - tick) % bs] += 1
                fin.append((r.output - r.generated + tick, r.order, r))
                left = r.pred - r.generated
                if left > 0:
                    self._dl_sum += left + tick
                    self._dl_n += 1
                    dlh.append((left + tick, r.order, r))
            else:
                pref.append(r)
                left = r.pred - r.generated
                if left > 0:
                    self._pdl += left
        heapq.heapify(fin)
        heapq.heapify(dlh)
        self._pref = pref
        self._explicit = False

    # ------------------------------------------------------------------ queue
    @property
    def num_waiting(self) -> int:
        return len(self.waiting) + len(self.preempted)

    @property
    def accepting(self) -> bool:
        return self.max_waiting is None or self.num_waiting < self.max_waiting

    @property
    def kv_used_blocks(self) -> int:
        return self.used_private + self.pinned_cached_blocks

    def enqueue(self, r: ReqState) -> None:
        """A request routed here joins the waiting queue (ordered by the queue policy)."""
        self.mut += 1
        r.status = _WAITING
        r.instance = self.index
        r.seq = self.route_seq
        self.route_seq += 1
        self._push_waiting(r)

    def _push_waiting(self, r: ReqState) -> None:
        if self.policy is QueuePolicy.FCFS:
            key = 0.0
        elif self.policy is QueuePolicy.LWL:
            key = max(r.pred - r.generated, 0.0)
        else:
            key = -max(r.pred - r.generated, 0.0)
        r.qstat = (r.prompt, r.pred, r.generated, False)
        heapq.heappush(self.waiting, (key, r.seq, r))
        self._qstats = None
        if self._wq is not None:
            self._wq += (r.qstat,)
        self.wait_prompt_sum += r.target
        self.wait_decode_sum += max(r.pred - r.generated, 0.0)

    def _peek_waiting(self) -> ReqState | None:
        if self.preempted:
            return self.preempted[0]
        if self.waiting:
            return self.waiting[0][2]
        return None

    def _pop_waiting(self, r: ReqState) -> None:
        if self.preempted and self.preempted[0] is r:
            self.preempted.popleft()
        else:
            heapq.heappop(self.waiting)
            wq = self._wq
            if wq is not None:
                e = r.qstat
                if wq[0] is e:
                    self._wq = wq[1:]
                else:  # a queue policy other than FCFS admits out of arrival order
                    i = next(i for i, x in enumerate(wq) if x is e)
                    self._wq = wq[:i] + wq[i + 1 :]
        self._qstats = None
        if self.waiting or self.preempted:
            self.wait_prompt_sum -= r.target
            self.wait_decode_sum -= max(r.pred - r.generated, 0.0)
        else:  # exact zero, no float residue, when the queue empties
            self.wait_prompt_sum = 0
            self.wait_decode_sum = 0.0

    # ------------------------------------------------------------------ KV cache
    def free_blocks(self) -> int:
        """Blocks available to allocate: truly free plus evictable (unpinned) prefix-cache blocks."""
        return self.total_blocks - self.used_private - self.pinned_cached_blocks

    def _make_room(self) -> None:
        """Evict least-recently-released unpinned prefix blocks until private + cached fits."""
        excess = self.used_private + self.cached_blocks - self.total_blocks
        while excess > 0:
            pid, _ = self.evictable.popitem(last=False)
            del self.cache_ref[pid]
            self.cached_blocks -= self.ratio
            excess -= self.ratio

    def prefix_hits(self, cacheable: tuple[int, ...]) -> int:
        """Leading prefix blocks of ``cacheable`` present in this instance's cache."""
        ref = self.cache_ref
        h = 0
        for pid in cacheable:
            if pid not in ref:
                break
            h += 1
        return h

    def _pin(self, pid: int) -> None:
        ref = self.cache_ref
        if ref[pid] == 0:
            del self.evictable[pid]
            self.pinned_cached_blocks += self.ratio
        ref[pid] += 1

    def _release(self, r: ReqState) -> None:
        """Free a request's private blocks and unpin its prefix blocks (they stay cached, evictable).

        Unpinned in reverse order, like vLLM's ``KVCacheManager.free``: the tail of a prefix chain
        becomes least recently used and is evicted first, so the shared head stays hittable (evicting
        the head first would strand the rest of the chain, unreachable but still occupying KV)."""
        self.used_private -= r.alloc - r.shared
        ref = self.cache_ref
        for pid in reversed(r.pinned):
            n = ref[pid] - 1
            ref[pid] = n
            if n == 0:
                self.evictable[pid] = None
                self.pinned_cached_blocks -= self.ratio
        r.pinned = []
        r.alloc = 0
        r.shared = 0

    def _insert_prefix(self, r: ReqState) -> None:
        """After a prefill, the request's full prefix blocks become cache entries it pins."""
        ref = self.cache_ref
        ratio = self.ratio
        for pid in r.cacheable[len(r.pinned) :]:
            if pid in ref:
                continue  # someone cached the same block meanwhile: keep our copy private
            ref[pid] = 1
            r.pinned.append(pid)
            r.shared += ratio
            self.used_private -= ratio
            self.cached_blocks += ratio
            self.pinned_cached_blocks += ratio

    def _preempt(self, now: float) -> ReqState:
        victim = self._run.pop()
        self._bstats = None
        if victim.status is _PREFILLING:
            self.run_prefilling -= 1
            self.run_prefill_left -= victim.target - victim.computed
        self._run_decode_sub(victim)
        self._release(victim)
        victim.computed = 0
        victim.target = victim.prompt + victim.generated
        victim.status = _PREEMPTED
        victim.preemptions += 1
        self.preempted.appendleft(victim)
        self._qstats = None
        self.wait_prompt_sum += victim.target
        self.wait_decode_sum += max(victim.pred - victim.generated, 0.0)
        return victim

    def _run_decode_sub(self, r: ReqState) -> None:
        """``r`` leaves the running batch (explicit mode): remove its predicted decode tokens left."""
        if self._run:
            left = r.pred - r.generated
            if left > 0:
                self._rdl -= left
        else:
            self._rdl = 0.0

    # ------------------------------------------------------------------ scheduling
    def _grow(self, r: ReqState, extra: int, now: float) -> int:
        """Allocate ``extra`` blocks to running request ``r``, preempting the newest running requests
        while they do not fit. Returns _GREW, _GREW_AFTER_PREEMPTING, or _SELF_PREEMPTED."""
        status = _GREW
        while extra > self.total_blocks - self.used_private - self.pinned_cached_blocks:
            status = _GREW_AFTER_PREEMPTING
            if self._preempt(now) is r:
                return _SELF_PREEMPTED
        r.alloc += extra
        self.used_private += extra
        if self.used_private + self.cached_blocks > self.total_blocks:
            self._make_room()
        return status

    def _batch_fits(self) -> tuple[int, list[int]] | None:
        """For the batch step: (blocks the running batch needs this iteration, per-prefill extras)
        when every running request gets all its tokens within the budget and its blocks fit without
        preemption (then the order of allocation does not matter), else None."""
        need_tokens = self._ndec
        for r in self._pref:
            need_tokens += r.target - r.computed
        if need_tokens > self.token_budget:
            return None
        bs = self.block_size
        blocks = self._hist[(-self.tick) % bs] if self._ndec else 0  # decodes starting a block
        extras = []
        for r in self._pref:
            e = -(-r.target // bs) - r.alloc
            if e < 0:
                e = 0
            extras.append(e)
            blocks += e
        if blocks > self.total_blocks - self.used_private - self.pinned_cached_blocks:
            return None
        return blocks, extras

    def step(self, now: float) -> float | None:
        """Form the next batch at ``now``; return when it ends, or None when there is nothing to run."""
        self.mut += 1
        if not self.batch_steps:
            return self._step_explicit(now)
        bs = self.block_size
        dec_n = self._ndec
        pres: list[tuple[ReqState, int]] = []
        prefill_tokens = 0
        attn2 = 0.0
        if self._pref:
            fits = self._batch_fits()
            if fits is None:
                return self._step_explicit(now)
            blocks, extras = fits
            for r, e in zip(self._pref, extras, strict=True):
                need = r.target - r.computed
                if e:
                    r.alloc += e
                pres.append((r, need))
                prefill_tokens += need
                attn2 += need * (r.computed + need)
        else:  # decodes only (the common case): the same test as _batch_fits, inline
            blocks = self._hist[(-self.tick) % bs] if dec_n else 0  # decodes starting a block
            if dec_n > self.token_budget or blocks > (
                self.total_blocks - self.used_private - self.pinned_cached_blocks
            ):
                return self._step_explicit(now)
        running = self._run
        budget = self.token_budget - dec_n - prefill_tokens
        if blocks:
            self.used_private += blocks
            if self.used_private + self.cached_blocks > self.total_blocks:
                self._make_room()
        self.ahead = 1  # the decodes now hold the blocks of this iteration
        dec_ctx = self._csum + dec_n  # each decode attends its context plus the new token
        if dec_n:
            fin = self._fin
            while True:  # drop stale entries so the top is a live decode
                f, order, r = fin[0]
                if r.order == order and r.status is _DECODING and f == r.output - r.generated + r.anchor:
                    break
                heapq.heappop(fin)
            min_left = f - self.tick
        else:
            min_left = 1 << 62

        admitted = head_hits = 0
        if self.waiting or self.preempted:
            admitted, head_hits, budget, prefill_tokens, attn2 = self._admit(
                now, pres, budget, prefill_tokens, attn2
            )

        self._sample(now, dec_n + len(pres))
        if not dec_n and not pres:
            self.busy = False
            self.ahead = 0
            return None
        self.busy = True
        self._explicit = False
        if prefill_tokens == 0 and not admitted and dec_n == len(running):
            a, b = self.latency.decode_coeffs(dec_n)
            k = self._stretch_length(bs, min_left, head_hits > 0) if self.fast_forward else 1
            self.stretch = Stretch(now, a, b, dec_n, dec_ctx, k)
            self.decs = []
            self.pres = []
            self.end_s = self.stretch.end(k)
        else:
            self.stretch = None
            self.decs = []
            self.pres = pres
            self.end_s = now + self.latency.iteration_time(prefill_tokens, attn2, dec_n, dec_ctx)
        if self.observer is not None:  # step-by-step replays only (k == 1): one call per iteration
            self.observer(prefill_tokens, float(attn2), dec_n, dec_ctx, self.end_s - now)
        return self.end_s

    def _admit(
        self, now: float, pres: list[tuple[ReqState, int]], budget: int, prefill_tokens: int, attn2: float
    ) -> tuple[int, int, int, int, float]:
        """Admit waiting requests in queue order while the batch has room, the token budget allows
        and their KV blocks fit. Returns (admitted, prefix hits of a blocked head, budget, prefill
        tokens, attention work)."""
        bs = self.block_size
        running = self._run
        pref = self._pref
        waiting = self.waiting
        preempted = self.preempted
        max_batch = self.max_batch
        chunked = self.chunked
        admitted = 0
        head_hits = 0  # prefix hits of a waiting request that could not be admitted
        while len(running) < max_batch:
            if preempted:
                r = preempted[0]
            elif waiting:
                r = waiting[0][2]
            else:
                break
            hits = 0
            if r.cacheable and self.prefix_caching:
                hits = self.prefix_hits(r.cacheable)
                if hits and hits * self.prefix_tokens >= r.target:
                    hits -= 1  # the first token still needs at least one token of compute
            cached = hits * self.prefix_tokens
            head_hits = hits
            remaining = r.target - cached
            if chunked:
                need = min(remaining, budget)
                if need <= 0:
                    break
            else:
                if remaining > budget and prefill_tokens > 0:
                    break
                need = remaining
            blocks = -(-(cached + need) // bs)
            shared = hits * self.ratio
            to_pin = 0
            if hits:
                ref = self.cache_ref
                for pid in r.cacheable[:hits]:
                    if ref[pid] == 0:
                        to_pin += self.ratio
            if blocks - shared > self.total_blocks - self.used_private - self.pinned_cached_blocks - to_pin:
                break
            head_hits = 0
            self._pop_waiting(r)
            if hits:
                pinned = list(r.cacheable[:hits])
                for pid in pinned:
                    self._pin(pid)
                r.pinned = pinned
            r.shared = shared
            r.alloc = blocks
            r.computed = cached
            self.used_private += blocks - shared
            if self.used_private + self.cached_blocks > self.total_blocks:
                self._make_room()
            r.status = _PREFILLING
            r.order = self._order
            self._order += 1
            self.run_prefilling += 1
            self.run_prefill_left += r.target - cached
            pred_left = r.pred - r.generated
            if pred_left > 0:
                if self._explicit:
                    self._rdl += pred_left
                else:
                    self._pdl += pred_left
            if r.first_sched_s != r.first_sched_s:  # NaN: first time scheduled
                r.first_sched_s = now
            running.append(r)
            pref.append(r)
            self._bstats = None
            pres.append((r, need))
            budget -= need
            prefill_tokens += need
            attn2 += need * (cached + need)
            admitted += 1
        return admitted, head_hits, budget, prefill_tokens, attn2

    def _step_explicit(self, now: float) -> float | None:
        """``step`` request by request (a step that may preempt or run out of token budget)."""
        rdl = self.run_decode_left
        self._flush()
        self._explicit = True
        self._rdl = rdl
        bs = self.block_size
        running = self._run
        budget = self.token_budget
        decs: list[ReqState] = []  # decoding requests in this iteration (one token each)
        pres: list[tuple[ReqState, int]] = []  # (prefilling request, tokens this iteration)
        prefill_tokens = 0
        attn2 = 0.0
        dec_ctx = 0
        preempted_now = False

        # ``running`` only loses its tail while we iterate (preemption pops the newest request), and
        # we stop when the current request itself is preempted, so a plain for loop is safe.
        for r in running:
            if r.status is _DECODING:
                if budget < 1:
                    continue
                c = r.computed
                if c >= r.alloc * bs:  # the new token starts a new block
                    grown = self._grow(r, -(-(c + 1) // bs) - r.alloc, now)
                    if grown:
                        preempted_now = True
                        if grown == _SELF_PREEMPTED:
                            break
                decs.append(r)
                budget -= 1
                dec_ctx += c
            else:
                need = min(r.target - r.computed, budget)
                if need <= 0:
                    continue
                extra = -(-(r.computed + need) // bs) - r.alloc
                if extra > 0:
                    grown = self._grow(r, extra, now)
                    if grown:
                        preempted_now = True
                        if grown == _SELF_PREEMPTED:
                            break
                pres.append((r, need))
                budget -= need
                prefill_tokens += need
                attn2 += need * (r.computed + need)
        dec_n = len(decs)
        dec_ctx += dec_n  # each decode attends its context plus the new token
        self._pref = [r for r in running if r.status is _PREFILLING]

        if not preempted_now:
            _, _, budget, prefill_tokens, attn2 = self._admit(now, pres, budget, prefill_tokens, attn2)

        self._sample(now, dec_n + len(pres))
        if not dec_n and not pres:
            self.busy = False
            self._rebuild()
            return None
        self.busy = True
        # One iteration, never a decode stretch: with ``batch_steps`` on, only a step that preempts
        # or runs out of token budget comes here, and such a step never has every running request
        # decoding; with it off, stretches are not formed, which changes the series' sampling only.
        self.stretch = None
        self.decs = decs
        self.pres = pres
        self.end_s = now + self.latency.iteration_time(prefill_tokens, attn2, dec_n, dec_ctx)
        if self.observer is not None:
            self.observer(prefill_tokens, float(attn2), dec_n, dec_ctx, self.end_s - now)
        return self.end_s

    def _stretch_length(self, bs: int, k: int, no_eviction: bool) -> int:
        """Iterations the decode-only batch can run unchanged: to the first finish (``k``, from the
        step) or KV exhaustion.

        ``no_eviction``: the blocked waiting head has prefix-cache hits; evicting them could make it
        admissible (a hit costs its pinned blocks up front), so the stretch stops before any prefix
        block is evicted and the step-by-step path handles the evictions.
        """
        if k <= 1:
            return 1
        if no_eviction:
            free = self.total_blocks - self.used_private - self.cached_blocks
        else:
            free = self.free_blocks()
        if self._ndec * -(-(k - 1) // bs) <= free:
            return k  # cheap bound: each request needs at most ceil((k - 1) / bs) more blocks

        # blocks needed beyond the current allocation to run m iterations (the first is allocated)
        extra = self._crossings
        if extra(k) <= free:
            return k
        lo, hi = 1, k  # extra(lo) <= free < extra(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if extra(mid) <= free:
                lo = mid
            else:
                hi = mid
        return lo

    def _apply(self, done: int, ahead: bool) -> None:
        """Advance the running requests of the stretch to ``done`` completed iterations; with
        ``ahead`` they also hold the KV blocks of iteration done + 1 (scheduled, in progress)."""
        st = self.stretch
        assert st is not None
        d = done - st.applied
        if d < 0 or (d == 0 and st.ahead == ahead):
            return
        st.applied = done
        st.ahead = ahead
        self.mut += 1
        self._advance(d, 1 if ahead else 0)
        if self.used_private + self.cached_blocks > self.total_blocks:
            self._make_room()

    def sync(self, now: float) -> None:
        """Bring a decode stretch's requests to the last iteration boundary at or before ``now``, as
        step-by-step mode would show them: the next iteration's blocks are held if it has started
        (``now`` is past the boundary), not if ``now`` is exactly on it (its SCHEDULE comes after
        routing at that instant)."""
        st = self.stretch
        if st is None or not self.busy or st.end(st.applied + 1) > now:
            return  # no iteration ended since the last sync (the common case between arrivals)
        done = st.done_by(now)
        if done < st.k:
            self._apply(done, ahead=st.end(done) < now)

    def cut_stretch(self, now: float) -> float | None:
        """A request was routed here during a stretch: end it at the iteration boundary in progress
        (or at ``now`` when ``now`` is exactly a boundary).

        Returns the new end time (the caller pushes a new ITERATION_END; the old one is stale), or
        None when the current end is already that boundary.
        """
        st = self.stretch
        if st is None or not self.busy:
            return None
        done = st.done_by(now)
        new_k = done if (done >= 1 and st.end(done) == now) else done + 1
        if new_k >= st.k:
            return None
        st.k = new_k
        self.version += 1
        self.end_s = st.end(new_k)
        return self.end_s

    def end_iteration(self, now: float) -> list[ReqState]:
        """The iteration (or stretch) in progress ends at ``now``; returns the requests that finished."""
        self.mut += 1
        if self._explicit:
            return self._end_explicit(now)
        st = self.stretch
        if st is not None:
            k = st.k
            self._apply(k, ahead=False)
            self.num_iterations += k
            self.stretch = None
        else:
            self.num_iterations += 1
            # every decode generated one token; its block was allocated by the step (tick + ahead
            # stays put, so no block changes hands)
            tick = self.tick + 1
            self.tick = tick
            self.ahead = 0
            self._csum += self._ndec
            dlh = self._dlh
            while dlh and dlh[0][0] <= tick:
                e, order, r = heapq.heappop(dlh)
                if r.order == order and r.status is _DECODING:
                    self._dl_sum -= e
                    self._dl_n -= 1
            pres = self.pres
            if pres:
                completed = 0
                for r, tokens in pres:
                    c = r.computed + tokens
                    r.computed = c
                    self.run_prefill_left -= tokens
                    if c >= r.target:
                        completed += 1
                        r.status = _DECODING
                        self.run_prefilling -= 1
                        left = r.pred - r.generated
                        if left > 0:
                            self._pdl -= left
                        r.generated += 1
                        if r.first_token_s != r.first_token_s:
                            r.first_token_s = now
                        if self.prefix_caching and len(r.pinned) < len(r.cacheable):
                            self._insert_prefix(r)
                        self._add_decode(r)
                if completed:
                    if completed == len(self._pref):
                        self._pref = []
                        self._pdl = 0.0
                    else:
                        self._pref = [r for r in self._pref if r.status is _PREFILLING]
                self.pres = []
        fin = self._fin
        finished = self._pop_finished() if fin and fin[0][0] <= self.tick else []
        if finished:
            for r in finished:
                self._flush_one(r)
                self._drop_decode(r)
                r.status = _FINISHED
                r.finish_s = now
                self._release(r)
            run = self._run
            if len(finished) <= 4:
                for r in finished:
                    run.remove(r)  # identity hits first: a C scan, no Python loop
            else:
                self._run = [r for r in run if r.status is not _FINISHED]
        self.busy = False
        return finished

    def _end_explicit(self, now: float) -> list[ReqState]:
        """``end_iteration`` of a request-by-request iteration; rebuilds the batch aggregates."""
        self.num_iterations += 1
        any_finished = False
        decode_left = self._rdl
        for r in self.decs:
            r.computed += 1
            left = r.pred - r.generated
            if left > 0:
                decode_left -= left if left < 1.0 else 1.0
            g = r.generated + 1
            r.generated = g
            if g >= r.output:
                any_finished = True
        for r, tokens in self.pres:
            r.computed += tokens
            self.run_prefill_left -= tokens
            if r.computed >= r.target:
                r.status = _DECODING
                self.run_prefilling -= 1
                left = r.pred - r.generated
                if left > 0:
                    decode_left -= left if left < 1.0 else 1.0
                r.generated += 1
                if r.first_token_s != r.first_token_s:
                    r.first_token_s = now
                if self.prefix_caching and len(r.pinned) < len(r.cacheable):
                    self._insert_prefix(r)
                if r.generated >= r.output:
                    any_finished = True
        self._rdl = decode_left
        self.decs = []
        self.pres = []
        finished: list[ReqState] = []
        if any_finished:  # in running order, like the stretch path (it sets the LRU order)
            finished = [r for r in self._run if r.generated >= r.output]
            for r in finished:
                r.status = _FINISHED
                r.finish_s = now
                self._release(r)
            self._run = [r for r in self._run if r.status is not _FINISHED]
        self.busy = False
        self._rebuild()
        return finished

    # ------------------------------------------------------------------ observation
    def _sample(self, now: float, batch_size: int) -> None:
        self._s += (
            now,
            batch_size,
            len(self.waiting) + len(self.preempted),
            self.used_private + self.pinned_cached_blocks,
        )

    def load(self) -> tuple[int, int, int, float]:
        """(outstanding prompt tokens, prefill requests, decode requests, outstanding predicted decode
        tokens) over running and waiting requests, at the last iteration boundary. O(1): kept
        incrementally (predictions are multiples of 1/1024 token, so the float sums are exact)."""
        n_wait = len(self.waiting) + len(self.preempted)
        return (
            self.wait_prompt_sum + self.run_prefill_left,
            n_wait + self.run_prefilling,
            len(self._run) - self.run_prefilling,
            self.wait_decode_sum + self.run_decode_left,
        )

    def request_stats(self) -> RequestStats:
        """``(prompt tokens, predicted output tokens, generated tokens, decoding)`` per request on
        this instance (waiting in arrival order, preempted, running in admission order), at the last
        iteration boundary, as a ``RequestStats``. Built only when ``ClusterConfig.request_stats`` is
        set (the RL env's observation). The queue's entries are kept (``_qstats``, from ``_wq``)
        until the queue changes, the same tuple objects each time (a consumer comparing them,
        ``SnapshotBuilder``, compares by identity first); the running batch's arrays (``_bstats``)
        until its composition changes, so a call between changes is O(1) and one after a change
        O(batch) (``_batch_stats``)."""
        q = self._qstats
        if q is None:
            q = self._wq
            if q is None:
                q = self._wq = tuple(map(_QSTAT, map(_THIRD, sorted(self.waiting, key=_SEQ))))
            if self.preempted:
                q += tuple([(r.prompt, r.pred, r.generated, False) for r in self.preempted])
            self._qstats = q
        b = self._bstats
        if b is None:
            b = self._bstats = self._batch_stats()
        return RequestStats(q, b, self.tick)

    def _batch_stats(self) -> BatchStats:
        """The running batch as ``BatchStats`` at the current composition: a decoding request's
        generated tokens at tick 0 are ``generated - anchor`` (it generates one per tick from its
        anchor on, ``_flush``; in an explicit iteration its anchor is the tick, so the same), a
        prefilling request's are its ``generated``."""
        rows = [
            (r.prompt, r.pred, r.generated - r.anchor, True)
            if r.status is _DECODING
            else (r.prompt, r.pred, r.generated, False)
            for r in self._run
        ]
        if not rows:
            return _EMPTY_BATCH
        a = np.array(rows, dtype=np.float64).T.copy()
        return BatchStats(a[0], a[1], a[2], a[3] > 0.5)


_EMPTY_BATCH = BatchStats(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool))
"""An empty running batch's ``BatchStats`` (shared: immutable)."""
_QSTAT, _SEQ, _THIRD = attrgetter("qstat"), itemgetter(1), itemgetter(2)
"""A waiting request's ``request_stats`` entry (``ReqState.qstat``); a heap entry's routing sequence
number and request."""


def _by_order(r: ReqState) -> int:
    return r.order
