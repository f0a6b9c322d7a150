"""The Craftax and NAVIX adapters (prpo.envs_extra) against the libraries' own step functions, their
truncation / termination split and auto-reset, PPO on them, and the errors without the extras.

Each library is optional: its tests skip when it is not installed (the test extra installs both)."""

import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prpo import envs, envs_extra
from prpo.algorithm import env_kind
from prpo.algorithms import get as get_algorithm
from prpo.train import make_train

CRAFTAX = "Craftax-Classic-Symbolic-v1"
NAVIX = "Navix-Empty-5x5-v0"


def _keys(seed, n):
    return jax.random.split(jax.random.key(seed), n)


def _step_and_reset_keys(keys):
    """The per-env step and reset keys the gymnax wrapper derives from per-env step keys."""
    pairs = jax.vmap(jax.random.split)(keys)
    return pairs[:, 0], pairs[:, 1]


def _ppo_few_updates(name, updates=2, **overrides):
    """PPO on ``name`` with its kind's defaults shrunk to a few envs, steps and ``updates`` updates."""
    small = dict(num_envs=4, num_steps=8, update_epochs=1, num_minibatches=2)
    small.update(overrides)
    cfg = get_algorithm("ppo").config(env=name, total_timesteps=updates * small["num_envs"] * small["num_steps"],
                                      **small)
    trainer = make_train(cfg)
    state, metrics = jax.jit(trainer.train)(jax.random.key(0), cfg.hp)
    return cfg, state, jax.tree.map(np.asarray, metrics)


def _check_ppo_metrics(metrics, num_updates=2):
    for k in ("loss", "pg_loss", "value_loss", "entropy", "approx_kl", "grad_norm"):
        assert metrics[k].shape == (num_updates,), (k, metrics[k].shape)
        assert np.isfinite(metrics[k]).all(), (k, metrics[k])


# --------------------------------------------------------------------------- Craftax


@pytest.fixture(scope="module")
def craftax_lib():
    pytest.importorskip("craftax", reason="Craftax is an optional extra: pip install 'prpo[craftax]'")
    from craftax.craftax_env import make_craftax_env_from_name

    return make_craftax_env_from_name(CRAFTAX, auto_reset=False)


def test_craftax_names_resolve(craftax_lib):
    spec = envs.env_spec("craftax/" + CRAFTAX)
    assert spec == envs.env_spec(CRAFTAX)  # the bare name is an alias
    assert spec.name == "craftax/" + CRAFTAX and spec.obs_shape == (1345,) and spec.action_space == envs.Discrete(17)
    assert spec.max_episode_steps == craftax_lib.default_params.max_timesteps == 10000
    assert envs.env_family(CRAFTAX) == "craftax" and env_kind(CRAFTAX) == "minatar"
    assert envs.make_env(CRAFTAX, 3) == envs.make_env("craftax/" + CRAFTAX, 3)  # one cached adapter
    assert envs.env_spec(CRAFTAX, max_episode_steps=7).max_episode_steps == 7
    assert "craftax/" + CRAFTAX in envs.list_envs()["craftax"]
    with pytest.raises(ValueError, match="not fields of Craftax's EnvParams"):
        envs.env_spec(CRAFTAX, env_params={"day_lenght": 10})
    with pytest.raises(ValueError, match="max_episode_steps, not env_params"):
        envs.env_spec(CRAFTAX, env_params={"max_timesteps": 10})
    with pytest.raises(ValueError, match=r"allowed options: \['max_episode_steps', 'env_params'\]"):
        envs.make_env(CRAFTAX, 2, env_kwargs={"x": 1})


@pytest.fixture(scope="module")
def craftax_steps(craftax_lib):
    """3 Craftax-Classic envs with a 3-step time limit: the adapter's and the library's jitted
    batched reset / step (compiled once for the tests below: Craftax compiles slowly)."""
    n, limit = 3, 3
    env = envs.make_env("craftax/" + CRAFTAX, n, max_episode_steps=limit)
    lib_params = craftax_lib.default_params.replace(max_timesteps=limit)
    lib_reset = jax.jit(jax.vmap(lambda k: craftax_lib.reset(k, lib_params)))
    lib_step = jax.jit(jax.vmap(lambda k, s, a: craftax_lib.step(k, s, a, lib_params)))
    return env, jax.jit(env.reset), jax.jit(env.step), lib_reset, lib_step


