"""Ablation runner: algorithms × environments × seeds (× hyperparameter grid) → table + curves.

Every (algorithm, env) pair is one compile: its seeds and grid settings are vmapped together
(shapes differ between algorithms and envs, so those are separate compiles). Writes

    OUT/results.json   every run's per-seed final returns and diagnostics
    OUT/results.md     mean ± standard error and IQM [95% stratified-bootstrap CI, rliable via
                       prpo.report] of the final return over seeds (training episodes of the last
                       update with finished episodes; with --eval also a deterministic
                       evaluation of the final policy), mean/max |r − 1|, clip fraction,
                       approx-KL (means over training; max over training)
    OUT/curves.png     return and mean |r − 1| per update, one column per env

rewritten after every finished (algorithm, env) pair, so a sweep cut short keeps what it
finished. An OUT that already holds results is refused unless --overwrite. An update with a
non-finite loss is never applied; by default it stops the run (the error names the update and
seed), with ``--on-nonfinite skip`` that seed trains on and the table lists, per seed, how many
updates were skipped (one diverging seed no longer ends the other seeds of its batch).
``--eval-sample`` adds an evaluation with sampled actions (as in training) below the table.

Examples::

    # the Brax comparison (GPU): PPO vs SPO vs BPO vs MDPO on three tasks, 5 seeds each
    python experiments/ablation.py --algos ppo,spo,bpo,mdpo --envs ant,hopper,halfcheetah \
        --seeds 5 --total-steps 1e7 --set env_backend=positional --out experiments/results/brax
    # SPO's headline: the same deep 7-layer policy for both
    python experiments/ablation.py --algos ppo,spo --envs hopper --seeds 5 \
        --set actor_hidden=256,256,128,128,64,64 --set critic_hidden=64,64 --out experiments/results/deep
    # a quick CPU check
    python experiments/ablation.py --algos ppo,spo --envs CartPole-v1 --seeds 2 --total-steps 5e4

Compared with: SPO (Xie et al.) — with deep policies PPO's ratio deviation grows and its return
falls behind while SPO's ratio stays bounded; BPO ≥ PPO on MuJoCo (numbers unverified);
MDPO ≥ PPO on MuJoCo (the SPO, BPO and MDPO papers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from prpo import algorithms
from prpo.cli import parse_kv
from prpo.config import ConfigError
from prpo.experiment import ON_NONFINITE, check_grid, run_experiment
from prpo.report import ReportError, final_stats
from prpo.train import NonFiniteLossError, evaluate, make_train


def _evaluate_all(cfg, state, seed, deterministic=True):
    """Evaluation of every final policy ([G, S] states): one episode per env, observation
    statistics frozen, the mode action (``deterministic``) or a sampled one. Unlike the training
    return, it does not mix policies of different updates (in a 1000-step episode without
    terminations, 100 updates pass)."""
    import jax

    trainer = make_train(cfg)
    one = lambda s, k: evaluate(trainer, s, k, deterministic=deterministic)  # noqa: E731
    g, n = jax.tree.leaves(state.params)[0].shape[:2]
    keys = jax.random.split(jax.random.key(seed + 10_000), g * n).reshape(g, n)
    return np.asarray(jax.jit(jax.vmap(jax.vmap(one)))(state, keys), np.float64)


def _iqm(final) -> dict:
    """IQM of the seeds' final returns and its 95% CI (prpo.report, i.e. rliable); None without rliable."""
    try:
        s = final_stats(final)
    except ReportError as e:
        if not _iqm.said:
            print(f"ablation: no IQM column: {e}", file=sys.stderr)
            _iqm.said = True
        return {"return_iqm": None, "return_iqm_ci": None}
    return {"return_iqm": s["iqm"], "return_iqm_ci": s["iqm_ci"]}


_iqm.said = False


