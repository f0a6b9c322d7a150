"""Data parallelism (prpo.parallel): equivalence over 1/2/4 devices, seeds over a mesh axis,
the CLI, and the exact cross-device statistics.

The multi-device checks run in one subprocess with ``--xla_force_host_platform_device_count=4``
(tests/_parallel_worker.py) so that the rest of the suite keeps its single CPU device.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prpo import normalization as norm
from prpo.advantages import normalize
from prpo.config import Config, ConfigError
from prpo.parallel import make_mesh, make_sharded_train, state_specs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)  # the worker sets its own
    return env


def test_one_two_four_devices_same_parameters_seeds_axis_and_cli(tmp_path):
    """One subprocess, 4 fake CPU devices: (1) two updates on 1, 2, 4 devices give the same
    parameters, normaliser statistics, env observations and metrics; (2) seeds laid over a
    second mesh axis train like each seed alone; (3) ``python -m prpo train --devices 2 --seed-devices 2`` writes its files."""
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "_parallel_worker.py"), str(tmp_path / "cli")],
        env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    for line in ("equivalence ok", "seeds axis ok", "seed groups chunked ok", "pqn ok", "cli ok"):
        assert line in proc.stdout
    assert (tmp_path / "cli" / "summary.json").exists()


def test_cross_device_statistics_are_exact():
    """rms_update / normalize with an axis name equal the global computation (4 equal shards,
    here a vmapped named axis standing in for devices)."""
    x = jax.random.normal(jax.random.key(0), (4, 6, 3)) * jnp.arange(1.0, 5.0)[:, None, None] + 2.0
    rms0 = norm.rms_update(norm.rms_init(3), jnp.ones((2, 3)), axis=0)
    whole = norm.rms_update(rms0, x.reshape(24, 3), axis=0)
    shards = jax.vmap(lambda s: norm.rms_update(rms0, s, axis=0, axis_name="d"), axis_name="d")(x)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(shards)):
        np.testing.assert_allclose(np.broadcast_to(a, b.shape), b, rtol=1e-5, atol=1e-6)
    y = jax.vmap(lambda s: normalize(s, axis_name="d"), axis_name="d")(x)
    np.testing.assert_allclose(y.reshape(24, 3), normalize(x.reshape(24, 3)), rtol=1e-4, atol=1e-5)


def test_devices_validation_and_specs():
    with pytest.raises(ConfigError, match="devices=3 must divide num_envs=8"):
        Config(num_envs=8, devices=3)
    with pytest.raises(ConfigError, match="devices=4.*num_minibatches=8"):
        Config(num_envs=8, num_steps=2, total_timesteps=64, num_minibatches=8, devices=4)
    with pytest.raises(ConfigError, match="devices=64 needs 64 devices, but only 1"):
        make_mesh(64)
    with pytest.raises(ConfigError, match="expected a positive integer or 'all'"):
        make_mesh("many")
    assert make_mesh("all").shape == {"seeds": 1, "data": jax.device_count()}
    # per-env leaves are sharded over "data", the rest replicated
    trainer = make_sharded_train(Config(num_envs=4, num_steps=8, total_timesteps=64), make_mesh(1))
    state = jax.eval_shape(trainer.init, jax.random.key(0), trainer.config.hp)
    specs = state_specs(state)
    assert specs.obs == jax.sharding.PartitionSpec("data") and specs.reward_scaler.ret == jax.sharding.PartitionSpec("data")
    assert specs.obs_rms.mean == jax.sharding.PartitionSpec() and specs.key == jax.sharding.PartitionSpec()
    assert all(s == jax.sharding.PartitionSpec("data") for s in jax.tree.leaves(specs.env_state))
