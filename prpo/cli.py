"""Command line: ``python -m prpo train ...``, ``python -m prpo eval DIR``, ``python -m prpo report DIR ...`` and
``python -m prpo list``.

Every option is validated before anything compiles; a bad one prints a single
``prpo: error: ...`` line naming the option and what is allowed, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from prpo import algorithms, registry
from prpo.config import PRESETS, ConfigError, apply_overrides, option_names
from prpo.experiment import MAX_SEED, ON_NONFINITE, check_grid, check_seed, check_seed_index, check_seeds

__all__ = ["main", "build_parser"]

_EPILOG = """\
examples:
  python -m prpo train                                   # PPO on CartPole-v1, 1 seed
  python -m prpo train ppo --env CartPole-v1 --seeds 8 --out runs/cartpole
  python -m prpo train ppo --env Pendulum-v1 --set lr=3e-4 --set normalize_obs=true
  python -m prpo train ppo --env ant --set env_backend=positional --num-envs 2048
  python -m prpo train ppo --grid lr=1e-4,3e-4,1e-3 --seeds 4   # 3 settings x 4 seeds, one compile
  python -m prpo train ppo --num-envs 65536 --set num_steps=16 --devices all   # envs split over every device
  python -m prpo train ppo --out runs/cp --checkpoint-every 100   # checkpoints; Ctrl-C saves and stops
  python -m prpo train --resume runs/cp                  # continue a stopped run to its budget
  python -m prpo eval runs/cp --episodes 20 --video cp.gif
  python -m prpo report runs/ppo runs/a2c --out reports/cp --compare runs/ppo runs/a2c   # curves, IQM/CI table
  python -m prpo list

