"""One simulated vLLM-like engine instance: waiting queue, running batch, KV blocks, prefix cache.

Who calls this: ``engine.simulate`` only: ``enqueue`` when a request is routed here, ``step`` when the
instance forms its next batch (returns when that iteration, or decode stretch, ends), ``end_iteration``
when it ends, ``sync`` before a router snapshot, ``cut_stretch`` when a routed request must be
considered at the next iteration boundary. It never reads the wall clock and holds no global state.

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
from collections import OrderedDict, deque

import numpy as np

from training.simulator.config import InstanceConfig, QueuePolicy
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
    bit-identical times; ``numpy.cumsum`` is a sequential accumulation, so this costs O(k) vector work
    and no Python loop. ``applied`` iterations have been applied to the requests; ``ahead`` says
    whether they also hold the KV blocks of the iteration in progress.
    """

    __slots__ = ("ahead", "applied", "ends", "k")

    def __init__(self, start: float, a: float, b: float, n: int, context: int, k: int) -> None:
        if k == 1:
            self.ends: list[float] | np.ndarray = [start + (a + b * context)]
        else:
            steps = np.empty(k + 1)
            steps[0] = start
            steps[1:] = a + b * (context + n * np.arange(k, dtype=np.int64))
            self.ends = np.cumsum(steps)[1:]
        self.k = k
        self.applied = 0
        self.ahead = True  # the first iteration's blocks were allocated by the step

    def end(self, i: int) -> float:
        """End time of iteration i (1-based)."""
        return float(self.ends[i - 1])

    def done_by(self, now: float) -> int:
        """Iterations that have ended at or before ``now``."""
        if self.k == 1:
            return 1 if self.ends[0] <= now else 0
        return int(np.searchsorted(self.ends, now, side="right"))


