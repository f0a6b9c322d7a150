"""Flow-matching policy families: FPO (flow policy + CFM-loss ratio) and PolicyFlow.

**FPO** (Flow Matching Policy Gradients, McAllister et al., 2025). The policy is a conditional flow
``x_1 ~ N(0, I)`` at ``t = 1`` integrated to the action at ``t = 0`` with ``flow_steps`` Euler
steps ``x ← x − dt·v_θ(s, x, t)``. At rollout time every action stores ``n_mc`` pairs
``(t_i, ε_i)`` (``t_i`` on the grid ``{1/steps, …, 1}``) and their conditional flow-matching
losses ``ℓ_old,i``; the update step then uses

    x_t = t·ε + (1 − t)·a                      (straight path; velocity target ε − a)
    ε-MSE (default): ℓ_i = mean_d (x_t + (1 − t)·v_θ(s, x_t, t) − ε_i)²
    u-MSE:           ℓ_i = mean_d (v_θ(s, x_t, t) − (ε_i − a))²      (ε-MSE = (1 − t)²·u-MSE)
    log ρ = mean_i ℓ_old,i − mean_i ℓ_θ,i      ("mean_exp", the reference)
    log ρ_i = ℓ_old,i − ℓ_θ,i                  ("per_sample_clip": one clipped ratio per pair)

so the family plugs into the generic update step: the surrogate (PPO clip with a small ε) sees a
log-ratio like any other family's.

**PolicyFlow** (no public code — every choice here is ours, flagged). The
action is ``a = φ_1(z; s) + n`` with ``φ_1`` the flow integrated from ``z ~ N(0, I)`` at
``t = 0`` to ``t = 1`` (Euler, ``x ← x + dt·v``) and ``n ~ N(0, diag σ²)`` with a learned
state-independent ``log σ``. The rollout stores ``z``, ``φ̂_1``, ``n = a − φ̂_1``, ``n_mc``
times ``t_i ~ U(0, 1)`` and the rollout velocities ``v̂_i = v̂(x_{t_i})`` on the path
``x_t = (1 − t)z + t·φ̂_1``. With ``δv_i = v_θ(x_{t_i}) − v̂_i``:

    log ρ = log mean_i [ N(n; δv_i, σ_θ²) / N(n; 0, σ̂²) ]      (logsumexp, in log space)
    penalty = w_b · mean_i ‖η_i‖²,  η_i = (1 − t_i)·v_θ(x_{t_i}) − (x_{t_i} − t_i·v_ref(x_{t_i}))

``v_ref`` is the current velocity by default (the spec's reading), the stored rollout one with
``brownian_ref="frozen"``. Gaussian entropy of ``σ_θ`` is the entropy term (``ent_coef`` = w_g).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prpo.networks import ACTIVATIONS, MLP, orthogonal
from prpo.regularizers import brownian_penalty

__all__ = [
    "time_features",
    "VelocityActorCritic",
    "FlowPolicy",
    "PolicyFlowPolicy",
    "cfm_loss",
    "fpo_log_ratio",
    "policyflow_log_ratio",
    "brownian_penalty",
]


def time_features(t: jax.Array, n_freq: int = 4) -> jax.Array:
    """``[sin(2^j t), cos(2^j t)]`` for ``j < n_freq``: ``[...] -> [..., 2·n_freq]`` (FPO reference)."""
    freqs = 2.0 ** jnp.arange(n_freq, dtype=jnp.float32)
    x = t[..., None] * freqs
    return jnp.concatenate([jnp.sin(x), jnp.cos(x)], axis=-1)


class VelocityActorCritic(nn.Module):
    """Velocity ``v(s, x, t) = out_scale·MLP([s, x, time_features(t)])`` and critic ``V(s)``.

    ``obs`` ``[..., *obs_shape]`` is broadcast against ``x`` ``[..., D]`` / ``t`` ``[...]``
    (extra leading axes of ``x``, e.g. the ``n_mc`` pairs, are allowed: ``obs`` gets them).
    ``learn_std`` adds PolicyFlow's state-independent ``log_std`` parameter.
    """

    action_dim: int
    obs_ndim: int = 1
    actor_hidden: Sequence[int] = (32, 32, 32, 32)
    critic_hidden: Sequence[int] = (256, 256, 256, 256, 256)
    activation: str = "silu"
    out_scale: float = 0.25
    n_freq: int = 4
    learn_std: bool = False
    log_std_init: float = 0.0

    def setup(self):
        self.vel_torso = MLP(tuple(self.actor_hidden), self.activation)
        self.vel_head = nn.Dense(self.action_dim, kernel_init=nn.initializers.lecun_normal(), name="vel_head")
        self.critic_torso = MLP(tuple(self.critic_hidden), self.activation)
        self.value_head = nn.Dense(1, kernel_init=orthogonal(1.0), name="value_head")
        if self.learn_std:
            self.log_std = self.param("log_std", nn.initializers.constant(self.log_std_init), (self.action_dim,))

    def _flat_obs(self, obs):
        batch = obs.shape[: obs.ndim - self.obs_ndim]
        return obs.reshape(batch + (-1,)).astype(jnp.float32)

    def velocity(self, obs, x, t):
        o = self._flat_obs(obs)
        extra = x.ndim - 1 - o.ndim + 1  # leading axes of x beyond obs's batch axes
        o = o.reshape(o.shape[:-1] + (1,) * extra + o.shape[-1:])
        o = jnp.broadcast_to(o, x.shape[:-1] + o.shape[-1:])
        h = jnp.concatenate([o, x, time_features(jnp.broadcast_to(t, x.shape[:-1]), self.n_freq)], axis=-1)
        return self.out_scale * self.vel_head(self.vel_torso(h))

    def value(self, obs):
        return self.value_head(self.critic_torso(self._flat_obs(obs)))[..., 0]

    def std_param(self):
        return self.log_std

    def __call__(self, obs, x, t):
        out = (self.velocity(obs, x, t), self.value(obs))
        if self.learn_std:
            return out + (self.log_std,)
        return out


@dataclasses.dataclass(frozen=True)
class _VelocityFamily:
    """What FPO's and PolicyFlow's families share: a :class:`VelocityActorCritic`, its velocity
    and value, and a ``flow_steps``-step Euler integrator; subclasses set the direction."""

    network: nn.Module
    action_dim: int
    flow_steps: int = 10
    n_mc: int = 8

    #: ``True``: integrate from ``t = 1`` to ``t = 0`` (``x ← x − dt·v``, FPO); ``False``: from
    #: ``t = 0`` to ``t = 1`` (``x ← x + dt·v``, PolicyFlow)
    reverse_time = True

    def init(self, key, obs):
        x = jnp.zeros(obs.shape[:1] + (self.action_dim,), jnp.float32)
        return self.network.init(key, obs, x, jnp.zeros(obs.shape[:1], jnp.float32))

    def velocity(self, params, obs, x, t):
        return self.network.apply(params, obs, x, t, method="velocity")

    def value(self, params, obs):
        return self.network.apply(params, obs, method="value")

    def integrate(self, params, obs, x):
        """Euler over ``flow_steps`` steps of ``dt = 1/flow_steps`` in the family's direction."""
        dt = 1.0 / self.flow_steps

        def step(x, i):
            if self.reverse_time:
                t = jnp.full(x.shape[:-1], 1.0 - i * dt, x.dtype)
                return x - dt * self.velocity(params, obs, x, t), None
            t = jnp.full(x.shape[:-1], i * dt, x.dtype)
            return x + dt * self.velocity(params, obs, x, t), None

        x, _ = jax.lax.scan(step, x, jnp.arange(self.flow_steps, dtype=jnp.float32))
        return x

    def mode(self, params, obs):
        """The deterministic action: the flow integrated from zero noise (our choice)."""
        return self.integrate(params, obs, jnp.zeros(obs.shape[:1] + (self.action_dim,), jnp.float32))


