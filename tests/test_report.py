"""``python -m prpo report``: the statistics against NumPy and hand-derived values, the interval
against rliable called directly, and reports made from run directories written by prpo's own
writers (``metric_rows``, ``write_summary``, ``write_json``) in the run-directory format."""

import json
import math
import pathlib
import sys

import numpy as np
import pytest

from prpo import checkpoint as ck
from prpo import cli
from prpo.experiment import metric_rows, write_summary
from prpo.report import ReportError, curve_stats, final_stats, improvement, load_runs, make_report

from _experiments import load_experiment  # tests/ is on sys.path

REPS = 500  # enough for these checks, quick


def iqm_numpy(x):
    """The interquartile mean by hand: drop floor(n/4) seeds at each end, average the rest."""
    x = np.sort(np.asarray(x, np.float64))
    k = int(0.25 * len(x))
    return x[k:len(x) - k].mean()


def poi_numpy(x, y):
    """P(X > Y) over all pairs of seeds, ties counting half."""
    x, y = np.asarray(x, np.float64)[:, None], np.asarray(y, np.float64)[None, :]
    return float(np.mean((x > y) + 0.5 * (x == y)))


# ---------------------------------------------------------------------------- statistics


def test_mean_median_iqm_against_numpy_and_by_hand():
    scores = [7.0, 1.0, 100.0, 3.0, 5.0, 2.0, 6.0, 4.0]  # one outlier seed
    s = final_stats(scores, reps=REPS)
    assert s["n"] == 8
    assert s["mean"] == pytest.approx(128 / 8) == pytest.approx(np.mean(scores))
    assert s["median"] == pytest.approx(4.5) == pytest.approx(np.median(scores))
    assert s["iqm"] == pytest.approx((3 + 4 + 5 + 6) / 4) == pytest.approx(iqm_numpy(scores))  # the outlier is trimmed
    assert s["std"] == pytest.approx(np.std(scores, ddof=1))
    five = [10.0, -3.0, 4.0, 8.0, 1.0]  # 5 seeds: one trimmed at each end
    assert final_stats(five, reps=REPS)["iqm"] == pytest.approx((1 + 4 + 8) / 3) == pytest.approx(iqm_numpy(five))
    three = [1.0, 2.0, 9.0]  # fewer than 4 seeds: nothing trimmed, the IQM is the mean
    assert final_stats(three, reps=REPS)["iqm"] == pytest.approx(4.0)


def test_seeds_without_a_score_are_left_out():
    s = final_stats([1.0, float("nan"), 3.0, 5.0, 7.0], reps=REPS)
    assert s["n"] == 4 and s["mean"] == pytest.approx(4.0) and s["iqm"] == pytest.approx(4.0)


def test_one_seed_has_no_interval_and_none_has_no_statistics():
    s = final_stats([42.0], reps=REPS)
    assert s["mean"] == s["iqm"] == s["median"] == 42.0
    assert s["mean_ci"] is None and s["iqm_ci"] is None and s["std"] is None
    assert final_stats([float("nan")], reps=REPS)["mean"] is None


def test_interval_is_rliables_and_contains_the_estimate():
    from rliable import library, metrics

    rng = np.random.default_rng(1)
    scores = rng.normal(50.0, 10.0, size=10)
    before = np.random.get_state()[1].copy()
    s = final_stats(scores, reps=REPS, seed=7)
    assert np.array_equal(np.random.get_state()[1], before)  # NumPy's global generator is left as it was
    # rliable called directly with the same seed of NumPy's generator (which its resampling draws from)
    np.random.seed(7)
    func = lambda x: np.array([metrics.aggregate_mean(x), np.median(x), metrics.aggregate_iqm(x)])  # noqa: E731
    point, ci = library.get_interval_estimates({"s": scores[:, None]}, func, reps=REPS)
    for i, k in enumerate(("mean", "median", "iqm")):
        assert s[k] == pytest.approx(point["s"][i])
        assert s[f"{k}_ci"] == pytest.approx([ci["s"][0, i], ci["s"][1, i]])
        lo, hi = s[f"{k}_ci"]
        assert lo < s[k] < hi
    assert final_stats(scores, reps=REPS, seed=7) == s  # reproducible
    assert final_stats(scores, reps=REPS, seed=8)["mean_ci"] != s["mean_ci"]


