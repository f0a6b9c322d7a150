"""Networks: small Flax modules and the factory that builds an actor-critic.

A network is injected into a policy family (brax style): any ``flax.linen.Module`` whose
``__call__(obs) -> (policy_out, value)`` (or ``(policy_out, value, median)`` for BPO) works, where ``policy_out`` is the logits ``[..., n]``
of a categorical policy or the ``(mean, log_std)`` pair of a Gaussian one and ``value`` is
``[...]``.  :func:`make_actor_critic` builds the standard MLP versions with orthogonal init
(√2 hidden, 0.01 policy head, 1.0 value head), separate or shared trunk.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import custom_batching

__all__ = ["ACTIVATIONS", "MLP", "ActorCritic", "make_actor_critic", "orthogonal"]

ACTIVATIONS: dict[str, Callable] = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "silu": nn.silu,
    "gelu": nn.gelu,
    "elu": nn.elu,
}


def orthogonal(scale: float = 1.0, column_axis: int = -1):
    """``jax.nn.initializers.orthogonal(scale, column_axis)`` whose ``vmap`` is a sequential map.

    The same values as JAX's initializer for every key. Vmapped (seeds, sweeps: ``vmap(train)``),
    JAX's version becomes one batched LAPACK QR, and on CPU jaxlib splits a batched QR over XLA's
    intra-op thread pool and blocks a pool thread until the pieces finish. Two such QRs running
    at once on a 2-thread pool (a 2-core machine) wait for each other forever: every thread
    parked, the program hung in initialisation. A ``lax.map`` over the batch issues one
    unbatched QR at a time, which never waits on the pool.
    """
    base = nn.initializers.orthogonal(scale, column_axis)

    def init(key, shape, dtype=jnp.float32):
        @custom_batching.custom_vmap
        def one(k):
            return base(k, shape, dtype)

        @one.def_vmap
        def _batched(axis_size, in_batched, k):
            return jax.lax.map(one, k), True

        return one(key)

    return init


_ortho = orthogonal


class MLP(nn.Module):
    """Fully connected torso: ``Dense -> [LayerNorm] -> activation`` per hidden layer."""

    hidden: Sequence[int]
    activation: str = "tanh"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        for width in self.hidden:
            x = nn.Dense(width, kernel_init=_ortho(np.sqrt(2.0)), bias_init=nn.initializers.zeros)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        return x


class ActorCritic(nn.Module):
    """MLP actor-critic for one observation batch ``[..., *obs_shape]``.

    Observations are flattened over ``obs_ndim`` trailing axes. ``discrete`` selects a logits
    head with ``action_dim`` outputs; otherwise a Gaussian mean head plus a state-independent
    ``log_std`` parameter initialised to ``log_std_init``.
    """

    action_dim: int
    discrete: bool
    obs_ndim: int = 1
    actor_hidden: Sequence[int] = (64, 64)
    critic_hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"
    shared_trunk: bool = False
    layer_norm: bool = False
    log_std_init: float = 0.0
    median_head: bool = False  # BPO: a second critic output u(s), returned as a third element

    @nn.compact
    def __call__(self, obs):
        batch_shape = obs.shape[: obs.ndim - self.obs_ndim]
        x = obs.reshape(batch_shape + (-1,)).astype(jnp.float32)
        if self.shared_trunk:
            h = MLP(self.actor_hidden, self.activation, self.layer_norm, name="trunk")(x)
            h_pi, h_v = h, h
        else:
            h_pi = MLP(self.actor_hidden, self.activation, self.layer_norm, name="actor")(x)
            h_v = MLP(self.critic_hidden, self.activation, self.layer_norm, name="critic")(x)
        value = nn.Dense(1, kernel_init=_ortho(1.0), bias_init=nn.initializers.zeros, name="value_head")(h_v)
        head = nn.Dense(self.action_dim, kernel_init=_ortho(0.01), bias_init=nn.initializers.zeros, name="policy_head")(h_pi)
        if self.discrete:
            out = head
        else:
            log_std = self.param("log_std", nn.initializers.constant(self.log_std_init), (self.action_dim,))
            out = (head, jnp.broadcast_to(log_std, head.shape))
        if self.median_head:
            median = nn.Dense(1, kernel_init=_ortho(1.0), bias_init=nn.initializers.zeros, name="median_head")(h_v)
            return out, value[..., 0], median[..., 0]
        return out, value[..., 0]


def make_actor_critic(
    action_dim: int,
    discrete: bool,
    obs_ndim: int = 1,
    actor_hidden: Sequence[int] = (64, 64),
    critic_hidden: Sequence[int] | None = None,
    activation: str = "tanh",
    shared_trunk: bool = False,
    layer_norm: bool = False,
    log_std_init: float = 0.0,
    median_head: bool = False,
) -> ActorCritic:
    """Factory for the default :class:`ActorCritic` (the injectable default network)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not known; allowed: {sorted(ACTIVATIONS)}")
    return ActorCritic(
        action_dim=action_dim,
        discrete=discrete,
        obs_ndim=obs_ndim,
        actor_hidden=tuple(actor_hidden),
        critic_hidden=tuple(critic_hidden if critic_hidden is not None else actor_hidden),
        activation=activation,
        shared_trunk=shared_trunk,
        layer_norm=layer_norm,
        log_std_init=log_std_init,
        median_head=median_head,
    )
