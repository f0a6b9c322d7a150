"""VinePPO: branch points, MC values from branched rollouts (a NumPy loop; the true return on a
deterministic chain), the advantage recursion (hand values; a NumPy loop of the segment formula),
the limit that is PPO with λ = 0, the weighted loss, the CLI and grid, and the refusals."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prpo
from prpo.advantages import gae
from prpo.algorithms import vineppo as V
from prpo.config import ConfigError
from prpo.envs import Discrete, EnvSpec, TimeStep
from prpo.rollout import RolloutContext

GOAL = 5  # the chain terminates when the position reaches GOAL


class Chain:
    """Deterministic chain: position x (obs [x]); action a ∈ {0, 1} moves x → x + a and pays
    ``x + a``; terminates at x' ≥ GOAL and restarts at 0; truncates at ``limit`` steps."""

    spec = EnvSpec("Chain", obs_shape=(1,), action_space=Discrete(2), max_episode_steps=1000)

    def __init__(self, num_envs=1, limit=1000):
        self.num_envs, self.limit = num_envs, limit

    def with_num_envs(self, n):
        return Chain(n, self.limit)

    def step(self, state, action, key):
        x, t, ret = state
        x2 = x + action.astype(jnp.float32)
        r = x2
        t2, ret2 = t + 1, ret + r
        term = x2 >= GOAL
        trunc = (t2 >= self.limit) & ~term
        done = term | trunc
        new = (jnp.where(done, 0.0, x2), jnp.where(done, 0, t2), jnp.where(done, 0.0, ret2))
        return new, TimeStep(obs=new[0][:, None], reward=r, terminated=term, truncated=trunc, final_obs=x2[:, None],
                             episode_return=ret2, episode_length=t2)


class Fixed:
    """A policy that always moves (action 1), or moves with probability ``p`` (``p`` < 1);
    V(obs) = ``vscale`` · x."""

    def __init__(self, p=1.0, vscale=0.0):
        self.p, self.vscale = p, vscale

    def act(self, params, obs, key):
        n = obs.shape[0]
        a = jnp.ones((n,), jnp.int32) if self.p >= 1 else (jax.random.uniform(key, (n,)) < self.p).astype(jnp.int32)
        return a, {"value": self.value(params, obs)}

    def value(self, params, obs):
        return self.vscale * obs[:, 0]


def chain_value(x, gamma):
    """True return of the always-move policy from x: Σ_j γ^j (x + 1 + j) until x + 1 + j = GOAL."""
    return sum(gamma**j * (x + 1 + j) for j in range(int(GOAL - x)))


def _start(xs):
    x = jnp.asarray(xs, jnp.float32)
    return (x, jnp.zeros(x.shape, jnp.int32), jnp.zeros(x.shape, jnp.float32))


ident = lambda x: x  # noqa: E731


# -- branch points ------------------------------------------------------------------------------

def test_branch_points_grid_and_random():
    idx = np.asarray(V.branch_points(7, 2, 3, "grid"))
    np.testing.assert_array_equal(idx[:, 0], [0, 3, 6, 7])
    np.testing.assert_array_equal(idx[:, 1], [0, 3, 6, 7])
    rnd = np.asarray(V.branch_points(7, 500, 3, "random", jax.random.key(0)))
    assert rnd.shape == (4, 500)
    assert set(rnd[0]) == {0, 1, 2} and set(rnd[1]) == {3, 4, 5} and set(rnd[2]) == {6} and set(rnd[3]) == {7}
    np.testing.assert_array_equal(V.branch_points(5, 3, 1, "grid")[:, 0], np.arange(6))


# -- MC values ------------------------------------------------------------------------------------

@pytest.mark.parametrize("horizon,bootstrap", [(8, False), (2, False), (2, True)])
def test_mc_value_on_a_deterministic_chain_is_the_true_return(horizon, bootstrap):
    gamma, xs = 0.9, [0.0, 2.0, 4.0, 3.0]
    pol = Fixed(vscale=0.5)
    g, live = V.branch_returns(Chain(4), pol, None, _start(xs), jnp.asarray(xs)[:, None], jax.random.key(0), horizon,
                               gamma, ident, ident, bootstrap=bootstrap)
    for i, x in enumerate(xs):
        steps = int(GOAL - x)
        if horizon >= steps:
            want, want_live = chain_value(x, gamma), steps
        else:  # cut at H (plus γ^H V(x_H) with the bootstrap)
            want = sum(gamma**j * (x + 1 + j) for j in range(horizon)) + bootstrap * gamma**horizon * 0.5 * (x + horizon)
            want_live = horizon
        np.testing.assert_allclose(float(g[i]), want, rtol=1e-6)
        assert float(live[i]) == want_live
    assert chain_value(2.0, gamma) == pytest.approx(3 + 4 * gamma + 5 * gamma**2)  # the reference by hand


