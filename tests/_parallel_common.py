"""Shared settings of the data-parallel tests (imported by worker subprocesses too)."""

from prpo.config import Config

# 8 envs split over 1, 2 or 4 devices; stratified minibatches are the same for any split, and
# both normalisers and per-minibatch advantage normalisation exercise the cross-device statistics.
TINY = Config(
    env="CartPole-v1", num_envs=8, num_steps=8, total_timesteps=8 * 8 * 2, update_epochs=2, num_minibatches=4,
    shuffle="stratified", normalize_obs=True, normalize_reward=True, actor_hidden=(16, 16),
)
