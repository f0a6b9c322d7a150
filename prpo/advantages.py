"""Advantage and return estimators over time-major rollouts.

All inputs are time-major: the leading axis is time ``T`` and any trailing
shape (e.g. ``[T, N]`` for N environments) is treated as batch. Recursions
run backwards in time with ``jax.lax.scan(reverse=True)``.

Episode-boundary convention (shared by every estimator here):

* ``next_values[t]`` is the value of the TRUE next observation ``s'_t`` that
  followed the action at step t. At a truncated step (time limit) the caller
  passes the value of the final observation, not of the reset observation.
* ``terminated[t]``: ``s'_t`` is terminal, so there is no bootstrap.
* ``truncated[t]``: the episode was cut, ``s'_t`` is bootstrapped, but the
  recursion does not continue into the next (reset) step.
* ``done[t] = terminated[t] | truncated[t]`` cuts the recursion.

``terminated`` / ``truncated`` may be bool or float arrays; ``gamma`` / ``lam``
may be Python floats or (traced) 0-d arrays. No ``stop_gradient`` is applied;
wrap the outputs yourself when using them as targets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["gae", "lambda_returns", "normalize", "grpo_advantages"]


def _flags(rewards, terminated, truncated):
    """Returns (terminated, done) as float arrays of the rewards' float dtype."""
    dtype = jnp.result_type(rewards, jnp.float32)
    term = jnp.asarray(terminated) != 0
    trunc = jnp.asarray(truncated) != 0
    return term.astype(dtype), jnp.logical_or(term, trunc).astype(dtype)


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: float | jax.Array,
    lam: float | jax.Array,
    unroll: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """Generalised Advantage Estimation (Schulman et al., 2016).

      delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
      A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1},   A_T = 0
      returns = A + values

    Args:
      rewards: r_t, shape [T, ...].
      values: V(s_t), shape [T, ...].
      next_values: V(s'_t) of the true next observation, shape [T, ...].
      terminated: bool/float, shape [T, ...].
      truncated: bool/float, shape [T, ...].
      gamma: discount, scalar.
      lam: GAE lambda, scalar.
      unroll: ``lax.scan`` unroll factor (speed only: fewer loop trips on accelerators).

    Returns:
      (advantages [T, ...], returns [T, ...]).
    """
    term, done = _flags(rewards, terminated, truncated)
    deltas = rewards + gamma * (1.0 - term) * next_values - values
    decay = gamma * lam * (1.0 - done)

    def step(adv_next, xs):
        delta, dec = xs
        adv = delta + dec * adv_next
        return adv, adv

    _, advantages = jax.lax.scan(
        step, jnp.zeros_like(deltas[0]), (deltas, decay), reverse=True, unroll=unroll
    )
    return advantages, advantages + values


def lambda_returns(
    rewards: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: float | jax.Array,
    lam: float | jax.Array,
    unroll: int = 1,
) -> jax.Array:
    """TD(lambda) / Q(lambda) targets from per-step bootstrap values.

      G_t = r_t + gamma * (1 - terminated_t) * B_t
      B_t = next_values_t                                  if done_t
          = (1 - lam) * next_values_t + lam * G_{t+1}      otherwise
      with G_T := next_values_{T-1} (bootstrap at the end of the rollout).

    For Q(lambda) (PQN) pass next_values_t = max_a Q(s'_t, a). If
    next_values[t] == values[t+1] at non-done steps this equals
    ``gae(...)[1]``.

    Args:
      rewards: [T, ...].
      next_values: bootstrap value of the true next observation, [T, ...].
      terminated: bool/float, [T, ...].
      truncated: bool/float, [T, ...].
      gamma: discount, scalar.
      lam: lambda, scalar.
      unroll: ``lax.scan`` unroll factor.

    Returns:
      returns G, shape [T, ...].
    """
    term, done = _flags(rewards, terminated, truncated)
    keep = lam * (1.0 - done)
    disc = gamma * (1.0 - term)

    def step(g_next, xs):
        r, nv, k, d = xs
        g = r + d * (nv + k * (g_next - nv))
        return g, g

    _, returns = jax.lax.scan(
        step, next_values[-1], (rewards, next_values, keep, disc), reverse=True, unroll=unroll
    )
    return returns


