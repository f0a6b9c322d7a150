"""A2C is a special case of PPO: exactness against a hand-written A2C."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prpo import algorithms
from prpo.experiment import run_experiment
from prpo.train import make_train


def _a2c_reference_update(trainer, cfg, params, opt_state, env_state, obs, key):
    """One textbook A2C update, written independently of prpo's update step."""
    hp, policy, env = cfg.hp, trainer.policy, trainer.env
    key, k_roll, _ = jax.random.split(key, 3)
    obs_l, act_l, rew_l, term_l, trunc_l, boot_l = [], [], [], [], [], []
    for step_key in jax.random.split(k_roll, cfg.num_steps):  # same key schedule as the rollout
        k_act, k_env = jax.random.split(step_key)
        action, _ = policy.act(params, obs, k_act)
        env_state, ts = env.step(env_state, action, k_env)
        obs_l.append(obs), act_l.append(action), rew_l.append(np.asarray(ts.reward))
        term_l.append(np.asarray(ts.terminated)), trunc_l.append(np.asarray(ts.truncated))
        boot_l.append(np.asarray(policy.value(params, ts.final_obs)))
        obs = ts.obs
    # n-step returns (λ = 1) by a plain loop: bootstrap at the rollout end and at truncations
    values = [np.asarray(policy.value(params, o)) for o in obs_l]
    ret = np.asarray(policy.value(params, obs))
    returns = [None] * cfg.num_steps
    for t in reversed(range(cfg.num_steps)):
        ret = np.where(trunc_l[t], boot_l[t], ret)
        ret = rew_l[t] + hp.gamma * (1.0 - term_l[t]) * ret
        returns[t] = ret
    o = jnp.concatenate(obs_l)
    a = jnp.concatenate(act_l)
    R = jnp.asarray(np.concatenate(returns))
    A = R - jnp.asarray(np.concatenate(values))

    def loss(p):
        dist, v = policy.distribution(p, o)
        return (-(A * dist.log_prob(a)).mean() + hp.vf_coef * 0.5 * ((v - R) ** 2).mean()
                - hp.ent_coef * dist.entropy().mean())

    tx = optax.chain(optax.clip_by_global_norm(hp.max_grad_norm),
                     optax.rmsprop(hp.lr, decay=hp.rms_decay, eps=hp.adam_eps, eps_in_sqrt=False))
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, env_state, obs, key


def test_ppo_with_a2c_settings_equals_a2c():
    # an entropy bonus on (the preset has none) so that the reference checks that term too
    cfg = algorithms.get("a2c").config("CartPole-v1", num_envs=4, total_timesteps=4 * 5 * 6, anneal_lr=False, ent_coef=0.01)
    assert (cfg.update_epochs, cfg.num_minibatches, cfg.objective, cfg.optimizer) == (1, 1, "pg", "rmsprop")
    trainer = make_train(cfg)
    state = trainer.init(jax.random.key(0), cfg.hp)
    tx = optax.chain(optax.clip_by_global_norm(cfg.hp.max_grad_norm),
                     optax.rmsprop(cfg.hp.lr, decay=cfg.hp.rms_decay, eps=cfg.hp.adam_eps, eps_in_sqrt=False))
    ref = (state.params, tx.init(state.params), state.env_state, state.obs, state.key)
    update = jax.jit(lambda s: trainer.update(s, cfg.hp))
    for _ in range(6):
        state, metrics = update(state)
        ref = _a2c_reference_update(trainer, cfg, *ref)
        # the single PPO step is taken at r ≡ 1: nothing is clipped, the KL is zero
        assert float(metrics["approx_kl"]) == pytest.approx(0.0, abs=1e-7)
    for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref[0])):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6)
    # and they moved: the comparison is not trivially between initial parameters
    init = trainer.init(jax.random.key(0), cfg.hp).params
    assert not np.allclose(init["params"]["actor"]["Dense_0"]["kernel"], state.params["params"]["actor"]["Dense_0"]["kernel"])


@pytest.mark.slow
def test_a2c_solves_cartpole():
    """A2C needs a longer budget than PPO on CartPole: 1e6 steps with 16 envs × 5 steps.

    Spread measured over 32 seeds (benchmarks/learning_spread.py, H200): with the preset (no
    entropy bonus) all 32 final returns are 500, so a 4-seed mean below 475 would take a seed
    collapsing, which none of 32 did. With c_e = 0.01 (the preset before) 4 of 32 seeds ended at
    73–460 and a 4-seed mean fell below 475 with probability 0.25 — the host-dependent failure.
    """
    cfg = algorithms.get("a2c").config("CartPole-v1", num_envs=16, total_timesteps=1_000_000)
    result = run_experiment(cfg, seeds=4, progress=False)
    final = np.asarray(result.summary["final_returns"])
    assert final.mean() >= 475, final
