"""Tests for prpo.advantages against plain Python loops and hand values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prpo.advantages import gae, lambda_returns, normalize


T, N = 7, 3
TOL = dict(rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------
# Independent references: explicit loops over envs and time.
# ----------------------------------------------------------------------------


def ref_gae(r, v, nv, term, trunc, gamma, lam):
    r, v, nv = (np.asarray(a, np.float64) for a in (r, v, nv))
    adv = np.zeros_like(r)
    for n in range(r.shape[1]):
        next_adv = 0.0
        for t in reversed(range(r.shape[0])):
            bootstrap = 0.0 if term[t, n] else gamma * nv[t, n]
            delta = r[t, n] + bootstrap - v[t, n]
            if term[t, n] or trunc[t, n]:
                next_adv = 0.0
            adv[t, n] = delta + gamma * lam * next_adv
            next_adv = adv[t, n]
    return adv, adv + v


def ref_lambda_returns(r, nv, term, trunc, gamma, lam):
    r, nv = (np.asarray(a, np.float64) for a in (r, nv))
    Tn = r.shape[0]
    g = np.zeros_like(r)
    for n in range(r.shape[1]):
        for t in reversed(range(Tn)):
            if term[t, n] or trunc[t, n] or t == Tn - 1:
                boot = nv[t, n]
            else:
                boot = (1 - lam) * nv[t, n] + lam * g[t + 1, n]
            g[t, n] = r[t, n] + (0.0 if term[t, n] else gamma * boot)
    return g


def ref_mc_returns(r, nv, term, trunc, gamma):
    """Discounted reward sum to the episode end / rollout end, + bootstrap."""
    r, nv = (np.asarray(a, np.float64) for a in (r, nv))
    Tn = r.shape[0]
    out = np.zeros_like(r)
    for n in range(r.shape[1]):
        for t in range(Tn):
            total, disc, k = 0.0, 1.0, t
            while True:
                total += disc * r[k, n]
                disc *= gamma
                if term[k, n]:
                    break
                if trunc[k, n] or k == Tn - 1:
                    total += disc * nv[k, n]
                    break
                k += 1
            out[t, n] = total
    return out


# ----------------------------------------------------------------------------
# Scenarios
# ----------------------------------------------------------------------------


def make_data(scenario, seed=0):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(T, N)).astype(np.float32)
    v = rng.normal(size=(T, N)).astype(np.float32)
    nv = rng.normal(size=(T, N)).astype(np.float32)
    term = np.zeros((T, N), bool)
    trunc = np.zeros((T, N), bool)
    if scenario == "trunc_mid":
        trunc[3, 0] = True
        trunc[1, 2] = True
    elif scenario == "term_mid":
        term[3, 0] = True
        term[5, 1] = True
    elif scenario == "both_last":
        term[T - 1, 0] = True
        trunc[T - 1, 1] = True
        term[T - 1, 2] = trunc[T - 1, 2] = True
    elif scenario == "mixed":
        term[2, 0] = True
        trunc[4, 0] = True
        trunc[2, 1] = True
        term[2, 1] = True
        term[5, 2] = True
    return r, v, nv, term, trunc


SCENARIOS = ["none", "trunc_mid", "term_mid", "both_last", "mixed"]


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("flag_dtype", [bool, np.float32])
def test_gae_matches_loop(maybe_jit, scenario, flag_dtype):
    r, v, nv, term, trunc = make_data(scenario)
    gamma, lam = 0.97, 0.9
    adv, ret = maybe_jit(gae)(
        r, v, nv, term.astype(flag_dtype), trunc.astype(flag_dtype), gamma, lam
    )
    ref_adv, ref_ret = ref_gae(r, v, nv, term, trunc, gamma, lam)
    assert adv.shape == ret.shape == (T, N)
    np.testing.assert_allclose(adv, ref_adv, **TOL)
    np.testing.assert_allclose(ret, ref_ret, **TOL)


def test_gae_hand_computed(maybe_jit):
    # T=3, one env, gamma=0.9, lam=0.8 -> gamma*lam = 0.72
    r = np.array([[1.0], [2.0], [3.0]], np.float32)
    v = np.array([[0.5], [1.0], [1.5]], np.float32)
    nv = np.array([[1.0], [1.5], [2.0]], np.float32)
    f = np.zeros((3, 1), bool)
    g = maybe_jit(gae)
    # no episode end: deltas 1.4, 2.35, 3.3
    adv, ret = g(r, v, nv, f, f, 0.9, 0.8)
    np.testing.assert_allclose(adv[:, 0], [4.80272, 4.726, 3.3], **TOL)
    np.testing.assert_allclose(ret[:, 0], [5.30272, 5.726, 4.8], **TOL)
    # truncation at t=1 with V(final obs) = 5: delta_1 = 2 + 0.9*5 - 1 = 5.5, cut
    nv_tr = nv.copy()
    nv_tr[1] = 5.0
    tr = f.copy()
    tr[1] = True
    adv, _ = g(r, v, nv_tr, f, tr, 0.9, 0.8)
    np.testing.assert_allclose(adv[:, 0], [5.36, 5.5, 3.3], **TOL)
    # termination at t=1: delta_1 = 2 - 1 = 1, cut
    adv, _ = g(r, v, nv_tr, tr, f, 0.9, 0.8)
    np.testing.assert_allclose(adv[:, 0], [2.12, 1.0, 3.3], **TOL)


def test_gae_truncation_bootstraps_and_cuts(maybe_jit):
    r, v, nv, term, trunc = make_data("trunc_mid")
    nv[3, 0] = 100.0  # distinctive V(final obs) at the truncated step
    gamma, lam = 0.97, 0.9
    g = maybe_jit(gae)
    adv, _ = g(r, v, nv, term, trunc, gamma, lam)
    adv = np.asarray(adv)
    # bootstrap used at the truncated step, and nothing from t > 3 leaks in
    np.testing.assert_allclose(adv[3, 0], r[3, 0] + gamma * 100.0 - v[3, 0], **TOL)
    r2 = r.copy()
    r2[4:, 0] += 10.0
    adv2 = np.asarray(g(r2, v, nv, term, trunc, gamma, lam)[0])
    np.testing.assert_allclose(adv2[:4, 0], adv[:4, 0], **TOL)
    assert not np.allclose(adv2[4:, 0], adv[4:, 0])
    # wrong convention 1: truncation treated as termination (no bootstrap)
    adv_wrong = np.asarray(g(r, v, nv, term | trunc, np.zeros_like(trunc), gamma, lam)[0])
    assert abs(adv_wrong[3, 0] - adv[3, 0]) > 1.0
    # wrong convention 2: truncation ignored (recursion not cut)
    adv_wrong = np.asarray(g(r, v, nv, term, np.zeros_like(trunc), gamma, lam)[0])
    assert abs(adv_wrong[3, 0] - adv[3, 0]) > 1e-3


def test_gae_termination_no_bootstrap(maybe_jit):
    r, v, nv, term, trunc = make_data("term_mid")
    nv[3, 0] = 100.0  # must be ignored
    adv, _ = maybe_jit(gae)(r, v, nv, term, trunc, 0.97, 0.9)
    np.testing.assert_allclose(adv[3, 0], r[3, 0] - v[3, 0], **TOL)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("gamma", [1.0, 0.95])
def test_gae_lambda_one_is_mc(maybe_jit, scenario, gamma):
    r, v, nv, term, trunc = make_data(scenario, seed=1)
    # A = MC - V telescopes only if next_values[t] == values[t+1] within episodes
    nv[:-1] = np.where((term | trunc)[:-1], nv[:-1], v[1:])
    adv, ret = maybe_jit(gae)(r, v, nv, term, trunc, gamma, 1.0)
    mc = ref_mc_returns(r, nv, term, trunc, gamma)
    np.testing.assert_allclose(adv, mc - v, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(ret, mc, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_gae_lambda_zero_is_td(maybe_jit, scenario):
    r, v, nv, term, trunc = make_data(scenario, seed=2)
    gamma = 0.9
    adv, _ = maybe_jit(gae)(r, v, nv, term, trunc, gamma, 0.0)
    td = np.zeros((T, N))
    for t in range(T):
        for n in range(N):
            td[t, n] = r[t, n] + (0.0 if term[t, n] else gamma * nv[t, n]) - v[t, n]
    np.testing.assert_allclose(adv, td, **TOL)


def test_gae_traced_hyperparams_and_batch_shape():
    rng = np.random.default_rng(5)
    shape = (T, 2, 3)
    r, v, nv = (rng.normal(size=shape).astype(np.float32) for _ in range(3))
    term = rng.random(shape) < 0.15
    trunc = rng.random(shape) < 0.15

    @jax.jit
    def f(gamma, lam):
        return gae(r, v, nv, term, trunc, gamma, lam)

    adv, _ = f(jnp.float32(0.99), jnp.float32(0.95))
    ref = ref_gae(
        r.reshape(T, -1), v.reshape(T, -1), nv.reshape(T, -1),
        term.reshape(T, -1), trunc.reshape(T, -1), 0.99, 0.95,
    )[0].reshape(shape)
    np.testing.assert_allclose(adv, ref, **TOL)


# ----------------------------------------------------------------------------
# lambda_returns
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_lambda_returns_matches_loop(maybe_jit, scenario, lam):
    r, _, nv, term, trunc = make_data(scenario, seed=3)
    gamma = 0.95
    g = maybe_jit(lambda_returns)(r, nv, term.astype(np.float32), trunc, gamma, lam)
    np.testing.assert_allclose(g, ref_lambda_returns(r, nv, term, trunc, gamma, lam), **TOL)
    if lam == 0.0:  # one-step TD targets
        np.testing.assert_allclose(g, r + gamma * (1 - term) * nv, **TOL)
    if lam == 1.0:  # Monte-Carlo, bootstrapped at rollout end / truncation
        np.testing.assert_allclose(g, ref_mc_returns(r, nv, term, trunc, gamma), **TOL)


def test_lambda_returns_hand_computed(maybe_jit):
    r = np.array([[1.0], [2.0], [3.0]], np.float32)
    nv = np.array([[1.0], [1.5], [2.0]], np.float32)
    f = np.zeros((3, 1), bool)
    g = maybe_jit(lambda_returns)(r, nv, f, f, 0.9, 0.8)
    # G2 = 3 + .9*2 = 4.8; G1 = 2 + .9*(.2*1.5 + .8*4.8); G0 = 1 + .9*(.2*1 + .8*G1)
    np.testing.assert_allclose(g[:, 0], [5.30272, 5.726, 4.8], **TOL)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lambda_returns_consistent_with_gae(maybe_jit, scenario):
    r, v, nv, term, trunc = make_data(scenario, seed=4)
    done = term | trunc
    # next_values[t] = values[t+1] unless the episode ended at t (then V(final obs))
    nv[:-1] = np.where(done[:-1], nv[:-1], v[1:])
    gamma, lam = 0.96, 0.85
    g = maybe_jit(lambda_returns)(r, nv, term, trunc, gamma, lam)
    _, ret = maybe_jit(gae)(r, v, nv, term, trunc, gamma, lam)
    np.testing.assert_allclose(g, ret, **TOL)


# ----------------------------------------------------------------------------
# normalize
# ----------------------------------------------------------------------------


def test_normalize(maybe_jit):
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(T, N)) * 5 + 2).astype(np.float32)
    y = np.asarray(maybe_jit(normalize)(x))
    assert abs(y.mean()) < 1e-5 and abs(y.std() - 1) < 1e-5
    np.testing.assert_allclose(y, (x - x.mean()) / (x.std() + 1e-8), **TOL)
    y0 = np.asarray(maybe_jit(lambda a: normalize(a, axis=0))(x))
    np.testing.assert_allclose(y0.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y0.std(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(y0, (x - x.mean(0)) / (x.std(0) + 1e-8), **TOL)
