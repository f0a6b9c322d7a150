"""2 fake CPU devices (run by tests/test_lifecycle.py in a subprocess): a data-parallel run stopped
and resumed equals the straight one bit for bit; its checkpoint loads onto one device and resumes
there (devices 2 -> 1)."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import signal  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import prpo  # noqa: E402
from prpo import experiment  # noqa: E402


def same(a, b):
    raw = lambda x: np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)  # noqa: E731
    return all(np.array_equal(raw(x), raw(y), equal_nan=True) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main(tmp):
    assert jax.device_count() == 2
    cfg = prpo.preset("ppo-cartpole", num_envs=4, num_steps=16, update_epochs=2, num_minibatches=2,
                      total_timesteps=4 * 16 * 6, devices=2, normalize_obs=True)
    grid = {"lr": [1e-3, 3e-4]}
    straight = prpo.run_experiment(cfg, seeds=2, grid=grid, out_dir=f"{tmp}/a", progress=False, checkpoint_every=2)
    original = experiment.MetricsStream.write

    def write(self, chunk, first):
        original(self, chunk, first)
        signal.raise_signal(signal.SIGINT)

    experiment.MetricsStream.write = write
    try:
        prpo.run_experiment(cfg, seeds=2, grid=grid, out_dir=f"{tmp}/b", progress=False, checkpoint_every=2)
        raise AssertionError("not interrupted")
    except experiment.RunInterrupted:
        pass
    experiment.MetricsStream.write = original
    resumed = prpo.run_experiment(resume=f"{tmp}/b", progress=False)
    assert resumed.summary["resumed_at_update"] == 2
    assert same(straight.state, resumed.state), "2-device resume differs"
    assert all(np.array_equal(straight.metrics[k], resumed.metrics[k], equal_nan=True) for k in straight.metrics)
    print("two-device resume ok")
    _, state = prpo.load(f"{tmp}/a")  # onto one device
    assert same(straight.state, state) and len(jax.tree.leaves(state)[0].devices()) == 1
    experiment.MetricsStream.write = write
    try:
        prpo.run_experiment(cfg, seeds=2, grid=grid, out_dir=f"{tmp}/c", progress=False, checkpoint_every=2)
    except experiment.RunInterrupted:
        pass
    experiment.MetricsStream.write = original
    one = prpo.run_experiment(cfg.replace(devices=1), resume=f"{tmp}/c", progress=False)
    assert one.summary["devices"] == 1 and one.summary["resumed_at_update"] == 2
    assert int(one.state.update[0, 0]) == 6
    print("2 -> 1 devices ok")


if __name__ == "__main__":
    main(sys.argv[1])