class Instance:
    """State of one instance. Units: tokens, KV blocks, simulated seconds."""

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

        self.running: list[ReqState] = []
        self.preempted: deque[ReqState] = deque()
        self.waiting: list[tuple[float, int, ReqState]] = []
        self.route_seq = 0
        self.wait_prompt_sum = 0
        self.wait_decode_sum = 0.0
        # running-batch aggregates for router snapshots (kept exact; recomputed after stretches)
        self.run_prefilling = 0
        self.run_prefill_left = 0
        self.run_decode_left = 0.0

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
        self.decs: list[ReqState] = []
        self.pres: list[tuple[ReqState, int]] = []
        self.stretch: Stretch | None = None
        self.end_s = 0.0

        self.num_iterations = 0
        self.s_time: list[float] = []
        self.s_batch: list[int] = []
        self.s_queue: list[int] = []
        self.s_kv: list[int] = []

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
        heapq.heappush(self.waiting, (key, r.seq, r))
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
        victim = self.running.pop()
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
        self.wait_prompt_sum += victim.target
        self.wait_decode_sum += max(victim.pred - victim.generated, 0.0)
        return victim

    def _run_decode_sub(self, r: ReqState) -> None:
        """``r`` leaves the running batch: remove its predicted decode tokens left."""
        if self.running:
            left = r.pred - r.generated
            if left > 0:
                self.run_decode_left -= left
        else:
            self.run_decode_left = 0.0

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

    def step(self, now: float) -> float | None:
        """Form the next batch at ``now``; return when it ends, or None when there is nothing to run."""
        bs = self.block_size
        running = self.running
        budget = self.token_budget
        decs: list[ReqState] = []  # decoding requests in this iteration (one token each)
        pres: list[tuple[ReqState, int]] = []  # (prefilling request, tokens this iteration)
        prefill_tokens = 0
        attn2 = 0.0
        dec_ctx = 0
        min_left = 1 << 62  # fewest output tokens still to generate among the decodes
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
                out_left = r.output - r.generated
                if out_left < min_left:
                    min_left = out_left
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

        admitted = 0
        head_hits = 0  # prefix hits of a waiting request that could not be admitted
        if not preempted_now:
            while len(running) < self.max_batch:
                head = self._peek_waiting()
                if head is None:
                    break
                r = head
                hits = 0
                if self.prefix_caching and r.cacheable:
                    hits = self.prefix_hits(r.cacheable)
                    if hits and hits * self.prefix_tokens >= r.target:
                        hits -= 1  # the first token still needs at least one token of compute
                cached = hits * self.prefix_tokens
                head_hits = hits
                remaining = r.target - cached
                if self.chunked:
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
                if blocks - shared > self.free_blocks() - to_pin:
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
                self.run_prefilling += 1
                self.run_prefill_left += r.target - cached
                pred_left = r.pred - r.generated
                if pred_left > 0:
                    self.run_decode_left += pred_left
                if r.first_sched_s != r.first_sched_s:  # NaN: first time scheduled
                    r.first_sched_s = now
                running.append(r)
                pres.append((r, need))
                budget -= need
                prefill_tokens += need
                attn2 += need * (cached + need)
                admitted += 1

        self._sample(now, dec_n + len(pres))
        if not dec_n and not pres:
            self.busy = False
            return None
        self.busy = True
        if prefill_tokens == 0 and not admitted and not preempted_now and dec_n == len(running):
            a, b = self.latency.decode_coeffs(dec_n)
            k = self._stretch_length(bs, min_left, head_hits > 0) if self.fast_forward else 1
            self.stretch = Stretch(now, a, b, dec_n, dec_ctx, k)
            self.decs = []
            self.pres = []
            self.end_s = self.stretch.end(k)
        else:
            self.stretch = None
            self.decs = decs
            self.pres = pres
            self.end_s = now + self.latency.iteration_time(prefill_tokens, attn2, dec_n, dec_ctx)
        if self.observer is not None:  # step-by-step replays only (k == 1): one call per iteration
            self.observer(prefill_tokens, float(attn2), dec_n, dec_ctx, self.end_s - now)
        return self.end_s

    def _stretch_length(self, bs: int, k: int, no_eviction: bool) -> int:
        """Iterations the decode-only batch can run unchanged: to the first finish (``k``, from the
        step) or KV exhaustion.

        ``no_eviction``: the blocked waiting head has prefix-cache hits; evicting them could make it
        admissible (a hit costs its pinned blocks up front), so the stretch stops before any prefix
        block is evicted and the step-by-step path handles the evictions.
        """
        running = self.running
        if k <= 1:
            return 1
        if no_eviction:
            free = self.total_blocks - self.used_private - self.cached_blocks
        else:
            free = self.free_blocks()
        if len(running) * -(-(k - 1) // bs) <= free:
            return k  # cheap bound: each request needs at most ceil((k - 1) / bs) more blocks

        def extra(m: int) -> int:
            # blocks needed beyond the current allocation to run m iterations (the first is allocated)
            return sum(-(-(r.computed + m) // bs) - r.alloc for r in running)

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
        bs = self.block_size
        delta = 0
        decode_left = 0.0
        extra_token = 1 if ahead else 0
        for r in self.running:
            c = r.computed + d
            r.computed = c
            g = r.generated + d
            r.generated = g
            na = -(-(c + extra_token) // bs)
            delta += na - r.alloc
            r.alloc = na
            if r.pred > g:
                decode_left += r.pred - g
        self.run_decode_left = decode_left
        self.used_private += delta
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
        finished: list[ReqState] = []
        st = self.stretch
        if st is not None:
            k = st.k
            self._apply(k, ahead=False)
            self.num_iterations += k
            self.stretch = None
            finished = [r for r in self.running if r.generated >= r.output]
        else:
            self.num_iterations += 1
            any_finished = False
            decode_left = self.run_decode_left
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
            self.run_decode_left = decode_left
            self.decs = []
            self.pres = []
            if any_finished:  # in running order, like the stretch path (it sets the LRU order)
                finished = [r for r in self.running if r.generated >= r.output]
        if finished:
            for r in finished:
                r.status = _FINISHED
                r.finish_s = now
                self._release(r)
                left = r.pred - r.generated
                if left > 0:
                    self.run_decode_left -= left
            self.running = [r for r in self.running if not r.status.is_finished]
            if not self.running:
                self.run_decode_left = 0.0
        self.busy = False
        return finished

    # ------------------------------------------------------------------ observation
    def _sample(self, now: float, batch_size: int) -> None:
        self.s_time.append(now)
        self.s_batch.append(batch_size)
        self.s_queue.append(len(self.waiting) + len(self.preempted))
        self.s_kv.append(self.used_private + self.pinned_cached_blocks)

    def load(self) -> tuple[int, int, int, float]:
        """(outstanding prompt tokens, prefill requests, decode requests, outstanding predicted decode
        tokens) over running and waiting requests, at the last iteration boundary. O(1): kept
        incrementally (predictions are multiples of 1/1024 token, so the float sums are exact)."""
        n_wait = len(self.waiting) + len(self.preempted)
        return (
            self.wait_prompt_sum + self.run_prefill_left,
            n_wait + self.run_prefilling,
            len(self.running) - self.run_prefilling,
            self.wait_decode_sum + self.run_decode_left,
        )

    def request_stats(self) -> tuple[tuple[int, float, int, bool], ...]:
        """``(prompt tokens, predicted output tokens, generated tokens, decoding)`` per request on
        this instance (waiting, preempted, running), at the last iteration boundary. O(requests):
        built only when ``ClusterConfig.request_stats`` is set (the RL env's observation)."""
        out = [(r.prompt, r.pred, r.generated, False) for _, _, r in self.waiting]
        out.extend((r.prompt, r.pred, r.generated, False) for r in self.preempted)
        out.extend((r.prompt, r.pred, r.generated, r.status is _DECODING) for r in self.running)
        return tuple(out)
