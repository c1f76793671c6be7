"""``RouterEnv.step`` computes ``rewards.step_reward``'s terms inline, from factors cached per env and
per guidance episode (issue 16, fifth pass): every step's ``reward_*`` info entries and reward equal,
bit for bit, ``step_reward`` applied to the step's inputs (read back from the env), for drawn reward
settings, on both observation paths."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from training.rl.env import RouterEnv
from training.rl.policy_serving import ObsSpec
from training.rl.rewards import RewardConfig, mixing_weight, step_reward
from training.workloads.episodes import EpisodeSampler

rewards = st.builds(
    RewardConfig,
    variant=st.sampled_from(["baseline", "aware", "guided"]),
    objective=st.sampled_from(["paper", "latency"]),
    completion_reward=st.floats(0.0, 100.0),
    in_system_penalty=st.floats(0.0, 5.0),
    mixing_weight=st.floats(0.0, 3.0),
    guidance_decay=st.floats(0.0, 2.0),
    scale=st.floats(1e-6, 10.0),
)


@settings(derandomize=True, max_examples=30, deadline=None)
@given(rewards, st.integers(0, 6), st.booleans(), st.booleans())
def test_step_rewards_equal_step_reward(
    tiny_sampler: EpisodeSampler, cfg: RewardConfig, episode: int, compiled: bool, delay: bool
) -> None:
    env = RouterEnv(tiny_sampler, cfg, ObsSpec(num_instances=2, allow_delay=delay), compiled=compiled)
    env.set_guidance_episode(episode)
    env.reset(seed=episode)
    m = env.obs_spec.num_instances
    done, k = False, 0
    while not done:
        valid = np.flatnonzero(env.action_masks())
        action = int(valid[k % len(valid)])
        before = env._state
        assert before is not None
        penalty = 0.0 if action == m else float(before.snapshot.instances[action, 9])
        t0, finished0 = env._now, env._finished
        if k == 5:
            env.set_guidance_episode(episode + 1)  # the trainer may move it mid-episode
        _, reward, done, _, info = env.step(action)
        k += 1
        if done:
            break
        st_ = env._state
        assert st_ is not None
        assert env._request is not None
        held = int(st_.snapshot.router_queue_len) + (1 if env._request.waited_s > 0 else 0)
        want = step_reward(
            cfg,
            ticks=(env._now - t0) / env.tick_s,
            pending_weight=float(np.add.reduce(st_.pending_weight)) + held,
            completed=env._finished - finished0,
            mixing_penalty_s=penalty,
            tick_s=env.tick_s,
            episode=env.guidance_episode,
        )
        want["drain"] = 0.0
        got = {name: info[f"reward_{name}"] for name in want}
        assert [math.copysign(1.0, v) for v in got.values()] == [math.copysign(1.0, v) for v in want.values()]
        assert got == want
        assert reward == float(sum(want.values()))
        assert info["mixing_weight"] == mixing_weight(cfg, env.guidance_episode)
    assert k > 10