def test_interval_shrinks_with_more_seeds():
    rng = np.random.default_rng(2)
    few, many = rng.normal(0, 1, size=5), rng.normal(0, 1, size=80)
    width = lambda s: s["mean_ci"][1] - s["mean_ci"][0]  # noqa: E731
    w_few, w_many = width(final_stats(few, reps=REPS)), width(final_stats(many, reps=REPS))
    assert w_many < w_few / 2  # ~ 1/sqrt(n): 4x narrower in expectation
    # and the mean's interval is about the normal one, ±1.96 s/sqrt(n), with many seeds
    assert w_many == pytest.approx(2 * 1.96 * np.std(many, ddof=1) / math.sqrt(80), rel=0.2)


def test_probability_of_improvement():
    low, high = [1.0, 2.0, 3.0, 4.0], [10.0, 11.0, 12.0]
    p = improvement(high, low, reps=REPS)
    assert p["probability_of_improvement"] == 1.0 and p["ci"] == [1.0, 1.0]
    assert improvement(low, high, reps=REPS)["probability_of_improvement"] == 0.0
    same = improvement(low, low, reps=REPS)
    assert same["probability_of_improvement"] == 0.5
    assert same["ci"][0] < 0.5 < same["ci"][1]
    x, y = [3.0, 5.0, 6.0, 2.0], [2.0, 4.0]  # by hand: 5 wins of 8 pairs (3>2, 5>2, 5>4, 6>2, 6>4), one tie (2, 2)
    assert improvement(x, y, reps=REPS)["probability_of_improvement"] == pytest.approx(5.5 / 8) \
        == pytest.approx(poi_numpy(x, y))
    assert improvement([5.0], [1.0, 2.0], reps=REPS)["ci"] is None  # one seed: no interval
    with pytest.raises(ReportError, match="at least one scored seed"):
        improvement([float("nan")], [1.0], reps=REPS)


def test_curve_mean_over_seeds_and_interval_where_every_seed_has_a_return():
    steps = np.arange(1, 7) * 100.0
    returns = np.array([[np.nan, np.nan, np.nan], [1.0, np.nan, 3.0], [2.0, 4.0, 6.0], [3.0, 5.0, 10.0],
                        [4.0, 4.0, 4.0], [5.0, 9.0, 7.0]])
    c = curve_stats(steps, returns, reps=REPS)
    assert c["env_steps"] == [100, 200, 300, 400, 500, 600]
    assert c["mean"][0] is None and c["mean"][1] == pytest.approx(2.0)  # of the seeds with a return so far
    assert c["mean"][2:] == pytest.approx(list(returns[2:].mean(axis=1)))
    assert c["ci_low"][:2] == [None, None] and c["ci_high"][:2] == [None, None]
    for u in range(2, 6):
        assert min(returns[u]) <= c["ci_low"][u] <= c["mean"][u] <= c["ci_high"][u] <= max(returns[u])
    assert c["ci_low"][4] == c["ci_high"][4] == 4.0  # every seed equal: no spread
    long = curve_stats(np.arange(1, 1001) * 10.0, np.ones((1000, 2)), reps=REPS, points=50)
    assert len(long["env_steps"]) == 50 and long["env_steps"][0] == 10 and long["env_steps"][-1] == 10000


# ---------------------------------------------------------------------------- run directories


def write_run(path, algo, env, returns, settings=({},), batch_size=128, status="finished", summary=True):
    """A run directory as ``train --out`` writes it: ``returns`` [G, S, U] per-seed returns per update."""
    returns = np.asarray(returns, np.float64)
    g, s, u = returns.shape
    path = pathlib.Path(path)
    path.mkdir(parents=True)
    settings = [dict(x) for x in settings]
    ck.write_json(str(path / ck.RUN_FILE), {"format": ck.FORMAT, "algo": algo, "env": env, "seeds": s, "seed": 0,
                                            "settings": settings, "config": {"algo": algo, "env": env},
                                            "status": status})
    chunk = {"update": np.broadcast_to(np.arange(1, u + 1), (g, s, u)), "last_return": returns,
             "loss": np.zeros((g, s, u))}
    (path / ck.METRICS).write_text("".join(metric_rows(chunk, settings, batch_size)))
    if summary:
        final = returns[..., -1]
        write_summary(str(path), {"algo": algo, "env": env, "seeds": s, "settings": settings, "num_updates": u,
                                  "env_steps": u * batch_size, "final_return_mean": float(np.nanmean(final)),
                                  "final_returns": final[0].tolist() if g == 1 else final.tolist()})
    return path


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.uniform(10, 200, size=(1, 6, 12))
    a[0, 5, -1] = 1e4  # an outlier seed: the IQM trims it, the mean does not
    b = rng.uniform(0, 100, size=(2, 4, 8))  # a grid of two settings
    b[:, :, 0] = np.nan  # no episode finished in the first update
    return {"ppo": (write_run(tmp_path / "ppo", "ppo", "CartPole-v1", a), a),
            "grid": (write_run(tmp_path / "grid", "a2c", "CartPole-v1", b, settings=({"lr": 1e-3}, {"lr": 3e-4}),
                               batch_size=64), b)}


