"""Per-sample regularisers and value losses (to MINIMISE).

Nothing is averaged and no ``stop_gradient`` is applied: targets such as
``returns`` / ``old_values`` should already be constants (e.g. computed from
the rollout), and reduction is left to the caller.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["entropy_loss", "value_loss", "clipped_value_loss", "kl_penalty", "brownian_penalty"]


def entropy_loss(entropy: jax.Array) -> jax.Array:
    """-entropy (minimising it maximises entropy). [...] -> [...]."""
    return -entropy


def value_loss(values: jax.Array, returns: jax.Array) -> jax.Array:
    """0.5 * (values - returns)^2. [...] -> [...]."""
    return 0.5 * jnp.square(values - returns)


def clipped_value_loss(
    values: jax.Array,
    old_values: jax.Array,
    returns: jax.Array,
    clip_eps: float | jax.Array,
) -> jax.Array:
    """PPO-style clipped value loss.

      v_clip = old_values + clip(values - old_values, -eps, eps)
      L      = 0.5 * max((values - returns)^2, (v_clip - returns)^2)

    Args:
      values: current predictions V(s), [...].
      old_values: predictions at rollout time, [...].
      returns: targets, [...].
      clip_eps: clip range, scalar.

    Returns:
      loss [...].
    """
    v_clip = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum(jnp.square(values - returns), jnp.square(v_clip - returns))


def kl_penalty(kl: jax.Array, coef: float | jax.Array) -> jax.Array:
    """coef * kl. [...] -> [...]."""
    return coef * kl


def brownian_penalty(t: jax.Array, x_t: jax.Array, v: jax.Array, v_ref: jax.Array) -> jax.Array:
    """PolicyFlow's Brownian regulariser (to minimise; weight it by w_b), mean over path times.

      η_i = (1 − t_i)·v_i − (x_{t_i} − t_i·v_ref,i),   L = mean_i ‖η_i‖²

    Args:
      t: path times [B, N]; x_t, v, v_ref: points, velocities, reference velocities [B, N, D].

    Returns:
      loss [B].
    """
    t = t[..., None]
    eta = (1.0 - t) * v - (x_t - t * v_ref)
    return jnp.sum(jnp.square(eta), axis=-1).mean(-1)
