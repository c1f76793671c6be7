"""Hand-computed replays with the paper's linear model (base 0.02 s, 3.2e-4 s/prefill token,
3.3e-5 s/decode-context token), each checked in fast-forward and step-by-step mode."""

from __future__ import annotations

import pytest

from tests.training.simulator._util import Fixed, Recording
from training.length.baselines import OraclePredictor
from training.simulator import (
    ClusterConfig,
    InstanceConfig,
    LinearLatencyModel,
    QueuePolicy,
    Request,
    simulate,
)

BASE, G1, G2 = 0.02, 3.2e-4, 3.3e-5
LIN = LinearLatencyModel()
MODES = pytest.mark.parametrize("fast", [True, False], ids=["fast_forward", "step"])


def run(requests, fast, router=None, m=1, **instance):
    cfg = ClusterConfig(num_instances=m, instance=InstanceConfig(**instance))
    res = simulate(requests, router or Fixed(0), cfg, LIN, OraclePredictor(), seed=0, fast_forward=fast)
    res.check_invariants()
    return res


@MODES
def test_single_request_alone(fast):
    res = run([Request("a", 1.0, 100, 3)], fast)
    ttft = BASE + G1 * 100
    d1 = BASE + G2 * 101  # decode of output token 2 attends prompt + token 1
    d2 = BASE + G2 * 102
    assert res.ttft_s[0] == pytest.approx(ttft, rel=1e-12)
    assert res.first_token_s[0] == pytest.approx(1.0 + ttft, rel=1e-12)
    assert res.e2e_s[0] == pytest.approx(ttft + d1 + d2, rel=1e-12)
    assert res.tbt_s[0] == pytest.approx((d1 + d2) / 2, rel=1e-12)
    assert res.router_wait_s[0] == 0.0
    assert res.queue_wait_s[0] == 0.0
    assert res.num_iterations == 3
    assert res.generated_tokens[0] == 3


@MODES
def test_one_token_output_has_zero_tbt(fast):
    res = run([Request("a", 0.0, 10, 1)], fast)
    assert res.e2e_s[0] == pytest.approx(BASE + G1 * 10)
    assert res.tbt_s[0] == 0.0


@MODES
def test_two_requests_co_batched(fast):
    res = run([Request("a", 0.0, 100, 2), Request("b", 0.0, 50, 3)], fast)
    prefill = BASE + G1 * 150  # both prompts in one iteration
    d1 = BASE + G2 * (101 + 51)  # a's last token, b's second
    d2 = BASE + G2 * 52  # b alone
    assert res.first_token_s.tolist() == pytest.approx([prefill, prefill], rel=1e-12)
    assert res.finish_s[0] == pytest.approx(prefill + d1, rel=1e-12)
    assert res.finish_s[1] == pytest.approx(prefill + d1 + d2, rel=1e-12)
    assert res.num_iterations == 3


@MODES
def test_preemption_with_tiny_kv(fast):
    # 4 blocks of 4 tokens. a, b: 4-token prompts, 6 output tokens. After the prefill (1 block each)
    # the first decode takes a 2nd block each (KV full); the 5th decode needs a 3rd block for a, so b
    # (newest) is preempted, a finishes, then b recomputes prompt + 5 generated tokens (9 tokens, 3
    # blocks) and its prefill yields its 6th token.
    reqs = [Request("a", 0.0, 4, 6), Request("b", 0.0, 4, 6)]
    res = run(reqs, fast, kv_blocks=4, block_size=4, prefix_block_tokens=4)
    assert res.preemptions.tolist() == [0, 1]
    prefill = BASE + G1 * 8
    decodes = sum(BASE + G2 * (2 * ctx) for ctx in (5, 6, 7, 8))
    a_last = BASE + G2 * 9
    assert res.finish_s[0] == pytest.approx(prefill + decodes + a_last, rel=1e-12)
    assert res.finish_s[1] == pytest.approx(prefill + decodes + a_last + BASE + G1 * 9, rel=1e-12)
    assert res.first_token_s[1] == pytest.approx(prefill, rel=1e-12)  # first token time is kept
    assert res.generated_tokens.tolist() == [6, 6]
    assert max(max(s["kv_used_blocks"]) for s in res.instance_series) <= 4


@MODES
def test_prefix_cache_hit_shortens_prefill(fast):
    ids = (11, 22, 33)  # 1100-token prompt: 2 full 512-token blocks cacheable
    reqs = [Request("a", 0.0, 1100, 2, prefix_hash_ids=ids), Request("b", 10.0, 1100, 2, prefix_hash_ids=ids)]
    router = Recording(0)
    cfg = ClusterConfig(num_instances=1, instance=InstanceConfig())
    res = simulate(reqs, router, cfg, LIN, OraclePredictor(), fast_forward=fast)
    res.check_invariants()
    assert res.ttft_s[0] == pytest.approx(BASE + G1 * 1100)
    assert res.ttft_s[1] == pytest.approx(BASE + G1 * (1100 - 1024))
    assert [cv.instances[0].cached_prefix_blocks for _, cv in router.seen] == [0, 2]
    off = run(reqs, fast, prefix_caching=False)
    assert off.ttft_s[1] == pytest.approx(BASE + G1 * 1100)


