"""The fused actor-critic kernel (prpo.fused) against XLA: numerics and time of one minibatch's
forward + backward pass (GPU).

    python benchmarks/fused_kernel.py                      # 2^18 and 2^20 rows, CartPole's 4 → 64-64 → 2 + 1
    python benchmarks/fused_kernel.py --rows 65536 --obs 17 --hidden 256,256 --actions 6

For each configuration (tile rows × tiles per program × warps) it checks the kernel's output and
gradients against a float32 reference at the highest matmul precision (relative error
‖out − ref‖ / ‖ref‖; TF32 lands near 1e-3 or below, NaN never passes) on fresh random inputs,
then times ``grad`` of a loss through the network (median of --reps calls after warm-up):
XLA's network (the plain path) and the kernel.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from prpo import fused


def weights_for(key, obs, hidden, actions):
    ks = iter(jax.random.split(key, 4 * len(hidden) + 8))

    def layer(k_in, n_out):
        w = jax.random.normal(next(ks), (k_in, n_out)) / np.sqrt(k_in)
        return w, 0.1 * jax.random.normal(next(ks), (n_out,))

    def tower():
        layers, k = [], obs
        for h in hidden:
            layers.append(layer(k, h))
            k = h
        return tuple(layers)

    return {"actor": tower(), "critic": tower(), "actor_head": layer(hidden[-1], actions),
            "critic_head": layer(hidden[-1], 1)}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def bench(fn, *args, reps=20):
    f = jax.jit(fn)
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="262144,1048576")
    p.add_argument("--obs", type=int, default=4)
    p.add_argument("--hidden", default="64,64")
    p.add_argument("--actions", type=int, default=2)
    p.add_argument("--configs", default="64x32x4,64x16x4,64x8x4,64x32x4:stages2,64x32x4:bf16",
                   help="tile_rows x tiles_per_program x num_warps[:tuning+tuning], comma-separated; tuning: "
                        "fwdN (forward tiles per program, default 16), bf16 (bfloat16 operands: dot_dtype, as "
                        "network_kernel=fused_bf16), stagesN")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    impl = "pallas" if jax.default_backend() == "gpu" else "interpret"
    print(f"device: {jax.devices()[0].device_kind}; kernel impl {impl}; obs {args.obs}, hidden {hidden}, "
          f"actions {args.actions}")
    print("| rows | network | config | fwd+bwd ms | rel err out | rel err grads (max) |\n|---|---|---|---|---|---|")
    for seed, rows in enumerate(int(r) for r in args.rows.split(",")):
        key = jax.random.key(seed)
        k_w, k_x, k_c = jax.random.split(key, 3)
        w = weights_for(k_w, args.obs, hidden, args.actions)
        x = jax.random.normal(k_x, (rows, args.obs))
        c = jax.random.normal(k_c, (rows, args.actions + 1))

        def loss(impl, cfg=None, dot_dtype="float32"):
            kw = {} if cfg is None else dict(tile_rows=cfg[0], tiles_per_program=cfg[1], num_warps=cfg[2])
            return lambda w, x: jnp.sum(jnp.tanh(fused.two_tower(x, w, "tanh", impl, dot_dtype=dot_dtype, **kw)) * c)

        with jax.default_matmul_precision("highest"):
            ref_out = jax.jit(lambda w, x: fused.two_tower_reference(x, w))(w, x)
            ref_g = jax.jit(jax.grad(loss("reference")))(w, x)
        t = bench(jax.grad(loss("reference")), w, x, reps=args.reps)
        print(f"| {rows} | XLA (plain path) | — | {t * 1e3:.3f} | — | — |", flush=True)
        g = jax.jit(jax.grad(loss("blockdiag")))(w, x)
        e_g = max(jax.tree.leaves(jax.tree.map(rel, g, ref_g)))
        t = bench(jax.grad(loss("blockdiag")), w, x, reps=args.reps)
        print(f"| {rows} | XLA block-diagonal | — | {t * 1e3:.3f} | — | {e_g:.2e} |", flush=True)
        for spec in args.configs.split(","):
            sizes, _, tuning = spec.partition(":")
            cfg = tuple(int(v) for v in sizes.split("x"))
            fused.TUNING.update(num_stages=1, fwd_tiles=16)
            dot_dtype = "float32"  # per network: two_tower's dot_dtype (network_kernel="fused_bf16")
            for t_ in filter(None, tuning.split("+")):
                if t_ == "bf16":
                    dot_dtype = "bfloat16"
                elif t_.startswith("fwd"):
                    fused.TUNING["fwd_tiles"] = int(t_[3:])
                elif t_.startswith("stages"):
                    fused.TUNING["num_stages"] = int(t_[6:])
                else:
                    raise SystemExit(f"unknown tuning {t_!r} in {spec!r}")
            try:
                out = jax.jit(lambda w, x: fused.two_tower(x, w, "tanh", impl, tile_rows=cfg[0], tiles_per_program=cfg[1],
                                                           num_warps=cfg[2], dot_dtype=dot_dtype))(w, x)
                g = jax.jit(jax.grad(loss(impl, cfg, dot_dtype)))(w, x)
                e_out = rel(out, ref_out)
                e_g = max(jax.tree.leaves(jax.tree.map(rel, g, ref_g)))
                t = bench(jax.grad(loss(impl, cfg, dot_dtype)), w, x, reps=args.reps)
                ok = "" if np.isfinite(e_out) and e_g < (3e-2 if "bf16" in tuning else 3e-3) else " FAIL"
                print(f"| {rows} | fused | {spec} | {t * 1e3:.3f} | {e_out:.2e} | {e_g:.2e}{ok} |", flush=True)
            except Exception as e:  # noqa: BLE001 -- report the configuration that does not compile
                print(f"| {rows} | fused | {spec} | error: {type(e).__name__}: {str(e).splitlines()[0][:120]} | | |",
                      flush=True)


if __name__ == "__main__":
    main()
