"""Multimodal demonstration: Gaussian PPO vs FPO vs DPPO (vs PMOE) on the MultiGoal2D bandit.

MultiGoal2D (``prpo.toy_envs``) pays ``max_g exp(−‖a − g‖²/(2·0.3²))`` for a 2-D action, with
equally good goals at (1, 0) and (−1, 0). A Gaussian policy must put its mass on one goal (or
between them, where the reward is ≈ 0); a flow (FPO), diffusion (DPPO) or Gaussian-mixture
(PMOE, ``--algos ...,pmoe``: K = 4 components, component means initialised apart with
``mixture_mean_spread=0.5``) policy can keep both.
After training, 2000 actions are sampled from each final policy (every seed) and counted per goal
(within 0.3 of it), at two budgets (3e4 and 1.2e5 steps). Finding (see
``experiments/results/multimodal/README.md``): with these settings the flow and diffusion policies
also end on a single goal per seed; the flow spreads over the segment between the goals on the
way. Writes

    OUT/multimodal.json   per algorithm and seed: mode fractions, final return
    OUT/multimodal.png    sampled actions per algorithm (first seed), goals marked

Compared with: FPO paper (McAllister et al., 2025), Fig. 2/3 (a flow policy on a multimodal
goal task keeps several modes while the Gaussian collapses to one); PMOE paper (Ren et al., 2021:
a mixture policy learns distinguishable primitives). Runs on CPU in minutes:

    python experiments/multimodal.py --seeds 3 --budgets 3e4,1.2e5 --out experiments/results/multimodal
    python experiments/multimodal.py --algos ppo,fpo,dppo,pmoe --seeds 3 --budgets 3e4,1.2e5 \
        --out experiments/results/multimodal_pmoe
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from prpo import algorithms
from prpo import normalization as norm
from prpo.config import ConfigError
from prpo.experiment import run_experiment
from prpo.toy_envs import goals, mode_fractions
from prpo.train import make_train

#: bandit settings shared by every algorithm: 512 one-step episodes × 2 per update, 4 epochs × 4
#: minibatches, no advantage normalisation (once every sample earns ≈ 1 the advantages vanish
#: instead of being rescaled to unit size), lr 3e-4 (Gaussian PPO: 3e-3; at 3e-4 it barely moves)
SETTINGS = dict(num_envs=512, num_steps=2, num_minibatches=4, update_epochs=4, normalize_reward=False,
                normalize_obs=False, anneal_lr=False, lr=3e-4, adv_norm="none")
PER_ALGO = {
    "ppo": dict(lr=3e-3),
    "fpo": dict(actor_hidden="64,64"),
    "dppo": dict(diffusion_steps=10, actor_hidden="64,64"),
    # the Gaussian's lr; component means start apart (with zero biases the 4 near-identical
    # components had not separated after 3e4 steps in a 2-seed smoke run)
    "pmoe": dict(lr=3e-3, mixture_mean_spread=0.5),
}
RADIUS = 0.3  # an action "hits" a goal within the reward width; a Gaussian cannot put ≥ 0.25 on both


def config(algo: str, total_steps: int):
    return algorithms.get(algo).config("MultiGoal2D", total_timesteps=total_steps, **{**SETTINGS, **PER_ALGO.get(algo, {})})


def sample_actions(cfg, state, n: int = 2000, seed: int = 0) -> np.ndarray:
    """``n`` actions of every final policy in ``state`` (leaves ``[S, ...]``): ``[S, n, 2]`` (env units)."""
    import jax
    import jax.numpy as jnp

    trainer = make_train(cfg)
    obs = jnp.ones((n, 1), jnp.float32)

    def one(s, k):
        x = norm.rms_normalize(s.obs_rms, obs, clip=cfg.obs_clip) if cfg.normalize_obs else obs
        return jnp.clip(trainer.policy.act(s.params, x, k)[0], -2.0, 2.0)

    keys = jax.random.split(jax.random.key(seed), jax.tree.leaves(state.params)[0].shape[0])
    return np.asarray(jax.jit(jax.vmap(one))(state, keys))


def run(algos, seeds: int, total_steps: int) -> dict:
    import jax

    out = {}
    for algo in algos:
        cfg = config(algo, total_steps)
        t0 = time.perf_counter()
        res = run_experiment(cfg, seeds=seeds, progress=False)
        state = jax.tree.map(lambda x: x[0], res.state)  # the single grid setting
        acts = sample_actions(cfg, state)
        fr = np.stack([mode_fractions(a, radius=RADIUS) for a in acts])
        out[algo] = {
            "mode_fractions": fr.tolist(),  # [seed, goal]
            "both_modes": (fr.min(1) >= 0.25).tolist(),
            "between_goals": [float((np.abs(a[:, 0]) < 0.5).mean()) for a in acts],
            "final_return": np.asarray(res.summary["final_returns"]).reshape(-1).tolist(),
            "wall_s": time.perf_counter() - t0,
            "actions_seed0": acts[0][:1000].tolist(),
            "config": cfg.to_dict(),
        }
        print(f"{total_steps:8d} steps {algo:5s} return {np.mean(out[algo]['final_return']):.3f}  mode fractions "
              f"per seed {np.round(fr, 2).tolist()}  ({out[algo]['wall_s']:.0f} s)", flush=True)
    return out


def plot(results, path):
    """One row per training budget, one column per algorithm: sampled actions of seed 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = list(results)
    algos = list(results[budgets[0]])
    fig, axes = plt.subplots(len(budgets), len(algos), figsize=(3.8 * len(algos), 3.8 * len(budgets)), squeeze=False)
    names = {"ppo": "Gaussian PPO", "fpo": "FPO (flow)", "dppo": "DPPO (diffusion)", "policyflow": "PolicyFlow",
             "pmoe": "PMOE (mixture)"}
    for i, budget in enumerate(budgets):
        for j, algo in enumerate(algos):
            r, ax = results[budget][algo], axes[i, j]
            a = np.asarray(r["actions_seed0"])
            ax.scatter(a[:, 0], a[:, 1], s=3, alpha=0.3)
            g = goals(2)
            ax.scatter(g[:, 0], g[:, 1], marker="*", s=200, c="red", label="goals")
            fr = np.asarray(r["mode_fractions"])
            both = int(np.sum(r["both_modes"]))
            ax.set_title(f"{names.get(algo, algo)}, {float(budget):.0e} steps\nseed 0 goal fractions "
                         f"{np.round(fr[0], 2).tolist()}\n{both}/{len(fr)} seeds keep both (≥ 0.25 each)", fontsize=8)
            ax.set_xlim(-2, 2)
            ax.set_ylim(-2, 2)
            ax.set_aspect("equal")
    axes[0, 0].legend(loc="lower left", fontsize=8)
    fig.suptitle("MultiGoal2D: 1000 sampled actions of the trained policy (seed 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algos", default="ppo,fpo,dppo", type=lambda s: s.split(","))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budgets", default="3e4,1.2e5", help="comma-separated training budgets (env steps), one row each")
    p.add_argument("--out", default="experiments/results/multimodal")
    args = p.parse_args(argv)
    try:
        budgets = [int(float(b)) for b in args.budgets.split(",")]
    except ValueError:
        p.error(f"--budgets takes comma-separated numbers of env steps, got {args.budgets!r}")
    try:
        for a in args.algos:
            algorithms.get(a)
    except ConfigError as e:
        p.error(str(e))
    try:
        results = {b: run(args.algos, args.seeds, b) for b in budgets}
    except ConfigError as e:
        p.error(str(e))
    os.makedirs(args.out, exist_ok=True)
    command = "python experiments/multimodal.py " + " ".join(sys.argv[1:] if argv is None else argv)
    with open(os.path.join(args.out, "multimodal.json"), "w") as f:
        json.dump({"command": command, "results": results}, f)
    plot(results, os.path.join(args.out, "multimodal.png"))
    print(f"wrote {args.out}/multimodal.json and multimodal.png")


if __name__ == "__main__":
    main()
