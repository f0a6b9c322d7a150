import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prpo.envs import (
    BRAX_ENV_NAMES,
    Box,
    Discrete,
    EnvSpec,
    TimeStep,
    VecEnv,
    env_family,
    env_spec,
    list_envs,
    make_env,
)


def _random_policy(env, obs, key):
    return env.sample_actions(key)


def _bang_bang_policy(env, obs, key):
    return jnp.sign(env.sample_actions(key))  # +-1: topples the brax pendulum quickly


def _balance_policy(env, obs, key):
    # keeps CartPole upright for hundreds of steps
    return (obs[:, 2] + obs[:, 3] > 0).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("env", "num_steps", "policy"))
def rollout(env, key, num_steps, policy=_random_policy):
    """reset + scan(step); returns (obs0, final state, stacked TimeStep [T, N, ...])."""
    k_reset, k_run = jax.random.split(key)
    state, obs0 = env.reset(k_reset)

    def body(carry, k):
        state, obs = carry
        k_act, k_step = jax.random.split(k)
        state, ts = env.step(state, policy(env, obs, k_act), k_step)
        return (state, ts.obs), ts

    (state, _), traj = jax.lax.scan(body, (state, obs0), jax.random.split(k_run, num_steps))
    return obs0, state, traj


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def _python_episode_stats(traj):
    """Accumulate rewards / steps from the TimeStep stream; check stats at every done."""
    T, N = traj.reward.shape
    ret = np.zeros(N)
    length = np.zeros(N, np.int64)
    n_done = 0
    for t in range(T):
        ret += traj.reward[t]
        length += 1
        done = traj.terminated[t] | traj.truncated[t]
        # running totals everywhere, final totals where done
        np.testing.assert_allclose(traj.episode_return[t], ret, rtol=1e-5)
        np.testing.assert_array_equal(traj.episode_length[t], length)
        n_done += done.sum()
        ret[done] = 0.0
        length[done] = 0
    return n_done


def _check_final_obs(traj):
    done = traj.terminated | traj.truncated
    same = np.all(traj.final_obs == traj.obs, axis=tuple(range(2, traj.obs.ndim)))
    assert same[~done].all(), "final_obs must equal obs where not done"
    assert not same[done].any(), "obs must be reset where done"


# --------------------------------------------------------------------------- gymnax


@pytest.fixture(scope="module")
def cartpole_traj():
    env = make_env("CartPole-v1", 4)
    obs0, state, traj = rollout(env, jax.random.key(0), 600)
    return env, _np(obs0), state, _np(traj)


def test_cartpole_spec_and_shapes(cartpole_traj):
    env, obs0, state, traj = cartpole_traj
    assert isinstance(env, VecEnv)
    assert env.spec == EnvSpec("CartPole-v1", (4,), Discrete(2), 500)
    assert env.spec == env_spec("CartPole-v1")
    assert obs0.shape == (4, 4) and obs0.dtype == np.float32
    assert isinstance(traj, TimeStep)
    assert traj.obs.shape == traj.final_obs.shape == (600, 4, 4)
    assert traj.obs.dtype == traj.final_obs.dtype == np.float32
    assert traj.reward.dtype == np.float32 and traj.reward.shape == (600, 4)
    assert traj.terminated.dtype == traj.truncated.dtype == np.bool_
    assert traj.episode_return.dtype == np.float32
    assert traj.episode_length.dtype == np.int32
    assert state.episode_return.shape == state.episode_length.shape == (4,)


def test_cartpole_final_obs_and_reset(cartpole_traj):
    _, _, _, traj = cartpole_traj
    done = traj.terminated | traj.truncated
    assert done.sum() > 20  # random policy: many episodes
    _check_final_obs(traj)
    # reset observations are fresh CartPole starts in [-0.05, 0.05]
    assert np.all(np.abs(traj.obs[done]) <= 0.05)
    # the final observation of a terminated episode is out of bounds
    term_obs = traj.final_obs[traj.terminated]
    assert np.all((np.abs(term_obs[:, 0]) > 2.4) | (np.abs(term_obs[:, 2]) > 12 * 2 * np.pi / 360))


def test_cartpole_episode_stats_match_python(cartpole_traj):
    _, _, state, traj = cartpole_traj
    assert _python_episode_stats(traj) == (traj.terminated | traj.truncated).sum()
    np.testing.assert_array_equal(traj.reward, 1.0)
    done = traj.terminated | traj.truncated
    np.testing.assert_allclose(traj.episode_return[done], traj.episode_length[done])
    # the state carries the running stats of the ongoing episodes
    np.testing.assert_array_equal(np.where(done[-1], 0, traj.episode_length[-1]), state.episode_length)


def test_terminated_truncated_exclusive(cartpole_traj):
    _, _, _, traj = cartpole_traj
    assert not np.any(traj.terminated & traj.truncated)


