"""Masked Double DQN on stable-baselines3's DQN (the paper's learner; Jain et al., arXiv 2408.13510).

Who calls this: ``training.rl.train`` builds ``MaskedDoubleDQN`` for ``algo="dqn"``.

SB3's DQN is vanilla DQN (the target network both picks and values the next action) and knows no
action masks. The paper uses Double DQN (van Hasselt et al. 2016): the online network picks the
next action, the target network values it. Masks come from the observation itself: its first
``n_actions`` entries are the valid-action flags (``policy_serving.encode_observation``), so
greedy actions, exploration and the Double-DQN target all respect them without extra plumbing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch.nn import functional as F

from training.rl.policy_serving import PRIOR_FEATURES

_NEG = -1e9


def _masked(q: th.Tensor, obs: th.Tensor) -> th.Tensor:
    mask = obs[:, : q.shape[1]] > 0.5
    return th.where(mask, q, th.full_like(q, _NEG))


def slot_inputs_torch(x: th.Tensor, layout: tuple[int, int, int]) -> th.Tensor:
    """Torch twin of ``training.rl.policy_serving.slot_inputs``: (B, obs_dim) -> (B, m + 1, R + 2P + 1)."""
    m, r, p = layout
    b = x.shape[0]
    req = x[:, m + 1 : m + 1 + r]
    inst = x[:, m + 1 + r :].reshape(b, m, p)
    mean = inst.mean(dim=1, keepdim=True)
    slots = th.cat(
        [req.unsqueeze(1).expand(b, m, r), inst, mean.expand(b, m, p), x.new_zeros(b, m, 1)], dim=-1
    )
    delay = th.cat([req.unsqueeze(1), x.new_zeros(b, 1, p), mean, x.new_ones(b, 1, 1)], dim=-1)
    return th.cat([slots, delay], dim=1)


class MaskedQNetwork(QNetwork):
    """Greedy action = argmax over the valid actions flagged in the observation.

    With ``slot_layout = (m, R, P)`` the Q-network is the ``slots`` architecture (one MLP scoring
    every action's slot; ``training.rl.policy_serving.slot_inputs``), else SB3's plain MLP. With
    ``residual_bound = c`` the slot scorer's output r becomes ``c x tanh(r / c)``, in (-c, c): a trust
    region towards the prior (the learned part can only re-rank actions whose prior scores are within
    2c); the dueling value head stays unbounded, so the return level is still fitted.
    """

    def __init__(
        self,
        *args: Any,
        slot_layout: tuple[int, int, int] | None = None,
        prior_init: tuple[float, float] | None = None,
        freeze_prior: bool = False,
        residual_bound: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if residual_bound is not None and (slot_layout is None or residual_bound <= 0):
            raise ValueError("residual_bound needs the 'slots' architecture and must be > 0")
        self.slot_layout = slot_layout
        self.prior_init = prior_init
        self.freeze_prior = freeze_prior
        self.residual_bound = residual_bound
        self.prior: th.nn.Parameter | None = None
        if slot_layout is not None:
            _m, r, p = slot_layout
            self.q_net = th.nn.Sequential(*create_mlp(r + 2 * p + 1, 1, self.net_arch, self.activation_fn))
            # dueling value head on [request, mean over instances]: the state's value (large,
            # action-independent) is not learnt once per slot, so the slots' scores only carry advantages
            self.v_net = th.nn.Sequential(*create_mlp(r + p, 1, self.net_arch, self.activation_fn))
            if prior_init is not None:
                # learnable (beta, w); the residual MLP starts ~0 so the first policy is the prior's
                self.prior = th.nn.Parameter(
                    th.tensor(prior_init, dtype=th.float32), requires_grad=not freeze_prior
                )
                last = self.q_net[-1]
                assert isinstance(last, th.nn.Linear)
                with th.no_grad():
                    last.weight.mul_(0.01)

    def action_scores(self, x: th.Tensor) -> th.Tensor:
        """Per-action scores without the state value (what the exported numpy policy computes):
        the slot scorer's output minus the heuristic prior. Same argmax as ``forward``."""
        assert self.slot_layout is not None
        q = self.q_net(slot_inputs_torch(x, self.slot_layout)).squeeze(-1)
        if self.residual_bound is not None:
            q = self.residual_bound * th.tanh(q / self.residual_bound)
        if self.prior is None:
            return q
        m, r, p = self.slot_layout
        inst = x[:, m + 1 + r :].reshape(x.shape[0], m, p)
        a, b = PRIOR_FEATURES
        term = self.prior[0] * (inst[..., a] + self.prior[1] * inst[..., b])
        return q - th.cat([term, x.new_zeros(x.shape[0], 1)], dim=1)

    def forward(self, obs: Any) -> th.Tensor:
        x = self.extract_features(obs, self.features_extractor)
        if self.slot_layout is None:
            return self.q_net(x)
        adv = self.action_scores(x)
        m, r, p = self.slot_layout
        req = x[:, m + 1 : m + 1 + r]
        mean = x[:, m + 1 + r :].reshape(x.shape[0], m, p).mean(dim=1)
        value = self.v_net(th.cat([req, mean], dim=1))
        return value + adv - adv.mean(dim=1, keepdim=True)

    def _predict(self, observation: Any, deterministic: bool = True) -> th.Tensor:
        q = _masked(self(observation), observation)
        return q.argmax(dim=1).reshape(-1)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {
            **super()._get_constructor_parameters(),
            "slot_layout": self.slot_layout,
            "prior_init": self.prior_init,
            "freeze_prior": self.freeze_prior,
            "residual_bound": self.residual_bound,
        }


class MaskedDQNPolicy(DQNPolicy):
    def __init__(
        self,
        *args: Any,
        slot_layout: tuple[int, int, int] | None = None,
        prior_init: tuple[float, float] | None = None,
        freeze_prior: bool = False,
        residual_bound: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.slot_layout = slot_layout
        self.prior_init = prior_init
        self.freeze_prior = freeze_prior
        self.residual_bound = residual_bound
        super().__init__(*args, **kwargs)

    def make_q_net(self) -> QNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        q = MaskedQNetwork(
            **net_args,
            slot_layout=self.slot_layout,
            prior_init=self.prior_init,
            freeze_prior=self.freeze_prior,
            residual_bound=self.residual_bound,
        )
        return q.to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {
            **super()._get_constructor_parameters(),
            "slot_layout": self.slot_layout,
            "prior_init": self.prior_init,
            "freeze_prior": self.freeze_prior,
            "residual_bound": self.residual_bound,
        }


class MaskedDoubleDQN(DQN):
    """DQN with the Double-DQN target and observation-encoded action masks.

    Exploration draws uniformly among the valid actions with ``explore_rng`` (seeded from the run's
    seed; no global numpy state). Build it as ``MaskedDoubleDQN(MaskedDQNPolicy, env, ...)``; the
    two-positional signature is SB3's, which ``load`` relies on.
    """

    def __init__(self, policy: Any, env: Any, *, explore_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(policy, env, **kwargs)
        self.explore_rng = np.random.default_rng(np.random.SeedSequence([explore_seed, 4242]))

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        if not deterministic and self.explore_rng.random() < self.exploration_rate:
            obs = np.asarray(observation)
            n_act = int(self.action_space.n)  # type: ignore[attr-defined]
            batch = obs.reshape(-1, obs.shape[-1])
            acts = []
            for row in batch:
                valid = np.flatnonzero(row[:n_act] > 0.5)
                acts.append(int(self.explore_rng.choice(valid)) if len(valid) else n_act - 1)
            action = np.array(acts) if obs.ndim > 1 else np.array(acts[0])
            return action, state
        return self.policy.predict(observation, state, episode_start, deterministic)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses = []
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = data.discounts if data.discounts is not None else self.gamma
            with th.no_grad():
                next_online = _masked(self.q_net(data.next_observations), data.next_observations)
                next_actions = next_online.argmax(dim=1, keepdim=True)
                next_q = th.gather(self.q_net_target(data.next_observations), 1, next_actions)
                target = data.rewards + (1 - data.dones) * discounts * next_q
            current = th.gather(self.q_net(data.observations), 1, data.actions.long())
            loss = F.smooth_l1_loss(current, target)
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))