# -- FPO ------------------------------------------------------------------------------------

def cfm_loss(velocity: jax.Array, x_t: jax.Array, t: jax.Array, eps: jax.Array, action: jax.Array, kind: str = "eps_mse"):
    """Per-pair conditional flow-matching loss, mean over action dims: ``[..., D] -> [...]``.

    ``x_t = t·ε + (1 − t)·a``; ``"eps_mse"``: ``(x_t + (1 − t)·v − ε)²``, ``"u_mse"``: ``(v − (ε − a))²``.
    """
    t = t[..., None]
    if kind == "eps_mse":
        err = x_t + (1.0 - t) * velocity - eps
    elif kind == "u_mse":
        err = velocity - (eps - action)
    else:
        raise ValueError(f"fpo_loss={kind!r}; allowed: 'eps_mse', 'u_mse'")
    return jnp.mean(jnp.square(err), axis=-1)


def fpo_log_ratio(loss_old: jax.Array, loss_new: jax.Array, kind: str = "mean_exp", clamp: float | None = None) -> jax.Array:
    """FPO log-ratio from per-pair CFM losses ``[B, N]``: ``mean ℓ_old − mean ℓ_new`` ``[B]``
    (``"mean_exp"``) or ``ℓ_old − ℓ_new`` ``[B, N]`` (``"per_sample_clip"``), clipped to
    ``[−clamp, clamp]`` when ``clamp`` is given (zero gradient outside: such a sample is far beyond
    any PPO clip range, and ``exp`` of an unbounded loss difference can overflow)."""
    if kind == "mean_exp":
        log_ratio = loss_old.mean(-1) - loss_new.mean(-1)
    elif kind == "per_sample_clip":
        log_ratio = loss_old - loss_new
    else:
        raise ValueError(f"fpo_ratio={kind!r}; allowed: 'mean_exp', 'per_sample_clip'")
    return log_ratio if clamp is None else jnp.clip(log_ratio, -clamp, clamp)


