"""Scaling benchmark: PPO env-steps/s over devices and num_envs, memory per env, largest batch.

For every case × device count: compile time, steady-state env-steps/s of ``--updates`` updates
(best of ``--repeats`` timed calls after one warm-up call), scaling efficiency against one
device, XLA's memory analysis of the compiled run (temp + arguments + outputs) and bytes per
env, the device's peak memory (all per device), and XLA's cost analysis (per device) (flops, bytes accessed → achieved
TFLOP/s and GB/s). ``--breakdown`` also times the rollout alone (env + policy sampling) to split
the time between acting and learning. ``--max-envs`` fits memory = a + b·num_envs from two
compiles and reports the largest power-of-two num_envs that fits the device, then runs it.

    python benchmarks/scaling.py --cases cartpole-65536,cartpole-1m,brax-ant --devices 1,2 --breakdown
    python benchmarks/scaling.py --cases cartpole-1m --devices 0 --max-envs --out results/max-envs.json
    python benchmarks/scaling.py --profile /tmp/trace --cases cartpole-1m --devices 1   # jax.profiler trace
    python benchmarks/scaling.py --quick        # CPU smoke test with 2 fake devices (not a measurement)

Device count 1 is measured twice: the default single-device path (``devices=1``, row "1")
and the sharded path on a one-device mesh (row "1 (mesh)"); efficiency = rate_D / (D · rate_1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time


def _parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="cartpole-65536,cartpole-1m,brax-ant")
    ap.add_argument("--devices", default="1,2", help="comma-separated device counts of the data axis")
    ap.add_argument("--updates", type=int, default=8, help="updates per timed call")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls (best is reported)")
    ap.add_argument("--brax-backend", default="positional")
    ap.add_argument("--breakdown", action="store_true", help="also time the rollout alone")
    ap.add_argument("--max-envs", action="store_true", help="find the largest num_envs that fits (one device)")
    ap.add_argument("--mem-headroom", type=float, default=0.9,
                    help="--max-envs: fraction of the device's allocator limit the prediction may fill")
    ap.add_argument("--profile", default=None, metavar="DIR", help="write a jax.profiler trace of one timed call")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 2 fake CPU devices: a smoke test")
    ap.add_argument("--fake-cpu-devices", type=int, default=None, help="XLA host device count (CPU runs)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    return ap.parse_args()


ARGS = _parse()
_fake = ARGS.fake_cpu_devices or (2 if ARGS.quick else None)
if _fake:  # must precede JAX's start; affects the host (CPU) platform only
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={_fake}").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from prpo import parallel  # noqa: E402
from prpo.config import preset  # noqa: E402
from prpo.rollout import collect  # noqa: E402
from prpo.train import make_train  # noqa: E402

# name -> (preset, overrides). CartPole rows use the PureJaxRL anchors' settings.
CASES = {
    "cartpole-65536": ("ppo-cartpole", dict(num_envs=65_536, num_steps=16)),
    "cartpole-1m": ("ppo-cartpole", dict(num_envs=2**20, num_steps=8, num_minibatches=8)),
    "cartpole-1m-16": ("ppo-cartpole", dict(num_envs=2**20, num_steps=16, num_minibatches=8)),
    "brax-ant": ("ppo-brax", dict(env="ant", num_envs=8192, num_steps=10, num_minibatches=32)),
    "brax-ant-65536": ("ppo-brax", dict(env="ant", num_envs=65_536, num_steps=10, num_minibatches=32)),
}
QUICK = dict(num_envs=64, num_steps=4, num_minibatches=2, actor_hidden=(16, 16), critic_hidden=None)
# PureJaxRL on one H200 (measured beside prpo in one run), env-steps/s
ANCHORS = {"cartpole-65536": 68.7e6, "cartpole-1m": 88.7e6}


def case_config(name, updates):
    preset_name, over = CASES[name]
    over = dict(over)
    if ARGS.quick:
        over.update(QUICK)
        if name.startswith("brax"):
            over.update(num_envs=16, episode_length=20)
    if name.startswith("brax"):
        over["env_backend"] = ARGS.brax_backend
    over["total_timesteps"] = over["num_envs"] * over["num_steps"] * updates
    return preset(preset_name, **over)


def _memory_stats():
    try:
        return jax.devices()[0].memory_stats() or {}
    except Exception:
        return {}


def build(cfg, devices, mesh_path):
    """(jitted init, jitted run) for the default path (devices=1, no mesh) or the sharded one."""
    if not mesh_path:
        trainer = make_train(cfg)
    else:
        trainer = parallel.make_sharded_train(cfg.replace(devices=devices), parallel.make_mesh(devices))
    init = jax.jit(trainer.init)
    run = jax.jit(lambda s, h: trainer.run(s, h, ARGS.updates), donate_argnums=0)
    return trainer, init, run


def measure(name, devices, mesh_path):
    cfg = case_config(name, ARGS.updates)
    trainer, init, run = build(cfg, devices, mesh_path)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    state = jax.block_until_ready(init(key, cfg.hp))
    compiled = run.lower(state, cfg.hp).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    mem_bytes = None if mem is None else mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    state, _ = jax.block_until_ready(compiled(state, cfg.hp))  # warm-up (first-execution costs)
    times = []
    for i in range(ARGS.repeats):
        if ARGS.profile and i == ARGS.repeats - 1:
            with jax.profiler.trace(os.path.join(ARGS.profile, f"{name}-d{devices}{'-mesh' if mesh_path else ''}")):
                t = time.perf_counter()
                state, metrics = jax.block_until_ready(compiled(state, cfg.hp))
        else:
            t = time.perf_counter()
            state, metrics = jax.block_until_ready(compiled(state, cfg.hp))
        times.append(time.perf_counter() - t)
    best = min(times)
    steps = ARGS.updates * cfg.batch_size
    row = {
        "case": name, "devices": devices, "path": "mesh" if mesh_path else "default",
        "device_kind": jax.devices()[0].device_kind, "num_envs": cfg.num_envs, "num_steps": cfg.num_steps,
        "num_minibatches": cfg.num_minibatches, "updates": ARGS.updates,
        "steps_per_s": steps / best, "update_ms": 1e3 * best / ARGS.updates, "compile_s": compile_s,
        # XLA's analysis is of one device's program: bytes per device, per env of that device
        "memory_bytes": mem_bytes, "bytes_per_env": None if mem_bytes is None else mem_bytes * devices / cfg.num_envs,
        "peak_bytes_in_use": _memory_stats().get("peak_bytes_in_use"),
        "flops": cost.get("flops"), "bytes_accessed": cost.get("bytes accessed"),
        "last_return": float(jax.device_get(parallel.fetch(metrics["last_return"]))[-1]),
    }
    if row["flops"]:  # per device
        row["tflops_per_s_per_device"] = row["flops"] / best / 1e12
    if row["bytes_accessed"]:
        row["gb_per_s_per_device"] = row["bytes_accessed"] / best / 1e9
    if name in ANCHORS and not ARGS.quick:
        row["vs_purejaxrl"] = row["steps_per_s"] / ANCHORS[name]
    if ARGS.breakdown and not mesh_path:
        row.update(rollout_only(cfg, trainer, state))
    del state
    return row


def rollout_only(cfg, trainer, state):
    """Steps/s of the rollout alone (policy sampling + env steps, no GAE / SGD)."""

    def roll(state):
        def body(carry, k):
            env_state, obs = carry
            env_state, obs, traj, _ = collect(trainer.env, trainer.policy, state.params, env_state, obs, k, cfg.num_steps,
                                              lambda o: o, lambda a: a, unroll=cfg.scan_unroll)
            return (env_state, obs), traj.reward.sum()
        return jax.lax.scan(body, (state.env_state, state.obs), jax.random.split(state.key, ARGS.updates))

    f = jax.jit(roll).lower(state).compile()
    jax.block_until_ready(f(state))
    t = time.perf_counter()
    jax.block_until_ready(f(state))
    dt = time.perf_counter() - t
    return {"rollout_steps_per_s": ARGS.updates * cfg.batch_size / dt, "rollout_share": None}


def max_envs(name):
    """Fit compiled memory = a + b·num_envs (two sizes) and run the largest power of two that fits."""
    limit = _memory_stats().get("bytes_limit")
    cfg0 = case_config(name, 2)
    sizes = [cfg0.num_envs, cfg0.num_envs * 2]
    mems = []
    for n in sizes:
        cfg = cfg0.replace(num_envs=n, total_timesteps=n * cfg0.num_steps * 2)
        trainer = make_train(cfg)
        state = jax.eval_shape(trainer.init, jax.random.key(0), cfg.hp)
        m = jax.jit(lambda s, h: trainer.run(s, h, 2), donate_argnums=0).lower(state, cfg.hp).compile().memory_analysis()
        mems.append(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)
    b = (mems[1] - mems[0]) / (sizes[1] - sizes[0])
    a = mems[0] - b * sizes[0]
    row = {"case": name, "max_envs_fit": {"bytes_fixed": a, "bytes_per_env": b, "bytes_limit": limit}}
    if limit:
        n = 2 ** int(math.floor(math.log2(max((ARGS.mem_headroom * limit - a) / b, 1))))
        row["max_envs_fit"]["predicted_num_envs"] = n
        for attempt in range(3):  # the prediction, then halve on out-of-memory
            row["max_envs_fit"]["num_envs"] = n
            try:
                cfg = cfg0.replace(num_envs=n, total_timesteps=n * cfg0.num_steps * 2)
                trainer = make_train(cfg)
                t = time.perf_counter()
                state, metrics = jax.block_until_ready(jax.jit(trainer.train)(jax.random.key(0), cfg.hp))
                row["max_envs_fit"].update(ran=True, wall_s=time.perf_counter() - t, bytes_per_env_measured=
                                           (_memory_stats().get("peak_bytes_in_use") or 0) / n,
                                           peak_bytes_in_use=_memory_stats().get("peak_bytes_in_use"))
                break
            except Exception as e:  # out of memory: report it and try half
                row["max_envs_fit"].setdefault("failed", []).append({"num_envs": n, "error": str(e).splitlines()[0][:300]})
                row["max_envs_fit"]["ran"] = False
                n //= 2
    return row


def main():
    devices = [int(d) for d in ARGS.devices.split(",") if int(d) > 0]  # --devices 0: only --max-envs
    rows = []
    for name in ARGS.cases.split(","):
        if ARGS.max_envs:
            rows.append(max_envs(name))
            print(json.dumps(rows[-1]), flush=True)
        for d in devices:
            if d > jax.device_count():
                print(f"skip {name} on {d} devices: only {jax.device_count()}", flush=True)
                continue
            for mesh_path in ([False, True] if d == 1 else [True]):
                try:
                    row = measure(name, d, mesh_path)
                except Exception as e:  # e.g. out of memory: an error row
                    row = {"case": name, "devices": d, "path": "mesh" if mesh_path else "default", "error": str(e)[:400]}
                if row.get("rollout_steps_per_s"):
                    row["rollout_share"] = row["steps_per_s"] / row["rollout_steps_per_s"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    # scaling efficiency against the one-device rows
    for r in rows:
        base = [b for b in rows if b.get("case") == r.get("case") and b.get("devices") == 1 and b.get("path") == "default"
                and "steps_per_s" in b]
        if base and "steps_per_s" in r:
            r["speedup_vs_1"] = r["steps_per_s"] / base[0]["steps_per_s"]
            r["efficiency"] = r["speedup_vs_1"] / r["devices"]
    print("\n| case | devices | path | num_envs | env-steps/s | speed-up | efficiency | compile s | MiB/device (XLA) | bytes/env |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "steps_per_s" not in r:
            continue
        mib = "—" if r["memory_bytes"] is None else f"{r['memory_bytes'] / 2**20:,.0f}"
        bpe = "—" if r["bytes_per_env"] is None else f"{r['bytes_per_env']:,.0f}"
        print(f"| {r['case']} | {r['devices']} | {r['path']} | {r['num_envs']:,} | {r['steps_per_s'] / 1e6:,.2f} M | "
              f"{r.get('speedup_vs_1', float('nan')):.2f}× | {r.get('efficiency', float('nan')):.0%} | {r['compile_s']:.1f} | {mib} | {bpe} |")
    if ARGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(ARGS.out)), exist_ok=True)
        with open(ARGS.out, "w") as f:
            json.dump({"jax": jax.__version__, "devices": [str(d) for d in jax.devices()], "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
