"""Driver: many seeds × a hyperparameter grid in one compile, progress, files on disk.

``run_experiment`` is what ``python -m prpo train`` calls; it is usable from Python and
notebooks as well::

    result = prpo.run_experiment(prpo.preset("ppo-cartpole"), seeds=4)
    result.summary["final_return_mean"], result.metrics["episode_return_mean"]  # [G, S, U]

The work is ``jax.vmap`` over settings (outer) and seeds (inner) of the pure training
functions, run in equal chunks of updates so that a progress bar can move and a non-finite
loss can stop the run between chunks without host callbacks inside the compiled loop.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prpo import memory
from prpo.config import PRESETS, Config, ConfigError, Hyperparams, check_hyperparams
from prpo.train import NonFiniteLossError, make_train

__all__ = ["ExperimentResult", "RunInterrupted", "grid_hyperparams", "check_seeds", "run_experiment"]


@dataclasses.dataclass
class ExperimentResult:
    summary: dict[str, Any]
    metrics: dict[str, np.ndarray]  # name -> [G, S, U] per-update metrics
    state: Any  # final TrainState, leaves [G, S, ...]
    grid: list[dict[str, float]]


#: the largest base seed: ``jax.random.key(seed)`` keeps 32 bits without x64 (2^32 collides with 0)
MAX_SEED = 2**32 - 1
#: what a driver does after a non-finite update (which the device always skips): end the run, or train on
ON_NONFINITE = ("stop", "skip")


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def check_grid(base: Hyperparams, grid) -> None:
    """The one check of a hyperparameter grid ``{name: [values]}`` (CLI and Python API alike)."""
    if not isinstance(base, Hyperparams):
        raise ConfigError(f"grid_hyperparams needs a prpo.Hyperparams as its base (e.g. cfg.hp), got {type(base).__name__}")
    if grid is None:
        return
    if not isinstance(grid, dict):
        raise ConfigError(f"grid must be a dict {{hyperparameter: [values]}}, got {type(grid).__name__}")
    names_all = base.names()
    for name, values in grid.items():
        if name not in names_all:
            raise ConfigError(f"grid option {name!r} is not a hyperparameter of this config; sweepable: "
                              f"{', '.join(sorted(names_all))}")
        if not isinstance(values, (list, tuple, np.ndarray)) or isinstance(values, str):
            raise ConfigError(f"grid option {name!r} must be a list of numbers, e.g. {{{name!r}: [1e-4, 3e-4]}}; "
                              f"got {values!r}")
        if len(values) == 0:
            raise ConfigError(f"grid option {name!r} has no values")
        bad = [v for v in values if not _is_number(v)]
        if bad:
            raise ConfigError(f"grid option {name!r} must be a list of numbers; {bad[0]!r} is not a number")
        if len(set(float(v) for v in values)) < len(values):
            raise ConfigError(f"grid option {name!r} repeats a value: {list(values)}")
        for v in values:  # range checks (each hyperparameter's own) before anything compiles
            check_hyperparams(base.replace(**{name: float(v)}))


def grid_hyperparams(base: Hyperparams, grid: dict[str, Sequence[float]] | None):
    """Cartesian product of ``grid`` over ``base``: (batched Hyperparams with leaves [G], settings).

    Every hyperparameter of ``base`` (shared and owned) can be swept; the product's settings are
    range-checked before anything compiles.
    """
    check_grid(base, grid)
    names_all = base.names()
    grid = grid or {}
    names = list(grid)
    settings = [dict(zip(names, map(float, values))) for values in itertools.product(*(grid[n] for n in names))] or [{}]
    column = lambda name: jnp.asarray([float(s.get(name, getattr(base, name))) for s in settings], jnp.float32)  # noqa: E731
    batched = base.replace(**{name: column(name) for name in names_all})
    return batched, settings


def check_seeds(seeds, seed_devices=1, names=("seeds", "seed_devices")) -> None:
    """The one check of a seed count and its device groups (CLI and Python API alike; ``names``
    are the option names the message uses, e.g. the CLI's flags)."""
    n_seeds, n_groups = names
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds <= 0:
        raise ConfigError(f"{n_seeds} must be a positive integer, got {seeds!r}")
    if (isinstance(seed_devices, bool) or not isinstance(seed_devices, (int, np.integer)) or seed_devices <= 0
            or seeds % seed_devices):
        raise ConfigError(f"{n_groups}={seed_devices!r} must be a positive integer dividing {n_seeds}={seeds}")


def check_seed(seed, name="seed") -> None:
    """A base seed is an integer in [0, 2^32 − 1] (``jax.random.key`` keeps 32 bits: 2^32 would be seed 0)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{name} must be an integer in [0, {MAX_SEED}], got {seed!r}")


def check_seed_index(seed_index, seeds, names=("seed_index", "seeds")) -> None:
    if isinstance(seed_index, bool) or not isinstance(seed_index, (int, np.integer)) or not 0 <= seed_index < seeds:
        raise ConfigError(f"{names[0]} must be an integer in [0, {names[1]} − 1 = {seeds - 1}], got {seed_index!r}")


def seed_keys(seed: int, seeds: int, seed_index: int | None = None):
    """The run keys: the ``seeds`` keys ``split(key(seed), seeds)``, or only the ``seed_index``-th of them."""
    keys = jax.random.split(jax.random.key(seed), seeds)
    return keys if seed_index is None else keys[seed_index:seed_index + 1]


def _chunking(num_updates: int, target_chunks: int = 20) -> list[int]:
    """Split ``num_updates`` into chunks for progress reporting, compiling as few lengths as possible.

    Prefers equal chunks (one compile) of a divisor of ``num_updates`` within a factor 4 of
    ``num_updates / target_chunks`` (244 updates: 61 chunks of 4, not 18 of 13 and one of 10);
    otherwise equal chunks plus one remainder (two compiles).
    """
    if num_updates <= target_chunks:
        return [num_updates]
    ideal = num_updates / target_chunks
    divisors = [d for d in range(1, num_updates + 1) if num_updates % d == 0 and ideal / 4 <= d <= ideal * 4]
    if divisors:
        size = min(divisors, key=lambda d: abs(math.log(d / ideal)))
        return [size] * (num_updates // size)
    size = math.ceil(ideal)
    full, rest = divmod(num_updates, size)
    return [size] * full + ([rest] if rest else [])


class RunInterrupted(RuntimeError):
    """A run stopped by SIGINT / SIGTERM after finishing its current chunk (its checkpoint and
    metrics written when it has an ``out_dir``). ``signal``: the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signal = signum


class _StopRequests:
    """SIGINT / SIGTERM during training: the first asks the loop to stop after the current chunk
    (said once on stderr); a second raises KeyboardInterrupt when Python next runs (a chunk's
    device work is not interrupted), without saving. Installed only in the main thread."""

    def __init__(self, say: bool):
        self.signum, self.say, self._previous = None, say, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if self.say:
            print(f"\nprpo: {signal.Signals(signum).name}: stopping after the current chunk of updates "
                  "(a second one stops without saving)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _over_runs(f, state_over_settings: bool, single: bool, spmd: dict):
    """``f(x, hp)`` over the settings (outer: ``hp``'s axis 0, and ``x``'s when ``state_over_settings``)
    and the seeds (inner: ``x``'s next axis). ``single`` (one setting and one seed): the same shapes
    in and out without vmap, the size-1 axes indexed away and put back (an unbatched program
    compiles faster)."""
    if not single:
        return jax.vmap(jax.vmap(f, in_axes=(0, None), **spmd), in_axes=(0 if state_over_settings else None, 0))

    def one(x, hp):
        x = jax.tree.map(lambda a: a[0, 0] if state_over_settings else a[0], x)
        out = f(x, jax.tree.map(lambda a: a[0], hp))
        return jax.tree.map(lambda a: a[None, None], out)

    return one


def _chunk_plan(num_updates: int, chunks: int, eval_every: int, checkpoint_every: int | None, start: int = 0) -> list[int]:
    """Chunk sizes from update ``start`` to ``num_updates``: equal chunks of a size S chosen for
    progress output (``chunks`` per run), a multiple of ``eval_every`` (evaluations fall every
    ``eval_every`` updates) dividing ``checkpoint_every`` (checkpoints fall on chunk ends), then
    the rest (a single chunk and its rest are one chunk). Chunks of several lengths share one
    compiled runner (of the longest, told how many updates to run). A run resumed at a chunk end
    continues with exactly the chunks it would have run."""
    unit = eval_every or 1
    blocks = num_updates // unit
    size = (_chunking(blocks, chunks)[0] * unit) if blocks else num_updates
    if checkpoint_every:  # a divisor of checkpoint_every near the progress size; of the budget too if one is near
        ideal = size
        near = lambda m: ideal / 3 <= m <= ideal * 3  # noqa: E731
        fits = [m for m in range(unit, checkpoint_every + 1, unit) if checkpoint_every % m == 0]
        both = [m for m in fits if num_updates % m == 0 and near(m)]
        size = min(both or fits, key=lambda m: abs(math.log(m / ideal)))
    sizes, pos = [], start
    if pos % size and pos < num_updates:  # a resumed run whose budget changed: align to the chunks first
        first = min(size - pos % size, num_updates - pos)
        sizes.append(first)
        pos += first
    full = (num_updates - pos) // size
    if full == 1 and not sizes and not checkpoint_every and pos < num_updates:
        return [num_updates - pos]  # one chunk and a rest: one runner (Trainer.run scans both), not two
    sizes += [size] * full
    pos += full * size
    if pos < num_updates:
        sizes.append(num_updates - pos)
    return sizes


def check_run_options(checkpoint_every, keep, out_dir, cfg: Config, loggers=("jsonl",), overwrite: bool = False,
                      names=("checkpoint_every", "keep", "out_dir", "overwrite")) -> None:
    """The one check of the options that need a run directory (CLI and Python API; ``names`` are
    the option names the messages use, e.g. the CLI's flags)."""
    n_every, n_keep, n_out, n_overwrite = names
    if checkpoint_every is not None:
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, np.integer)) or checkpoint_every <= 0:
            raise ConfigError(f"{n_every} must be a positive integer (updates between checkpoints), got {checkpoint_every!r}")
        if out_dir is None:
            raise ConfigError(f"{n_every} needs {n_out} (the run directory the checkpoints go to)")
        if cfg.eval_every and checkpoint_every % cfg.eval_every:
            raise ConfigError(f"{n_every}={checkpoint_every} must be a multiple of eval_every={cfg.eval_every} "
                              "(checkpoints fall between evaluation periods)")
    if keep is not None:
        if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or keep <= 0:
            raise ConfigError(f"{n_keep} must be a positive integer (checkpoints kept), got {keep!r}")
        if out_dir is None:
            raise ConfigError(f"{n_keep} needs {n_out}")
    others = [n for n in loggers if n != "jsonl"]
    if others and out_dir is None:
        raise ConfigError(f"loggers {', '.join(others)} need {n_out} (where their files go)")
    if overwrite and out_dir is None:
        raise ConfigError(f"{n_overwrite} needs {n_out} (the run directory to replace)")


