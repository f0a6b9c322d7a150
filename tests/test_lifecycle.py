"""Runs that survive: checkpoints, exact resume, interruption, non-finite losses, full disks,
loading and evaluating (prpo.checkpoint, prpo.experiment, prpo.evaluation, the CLI).

The resume-equivalence tests compare *K updates, stop, resume to N* with *N updates straight*:
parameters, optimizer state, env state, keys, every TrainState field, the per-update metrics and
metrics.jsonl must be bit-identical (CPU), with 2 seeds × a 2-setting grid.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prpo
from prpo import checkpoint as ck
from prpo import cli, experiment
from prpo.envs import Discrete, EnvSpec, TimeStep

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _raw(x):
    return np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)


def assert_same_tree(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for (path, x), y in zip(la, lb):
        x, y = _raw(x), _raw(y)
        assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
        assert np.array_equal(x, y, equal_nan=True), f"{jax.tree_util.keystr(path)} differs"


def stop_after_chunk(monkeypatch, k):
    """SIGINT sent to this process right after the k-th chunk's metrics are written: the run's
    own handler sees it and stops after that chunk, as for a Ctrl-C."""
    original = experiment.MetricsStream.write
    calls = {"n": 0}

    def write(self, chunk, first):
        original(self, chunk, first)
        calls["n"] += 1
        if calls["n"] == k:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(experiment.MetricsStream, "write", write)
    return lambda: monkeypatch.setattr(experiment.MetricsStream, "write", original)


TINY = dict(num_envs=4, num_steps=16, update_epochs=2, num_minibatches=2)

CASES = {
    "ppo": (lambda: prpo.preset("ppo-cartpole", total_timesteps=4 * 16 * 8, normalize_obs=True,
                                normalize_reward=True, **TINY), {"lr": [1e-3, 3e-4]}, 2),
    "pqn": (lambda: prpo.algorithms.get("pqn").config("CartPole-v1", total_timesteps=4 * 16 * 8, eval_every=2,
                                                      eval_envs=4, **TINY), {"lr": [1e-3, 3e-4]}, 4),
    "ppo_ewma": (lambda: prpo.algorithms.get("ppo_ewma").config("CartPole-v1", total_timesteps=4 * 16 * 8, **TINY),
                 {"ewma_decay": [0.9, 0.5]}, 2),
    "fpo": (lambda: prpo.algorithms.get("fpo").config("Pendulum-v1", total_timesteps=4 * 16 * 6, actor_hidden=(16, 16),
                                                      **TINY), {"lr": [1e-3, 3e-4]}, 2),
}


@pytest.mark.parametrize("algo", list(CASES))
def test_stop_and_resume_is_bit_identical_to_a_straight_run(algo, tmp_path, monkeypatch):
    make_cfg, grid, every = CASES[algo]
    cfg = make_cfg()
    straight = prpo.run_experiment(cfg, seeds=2, grid=grid, out_dir=tmp_path / "straight", progress=False,
                                   checkpoint_every=every)
    restore = stop_after_chunk(monkeypatch, 1)
    with pytest.raises(experiment.RunInterrupted, match=r"SIGINT: stopped after update \d+ of"):
        prpo.run_experiment(cfg, seeds=2, grid=grid, out_dir=tmp_path / "cut", progress=False, checkpoint_every=every)
    restore()
    record = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert record["status"] == "interrupted" and record["last_checkpoint"] == every
    assert not (tmp_path / "cut" / "summary.json").exists()
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == every * 2  # 2 settings per update
    resumed = prpo.run_experiment(resume=tmp_path / "cut", progress=False)
    assert resumed.summary["resumed_at_update"] == every
    assert_same_tree(straight.state, resumed.state)
    assert straight.metrics.keys() == resumed.metrics.keys()
    for k in straight.metrics:
        np.testing.assert_array_equal(straight.metrics[k], resumed.metrics[k], err_msg=k)
    assert (tmp_path / "straight" / "metrics.jsonl").read_text() == (tmp_path / "cut" / "metrics.jsonl").read_text()
    np.testing.assert_array_equal(straight.summary["final_returns"], resumed.summary["final_returns"])
    # the checkpoint holds the whole state: prpo.load gives the final state of every setting × seed
    trainer, state = prpo.load(tmp_path / "cut")
    assert_same_tree(straight.state, state)
    if algo == "ppo_ewma":  # the proximal parameters are algorithm state, restored too
        assert jax.tree.leaves(state.algo_state)


def test_a_killed_run_resumes_from_its_last_checkpoint_dropping_later_metrics(tmp_path):
    """SIGKILL leaves metrics lines past the last checkpoint: the resume drops them and the run
    still equals the straight one."""
    cfg = CASES["ppo"][0]()
    straight = prpo.run_experiment(cfg, seeds=2, out_dir=tmp_path / "a", progress=False, checkpoint_every=2, keep=10)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for step in (6, 8):  # as if killed after writing update 7's metrics, before checkpoint 8
        shutil.rmtree(tmp_path / "b" / "checkpoints" / str(step))
    (tmp_path / "b" / "summary.json").unlink()
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "b" / "metrics.jsonl").write_text("".join(lines[:7]) + lines[7][:20])  # and a line cut in half
    resumed = prpo.run_experiment(resume=tmp_path / "b", progress=False)
    assert resumed.summary["resumed_at_update"] == 4
    assert_same_tree(straight.state, resumed.state)
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()
    # extend the finished run: its budget grows, the old summary is kept
    longer = prpo.run_experiment(cfg.replace(total_timesteps=cfg.total_timesteps + 2 * cfg.batch_size),
                                 resume=tmp_path / "b", progress=False)
    assert longer.summary["num_updates"] == 10 and longer.metrics["update"].shape[-1] == 10
    assert (tmp_path / "b" / "summary.update-8.json").exists()
    np.testing.assert_array_equal(longer.metrics["update"][0, 0], np.arange(1, 11))


def test_checkpoints_round_trip_keys_and_empty_arrays(tmp_path):
    """Typed keys and zero-size leaves (a brax state's ``act`` without actuators) survive a save;
    the restore puts every leaf on the target's device with its dtype."""
    tree = {"key": jax.random.split(jax.random.key(7), 3), "empty": jnp.zeros((4, 0), jnp.float32),
            "x": jnp.arange(6, dtype=jnp.int32).reshape(2, 3), "nan": jnp.array([np.nan, 1.0])}
    ckpts = ck.Checkpoints(tmp_path, keep=2)
    history = {"loss": np.ones((1, 1, 3), np.float32)}
    ckpts.save(3, tree, history, {"config": {"algo": "ppo"}})
    ckpts.save(5, tree, history, {"config": {"algo": "ppo"}})
    ckpts.save(7, tree, history, {"config": {"algo": "ppo"}})
    assert ckpts.steps() == [5, 7]  # keep=2
    # a write killed half-way leaves orbax's temporary directory: never taken for a checkpoint
    partial = tmp_path / "checkpoints" / "9.orbax-checkpoint-tmp-1234"
    partial.mkdir()
    (partial / "junk").write_bytes(b"half")
    assert ck.Checkpoints(tmp_path, read_only=True).steps() == [5, 7]
    record = ckpts.record(7)
    assert record["update"] == 7 and record["metrics"] == {"loss": "float32"}
    back, hist = ckpts.restore(7, ck._on_device(jax.eval_shape(lambda: tree)), record, (1, 1))
    assert_same_tree(tree, back)
    np.testing.assert_array_equal(hist["loss"], history["loss"][..., :3])


# -------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished CartPole run with 2 seeds and checkpoints after updates 2 and 4."""
    out = tmp_path_factory.mktemp("run") / "cp"
    cfg = prpo.preset("ppo-cartpole", total_timesteps=4 * 16 * 4, **TINY)
    result = prpo.run_experiment(cfg, seeds=2, out_dir=out, progress=False, checkpoint_every=2)
    return out, result


def _cli_error(argv, capsys, code=2):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == code, err
    assert err.startswith("prpo: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_resume_refusals_name_the_problem_and_lose_nothing(finished_run, tmp_path, capsys):
    run_dir, _ = finished_run
    before = {p: (run_dir / p).read_bytes() for p in ("run.json", "summary.json", "metrics.jsonl")}
    empty = tmp_path / "empty"
    empty.mkdir()
    no_ckpt = tmp_path / "no-ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "run.json").write_text((run_dir / "run.json").read_text())
    cases = [
        (["train", "--resume", str(tmp_path / "missing")], "is not a directory"),
        (["train", "--resume", str(empty)], "holds no prpo run: no run.json"),
        (["train", "--resume", str(no_ckpt)], "has no complete checkpoint to resume from"),
        (["train", "--resume", str(run_dir)], "has done all its 4 updates; to train on, extend its budget"),
        (["train", "pqn", "--resume", str(run_dir)], "holds a ppo run on CartPole-v1; ALGO pqn differs"),
        (["train", "--env", "Acrobot-v1", "--resume", str(run_dir)], "--env Acrobot-v1 differs"),
        (["train", "--seeds", "3", "--resume", str(run_dir)], "trained with --seeds 2; --seeds 3 differs"),
        (["train", "--resume", str(run_dir), "--num-envs", "8"], "cannot resume"),
        (["train", "--resume", str(run_dir), "--set", "clip_value=false"], "clip_value=True (saved) vs False"),
        (["train", "--resume", str(run_dir), "--grid", "lr=1e-3,1e-4"], "--grid does not apply to --resume"),
        (["train", "--resume", str(run_dir), "--out", str(tmp_path / "x")], "leave out --out"),
        (["train", "--resume", str(run_dir), "--overwrite"], "--overwrite would remove it"),
        (["train", "--checkpoint-every", "0", "--out", str(tmp_path / "y")], "--checkpoint-every must be a positive integer"),
        (["train", "--checkpoint-every", "10"], "--checkpoint-every needs --out"),
        (["train", "--keep", "0", "--out", str(tmp_path / "y")], "--keep must be a positive integer"),
        (["train", "--out", str(run_dir)], "already holds a finished run (summary.json)"),
        (["train", "--out", str(no_ckpt)], f"holds an unfinished run (run.json); continue it with --resume {no_ckpt}"),
        (["train", "--logger", "tensorbord", "--out", str(tmp_path / "y")], "tensorbord"),
        (["train", "--overwrite"], "--overwrite needs --out"),
        # --overwrite removes the old run only when the new one starts: a refused one leaves it whole
        (["train", "--out", str(run_dir), "--overwrite", "--set", "devices=2"], "needs 2 devices"),
        (["train", "--out", "/sys/prpo-read-only"], "is not writable"),  # read-only even for root
        (["train", "--out", str(run_dir / "run.json")], "exists and is not a directory"),
        (["eval", str(empty)], "holds no prpo run"),
        (["eval", str(run_dir), "--episodes", "0"], "--episodes must be a positive integer"),
        (["eval", str(run_dir), "--step", "3"], "has no checkpoint 3; it has [2, 4]"),
        (["eval", str(run_dir), "--video", str(tmp_path / "x.avi")], ".avi"),
    ]
    for argv, needle in cases:
        err = _cli_error(argv, capsys)
        assert needle in err, (argv, err)
    for p, data in before.items():
        assert (run_dir / p).read_bytes() == data, p  # nothing replaced
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["2", "4"]


def test_a_corrupt_checkpoint_is_refused_naming_the_earlier_one(finished_run, tmp_path, capsys):
    run_dir, _ = finished_run
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    (bad / "summary.json").unlink()
    for root, _, files in os.walk(bad / "checkpoints" / "4" / "state"):
        for f in files:
            if "ocdbt" in root or f.startswith("manifest"):
                with open(os.path.join(root, f), "r+b") as fh:
                    fh.truncate(8)
    err = _cli_error(["train", "--resume", str(bad), "--total-steps", "512", "--no-progress"], capsys)
    assert "checkpoints/4 is corrupt or incomplete" in err and "the earlier checkpoint 2 is complete" in err, err
    with pytest.raises(ck.CheckpointError, match="is corrupt or incomplete"):
        prpo.load(bad)


def test_overwrite_replaces_only_a_runs_files(finished_run, tmp_path):
    run_dir, _ = finished_run
    target = tmp_path / "ow"
    shutil.copytree(run_dir, target)
    (target / "notes.txt").write_text("mine")
    cfg = prpo.preset("ppo-cartpole", total_timesteps=4 * 16 * 2, **TINY)
    result = prpo.run_experiment(cfg, out_dir=target, overwrite=True, progress=False)
    assert (target / "notes.txt").read_text() == "mine"
    assert json.loads((target / "summary.json").read_text())["num_updates"] == result.summary["num_updates"] == 2
    assert sorted(os.listdir(target / "checkpoints")) == ["2"]


# -------------------------------------------------------------------------- non-finite loss


class NaNAfter:
    """A protocol env whose reward turns NaN after ``after`` env steps (a global counter)."""

    spec = EnvSpec("NaNAfter", obs_shape=(1,), action_space=Discrete(2), max_episode_steps=4)

    def __init__(self, num_envs=1, after=10**9):
        self.num_envs, self.after = num_envs, after

    def with_num_envs(self, n):
        return NaNAfter(n, self.after)

    def reset(self, key):
        return jnp.zeros((), jnp.int32), jnp.zeros((self.num_envs, 1), jnp.float32)

    def step(self, t, action, key):
        n = self.num_envs
        obs = jnp.zeros((n, 1), jnp.float32)
        reward = jnp.where(t >= self.after, jnp.nan, (action == 1).astype(jnp.float32))
        done = jnp.ones((n,), bool)
        return t + 1, TimeStep(obs=obs, reward=reward, terminated=done, truncated=~done, final_obs=obs,
                               episode_return=reward, episode_length=jnp.ones((n,), jnp.int32))


def test_a_non_finite_loss_stops_keeping_the_last_finite_checkpoint(tmp_path):
    cfg = prpo.preset("ppo-cartpole", num_envs=4, num_steps=4, total_timesteps=4 * 4 * 8, num_minibatches=2,
                      update_epochs=1)
    env = NaNAfter(4, after=4 * 5 + 1)  # NaN rewards from the 6th update's rollout on
    with pytest.raises(prpo.NonFiniteLossError, match=r"non-finite loss at update 6 of 8.*Last finite state: "
                                                      r"checkpoint after update 4"):
        prpo.run_experiment(cfg, env=env, out_dir=tmp_path / "nan", progress=False, checkpoint_every=2)
    record = json.loads((tmp_path / "nan" / "run.json").read_text())
    assert record["status"] == "failed" and record["failed_update"] == 6 and record["last_checkpoint"] == 4
    assert sorted(os.listdir(tmp_path / "nan" / "checkpoints")) == ["2", "4"]
    rows = [json.loads(line) for line in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == list(range(1, 7))  # up to the failing update, whole lines
    with pytest.raises(ck.CheckpointError, match="custom env"):
        prpo.load(tmp_path / "nan")
    _, state = prpo.load(tmp_path / "nan", env=NaNAfter(4, after=4 * 5 + 1))
    assert int(state.update[0, 0]) == 4 and int(state.nonfinite_update[0, 0]) == -1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


# -------------------------------------------------------------------------- the CLI, as a user meets it


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)
    return env


CLI_RUN = ["-m", "prpo", "train", "--seeds", "2", "--num-envs", "4", "--set", "num_steps=16", "--set", "update_epochs=1",
           "--set", "num_minibatches=2", "--no-progress"]


def test_ctrl_c_half_way_then_resume_equals_an_uninterrupted_run(tmp_path):
    """The issue's "done when": Ctrl-C (SIGINT) while training writes a checkpoint and exits 130
    with one line and no traceback; ``--resume`` finishes the run to exactly the straight result;
    SIGTERM does the same with exit 143."""
    total = ["--total-steps", str(4 * 16 * 1200)]  # 1200 updates in chunks of 60: seconds of training
    straight = subprocess.run([sys.executable, *CLI_RUN, *total, "--out", str(tmp_path / "a")], env=_env(),
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        out = tmp_path / sig.name
        proc = subprocess.Popen([sys.executable, *CLI_RUN, *total, "--out", str(out)], env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        metrics = out / "metrics.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and metrics.stat().st_size > 0:
                break
            time.sleep(0.02)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == code, stderr[-3000:]
        assert "Traceback" not in stderr, stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(f"prpo: {sig.name}: stopped after update") and f"--resume {out}" in last, stderr
        record = json.loads((out / "run.json").read_text())
        assert record["status"] == "interrupted" and 0 < record["last_checkpoint"] < 1200
        resumed = subprocess.run([sys.executable, "-m", "prpo", "train", "--resume", str(out), "--no-progress"],
                                 env=_env(), capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        a = json.loads((tmp_path / "a" / "summary.json").read_text())
        b = json.loads((out / "summary.json").read_text())
        assert a["final_returns"] == b["final_returns"] and b["resumed_at_update"] == record["last_checkpoint"]
        assert (tmp_path / "a" / "metrics.jsonl").read_text() == metrics.read_text()
        _, sa = prpo.load(tmp_path / "a")
        _, sb = prpo.load(out)
        assert_same_tree(sa, sb)


def test_a_full_disk_ends_the_run_in_one_line_leaving_valid_files(tmp_path):
    """Writes beyond a file-size limit fail (EFBIG, as ENOSPC would): one line, exit 1, metrics.jsonl
    holds only whole lines and every checkpoint left is loadable."""
    import resource

    out = tmp_path / "full"
    limit = 60_000

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, *CLI_RUN, "--total-steps", str(4 * 16 * 400), "--out", str(out),
                           "--checkpoint-every", "20"], env=_env(), capture_output=True, text=True, timeout=600,
                          preexec_fn=small_files)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("prpo: error: could not write") and "the run stopped after update" in last, last
    lines = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    assert lines and all(line.endswith("\n") for line in lines)
    rows = [json.loads(line) for line in lines]
    assert [r["update"] for r in rows] == list(range(1, len(rows) + 1))
    steps = ck.Checkpoints(out, read_only=True).steps()
    for step in steps:
        _, state = prpo.load(out, step)
        assert int(state.update[0, 0]) == step
    assert not (out / "summary.json").exists()


# -------------------------------------------------------------------------- evaluate and watch


def test_eval_reports_every_seed_and_appends(finished_run, tmp_path, capsys):
    run_dir, result = finished_run
    target = tmp_path / "ev"
    shutil.copytree(run_dir, target)
    assert cli.main(["eval", str(target), "--episodes", "3", "--seed", "5"]) == 0
    assert cli.main(["eval", str(target), "--episodes", "2", "--stochastic"]) == 0
    evals = json.loads((target / "eval.json").read_text())["evaluations"]
    assert [e["episodes"] for e in evals] == [3, 2] and [e["deterministic"] for e in evals] == [True, False]
    first = evals[0]
    assert first["update"] == 4 and len(first["per_seed"]) == 2 and np.asarray(first["returns"]).shape == (2, 3)
    # the same numbers from the parts: the loaded state of each seed, the same keys
    trainer, state = prpo.load(target)
    keys = jax.random.split(jax.random.key(5), 2)
    for s in range(2):
        one = jax.tree.map(lambda x: x[0, s], state)
        rets, done = prpo.train.episode_returns(trainer, one, keys[s], 3)
        assert bool(done.all())
        np.testing.assert_allclose(first["returns"][s], np.asarray(rets), rtol=0, atol=0)
        assert first["per_seed"][s] == pytest.approx(float(np.mean(rets)))
        assert float(prpo.evaluate(trainer, one, keys[s], 3)) == pytest.approx(float(np.mean(rets)))
    assert first["mean"] == pytest.approx(float(np.mean(first["returns"])))


@pytest.mark.parametrize("limit", [None, 12], ids=["terminations", "time-limit"])
def test_episode_returns_match_a_python_loop(limit):
    """prpo.train.episode_returns (a lax.scan) against a plain loop over the same env and keys:
    episodes that terminate (an untrained CartPole falls within ~40 steps), and episodes cut by a
    12-step time limit, which must count as finished (truncation ends an episode)."""
    extra = {} if limit is None else {"episode_length": limit}
    cfg = prpo.preset("ppo-cartpole", total_timesteps=4 * 16, **TINY, **extra)
    trainer = prpo.make_train(cfg)
    state = trainer.init(jax.random.key(3), cfg.hp)
    key = jax.random.key(9)
    rets, done = prpo.train.episode_returns(trainer, state, key, 5)
    env = trainer.env.with_num_envs(5)
    k_reset, k_run = jax.random.split(key)
    env_state, obs = env.reset(k_reset)
    total, finished = np.zeros(5), np.zeros(5, bool)
    for k in jax.random.split(k_run, env.spec.max_episode_steps):
        _, k_env = jax.random.split(k)
        action = trainer.policy.mode(state.params, obs)
        env_state, ts = env.step(env_state, action, k_env)
        live = ~finished
        total[live] += np.asarray(ts.reward)[live]
        finished |= np.asarray(ts.terminated | ts.truncated)
        obs = ts.obs
    np.testing.assert_allclose(np.asarray(rets), total)
    assert bool(done.all()) and finished.all()
    if limit is not None:  # every episode ran into the limit: CartPole pays 1 per step
        np.testing.assert_array_equal(np.asarray(rets), np.full(5, float(limit)))
    assert float(prpo.evaluate(trainer, state, key, 5)) == pytest.approx(total.mean())


def test_two_devices_resume_exactly_and_restore_on_one(tmp_path):
    """On 2 fake CPU devices (a subprocess): stop + resume equals the straight data-parallel run;
    its checkpoint (global arrays) loads onto one device and resumes there."""
    proc = subprocess.run([sys.executable, os.path.join(HERE, "_lifecycle_worker.py"), str(tmp_path)], env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "two-device resume ok" in proc.stdout and "2 -> 1 devices ok" in proc.stdout


def test_the_tensorboard_logger_gets_the_runs_scalars(tmp_path):
    """--logger tensorboard through a run: each update's mean over seeds and each seed's value,
    at step = env steps, read back with TensorBoard's own reader."""
    pytest.importorskip("tensorboardX")
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    cfg = prpo.preset("ppo-cartpole", total_timesteps=4 * 16 * 4, **TINY)
    result = prpo.run_experiment(cfg, seeds=2, out_dir=tmp_path / "tb", loggers=["tensorboard"], progress=False)
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tb" / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    loss = np.asarray(result.metrics["loss"][0], np.float64)  # [S, U]
    mean = acc.Scalars("loss")
    assert [e.step for e in mean] == [u * cfg.batch_size for u in range(1, 5)]
    np.testing.assert_allclose([e.value for e in mean], loss.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose([e.value for e in acc.Scalars("loss/seed_1")], loss[1], rtol=1e-6)
    assert json.loads((tmp_path / "tb" / "run.json").read_text())["loggers"] == ["jsonl", "tensorboard"]
