"""Does seed k of a vmapped batch equal seed k trained alone (``--seed-index k``)? Measured, per platform.

Trains the PPO CartPole preset for each ``--updates`` budget: once as ``--seeds N`` vmapped, and
once per seed k alone with ``seed_index=k`` (same key), then reports the largest parameter
difference and whether the final returns agree. On CPU the two are expected to agree to float
rounding; on GPU batched and unbatched kernels may round differently, and over a long run of a
chaotic training loop such differences grow. Run it with and without
``XLA_FLAGS=--xla_gpu_deterministic_ops=true`` to see whether deterministic kernels change that.

    python benchmarks/seed_equivalence.py --updates 3,976 --seeds 4 --out benchmarks/results/seed-equivalence-h200.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", default="3,976", help="comma-separated update budgets")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import jax

    import prpo

    rows = []
    for updates in [int(u) for u in args.updates.split(",")]:
        cfg = prpo.preset("ppo-cartpole")
        cfg = cfg.replace(total_timesteps=updates * cfg.batch_size)
        batch = prpo.run_experiment(cfg, seeds=args.seeds, progress=False)
        for k in range(args.seeds):
            alone = prpo.run_experiment(cfg, seeds=args.seeds, seed_index=k, progress=False)
            diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a[0, k]) - np.asarray(b[0, 0])))),
                                                 batch.state.params, alone.state.params))
            row = {
                "updates": updates, "seed_index": k, "max_abs_param_diff": max(diffs),
                "bitwise_equal": max(diffs) == 0.0,
                "final_return_batched": float(batch.summary["final_returns"][k]),
                "final_return_alone": float(alone.summary["final_returns"][0]),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
           "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
