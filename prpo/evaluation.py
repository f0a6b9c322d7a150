"""Load, evaluate (and watch) a trained run from its directory: ``prpo.load(DIR)``,
``python -m prpo eval DIR``.

::

    trainer, state = prpo.load("runs/cartpole")   # state leaves [G, S, ...]: settings × seeds

    report = prpo.evaluation.evaluate_run("runs/cartpole", episodes=20)
    report["mean"], report["per_seed"]          # over every seed's 20 episodes; each seed's mean

Every seed (× grid setting) of the run's latest checkpoint plays ``episodes`` full episodes in
fresh envs — the mode action unless ``deterministic=False``, the observation normaliser frozen as
trained — and the report is appended to ``DIR/eval.json`` (earlier evaluations are kept).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from prpo.config import ConfigError

__all__ = ["load", "evaluate_run", "check_eval_args", "EVAL_FILE"]

EVAL_FILE = "eval.json"


def load(run_dir, step: int | None = None, *, env=None, policy=None, network=None, surrogate=None):
    """``(trainer, state)`` of a run directory's latest (or ``step``-th) checkpoint.

    ``trainer`` is :func:`prpo.make_train` of the run's config on one device; ``state`` is its
    :class:`~prpo.train.TrainState` with leading axes ``[G, S]`` (grid settings × seeds, as
    trained: ``jax.tree.map(lambda x: x[g, s], state)`` is one run). A run trained on several
    devices loads onto one. A run trained with a custom env, policy, network or surrogate from
    Python needs the same objects passed again. Evaluate with :func:`prpo.evaluate` or
    ``python -m prpo eval DIR``.
    """
    from prpo import checkpoint as ck
    from prpo.experiment import grid_hyperparams, seed_keys
    from prpo.train import make_train

    record = ck.read_run(run_dir)
    ck.check_custom(record, {"env": env, "policy": policy, "network": network, "surrogate": surrogate}, run_dir)
    cfg = ck.config_from_dict(record["config"]).replace(devices=1)
    ckpts = ck.Checkpoints(run_dir, read_only=True)
    steps = ckpts.steps()
    if not steps:
        raise ck.CheckpointError(f"{str(run_dir)!r} has no complete checkpoint")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ck.CheckpointError(f"{str(run_dir)!r} has no checkpoint {step!r}; it has {steps}")
    trainer = make_train(cfg, policy=policy, network=network, surrogate=surrogate, env=env)
    hps, settings = grid_hyperparams(cfg.hp, record["grid"])
    keys = seed_keys(record["seed"], record["seeds"], record.get("seed_index"))
    init = jax.vmap(jax.vmap(trainer.init, in_axes=(0, None)), in_axes=(None, 0))
    abstract = ck._on_device(jax.eval_shape(init, keys, hps))
    ck_record = ckpts.record(step)
    state, _ = ckpts.restore(step, abstract, ck_record, (len(settings), len(keys)))
    return trainer, state


def _nulls(x):
    """NaN -> None in nested lists (strict JSON)."""
    if isinstance(x, list):
        return [_nulls(v) for v in x]
    return None if x != x else x


def check_eval_args(episodes, seed, names=("episodes", "seed")) -> None:
    """The one check of the evaluation options (CLI and Python API)."""
    from prpo.experiment import check_seed

    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes <= 0:
        raise ConfigError(f"{names[0]} must be a positive integer (episodes per seed), got {episodes!r}")
    check_seed(seed, names[1])


def evaluate_run(run_dir, episodes: int = 10, deterministic: bool = True, seed: int = 0, video=None,
                 step: int | None = None, write: bool = True, **custom) -> dict:
    """Evaluate the run in ``run_dir``: ``episodes`` full episodes per seed and setting.

    Returns (and appends to ``run_dir/eval.json`` when ``write``) a report with the mean and
    standard deviation over all episodes, each seed's mean (``per_seed``, ``[S]`` or ``[G][S]``
    with a grid) and every episode's return. ``video``: also render one episode of the first
    seed (first setting) to this ``.gif`` / ``.mp4`` file (:mod:`prpo.render`). ``custom``: the
    env / policy / network / surrogate a run trained from Python needs again.
    """
    from prpo import checkpoint as ck
    from prpo.train import episode_returns

    check_eval_args(episodes, seed)
    if video is not None:
        from prpo import render

        render.check_video_path(video)
    record = ck.read_run(run_dir)
    trainer, state = load(run_dir, step, **custom)
    if video is not None:
        render.renderer_for(trainer.env)  # this env can be rendered (before any episode runs)
    n_set, n_seeds = np.asarray(state.update).shape
    keys = jax.random.split(jax.random.key(seed), n_set * n_seeds).reshape(n_set, n_seeds)
    play = lambda st, k: episode_returns(trainer, st, k, episodes, deterministic)  # noqa: E731
    t0 = time.perf_counter()
    returns, finished = jax.device_get(jax.jit(jax.vmap(jax.vmap(play)))(state, keys))  # [G, S, N]
    eval_s = time.perf_counter() - t0
    done = finished.astype(bool)
    vals = np.where(done, returns, np.nan)
    per_seed = np.nanmean(vals, axis=-1) if done.any() else np.full((n_set, n_seeds), np.nan)
    grid = n_set > 1
    report = {
        "update": int(np.asarray(state.update).max()),
        "episodes": episodes,
        "deterministic": deterministic,
        "seed": seed,
        "mean": float(np.nanmean(vals)),
        "std": float(np.nanstd(vals)),
        "per_seed": _nulls((per_seed if grid else per_seed[0]).tolist()),
        "per_seed_std": float(np.nanstd(per_seed)),
        "returns": _nulls((vals if grid else vals[0]).tolist()),  # null: an episode that did not finish
        "unfinished": int((~done).sum()),
        "settings": record.get("settings", [{}]),
        "eval_s": eval_s,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if video is not None:
        one = jax.tree.map(lambda x: x[0, 0], state)
        frames, ret = render.episode_frames(trainer, one, jax.random.key(seed), deterministic=deterministic)
        render.write_video(frames, video)
        report["video"] = {"path": str(video), "frames": int(len(frames)), "return": float(ret)}
    if write:
        path = os.path.join(run_dir, EVAL_FILE)
        history = []
        if os.path.exists(path):
            import json

            try:
                with open(path) as f:
                    history = json.load(f).get("evaluations", [])
            except (OSError, ValueError):
                raise ConfigError(f"{path} is unreadable; move it away to write a new evaluation") from None
        ck.write_json(path, {"evaluations": history + [report]})
    return report
