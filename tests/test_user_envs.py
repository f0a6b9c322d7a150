"""Bring your own env: ``prpo.envs.as_vec_env`` / ``spec_of`` with gymnax env objects, objects implementing
prpo's VecEnv protocol, wrong objects, and the message for brax envs without the optional brax extra."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from prpo import envs
from prpo.envs import Box, Discrete, EnvSpec, TimeStep, VecEnv, as_vec_env, env_family, make_env, spec_of

# --------------------------------------------------------------------------- a tiny gymnax-API env


@struct.dataclass
class ChainState(environment.EnvState):
    pos: jax.Array
    time: int


@struct.dataclass
class ChainParams(environment.EnvParams):
    length: int = 4
    step_reward: float = -0.1
    goal_reward: float = 1.0
    max_steps_in_episode: int = 6


class Chain(environment.Environment[ChainState, ChainParams]):
    """A chain of ``length`` cells; start in cell 0; action 1 moves right, 0 left (clipped at 0).
    Reaching the last cell pays ``goal_reward`` and terminates; every other step pays ``step_reward``.
    The observation is ``[pos, time]``."""

    @property
    def default_params(self) -> ChainParams:
        return ChainParams()

    def step_env(self, key, state, action, params):
        pos = jnp.clip(state.pos + 2 * action - 1, 0, params.length - 1)
        state = ChainState(pos=pos, time=state.time + 1)
        at_goal = pos == params.length - 1
        reward = jnp.where(at_goal, params.goal_reward, params.step_reward)
        return self.get_obs(state), state, reward, at_goal, {}

    def reset_env(self, key, params):
        state = ChainState(pos=jnp.int32(0), time=0)
        return self.get_obs(state), state

    def get_obs(self, state, params=None, key=None):
        return jnp.stack([state.pos, state.time]).astype(jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(0.0, 100.0, (2,), jnp.float32)


def chain_reference(actions, length=4, step_reward=-0.1, goal_reward=1.0, max_steps=6):
    """The TimeStep stream of ``actions [T, N]`` from a plain Python loop over the chain's rules."""
    T, N = actions.shape
    pos, time, ret, n = [0] * N, [0] * N, [0.0] * N, [0] * N
    rows = []
    for t in range(T):
        row = {k: [] for k in ("obs", "reward", "terminated", "truncated", "final_obs", "episode_return", "episode_length")}
        for i in range(N):
            pos[i] = min(max(pos[i] + (1 if actions[t, i] == 1 else -1), 0), length - 1)
            time[i] += 1
            term = pos[i] == length - 1
            trunc = (time[i] >= max_steps) and not term
            r = goal_reward if term else step_reward
            ret[i] += r
            n[i] += 1
            row["final_obs"].append([pos[i], time[i]])
            row["reward"].append(r)
            row["terminated"].append(term)
            row["truncated"].append(trunc)
            row["episode_return"].append(ret[i])
            row["episode_length"].append(n[i])
            if term or trunc:
                pos[i], time[i], ret[i], n[i] = 0, 0, 0.0, 0
            row["obs"].append([pos[i], time[i]])
        rows.append({k: np.asarray(v) for k, v in row.items()})
    return rows


# env 0 walks right (terminates every 3 steps), env 1 walks left (truncated every 6 steps), env 2 mixes
ACTIONS = np.array([[1, 0, a] for a in [1, 1, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0]], np.int32)


def run_actions(env, actions, per_env_keys=False):
    state, obs0 = env.reset(jax.random.key(0))
    step = jax.jit(env.step)
    out = []
    for t, a in enumerate(actions):
        key = jax.random.key(t + 1)
        if per_env_keys:
            key = jax.random.split(key, env.num_envs)
        state, ts = step(state, jnp.asarray(a), key)
        out.append(jax.tree.map(np.asarray, ts))
    return np.asarray(obs0), state, out


