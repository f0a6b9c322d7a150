"""Bad input, as a new user types it: one clear line (CLI: exit 2, ``prpo: error: ...``; Python:
``ConfigError``), naming the option and what is allowed, raised before anything compiles.

"Before anything compiles" is checked by making the trainer factories fail the test if reached:
every case here is refused while the config, the grid, the seeds and the output directory are
validated, before a trainer exists. (Refusing a run that does not fit in device memory needs the
compiled memory estimate; that case lives in tests/test_scale.py.)
"""

import numpy as np
import pytest

import prpo
from prpo import algorithms, cli, experiment, parallel
from prpo.config import Config, ConfigError, Hyperparams, apply_overrides, preset
from prpo.experiment import grid_hyperparams, run_experiment
from prpo.train import make_train

from _experiments import load_experiment  # tests/ is on sys.path


@pytest.fixture
def no_compile(monkeypatch):
    """Fail the test if a trainer is built (the step before any compile)."""

    def reached(*args, **kw):
        raise AssertionError("a trainer was built: the error came too late (after the point of compiling)")

    monkeypatch.setattr(experiment, "make_train", reached)
    monkeypatch.setattr(parallel, "make_sharded_train", reached)


# (argv, needle in the one error line) — grouped by the class of problem
CLI_CASES = [
    # numbers that are not counts
    (["train", "--total-steps", "nan"], "argument --total-steps: expected a positive integer"),
    (["train", "--total-steps", "inf"], "argument --total-steps: expected a positive integer"),
    (["train", "--total-steps", "1.5"], "argument --total-steps: expected a positive integer"),
    (["train", "--total-steps", "-5"], "argument --total-steps: expected a positive integer"),
    (["train", "--total-steps", "100"], "total_timesteps=100 is smaller than one update's batch"),
    (["train", "--seed", "99999999999999999999999"], "--seed must be an integer in [0, 4294967295]"),
    (["train", "--seed", "-1"], "--seed must be an integer in [0, 4294967295]"),
    (["train", "--seed", "abc"], "argument --seed: expected an integer"),
    (["train", "--seeds", "0"], "--seeds must be a positive integer"),
    (["train", "--num-envs", "0"], "num_envs must be a positive integer"),
    (["train", "--num-envs", "-4"], "num_envs must be a positive integer"),
    (["train", "--num-envs", "4.5"], "argument --num-envs: expected an integer"),
    (["train", "--num-envs", "100000000", "--total-steps", "1e11"], "samples per update is more than 2^31 − 1"),
    (["train", "--seed-index", "4", "--seeds", "4"], "--seed-index must be an integer in [0, --seeds − 1 = 3]"),
    # typos are errors, not abbreviations
    (["train", "--num-env", "4"], "unrecognized arguments: --num-env"),
    (["train", "--total-step", "1000"], "unrecognized arguments: --total-step"),
    (["nope"], "invalid choice: 'nope'"),
    (["train", "--set", "learning_rate=1e-3"], "unknown option 'learning_rate'"),
    (["train", "--set", "lr"], "--set expects KEY=VALUE"),
    # values of the wrong type or out of range
    (["train", "--set", "actor_hidden=64.7"], "option actor_hidden='64.7': expected a value of type comma-separated positive integers"),
    (["train", "--set", "actor_hidden=0"], "actor_hidden must be a non-empty tuple of positive integer widths"),
    (["train", "--set", "num_envs=abc"], "option num_envs='abc': expected a value of type int"),
    (["train", "--set", "clip_value=maybe"], "option clip_value='maybe': expected a value of type bool"),
    (["train", "--set", "obs_clip=-1", "--set", "normalize_obs=true"], "obs_clip must be a finite number > 0"),
    (["train", "--set", "reward_clip=0", "--set", "normalize_reward=true"], "reward_clip must be a finite number > 0"),
    (["train", "--env", "Pendulum-v1", "--set", "obs_clip=nan"], "obs_clip must be a finite number > 0"),
    (["train", "--env", "Pendulum-v1", "--set", "log_std_init=nan"], "log_std_init must be a finite number"),
    (["train", "--set", "update_epochs=1000000000"], "update_epochs=1000000000 is more than 1000 passes"),
    (["train", "--set", "episode_length=0"], "episode_length must be a positive integer"),
    (["train", "--set", "unroll=0"], "unroll must be a positive integer"),
    (["train", "--set", "eval_every=-1"], "eval_every must be an integer >= 0"),
    (["train", "--set", "shuffle=random"], "shuffle='random' is not allowed; allowed values: 'samples'"),
    (["train", "--set", "network_kernel=fused_bf32"],
     "network_kernel='fused_bf32' is not allowed; allowed values: 'xla', 'fused', 'blockdiag', 'fused_bf16'"),
    (["train", "--set", "objective=trpo"], "objective='trpo' is not allowed; allowed values: 'clip', 'dual_clip', 'pg'"),
    (["train", "--set", "num_minibatches=3"], "not divisible by num_minibatches=3"),
    (["train", "--num-envs", "3", "--set", "num_steps=5"], "not divisible by num_minibatches=4"),
    (["train", "--set", "fixed_minibatch_size=3000"], "fixed_minibatch_size=3000 must divide"),
    (["train", "--devices", "many"], "option devices='many': expected a value of type a positive integer or 'all'"),
    # hyperparameters
    (["train", "--set", "lr=-1"], "hyperparameter lr=-1.0 must be > 0"),
    (["train", "--set", "lr=1e39"], "hyperparameter lr=1e+39 is not representable in float32"),
    (["train", "--set", "gamma=1.5"], "hyperparameter gamma=1.5 must be in [0, 1]"),
    (["train", "--set", "ent_coef=-100"], "hyperparameter ent_coef=-100.0 must be >= 0"),
    (["train", "--set", "max_grad_norm=0"], "hyperparameter max_grad_norm=0.0 must be > 0"),
    (["train", "--grid", "lr=abc"], "--grid lr='abc': expected comma-separated numbers"),
    (["train", "--grid", "lr=1e-3,1e-3"], "grid option 'lr' repeats a value"),
    (["train", "--grid", "lr=-1,1e-3"], "hyperparameter lr=-1.0 must be > 0"),
    (["train", "--grid", "num_envs=1,2"], "not a hyperparameter"),
    (["train", "--grid", "eps_start=0.1,0.2"], "grid option 'eps_start' is not a hyperparameter of this config"),
    # conflicting or repeated settings are refused, not resolved silently
    (["train", "--num-envs", "4", "--set", "num_envs=8"], "num_envs is given twice: --num-envs 4 and --set num_envs=8"),
    (["train", "--total-steps", "1e5", "--set", "total_timesteps=2e5"], "total_timesteps is given twice"),
    (["train", "--set", "lr=1e-3", "--set", "lr=1e-4"], "--set lr=... is given twice"),
    (["train", "--grid", "lr=1e-3,1e-4", "--grid", "lr=3e-4"], "--grid lr=... is given twice"),
    (["train", "--set", "lr=1e-3", "--grid", "lr=1e-4,3e-4"], "lr is both set (--set lr=1e-3) and swept"),
    (["train", "--set", "algo=pqn"], "set algo with the positional ALGO argument"),
    (["train", "--set", "env=Pendulum-v1"], "set env with --env"),
    # options that would have no effect
    (["train", "--set", "eval_envs=4"], "option 'eval_envs' has no effect here"),
    (["train", "--set", "clip_value=false", "--set", "vf_clip_eps=0.3"], "option 'vf_clip_eps' has no effect here"),
    (["train", "--set", "rms_decay=0.9"], "option 'rms_decay' has no effect here"),
    (["train", "--set", "kl_coef=0.5"], "option 'kl_coef' has no effect here"),
    (["train", "--set", "obs_clip=5"], "option 'obs_clip' has no effect here"),
    (["train", "--set", "eps_start=0.5"], "option 'eps_start' belongs to algorithm 'pqn'"),
    (["train", "--set", "q_torso=conv"], "option 'q_torso' belongs to algorithm 'pqn'"),
    (["train", "--env", "Pendulum-v1", "--set", "fpo_loss=u_mse"], "option 'fpo_loss' belongs to policy 'flow'"),
    (["train", "dppo", "--env", "Pendulum-v1", "--set", "n_mc=4"], "option 'n_mc' belongs to policy 'flow', policy 'policyflow'"),
    # algorithm, env and preset that do not fit together
    (["train", "ppo", "--preset", "pqn-cartpole"], "preset='pqn-cartpole' is algorithm 'pqn''s; for 'ppo' use one of"),
    (["train", "nope"], "unknown algorithm 'nope'"),
    (["train", "--env", "CartPoel-v1"], "Unknown environment 'CartPoel-v1'"),
    (["train", "pqn", "--env", "Pendulum-v1"], "algorithm 'pqn' supports discrete action spaces only"),
    (["train", "fpo", "--env", "CartPole-v1"], "algorithm 'fpo' supports continuous action spaces only"),
    (["train", "--env", "Pendulum-v1", "--set", "distribution=categorical"], "distribution='categorical'"),
    (["train", "--set", "policy=flow"], "policy='flow' needs a continuous action space"),
    (["train", "pqn", "--set", "policy=flow"], "policy='flow' is not allowed with algo='pqn'"),
    (["train", "--set", "objective=bpo"], "objective='bpo' belongs to algorithm 'bpo'"),
    (["train", "fpo", "--env", "Pendulum-v1", "--set", "fpo_loss=l1"], "fpo_loss='l1' is not allowed; allowed values: 'eps_mse', 'u_mse'"),
    (["train", "dppo", "--env", "Pendulum-v1", "--set", "finetune_steps=50"], "finetune_steps must be None (all) or an integer in [1, diffusion_steps=10]"),
    (["train", "pqn", "--set", "normalize_reward=true"], "normalize_reward=True is not used by pqn"),
    (["train", "--set", "env_backend=mjx"], "applies to brax envs only"),
    # devices and the cluster
    (["train", "--seeds", "2", "--seed-devices", "2"], "seed_devices=2 needs at least 2 devices (one per seed group), but only 1 is available"),
    (["train", "--set", "devices=2"], "devices=2 needs 2 devices, but only 1 are available"),
    (["train", "--distributed"], "--distributed found no cluster environment"),
    # the output directory
    (["train", "--out", ""], "out_dir must be a directory path"),
    (["train", "--compile-cache", "/dev/null/cache"], "--compile-cache /dev/null/cache: cannot write there"),
]


