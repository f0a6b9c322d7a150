"""A fused actor-critic MLP: one kernel for the forward pass of a minibatch, one for its backward.

The update step of PPO on a wide batch is dominated by the actor and critic MLPs: skinny GEMMs
(``batch × 64``), their bias-gradient reductions and the activations written to and read back
from device memory between them. :func:`two_tower` computes the same function as two MLP
towers on one input plus a linear head on each, with a ``custom_vjp`` whose forward and
backward passes are each one Pallas kernel over row tiles. The backward kernel recomputes the
activations of its tile on chip and writes only per-program partial weight gradients, summed
afterwards (a fixed order: deterministic).

``two_tower(x, weights, activation)`` — shapes::

    x        [B, D]
    weights  {"actor": ((W [D, H1], b [H1]), (W [H1, H2], b [H2]), ...),
              "critic": (...), "actor_head": (W [Ha, A], b [A]), "critic_head": (W [Hc, V], b [V])}
    returns  [B, A + V]    (actor head's outputs, then the critic head's)

Implementations (``impl``): ``"reference"`` (plain ``jnp``; the numerics the kernel is tested
against), ``"pallas"`` (the kernel, compiled through Pallas' Triton lowering on GPU) and
``"interpret"`` (the same kernel run by Pallas' interpreter: any backend, used by the tests);
``"auto"`` is ``"pallas"`` on GPU and ``"reference"`` elsewhere. Widths are zero-padded inside
to powers of two ≥ 16 (the matrix units' tile), which changes no output: padded units see zero
weights, and tanh(0) = relu(0) = 0.

Numerics (``dot_dtype``, one of :data:`DOT_DTYPES`): ``"float32"`` (the default) computes in
float32 throughout. ``"bfloat16"`` rounds the operands of every matrix product, forward and
backward, to bfloat16 and accumulates in float32; biases, activations, their derivatives,
sums and all outputs and gradients stay float32. The kernel and the reference implement the
same class (the reference's products carry a VJP with the kernel's backward products: the
cotangent and the other operand rounded to bfloat16), so they agree up to accumulation order.
Against float32, outputs differ by a few 1e-3 relative, gradients by up to a few 1e-2 (ReLU
units near the kink switch). On GPU the bfloat16 kernel is the fast one; as a config option it
is ``network_kernel="fused_bf16"`` (``benchmarks/results/fused-kernel-h200.md``).

:class:`FusedActorCritic` is a drop-in network for the default actor-critic
(:class:`prpo.networks.ActorCritic`, separate trunks, tanh or relu, no layer norm): same
parameters (checkpoints and ``init`` are the module's), forward through :func:`two_tower`, with
its own ``dot_dtype``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

__all__ = ["ACTIVATIONS", "IMPLS", "DOT_DTYPES", "two_tower", "two_tower_reference", "FusedActorCritic", "fused_actor_critic"]

#: activations the kernel has (derivative from the output y: tanh' = 1 − y², relu' = [y > 0])
ACTIVATIONS = ("tanh", "relu")
IMPLS = ("auto", "pallas", "interpret", "reference", "blockdiag")
#: operand dtypes of the matrix products (accumulation is float32 in every case)
DOT_DTYPES = ("float32", "bfloat16")

_ACT = {"tanh": jnp.tanh, "relu": lambda z: jnp.maximum(z, 0.0)}
_DACT = {"tanh": lambda y: 1.0 - y * y, "relu": lambda y: (y > 0.0).astype(y.dtype)}


def _dot(a, b):
    return jnp.dot(a, b, preferred_element_type=jnp.float32)


def _dot_tn(a, b):  # aᵀ b
    return jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def _dot_nt(a, b):  # a bᵀ
    return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def _dot_dtype(dot_dtype) -> str:
    """``dot_dtype`` as its name in :data:`DOT_DTYPES` (a dtype object is accepted), else ``ValueError``."""
    try:
        name = jnp.dtype(dot_dtype).name
    except TypeError:
        name = None
    if name not in DOT_DTYPES:
        raise ValueError(f"dot_dtype={dot_dtype!r} is not known; allowed: {', '.join(DOT_DTYPES)}")
    return name


@functools.lru_cache(maxsize=None)
def _mixed_dot(dot_dtype: str):
    """``a @ b`` with ``dot_dtype`` operands and float32 accumulation, and a VJP of the same class:
    ``∂a = ḡ b̄ᵀ``, ``∂b = āᵀ ḡ`` with the cotangent ``g`` and the operands rounded to
    ``dot_dtype`` (bars), accumulated and returned in float32 — the backward kernel's products.
    (Plain autodiff through the casts would keep ``g`` in float32 and round ``∂a`` to bfloat16:
    another rounding than the kernel's.)"""
    if dot_dtype == "float32":
        return _dot
    dt = jnp.dtype(dot_dtype)

    @jax.custom_vjp
    def dot(a, b):
        return _dot(a.astype(dt), b.astype(dt))

    def dot_fwd(a, b):
        return dot(a, b), (a, b)

    def dot_bwd(res, g):
        a, b = res
        g = g.astype(dt)
        return _dot_nt(g, b.astype(dt)).astype(a.dtype), _dot_tn(a.astype(dt), g).astype(b.dtype)

    dot.defvjp(dot_fwd, dot_bwd)
    return dot


def two_tower_reference(x, weights, activation: str = "tanh", dot_dtype: str = "float32"):
    """The function :func:`two_tower` computes, in plain ``jnp`` (shapes in the module doc), with
    ``dot_dtype`` operands in its matrix products (numerics in the module doc)."""
    act = _ACT[activation]
    dot = _mixed_dot(_dot_dtype(dot_dtype))

    def tower(layers):
        h = x
        for w, b in layers:
            h = act(dot(h, w) + b)
        return h

    (wa, ba), (wc, bc) = weights["actor_head"], weights["critic_head"]
    return jnp.concatenate([dot(tower(weights["actor"]), wa) + ba, dot(tower(weights["critic"]), wc) + bc], axis=-1)


def two_tower_blockdiag(x, weights, activation: str = "tanh", dot_dtype: str = "float32"):
    """The same function as one MLP of both towers side by side (plain ``jnp``): the first layers
    concatenated, the deeper ones and the heads block-diagonal. Half the matrix products of
    :func:`two_tower_reference`, each twice as wide (the zero blocks cost arithmetic, not
    launches); needs towers of equal depth. ``dot_dtype``: as in :func:`two_tower_reference`."""
    act = _ACT[activation]
    dot = _mixed_dot(_dot_dtype(dot_dtype))
    if len(weights["actor"]) != len(weights["critic"]):
        raise ValueError("impl='blockdiag' needs actor and critic towers of the same depth")

    def blockdiag(a, c):
        return jnp.block([[a, jnp.zeros((a.shape[0], c.shape[1]), a.dtype)],
                          [jnp.zeros((c.shape[0], a.shape[1]), c.dtype), c]])

    h = x
    for k, ((wa, ba), (wc, bc)) in enumerate(zip(weights["actor"], weights["critic"])):
        w = jnp.concatenate([wa, wc], axis=1) if k == 0 else blockdiag(wa, wc)
        h = act(dot(h, w) + jnp.concatenate([ba, bc]))
    (wa, ba), (wc, bc) = weights["actor_head"], weights["critic_head"]
    return dot(h, blockdiag(wa, wc)) + jnp.concatenate([ba, bc])


def two_tower(x, weights, activation: str = "tanh", impl: str = "auto", tile_rows: int = 64,
              tiles_per_program: int = 32, num_warps: int = 4, dot_dtype: str = "float32"):
    """Two MLP towers on ``x`` and a linear head on each, concatenated: ``[B, A + V]``.

    ``impl``: see the module doc. ``tile_rows`` (a power of two ≥ 16): rows per kernel tile;
    ``tiles_per_program``: tiles one backward program accumulates before writing its partial
    gradients (fewer partials to sum, more work per program); ``num_warps``: per program (GPU).
    ``dot_dtype``: the matrix products' operand dtype, ``"float32"`` or ``"bfloat16"`` (float32
    accumulation either way; module doc), for every implementation. Differentiable in ``x`` and in
    every weight; the backward kernel skips ``∂/∂x`` where ``x`` is not differentiated.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} has no fused kernel; allowed: {', '.join(ACTIVATIONS)}")
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not known; allowed: {', '.join(IMPLS)}")
    dot_dtype = _dot_dtype(dot_dtype)
    if impl == "auto":
        impl = "pallas" if jax.default_backend() == "gpu" else "reference"
    if impl == "reference":
        return two_tower_reference(x, weights, activation, dot_dtype)
    if impl == "blockdiag":
        return two_tower_blockdiag(x, weights, activation, dot_dtype)
    if tile_rows < 16 or tile_rows & (tile_rows - 1):
        raise ValueError(f"tile_rows={tile_rows} must be a power of two >= 16")
    if tiles_per_program < 1:
        raise ValueError(f"tiles_per_program={tiles_per_program} must be >= 1")
    if set(TUNING) != {"num_stages", "fwd_tiles"}:
        raise ValueError(f"TUNING has keys {sorted(TUNING)}; allowed: fwd_tiles, num_stages (the operand dtype is "
                         "two_tower's dot_dtype)")
    fn = _custom(activation, impl == "interpret", tile_rows, tiles_per_program, num_warps, dot_dtype,
                 tuple(sorted(TUNING.items())))
    return fn(x.astype(jnp.float32), weights)


# -- the kernels ----------------------------------------------------------------------------------

def _p2(n: int) -> int:
    """Next power of two ≥ max(n, 16)."""
    return max(16, 1 << (int(n) - 1).bit_length())


def _pad2(a, rows: int, cols: int):
    return jnp.pad(a, ((0, rows - a.shape[0]), (0, cols - a.shape[1])))


def _packed(weights, d: int):
    """Zero-padded weights in the kernel's order: actor layers, critic layers, the two heads
    (as ``[H, O]`` blocks writing disjoint output columns) and one output bias ``[1, O]``."""
    n_a = weights["actor_head"][0].shape[1]
    n_out = n_a + weights["critic_head"][0].shape[1]
    o = _p2(n_out)
    flat, towers = [], []
    for name in ("actor", "critic"):
        k = _p2(d)
        for w, b in weights[name]:
            n = _p2(w.shape[1])
            flat += [_pad2(w, k, n), _pad2(b[None, :], 1, n)]
            k = n
        towers.append(k)
    (wa, ba), (wc, bc) = weights["actor_head"], weights["critic_head"]
    flat.append(jnp.pad(wa, ((0, towers[0] - wa.shape[0]), (0, o - n_a))))
    flat.append(jnp.pad(wc, ((0, towers[1] - wc.shape[0]), (n_a, o - n_out))))
    flat.append(jnp.pad(jnp.concatenate([ba, bc])[None, :], ((0, 0), (0, o - n_out))))
    return flat, o


def _unpacked(flat, weights):
    """Gradients of the padded weights (same order as :func:`_packed`) cut back to ``weights``' shapes."""
    out, i = {}, 0
    for name in ("actor", "critic"):
        layers = []
        for w, b in weights[name]:
            layers.append((flat[i][: w.shape[0], : w.shape[1]], flat[i + 1][0, : b.shape[0]]))
            i += 2
        out[name] = tuple(layers)
    (wa, ba), (wc, bc) = weights["actor_head"], weights["critic_head"]
    n_a, n_c = wa.shape[1], wc.shape[1]
    db = flat[i + 2][0]
    out["actor_head"] = (flat[i][: wa.shape[0], :n_a], db[:n_a])
    out["critic_head"] = (flat[i + 1][: wc.shape[0], n_a: n_a + n_c], db[n_a: n_a + n_c])
    return out


def _forward_tile(x, w, n_a: int, n_c: int, act, dt):
    """Activations of both towers for one tile (lists starting with ``x``) and the output;
    matrix products take ``dt`` operands (float32 or bfloat16) and accumulate in float32."""
    dot = lambda a, b: _dot(a.astype(dt), b.astype(dt))  # noqa: E731
    hs_a, i = [x], 0
    for _ in range(n_a):
        hs_a.append(act(dot(hs_a[-1], w[i]) + w[i + 1]))
        i += 2
    hs_c = [x]
    for _ in range(n_c):
        hs_c.append(act(dot(hs_c[-1], w[i]) + w[i + 1]))
        i += 2
    out = dot(hs_a[-1], w[i]) + dot(hs_c[-1], w[i + 1]) + w[i + 2]
    return hs_a, hs_c, out


def _fwd_kernel(x_ref, *refs, n_a, n_c, act, tile, n_tiles, dt):
    *w_refs, out_ref = refs

    def body(t, carry):  # weights are read per tile (from cache); held across the loop they fail to lower
        rows = pl.ds(pl.multiple_of(t * tile, tile), tile)
        w = [r[...] for r in w_refs]
        out_ref[rows, :] = _forward_tile(x_ref[rows, :], w, n_a, n_c, _ACT[act], dt)[2]
        return carry

    jax.lax.fori_loop(0, n_tiles, body, 0) if n_tiles > 1 else body(0, 0)


def _bwd_kernel(x_ref, g_ref, *refs, n_a, n_c, act, tile, n_tiles, with_dx, dt):
    n_w = 2 * (n_a + n_c) + 3
    w_refs, out_refs = refs[:n_w], refs[n_w:]
    dx_ref, grad_refs = (out_refs[0], out_refs[1:]) if with_dx else (None, out_refs)
    f, df = _ACT[act], _DACT[act]
    tn = lambda a, b: _dot_tn(a.astype(dt), b.astype(dt))  # noqa: E731
    nt = lambda a, b: _dot_nt(a.astype(dt), b.astype(dt))  # noqa: E731

    def tile_grads(x, g, w):
        hs_a, hs_c, _ = _forward_tile(x, w, n_a, n_c, f, dt)
        grads = [None] * n_w
        head = 2 * (n_a + n_c)
        grads[head] = tn(hs_a[-1], g)
        grads[head + 1] = tn(hs_c[-1], g)
        grads[head + 2] = jnp.sum(g, axis=0, keepdims=True)
        dx = None
        for hs, w_out, first in ((hs_a, w[head], 0), (hs_c, w[head + 1], 2 * n_a)):
            dh = nt(g, w_out)
            for layer in reversed(range(len(hs) - 1)):
                dz = dh * df(hs[layer + 1])
                j = first + 2 * layer
                grads[j] = tn(hs[layer], dz)
                grads[j + 1] = jnp.sum(dz, axis=0, keepdims=True)
                if layer or with_dx:
                    dh = nt(dz, w[j])
            if with_dx:
                dx = dh if dx is None else dx + dh
        return grads, dx

    def body(t, acc):
        rows = pl.ds(pl.multiple_of(t * tile, tile), tile)
        w = [r[...] for r in w_refs]
        grads, dx = tile_grads(x_ref[rows, :], g_ref[rows, :], w)
        if with_dx:
            dx_ref[rows, :] = dx
        return tuple(a + d for a, d in zip(acc, grads))

    zeros = tuple(jnp.zeros(r.shape, jnp.float32) for r in w_refs)
    acc = jax.lax.fori_loop(0, n_tiles, body, zeros) if n_tiles > 1 else body(0, zeros)
    for r, a in zip(grad_refs, acc):
        r[...] = a


#: experimental kernel settings (benchmarks/fused_kernel.py sweeps them): Triton pipeline
#: stages, forward-kernel tiles per program. (The operand dtype is per network: ``dot_dtype``.)
TUNING = {"num_stages": 1, "fwd_tiles": 16}


def _compiler_params(interpret: bool, num_warps: int, num_stages: int):
    if interpret:
        return {}
    from jax.experimental.pallas import triton as plt  # the GPU lowering, imported only where it runs

    return {"compiler_params": plt.CompilerParams(num_warps=num_warps, num_stages=num_stages)}


def _full(shape):
    return pl.BlockSpec(shape, lambda i: (0,) * len(shape))


@functools.lru_cache(maxsize=None)
def _custom(activation: str, interpret: bool, tile: int, per_program: int, num_warps: int, dot_dtype: str,
            tuning: tuple):
    """The ``custom_vjp`` two-tower function for one static configuration."""
    tuning = dict(tuning)
    dt = jnp.dtype(dot_dtype)
    fwd_tiles = tuning["fwd_tiles"]
    params = _compiler_params(interpret, num_warps, tuning["num_stages"])

    def shapes(x, weights):
        b, d = x.shape
        flat, o = _packed(weights, d)
        n_a, n_c = len(weights["actor"]), len(weights["critic"])
        return b, _p2(d), flat, o, n_a, n_c

    def forward(x, weights):
        b, dp, flat, o, n_a, n_c = shapes(x, weights)
        n_t = min(fwd_tiles, -(-b // tile))  # a small batch is not padded up to a whole program
        block = tile * n_t
        rows = -(-b // block) * block
        xp = _pad2(x, rows, dp)
        out = pl.pallas_call(
            functools.partial(_fwd_kernel, n_a=n_a, n_c=n_c, act=activation, tile=tile, n_tiles=n_t, dt=dt),
            out_shape=jax.ShapeDtypeStruct((rows, o), jnp.float32),
            grid=(rows // block,),
            in_specs=[pl.BlockSpec((block, dp), lambda i: (i, 0))] + [_full(w.shape) for w in flat],
            out_specs=pl.BlockSpec((block, o), lambda i: (i, 0)),
            interpret=interpret,
            **params,
        )(xp, *flat)
        n_out = weights["actor_head"][0].shape[1] + weights["critic_head"][0].shape[1]
        return out[:b, :n_out]

    def backward(x, weights, g, with_dx):
        b, dp, flat, o, n_a, n_c = shapes(x, weights)
        n_t = min(per_program, -(-b // tile))
        block = tile * n_t
        rows = -(-b // block) * block
        programs = rows // block
        xp, gp = _pad2(x, rows, dp), _pad2(g, rows, o)
        out_shape = [jax.ShapeDtypeStruct((programs,) + w.shape, jnp.float32) for w in flat]
        out_specs = [pl.BlockSpec((None,) + w.shape, lambda i, n=w.ndim: (i,) + (0,) * n) for w in flat]
        if with_dx:
            out_shape.insert(0, jax.ShapeDtypeStruct((rows, dp), jnp.float32))
            out_specs.insert(0, pl.BlockSpec((block, dp), lambda i: (i, 0)))
        outs = pl.pallas_call(
            functools.partial(_bwd_kernel, n_a=n_a, n_c=n_c, act=activation, tile=tile, n_tiles=n_t,
                              with_dx=with_dx, dt=dt),
            out_shape=out_shape,
            grid=(programs,),
            in_specs=[pl.BlockSpec((block, dp), lambda i: (i, 0)), pl.BlockSpec((block, o), lambda i: (i, 0))]
            + [_full(w.shape) for w in flat],
            out_specs=out_specs,
            interpret=interpret,
            **params,
        )(xp, gp, *flat)
        dx = outs[0][:b, : x.shape[1]] if with_dx else None
        partials = outs[1:] if with_dx else outs
        return dx, _unpacked([p.sum(axis=0) for p in partials], weights)

    @jax.custom_vjp
    def fn(x, weights):
        return forward(x, weights)

    def fn_fwd(x, weights):
        xv, wv = x.value, jax.tree.map(lambda p: p.value, weights)
        return forward(xv, wv), (xv, wv, x.perturbed)

    def fn_bwd(res, g):
        xv, wv, x_perturbed = res
        if isinstance(g, jax.custom_derivatives.SymbolicZero):
            g = jnp.zeros(g.shape, g.dtype)
        dx, dw = backward(xv, wv, g, x_perturbed)
        return dx, dw

    fn.defvjp(fn_fwd, fn_bwd, symbolic_zeros=True)
    return fn


# -- the network ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FusedActorCritic:
    """The default actor-critic network (``module``, a :class:`prpo.networks.ActorCritic`) with its
    forward and backward passes through :func:`two_tower`. Same ``init`` and parameters;
    ``dot_dtype`` (``"float32"`` or ``"bfloat16"``): the matrix products' operands."""

    module: Any
    impl: str = "auto"
    tile_rows: int = 64
    tiles_per_program: int = 32
    num_warps: int = 4
    dot_dtype: str = "float32"

    def init(self, key, obs):
        return self.module.init(key, obs)

    def apply(self, params, obs):
        m = self.module
        p = params["params"]
        batch_shape = obs.shape[: obs.ndim - m.obs_ndim]
        x = obs.reshape((-1, math.prod(obs.shape[obs.ndim - m.obs_ndim:]))).astype(jnp.float32)
        dense = lambda d: (d["kernel"], d["bias"])  # noqa: E731
        critic_head = [p["value_head"]] + ([p["median_head"]] if m.median_head else [])
        weights = {
            "actor": tuple(dense(p["actor"][f"Dense_{i}"]) for i in range(len(m.actor_hidden))),
            "critic": tuple(dense(p["critic"][f"Dense_{i}"]) for i in range(len(m.critic_hidden))),
            "actor_head": dense(p["policy_head"]),
            "critic_head": (jnp.concatenate([h["kernel"] for h in critic_head], axis=1),
                            jnp.concatenate([h["bias"] for h in critic_head])),
        }
        out = two_tower(x, weights, m.activation, self.impl, self.tile_rows, self.tiles_per_program, self.num_warps,
                        self.dot_dtype)
        head = out[:, : m.action_dim].reshape(batch_shape + (m.action_dim,))
        value = out[:, m.action_dim].reshape(batch_shape)
        if m.discrete:
            pi = head
        else:
            pi = (head, jnp.broadcast_to(p["log_std"], head.shape))
        if m.median_head:
            return pi, value, out[:, m.action_dim + 1].reshape(batch_shape)
        return pi, value


def fused_actor_critic(module, impl: str = "auto", dot_dtype: str = "float32", **kw) -> FusedActorCritic:
    """:class:`FusedActorCritic` over ``module`` with ``dot_dtype`` operands, refused (``ValueError``
    naming the field) for a network the kernel does not compute: a shared trunk, layer norm, or
    another activation; or for an unknown ``impl`` or ``dot_dtype``."""
    if getattr(module, "shared_trunk", False):
        raise ValueError("it computes separate actor and critic trunks, allowed: shared_trunk=false")
    if getattr(module, "layer_norm", False):
        raise ValueError("it has no layer norm, allowed: layer_norm=false")
    if module.activation not in ACTIVATIONS:
        raise ValueError(f"activation={module.activation!r} has no kernel, allowed activations: {', '.join(ACTIVATIONS)}")
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not known; allowed: {', '.join(IMPLS)}")
    return FusedActorCritic(module, impl, dot_dtype=_dot_dtype(dot_dtype), **kw)
