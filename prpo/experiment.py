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
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prpo.config import Config, ConfigError, Hyperparams, check_hyperparams
from prpo.train import NonFiniteLossError, make_train

__all__ = ["ExperimentResult", "grid_hyperparams", "check_seeds", "run_experiment"]


@dataclasses.dataclass
class ExperimentResult:
    summary: dict[str, Any]
    metrics: dict[str, np.ndarray]  # name -> [G, S, U] per-update metrics
    state: Any  # final TrainState, leaves [G, S, ...]
    grid: list[dict[str, float]]


def grid_hyperparams(base: Hyperparams, grid: dict[str, Sequence[float]] | None):
    """Cartesian product of ``grid`` over ``base``: (batched Hyperparams with leaves [G], settings).

    Every hyperparameter of ``base`` (shared and owned) can be swept; the product's settings are
    range-checked before anything compiles.
    """
    names_all = base.names()
    grid = grid or {}
    for name in grid:
        if name not in names_all:
            raise ConfigError(f"grid option {name!r} is not a hyperparameter of this config; sweepable: "
                              f"{', '.join(sorted(names_all))}")
        if len(grid[name]) == 0:
            raise ConfigError(f"grid option {name!r} has no values")
    names = list(grid)
    settings = [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))] or [{}]
    column = lambda name: jnp.asarray([float(s.get(name, getattr(base, name))) for s in settings], jnp.float32)  # noqa: E731
    batched = base.replace(**{name: column(name) for name in names_all})
    for s in settings:  # range-check every concrete setting before compiling
        check_hyperparams(base.replace(**{k: float(v) for k, v in s.items()}))
    return batched, settings


def check_seeds(seeds, seed_devices=1, names=("seeds", "seed_devices")) -> None:
    """The one check of a seed count and its device groups (CLI and Python API alike; ``names``
    are the option names the message uses, e.g. the CLI's flags)."""
    n_seeds, n_groups = names
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds <= 0:
        raise ConfigError(f"{n_seeds} must be a positive integer, got {seeds!r}")
    if isinstance(seed_devices, bool) or not isinstance(seed_devices, int) or seed_devices <= 0 or seeds % seed_devices:
        raise ConfigError(f"{n_groups}={seed_devices!r} must be a positive integer dividing {n_seeds}={seeds}")


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
) -> ExperimentResult:
    """Train ``seeds`` seeds (× every ``grid`` setting) of ``cfg`` in one compile.

    Writes ``summary.json`` and ``metrics.jsonl`` (one line per update, means over seeds, the
    per-seed returns) to ``out_dir`` when given. Raises :class:`NonFiniteLossError` naming the
    update if any run produced a non-finite loss.

    ``cfg.devices > 1`` splits each run's envs over that many devices (``prpo.parallel``);
    ``seed_devices > 1`` lays the seeds over a second mesh axis of that many device groups
    (``seeds`` must be divisible by it); ``devices × seed_devices`` devices are used in all.
    ``env``: train on this env object instead of ``cfg.env`` (see :func:`prpo.make_train`).
    """
    check_seeds(seeds, seed_devices)
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
    keys = jax.random.split(jax.random.key(seed), seeds)
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
    state = init(keys, hps)
    for n in sorted(set(sizes)):
        run_n = lambda s, h, n=n: trainer.run(s, h, n)  # noqa: E731
        fn = jax.jit(jax.vmap(jax.vmap(run_n, in_axes=(0, None), **spmd), in_axes=(0, 0)))
        runners[n] = fn.lower(state, hps).compile()
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
    t_run = time.perf_counter()
    done = 0
    for n in sizes:
        state, metrics = runners[n](state, hps)
        metrics = fetch(metrics)
        chunks_out.append(metrics)
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

    metrics = {k: np.concatenate([c[k] for c in chunks_out], axis=-1) for k in chunks_out[0]}
    final = np.asarray(metrics["last_return"][..., -1])  # [G, S]
    env_steps = cfg.num_updates * cfg.batch_size
    total_steps = env_steps * seeds * n_set
    summary = {
        "algo": cfg.algo,
        "env": cfg.env if env is None else trainer.env.spec.name,
        "seeds": seeds,
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
    }
    if out_dir is not None and jax.process_index() == 0:  # multi-host: one writer
        write_outputs(out_dir, summary, metrics, cfg, settings)
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


def write_outputs(out_dir, summary, metrics, cfg: Config, settings) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=_to_py)
    num_updates = metrics["update"].shape[-1]
    with open(os.path.join(out_dir, "metrics.jsonl"), "w") as f:
        for u in range(num_updates):
            for g, setting in enumerate(settings):
                row = {"update": u + 1, "env_steps": (u + 1) * cfg.batch_size}
                if setting:
                    row["setting"] = setting
                for k, v in metrics.items():
                    if k == "update":
                        continue
                    vals = np.asarray(v[g, :, u], dtype=np.float64)
                    row[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else None
                row["return_per_seed"] = [None if not np.isfinite(x) else float(x) for x in metrics["last_return"][g, :, u]]
                f.write(json.dumps(row) + "\n")
