"""VinePPO (Kazemnejad et al., 2024): Monte-Carlo value estimates from rollouts branched at visited states.

The paper (LLM reasoning) replaces PPO's critic with Monte-Carlo estimates: from an
intermediate state s_t of a sampled trajectory it samples K independent continuations with the
current policy, takes ``V̂(s_t)`` = the mean of their returns, and uses the advantage
``A_t = r_t + γ·V̂(s_{t+1}) − V̂(s_t)`` in the PPO-clip update. Its claim: better credit
assignment, reaching the same return in fewer updates (and less wall-clock) than PPO.

The reading taken here for vectorised RL envs (UNVERIFIED: the paper has one prompt per
episode and rolls every branch out to the episode's end):

* **Branch points.** Env states are pytrees with a leading ``[N]`` axis, so a branch is a
  gather. The main rollout is the engine's own (:func:`prpo.rollout.collect_with`, the same
  keys as PPO); the env state before every step is recorded on the way (a wrapper env writes it
  into a ``[T]`` buffer). At the branch points — every ``vine_every``-th step
  (``vine_points="grid"``) or one uniformly random step in each block of ``vine_every`` steps
  per env (``"random"``) — and always at the state after the last step, ``s_T``, each env's
  state and observation are cloned ``vine_max_rollouts`` times. All branches of all points
  run at once, as one vectorised env of ``P·N·K`` copies, for ``vine_horizon`` = H steps of the
  current (behaviour) policy with independent keys; the nesting in time is unnecessary since
  every branch starts from a recorded state.
* **Monte-Carlo value.** ``V̂(s) = (1/K)·Σ_k G_k`` over the first K = ``vine_rollouts``
  branches, with ``G_k = Σ_{h<H} γ^h r_h`` up to the branch's episode end (termination, and
  truncation where it counts as an end, see below). At the horizon the branch is either cut
  (``vine_bootstrap=false``, default) or bootstrapped with the critic, ``+ γ^H·V(s_H)``
  (``vine_bootstrap=true``; also ``γ^{h+1}·V(final obs)`` at a time-limit truncation). Default
  cut, because the method is critic-free: bootstrapping reintroduces the critic's bias that
  VinePPO removes. A cut at H biases ``V̂(s_t)`` and ``V̂(s_{t+1})`` alike (a state that
  survives H steps gets ``(1 − γ^H)/(1 − γ)`` per unit reward), so that offset cancels in
  ``A_t``; but failures later than H are invisible, so H should cover the effective horizon
  1/(1 − γ). On CartPole (γ = 0.99) H = 32 without the bootstrap plateaus near a return of 320,
  while H = 128 reaches 500 (``experiments/results/po-vineppo``); the default 32 is kept cheap
  for CPU. Without the bootstrap a time-limit truncation is the end of the episode both in the
  branches and in the main trajectory (the time counter is part of the cloned state), so the
  two agree.
* **Advantages.** At a branch point b whose next branch point (per env) is b + m:
  ``A_b = Σ_{i<m} γ^i r_{b+i} + γ^m·V̂(s_{b+m}) − V̂(s_b)`` (cut at the episode's end); with
  ``vine_every = 1`` this is the paper's ``r_t + γ·V̂(s_{t+1}) − V̂(s_t)`` at every step.
  Steps that are not branch points are either left out of the policy loss (weight 0,
  ``vine_fill="exclude"``, default: VinePPO has no other estimator) or get the critic's GAE
  advantage (``vine_fill="gae"``, needs ``vf_coef > 0``). The value target of a step is
  ``Y_t = r_t + γ·(V̂(s_{t+1}) or Y_{t+1})`` (used only when ``vf_coef > 0``; default 0:
  critic-free). With ``adv_norm="batch"`` the advantages are normalised over the weighted steps.
* **Cost.** The branches take ``P·N·K·H`` env steps per update (``P`` = ⌈T/m⌉ + 1 branch
  points) on top of the ``N·T`` of the main rollout. Logged per update:
  ``vine_env_steps`` (branch steps inside live episodes: what a sequential simulator would
  spend) and ``vine_env_steps_computed`` (all ``P·N·K_used·H`` vectorised steps, including
  those after a branch's episode ended); ``vine_rollouts_used``.

``vine_rollouts`` is a traced hyperparameter, so it can be swept in one compile
(``--grid vine_rollouts=2,4``): the compile runs ``vine_max_rollouts`` branches (default: the
base ``vine_rollouts``) and masks the rest. A grid value above ``vine_max_rollouts`` is clamped
to it (visible in ``vine_rollouts_used``): the extension point's checks see only the base config,
not the grid values.

Limit (exact up to float rounding): ``vine_horizon=0, vine_bootstrap=true, vine_every=1`` makes
``V̂ = V`` and the advantages and returns those of GAE with λ = 0; training is then PPO with
``gae_lambda=0`` on the same rollout keys.

Not reproduced (UNVERIFIED): the paper's LLM setting (reasoning-step boundaries as branch
points, K = 9, no horizon cut), its compute accounting in tokens, and its numbers.
``normalize_reward`` is refused (the branch rewards cannot be scaled by the learner's running
statistics inside the rollout). Memory: the env state of every step of the rollout is kept,
and ``P·N·K`` env copies run at once.
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp

from prpo.advantages import gae
from prpo.algorithm import Algorithm, register
from prpo.config import ConfigError
from prpo.registry import hyperparameter, static
from prpo.rollout import EpisodeStats, collect_with
from prpo.update import make_loss as default_make_loss

__all__ = ["VINEPPO", "branch_points", "branch_returns", "mc_values", "vine_targets", "weighted_surrogate"]

POINTS = ("grid", "random")
FILLS = ("exclude", "gae")


def _is_int(v, low):
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


_OPTIONS = {
    "vine_rollouts": hyperparameter(4.0, "VinePPO: branches K per branch point (the MC value is their mean; an integer)",
                                    check=lambda v: v >= 1 and float(v).is_integer(), allowed="an integer >= 1"),
    "vine_max_rollouts": static(None, "VinePPO: branches compiled per point (None: the base vine_rollouts; "
                                "a swept vine_rollouts above it is clamped)", type=int | None,
                                check=lambda v: v is None or _is_int(v, 1), allowed="none or an integer >= 1"),
    "vine_horizon": static(32, "VinePPO: steps H of each branch (cut, or critic-bootstrapped, at H)", type=int,
                           check=lambda v: _is_int(v, 0), allowed="an integer >= 0"),
    "vine_every": static(1, "VinePPO: one branch point per this many steps (1: every step, the paper's)", type=int,
                         check=lambda v: _is_int(v, 1), allowed="an integer >= 1"),
    "vine_points": static("grid", "VinePPO: branch points at steps 0, m, 2m, … ('grid') or one random step per "
                          "block of m ('random')", choices=POINTS),
    "vine_bootstrap": static(False, "VinePPO: bootstrap a branch alive at its horizon with the critic (needs vf_coef > 0)",
                             type=bool),
    "vine_fill": static("exclude", "VinePPO: steps that are not branch points: left out of the policy loss, or GAE "
                        "(needs vf_coef > 0)", choices=FILLS),
}


# -- branch points ------------------------------------------------------------------------------

def branch_points(num_steps: int, num_envs: int, every: int, points: str = "grid", key=None):
    """Indices ``[P, N]`` (int32, rows in ``0..T``) of the branch points of each env: one per
    block of ``every`` steps — its first step (``"grid"``) or a uniform one (``"random"``) —
    and last the state after the rollout, ``T``. ``P = ⌈T/every⌉ + 1``."""
    starts = jnp.arange(0, num_steps, every, dtype=jnp.int32)
    if points == "grid":
        idx = jnp.broadcast_to(starts[:, None], (starts.shape[0], num_envs))
    else:
        size = jnp.minimum(every, num_steps - starts)[:, None]  # the last block may be shorter
        u = jax.random.uniform(key, (starts.shape[0], num_envs))
        idx = starts[:, None] + jnp.minimum(jnp.floor(u * size).astype(jnp.int32), size - 1)
    return jnp.concatenate([idx, jnp.full((1, num_envs), num_steps, jnp.int32)], axis=0)


# -- recording the main rollout's env states ----------------------------------------------------

@flax.struct.dataclass
class _Recorded:
    inner: object  # the env's own state
    t: jax.Array
    buffer: object  # the inner state before each step, leaves [T, ...]


class _RecordingEnv:
    """Steps ``env`` and writes the state before each step into a ``[T]`` buffer (only ``step``
    is needed by :func:`prpo.rollout.collect`)."""

    def __init__(self, env):
        self.env = env

    def step(self, state: _Recorded, action, key):
        buffer = jax.tree.map(lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, state.t, 0), state.buffer,
                              state.inner)
        inner, ts = self.env.step(state.inner, action, key)
        return _Recorded(inner=inner, t=state.t + 1, buffer=buffer), ts


def _gather(states, idx, num_envs: int, k: int):
    """Leaves ``[T+1, N, ...]`` → ``[P·N·k, ...]``: env n's state at row ``idx[p, n]``, k copies
    (leaves without an ``[N]`` axis are taken from row 0 unchanged)."""
    cols = jnp.arange(num_envs)[None, :]

    def one(x):
        if x.ndim >= 2 and x.shape[1] == num_envs:
            g = x[idx, cols]  # [P, N, ...]
            g = jnp.repeat(g[:, :, None], k, axis=2)
            return g.reshape((-1,) + g.shape[3:])
        return x[0]

    return jax.tree.map(one, states)


# -- branch rollouts and the MC value -----------------------------------------------------------

def branch_returns(env, behaviour, params, state, obs, key, horizon: int, gamma, obs_transform, action_transform,
                   reward_scale=1.0, bootstrap: bool = False, bootstrap_truncation: bool = True):
    """Discounted returns ``[M]`` of ``horizon`` steps of ``behaviour`` from ``M`` env states
    (``env`` has M copies), and the steps taken inside live episodes ``[M]``.

    ``G = Σ_{h<H} γ^h r_h`` up to the first termination (or truncation: an end unless
    ``bootstrap and bootstrap_truncation``, then ``+ γ^{h+1}·V(final obs)``); with ``bootstrap``
    a branch alive after H steps adds ``γ^H·V(s_H)``.
    """
    m = obs.shape[0]

    def step(carry, k):
        s, o, alive, disc, g, live = carry
        k_act, k_env = jax.random.split(k)
        a, _ = behaviour.act(params, obs_transform(o), k_act)
        s, ts = env.step(s, action_transform(a), k_env)
        r = ts.reward.astype(jnp.float32) * reward_scale
        g = g + alive * disc * r
        live = live + alive
        trunc_boot = bootstrap and bootstrap_truncation
        if trunc_boot:
            v_final = jnp.where(ts.truncated, behaviour.value(params, obs_transform(ts.final_obs)), 0.0)
            g = g + alive * disc * gamma * v_final
        alive = alive * (1.0 - (ts.terminated | ts.truncated).astype(jnp.float32))
        return (s, ts.obs, alive, disc * gamma, g, live), None

    ones, zeros = jnp.ones((m,), jnp.float32), jnp.zeros((m,), jnp.float32)
    init = (state, obs, ones, ones, zeros, zeros)
    (s, o, alive, disc, g, live), _ = jax.lax.scan(step, init, jax.random.split(key, horizon))
    if bootstrap:
        g = g + alive * disc * behaviour.value(params, obs_transform(o))
    return g, live


def mc_values(returns, k_used):
    """``V̂ = (1/K)·Σ_{k<K} G_k`` from branch returns ``[..., K_max]`` (the first ``k_used`` count)."""
    mask = (jnp.arange(returns.shape[-1]) < k_used).astype(returns.dtype)
    return (returns * mask).sum(-1) / k_used


@flax.struct.dataclass
class VineStats(EpisodeStats):
    """The rollout's episode statistics plus the branches' cost (summed over devices by the engine)."""

    vine_env_steps: jax.Array = None
    vine_env_steps_computed: jax.Array = None
    vine_rollouts_used: jax.Array = None  # summed over devices like every field, hence
    vine_shards: jax.Array = None  # 1 per device: the sum's divisor

    def summary(self):
        return {**super().summary(), "vine_env_steps": self.vine_env_steps,
                "vine_env_steps_computed": self.vine_env_steps_computed,
                "vine_rollouts_used": self.vine_rollouts_used / self.vine_shards}


def _max_rollouts(cfg) -> int:
    return cfg.vine_max_rollouts if cfg.vine_max_rollouts is not None else int(cfg.hp.vine_rollouts)


def _collect(ctx, behaviour, params, env_state, obs, key):
    cfg, hp = ctx.cfg, ctx.hp
    n, t_len, k_max, horizon = ctx.env.num_envs, cfg.num_steps, _max_rollouts(cfg), cfg.vine_horizon
    # 1. the main rollout: the engine's, on PPO's keys, recording the env state before each step
    buffer = jax.tree.map(lambda x: jnp.zeros((t_len,) + jnp.shape(x), jnp.result_type(x)), env_state)
    rec = _Recorded(inner=env_state, t=jnp.zeros((), jnp.int32), buffer=buffer)
    rec_ctx = dataclasses.replace(ctx, env=_RecordingEnv(ctx.env))
    rec, last_obs, traj, stats = collect_with(rec_ctx, behaviour, params, rec, obs, key)
    states = jax.tree.map(lambda b, x: jnp.concatenate([b, x[None]], axis=0), rec.buffer, rec.inner)  # [T+1, N]
    all_obs = jnp.concatenate([traj.obs, last_obs[None]], axis=0)

    # 2. branches from every branch point, all at once
    k_branch, k_points = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
    if ctx.env_ids is not None:  # sharded: other branches on each device
        k_branch = jax.random.fold_in(k_branch, ctx.env_ids[0])
        k_points = jax.random.fold_in(k_points, ctx.env_ids[0])
    idx = branch_points(t_len, n, cfg.vine_every, cfg.vine_points, k_points)  # [P, N]
    p = idx.shape[0]
    b_state = _gather(states, idx, n, k_max)
    b_obs = _gather(all_obs, idx, n, k_max)
    g, live = branch_returns(ctx.env.with_num_envs(p * n * k_max), behaviour, params, b_state, b_obs, k_branch,
                             horizon, hp.gamma, ctx.obs_transform, ctx.action_transform, hp.reward_scale,
                             cfg.vine_bootstrap, cfg.bootstrap_truncation)
    k_used = jnp.minimum(jnp.round(jnp.asarray(hp.vine_rollouts, jnp.float32)), k_max)
    vhat = mc_values(g.reshape(p, n, k_max), k_used)  # [P, N]
    used = (jnp.arange(k_max) < k_used).astype(jnp.float32)
    live_steps = (live.reshape(p, n, k_max) * used).sum()

    # 3. back onto the time axis: V̂ and the branch mask at rows 0..T
    cols = jnp.arange(n)[None, :]
    v_full = jnp.zeros((t_len + 1, n), jnp.float32).at[idx, cols].set(vhat)
    b_full = jnp.zeros((t_len + 1, n), jnp.float32).at[idx, cols].set(1.0)
    weight = b_full[:-1] if cfg.vine_fill == "exclude" else jnp.ones((t_len, n), jnp.float32)
    aux = {**traj.aux, "vine_value": v_full[:-1], "vine_branched": b_full[:-1], "vine_weight": weight,
           "vine_next_value": v_full[1:], "vine_next_branched": b_full[1:]}
    stats = VineStats(count=stats.count, return_sum=stats.return_sum, return_sq_sum=stats.return_sq_sum,
                      length_sum=stats.length_sum, vine_env_steps=live_steps,
                      vine_env_steps_computed=p * n * k_used * horizon, vine_rollouts_used=k_used,
                      vine_shards=jnp.ones((), jnp.float32))
    return rec.inner, last_obs, traj.replace(aux=aux), stats


# -- targets ------------------------------------------------------------------------------------

def vine_targets(rewards, terminated, truncated, trunc_values, vine_value, branched, next_value, next_branched, gamma,
                 bootstrap_truncation: bool = False):
    """``(advantages, returns, weights)`` ``[T, N]`` from the MC values (see the module doc).

    ``Y_t = r_t + γ·c_t`` with ``c_t`` = 0 at a termination, at a truncation
    ``trunc_values`` if ``bootstrap_truncation`` else 0, otherwise ``V̂(s_{t+1})`` where
    ``s_{t+1}`` is a branch point and ``Y_{t+1}`` where it is not. ``A_t = Y_t − V̂(s_t)`` with
    weight 1 at branch points, 0 (and ``A_t = 0``) elsewhere; returns ``Y``.
    """
    def step(y_next, xs):
        r, term, trunc, v_trunc, v_next, b_next = xs
        cont = jnp.where(b_next > 0, v_next, y_next)
        cont = jnp.where(trunc, v_trunc if bootstrap_truncation else 0.0, cont)
        cont = jnp.where(term, 0.0, cont)
        y = r + gamma * cont
        return y, y

    xs = (rewards, terminated, truncated, trunc_values, next_value, next_branched)
    _, y = jax.lax.scan(step, jnp.zeros_like(rewards[0]), xs, reverse=True)
    adv = jnp.where(branched > 0, y - vine_value, 0.0)
    return adv, y, branched


def _weighted_normalize(x, w, axis_name=None, eps=1e-8):
    sw, swx = w.sum(), (w * x).sum()
    if axis_name is not None:
        sw, swx = jax.lax.psum(sw, axis_name), jax.lax.psum(swx, axis_name)
    mean = swx / jnp.maximum(sw, 1.0)
    swv = (w * jnp.square(x - mean)).sum()
    if axis_name is not None:
        swv = jax.lax.psum(swv, axis_name)
    return jnp.where(w > 0, (x - mean) / (jnp.sqrt(swv / jnp.maximum(sw, 1.0)) + eps), 0.0)


def _targets(cfg, hp, rewards, values, next_values, terminated, truncated, axis_name=None, aux=None):
    boot = cfg.vine_bootstrap and cfg.bootstrap_truncation
    adv, returns, weight = vine_targets(rewards, terminated, truncated, next_values, aux["vine_value"],
                                        aux["vine_branched"], aux["vine_next_value"], aux["vine_next_branched"],
                                        hp.gamma, boot)
    if cfg.vine_fill == "gae":
        g_adv, g_ret = gae(rewards, values, next_values, terminated, truncated, hp.gamma, hp.gae_lambda,
                           unroll=cfg.scan_unroll)
        adv = jnp.where(weight > 0, adv, g_adv)
        returns = jnp.where(weight > 0, returns, g_ret)
        weight = jnp.ones_like(weight)
    if cfg.adv_norm == "batch":
        adv = _weighted_normalize(adv, weight, axis_name)
    return adv, returns


# -- the loss: the engine's, with per-sample weights on the policy term ---------------------------

def weighted_surrogate(surrogate):
    """``surrogate`` with each sample's loss multiplied by ``w / mean(w)`` over the minibatch
    (``w = aux["vine_weight"]``; all ones: unchanged, bit for bit)."""
    inner_ctx = getattr(surrogate, "needs_context", False)

    def weighted(log_ratio, adv, hp, ctx):
        loss, diag = surrogate(log_ratio, adv, hp, ctx) if inner_ctx else surrogate(log_ratio, adv, hp)
        w = ctx["aux"]["vine_weight"].astype(loss.dtype)
        w = w.reshape(w.shape + (1,) * (loss.ndim - w.ndim))
        return loss * (w / jnp.maximum(jnp.mean(w), 1e-8)), diag

    weighted.needs_context = True
    return weighted


def _make_loss(cfg, policy, surrogate, axis_name=None):
    return default_make_loss(cfg, policy, weighted_surrogate(surrogate), axis_name)


# -- checks and registration -------------------------------------------------------------------

def _check(cfg):
    if cfg.normalize_reward:
        raise ConfigError("vineppo: normalize_reward=true cannot scale the branch rewards (learner statistics); "
                          "allowed: normalize_reward=false")
    if cfg.adv_norm == "minibatch":
        raise ConfigError("vineppo: adv_norm='minibatch' would mix left-out (weight-0) steps into the statistics; "
                          "allowed: adv_norm='batch', 'none'")
    critic = [name for name, on in (("vine_bootstrap=true", cfg.vine_bootstrap), ("vine_fill='gae'", cfg.vine_fill == "gae"))
              if on]
    if critic and cfg.hp.vf_coef <= 0:
        raise ConfigError(f"vineppo: {critic[0]} uses the critic, which vf_coef=0 never trains; allowed: vf_coef > 0 "
                          "(or vine_bootstrap=false, vine_fill='exclude')")
    p = math.ceil(cfg.num_steps / cfg.vine_every) + 1
    if p * cfg.num_envs * _max_rollouts(cfg) >= 2**31:
        raise ConfigError(f"vineppo: {p}·{cfg.num_envs}·{_max_rollouts(cfg)} branch envs overflow int32; "
                          "allowed: a larger vine_every or fewer vine_rollouts / num_envs")


VINEPPO = register(Algorithm(
    name="vineppo",
    description="VinePPO: critic-free PPO-clip on Monte-Carlo values from K rollouts branched at visited states",
    overrides=dict(vf_coef=0.0, adv_norm="batch", normalize_reward=False, clip_value=False),
    options=_OPTIONS,
    check_config=_check,
    collect=_collect,
    targets=_targets,
    make_loss=_make_loss,
))
