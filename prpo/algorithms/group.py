"""Critic-free baselines from group rollouts: RLOO, ReMax, GRPO / Dr. GRPO, REINFORCE++.

The ``num_envs = G·K`` envs form G groups of ``group_size`` = K consecutive envs. At the start
of every rollout each group's first env (its leader, which continues its own stream) is
cloned into the other K − 1 (env states are pytrees with a leading ``[N]`` axis, so cloning
is a gather). The K members then act with independent keys for ``num_steps`` steps. This is
the vectorised-env analogue of K completions of one prompt.

Credit is the reward-to-go inside the rollout segment,
``G_{i,t} = r_{i,t} + γ·(1 − done_{i,t})·G_{i,t+1}`` with ``G_{i,T} = 0``. There is no critic
bootstrap, since the method is critic-free. Every step of a member is compared with the
other members at the same step index. UNVERIFIED: the natural reading for envs, where the
papers have one outcome per sequence. The baseline of member i is independent of member i's
actions (for ``rloo`` and ``remax``), so those advantages are unbiased. Baselines
(``group_baseline``):

* ``rloo``        ``A_i = G_i − mean_{j≠i} G_j = K/(K−1)·(G_i − mean_G)`` (Ahmadian et al., 2024)
* ``remax``       ``A_i = G_i − G_greedy``: one extra greedy (mode-action) rollout per group from
                  the same cloned state (Li et al., 2023)
* ``grpo``        ``(G_i − mean_G) / (std_G + 1e-8)`` (Shao et al., 2024)
* ``drgrpo``      ``G_i − mean_G`` (Dr. GRPO, Liu et al., 2025)
* ``global``      ``(G_i − mean_B) / std_B`` over the whole batch (REINFORCE++, Hu, 2025; K may be 1)

The update is PPO-clip on these advantages (``adv_norm="none"``; ``global`` and ``grpo``
normalise themselves), with ``vf_coef = 0``. The actor-critic network's critic head still
runs but gets no gradient. The registered names ``group_rollouts`` (baseline ``group_baseline``), ``rloo``, ``remax``, ``grpo`` and
``reinforce_pp`` are this algorithm with their baseline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prpo.advantages import grpo_advantages
from prpo.algorithm import Algorithm, register
from prpo.config import ConfigError
from prpo.registry import static
from prpo.rollout import collect_with

__all__ = ["reward_to_go", "group_advantages", "clone_leaders"]

BASELINES = ("rloo", "remax", "grpo", "drgrpo", "global")
_GROUP_SIZE = static(4, "envs per group K (cloned from the group's leader at each rollout start; UNVERIFIED default)",
                     type=int, check=lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                     allowed="a positive integer")
_BASELINE = static("rloo", "critic-free baseline of the group rollouts", choices=BASELINES)


def reward_to_go(rewards, done, gamma):
    """``G_t = r_t + γ·(1 − done_t)·G_{t+1}``, ``G_T = 0``; time-major ``[T, ...]``."""
    def step(g_next, xs):
        r, d = xs
        g = r + gamma * (1.0 - d.astype(r.dtype)) * g_next
        return g, g

    _, g = jax.lax.scan(step, jnp.zeros_like(rewards[0]), (rewards, done), reverse=True)
    return g


def group_advantages(returns, group_size: int, baseline: str, greedy=None):
    """Advantages of ``returns [T, G·K]`` (groups of K consecutive columns). ``greedy [T, G]``:
    the greedy rollout's reward-to-go, for ``baseline="remax"``."""
    t, n = returns.shape
    g = returns.reshape(t, n // group_size, group_size)
    if baseline == "rloo":
        adv = group_size / (group_size - 1) * (g - g.mean(axis=-1, keepdims=True))
    elif baseline == "remax":
        adv = g - greedy[..., None]
    elif baseline in ("grpo", "drgrpo"):
        adv = grpo_advantages(g, axis=-1, scale=baseline == "grpo")
    else:  # global (REINFORCE++)
        return (returns - returns.mean()) / (returns.std() + 1e-8)
    return adv.reshape(t, n)


def clone_leaders(tree, num_envs: int, group_size: int):
    """Every leaf with a leading ``[num_envs]`` axis: member k of group g ← the group's env 0."""
    def clone(x):
        if getattr(x, "ndim", 0) >= 1 and x.shape[0] == num_envs:
            return jnp.repeat(x[::group_size], group_size, axis=0)
        return x

    return jax.tree.map(clone, tree)


def _greedy_returns(ctx, params, env_state, obs, key, gamma):
    """Reward-to-go ``[T, G]`` of a mode-action rollout from each leader's state."""
    cfg, k = ctx.cfg, cfg_group_size(ctx.cfg)
    env = ctx.env.with_num_envs(ctx.env.num_envs // k)
    lead = jax.tree.map(lambda x: x[::k] if getattr(x, "ndim", 0) >= 1 and x.shape[0] == ctx.env.num_envs else x,
                        env_state)

    def step(carry, kk):
        s, o = carry
        a = ctx.policy.mode(params, ctx.obs_transform(o))
        s, ts = env.step(s, ctx.action_transform(a), kk)
        return (s, ts.obs), (ts.reward.astype(jnp.float32) * ctx.hp.reward_scale, ts.terminated | ts.truncated)

    _, (r, d) = jax.lax.scan(step, (lead, obs[::k]), jax.random.split(key, cfg.num_steps))
    return reward_to_go(r, d, gamma)


def cfg_group_size(cfg) -> int:
    return cfg.group_size


def _collect(ctx, behaviour, params, env_state, obs, key):
    n, k = ctx.env.num_envs, ctx.cfg.group_size
    if n % k:
        raise ConfigError(f"group_size={k} must divide the envs per device ({n})")
    env_state, obs = clone_leaders(env_state, n, k), clone_leaders(obs, n, k)
    k_roll, k_greedy = jax.random.split(key)
    out = collect_with(ctx, behaviour, params, env_state, obs, k_roll)
    if ctx.cfg.group_baseline != "remax":
        return out
    greedy = _greedy_returns(ctx, params, env_state, obs, k_greedy, ctx.hp.gamma)
    new_state, last_obs, traj, stats = out
    return new_state, last_obs, traj.replace(aux={**traj.aux, "greedy_return": jnp.repeat(greedy, k, axis=1)}), stats


def _targets(cfg, hp, rewards, values, next_values, terminated, truncated, axis_name=None, aux=None):
    returns = reward_to_go(rewards, terminated | truncated, hp.gamma)
    greedy = None if aux is None or "greedy_return" not in aux else aux["greedy_return"][:, ::cfg.group_size]
    return group_advantages(returns, cfg.group_size, cfg.group_baseline, greedy), returns


def _check(cfg):
    k, b = cfg.group_size, cfg.group_baseline
    if cfg.num_envs % k:
        raise ConfigError(f"group_size={k} must divide num_envs={cfg.num_envs}")
    if b in ("rloo", "grpo", "drgrpo") and k < 2:
        raise ConfigError(f"group_baseline={b!r} compares the members of a group; group_size must be >= 2, got {k}")
    if b == "remax" and cfg.normalize_reward:
        raise ConfigError("group_baseline='remax' compares with a greedy rollout's raw rewards; "
                          "allowed: normalize_reward=false")


_OPTIONS = {"group_size": _GROUP_SIZE, "group_baseline": _BASELINE}
_COMMON = dict(vf_coef=0.0, adv_norm="none", clip_value=False)

GROUP = register(Algorithm(
    name="group_rollouts",
    description="critic-free PPO-clip on group-rollout baselines (RLOO, ReMax, GRPO, Dr. GRPO, REINFORCE++)",
    overrides=dict(_COMMON, num_envs=16),
    options=_OPTIONS,
    check_config=_check,
    collect=_collect,
    targets=_targets,
))
for _name, _b, _doc in (("rloo", "rloo", "RLOO: leave-one-out group baseline"),
                        ("remax", "remax", "ReMax: a greedy rollout from the same state as baseline"),
                        ("grpo", "grpo", "GRPO: group-normalised returns"),
                        ("reinforce_pp", "global", "REINFORCE++: batch-normalised returns")):
    register(Algorithm(name=_name, description=f"{_doc} (critic-free; prpo.algorithms.group)",
                       overrides=dict(_COMMON, num_envs=16, group_baseline=_b, **({"group_size": 1} if _b == "global" else {})),
                       options=_OPTIONS, check_config=_check, collect=_collect, targets=_targets))