def test_pendulum_truncation_at_max_episode_steps():
    env = make_env("Pendulum-v1", 3, max_episode_steps=20)
    assert env.spec.max_episode_steps == 20
    assert env.spec.action_space == Box(-2.0, 2.0, (1,))
    _, _, traj = _np(rollout(env, jax.random.key(1), 70))
    assert not traj.terminated.any()
    t_done = np.nonzero(traj.truncated[:, 0])[0]
    np.testing.assert_array_equal(t_done, [19, 39, 59])
    assert np.all(traj.truncated == traj.truncated[:, :1])  # all envs truncate together
    np.testing.assert_array_equal(traj.episode_length[traj.truncated], 20)
    _python_episode_stats(traj)
    _check_final_obs(traj)


def test_cartpole_truncation_with_balancing_policy():
    env = make_env("CartPole-v1", 4, max_episode_steps=20)
    _, _, traj = _np(rollout(env, jax.random.key(2), 100, policy=_balance_policy))
    assert not traj.terminated.any()
    assert traj.truncated.sum() == 4 * 5
    np.testing.assert_array_equal(traj.episode_length[traj.truncated], 20)
    np.testing.assert_array_equal(traj.episode_return[traj.truncated], 20.0)
    _check_final_obs(traj)


def test_vmap_over_seeds_equals_single_runs():
    env = make_env("CartPole-v1", 3)
    keys = jax.random.split(jax.random.key(7), 2)
    run = lambda k: rollout(env, k, 60)  # noqa: E731
    batched = _np(jax.jit(jax.vmap(run))(keys))
    for i in range(2):
        single = _np(run(keys[i]))
        jax.tree.map(
            lambda b, s: np.testing.assert_allclose(b[i], s, rtol=1e-6, atol=1e-6), batched, single
        )
    # the batched state has both the seed and the env axis
    state, obs = jax.vmap(env.reset)(keys)
    assert obs.shape == (2, 3, 4) and state.episode_length.shape == (2, 3)


def test_minatar_obs_cast_to_float32():
    env = make_env("Breakout-MinAtar", 2)
    assert env.spec.obs_shape == (10, 10, 4)
    assert env.spec.action_space == Discrete(3)
    state, obs = jax.jit(env.reset)(jax.random.key(0))
    assert obs.dtype == jnp.float32 and obs.shape == (2, 10, 10, 4)
    state, ts = jax.jit(env.step)(state, jnp.zeros((2,), jnp.int32), jax.random.key(1))
    assert ts.obs.dtype == ts.final_obs.dtype == jnp.float32


def test_raw_uint32_keys_accepted():
    env = make_env("CartPole-v1", 2)
    s1, o1 = env.reset(jax.random.key(3))
    s2, o2 = env.reset(jax.random.key_data(jax.random.key(3)))
    np.testing.assert_array_equal(o1, o2)


def test_vecenv_hashable_and_specs():
    a = make_env("CartPole-v1", 8)
    b = make_env("gymnax/CartPole-v1", 8)
    assert a == b and hash(a) == hash(b)
    assert a != make_env("CartPole-v1", 4)
    assert a != make_env("CartPole-v1", 8, max_episode_steps=20)
    spec = env_spec("MountainCarContinuous-v0")
    assert spec.action_space == Box(-1.0, 1.0, (1,)) and spec.obs_shape == (2,)
    hash(spec)
    names = list_envs()
    assert {"gymnax", "brax"} <= set(names) <= {"gymnax", "brax", "craftax", "navix"}  # the extras when installed
    assert "CartPole-v1" in names["gymnax"] and "Breakout-MinAtar" in names["gymnax"]
    assert {"ant", "hopper", "halfcheetah", "humanoid", "walker2d", "inverted_pendulum"} <= set(names["brax"])
    assert env_family("CartPole-v1") == env_family("gymnax/Breakout-MinAtar") == "gymnax"
    assert env_family("ant") == env_family("brax/hopper") == "brax"
    with pytest.raises(ValueError, match="CartPole-v1"):
        env_family("Cartpole")


def test_with_num_envs_gymnax():
    a = make_env("CartPole-v1", 4, max_episode_steps=20)
    b = a.with_num_envs(6)
    assert b == make_env("CartPole-v1", 6, max_episode_steps=20) and hash(b) == hash(make_env("CartPole-v1", 6, max_episode_steps=20))
    assert b.num_envs == 6 and a.num_envs == 4 and b.spec == a.spec and b.options == a.options
    assert a.with_num_envs(4) is a
    state, obs = b.reset(jax.random.key(0))
    assert obs.shape == (6, 4) and state.episode_length.shape == (6,)
    state, ts = b.step(state, jnp.zeros((6,), jnp.int32), jax.random.key(1))
    assert ts.obs.shape == (6, 4)
    with pytest.raises(ValueError, match="num_envs"):
        a.with_num_envs(0)


