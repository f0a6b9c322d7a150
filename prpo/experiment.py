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

import dataclasses
import itertools
import json
import math
import os
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prpo import memory
from prpo.config import PRESETS, Config, ConfigError, Hyperparams, check_hyperparams
from prpo.train import NonFiniteLossError, make_train

__all__ = ["ExperimentResult", "grid_hyperparams", "check_seeds", "run_experiment"]


@dataclasses.dataclass
class ExperimentResult:
    summary: dict[str, Any]
    metrics: dict[str, np.ndarray]  # name -> [G, S, U] per-update metrics
    state: Any  # final TrainState, leaves [G, S, ...]
    grid: list[dict[str, float]]


#: the largest base seed: ``jax.random.key(seed)`` keeps 32 bits without x64 (2^32 collides with 0)
MAX_SEED = 2**32 - 1


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

    Prefers equal chunks (one compile) of a divisor of ``num_updates`` near
    ``num_updates / target_chunks``; otherwise equal chunks plus one remainder (two compiles).
    """
    if num_updates <= target_chunks:
        return [num_updates]
    ideal = num_updates / target_chunks
    divisors = [d for d in range(1, num_updates + 1) if num_updates % d == 0 and ideal / 3 <= d <= ideal * 3]
    if divisors:
        size = min(divisors, key=lambda d: abs(math.log(d / ideal)))
        return [size] * (num_updates // size)
    size = math.ceil(ideal)
    full, rest = divmod(num_updates, size)
    return [size] * full + ([rest] if rest else [])


def _to_py(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def run_experiment(
    cfg: Config,
    seeds: int = 1,
    seed: int = 0,
    grid: dict[str, Sequence[float]] | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    chunks: int = 20,
    network=None,
    policy=None,
    surrogate=None,
    seed_devices: int = 1,
    env=None,
    seed_index: int | None = None,
) -> ExperimentResult:
    """Train ``seeds`` seeds (× every ``grid`` setting) of ``cfg`` in one compile.

    Writes ``summary.json`` and ``metrics.jsonl`` (one line per update, means over seeds, the
    per-seed returns) to ``out_dir`` when given. Raises :class:`NonFiniteLossError` naming the
    update if any run produced a non-finite loss.

    ``cfg.devices > 1`` splits each run's envs over that many devices (``prpo.parallel``);
    ``seed_devices > 1`` lays the seeds over a second mesh axis of that many device groups
    (``seeds`` must be divisible by it); ``devices × seed_devices`` devices are used in all.
    ``env``: train on this env object instead of ``cfg.env`` (see :func:`prpo.make_train`).

    ``seed_index=k``: train only seed k of the ``seeds`` batch (the k-th of its keys), e.g. to
    rerun one seed of an ablation alone. On CPU it equals seed k of the batch bit for bit; on GPU
    batched and unbatched kernels round differently, so it matches to rounding at first and may
    drift over a long run (README, "Reproducing one seed").
    """
    if not isinstance(cfg, Config):
        hint = f"; use prpo.preset({cfg!r})" if isinstance(cfg, str) and cfg in PRESETS else ""
        raise ConfigError(f"run_experiment needs a prpo.Config as its first argument, got {type(cfg).__name__} {cfg!r}{hint}")
    check_seeds(seeds, seed_devices)
    check_seed(seed)
    if seed_index is not None:
        check_seed_index(seed_index, seeds)
        if seed_devices > 1:
            raise ConfigError("seed_index runs one seed: seed_devices must be 1")
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)) or chunks <= 0:
        raise ConfigError(f"chunks must be a positive integer (progress / stop checks per run), got {chunks!r}")
    check_grid(cfg.hp, grid)
    writer = jax.process_index() == 0  # multi-host: one writer
    if writer:
        check_out_dir(out_dir)
    note = None
    if cfg.total_timesteps % cfg.batch_size:
        note = (f"total_timesteps={cfg.total_timesteps} is not a multiple of num_envs × num_steps = {cfg.batch_size}: "
                f"training {cfg.num_updates} updates = {cfg.num_updates * cfg.batch_size} env steps per seed")
        if writer:
            print(f"prpo: note: {note}", file=sys.stderr)
    t_start = time.perf_counter()
    sharded = cfg.devices > 1 or seed_devices > 1
    if sharded:
        from prpo import parallel

        mesh = parallel.make_mesh(cfg.devices, seed_devices)
        trainer = parallel.make_sharded_train(cfg, mesh, policy=policy, network=network, surrogate=surrogate, env=env)
    else:
        trainer = make_train(cfg, policy=policy, network=network, surrogate=surrogate, env=env)
    hps, settings = grid_hyperparams(cfg.hp, grid)
    n_set = len(settings)
    keys = seed_keys(seed, seeds, seed_index)
    n_seeds = seeds if seed_index is None else 1
    fetch = jax.device_get
    if sharded:  # inputs replicated over the (possibly multi-host) mesh; outputs fetched from it
        keys, hps = parallel.replicated(mesh, (keys, hps))
        fetch = parallel.fetch
    spmd = {"spmd_axis_name": "seeds"} if seed_devices > 1 else {}

    over_seeds = lambda f: jax.vmap(f, in_axes=(0, None), **spmd)  # noqa: E731
    init = jax.jit(jax.vmap(over_seeds(trainer.init), in_axes=(None, 0)))
    if cfg.eval_every:  # chunks of whole evaluation periods, so evaluations fall every eval_every updates
        blocks, rest = divmod(cfg.num_updates, cfg.eval_every)
        sizes = [n * cfg.eval_every for n in _chunking(blocks, chunks)] if blocks else []
        sizes += [rest] if rest else []
    else:
        sizes = _chunking(cfg.num_updates, chunks)
    runners = {}
    t0 = time.perf_counter()
    # one device: compile against the state's shapes and check the estimate against the device's
    # memory before the state is allocated; sharded: the state's placement fixes the compile
    state = jax.eval_shape(init, keys, hps) if not sharded else init(keys, hps)
    for n in sorted(set(sizes)):
        run_n = lambda s, h, n=n: trainer.run(s, h, n)  # noqa: E731
        fn = jax.jit(jax.vmap(jax.vmap(run_n, in_axes=(0, None), **spmd), in_axes=(0, 0)))
        runners[n] = fn.lower(state, hps).compile()
    memory.check_fits(runners[max(runners)], num_envs=cfg.num_envs, what=f"{n_seeds} seed(s) × {n_set} setting(s) of {cfg.algo}",
                      device=trainer.mesh.devices.flat[0] if sharded else None)
    if not sharded:
        state = init(keys, hps)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0

    bar = None
    if progress and jax.process_index() == 0:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.num_updates * cfg.batch_size, unit="step", unit_scale=True,
                       desc=f"{cfg.algo} {trainer.env.spec.name}")
        except ImportError:  # pragma: no cover
            bar = None
    chunks_out = []
    stream = MetricsStream(out_dir, cfg, settings) if out_dir is not None and writer else None
    t_run = time.perf_counter()
    done = 0
    for n in sizes:
        state, metrics = runners[n](state, hps)
        metrics = fetch(metrics)
        chunks_out.append(metrics)
        if stream is not None:
            stream.write(metrics)
        done += n
        bad = np.asarray(fetch(state.nonfinite_update))
        if bar is not None:
            bar.update(n * cfg.batch_size)
            post = {"ret": f"{np.nanmean(metrics['last_return'][..., -1]):.1f}"}
            if cfg.eval_every and np.isfinite(metrics["eval_return"][..., -1]).any():
                post["eval"] = f"{np.nanmean(metrics['eval_return'][..., -1]):.1f}"
            bar.set_postfix(**post)
        if (bad >= 0).any():
            if bar is not None:
                bar.close()
            if stream is not None:
                stream.close()
            g, s = np.argwhere(bad >= 0)[0]
            raise NonFiniteLossError(
                f"non-finite loss at update {int(bad[g, s]) + 1} of {cfg.num_updates} (seed index {s}"
                + (f", setting {settings[g]}" if settings[g] else "")
                + "); training stopped. Lower the learning rate, check rewards/observations for NaN or "
                "enable normalize_obs / normalize_reward."
            )
    jax.block_until_ready(state)
    run_s = time.perf_counter() - t_run
    if bar is not None:
        bar.close()
    if stream is not None:
        stream.close()

    metrics = {k: np.concatenate([c[k] for c in chunks_out], axis=-1) for k in chunks_out[0]}
    final = np.asarray(metrics["last_return"][..., -1])  # [G, S]
    env_steps = cfg.num_updates * cfg.batch_size
    total_steps = env_steps * n_seeds * n_set
    summary = {
        "algo": cfg.algo,
        "env": cfg.env if env is None else trainer.env.spec.name,
        "seeds": seeds,
        **({"seed_index": seed_index} if seed_index is not None else {}),
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
        "steps_per_s": total_steps / run_s,
        "compile_s": compile_s,
        "run_s": run_s,
        "wall_s": time.perf_counter() - t_start,
        "device": str(jax.devices()[0].device_kind),
        "devices": cfg.devices,
        "seed_devices": seed_devices,
        "processes": jax.process_count(),
        "jax": jax.__version__,
        "config": cfg.to_dict(),
        **({"note": note} if note else {}),
    }
    if out_dir is not None and writer:
        write_summary(out_dir, summary)
    return ExperimentResult(summary=summary, metrics=metrics, state=state, grid=settings)


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


def check_out_dir(out_dir) -> None:
    """Refuse, before anything compiles, an ``out_dir`` that cannot be written or already holds a
    finished run (its ``summary.json``): a finished run's files are never silently replaced."""
    if out_dir is None:
        return
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir).strip():
        raise ConfigError(f"out_dir must be a directory path, got {out_dir!r}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"out_dir={str(out_dir)!r} exists and is not a directory")
    if os.path.exists(os.path.join(out_dir, "summary.json")):
        raise ConfigError(f"out_dir={str(out_dir)!r} already holds a finished run (summary.json); choose another directory")
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".prpo-write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"out_dir={str(out_dir)!r} is not writable: {e.strerror or e}") from None


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
    """``metrics.jsonl`` appended and flushed after every chunk of updates (only whole lines)."""

    def __init__(self, out_dir, cfg: Config, settings):
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.cfg, self.settings, self.done = cfg, settings, 0
        self.file = open(self.path, "w")

    def write(self, chunk: dict) -> None:
        self.file.write("".join(metric_rows(chunk, self.settings, self.cfg.batch_size, self.done)))
        self.file.flush()
        self.done += int(np.asarray(chunk["update"]).shape[-1])

    def close(self) -> None:
        self.file.close()


def write_summary(out_dir, summary) -> None:
    """``summary.json``, written to a temporary file first and renamed (never half written)."""
    path = os.path.join(out_dir, "summary.json")
    with open(path + ".tmp", "w") as f:
        json.dump(summary, f, indent=2, default=_to_py)
    os.replace(path + ".tmp", path)


def write_outputs(out_dir, summary, metrics, cfg: Config, settings) -> None:
    """Both files at once from whole-run metrics (``[G, S, U]``)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metrics.jsonl"), "w") as f:
        f.write("".join(metric_rows(metrics, settings, cfg.batch_size)))
    write_summary(out_dir, summary)
