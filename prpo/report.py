"""Reports over finished runs: learning curves and final-performance statistics.

``python -m prpo report DIR [DIR ...] --out OUT`` (or :func:`make_report`) reads run directories
written by ``python -m prpo train --out DIR`` and writes

    OUT/report.png    learning curves (return vs env steps per seed: the mean over seeds and a
                      95% interval) and each run's final IQM with its 95% interval, a panel per env
    OUT/report.md     the final-performance table: mean, median and IQM of the seeds' final
                      returns, each with a 95% confidence interval; probabilities of improvement
    OUT/report.json   the same numbers, every seed's score and the curves (strict JSON)

Each setting of a ``--grid`` run is its own row and curve. A seed's score is its final return,
``summary.json``'s ``final_returns``: the mean return of the episodes that finished in the last
update that had finished episodes (the number ``train`` prints); a seed without any finished
episode has no score and is left out, with a note.

Why rliable (Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical
Precipice", NeurIPS 2021): it is the field's standard for reporting RL results from few seeds.
Its interquartile mean (IQM, the mean of the middle 50% of the seeds; with fewer than 4 seeds
nothing is trimmed and it is the mean) is robust to an outlier seed yet less noisy than the
median, and its stratified percentile bootstrap gives the confidence intervals; the probability
of improvement P(X > Y) is the Mann-Whitney statistic over the two runs' seeds (ties count half).
Using the library rather than a bootstrap of our own keeps prpo's numbers comparable with
published ones. The curves' pointwise intervals come from the same bootstrap. With few seeds a
percentile bootstrap interval is narrower than the truth: report more seeds where it matters.

rliable and matplotlib are optional (``pip install "prpo[report]"``) and imported only here, when
a report is made. This module is the driver layer's: nothing in the library imports it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Sequence

import numpy as np

from prpo import checkpoint as ck
from prpo.config import ConfigError

__all__ = ["ReportError", "RunData", "load_run", "load_runs", "final_stats", "curve_stats", "improvement",
           "build_report", "make_report", "REPORT_FILES"]

#: the files a report writes into its directory
REPORT_FILES = ("report.png", "report.md", "report.json")
CONFIDENCE = 0.95
#: bootstrap resamples per interval (rliable's performance profiles use 2000; ``--reps`` raises it)
DEFAULT_REPS = 2000
MIN_REPS = 100
#: a learning curve is drawn (and its interval computed) at most at this many updates, evenly spaced
CURVE_POINTS = 200
_INSTALL = 'pip install "prpo[report]"'


class ReportError(ConfigError):
    """A report that cannot be made as asked: one line naming the run, option or dependency."""


@dataclasses.dataclass
class RunData:
    """One row of a report: a run directory, or one setting of a grid run in it."""

    run_dir: str
    algo: str
    env: str
    setting: dict
    seeds: int  # seeds of the run (a --seed-index run trained one of them)
    env_steps: int  # per seed
    scores: np.ndarray  # [S] final return per trained seed (NaN: no finished episode)
    steps: np.ndarray | None = None  # [U] env steps after each update
    returns: np.ndarray | None = None  # [U, S] per-seed return after each update (NaN: none yet)
    notes: list = dataclasses.field(default_factory=list)
    label: str = ""  # unique in the report: "algo env [setting] [(dir)]"


# ---------------------------------------------------------------------------- loading


def _setting_text(setting: dict) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in setting.items())


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ReportError(f"{path} is unreadable: {e}") from None


def _unfinished(run_dir: str, record: dict) -> str:
    status = record.get("status")
    if status == "interrupted":
        what = f"interrupted after update {record.get('interrupted_update')}"
    elif status == "failed":
        what = f"stopped by a non-finite loss at update {record.get('failed_update')}"
    else:
        what = "still training, or killed before it finished (run.json status 'running')"
    fix = "" if status == "failed" else f"finish it with `python -m prpo train --resume {run_dir}`, or "
    return f"{run_dir!r} holds an unfinished run ({what}) and no final summary: {fix}leave it out of the report"


def load_run(run_dir) -> list[RunData]:
    """The rows of one finished run directory (one per grid setting); :class:`ReportError` naming
    the directory if it is not one."""
    if not isinstance(run_dir, (str, os.PathLike)) or not str(run_dir).strip():
        raise ReportError(f"a run directory must be a path, got {run_dir!r}")
    name = str(run_dir)
    if not os.path.exists(name):
        raise ReportError(f"run directory {name!r} does not exist")
    if not os.path.isdir(name):
        raise ReportError(f"{name!r} is not a directory (give run directories written by `python -m prpo train --out DIR`)")
    run_path, summary_path = os.path.join(name, ck.RUN_FILE), os.path.join(name, ck.SUMMARY)
    record = _read_json(run_path) if os.path.exists(run_path) else None
    if isinstance(record, dict) and record.get("status", "finished") != "finished":
        raise ReportError(_unfinished(name, record))
    if not os.path.exists(summary_path):
        if isinstance(record, dict):
            raise ReportError(_unfinished(name, record))
        raise ReportError(f"{name!r} is not a prpo run directory: it has no {ck.SUMMARY} (written by "
                          "`python -m prpo train --out DIR` when the run finishes)")
    summary = _read_json(summary_path)
    missing = [k for k in ("algo", "env", "seeds", "env_steps", "final_returns") if not isinstance(summary, dict)
               or k not in summary]
    if missing:
        raise ReportError(f"{summary_path} is not a prpo run summary (no {', '.join(missing)})")
    settings = summary.get("settings") or [{}]
    finals = np.array(summary["final_returns"], dtype=np.float64)  # None (null) -> NaN
    finals = finals.reshape(1, -1) if len(settings) == 1 else finals
    if finals.ndim != 2 or finals.shape[0] != len(settings):
        raise ReportError(f"{summary_path}: final_returns has shape {finals.shape}, not one row per setting "
                          f"({len(settings)})")
    rows = [RunData(run_dir=name, algo=str(summary["algo"]), env=str(summary["env"]), setting=dict(s),
                    seeds=int(summary["seeds"]), env_steps=int(summary["env_steps"]), scores=finals[g])
            for g, s in enumerate(settings)]
    if summary.get("seed_index") is not None:
        for r in rows:
            r.notes.append(f"trained only seed {summary['seed_index']} of {r.seeds} (--seed-index)")
    _load_curves(name, rows, summary.get("num_updates"))
    return rows


def _load_curves(run_dir: str, rows: list[RunData], num_updates) -> None:
    """Each row's per-seed returns per update from ``metrics.jsonl`` (a cut last line is ignored)."""
    path = os.path.join(run_dir, ck.METRICS)
    if not os.path.exists(path):
        for r in rows:
            r.notes.append(f"no {ck.METRICS}: no learning curve")
        return
    settings = [r.setting for r in rows]
    per = [dict() for _ in rows]  # update -> (env_steps, returns)
    try:
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    break
                try:
                    row = json.loads(line)
                    g = settings.index(row.get("setting", {}))
                    per[g][int(row["update"])] = (int(row["env_steps"]), row["return_per_seed"])
                except (ValueError, KeyError, TypeError, AttributeError):
                    raise ReportError(f"{path} line {i} is not a metrics line of this run") from None
    except OSError as e:
        raise ReportError(f"{path} is unreadable: {e.strerror or e}") from None
    for r, updates in zip(rows, per):
        if not updates:
            r.notes.append(f"{ck.METRICS} has no lines for this run: no learning curve")
            continue
        order = sorted(updates)
        r.steps = np.array([updates[u][0] for u in order], np.float64)
        r.returns = np.array([updates[u][1] for u in order], dtype=np.float64)
        if r.returns.ndim != 2:
            raise ReportError(f"{path}: return_per_seed has a varying number of seeds")
        if num_updates and order[-1] < int(num_updates):
            r.notes.append(f"{ck.METRICS} ends at update {order[-1]} of {num_updates}")