@dataclasses.dataclass
class _Run:
    """Everything a run is, resolved and checked before anything compiles."""

    cfg: Config
    seeds: int
    seed: int
    grid: dict
    seed_index: int | None
    seed_devices: int
    chunks: int
    checkpoint_every: int | None
    keep: int
    loggers: tuple
    out_dir: str | None
    record: dict | None = None  # run.json
    start: int = 0  # updates already done (resume)
    ckpts: Any = None  # checkpoint.Checkpoints
    ck_record: dict | None = None


def _resolve(cfg, seeds, seed, grid, out_dir, chunks, seed_devices, seed_index, resume, overwrite, checkpoint_every,
             keep, loggers, custom) -> _Run:
    """Resolve a new run's or a resumed run's settings and check them all (no compile)."""
    from prpo import checkpoint as ck
    from prpo import loggers as loggers_lib

    if cfg is not None and not isinstance(cfg, Config):
        hint = f"; use prpo.preset({cfg!r})" if isinstance(cfg, str) and cfg in PRESETS else ""
        raise ConfigError(f"run_experiment needs a prpo.Config as its first argument, got {type(cfg).__name__} {cfg!r}{hint}")
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)) or chunks <= 0:
        raise ConfigError(f"chunks must be a positive integer (progress / stop checks per run), got {chunks!r}")
    if resume is None:
        if cfg is None:
            raise ConfigError("run_experiment needs a prpo.Config (or resume=DIR to continue a run)")
        run = _Run(cfg=cfg, seeds=1 if seeds is None else seeds, seed=0 if seed is None else seed, grid=grid or {},
                   seed_index=seed_index, seed_devices=1 if seed_devices is None else seed_devices, chunks=chunks,
                   checkpoint_every=checkpoint_every, keep=3 if keep is None else keep,
                   loggers=loggers_lib.check_loggers(loggers or ("jsonl",)), out_dir=out_dir)
        check_run_options(checkpoint_every, keep, out_dir, cfg, run.loggers, overwrite)
        if jax.process_index() == 0:
            check_out_dir(out_dir, overwrite)
    else:
        if overwrite:
            raise ConfigError("resume continues the run in its directory; overwrite would remove it: give one")
        if out_dir is not None and os.path.abspath(out_dir) != os.path.abspath(resume):
            raise ConfigError(f"a resumed run continues in its own directory {str(resume)!r}; out_dir={str(out_dir)!r} "
                              "differs (leave it out)")
        out_dir = resume
        record = ck.read_run(resume)
        ck.check_custom(record, custom, resume)
        saved = ck.config_from_dict(record["config"])
        cfg = saved if cfg is None else ck.resume_config(saved, cfg, repr(str(resume)))
        for name, given, value in (("seeds", seeds, record["seeds"]), ("seed", seed, record["seed"]),
                                   ("seed_index", seed_index, record.get("seed_index")),
                                   ("grid", grid if grid else None, record["grid"] or None)):
            if given is not None and _jsonable(given) != value:
                raise ck.CheckpointError(f"cannot resume {str(resume)!r} with {name}={given!r}: it was trained with "
                                         f"{name}={value!r}")
        run = _Run(cfg=cfg, seeds=record["seeds"], seed=record["seed"], grid=record["grid"] or {},
                   seed_index=record.get("seed_index"),
                   seed_devices=record["seed_devices"] if seed_devices is None else seed_devices,
                   chunks=record["chunks"],
                   checkpoint_every=record["checkpoint_every"] if checkpoint_every is None else checkpoint_every,
                   keep=record["keep"] if keep is None else keep,
                   loggers=loggers_lib.check_loggers(loggers or record["loggers"]), out_dir=out_dir, record=record)
        check_run_options(run.checkpoint_every, run.keep, out_dir, cfg, run.loggers)
        run.ckpts = ck.Checkpoints(out_dir, keep=run.keep)
        steps = run.ckpts.steps()
        if not steps:
            raise ck.CheckpointError(f"{str(resume)!r} has no complete checkpoint to resume from (the run stopped before "
                                     "its first one); start it again with overwrite (--overwrite)")
        run.start = steps[-1]
        run.ck_record = run.ckpts.record(run.start)
        if run.start >= cfg.num_updates:
            raise ck.CheckpointError(
                f"the run in {str(resume)!r} has done all its {run.start} updates; to train on, extend its budget "
                f"beyond total_timesteps={cfg.num_updates * cfg.batch_size} (--total-steps / --set total_timesteps=...)")
        if run.ck_record.get("config", {}).get("algo") != cfg.algo:
            raise ck.CheckpointError(f"checkpoint {run.ckpts.path(run.start)} is not of this run's algorithm {cfg.algo!r}")
    check_seeds(run.seeds, run.seed_devices)
    check_seed(run.seed)
    if run.seed_index is not None:
        check_seed_index(run.seed_index, run.seeds)
        if run.seed_devices > 1:
            raise ConfigError("seed_index runs one seed: seed_devices must be 1")
    check_grid(cfg.hp, run.grid)
    return run


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def run_experiment(
    cfg: Config | None = None,
    seeds: int | None = None,
    seed: int | None = None,
    grid: dict[str, Sequence[float]] | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    chunks: int = 20,
    network=None,
    policy=None,
    surrogate=None,
    seed_devices: int | None = None,
    env=None,
    seed_index: int | None = None,
    *,
    resume: str | os.PathLike | None = None,
    overwrite: bool = False,
    checkpoint_every: int | None = None,
    keep: int | None = None,
    loggers: Sequence[str] | None = None,
    on_nonfinite: str = ON_NONFINITE[0],
) -> ExperimentResult:
    """Train ``seeds`` seeds (default 1, base seed ``seed``, default 0) × every ``grid`` setting
    of ``cfg`` in one compile.

    With ``out_dir`` the run lives on disk as it trains (``prpo.checkpoint`` has the layout):
    ``run.json`` first, ``metrics.jsonl`` appended after every chunk, a full-state checkpoint
    every ``checkpoint_every`` updates (falling on chunk ends; the last ``keep``, default 3, are
    kept) and at the end, then ``summary.json``. ``loggers``: also ``"tensorboard"`` /
    ``"wandb"`` (:mod:`prpo.loggers`). An ``out_dir`` that holds a run is refused unless
    ``overwrite=True`` (which removes that run's files).

    ``resume=DIR`` continues the run in DIR from its latest checkpoint to its budget, bit for
    bit as if it had not stopped (same device count). ``cfg`` may then be left out; if given it
    may differ from the saved config only in ``total_timesteps`` (to extend the run), ``devices``
    and hyperparameter values. ``seeds``, ``seed``, ``grid`` and ``seed_index`` come from DIR.

    SIGINT / SIGTERM finish the current chunk, write a checkpoint and the metrics so far and
    raise :class:`RunInterrupted`. A non-finite loss (or parameters) is never applied: that run's
    update is skipped on the device, its parameters and optimiser state kept. ``on_nonfinite``
    says what the driver then does: ``"stop"`` (default) raises :class:`NonFiniteLossError`
    naming the update and keeps the last finite checkpoint; ``"skip"`` warns once per run and
    trains on, so one diverging seed of a vmapped batch does not end the others. The summary's
    ``nonfinite_updates`` counts each run's updates with a non-finite loss (and
    ``nonfinite_first_update`` names the first, 1-based; ``None`` for a clean run). A failed write (disk full) raises
    :class:`prpo.checkpoint.OutputError`, every file written before staying valid.

    ``cfg.devices > 1`` splits each run's envs over that many devices (``prpo.parallel``);
    ``seed_devices > 1`` lays the seeds over a second mesh axis of that many device groups
    (``seeds`` must be divisible by it); ``devices × seed_devices`` devices are used in all.
    ``env``: train on this env object instead of ``cfg.env`` (see :func:`prpo.make_train`).

    ``seed_index=k``: train only seed k of the ``seeds`` batch (the k-th of its keys), e.g. to
    rerun one seed of an ablation alone. It equals seed k of the batch to float rounding (a run of
    one seed and one setting compiles without vmap, and batched and unbatched kernels round
    differently), so it may drift over a long run (README, "Correctness": what "equals" means, measured).
    """
    from prpo import checkpoint as ck
    from prpo import loggers as loggers_lib

    if on_nonfinite not in ON_NONFINITE:
        raise ConfigError(f"on_nonfinite={on_nonfinite!r} is not allowed; allowed values: "
                          + ", ".join(repr(v) for v in ON_NONFINITE))
    custom = {"env": env, "policy": policy, "network": network, "surrogate": surrogate}
    run = _resolve(cfg, seeds, seed, grid, out_dir, chunks, seed_devices, seed_index, resume, overwrite,
                   checkpoint_every, keep, loggers, custom)
    cfg, out_dir, start = run.cfg, run.out_dir, run.start
    writer = jax.process_index() == 0  # multi-host: one writer of the small files (checkpoints: every process)
    note = None
    if cfg.total_timesteps % cfg.batch_size:
        note = (f"total_timesteps={cfg.total_timesteps} is not a multiple of num_envs × num_steps = {cfg.batch_size}: "
                f"training {cfg.num_updates} updates = {cfg.num_updates * cfg.batch_size} env steps per seed")
        if writer and not start:
            print(f"prpo: note: {note}", file=sys.stderr)
    t_start = time.perf_counter()
    sharded = cfg.devices > 1 or run.seed_devices > 1
    if sharded:
        from prpo import parallel

        mesh = parallel.make_mesh(cfg.devices, run.seed_devices)
        trainer = parallel.make_sharded_train(cfg, mesh, policy=policy, network=network, surrogate=surrogate, env=env)
    else:
        trainer = make_train(cfg, policy=policy, network=network, surrogate=surrogate, env=env)
    hps, settings = grid_hyperparams(cfg.hp, run.grid)
    n_set = len(settings)
    keys = seed_keys(run.seed, run.seeds, run.seed_index)
    n_seeds = run.seeds if run.seed_index is None else 1
    fetch = jax.device_get
    if sharded:  # inputs replicated over the (possibly multi-host) mesh; outputs fetched from it
        keys, hps = parallel.replicated(mesh, (keys, hps))
        fetch = parallel.fetch
    spmd = {"spmd_axis_name": "seeds"} if run.seed_devices > 1 else {}

    single = n_set == 1 and n_seeds == 1 and not sharded
    init = jax.jit(_over_runs(trainer.init, False, single, spmd))
    sizes = _chunk_plan(cfg.num_updates, run.chunks, cfg.eval_every, run.checkpoint_every, start)
    t0 = time.perf_counter()
    # one device: compile against the state's shapes and check the estimate against the device's
    # memory before the state is allocated; sharded: the state's placement fixes the compile
    state = ck._on_device(jax.eval_shape(init, keys, hps)) if not sharded else init(keys, hps)
    history = None
    if start:  # the checkpoint, restored into this run's structure and placement before anything compiles
        state, history = run.ckpts.restore(start, state, run.ck_record, (n_set, n_seeds))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # a fresh one-device run compiles its init alongside the runner (XLA compiles release the GIL)
        init_c = pool.submit(init.lower(keys, hps).compile) if not sharded and not start else None
        longest = max(sizes)
        if len(set(sizes)) == 1:
            runner = jax.jit(_over_runs(lambda s, h: trainer.run(s, h, longest), True, single, spmd)).lower(state, hps).compile()
        else:  # chunks of several lengths: one program of the longest, told how many updates to run
            whole = jax.jit(lambda s, h, a: _over_runs(lambda x, hp: trainer.run(x, hp, longest, a), True, single, spmd)(s, h))
            runner = whole.lower(state, hps, jnp.int32(longest)).compile()
        # sharded: the runner's output placement may differ from the one it was compiled for (seeds
        # over devices with one data shard), so each chunk's state goes back to the input's
        want = runner.input_shardings[0][0] if sharded else None
        if sharded:
            state = jax.device_put(state, want)

        def run_chunk(s, k):
            """``k`` updates from ``s``: ``(state, metrics [G, S, k])``."""
            if len(set(sizes)) == 1:
                s, m = runner(s, hps)
            else:
                s, m = runner(s, hps, jnp.int32(k))
                m = jax.tree.map(lambda x: x[:, :, :k], m)
            return (s if want is None else jax.device_put(s, want)), m

        memory.check_fits(runner, num_envs=cfg.num_envs,
                          what=f"{n_seeds} seed(s) × {n_set} setting(s) of {cfg.algo}",
                          device=trainer.mesh.devices.flat[0] if sharded else None)
        if init_c is not None:
            state = init_c.result()(keys, hps)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0

    # the run record first: a run killed at any point after this is resumable from its last checkpoint
    record = None
    if out_dir is not None:
        if overwrite and writer:  # only now, with the new run compiled and about to write, is the old one removed
            _remove_run_files(out_dir)
        if run.ckpts is None:
            run.ckpts = ck.Checkpoints(out_dir, keep=run.keep)
        record = run.record or {
            "format": ck.FORMAT, "algo": cfg.algo, "env": cfg.env if env is None else trainer.env.spec.name,
            "seeds": run.seeds, "seed": run.seed, "seed_index": run.seed_index, "seed_devices": run.seed_devices,
            "grid": _jsonable(run.grid), "settings": settings, "chunks": run.chunks,
            "checkpoint_every": run.checkpoint_every, "keep": run.keep, "loggers": list(run.loggers),
            "custom": [k for k in ck.CUSTOM if custom[k] is not None], "run_id": f"{int(time.time())}-{os.getpid()}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "prpo": _version(), "jax": jax.__version__,
            "resumes": [],
        }
        record.update(config=cfg.to_dict(), status="running", seed_devices=run.seed_devices,
                      checkpoint_every=run.checkpoint_every, keep=run.keep, loggers=list(run.loggers))
        if start:
            record["resumes"].append({"update": start, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "prpo": _version(),
                                      "jax": jax.__version__})
            old_summary = os.path.join(out_dir, ck.SUMMARY)
            if os.path.exists(old_summary):  # an extended finished run: its summary is kept, renamed
                os.replace(old_summary, os.path.join(out_dir, f"summary.update-{start}.json"))
        if writer:
            ck.write_json(os.path.join(out_dir, ck.RUN_FILE), record)

    bar = None
    if progress and writer:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.num_updates * cfg.batch_size, initial=start * cfg.batch_size, unit="step",
                       unit_scale=True, desc=f"{cfg.algo} {trainer.env.spec.name}")
        except ImportError:  # pragma: no cover
            bar = None
    chunks_out = [history] if history is not None else []
    sinks = []
    if out_dir is not None and writer:
        sinks.append(MetricsStream(out_dir, cfg, settings, start=start))
        sinks += loggers_lib.make_sinks(run.loggers, out_dir, settings=settings, batch_size=cfg.batch_size,
                                        run_name=os.path.basename(os.path.abspath(out_dir)), start_update=start,
                                        run_id=record["run_id"], config=cfg.to_dict())
    saved = {"step": start if start else None, "periodic": start}

    def history_so_far():
        return {k: np.concatenate([c[k] for c in chunks_out], axis=-1) for k in chunks_out[0]}

    def checkpoint(st, step):
        """Checkpoint ``st`` after update ``step`` (once per step)."""
        if out_dir is None or step == saved["step"] or step == 0:
            return
        ck_s = run.ckpts.save(step, st, history_so_far(), {
            "config": cfg.to_dict(), "settings": settings, "seeds": run.seeds, "seed": run.seed,
            "seed_index": run.seed_index, "prpo": _version(), "jax": jax.__version__})
        saved["step"] = step
        ck_times.append(ck_s)

    def finish_files(status, **extra):
        for s in sinks:
            s.close()
        if bar is not None:
            bar.close()
        if record is not None and writer:
            record.update(status=status, last_checkpoint=saved["step"], **extra)
            ck.write_json(os.path.join(out_dir, ck.RUN_FILE), record)

    def where():
        if saved["step"] is None:
            return "no checkpoint was written"
        return f"checkpoint after update {saved['step']} in {run.ckpts.path(saved['step'])}"

    ck_times = []
    warned = set()
    t_run = time.perf_counter()
    done = start
    try:
        with _StopRequests(say=writer) as stop:
            for n in sizes:
                before = state
                state, metrics = run_chunk(state, n)
                metrics = fetch(metrics)
                bad = np.asarray(fetch(state.nonfinite_update))
                chunks_out.append(metrics)
                for s in sinks:
                    s.write(metrics, done)
                done += n
                if bar is not None:
                    bar.update(n * cfg.batch_size)
                    post = {"ret": f"{np.nanmean(metrics['last_return'][..., -1]):.1f}"}
                    if cfg.eval_every and np.isfinite(metrics["eval_return"][..., -1]).any():
                        post["eval"] = f"{np.nanmean(metrics['eval_return'][..., -1]):.1f}"
                    bar.set_postfix(**post)
                if on_nonfinite == "skip":  # one line per chunk in which runs fail for the first time
                    new = [(int(g), int(s)) for g, s in np.argwhere(bad >= 0) if (int(g), int(s)) not in warned]
                    warned.update(new)
                    if new and writer:
                        g, s = new[0]
                        print(f"prpo: warning: non-finite loss in {len(new)} more run(s) (first: update "
                              f"{int(bad[g, s]) + 1} of {cfg.num_updates}, seed index {s}"
                              + (f", setting {settings[g]}" if settings[g] else "")
                              + "); such updates are skipped (parameters kept) and training goes on "
                              "(on_nonfinite='skip'); the summary counts them", file=sys.stderr)
                elif (bad >= 0).any():  # keep the last finite state: the one before this chunk
                    chunks_out.pop()
                    checkpoint(before, done - n)
                    g, s = np.argwhere(bad >= 0)[0]
                    finish_files("failed", failed_update=int(bad[g, s]) + 1)
                    raise NonFiniteLossError(
                        f"non-finite loss at update {int(bad[g, s]) + 1} of {cfg.num_updates} (seed index {s}"
                        + (f", setting {settings[g]}" if settings[g] else "")
                        + "); training stopped. Lower the learning rate, check rewards/observations for NaN or "
                        "enable normalize_obs / normalize_reward, or skip such updates and train on "
                        "(on_nonfinite='skip', --on-nonfinite skip)."
                        + (f" Last finite state: {where()} (resume with a changed hyperparameter: "
                           f"--resume {out_dir} --set lr=...)" if out_dir is not None and saved["step"] else "")
                    )
                del before
                if run.checkpoint_every and done // run.checkpoint_every > saved["periodic"] // run.checkpoint_every:
                    checkpoint(state, done)
                    saved["periodic"] = done
                if stop.signum is not None and done < cfg.num_updates:
                    checkpoint(state, done)
                    name = signal.Signals(stop.signum).name
                    finish_files("interrupted", interrupted_update=done)
                    if out_dir is None:
                        msg = (f"{name}: stopped after update {done} of {cfg.num_updates}; nothing was saved (train with "
                               "--out DIR to keep checkpoints and metrics)")
                    else:
                        msg = (f"{name}: stopped after update {done} of {cfg.num_updates}; metrics in "
                               f"{os.path.join(out_dir, ck.METRICS)}, {where()}; continue with: python -m prpo train "
                               f"--resume {out_dir}")
                    raise RunInterrupted(msg, stop.signum)
            jax.block_until_ready(state)
            run_s = time.perf_counter() - t_run
            loop_ck_s = sum(ck_times)  # periodic checkpoints inside the timed loop
            checkpoint(state, done)  # the final checkpoint
    except ck.OutputError as e:
        for s in sinks:
            s.close()
        if bar is not None:
            bar.close()
        raise ck.OutputError(f"{e}; the run stopped after update {done}; {where()}") from None
    if bar is not None:
        bar.close()

    metrics = history_so_far()
    final = np.asarray(metrics["last_return"][..., -1])  # [G, S]
    skipped = (~np.isfinite(np.asarray(metrics["loss"]))).sum(-1)  # [G, S] updates with a non-finite loss
    first_bad = np.asarray(fetch(state.nonfinite_update)).reshape(skipped.shape)
    first_bad = [[int(b) + 1 if b >= 0 else None for b in row] for row in first_bad]
    env_steps = cfg.num_updates * cfg.batch_size
    total_steps = env_steps * n_seeds * n_set
    steps_now = (cfg.num_updates - start) * cfg.batch_size * n_seeds * n_set
    summary = {
        "algo": cfg.algo,
        "env": cfg.env if env is None else trainer.env.spec.name,
        "seeds": run.seeds,
        **({"seed_index": run.seed_index} if run.seed_index is not None else {}),
        "settings": settings,
        "num_envs": cfg.num_envs,
        "num_updates": cfg.num_updates,
        "env_steps": env_steps,
        "total_env_steps": total_steps,
        "final_return_mean": float(np.nanmean(final)),
        "final_return_std": float(np.nanstd(final)),
        "final_return_stderr": float(np.nanstd(final) / math.sqrt(max(final.size, 1))),
        "final_returns": final[0].tolist() if n_set == 1 else final.tolist(),
        **_eval_summary(metrics, n_set),
        "nonfinite_updates": skipped[0].tolist() if n_set == 1 else skipped.tolist(),
        "nonfinite_first_update": first_bad[0] if n_set == 1 else first_bad,
        "steps_per_s": steps_now / max(run_s - loop_ck_s, 1e-9),
        "compile_s": compile_s,
        "run_s": run_s,
        "wall_s": time.perf_counter() - t_start,
        **({"resumed_at_update": start} if start else {}),
        **({"checkpoint_s": ck_times[-1], "checkpoint_bytes": _size(run.ckpts.path(saved["step"])),
            "checkpoints_written": len(ck_times)} if ck_times else {}),
        "device": str(jax.devices()[0].device_kind),
        "devices": cfg.devices,
        "seed_devices": run.seed_devices,
        "processes": jax.process_count(),
        "jax": jax.__version__,
        "config": cfg.to_dict(),
        **({"note": note} if note else {}),
    }
    if out_dir is not None and writer:
        finish_files("finished")
        write_summary(out_dir, summary)
    return ExperimentResult(summary=summary, metrics=metrics, state=state, grid=settings)


