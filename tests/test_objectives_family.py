"""Tests for the further surrogates in prpo.objectives (SPO, PSPO, CE-GPPO, TOPR,
decoupled clip, ratio-variance penalty) against numpy formulas and hand-derived
gradients (float64 references, float32 computation)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prpo.objectives import (
    ce_gppo,
    decoupled_clip,
    dual_clip,
    policy_gradient,
    ppo_clip,
    pspo,
    ratio_variance_penalty,
    spo,
    topr,
)

from _surrogate_grid import A, A32, ADVS, C, EPS, LOG_R, R, RATIOS, TOL, per_sample_grad, ref_ppo, ref_ppo_grad


# ----------------------------------------------------------------------------
# SPO
# ----------------------------------------------------------------------------


def test_spo_values_and_grad(maybe_jit):
    f = lambda lr, a: spo(lr, a, EPS)
    loss, diag = maybe_jit(f)(LOG_R, A32)
    np.testing.assert_allclose(loss, -(R * A - np.abs(A) / (2 * EPS) * (R - 1) ** 2), **TOL)
    # d/d log r = r * dL/dr = r * (-A + |A|/eps * (r - 1))
    g = maybe_jit(per_sample_grad(f))(LOG_R, A32)
    np.testing.assert_allclose(g, R * (-A + np.abs(A) / EPS * (R - 1)), rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(diag["ratio"], R, **TOL)
    np.testing.assert_allclose(diag["clipped"], (np.abs(R - 1) > EPS).astype(float))
    np.testing.assert_allclose(diag["approx_kl"], (R - 1) - np.log(R), **TOL)


def test_spo_stationary_at_trust_region_boundary(maybe_jit):
    # eps may be per-sample (broadcast): every (eps, A) pair in one call
    eps, advs = (x.ravel().astype(np.float32) for x in np.meshgrid([0.1, 0.2, 0.3], ADVS))
    r_star = 1.0 + np.sign(advs) * eps
    g = maybe_jit(per_sample_grad(lambda lr, a: spo(lr, a, eps)))(
        np.log(r_star).astype(np.float32), advs
    )
    np.testing.assert_allclose(g, 0.0, atol=1e-5)


def test_spo_gradient_is_restoring(maybe_jit):
    grad = maybe_jit(per_sample_grad(lambda lr, a: spo(lr, a, EPS)))
    r = np.array([1.5, 1.0, 0.5, 0.5, 1.0, 1.5, 0.5, 2.0], np.float32)
    a = np.array([1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 0.0, 0.0], np.float32)
    g = np.asarray(grad(np.log(r), a))
    # A > 0 (r* = 1.2): above r* the loss pushes r down (dL/dlog r > 0), below it up.
    assert g[0] > 0 and g[1] < 0 and g[2] < 0
    np.testing.assert_allclose(g[0], 1.5 * (-1.0 + 1.0 / EPS * 0.5), rtol=1e-5)  # 1.5 * 1.5
    # A < 0 (r* = 0.8): below r* pushes r up (dL/dlog r < 0), above it down.
    assert g[3] < 0 and g[4] > 0 and g[5] > 0
    np.testing.assert_allclose(g[3], 0.5 * (1.0 - 1.0 / EPS * 0.5), rtol=1e-5)  # 0.5 * -1.5
    # A = 0: no loss, no gradient
    np.testing.assert_array_equal(g[6:], 0.0)


# ----------------------------------------------------------------------------
# PSPO
# ----------------------------------------------------------------------------


def test_pspo(maybe_jit):
    # alpha per sample (broadcast), so alpha in {0, 0.1, 0.5} are covered in one call
    alpha = np.resize(np.array([0.0, 0.1, 0.5], np.float32), len(R))
    f = lambda lr, a: pspo(lr, a, alpha)
    loss, diag = maybe_jit(f)(LOG_R, A32)
    rs = (1 - alpha) * R + alpha
    np.testing.assert_allclose(loss, -rs * A, **TOL)
    np.testing.assert_allclose(diag["smoothed_ratio"], rs, **TOL)
    np.testing.assert_allclose(diag["ratio"], R, **TOL)
    assert "clipped" not in diag
    g = np.asarray(maybe_jit(per_sample_grad(f))(LOG_R, A32))
    g_pg = np.asarray(maybe_jit(per_sample_grad(policy_gradient))(LOG_R, A32))
    np.testing.assert_allclose(g, (1 - alpha) * g_pg, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g, -(1 - alpha) * R * A, **TOL)
    # scalar alpha = 0 is policy_gradient
    np.testing.assert_allclose(pspo(LOG_R, A32, 0.0)[0], policy_gradient(LOG_R, A32)[0], **TOL)


# ----------------------------------------------------------------------------
# CE-GPPO
# ----------------------------------------------------------------------------


def ref_ce_gppo(r, a, eps, bl, bh, c):
    """(loss, d loss / d log r), by hand."""
    if a < 0 and r < 1 - eps:
        l, g = -bl * (1 - eps) * a, -bl * (1 - eps) * a
    elif a > 0 and r > 1 + eps:
        l, g = -bh * (1 + eps) * a, -bh * (1 + eps) * a
    else:
        l, g = ref_ppo(r, a, eps), ref_ppo_grad(r, a, eps)
    if a < 0 and -c * a < l:
        l, g = -c * a, 0.0
    return l, g


@pytest.mark.parametrize("betas", [None, (0.3, 0.7)], ids=["default", "custom"])
def test_ce_gppo_values_and_grad(maybe_jit, betas):
    bl, bh = (0.5, 1.0) if betas is None else betas
    kw = {} if betas is None else dict(beta_low=bl, beta_high=bh)
    f = lambda lr, a: ce_gppo(lr, a, EPS, dual_clip_c=C, **kw)
    loss, diag = maybe_jit(f)(LOG_R, A32)
    g = np.asarray(maybe_jit(per_sample_grad(f))(LOG_R, A32))
    ref = np.array([ref_ce_gppo(r, a, EPS, bl, bh, C) for r, a in zip(R, A)])
    np.testing.assert_allclose(loss, ref[:, 0], **TOL)
    np.testing.assert_allclose(g, ref[:, 1], **TOL)

    low = (A < 0) & (R < 1 - EPS)
    high = (A > 0) & (R > 1 + EPS)
    assert low.any() and high.any()
    # where PPO's gradient is zero, CE-GPPO keeps -beta * (1 -/+ eps) * A
    np.testing.assert_allclose(g[low], -bl * (1 - EPS) * A[low], **TOL)
    np.testing.assert_allclose(g[high], -bh * (1 + EPS) * A[high], **TOL)
    assert np.all(np.abs(g[low | high]) > 0)
    # and the value is beta times PPO's clipped value
    ppo_loss, _ = ppo_clip(LOG_R, A32, EPS)
    np.testing.assert_allclose(np.asarray(loss)[low], bl * np.asarray(ppo_loss)[low], **TOL)
    np.testing.assert_allclose(np.asarray(loss)[high], bh * np.asarray(ppo_loss)[high], **TOL)
    np.testing.assert_array_equal(np.asarray(diag["grad_preserved"]) == 1.0, low | high)


def test_ce_gppo_equals_ppo_in_clip_range_and_dual_clip_above_c(maybe_jit):
    f = lambda lr, a: ce_gppo(lr, a, EPS, 0.5, 1.0, C)
    loss, diag = maybe_jit(f)(LOG_R, A32)
    g = np.asarray(maybe_jit(per_sample_grad(f))(LOG_R, A32))
    loss = np.asarray(loss)
    ppo_loss, _ = ppo_clip(LOG_R, A32, EPS)
    ppo_g = np.asarray(per_sample_grad(lambda lr, a: ppo_clip(lr, a, EPS))(LOG_R, A32))
    inside = np.abs(R - 1) < EPS
    assert inside.any()
    np.testing.assert_allclose(loss[inside], np.asarray(ppo_loss)[inside], **TOL)
    np.testing.assert_allclose(g[inside], ppo_g[inside], **TOL)
    np.testing.assert_allclose(g[inside], -R[inside] * A[inside], **TOL)
    # A < 0 and r > c: capped exactly as dual_clip (value c|A|, zero gradient)
    capped = (A < 0) & (R > C)
    assert capped.any()
    dc_loss, dc_diag = dual_clip(LOG_R, A32, EPS, C)
    np.testing.assert_allclose(loss[capped], -C * A[capped], **TOL)
    assert np.all(g[capped] == 0.0)
    np.testing.assert_array_equal(diag["dual_clipped"], dc_diag["dual_clipped"])
    # A < 0 and 1 + eps < r < c: unclipped, -r*A (as PPO)
    mid = (A < 0) & (R > 1 + EPS) & (R < C)
    assert mid.any()
    np.testing.assert_allclose(g[mid], -R[mid] * A[mid], **TOL)
    for k in ("approx_kl", "clipped", "ratio_dev", "ratio"):
        np.testing.assert_allclose(diag[k], ppo_clip(LOG_R, A32, EPS)[1][k], **TOL)


def test_ce_gppo_beta_one_no_dual_cap_is_continuous_value_of_ppo():
    # with beta = 1 (and c huge) the VALUE equals PPO everywhere; only gradients differ
    loss, _ = ce_gppo(LOG_R, A32, EPS, 1.0, 1.0, 1e6)
    np.testing.assert_allclose(loss, ppo_clip(LOG_R, A32, EPS)[0], **TOL)


# ----------------------------------------------------------------------------
# TOPR
# ----------------------------------------------------------------------------


def test_topr_hand_values(maybe_jit):
    #              A>0,r<1  A>0,r>1  A<0,r<1  A<0,r>1  A<0,r=1  A=0
    r = np.array([0.5, 2.0, 0.5, 2.0, 1.0, 0.5], np.float32)
    a = np.array([1.5, 1.5, -2.0, -2.0, -2.0, 0.0], np.float32)
    w = np.array([1.0, 1.0, 0.5, 1.0, 1.0, 1.0])
    lr = np.log(r)
    g = maybe_jit(per_sample_grad(topr))(lr, a)
    np.testing.assert_allclose(g, [-1.5, -1.5, 1.0, 2.0, 2.0, 0.0], **TOL)
    np.testing.assert_allclose(g, -w * a, **TOL)
    loss, diag = maybe_jit(topr)(lr, a)
    np.testing.assert_allclose(loss, -w * a * np.log(r.astype(np.float64)), **TOL)
    np.testing.assert_allclose(diag["weight"], w, **TOL)
    np.testing.assert_allclose(diag["ratio"], r, **TOL)


def test_topr_grid_and_exact_param_gradient(maybe_jit):
    w = np.where(A >= 0, 1.0, np.clip(R, 0.0, 1.0))
    loss, _ = maybe_jit(topr)(LOG_R, A32)
    np.testing.assert_allclose(loss, -w * A * np.log(R), **TOL)
    g = maybe_jit(per_sample_grad(topr))(LOG_R, A32)
    np.testing.assert_allclose(g, -w * A, **TOL)
    # through log pi(theta) with a fixed behaviour log mu: the value is shifted by
    # w*A*log mu but the gradient is exactly -w * A * d log pi / d theta
    log_mu = np.linspace(-3.0, -0.5, len(R)).astype(np.float32)
    log_pi = (LOG_R + log_mu).astype(np.float32)
    scale = np.linspace(0.5, 2.0, len(R)).astype(np.float32)  # log pi = scale * theta
    theta = log_pi / scale

    def total(th, a):
        return jnp.sum(topr(scale * th - log_mu, a)[0])

    l_theta = maybe_jit(total)(theta, A32)
    np.testing.assert_allclose(l_theta, np.sum(-w * A * (log_pi - log_mu)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        l_theta - np.sum(w * A * log_mu), np.sum(-w * A * log_pi), rtol=1e-5, atol=1e-4
    )
    g = maybe_jit(jax.grad(total))(theta, A32)
    np.testing.assert_allclose(g, -w * A * scale, **TOL)


# ----------------------------------------------------------------------------
# Decoupled clip (PPO-EWMA)
# ----------------------------------------------------------------------------

M = math.log(100.0)


def ref_decoupled(a_lr, b_lr, adv, eps, m=M):
    """Sheet formula in float64 (max form) and d/d logp by hand.

    a_lr = logp - logp_prox, b_lr = logp - logp_b."""
    lw = min(b_lr, m)
    t1 = -adv * math.exp(lw)
    t2 = -adv * math.exp(min(max(a_lr, math.log(1 - eps)), math.log(1 + eps)) - a_lr + lw)
    loss = max(t1, t2)
    rp = math.exp(a_lr)
    clipped_dir = (adv > 0 and rp > 1 + eps) or (adv < 0 and rp < 1 - eps)
    grad = 0.0 if clipped_dir else -adv * math.exp(lw)
    return loss, grad


BEHAV = [0.5, 1.0, 3.0, 250.0]  # pi / pi_b; 250 > 100 is capped
DGRID = np.array(list(itertools.product(RATIOS, BEHAV, ADVS)), np.float64)
RP, RB, DA = DGRID[:, 0], DGRID[:, 1], DGRID[:, 2]


def decoupled_total(eps):
    """sum of the loss as a function of logp, with fixed logp_prox / logp_b."""

    def total(logp, logp_prox, logp_b, a):
        return jnp.sum(decoupled_clip(logp - logp_prox, logp - logp_b, a, eps)[0])

    return total


def test_decoupled_clip_values_and_grad(maybe_jit):
    logp = np.linspace(-2.0, -0.1, len(DGRID))
    logp_prox = (logp - np.log(RP)).astype(np.float32)
    logp_b = (logp - np.log(RB)).astype(np.float32)
    logp = logp.astype(np.float32)
    a_lr = (logp - logp_prox).astype(np.float64)  # the float32 log-ratios actually used
    b_lr = (logp - logp_b).astype(np.float64)
    ref = np.array([ref_decoupled(x, y, z, EPS) for x, y, z in zip(a_lr, b_lr, DA)])
    loss, diag = maybe_jit(decoupled_clip)(
        logp - logp_prox, logp - logp_b, DA.astype(np.float32), EPS
    )
    np.testing.assert_allclose(loss, ref[:, 0], rtol=1e-5, atol=1e-4)
    g = maybe_jit(jax.grad(decoupled_total(EPS)))(logp, logp_prox, logp_b, DA.astype(np.float32))
    np.testing.assert_allclose(g, ref[:, 1], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(diag["behav_weight"], np.minimum(np.exp(b_lr), 100.0), rtol=1e-5)
    np.testing.assert_array_equal(diag["behav_capped"], (RB > 100).astype(np.float32))
    np.testing.assert_allclose(diag["ratio"], np.exp(a_lr), rtol=1e-5)
    np.testing.assert_allclose(diag["clipped"], (np.abs(np.exp(a_lr) - 1) > EPS).astype(float))


def test_decoupled_clip_equals_ppo_when_prox_is_behaviour(maybe_jit):
    f = lambda lr, a: decoupled_clip(lr, lr, a, EPS)
    loss, diag = maybe_jit(f)(LOG_R, A32)
    ppo_loss, ppo_diag = ppo_clip(LOG_R, A32, EPS)
    np.testing.assert_allclose(loss, ppo_loss, **TOL)
    np.testing.assert_allclose(loss, [ref_ppo(r, a, EPS) for r, a in zip(R, A)], **TOL)
    g = maybe_jit(per_sample_grad(f))(LOG_R, A32)
    g_ppo = per_sample_grad(lambda lr, a: ppo_clip(lr, a, EPS))(LOG_R, A32)
    np.testing.assert_allclose(g, g_ppo, **TOL)
    np.testing.assert_allclose(g, [ref_ppo_grad(r, a, EPS) for r, a in zip(R, A)], **TOL)
    for k in ("approx_kl", "clipped", "ratio_dev", "ratio"):
        np.testing.assert_allclose(diag[k], ppo_diag[k], **TOL)


def test_decoupled_clip_caps_behaviour_weight(maybe_jit):
    # huge pi/pi_b: weight capped at 100 (value), gradient still -A * 100 where unclipped
    a_lr = np.log(np.array([1.0, 1.1, 1.5, 0.5, 1.0, 0.5], np.float32))
    adv = np.array([1.0, 1.0, 1.0, -1.0, -1.0, 1.0], np.float32)
    b_lr = np.full(6, 50.0, np.float32)
    loss, diag = maybe_jit(decoupled_clip)(a_lr, b_lr, adv, EPS)
    rp = np.exp(a_lr.astype(np.float64))
    factor = np.where((adv > 0) & (rp > 1 + EPS), 1.2 / rp, 1.0)
    factor = np.where((adv < 0) & (rp < 1 - EPS), 0.8 / rp, factor)
    np.testing.assert_allclose(loss, -adv * 100.0 * factor, rtol=1e-5)
    np.testing.assert_allclose(diag["behav_weight"], 100.0, rtol=1e-5)
    np.testing.assert_array_equal(diag["behav_capped"], 1.0)
    assert np.all(np.isfinite(loss))
    g = maybe_jit(jax.grad(decoupled_total(EPS)))(
        np.zeros(6, np.float32), -a_lr, -b_lr, adv
    )
    clipped_dir = ((adv > 0) & (rp > 1 + EPS)) | ((adv < 0) & (rp < 1 - EPS))
    np.testing.assert_allclose(g, np.where(clipped_dir, 0.0, -adv * 100.0), rtol=1e-5, atol=1e-4)
    # a custom cap
    loss, diag = maybe_jit(lambda x, y, z: decoupled_clip(x, y, z, EPS, math.log(10.0)))(
        a_lr, b_lr, adv
    )
    np.testing.assert_allclose(loss, -adv * 10.0 * factor, rtol=1e-5)
    # below the cap nothing changes
    b_small = np.full(6, math.log(99.0), np.float32)
    loss, diag = maybe_jit(decoupled_clip)(a_lr, b_small, adv, EPS)
    np.testing.assert_allclose(loss, -adv * 99.0 * factor, rtol=1e-5)
    np.testing.assert_array_equal(diag["behav_capped"], 0.0)


def test_decoupled_clip_extreme_prox_ratio_is_finite(maybe_jit):
    # pi/pi_prox = e^-150 with A > 0 (and e^150 with A < 0): the unselected clipped
    # term would overflow exp; value and gradient must stay finite and exact.
    a_lr = np.array([-150.0, 150.0], np.float32)
    adv = np.array([1.0, -1.0], np.float32)
    b_lr = np.zeros(2, np.float32)
    loss, _ = maybe_jit(decoupled_clip)(a_lr, b_lr, adv, EPS)
    np.testing.assert_allclose(loss, [-1.0, 1.0], rtol=1e-6)
    g = maybe_jit(jax.grad(decoupled_total(EPS)))(np.zeros(2, np.float32), -a_lr, -b_lr, adv)
    np.testing.assert_allclose(g, [-1.0, 1.0], rtol=1e-6)


# ----------------------------------------------------------------------------
# Ratio-variance penalty
# ----------------------------------------------------------------------------


def test_ratio_variance_penalty(maybe_jit):
    shape = (8, 5)  # 2-D: the variance is over all elements
    nu, delta = 0.7, 0.05
    lr = LOG_R.reshape(shape)
    a = A32.reshape(shape)
    r, a64 = R.reshape(shape), A.reshape(shape)
    f = lambda x, y: ratio_variance_penalty(x, y, nu, delta)
    loss, diag = maybe_jit(f)(lr, a)
    m = r.mean()
    np.testing.assert_allclose(loss, -r * a64 + nu * ((r - m) ** 2 - delta), **TOL)
    # the batch mean is the sheet's formula, with the population variance over ALL elements
    np.testing.assert_allclose(
        np.mean(loss), np.mean(-r * a64) + nu * (np.var(r) - delta), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(np.mean(diag["ratio_sq_dev"]), np.var(r), rtol=1e-5)
    # gradient of the mean, by hand: (-r_j A_j + 2 nu (r_j - m) r_j) / N
    g = maybe_jit(jax.grad(lambda x, y: jnp.mean(f(x, y)[0])))(lr, a)
    n = r.size
    np.testing.assert_allclose(g, (-r * a64 + 2 * nu * (r - m) * r) / n, rtol=1e-5, atol=1e-6)
    # nu = 0 is policy_gradient
    l0, _ = ratio_variance_penalty(lr, a, 0.0, delta)
    np.testing.assert_allclose(l0, policy_gradient(lr, a)[0], **TOL)


# -- BPO ----------------------------------------------------------------------------------

def test_bpo_target_ratio_limits():
    from prpo.objectives import bpo_target_ratio

    x = jnp.array([-2.0, -1e-2, 1e-2, 3.0])
    small = np.asarray(bpo_target_ratio(x, 0.2, 0.3, 1e-6))  # λ → 0: a step at the median
    np.testing.assert_allclose(small, [0.8, 0.8, 1.3, 1.3], rtol=1e-6)
    large = np.asarray(bpo_target_ratio(x, 0.2, 0.3, 1e6))  # λ → ∞: the middle of the bounds
    np.testing.assert_allclose(large, 1.0 + (0.3 - 0.2) / 2, rtol=1e-5)
    clamped = np.asarray(bpo_target_ratio(jnp.array([1e9]), 0.2, 0.3, 1.0, clamp=10.0))
    np.testing.assert_allclose(clamped, 0.8 + 0.5 / (1 + np.exp(-10.0)), rtol=1e-6)


def test_median_loss_minimiser_is_the_median():
    from prpo.objectives import median_loss

    samples = jnp.array([-3.0, 0.5, 1.0, 2.0, 40.0])
    us = jnp.linspace(-5, 45, 20001)
    # g is a smoothed |x|/2: its minimiser lies near the median (1.0), far from the mean (8.1)
    risk = jax.vmap(lambda u: median_loss(samples - u).mean())(us)
    best = float(us[jnp.argmin(risk)])
    assert abs(best - 1.0) < 1.0 and abs(best - float(samples.mean())) > 5
    np.testing.assert_allclose(jax.grad(lambda x: median_loss(x))(0.7), 1 / (1 + np.exp(-0.7)) - 0.5, rtol=1e-6)


def test_bpo_loss_value_and_gradient():
    from prpo.objectives import bpo

    lr = jnp.log(jnp.array([0.7, 1.2, 1.0]))
    rho = jnp.array([1.0, 1.0, 1.3])
    w = jnp.array([2.0, -1.0, 0.5])
    loss, diag = bpo(lr, rho, w)
    r = np.array([0.7, 1.2, 1.0])
    np.testing.assert_allclose(loss, np.abs((r - np.asarray(rho)) * np.asarray(w)), rtol=1e-6)
    grad = jax.grad(lambda x: bpo(x, rho, w)[0].sum())(lr)
    np.testing.assert_allclose(grad, np.sign(r - np.asarray(rho)) * np.abs(np.asarray(w)) * r, rtol=1e-6)


def test_gbpo_targets_against_numpy():
    from prpo.objectives import gbpo_targets

    R = np.array([[1.0, 2.0, 4.0, 7.0]])
    rho, adv = gbpo_targets(jnp.asarray(R), 0.2, 0.2, 0.5)
    std = R.std()
    np.testing.assert_allclose(adv, (R - R.mean()) / (std + 1e-8), rtol=1e-6)
    expected = 0.8 + 0.4 / (1 + np.exp(-((R - np.median(R)) / std / 0.5)))
    np.testing.assert_allclose(rho, expected, rtol=1e-6)