# --------------------------------------------------------------------------- brax is optional


def test_brax_env_names_match_brax_registry():
    brax_envs = pytest.importorskip("brax.envs")
    assert BRAX_ENV_NAMES == tuple(sorted(brax_envs._envs))
    assert list_envs()["brax"] == list(BRAX_ENV_NAMES)


def test_gymnax_run_imports_no_brax():
    """``import prpo`` and a CartPole run import neither brax nor mujoco (nor print anything on stderr)."""
    code = (
        "import sys, jax, prpo\n"
        "from prpo import envs\n"
        "env = envs.make_env('CartPole-v1', 2)\n"
        "s, o = env.reset(jax.random.key(0))\n"
        "s, ts = env.step(s, env.sample_actions(jax.random.key(1)), jax.random.key(2))\n"
        "assert envs.env_family('ant') == 'brax' and 'ant' in envs.list_envs()['brax']\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('brax', 'mujoco', 'mujoco_playground'))\n"
        "print('IMPORTED', bad)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "IMPORTED []" in r.stdout, r.stdout
    assert "Failed to import" not in r.stdout + r.stderr
    assert "Warning" not in r.stderr, r.stderr


# --------------------------------------------------------------------------- errors


def test_unknown_env_error():
    with pytest.raises(ValueError) as e:
        make_env("CartPole-v2", 4)
    msg = str(e.value)
    assert "CartPole-v2" in msg and "Did you mean 'CartPole-v1'" in msg
    assert "Pendulum-v1" in msg and "inverted_pendulum" in msg and "halfcheetah" in msg
    with pytest.raises(ValueError, match="'brax/ants'.*brax/ant"):
        env_spec("brax/ants")


def test_bad_options_errors():
    with pytest.raises(ValueError, match=r"backend='physx'.*mjx.*positional.*generalized.*spring"):
        make_env("ant", 4, backend="physx")
    with pytest.raises(ValueError, match=r"auto_reset='sometimes'.*cached.*fresh"):
        env_spec("hopper", auto_reset="sometimes")
    with pytest.raises(ValueError, match=r"backend"):
        make_env("CartPole-v1", 4, backend="mjx")  # brax-only option
    with pytest.raises(ValueError, match=r"frobnicate"):
        make_env("CartPole-v1", 4, frobnicate=True)
    with pytest.raises(ValueError, match=r"episode_length.*max_episode_steps"):
        env_spec("ant", episode_length=10, max_episode_steps=20)
    with pytest.raises(ValueError, match="num_envs"):
        make_env("CartPole-v1", 0)


# --------------------------------------------------------------------------- brax


BRAX_T, BRAX_N, BRAX_LEN = 30, 8, 12


@pytest.fixture(scope="module", params=["cached", "fresh"])
def brax_traj(request):
    env = make_env(
        "brax/inverted_pendulum", BRAX_N, backend="positional", episode_length=BRAX_LEN,
        auto_reset=request.param,
    )
    obs0, state, traj = rollout(env, jax.random.key(0), BRAX_T, policy=_bang_bang_policy)
    return request.param, env, _np(obs0), state, _np(traj)


def test_brax_spec():
    spec = env_spec("inverted_pendulum", backend="positional", max_episode_steps=BRAX_LEN)
    assert spec == EnvSpec("inverted_pendulum", (4,), Box(-1.0, 1.0, (1,)), BRAX_LEN)
    assert env_spec("brax/inverted_pendulum", backend="positional").max_episode_steps == 1000
    a = make_env("inverted_pendulum", 2, backend="positional", max_episode_steps=5)
    b = make_env("brax/inverted_pendulum", 2, backend="positional", episode_length=5)
    assert a == b
    c = a.with_num_envs(3)
    assert c == make_env("inverted_pendulum", 3, backend="positional", max_episode_steps=5) and c != a
    assert c.num_envs == 3 and c.spec == a.spec
    state, obs = c.reset(jax.random.key(0))
    assert obs.shape == (3, 4) and state.init[1].shape == (3, 4)


def test_brax_rollout(brax_traj):
    mode, env, obs0, state, traj = brax_traj
    assert traj.obs.shape == (BRAX_T, BRAX_N, 4) and traj.obs.dtype == np.float32
    assert traj.reward.dtype == np.float32
    np.testing.assert_array_equal(traj.reward, 1.0)
    assert traj.terminated.any(), "random +-1 actions should topple some pendulums"
    assert traj.truncated.any()
    assert not np.any(traj.terminated & traj.truncated)
    np.testing.assert_array_equal(traj.episode_length[traj.truncated], BRAX_LEN)
    assert np.all(traj.episode_length[traj.terminated] <= BRAX_LEN)
    assert np.all(traj.episode_length <= BRAX_LEN)
    _python_episode_stats(traj)
    _check_final_obs(traj)
    # terminal observations have the pole beyond 0.2 rad
    assert np.all(np.abs(traj.final_obs[traj.terminated][:, 1]) > 0.2)


def test_brax_auto_reset_modes(brax_traj):
    mode, env, obs0, state, traj = brax_traj
    done = traj.terminated | traj.truncated
    t_idx, n_idx = np.nonzero(done)
    reset_obs = traj.obs[t_idx, n_idx]
    if mode == "cached":
        # reset to the env's cached initial state
        np.testing.assert_array_equal(reset_obs, obs0[n_idx])
        assert state.init is not None
    else:
        # a fresh random initial state (small noise around 0)
        assert not np.any(np.all(reset_obs == obs0[n_idx], axis=-1))
        assert np.all(np.abs(reset_obs) <= 0.01 + 1e-6)
        assert state.init is None


# -- MuJoCo Playground adapter (a stand-in env: the package itself is an optional dependency) ----


class _FakePlaygroundEnv:
    """Playground's ``MjxEnv`` protocol: ``State(data, obs, reward, done, metrics, info)``, physics in
    ``data``. A point whose position grows by the action; done (terminated) once position > 3."""

    action_size = 1

    @jax.tree_util.register_dataclass
    @functools.partial(__import__("dataclasses").dataclass, frozen=True)
    class State:
        data: jax.Array
        obs: jax.Array
        reward: jax.Array
        done: jax.Array
        metrics: dict
        info: dict

        def replace(self, **kw):
            return __import__("dataclasses").replace(self, **kw)

    def reset(self, rng):
        x = jax.random.uniform(jax.random.wrap_key_data(rng), (1,))  # random start in [0, 1)
        return self.State(data=x, obs=jnp.concatenate([x, x]), reward=jnp.zeros(()), done=jnp.zeros(()), metrics={}, info={})

    def step(self, state, action):
        x = state.data + jnp.clip(action, 0.0, 1.0)
        return state.replace(data=x, obs=jnp.concatenate([x, x]), reward=x[0], done=(x[0] > 3.0).astype(jnp.float32))


def test_playground_adapter_time_limit_termination_and_reset(monkeypatch):
    import prpo.envs as envs_mod

    fake = _FakePlaygroundEnv()
    monkeypatch.setattr(envs_mod, "_playground_names", lambda: ["FakeRun"])
    monkeypatch.setattr(envs_mod, "_playground_env", lambda name, kw: (fake, 6))
    envs_mod._spec_cached.cache_clear()
    try:
        assert env_family("playground/FakeRun") == "playground"
        spec = env_spec("playground/FakeRun")
        assert spec.obs_shape == (2,) and spec.action_space == Box(-1.0, 1.0, (1,)) and spec.max_episode_steps == 6
        with pytest.raises(ValueError, match="backend"):
            env_spec("playground/FakeRun", backend="mjx")
        with pytest.raises(ValueError, match="impl"):
            env_spec("playground/FakeRun", env_kwargs={"impl": "warp"})
        with pytest.raises(ValueError, match="Did you mean 'playground/FakeRun'"):
            env_family("playground/FakeRnu")
        env = make_env("playground/FakeRun", 3)
        state, obs0 = env.reset(jax.random.key(0))
        x0 = np.asarray(obs0[:, 0])
        # env 0 moves +1 per step (terminates when x > 3), env 1 stays (truncated at 6), env 2 moves +0.25
        act = jnp.array([[1.0], [0.0], [0.25]])
        rows = []
        for t in range(8):
            state, ts = env.step(state, act, jax.random.key(t))
            rows.append(jax.tree.map(np.asarray, ts))
        # reference: a plain Python loop
        pos, length, ret = x0.copy(), np.zeros(3, int), np.zeros(3)
        for t, ts in enumerate(rows):
            pos = pos + np.array([1.0, 0.0, 0.25])
            length += 1
            ret += pos
            term = pos > 3.0
            trunc = (length >= 6) & ~term
            np.testing.assert_array_equal(ts.terminated, term, err_msg=f"t={t}")
            np.testing.assert_array_equal(ts.truncated, trunc, err_msg=f"t={t}")
            np.testing.assert_allclose(ts.final_obs[:, 0], pos, rtol=1e-6)
            np.testing.assert_allclose(ts.episode_return, ret, rtol=1e-5)
            done = term | trunc
            np.testing.assert_allclose(ts.obs[:, 0], np.where(done, x0, pos), rtol=1e-6)  # cached reset: the initial state
            pos, length, ret = np.where(done, x0, pos), np.where(done, 0, length), np.where(done, 0.0, ret)
        assert any(r.terminated[0] for r in rows) and any(r.truncated[1] for r in rows)
    finally:
        envs_mod._spec_cached.cache_clear()
