"""PQN: Q(λ) targets, ε schedule, ε-greedy, the Q-network, the targets the loop computes, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prpo
from prpo import algorithms
from prpo.advantages import lambda_returns
from prpo.config import ConfigError, preset
from prpo.experiment import run_experiment
from prpo.algorithms.pqn import make_td_loss
from prpo.qlearning import QNetwork, QPolicy, epsilon_greedy, linear_epsilon, make_q_network
from prpo.rollout import collect
from prpo.train import make_train
from prpo.update import Batch


def _q_lambda_loop(r, next_q, term, trunc, gamma, lam):
    """Plain Python Peng's Q(λ): G_t = r_t + γ(1−term_t)[(1−λ) max q'_t + λ G_{t+1}], cut at done."""
    T, N = r.shape
    v = next_q.max(-1)
    G = np.zeros((T, N))
    for n in range(N):
        for t in reversed(range(T)):
            done = term[t, n] or trunc[t, n]
            if done or t == T - 1:
                boot = v[t, n]
            else:
                boot = (1 - lam) * v[t, n] + lam * G[t + 1, n]
            G[t, n] = r[t, n] + gamma * (1.0 - term[t, n]) * boot
    return G


def _episode_data(T=9, N=3, A=4, seed=0):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(T, N)).astype(np.float32)
    next_q = rng.normal(size=(T, N, A)).astype(np.float32)
    term = np.zeros((T, N), bool)
    trunc = np.zeros((T, N), bool)
    term[2, 0] = term[6, 1] = True  # terminations inside the rollout
    trunc[4, 0] = trunc[3, 2] = True  # truncations inside the rollout
    trunc[T - 1, 1] = True  # and at its last step
    return r, next_q, term, trunc


def q_lambda_targets(rewards, next_q, terminated, truncated, gamma, lam):
    """Peng's Q(λ) targets of full next-state Q arrays: λ-returns of max_a q' (what PQN feeds the loop)."""
    return lambda_returns(rewards, next_q.max(axis=-1), terminated, truncated, gamma, lam)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("lam", [0.0, 0.65, 1.0])
def test_q_lambda_targets_match_python_loop(jit, lam):
    r, next_q, term, trunc = _episode_data()
    f = jax.jit(q_lambda_targets) if jit else q_lambda_targets
    got = f(r, next_q, term, trunc, 0.9, lam)
    np.testing.assert_allclose(got, _q_lambda_loop(r, next_q, term, trunc, 0.9, lam), rtol=1e-5, atol=1e-5)


def test_q_lambda_zero_is_one_step_td():
    r, next_q, term, trunc = _episode_data(seed=1)
    got = q_lambda_targets(r, next_q, term, trunc, 0.99, 0.0)
    np.testing.assert_allclose(got, r + 0.99 * (1 - term) * next_q.max(-1), rtol=1e-6, atol=1e-6)


def test_q_lambda_one_is_monte_carlo_with_bootstrap():
    """λ = 1: discounted sum of rewards to the episode end; bootstrapped with max q' only where the
    episode was truncated or the rollout ended, never at a termination."""
    r, next_q, term, trunc = _episode_data(seed=2)
    gamma = 0.9
    got = np.asarray(q_lambda_targets(r, next_q, term, trunc, gamma, 1.0))
    T, N = r.shape
    for n in range(N):
        for t in range(T):
            g, disc, k = 0.0, 1.0, t
            while True:
                g += disc * r[k, n]
                if term[k, n]:
                    break
                if trunc[k, n] or k == T - 1:
                    g += disc * gamma * next_q[k, n].max()
                    break
                disc *= gamma
                k += 1
            np.testing.assert_allclose(got[t, n], g, rtol=1e-5, atol=1e-5)


def test_linear_epsilon_schedule():
    # ε 1 → 0.2 over 20% of 100 updates (purejaxql CartPole), then constant
    eps = [float(linear_epsilon(u, 100, 1.0, 0.2, 0.2)) for u in (0, 5, 10, 20, 21, 99)]
    np.testing.assert_allclose(eps, [1.0, 0.8, 0.6, 0.2, 0.2, 0.2], rtol=1e-6)
    # traced under jit with traced hyperparameters
    f = jax.jit(lambda u, a, b, c: linear_epsilon(u, 100, a, b, c))
    np.testing.assert_allclose(f(5, 1.0, 0.05, 0.1), 1.0 - 0.95 * 0.5, rtol=1e-6)


def test_epsilon_greedy_frequencies():
    q = jnp.tile(jnp.asarray([0.0, 3.0, 1.0, 2.0]), (20000, 1))
    key = jax.random.key(0)
    np.testing.assert_array_equal(epsilon_greedy(key, q, 0.0), 1)
    for eps in (1.0, 0.3):
        a = np.asarray(jax.jit(epsilon_greedy)(key, q, eps))
        freq = np.bincount(a, minlength=4) / a.size
        expect = np.full(4, eps / 4)
        expect[1] += 1 - eps
        np.testing.assert_allclose(freq, expect, atol=0.015)


def test_q_network_layer_norm_before_every_activation():
    mlp = make_q_network(3, (4,), hidden=(32, 16))
    p = mlp.init(jax.random.key(0), jnp.zeros((5, 4)))["params"]
    assert sorted(k for k in p if k.startswith("LayerNorm")) == ["LayerNorm_0", "LayerNorm_1"]
    assert mlp.apply({"params": p}, jnp.zeros((5, 4))).shape == (5, 3)
    conv = make_q_network(6, (10, 10, 4), hidden=(128,))
    assert conv.torso == "conv"
    params = conv.init(jax.random.key(0), jnp.zeros((10, 10, 4)))
    pc = params["params"]
    assert pc["Conv_0"]["kernel"].shape == (3, 3, 4, 16)
    assert pc["Dense_0"]["kernel"].shape == (8 * 8 * 16, 128)
    assert len([k for k in pc if k.startswith("LayerNorm")]) == 2
    # batched [T, N, H, W, C] inputs give [T, N, A]
    x = jax.random.uniform(jax.random.key(1), (3, 2, 10, 10, 4))
    out = conv.apply(params, x)
    assert out.shape == (3, 2, 6)
    np.testing.assert_allclose(out[1, 0], conv.apply(params, x[1, 0]), rtol=1e-5, atol=1e-5)
    # LayerNorm output of a hidden layer is normalised
    no_ln = QNetwork(3, hidden=(32,), layer_norm=False)
    assert not any(k.startswith("LayerNorm") for k in no_ln.init(jax.random.key(0), jnp.zeros((1, 4)))["params"])


def test_td_loss_value_and_gradient():
    net = QNetwork(3, hidden=(8,))
    policy = QPolicy(net)
    obs = jax.random.normal(jax.random.key(0), (6, 4))
    params = policy.init(jax.random.key(1), obs)
    action = jnp.asarray([0, 1, 2, 2, 1, 0])
    targets = jax.random.normal(jax.random.key(2), (6,))
    mb = Batch(obs=obs, action=action, aux={}, advantages=jnp.zeros(6), returns=targets)
    loss_fn = make_td_loss(None, policy)
    loss, metrics = loss_fn(params, mb, None, None)
    q = np.asarray(net.apply(params, obs))
    q_taken = q[np.arange(6), np.asarray(action)]
    np.testing.assert_allclose(loss, 0.5 * np.mean((q_taken - np.asarray(targets)) ** 2), rtol=1e-5)
    # d loss / d Q(s, a) = (Q − G)/B on the taken action only: check through the head bias
    g = jax.grad(lambda p: loss_fn(p, mb, None, None)[0])(params)
    expect = np.zeros(3)
    np.add.at(expect, np.asarray(action), (q_taken - np.asarray(targets)) / 6)
    np.testing.assert_allclose(g["params"]["q_head"]["bias"], expect, rtol=1e-4, atol=1e-6)
    assert policy.value(params, obs).shape == (6,)
    np.testing.assert_allclose(policy.value(params, obs), q.max(-1), rtol=1e-6)


TINY_PQN = dict(num_envs=8, num_steps=32, total_timesteps=8 * 32 * 3, num_minibatches=4, update_epochs=2, eval_every=0)


def test_loop_targets_are_q_lambda_of_rollout_time_q():
    """One update of the real loop: its mean target equals Q(λ) computed here from the replayed
    rollout, with rewards scaled, max Q(final obs) at truncation and no bootstrap at termination."""
    cfg = algorithms.get("pqn").config("CartPole-v1", **TINY_PQN, episode_length=12, reward_scale=0.5, gae_lambda=0.7)
    trainer = make_train(cfg)
    state = trainer.init(jax.random.key(0), cfg.hp)
    _, metrics = jax.jit(trainer.update)(state, cfg.hp)
    # replay the rollout with the loop's key split and ε of update 0 (= eps_start)
    _, k_roll, _ = jax.random.split(state.key, 3)
    behaviour = trainer.policy.behaviour(cfg.hp.eps_start)
    _, last_obs, traj, _ = collect(
        trainer.env, behaviour, state.params, state.env_state, state.obs, k_roll, cfg.num_steps, lambda o: o, lambda a: a
    )
    trunc, term = np.asarray(traj.truncated), np.asarray(traj.terminated)
    assert trunc.any() and term.any()
    q = lambda o: np.asarray(trainer.policy.q_values(state.params, o))  # noqa: E731
    q_obs = q(traj.obs)  # [T, N, A]
    next_q = np.concatenate([q_obs[1:], q(last_obs)[None]], axis=0)
    # at truncations the final observation's Q: recover it from the stored bootstrap value
    bv = np.asarray(traj.bootstrap_value)
    next_q = np.where(trunc[..., None], bv[..., None], next_q)
    G = _q_lambda_loop(0.5 * np.asarray(traj.reward), next_q, term, trunc, cfg.hp.gamma, 0.7)
    np.testing.assert_allclose(metrics["target_mean"], G.mean(), rtol=1e-4)
    # the stored bootstrap is max Q of the true final observation, not of the reset one
    t, n = np.argwhere(trunc)[0]
    if t + 1 < cfg.num_steps:
        assert not np.isclose(bv[t, n], q_obs[t + 1, n].max())
    assert float(metrics["epsilon"]) == 1.0


def test_pqn_vmapped_seed_equals_seed_alone():
    cfg = algorithms.get("pqn").config("CartPole-v1", **TINY_PQN)
    trainer = make_train(cfg)
    keys = jax.random.split(jax.random.key(4), 2)
    batched, _ = jax.jit(jax.vmap(trainer.train, in_axes=(0, None)))(keys, cfg.hp)
    alone, _ = jax.jit(trainer.train)(keys[1], cfg.hp)
    for a, b in zip(jax.tree.leaves(jax.tree.map(lambda x: x[1], batched.params)), jax.tree.leaves(alone.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_pqn_config_errors():
    with pytest.raises(ConfigError, match="pqn.*discrete.*Pendulum-v1.*continuous"):
        algorithms.get("pqn").config("Pendulum-v1")
    with pytest.raises(ConfigError, match="pqn.*discrete"):
        make_train(preset("pqn-cartpole", env="Pendulum-v1"))
    with pytest.raises(ConfigError, match="eps_decay"):
        preset("pqn-cartpole", eps_decay=0.0)
    with pytest.raises(ConfigError, match="optimizer"):
        preset("pqn-cartpole", optimizer="sgd")
    with pytest.raises(ConfigError, match="reward_scale"):
        algorithms.get("pqn").config("CartPole-v1", normalize_reward=True)


def test_pqn_presets_and_in_loop_evaluation():
    cfg = algorithms.get("pqn").config("Asterix-MinAtar")
    assert (cfg.num_envs, cfg.num_steps, cfg.update_epochs, cfg.num_minibatches) == (128, 32, 2, 32)
    assert cfg.hp.gae_lambda == 0.65 and cfg.hp.eps_finish == 0.05 and cfg.optimizer == "radam"
    cart = algorithms.get("pqn").config("CartPole-v1")
    assert cart.hp.reward_scale == 0.1 and cart.actor_hidden == (256, 256) and cart.hp.eps_finish == 0.2
    # a tiny MinAtar run with the conv torso and an evaluation every 2 updates
    tiny = cfg.replace(num_envs=4, num_steps=8, num_minibatches=2, total_timesteps=4 * 8 * 5, eval_every=2, eval_envs=2, episode_length=20)
    result = run_experiment(tiny, seeds=1, progress=False)
    ev = result.metrics["eval_return"][0, 0]
    assert np.isnan(ev[0]) and np.isfinite(ev[1]) and ev.shape == (5,)
    assert ev[2] == ev[1] and np.isfinite(ev[3]) and ev[4] == ev[3]  # carried between evaluations
    assert np.isfinite(result.summary["final_eval_return_mean"])
    assert "Conv_0" in result.state.params["params"]


@pytest.mark.slow
def test_pqn_solves_cartpole_greedy():
    """purejaxql reports a greedy test return of 500: 4 seeds, 5e5 steps, greedy ≥ 475.
    Spread over 32 seeds (benchmarks/learning_spread.py, H200): every greedy score is 500."""
    cfg = algorithms.get("pqn").config("CartPole-v1", eval_every=0)
    result = run_experiment(cfg, seeds=4, progress=False)
    trainer = make_train(cfg.replace(num_envs=16))
    scores = [
        float(prpo.evaluate(trainer, jax.tree.map(lambda x: x[0, s], result.state), jax.random.key(10 + s)))
        for s in range(4)
    ]
    assert np.mean(scores) >= 475, scores


def test_run_with_leftover_updates_matches_blocks_then_rest():
    """``Trainer.run`` over a count that is not a multiple of ``eval_every`` scans once (the
    evaluation under a ``lax.cond``, one copy of the update) instead of E-blocks then the rest:
    it must give what the block path followed by a plain scan of the rest gives."""
    cfg = algorithms.get("pqn").config("CartPole-v1", num_envs=4, num_steps=8, num_minibatches=2, update_epochs=1,
                                        total_timesteps=4 * 8 * 5, eval_every=2, eval_envs=2, actor_hidden=(8,))
    trainer = make_train(cfg)
    state = jax.jit(trainer.init)(jax.random.key(3), cfg.hp)
    run = jax.jit(trainer.run, static_argnums=2)
    one_state, one = run(state, cfg.hp, 5)  # one scan: evaluations after updates 2 and 4
    mid, head = run(state, cfg.hp, 4)  # two blocks of (2 updates + evaluation)
    two_state, tail = run(mid, cfg.hp, 1)  # fewer than eval_every: a plain scan, no evaluation
    two = jax.tree.map(lambda a, b: np.concatenate([a, b]), head, tail)
    assert sorted(one) == sorted(two)
    for k in one:
        np.testing.assert_allclose(np.asarray(one[k]), np.asarray(two[k]), rtol=1e-5, atol=1e-6, err_msg=k)
    ev = np.asarray(one["eval_return"])
    assert np.isnan(ev[0]) and np.isfinite(ev[1]) and ev[2] == ev[1] and np.isfinite(ev[3]) and ev[4] == ev[3]
    for a, b in zip(jax.tree.leaves(one_state), jax.tree.leaves(two_state)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_chunk_plan_folds_a_single_chunks_rest_into_it():
    """Chunks of several lengths used to compile a runner each: PQN CartPole's 244 updates (eval
    every 12) were chunks of 240 and 4; one chunk and its rest are now one chunk of 244,
    which Trainer.run scans once. Checkpoints still fall on chunk ends, and a resumed run at a
    chunk end continues with the chunks it would have run."""
    from prpo.experiment import _chunk_plan

    assert _chunk_plan(244, 20, 12, None) == [244]
    assert _chunk_plan(25, 20, 12, None) == [25]
    assert _chunk_plan(244, 20, 12, 120) == [120, 120, 4]  # checkpoints every 120: unchanged
    assert _chunk_plan(244, 20, 12, 120, start=120) == [120, 4]
    assert _chunk_plan(976, 20, 0, None) == [61] * 16  # equal chunks: unchanged
    assert _chunk_plan(50, 20, 0, None) == [2] * 25
    # no eval: a divisor within a factor 4 of num_updates / 20 gives equal chunks (one compile)
    assert _chunk_plan(244, 20, 0, None) == [4] * 61  # Pendulum's 244 updates (was 18 × 13 + 10)
    assert _chunk_plan(2441, 20, 0, None) == [123] * 19 + [104]  # a prime: equal chunks and a rest


@pytest.mark.parametrize("algo, eval_every, updates, chunks", [("ppo", 0, 23, 5), ("pqn", 2, 7, 2)])
def test_chunks_of_several_lengths_share_one_program_and_equal_the_straight_run(algo, eval_every, updates, chunks):
    """23 updates as chunks 5, 5, 5, 5, 3 (PPO) and 7 as 2, 2, 2, 1 (PQN, evaluating every 2) run
    through one compiled program told how many updates to run (``Trainer.run``'s ``active``);
    the result must be the straight ``train`` run's, final state and every metric."""
    from prpo.experiment import _chunk_plan, seed_keys

    cfg = algorithms.get(algo).config("CartPole-v1", num_envs=4, num_steps=8, num_minibatches=2, update_epochs=1,
                                      total_timesteps=4 * 8 * updates, eval_every=eval_every, actor_hidden=(8,),
                                      **({"eval_envs": 2} if eval_every else {}))
    assert len(set(_chunk_plan(cfg.num_updates, chunks, eval_every, None))) == 2
    result = run_experiment(cfg, seeds=1, progress=False, chunks=chunks)
    state, metrics = jax.jit(make_train(cfg).train)(seed_keys(0, 1)[0], cfg.hp)
    for k in metrics:
        np.testing.assert_allclose(np.asarray(result.metrics[k])[0, 0], np.asarray(metrics[k]), rtol=1e-6, atol=1e-6,
                                   err_msg=k)
    for a, b in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(state.params)):
        np.testing.assert_allclose(np.asarray(a)[0, 0], np.asarray(b), rtol=1e-6, atol=1e-6)
    assert int(np.asarray(result.state.update).ravel()[0]) == updates
