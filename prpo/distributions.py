"""Action distributions as pure functions plus thin ``flax.struct`` wrappers.

Every quantity is computed by a small pure function (``categorical_*``,
``diag_gaussian_*``, ``tanh_gaussian_*``); the dataclasses ``Categorical``,
``DiagGaussian`` and ``TanhGaussian`` just hold the parameters and forward to
them. The dataclasses are pytrees, so they can be returned from networks,
passed through ``jax.jit`` / ``jax.vmap`` and stored in rollouts.

Shape conventions: the last axis of the parameters is the event axis (number
of discrete actions for ``Categorical``, action dimensions for the Gaussians);
all leading axes are batch axes. Per-sample quantities (``log_prob``,
``entropy``, ``kl``) reduce the event axis and have the batch shape ``[...]``.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp

__all__ = [
    "categorical_sample",
    "categorical_log_prob",
    "categorical_entropy",
    "categorical_kl",
    "categorical_mode",
    "diag_gaussian_sample",
    "diag_gaussian_log_prob",
    "diag_gaussian_entropy",
    "diag_gaussian_kl",
    "tanh_log_det_jacobian",
    "tanh_gaussian_log_prob_pre_tanh",
    "tanh_gaussian_log_prob",
    "tanh_gaussian_entropy",
    "TANH_CLIP",
    "Categorical",
    "DiagGaussian",
    "TanhGaussian",
]

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)

# Squashed actions are clipped to (-1 + TANH_CLIP, 1 - TANH_CLIP) before atanh.
TANH_CLIP = 1e-6


# ----------------------------------------------------------------------------
# Categorical
# ----------------------------------------------------------------------------


def categorical_sample(key: jax.Array, logits: jax.Array) -> jax.Array:
    """Samples actions from a categorical distribution.

    Args:
      key: PRNG key.
      logits: unnormalised log-probabilities, shape [..., A].

    Returns:
      int32 actions, shape [...].
    """
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def categorical_log_prob(logits: jax.Array, actions: jax.Array) -> jax.Array:
    """Log-probability of integer ``actions``.

    Args:
      logits: shape [..., A].
      actions: integer actions, shape [...].

    Returns:
      log pi(actions), shape [...].
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    idx = jnp.asarray(actions).astype(jnp.int32)[..., None]
    return jnp.take_along_axis(logp, idx, axis=-1)[..., 0]


def _plogq(logp: jax.Array, logq: jax.Array) -> jax.Array:
    """Elementwise p * log q with the convention 0 * log 0 = 0 (NaN-free grads)."""
    p = jnp.exp(logp)
    safe_logq = jnp.where(p > 0, logq, 0.0)
    return p * safe_logq


