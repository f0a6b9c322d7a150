"""PQN (Gallici et al., 2025): parallelised Q(λ)-learning on the shared training loop.

Online Q-learning over a large vectorised env batch with no replay buffer and no target
network; LayerNorm before every activation keeps TD stable. It reuses the engine unchanged —
env adapters, rollout, the update loop, ``sgd_epochs``, the seed / grid ``vmap`` — through its
hooks:

* ``make_policy``: :class:`~prpo.qlearning.QPolicy` over a LayerNorm
  :class:`~prpo.qlearning.QNetwork` (conv torso for image observations);
* ``behaviour``: ε-greedy with this update's ε, ``linear(eps_start → eps_finish over
  eps_decay · K updates)`` (metric ``epsilon``);
* ``targets``: Q(λ) returns from the rollout-time ``max_a Q`` values, computed once per rollout
  and fixed across the epochs (no advantages);
* ``make_loss``: ``0.5 · mean (Q_θ(s, a) − sg(G))²``.

Defaults are purejaxql's: RAdam, gradient clip 10, CartPole 32 envs × 64 steps with reward
scale 0.1; MinAtar 128 × 32, λ 0.65; greedy evaluation in the loop every ≈ 5% of the updates.
"""

from __future__ import annotations

import jax.numpy as jnp

from prpo.advantages import lambda_returns
from prpo.algorithm import Algorithm, register
from prpo.config import ConfigError
from prpo.qlearning import QPolicy, linear_epsilon, make_q_network, td_loss
from prpo.registry import hyperparameter, static

__all__ = ["PQN", "make_td_loss", "q_lambda_targets_from_rollout"]


def _policy(cfg, spec, network=None):
    if network is None:
        network = make_q_network(spec.action_space.n, spec.obs_shape, cfg.actor_hidden, cfg.q_torso, cfg.activation,
                                 cfg.q_layer_norm)
    return QPolicy(network)


def _epsilon_greedy(policy, hp, update, num_updates):
    epsilon = linear_epsilon(update, num_updates, hp.eps_start, hp.eps_finish, hp.eps_decay)
    return policy.behaviour(epsilon), {"epsilon": epsilon}


def q_lambda_targets_from_rollout(cfg, hp, rewards, values, next_values, terminated, truncated, axis_name=None,
                                 aux=None):
    """Q(λ) targets (``next_values`` = max_a Q at act time, or of the final obs at truncation); zero advantages."""
    del values, axis_name
    returns = lambda_returns(rewards, next_values, terminated, truncated, hp.gamma, hp.gae_lambda, unroll=cfg.scan_unroll)
    return jnp.zeros_like(returns), returns


def make_td_loss(cfg, policy: QPolicy, surrogate=None, axis_name=None):
    """``loss(params, batch, hp, key, progress) -> (loss, metrics)`` for PQN minibatches.

    ``batch.returns`` holds the Q(λ) targets computed once per rollout (the surrogate is unused).
    """
    del cfg, surrogate, axis_name

    def loss_fn(params, mb, hp, key, progress=0.0):
        del hp, key, progress
        q = policy.q_values(params, mb.obs)
        q_taken = jnp.take_along_axis(q, mb.action[..., None].astype(jnp.int32), axis=-1)[..., 0]
        loss = td_loss(q_taken, mb.returns).mean()
        return loss, {"loss": loss, "td_loss": loss, "q_mean": q_taken.mean(), "target_mean": mb.returns.mean()}

    return loss_fn


def _check(cfg):
    if cfg.normalize_reward:
        raise ConfigError("normalize_reward=True is not used by pqn; scale rewards with reward_scale instead")


PQN = register(Algorithm(
    name="pqn",
    description="PQN: parallelised Q(λ)-learning, LayerNorm Q-network, ε-greedy (discrete actions)",
    overrides=dict(optimizer="radam", activation="relu", actor_hidden=(256, 256), adam_eps=1e-8, max_grad_norm=10.0),
    family_overrides={
        # purejaxql CartPole: evaluation every 5% of the 244 updates (int(12.2)), 128 greedy episodes
        "cartpole": dict(num_envs=32, num_steps=64, num_minibatches=16, lr=1e-4, reward_scale=0.1, eps_finish=0.2,
                         eps_decay=0.2, eval_every=12, eval_envs=128),
        # purejaxql MinAtar: conv torso, one hidden layer of 128, evaluation about every 5% of 2441 updates
        "minatar": dict(num_envs=128, num_steps=32, update_epochs=2, num_minibatches=32, actor_hidden=(128,),
                        lr=5e-4, gae_lambda=0.65, eval_every=122, eval_envs=128),
    },
    presets=("cartpole", "minatar"),
    preset_docs={
        "cartpole": "purejaxql's PQN CartPole defaults: 32 envs × 64 steps, RAdam lr 1e-4, reward scale 0.1",
        "minatar": "purejaxql's PQN MinAtar defaults: conv torso, 128 envs × 32 steps, λ 0.65",
    },
    options={
        "q_torso": static("auto", "Q-network torso: 'conv' for image observations (MinAtar), else 'mlp'",
                          choices=("auto", "mlp", "conv")),
        "q_layer_norm": static(True, "LayerNorm before every activation (False: the unstable ablation)", type=bool,
                               choices=(True, False)),
        "eps_start": hyperparameter(1.0, "ε-greedy: ε at the first update", lambda v: 0 <= v <= 1, "in [0, 1]"),
        "eps_finish": hyperparameter(0.05, "ε after the decay", lambda v: 0 <= v <= 1, "in [0, 1]"),
        "eps_decay": hyperparameter(0.1, "fraction of all updates over which ε decays linearly", lambda v: 0 < v <= 1,
                                    "in (0, 1]"),
    },
    action_spaces=("discrete",),
    policies=("auto",),  # ε-greedy on its own Q-network
    check_config=_check,
    make_policy=_policy,
    make_loss=make_td_loss,
    targets=q_lambda_targets_from_rollout,
    behaviour=_epsilon_greedy,
))
