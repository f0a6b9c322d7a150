"""Extension from outside the package: a new algorithm, a user surrogate and a user env, each defined
in this file and trained by prpo without touching a prpo file."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

import prpo
from prpo import algorithms, objectives, registry
from prpo.algorithm import Algorithm, register
from prpo.cli import main as cli_main
from prpo.config import ConfigError
from prpo.registry import hyperparameter, register_surrogate

# -- a new algorithm: PPO's clip on advantages times a sign-and-scale of its own ------------------


def scaled_clip(log_ratio, adv, hp):
    """PPO-clip on ``adv_scale · A``: ``adv_scale = 1`` is PPO, ``adv_scale = −1`` descends the return."""
    return objectives.ppo_clip(log_ratio, hp.adv_scale * adv, hp.clip_eps)


@pytest.fixture(scope="module")
def scaled_ppo():
    register_surrogate("scaled_clip", scaled_clip, options={
        "adv_scale": hyperparameter(1.0, "multiplies the advantages before the clip", lambda v: v != 0, "!= 0"),
    })
    algo = register(Algorithm(
        name="scaled_ppo",
        description="PPO on scaled advantages (a test algorithm defined outside the package)",
        overrides=dict(objective="scaled_clip"),
    ))
    yield algo
    registry.ALGORITHMS.pop("scaled_ppo")
    registry.SURROGATES.pop("scaled_clip")


def test_a_new_algorithm_registered_from_outside_trains_and_sweeps_its_own_hyperparameter(scaled_ppo, capsys):
    """PPO's CartPole settings at 6e4 steps: adv_scale = 1 learns (measured on 8 CPU seeds: final
    returns 155–388; random ≈ 22), adv_scale = −1 unlearns (8.9–9.2, the shortest episodes), in one
    compile of a 2-setting grid; a setting equals the same setting trained alone."""
    cfg = algorithms.get("scaled_ppo").config("CartPole-v1", total_timesteps=60_000)
    assert cfg.objective == "scaled_clip" and cfg.hp.adv_scale == 1.0
    with pytest.raises(ConfigError, match="adv_scale"):
        algorithms.get("scaled_ppo").config("CartPole-v1", adv_scale=0.0)
    with pytest.raises(ConfigError, match="does not use it"):  # another algorithm's hyperparameter
        algorithms.get("ppo").config("CartPole-v1", adv_scale=2.0)
    result = prpo.run_experiment(cfg, seeds=2, grid={"adv_scale": [1.0, -1.0]}, progress=False)
    final = np.asarray(result.summary["final_returns"])  # [2 settings, 2 seeds]
    assert final[0].mean() >= 60 and final[1].mean() <= 15, final
    alone = prpo.run_experiment(cfg.replace(adv_scale=-1.0), seeds=2, progress=False)
    # the same run: equal to rounding over the first updates (the grid's batched hyperparameter
    # and the alone run's scalar one are different programs, so XLA may round them differently,
    # and 117 updates of CartPole amplify a 1-ulp difference into another trajectory on some CPUs)
    np.testing.assert_allclose(np.asarray(alone.metrics["loss"])[0, :, :5], np.asarray(result.metrics["loss"])[1, :, :5],
                               rtol=1e-4, atol=1e-6)
    assert np.asarray(alone.summary["final_returns"]).mean() <= 15  # and the same outcome
    # the CLI knows it: `prpo list` shows the algorithm and its hyperparameter, `--set` sets it
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "scaled_ppo" in out and "adv_scale" in out and "scaled_clip" in out
    from prpo.cli import build_parser, config_from_args

    cfg2, _ = config_from_args(build_parser().parse_args(["train", "scaled_ppo", "--set", "adv_scale=0.5"]))
    _, grid = config_from_args(build_parser().parse_args(["train", "scaled_ppo", "--grid", "adv_scale=1,2"]))
    assert cfg2.hp.adv_scale == 0.5 and grid == {"adv_scale": [1.0, 2.0]}


def test_a_user_surrogate_through_make_train():
    """``make_train(cfg, surrogate=f)``: PPO-clip written by the user gives PPO's parameters
    exactly; a surrogate with zero loss leaves the actor where it started."""
    cfg = prpo.preset("ppo-cartpole", num_envs=4, num_steps=16, total_timesteps=4 * 16 * 2, num_minibatches=2)
    key = jax.random.key(3)
    ref, _ = jax.jit(prpo.make_train(cfg).train)(key, cfg.hp)
    mine, _ = jax.jit(prpo.make_train(cfg, surrogate=lambda lr, a, hp: objectives.ppo_clip(lr, a, hp.clip_eps)).train)(key, cfg.hp)
    for x, y in zip(jax.tree.leaves(ref.params), jax.tree.leaves(mine.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    frozen_cfg = cfg.replace(ent_coef=0.0)
    trainer = prpo.make_train(frozen_cfg, surrogate=lambda lr, a, hp: (0.0 * lr, {}))
    s0 = trainer.init(key, frozen_cfg.hp)
    s1, _ = jax.jit(trainer.train)(key, frozen_cfg.hp)
    for x, y in zip(jax.tree.leaves(s0.params["params"]["actor"]), jax.tree.leaves(s1.params["params"]["actor"])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.allclose(s0.params["params"]["critic"]["Dense_0"]["kernel"], s1.params["params"]["critic"]["Dense_0"]["kernel"])
    with pytest.raises(ConfigError, match="surrogate must be a function"):
        prpo.make_train(cfg, surrogate=123)


# -- bring your own env: a gymnax-API env defined here ---------------------------------------------


@struct.dataclass
class MatchState(environment.EnvState):
    target: jax.Array
    time: int


@struct.dataclass
class MatchParams(environment.EnvParams):
    max_steps_in_episode: int = 10


class MatchTheSign(environment.Environment[MatchState, MatchParams]):
    """Each step shows a random ±1 cue (observation ``[cue]``); action 1 pays 1 if the cue is +1, action 0
    pays 1 if it is −1, else 0. Episodes are truncated after 10 steps: random play scores 5, the
    optimal policy 10."""

    @property
    def default_params(self):
        return MatchParams()

    def step_env(self, key, state, action, params):
        reward = (action == (state.target > 0)).astype(jnp.float32)
        nxt = MatchState(target=jnp.where(jax.random.bernoulli(key), 1.0, -1.0), time=state.time + 1)
        return self.get_obs(nxt), nxt, reward, jnp.bool_(False), {}

    def reset_env(self, key, params):
        state = MatchState(target=jnp.where(jax.random.bernoulli(key), 1.0, -1.0), time=0)
        return self.get_obs(state), state

    def get_obs(self, state, params=None, key=None):
        return jnp.reshape(state.target, (1,)).astype(jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)


def test_ppo_trains_on_a_user_env_object():
    """PPO on MatchTheSign passed as an object: 4 envs × 16 steps, 3e4 steps. Measured on 8 CPU
    seeds: every final return 10, the optimum (random play scores 5)."""
    env = MatchTheSign()
    cfg = algorithms.get("ppo").config("CartPole-v1", num_envs=4, num_steps=16, total_timesteps=30_000, lr=3e-3)
    result = prpo.run_experiment(cfg, seeds=2, env=env, progress=False)
    final = np.asarray(result.summary["final_returns"])
    assert final.mean() >= 9.0, final
    assert result.summary["env"] == "MatchTheSign"
    # the spec came from the object: one observation, two actions, a 10-step limit
    trainer = prpo.make_train(cfg, env=(env, env.default_params.replace(max_steps_in_episode=4)))
    assert trainer.env.spec.obs_shape == (1,) and trainer.env.spec.max_episode_steps == 4
    score = prpo.evaluate(trainer, jax.tree.map(lambda x: x[0, 0], result.state), jax.random.key(0), num_episodes=16)
    assert float(score) == pytest.approx(4.0)  # greedy play of the trained policy: every step right
    with pytest.raises(ConfigError, match="missing"):
        prpo.make_train(cfg, env=object())


def test_a_collect_hook_records_per_step_data_that_reaches_targets_and_the_batch():
    """An algorithm's ``collect`` adds ``traj.aux["step"] = t``; its ``targets`` sets the advantages to
    ``aux["step"]`` and the returns to ``aux["step"]·10``; its loss logs what the minibatches hold.
    Over whole epochs the means are (T − 1)/2 and 10·(T − 1)/2; without the aux path (or with a
    wrong flattening of [T, N] vs the batch) the loss would see other values or fail."""
    from prpo.rollout import collect_with

    def collect(ctx, behaviour, params, env_state, obs, key):
        env_state, last_obs, traj, stats = collect_with(ctx, behaviour, params, env_state, obs, key)
        t = jnp.broadcast_to(jnp.arange(ctx.cfg.num_steps, dtype=jnp.float32)[:, None], traj.reward.shape)
        return env_state, last_obs, traj.replace(aux={**traj.aux, "step": t}), stats

    def targets(cfg, hp, rewards, values, next_values, terminated, truncated, axis_name=None, aux=None):
        return aux["step"], 10.0 * aux["step"]

    def make_loss(cfg, policy, surrogate, axis_name=None):
        def loss(params, mb, hp, key, progress=0.0):
            lr, extra = policy.log_ratio(params, mb.obs, mb.action, mb.aux, key)
            same = jnp.max(jnp.abs(mb.advantages - mb.aux["step"]))  # each sample's own step index
            return -(lr * 0.0).mean(), {"loss": (lr * 0.0).mean(), "adv_mean": mb.advantages.mean(),
                                        "ret_mean": mb.returns.mean(), "adv_vs_aux": same}
        return loss

    register(Algorithm(name="_step_marker", description="test: aux from collect", collect=collect, targets=targets,
                       make_loss=make_loss))
    try:
        cfg = algorithms.get("_step_marker").config("CartPole-v1", num_envs=4, num_steps=8, total_timesteps=64,
                                                    num_minibatches=2, update_epochs=2)
        trainer = prpo.train.make_train(cfg)
        _, m = jax.jit(trainer.train)(jax.random.key(0), cfg.hp)
    finally:
        registry.ALGORITHMS.pop("_step_marker")
    np.testing.assert_allclose(np.asarray(m["adv_mean"]), 3.5, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["ret_mean"]), 35.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(m["adv_vs_aux"]), 0.0)