def test_mc_value_matches_a_numpy_loop_over_the_same_branch_rewards():
    """Stochastic policy, terminations and time-limit truncations: the branch returns and their
    mean equal a plain loop over the rewards of the same steps."""
    gamma, horizon, k = 0.8, 6, 3
    xs = np.repeat(np.array([0.0, 1.0, 3.0, 4.0]), k)
    env, pol = Chain(len(xs), limit=4), Fixed(p=0.6, vscale=0.7)
    state = (jnp.asarray(xs, jnp.float32), jnp.asarray(np.tile([0, 2, 1], 4), jnp.int32), jnp.zeros(len(xs)))
    key = jax.random.key(3)
    for boot in (False, True):
        g, live = V.branch_returns(env, pol, None, state, jnp.asarray(xs)[:, None], key, horizon, gamma, ident, ident,
                                   bootstrap=boot)
        # the same steps, one at a time, and the return by a plain loop
        s, o, rows = state, jnp.asarray(xs)[:, None], []
        for kk in jax.random.split(key, horizon):
            k_act, k_env = jax.random.split(kk)
            a, _ = pol.act(None, o, k_act)
            s, ts = env.step(s, a, k_env)
            rows.append((np.asarray(ts.reward), np.asarray(ts.terminated), np.asarray(ts.truncated),
                         np.asarray(ts.final_obs[:, 0])))
            o = ts.obs
        want, want_live = np.zeros(len(xs)), np.zeros(len(xs))
        for i in range(len(xs)):
            disc = 1.0
            for h, (r, term, trunc, fin) in enumerate(rows):
                want[i] += disc * r[i]
                want_live[i] += 1
                if trunc[i] and boot:
                    want[i] += disc * gamma * 0.7 * fin[i]
                if term[i] or trunc[i]:
                    break
                disc *= gamma
            else:
                if boot:
                    want[i] += gamma**horizon * 0.7 * float(o[i, 0])
        np.testing.assert_allclose(np.asarray(g), want, rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(live), want_live)
        np.testing.assert_allclose(np.asarray(V.mc_values(g.reshape(4, k), 2)), want.reshape(4, k)[:, :2].mean(1),
                                   rtol=1e-6)
        assert np.any([r[2].any() for r in rows]) and np.any([r[1].any() for r in rows])  # both kinds of ends occur


def test_collect_branches_from_the_recorded_states():
    """The whole hook on the chain: V̂ at each branch point is the true return from the state the
    main rollout visited there (so the recorded states and the scatter back in time are right)."""
    gamma = 0.9
    for every, points in ((1, "grid"), (3, "grid"), (3, "random")):
        cfg = prpo.algorithms.get("vineppo").config(
            "CartPole-v1", num_envs=3, num_steps=7, total_timesteps=21, num_minibatches=1, vine_horizon=6, vine_rollouts=2,
            vine_every=every, vine_points=points, gamma=gamma)
        env = Chain(3)
        ctx = RolloutContext(cfg=cfg, env=env, policy=Fixed(), obs_transform=ident, action_transform=ident,
                             env_ids=None, hp=cfg.hp)
        xs = [0.0, 1.0, 3.0]
        state, last_obs, traj, stats = jax.jit(lambda k: V._collect(ctx, Fixed(), None, _start(xs),
                                                                    jnp.asarray(xs)[:, None], k))(jax.random.key(1))
        obs = np.concatenate([np.asarray(traj.obs[:, :, 0]), np.asarray(last_obs[None, :, 0])])  # [T+1, N]
        b = np.concatenate([np.asarray(traj.aux["vine_branched"]), np.asarray(traj.aux["vine_next_branched"][-1:])])
        v = np.concatenate([np.asarray(traj.aux["vine_value"]), np.asarray(traj.aux["vine_next_value"][-1:])])
        want = np.vectorize(lambda x: chain_value(x, gamma))(obs)
        np.testing.assert_allclose(v[b > 0], want[b > 0], rtol=1e-6)
        assert np.all(v[b == 0] == 0) and np.all(b[-1] == 1)
        assert np.all(b[:-1].sum(0) == -(-7 // every))  # one branch point per block
        np.testing.assert_array_equal(traj.aux["vine_weight"], traj.aux["vine_branched"])
        p = -(-7 // every) + 1
        assert float(stats.vine_env_steps_computed) == p * 3 * 2 * 6
        want_live = 2 * np.minimum(GOAL - obs[b > 0], 6).sum()  # live steps of the 2 branches per point
        assert float(stats.vine_env_steps) == want_live
        assert float(stats.summary()["vine_rollouts_used"]) == 2


# -- advantages ---------------------------------------------------------------------------------

def test_advantages_by_hand():
    """Two steps, every step branched: A_t = r_t + γ V̂(s_{t+1})(1 − term) − V̂(s_t)."""
    g = 0.5
    r = jnp.array([[1.0], [2.0]])
    vv = jnp.array([[3.0], [4.0]])
    nv = jnp.array([[4.0], [10.0]])
    ones = jnp.ones((2, 1))
    f = jnp.zeros((2, 1), bool)
    adv, ret, w = V.vine_targets(r, f, f, jnp.zeros((2, 1)), vv, ones, nv, ones, g)
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [1 + 0.5 * 4 - 3, 2 + 0.5 * 10 - 4])
    np.testing.assert_allclose(np.asarray(ret)[:, 0], [3.0, 7.0])
    term = jnp.array([[False], [True]])
    adv, _, _ = V.vine_targets(r, term, f, jnp.zeros((2, 1)), vv, ones, nv, ones, g)
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [0.0, 2 - 4])
    # branch points 0 and 2 only (T = 2 → s_2 is the last): A_0 = r_0 + γ r_1 + γ² V̂(s_2) − V̂(s_0)
    adv, ret, w = V.vine_targets(r, f, f, jnp.zeros((2, 1)), vv, jnp.array([[1.0], [0.0]]), nv,
                                 jnp.array([[0.0], [1.0]]), g)
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [1 + 0.5 * 2 + 0.25 * 10 - 3, 0.0])
    np.testing.assert_allclose(np.asarray(w)[:, 0], [1.0, 0.0])


