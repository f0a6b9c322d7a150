"""VinePPO vs PPO at matched updates and at matched env steps (branch steps counted).

Reads ``runs/ppo/results.json`` and every ``runs/vineppo*/results.json`` (written by
``experiments/ablation.py``) and prints a markdown table; writes ``matched.png``. The curves are
the per-update mean (± s.e. over seeds) of the training return of the episodes that ended in
that update (``last_return``). VinePPO's env steps per update are the main rollout's
``num_envs × num_steps`` plus the logged branch steps: ``vine_env_steps`` (inside live episodes)
or ``vine_env_steps_computed`` (all vectorised steps).

    python experiments/results/po-vineppo/analyse.py
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
THRESHOLDS = (100.0, 200.0, 400.0, 475.0)


def load(name):
    with open(os.path.join(HERE, "runs", name, "results.json")) as f:
        return json.load(f)["rows"]


def label(r, folder):
    c = r["config"]
    s = [f"{k}={v:g}" for k, v in r["setting"].items()]
    s += [f"K={c['hp']['vine_rollouts']:g}"] if not r["setting"] else []
    s += [f"H={c['vine_horizon']}"] + ([f"every={c['vine_every']}"] if c["vine_every"] != 1 else [])
    s += (["bootstrap, vf_coef=" + f"{c['hp']['vf_coef']:g}"] if c["vine_bootstrap"] else [])
    return f"{folder}: " + ", ".join(s)


def first_update(curve, level):
    hit = np.nonzero(np.asarray(curve) >= level)[0]
    return int(hit[0]) + 1 if len(hit) else None


def main() -> int:
    ppo, = load("ppo")  # the long run: the reference at matched env steps
    # at matched updates, PPO with the same number of updates (the same annealed learning rate), if run
    same, = load("ppo-2e5") if os.path.exists(os.path.join(HERE, "runs", "ppo-2e5")) else (ppo,)
    s_ret, s_se = np.asarray(same["curve_return"]), np.asarray(same["curve_return_stderr"])
    folders = sorted(f for f in os.listdir(os.path.join(HERE, "runs")) if f.startswith("vineppo"))
    vines = [(f, r) for f in folders for r in load(f)]
    p_ret, p_se = np.asarray(ppo["curve_return"]), np.asarray(ppo["curve_return_stderr"])
    p_steps = np.asarray(ppo["curve_steps"], float)
    batch = p_steps[0]
    lines = ["| run | updates | env steps (main) | + branch steps (live / computed) | final return | "
             "PPO at the same update | PPO at the same env steps (live) | "
             + " | ".join(f"updates to ≥ {t:g}" for t in THRESHOLDS) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(THRESHOLDS)]
    rows_ppo = (f"| ppo, {len(p_ret)} updates | {len(p_ret)} | {p_steps[-1]:.3g} | 0 | "
                f"{p_ret[-1]:.1f} ± {p_se[-1]:.1f} | — | — | "
                + " | ".join(str(first_update(p_ret, t) or "—") for t in THRESHOLDS) + " |")
    lines.append(rows_ppo)
    if same is not ppo:
        lines.append(f"| ppo, {len(s_ret)} updates | {len(s_ret)} | {len(s_ret) * batch:.3g} | 0 | "
                     f"{s_ret[-1]:.1f} ± {s_se[-1]:.1f} | — | — | "
                     + " | ".join(str(first_update(s_ret, t) or "—") for t in THRESHOLDS) + " |")
    curves = []
    for folder, r in vines:
        ret, se = np.asarray(r["curve_return"]), np.asarray(r["curve_return_stderr"])
        u = len(ret)
        live = np.cumsum(batch + np.asarray(r["extra"]["vine_env_steps"]["curve"]))
        comp = np.cumsum(batch + np.asarray(r["extra"]["vine_env_steps_computed"]["curve"]))
        j = np.searchsorted(p_steps, live[-1], side="right") - 1  # PPO's last update within the same env steps
        at_steps = f"{p_ret[j]:.1f} ± {p_se[j]:.1f} (update {j + 1})" if j < len(p_ret) - 1 or p_steps[-1] >= live[-1] \
            else f"≥ {p_ret[-1]:.1f} (PPO's budget {p_steps[-1]:.3g} < {live[-1]:.3g})"
        ref, ref_se = (s_ret, s_se) if len(s_ret) == u else (p_ret, p_se)
        at_upd = f"{ref[u - 1]:.1f} ± {ref_se[u - 1]:.1f}" if u <= len(ref) else "—"
        lines.append(f"| {label(r, folder)} | {u} | {u * batch:.3g} | {live[-1] - u * batch:.3g} / {comp[-1] - u * batch:.3g} | "
                     f"{ret[-1]:.1f} ± {se[-1]:.1f} | {at_upd} | {at_steps} | "
                     + " | ".join(str(first_update(ret, t) or "—") for t in THRESHOLDS) + " |")
        # VinePPO at PPO's final env steps
        k = np.searchsorted(live, p_steps[-1], side="right") - 1
        if k >= 0:
            lines.append(f"| ↳ {label(r, folder)} at PPO's {p_steps[-1]:.3g} env steps | {k + 1} | {(k + 1) * batch:.3g} | "
                         f"{live[k] - (k + 1) * batch:.3g} | {ret[k]:.1f} ± {se[k]:.1f} | — | {p_ret[-1]:.1f} ± {p_se[-1]:.1f} |"
                         + " — |" * len(THRESHOLDS))
        curves.append((label(r, folder), ret, se, live))
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for a, x, y, e in ((ax[0], np.arange(1, len(s_ret) + 1), s_ret, s_se), (ax[1], p_steps, p_ret, p_se)):
        a.plot(x, y, label=f"ppo ({len(y)} updates)", color="C0")
        a.fill_between(x, y - e, y + e, alpha=0.2, color="C0")
    for i, (name, ret, se, live) in enumerate(curves):
        u = np.arange(1, len(ret) + 1)
        for a, x in ((ax[0], u), (ax[1], live)):
            a.plot(x, ret, label=name, color=f"C{i + 1}")
            a.fill_between(x, ret - se, ret + se, alpha=0.2, color=f"C{i + 1}")
    ax[0].set_xlabel("updates")
    ax[1].set_xlabel("env steps (VinePPO: main + live branch steps)")
    ax[1].set_xscale("log")
    for a in ax:
        a.set_ylabel("training episode return (mean ± s.e., 8 seeds)")
        a.legend(fontsize=8)
    ax[0].set_title("matched updates")
    ax[1].set_title("matched env steps")
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "matched.png"), dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