--set KEY=VALUE accepts every static option and hyperparameter (see `python -m prpo list`).
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``prpo: error: ...``, exit 2) and no prefix matching, so a
    typo such as ``--num-env`` is an error instead of an abbreviation of ``--num-envs``."""

    def __init__(self, *args, **kw):
        kw.setdefault("allow_abbrev", False)
        super().__init__(*args, **kw)

    def error(self, message):
        prog = self.prog if self.prog != "python -m prpo" else "python -m prpo train"  # a subcommand's own help
        self.exit(2, f"prpo: error: {message} (see `{prog} --help`)\n")


def _count(flag: str):
    """argparse type: a positive integer, also written as a float (``1e6``); nan / inf / 1.5 refused."""

    def parse(text: str) -> int:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive integer (e.g. 100000 or 1e5), got {text!r}") from None
        if not math.isfinite(value) or value != int(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive integer (e.g. 100000 or 1e5), got {text!r}")
        return int(value)

    parse.__name__ = flag
    return parse


class _DefaultStr(str):
    """A default argparse shows as itself, told apart from the same value typed (--resume refuses typed ones)."""


class _DefaultInt(int):
    """See :class:`_DefaultStr`."""


def _given(value):
    """The value if the user typed it, else None."""
    return None if isinstance(value, (_DefaultStr, _DefaultInt)) else value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m prpo",
        description="prpo: functional, jit-compiled policy optimisation in JAX.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,eval,report,list}")
    tr = sub.add_parser(
        "train",
        allow_abbrev=False,
        help="train an algorithm on an environment",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train ALGO on ENV: all seeds (and --grid settings) vmapped in one compile. "
        "Writes DIR/summary.json and DIR/metrics.jsonl when --out is given.",
    )
    tr.add_argument("algo", nargs="?", default=_DefaultStr("ppo"), help=f"algorithm, one of: {', '.join(algorithms.names())}")
    tr.add_argument("--env", default=_DefaultStr("CartPole-v1"), help="environment name (gymnax or brax; see `python -m prpo list`)")
    tr.add_argument("--preset", default=None, help="named preset (default: picked from the env family); one of: " + ", ".join(PRESETS))
    tr.add_argument("--seeds", type=_int, default=_DefaultInt(1), help="number of seeds trained in parallel (vmapped)")
    tr.add_argument("--seed", type=_int, default=_DefaultInt(0), help=f"base random seed, an integer in [0, {MAX_SEED}]")
    tr.add_argument("--seed-index", type=_int, default=None, metavar="K",
                    help="train only seed K of the --seeds batch (its key is the K-th of the batch's keys)")
    tr.add_argument("--num-envs", type=_int, default=None, help="parallel environments per seed (default: the preset's)")
    tr.add_argument("--total-steps", type=_count("--total-steps"), default=None,
                    help="environment steps per seed, e.g. 1e6 (default: the preset's)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an option or hyperparameter (repeatable)")
    tr.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", help="sweep a hyperparameter over values (repeatable; cartesian product)")
    tr.add_argument("--devices", default=None, metavar="N|all",
                    help="split each run's envs over N devices (data parallel; 'all': every device); default 1")
    tr.add_argument("--seed-devices", type=_int, default=_DefaultInt(1), metavar="M",
                    help="lay the seeds over M device groups (a second mesh axis; uses devices × M devices)")
    tr.add_argument("--distributed", action="store_true",
                    help="multi-host: call jax.distributed.initialize first (arguments from SLURM/MPI/TPU env)")
    tr.add_argument("--out", default=None, metavar="DIR",
                    help="the run directory: run.json, metrics.jsonl (after every chunk), checkpoints/, summary.json")
    tr.add_argument("--checkpoint-every", type=_int, default=None, metavar="N",
                    help="also checkpoint every N updates (on chunk ends); a final checkpoint is always written with --out")
    tr.add_argument("--keep", type=_int, default=None, metavar="K", help="keep the last K checkpoints (default 3)")
    tr.add_argument("--resume", default=None, metavar="DIR",
                    help="continue the run in DIR from its last checkpoint (--total-steps may extend it)")
    tr.add_argument("--overwrite", action="store_true", help="replace the run already in --out DIR (its files are removed)")
    tr.add_argument("--logger", default=None, metavar="NAMES",
                    help="metric sinks, comma-separated: jsonl (always written), tensorboard, wandb")
    tr.add_argument("--on-nonfinite", default=ON_NONFINITE[0], choices=ON_NONFINITE,
                    help="after an update with a non-finite loss (never applied: the parameters are kept): stop the "
                         "run, or skip it and train on (one diverging seed does not end the others)")
    tr.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    tr.add_argument("--compile-cache", default=None, metavar="DIR",
                    help="keep the compiled programs in DIR (JAX's persistent compilation cache): a later run with the "
                         "same settings, JAX version and device loads them instead of compiling")
    ev = sub.add_parser(
        "eval", allow_abbrev=False, help="evaluate (and render) a trained run from its directory",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Play full episodes with every seed of DIR's latest checkpoint (mode action, normaliser frozen as "
        "trained); print and append the result to DIR/eval.json.",
    )
    ev.add_argument("dir", metavar="DIR", help="a run directory written by `train --out DIR`")
    ev.add_argument("--episodes", type=_int, default=10, help="full episodes per seed")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode")
    ev.add_argument("--seed", type=_int, default=0, help="seed of the evaluation episodes")
    ev.add_argument("--video", default=None, metavar="FILE", help="render one episode of the first seed to FILE (.gif or .mp4)")
    ev.add_argument("--step", type=_int, default=None, metavar="K", help="evaluate checkpoint K instead of the latest")
    rp = sub.add_parser(
        "report", allow_abbrev=False, help="learning curves and an IQM / confidence-interval table of finished runs",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Read finished run directories (each --grid setting is its own run) and write OUT/report.png "
        "(learning curves: mean over seeds and a 95% interval; final IQM with its interval), OUT/report.md (mean, "
        "median and IQM of the seeds' final returns with 95% stratified-bootstrap confidence intervals, from "
        "rliable) and OUT/report.json. Needs pip install \"prpo[report]\".",
    )
    rp.add_argument("dirs", nargs="+", metavar="DIR", help="run directories written by `train --out DIR`")
    rp.add_argument("--out", required=True, metavar="OUT",
                    help="the report directory (a report of other runs in it is refused without --overwrite)")
    rp.add_argument("--compare", nargs=2, action="append", default=[], metavar=("A", "B"),
                    help="also report the probability of improvement P(A > B); A, B: a run directory or a run's "
                    "label as the table names it (repeatable)")
    rp.add_argument("--reps", type=_int, default=2000, help="bootstrap resamples per confidence interval")
    rp.add_argument("--seed", type=_int, default=0, help="seed of the bootstrap resamples")
    rp.add_argument("--overwrite", action="store_true", help="replace a report of other runs in OUT")
    sub.add_parser("list", help="list algorithms, presets, environments and options", allow_abbrev=False)
    return parser


def parse_kv(items, flag) -> dict[str, str]:
    """``KEY=VALUE`` strings (repeatable flags such as ``--set``) as a dict; a malformed or repeated
    one is a ConfigError naming ``flag`` (the one parser of these flags: CLI and experiment scripts)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if k in out:
            raise ConfigError(f"{flag} {k}=... is given twice ({k}={out[k]!r} and {k}={v.strip()!r}); give it once")
        out[k] = v.strip()
    return out


