"""Tests for prpo.regularizers against hand values and hand-derived gradients."""

import jax
import jax.numpy as jnp
import numpy as np

from prpo.regularizers import clipped_value_loss, entropy_loss, kl_penalty, value_loss


TOL = dict(rtol=1e-6, atol=1e-6)


def test_entropy_loss(maybe_jit):
    ent = jnp.array([0.0, 0.5, 1.7])
    np.testing.assert_allclose(maybe_jit(entropy_loss)(ent), [0.0, -0.5, -1.7], **TOL)
    g = maybe_jit(jax.grad(lambda e: jnp.sum(entropy_loss(e))))(ent)
    np.testing.assert_allclose(g, -np.ones(3), **TOL)


def test_value_loss(maybe_jit):
    v = jnp.array([1.0, -2.0, 0.5])
    ret = jnp.array([3.0, -1.0, 0.5])
    np.testing.assert_allclose(maybe_jit(value_loss)(v, ret), [2.0, 0.5, 0.0], **TOL)
    g = maybe_jit(jax.grad(lambda x: jnp.sum(value_loss(x, ret))))(v)
    np.testing.assert_allclose(g, [-2.0, -1.0, 0.0], **TOL)


def test_clipped_value_loss_hand_cases(maybe_jit):
    eps = 0.2
    old = jnp.zeros(5)
    ret = jnp.array([1.0, 1.0, 1.0, 1.0, 1.0])
    # v:  0.1 inside clip range        -> 0.5*(0.1-1)^2 = 0.405, grad v-R = -0.9
    #     0.5 beyond clip, towards R   -> vclip=0.2: max(0.125, 0.32) = 0.32 -> 0.5*0.64, grad 0
    #     1.5 overshoot past R         -> vclip=0.2: max(0.125, 0.32) -> 0.32, grad 0
    #    -0.5 beyond clip, away from R -> vclip=-0.2: max(1.125, 0.72) -> 1.125, grad v-R=-1.5
    #     3.0 far side beyond R        -> vclip=0.2: max(2.0, 0.32) -> 2.0, grad v-R=2.0
    v = jnp.array([0.1, 0.5, 1.5, -0.5, 3.0])
    loss = maybe_jit(lambda x: clipped_value_loss(x, old, ret, eps))(v)
    np.testing.assert_allclose(loss, [0.405, 0.32, 0.32, 1.125, 2.0], rtol=1e-5, atol=1e-6)
    g = maybe_jit(jax.grad(lambda x: jnp.sum(clipped_value_loss(x, old, ret, eps))))(v)
    np.testing.assert_allclose(g, [-0.9, 0.0, 0.0, -1.5, 2.0], rtol=1e-5, atol=1e-6)


def test_clipped_value_loss_random_vs_loop(maybe_jit):
    rng = np.random.default_rng(0)
    v, old, ret = (rng.normal(size=50).astype(np.float32) for _ in range(3))
    eps = 0.3
    loss = maybe_jit(clipped_value_loss)(v, old, ret, eps)
    ref = []
    for vi, oi, ri in zip(v.astype(float), old.astype(float), ret.astype(float)):
        vc = oi + min(max(vi - oi, -eps), eps)
        ref.append(0.5 * max((vi - ri) ** 2, (vc - ri) ** 2))
    np.testing.assert_allclose(loss, ref, rtol=1e-5, atol=1e-6)
    # clip_eps large -> identical to the unclipped value loss
    big = maybe_jit(clipped_value_loss)(v, old, ret, 1e6)
    np.testing.assert_allclose(big, 0.5 * (v - ret) ** 2, rtol=1e-5, atol=1e-6)


def test_kl_penalty(maybe_jit):
    kl = jnp.array([0.0, 0.1, 2.0])
    np.testing.assert_allclose(maybe_jit(kl_penalty)(kl, 0.5), [0.0, 0.05, 1.0], **TOL)
    g = maybe_jit(jax.grad(lambda k: jnp.sum(kl_penalty(k, 0.5))))(kl)
    np.testing.assert_allclose(g, np.full(3, 0.5), **TOL)
