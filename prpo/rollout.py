"""Rollout collection: one ``lax.scan`` over ``num_steps`` vectorised env steps.

The trajectory is time-major (``[T, N, ...]``). Per-step episode statistics are *not* stacked:
the scan carries the sum, sum of squares and count of the returns of episodes that finished,
so memory does not grow with the number of envs × steps beyond the trajectory itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

__all__ = ["Transition", "EpisodeStats", "RolloutContext", "collect", "collect_with"]


@flax.struct.dataclass
class Transition:
    """One step of a time-major trajectory (leaves ``[T, N, ...]``)."""

    obs: jax.Array  # observation acted on (raw, un-normalised)
    action: jax.Array  # action as sampled (unclipped)
    aux: Any  # the policy family's rollout record (holds "value")
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    bootstrap_value: jax.Array  # V(final observation) at truncated steps, else 0


@dataclasses.dataclass(frozen=True)
class RolloutContext:
    """What an algorithm's ``collect`` hook may use besides the parameters and the env state.

    ``env``: the vectorised env (this device's ``num_envs / num_shards`` envs); ``policy``: the
    learner's policy family (``behaviour`` is what acts); ``obs_transform`` / ``action_transform``:
    raw observation -> network input and sampled action -> env action; ``env_ids``: global env
    indices on a sharded run (else ``None``); ``hp``: this update's hyperparameters.
    """

    cfg: Any
    env: Any
    policy: Any
    obs_transform: Callable
    action_transform: Callable
    env_ids: Any
    hp: Any


def collect_with(ctx: RolloutContext, behaviour, params, env_state, obs, key, num_steps: int | None = None):
    """:func:`collect` with the settings of ``ctx.cfg`` (``num_steps`` steps, default ``cfg.num_steps``)."""
    cfg = ctx.cfg
    return collect(ctx.env, behaviour, params, env_state, obs, key, cfg.num_steps if num_steps is None else num_steps,
                   ctx.obs_transform, ctx.action_transform, cfg.bootstrap_truncation, cfg.truncation_mode,
                   cfg.scan_unroll, ctx.env_ids)


@flax.struct.dataclass
class EpisodeStats:
    """Running sums over the episodes that finished during one rollout.

    float32, reset every rollout: at most ``num_envs × num_steps`` (< 2^31, see
    :func:`prpo.memory.check_sizes`) episodes per device, so no counter overflows; the count is
    exact up to 2^24 episodes per rollout and within float32 rounding (~1e-7 relative) beyond.
    """

    count: jax.Array
    return_sum: jax.Array
    return_sq_sum: jax.Array
    length_sum: jax.Array

    @staticmethod
    def zeros() -> "EpisodeStats":
        z = jnp.zeros((), jnp.float32)
        return EpisodeStats(z, z, z, z)

    def add(self, done, episode_return, episode_length) -> "EpisodeStats":
        d = done.astype(jnp.float32)
        r = jnp.where(done, episode_return, 0.0)
        return EpisodeStats(
            count=self.count + d.sum(),
            return_sum=self.return_sum + r.sum(),
            return_sq_sum=self.return_sq_sum + (r * r).sum(),
            length_sum=self.length_sum + (d * episode_length).sum(),
        )

    def summary(self) -> dict[str, jax.Array]:
        n = jnp.maximum(self.count, 1.0)
        mean = self.return_sum / n
        var = jnp.maximum(self.return_sq_sum / n - mean**2, 0.0)
        return {
            "episodes": self.count,
            "episode_return_mean": mean,
            "episode_return_std": jnp.sqrt(var),
            "episode_length_mean": self.length_sum / n,
        }


def collect(
    env,
    policy,
    params,
    env_state,
    obs,
    key: jax.Array,
    num_steps: int,
    obs_transform: Callable[[jax.Array], jax.Array],
    action_transform: Callable[[jax.Array], jax.Array],
    bootstrap_truncation: bool = True,
    truncation_value: str = "always",
    unroll: int = 1,
    env_ids: jax.Array | None = None,
):
    """Run ``num_steps`` steps of ``policy`` in ``env``.

    Returns ``(env_state, last_obs, trajectory, episode_stats)``. ``obs_transform`` maps raw
    observations to network inputs (learner-side normalisation, frozen during the rollout);
    ``action_transform`` maps sampled actions to env actions (clipping to the bounds).
    At truncated steps the critic is evaluated on the final observation (before auto-reset) to
    bootstrap. ``truncation_value="always"`` evaluates it every step (a small extra forward
    pass, no device-to-host synchronisation: best on accelerators); ``"cond"`` skips it under a
    ``lax.cond`` on steps where no env truncated (cheaper on CPU, but the predicate costs a
    synchronisation per step on GPU, and under ``vmap`` both branches run anyway).

    ``env_ids`` (int ``[N]``, optional): global indices of the envs. Each step's action and env
    keys are then derived per env (``fold_in(step key, env id)``) and the policy samples each
    env with its own key, so an env's trajectory does not depend on how many envs (or devices)
    share the batch; without it the step keys are split over the batch (the default path).
    """
    act = policy.act
    if env_ids is not None:
        def act(params, obs, keys):
            one = lambda o, k: jax.tree.map(lambda x: x[0], policy.act(params, o[None], k))  # noqa: E731
            return jax.vmap(one)(obs, keys)

        per_env = jax.vmap(jax.random.fold_in, in_axes=(None, 0))

    def step(carry, step_key):
        env_state, obs, stats = carry
        k_act, k_env = jax.random.split(step_key)
        if env_ids is not None:
            k_act, k_env = per_env(k_act, env_ids), per_env(k_env, env_ids)
        action, aux = act(params, obs_transform(obs), k_act)
        env_state, ts = env.step(env_state, action_transform(action), k_env)
        final_value = lambda: jnp.where(ts.truncated, policy.value(params, obs_transform(ts.final_obs)), 0.0)  # noqa: E731
        if bootstrap_truncation and truncation_value == "always":
            bootstrap_value = final_value()
        elif bootstrap_truncation:
            bootstrap_value = jax.lax.cond(
                jnp.any(ts.truncated), final_value, lambda: jnp.zeros(ts.reward.shape, jnp.float32)
            )
        else:
            bootstrap_value = jnp.zeros(ts.reward.shape, jnp.float32)
        terminated = ts.terminated if bootstrap_truncation else jnp.logical_or(ts.terminated, ts.truncated)
        truncated = ts.truncated if bootstrap_truncation else jnp.zeros_like(ts.truncated)
        done = jnp.logical_or(ts.terminated, ts.truncated)
        stats = stats.add(done, ts.episode_return, ts.episode_length)
        transition = Transition(
            obs=obs,
            action=action,
            aux=aux,
            reward=ts.reward.astype(jnp.float32),
            terminated=terminated,
            truncated=truncated,
            bootstrap_value=bootstrap_value,
        )
        return (env_state, ts.obs, stats), transition

    keys = jax.random.split(key, num_steps)
    (env_state, obs, stats), traj = jax.lax.scan(step, (env_state, obs, EpisodeStats.zeros()), keys, unroll=unroll)
    return env_state, obs, traj, stats