#: flags that set a config option, and the option: giving both is refused
_FLAG_OPTIONS = {"num_envs": "--num-envs", "total_timesteps": "--total-steps", "devices": "--devices"}


def config_from_args(args):
    """Build and validate the Config and the grid (no compilation). With ``--resume DIR`` the
    config is DIR's with the given overrides (``run_experiment`` refuses the disallowed ones)."""
    overrides = {}
    if args.num_envs is not None:
        overrides["num_envs"] = args.num_envs
    if args.total_steps is not None:
        overrides["total_timesteps"] = args.total_steps
    if args.devices is not None:
        overrides["devices"] = args.devices
    sets = parse_kv(args.set, "--set")
    for key, flag in _FLAG_OPTIONS.items():
        if key in sets and key in overrides:
            raise ConfigError(f"{key} is given twice: {flag} {overrides[key]} and --set {key}={sets[key]}; give it once")
    for key in ("algo", "env"):
        if key in sets:
            raise ConfigError(f"set {key} with {'the positional ALGO argument' if key == 'algo' else '--env'}, not --set {key}=...")
    overrides.update(sets)
    if args.resume is not None:
        return _resume_config(args, overrides), None
    algo = algorithms.get(str(args.algo))
    cfg = algo.config(str(args.env), args.preset, **overrides)
    grid = {}
    for k, v in parse_kv(args.grid, "--grid").items():
        try:
            grid[k] = [float(x) for x in v.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--grid {k}={v!r}: expected comma-separated numbers") from None
        if k in sets:
            raise ConfigError(f"{k} is both set (--set {k}={sets[k]}) and swept (--grid {k}={v}); give one")
    check_grid(cfg.hp, grid)
    seeds, seed_devices = int(args.seeds), int(args.seed_devices)
    check_seeds(seeds, seed_devices, names=("--seeds", "--seed-devices"))
    check_seed(int(args.seed), "--seed")
    if args.seed_index is not None:
        check_seed_index(args.seed_index, seeds, names=("--seed-index", "--seeds"))
    _check_run_dir_flags(args, cfg)
    if seed_devices > 1 or cfg.devices > 1:  # enough devices? (before any compile)
        from prpo.parallel import make_mesh

        make_mesh(cfg.devices, seed_devices)
    return cfg, grid


def _check_run_dir_flags(args, cfg) -> None:
    """The run-directory flags, with the flags' names in the messages (the directory itself is
    checked by ``run_experiment``, before it compiles)."""
    from prpo import loggers
    from prpo.experiment import check_run_options

    names = loggers.check_loggers([n.strip() for n in args.logger.split(",")]) if args.logger else ("jsonl",)
    check_run_options(args.checkpoint_every, args.keep, args.out if args.resume is None else args.resume, cfg, names,
                      args.overwrite, names=("--checkpoint-every", "--keep", "--out", "--overwrite"))


def _resume_config(args, overrides):
    """``--resume DIR``: DIR's config with ``overrides``; flags that would start another run refused."""
    from prpo import checkpoint as ck

    for flag, value in (("--preset", args.preset), ("--grid", args.grid or None), ("--seed-index", args.seed_index)):
        if value is not None:
            raise ConfigError(f"{flag} does not apply to --resume (a resumed run keeps its own); leave it out")
    if args.overwrite:
        raise ConfigError("--resume continues the run in DIR; --overwrite would remove it: give one")
    if args.out is not None:
        raise ConfigError("--resume continues the run in its own directory; leave out --out")
    record = ck.read_run(args.resume)
    saved = ck.config_from_dict(record["config"])
    for flag, given, value in (("ALGO", _given(args.algo), saved.algo), ("--env", _given(args.env), saved.env)):
        if given is not None and given != value:
            raise ck.CheckpointError(f"{args.resume!r} holds a {saved.algo} run on {saved.env}; {flag} {given} differs "
                                     "(leave it out to resume)")
    for flag, given, value in (("--seeds", _given(args.seeds), record["seeds"]), ("--seed", _given(args.seed), record["seed"])):
        if given is not None and given != value:
            raise ck.CheckpointError(f"{args.resume!r} was trained with {flag} {value}; {flag} {given} differs "
                                     "(leave it out to resume)")
    cfg = ck.resume_config(saved, apply_overrides(saved, overrides), repr(args.resume))
    _check_run_dir_flags(args, cfg)
    seed_devices = _given(args.seed_devices) or record["seed_devices"]
    if seed_devices > 1 or cfg.devices > 1:
        from prpo.parallel import make_mesh

        make_mesh(cfg.devices, seed_devices)
    return cfg


def _cmd_list() -> int:
    from prpo import envs

    print("algorithms:")
    for name in algorithms.names():
        print(f"  {name:12s} {algorithms.get(name).description}")
    print("presets:")
    for name, fn in PRESETS.items():
        doc = (fn.__doc__ or "").strip().splitlines()[0]
        print(f"  {name:30s} {doc}")
    print("objectives (--set objective=NAME):")
    print("  " + ", ".join(registry.SURROGATES))
    print("policy families (--set policy=NAME):")
    print("  auto (categorical / Gaussian actor-critic), " + ", ".join(registry.POLICIES))
    print("environments:")
    for family, names in envs.list_envs().items():
        print(f"  {family}: {', '.join(names)}")
    print("options (--set KEY=VALUE; hyperparameters also --grid KEY=V1,V2):")
    for name, kind in option_names().items():
        print(f"  {name:22s} {kind}")
    return 0


#: environment variables by which a cluster launcher tells jax.distributed.initialize where it runs
_CLUSTER_VARS = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID",
                 "MEGASCALE_COORDINATOR_ADDRESS")


