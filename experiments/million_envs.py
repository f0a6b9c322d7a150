"""PPO on CartPole at 2048, 65,536 and 2^20 parallel envs with the co-scaling recipe.

The claim (Beukman et al., 2026, "PPO at one million parallel environments"): when the number of
parallel envs grows, keep the minibatch size and the learning rate and grow the number of
minibatches (``fixed_minibatch_size``); then more envs remove plateaus and give monotonic
improvement, in env steps and in wall-clock.

Every scale is one compile; its seeds run one after another through the compiled function, so
that each seed's wall-clock is that of a single run (a user's run), not of a vmapped batch. The
returns come from the in-loop deterministic evaluation (``eval_every``; 1024 envs, one episode
each), which unlike the training-episode return does not lag the policy by the episode length
(a 500-step episode spans four 128-step updates). Wall-clock at update k is k × (run time /
updates): updates are identical programs, so this is the measured run time spread evenly.

    python experiments/million_envs.py --out experiments/results/ppo-million-envs        # GPU
    python experiments/million_envs.py --quick --out /tmp/me                               # CPU check
    python experiments/million_envs.py --rebuild --out experiments/results/ppo-million-envs  # table + plot again

Writes ``OUT/results.json`` (after every seed, so a run cut short keeps what it finished),
``OUT/results.md`` and ``OUT/curves.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

THRESHOLD = 475.0  # CartPole-v1's "solved" level (mean return over evaluation episodes)
MAX_RETURN = 500.0  # CartPole-v1's time limit: every evaluation episode ran to the end


def first_reach(values, threshold: float = THRESHOLD):
    """Index of the first entry >= ``threshold`` (NaN entries never count), or None."""
    hits = np.flatnonzero(np.nan_to_num(np.asarray(values, np.float64), nan=-np.inf) >= threshold)
    return int(hits[0]) if hits.size else None


def max_drawdown(values) -> float:
    """The largest fall of the curve below its running maximum (0 for a non-decreasing curve);
    NaN entries (no evaluation yet) are skipped. A measure of non-monotonic learning."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(np.max(np.maximum.accumulate(v) - v))


def _scale_config(num_envs: int, updates: int, eval_every: int, args):
    from prpo import preset

    return preset(
        "ppo-cartpole", num_envs=num_envs, num_steps=args.num_steps, total_timesteps=num_envs * args.num_steps * updates,
        fixed_minibatch_size=args.minibatch, anneal_lr=False, eval_every=eval_every, eval_envs=args.eval_envs,
        lr=args.lr,
    )


def run_scale(num_envs: int, updates: int, eval_every: int, args, on_seed=None) -> dict:
    import jax

    from prpo.train import make_train

    cfg = _scale_config(num_envs, updates, eval_every, args)
    trainer = make_train(cfg)
    t0 = time.perf_counter()
    compiled = jax.jit(trainer.train).lower(jax.random.key(0), cfg.hp).compile()
    compile_s = time.perf_counter() - t0
    row = {
        "num_envs": num_envs, "num_steps": cfg.num_steps, "updates": cfg.num_updates,
        "batch": cfg.batch_size, "minibatch": cfg.minibatch_size, "num_minibatches": cfg.num_minibatches,
        "sgd_steps_per_update": cfg.update_epochs * cfg.num_minibatches, "lr": float(cfg.hp.lr),
        "eval_every": eval_every, "eval_envs": args.eval_envs, "compile_s": compile_s, "seeds": [],
        "config": cfg.to_dict(),
    }
    for seed in range(args.seed, args.seed + args.seeds):
        t0 = time.perf_counter()
        _, metrics = compiled(jax.random.key(seed), cfg.hp)
        metrics = jax.device_get(metrics)
        run_s = time.perf_counter() - t0
        ev = np.asarray(metrics["eval_return"], np.float64)
        tr = np.asarray(metrics["last_return"], np.float64)
        evaluated = (np.arange(cfg.num_updates) + 1) % eval_every == 0
        ev = np.where(evaluated, ev, np.nan)
        hit = first_reach(ev)
        row["seeds"].append({
            "seed": seed, "run_s": run_s, "steps_per_s": cfg.num_updates * cfg.batch_size / run_s,
            "eval_return": ev.tolist(), "train_return": tr.tolist(),
            "final_eval": float(ev[evaluated][-1]) if evaluated.any() else None,
            "first_475_update": None if hit is None else hit + 1,
            "first_475_steps": None if hit is None else (hit + 1) * cfg.batch_size,
            "first_475_s": None if hit is None else (hit + 1) * run_s / cfg.num_updates,
            "eval_max_drawdown": max_drawdown(ev),
        })
        s = row["seeds"][-1]
        print(f"{num_envs:>8} envs seed {seed}: final eval {s['final_eval']}, 475 at update {s['first_475_update']} "
              f"({s['first_475_s'] and round(s['first_475_s'], 1)} s), {s['steps_per_s'] / 1e6:.2f} M steps/s, "
              f"run {run_s:.1f} s, drawdown {s['eval_max_drawdown']:.1f}", flush=True)
        if on_seed is not None:
            on_seed(row)
    try:
        stats = jax.devices()[0].memory_stats() or {}
        row["peak_bytes"] = stats.get("peak_bytes_in_use")
    except Exception:  # noqa: BLE001 - backends without memory statistics
        row["peak_bytes"] = None
    return row


