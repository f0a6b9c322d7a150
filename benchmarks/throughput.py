"""PPO throughput benchmark: env-steps/s of whole training runs, compile time, peak memory.

Every case runs in its own subprocess, so that the peak device memory is the case's own and
one case running out of memory does not stop the others. Method:
``jax.jit(train).lower(keys, hp).compile()`` is timed as the compile time, then one call of the
compiled function is timed up to ``jax.block_until_ready``. See benchmarks/README.md.

    python benchmarks/throughput.py                          # all cases, on the default device
    python benchmarks/throughput.py --cases cartpole-4,brax-ant --brax-backend mjx
    python benchmarks/throughput.py --quick                  # shrunken cases, a CPU smoke test
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import subprocess
import sys
import time

# name -> (preset, overrides, seeds, setting of the anchor run). Brax cases get env_backend
# and total_timesteps from --brax-backend / --brax-steps.
CASES = {
    "cartpole-4": ("ppo-cartpole", dict(num_envs=4, num_steps=128, total_timesteps=500_000), 1,
                   "4 envs × 128 steps, 5e5 steps, 1 seed"),
    "cartpole-2048": ("ppo-cartpole", dict(num_envs=2048, num_steps=128, total_timesteps=2048 * 128 * 40), 1,
                      "2048 envs × 128 steps, 40 updates"),
    "cartpole-65536": ("ppo-cartpole", dict(num_envs=65_536, num_steps=16, total_timesteps=65_536 * 16 * 40), 1,
                       "65,536 envs × 16 steps, 40 updates"),
    "cartpole-1m": ("ppo-cartpole", dict(num_envs=2**20, num_steps=8, num_minibatches=8, total_timesteps=2**20 * 8 * 10),
                    1, "1,048,576 envs × 8 steps, 8 minibatches, 10 updates"),
    "cartpole-256seeds": ("ppo-cartpole", dict(num_envs=4, num_steps=128, total_timesteps=500_000), 256,
                          "256 seeds vmapped × 4 envs × 128 steps, 5e5 steps each"),
    "pqn-cartpole-32": ("pqn-cartpole", dict(), 1,
                        "PQN, 32 envs × 64 steps, 5e5 steps, greedy eval every 12 updates (128 envs)"),
    "pqn-cartpole-64seeds": ("pqn-cartpole", dict(), 64, "PQN, same, 64 seeds vmapped"),
    "brax-ant": ("ppo-brax", dict(env="ant", num_envs=2048, num_steps=10), 1,
                 "2048 envs × 10 steps, 4 epochs × 32 minibatches"),
    "brax-hopper": ("ppo-brax", dict(env="hopper", num_envs=2048, num_steps=10), 1,
                    "2048 envs × 10 steps, 4 epochs × 32 minibatches"),
}

# PureJaxRL on one NVIDIA H200 (measured beside prpo in one run): (env-steps/s, compile s, source row).
_ROW = "PureJaxRL PPO, CartPole-v1 | "
ANCHORS = {
    "cartpole-4": (86_000, 7.6, _ROW + "4 envs × 128 steps, 5e5 steps, 1 seed | 86,000 | 7.6 s | 500"),
    "cartpole-2048": (22.7e6, 11.0, _ROW + "2048 envs × 128 steps | 22.7 M | 11.0 s | —"),
    "cartpole-65536": (68.7e6, 10.7, _ROW + "65,536 envs × 16 steps | 68.7 M | 10.7 s | —"),
    "cartpole-1m": (88.7e6, 9.4, _ROW + "1,048,576 envs × 8 steps, 8 minibatches | 88.7 M | 9.4 s | —"),
    "cartpole-256seeds": (15.4e6, 10.2, _ROW + "same, 256 seeds vmapped | 15.4 M | 10.2 s | 488"),
    "pqn-cartpole-32": (257_000, 8.4, "purejaxql PQN, CartPole-v1 | 32 envs × 64 steps, 5e5 steps | 257,000 | 8.4 s | "
                        "500 (greedy test)"),
    "pqn-cartpole-64seeds": (7.2e6, 10.3, "purejaxql PQN, CartPole-v1 | same, 64 seeds vmapped | 7.2 M | 10.3 s | 497"),
    "brax-ant/mjx": (464_000, 25.7, "PureJaxRL PPO (continuous), brax ant, MJX backend | 2048 envs × 10 steps, "
                     "4 epochs × 32 minibatches, 4.1M steps | 464,000 | 25.7 s | 446"),
    "brax-hopper/mjx": (135_000, 33.5, "same, brax hopper, MJX | same | 135,000 | 33.5 s | 520"),
    "brax-ant/positional": (551_000, 12.4, "same, brax ant, positional backend | same | 551,000 | 12.4 s | 1,680"),
    "brax-hopper/positional": (890_000, 14.8, "same, brax hopper, positional | same | 890,000 | 14.8 s | 1,393"),
}


def case_config(name: str, args):
    """(Config, seeds, setting) of case ``name``, shrunk when ``args.quick``."""
    from prpo.config import preset

    preset_name, overrides, seeds, setting = CASES[name]
    overrides = dict(overrides)
    if name.startswith("brax-"):
        overrides.update(env_backend=args.brax_backend, total_timesteps=args.brax_steps)
        setting += f", {args.brax_steps / 1e6:g}M steps, {args.brax_backend} backend"
    cfg = preset(preset_name, **overrides)
    if args.set:  # extra overrides for every case (KEY=VALUE strings, as the CLI's --set)
        from prpo.config import apply_overrides

        cfg = apply_overrides(cfg, dict(kv.split("=", 1) for kv in args.set))
        setting += ", " + ", ".join(args.set)
    if args.quick:  # 1/64 of the envs and seeds, at most 8 updates (2 for brax)
        num_envs, seeds = max(4, cfg.num_envs // 64), max(1, seeds // 64)
        updates = min(cfg.num_updates, 2 if name.startswith("brax-") else 8)
        cfg = cfg.replace(num_envs=num_envs, total_timesteps=num_envs * cfg.num_steps * updates)
        setting = f"quick: {seeds} seed(s) × {num_envs} envs × {cfg.num_steps} steps × {updates} updates"
    return cfg, seeds, setting


def run_case(name: str, args) -> dict:
    """Compile and time one case in this process; return its result row."""
    import jax
    import numpy as np

    from prpo.train import make_train

    cfg, seeds, setting = case_config(name, args)
    trainer = make_train(cfg)
    if seeds == 1:
        fn, keys = trainer.train, jax.random.key(0)
    else:
        fn, keys = jax.vmap(trainer.train, in_axes=(0, None)), jax.random.split(jax.random.key(0), seeds)
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(keys, cfg.hp).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, metrics = jax.block_until_ready(compiled(keys, cfg.hp))
    run_s = time.perf_counter() - t0
    # a second, identical call: steady state without first-execution costs (module loading,
    # allocator growth), which weigh on the short wide cases
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(keys, cfg.hp))
    warm_s = time.perf_counter() - t0

    steps = seeds * cfg.num_updates * cfg.batch_size
    final = np.asarray(metrics["last_return"])[..., -1]
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    peak = (stats or {}).get("peak_bytes_in_use")
    anchor_key = f"{name}/{args.brax_backend}" if name.startswith("brax-") else name
    anchor = ANCHORS.get(anchor_key)
    sps = steps / run_s
    return {
        "case": name,
        "setting": setting,
        "seeds": seeds,
        "num_envs": cfg.num_envs,
        "num_steps": cfg.num_steps,
        "num_updates": cfg.num_updates,
        "env_steps": steps,
        "steps_per_s": sps,
        "steps_per_s_warm": steps / warm_s,
        "compile_s": compile_s,
        "run_s": run_s,
        "peak_mib": None if peak is None else peak / 2**20,
        "final_return": float(np.nanmean(final)) if np.isfinite(final).any() else None,
        "final_eval_return": _final_eval(metrics),
        "nonfinite": bool(np.any(np.asarray(state.nonfinite_update) >= 0)),
        "anchor_steps_per_s": anchor[0] if anchor else None,
        "anchor_compile_s": anchor[1] if anchor else None,
        "anchor_row": anchor[2] if anchor else None,
        "ratio": sps / anchor[0] if anchor else None,
        "device": device.device_kind,
        "platform": device.platform,
        "jax": jax.__version__,
        "config": cfg.to_dict(),
    }


#: cases PureJaxRL's ``ppo.py`` runs as written (CartPole PPO): measured beside prpo with --purejaxrl
PUREJAXRL_CASES = ("cartpole-4", "cartpole-2048", "cartpole-65536", "cartpole-1m", "cartpole-256seeds")


def _distrax_categorical():
    """A stand-in ``distrax`` module with the one class PureJaxRL's CartPole PPO uses:
    ``Categorical(logits=...)`` with distrax's ``sample(seed=)``, ``log_prob`` and ``entropy``
    (same formulas, same ``jax.random.categorical`` draw). distrax's TFP substrate does not
    import on JAX 0.11 (``jax.interpreters.xla.pytype_aval_mappings`` is gone)."""
    import types

    import jax
    import jax.numpy as jnp

    class Categorical:
        def __init__(self, logits):
            self.logits = logits

        def sample(self, seed):
            return jax.random.categorical(seed, self.logits)

        def log_prob(self, value):
            logp = jax.nn.log_softmax(self.logits)
            return jnp.take_along_axis(logp, value[..., None].astype(jnp.int32), axis=-1)[..., 0]

        def entropy(self):
            logp = jax.nn.log_softmax(self.logits)
            return -jnp.sum(jnp.exp(logp) * logp, axis=-1)

    module = types.ModuleType("distrax")
    module.Categorical = Categorical
    return module


def purejaxrl_train(name: str, args):
    """PureJaxRL's ``ppo.py`` (from ``args.purejaxrl``, a folder holding it and its ``wrappers.py``;
    nothing of it is part of prpo) set up for case ``name``: ``(make_train, its config, seeds, cfg)``.
    Its gymnax (``DIR/site``: 0.0.9, whose API it is written for) replaces prpo's in this process."""
    import types

    cfg, seeds, _ = case_config(name, args)
    sys.modules.setdefault("navix", types.ModuleType("navix"))  # imported by its wrappers, unused for CartPole
    sys.modules.setdefault("distrax", _distrax_categorical())
    sys.path.insert(0, os.path.abspath(args.purejaxrl))
    site = os.path.join(os.path.abspath(args.purejaxrl), "site")
    if os.path.isdir(site):  # packages of its own beside it (gymnax 0.0.9, whose API it is written for)
        sys.path.insert(0, site)
    for mod in [m for m in sys.modules if m == "gymnax" or m.startswith("gymnax.")]:
        del sys.modules[mod]  # prpo's gymnax (imported for the settings) gives way to the anchor's own
    import ppo  # PureJaxRL's script

    hp = cfg.hp
    config = {"LR": hp.lr, "NUM_ENVS": cfg.num_envs, "NUM_STEPS": cfg.num_steps, "TOTAL_TIMESTEPS": cfg.total_timesteps,
              "UPDATE_EPOCHS": cfg.update_epochs, "NUM_MINIBATCHES": cfg.num_minibatches, "GAMMA": hp.gamma,
              "GAE_LAMBDA": hp.gae_lambda, "CLIP_EPS": hp.clip_eps, "ENT_COEF": hp.ent_coef, "VF_COEF": hp.vf_coef,
              "MAX_GRAD_NORM": hp.max_grad_norm, "ACTIVATION": cfg.activation, "ENV_NAME": cfg.env,
              "ANNEAL_LR": cfg.anneal_lr, "DEBUG": False}
    return ppo.make_train, config, seeds, cfg