def _initialize_distributed() -> None:
    """``--distributed``: join the cluster the launcher describes, or say what is missing."""
    import os

    if not any(v in os.environ for v in _CLUSTER_VARS):
        raise ConfigError(
            "--distributed found no cluster environment (none of " + ", ".join(_CLUSTER_VARS) + " is set); launch "
            "every process with `srun python -m prpo train --distributed ...` (SLURM), `mpirun -n N python -m prpo "
            "train --distributed ...` (Open MPI) or on every TPU-pod worker, or call prpo.initialize_distributed("
            "coordinator_address, num_processes, process_id) from Python (docs/scaling.md)"
        )
    from prpo.parallel import initialize_distributed

    try:
        initialize_distributed()
    except Exception as e:  # the launcher's environment is incomplete or the coordinator unreachable
        raise ConfigError(f"--distributed: jax.distributed.initialize failed: {str(e).splitlines()[0] if str(e) else e!r}") from None


def _cmd_eval(parser, args) -> int:
    from prpo import checkpoint as ck
    from prpo.evaluation import check_eval_args, evaluate_run

    try:
        check_eval_args(args.episodes, args.seed, names=("--episodes", "--seed"))
        report = evaluate_run(args.dir, episodes=args.episodes, deterministic=not args.stochastic, seed=args.seed,
                              video=args.video, step=args.step)
    except ConfigError as e:
        parser.exit(2, f"prpo: error: {e}\n")
    except ck.OutputError as e:
        parser.exit(1, f"prpo: error: {e}\n")
    keys = ("update", "episodes", "deterministic", "mean", "std", "per_seed")
    print(json.dumps({k: report[k] for k in keys}))
    print(f"appended to {args.dir}/eval.json" + (f"; wrote {args.video} ({report['video']['frames']} frames)"
                                                 if args.video else ""))
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `python -m prpo` alone
        parser.print_help()
        return 0
    if args.command == "list":
        return _cmd_list()
    try:
        if args.command == "eval":
            return _cmd_eval(parser, args)
        if args.command == "report":
            return _cmd_report(parser, args)
        return _cmd_train(parser, args)
    except KeyboardInterrupt:  # a second Ctrl-C, or one while compiling: stop at once, one line
        where = (getattr(args, "out", None) or getattr(args, "resume", None)) if args.command == "train" else None
        saved = f"; what {where} held before stays (resume with --resume {where})" if where else ""
        parser.exit(130, f"\nprpo: interrupted{saved}\n")


