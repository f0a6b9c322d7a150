"""Seed spread of the learning tests: how often would each test fail on another host?

A learning test trains a few seeds and checks a statistic (e.g. the mean final return of 4
seeds ≥ 475). Floating-point rounding differs between hosts (CPU kernels, GPU, XLA versions),
and a different rounding is, for a chaotic training run, as good as a different seed. So the
question "does this test pass on any host?" is answered by the distribution of the statistic
over many seeds: this script trains every learning test's configuration with ``--seeds`` seeds
(vmapped, one compile per case), and reports per case the per-seed results, quantiles and the
probability that the test's statistic, computed on a random subset of the test's seed count,
fails its threshold (exact over all subsets when there are few, else 20,000 random ones).

    python benchmarks/learning_spread.py --seeds 32 --out benchmarks/results/learning-spread.json
    python benchmarks/learning_spread.py --cases a2c-cartpole --seeds 32 --grid lr=7e-4,3e-4

The tests' thresholds and seed counts (tests/test_*.py) cite the figures measured here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _cases():
    """name -> (algo, env, overrides, test seed count, statistic, threshold, greedy-eval envs or 0)."""
    return {
        "ppo-cartpole": ("ppo", "CartPole-v1", {}, None, "mean", 475.0, 0),
        "ppo-pendulum": ("ppo", "Pendulum-v1", {}, None, "mean", -250.0, 0),
        "a2c-cartpole": ("a2c", "CartPole-v1", dict(num_envs=16, total_timesteps=1_000_000), None, "mean", 475.0, 0),
        "spo-cartpole": ("spo", "CartPole-v1", {}, None, "mean", 475.0, 0),
        "mdpo-cartpole": ("mdpo", "CartPole-v1", {}, None, "mean", 475.0, 0),
        "bpo-cartpole": ("bpo", "CartPole-v1", {}, None, "mean", 475.0, 0),
        "pqn-cartpole": ("pqn", "CartPole-v1", dict(eval_every=0), None, "mean", 475.0, 16),
        "fpo-pendulum": ("fpo", "Pendulum-v1", dict(total_timesteps=300_000), None, "mean", -650.0, 0),
        "dppo-pendulum": ("dppo", "Pendulum-v1", dict(total_timesteps=300_000), None, "mean", -500.0, 0),
        "policyflow-pendulum": ("policyflow", "Pendulum-v1", dict(total_timesteps=600_000), None, "mean", -500.0, 0),
    }


def failure_probability(values: np.ndarray, k: int, threshold: float, stat: str = "mean", rng=None) -> float:
    """P(stat of a random k-subset of ``values`` < threshold): exact when C(n, k) ≤ 20,000."""
    values = np.asarray(values, np.float64)
    n = len(values)
    k = min(k, n)
    f = np.mean if stat == "mean" else np.median
    if math.comb(n, k) <= 20_000:
        subsets = np.asarray(list(itertools.combinations(range(n), k)))
    else:
        rng = rng or np.random.default_rng(0)
        subsets = np.stack([rng.choice(n, k, replace=False) for _ in range(20_000)])
    stats = f(values[subsets], axis=1)
    return float(np.mean(stats < threshold))


def run_case(name, seeds: int, grid: dict, test_seeds: list[int]):
    import jax

    import prpo
    from prpo import algorithms

    algo, env, overrides, _, stat, threshold, eval_envs = _cases()[name]
    cfg = algorithms.get(algo).config(env, **overrides)
    t0 = time.perf_counter()
    result = prpo.run_experiment(cfg, seeds=seeds, grid=grid or None, progress=False)
    wall = time.perf_counter() - t0
    finals = np.asarray(result.metrics["last_return"][..., -1])  # [G, S]
    if eval_envs:  # greedy evaluation of every trained seed (PQN's test)
        trainer = prpo.make_train(cfg.replace(num_envs=eval_envs))
        ev = jax.jit(jax.vmap(jax.vmap(lambda s, k: prpo.evaluate(trainer, s, k))))
        keys = jax.vmap(jax.vmap(jax.random.key))(10 + np.broadcast_to(np.arange(seeds), finals.shape))
        finals = np.asarray(ev(result.state, keys))
    out = []
    for g, setting in enumerate(result.grid):
        v = finals[g]
        row = {
            "case": name, "setting": setting, "seeds": seeds, "statistic": stat, "threshold": threshold,
            "finals": [round(float(x), 2) for x in v],
            "mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)),
            "quantiles_5_25_50_75_95": [float(q) for q in np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])],
            "p_fail": {str(k): failure_probability(v, k, threshold, stat) for k in test_seeds},
            "wall_s": wall, "compile_s": result.summary["compile_s"],
        }
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(_cases()), help="comma-separated case names")
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="hyperparameter grid (repeatable)")
    p.add_argument("--test-seeds", default="2,4,8", help="seed counts k for which P(test fails) is reported")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    import jax

    grid = {}
    for item in args.grid:
        k, v = item.split("=", 1)
        grid[k] = [float(x) for x in v.split(",")]
    test_seeds = [int(x) for x in args.test_seeds.split(",")]
    rows = []
    for name in args.cases.split(","):
        rows += run_case(name, args.seeds, grid, test_seeds)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "jax": jax.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