@pytest.mark.xdist_group("craftax")
def test_craftax_step_is_the_library_step_with_time_limit_as_truncation(craftax_steps):
    """Reset and steps through the adapter equal Craftax's own ``reset`` / ``step`` (no auto-reset)
    with the same keys; at the time limit the episode is truncated, not terminated, ``final_obs`` is
    Craftax's last observation and ``obs`` the observation of Craftax's reset with the wrapper's key.
    Then: game over is a termination, even at the time limit."""
    env, reset, step, lib_reset, lib_step = craftax_steps
    n, limit = env.num_envs, env.spec.max_episode_steps
    # Craftax's jitted functions and the adapter's trace may round the light level differently (1 ulp)
    close = dict(rtol=1e-6, atol=1e-7)
    keys = _keys(0, n)
    state, obs = reset(keys)
    lib_obs, lib_state = lib_reset(keys)
    np.testing.assert_allclose(obs, lib_obs, **close)
    # the reset state is typed as the step's (Craftax's own reset gives weakly typed leaves)
    weak = lambda tree: [getattr(x, "weak_type", False) for x in jax.tree.leaves(tree)]  # noqa: E731
    assert weak(state) == weak(step(state, jnp.zeros((n,), jnp.int32), _keys(1, n))[0])
    total = np.zeros(n, np.float32)
    for t in range(1, limit + 1):
        keys = _keys(t, n)
        action = jax.random.randint(jax.random.key(100 + t), (n,), 0, 17)
        state, ts = step(state, action, keys)
        step_keys, reset_keys = _step_and_reset_keys(keys)
        lib_obs, lib_state, lib_reward, lib_done, _ = lib_step(step_keys, lib_state, action)
        np.testing.assert_allclose(ts.final_obs, lib_obs, **close)
        np.testing.assert_allclose(ts.reward, lib_reward, **close)
        np.testing.assert_array_equal(ts.done, lib_done)  # Craftax's done: game over or time up
        total += np.asarray(lib_reward)
        if t < limit:  # a few random actions cannot kill the player
            assert not np.asarray(ts.done).any()
            np.testing.assert_allclose(ts.obs, lib_obs, **close)
    # at the limit: truncated, not terminated; final_obs was checked above, obs is the reset one
    assert np.asarray(ts.truncated).all() and not np.asarray(ts.terminated).any()
    np.testing.assert_allclose(ts.obs, lib_reset(reset_keys)[0], **close)
    assert not np.allclose(ts.obs, ts.final_obs)
    np.testing.assert_array_equal(ts.episode_length, limit)
    np.testing.assert_allclose(ts.episode_return, total, rtol=1e-6)
    _craftax_game_over_is_termination_even_at_the_time_limit(env, reset, step)


def _craftax_game_over_is_termination_even_at_the_time_limit(env, reset, step):
    """A dead player (health 0) ends the episode as terminated, never truncated -- also on the time
    limit's step, where Craftax's own ``done`` cannot tell the two apart. (Part of the test above,
    to reuse its compiled functions: Craftax compiles slowly.)"""
    n, limit = env.num_envs, env.spec.max_episode_steps
    noop = jnp.zeros((n,), jnp.int32)

    def kill(state, i):
        inner = state.env_state
        return state.replace(env_state=inner.replace(player_health=inner.player_health.at[i].set(0)))

    state, _ = reset(_keys(0, n))
    state, ts = step(kill(state, 0), noop, _keys(1, n))  # env 0 dies at its first step
    np.testing.assert_array_equal(ts.terminated, [True, False, False])
    np.testing.assert_array_equal(ts.truncated, [False, False, False])
    for t in range(2, limit):
        state, ts = step(state, noop, _keys(t, n))
        assert not np.asarray(ts.done).any()
    # the time limit's step of envs 1 and 2 (env 0 restarted at step 1); env 1 dies at it
    state, ts = step(kill(state, 1), noop, _keys(limit, n))
    np.testing.assert_array_equal(ts.terminated, [False, True, False])
    np.testing.assert_array_equal(ts.truncated, [False, False, True])
    np.testing.assert_array_equal(ts.episode_length, [limit - 1, limit, limit])


@pytest.mark.xdist_group("craftax")
def test_craftax_ppo_trains_a_few_updates(craftax_lib):
    """Two PPO updates on Craftax-Classic (symbolic) with a 5-step time limit: finite losses and
    metrics of the right shape, and every env finished (truncated) episodes of at most 5 steps."""
    cfg, state, metrics = _ppo_few_updates(CRAFTAX, episode_length=5)
    _check_ppo_metrics(metrics)
    assert (metrics["episodes"] >= cfg.num_envs).all(), metrics["episodes"]
    assert (metrics["episode_length_mean"] <= 5).all() and np.isfinite(metrics["episode_return_mean"]).all()
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


# --------------------------------------------------------------------------- NAVIX