def _cmd_report(parser, args) -> int:
    from prpo import checkpoint as ck
    from prpo.report import make_report

    try:
        report = make_report(args.dirs, args.out, compare=args.compare, reps=args.reps, seed=args.seed,
                             overwrite=args.overwrite)
    except ConfigError as e:
        parser.exit(2, f"prpo: error: {e}\n")
    except ck.OutputError as e:
        parser.exit(1, f"prpo: error: {e}\n")
    for r in report["runs"]:
        ci = r["iqm_ci"]
        print(f"{r['label']}: {r['seeds']} seeds, final return IQM {r['iqm']:.4g}"
              + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "") if r["iqm"] is not None else f"{r['label']}: no score")
    for c in report["comparisons"]:
        print(f"P({c['x']} > {c['y']}) = {c['probability_of_improvement']:.3f}"
              + (f" [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]" if c["ci"] else ""))
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"wrote {os.path.join(args.out, 'report.png')}, report.md, report.json")
    return 0


def _use_compile_cache(parser, path: str) -> None:
    """JAX's persistent compilation cache in ``path``, for every program of this process (set
    before anything compiles; programs of any compile time are kept, prpo's CPU ones take < 1 s)."""
    import jax

    from prpo import checkpoint as ck

    reason = ck.writable_dir_error(path)
    if reason is not None:
        parser.exit(2, f"prpo: error: --compile-cache {path}: cannot write there ({reason}); give a writable folder\n")
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _cmd_train(parser, args) -> int:
    from prpo import checkpoint as ck
    from prpo.experiment import RunInterrupted, run_experiment
    from prpo.train import NonFiniteLossError

    if args.compile_cache is not None:
        _use_compile_cache(parser, args.compile_cache)
    try:
        if getattr(args, "distributed", False):
            _initialize_distributed()
        cfg, grid = config_from_args(args)
    except ConfigError as e:
        parser.exit(2, f"prpo: error: {e}\n")
    loggers = [n.strip() for n in args.logger.split(",")] if args.logger else None
    try:
        resumed = args.resume is not None  # a resumed run takes its seeds from its directory
        result = run_experiment(
            cfg, seeds=None if resumed else int(args.seeds), seed=None if resumed else int(args.seed), grid=grid,
            out_dir=args.out, progress=not args.no_progress,
            seed_devices=_given(args.seed_devices) if resumed else int(args.seed_devices), seed_index=args.seed_index,
            resume=args.resume, overwrite=args.overwrite,
            checkpoint_every=args.checkpoint_every, keep=args.keep, loggers=loggers, on_nonfinite=args.on_nonfinite,
        )
    except ConfigError as e:
        parser.exit(2, f"prpo: error: {e}\n")
    except NonFiniteLossError as e:
        parser.exit(1, f"prpo: error: {e}\n")
    except ck.OutputError as e:  # a full disk: one line, and no tracebacks from orbax's writer threads at exit
        sys.stdout.flush()
        sys.stderr.write(f"prpo: error: {e}\n")
        sys.stderr.flush()
        os._exit(1)
    except RunInterrupted as e:
        parser.exit(128 + e.signal, f"prpo: {e}\n")
    s = result.summary
    keys = ("algo", "env", "seeds", "env_steps", "final_return_mean", "final_return_std", "steps_per_s", "compile_s", "wall_s")
    if "final_eval_return_mean" in s:
        keys = keys[:6] + ("final_eval_return_mean",) + keys[6:]
    if any(n for row in s["nonfinite_updates"] for n in (row if isinstance(row, list) else [row])):
        keys = keys[:-3] + ("nonfinite_updates",) + keys[-3:]
    print(json.dumps({k: s[k] for k in keys}, indent=None))
    out = args.out or args.resume
    if out:
        print(f"wrote {out}: summary.json, metrics.jsonl, run.json, checkpoints/ (evaluate: python -m prpo eval {out})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