@MODES
def test_prefix_hit_keeps_one_token_of_compute(fast):
    ids = (5, 6)
    reqs = [Request("a", 0.0, 1024, 1, prefix_hash_ids=ids), Request("b", 5.0, 1024, 1, prefix_hash_ids=ids)]
    res = run(reqs, fast)
    # the whole prompt is cached, but the last block is recomputed so the first token has compute
    assert res.ttft_s[1] == pytest.approx(BASE + G1 * 512)


@MODES
def test_chunked_prefill_splits_a_long_prompt(fast):
    res = run([Request("a", 0.0, 1000, 1)], fast, chunked_prefill_tokens=256)
    assert res.num_iterations == 4  # 256 + 256 + 256 + 232
    assert res.ttft_s[0] == pytest.approx(4 * BASE + G1 * 1000)
    whole = run([Request("a", 0.0, 1000, 1)], fast)
    assert whole.num_iterations == 1


@MODES
def test_chunked_prefill_shares_budget_with_decodes(fast):
    # a decodes while b's 600-token prompt is prefilled in chunks of (256 - 1) tokens
    reqs = [Request("a", 0.0, 10, 50), Request("b", 0.01, 600, 1)]
    res = run(reqs, fast, chunked_prefill_tokens=256)
    assert res.generated_tokens.tolist() == [50, 1]
    # b's prefill needs ceil(600 / 255) = 3 iterations, each also decoding a
    assert res.ttft_s[1] > 3 * BASE


@MODES
def test_long_prompt_without_chunking_is_admitted_alone(fast):
    reqs = [Request("a", 0.0, 100, 1), Request("b", 0.0, 300, 1), Request("c", 0.0, 50, 1)]
    res = run(reqs, fast, max_batched_tokens=200)
    # iteration 1: a (100 tokens); b (300 > remaining budget) waits; c is behind b (no skipping).
    # iteration 2: b alone (over budget, but the only prefill). iteration 3: c.
    t1 = BASE + G1 * 100
    t2 = t1 + BASE + G1 * 300
    t3 = t2 + BASE + G1 * 50
    assert res.finish_s.tolist() == pytest.approx([t1, t2, t3], rel=1e-12)


@MODES
@pytest.mark.parametrize(
    ("policy", "order"),
    [(QueuePolicy.FCFS, [0, 1, 2, 3]), (QueuePolicy.LWL, [0, 2, 3, 1]), (QueuePolicy.BINPACK, [0, 1, 3, 2])],
)
def test_queue_policy_orders_waiting_queue(fast, policy, order):
    # one slot; "first" occupies it from t=0; the rest arrive while it runs and wait
    outs = [5, 40, 10, 20]
    reqs = [Request("first", 0.0, 10, outs[0])] + [
        Request(f"r{i}", 0.001 * i, 10, outs[i]) for i in range(1, 4)
    ]
    res = run(reqs, fast, max_batch_size=1, queue_policy=policy)
    assert list(res.first_token_s.argsort(kind="stable")) == order


@MODES
def test_preempted_request_goes_first(fast):
    reqs = [Request("a", 0.0, 4, 6), Request("b", 0.0, 4, 6), Request("c", 0.0005, 4, 1)]
    res = run(reqs, fast, kv_blocks=4, block_size=4, prefix_block_tokens=4)
    assert res.preemptions.tolist() == [0, 1, 0]
    # c arrived while the KV cache was full; b, preempted later, is readmitted before it
    assert res.finish_s[1] <= res.first_token_s[2]


@MODES
def test_arrival_exactly_on_a_stretch_boundary(fast):
    # a decodes alone from t1; b arrives exactly when a's 3rd decode iteration ends. Both modes
    # accumulate iteration times the same way, so the boundary is the same float in both, and the
    # snapshot is the post-iteration state (the next batch is formed after routing at that instant).
    t = LIN.iteration_time(100, 100.0 * 100, 0, 0)
    a, b = LIN.decode_coeffs(1)
    for context in (101, 102, 103):
        t = t + (a + b * context)
    router = Recording(0)
    reqs = [Request("a", 0.0, 100, 10), Request("b", t, 40, 2)]
    cfg = ClusterConfig(num_instances=1, instance=InstanceConfig(block_size=4, prefix_block_tokens=4))
    res = simulate(reqs, router, cfg, LIN, OraclePredictor(), fast_forward=fast)
    res.check_invariants()
    view = router.seen[1][1].instances[0]
    assert view.num_running == 1
    assert view.kv_used_blocks == 26  # a: 103 tokens in KV, 4 per block
    assert view.outstanding_decode_tokens == 6.0  # 10 - (1 + 3) tokens out
    # b joins the very next iteration (a's 5th token, context 104)
    assert res.first_token_s[1] == t + LIN.iteration_time(40, 40.0 * 40, 1, 104)