def _table(md: str) -> dict:
    """report.md's final-performance table: label -> {column: cell}."""
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[1:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) == len(head):
            rows[cells[0]] = dict(zip(head, cells))
    return rows


def _cell(value, ci):
    f = lambda x: f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"  # noqa: E731
    return f"{f(value)} [{f(ci[0])}, {f(ci[1])}]"


def test_report_of_two_run_directories(runs, tmp_path):
    (ppo, a), (grid, b) = runs["ppo"], runs["grid"]
    out = tmp_path / "report"
    report = make_report([ppo, grid], out, compare=[("ppo", "a2c CartPole-v1 lr=0.001")], reps=REPS)
    for name in ("report.png", "report.md", "report.json"):
        assert (out / name).stat().st_size > 0
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert data == json.loads(json.dumps(report))
    labels = [r["label"] for r in data["runs"]]
    assert labels == ["ppo CartPole-v1", "a2c CartPole-v1 lr=0.001", "a2c CartPole-v1 lr=0.0003"]
    finals = {labels[0]: a[0, :, -1], labels[1]: b[0, :, -1], labels[2]: b[1, :, -1]}
    table = _table((out / "report.md").read_text())
    for r in data["runs"]:
        x = finals[r["label"]]
        assert r["seeds"] == len(x) and r["scores"] == pytest.approx(list(x))
        assert r["mean"] == pytest.approx(np.mean(x)) and r["median"] == pytest.approx(np.median(x))
        assert r["iqm"] == pytest.approx(iqm_numpy(x))
        assert r["iqm_ci"][0] <= r["iqm"] <= r["iqm_ci"][1]
        row = table[r["label"]]
        assert row["IQM [95% CI]"] == _cell(iqm_numpy(x), r["iqm_ci"])
        assert row["mean [95% CI]"] == _cell(np.mean(x), r["mean_ci"])
        assert row["seeds"] == str(len(x))
    assert data["runs"][0]["iqm"] < 200 < data["runs"][0]["mean"]  # the outlier seed
    assert data["runs"][0]["env_steps"] == 12 * 128 and data["runs"][1]["env_steps"] == 8 * 64
    # the curves: the mean over seeds per update (12 and 8 updates: every update is a point)
    c0, c1 = data["runs"][0]["curve"], data["runs"][1]["curve"]
    assert c0["env_steps"] == [128 * (i + 1) for i in range(12)]
    assert c0["mean"] == pytest.approx(list(a[0].mean(axis=0)))
    assert c1["mean"][0] is None and c1["mean"][1:] == pytest.approx(list(b[0, :, 1:].mean(axis=0)))
    # the comparison, with the run named by its directory and by its label
    (comp,) = data["comparisons"]
    assert comp["x"] == "ppo CartPole-v1" and comp["y"] == "a2c CartPole-v1 lr=0.001"
    assert comp["probability_of_improvement"] == pytest.approx(poi_numpy(a[0, :, -1], b[0, :, -1]))
    assert f"| ppo CartPole-v1 | a2c CartPole-v1 lr=0.001 | {comp['probability_of_improvement']:.3f} [" in \
        (out / "report.md").read_text()


def test_same_labels_get_the_directory_name(tmp_path):
    x = np.ones((1, 2, 3))
    write_run(tmp_path / "one", "ppo", "CartPole-v1", x)
    write_run(tmp_path / "two", "ppo", "CartPole-v1", x)
    assert [r.label for r in load_runs([tmp_path / "one", tmp_path / "two"])] == \
        ["ppo CartPole-v1 (one)", "ppo CartPole-v1 (two)"]


