"""Tests for prpo.objectives against hand formulas and hand-derived gradients."""


import jax.numpy as jnp
import numpy as np

from prpo.objectives import dual_clip, policy_gradient, ppo_clip, ratio_diagnostics

from _surrogate_grid import A, A32, ADVS, C, EPS, LOG_R, R, TOL, per_sample_grad, ref_ppo, ref_ppo_grad


def test_ppo_clip_values(maybe_jit):
    loss, diag = maybe_jit(lambda lr, a: ppo_clip(lr, a, EPS))(LOG_R, A32)
    ref = [ref_ppo(r, a, EPS) for r, a in zip(R, A)]
    np.testing.assert_allclose(loss, ref, **TOL)
    np.testing.assert_allclose(diag["ratio"], R, **TOL)
    np.testing.assert_allclose(diag["clipped"], (np.abs(R - 1) > EPS).astype(float))
    assert loss.shape == (len(R),)


def test_ppo_clip_grad(maybe_jit):
    g = maybe_jit(per_sample_grad(lambda lr, a: ppo_clip(lr, a, EPS)))(LOG_R, A32)
    ref = [ref_ppo_grad(r, a, EPS) for r, a in zip(R, A)]
    np.testing.assert_allclose(g, ref, **TOL)
    # explicit: zero in the clipped direction, -r*A inside the range
    g = np.asarray(g)
    clipped_dir = ((A > 0) & (R > 1 + EPS)) | ((A < 0) & (R < 1 - EPS))
    assert clipped_dir.any() and np.all(g[clipped_dir] == 0.0)
    inside = np.abs(R - 1) < EPS
    np.testing.assert_allclose(g[inside], -R[inside] * A[inside], **TOL)


def test_dual_clip_values_and_grad(maybe_jit):
    f = lambda lr, a: dual_clip(lr, a, EPS, C)
    loss, diag = maybe_jit(f)(LOG_R, A32)
    g = np.asarray(maybe_jit(per_sample_grad(f))(LOG_R, A32))
    ref, ref_g, ref_dc = [], [], []
    for r, a in zip(R, A):
        l = ref_ppo(r, a, EPS)
        if a < 0 and -C * a < l:  # capped: loss = C*|A|, no gradient
            ref.append(-C * a)
            ref_g.append(0.0)
            ref_dc.append(1.0)
        else:
            ref.append(l)
            ref_g.append(ref_ppo_grad(r, a, EPS))
            ref_dc.append(0.0)
    np.testing.assert_allclose(loss, ref, **TOL)
    np.testing.assert_allclose(g, ref_g, **TOL)
    np.testing.assert_allclose(diag["dual_clipped"], ref_dc)
    # the cap is active exactly for A < 0 and r > C
    capped = (A < 0) & (R > C)
    assert capped.any()
    np.testing.assert_array_equal(np.asarray(diag["dual_clipped"]) == 1.0, capped)
    np.testing.assert_allclose(np.asarray(loss)[capped], -C * A[capped], **TOL)
    assert np.all(g[capped] == 0.0)
    # elsewhere identical to PPO-clip
    ppo_loss, _ = ppo_clip(LOG_R, A32, EPS)
    np.testing.assert_allclose(np.asarray(loss)[~capped], np.asarray(ppo_loss)[~capped], **TOL)


def test_dual_clip_default_c():
    lr = jnp.log(jnp.array([10.0]))
    loss, _ = dual_clip(lr, jnp.array([-1.0]), EPS)
    np.testing.assert_allclose(loss, [3.0], rtol=1e-6)


def test_policy_gradient(maybe_jit):
    loss, diag = maybe_jit(policy_gradient)(LOG_R, A32)
    np.testing.assert_allclose(loss, -R * A, **TOL)
    g = maybe_jit(per_sample_grad(policy_gradient))(LOG_R, A32)
    np.testing.assert_allclose(g, -R * A, **TOL)
    # on-policy (log_ratio = 0): gradient is -A
    g0 = maybe_jit(per_sample_grad(policy_gradient))(jnp.zeros(4), jnp.array(ADVS))
    np.testing.assert_allclose(g0, -np.array(ADVS), **TOL)
    np.testing.assert_allclose(diag["approx_kl"], (R - 1) - np.log(R), **TOL)


def test_ratio_diagnostics(maybe_jit):
    lr = np.linspace(-3, 3, 61).astype(np.float32)
    d = maybe_jit(lambda x: ratio_diagnostics(x, EPS))(lr)
    r = np.exp(lr.astype(np.float64))
    np.testing.assert_allclose(d["approx_kl"], (r - 1) - np.log(r), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(d["approx_kl"]) >= 0)
    np.testing.assert_allclose(d["ratio_dev"], np.abs(r - 1), **TOL)
    np.testing.assert_array_equal(d["clipped"], (np.abs(r - 1) > EPS).astype(np.float32))
    # small log-ratios: approx_kl ~ 0.5 * log_ratio^2 (relative error ~ |lr|/3)
    small = np.array([-0.1, -0.05, -0.02, 0.02, 0.05, 0.1], np.float32)
    ks = maybe_jit(lambda x: ratio_diagnostics(x, EPS))(small)["approx_kl"]
    np.testing.assert_allclose(ks, 0.5 * small.astype(np.float64) ** 2, rtol=0.05)
    # ppo_clip reports the same diagnostics
    _, pd = ppo_clip(jnp.asarray(lr), jnp.ones_like(lr), EPS)
    for k in ("approx_kl", "clipped", "ratio_dev"):
        np.testing.assert_allclose(pd[k], d[k], **TOL)
