"""Policy surrogate objectives (losses to MINIMISE), all per sample.

Each surrogate takes ``log_ratio = log pi(a|s) - log pi_old(a|s)`` (log space,
ratio r = exp(log_ratio)) and advantages ``adv`` of a broadcast-compatible
shape, plus scalar hyperparameters, and returns

    (per_sample_loss, diagnostics)

where ``diagnostics`` is a dict of per-sample arrays (reduce them however you
like, e.g. ``jax.tree.map(jnp.mean, diagnostics)``). Nothing is averaged here.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = [
    "ratio_diagnostics",
    "ppo_clip",
    "dual_clip",
    "policy_gradient",
    "spo",
    "pspo",
    "ce_gppo",
    "topr",
    "decoupled_clip",
    "ratio_variance_penalty",
    "bpo_target_ratio",
    "median_loss",
    "bpo",
    "gbpo_targets",
    "dispo",
    "sign_shares",
    "bapo",
    "sign_weighted",
    "dropout_clip",
]


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


# ----------------------------------------------------------------------------
# Further surrogates. Same conventions as above unless a docstring says not.
# ----------------------------------------------------------------------------


def _unclipped_diagnostics(log_ratio: jax.Array) -> dict[str, jax.Array]:
    """``ratio_diagnostics`` without the clip indicator, plus ``ratio``.

    For surrogates without a clip range; same keys as ``policy_gradient``.
    """
    diag = ratio_diagnostics(log_ratio, jnp.inf)
    del diag["clipped"]
    diag["ratio"] = jnp.exp(log_ratio)
    return diag


def spo(
    log_ratio: jax.Array, adv: jax.Array, clip_eps: float | jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Simple Policy Optimization (SPO; Xie et al., 2024).

      L = -(r * A - |A| / (2 * eps) * (r - 1)^2)

    A concave quadratic in r (per sample) instead of a clip: dL/dr =
    -A + |A| / eps * (r - 1) vanishes exactly at r = 1 + sign(A) * eps and is
    restoring on both sides of that point (it pulls r back towards it, so the
    gradient never becomes zero outside the trust region as PPO's does).
    For A = 0 the loss is 0.

    Args:
      log_ratio: log r, shape [...].
      adv: advantages, shape [...].
      clip_eps: epsilon > 0, scalar.

    Returns:
      (loss [...], diagnostics: ``ratio_diagnostics`` keys plus ``ratio``;
      ``clipped`` marks samples outside |r - 1| <= eps).
    """
    ratio = jnp.exp(log_ratio)
    loss = -(ratio * adv - jnp.abs(adv) / (2.0 * clip_eps) * jnp.square(ratio - 1.0))
    diag = ratio_diagnostics(log_ratio, clip_eps)
    diag["ratio"] = ratio
    return loss, diag


