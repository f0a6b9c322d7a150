"""Group-rollout baselines (RLOO, ReMax, GRPO, Dr. GRPO, REINFORCE++): NumPy references for the
reward-to-go and each baseline, the clone of group leaders, and the refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prpo
from prpo.algorithms import group as G
from prpo.config import ConfigError


def _np_rtg(r, d, gamma):
    out, g = np.zeros_like(r), np.zeros(r.shape[1], r.dtype)
    for t in reversed(range(r.shape[0])):
        g = r[t] + gamma * (1 - d[t]) * g
        out[t] = g
    return out


def test_reward_to_go_matches_loop():
    rng = np.random.default_rng(0)
    r, d = rng.random((7, 5), np.float32), rng.random((7, 5)) < 0.3
    np.testing.assert_allclose(G.reward_to_go(jnp.asarray(r), jnp.asarray(d), 0.9), _np_rtg(r, d, 0.9), rtol=1e-6)


@pytest.mark.parametrize("baseline", ["rloo", "grpo", "drgrpo", "global", "remax"])
def test_baselines_match_numpy(baseline):
    rng = np.random.default_rng(1)
    R, greedy = rng.random((3, 8), np.float32), rng.random((3, 2), np.float32)
    got = np.asarray(G.group_advantages(jnp.asarray(R), 4, baseline, jnp.asarray(greedy)))
    want = np.zeros_like(R)
    for t in range(3):
        for i in range(8):
            grp = R[t, 4 * (i // 4):4 * (i // 4) + 4]
            if baseline == "rloo":
                want[t, i] = R[t, i] - np.mean(np.delete(grp, i % 4))
            elif baseline == "grpo":
                want[t, i] = (R[t, i] - grp.mean()) / (grp.std() + 1e-8)
            elif baseline == "drgrpo":
                want[t, i] = R[t, i] - grp.mean()
            elif baseline == "remax":
                want[t, i] = R[t, i] - greedy[t, i // 4]
            else:
                want[t, i] = (R[t, i] - R.mean()) / (R.std() + 1e-8)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_clone_leaders():
    x = {"a": jnp.arange(6.0), "b": jnp.arange(12.0).reshape(6, 2), "c": jnp.ones(())}
    y = G.clone_leaders(x, 6, 3)
    np.testing.assert_array_equal(y["a"], [0, 0, 0, 3, 3, 3])
    np.testing.assert_array_equal(y["b"][:, 1], [1, 1, 1, 7, 7, 7])
    assert float(y["c"]) == 1.0


def test_group_members_start_from_one_state():
    """The first observation of every member of a group is its leader's."""
    cfg = prpo.algorithms.get("rloo").config("CartPole-v1", total_timesteps=16 * 128)
    trainer = prpo.train.make_train(cfg)
    state = trainer.init(jax.random.key(0), cfg.hp)
    state = state.replace(obs=state.obs + jnp.arange(16.0)[:, None])  # every env distinct
    cloned = np.asarray(G.clone_leaders(state.obs, 16, 4))
    np.testing.assert_array_equal(cloned.reshape(4, 4, -1), np.repeat(np.asarray(state.obs)[::4][:, None], 4, axis=1))


@pytest.mark.parametrize("name,over,needle", [
    ("rloo", dict(group_size=3), "group_size=3 must divide num_envs=16"),
    ("rloo", dict(group_size=1), "group_size must be >= 2"),
    ("remax", dict(normalize_reward=True), "normalize_reward=false"),
    ("rloo", dict(group_baseline="mean"), "allowed values"),
])
def test_refusals(name, over, needle):
    with pytest.raises(ConfigError, match=needle):
        prpo.algorithms.get(name).config("CartPole-v1", **over)
