"""Data parallelism over devices and hosts: a device mesh and ``jax.shard_map``.

::

    mesh = prpo.parallel.make_mesh(devices=4)                 # axes ("seeds", "data") = (1, 4)
    trainer = prpo.parallel.make_sharded_train(cfg, mesh)     # same interface as make_train's
    state, metrics = jax.jit(trainer.train)(key, cfg.hp)

Semantics (one training run over ``D`` devices of the ``"data"`` axis):

* **The env batch is split**: device ``d`` owns envs ``[d·N/D, (d+1)·N/D)`` (leaves of
  ``state.env_state``, ``state.obs`` and ``state.reward_scaler.ret`` are global ``[N, ...]``
  arrays sharded over ``"data"``). Env and action keys are derived *per env* from its global
  index (``fold_in``), so env ``i`` sees the same randomness on any number of devices.
* **Parameters, optimiser state, RNG key, normaliser statistics are replicated**: the
  parameter-init and minibatch-permutation keys are the same on every device, each minibatch
  gradient is ``lax.pmean`` of the local mean gradients (equal shards: the global minibatch's
  mean gradient), and observation / reward-return statistics merge the shards' moments
  exactly. Advantage normalisation (per batch or per minibatch) uses global statistics.
* **Metrics** are reduced over devices on device (episode sums are ``psum``-ed, losses
  averaged), so they are the same as for one device holding the whole batch.
* **Same parameters on 1, 2, 4, ... devices** with ``shuffle="stratified"``: its minibatches are
  unions of per-device groups that do not depend on ``D`` (tested up to float tolerance).
  With ``shuffle="samples"`` (default) or ``"envs"`` each device permutes its own shard with a
  shared key: the global minibatch is the union of local random minibatches — the same
  distribution of minibatches, but a different draw for each ``D``.
* ``D = 1`` here is *not* byte-identical to ``Config(devices=1)``'s default path (that one
  splits one key over the batch); it is the per-env-keyed run that every ``D`` reproduces.

Seeds (and hyperparameter settings) vmap *outside* the sharded functions; with a ``"seeds"``
mesh axis of size > 1 use ``jax.vmap(..., spmd_axis_name="seeds")`` to lay them over it
(:func:`prpo.run_experiment` does that for ``seed_devices > 1``). Multi-host: call
:func:`initialize_distributed` first in every process; the mesh then spans every host's
devices and the same program runs in lock-step everywhere (see docs/scaling.md).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from prpo.config import Config, ConfigError, check_split
from prpo.train import Trainer, make_train

__all__ = [
    "DATA",
    "SEEDS",
    "make_mesh",
    "make_sharded_train",
    "state_specs",
    "initialize_distributed",
    "fetch",
    "resolve_devices",
]

DATA = "data"  #: mesh axis over which the env batch is split
SEEDS = "seeds"  #: mesh axis over which seeds (vmapped) may be laid

_SHARDED_FIELDS = (".env_state", ".obs", ".reward_scaler.ret")  # per-env leaves of TrainState


def resolve_devices(devices) -> int:
    """``"all"`` -> the number of (global) devices; an int is returned as is."""
    if isinstance(devices, str):
        if devices.strip().lower() == "all":
            return jax.device_count()
        try:
            return int(devices)
        except ValueError:
            raise ConfigError(f"devices={devices!r}: expected a positive integer or 'all'") from None
    return devices


def make_mesh(devices: int | str | None = None, seed_devices: int = 1) -> Mesh:
    """A ``(seeds, data)`` mesh of ``seed_devices × devices`` devices (all of them if ``None``).

    Uses ``jax.devices()`` (every host's devices after :func:`initialize_distributed`).
    """
    available = jax.device_count()
    devices = available // seed_devices if devices is None else resolve_devices(devices)
    for name, value in (("devices", devices), ("seed_devices", seed_devices)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if seed_devices > available:
        raise ConfigError(
            f"seed_devices={seed_devices} needs at least {seed_devices} devices (one per seed group), but only "
            f"{available} {'is' if available == 1 else 'are'} available ({jax.default_backend()}); allowed: 1..{available}"
        )
    if devices * seed_devices > available:
        raise ConfigError(
            f"devices={devices}" + (f" × seed_devices={seed_devices}" if seed_devices > 1 else "")
            + f" needs {devices * seed_devices} devices, but only {available} are available "
            f"({jax.default_backend()}: {', '.join(sorted({d.device_kind for d in jax.devices()}))}); "
            f"allowed: 1..{available // seed_devices} or 'all'"
        )
    devs = np.asarray(jax.devices()[: devices * seed_devices]).reshape(seed_devices, devices)
    return Mesh(devs, (SEEDS, DATA), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def state_specs(state) -> object:
    """PartitionSpecs of a (local-shaped) TrainState: per-env leaves over ``"data"``, the rest replicated."""

    def spec(path, _):
        name = jax.tree_util.keystr(path)
        sharded = any(name == f or name.startswith((f + ".", f + "[")) for f in _SHARDED_FIELDS)
        return P(DATA) if sharded else P()

    return jax.tree_util.tree_map_with_path(spec, state)


def make_sharded_train(cfg: Config, mesh: Mesh | None = None, policy=None, network=None, surrogate=None,
                       env=None) -> Trainer:
    """A :class:`~prpo.train.Trainer` whose ``init``/``update``/``run``/``train`` run data-parallel.

    Same signatures as :func:`~prpo.train.make_train`'s functions; the state's per-env leaves
    are global arrays sharded over the mesh's ``"data"`` axis. ``mesh`` defaults to
    ``make_mesh(cfg.devices)``. jit the functions (``jax.jit(trainer.train)``); vmap them over
    seeds outside (with ``spmd_axis_name="seeds"`` to shard the seeds over that axis).
    """
    if mesh is None:
        mesh = make_mesh(cfg.devices)
    n = mesh.shape[DATA]
    check_split(cfg, n)
    local = make_train(cfg, policy=policy, network=network, surrogate=surrogate, axis_name=DATA, num_shards=n, env=env)

    def smap(f, in_specs, out_specs):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

    # the state's structure (local shapes) fixes the specs; tracing once costs no compile
    shapes = jax.eval_shape(smap(local.init, (P(), P()), P()), jax.random.key(0), cfg.hp)
    specs = state_specs(shapes)

    def init(key, hp):
        return smap(local.init, (P(), P()), specs)(key, hp)

    def update(state, hp):
        return smap(local.update, (specs, P()), (specs, P()))(state, hp)

    def run(state, hp, num_updates_to_run: int, active=None):
        if active is None:
            return smap(lambda s, h: local.run(s, h, num_updates_to_run), (specs, P()), (specs, P()))(state, hp)
        return smap(lambda s, h, a: local.run(s, h, num_updates_to_run, a), (specs, P(), P()), (specs, P()))(
            state, hp, active)

    def train(key, hp):
        return smap(local.train, (P(), P()), (specs, P()))(key, hp)

    return Trainer(config=cfg, env=local.env, policy=local.policy, init=init, update=update, run=run, train=train,
                   mesh=mesh)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, local_device_ids=None, cpu_collectives: str = "gloo",
                           **kwargs) -> None:
    """Join a multi-host run: a thin wrapper of ``jax.distributed.initialize``.

    Call it first, before any other JAX call, in every process. On SLURM / Open MPI / TPU pods
    the arguments are found from the environment (pass nothing); elsewhere pass the
    coordinator's ``host:port``, the number of processes and this process's id. On CPU the
    cross-process collectives need an implementation (``cpu_collectives``, default gloo).
    Afterwards ``jax.devices()`` lists every host's devices and :func:`make_mesh` spans them.
    """
    if cpu_collectives:
        try:
            jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
        except Exception:  # pragma: no cover - option absent in this JAX
            pass
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids, **kwargs)


def fetch(tree):
    """Bring (possibly multi-host) arrays to host numpy: replicated arrays from a local copy,
    sharded ones gathered from every process."""

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


def replicated(mesh: Mesh, tree):
    """Place values on every device of ``mesh`` (replicated), also across hosts: every process
    must pass the same values (as every process of a multi-host run computes the same keys)."""
    sharding = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def one(x):
        is_key = isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
        host = np.asarray(jax.random.key_data(x) if is_key else x)
        arr = jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])
        return jax.random.wrap_key_data(arr, impl=jax.random.key_impl(x)) if is_key else arr

    return jax.tree.map(one, tree)