@dataclasses.dataclass(frozen=True)
class FlowPolicy(_VelocityFamily):
    """Flow-matching policy family with the FPO ratio (see the module docstring).

    ``action_dim``: flat action size. ``flow_steps``: Euler steps of the sampler. ``n_mc``:
    stored (t, ε) pairs per action. ``loss``: ``"eps_mse"`` / ``"u_mse"``. ``ratio``:
    ``"mean_exp"`` / ``"per_sample_clip"``. ``log_ratio_clamp``: ``None`` (the reference) or ``c``
    for ``log ρ ∈ [−c, c]``. ``mode`` integrates from ``x_1 = 0`` (our choice).
    Entropy is not available: ``extras["entropy"]`` is zeros (use ``ent_coef = 0``).
    """

    loss: str = "eps_mse"
    ratio: str = "mean_exp"
    log_ratio_clamp: float | None = None

    def sample(self, params, obs, key):
        x1 = jax.random.normal(key, obs.shape[:1] + (self.action_dim,), jnp.float32)
        return self.integrate(params, obs, x1)

    def losses(self, params, obs, action, t, eps):
        """Per-pair CFM losses ``[B, N]`` for pairs ``t`` ``[B, N]``, ``eps`` ``[B, N, D]``."""
        a = action.reshape(action.shape[:1] + (1, self.action_dim))
        x_t = t[..., None] * eps + (1.0 - t[..., None]) * a
        v = self.velocity(params, obs, x_t, t)
        return cfm_loss(v, x_t, t, eps, a, self.loss)

    def act(self, params, obs, key):
        k_x, k_t, k_eps = jax.random.split(key, 3)
        action = self.sample(params, obs, k_x)
        b = obs.shape[0]
        t = jax.random.randint(k_t, (b, self.n_mc), 1, self.flow_steps + 1).astype(jnp.float32) / self.flow_steps
        eps = jax.random.normal(k_eps, (b, self.n_mc, self.action_dim), jnp.float32)
        aux = {
            "value": self.value(params, obs),
            "t": t,
            "eps": eps,
            "cfm_loss": self.losses(params, obs, action, t, eps),
        }
        return action, jax.tree.map(jax.lax.stop_gradient, aux)

    def log_ratio(self, params, obs, action, aux, key=None):
        loss = self.losses(params, obs, action, aux["t"], aux["eps"])
        log_ratio = fpo_log_ratio(aux["cfm_loss"], loss, self.ratio, self.log_ratio_clamp)
        value = self.value(params, obs)
        extras = {
            "entropy": jnp.zeros_like(value),
            "value": value,
            "log_prob": -loss.mean(-1),  # an ELBO-like surrogate, not a log-likelihood
            "cfm_loss": loss.mean(-1),
        }
        return log_ratio, extras


