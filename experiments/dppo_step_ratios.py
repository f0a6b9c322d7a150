"""DPPO's per-denoising-step importance ratios, and GRPO-Guard's ratio normalisation as an ablation.

GRPO-Guard (Wang et al., 2025, arXiv 2510.22319) observes, for flow-matching GRPO, that the
per-denoising-step importance ratio "mean falls below 1 and its variance differs substantially
across timesteps", so the PPO clip rarely engages for positive-advantage samples. For a Gaussian
step the log-ratio is ``ξ·Δμ/s − Δμ²/(2s²)``: its mean is negative and its spread ``‖Δμ‖/s`` depends
on the step's noise ``s`` (see :mod:`prpo.diffusion`). This script measures that on DPPO
(``dppo-classic-continuous`` preset, Pendulum-v1 by default) and trains the normalised variants.

**What is measured.** The surrogate is wrapped (:func:`measuring`): at every minibatch SGD step
of every update it sees the ``[B, K′]`` log-ratios of the minibatch under the *current* parameters
(after the previous SGD steps of the update) against the rollout's stored log-probs, and logs per
denoising step i (``i = 0`` the noisiest fine-tuned step, ``t = K′ − 1 − i``): mean / median / std
of ``r_i`` over the minibatch, mean / std of ``log r_i``, the share with ``r_i < 1``, and the share
of positive- (negative-) advantage samples that the clip stops (``r > 1 + ε_i``, resp.
``r < 1 − ε_i``). The first SGD step of an update (all ratios exactly 1) is left out. Each
statistic is averaged over an update's SGD steps, then over updates, then over seeds (± std over
seeds). For a normalised variant both the raw ratio (what DPPO would clip) and the normalised one
(what is clipped) are logged.

Variants (``--variants``, ``+``-joined tokens): ``none`` (DPPO), ``guard`` / ``batch`` /
``batch_center`` (``ratio_norm``), ``reweight`` (``step_reweight=guard``), e.g. ``guard+reweight``
(the paper's method: RatioNorm and gradient reweighting). Writes

    OUT/step_ratios.json   per variant: per-step statistics (mean, std over seeds), per-update curves,
                           final returns per seed, the config
    OUT/step_ratios.md     the per-step tables and the final-return table
    OUT/step_ratios.png    mean r, std r and clipped share of A > 0 per step; return curves

Compared with: GRPO-Guard, abstract and Fig. 2 (ratio distribution per timestep before / after
RatioNorm). The paper's return claim is about over-optimisation of image rewards, which has no
Pendulum counterpart: here the check is the ratio's per-step mean / spread and that the
normalised variants do not hurt the return (≥ 8 seeds). Commands::

    # smoke (CPU, seconds)
    python experiments/dppo_step_ratios.py --seeds 1 --total-steps 8192 --variants none,guard --out /tmp/sr
    # measurement + ablation (GPU, minutes)
    python experiments/dppo_step_ratios.py --seeds 8 --total-steps 3e5 \\
        --variants none,guard,guard+reweight,batch --out experiments/results/dppo-step-ratios
    # the same, one process per variant, then merged
    for v in none guard guard+reweight batch; do
        python experiments/dppo_step_ratios.py --seeds 8 --total-steps 3e5 --variants $v --out /tmp/sr-$v &
    done; wait
    python experiments/dppo_step_ratios.py --merge /tmp/sr-* --out experiments/results/dppo-step-ratios
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from prpo.cli import parse_kv
from prpo.config import ConfigError

#: per-step statistics logged by :func:`measuring` (name -> description)
STATS = {
    "rmean": "mean r",
    "rmed": "median r",
    "rstd": "std r",
    "lmean": "mean log r",
    "lstd": "std log r",
    "below1": "share r < 1",
    "posclip": "A>0 clipped",
    "negclip": "A<0 clipped",
}
NORMS = ("guard", "batch", "batch_center")
#: an SGD step whose raw log-ratios are all within this of 0 is at the rollout parameters (the
#: rollout's and the update's log-probs may differ by rounding); one Adam step moves them ~1e-3
VALID_TOL = 1e-5


def variant_overrides(name: str) -> dict:
    """``"guard+reweight"`` -> ``{"ratio_norm": "guard", "step_reweight": "guard"}``."""
    out = {}
    for token in name.split("+"):
        if token == "none":
            continue
        if token in NORMS:
            out["ratio_norm"] = token
        elif token == "reweight":
            out["step_reweight"] = "guard"
        else:
            raise SystemExit(f"unknown variant token {token!r}; allowed: none, {', '.join(NORMS)}, reweight")
    return out


def step_stats(log_ratio, adv, clip_eps):
    """Per-column statistics of ``log_ratio`` ``[B, K]`` (advantages ``adv`` ``[B, K]`` or ``[B, 1]``,
    clip ``clip_eps`` scalar or ``[K]``): ``{name: [K]}`` for the names of :data:`STATS`."""
    import jax.numpy as jnp

    r = jnp.exp(log_ratio)
    eps = jnp.broadcast_to(jnp.asarray(clip_eps, jnp.float32), log_ratio.shape[-1:])
    adv = jnp.broadcast_to(adv, log_ratio.shape)
    pos, neg = (adv > 0).astype(jnp.float32), (adv < 0).astype(jnp.float32)
    return {
        "rmean": r.mean(0),
        "rmed": jnp.median(r, axis=0),
        "rstd": r.std(0),
        "lmean": log_ratio.mean(0),
        "lstd": log_ratio.std(0),
        "below1": (r < 1.0).mean(0),
        "posclip": (pos * (r > 1.0 + eps)).sum(0) / jnp.maximum(pos.sum(0), 1.0),
        "negclip": (neg * (r < 1.0 - eps)).sum(0) / jnp.maximum(neg.sum(0), 1.0),
    }


def measuring(surrogate, num_steps: int):
    """Wrap ``surrogate`` (same loss) to log :data:`STATS` per denoising step as the metrics
    ``sr_<raw|norm>_<stat>_<i>`` (multiplied by ``sr_valid``: 0 at an SGD step whose raw
    log-ratios are all within :data:`VALID_TOL` of 0, i.e. at the rollout parameters), computed from the log-ratio the surrogate
    is given (``norm``) and the family's raw one (``raw``, ``extras["log_ratio_raw"]`` when a
    ``ratio_norm`` is on, else the same)."""
    import jax.numpy as jnp

    from prpo.update import needs_context

    @needs_context
    def wrapped(log_ratio, adv, hp, ctx):
        if getattr(surrogate, "needs_context", False):
            loss, diag = surrogate(log_ratio, adv, hp, ctx)
        else:
            loss, diag = surrogate(log_ratio, adv, hp)
        diag = dict(diag or {})
        metrics = dict(diag.get("metrics", {}))
        raw = ctx.get("log_ratio_raw", log_ratio)
        valid = (jnp.max(jnp.abs(raw)) > VALID_TOL).astype(jnp.float32)
        metrics["sr_valid"] = valid
        for kind, lr in (("raw", raw), ("norm", log_ratio)):
            for name, v in step_stats(lr, adv, hp.clip_eps).items():
                for i in range(num_steps):
                    metrics[f"sr_{kind}_{name}_{i}"] = valid * v[i]
        diag["metrics"] = metrics
        return loss, diag

    for attr in ("options", "algorithm"):
        if hasattr(surrogate, attr):
            setattr(wrapped, attr, getattr(surrogate, attr))
    return wrapped


def summarise(metrics: dict, num_steps: int) -> dict:
    """Per-update metrics ``[S, U]`` -> per-step statistics: ``{kind: {stat: {"mean": [K], "std": [K]}}}``
    (over valid SGD steps, then updates, then mean / std over seeds) and per-update curves of the
    step-averaged values (mean over seeds)."""
    valid = np.asarray(metrics["sr_valid"], np.float64)  # [S, U]: share of valid SGD steps
    keep = valid > 0
    out, curves = {}, {}
    for kind in ("raw", "norm"):
        out[kind], curves[kind] = {}, {}
        for name in STATS:
            per = np.stack([np.asarray(metrics[f"sr_{kind}_{name}_{i}"], np.float64) for i in range(num_steps)], -1)
            per = per / np.where(keep, valid, 1.0)[..., None]  # mean over the valid SGD steps: [S, U, K]
            per = np.where(keep[..., None], per, np.nan)
            seed_means = np.nanmean(per, axis=1)  # [S, K]
            out[kind][name] = {"mean": np.nanmean(seed_means, 0).tolist(), "std": np.nanstd(seed_means, 0).tolist()}
            curves[kind][name] = np.nanmean(per, axis=(0, 2)).tolist()  # [U]
    return {"steps": out, "curves": curves}


def run(variants, env: str, seeds: int, total_steps: int, extra: dict, progress: bool = False) -> dict:
    import jax

    from prpo import algorithms
    from prpo.experiment import run_experiment
    from prpo.train import evaluate, make_train
    from prpo.update import SURROGATES

    results = {}
    for variant in variants:
        cfg = algorithms.get("dppo").config(env, total_timesteps=total_steps, **{**extra, **variant_overrides(variant)})
        trainer = make_train(cfg)  # the policy family: K′, its step stds and weights
        pol = trainer.policy
        k1 = pol.K1
        t0 = time.perf_counter()
        res = run_experiment(cfg, seeds=seeds, progress=progress, surrogate=measuring(SURROGATES[cfg.objective], k1))
        m = {k: np.asarray(v)[0] for k, v in res.metrics.items()}  # [S, U] (one grid setting)
        state = jax.tree.map(lambda x: x[0], res.state)
        keys = jax.random.split(jax.random.key(12345), seeds)
        evals = np.asarray(jax.jit(jax.vmap(lambda s, k: evaluate(trainer, s, k)))(state, keys), np.float64)
        summary = summarise(m, k1)
        results[variant] = {
            **summary,
            "steps_t": list(range(k1 - 1, -1, -1)),
            "step_std": np.asarray(pol.step_std(), np.float64).tolist(),
            "step_weights": np.asarray(pol.step_weights(), np.float64).tolist(),
            "final_return": np.asarray(m["last_return"][:, -1], np.float64).tolist(),
            "eval_return": evals.tolist(),
            "return_curve": np.nanmean(np.asarray(m["last_return"], np.float64), 0).tolist(),
            "clip_frac": float(np.mean(m["clip_frac"])),
            "wall_s": time.perf_counter() - t0,
            "config": cfg.to_dict(),
        }
        r = results[variant]
        print(f"{variant:16s} final return {np.mean(r['final_return']):8.1f}  eval {np.mean(evals):8.1f}  "
              f"raw mean r per step {np.round(summary['steps']['raw']['rmean']['mean'], 4).tolist()}  "
              f"({r['wall_s']:.0f} s)", flush=True)
    return results


def _se(x):
    x = np.asarray(x, np.float64)
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def markdown(results: dict, command: str) -> str:
    lines = ["# DPPO per-denoising-step ratios (GRPO-Guard's premise) and the RatioNorm ablation", "",
             f"`{command}`", "",
             "Per step i (0 = noisiest fine-tuned step, t = K′−1−i): statistics over each update's minibatches "
             "under the parameters of that SGD step (the first, all-ones step left out), averaged over updates; "
             "mean ± std over seeds. `raw` = DPPO's ratio, `norm` = the ratio that is clipped.", ""]
    lines += ["## Returns", "", "| variant | final training return | eval return | clip frac |", "|---|---|---|---|"]
    for v, r in results.items():
        lines.append(f"| {v} | {np.mean(r['final_return']):.1f} ± {_se(r['final_return']):.1f} | "
                     f"{np.mean(r['eval_return']):.1f} ± {_se(r['eval_return']):.1f} | {r['clip_frac']:.3f} |")
    lines.append("")
    lines.append("(± standard error over seeds.)")
    for v, r in results.items():
        kinds = ("raw",) if v == "none" or "ratio_norm" not in variant_overrides(v) else ("raw", "norm")
        for kind in kinds:
            s = r["steps"][kind]
            lines += ["", f"## {v}: {kind} ratio", "",
                      "| i | t | s_i | w_i | " + " | ".join(STATS.values()) + " |",
                      "|---" * (4 + len(STATS)) + "|"]
            for i, t in enumerate(r["steps_t"]):
                cells = [f"{s[n]['mean'][i]:.4f} ± {s[n]['std'][i]:.4f}" for n in STATS]
                lines.append(f"| {i} | {t} | {r['step_std'][i]:.3f} | {r['step_weights'][i]:.3f} | " + " | ".join(cells) + " |")
            std = np.asarray(s["rstd"]["mean"])
            lines += ["", f"mean r below 1 at {int(np.sum(np.asarray(s['rmean']['mean']) < 1))}/{len(std)} steps; "
                          f"std r max/min over steps {np.max(std) / max(np.min(std), 1e-12):.2f}"]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for v, r in results.items():
        kind = "norm" if "ratio_norm" in variant_overrides(v) else "raw"
        i = np.arange(len(r["steps_t"]))
        for ax, name in zip(axes[:3], ("rmean", "rstd", "posclip")):
            s = r["steps"][kind][name]
            ax.errorbar(i, s["mean"], yerr=s["std"], marker="o", capsize=2, label=f"{v} ({kind})")
        axes[3].plot(r["return_curve"], label=v)
    axes[0].axhline(1.0, color="k", lw=0.5)
    for ax, title in zip(axes, ("mean r per step", "std r per step", "share of A>0 samples clipped", "training return")):
        ax.set_title(title)
        ax.set_xlabel("update" if title == "training return" else "fine-tuned step i (0 = noisiest)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Pendulum-v1")
    p.add_argument("--variants", default="none,guard,guard+reweight", type=lambda s: s.split(","))
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--total-steps", default="3e5")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE config override (repeatable)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default="experiments/results/dppo-step-ratios")
    p.add_argument("--merge", nargs="+", metavar="DIR", help="no training: merge the step_ratios.json of these "
                   "folders (e.g. one process per variant) into --out")
    args = p.parse_args(argv)
    command = "python experiments/dppo_step_ratios.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.merge:
        results, commands = {}, []
        for d in args.merge:
            try:
                with open(os.path.join(d, "step_ratios.json")) as f:
                    data = json.load(f)
                results.update(data["results"])
                commands.append(data["command"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                p.error(f"--merge {d}: no readable step_ratios.json of this script ({type(e).__name__}: {e})")
        command = " ; ".join(commands)
    else:
        try:
            for v in args.variants:
                variant_overrides(v)  # refuse a bad name before any compile
            extra = parse_kv(args.set, "--set")
        except ConfigError as e:
            p.error(str(e))
        try:
            steps = float(args.total_steps)
        except ValueError:
            p.error(f"--total-steps: {args.total_steps!r} is not a number")
        try:
            results = run(args.variants, args.env, args.seeds, int(steps), extra, args.progress)
        except ConfigError as e:
            p.error(str(e))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "step_ratios.json"), "w") as f:
        json.dump({"command": command, "results": results}, f)
    with open(os.path.join(args.out, "step_ratios.md"), "w") as f:
        f.write(markdown(results, command))
    plot(results, os.path.join(args.out, "step_ratios.png"))
    print(f"wrote {args.out}/step_ratios.json, step_ratios.md and step_ratios.png")


if __name__ == "__main__":
    main()
