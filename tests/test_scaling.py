"""Scaling to many envs on one device: memory that does not grow with the number of updates,
and the co-scaling option (fixed minibatch size, num_minibatches follows num_envs)."""

import jax
import pytest

from prpo.config import Config, ConfigError
from prpo.train import make_train


def _memory(cfg):
    trainer = make_train(cfg)
    compiled = jax.jit(trainer.train).lower(jax.random.key(0), cfg.hp).compile()
    m = compiled.memory_analysis()
    return m.temp_size_in_bytes, m.output_size_in_bytes, m.argument_size_in_bytes


def test_peak_memory_does_not_grow_with_updates():
    """4× the updates: the same temporary (working) memory; the output grows only by the
    per-update scalar metrics (a few bytes per update), never by envs × steps."""
    base = Config(num_envs=16, num_steps=8, update_epochs=1, num_minibatches=2, actor_hidden=(16, 16),
                  total_timesteps=16 * 8 * 3)
    temp1, out1, _ = _memory(base)
    temp4, out4, _ = _memory(base.replace(total_timesteps=16 * 8 * 12))
    if temp1 is None:  # pragma: no cover - backend without memory analysis
        pytest.skip("no memory analysis on this backend")
    assert temp4 == temp1
    n_metrics = len(jax.eval_shape(make_train(base).update, jax.eval_shape(make_train(base).init, jax.random.key(0), base.hp), base.hp)[1])
    assert out4 - out1 <= 9 * n_metrics * 4 + 64  # 9 more updates × scalar metrics (float32/int32)


def test_co_scaling_keeps_minibatch_size():
    small = Config(num_envs=2048, num_steps=16, total_timesteps=2048 * 16, fixed_minibatch_size=8192)
    big = small.replace(num_envs=2**20, total_timesteps=2**20 * 16)
    assert small.num_minibatches == 4 and big.num_minibatches == 2048
    assert small.minibatch_size == big.minibatch_size == 8192
    assert big.hp.lr == small.hp.lr
    with pytest.raises(ConfigError, match="fixed_minibatch_size=3000 must divide"):
        small.replace(fixed_minibatch_size=3000)