def purejaxrl_batched(train, seeds: int):
    """PureJaxRL's ``train`` over ``seeds`` (vmapped when > 1) and its raw uint32 keys (it splits those)."""
    import jax

    fn, keys = (train, jax.random.key(0)) if seeds == 1 else (jax.vmap(train), jax.random.split(jax.random.key(0), seeds))
    return fn, jax.random.key_data(keys)


def run_anchor(name: str, args) -> dict:
    """Compile and time PureJaxRL's ``ppo.py`` on case ``name``'s settings, as :func:`run_case`."""
    import jax
    import numpy as np

    make_train, config, seeds, cfg = purejaxrl_train(name, args)
    fn, keys = purejaxrl_batched(make_train(config), seeds)
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(keys).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(keys))
    warm_s = time.perf_counter() - t0
    steps = seeds * cfg.num_updates * cfg.batch_size
    info = out["metrics"]
    done = np.asarray(info["returned_episode"])[..., -1, :, :]
    rets = np.asarray(info["returned_episode_returns"])[..., -1, :, :]
    stats = jax.devices()[0].memory_stats() or {}
    return {"case": name, "steps_per_s": steps / run_s, "steps_per_s_warm": steps / warm_s, "compile_s": compile_s,
            "peak_mib": stats.get("peak_bytes_in_use", 0) / 2**20 or None,
            "final_return": float(rets[done].mean()) if done.any() else None}