def pspo(
    log_ratio: jax.Array, adv: jax.Array, alpha: float | jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Probability-smoothed policy optimisation (PSPO): smoothed ratio, no clip.

      r_s = (1 - alpha) * r + alpha
      L   = -r_s * A

    The gradient is (1 - alpha) times that of ``policy_gradient``:
    dL/d log r = -(1 - alpha) * r * A.

    Args:
      log_ratio: log r, shape [...].
      adv: advantages, shape [...].
      alpha: smoothing weight in [0, 1], scalar (alpha = 0 is
        ``policy_gradient``).

    Returns:
      (loss [...], diagnostics with ``approx_kl``, ``ratio_dev``, ``ratio``,
      ``smoothed_ratio`` (r_s)).
    """
    diag = _unclipped_diagnostics(log_ratio)
    smoothed = (1.0 - alpha) * diag["ratio"] + alpha
    loss = -smoothed * adv
    diag["smoothed_ratio"] = smoothed
    return loss, diag


def ce_gppo(
    log_ratio: jax.Array,
    adv: jax.Array,
    clip_eps: float | jax.Array,
    beta_low: float | jax.Array = 0.5,
    beta_high: float | jax.Array = 1.0,
    dual_clip_c: float | jax.Array = 3.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """CE-GPPO: PPO clip with gradient-preserving clipping (Su et al., 2025).

    With u = r / sg(r) (value 1, d u / d log r = 1; computed as
    exp(log r - sg(log r)) so it cannot overflow):

      L_ce = -beta_low  * (1 - eps) * A * u   if A < 0 and r < 1 - eps
           = -beta_high * (1 + eps) * A * u   if A > 0 and r > 1 + eps
           = -min(r * A, clip(r, 1 - eps, 1 + eps) * A)   otherwise (= PPO)
      L    = where(A < 0, min(-c * A, L_ce), L_ce)        (dual clip)

    Where PPO's gradient is zero (the two clipped directions) the value is
    beta times PPO's clipped value and the gradient is
    dL/d log r = -beta * (1 -/+ eps) * A instead of 0. Note that the value
    is therefore discontinuous at the clip boundary unless beta = 1. For
    A < 0 and r > c the dual clip caps the loss at c * |A| with zero gradient,
    exactly as ``dual_clip``.

    Args:
      log_ratio: log r, shape [...].
      adv: advantages, shape [...].
      clip_eps: epsilon, scalar.
      beta_low: gradient scale for A < 0, r < 1 - eps, scalar.
      beta_high: gradient scale for A > 0, r > 1 + eps, scalar.
      dual_clip_c: c > 1, scalar.

    Returns:
      (loss [...], diagnostics: ``ppo_clip`` keys plus ``dual_clipped`` (as in
      ``dual_clip``) and ``grad_preserved`` (float, 1.0 where a beta branch
      is active)).
    """
    l_ppo, diag = ppo_clip(log_ratio, adv, clip_eps)
    ratio = diag["ratio"]
    unit = jnp.exp(log_ratio - jax.lax.stop_gradient(log_ratio))  # r / sg(r)
    low = jnp.logical_and(adv < 0, ratio < 1.0 - clip_eps)
    high = jnp.logical_and(adv > 0, ratio > 1.0 + clip_eps)
    l_ce = jnp.where(
        low,
        -beta_low * (1.0 - clip_eps) * adv * unit,
        jnp.where(high, -beta_high * (1.0 + clip_eps) * adv * unit, l_ppo),
    )
    cap = -dual_clip_c * adv
    neg = adv < 0
    loss = jnp.where(neg, jnp.minimum(cap, l_ce), l_ce)
    diag["dual_clipped"] = jnp.logical_and(neg, cap < l_ce).astype(loss.dtype)
    diag["grad_preserved"] = jnp.logical_or(low, high).astype(loss.dtype)
    return loss, diag


def topr(
    log_ratio: jax.Array, adv: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Tapered off-policy REINFORCE (TOPR; Le Roux et al., 2025).

    Here ``log_ratio = log pi(a|s) - log mu(a|s)`` with mu the behaviour
    (rollout) policy. With r = exp(log_ratio):

      w = 1               if A >= 0
        = clip(r, 0, 1)   if A < 0
      L = -sg(w) * A * log pi

    Only the log-ratio is available, so ``log_ratio`` stands in for log pi:
    the returned loss is -sg(w) * A * (log pi - log mu), i.e. the loss above
    shifted by sg(w) * A * log mu, which does not depend on the parameters.
    The VALUE is shifted; the GRADIENT is exact: -sg(w) * A * grad log pi
    (dL/d log_ratio = -w * A).

    Args:
      log_ratio: log pi - log mu, shape [...].
      adv: advantages, shape [...].

    Returns:
      (loss [...], diagnostics with ``approx_kl``, ``ratio_dev``, ``ratio``,
      ``weight`` (w)).
    """
    diag = _unclipped_diagnostics(log_ratio)
    weight = jnp.where(adv >= 0, 1.0, jnp.clip(diag["ratio"], 0.0, 1.0))
    loss = -jax.lax.stop_gradient(weight) * adv * log_ratio
    diag["weight"] = weight
    return loss, diag


def decoupled_clip(
    log_ratio_prox: jax.Array,
    log_ratio_behav: jax.Array,
    adv: jax.Array,
    clip_eps: float | jax.Array,
    max_log_ratio_behav: float | jax.Array = math.log(100.0),
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Decoupled PPO objective (PPO-EWMA; Hilton et al., 2022).

    NOTE the signature: unlike the other surrogates this takes TWO log-ratios
    of the same current log pi_theta (=: logp), per sample:

      log_ratio_prox  = logp - logp_prox   (proximal policy: sets the clip)
      log_ratio_behav = logp - logp_b      (behaviour policy: off-policy IS)

    The objective (to minimise) is

      logp_adj = max(logp_b, sg(logp) - M)                M = log 100
      L = max(-A * exp(logp - logp_adj),
              -A * exp(clip(logp - logp_prox, log(1-eps), log(1+eps))
                       + logp_prox - logp_adj))

    In terms of the inputs (a = log_ratio_prox, b = log_ratio_behav):

      lw = logp - logp_adj = min(b, M + b - sg(b))   value min(b, M),
                                                     gradient that of logp
      L  = max(-A * exp(lw), -A * exp(clip(a, log(1-eps), log(1+eps)) - a + lw))

    i.e. the PPO clip applied to pi/pi_prox, times the behaviour weight
    w = pi/pi_adj = min(pi/pi_b, 100) (value; the cap only bounds the weight,
    the gradient stays -A * w * grad logp where unclipped). The max is
    evaluated as -A * exp(lw + where(sel, clip(a) - a, 0)) with sel marking
    where the second term is the larger (A > 0 and a > log(1+eps), or A < 0
    and a < log(1-eps)); this is the same value and gradient without
    exp-overflow NaNs in the branch that is not selected. When
    log_ratio_prox == log_ratio_behav (< M) this is exactly ``ppo_clip``.

    To get the parameter gradient, both log-ratios must be computed from the
    same logp (differentiate through both).

    Args:
      log_ratio_prox: logp - logp_prox, shape [...].
      log_ratio_behav: logp - logp_b, shape [...].
      adv: advantages, shape [...].
      clip_eps: epsilon, scalar.
      max_log_ratio_behav: M, cap on log(pi / pi_adj), scalar.

    Returns:
      (loss [...], diagnostics: ``ratio_diagnostics`` of log_ratio_prox,
      ``ratio`` (pi/pi_prox), ``behav_weight`` (w, capped) and
      ``behav_capped`` (float, 1.0 where log_ratio_behav > M)).
    """
    a, b = log_ratio_prox, log_ratio_behav
    lw = jnp.minimum(b, max_log_ratio_behav + (b - jax.lax.stop_gradient(b)))
    d = jnp.clip(a, jnp.log1p(-clip_eps), jnp.log1p(clip_eps)) - a  # log(clip(r)/r)
    sel = jnp.logical_or(
        jnp.logical_and(adv > 0, d < 0), jnp.logical_and(adv < 0, d > 0)
    )
    loss = -adv * jnp.exp(lw + jnp.where(sel, d, 0.0))
    diag = ratio_diagnostics(a, clip_eps)
    diag["ratio"] = jnp.exp(a)
    diag["behav_weight"] = jnp.exp(lw)
    diag["behav_capped"] = (b > max_log_ratio_behav).astype(loss.dtype)
    return loss, diag


def ratio_variance_penalty(
    log_ratio: jax.Array,
    adv: jax.Array,
    nu: float | jax.Array,
    delta: float | jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Policy gradient with a batch ratio-variance penalty. UNVERIFIED form.

    The batch objective is

      L_B = mean_B(-r * A) + nu * (Var_B(r) - delta)

    with Var_B the (population, ddof = 0) variance of r over ALL elements of
    ``log_ratio``. Returned per sample as

      L_i = -r_i * A_i + nu * ((r_i - mean_B r)^2 - delta)

    so that mean(L_i) == L_B (value and gradient; mean_B r is not stopped).
    The per-sample values are only meaningful through their mean: do not
    mask or reweight them individually. The exact form of this penalty on the
    algorithm sheet has not been checked against a primary source.

    Args:
      log_ratio: log r, shape [...] (the whole batch B).
      adv: advantages, shape [...].
      nu: penalty weight, scalar.
      delta: variance budget, scalar.

    Returns:
      (loss [...], diagnostics with ``approx_kl``, ``ratio_dev``, ``ratio``,
      ``ratio_sq_dev`` ((r - mean_B r)^2, whose mean is Var_B(r))).
    """
    diag = _unclipped_diagnostics(log_ratio)
    ratio = diag["ratio"]
    sq_dev = jnp.square(ratio - jnp.mean(ratio))
    loss = -ratio * adv + nu * (sq_dev - delta)
    diag["ratio_sq_dev"] = sq_dev
    diag["metrics"] = {"ratio_var": sq_dev}  # its mean is Var_B(r): logged (R²VPO's dual ascent reads it)
    return loss, diag


# -- BPO / GBPO (Bounded Ratio RL) --------------------------------------------------------

def bpo_target_ratio(x, eps_low, eps_high, temperature, clamp: float | None = None):
    """BPO's analytic optimum of the ratio, ``ρ* = 1 − ε_l + (ε_l + ε_h)·σ(x / λ)``.

    ``x = R − u(s)`` is the return minus the learned median (stop-gradient is applied here).
    As λ → 0, ρ* → 1 + ε_h where x > 0 and 1 − ε_l where x < 0; as λ → ∞, ρ* → 1 + (ε_h − ε_l)/2.
    ``clamp``: clip ``x / λ`` to ±clamp first (the rsl_rl variant uses 10; the SB3 reference
    does not clamp).
    """
    z = jax.lax.stop_gradient(x) / temperature
    if clamp is not None:
        z = jnp.clip(z, -clamp, clamp)
    return 1.0 - eps_low + (eps_low + eps_high) * jax.nn.sigmoid(z)


def median_loss(x):
    """``g(x) = softplus(x) − x/2`` per sample: minimised over u, E g(R − u) has its minimiser
    near the median of R (exactly the median as the loss sharpens); gradient ``σ(x) − 1/2``."""
    return jax.nn.softplus(x) - 0.5 * x


def bpo(log_ratio, rho_star, weight):
    """BPO's advantage-weighted total-variation loss ``|r − ρ*| · |w|`` per sample.

    Args:
      log_ratio: log r, shape [...].
      rho_star: target ratio (no gradient flows into it), shape [...].
      weight: ``R − sg V(s)`` (BPO) or a group advantage (GBPO), shape [...].

    Returns:
      (loss [...], diagnostics with ``approx_kl``, ``ratio_dev``, ``ratio`` and ``rho_star``).
    """
    diag = _unclipped_diagnostics(log_ratio)
    ratio = diag["ratio"]
    loss = jnp.abs((ratio - jax.lax.stop_gradient(rho_star)) * jax.lax.stop_gradient(weight))
    diag["rho_star"] = rho_star
    return loss, diag


def gbpo_targets(returns, eps_low, eps_high, temperature, axis=-1, eps=1e-8):
    """GBPO's group form: ``A_i = (R_i − mean_G)/std_G``, ``ã_i = (R_i − median_G)/std_G/T``,
    ``ρ*_i = 1 − ε_l + (ε_l + ε_h)·σ(ã_i)``; groups laid out along ``axis``.

    Returns ``(rho_star, advantages)``; the loss is ``bpo(log_ratio, rho_star, advantages)``.
    """
    mean = jnp.mean(returns, axis=axis, keepdims=True)
    std = jnp.std(returns, axis=axis, keepdims=True)
    median = jnp.median(returns, axis=axis, keepdims=True)
    adv = (returns - mean) / (std + eps)
    a_tilde = (returns - median) / (std + eps) / temperature
    rho = 1.0 - eps_low + (eps_low + eps_high) * jax.nn.sigmoid(a_tilde)
    return rho, adv


# -- sign-aware and adaptive clipping, ± reweighting, sample dropout ---------------------------


def _sign_bounds(adv, pos, neg):
    """Per-sample value of a (positive-advantage, negative-advantage) pair of bounds."""
    return jnp.where(adv >= 0, pos, neg)


def dispo(
    log_ratio: jax.Array,
    adv: jax.Array,
    eps_pos_low: float | jax.Array,
    eps_pos_high: float | jax.Array,
    eps_neg_low: float | jax.Array,
    eps_neg_high: float | jax.Array,
    gradient: str = "masked",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sign-decoupled clip ranges (DISPO; Karaman et al., 2026): four bounds, one per sign of
    the advantage × side of the ratio.

    A sample with advantage sign s (A ≥ 0: +, A < 0: −) has the trust region
    ``[1 − ε_low^s, 1 + ε_high^s]``. The paper's abstract describes DISPO as REINFORCE-style
    (importance weights clipped) with zero gradient outside the trust region. Its formula is not
    given there, so the natural reading is taken (``gradient="masked"``)::

        m = 1[1 − ε_low^s ≤ r ≤ 1 + ε_high^s]
        L = −A · (m · r + (1 − m) · sg(clip(r, 1 − ε_low^s, 1 + ε_high^s)))

    The gradient is −A·∇r inside the region and 0 outside. The value is the clipped ratio's.
    ``gradient="cispo"`` is the alternative, CISPO-style: the clipped weight, with gradient
    everywhere, ``L = −A · sg(clip(r, ·)) · log r``.

    Limits: with ``ε_high^+ = ε_low^− = ε`` and the other two open (``inf``), this is PPO-clip
    exactly, in value and gradient. The familiar "clip-higher" is ``ε_high^+ ≠ ε_low^−``. With
    all four equal to ε it also stops the restoring gradients that PPO keeps (A > 0 with
    r < 1 − ε, A < 0 with r > 1 + ε): the four regimes of the paper.

    Args:
      log_ratio: log r, shape [...]; adv: advantages [...]; eps_*: bounds ≥ 0 (scalars).

    Returns:
      (loss [...], diagnostics: ``ratio_diagnostics`` keys with ``clipped`` = outside the
      sample's region, and ``metrics`` with the out-of-region fraction per regime).
    """
    ratio = jnp.exp(log_ratio)
    low = 1.0 - _sign_bounds(adv, eps_pos_low, eps_neg_low)
    high = 1.0 + _sign_bounds(adv, eps_pos_high, eps_neg_high)
    clipped_ratio = jax.lax.stop_gradient(jnp.clip(ratio, low, high))
    inside = (ratio >= low) & (ratio <= high)
    if gradient == "masked":
        loss = -adv * jnp.where(inside, ratio, clipped_ratio)
    elif gradient == "cispo":
        loss = -adv * clipped_ratio * log_ratio
    else:
        raise ValueError(f"gradient={gradient!r} is not known; allowed: 'masked', 'cispo'")
    diag = ratio_diagnostics(log_ratio, 0.0)
    diag["clipped"] = (~inside).astype(ratio.dtype)
    pos, neg = adv >= 0, adv < 0
    f = lambda c: c.astype(ratio.dtype)  # noqa: E731
    diag["metrics"] = {
        "out_pos_high": f(pos & (ratio > high)), "out_pos_low": f(pos & (ratio < low)),
        "out_neg_high": f(neg & (ratio > high)), "out_neg_low": f(neg & (ratio < low)),
    }
    return loss, diag


def _clip_binds(ratio, adv, ratio_low, ratio_high):
    """Where PPO-clip with ratio bounds ``[ratio_low, ratio_high]`` gives a sample no gradient."""
    return ((adv > 0) & (ratio > ratio_high)) | ((adv < 0) & (ratio < ratio_low))


def sign_shares(log_ratio: jax.Array, adv: jax.Array, ratio_low, ratio_high) -> jax.Array:
    """Share of the positive-advantage samples in a clipped surrogate's gradient, per minibatch:
    ``Σ_{A>0, active} r·|A| / Σ_active r·|A|``. A sample is active where PPO-clip with ratio
    bounds ``[ratio_low, ratio_high]`` gives it a gradient, that is, not (A > 0 and
    r > ratio_high) and not (A < 0 and r < ratio_low). Reduces over every axis (0.5 if no
    sample is active)."""
    ratio = jnp.exp(log_ratio)
    active = ~_clip_binds(ratio, adv, ratio_low, ratio_high)
    w = jnp.where(active, ratio * jnp.abs(adv), 0.0)
    total = w.sum()
    return jnp.where(total > 0, jnp.where(adv > 0, w, 0.0).sum() / jnp.maximum(total, 1e-30), 0.5)


def bapo(
    log_ratio: jax.Array,
    adv: jax.Array,
    low0: float | jax.Array,
    high0: float | jax.Array,
    low_max: float | jax.Array,
    high_max: float | jax.Array,
    target_share: float | jax.Array,
    steps: int = 10,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Balanced policy optimisation with adaptive clipping (BAPO; Xi et al., 2025): PPO-clip whose
    ratio bounds ``[c_low, c_high]`` are chosen per minibatch so that the positive-advantage
    samples carry at least ``target_share`` of the gradient (:func:`sign_shares`).

    The abstract states the aim (re-balance the positive and negative contributions at every
    step), not the search. The reading taken here is a fixed ladder of ``steps + 1`` candidate
    pairs: ``c_high`` rises linearly from ``high0`` to ``high_max``, so more positive samples
    are admitted, and ``c_low`` rises from ``low0`` to ``low_max``, so more of the negative
    samples whose ratio already fell are clipped. The first rung that reaches the target is
    used, or the last rung if none does. The choice is made under ``stop_gradient``.
    ``target_share = 0`` is PPO-clip with bounds ``[low0, high0]`` exactly.

    Returns:
      (loss [...], diagnostics with ``metrics``: ``pos_share`` before and ``pos_share_after``
      with the chosen bounds, ``c_low``, ``c_high``).
    """
    lr_, a_ = jax.lax.stop_gradient(log_ratio), jax.lax.stop_gradient(adv)
    k = jnp.arange(steps + 1, dtype=jnp.float32) / max(steps, 1)
    lows, highs = low0 + k * (low_max - low0), high0 + k * (high_max - high0)
    shares = jax.vmap(lambda lo, hi: sign_shares(lr_, a_, lo, hi))(lows, highs)
    first = jnp.argmax(shares >= target_share)
    pick = jnp.where(jnp.any(shares >= target_share), first, steps)
    c_low, c_high = lows[pick], highs[pick]
    ratio = jnp.exp(log_ratio)
    loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, c_low, c_high) * adv)
    diag = ratio_diagnostics(log_ratio, 0.0)
    diag["clipped"] = _clip_binds(ratio, adv, c_low, c_high).astype(ratio.dtype)
    diag["metrics"] = {"pos_share": shares[0], "pos_share_after": shares[pick], "c_low": c_low, "c_high": c_high}
    return loss, diag


def sign_weighted(
    log_ratio: jax.Array,
    adv: jax.Array,
    clip_eps: float | jax.Array,
    pos_weight: float | jax.Array,
    neg_weight: float | jax.Array,
    base: str = "clip",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """± sample reweighting (negative-sample reinforcement, Zhu et al., 2025; asymmetric
    REINFORCE): the surrogate's A > 0 terms weighted by ``pos_weight`` and its A < 0 terms by
    ``neg_weight``. ``(0, 1)`` trains on the negative samples only, ``(1, 0)`` on the positive ones.

    ``base="clip"``: the weights multiply PPO-clip's per-sample loss, which ``(1, 1)`` gives
    exactly. ``base="pg"``: they multiply the plain ratio policy gradient −r·A (REINFORCE at
    r = 1), the papers' setting.
    """
    if base == "clip":
        loss, diag = ppo_clip(log_ratio, adv, clip_eps)
    elif base == "pg":
        loss, diag = policy_gradient(log_ratio, adv)
    else:
        raise ValueError(f"base={base!r} is not known; allowed: 'clip', 'pg'")
    w = jnp.where(adv > 0, pos_weight, jnp.where(adv < 0, neg_weight, 0.0))
    diag = dict(diag)
    diag["metrics"] = {"pos_frac": (adv > 0).astype(loss.dtype)}
    return w * loss, diag


def dropout_clip(
    log_ratio: jax.Array,
    adv: jax.Array,
    clip_eps: float | jax.Array,
    threshold: float | jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO-clip with sample dropout (D-PPO; Xie et al., 2022): samples whose term in the variance
    of the surrogate ``r·A`` is large are left out of the update.

    The abstract says which samples go (those inflating the surrogate's variance), not the rule.
    The reading taken here: a sample's deviation term is ``((r − 1)·A)²``, and the samples with
    ``|r − 1|·|A| > threshold`` are dropped. They add 0 to the mean, so the other samples keep
    their weight 1/B. ``threshold = inf`` is PPO-clip exactly.

    Returns:
      (loss [...], diagnostics with ``metrics["dropped"]``, the fraction dropped).
    """
    loss, diag = ppo_clip(log_ratio, adv, clip_eps)
    dev = jax.lax.stop_gradient(jnp.abs(jnp.exp(log_ratio) - 1.0) * jnp.abs(adv))
    keep = dev <= threshold
    diag = dict(diag)
    diag["metrics"] = {"dropped": (~keep).astype(loss.dtype)}
    return jnp.where(keep, loss, 0.0), diag
