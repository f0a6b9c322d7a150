"""Where does an update spend its time? Rollout vs SGD, per variant (GPU profiling aid).

    python benchmarks/profile_update.py --envs 2048 --steps 128 --minibatches 4 \
        --variant "" --variant "unroll=4" --variant "shuffle=envs"

For each variant (a comma-separated list of KEY=VALUE overrides on the ppo-cartpole preset) it
times, after compilation and averaged over --reps calls: one rollout (``collect``), one SGD
phase (``sgd_epochs`` on a fixed batch) and one whole update. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from prpo.config import apply_overrides, preset
from prpo.rollout import collect
from prpo.train import make_train
from prpo.update import SURROGATES, Batch, make_loss, make_optimizer, sgd_epochs


def _time(fn, *args, reps=5):
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    t0 = time.perf_counter()
    for _ in range(reps):
        out = compiled(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / reps


def profile(cfg, reps):
    trainer = make_train(cfg)
    hp = cfg.hp
    state = jax.jit(trainer.init)(jax.random.key(0), hp)
    ident = lambda o: o  # noqa: E731

    def rollout(s):
        return collect(trainer.env, trainer.policy, s.params, s.env_state, s.obs, s.key, cfg.num_steps, ident, ident,
                       True, cfg.truncation_mode, cfg.scan_unroll)[2]

    traj = jax.jit(rollout)(state)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
    batch = Batch(obs=flat(traj.obs), action=flat(traj.action), aux=jax.tree.map(flat, traj.aux),
                  advantages=flat(traj.reward), returns=flat(traj.reward))
    loss_fn = make_loss(cfg, trainer.policy, SURROGATES[cfg.objective])

    def sgd(s, b):
        tx = make_optimizer(cfg, hp, cfg.num_updates)
        return sgd_epochs(cfg, loss_fn, tx, s.params, s.opt_state, b, hp, s.key)

    t_roll = _time(rollout, state, reps=reps)
    t_sgd = _time(sgd, state, batch, reps=reps)
    t_upd = _time(lambda s: trainer.update(s, hp), state, reps=reps)
    return t_roll, t_sgd, t_upd


def kernel_table(cfg, top=30, out_dir="/tmp/prpo-trace"):
    """Trace 3 updates with ``jax.profiler`` and print the device ops that take the most time."""
    import glob
    import gzip
    import json
    from collections import defaultdict

    trainer = make_train(cfg)
    state = jax.jit(trainer.init)(jax.random.key(0), cfg.hp)
    upd = jax.jit(lambda s: trainer.update(s, cfg.hp))
    state = jax.block_until_ready(upd(state)[0])
    with jax.profiler.trace(out_dir, create_perfetto_trace=True):
        for _ in range(3):
            state = upd(state)[0]
        jax.block_until_ready(state)
    path = sorted(glob.glob(f"{out_dir}/**/*perfetto_trace.json.gz", recursive=True))[-1]
    events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    procs, threads = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            procs[e["pid"]] = e["args"]["name"]
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e["pid"], e["tid"])] = e["args"]["name"]
    # HLO-op level rows of the device ("XLA Ops"); fall back to every device thread
    gpu = {p for p, n in procs.items() if "GPU" in n.upper()}
    op_threads = {k for k, n in threads.items() if k[0] in gpu and n == "XLA Ops"}
    keep = op_threads or {k for k in threads if k[0] in gpu}
    totals, counts = defaultdict(float), defaultdict(int)
    for e in events:
        if e.get("ph") == "X" and (e.get("pid"), e.get("tid")) in keep:
            totals[e["name"]] += e.get("dur", 0) / 3
            counts[e["name"]] += 1
    total = sum(totals.values())
    print(f"device time per update: {total / 1e3:.2f} ms over {sum(counts.values()) // 3} ops")
    print("| op | ms / update | calls / update | share |\n|---|---|---|---|")
    for name, t in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        print(f"| {name[:70]} | {t / 1e3:.3f} | {counts[name] // 3} | {t / max(total, 1e-9):.1%} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", type=int, default=2048)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--variant", action="append", default=None)
    p.add_argument("--trace", action="store_true", help="print the top device ops of one update (jax.profiler)")
    args = p.parse_args()
    variants = args.variant or [""]
    base = preset("ppo-cartpole", num_envs=args.envs, num_steps=args.steps, num_minibatches=args.minibatches,
                  total_timesteps=args.envs * args.steps * 8)
    batch = args.envs * args.steps
    print(f"device: {jax.devices()[0].device_kind}; {args.envs} envs × {args.steps} steps, {args.minibatches} minibatches")
    if args.trace:
        for v in variants:
            print(f"trace: {v or 'default'}")
            kernel_table(apply_overrides(base, dict(kv.split("=", 1) for kv in v.split(",") if kv)))
        return
    print("| variant | rollout ms | sgd ms | update ms | update env-steps/s |\n|---|---|---|---|---|")
    for v in variants:
        overrides = dict(kv.split("=", 1) for kv in v.split(",") if kv)
        cfg = apply_overrides(base, overrides)
        r, s, u = profile(cfg, args.reps)
        print(f"| {v or 'default'} | {r * 1e3:.2f} | {s * 1e3:.2f} | {u * 1e3:.2f} | {batch / u / 1e6:.2f} M |", flush=True)


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing
    main()