def assert_matches(rows, ref):
    assert len(rows) == len(ref)
    for t, (ts, r) in enumerate(zip(rows, ref)):
        assert isinstance(ts, TimeStep)
        msg = f"t={t}"
        np.testing.assert_array_equal(ts.obs, r["obs"], err_msg=msg)
        np.testing.assert_array_equal(ts.final_obs, r["final_obs"], err_msg=msg)
        np.testing.assert_allclose(ts.reward, r["reward"], rtol=1e-6, err_msg=msg)
        np.testing.assert_array_equal(ts.terminated, r["terminated"], err_msg=msg)
        np.testing.assert_array_equal(ts.truncated, r["truncated"], err_msg=msg)
        np.testing.assert_allclose(ts.episode_return, r["episode_return"], rtol=1e-5, atol=1e-6, err_msg=msg)
        np.testing.assert_array_equal(ts.episode_length, r["episode_length"], err_msg=msg)
        assert ts.obs.dtype == ts.final_obs.dtype == ts.reward.dtype == np.float32
        assert ts.terminated.dtype == ts.truncated.dtype == np.bool_ and ts.episode_length.dtype == np.int32


def test_gymnax_object_matches_python_loop():
    chain = Chain()
    env = as_vec_env(chain, 3)
    assert isinstance(env, VecEnv) and env.family == "gymnax" and env.num_envs == 3
    assert env.spec == EnvSpec("Chain", (2,), Discrete(2), 6)
    assert spec_of(chain) == env.spec and env_family(chain) == "gymnax"
    obs0, state, rows = run_actions(env, ACTIONS)
    np.testing.assert_array_equal(obs0, np.zeros((3, 2)))
    ref = chain_reference(ACTIONS)
    assert_matches(rows, ref)
    # the stream has terminations (env 0) and truncations (env 1) to check
    assert np.array([r.terminated[0] for r in rows]).sum() == 6
    assert np.array([r.truncated[1] for r in rows]).sum() == 3
    # the carried counters are those of the ongoing episodes
    done = ref[-1]["terminated"] | ref[-1]["truncated"]
    np.testing.assert_array_equal(state.episode_length, np.where(done, 0, ref[-1]["episode_length"]))
    # per-env keys ([N] keys) give the same stream (the chain ignores its keys)
    assert_matches(run_actions(env, ACTIONS, per_env_keys=True)[2], ref)


def test_gymnax_object_identity_and_with_num_envs():
    chain = Chain()
    a, b = as_vec_env(chain, 3), as_vec_env((chain, chain.default_params), 3)
    assert a == b and hash(a) == hash(b)  # the same object and (equal) params
    assert a != as_vec_env(Chain(), 3)  # another object
    assert a != as_vec_env(chain, 3, max_episode_steps=5)
    assert a != as_vec_env((chain, ChainParams(length=5)), 3)
    assert a != make_env("CartPole-v1", 3)
    five = a.with_num_envs(5)
    assert five.num_envs == 5 and five == as_vec_env(chain, 5) and five.spec == a.spec
    assert a.with_num_envs(3) is a
    assert "Chain" in repr(a)
    # hashable: usable as a static argument
    f = jax.jit(lambda e, k: e.reset(k)[1], static_argnums=0)
    assert f(a, jax.random.key(0)).shape == (3, 2) and f(five, jax.random.key(0)).shape == (5, 2)
    _, _, rows = run_actions(five, np.ones((4, 5), np.int32))
    assert_matches(rows, chain_reference(np.ones((4, 5), np.int32)))


def test_gymnax_object_with_params_and_overrides():
    chain = Chain()
    params = ChainParams(length=5, max_steps_in_episode=50)
    env = as_vec_env((chain, params), 3, max_episode_steps=7, env_params={"goal_reward": 2.5})
    assert env.spec == EnvSpec("Chain", (2,), Discrete(2), 7)
    assert spec_of((chain, params), max_episode_steps=7) == env.spec
    _, _, rows = run_actions(env, ACTIONS)
    ref = chain_reference(ACTIONS, length=5, goal_reward=2.5, max_steps=7)
    assert_matches(rows, ref)
    assert any(r.terminated[0] for r in rows) and any(r.truncated[1] for r in rows)
    # env_params alone (max_steps_in_episode among them), with the default params
    env = as_vec_env(chain, 3, env_params={"step_reward": -1.0, "max_steps_in_episode": 2})
    assert env.spec.max_episode_steps == 2
    assert_matches(run_actions(env, ACTIONS)[2], chain_reference(ACTIONS, step_reward=-1.0, max_steps=2))
    with pytest.raises(ValueError, match="disagrees"):
        as_vec_env(chain, 3, max_episode_steps=4, env_params={"max_steps_in_episode": 5})
    with pytest.raises(ValueError, match=r"\['widht'\] are not fields"):
        spec_of(chain, env_params={"widht": 1.0})
    with pytest.raises(ValueError, match="env_kwargs"):
        as_vec_env(chain, 3, env_kwargs={"length": 3})
    with pytest.raises(ValueError, match="backend"):
        as_vec_env(chain, 3, backend="mjx")


