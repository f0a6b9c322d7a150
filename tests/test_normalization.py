import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prpo.normalization import (
    RewardScaler,
    RunningMeanStd,
    reward_scaler_init,
    reward_scaler_update,
    rms_init,
    rms_normalize,
    rms_update,
    scale_rewards,
)


def test_rms_init():
    rms = rms_init((3,))
    assert isinstance(rms, RunningMeanStd)
    np.testing.assert_array_equal(rms.mean, np.zeros(3))
    np.testing.assert_array_equal(rms.var, np.ones(3))
    assert rms.count.shape == () and rms.count.dtype == jnp.float32
    assert float(rms.count) == pytest.approx(1e-4)
    assert rms_init(3).mean.shape == (3,)
    assert rms_init(()).mean.shape == ()


def _expected_with_prior(data):
    """numpy moments of ``data`` (reduced over axis 0) plus rms_init's pseudo-sample
    (weight 1e-4, mean 0, var 1); the prior only matters for large offsets."""
    c0, n = 1e-4, data.shape[0]
    mean = data.sum(0) / (n + c0)
    var = (c0 * (1.0 + mean**2) + ((data - mean) ** 2).sum(0)) / (n + c0)
    return mean, var


def test_rms_update_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)).astype(np.float32) * [1, 10, 0.1, 1] + [0, 5, -2, 100]
               for n in (7, 64, 1, 300)]
    rms = rms_init((4,))
    update = jax.jit(rms_update)
    for b in batches:
        rms = update(rms, b)
    data = np.concatenate(batches).astype(np.float64)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-2)  # prior bias on the +100 column
    mean, var = _expected_with_prior(data)
    np.testing.assert_allclose(rms.mean, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rms.var, var, rtol=1e-4)
    assert float(rms.count) == pytest.approx(len(data) + 1e-4)


def test_rms_update_multiple_leading_axes():
    rng = np.random.default_rng(1)
    rms = rms_init((2, 3))
    batches = [rng.normal(size=(5, 8, 2, 3)).astype(np.float32) + 1.5 for _ in range(3)]
    for b in batches:
        rms = rms_update(rms, b, axis=(0, 1))
    data = np.concatenate([b.reshape(-1, 2, 3) for b in batches]).astype(np.float64)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-4)
    assert float(rms.count) == pytest.approx(data.shape[0] + 1e-4, rel=1e-6)


def test_rms_vmapped_over_seeds():
    rng = np.random.default_rng(2)
    batch = rng.normal(size=(3, 50, 2)).astype(np.float32) * np.array([1.0, 2.0, 3.0])[:, None, None]
    rms0 = jax.vmap(lambda _: rms_init((2,)))(jnp.arange(3))
    rms = jax.vmap(rms_update)(rms0, batch)
    for i in range(3):
        single = rms_update(rms_init((2,)), batch[i])
        np.testing.assert_allclose(rms.mean[i], single.mean, rtol=1e-6)
        np.testing.assert_allclose(rms.var[i], single.var, rtol=1e-6)
    x = jax.vmap(rms_normalize)(rms, batch)
    assert x.shape == batch.shape


def test_rms_normalize_and_clip():
    rms = RunningMeanStd(mean=jnp.array([1.0, -2.0]), var=jnp.array([4.0, 0.25]), count=jnp.float32(10))
    x = jnp.array([[3.0, -2.0], [1.0, -1.5], [1000.0, -1000.0]])
    y = rms_normalize(rms, x, clip=10.0, eps=0.0)
    np.testing.assert_allclose(y, [[1.0, 0.0], [0.0, 1.0], [10.0, -10.0]], rtol=1e-6)
    y = rms_normalize(rms, x, clip=5.0)
    assert float(jnp.max(jnp.abs(y))) == pytest.approx(5.0)
    y = rms_normalize(rms, x, clip=None, eps=0.0)
    np.testing.assert_allclose(y[2], [499.5, -1996.0], rtol=1e-6)


def _python_returns(rewards, dones, gamma, ret0):
    ret = np.array(ret0, dtype=np.float64)
    out = []
    for r, d in zip(rewards, dones):
        ret = ret * gamma + r
        out.append(ret.copy())
        ret = np.where(d, 0.0, ret)
    return np.stack(out), ret


def test_reward_scaler_matches_python_loop():
    rng = np.random.default_rng(3)
    T, N, gamma = 16, 5, 0.9
    scaler = reward_scaler_init(N)
    assert isinstance(scaler, RewardScaler) and scaler.ret.shape == (N,)
    update = jax.jit(reward_scaler_update, static_argnames="gamma")
    all_returns, ret = [], np.zeros(N)
    for _ in range(3):
        rewards = rng.normal(1.0, 3.0, size=(T, N)).astype(np.float32)
        dones = rng.random((T, N)) < 0.15
        scaler = update(scaler, rewards, dones, gamma=gamma)
        returns, ret = _python_returns(rewards, dones, gamma, ret)
        all_returns.append(returns)
        np.testing.assert_allclose(scaler.ret, ret, rtol=1e-5, atol=1e-5)
    all_returns = np.concatenate(all_returns).ravel()
    np.testing.assert_allclose(scaler.rms.mean, all_returns.mean(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scaler.rms.var, all_returns.var(), rtol=1e-4)
    assert float(scaler.rms.count) == pytest.approx(all_returns.size + 1e-4)

    r = rng.normal(size=(T, N)).astype(np.float32)
    np.testing.assert_allclose(scale_rewards(scaler, r, eps=0.0), r / np.sqrt(all_returns.var()), rtol=1e-4)
    big = scale_rewards(scaler, jnp.full((N,), 1e6), clip=10.0)
    np.testing.assert_array_equal(big, np.full((N,), 10.0, np.float32))


def test_reward_scaler_vmapped_over_seeds():
    rng = np.random.default_rng(4)
    S, T, N = 2, 8, 3
    rewards = rng.normal(size=(S, T, N)).astype(np.float32)
    dones = rng.random((S, T, N)) < 0.2
    scalers = jax.vmap(lambda _: reward_scaler_init(N))(jnp.arange(S))
    out = jax.vmap(lambda s, r, d: reward_scaler_update(s, r, d, 0.99))(scalers, rewards, dones)
    for i in range(S):
        single = reward_scaler_update(reward_scaler_init(N), rewards[i], dones[i], 0.99)
        np.testing.assert_allclose(out.ret[i], single.ret, rtol=1e-6)
        np.testing.assert_allclose(out.rms.var[i], single.rms.var, rtol=1e-6)
    scaled = jax.vmap(scale_rewards)(out, rewards)
    assert scaled.shape == rewards.shape