# -- PolicyFlow -----------------------------------------------------------------------------

def _gauss_logpdf(x, mean, log_std):
    return jnp.sum(-0.5 * jnp.square((x - mean) * jnp.exp(-log_std)) - log_std - 0.5 * np.log(2 * np.pi), axis=-1)


def policyflow_log_ratio(noise, dv, log_std, log_std_old):
    """``log mean_i [N(n; δv_i, σ²) / N(n; 0, σ̂²)]`` for ``noise`` ``[B, D]``, ``dv`` ``[B, N, D]``."""
    n = noise[:, None, :]
    log_w = _gauss_logpdf(n, dv, log_std[:, None, :]) - _gauss_logpdf(n, 0.0, log_std_old[:, None, :])
    return jax.scipy.special.logsumexp(log_w, axis=-1) - np.log(dv.shape[1])


@dataclasses.dataclass(frozen=True)
class PolicyFlowPolicy(_VelocityFamily):
    """PolicyFlow family (module docstring; ``network`` is ``VelocityActorCritic(learn_std=True)``).
    Needs ``hp.brownian_coef`` (``needs_hp``)."""

    brownian_ref: str = "current"
    needs_hp = True
    reverse_time = False  # from z at t = 0 to the action at t = 1

    def _log_std(self, params, b):
        return jnp.broadcast_to(self.network.apply(params, method="std_param"), (b, self.action_dim))

    def _path(self, aux):
        t = aux["t"][..., None]
        return (1.0 - t) * aux["z"][:, None, :] + t * aux["phi"][:, None, :]

    def act(self, params, obs, key):
        k_z, k_n, k_t = jax.random.split(key, 3)
        b = obs.shape[0]
        z = jax.random.normal(k_z, (b, self.action_dim), jnp.float32)
        phi = self.integrate(params, obs, z)
        log_std = self._log_std(params, b)
        noise = jnp.exp(log_std) * jax.random.normal(k_n, phi.shape, jnp.float32)
        t = jax.random.uniform(k_t, (b, self.n_mc), jnp.float32)
        aux = {"value": self.value(params, obs), "z": z, "phi": phi, "t": t, "log_std": log_std}
        aux["v"] = self.velocity(params, obs, self._path(aux), t)
        return phi + noise, jax.tree.map(jax.lax.stop_gradient, aux)

    def log_ratio(self, params, obs, action, aux, key=None, hp=None):
        x_t = self._path(aux)
        v = self.velocity(params, obs, x_t, aux["t"])
        log_std = self._log_std(params, obs.shape[0])
        log_ratio = policyflow_log_ratio(action - aux["phi"], v - aux["v"], log_std, aux["log_std"])
        value = self.value(params, obs)
        v_ref = v if self.brownian_ref == "current" else aux["v"]
        penalty = brownian_penalty(aux["t"], x_t, v, v_ref)
        entropy = jnp.sum(log_std + 0.5 * np.log(2 * np.pi * np.e), axis=-1)
        extras = {"entropy": entropy, "value": value, "log_prob": log_ratio + _gauss_logpdf(action - aux["phi"], 0.0, aux["log_std"]),
                  "brownian": penalty}
        if hp is not None:
            extras["penalty"] = hp.brownian_coef * penalty
        return log_ratio, extras


def make_velocity_network(action_dim, obs_ndim, actor_hidden, critic_hidden, activation, learn_std=False, log_std_init=0.0):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not known; allowed: {sorted(ACTIVATIONS)}")
    return VelocityActorCritic(
        action_dim=action_dim, obs_ndim=obs_ndim, actor_hidden=tuple(actor_hidden),
        critic_hidden=tuple(critic_hidden), activation=activation, learn_std=learn_std, log_std_init=log_std_init,
    )