def test_advantages_match_the_segment_formula_in_a_numpy_loop():
    rng = np.random.default_rng(0)
    t, n, gamma = 12, 5, 0.9
    r = rng.normal(size=(t, n)).astype(np.float32)
    term, trunc = rng.random((t, n)) < 0.15, rng.random((t, n)) < 0.1
    trunc &= ~term
    vtr = rng.normal(size=(t, n)).astype(np.float32)
    vfull = rng.normal(size=(t + 1, n)).astype(np.float32)
    b = rng.random((t + 1, n)) < 0.4
    b[-1] = True
    vfull[~b] = 0.0
    for boot in (False, True):
        adv, ret, w = V.vine_targets(*map(jnp.asarray, (r, term, trunc, vtr, vfull[:-1], b[:-1].astype(np.float32),
                                                        vfull[1:], b[1:].astype(np.float32))), gamma, boot)
        want = np.zeros((t, n))
        for j in range(n):
            for s in range(t):
                if not b[s, j]:
                    continue
                total, disc, i = 0.0, 1.0, s  # forward: rewards to the next branch point or the episode's end
                while True:
                    total += disc * r[i, j]
                    disc *= gamma
                    if term[i, j]:
                        break
                    if trunc[i, j]:
                        total += disc * vtr[i, j] if boot else 0.0
                        break
                    if b[i + 1, j]:
                        total += disc * vfull[i + 1, j]
                        break
                    i += 1
                want[s, j] = total - vfull[s, j]
        np.testing.assert_allclose(np.asarray(adv), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(w), b[:-1])


def test_limit_is_gae_with_lambda_zero():
    """H = 0 with the critic's bootstrap: V̂ = V, so advantages and returns are GAE(λ = 0)."""
    rng = np.random.default_rng(1)
    t, n, gamma = 9, 4, 0.97
    r = jnp.asarray(rng.normal(size=(t, n)), jnp.float32)
    term = jnp.asarray(rng.random((t, n)) < 0.2)
    trunc = jnp.asarray(rng.random((t, n)) < 0.1) & ~term
    values = jnp.asarray(rng.normal(size=(t, n)), jnp.float32)
    nxt = jnp.asarray(rng.normal(size=(t, n)), jnp.float32)  # V(s_{t+1}), or V(final obs) where truncated
    ones = jnp.ones((t, n))
    adv, ret, _ = V.vine_targets(r, term, trunc, nxt, values, ones, nxt, ones, gamma, True)
    g_adv, g_ret = gae(r, values, nxt, term, trunc, gamma, 0.0)
    np.testing.assert_allclose(np.asarray(adv), np.asarray(g_adv), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ret), np.asarray(g_ret), rtol=1e-6, atol=1e-6)