@pytest.fixture(scope="module")
def navix_lib():
    try:
        import navix
    except ModuleNotFoundError:
        pytest.skip("NAVIX is an optional extra: pip install 'prpo[navix]'")
    except Exception as e:  # noqa: BLE001  NAVIX's own import chain (rlax -> distrax -> TFP nightly) broke
        pytest.skip(f"NAVIX is installed but does not import with this JAX: {type(e).__name__}: {e}")
    return navix


@pytest.mark.xdist_group("navix")
def test_navix_names_resolve(navix_lib):
    spec = envs.env_spec("navix/" + NAVIX)
    assert spec == envs.EnvSpec("navix/" + NAVIX, (5, 5, 3), envs.Discrete(7), 100)  # NAVIX's default max_steps
    assert envs.env_family("navix/" + NAVIX) == "navix" and env_kind("navix/" + NAVIX) == "minatar"
    assert envs.env_spec("navix/" + NAVIX, max_episode_steps=9).max_episode_steps == 9
    # the static name list (names resolve and list without importing NAVIX) is NAVIX's registry
    assert set(envs_extra.NAVIX_ENV_NAMES) <= set(navix_lib.registry())
    assert envs.list_envs()["navix"] == ["navix/" + n for n in envs_extra.NAVIX_ENV_NAMES]
    assert envs.make_env(NAVIX, 2) == envs.make_env("navix/" + NAVIX, 2)  # the bare name is an alias
    with pytest.raises(ValueError, match="Did you mean 'navix/Navix-Empty-5x5-v0'"):
        envs.make_env("navix/Navix-Empty-5x5-v1", 2)
    with pytest.raises(ValueError, match="max_episode_steps, not env_kwargs"):
        envs.env_spec("navix/" + NAVIX, env_kwargs={"max_steps": 5})


@pytest.mark.xdist_group("navix")
def test_navix_step_is_the_library_step_with_resets(navix_lib):
    """A random-action rollout through the adapter equals NAVIX's own ``reset`` / ``step``, with the
    episode restarted from NAVIX's reset with the wrapper's reset key where it ended; time-limit
    ends are truncations and ``final_obs`` is NAVIX's observation before the reset."""
    n, limit, steps = 4, 6, 15
    env = envs.make_env("navix/" + NAVIX, n, max_episode_steps=limit)
    lib = navix_lib.make(NAVIX, max_steps=limit)
    reset, step = jax.jit(jax.vmap(lib.reset)), jax.jit(jax.vmap(lib.step))
    reset_keys = _keys(0, n)
    actions = np.asarray(jax.random.randint(jax.random.key(1), (steps, n), 0, 7))
    env_reset, env_step = jax.jit(env.reset), jax.jit(env.step)

    state, obs = env_reset(reset_keys)
    lib_ts = reset(reset_keys)
    np.testing.assert_array_equal(obs, lib_ts.observation.astype(np.float32))
    n_trunc = 0
    for t in range(steps):
        keys = _keys(100 + t, n)
        state, ts = env_step(state, actions[t], keys)
        lib_ts = step(lib_ts, actions[t])
        np.testing.assert_array_equal(ts.final_obs, lib_ts.observation.astype(np.float32))
        np.testing.assert_array_equal(ts.reward, lib_ts.reward)
        np.testing.assert_array_equal(ts.terminated, lib_ts.step_type == 2)
        np.testing.assert_array_equal(ts.truncated, lib_ts.step_type == 1)
        done = np.asarray(lib_ts.step_type > 0)
        # the library restarted with the same key where the wrapper reset
        restarted = reset(_step_and_reset_keys(keys)[1])
        lib_ts = jax.tree.map(lambda r, x: jnp.where(done.reshape((-1,) + (1,) * (x.ndim - 1)), r, x),
                              restarted, lib_ts)
        np.testing.assert_array_equal(ts.obs, lib_ts.observation.astype(np.float32))
        n_trunc += int(ts.truncated.sum())
    assert n_trunc >= n  # every env hit the 6-step limit at least once in 15 random steps (or reached the goal)


@pytest.mark.xdist_group("navix")
def test_navix_goal_is_termination_and_limit_is_truncation(navix_lib):
    """Empty-5x5: forward, forward, turn right, forward, forward reaches the goal at step 5 --
    terminated with reward 1; with a 4-step limit the same episode is truncated at step 4, and
    ``final_obs`` is the observation reached, ``obs`` the reset one."""
    path = [2, 2, 1, 2, 2]
    for limit, end, terminated in ((10, 5, True), (4, 4, False)):
        env = envs.make_env("navix/" + NAVIX, 1, max_episode_steps=limit)
        env_step = jax.jit(env.step)
        state, obs0 = env.reset(_keys(0, 1))
        for t, a in enumerate(path[:end], start=1):
            state, ts = env_step(state, jnp.array([a]), _keys(t, 1))
            if t < end:
                assert not ts.done.any()
        assert bool(ts.terminated[0]) is terminated and bool(ts.truncated[0]) is not terminated
        assert float(ts.reward[0]) == (1.0 if terminated else 0.0) and int(ts.episode_length[0]) == end
        np.testing.assert_array_equal(ts.obs, obs0)  # Empty-5x5 always restarts in the same place
        assert not np.array_equal(ts.final_obs, ts.obs)


