"""Command line: help, bad options (clear one-line errors, before compiling), outputs on disk."""

import json
import os
import subprocess
import sys

import pytest

from prpo import cli
from prpo.config import Config, option_names


def _run_main(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def test_train_help_documents_every_option_with_default(capsys):
    code, out, _ = _run_main(["train", "--help"], capsys)
    assert code == 0
    out = " ".join(out.split())  # argparse wraps to the terminal width
    for flag in ("--env", "--seeds", "--num-envs", "--total-steps", "--set", "--out", "--grid", "--preset", "--seed"):
        assert flag in out
    assert "(default: CartPole-v1)" in out and "(default: 1)" in out and "(default: ppo)" in out


def test_list_names_algorithms_presets_envs_and_options(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("ppo", "a2c", "spo", "bpo", "mdpo", "ppo-cartpole", "ppo-brax", "CartPole-v1", "Breakout-MinAtar", "ant", "num_minibatches", "clip_eps"):
        assert word in out
    assert set(option_names()) >= {"lr", "num_envs", "normalize_obs"}


# bad options: tests/test_bad_input.py (the table of every class of bad input)


def test_set_parses_types():
    from prpo.config import apply_overrides

    cfg = apply_overrides(Config(), {"actor_hidden": "32,16", "anneal_lr": "false", "lr": "3e-4", "total_timesteps": "1e5"})
    assert cfg.actor_hidden == (32, 16) and cfg.anneal_lr is False and cfg.hp.lr == 3e-4 and cfg.total_timesteps == 100000


def test_train_writes_summary_and_metrics(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "prpo", "train", "ppo", "--env", "CartPole-v1", "--seeds", "2", "--num-envs", "4",
           "--total-steps", "2048", "--set", "num_steps=64", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    for key in ("algo", "env", "seeds", "env_steps", "final_return_mean", "final_returns", "steps_per_s", "compile_s", "wall_s"):
        assert key in summary
    assert summary["algo"] == "ppo" and summary["env"] == "CartPole-v1" and summary["seeds"] == 2
    assert summary["env_steps"] == 2048 and len(summary["final_returns"]) == 2
    assert summary["config"]["num_steps"] == 64
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2048 // (4 * 64)
    rows = [json.loads(line) for line in lines]
    assert [r["update"] for r in rows] == list(range(1, 9))
    assert rows[-1]["env_steps"] == 2048
    for key in ("episode_return_mean", "episode_return_std", "loss", "approx_kl", "clip_frac", "entropy"):
        assert key in rows[-1]
    assert len(rows[-1]["return_per_seed"]) == 2
    # the run's final return is the mean of the per-seed final returns
    assert summary["final_return_mean"] == pytest.approx(sum(summary["final_returns"]) / 2)
    # CartPole returns are episode lengths: between 8 and 500
    assert all(8 <= r <= 500 for r in summary["final_returns"])


def test_compile_cache_is_filled_once_and_reused(tmp_path):
    """``--compile-cache DIR``: the first run writes its compiled programs to DIR; a second run with the
    same settings adds none (every program is loaded from DIR) and trains the same (CPU: identical)."""
    cache = tmp_path / "cache"
    runs = []
    for name in ("a", "b"):
        cmd = [sys.executable, "-m", "prpo", "train", "--num-envs", "4", "--total-steps", "1024", "--set", "num_steps=64",
               "--out", str(tmp_path / name), "--no-progress", "--compile-cache", str(cache)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        assert proc.returncode == 0, proc.stderr
        runs.append((sorted(os.listdir(cache)), json.loads((tmp_path / name / "summary.json").read_text())))
    (first, a), (second, b) = runs
    assert any(f.startswith("jit_") for f in first)  # the run's own programs, not only JAX's helpers
    assert second == first  # nothing compiled anew
    assert a["final_returns"] == b["final_returns"]
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()


def test_metrics_rows_are_the_per_update_means_over_seeds():
    """The vectorised writer against a plain loop: per update and setting, each metric's mean over
    the seeds' finite values (null when none), the per-seed returns; streamed chunks concatenate."""
    import numpy as np

    from prpo.experiment import metric_rows

    rng = np.random.default_rng(0)
    G, S, U = 2, 3, 5
    metrics = {"update": np.broadcast_to(np.arange(1, U + 1), (G, S, U)), "loss": rng.normal(size=(G, S, U)),
               "last_return": rng.normal(size=(G, S, U))}
    metrics["loss"][0, :, 1] = np.nan  # no finite value: null
    metrics["loss"][1, 0, 2] = np.nan  # one missing: the mean of the others
    metrics["last_return"][1, 2, 4] = np.inf
    settings = [{"lr": 1e-3}, {"lr": 3e-4}]
    rows = [json.loads(line) for line in metric_rows(metrics, settings, batch_size=32)]
    assert len(rows) == U * G
    for u in range(U):
        for g in range(G):
            row = rows[u * G + g]
            assert row["update"] == u + 1 and row["env_steps"] == (u + 1) * 32 and row["setting"] == settings[g]
            vals = [x for x in metrics["loss"][g, :, u] if np.isfinite(x)]
            if vals:
                assert row["loss"] == pytest.approx(sum(vals) / len(vals), rel=1e-12)
            else:
                assert row["loss"] is None
            expect = [None if not np.isfinite(x) else x for x in metrics["last_return"][g, :, u]]
            assert row["return_per_seed"] == pytest.approx(expect) if None not in expect else row["return_per_seed"] == [
                None if e is None else pytest.approx(e) for e in expect]
    head = {k: v[..., :2] for k, v in metrics.items()}
    tail = {k: v[..., 2:] for k, v in metrics.items()}
    streamed = metric_rows(head, settings, 32) + metric_rows(tail, settings, 32, first_update=2)
    assert streamed == metric_rows(metrics, settings, 32)