def test_training_limit_is_ppo_with_lambda_zero():
    """The whole algorithm: vine_horizon=0, vine_bootstrap, one branch per step trains as PPO
    with gae_lambda=0 on the same keys (rollouts, targets, loss), up to float rounding."""
    common = dict(num_envs=2, num_steps=8, total_timesteps=2 * 8 * 2, num_minibatches=2, update_epochs=1,
                  adv_norm="batch", normalize_reward=False, vf_coef=0.5, clip_value=False)
    ppo = prpo.algorithms.get("ppo").config("CartPole-v1", gae_lambda=0.0, **common)
    vine = prpo.algorithms.get("vineppo").config("CartPole-v1", vine_horizon=0, vine_bootstrap=True,
                                                 vine_rollouts=1, **common)

    def shared(c):  # everything but the algorithm, its own options and the λ that VinePPO does not use
        d = {k: v for k, v in c.to_dict().items() if not k.startswith("vine") and k != "algo"}
        d["hp"] = {k: v for k, v in d["hp"].items() if not k.startswith("vine") and k not in ("gae_lambda", "own")}
        return d

    assert shared(ppo) == shared(vine)
    s1, m1 = prpo.make_train(ppo).train(jax.random.key(0), ppo.hp)
    s2, m2 = prpo.make_train(vine).train(jax.random.key(0), vine.hp)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(m1["pg_loss"]), np.asarray(m2["pg_loss"]), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(m2["vine_env_steps"]), 0.0)  # H = 0: no extra env steps


# -- the loss -------------------------------------------------------------------------------------

def test_weighted_surrogate():
    def surr(lr, adv, hp):
        return -jnp.exp(lr) * adv, {}

    lr, adv = jnp.array([0.1, -0.2, 0.3, 0.0]), jnp.array([1.0, 2.0, -1.0, 0.5])
    w = jnp.array([1.0, 0.0, 1.0, 0.0])
    got, _ = V.weighted_surrogate(surr)(lr, adv, None, {"aux": {"vine_weight": w}})
    base = np.asarray(surr(lr, adv, None)[0])
    assert float(got.mean()) == pytest.approx((base[0] + base[2]) / 2, rel=1e-6)  # mean over the weighted samples
    ones, _ = V.weighted_surrogate(surr)(lr, adv, None, {"aux": {"vine_weight": jnp.ones(4)}})
    np.testing.assert_array_equal(np.asarray(ones), base)  # all weights 1: unchanged, bit for bit


# -- registration, CLI, grid, refusals ----------------------------------------------------------

def test_trains_from_the_cli_and_sweeps_vine_rollouts_in_a_grid(tmp_path):
    from prpo import cli

    out = tmp_path / "run"
    code = cli.main(["train", "vineppo", "--env", "CartPole-v1", "--num-envs", "2", "--total-steps", "64",
                     "--set", "num_steps=16", "--set", "vine_horizon=4", "--set", "vine_every=4",
                     "--set", "vine_max_rollouts=2", "--grid", "vine_rollouts=1,2", "--out", str(out)])
    assert code in (0, None)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert {r["setting"]["vine_rollouts"] for r in rows} == {1.0, 2.0} and len(rows) == 4
    for r in rows:  # the grid value is what ran, and the branch cost is counted: P·N·K·H = 5·2·K·4
        assert r["vine_rollouts_used"] == r["setting"]["vine_rollouts"]
        assert r["vine_env_steps_computed"] == 5 * 2 * r["setting"]["vine_rollouts"] * 4
        assert 0 < r["vine_env_steps"] <= r["vine_env_steps_computed"]


def test_registered_metrics_shapes():
    cfg = prpo.algorithms.get("vineppo").config("CartPole-v1", num_envs=2, num_steps=8, total_timesteps=32,
                                                vine_horizon=3)
    _, m = jax.eval_shape(prpo.make_train(cfg).train, jax.random.key(0), cfg.hp)
    for name in ("vine_env_steps", "vine_env_steps_computed", "vine_rollouts_used", "pg_loss"):
        assert m[name].shape == (cfg.num_updates,), name


@pytest.mark.parametrize("over,needle", [
    (dict(vine_rollouts=0), "vine_rollouts=0"),
    (dict(vine_rollouts=2.5), "an integer >= 1"),
    (dict(vine_horizon=-1), "vine_horizon"),
    (dict(vine_every=0), "vine_every"),
    (dict(vine_points="sometimes"), "vine_points"),
    (dict(vine_fill="zero"), "vine_fill"),
    (dict(normalize_reward=True), "normalize_reward=false"),
    (dict(adv_norm="minibatch"), "allowed: adv_norm='batch', 'none'"),
    (dict(vine_bootstrap=True), "vf_coef > 0"),
    (dict(vine_fill="gae"), "vf_coef > 0"),
    (dict(vine_max_rollouts=0), "vine_max_rollouts"),
])
def test_refusals(over, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        prpo.algorithms.get("vineppo").config("CartPole-v1", **over)
    assert "\n" not in str(e.value)