def test_gymnax_object_is_the_named_env_wrapper():
    """gymnax's CartPole as an object steps exactly like the named CartPole-v1."""
    import gymnax

    genv, params = gymnax.make("CartPole-v1")
    named = make_env("CartPole-v1", 4, max_episode_steps=15)
    obj = as_vec_env((genv, params), 4, max_episode_steps=15)
    assert obj.spec == named.spec and obj != named

    def run(env):
        state, obs = env.reset(jax.random.key(3))
        out = [obs]
        for t in range(20):
            state, ts = env.step(state, jnp.full((4,), t % 2, jnp.int32), jax.random.key(10 + t))
            out.append(ts)
        return jax.tree.map(np.asarray, out)

    jax.tree.map(np.testing.assert_array_equal, run(obj), run(named))


def test_name_is_make_env():
    assert as_vec_env("CartPole-v1", 4) == make_env("CartPole-v1", 4)
    assert as_vec_env("Pendulum-v1", 2, max_episode_steps=9).spec.max_episode_steps == 9
    assert spec_of("gymnax/CartPole-v1") == envs.env_spec("CartPole-v1")
    with pytest.raises(ValueError, match="num_envs"):
        as_vec_env(Chain(), 0)


# --------------------------------------------------------------------------- an object implementing the protocol


class VecBandit:
    """``num_envs`` two-armed one-step bandits; arm ``a`` of env ``i`` pays ``(i + 1) * a``; the
    observation is the step count. Counts its ``with_num_envs`` calls."""

    def __init__(self, num_envs=2):
        self.num_envs = num_envs
        self.spec = EnvSpec("VecBandit", (1,), Discrete(2), 1)
        self.copies_made = 0

    def with_num_envs(self, n):
        self.copies_made += 1
        return VecBandit(n)

    def reset(self, key):
        return jnp.zeros((self.num_envs,), jnp.int32), jnp.zeros((self.num_envs, 1), jnp.float32)

    def step(self, state, action, key):
        n = self.num_envs
        reward = (jnp.arange(n) + 1.0) * action
        state = state + 1
        obs = jnp.zeros((n, 1), jnp.float32)
        final = state[:, None].astype(jnp.float32)
        done = jnp.ones((n,), bool)
        ts = TimeStep(obs=obs, reward=reward, terminated=done, truncated=~done, final_obs=final,
                      episode_return=reward, episode_length=jnp.ones((n,), jnp.int32))
        return state, ts


class NoCopies:
    spec = EnvSpec("NoCopies", (1,), Box(-1.0, 1.0, (2,)), 10)
    num_envs = 4
    family = "mine"

    def reset(self, key):
        return (), jnp.zeros((4, 1))

    def step(self, state, action, key):
        raise NotImplementedError


def test_protocol_object_passes_through():
    b = VecBandit(2)
    assert as_vec_env(b, 2) is b
    assert spec_of(b) is b.spec and env_family(b) == "custom"
    assert b.copies_made == 0
    five = as_vec_env(b, 5)
    assert b.copies_made == 1 and isinstance(five, VecBandit) and five.num_envs == 5
    state, obs = five.reset(jax.random.key(0))
    state, ts = jax.jit(five.step)(state, jnp.array([1, 0, 1, 1, 0]), jax.random.key(1))
    np.testing.assert_array_equal(ts.reward, [1.0, 0.0, 3.0, 4.0, 0.0])
    np.testing.assert_array_equal(ts.final_obs[:, 0], 1.0)
    # options that are not set are fine; set ones cannot be applied to an object
    assert as_vec_env(b, 2, max_episode_steps=None) is b
    with pytest.raises(ValueError, match=r"\['max_episode_steps'\] cannot be applied"):
        as_vec_env(b, 2, max_episode_steps=3)