def normalize(x: jax.Array, axis=None, eps: float = 1e-8, axis_name=None) -> jax.Array:
    """(x - mean) / (std + eps), statistics over ``axis`` (all axes if None).

    ``axis_name`` (inside ``jax.shard_map``): ``x`` is one equal-sized shard of a global array
    split over that mesh axis; mean and std are the global ones.
    """
    if axis_name is None:
        mean = jnp.mean(x, axis=axis, keepdims=True)
        std = jnp.std(x, axis=axis, keepdims=True)
        return (x - mean) / (std + eps)
    mean = jax.lax.pmean(jnp.mean(x, axis=axis, keepdims=True), axis_name)
    var = jax.lax.pmean(jnp.mean(jnp.square(x - mean), axis=axis, keepdims=True), axis_name)
    return (x - mean) / (jnp.sqrt(var) + eps)


def grpo_advantages(
    returns: jax.Array,
    group_ids: jax.Array | None = None,
    axis: int = -1,
    eps: float = 1e-8,
    scale: bool = True,
    ddof: int = 0,
) -> jax.Array:
    """Group-relative advantages (GRPO, Shao et al., 2024; Dr. GRPO, Liu et al., 2025).

      scale=True  (GRPO):     A_i = (R_i - mean_G R) / (std_G R + eps)
      scale=False (Dr. GRPO): A_i =  R_i - mean_G R

    where G is the group of sample i. Unlike the rest of this module this is
    not a time recursion: ``returns`` holds one scalar outcome per sample.

    Groups:
      * ``group_ids=None``: each slice along ``axis`` is one group (e.g. shape
        [..., G] with G completions per prompt for ``axis=-1``).
      * ``group_ids`` given: samples along ``axis`` with equal id form a
        group (each slice along ``axis`` separately). ``group_ids`` is an
        integer array of ``returns``' shape (or broadcastable to it), or 1-D of
        length ``returns.shape[axis]`` (the same labels for every slice).
        Ids need not be contiguous or sorted. Uses an [..., N, N] pairwise
        mask, so it is meant for moderate N.

    ``std_G`` uses ``ddof`` (default 0, population std as in ``normalize``;
    TRL's GRPO uses ddof=1). A singleton group gets advantage 0 (its
    variance denominator is clamped to >= 1).

    Args:
      returns: per-sample returns / rewards R, shape [...].
      group_ids: optional integer group labels (see above).
      axis: the axis along which groups are laid out.
      eps: added to the std.
      scale: divide by the group std (GRPO) or not (Dr. GRPO).
      ddof: delta degrees of freedom of the group std.

    Returns:
      advantages, same shape as ``returns``.
    """
    x = jnp.asarray(returns)
    x = x.astype(jnp.result_type(x, jnp.float32))
    if group_ids is None:
        mean = jnp.mean(x, axis=axis, keepdims=True)
        centered = x - mean
        if not scale:
            return centered
        n = x.shape[axis]
        var = jnp.sum(jnp.square(centered), axis=axis, keepdims=True) / max(n - ddof, 1)
        return centered / (jnp.sqrt(var) + eps)

    ids = jnp.asarray(group_ids)
    if ids.ndim == 1 and x.ndim > 1:
        shape = [1] * x.ndim
        shape[axis] = ids.shape[0]
        ids = ids.reshape(shape)
    ids = jnp.broadcast_to(ids, x.shape)
    xm = jnp.moveaxis(x, axis, -1)  # [..., N]
    im = jnp.moveaxis(ids, axis, -1)
    same = (im[..., :, None] == im[..., None, :]).astype(x.dtype)  # [..., N, N]
    count = jnp.sum(same, axis=-1)  # >= 1 (diagonal)
    # elementwise sums, not a matmul: f32 dots may run at reduced (TF32) precision
    mean = jnp.sum(same * xm[..., None, :], axis=-1) / count
    centered = xm - mean
    if scale:
        sq = jnp.square(xm[..., None, :] - mean[..., :, None])  # (R_j - mean_i)^2
        var = jnp.sum(same * sq, axis=-1) / jnp.maximum(count - ddof, 1.0)
        centered = centered / (jnp.sqrt(var) + eps)
    return jnp.moveaxis(centered, -1, axis)
