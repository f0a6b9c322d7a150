"""Scale without overflow or out-of-memory: 2^24 envs, 10^12 env steps, 2^31 optimizer steps.

Everything here is cheap: abstract evaluation (``jax.eval_shape`` / ``.lower``) of the huge
configs, and the counter-dependent pieces run at extreme counter values on tiny inputs, each
compared with a float64 numpy reference. No huge config ever runs.
"""

import types
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prpo
from prpo import algorithms, memory, normalization as norm
from prpo.config import ConfigError
from prpo.qlearning import linear_epsilon
from prpo.train import make_train
from prpo.update import kl_coefficient, lr_fraction, make_optimizer, schedule_fractions

I32 = np.iinfo(np.int32).max  # 2^31 − 1


def _cfg(**kw):
    return prpo.preset("ppo-cartpole", **kw)


def _abstract_train(cfg, updates=None):
    trainer = make_train(cfg)
    state = jax.eval_shape(trainer.init, jax.random.key(0), cfg.hp)
    n = cfg.num_updates if updates is None else updates
    return trainer, state, jax.eval_shape(lambda s, h: trainer.run(s, h, n), state, cfg.hp)


def _check_counter_dtypes(state, metrics, n):
    assert state.update.dtype == jnp.int32 and state.nonfinite_update.dtype == jnp.int32
    assert metrics["update"].dtype == jnp.int32 and metrics["update"].shape == (n,)
    assert metrics["lr"].dtype == jnp.float32 and metrics["episodes"].dtype == jnp.float32
    rms = state.obs_rms
    assert rms.count.dtype == rms.count_lo.dtype == rms.mean_lo.dtype == jnp.float32


# -- abstract traces at the extremes ---------------------------------------------------------------

def test_abstract_trace_at_2_24_envs():
    cfg = _cfg(num_envs=2**24, num_steps=16, total_timesteps=2**24 * 16 * 3, num_minibatches=64,
               normalize_obs=True, normalize_reward=True)
    trainer, state, (final, metrics) = _abstract_train(cfg)
    assert state.obs.shape == (2**24, 4) and state.reward_scaler.ret.shape == (2**24,)
    _check_counter_dtypes(final, metrics, 3)
    jax.jit(trainer.update).lower(state, cfg.hp)  # lowers (no compile)


@pytest.mark.parametrize("num_envs, num_steps", [(1024, 16), (1, 466)])
def test_abstract_trace_at_10_12_env_steps(num_envs, num_steps):
    """10^12 env steps: 6·10^7 updates of 16k samples, and 2.1·10^9 (just below 2^31) of 466."""
    cfg = _cfg(num_envs=num_envs, num_steps=num_steps, total_timesteps=10**12, num_minibatches=2)
    assert cfg.num_updates == 10**12 // (num_envs * num_steps) and cfg.num_updates * cfg.batch_size > 0.99e12
    trainer, state, (final, metrics) = _abstract_train(cfg)
    _check_counter_dtypes(final, metrics, cfg.num_updates)
    jax.jit(lambda s, h: trainer.run(s, h, cfg.num_updates)).lower(state, cfg.hp)


def test_data_parallel_indices_past_2_31_global_samples():
    """4 devices × 2^24 envs × 64 steps = 2^32 samples per update (2^30 per device): the per-device
    functions trace, with the global env ids and stratified group ids in range (vmap as the mesh axis)."""
    cfg = _cfg(num_envs=2**26, num_steps=64, total_timesteps=2**33, num_minibatches=4, shuffle="stratified",
               normalize_obs=True, devices=4)
    local = make_train(cfg, axis_name="data", num_shards=4)
    state = jax.eval_shape(jax.vmap(local.init, in_axes=(None, None), axis_name="data", axis_size=4),
                           jax.random.key(0), cfg.hp)
    final, metrics = jax.eval_shape(jax.vmap(local.update, in_axes=(0, None), axis_name="data"), state, cfg.hp)
    assert state.obs.shape == (4, 2**24, 4) and final.update.dtype == jnp.int32 and metrics["loss"].shape == (4,)


