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

__all__ = ["gae", "lambda_returns", "normalize"]


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
        step, next_values[-1], (rewards, next_values, keep, disc), reverse=True
    )
    return returns


def normalize(x: jax.Array, axis=None, eps: float = 1e-8) -> jax.Array:
    """(x - mean) / (std + eps), statistics over ``axis`` (all axes if None)."""
    mean = jnp.mean(x, axis=axis, keepdims=True)
    std = jnp.std(x, axis=axis, keepdims=True)
    return (x - mean) / (std + eps)