def _size(path) -> int:
    """Bytes of the files under ``path``."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("prpo")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


def _eval_summary(metrics, n_set: int) -> dict:
    """Final in-loop evaluation returns (the last evaluation of each run), if evaluations ran."""
    if "eval_return" not in metrics:
        return {}
    final = np.asarray(metrics["eval_return"][..., -1])  # [G, S]
    if not np.isfinite(final).any():
        return {}
    return {
        "final_eval_return_mean": float(np.nanmean(final)),
        "final_eval_return_std": float(np.nanstd(final)),
        "final_eval_returns": final[0].tolist() if n_set == 1 else final.tolist(),
    }


def check_out_dir(out_dir, overwrite: bool = False) -> None:
    """Refuse, before anything compiles, an ``out_dir`` that cannot be written or already holds a
    run (finished or not): a run's files are never silently replaced. With ``overwrite=True`` the
    run in it is removed (only the files prpo writes) when the new run starts writing."""
    from prpo import checkpoint as ck

    if out_dir is None:
        return
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir).strip():
        raise ConfigError(f"out_dir must be a directory path, got {out_dir!r}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"out_dir={str(out_dir)!r} exists and is not a directory")
    present = ck.run_files(out_dir) if os.path.isdir(out_dir) else []
    if present and not overwrite:
        if ck.SUMMARY in present:
            what, hint = "a finished run (summary.json)", ""
        elif ck.RUN_FILE in present or ck.CHECKPOINTS in present:
            what, hint = "an unfinished run (run.json)", f"continue it with --resume {out_dir} (resume=DIR), "
        else:
            what, hint = f"a run's files ({', '.join(present)})", ""
        raise ConfigError(f"out_dir={str(out_dir)!r} already holds {what}; {hint}choose another directory, or pass "
                          "--overwrite (overwrite=True) to replace it")
    error = ck.writable_dir_error(out_dir)
    if error:
        raise ConfigError(f"out_dir={str(out_dir)!r} is not writable: {error}")


def _remove_run_files(out_dir) -> None:
    """``overwrite``: remove the files a run writes (and nothing else) from ``out_dir``."""
    from prpo import checkpoint as ck

    for name in ck.run_files(out_dir):
        path = os.path.join(out_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def metric_rows(chunk: dict, settings, batch_size: int, first_update: int = 0) -> list[str]:
    """JSON lines of a chunk of per-update metrics (leaves ``[G, S, n]``): one line per update and
    setting, with each metric's mean over the seeds' finite values (``null`` if none) and the
    per-seed returns. Vectorised over seeds and updates; the loop only formats lines."""
    keys = [k for k in chunk if k != "update"]
    n = np.asarray(chunk["update"]).shape[-1]
    means = {}
    for k in keys:
        v = np.asarray(chunk[k], np.float64)  # [G, S, n]
        finite = np.isfinite(v)
        count = finite.sum(axis=1)
        mean = np.where(count > 0, np.where(finite, v, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)
        means[k] = mean.tolist()  # [G][n]
    ret = np.asarray(chunk["last_return"], np.float64)
    per_seed = np.where(np.isfinite(ret), ret, np.nan).transpose(0, 2, 1).tolist()  # [G][n][S]
    clean = lambda x: None if x != x else x  # noqa: E731  (NaN -> null)
    lines = []
    for u in range(n):
        update = first_update + u + 1
        for g, setting in enumerate(settings):
            row = {"update": update, "env_steps": update * batch_size}
            if setting:
                row["setting"] = setting
            for k in keys:
                row[k] = clean(means[k][g][u])
            row["return_per_seed"] = [clean(x) for x in per_seed[g][u]]
            lines.append(json.dumps(row) + "\n")
    return lines


class MetricsStream:
    """``metrics.jsonl`` appended and flushed after every chunk of updates, whole lines only: a
    write that fails (disk full) is cut back to the last whole chunk and raises
    :class:`prpo.checkpoint.OutputError`. ``start``: a resumed run's updates done; lines of later
    updates (written after its last checkpoint) are dropped first."""

    def __init__(self, out_dir, cfg: Config, settings, start: int = 0):
        from prpo import checkpoint as ck

        self.path = os.path.join(out_dir, ck.METRICS)
        self.cfg, self.settings = cfg, settings
        try:
            if start and os.path.exists(self.path):
                _truncate_metrics(self.path, start)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if start else os.O_TRUNC), 0o644)
        except OSError as e:
            raise ck.OutputError(f"could not write {self.path}: {e.strerror or e}") from None

    def write(self, chunk: dict, first_update: int) -> None:
        from prpo import checkpoint as ck

        data = "".join(metric_rows(chunk, self.settings, self.cfg.batch_size, first_update)).encode()
        end = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as e:
            try:
                os.ftruncate(self.fd, end)  # only whole lines stay
            except OSError:  # pragma: no cover
                pass
            raise ck.OutputError(f"could not write {self.path}: {e.strerror or e}") from None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _truncate_metrics(path, last_update: int) -> None:
    """Keep the lines of updates ≤ ``last_update`` (and no cut line), written atomically."""
    keep = []
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                if json.loads(line)["update"] > last_update:
                    break
            except (ValueError, KeyError):
                break
            keep.append(line)
    with open(path + ".tmp", "w") as f:
        f.writelines(keep)
    os.replace(path + ".tmp", path)


def write_summary(out_dir, summary) -> None:
    """``summary.json``, written to a temporary file first and renamed (never half written)."""
    from prpo import checkpoint as ck

    ck.write_json(os.path.join(out_dir, ck.SUMMARY), summary)


def write_outputs(out_dir, summary, metrics, cfg: Config, settings) -> None:
    """Both files at once from whole-run metrics (``[G, S, U]``)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metrics.jsonl"), "w") as f:
        f.write("".join(metric_rows(metrics, settings, cfg.batch_size)))
    write_summary(out_dir, summary)