def _mean_se(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    a = np.asarray(xs, np.float64)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else 0.0


def _fmt(m, se, scale=1.0, digits=1, unit=""):
    if m is None:
        return "—"
    return f"{m / scale:.{digits}f} ± {se / scale:.{digits}f}{unit}"


def _reach(row, seed, threshold):
    """(env steps, seconds) at one seed's first evaluation >= ``threshold``, or None."""
    hit = first_reach(seed["eval_return"], threshold)
    if hit is None:
        return None
    return (hit + 1) * row["batch"], (hit + 1) * seed["run_s"] / row["updates"]


def markdown(rows, command: str, device: str) -> str:
    lines = [f"Command: `{command}`", "", f"Device: {device}", "",
             "| envs | minibatches × size | SGD steps / update | updates | env steps / s | compile s | "
             "final eval return | max drawdown | reached 475 | env steps to 475 | seconds to 475 | reached 500 | "
             "env steps to 500 | seconds to 500 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        seeds = r["seeds"]
        fe = _mean_se([s["final_eval"] for s in seeds])
        dd = _mean_se([s["eval_max_drawdown"] for s in seeds])
        rate = _mean_se([s["steps_per_s"] for s in seeds])
        cells = []
        for threshold in (THRESHOLD, MAX_RETURN):
            hits = [h for h in (_reach(r, s, threshold) for s in seeds) if h is not None]
            cells += [f"{len(hits)} / {len(seeds)}", _fmt(*_mean_se([h[0] for h in hits]), 1e6, 1, " M"),
                      _fmt(*_mean_se([h[1] for h in hits]))]
        lines.append(
            f"| {r['num_envs']:,} | {r['num_minibatches']} × {r['minibatch']:,} | {r['sgd_steps_per_update']} | "
            f"{r['updates']} | {_fmt(*rate, 1e6, 2, ' M')} | {r['compile_s']:.1f} | {_fmt(*fe)} | {_fmt(*dd)} | "
            + " | ".join(cells) + " |")
    lines += ["", "Mean ± s.e. over seeds (the \"to 475\" / \"to 500\" columns over the seeds that reached it: the "
              "first evaluation at or above it). \"max drawdown\": the largest fall of a seed's evaluation curve below "
              "its running maximum (0 = monotonic). Seconds: one seed's run time (compile excluded) × the fraction "
              "of its updates done."]
    return "\n".join(lines) + "\n"


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        if not r["seeds"]:
            continue
        ev = np.asarray([s["eval_return"] for s in r["seeds"]], np.float64)
        x = np.arange(1, ev.shape[1] + 1)
        keep = np.isfinite(ev).all(axis=0)
        mean = ev[:, keep].mean(axis=0)
        se = ev[:, keep].std(axis=0) / math.sqrt(ev.shape[0])
        secs = np.mean([s["run_s"] for s in r["seeds"]]) / ev.shape[1]
        label = f"{r['num_envs']:,} envs"
        for ax, xs in ((axes[0], x[keep] * r["batch"]), (axes[1], x[keep] * secs)):
            ax.plot(xs, mean, label=label)
            ax.fill_between(xs, mean - se, mean + se, alpha=0.25)
    for ax, xl in ((axes[0], "env steps"), (axes[1], "wall-clock seconds (one seed, compile excluded)")):
        ax.set_xscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("deterministic eval return")
        ax.axhline(THRESHOLD, color="grey", lw=0.5, ls="--")
        ax.legend()
    fig.suptitle("PPO CartPole-v1, co-scaling (fixed minibatch size and lr)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _ints(s: str):
    """Comma-separated integers (``1e6`` allowed); a fraction, nan or inf is refused (``ValueError``)."""
    values = [float(x) for x in s.split(",")]
    bad = [x for x in values if not x.is_integer()]
    if bad:
        raise ValueError(f"not integers: {bad}")
    return [int(x) for x in values]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", default="2048,65536,1048576", help="comma-separated num_envs")
    p.add_argument("--updates", default="300,60,12", help="updates per scale (one per --envs)")
    p.add_argument("--eval-every", default="10,2,1", help="updates between evaluations, per scale")
    p.add_argument("--num-steps", type=int, default=128)
    p.add_argument("--minibatch", type=int, default=65_536, help="fixed minibatch size (2048 × 128 / 4 minibatches)")
    p.add_argument("--lr", type=float, default=2.5e-4)
    p.add_argument("--eval-envs", type=int, default=1024)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a CPU check of the script, not a measurement")
    p.add_argument("--rebuild", action="store_true",
                   help="no training: rewrite OUT/results.md and OUT/curves.png from OUT/results.json")
    args = p.parse_args(argv)
    if args.rebuild:
        path = os.path.join(args.out, "results.json")
        if not os.path.exists(path):
            p.error(f"--rebuild needs {path}")
        with open(path) as f:
            data = json.load(f)
        with open(os.path.join(args.out, "results.md"), "w") as f:
            f.write(markdown(data["rows"], data["command"], data["device"]))
        plot(data["rows"], os.path.join(args.out, "curves.png"))
        return 0
    if args.quick:
        args.envs, args.updates, args.eval_every = "8,32", "6,3", "2,1"
        args.num_steps, args.minibatch, args.eval_envs, args.seeds = 16, 32, 8, 2
    try:
        envs, updates, every = _ints(args.envs), _ints(args.updates), _ints(args.eval_every)
    except ValueError as e:
        p.error(f"--envs, --updates and --eval-every take comma-separated integers: {e}")
    for flag, values in (("--envs", envs), ("--updates", updates), ("--eval-every", every),
                         ("--num-steps", [args.num_steps]), ("--minibatch", [args.minibatch]),
                         ("--eval-envs", [args.eval_envs]), ("--seeds", [args.seeds])):
        if any(v < 1 for v in values):
            p.error(f"{flag} must be positive integers, got {values}")
    if not (len(envs) == len(updates) == len(every)):
        p.error("--envs, --updates and --eval-every need the same number of entries")
    for n, u, e in zip(envs, updates, every):
        if n * args.num_steps % args.minibatch:
            p.error(f"--minibatch {args.minibatch} must divide num_envs × num_steps = {n * args.num_steps}")
        if u % e:
            p.error(f"--updates {u} must be a multiple of --eval-every {e} (the last update is evaluated)")
    if os.path.exists(os.path.join(args.out, "results.json")):
        p.error(f"{args.out} already holds results.json; choose another --out (nothing is overwritten)")
    os.makedirs(args.out, exist_ok=True)
    import jax

    device = f"{jax.devices()[0].device_kind}, JAX {jax.__version__}"
    command = "python experiments/million_envs.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows = []

    def save(row=None):
        done = rows + ([row] if row is not None and row not in rows else [])
        with open(os.path.join(args.out, "results.json.tmp"), "w") as f:
            json.dump({"command": command, "device": device, "rows": done}, f)
        os.replace(os.path.join(args.out, "results.json.tmp"), os.path.join(args.out, "results.json"))

    for n, u, e in zip(envs, updates, every):
        rows.append(run_scale(n, u, e, args, on_seed=save))
        save()
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(markdown(rows, command, device))
    try:
        plot(rows, os.path.join(args.out, "curves.png"))
    except ImportError:
        print("matplotlib is not installed: no curves.png", file=sys.stderr)
    print(markdown(rows, command, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
