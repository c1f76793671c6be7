"""Regression tests from a vLLM-semantics review of the simulator (each failed before its fix)."""

from __future__ import annotations

import pytest

from tests.training.simulator._util import Fixed, Recording
from training.length.baselines import OraclePredictor
from training.simulator import ClusterConfig, InstanceConfig, LinearLatencyModel, Request, simulate

LIN = LinearLatencyModel()
MODES = pytest.mark.parametrize("fast", [True, False], ids=["fast_forward", "step"])


@MODES
def test_request_whose_kv_peak_fills_the_cache_exactly_is_not_rejected(fast):
    # The last output token is sampled, never fed back: a request holds at most prompt + output - 1
    # tokens of KV. 4 + 5 - 1 = 8 tokens = exactly 2 blocks of 4, so it runs alone to completion.
    cfg = ClusterConfig(1, InstanceConfig(kv_blocks=2, block_size=4, prefix_block_tokens=4))
    res = simulate([Request("a", 0.0, 4, 5)], Fixed(0), cfg, LIN, OraclePredictor(), fast_forward=fast)
    res.check_invariants()
    assert res.generated_tokens.tolist() == [5]
    assert max(res.instance_series[0]["kv_used_blocks"]) == 2
    # one more output token needs a 3rd block: rejected up front, with the count in the message
    with pytest.raises(ValueError, match="needs 3 KV blocks"):
        simulate([Request("a", 0.0, 4, 6)], Fixed(0), cfg, LIN, OraclePredictor(), fast_forward=fast)


@MODES
def test_prefix_chain_is_evicted_tail_first(fast):
    # vLLM frees a request's blocks in reverse order, so the tail of a cached prefix chain is evicted
    # before its head and the shared head stays hittable. KV: 3 blocks of 4 tokens, prefix blocks of 4.
    # a caches chain (1, 2); b (chain (7, 8)) needs 2 blocks, so one of a's must be evicted: block 2.
    # c starts with block 1 and must hit it.
    router = Recording(0)
    reqs = [
        Request("a", 0.0, 8, 1, prefix_hash_ids=(1, 2)),
        Request("b", 1.0, 8, 1, prefix_hash_ids=(7, 8)),
        Request("c", 2.0, 8, 1, prefix_hash_ids=(1, 9)),
    ]
    cfg = ClusterConfig(1, InstanceConfig(kv_blocks=3, block_size=4, prefix_block_tokens=4))
    res = simulate(reqs, router, cfg, LIN, OraclePredictor(), fast_forward=fast)
    res.check_invariants()
    assert [cv.instances[0].cached_prefix_blocks for _, cv in router.seen] == [0, 0, 1]
    assert res.ttft_s[2] == pytest.approx(LIN.iteration_time(4, 4.0 * 8, 0, 0), rel=1e-12)


class _CheaperWhenBatched:
    """A valid latency model whose decode iterations get cheaper with more sequences (1/n s) and
    whose prefills add 0.01 s: a routed request then brings an instance's work forward."""

    name = "cheaper_when_batched"

    def iteration_time(self, prefill_tokens, prefill_attention_tokens2, decode_seqs, decode_context_tokens):
        return (0.01 if prefill_tokens else 0.0) + (1.0 / decode_seqs if decode_seqs else 0.0)

    def decode_coeffs(self, decode_seqs):
        return (1.0 / decode_seqs, 0.0)


def test_stale_stretch_end_does_not_move_the_clock():
    # a decodes alone in a 9-iteration stretch planned to end at 9.01 s; b, routed at 0.5 s, cuts it
    # and makes the shared iterations cheaper, so everything is done at 8.02 s. The stale end event
    # of the cut stretch (9.01 s) must not become sim_time_s (step-by-step has no such event).
    reqs = [Request("a", 0.0, 10, 10), Request("b", 0.5, 10, 3)]
    cfg = ClusterConfig(num_instances=1)
    model = _CheaperWhenBatched()
    fast = simulate(reqs, Fixed(0), cfg, model, OraclePredictor())
    step = simulate(reqs, Fixed(0), cfg, model, OraclePredictor(), fast_forward=False)
    fast.check_invariants()
    assert fast.finish_s.tolist() == step.finish_s.tolist()
    assert fast.sim_time_s == step.sim_time_s == pytest.approx(8.02)