def _seed_stats(final, evals) -> dict:
    """The per-seed statistics of one row, from its seeds' final (and evaluation) returns: one
    place for the formulas, used by a fresh row and by a row pooled over several runs."""
    final = np.asarray(final, np.float64)
    evals = None if evals is None else np.asarray(evals, np.float64)
    se = lambda x: float(np.nanstd(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0  # noqa: E731
    return {
        "final_returns": final.tolist(), "return_mean": float(np.nanmean(final)), "return_stderr": se(final),
        **_iqm(final),
        "eval_returns": None if evals is None else evals.tolist(),
        "eval_mean": None if evals is None else float(evals.mean()),
        "eval_stderr": None if evals is None or len(evals) < 2 else se(evals),
    }


def _sample_stats(returns) -> dict:
    """The row's evaluation with sampled actions (``--eval-sample``): per-seed returns, mean, s.e."""
    x = np.asarray(returns, np.float64)
    return {"eval_sample_returns": x.tolist(), "eval_sample_mean": float(x.mean()),
            "eval_sample_stderr": float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0}


def _number(text, what):
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not a number") from None


def _plan(args) -> list:
    """Every (env, algo, config) of the sweep and its grid, checked before anything compiles:
    a bad option, env, grid value or ``--metric`` name is refused here, not after earlier pairs trained."""
    overrides = parse_kv(args.set, "--set")
    if args.total_steps is not None:
        steps = _number(args.total_steps, "--total-steps")
        if not steps.is_integer() or steps <= 0:
            raise ConfigError(f"--total-steps must be a positive whole number of env steps, got {args.total_steps!r}")
        overrides["total_timesteps"] = str(int(steps))
    if args.num_envs is not None:
        overrides["num_envs"] = str(args.num_envs)
    grid = {k: [_number(x, f"--grid {k}") for x in v.split(",")] for k, v in parse_kv(args.grid, "--grid").items()}
    plan = [(env, algo, algorithms.get(algo).config(env, **overrides)) for env in args.envs for algo in args.algos]
    for _, _, cfg in plan:
        check_grid(cfg.hp, grid)
    if args.metric:
        import jax

        for env, algo, cfg in plan:
            trainer = make_train(cfg)
            state = jax.eval_shape(trainer.init, jax.random.key(0), cfg.hp)
            logged = set(jax.eval_shape(lambda s, h: trainer.run(s, h, 1), state, cfg.hp)[1])
            unknown = [m for m in args.metric if m not in logged]
            if unknown:
                raise ConfigError(f"--metric {', '.join(unknown)}: not logged by {algo} on {env}; logged metrics: "
                                  + ", ".join(sorted(logged)))
    return plan, grid


def run(args, on_row=None) -> list[dict]:
    plan, grid = _plan(args)
    rows = []
    for env, algo, cfg in plan:
        t0 = time.perf_counter()
        res = run_experiment(cfg, seeds=args.seeds, seed=args.seed, grid=grid, progress=not args.no_progress,
                             on_nonfinite=args.on_nonfinite)
        m = res.metrics  # [G, S, U]
        skipped = np.asarray(res.summary["nonfinite_updates"]).reshape(len(res.grid), args.seeds)
        evals = _evaluate_all(cfg, res.state, args.seed) if args.eval else None
        sampled = _evaluate_all(cfg, res.state, args.seed, deterministic=False) if args.eval_sample else None
        for g, setting in enumerate(res.grid):
            rows.append({
                "algo": algo, "env": env, "setting": setting, "seeds": args.seeds,
                "env_steps": cfg.num_updates * cfg.batch_size,
                **_seed_stats(m["last_return"][g, :, -1], None if evals is None else evals[g]),
                **({} if sampled is None else _sample_stats(sampled[g])),
                "nonfinite_updates": skipped[g].tolist(),
                "ratio_dev_mean": float(np.nanmean(m["ratio_dev_mean"][g])),
                "ratio_dev_mean_last": float(np.nanmean(m["ratio_dev_mean"][g, :, -1])),
                "ratio_dev_max": float(np.nanmax(m["ratio_dev_max"][g])),
                "clip_frac": float(np.nanmean(m["clip_frac"][g])),
                "approx_kl": float(np.nanmean(m["approx_kl"][g])),
                "curve_steps": ((np.arange(m["update"].shape[-1]) + 1) * cfg.batch_size).tolist(),
                "curve_return": np.nanmean(m["last_return"][g], axis=0).tolist(),
                "curve_return_stderr": (np.nanstd(m["last_return"][g], axis=0) / math.sqrt(args.seeds)).tolist(),
                "curve_ratio_dev": np.nanmean(m["ratio_dev_mean"][g], axis=0).tolist(),
                "extra": {name: {"mean": float(np.nanmean(m[name][g])),
                                 "last": float(np.nanmean(m[name][g, :, -1])),
                                 "last_stderr": float(np.nanstd(m[name][g, :, -1], ddof=1) / math.sqrt(args.seeds))
                                 if args.seeds > 1 else 0.0,
                                 "curve": np.nanmean(m[name][g], axis=0).tolist()}
                          for name in args.metric},  # every name checked by _plan
                "steps_per_s": res.summary["steps_per_s"], "compile_s": res.summary["compile_s"],
                "wall_s": time.perf_counter() - t0,
                "config": cfg.to_dict(),
            })
            print(f"{algo:5s} {env:14s} {setting or ''} return {rows[-1]['return_mean']:9.1f} ± "
                  f"{rows[-1]['return_stderr']:.1f}  |r-1| {rows[-1]['ratio_dev_mean']:.4f} "
                  f"(max {rows[-1]['ratio_dev_max']:.2f})", flush=True)
        if on_row is not None:  # save as we go: a long sweep cut short keeps what it finished
            on_row(rows)
    return rows


def _pooled_curve(parts, mean_key, stderr_key=None):
    """Seed-weighted mean curve of ``parts`` (and, from each part's mean and s.e. = std/√n, the
    pooled s.e. over all their seeds: exact for the population std that ``run`` records for the
    return curve; an approximation for an extra metric's ``last_stderr``, which uses ddof=1)."""
    n = np.asarray([p["seeds"] for p in parts], np.float64)[:, None]
    means = np.asarray([p[mean_key] for p in parts], np.float64)
    mean = (n * means).sum(0) / n.sum()
    if stderr_key is None:
        return mean.tolist(), None
    var = (np.asarray([p[stderr_key] for p in parts], np.float64) ** 2) * n  # each part's population variance
    pooled = (n * (var + means ** 2)).sum(0) / n.sum() - mean ** 2
    return mean.tolist(), (np.sqrt(np.maximum(pooled, 0.0)) / math.sqrt(n.sum())).tolist()


def pool_rows(rows: list[dict]) -> list[dict]:
    """Rows of the same algorithm, env and setting from several folders (e.g. seeds 0–2 in one
    device call and 3–4 in the next) become one row over all their seeds: per-seed returns are
    concatenated and every statistic is recomputed from them; diagnostics are seed-weighted means
    (maxima: the maximum); curves are seed-weighted means with the pooled standard error. Runs of
    different lengths or configs are refused (their curves do not line up, or they are not one
    setting)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["algo"], r["env"], json.dumps(r.get("setting"), sort_keys=True)), []).append(r)
    out = []
    for parts in groups.values():
        if len(parts) == 1:
            out.append(parts[0])
            continue
        first = parts[0]
        if len({p["env_steps"] for p in parts}) > 1:
            raise SystemExit(f"ablation: error: cannot pool {first['algo']} on {first['env']}: the runs have "
                             f"different env steps per seed ({sorted({p['env_steps'] for p in parts})})")
        configs = [json.dumps(p["config"], sort_keys=True) for p in parts if "config" in p]
        if len(set(configs)) > 1:
            differ = sorted(k for k in parts[0]["config"] if len({json.dumps(p["config"].get(k), sort_keys=True)
                                                                   for p in parts}) > 1)
            raise SystemExit(f"ablation: error: cannot pool {first['algo']} on {first['env']}: the runs' configs differ "
                             f"in {', '.join(differ)}; give them different labels (DIR:LABEL) to keep them apart")
        seeds = sum(p["seeds"] for p in parts)
        w = np.asarray([p["seeds"] for p in parts], np.float64) / seeds
        wmean = lambda k: float(np.dot(w, [p[k] for p in parts]))  # noqa: E731
        final = np.concatenate([np.asarray(p["final_returns"], np.float64) for p in parts])
        evals = None if any(p.get("eval_returns") is None for p in parts) else np.concatenate(
            [np.asarray(p["eval_returns"], np.float64) for p in parts])
        row = {**first, "seeds": seeds, **_seed_stats(final, evals),
               "ratio_dev_mean": wmean("ratio_dev_mean"), "ratio_dev_max": max(p["ratio_dev_max"] for p in parts),
               "clip_frac": wmean("clip_frac"), "approx_kl": wmean("approx_kl"),
               "steps_per_s": wmean("steps_per_s"), "compile_s": max(p["compile_s"] for p in parts),
               "wall_s": sum(p["wall_s"] for p in parts), "pooled_from": len(parts)}
        if all("eval_sample_returns" in p for p in parts):
            row.update(_sample_stats([x for p in parts for x in p["eval_sample_returns"]]))
        if all("nonfinite_updates" in p for p in parts):
            row["nonfinite_updates"] = [n for p in parts for n in p["nonfinite_updates"]]
        if all("ratio_dev_mean_last" in p for p in parts):
            row["ratio_dev_mean_last"] = wmean("ratio_dev_mean_last")
        if all("curve_return" in p for p in parts):
            row["curve_return"], row["curve_return_stderr"] = _pooled_curve(parts, "curve_return", "curve_return_stderr")
            row["curve_ratio_dev"], _ = _pooled_curve(parts, "curve_ratio_dev")
        row["extra"] = {}
        for name in set.intersection(*(set(p.get("extra") or {}) for p in parts)):
            xs = [{"seeds": p["seeds"], **p["extra"][name]} for p in parts]
            last, last_se = _pooled_curve([{**x, "last": [x["last"]], "last_stderr": [x["last_stderr"]]} for x in xs],
                                          "last", "last_stderr")
            row["extra"][name] = {"mean": float(np.dot(w, [x["mean"] for x in xs])), "last": last[0],
                                  "last_stderr": last_se[0], "curve": _pooled_curve(xs, "curve")[0]}
        out.append(row)
    return out


def markdown(rows, command: str) -> str:
    extra = list(dict.fromkeys(k for r in rows for k in r.get("extra", {})))
    lines = [f"Command: `{command}`", "",
             "| env | algo | setting | seeds | env steps | final return (mean ± s.e.) | final return IQM [95% CI] | "
             "eval return (mean ± s.e.) | "
             "mean abs(r−1) | max abs(r−1) | clip frac | approx-KL |" + "".join(f" {k} (mean; last ± s.e.) |" for k in extra),
             "|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(extra)]
    for r in rows:
        setting = ", ".join(f"{k}={v:g}" for k, v in r["setting"].items()) or "—"
        lines.append(f"| {r['env']} | {r['algo']} | {setting} | {r['seeds']} | {r['env_steps']:.3g} | "
                     f"{r['return_mean']:.1f} ± {r['return_stderr']:.1f} | {_iqm_cell(r)} | "
                     + ("—" if r.get("eval_mean") is None else f"{r['eval_mean']:.1f} ± {r['eval_stderr'] or 0:.1f}")
                     + f" | {r['ratio_dev_mean']:.4f} | "
                     f"{r['ratio_dev_max']:.3f} | {r['clip_frac']:.3f} | {r['approx_kl']:.4f} |"
                     + "".join(_extra_cell(r.get("extra", {}).get(k)) for k in extra))
    sampled = [r for r in rows if r.get("eval_sample_mean") is not None]
    if sampled:
        lines += ["", "Evaluation with sampled actions (`--eval-sample`; one episode per env), mean ± s.e. over seeds:"]
        lines += [f"- {r['algo']} on {r['env']}" + (f" ({', '.join(f'{k}={v:g}' for k, v in r['setting'].items())})"
                                                    if r["setting"] else "")
                  + f": {r['eval_sample_mean']:.1f} ± {r['eval_sample_stderr']:.1f}" for r in sampled]
    skipped = [r for r in rows if any(r.get("nonfinite_updates") or ())]
    if skipped:
        lines += ["", "Updates skipped as non-finite (`--on-nonfinite skip`; such an update is never applied), per seed:"]
        lines += [f"- {r['algo']} on {r['env']}" + (f" ({', '.join(f'{k}={v:g}' for k, v in r['setting'].items())})"
                                                    if r["setting"] else "")
                  + f": {r['nonfinite_updates']} of {len(r.get('curve_steps') or ()) or '?'} updates" for r in skipped]
    return "\n".join(lines) + "\n"


def _iqm_cell(r) -> str:
    if r.get("return_iqm") is None:
        return "—"
    ci = r.get("return_iqm_ci")
    return f"{r['return_iqm']:.1f}" + ("" if ci is None else f" [{ci[0]:.1f}, {ci[1]:.1f}]")


def _extra_cell(x) -> str:
    return " — |" if x is None else f" {x['mean']:.4g}; {x['last']:.4g} ± {x['last_stderr']:.2g} |"


def plot(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r["env"] for r in rows))
    name = lambda r: r["algo"] + ("" if not r["setting"] else " " + ",".join(f"{k}={v:g}" for k, v in r["setting"].items()))  # noqa: E731
    colors = {lab: f"C{i % 10}" for i, lab in enumerate(dict.fromkeys(name(r) for r in rows))}  # same colour in every panel
    extra = list(dict.fromkeys(k for r in rows for k in r.get("extra", {})))
    fig, axes = plt.subplots(2 + len(extra), len(envs), figsize=(4.5 * len(envs), 3.25 * (2 + len(extra))),
                             squeeze=False)
    for j, env in enumerate(envs):
        for r in (r for r in rows if r["env"] == env):
            label = name(r)
            x = np.asarray(r["curve_steps"])
            y, e = np.asarray(r["curve_return"]), np.asarray(r["curve_return_stderr"])
            axes[0, j].plot(x, y, label=label, color=colors[label])
            axes[0, j].fill_between(x, y - e, y + e, alpha=0.2, color=colors[label])
            axes[1, j].plot(x, r["curve_ratio_dev"], label=label, color=colors[label])
            for i, k in enumerate(extra):
                if k in r.get("extra", {}):
                    axes[2 + i, j].plot(x, r["extra"][k]["curve"], label=label, color=colors[label])
                    axes[2 + i, j].set_ylabel(k)
        axes[0, j].set_title(env)
        axes[0, j].set_ylabel("episode return")
        axes[1, j].set_ylabel("mean |r − 1|")
        axes[-1, j].set_xlabel("env steps")
        axes[1, j].set_yscale("log")
        axes[0, j].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algos", default="ppo,spo,bpo,mdpo", type=lambda s: s.split(","), help="comma-separated algorithms")
    p.add_argument("--envs", default="CartPole-v1", type=lambda s: s.split(","), help="comma-separated envs")
    p.add_argument("--seeds", type=int, default=5, help="seeds per (algo, env, setting), vmapped")
    p.add_argument("--seed", type=int, default=0, help="base seed")
    p.add_argument("--total-steps", default=None, help="env steps per seed (default: each preset's)")
    p.add_argument("--num-envs", type=int, default=None, help="parallel envs per seed (default: each preset's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="hyperparameter sweep (vmapped)")
    p.add_argument("--out", default="experiments/results/ablation", help="output folder")
    p.add_argument("--metric", action="append", default=[], metavar="NAME",
                   help="also report this logged metric (mean over training; last update ± s.e.; a curve), e.g. "
                        "entropy, pos_share, dropped (repeatable)")
    p.add_argument("--eval", action="store_true", help="also evaluate each final policy (deterministic, 1 episode per env)")
    p.add_argument("--eval-sample", action="store_true",
                   help="also evaluate each final policy with sampled actions (as in training), listed below the table")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--on-nonfinite", default=ON_NONFINITE[0], choices=ON_NONFINITE,
                   help="after an update with a non-finite loss (never applied): stop that run (default), or skip "
                        "it and train on, counting such updates per seed in the table")
    p.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    p.add_argument("--merge", nargs="+", metavar="DIR[:LABEL]", default=None,
                   help="no training: merge earlier OUT folders' results.json into --out (table and curves); "
                        "LABEL is appended to each algorithm name of that folder, e.g. runs/hopper-clamp:clamp3; "
                        "rows of the same algorithm, env and setting (after LABEL) are pooled into one over their seeds")
    args = p.parse_args(argv)
    command = "python experiments/ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def save(rows):
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"command": command, "rows": rows}, f, indent=1)
        with open(os.path.join(args.out, "results.md"), "w") as f:
            f.write(markdown(rows, command))
        try:
            plot(rows, os.path.join(args.out, "curves.png"))
        except ImportError:
            print("matplotlib is not installed: no curves.png (pip install matplotlib)", file=sys.stderr)

    held = os.path.join(args.out, "results.json")
    if os.path.exists(held) and not args.overwrite:
        p.exit(2, f"ablation: error: --out {args.out} already holds results ({held}); choose another folder, or pass "
                  "--overwrite to replace them\n")
    if args.merge:
        rows, commands = [], []
        for item in args.merge:
            folder, _, label = item.partition(":")
            try:
                with open(os.path.join(folder, "results.json")) as f:
                    data = json.load(f)
                if not isinstance(data, dict) or not {"command", "rows"} <= set(data):
                    raise ValueError("not an ablation results.json")
            except (OSError, ValueError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                p.exit(2, f"ablation: error: --merge {item}: {folder} has no readable ablation results.json "
                          f"({reason}); give folders written by ablation.py --out\n")
            commands.append(data["command"])
            for r in data["rows"]:
                if r.get("return_iqm") is None:  # a run made where rliable was not installed
                    r = {**r, **_iqm(np.asarray(r["final_returns"], np.float64))}
                rows.append({**r, "algo": r["algo"] + (f" ({label})" if label else "")})
        rows = pool_rows(rows)
        command = " ; ".join(commands)
        save(rows)
        print(markdown(rows, command))
        return 0

    try:
        for a in args.algos:
            algorithms.get(a)
        rows = run(args, on_row=save)
    except ConfigError as e:
        p.exit(2, f"ablation: error: {e}\n")
    except NonFiniteLossError as e:
        kept = f"; the rows finished before it are in {held}" if os.path.exists(held) else ""
        p.exit(1, f"ablation: error: {e}{kept}\n")
    print(markdown(rows, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