def test_single_seed_and_unscored_seed_are_noted(tmp_path):
    one = write_run(tmp_path / "one", "ppo", "CartPole-v1", [[[1.0, 2.0, 3.0]]])
    two = write_run(tmp_path / "two", "a2c", "CartPole-v1", [[[1.0, 2.0], [4.0, np.nan], [2.0, 5.0]]])
    report = make_report([one, two], tmp_path / "out", reps=REPS)
    r1, r2 = report["runs"]
    assert r1["iqm"] == 3.0 and r1["iqm_ci"] is None and r1["curve"]["ci_low"] == [None] * 3
    assert r2["seeds"] == 2 and r2["mean"] == pytest.approx(3.5)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "ppo CartPole-v1: 1 scored seed: no confidence interval" in md
    assert "a2c CartPole-v1: 1 of 3 seed(s) finished no episode" in md


# ---------------------------------------------------------------------------- the command line


def _main(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_report(runs, tmp_path, capsys):
    (ppo, a), (grid, _) = runs["ppo"], runs["grid"]
    out = tmp_path / "rep"
    code, stdout, err = _main(["report", str(ppo), str(grid), "--out", str(out), "--reps", str(REPS),
                               "--compare", str(ppo), "a2c CartPole-v1 lr=0.0003"], capsys)
    assert code == 0, err
    assert f"ppo CartPole-v1: 6 seeds, final return IQM {iqm_numpy(a[0, :, -1]):.4g} [" in stdout
    assert "P(ppo CartPole-v1 > a2c CartPole-v1 lr=0.0003) = " in stdout
    assert {p.name for p in out.iterdir()} == {"report.png", "report.md", "report.json"}
    # the same runs again: the report is made anew
    assert _main(["report", str(ppo), str(grid), "--out", str(out), "--reps", str(REPS)], capsys)[0] == 0
    # other runs: refused, unless --overwrite
    code, _, err = _main(["report", str(ppo), "--out", str(out)], capsys)
    assert code == 2 and "already holds a report" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert _main(["report", str(ppo), "--out", str(out), "--overwrite", "--reps", str(REPS)], capsys)[0] == 0
    assert json.loads((out / "report.json").read_text())["run_dirs"] == [str(ppo.resolve())]


def _refused(argv, capsys, *needles):
    code, stdout, err = _main(argv, capsys)
    assert code == 2, (stdout, err)
    assert err.startswith("prpo: error: ") and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_cli_refusals(runs, tmp_path, capsys):
    ppo, grid = str(runs["ppo"][0]), str(runs["grid"][0])
    out = str(tmp_path / "out")
    _refused(["report", ppo], capsys, "--out")
    _refused(["report", str(tmp_path / "missing"), "--out", out], capsys, "missing", "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(["report", str(empty), "--out", out], capsys, "is not a prpo run directory", "summary.json")
    _refused(["report", str(runs["ppo"][0] / "summary.json"), "--out", out], capsys, "is not a directory")
    write_run(tmp_path / "stopped", "ppo", "CartPole-v1", np.ones((1, 2, 3)), status="interrupted", summary=False)
    _refused(["report", str(tmp_path / "stopped"), "--out", out], capsys, "unfinished run", "--resume")
    _refused(["report", ppo, ppo + "/", "--out", out], capsys, "given twice")
    _refused(["report", ppo, "--out", out, "--compare", ppo, "sac"], capsys, "'sac' names no run", "'ppo CartPole-v1'")
    _refused(["report", ppo, grid, "--out", out, "--compare", ppo, grid], capsys, "names 2 rows",
             "'a2c CartPole-v1 lr=0.001'")
    _refused(["report", ppo, "--out", out, "--compare", ppo, ppo], capsys, "the same run twice")
    other = write_run(tmp_path / "pendulum", "ppo", "Pendulum-v1", np.ones((1, 2, 3)))
    _refused(["report", ppo, str(other), "--out", out, "--compare", ppo, str(other)], capsys, "different envs")
    _refused(["report", ppo, "--out", out, "--reps", "10"], capsys, "--reps", "≥ 100")
    _refused(["report", ppo, "--out", ppo + "/summary.json"], capsys, "is not a directory")
    assert not (tmp_path / "out").exists()  # nothing was written by a refused report


def test_missing_rliable_is_one_line(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)  # import rliable -> ImportError
    err = _refused(["report", str(runs["ppo"][0]), "--out", str(tmp_path / "o")], capsys, 'pip install "prpo[report]"')
    assert "rliable" in err
    assert not (tmp_path / "o" / "report.md").exists()


# ---------------------------------------------------------------------------- experiments/ablation.py


def test_ablation_table_has_the_iqm_column():
    ablation = load_experiment("ablation")
    final = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 100.0])
    iqm = ablation._iqm(final)
    assert iqm["return_iqm"] == pytest.approx(iqm_numpy(final)) == pytest.approx((3 + 5 + 7 + 9) / 4)
    row = {"env": "CartPole-v1", "algo": "ppo", "setting": {}, "seeds": 6, "env_steps": 1e4, "return_mean": 20.8,
           "return_stderr": 15.9, **iqm, "ratio_dev_mean": 0.01, "ratio_dev_max": 0.2, "clip_frac": 0.1,
           "approx_kl": 0.001}
    md = ablation.markdown([row, {**row, "return_iqm": None, "return_iqm_ci": None}], "cmd")
    head, _, first, second = md.splitlines()[2:6]
    assert "| final return (mean ± s.e.) | final return IQM [95% CI] |" in head
    lo, hi = iqm["return_iqm_ci"]
    assert f"| 20.8 ± 15.9 | 6.0 [{lo:.1f}, {hi:.1f}] |" in first
    assert "| 20.8 ± 15.9 | — |" in second  # a merged row of an older results.json
    assert len(head.split("|")) == len(first.split("|"))


