"""PQN on MinAtar: the four games, several seeds each, greedy returns and learning curves.

One compile per game (its seeds are vmapped). The greedy evaluation runs inside the compiled
training loop every ``eval_every`` updates (pqn-minatar preset: ≈ 5% of training, 128 envs,
ε = 0, one episode each), as purejaxql does. Writes, updated after every game,

    OUT/results.json   per game: per-seed final greedy and training returns, curves, timings
    OUT/results.md     table: final greedy return (mean ± s.e. over seeds), training return,
                       env-steps/s, compile time, and the PPO reference returns
    OUT/curves.png     greedy return (markers) and training return per update, one panel per game

    python experiments/pqn_minatar.py --seeds 4 --out experiments/results/pqn-minatar      # GPU
    python experiments/pqn_minatar.py --games Breakout-MinAtar --seeds 2 --total-steps 2e5  # CPU check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

from prpo import algorithms
from prpo.cli import parse_kv
from prpo.config import ConfigError, apply_overrides
from prpo.experiment import run_experiment

GAMES = ("Breakout-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar")
# PPO after 1e7 steps (gymnax baselines; PureJaxRL's Breakout plot ≈ 40)
PPO_REFERENCE = {"Breakout-MinAtar": 28, "Asterix-MinAtar": 15, "Freeway-MinAtar": 58, "SpaceInvaders-MinAtar": 131}


def _stats(x):
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std() / math.sqrt(x.size))


def _write(out, rows, args, command=None):
    os.makedirs(out, exist_ok=True)
    command = command or "python " + " ".join(sys.argv)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"command": command, "seeds": args.seeds, "rows": rows}, f, indent=1)
    lines = [
        f"PQN on MinAtar, {args.seeds} seeds, pqn-minatar preset (purejaxql defaults)"
        + (f", overrides {' '.join(args.set)}" if args.set else ""),
        "",
        "| game | env steps | greedy return (final eval) | training return (last update) | PPO reference | steps/s | compile s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['game']} | {r['env_steps'] / 1e6:g}M | {r['eval_mean']:.1f} ± {r['eval_se']:.1f} | "
            f"{r['train_mean']:.1f} ± {r['train_se']:.1f} | {PPO_REFERENCE.get(r['game'], '—')} | "
            f"{r['steps_per_s'] / 1e6:.2f} M | {r['compile_s']:.1f} |"
        )
    lines += ["", f"Command: `{command}`", "", "± is the standard error over seeds. Greedy return: the last in-loop evaluation (ε = 0, 128 envs, "
              "one episode each). PPO reference: gymnax baselines at 1e7 steps."]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional (pip install -e ".[plot]")
        return
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.4), squeeze=False)
    for ax, r in zip(axes[0], rows):
        steps = np.asarray(r["curve_steps"]) / 1e6
        ax.plot(steps, r["curve_train"], label="training episodes", color="tab:blue", alpha=0.6)
        ev = np.asarray(r["curve_eval"], np.float64)
        ok = np.isfinite(ev)
        changed = ok & np.concatenate([[True], ev[1:] != ev[:-1]])
        ax.plot(steps[changed], ev[changed], "o-", label="greedy eval", color="tab:red", ms=3)
        if r["game"] in PPO_REFERENCE:
            ax.axhline(PPO_REFERENCE[r["game"]], ls="--", color="gray", label="PPO 1e7 (ref.)")
        ax.set_title(r["game"])
        ax.set_xlabel("env steps (M)")
    axes[0][0].set_ylabel("return (mean over seeds)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curves.png"), dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--games", default=",".join(GAMES), help="comma-separated MinAtar games")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--total-steps", type=float, default=None, help="env steps per seed (default: the preset's 1e7)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra option for every game")
    p.add_argument("--out", default="experiments/results/pqn-minatar")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--replot", action="store_true", help="only rewrite results.md / curves.png from OUT/results.json")
    args = p.parse_args(argv)
    if args.replot:
        with open(os.path.join(args.out, "results.json")) as f:
            saved = json.load(f)
        args.seeds = saved["seeds"]
        _write(args.out, saved["rows"], args, command=saved.get("command"))
        return 0

    rows = []
    for game in args.games.split(","):
        try:
            cfg = algorithms.get("pqn").config(game)
            over = parse_kv(args.set, "--set")
            if args.total_steps:
                over["total_timesteps"] = int(args.total_steps)
            cfg = apply_overrides(cfg, over)
            if args.total_steps and cfg.eval_every:  # keep ≈ 20 evaluations
                cfg = cfg.replace(eval_every=max(1, cfg.num_updates // 20))
            algorithms.get("pqn").check(cfg)
        except ConfigError as e:
            p.error(str(e))
        try:
            res = run_experiment(cfg, seeds=args.seeds, seed=args.seed, progress=not args.no_progress)
        except ConfigError as e:
            p.error(str(e))
        m, s = res.metrics, res.summary
        ev_final = np.asarray(m["eval_return"])[0, :, -1]
        train_final = np.asarray(s["final_returns"], np.float64)
        em, es = _stats(ev_final)
        tm, ts = _stats(train_final)
        rows.append({
            "game": game,
            "env_steps": s["env_steps"],
            "eval_mean": em, "eval_se": es, "eval_per_seed": ev_final.tolist(),
            "train_mean": tm, "train_se": ts, "train_per_seed": train_final.tolist(),
            "steps_per_s": s["steps_per_s"], "compile_s": s["compile_s"], "device": s["device"],
            "curve_steps": (np.arange(1, cfg.num_updates + 1) * cfg.batch_size).tolist(),
            "curve_train": np.nanmean(np.asarray(m["last_return"])[0], axis=0).tolist(),
            "curve_eval": np.nanmean(np.asarray(m["eval_return"])[0], axis=0).tolist(),
            "config": s["config"],
        })
        print(f"{game}: greedy {em:.1f} ± {es:.1f}, training {tm:.1f} ± {ts:.1f}, "
              f"{s['steps_per_s'] / 1e6:.2f} M steps/s, compile {s['compile_s']:.1f} s", flush=True)
        _write(args.out, rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
