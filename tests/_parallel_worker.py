"""Data-parallel checks on 4 fake CPU devices, run by tests/test_parallel.py in a subprocess
(the device count must be set before JAX starts; the rest of the suite keeps one device)."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4 --xla_cpu_multi_thread_eigen=false"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _parallel_common import TINY  # noqa: E402

from prpo import parallel  # noqa: E402
from prpo.cli import main  # noqa: E402


def close(a, b, what):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5, err_msg=what)


def same_on_every_device(tree, what):
    for x in jax.tree.leaves(tree):
        shards = [np.asarray(s.data) for s in x.addressable_shards]
        for s in shards[1:]:
            np.testing.assert_array_equal(shards[0], s, err_msg=what)


def equivalence():
    """Two updates on 1, 2 and 4 devices: the same parameters, statistics and metrics."""
    assert jax.device_count() == 4
    out = {}
    for d in (1, 2, 4):
        trainer = parallel.make_sharded_train(TINY, parallel.make_mesh(d))
        state, metrics = jax.jit(trainer.train)(jax.random.key(0), TINY.hp)
        assert state.obs.shape == (TINY.num_envs, 4) and len(state.obs.sharding.device_set) == d
        same_on_every_device(state.params, f"params on {d} devices")
        out[d] = (state.params, state.opt_state, state.obs_rms, state.reward_scaler.rms, state.obs, metrics)
    for d in (2, 4):
        close(out[1], out[d], f"1 vs {d} devices")
    # the update really moved the parameters
    init = parallel.make_sharded_train(TINY, parallel.make_mesh(1)).init
    p0 = jax.jit(init)(jax.random.key(0), TINY.hp).params
    assert not np.allclose(jax.tree.leaves(p0)[-1], jax.tree.leaves(out[1][0])[-1])
    print("equivalence ok", flush=True)
    return out[1]


def seeds_axis(reference):
    """Seeds laid over a second mesh axis (2 seeds × 2 data devices) train like each alone."""
    keys = jax.random.split(jax.random.key(7), 2).at[0].set(jax.random.key(0))
    t22 = parallel.make_sharded_train(TINY, parallel.make_mesh(2, seed_devices=2))
    s22, m22 = jax.jit(jax.vmap(t22.train, in_axes=(0, None), spmd_axis_name="seeds"))(keys, TINY.hp)
    assert s22.obs.sharding.spec == jax.sharding.PartitionSpec("seeds", "data"), s22.obs.sharding
    same_on_every_device(jax.tree.map(lambda x: x[0], s22.params), "params, seed 0")
    close(jax.tree.map(lambda x: x[0], (s22.params, m22)), (reference[0], reference[-1]), "seed 0 vs alone")
    assert not np.allclose(m22["loss"][0], m22["loss"][1])
    print("seeds axis ok", flush=True)


def seeds_over_groups_chunked():
    """run_experiment with 2 seeds over 2 device groups and one data shard each, in chunks of
    several lengths (the state is fed back into the runner between chunks: a placement the runner
    does not expect used to end in a sharding error): each seed equals its key trained alone."""
    from prpo.experiment import run_experiment, seed_keys

    cfg = TINY.replace(total_timesteps=TINY.batch_size * 23)  # chunks of 5, 5, 5, 5 and 3
    res = run_experiment(cfg, seeds=2, seed_devices=2, chunks=5, progress=False)
    alone = jax.jit(parallel.make_sharded_train(cfg, parallel.make_mesh(1)).train)
    for k, key in enumerate(seed_keys(0, 2)):
        state, metrics = alone(key, cfg.hp)
        close(jax.tree.map(lambda x: np.asarray(x)[0, k], res.state.params), state.params, f"seed {k} vs alone")
        close(np.asarray(res.metrics["loss"])[0, k], metrics["loss"], f"seed {k} loss vs alone")
    print("seed groups chunked ok", flush=True)


def pqn_equivalence():
    """PQN through the same sharded update step: 1 vs 2 devices, with an in-loop evaluation."""
    from prpo import algorithms

    cfg = algorithms.get("pqn").config(
        "CartPole-v1", num_envs=8, num_steps=8, total_timesteps=8 * 8 * 2, num_minibatches=2, update_epochs=2,
        actor_hidden=(16, 16), shuffle="stratified", eval_every=1, eval_envs=4,
    )
    out = {}
    for d in (1, 2):
        trainer = parallel.make_sharded_train(cfg, parallel.make_mesh(d))
        state, metrics = jax.jit(trainer.train)(jax.random.key(1), cfg.hp)
        same_on_every_device(state.params, f"pqn params on {d} devices")
        assert np.isfinite(np.asarray(metrics["eval_return"])).all()
        out[d] = (state.params, metrics["td_loss"], metrics["target_mean"], metrics["eval_return"])
    close(out[1], out[2], "pqn: 1 vs 2 devices")
    print("pqn ok", flush=True)


def cli(out_dir):
    """`python -m prpo train --devices 2 --seed-devices 2` end to end."""
    rc = main(["train", "ppo", "--num-envs", "8", "--total-steps", "256", "--set", "num_steps=8",
               "--set", "update_epochs=1", "--set", "actor_hidden=16,16", "--devices", "2", "--seeds", "2",
               "--seed-devices", "2", "--no-progress", "--out", out_dir])
    assert rc == 0
    print("cli ok", flush=True)


if __name__ == "__main__":
    seeds_axis(equivalence())
    seeds_over_groups_chunked()
    pqn_equivalence()
    cli(sys.argv[1])
