"""Algorithms as compositions: registry, MDPO's KL schedule, learning tests for SPO and MDPO."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prpo import algorithms
from prpo.config import ConfigError, Hyperparams
from prpo.experiment import run_experiment
from prpo.train import make_train
from prpo.update import kl_coefficient


def test_registry_compositions():
    spo = algorithms.get("spo").config("CartPole-v1")
    assert spo.objective == "spo" and spo.update_epochs == 4 and spo.algo == "spo"
    deep = algorithms.get("spo").config("Pendulum-v1")
    assert deep.actor_hidden == (256, 256, 128, 128, 64, 64)  # SPO's 7-layer policy
    mdpo = algorithms.get("mdpo").config("CartPole-v1")
    assert (mdpo.objective, mdpo.kl_schedule, mdpo.adv_norm, mdpo.num_minibatches) == ("pg", "mdpo", "batch", 1)
    # user overrides win over the algorithm's
    assert algorithms.get("mdpo").config("CartPole-v1", update_epochs=3).update_epochs == 3
    with pytest.raises(ConfigError, match="unknown algorithm"):
        algorithms.get("trpo")


@pytest.mark.parametrize("schedule", ["none", "constant", "mdpo"])
def test_kl_coefficient_schedule(schedule):
    class C:
        kl_schedule = schedule

    hp = Hyperparams(kl_coef=0.5)
    K = 10
    for k in range(1, K + 1):  # iteration k = 1..K, progress = (k − 1)/K, t_k = 1 − (k − 1)/K
        coef = float(kl_coefficient(C, hp, (k - 1) / K))
        expected = {"none": 0.0, "constant": 0.5, "mdpo": 0.5 / (1 - (k - 1) / K)}[schedule]
        assert coef == pytest.approx(expected, rel=1e-6)
    if schedule == "mdpo":  # 1/t_k grows K-fold by the last iteration
        assert float(kl_coefficient(C, hp, (K - 1) / K)) == pytest.approx(0.5 * K)


def test_bpo_network_has_a_median_head_trained_by_the_median_loss():
    cfg = algorithms.get("bpo").config("CartPole-v1", num_envs=4, num_steps=8, total_timesteps=64)
    trainer = make_train(cfg)
    state = trainer.init(jax.random.key(0), cfg.hp)
    assert "median_head" in state.params["params"]
    _, extras = trainer.policy.log_ratio(state.params, state.obs, jnp.zeros(4, jnp.int32), {"log_prob": jnp.zeros(4)}, None)
    assert extras["median"].shape == (4,)
    # the BPO surrogate: value |r − ρ*|·|R − V| + c_u·g(R − u), by hand at r = 1
    from prpo.algorithms.bpo import bpo_surrogate

    hp = cfg.hp.replace(bpo_temp=1.0, bpo_eps_low=0.2, bpo_eps_high=0.3, bpo_median_coef=0.5)
    R, V, u = jnp.array([2.0, -1.0]), jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0])
    loss, _ = bpo_surrogate(jnp.zeros(2), None, hp, {"returns": R, "value": V, "median": u})
    sig = 1 / (1 + np.exp(-np.array([1.0, -1.0])))
    rho = 1 - 0.2 + 0.5 * sig
    g = np.log1p(np.exp([1.0, -1.0])) - 0.5 * np.array([1.0, -1.0])
    np.testing.assert_allclose(loss, np.abs(1 - rho) * np.abs([1.5, -1.5]) + 0.5 * g, rtol=1e-5)


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_mdpo_kl_term_is_zero_at_the_start_of_each_iteration(env):
    cfg = algorithms.get("mdpo").config(env, num_envs=4, num_steps=8, total_timesteps=64)
    trainer = make_train(cfg)
    state = trainer.init(jax.random.key(0), cfg.hp)
    policy = trainer.policy
    action, aux = policy.act(state.params, state.obs, jax.random.key(1))
    assert "dist" in aux  # the rollout policy π_k is stored for the KL

    def kl_mean(params):
        return policy.log_ratio(params, state.obs, action, aux, None)[1]["kl"].mean()

    assert float(kl_mean(state.params)) == pytest.approx(0.0, abs=1e-6)
    grads = jax.grad(kl_mean)(state.params)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) < 1e-5
    # after moving the parameters, the KL is positive
    moved = jax.tree.map(lambda p, g: p + 0.5 * jax.random.normal(jax.random.key(2), p.shape), state.params, grads)
    assert float(kl_mean(moved)) > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["spo", "mdpo", "bpo"])
def test_algorithm_solves_cartpole(algo):
    """CartPole in 5e5 steps (the SPO, MDPO and BPO papers solve it).

    Spread measured over 32 seeds (benchmarks/learning_spread.py, H200): SPO and MDPO end at 500
    in all 32, so their test keeps 4 seeds and a mean ≥ 475. BPO dips late in some seeds: 10 of 64
    runs (two measurements) ended between 122 and 468, the rest at 500 — a 4-seed mean ≥ 475 would
    fail with probability 0.5, on any host. Its test takes 8 seeds and asserts a median ≥ 475 and a
    mean ≥ 350: over all 8-subsets of the 64 measured runs that fails with probability < 0.001,
    and a broken BPO (a wrong sign scores ≈ 22, a random policy ≈ 22) fails it.
    """
    cfg = algorithms.get(algo).config("CartPole-v1")
    result = run_experiment(cfg, seeds=8 if algo == "bpo" else 4, progress=False)
    final = np.asarray(result.summary["final_returns"])
    if algo == "bpo":
        assert np.median(final) >= 475 and final.mean() >= 350, final
    else:
        assert final.mean() >= 475, final
    if algo == "spo":  # SPO keeps the ratio near 1: its mean deviation stays below the PPO clip width
        assert np.nanmax(result.metrics["ratio_dev_mean"]) < 0.2


def test_ppo_ewma_with_zero_decay_is_ppo():
    """β = 0: the proximal policy is the behaviour policy, so the decoupled objective is PPO-clip."""
    base = algorithms.get("ppo").config("CartPole-v1", num_envs=4, num_steps=16, total_timesteps=4 * 16 * 3, num_minibatches=2)
    ewma = algorithms.get("ppo_ewma").config("CartPole-v1", num_envs=4, num_steps=16, total_timesteps=4 * 16 * 3,
                                             num_minibatches=2, ewma_decay=0.0)
    s_ppo, _ = jax.jit(make_train(base))(jax.random.key(0))
    s_ewma, _ = jax.jit(make_train(ewma))(jax.random.key(0))
    for x, y in zip(jax.tree.leaves(s_ppo.params), jax.tree.leaves(s_ewma.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    # with β > 0 the proximal policy lags behind: after one update π_prox = β·θ_0 + (1 − β)·θ_1
    lagging = ewma.replace(hp=ewma.hp.replace(ewma_decay=0.9))
    trainer = make_train(lagging)
    s0 = trainer.init(jax.random.key(0), lagging.hp)
    s1, _ = jax.jit(trainer.update)(s0, lagging.hp)
    for p0, p1, prox in zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params), jax.tree.leaves(s1.algo_state["prox_params"])):
        np.testing.assert_allclose(np.asarray(prox), 0.9 * np.asarray(p0) + 0.1 * np.asarray(p1), rtol=1e-5, atol=1e-7)
