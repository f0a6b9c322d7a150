"""Tests for prpo.distributions against hand-written numpy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from prpo import distributions as D


RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------
# numpy references (float64, written independently of the implementation)
# ----------------------------------------------------------------------------


def np_softmax(logits):
    out = np.zeros_like(logits, dtype=np.float64)
    flat_in = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    flat_out = out.reshape(-1, logits.shape[-1])
    for i, row in enumerate(flat_in):
        e = np.exp(row - row.max())
        flat_out[i] = e / e.sum()
    return out


def np_gauss_pdf(x, mean, std):
    """Product over the last axis of 1-D normal pdfs."""
    x, mean, std = (np.asarray(a, np.float64) for a in (x, mean, std))
    dens = np.exp(-((x - mean) ** 2) / (2 * std**2)) / (np.sqrt(2 * np.pi) * std)
    return np.prod(dens, axis=-1)


# ----------------------------------------------------------------------------
# Categorical
# ----------------------------------------------------------------------------


def test_categorical_log_prob_entropy_kl(maybe_jit):
    logits_p = RNG.normal(size=(5, 4)).astype(np.float32) * 2
    logits_q = RNG.normal(size=(5, 4)).astype(np.float32) * 2
    actions = np.array([0, 3, 1, 2, 3], dtype=np.int32)
    p, q = D.Categorical(jnp.asarray(logits_p)), D.Categorical(jnp.asarray(logits_q))

    lp = maybe_jit(lambda d, a: d.log_prob(a))(p, actions)
    ent = maybe_jit(lambda d: d.entropy())(p)
    kl = maybe_jit(lambda a, b: a.kl(b))(p, q)
    mode = maybe_jit(lambda d: d.mode())(p)

    probs_p, probs_q = np_softmax(logits_p), np_softmax(logits_q)
    ref_lp = np.array([math.log(probs_p[i, a]) for i, a in enumerate(actions)])
    ref_ent = np.array([-sum(pi * math.log(pi) for pi in row) for row in probs_p])
    ref_kl = np.array(
        [sum(pi * math.log(pi / qi) for pi, qi in zip(rp, rq)) for rp, rq in zip(probs_p, probs_q)]
    )
    np.testing.assert_allclose(lp, ref_lp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent, ref_ent, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kl, ref_kl, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(mode, probs_p.argmax(-1))
    assert lp.shape == ent.shape == kl.shape == mode.shape == (5,)
    assert mode.dtype == jnp.int32
    assert np.all(np.asarray(kl) > 0)
    np.testing.assert_allclose(maybe_jit(lambda a: a.kl(a))(p), 0.0, atol=1e-6)


def test_categorical_sample_frequencies(maybe_jit):
    # batch of two distributions, 20000 draws each
    logits = jnp.array([[1.0, -0.5, 0.3, 2.0], [0.0, 0.0, -1.0, 0.5]])
    n = 20000
    keys = jax.random.split(jax.random.key(1), n)
    dist = D.Categorical(logits)
    samples = maybe_jit(jax.vmap(lambda k: dist.sample(k)))(keys)
    assert samples.dtype == jnp.int32 and samples.shape == (n, 2)
    probs = np_softmax(np.asarray(logits))
    for b in range(2):
        counts = np.bincount(np.asarray(samples[:, b]), minlength=4)
        assert counts.shape == (4,)  # no out-of-range actions
        expected = n * probs[b]
        chi2 = np.sum((counts - expected) ** 2 / expected)
        # df = 3; P(chi2 > 16.27) = 0.001.
        assert chi2 < 16.27, (counts, expected, chi2)


def test_categorical_masked_logits_no_nan(maybe_jit):
    logits = jnp.array([0.0, -jnp.inf, 1.0])

    def f(lg):
        d = D.Categorical(lg)
        return d.entropy() + d.kl(D.Categorical(jnp.zeros(3)))

    val, grad = maybe_jit(jax.value_and_grad(f))(logits)
    p = np_softmax(np.array([0.0, 1.0]))
    ref_ent = -np.sum(p * np.log(p))
    ref_kl = np.sum(p * np.log(p / (1 / 3)))
    np.testing.assert_allclose(val, ref_ent + ref_kl, rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(grad)))


# ----------------------------------------------------------------------------
# DiagGaussian
# ----------------------------------------------------------------------------


def test_gaussian_log_prob_entropy(maybe_jit):
    mean = RNG.normal(size=(6, 3)).astype(np.float32)
    log_std = (0.5 * RNG.normal(size=(3,))).astype(np.float32)  # broadcast [D]
    x = RNG.normal(size=(6, 3)).astype(np.float32)
    dist = D.DiagGaussian(jnp.asarray(mean), jnp.asarray(log_std))

    lp = maybe_jit(lambda d, x: d.log_prob(x))(dist, x)
    ent = maybe_jit(lambda d: d.entropy())(dist)
    mode = maybe_jit(lambda d: d.mode())(dist)

    std = np.exp(log_std.astype(np.float64))
    np.testing.assert_allclose(lp, np.log(np_gauss_pdf(x, mean, std)), rtol=1e-5, atol=1e-5)
    ref_ent = np.sum(0.5 * np.log(2 * np.pi * np.e * std**2))
    np.testing.assert_allclose(ent, np.full(6, ref_ent), rtol=1e-5)
    np.testing.assert_allclose(mode, mean)
    assert lp.shape == ent.shape == (6,)


def test_gaussian_entropy_kl_quadrature(maybe_jit):
    # 1-D: compare against numerical integrals on a fine grid.
    m_p, s_p, m_q, s_q = 0.3, 0.7, -0.4, 1.3
    grid = np.linspace(-15, 15, 200001)
    dx = grid[1] - grid[0]
    pdf_p = np_gauss_pdf(grid[:, None], m_p, s_p)
    pdf_q = np_gauss_pdf(grid[:, None], m_q, s_q)
    ref_ent = -np.sum(pdf_p * np.log(pdf_p)) * dx
    ref_kl = np.sum(pdf_p * np.log(pdf_p / pdf_q)) * dx

    p = D.DiagGaussian(jnp.array([m_p]), jnp.log(jnp.array([s_p])))
    q = D.DiagGaussian(jnp.array([m_q]), jnp.log(jnp.array([s_q])))
    np.testing.assert_allclose(maybe_jit(lambda d: d.entropy())(p), ref_ent, rtol=1e-5)
    np.testing.assert_allclose(maybe_jit(lambda a, b: a.kl(b))(p, q), ref_kl, rtol=1e-4)


def test_gaussian_kl_multidim(maybe_jit):
    m_p, m_q = RNG.normal(size=(4, 2)), RNG.normal(size=(4, 2))
    ls_p, ls_q = 0.3 * RNG.normal(size=(4, 2)), 0.3 * RNG.normal(size=(2,))
    p = D.DiagGaussian(jnp.asarray(m_p, jnp.float32), jnp.asarray(ls_p, jnp.float32))
    q = D.DiagGaussian(jnp.asarray(m_q, jnp.float32), jnp.asarray(ls_q, jnp.float32))
    kl = maybe_jit(lambda a, b: a.kl(b))(p, q)
    ref = np.zeros(4)
    for i in range(4):
        for d in range(2):
            sp, sq = np.exp(ls_p[i, d]), np.exp(ls_q[d])
            ref[i] += np.log(sq / sp) + (sp**2 + (m_p[i, d] - m_q[i, d]) ** 2) / (2 * sq**2) - 0.5
    np.testing.assert_allclose(kl, ref, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(kl) > 0)
    np.testing.assert_allclose(maybe_jit(lambda a: a.kl(a))(p), np.zeros(4), atol=1e-6)


def test_gaussian_sample_moments(maybe_jit):
    mean = jnp.array([1.0, -2.0, 0.0])
    log_std = jnp.log(jnp.array([0.5, 2.0, 1.0]))
    n = 20000
    x = maybe_jit(lambda d, k: d.sample(k))(
        D.DiagGaussian(jnp.broadcast_to(mean, (n, 3)), log_std), jax.random.key(3)
    )
    assert x.shape == (n, 3)
    x = np.asarray(x, np.float64)
    std = np.array([0.5, 2.0, 1.0])
    assert np.all(np.abs(x.mean(0) - np.asarray(mean)) < 5 * std / np.sqrt(n))
    np.testing.assert_allclose(x.std(0), std, rtol=0.03)


def test_gaussian_log_prob_grad(maybe_jit):
    mean = jnp.array([0.2, -1.0, 0.5])
    log_std = jnp.array([0.1, -0.3, 0.4])
    x = jnp.array([1.0, 0.0, -0.7])

    g_mean, g_ls = maybe_jit(
        jax.grad(lambda m, s: D.DiagGaussian(m, s).log_prob(x), argnums=(0, 1))
    )(mean, log_std)
    m, s, xx = (np.asarray(a, np.float64) for a in (mean, jnp.exp(log_std), x))
    np.testing.assert_allclose(g_mean, (xx - m) / s**2, rtol=1e-5)
    np.testing.assert_allclose(g_ls, ((xx - m) / s) ** 2 - 1.0, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# TanhGaussian
# ----------------------------------------------------------------------------


def test_tanh_log_prob_change_of_variables(maybe_jit):
    mean = RNG.normal(size=(5, 2)).astype(np.float32)
    log_std = (0.3 * RNG.normal(size=(5, 2))).astype(np.float32)
    u = (RNG.normal(size=(5, 2)) * 1.5).astype(np.float32)
    x = np.tanh(u)
    dist = D.TanhGaussian(jnp.asarray(mean), jnp.asarray(log_std))

    lp_x = maybe_jit(lambda d, x: d.log_prob(x))(dist, x)
    lp_u = maybe_jit(lambda d, u: d.log_prob_pre_tanh(u))(dist, u)

    u64 = u.astype(np.float64)
    dens = np_gauss_pdf(u64, mean, np.exp(log_std.astype(np.float64))) / np.prod(
        1 - np.tanh(u64) ** 2, axis=-1
    )
    np.testing.assert_allclose(lp_u, np.log(dens), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lp_x, np.log(dens), rtol=1e-4, atol=1e-4)


def test_tanh_density_integrates_to_one():
    dist = D.TanhGaussian(jnp.array([0.4]), jnp.log(jnp.array([0.8])))
    # midpoint grid on (-1, 1)
    n = 20000
    x = (np.arange(n) + 0.5) / n * 2 - 1
    dens = np.exp(np.asarray(dist.log_prob(jnp.asarray(x[:, None], jnp.float32)), np.float64))
    np.testing.assert_allclose(np.sum(dens) * (2 / n), 1.0, atol=2e-3)


def test_tanh_log_prob_stable_for_large_u(maybe_jit):
    u = np.array([[-20.0], [-8.0], [0.0], [8.0], [20.0]], np.float32)
    dist = D.TanhGaussian(jnp.zeros((5, 1)), jnp.zeros((5, 1)))
    lp = maybe_jit(lambda d, u: d.log_prob_pre_tanh(u))(dist, u)
    u64 = u[:, 0].astype(np.float64)
    # log(1 - tanh(u)^2) = log sech(u)^2 = 2 log 2 - 2 log(e^u + e^-u)
    log_det = 2 * np.log(2) - 2 * np.logaddexp(u64, -u64)
    ref = -0.5 * u64**2 - 0.5 * np.log(2 * np.pi) - log_det
    np.testing.assert_allclose(lp, ref, rtol=1e-6)
    # boundary actions give finite log-probs thanks to clipping
    lp_edge = maybe_jit(lambda d, x: d.log_prob(x))(dist, jnp.array([[-1.0], [1.0], [0.0], [1.0], [-1.0]]))
    assert np.all(np.isfinite(np.asarray(lp_edge)))


def test_tanh_sample_and_entropy(maybe_jit):
    mean, std = 0.5, 0.9
    dist = D.TanhGaussian(jnp.array([mean]), jnp.log(jnp.array([std])))
    keys = jax.random.split(jax.random.key(7), 20000)
    x = maybe_jit(jax.vmap(lambda k: dist.sample(k)))(keys)
    assert x.shape == (20000, 1)
    assert np.all(np.abs(np.asarray(x)) <= 1.0)
    # E[tanh(u)] by quadrature over u
    grid = np.linspace(mean - 12 * std, mean + 12 * std, 200001)
    du = grid[1] - grid[0]
    pu = np_gauss_pdf(grid[:, None], mean, std)
    ref_mean = np.sum(pu * np.tanh(grid)) * du
    assert abs(float(np.mean(np.asarray(x))) - ref_mean) < 0.02

    # entropy of the squashed variable: -int p_x log p_x dx, by quadrature over u
    log_px = np.log(pu) - np.log(1 - np.tanh(grid) ** 2)
    ref_ent = -np.sum(pu * log_px) * du
    ents = maybe_jit(jax.vmap(lambda k: dist.entropy(k)))(keys)
    assert ents.shape == (20000,)
    ents = np.asarray(ents, np.float64)
    se = ents.std() / np.sqrt(len(ents))
    assert abs(ents.mean() - ref_ent) < 5 * se + 1e-3, (ents.mean(), ref_ent, se)

    # sample_and_log_prob agrees with log_prob of the returned action
    a, lp = dist.sample_and_log_prob(jax.random.key(0))
    np.testing.assert_allclose(lp, dist.log_prob(a), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dist.mode(), np.tanh([mean]), rtol=1e-6)
