"""Policy surrogate objectives (losses to MINIMISE), all per sample.

Each surrogate takes ``log_ratio = log pi(a|s) - log pi_old(a|s)`` (log space,
ratio r = exp(log_ratio)) and advantages ``adv`` of a broadcast-compatible
shape, plus scalar hyperparameters, and returns

    (per_sample_loss, diagnostics)

where ``diagnostics`` is a dict of per-sample arrays (reduce them however you
like, e.g. ``jax.tree.map(jnp.mean, diagnostics)``). Nothing is averaged here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["ratio_diagnostics", "ppo_clip", "dual_clip", "policy_gradient"]


def ratio_diagnostics(
    log_ratio: jax.Array, clip_eps: float | jax.Array
) -> dict[str, jax.Array]:
    """Per-sample ratio statistics.

    Args:
      log_ratio: log r, shape [...].
      clip_eps: clip range epsilon, scalar.

    Returns:
      dict with
        ``approx_kl``: (r - 1) - log r  (>= 0; ~ 0.5 log_ratio^2 near 0; the
          "k3" estimator of KL(pi_old || pi) for samples from pi_old),
        ``clipped``: float, 1.0 where |r - 1| > clip_eps,
        ``ratio_dev``: |r - 1|.
      each of shape [...].
    """
    ratio = jnp.exp(log_ratio)
    dev = jnp.abs(ratio - 1.0)
    return {
        "approx_kl": (ratio - 1.0) - log_ratio,
        "clipped": (dev > clip_eps).astype(ratio.dtype),
        "ratio_dev": dev,
    }


def ppo_clip(
    log_ratio: jax.Array, adv: jax.Array, clip_eps: float | jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO clipped surrogate (Schulman et al., 2017).

      L = -min(r * A, clip(r, 1 - eps, 1 + eps) * A)

    Args:
      log_ratio: log r, shape [...].
      adv: advantages, shape [...].
      clip_eps: epsilon, scalar.

    Returns:
      (loss [...], diagnostics: ``ratio_diagnostics`` keys plus ``ratio``).
    """
    ratio = jnp.exp(log_ratio)
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = -jnp.minimum(unclipped, clipped)
    diag = ratio_diagnostics(log_ratio, clip_eps)
    diag["ratio"] = ratio
    return loss, diag


def dual_clip(
    log_ratio: jax.Array,
    adv: jax.Array,
    clip_eps: float | jax.Array,
    dual_clip_c: float | jax.Array = 3.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Dual-clip PPO (Ye et al., 2020).

      L_clip = -min(r * A, clip(r, 1 - eps, 1 + eps) * A)
      L      = where(A < 0, min(-c * A, L_clip), L_clip)

    For negative advantages the loss (and hence the push-down on a large
    ratio) is capped at -c * A = c * |A|.

    Args:
      log_ratio: log r, shape [...].
      adv: advantages, shape [...].
      clip_eps: epsilon, scalar.
      dual_clip_c: c > 1, scalar.

    Returns:
      (loss [...], diagnostics: ``ppo_clip`` keys plus ``dual_clipped``
      (float, 1.0 where the -c*A cap is active)).
    """
    l_clip, diag = ppo_clip(log_ratio, adv, clip_eps)
    cap = -dual_clip_c * adv
    neg = adv < 0
    loss = jnp.where(neg, jnp.minimum(cap, l_clip), l_clip)
    diag["dual_clipped"] = jnp.logical_and(neg, cap < l_clip).astype(l_clip.dtype)
    return loss, diag


def policy_gradient(
    log_ratio: jax.Array, adv: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Unclipped importance-weighted surrogate L = -r * A.

    At log_ratio = 0 (on-policy) its gradient is -A * grad log pi, i.e. the
    vanilla policy gradient (A2C); also the MDPO surrogate before the KL term.

    Args:
      log_ratio: log r, shape [...].
      adv: advantages, shape [...].

    Returns:
      (loss [...], diagnostics with ``approx_kl``, ``ratio_dev``, ``ratio``).
    """
    ratio = jnp.exp(log_ratio)
    loss = -ratio * adv
    dev = jnp.abs(ratio - 1.0)
    diag = {
        "approx_kl": (ratio - 1.0) - log_ratio,
        "ratio_dev": dev,
        "ratio": ratio,
    }
    return loss, diag