def categorical_entropy(logits: jax.Array) -> jax.Array:
    """Entropy -sum_a p(a) log p(a). logits [..., A] -> [...]."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(_plogq(logp, logp), axis=-1)


def categorical_kl(logits_p: jax.Array, logits_q: jax.Array) -> jax.Array:
    """KL(p || q) = sum_a p(a) (log p(a) - log q(a)). [..., A] -> [...]."""
    logp = jax.nn.log_softmax(logits_p, axis=-1)
    logq = jax.nn.log_softmax(logits_q, axis=-1)
    return jnp.sum(_plogq(logp, logp) - _plogq(logp, logq), axis=-1)


def categorical_mode(logits: jax.Array) -> jax.Array:
    """Most likely action, int32. [..., A] -> [...]."""
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


# ----------------------------------------------------------------------------
# Diagonal Gaussian
# ----------------------------------------------------------------------------


def _event_shape(mean: jax.Array, log_std: jax.Array) -> tuple[int, ...]:
    return jnp.broadcast_shapes(jnp.shape(mean), jnp.shape(log_std))


def diag_gaussian_sample(
    key: jax.Array, mean: jax.Array, log_std: jax.Array
) -> jax.Array:
    """Reparameterised sample mean + exp(log_std) * eps, eps ~ N(0, I).

    Args:
      key: PRNG key.
      mean: shape [..., D].
      log_std: broadcastable to ``mean``.

    Returns:
      sample of shape broadcast(mean, log_std) = [..., D].
    """
    mean = jnp.asarray(mean)
    eps = jax.random.normal(key, _event_shape(mean, log_std), dtype=mean.dtype)
    return mean + jnp.exp(log_std) * eps


def diag_gaussian_log_prob(
    mean: jax.Array, log_std: jax.Array, x: jax.Array
) -> jax.Array:
    """log N(x; mean, diag(exp(log_std)^2)), summed over the last axis.

    Args:
      mean: [..., D]; log_std: broadcastable to mean; x: [..., D].

    Returns:
      shape [...].
    """
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - 0.5 * _LOG_2PI, axis=-1)


def diag_gaussian_entropy(mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """Entropy sum_d (0.5 + 0.5 log(2 pi) + log_std_d).

    ``mean`` only supplies the shape (log_std may be a broadcast [D] vector).
    Returns shape [...].
    """
    log_std = jnp.broadcast_to(log_std, _event_shape(mean, log_std))
    return jnp.sum(0.5 + 0.5 * _LOG_2PI + log_std, axis=-1)


def diag_gaussian_kl(
    mean_p: jax.Array,
    log_std_p: jax.Array,
    mean_q: jax.Array,
    log_std_q: jax.Array,
) -> jax.Array:
    """Analytic KL(p || q) between diagonal Gaussians, summed over last axis.

    KL = sum_d [ log s_q - log s_p + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2 ].
    Returns shape [...].
    """
    var_ratio = jnp.exp(2.0 * (log_std_p - log_std_q))
    mahal = jnp.square((mean_p - mean_q) * jnp.exp(-log_std_q))
    kl = (log_std_q - log_std_p) + 0.5 * (var_ratio + mahal) - 0.5
    shape = jnp.broadcast_shapes(
        jnp.shape(mean_p), jnp.shape(log_std_p), jnp.shape(mean_q), jnp.shape(log_std_q)
    )
    return jnp.sum(jnp.broadcast_to(kl, shape), axis=-1)


# ----------------------------------------------------------------------------
# Tanh-squashed Gaussian
# ----------------------------------------------------------------------------


def tanh_log_det_jacobian(u: jax.Array) -> jax.Array:
    """sum_d log(1 - tanh(u_d)^2), computed stably as 2*(log2 - u - softplus(-2u)).

    u: pre-tanh values [..., D] -> [...].
    """
    return jnp.sum(2.0 * (_LOG_2 - u - jax.nn.softplus(-2.0 * u)), axis=-1)


def tanh_gaussian_log_prob_pre_tanh(
    mean: jax.Array, log_std: jax.Array, u: jax.Array
) -> jax.Array:
    """log density of the squashed action tanh(u), given the pre-tanh sample u.

    log p(tanh(u)) = log N(u; mean, std) - sum_d log(1 - tanh(u_d)^2).
    Preferred over ``tanh_gaussian_log_prob`` when u is available (no atanh).
    u: [..., D] -> [...].
    """
    return diag_gaussian_log_prob(mean, log_std, u) - tanh_log_det_jacobian(u)


def tanh_gaussian_log_prob(
    mean: jax.Array, log_std: jax.Array, x: jax.Array
) -> jax.Array:
    """log density of a squashed action x in (-1, 1)^D.

    x is clipped to (-1 + TANH_CLIP, 1 - TANH_CLIP) before atanh so that
    actions at the boundary give finite values. x: [..., D] -> [...].
    """
    x = jnp.clip(x, -1.0 + TANH_CLIP, 1.0 - TANH_CLIP)
    return tanh_gaussian_log_prob_pre_tanh(mean, log_std, jnp.arctanh(x))


def tanh_gaussian_entropy(
    key: jax.Array, mean: jax.Array, log_std: jax.Array
) -> jax.Array:
    """Single-sample Monte-Carlo estimate of the entropy of tanh(N(mean, std)).

    The squashed entropy has no closed form. Using
    H[tanh(U)] = H[U] + E_u[ sum_d log(1 - tanh(u_d)^2) ],
    we return the analytic Gaussian entropy plus the log-det-Jacobian at ONE
    reparameterised sample u ~ N(mean, std). This is an unbiased estimate of
    the entropy (lower variance than -log p(tanh(u))), and it is
    differentiable w.r.t. mean and log_std through the reparameterisation.
    Returns shape [...].
    """
    u = diag_gaussian_sample(key, mean, log_std)
    return diag_gaussian_entropy(mean, log_std) + tanh_log_det_jacobian(u)


# ----------------------------------------------------------------------------
# Dataclass wrappers
# ----------------------------------------------------------------------------


@flax.struct.dataclass
class Categorical:
    """Categorical distribution over the last axis of ``logits`` [..., A]."""

    logits: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        """int32 actions [...]."""
        return categorical_sample(key, self.logits)

    def log_prob(self, actions: jax.Array) -> jax.Array:
        """log pi(actions) [...]."""
        return categorical_log_prob(self.logits, actions)

    def entropy(self) -> jax.Array:
        """Entropy [...]."""
        return categorical_entropy(self.logits)

    def kl(self, other: "Categorical") -> jax.Array:
        """KL(self || other) [...]."""
        return categorical_kl(self.logits, other.logits)

    def mode(self) -> jax.Array:
        """argmax action, int32 [...]."""
        return categorical_mode(self.logits)


@flax.struct.dataclass
class DiagGaussian:
    """Diagonal Gaussian; ``mean`` [..., D], ``log_std`` broadcastable to it."""

    mean: jax.Array
    log_std: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        """Reparameterised sample [..., D]."""
        return diag_gaussian_sample(key, self.mean, self.log_std)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """log density summed over action dims [...]."""
        return diag_gaussian_log_prob(self.mean, self.log_std, x)

    def entropy(self) -> jax.Array:
        """Entropy summed over action dims [...]."""
        return diag_gaussian_entropy(self.mean, self.log_std)

    def kl(self, other: "DiagGaussian") -> jax.Array:
        """Analytic KL(self || other), summed over action dims [...]."""
        return diag_gaussian_kl(self.mean, self.log_std, other.mean, other.log_std)

    def mode(self) -> jax.Array:
        """The mean, broadcast to the event shape [..., D]."""
        return jnp.broadcast_to(self.mean, _event_shape(self.mean, self.log_std))


@flax.struct.dataclass
class TanhGaussian:
    """tanh(u), u ~ N(mean, exp(log_std)^2) (diagonal); actions in (-1, 1)^D."""

    mean: jax.Array
    log_std: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        """Squashed reparameterised sample tanh(u) [..., D]."""
        return jnp.tanh(diag_gaussian_sample(key, self.mean, self.log_std))

    def sample_and_log_prob(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(tanh(u) [..., D], log p(tanh(u)) [...]) using u directly (no atanh)."""
        u = diag_gaussian_sample(key, self.mean, self.log_std)
        return jnp.tanh(u), tanh_gaussian_log_prob_pre_tanh(self.mean, self.log_std, u)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """log density of squashed actions x [..., D] -> [...] (x clipped inside)."""
        return tanh_gaussian_log_prob(self.mean, self.log_std, x)

    def log_prob_pre_tanh(self, u: jax.Array) -> jax.Array:
        """log density of tanh(u) given the unsquashed sample u [..., D] -> [...]."""
        return tanh_gaussian_log_prob_pre_tanh(self.mean, self.log_std, u)

    def entropy(self, key: jax.Array) -> jax.Array:
        """Single-sample entropy estimate; see ``tanh_gaussian_entropy``."""
        return tanh_gaussian_entropy(key, self.mean, self.log_std)

    def mode(self) -> jax.Array:
        """tanh(mean) [..., D] (mode of the pre-tanh Gaussian, squashed)."""
        return jnp.tanh(jnp.broadcast_to(self.mean, _event_shape(self.mean, self.log_std)))