@pytest.mark.xdist_group("navix")
def test_navix_ppo_trains_and_learns_empty_5x5(navix_lib):
    """PPO (the minatar kind's defaults, 16 envs × 64 steps) learns NAVIX Empty-5x5 in 30 updates
    (~11 s on CPU): the episodes, ~85 steps of NAVIX's 100 under the first updates' near-random
    policy, shrink to ~12 (the shortest path is 5) and nearly all reach the goal. Measured with
    seed 0: the mean length of the last 5 updates 11.8, their mean return 1.0."""
    cfg, state, metrics = _ppo_few_updates("navix/" + NAVIX, num_envs=16, num_steps=64, update_epochs=4,
                                           num_minibatches=8, updates=30)
    _check_ppo_metrics(metrics, num_updates=30)
    length, ret = metrics["episode_length_mean"], metrics["episode_return_mean"]
    assert length[1:5].mean() > 40, length
    assert length[-5:].mean() < 25 and ret[-5:].mean() > 0.9, (length, ret)


# --------------------------------------------------------------------------- without the extras


@pytest.fixture
def without_extras(monkeypatch):
    """Neither Craftax nor NAVIX importable (as when the extras are not installed)."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("craftax", "navix")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "craftax", None)
    monkeypatch.setitem(sys.modules, "navix", None)
    yield


def test_missing_extras_name_them(without_extras):
    for call, start in (
        (lambda: envs.make_env(CRAFTAX, 2, max_episode_steps=12345),
         "craftax env 'craftax/Craftax-Classic-Symbolic-v1' needs the optional craftax extra: "
         "pip install 'prpo[craftax]'"),
        (lambda: envs.env_spec("craftax/Craftax-Symbolic-v1", max_episode_steps=12345),
         "craftax env 'craftax/Craftax-Symbolic-v1' needs the optional craftax extra"),
        (lambda: envs.make_env("navix/" + NAVIX, 2, max_episode_steps=12345),
         "navix env 'navix/Navix-Empty-5x5-v0' needs the optional navix extra: pip install 'prpo[navix]'"),
        (lambda: envs.env_spec(NAVIX, max_episode_steps=12345),
         "navix env 'navix/Navix-Empty-5x5-v0' needs the optional navix extra"),
    ):
        with pytest.raises(ValueError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(start) and "\n" not in msg, msg
    assert envs.env_family(CRAFTAX) == "craftax"  # the names resolve without the libraries
    assert envs.env_family("navix/Navix-FourRooms-v0") == envs.env_family("Navix-FourRooms-v0") == "navix"
    with pytest.raises(ValueError, match="Did you mean 'navix/Navix-FourRooms-v0'"):
        envs.env_spec("navix/Navix-FourRoom-v0")
    assert "craftax" not in envs.list_envs() and "navix" not in envs.list_envs()
    assert not envs_extra.installed("craftax") and not envs_extra.installed("navix")


# --------------------------------------------------------------------------- the guide


def test_guide_example_runs_and_splits_the_mixed_done():
    """docs/envs-extra.md's worked example runs as written; its adapter turns the library's mixed
    ``done`` into termination (past +3) and truncation (the step limit)."""
    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "envs-extra.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(blocks) == 1
    ns = {}
    exec(compile(blocks[0], str(doc), "exec"), ns)
    assert np.isfinite(np.asarray(ns["metrics"]["loss"])).all()
    env = envs.as_vec_env(ns["Walk"](), 2)
    step = jax.jit(env.step)
    state, _ = env.reset(_keys(0, 2))
    right_left = jnp.array([1, 0])  # env 0 walks right (past +3 at step 4 at most), env 1 left (never)
    ends = {}
    for t in range(1, 9):
        state, ts = step(state, right_left, _keys(t, 2))
        for i in np.flatnonzero(np.asarray(ts.done)):
            ends.setdefault(int(i), (t, bool(ts.terminated[i]), bool(ts.truncated[i]), float(ts.final_obs[i, 0])))
    assert ends[0][1:3] == (True, False) and ends[0][0] <= 5 and ends[0][3] > 3.0
    assert ends[1][:3] == (8, False, True) and ends[1][3] < -6.0
