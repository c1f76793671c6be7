"""The mixing penalty: zero on an idle instance, grows with what is already there, alpha mixes."""

from __future__ import annotations

import pytest

from training.impact.penalty import MixingImpact, mixing_impact, mixing_penalty_s
from training.simulator.interface import InstanceView, RequestView
from training.simulator.latency import LinearLatencyModel

LM = LinearLatencyModel(
    base_s=0.02,
    grad1_s_per_prefill_token=3.2e-4,
    grad2_s_per_decode_context_token=0.0,
    per_decode_seq_s=3.3e-5,
)
REQ = RequestView("r", 0.0, 0.0, prompt_tokens=500, task="t", predicted_output_tokens=200.0)


def view(running: int = 0, decoding: int = 0, decode_tokens: float = 0.0) -> InstanceView:
    return InstanceView(
        index=0,
        num_running=running,
        num_waiting=0,
        kv_used_blocks=10 * running,
        kv_total_blocks=1000,
        outstanding_prompt_tokens=0,
        outstanding_decode_tokens=decode_tokens,
        num_prefill_requests=running - decoding,
        num_decode_requests=decoding,
    )


def kw():
    return {"block_size": 16, "max_batch_size": 256}


def test_idle_instance_costs_nobody_anything():
    assert mixing_impact(REQ, view(), LM, **kw()) == MixingImpact(0.0, 0.0)


def test_prefill_impact_is_the_prefill_time_each_decoder_waits():
    imp = mixing_impact(REQ, view(running=3, decoding=3, decode_tokens=300.0), LM, **kw())
    assert imp.prefill_s == pytest.approx(3 * 3.2e-4 * 500)
    # one more decode sequence per iteration (3.3e-5 s) for min(200, 300 / 3) overlapping iterations, x3
    assert imp.decode_s == pytest.approx(3 * 100 * 3.3e-5)


def test_impact_grows_with_the_load_already_there():
    light = mixing_penalty_s(REQ, view(running=1, decoding=1, decode_tokens=50.0), LM, **kw())
    heavy = mixing_penalty_s(REQ, view(running=8, decoding=8, decode_tokens=4000.0), LM, **kw())
    assert 0.0 < light < heavy


def test_alpha_mixes_the_two_parts():
    imp = MixingImpact(prefill_s=2.0, decode_s=4.0)
    assert imp.penalty() == 3.0
    assert imp.penalty(1.0) == 2.0
    assert imp.penalty(0.0) == 4.0
    with pytest.raises(ValueError, match="alpha"):
        imp.penalty(1.5)