def _label(rows: list[RunData]) -> None:
    """Unique labels: algo, env and setting; the directory's name (or path) added where those repeat."""
    for suffix in (None, lambda r: os.path.basename(os.path.normpath(r.run_dir)), lambda r: r.run_dir):
        labels = [" ".join(x for x in (r.algo, r.env, _setting_text(r.setting)) if x)
                  + (f" ({suffix(r)})" if suffix else "") for r in rows]
        if len(set(labels)) == len(labels):
            break
    for r, label in zip(rows, labels):
        r.label = label


def load_runs(run_dirs: Sequence) -> list[RunData]:
    """The rows of every run directory, labelled; :class:`ReportError` for a bad or repeated one."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise ReportError("a report needs at least one run directory")
    real = [os.path.realpath(str(d)) for d in run_dirs]
    for i, d in enumerate(real):
        if d in real[:i]:
            raise ReportError(f"run directory {str(run_dirs[i])!r} is given twice")
    rows = [r for d in run_dirs for r in load_run(d)]
    _label(rows)
    return rows


# ---------------------------------------------------------------------------- statistics (rliable)


def _rliable():
    """rliable's ``library`` and ``metrics`` modules, or a one-line :class:`ReportError`."""
    try:
        from rliable import library, metrics
    except ImportError as e:
        if getattr(e, "name", None) == "rliable":
            raise ReportError(f"the report statistics need rliable, which is not installed: {_INSTALL}") from None
        raise ReportError(f"rliable does not import ({e}): {_INSTALL}") from None
    except Exception as e:  # e.g. its arch < 8 with pandas 3 (a TypeError at import)
        raise ReportError(f"rliable does not import ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                          f"its dependency arch < 8 needs pandas < 3: {_INSTALL}") from None
    return library, metrics


def _bootstrap(score_dict: dict, func, reps: int, seed: int):
    """rliable's stratified percentile bootstrap. rliable draws its resamples from NumPy's global
    generator, so it is seeded here for reproducible intervals and restored afterwards."""
    library, _ = _rliable()
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        return library.get_interval_estimates(score_dict, func, method="percentile", reps=reps,
                                              confidence_interval_size=CONFIDENCE)
    finally:
        np.random.set_state(saved)


def _check_reps_seed(reps, seed) -> None:
    if isinstance(reps, bool) or not isinstance(reps, (int, np.integer)) or reps < MIN_REPS:
        raise ReportError(f"reps (--reps) must be an integer ≥ {MIN_REPS} (bootstrap resamples per interval), got {reps!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= 2**32 - 1:
        raise ReportError(f"seed (--seed) must be an integer in [0, {2**32 - 1}] (the bootstrap's), got {seed!r}")


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def final_stats(scores, reps: int = DEFAULT_REPS, seed: int = 0) -> dict[str, Any]:
    """Mean, median and IQM of ``scores`` (one final return per seed; NaN ones left out), each
    with its 95% stratified-bootstrap interval ``[low, high]`` (None with fewer than 2 seeds)."""
    _check_reps_seed(reps, seed)
    _, metrics = _rliable()
    x = np.asarray(scores, np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    out: dict[str, Any] = {"n": int(x.size)}
    names = ("mean", "median", "iqm")
    if x.size == 0:
        return {**out, **{k: None for k in names}, **{f"{k}_ci": None for k in names}, "std": None}
    runs = x[:, None]  # rliable's layout: [runs, tasks], one task

    def func(s):
        return np.array([metrics.aggregate_mean(s), np.median(s), metrics.aggregate_iqm(s)])

    point = func(runs)
    out.update({k: _f(v) for k, v in zip(names, point)})
    out["std"] = _f(np.std(x, ddof=1)) if x.size > 1 else None
    if x.size < 2:
        out.update({f"{k}_ci": None for k in names})
        return out
    _, ci = _bootstrap({"scores": runs}, func, reps, seed)
    for i, k in enumerate(names):
        out[f"{k}_ci"] = [_f(ci["scores"][0, i]), _f(ci["scores"][1, i])]
    return out


def curve_stats(steps, returns, reps: int = DEFAULT_REPS, seed: int = 0, points: int = CURVE_POINTS) -> dict:
    """A learning curve at at most ``points`` evenly spaced updates: the mean over seeds (of the
    seeds with a finished episode so far) and a pointwise 95% stratified-bootstrap interval of the
    mean where every seed has one (None elsewhere, and everywhere with one seed)."""
    _check_reps_seed(reps, seed)
    _, metrics = _rliable()
    steps, returns = np.asarray(steps, np.float64), np.asarray(returns, np.float64)
    u = len(steps)
    idx = np.unique(np.round(np.linspace(0, u - 1, min(u, points))).astype(int))
    r = returns[idx]  # [P, S]
    finite = np.isfinite(r)
    count = finite.sum(axis=1)
    mean = np.where(count > 0, np.where(finite, r, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)
    low, high = np.full(len(idx), np.nan), np.full(len(idx), np.nan)
    full = finite.all(axis=1)
    if r.shape[1] >= 2 and full.any():
        runs = r[full].T[:, None, :]  # [seeds, 1 task, points]: each point resampled over seeds

        def func(s):
            return metrics.aggregate_mean(s)  # mean over seeds (then over the one task): [points]

        _, ci = _bootstrap({"curve": runs}, func, reps, seed)
        low[full], high[full] = ci["curve"][0], ci["curve"][1]
    clean = lambda a: [_f(v) for v in a]  # noqa: E731
    return {"env_steps": [int(s) for s in steps[idx]], "mean": clean(mean), "ci_low": clean(low), "ci_high": clean(high)}


def improvement(x_scores, y_scores, reps: int = DEFAULT_REPS, seed: int = 0) -> dict:
    """rliable's probability of improvement P(X > Y) over the seeds' final returns and its 95%
    bootstrap interval (each run's seeds resampled independently; None with fewer than 2 each)."""
    _check_reps_seed(reps, seed)
    _, metrics = _rliable()
    x = np.asarray(x_scores, np.float64).reshape(-1)
    y = np.asarray(y_scores, np.float64).reshape(-1)
    x, y = x[np.isfinite(x)][:, None], y[np.isfinite(y)][:, None]
    if not len(x) or not len(y):
        raise ReportError("probability of improvement needs at least one scored seed in each run")

    def func(a, b):
        return np.array([metrics.probability_of_improvement(a, b)])

    out = {"probability_of_improvement": _f(func(x, y)[0]), "ci": None}
    if len(x) >= 2 and len(y) >= 2:
        _, ci = _bootstrap({"poi": [x, y]}, func, reps, seed)
        out["ci"] = [_f(ci["poi"][0, 0]), _f(ci["poi"][1, 0])]
    return out


# ---------------------------------------------------------------------------- the report


def _find(rows: list[RunData], name: str) -> RunData:
    """The row ``name`` names: its label, or its run directory (path or name) when that has one row."""
    if not isinstance(name, str) or not name.strip():
        raise ReportError(f"--compare takes two run names, got {name!r}")
    hits = [r for r in rows if r.label == name]
    if not hits:
        real = os.path.realpath(name)
        hits = [r for r in rows if os.path.realpath(r.run_dir) == real
                or os.path.basename(os.path.normpath(r.run_dir)) == name]
    labels = ", ".join(repr(r.label) for r in rows)
    if not hits:
        raise ReportError(f"--compare {name!r} names no run of this report; name a run directory or a label: {labels}")
    if len(hits) > 1:
        raise ReportError(f"--compare {name!r} names {len(hits)} rows (a grid's settings, or directories of one name); "
                          f"give a label: {', '.join(repr(r.label) for r in hits)}")
    return hits[0]


def _pairs(rows, compare) -> list[tuple[RunData, RunData]]:
    pairs = []
    for pair in compare or ():
        if isinstance(pair, str) or len(pair) != 2:
            raise ReportError(f"--compare takes two run names (A B), got {pair!r}")
        a, b = _find(rows, pair[0]), _find(rows, pair[1])
        if a is b:
            raise ReportError(f"--compare {pair[0]!r} {pair[1]!r} names the same run twice")
        if a.env != b.env:
            raise ReportError(f"--compare {a.label!r} {b.label!r}: they ran on different envs ({a.env}, {b.env}); "
                              "the probability of improvement compares runs on one env")
        for r in (a, b):
            if not np.isfinite(r.scores).any():
                raise ReportError(f"--compare {r.label!r}: no seed of it finished an episode (no score to compare)")
        pairs.append((a, b))
    return pairs


def build_report(rows: list[RunData], compare=(), reps: int = DEFAULT_REPS, seed: int = 0) -> dict:
    """The report's numbers (what ``report.json`` holds) for labelled ``rows``."""
    _check_reps_seed(reps, seed)
    _rliable()
    pairs = _pairs(rows, compare)
    notes, runs = [], []
    for r in rows:
        stats = final_stats(r.scores, reps, seed)
        unscored = int(np.sum(~np.isfinite(r.scores)))
        run_notes = list(r.notes)
        if unscored:
            run_notes.append(f"{unscored} of {len(r.scores)} seed(s) finished no episode: no score, left out")
        if stats["n"] == 1:
            run_notes.append("1 scored seed: no confidence interval (train with --seeds 2 or more)")
        elif stats["n"] == 0:
            run_notes.append("no scored seed: no statistics")
        curve = curve_stats(r.steps, r.returns, reps, seed) if r.steps is not None else None
        notes += [f"{r.label}: {n}" for n in run_notes]
        runs.append({"label": r.label, "run_dir": r.run_dir, "algo": r.algo, "env": r.env, "setting": r.setting,
                     "seeds": stats["n"], "env_steps": r.env_steps,
                     "scores": [_f(v) for v in r.scores], **{k: v for k, v in stats.items() if k != "n"},
                     "curve": curve, "notes": run_notes})
    comparisons = []
    for a, b in pairs:
        comparisons.append({"x": a.label, "y": b.label, **improvement(a.scores, b.scores, reps, seed)})
    from importlib import metadata

    try:
        version = metadata.version("rliable")
    except metadata.PackageNotFoundError:  # pragma: no cover
        version = "unknown"
    return {
        "format": 1,
        "score": "final return per seed (summary.json final_returns)",
        "confidence": CONFIDENCE,
        "bootstrap": {"library": f"rliable {version}", "method": "stratified percentile bootstrap", "reps": reps,
                      "seed": seed},
        "run_dirs": [os.path.realpath(d) for d in dict.fromkeys(r.run_dir for r in rows)],
        "runs": runs,
        "comparisons": comparisons,
        "notes": notes,
    }


def _num(x) -> str:
    if x is None:
        return "—"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def _prob(p) -> str:
    return f"{p:.3f}"


def _with_ci(value, ci, num=_num) -> str:
    return num(value) + ("" if ci is None else f" [{num(ci[0])}, {num(ci[1])}]")


def markdown(report: dict) -> str:
    """``report.md``: the final-performance table, the comparisons and the notes."""
    b = report["bootstrap"]
    lines = ["# prpo report", "",
             "Runs: " + ", ".join(f"`{r['run_dir']}`" for r in {r["run_dir"]: r for r in report["runs"]}.values()), "",
             "Score: each seed's final return (the mean return of the episodes finished in its last update with "
             "finished episodes). IQM: the interquartile mean, the mean of the middle 50% of the seeds (with fewer "
             f"than 4 seeds it is the mean). Brackets: {report['confidence']:.0%} confidence intervals, "
             f"{b['method']} over seeds ({b['library']}, {b['reps']} resamples, seed {b['seed']}).", "",
             "| run | algo | env | setting | seeds | env steps | mean [95% CI] | median [95% CI] | IQM [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        lines.append(f"| {r['label']} | {r['algo']} | {r['env']} | {_setting_text(r['setting']) or '—'} | {r['seeds']} | "
                     f"{r['env_steps']:.3g} | {_with_ci(r['mean'], r['mean_ci'])} | "
                     f"{_with_ci(r['median'], r['median_ci'])} | {_with_ci(r['iqm'], r['iqm_ci'])} |")
    if report["comparisons"]:
        lines += ["", "## Probability of improvement", "",
                  "P(X > Y): the probability that a seed of X scores higher than a seed of Y (ties count half; "
                  "rliable's Mann-Whitney estimate), with its 95% bootstrap interval.", "",
                  "| X | Y | P(X > Y) [95% CI] |", "|---|---|---|"]
        for c in report["comparisons"]:
            lines.append(f"| {c['x']} | {c['y']} | {_with_ci(c['probability_of_improvement'], c['ci'], _prob)} |")
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    lines += ["", "![learning curves](report.png)", ""]
    return "\n".join(lines)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ReportError(f"the report figure needs matplotlib, which is not installed: {_INSTALL}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(report: dict, path: str) -> None:
    """``report.png``: per env, the learning curves (top) and each run's final IQM with its interval (bottom)."""
    plt = _pyplot()
    from matplotlib import ticker

    runs = report["runs"]
    envs = list(dict.fromkeys(r["env"] for r in runs))
    short = {r["label"]: r["label"].replace(f" {r['env']}", "", 1) for r in runs}  # the env is the panel's title
    colors = {s: f"C{i % 10}" for i, s in enumerate(dict.fromkeys(short.values()))}  # one colour per run in every panel
    most = max(sum(r["env"] == e for r in runs) for e in envs)
    fig, axes = plt.subplots(2, len(envs), figsize=(5.2 * len(envs), 3.6 + 0.4 * most + 0.8), squeeze=False,
                             gridspec_kw={"height_ratios": [3.6, 0.4 * most + 0.8]})
    for j, env in enumerate(envs):
        top, bottom = axes[0, j], axes[1, j]
        mine = [r for r in runs if r["env"] == env]
        for r in mine:
            c = r["curve"]
            if c is None:
                continue
            color, x = colors[short[r["label"]]], np.asarray(c["env_steps"], np.float64)
            f = lambda v: np.array([np.nan if a is None else a for a in v], np.float64)  # noqa: E731
            top.plot(x, f(c["mean"]), color=color, label=f"{short[r['label']]} ({r['seeds']} seeds)", lw=1.6)
            lo, hi = f(c["ci_low"]), f(c["ci_high"])
            if np.isfinite(lo).any():
                top.fill_between(x, lo, hi, where=np.isfinite(lo) & np.isfinite(hi), color=color, alpha=0.2, lw=0)
        top.set_title(env)
        top.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))  # 10k, 1.5M: no run-together tick labels
        top.xaxis.set_major_locator(ticker.MaxNLocator(6))
        top.set_xlabel("env steps (per seed)")
        top.set_ylabel("episode return")
        top.grid(alpha=0.3)
        if top.lines:
            top.legend(fontsize=8, loc="best")
        for i, r in enumerate(reversed(mine)):
            if r["iqm"] is None:
                continue
            color = colors[short[r["label"]]]
            if r["iqm_ci"] is not None:
                bottom.plot(r["iqm_ci"], [i, i], color=color, lw=6, alpha=0.45, solid_capstyle="butt")
            bottom.plot([r["iqm"]], [i], "|", color="black", ms=12, mew=2)
        bottom.set_yticks(range(len(mine)), [short[r["label"]] for r in reversed(mine)], fontsize=8)
        bottom.set_ylim(-0.6, len(mine) - 0.4)
        bottom.set_xlabel(f"final return: IQM and {report['confidence']:.0%} CI")
        bottom.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def check_out(out_dir, run_dirs, overwrite: bool = False) -> None:
    """Refuse, before any work, an ``out_dir`` that cannot be written or holds a report of another
    set of runs (unless ``overwrite``); a report of the same runs is replaced (made again)."""
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir).strip():
        raise ReportError(f"--out must be a directory path, got {out_dir!r}")
    out = str(out_dir)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ReportError(f"--out {out!r} exists and is not a directory")
    present = [n for n in REPORT_FILES if os.path.exists(os.path.join(out, n))]
    if present and not overwrite:
        same = False
        try:
            with open(os.path.join(out, "report.json")) as f:
                same = sorted(json.load(f)["run_dirs"]) == sorted(os.path.realpath(str(d)) for d in run_dirs)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if not same:
            raise ReportError(f"--out {out!r} already holds a report ({', '.join(present)}) of other runs; choose "
                              "another directory, or pass --overwrite (overwrite=True) to replace it")
    error = ck.writable_dir_error(out)
    if error:
        raise ReportError(f"--out {out!r} is not writable: {error}")


def make_report(run_dirs: Sequence, out_dir, compare: Sequence[Sequence[str]] = (), reps: int = DEFAULT_REPS,
                seed: int = 0, overwrite: bool = False) -> dict:
    """Load ``run_dirs``, compute the statistics and write ``out_dir``/report.{png,md,json}.

    ``compare``: pairs ``(A, B)`` of runs (a label or a run directory) whose probability of
    improvement P(A > B) is reported. Everything is checked (the runs, ``out_dir``, the names,
    rliable and matplotlib importable) before any statistic is computed. Returns the report
    (``report.json``'s content)."""
    _check_reps_seed(reps, seed)
    rows = load_runs(run_dirs)
    _pairs(rows, compare)
    _rliable()
    _pyplot()
    check_out(out_dir, run_dirs, overwrite)  # last: it creates out_dir
    report = build_report(rows, compare, reps, seed)
    out = str(out_dir)
    ck.write_json(os.path.join(out, "report.json"), _strict(report))
    md = markdown(report)
    try:
        with open(os.path.join(out, "report.md"), "w") as f:
            f.write(md)
    except OSError as e:
        raise ck.OutputError(f"could not write {os.path.join(out, 'report.md')}: {e.strerror or e}") from None
    try:
        plot(report, os.path.join(out, "report.png"))
    except OSError as e:
        raise ck.OutputError(f"could not write {os.path.join(out, 'report.png')}: {e.strerror or e}") from None
    return report


def _strict(x):
    """``x`` with non-finite floats as None, so that the JSON is strict (no NaN / Infinity)."""
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