def _part_row(curves, finals, evals, seeds_slice, env_steps=1000):
    """A results.json row as ablation.run writes it, for the seeds in ``seeds_slice``."""
    c, n = curves[seeds_slice], len(finals[seeds_slice])
    return {"algo": "ppo", "env": "CartPole-v1", "setting": {}, "seeds": n, "env_steps": env_steps,
            "final_returns": finals[seeds_slice].tolist(), "eval_returns": evals[seeds_slice].tolist(),
            "ratio_dev_mean": float(c.mean()), "ratio_dev_mean_last": float(c[:, -1].mean()),
            "ratio_dev_max": float(c.max()), "clip_frac": 0.1 * n, "approx_kl": 0.01, "steps_per_s": 1e5,
            "compile_s": 2.0 + n, "wall_s": 10.0, "curve_steps": [1, 2, 3, 4],
            "curve_return": c.mean(0).tolist(), "curve_return_stderr": (c.std(0) / np.sqrt(n)).tolist(),
            "curve_ratio_dev": c.mean(0).tolist(), "extra": {}}


def test_ablation_merge_pools_seeds_of_one_run_split_over_folders(tmp_path):
    """Seeds 0–2 from one device call and 3–4 from the next: --merge makes one row of 5 seeds,
    equal to statistics computed from all five directly (NumPy)."""
    ablation = load_experiment("ablation")
    rng = np.random.default_rng(0)
    curves, finals, evals = rng.normal(size=(5, 4)), rng.normal(100, 10, 5), rng.normal(200, 20, 5)
    a, b = _part_row(curves, finals, evals, slice(0, 3)), _part_row(curves, finals, evals, slice(3, 5))
    other = {**a, "algo": "spo"}
    pooled = ablation.pool_rows([a, other, b])
    assert [r["algo"] for r in pooled] == ["ppo", "spo"] and pooled[1] is other
    r = pooled[0]
    assert r["seeds"] == 5 and r["final_returns"] == finals.tolist() and r["pooled_from"] == 2
    assert r["return_mean"] == pytest.approx(finals.mean())
    assert r["return_stderr"] == pytest.approx(finals.std(ddof=1) / np.sqrt(5))
    assert r["eval_mean"] == pytest.approx(evals.mean())
    assert r["eval_stderr"] == pytest.approx(evals.std(ddof=1) / np.sqrt(5))
    np.testing.assert_allclose(r["curve_return"], curves.mean(0))
    np.testing.assert_allclose(r["curve_return_stderr"], curves.std(0) / np.sqrt(5))
    assert r["ratio_dev_mean"] == pytest.approx(curves.mean())
    assert r["ratio_dev_mean_last"] == pytest.approx(curves[:, -1].mean())
    assert r["ratio_dev_max"] == curves.max()
    assert r["clip_frac"] == pytest.approx((0.3 * 3 + 0.2 * 2) / 5) and r["compile_s"] == 5.0 and r["wall_s"] == 20.0
    # end to end through --merge, and runs of different lengths refused
    for name, row in (("a", a), ("b", b), ("c", {**b, "env_steps": 2000})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"command": f"cmd {name}", "rows": [row]}))
    assert ablation.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "ab")]) == 0
    merged = json.loads((tmp_path / "ab" / "results.json").read_text())["rows"]
    assert len(merged) == 1 and merged[0]["seeds"] == 5
    with pytest.raises(SystemExit, match="different env steps"):
        ablation.main(["--merge", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "ac")])
    with pytest.raises(SystemExit, match="configs differ in ddim_eval_steps"):
        ablation.pool_rows([{**a, "config": {"lr": 1, "ddim_eval_steps": 5}}, {**b, "config": {"lr": 1, "ddim_eval_steps": 0}}])
    assert ablation.pool_rows([{**a, "config": {"lr": 1}}, {**b, "config": {"lr": 1}}])[0]["seeds"] == 5