@pytest.mark.parametrize("argv, needle", CLI_CASES, ids=[" ".join(a)[:60] for a, _ in CLI_CASES])
def test_cli_refuses_bad_input_in_one_line(argv, needle, capsys, no_compile, monkeypatch):
    for var in cli._CLUSTER_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert err.startswith("prpo: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert needle in err, err


def test_cli_refuses_an_out_dir_that_is_a_file_or_holds_a_finished_run(tmp_path, capsys, no_compile):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    finished = tmp_path / "run"
    finished.mkdir()
    (finished / "summary.json").write_text("{}")
    for out, needle in ((a_file, "exists and is not a directory"), (finished, "already holds a finished run")):
        with pytest.raises(SystemExit) as exc:
            cli.main(["train", "--out", str(out)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert (finished / "summary.json").read_text() == "{}"  # nothing replaced


TINY = dict(num_envs=4, num_steps=8, total_timesteps=64, num_minibatches=2)


def _cfg():
    return preset("ppo-cartpole", **TINY)


API_CASES = [
    ("make_train(name)", lambda: make_train("ppo-cartpole"), "use prpo.preset('ppo-cartpole')"),
    ("run_experiment(name)", lambda: run_experiment("ppo-cartpole"), "use prpo.preset('ppo-cartpole')"),
    ("make_train(dict)", lambda: make_train({"lr": 1e-3}), "make_train needs a prpo.Config"),
    ("actor_hidden=64", lambda: Config(actor_hidden=64), "one layer: (64,)"),
    ("actor_hidden=(64.5,)", lambda: Config(actor_hidden=(64.5,)), "actor_hidden must be a non-empty tuple"),
    ("num_envs=8.0", lambda: Config(num_envs=8.0), "num_envs must be an integer, got 8.0"),
    ("clip_value='false'", lambda: Config(clip_value="false"), "clip_value must be True or False"),
    ("obs_clip='10'", lambda: Config(obs_clip="10"), "obs_clip must be a number"),
    ("lr=None", lambda: preset("ppo-cartpole", lr=None), "hyperparameter lr must be a number, got None"),
    ("gamma=True", lambda: preset("ppo-cartpole", gamma=True), "hyperparameter gamma must be a number, got True"),
    ("lr=[..]", lambda: preset("ppo-cartpole", lr=[1e-3, 1e-4]), "to sweep several values use grid={'lr': [...]}"),
    ("lr='abc'", lambda: Config(hp=Hyperparams(lr="abc")), "hyperparameter lr must be a number, got 'abc'"),
    ("hp=dict", lambda: Config(hp={"lr": 1e-3}), "hp must be a prpo.Hyperparams"),
    ("grid={'lr': 1e-3}", lambda: run_experiment(_cfg(), grid={"lr": 1e-3}), "grid option 'lr' must be a list of numbers"),
    ("grid={'lr': 'abc'}", lambda: run_experiment(_cfg(), grid={"lr": "abc"}), "grid option 'lr' must be a list of numbers"),
    ("grid={'lr': [None]}", lambda: run_experiment(_cfg(), grid={"lr": [None]}), "None is not a number"),
    ("grid=[..]", lambda: run_experiment(_cfg(), grid=[("lr", [1e-3])]), "grid must be a dict"),
    ("grid_hyperparams(None)", lambda: grid_hyperparams(None, {"lr": [1e-3]}), "needs a prpo.Hyperparams as its base"),
    ("chunks=0", lambda: run_experiment(_cfg(), chunks=0), "chunks must be a positive integer"),
    ("chunks=-1", lambda: run_experiment(_cfg(), chunks=-1), "chunks must be a positive integer"),
    ("seed=2**70", lambda: run_experiment(_cfg(), seed=2**70), "seed must be an integer in [0, 4294967295]"),
    ("seeds=0", lambda: run_experiment(_cfg(), seeds=0), "seeds must be a positive integer"),
    ("seed_index=5", lambda: run_experiment(_cfg(), seeds=2, seed_index=5), "seed_index must be an integer in [0, seeds − 1 = 1]"),
    ("out_dir=123", lambda: run_experiment(_cfg(), out_dir=123), "out_dir must be a directory path"),
    ("algorithms.get(None)", lambda: algorithms.get(None), "unknown algorithm None"),
    ("config(algo=)", lambda: algorithms.get("ppo").config("CartPole-v1", algo="pqn"), "algo is fixed by the algorithm ('ppo')"),
    ("config(env=obj)", lambda: algorithms.get("ppo").config(object()), "env must be an env name"),
    ("surrogate=123", lambda: make_train(_cfg(), surrogate=123), "surrogate must be a function"),
    ("env=42", lambda: make_train(_cfg(), env=42), "missing 'spec'"),
    ("preset('nope')", lambda: preset("nope"), "preset='nope' is not known"),
    ("objective='nope'", lambda: Config(objective="nope"), "objective='nope' is not allowed"),
    ("unknown option", lambda: apply_overrides(Config(), {"learning_rate": 1}), "unknown option 'learning_rate'"),
    ("unknown hyperparameter", lambda: Hyperparams().replace(nope=1.0), "unknown hyperparameter 'nope'"),
    ("owned elsewhere", lambda: algorithms.get("ppo").config("CartPole-v1", eps_start=0.5), "belongs to algorithm 'pqn'"),
]


@pytest.mark.parametrize("call, needle", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_python_api_refuses_bad_input(call, needle, no_compile):
    with pytest.raises(ConfigError) as exc:
        call()
    assert needle in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


def test_register_takes_an_algorithm():
    with pytest.raises(TypeError, match="register\\(\\) takes a prpo.algorithm.Algorithm"):
        algorithms.register(object())


def test_what_should_be_accepted_is():
    """NumPy integers where ints are wanted, lists of widths, devices='all' as with --devices."""
    cfg = Config(num_envs=np.int64(8), actor_hidden=[32, 32], num_steps=np.int32(16))
    assert cfg.num_envs == 8 and type(cfg.num_envs) is int and cfg.actor_hidden == (32, 32)
    hash(cfg)  # still hashable (a static argument of jit)
    cfg, _ = cli.config_from_args(cli.build_parser().parse_args(["train", "--set", "devices=all"]))
    import jax

    assert cfg.devices == jax.device_count()
    cfg, _ = cli.config_from_args(cli.build_parser().parse_args(["train", "--total-steps", "1e5"]))
    assert cfg.total_timesteps == 100_000


def test_a_total_that_is_not_a_multiple_of_the_batch_is_said_once(tmp_path, capsys):
    """Rounded down to whole updates, said once on stderr and in the summary."""
    cfg = preset("ppo-cartpole", num_envs=4, num_steps=8, total_timesteps=100, num_minibatches=2, update_epochs=1)
    result = run_experiment(cfg, progress=False, out_dir=tmp_path / "run")
    err = capsys.readouterr().err
    assert err.count("prpo: note: total_timesteps=100 is not a multiple of num_envs × num_steps = 32") == 1, err
    assert "training 3 updates = 96 env steps per seed" in result.summary["note"]
    assert result.summary["env_steps"] == 96
    import json

    assert json.loads((tmp_path / "run" / "summary.json").read_text())["note"] == result.summary["note"]


@pytest.mark.parametrize("script, args, message", [
    ("dppo_step_ratios", ["--set", "lr"], "--set expects KEY=VALUE, got 'lr'"),
    ("dppo_step_ratios", ["--total-steps", "abc"], "--total-steps: 'abc' is not a number"),
    ("dppo_step_ratios", ["--merge", "missing"], "--merge missing: no readable step_ratios.json"),
    ("multimodal", ["--budgets", "abc"], "--budgets takes comma-separated numbers of env steps, got 'abc'"),
    ("multimodal", ["--algos", "nope"], "unknown algorithm 'nope'"),
    ("pqn_minatar", ["--set", "lr"], "--set expects KEY=VALUE, got 'lr'"),
    ("pqn_minatar", ["--seeds", "0", "--games", "Breakout-MinAtar"], "seeds must be a positive integer, got 0"),
])
def test_experiment_scripts_refuse_bad_input_in_one_line(script, args, message, tmp_path, capsys, monkeypatch):
    """The study scripts of experiments/: bad input exits 2 with one line naming it, before
    anything trains or writes (it used to end in a ValueError / ConfigError traceback)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        load_experiment(script).main([*args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()