def _final_eval(metrics):
    import numpy as np

    if "eval_return" not in metrics:
        return None
    ev = np.asarray(metrics["eval_return"])[..., -1]
    return float(np.nanmean(ev)) if np.isfinite(ev).any() else None


def run_isolated(name: str, args, anchor: bool = False) -> dict:
    """Run one case in a fresh Python process (own device memory and peak statistics); with
    ``anchor``, PureJaxRL's script on the case's settings instead of prpo."""
    worker = ["--anchor-worker", name, "--purejaxrl", args.purejaxrl] if anchor else ["--worker", name]
    cmd = [sys.executable, os.path.abspath(__file__), *worker,
           "--brax-backend", args.brax_backend, "--brax-steps", str(args.brax_steps)] + (["--quick"] if args.quick else [])
    cmd += [f"--set={kv}" for kv in args.set]
    return run_worker(cmd, args.timeout, {"case": name, "setting": CASES[name][3]})


def run_worker(cmd, timeout: float, ident: dict) -> dict:
    """Run a worker command; its last ``RESULT {json}`` line, or ``ident`` with an ``error``."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:  # the child is killed; seen once on CPU: an XLA thread-pool hang
        return {**ident, "error": f"timed out after {timeout:g} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {**ident, "error": f"exit {proc.returncode}: {tail}"}


def _num(x, fmt):
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _rate(x):
    if x is None:
        return "—"
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x:,.0f}"


def table(rows) -> str:
    lines = ["| case | setting | env-steps/s | 2nd call | compile s | peak MiB | final return | anchor steps/s "
             "| anchor compile s | ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['setting']} | error: {r['error']} | | | | | | | |")
            continue
        ret = _num(r["final_return"], ".1f") + (" (non-finite loss)" if r["nonfinite"] else "")
        lines.append(f"| {r['case']} | {r['setting']} | {_rate(r['steps_per_s'])} | {_rate(r.get('steps_per_s_warm'))} | "
                     f"{r['compile_s']:.1f} | "
                     f"{_num(r['peak_mib'], ',.0f')} | {ret} | {_rate(r['anchor_steps_per_s'])} | "
                     f"{_num(r.get('anchor_compile_s'), '.1f')} | {_num(r['ratio'], '.3g')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated cases (default: all): " + ", ".join(CASES))
    p.add_argument("--brax-backend", default="positional", choices=("positional", "mjx", "generalized", "spring"))
    p.add_argument("--brax-steps", type=int, default=4_100_000, help="env steps of the brax cases (anchor: 4.1M)")
    p.add_argument("--quick", action="store_true", help="shrink every case (CPU smoke test)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an option in every case")
    p.add_argument("--out", default=None, help="JSON output (default: benchmarks/results/throughput-<device>.json)")
    p.add_argument("--in-process", action="store_true", help="run cases in this process (peak memory is cumulative)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per case before it is killed and reported as an error")
    p.add_argument("--variant", action="append", default=None, metavar="KEY=VALUE[,KEY=VALUE]",
                   help="a prpo variant (overrides on top of --set; repeatable: one row per case and variant, "
                        "e.g. --variant '' --variant network_kernel=fused)")
    p.add_argument("--purejaxrl", default=None, metavar="DIR",
                   help="a folder with PureJaxRL's ppo.py and wrappers.py (and in DIR/site the gymnax 0.0.9 it is written for): "
                        f"measure the anchor beside prpo for the cases {', '.join(PUREJAXRL_CASES)} (else the "
                        "anchor column is the recorded H200 figure)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--anchor-worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print("RESULT " + json.dumps(run_case(args.worker, args)), flush=True)
        return 0
    if args.anchor_worker:
        print("RESULT " + json.dumps(run_anchor(args.anchor_worker, args)), flush=True)
        return 0
    if args.purejaxrl and not os.path.isfile(os.path.join(args.purejaxrl, "ppo.py")):
        p.error(f"--purejaxrl {args.purejaxrl}: no ppo.py there (give PureJaxRL's purejaxrl/ folder)")
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; available: {', '.join(CASES)}")

    rows, base_set = [], list(args.set)
    for name in names:
        measured = None
        if args.purejaxrl and name in PUREJAXRL_CASES:
            print(f"[{datetime.datetime.now():%H:%M:%S}] {name} (PureJaxRL) ...", file=sys.stderr, flush=True)
            measured = run_isolated(name, args, anchor=True)
        for variant in args.variant or [""]:
            args.set = base_set + [kv for kv in variant.split(",") if kv]
            print(f"[{datetime.datetime.now():%H:%M:%S}] {name} {variant} ...", file=sys.stderr, flush=True)
            row = run_case(name, args) if args.in_process else run_isolated(name, args)
            row["variant"] = variant
            if measured is not None and "error" not in row:
                row["anchor_measured"] = measured
                if "error" not in measured:
                    row.update(anchor_steps_per_s=measured["steps_per_s"], anchor_compile_s=measured["compile_s"],
                               anchor_row="PureJaxRL ppo.py measured in this run",
                               ratio=row["steps_per_s"] / measured["steps_per_s"])
            rows.append(row)
        args.set = base_set
    done = [r for r in rows if "error" not in r]
    device = done[0]["device"] if done else "unknown"
    header = (f"prpo PPO throughput on {device}, JAX {done[0]['jax'] if done else '?'}"
              + (" (--quick: shrunken cases, ratios not comparable)" if args.quick else "")
              + ("; anchors: PureJaxRL's ppo.py measured in this run" if args.purejaxrl
                 else "; anchors: PureJaxRL on one H200 (recorded figures)"))
    print(header + "\n\n" + table(rows))

    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") + ("-quick" if args.quick else "")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"throughput-{slug}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"device": device, "jax": done[0]["jax"] if done else None,
                   "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "quick": args.quick, "brax_backend": args.brax_backend, "results": rows}, f, indent=2, ensure_ascii=False)
    print(f"\nwrote {out}", file=sys.stderr)
    return 1 if len(done) < len(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
