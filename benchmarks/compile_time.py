"""Compile time split by phase: where the seconds of a case's compile go.

For each case of ``throughput.py`` (same settings, same ``case_config``) it times, each phase
with ``time.perf_counter`` after ``jax.clear_caches()`` so that no trace or executable is reused:

* ``make_train``: the Python set-up (config checks, env and network construction), its first
  call in the process (which imports the env modules, e.g. gymnax) and a second one;
* ``train``: ``jax.jit(train).lower(key, hp)`` (trace + lower to StableHLO) and ``.compile()``
  (XLA) of the whole run, as ``throughput.py`` measures it;
* ``cli``: what ``python -m prpo train`` compiles (``prpo.experiment.run_experiment``): the init
  and one runner for the chunks of ``_chunk_plan(num_updates, 20, eval_every, None)`` (of the
  longest chunk, told how many updates to run when the lengths differ),
  unvmapped for one seed and one setting (``_over_runs(..., single=True)``);
* ``vmap2``: the largest of those runners vmapped over a 2-seed batch (the cost of ``vmap``);
* ``update``: one ``update(state, hp)`` alone;
* ``eval``: with ``eval_every`` > 0, one greedy evaluation of ``eval_envs`` envs alone
  (``prpo.train.evaluate``: the ``_episodes`` scan that ``run`` calls every ``eval_every`` updates);
* HLO size of the whole ``train``: lines of ``lowered.as_text()`` and counts of
  ``stablehlo.while`` / ``case`` / ``custom_call`` / ``dot_general`` (and lines of XLA's
  optimised HLO).

Every repeat of a case runs in a fresh Python process (XLA keeps some per-process state, e.g.
GPU autotuning results, that ``jax.clear_caches()`` does not drop); the table gives the minimum
over ``--repeats`` per phase. With ``--purejaxrl DIR`` PureJaxRL's ``ppo.py`` ``make_train``,
lower and compile are timed too, for the CartPole PPO cases (set-up as in ``throughput.py``).

    python benchmarks/compile_time.py                                   # default cases
    python benchmarks/compile_time.py --cases cartpole-4,pqn-cartpole-32 --purejaxrl DIR --out compile.json
    python benchmarks/compile_time.py --cases pqn-cartpole-32 --variant '' --variant eval_every=0
    python benchmarks/compile_time.py --quick --repeats 1               # CPU smoke run
    python benchmarks/compile_time.py --cases cartpole-65536 --phases train,update   # fewer phases, less time

The JSON (``--out``) has every repeat, wall and process-CPU seconds of each phase, the chunk
sizes and per-runner times of the CLI phase, the load average (a shared CPU slows compiles), the
config, device kind, JAX version and date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402  (CASES, case_config, the PureJaxRL set-up pieces)

DEFAULT_CASES = ("cartpole-4", "pqn-cartpole-32", "cartpole-65536")
HLO_OPS = ("stablehlo.while", "stablehlo.case", "stablehlo.custom_call", "stablehlo.dot_general")
#: (key, table heading) of the timed phases; each has "<key>_lower_s" and "<key>_compile_s" but make_train
PHASES = (("train", "train (whole)"), ("cli_init", "CLI init"), ("cli_runner", "CLI runner(s)"),
          ("vmap2", "runner vmap 2 seeds"), ("update", "update alone"), ("eval", "eval alone"))
ALL_PHASES = ("train", "cli", "vmap2", "update", "eval")


def _no_persistent_cache():
    import jax

    for name, value in (("jax_enable_compilation_cache", False), ("jax_compilation_cache_dir", None)):
        try:
            jax.config.update(name, value)
        except (AttributeError, KeyError, ValueError, TypeError):  # pragma: no cover - option absent in this JAX
            pass


def _warm_up():
    """Initialise the backend and XLA's compiler once, so the first timed phase does not pay it."""
    import jax
    import jax.numpy as jnp

    jax.jit(lambda x: jnp.sin(x) @ x).lower(jnp.ones((4, 4))).compile()
    jax.block_until_ready(jnp.zeros(1) + 1)