def test_ablation_refuses_to_replace_results_and_unreadable_merge_folders(tmp_path, capsys):
    """--out that holds results is kept unless --overwrite; a --merge folder without an ablation
    results.json is one line naming it; per-seed counts of skipped non-finite updates pool over
    folders and are listed under the table."""
    ablation = load_experiment("ablation")
    rng = np.random.default_rng(1)
    curves, finals, evals = rng.normal(size=(5, 4)), rng.normal(100, 10, 5), rng.normal(200, 20, 5)
    a = {**_part_row(curves, finals, evals, slice(0, 3)), **ablation._seed_stats(finals[:3], evals[:3]),
         "nonfinite_updates": [0, 0, 0], **ablation._sample_stats(evals[:3] - 50)}
    b = {**_part_row(curves, finals, evals, slice(3, 5)), **ablation._seed_stats(finals[3:], evals[3:]),
         "nonfinite_updates": [3, 0], **ablation._sample_stats(evals[3:] - 50)}
    for name, row in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"command": f"cmd {name}", "rows": [row]}))
    out = tmp_path / "ab"
    assert ablation.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["rows"][0]["nonfinite_updates"] == [0, 0, 0, 3, 0]
    md = (out / "results.md").read_text()
    assert "- ppo on CartPole-v1: [0, 0, 0, 3, 0] of 4 updates" in md
    x = evals - 50  # the sampled-action evaluation, pooled over the five seeds
    assert f"- ppo on CartPole-v1: {x.mean():.1f} ± {x.std(ddof=1) / np.sqrt(5):.1f}" in md
    before = (out / "results.json").read_bytes()
    with pytest.raises(SystemExit) as e:
        ablation.main(["--merge", str(tmp_path / "a"), "--out", str(out)])
    assert e.value.code == 2 and "already holds results" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == before
    assert ablation.main(["--merge", str(tmp_path / "a"), "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["rows"][0]["seeds"] == 3
    with pytest.raises(SystemExit) as e:
        ablation.main(["--merge", str(tmp_path / "missing"), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--merge " + str(tmp_path / "missing") in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("args, message", [
    (["--set", "lr"], "--set expects KEY=VALUE, got 'lr'"),
    (["--grid", "lr=abc"], "--grid lr: 'abc' is not a number"),
    (["--grid", "nosuch=1,2"], "grid option 'nosuch' is not a hyperparameter"),
    (["--total-steps", "abc"], "--total-steps: 'abc' is not a number"),
    (["--total-steps", "0"], "--total-steps must be a positive whole number"),
    (["--num-envs", "0"], "num_envs must be a positive integer, got 0"),  # was silently the preset's
    (["--envs", "CartPole-v1,NoSuch"], "Unknown environment 'NoSuch'"),  # before CartPole trains
    (["--metric", "nosuch"], "--metric nosuch: not logged by ppo on CartPole-v1; logged metrics: approx_kl"),
])
def test_ablation_bad_input_is_one_line_before_anything_trains(args, message, tmp_path, capsys):
    ablation = load_experiment("ablation")
    with pytest.raises(SystemExit) as e:
        ablation.main(["--algos", "ppo", "--seeds", "1", "--total-steps", "2e3", "--no-progress",
                       "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()