def test_protocol_object_without_with_num_envs():
    o = NoCopies()
    assert as_vec_env(o, 4) is o and env_family(o) == "mine"
    with pytest.raises(ValueError, match=r"num_envs=4 but 8 are asked for.*with_num_envs\(n\)"):
        as_vec_env(o, 8)


def test_prpo_vecenvs_are_protocol_objects():
    cp = make_env("CartPole-v1", 4, max_episode_steps=30)
    assert as_vec_env(cp, 4) is cp and spec_of(cp) is cp.spec and env_family(cp) == "gymnax"
    eight = as_vec_env(cp, 8)
    assert eight == make_env("CartPole-v1", 8, max_episode_steps=30) and eight.num_envs == 8
    assert cp.num_envs == 4  # unchanged


# --------------------------------------------------------------------------- wrong objects


class OnlyReset:
    def reset(self, key):
        return None, None


class BadSpec(NoCopies):
    spec = ("NoCopies", (1,))


@pytest.mark.parametrize(
    "obj, missing",
    [
        (42, "'spec', 'num_envs', 'reset', 'step'"),
        (object(), "'spec', 'num_envs', 'reset', 'step'"),
        (OnlyReset(), "'spec', 'num_envs', 'step'"),
        ((OnlyReset(), None), "'spec', 'num_envs', 'reset', 'step'"),  # a tuple whose first item is no gymnax env
    ],
)
def test_wrong_objects_name_what_is_missing(obj, missing):
    for call in (lambda: as_vec_env(obj, 2), lambda: spec_of(obj), lambda: env_family(obj)):
        with pytest.raises(ValueError) as e:
            call()
        msg = str(e.value)
        assert "is not a gymnax Environment and does not implement prpo's VecEnv protocol" in msg
        assert f"missing {missing} " in msg, msg
        assert repr(obj)[:20] in msg


def test_wrong_protocol_parts():
    with pytest.raises(ValueError, match="'spec' must be a prpo.envs.EnvSpec"):
        as_vec_env(BadSpec(), 4)

    class StepNotCallable(NoCopies):
        step = 3

    with pytest.raises(ValueError, match="'step' must be methods"):
        spec_of(StepNotCallable())

    class ZeroEnvs(NoCopies):
        num_envs = 0

    with pytest.raises(ValueError, match="'num_envs' must be a positive int"):
        as_vec_env(ZeroEnvs(), 4)

    class WrongCopies(VecBandit):
        def with_num_envs(self, n):
            return VecBandit(n + 1)

    with pytest.raises(ValueError, match=r"with_num_envs\(3\) returned an env with num_envs=4"):
        as_vec_env(WrongCopies(2), 3)


# --------------------------------------------------------------------------- brax without the optional extra


@pytest.fixture
def without_brax(monkeypatch):
    """brax not importable: ``import brax`` raises ImportError (as when the extra is not installed)."""
    for name in [m for m in sys.modules if m == "brax" or m.startswith("brax.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "brax", None)
    yield


def test_missing_brax_message(without_brax):
    for call in (
        lambda: make_env("ant", 2),
        lambda: as_vec_env("brax/ant", 2, backend="positional"),
        lambda: envs.env_spec("ant"),
        lambda: spec_of("ant", episode_length=10),
    ):
        with pytest.raises(ValueError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith("brax env 'ant' needs the optional brax extra: pip install 'prpo[brax]'"), msg
        assert "\n" not in msg
    # names still resolve and errors still list brax's names, without brax
    assert env_family("hopper") == env_family("brax/walker2d") == "brax"
    assert "brax" not in envs.list_envs() and "CartPole-v1" in envs.list_envs()["gymnax"]
    with pytest.raises(ValueError, match=r"Did you mean 'brax/ant'.*optional brax extra.*halfcheetah"):
        envs.env_spec("brax/ants")
    # option errors come first, as with brax installed
    with pytest.raises(ValueError, match="backend='physx'"):
        make_env("ant", 2, backend="physx")
    # gymnax envs are unaffected
    assert make_env("CartPole-v1", 2).spec.obs_shape == (4,)
