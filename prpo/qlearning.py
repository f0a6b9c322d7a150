"""The value-based policy family: a LayerNorm Q-network acting ε-greedily (PQN's pieces).

* :class:`QNetwork` / :func:`make_q_network` — ``obs -> Q [..., A]`` with LayerNorm before every
  activation (an MLP, or a 3×3 conv torso for image observations);
* :class:`QPolicy` — a policy family whose ``act`` is ε-greedy and whose ``aux["value"]`` is
  ``max_a Q(s_t, a)`` at act time, so the training loop's bootstrap values (``value(final_obs)``
  at truncation, ``value(last_obs)`` at the end of the rollout) are the Q(λ) bootstraps;
* :func:`epsilon_greedy`, :func:`linear_epsilon` (the per-update ε schedule) and :func:`td_loss`.

The algorithm that trains them (targets, loss, schedule, presets) is :mod:`prpo.algorithms.pqn`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from prpo.networks import ACTIVATIONS

__all__ = [
    "QNetwork",
    "QPolicy",
    "epsilon_greedy",
    "linear_epsilon",
    "td_loss",
    "make_q_network",
]


class QNetwork(nn.Module):
    """Q-network ``obs [..., *obs_shape] -> Q [..., num_actions]`` with LayerNorm before every activation.

    ``torso="mlp"``: ``Dense → LayerNorm → act`` per width of ``hidden`` (observations flattened
    over ``obs_ndim`` axes). ``torso="conv"`` (MinAtar, ``[..., H, W, C]`` inputs): a 3×3 VALID
    conv with 16 channels → LayerNorm → act, flatten, then the MLP layers of ``hidden``
    (purejaxql: one of 128). He-normal kernels, zero biases. ``layer_norm=False`` removes the
    normalisation (the ablation the paper shows diverging).
    """

    num_actions: int
    hidden: Sequence[int] = (256, 256)
    torso: str = "mlp"
    obs_ndim: int = 1
    activation: str = "relu"
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs):
        act = ACTIVATIONS[self.activation]
        norm = (lambda h: nn.LayerNorm()(h)) if self.layer_norm else (lambda h: h)
        init = nn.initializers.he_normal()
        batch_shape = obs.shape[: obs.ndim - self.obs_ndim]
        x = obs.astype(jnp.float32)
        if self.torso == "conv":
            x = x.reshape((-1,) + obs.shape[obs.ndim - self.obs_ndim :])
            x = act(norm(nn.Conv(16, kernel_size=(3, 3), padding="VALID", kernel_init=init)(x)))
            x = x.reshape(batch_shape + (-1,))
        else:
            x = x.reshape(batch_shape + (-1,))
        for width in self.hidden:
            x = act(norm(nn.Dense(width, kernel_init=init)(x)))
        return nn.Dense(self.num_actions, kernel_init=init, name="q_head")(x)


def make_q_network(num_actions: int, obs_shape: Sequence[int], hidden=(256, 256), torso="auto", activation="relu", layer_norm=True) -> QNetwork:
    """The default PQN network: a conv torso for image observations (``[H, W, C]``), else an MLP."""
    if torso == "auto":
        torso = "conv" if len(obs_shape) == 3 else "mlp"
    return QNetwork(
        num_actions=num_actions, hidden=tuple(hidden), torso=torso, obs_ndim=len(obs_shape),
        activation=activation, layer_norm=layer_norm,
    )


def linear_epsilon(update, num_updates: int, eps_start, eps_finish, eps_decay):
    """ε for update ``update`` (0-based): linear from ``eps_start`` to ``eps_finish`` over the
    first ``eps_decay · num_updates`` updates, then constant (optax ``linear_schedule`` semantics)."""
    horizon = jnp.maximum(eps_decay * num_updates, 1e-8)
    frac = jnp.clip(jnp.asarray(update, jnp.float32) / horizon, 0.0, 1.0)
    return eps_start + frac * (eps_finish - eps_start)


def epsilon_greedy(key, q: jax.Array, epsilon) -> jax.Array:
    """With probability ε a uniform random action, else ``argmax_a q`` (per row of ``q [..., A]``)."""
    k_explore, k_action = jax.random.split(key)
    greedy = jnp.argmax(q, axis=-1)
    random = jax.random.randint(k_action, greedy.shape, 0, q.shape[-1])
    explore = jax.random.uniform(k_explore, greedy.shape) < epsilon
    return jnp.where(explore, random, greedy)


def td_loss(q_taken: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-sample ``0.5 · (Q(s, a) − sg(G))²`` (the targets are constants)."""
    return 0.5 * jnp.square(q_taken - jax.lax.stop_gradient(targets))


@dataclasses.dataclass(frozen=True)
class QPolicy:
    """ε-greedy policy family over a Q-network ``network(obs) -> Q [..., A]``.

    ``act`` stores ``aux = {"value": max_a Q(s, a)}`` (rollout-time, no gradient): the training
    loop builds the Q(λ) bootstraps from it. ``behaviour(ε)`` returns the family acting with
    that ε (the loop sets it once per update from the schedule); ``mode`` is greedy.
    """

    network: nn.Module
    epsilon: Any = 0.0

    def init(self, key, obs):
        return self.network.init(key, obs)

    def q_values(self, params, obs):
        return self.network.apply(params, obs)

    def behaviour(self, epsilon) -> "QPolicy":
        return dataclasses.replace(self, epsilon=epsilon)

    def act(self, params, obs, key):
        q = self.q_values(params, obs)
        return epsilon_greedy(key, q, self.epsilon), {"value": q.max(axis=-1)}

    def value(self, params, obs):
        return self.q_values(params, obs).max(axis=-1)

    def mode(self, params, obs):
        return jnp.argmax(self.q_values(params, obs), axis=-1)

    def log_ratio(self, params, obs, action, aux, key=None):
        raise TypeError("QPolicy is value-based: it has no likelihood ratio (train it with algo='pqn')")