def test_sharded_normaliser_counts_a_global_batch_past_2_31():
    """8 shards × 2^29 samples: the global count is 2^32 (a traced int32 product would wrap to 0)."""
    def merge(x):
        batch = jnp.broadcast_to(x, (2**15, 2**14))  # 2^29 samples per shard, never materialised
        return norm.rms_update(norm.rms_init(()), batch, axis=(0, 1), axis_name="d")

    out = jax.jit(jax.vmap(merge, axis_name="d"))(jnp.arange(8.0))
    np.testing.assert_allclose(np.asarray(out.count, np.float64) + np.asarray(out.count_lo, np.float64), 2**32 + 1e-4,
                               rtol=1e-12)
    np.testing.assert_allclose(out.mean, 3.5, rtol=1e-6)
    np.testing.assert_allclose(out.var, np.var(np.arange(8.0)), rtol=1e-5)


# -- what does not fit in 32-bit indices is refused before tracing --------------------------------

def test_batch_past_2_31_samples_is_refused_naming_the_sizes():
    with pytest.raises(ConfigError, match=r"num_envs × num_steps = 100000000 × 128 = 12800000000 .*2147483647"):
        make_train(_cfg(num_envs=100_000_000, total_timesteps=10**11))  # was an OverflowError while tracing
    with pytest.raises(ConfigError, match="num_envs ≤ 16777215 at num_steps=128"):
        make_train(_cfg(num_envs=2**24, num_steps=128, total_timesteps=2**31))
    # the largest batch that fits traces (2^31 − 128 samples, 5 minibatches)
    cfg = _cfg(num_envs=2**24 - 1, num_steps=128, total_timesteps=(2**24 - 1) * 128, num_minibatches=5)
    trainer = make_train(cfg)
    state = jax.eval_shape(trainer.init, jax.random.key(0), cfg.hp)
    for shuffle in ("samples", "envs"):
        t = make_train(cfg.replace(shuffle=shuffle))
        assert jax.eval_shape(t.update, state, cfg.hp)[0].update.dtype == jnp.int32
    # per device: 8 devices × 2^28 samples is fine, the stratified group ids must fit too
    big = _cfg(num_envs=2**26, num_steps=32, total_timesteps=2**31 * 2, num_minibatches=1, devices=8)
    memory.check_sizes(big)  # cfg.devices
    with pytest.raises(ConfigError, match="= 2147483648 samples per update is more than"):
        memory.check_sizes(big, devices=1)
    with pytest.raises(ConfigError, match="shuffle='stratified'.*groups"):
        memory.check_sizes(big.replace(shuffle="stratified"))
    memory.check_sizes(big.replace(shuffle="stratified", num_minibatches=2))


def test_more_than_2_31_updates_is_refused():
    with pytest.raises(ConfigError, match=r"2145922746|updates is more than 2\^31 − 1"):
        make_train(_cfg(num_envs=1, num_steps=465, total_timesteps=10**12, num_minibatches=1))
    make_train(_cfg(num_envs=1, num_steps=466, total_timesteps=10**12, num_minibatches=1))  # 2145922746 updates


# -- the counter-dependent pieces at extreme counter values, against float64 ----------------------