def _timed(fn):
    """(fn(), wall seconds, process CPU seconds) with JAX's caches cleared first."""
    import jax

    jax.clear_caches()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def _lower_compile(r: dict, key: str, fn, *args):
    """(lowered, compiled) of ``jax.jit(fn)`` at ``args``; into ``r``: ``<key>_lower_s``,
    ``<key>_compile_s`` (wall) and ``<key>_lower_cpu_s``, ``<key>_compile_cpu_s`` (this process's
    CPU time: less sensitive than the wall time to other processes on a shared CPU, but it adds
    up the threads of a parallel compile)."""
    import jax

    lowered, r[f"{key}_lower_s"], r[f"{key}_lower_cpu_s"] = _timed(lambda: jax.jit(fn).lower(*args))
    t0, c0 = time.perf_counter(), time.process_time()
    compiled = lowered.compile()
    r[f"{key}_compile_s"], r[f"{key}_compile_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    return lowered, compiled


def hlo_stats(lowered, compiled=None) -> dict:
    """Lines of the StableHLO text and counts of a few ops (and lines of XLA's optimised HLO)."""
    text = lowered.as_text()
    out = {"hlo_lines": text.count("\n") + 1}
    for op in HLO_OPS:
        out[op.split(".", 1)[1]] = len(re.findall(re.escape(op) + r"\b", text))
    if compiled is not None:
        try:
            opt = compiled.as_text()
            out["optimized_hlo_lines"] = None if opt is None else opt.count("\n") + 1
        except Exception:  # pragma: no cover - some backends give no text
            out["optimized_hlo_lines"] = None
    return out


def measure_case(name: str, args) -> dict:
    """One repeat of every phase of case ``name`` in this process."""
    import jax
    import jax.numpy as jnp

    from prpo.experiment import _chunk_plan, _over_runs, grid_hyperparams, seed_keys
    from prpo.train import evaluate, make_train

    _no_persistent_cache()
    _warm_up()
    cfg, seeds, setting = throughput.case_config(name, args)
    r = {"case": name, "setting": setting, "seeds": seeds, "num_envs": cfg.num_envs, "num_steps": cfg.num_steps,
         "num_updates": cfg.num_updates, "eval_every": cfg.eval_every, "eval_envs": cfg.eval_envs}

    # 1. Python set-up: the first call in the process (with the env modules it imports lazily,
    # e.g. gymnax) and a second one (set-up alone)
    _, r["make_train_first_s"], _ = _timed(lambda: make_train(cfg))
    trainer, r["make_train_s"], _ = _timed(lambda: make_train(cfg))
    phases = set(args.phases.split(","))

    # 2. the whole train, as throughput.py compiles it
    if seeds == 1:
        fn, keys = trainer.train, jax.random.key(0)
    else:
        fn, keys = jax.vmap(trainer.train, in_axes=(0, None)), jax.random.split(jax.random.key(0), seeds)
    if "train" in phases:
        lowered, compiled = _lower_compile(r, "train", fn, keys, cfg.hp)
        r["hlo"] = hlo_stats(lowered, compiled)
        del lowered, compiled

    # 3. what `python -m prpo train` compiles (run_experiment: one setting, `seeds` seeds)
    hps, _ = grid_hyperparams(cfg.hp, None)
    sizes = sorted(set(_chunk_plan(cfg.num_updates, 20, cfg.eval_every, None)))
    r["cli_chunk_sizes"] = sizes

    def cli(n_seeds):
        single = n_seeds == 1
        run_keys = seed_keys(0, n_seeds)
        init = _over_runs(trainer.init, False, single, {})
        state = jax.eval_shape(init, run_keys, hps)
        return init, run_keys, state, single

    if "cli" in phases:
        init, run_keys, state, single = cli(seeds)
        _lower_compile(r, "cli_init", init, run_keys, hps)
        r["cli_runner_sizes"] = {}
        n = sizes[-1]
        one = r["cli_runner_sizes"][str(n)] = {}
        if len(sizes) == 1:
            run_n = lambda s, h: trainer.run(s, h, n)  # noqa: E731
            _lower_compile(one, "runner", _over_runs(run_n, True, single, {}), state, hps)
        else:  # chunks of several lengths: run_experiment's one program of the longest, told how many to run
            run_a = lambda s, h, a: _over_runs(lambda x, hp: trainer.run(x, hp, n, a), True, single, {})(s, h)  # noqa: E731
            _lower_compile(one, "runner", run_a, state, hps, jnp.int32(n))
        for k in ("lower_s", "compile_s", "lower_cpu_s", "compile_cpu_s"):
            r[f"cli_runner_{k}"] = sum(v[f"runner_{k}"] for v in r["cli_runner_sizes"].values())

    if "vmap2" in phases:  # the largest runner over a 2-seed batch: run_experiment's vmapped program
        _, _, state2, _ = cli(2)
        run_max = lambda s, h: trainer.run(s, h, sizes[-1])  # noqa: E731
        _lower_compile(r, "vmap2", _over_runs(run_max, True, False, {}), state2, hps)

    # 4. one update alone, and one in-loop evaluation alone
    state1 = jax.eval_shape(trainer.init, jax.random.key(0), cfg.hp)
    if "update" in phases:
        _lower_compile(r, "update", trainer.update, state1, cfg.hp)
    if cfg.eval_every and "eval" in phases:
        n_eval = cfg.eval_envs or cfg.num_envs
        ev = lambda s, k: evaluate(trainer, s, k, n_eval)  # noqa: E731
        _lower_compile(r, "eval", ev, state1, jax.random.key(1))
    device = jax.devices()[0]
    r.update(device=device.device_kind, platform=device.platform, jax=jax.__version__, config=cfg.to_dict(),
             loadavg=os.getloadavg() if hasattr(os, "getloadavg") else None)  # other processes slow a CPU compile
    return r


def measure_anchor(name: str, args) -> dict:
    """One repeat of PureJaxRL's ``ppo.py`` make_train, lower and compile on case ``name``'s settings."""
    _no_persistent_cache()
    make_train, config, seeds, _ = throughput.purejaxrl_train(name, args)
    _warm_up()
    train, make_s, _ = _timed(lambda: make_train(config))
    fn, keys = throughput.purejaxrl_batched(train, seeds)
    r = {"case": name, "make_train_s": make_s}
    lowered, compiled = _lower_compile(r, "train", fn, keys)
    r["hlo"] = hlo_stats(lowered, compiled)
    r["loadavg"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return r


def _worker_cmd(name, args, anchor):
    cmd = [sys.executable, os.path.abspath(__file__), "--anchor-worker" if anchor else "--worker", name,
           "--brax-backend", args.brax_backend, "--brax-steps", str(args.brax_steps)]
    cmd += ["--purejaxrl", args.purejaxrl] if anchor else []
    cmd += ["--quick"] if args.quick else []
    cmd += ["--phases", args.phases]
    return cmd + [f"--set={kv}" for kv in args.set]


def run_repeat(name, args, anchor=False) -> dict:
    """One repeat in a fresh process (or in this one with ``--in-process``)."""
    if args.in_process:
        return measure_anchor(name, args) if anchor else measure_case(name, args)
    return throughput.run_worker(_worker_cmd(name, args, anchor), args.timeout, {"case": name})


def combine(repeats: list[dict]) -> dict:
    """The first repeat's fields with every ``*_s`` timing replaced by its minimum over the repeats."""
    ok = [r for r in repeats if "error" not in r]
    if not ok:
        return dict(repeats[0])
    out = dict(ok[0])
    for k, v in ok[0].items():
        if k.endswith("_s") and isinstance(v, (int, float)):
            out[k] = min(r[k] for r in ok)
    if "cli_runner_sizes" in out:
        out["cli_runner_sizes"] = {n: {k: min(r["cli_runner_sizes"][n][k] for r in ok) for k in v}
                                   for n, v in ok[0]["cli_runner_sizes"].items()}
    out["repeats"] = repeats
    return out


def _pair(r, key, cpu=False):
    t = "_cpu_s" if cpu else "_s"
    lo, co = r.get(f"{key}_lower{t}"), r.get(f"{key}_compile{t}")
    return "—" if lo is None else f"{lo:.2f} + {co:.2f}"


def table(rows, cpu: bool = False) -> str:
    head = ["case", "make_train s (1st / 2nd call)"] + [h for _, h in PHASES] + ["PureJaxRL ppo.py"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        label = r["case"] + (f" ({r['variant']})" if r.get("variant") else "")
        if "error" in r:
            lines.append(f"| {label} | error: {r['error']} |" + " |" * (len(head) - 2))
            continue
        cells = [label, f"{r['make_train_first_s']:.2f} / {r['make_train_s']:.2f}"]
        for key, _ in PHASES:
            cell = _pair(r, key, cpu)
            if key == "cli_runner" and "cli_runner_sizes" in r:
                cell += " (n=" + ", ".join(map(str, r["cli_chunk_sizes"])) + ")"
            cells.append(cell)
        a = r.get("purejaxrl")
        cells.append("—" if a is None else (f"error: {a['error']}" if "error" in a else
                                             f"{_pair(a, 'train', cpu)} (make_train {a['make_train_s']:.2f})"))
        lines.append("| " + " | ".join(cells) + " |")
    if not any("hlo" in r for r in rows):
        return "\n".join(lines)
    lines += ["", "| case | updates | eval_every | HLO lines | optimised HLO lines | while | case | custom_call | dot_general |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        label = r["case"] + (f" ({r['variant']})" if r.get("variant") else "")
        for who, h in (("prpo", r.get("hlo")), ("PureJaxRL", (r.get("purejaxrl") or {}).get("hlo"))):
            if h is None:
                continue
            lines.append(f"| {label}{'' if who == 'prpo' else ' — PureJaxRL'} | {r.get('num_updates', '—')} | "
                         f"{r.get('eval_every', '—') if who == 'prpo' else '—'} | {h['hlo_lines']:,} | "
                         f"{'—' if h.get('optimized_hlo_lines') is None else format(h['optimized_hlo_lines'], ',')} | "
                         f"{h['while']} | {h['case']} | {h['custom_call']} | {h['dot_general']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(DEFAULT_CASES),
                   help=f"comma-separated cases of throughput.py (default: {','.join(DEFAULT_CASES)}); "
                        "available: " + ", ".join(throughput.CASES))
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per case; the table gives the minimum (default 2)")
    p.add_argument("--quick", action="store_true", help="throughput.py's shrunken cases (a CPU smoke run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an option in every case")
    p.add_argument("--variant", action="append", default=None, metavar="KEY=VALUE[,KEY=VALUE]",
                   help="one row per case and variant (overrides on top of --set), e.g. --variant '' --variant eval_every=0")
    p.add_argument("--purejaxrl", default=None, metavar="DIR",
                   help="PureJaxRL's purejaxrl/ folder (ppo.py, wrappers.py; DIR/site: gymnax 0.0.9): time its "
                        f"make_train, lower and compile for the cases {', '.join(throughput.PUREJAXRL_CASES)}")
    p.add_argument("--brax-backend", default="positional", choices=("positional", "mjx", "generalized", "spring"))
    p.add_argument("--brax-steps", type=int, default=4_100_000)
    p.add_argument("--out", default=None, help="JSON output (everything, with device kind, JAX version and date)")
    p.add_argument("--phases", default=",".join(ALL_PHASES),
                   help=f"comma-separated phases to time (default: all): {','.join(ALL_PHASES)} "
                        "(make_train always; the HLO counts come with train)")
    p.add_argument("--cpu-time", action="store_true",
                   help="table in process CPU seconds instead of wall seconds (a shared CPU; the JSON has both)")
    p.add_argument("--in-process", action="store_true", help="all repeats in this process (GPU autotuning results carry over)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per repeat before it is killed")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--anchor-worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print("RESULT " + json.dumps(measure_case(args.worker, args)), flush=True)
        return 0
    if args.anchor_worker:
        print("RESULT " + json.dumps(measure_anchor(args.anchor_worker, args)), flush=True)
        return 0
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    bad = set(args.phases.split(",")) - set(ALL_PHASES)
    if bad:
        p.error(f"unknown phase(s) {', '.join(sorted(bad))}; available: {', '.join(ALL_PHASES)}")
    if args.purejaxrl and args.in_process:
        p.error("--purejaxrl needs fresh processes (it swaps in its own gymnax): leave out --in-process")
    if args.purejaxrl and not os.path.isfile(os.path.join(args.purejaxrl, "ppo.py")):
        p.error(f"--purejaxrl {args.purejaxrl}: no ppo.py there (give PureJaxRL's purejaxrl/ folder)")
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in throughput.CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; available: {', '.join(throughput.CASES)}")

    def log(msg):
        print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)

    rows, base_set = [], list(args.set)
    variants = args.variant or [""]
    for name in names:
        with_anchor = bool(args.purejaxrl) and name in throughput.PUREJAXRL_CASES
        anchor_reps, reps = [], {v: [] for v in variants}
        for i in range(args.repeats):  # repeats interleaved: anchor and variants see the same machine load
            if with_anchor:
                args.set = base_set
                log(f"{name} PureJaxRL, repeat {i + 1}/{args.repeats}")
                anchor_reps.append(run_repeat(name, args, anchor=True))
            for variant in variants:
                args.set = base_set + [kv for kv in variant.split(",") if kv]
                log(f"{name} {variant} repeat {i + 1}/{args.repeats}")
                reps[variant].append(run_repeat(name, args))
        args.set = base_set
        for variant in variants:
            row = combine(reps[variant])
            row["variant"] = variant
            if with_anchor:
                row["purejaxrl"] = combine(anchor_reps)
            rows.append(row)

    done = [r for r in rows if "error" not in r]
    device, jax_version = (done[0]["device"], done[0]["jax"]) if done else ("unknown", None)
    print(f"prpo compile time by phase on {device}, JAX {jax_version}; seconds, min over {args.repeats} repeat(s)"
          f"{'' if args.in_process else ', each in a fresh process'}{' (process CPU seconds)' if args.cpu_time else ''}; "
          "'lower + compile' = trace & lower to StableHLO + XLA compile"
          + (" (--quick: shrunken cases)" if args.quick else "") + "\n")
    print(table(rows, args.cpu_time))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"device": device, "jax": jax_version,
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "quick": args.quick, "repeats": args.repeats, "set": base_set, "results": rows},
                      f, indent=2, ensure_ascii=False)
        print(f"\nwrote {args.out}", file=sys.stderr)
    return 1 if len(done) < len(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
