"""Command line: ``python -m prpo train ...`` and ``python -m prpo list``.

Every option is validated before anything compiles; a bad one prints a single
``prpo: error: ...`` line naming the option and what is allowed, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from prpo import algorithms, registry
from prpo.config import PRESETS, ConfigError, option_names
from prpo.experiment import check_seeds

__all__ = ["main", "build_parser"]

_EPILOG = """\
examples:
  python -m prpo train                                   # PPO on CartPole-v1, 1 seed
  python -m prpo train ppo --env CartPole-v1 --seeds 8 --out runs/cartpole
  python -m prpo train ppo --env Pendulum-v1 --set lr=3e-4 --set normalize_obs=true
  python -m prpo train ppo --env ant --set env_backend=positional --num-envs 2048
  python -m prpo train ppo --grid lr=1e-4,3e-4,1e-3 --seeds 4   # 3 settings x 4 seeds, one compile
  python -m prpo train ppo --num-envs 65536 --set num_steps=16 --devices all   # envs split over every device
  python -m prpo list

--set KEY=VALUE accepts every static option and hyperparameter (see `python -m prpo list`).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m prpo",
        description="prpo: functional, jit-compiled policy optimisation in JAX.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,list}")
    tr = sub.add_parser(
        "train",
        help="train an algorithm on an environment",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train ALGO on ENV: all seeds (and --grid settings) vmapped in one compile. "
        "Writes DIR/summary.json and DIR/metrics.jsonl when --out is given.",
    )
    tr.add_argument("algo", nargs="?", default="ppo", help=f"algorithm, one of: {', '.join(algorithms.names())}")
    tr.add_argument("--env", default="CartPole-v1", help="environment name (gymnax or brax; see `python -m prpo list`)")
    tr.add_argument("--preset", default=None, help="named preset (default: picked from the env family); one of: " + ", ".join(PRESETS))
    tr.add_argument("--seeds", type=int, default=1, help="number of seeds trained in parallel (vmapped)")
    tr.add_argument("--seed", type=int, default=0, help="base random seed")
    tr.add_argument("--num-envs", type=int, default=None, help="parallel environments per seed (default: the preset's)")
    tr.add_argument("--total-steps", type=float, default=None, help="environment steps per seed (default: the preset's)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an option or hyperparameter (repeatable)")
    tr.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", help="sweep a hyperparameter over values (repeatable; cartesian product)")
    tr.add_argument("--devices", default=None, metavar="N|all",
                    help="split each run's envs over N devices (data parallel; 'all': every device); default 1")
    tr.add_argument("--seed-devices", type=int, default=1, metavar="M",
                    help="lay the seeds over M device groups (a second mesh axis; uses devices × M devices)")
    tr.add_argument("--distributed", action="store_true",
                    help="multi-host: call jax.distributed.initialize first (arguments from SLURM/MPI/TPU env)")
    tr.add_argument("--out", default=None, metavar="DIR", help="write summary.json and metrics.jsonl here")
    tr.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    sub.add_parser("list", help="list algorithms, presets, environments and options")
    return parser


def _kv(items, flag) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def config_from_args(args):
    """Build and validate the Config (no compilation)."""
    algo = algorithms.get(args.algo)
    overrides = {}
    if args.num_envs is not None:
        overrides["num_envs"] = args.num_envs
    if args.total_steps is not None:
        if args.total_steps != int(args.total_steps) or args.total_steps <= 0:
            raise ConfigError(f"--total-steps must be a positive integer, got {args.total_steps!r}")
        overrides["total_timesteps"] = int(args.total_steps)
    if args.devices is not None:
        from prpo.parallel import resolve_devices

        overrides["devices"] = resolve_devices(args.devices)
    overrides.update(_kv(args.set, "--set"))
    for key in ("algo", "env"):
        if key in overrides:
            raise ConfigError(f"set {key} with {'the positional ALGO argument' if key == 'algo' else '--env'}, not --set {key}=...")
    cfg = algo.config(args.env, args.preset, **overrides)
    grid = {}
    for k, v in _kv(args.grid, "--grid").items():
        try:
            grid[k] = [float(x) for x in v.split(",") if x]
        except ValueError:
            raise ConfigError(f"--grid {k}={v!r}: expected comma-separated numbers") from None
    check_seeds(args.seeds, args.seed_devices, names=("--seeds", "--seed-devices"))
    if cfg.devices > 1 or args.seed_devices > 1:  # enough devices? (before any compile)
        from prpo.parallel import make_mesh

        make_mesh(cfg.devices, args.seed_devices)
    return cfg, grid


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


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `python -m prpo` alone
        parser.print_help()
        return 0
    if args.command == "list":
        return _cmd_list()
    if getattr(args, "distributed", False):
        from prpo.parallel import initialize_distributed

        initialize_distributed()
    try:
        cfg, grid = config_from_args(args)
    except ConfigError as e:
        parser.exit(2, f"prpo: error: {e}\n")
    from prpo.experiment import run_experiment
    from prpo.train import NonFiniteLossError

    try:
        result = run_experiment(
            cfg, seeds=args.seeds, seed=args.seed, grid=grid, out_dir=args.out, progress=not args.no_progress,
            seed_devices=args.seed_devices,
        )
    except ConfigError as e:
        parser.exit(2, f"prpo: error: {e}\n")
    except NonFiniteLossError as e:
        parser.exit(1, f"prpo: error: {e}\n")
    s = result.summary
    keys = ("algo", "env", "seeds", "env_steps", "final_return_mean", "final_return_std", "steps_per_s", "compile_s", "wall_s")
    if "final_eval_return_mean" in s:
        keys = keys[:6] + ("final_eval_return_mean",) + keys[6:]
    print(json.dumps({k: s[k] for k in keys}, indent=None))
    if args.out:
        print(f"wrote {args.out}/summary.json and {args.out}/metrics.jsonl")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