K_BIG = [10**12 // 16384, I32]  # updates of a 10^12-step run of 16k-sample batches; the most allowed


@pytest.mark.parametrize("K", K_BIG)
def test_schedule_fractions_at_extreme_counters(K):
    hp = prpo.Hyperparams(kl_coef=0.5)
    cfg = types.SimpleNamespace(kl_schedule="mdpo", anneal_lr=True)
    for u in (0, 1, K // 3, K // 2, K - 2, K - 1):
        progress, remaining = jax.jit(schedule_fractions, static_argnums=1)(jnp.int32(u), K)
        np.testing.assert_allclose(float(progress), u / K, rtol=3e-7, atol=0)
        np.testing.assert_allclose(float(remaining), (K - u) / K, rtol=3e-7)  # 1 − progress rounds to 0 at the end
        coef = float(jax.jit(lambda p, r: kl_coefficient(cfg, hp, p, r))(progress, remaining))
        np.testing.assert_allclose(coef, 0.5 * K / (K - u), rtol=1e-6)
        np.testing.assert_allclose(float(lr_fraction(cfg, jnp.int32(u), K)), 1 - u / K, rtol=0, atol=2e-7)


def test_epsilon_schedule_at_extreme_counters():
    K = I32
    for u in (0, 1, 10**6, int(0.05 * K), int(0.1 * K) - 1, int(0.1 * K), K - 1):
        eps = float(jax.jit(linear_epsilon, static_argnums=1)(jnp.int32(u), K, 1.0, 0.05, 0.1))
        frac = min(u / (0.1 * K), 1.0)
        np.testing.assert_allclose(eps, 1.0 + frac * (0.05 - 1.0), rtol=0, atol=1e-6)


def test_lr_annealing_follows_the_update_counter_past_2_31_optimizer_steps():
    """6·10^7 updates × 64 minibatch steps = 3.9·10^9 optimizer steps: optax's int32 count has
    saturated at 2^31 − 1, and the learning rate must still be ``lr·(1 − k/K)`` of the update."""
    cfg = _cfg(num_envs=1024, num_steps=16, total_timesteps=10**12, update_epochs=4, num_minibatches=16)
    K = cfg.num_updates
    params = {"w": jnp.ones((3,))}
    grads = {"w": jnp.asarray([0.3, -1.0, 2.0])}
    for u in (K // 10, K // 2, 2 * K // 3):  # (near the end the float32 1 − u/K is off by up to 2e-7 of lr)
        tx = make_optimizer(cfg, cfg.hp, K, jnp.int32(u))
        saturated = jax.tree.map(lambda x: jnp.full_like(x, I32) if x.dtype == jnp.int32 else x, tx.init(params))
        got, _ = tx.update(grads, saturated, params)
        ref = cfg.replace(anneal_lr=False, lr=cfg.hp.lr * (K - u) / K)  # the rate in float64
        ref_tx = make_optimizer(ref, ref.hp, K)
        want, _ = ref_tx.update(grads, saturated, params)
        np.testing.assert_allclose(got["w"], want["w"], rtol=2e-6)


def _at_update(trainer, cfg, u):
    """The train state at update ``u`` (a fresh one with the counter set), optax's counts saturated."""
    state = trainer.init(jax.random.key(0), cfg.hp)
    opt_state = jax.tree.map(lambda x: jnp.full_like(x, I32) if x.dtype == jnp.int32 else x, state.opt_state)
    return state.replace(update=jnp.int32(u), opt_state=opt_state)


def test_train_update_anneals_lr_by_the_update_counter():
    """The engine passes the update counter: at update K/2 of a 2^31 − 1-update run the step equals
    that of a constant rate lr/2 (with optax's count, saturated, it would be lr·(1 − 1/8))."""
    base = dict(num_envs=4, num_steps=8, total_timesteps=32 * I32, update_epochs=1, num_minibatches=8, actor_hidden=(8,))
    cfg = _cfg(**base)
    assert cfg.num_updates == I32
    annealed = make_train(cfg)
    state = _at_update(annealed, cfg, I32 // 2 + 1)  # 1 − u/K = 0.5 up to 2^-31
    new, metrics = jax.jit(annealed.update)(state, cfg.hp)
    half = _cfg(**base, anneal_lr=False, lr=cfg.hp.lr / 2)
    ref, ref_metrics = jax.jit(make_train(half).update)(state, half.hp)
    np.testing.assert_allclose(float(metrics["lr"]), cfg.hp.lr / 2, rtol=1e-6)
    for a, b, p in zip(jax.tree.leaves(new.params), jax.tree.leaves(ref.params), jax.tree.leaves(state.params)):
        np.testing.assert_allclose(np.asarray(a) - np.asarray(p), np.asarray(b) - np.asarray(p), rtol=1e-4, atol=1e-9)
    assert int(new.update) == I32 // 2 + 2 and int(metrics["update"]) == I32 // 2 + 2


def test_mirror_descent_kl_is_finite_at_the_last_of_2_31_updates():
    """MDPO's ``kl_coef / t_k`` at k = K: ``1 − (K − 1)/K`` is 0 in float32 (inf → NaN loss); the
    remaining fraction from the integer counter is 1/K."""
    cfg = algorithms.get("mdpo").config("CartPole-v1", num_envs=4, num_steps=8, total_timesteps=32 * I32,
                                        update_epochs=1, actor_hidden=(8,))
    assert cfg.kl_schedule == "mdpo" and cfg.num_updates == I32
    trainer = make_train(cfg)
    new, metrics = jax.jit(trainer.update)(_at_update(trainer, cfg, I32 - 1), cfg.hp)
    assert np.isfinite(float(metrics["loss"])) and int(new.nonfinite_update) == -1


# -- the normaliser at huge counts, against float64 ------------------------------------------------

def _ref_merge(mean, var, count, b_mean, b_var, b_count):
    tot = count + b_count
    w = b_count / tot
    delta = b_mean - mean
    return mean + delta * w, var * (1 - w) + b_var * w + delta**2 * (1 - w) * w, tot


def test_normaliser_count_and_moments_after_10_12_samples():
    """Count 10^12, then 1000 batches of 512 (each below half the float32 spacing of the count):
    the count, and moments that move by less than their float32 spacing per batch."""
    c0 = float(np.float32(1e12))
    rms = norm.rms_init(2).replace(count=jnp.float32(c0))
    batch = jnp.stack([jnp.full(512, 1000.0), jnp.tile(jnp.asarray([-3.0, 5.0]), 256)], axis=1)  # means 1000, 1
    b_mean, b_var = np.asarray(batch, np.float64).mean(0), np.asarray(batch, np.float64).var(0)
    out, _ = jax.jit(lambda r: jax.lax.scan(lambda r, _: (norm.rms_update(r, batch), None), r, None, length=1000))(rms)
    mean, var, count = np.zeros(2), np.ones(2), c0
    for _ in range(1000):
        mean, var, count = _ref_merge(mean, var, count, b_mean, b_var, 512)
    assert float(out.count) + float(out.count_lo) == count == c0 + 512_000  # a float32 count stays at c0
    assert np.all(np.abs(np.asarray(out.mean) - mean) <= 2e-6 * (np.abs(mean) + np.sqrt(var))), (out.mean, mean)
    np.testing.assert_allclose(out.var, var, rtol=2e-6)  # column 1: 1 + 8.2e-6, lost by a float32 sum


def test_normaliser_keeps_averaging_when_float32_would_stall():
    """Count 2^26, then 2^19 batches of 2 samples: a float32 count no longer grows (2 is below half
    its spacing of 8), so a float32-only merge weighs every batch 1/2^25 — a moving average,
    0.8% off the true mean after these 2^20 samples. Scale-free: 10^12 samples in batches of
    30000 behave the same."""
    n = 2**19
    batch = jnp.asarray([0.0, 2.0])  # mean 1, variance 1
    rms = norm.rms_init(()).replace(count=jnp.float32(2**26))
    out, _ = jax.jit(lambda r: jax.lax.scan(lambda r, _: (norm.rms_update(r, batch), None), r, None, length=n))(rms)
    mean, var, count = 0.0, 1.0, float(2**26)
    for _ in range(n):
        mean, var, count = _ref_merge(mean, var, count, 1.0, 1.0, 2.0)
    assert float(out.count) + float(out.count_lo) == count
    np.testing.assert_allclose(float(out.mean), mean, rtol=0, atol=4e-6)  # a float32-only merge: 1.2e-4 off
    np.testing.assert_allclose(float(out.var), var, rtol=4e-6)


def test_normaliser_unchanged_for_ordinary_counts():
    """Below the sizes where float32 drifts, the merge is the plain float32 one (low parts ≈ 0)."""
    rng = np.random.default_rng(0)
    rms = norm.rms_init((3,))
    data = rng.normal(2.0, 3.0, size=(50, 64, 3)).astype(np.float32)
    for b in data:
        rms = norm.rms_update(rms, b)
    flat = data.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(rms.mean, (flat.sum(0)) / (len(flat) + 1e-4), rtol=1e-5)
    np.testing.assert_allclose(float(rms.count), len(flat) + 1e-4, rtol=1e-7)
    assert np.all(np.abs(rms.mean_lo) < 1e-5 * np.abs(rms.mean)) and np.all(np.abs(rms.var_lo) < 1e-5 * rms.var)


# -- device memory: refused from XLA's compiled estimate -------------------------------------------

class _Compiled:
    def __init__(self, temp, arg=0, out=0):
        self.stats = types.SimpleNamespace(temp_size_in_bytes=temp, argument_size_in_bytes=arg, output_size_in_bytes=out,
                                           alias_size_in_bytes=0, generated_code_size_in_bytes=1000)

    def memory_analysis(self):
        return self.stats


class _Device:
    device_kind = "FakeGPU 16GB"
    platform = "gpu"

    def memory_stats(self):
        return {"bytes_limit": 16 * 10**9}


def test_check_fits_refuses_what_does_not_fit_naming_the_sizes():
    big = _Compiled(temp=19 * 10**9, arg=5 * 10**8, out=5 * 10**8 - 1000)  # 20.0 GB
    with pytest.raises(ConfigError) as e:
        memory.check_fits(big, what="this run", num_envs=1_000_000, device=_Device())
    msg = str(e.value)
    assert "\n" not in msg
    assert "this run needs 20.0 GB of device memory (XLA's compiled estimate) but FakeGPU 16GB has 16.0 GB" in msg
    assert "num_envs=1000000 does not fit, about 800000 would (estimated proportionally)" in msg
    # a + b·num_envs from a second compile at 10^5 envs: 1 GB fixed + 19 kB per env
    small = _Compiled(temp=29 * 10**8 - 1000)
    with pytest.raises(ConfigError, match=r"about 780000 would \(estimated by a \+ b·num_envs from two compiles\)"):
        memory.check_fits(big, num_envs=1_000_000, baseline=(100_000, small), device=_Device())
    assert memory.check_fits(small, num_envs=100_000, device=_Device()) == 29 * 10**8
    assert memory.check_fits(types.SimpleNamespace(memory_analysis=lambda: None), device=_Device()) is None


def test_check_fits_on_a_real_compile():
    compiled = jax.jit(lambda x: (x @ x.T).sum()).lower(jnp.ones((256, 128))).compile()
    need = memory.compiled_bytes(compiled)
    if need is None:  # pragma: no cover - backend without memory analysis
        pytest.skip("no memory analysis on this backend")
    assert need >= 256 * 128 * 4
    assert memory.check_fits(compiled, what="a matmul") == need  # fits this machine
    with pytest.raises(ConfigError, match=rf"a matmul needs 0.0 GB .* has 0.0 GB"):
        memory.check_fits(compiled, what="a matmul", limit_bytes=need - 1)
    limit, kind = memory.device_memory()
    assert limit is None or limit > 0 and kind


def test_estimate_from_a_trainer_compile_grows_with_num_envs():
    """The whole run's estimate (trainer.run compiled on abstract inputs: nothing allocated)."""
    def run_bytes(num_envs):
        cfg = _cfg(num_envs=num_envs, num_steps=8, total_timesteps=num_envs * 8 * 2, num_minibatches=2, actor_hidden=(8,))
        trainer = make_train(cfg)
        state = jax.eval_shape(trainer.init, jax.random.key(0), cfg.hp)
        return memory.estimate_bytes(partial(trainer.run, num_updates_to_run=1), state, cfg.hp)

    small, large = run_bytes(64), run_bytes(1024)
    if small is None:  # pragma: no cover
        pytest.skip("no memory analysis on this backend")
    assert large > small
    with pytest.raises(ConfigError, match=r"num_envs=1024 does not fit, about \d+ would"):
        memory.check_fits(large, num_envs=1024, baseline=(64, small), limit_bytes=(small + large) // 2)
