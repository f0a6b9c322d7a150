"""Mixture-of-Gaussians policy family (PMOE: Ren et al., 2021, "Probabilistic Mixture-of-Experts
for Efficient Deep Reinforcement Learning", arXiv 2104.09122).

The policy is a K-component Gaussian mixture with a state-dependent categorical gate (the
"routing function") over diagonal-Gaussian "primitives":

    π(a|s) = Σ_k w_k(s) N(a; μ_k(s), diag σ_k²),      w(s) = softmax(g(s))
    log π(a|s) = logsumexp_k [ log w_k(s) + log N(a; μ_k(s), σ_k²) ]      (exact, summed over dims)

Sampling draws ``k ~ Cat(w)`` and then ``a ~ N(μ_k, σ_k²)``. The log-likelihood is exact, so a
likelihood-ratio method (PPO) needs no gradient estimator at all: the gradient of ``log π``
with respect to the gate logits is the posterior responsibility minus the prior,
``∂ log π/∂g_k = γ_k − w_k`` with ``γ_k = w_k N_k(a) / Σ_j w_j N_j(a)``, and with respect to a
component's parameters it is ``γ_k ∂ log N_k(a)``. (The paper's estimator exists for SAC, whose
reparameterised action cannot be differentiated through the discrete choice of ``k``; see
:mod:`prpo.algorithms.pmoe` for the paper's frequency loss, offered as an option.)

Network (:class:`MixtureActorCritic`): the actor MLP gives the K means (one head of ``K·D``
outputs, component ``k`` in columns ``k·D … (k+1)·D − 1``, orthogonal init 0.01) and the gate
logits (a head of K outputs, orthogonal init 0.01: near-uniform gates); the log-stds are a
state-independent ``[K, D]`` parameter (``log_std_init``); the critic MLP gives V(s). With K = 1
the modules and their names are those of :class:`prpo.networks.ActorCritic`, so the same key
gives the same parameters and the family is the Gaussian one exactly. ``mean_spread`` > 0
initialises the mean head's bias with ``spread·N(0, 1)`` per component and dimension (an
UNVERIFIED option to break the symmetry of the near-identical components at init; the reference
starts from zero biases). An optional Q-network ``Q(s, a)`` (``q_critic``) serves the frequency
loss.

Entropy: a mixture has no closed-form entropy. ``entropy="mc"`` (default) is a stratified
Monte-Carlo estimate with one reparameterised sample per component,

    Ĥ = −Σ_k w_k log π(μ_k + σ_k ε_k),     ε_k ~ N(0, I) fresh per call,

unbiased for H(π) and, unlike the score-function form, differentiable in the gate weights
(pathwise in μ, σ, exact in w). ``entropy="bound"`` is the analytic upper bound
``H(w) + Σ_k w_k H(N_k) ≥ H(π)`` (tight when the components do not overlap; the Gaussian entropy
at K = 1).

Aux (rollout record): ``log_prob`` (the mixture's, at the sampled action) and ``value``. No
analytic KL (``kl_schedule`` must be ``"none"``). ``mode``: the mean of the most probable
component (largest gate weight), not the mixture's density maximum.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from prpo.distributions import categorical_entropy, diag_gaussian_entropy, diag_gaussian_log_prob
from prpo.networks import ACTIVATIONS, MLP, orthogonal

__all__ = [
    "mixture_component_log_probs",
    "mixture_log_prob",
    "mixture_responsibilities",
    "mixture_sample",
    "mixture_entropy_bound",
    "mixture_entropy_mc",
    "mixture_mode",
    "GaussianMixture",
    "MixtureActorCritic",
    "make_mixture_actor_critic",
    "MixturePolicy",
    "GATES",
    "ENTROPIES",
]

#: how the gate is trained: the exact likelihood only; the paper's frequency loss added; the
#: frequency loss alone (the gate under stop-gradient inside the likelihood)
GATES = ("likelihood", "frequency", "frequency_only")
ENTROPIES = ("mc", "bound")


# -- pure functions: gate logits [..., K], means / log_stds [..., K, D], actions [..., D] -------

def mixture_component_log_probs(gate_logits, means, log_stds, x):
    """``log w_k + log N(x; μ_k, σ_k²)`` per component: ``[..., K]``."""
    log_w = jax.nn.log_softmax(gate_logits, axis=-1)
    return log_w + diag_gaussian_log_prob(means, log_stds, x[..., None, :])


def mixture_log_prob(gate_logits, means, log_stds, x):
    """Exact ``log Σ_k w_k N(x; μ_k, σ_k²)``: ``[...]``."""
    return jax.scipy.special.logsumexp(mixture_component_log_probs(gate_logits, means, log_stds, x), axis=-1)


def mixture_responsibilities(gate_logits, means, log_stds, x):
    """Posterior component probabilities ``γ_k = P(k | x)``: ``[..., K]``."""
    return jax.nn.softmax(mixture_component_log_probs(gate_logits, means, log_stds, x), axis=-1)


def mixture_sample(key, gate_logits, means, log_stds):
    """``(x [..., D], k [...])``: ``k ~ Cat(softmax(g))``, ``x = μ_k + σ_k ε``.

    ``ε`` is drawn from ``key`` itself (as :func:`prpo.distributions.diag_gaussian_sample` does,
    so K = 1 samples the Gaussian family's actions) and ``k`` from ``fold_in(key, 1)``."""
    comp = jax.random.categorical(jax.random.fold_in(key, 1), gate_logits, axis=-1)
    k_eps = key
    pick = lambda p: jnp.take_along_axis(p, comp[..., None, None], axis=-2)[..., 0, :]  # noqa: E731
    mean = pick(means)
    log_std = pick(jnp.broadcast_to(log_stds, means.shape))
    x = mean + jnp.exp(log_std) * jax.random.normal(k_eps, mean.shape, mean.dtype)
    return x, comp.astype(jnp.int32)


def mixture_entropy_bound(gate_logits, means, log_stds):
    """``H(w) + Σ_k w_k H(N_k)``, an upper bound on the mixture entropy: ``[...]``."""
    w = jax.nn.softmax(gate_logits, axis=-1)
    return categorical_entropy(gate_logits) + jnp.sum(w * diag_gaussian_entropy(means, log_stds), axis=-1)


def mixture_entropy_mc(key, gate_logits, means, log_stds):
    """Stratified one-sample-per-component estimate ``−Σ_k w_k log π(μ_k + σ_k ε_k)``: ``[...]``."""
    eps = jax.random.normal(key, jnp.broadcast_shapes(means.shape, jnp.shape(log_stds)), means.dtype)
    samples = means + jnp.exp(log_stds) * eps  # [..., K, D]: one per component
    # log π at every component's sample: [..., K(sample), K(component)] -> logsumexp over components
    lp = mixture_log_prob(gate_logits[..., None, :], means[..., None, :, :], log_stds[..., None, :, :], samples)
    w = jax.nn.softmax(gate_logits, axis=-1)
    return -jnp.sum(w * lp, axis=-1)


def mixture_mode(gate_logits, means):
    """The mean of the most probable component: ``[..., D]``."""
    k = jnp.argmax(gate_logits, axis=-1)
    return jnp.take_along_axis(means, k[..., None, None], axis=-2)[..., 0, :]


@flax.struct.dataclass
class GaussianMixture:
    """K-component diagonal-Gaussian mixture; ``gate_logits`` [..., K], ``means`` [..., K, D],
    ``log_stds`` broadcastable to ``means``."""

    gate_logits: jax.Array
    means: jax.Array
    log_stds: jax.Array

    @property
    def weights(self):
        return jax.nn.softmax(self.gate_logits, axis=-1)

    def sample(self, key):
        return mixture_sample(key, self.gate_logits, self.means, self.log_stds)[0]

    def log_prob(self, x):
        return mixture_log_prob(self.gate_logits, self.means, self.log_stds, x)

    def responsibilities(self, x):
        return mixture_responsibilities(self.gate_logits, self.means, self.log_stds, x)

    def entropy_bound(self):
        return mixture_entropy_bound(self.gate_logits, self.means, self.log_stds)

    def entropy_mc(self, key):
        return mixture_entropy_mc(key, self.gate_logits, self.means, self.log_stds)

    def mode(self):
        return mixture_mode(self.gate_logits, self.means)


# -- network -----------------------------------------------------------------------------------

class MixtureActorCritic(nn.Module):
    """``__call__(obs) -> ((gate_logits [..., K], means [..., K, D], log_stds [..., K, D]), value)``;
    ``q_value(obs, action)`` with ``q_head=True`` (action ``[..., D]`` or ``[..., K, D]``).

    Submodule names follow :class:`prpo.networks.ActorCritic` (``actor``/``critic`` or ``trunk``,
    ``policy_head``, ``value_head``, ``log_std``), plus ``gate_head`` and ``q_critic``/``q_out``.
    """

    components: int
    action_dim: int
    obs_ndim: int = 1
    actor_hidden: Sequence[int] = (64, 64)
    critic_hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"
    shared_trunk: bool = False
    log_std_init: float = 0.0
    mean_spread: float = 0.0
    q_head: bool = False

    def setup(self):
        k, d = self.components, self.action_dim
        if self.shared_trunk:
            self.trunk = MLP(self.actor_hidden, self.activation)
        else:
            self.actor = MLP(self.actor_hidden, self.activation)
            self.critic = MLP(self.critic_hidden, self.activation)
        spread = self.mean_spread
        bias_init = nn.initializers.normal(spread) if spread > 0 else nn.initializers.zeros
        self.value_head = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=nn.initializers.zeros)
        self.policy_head = nn.Dense(k * d, kernel_init=orthogonal(0.01), bias_init=bias_init)
        self.gate_head = nn.Dense(k, kernel_init=orthogonal(0.01), bias_init=nn.initializers.zeros)
        self.log_std = self.param("log_std", nn.initializers.constant(self.log_std_init), (k, d))
        if self.q_head:
            self.q_critic = MLP(self.critic_hidden, self.activation)
            self.q_out = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=nn.initializers.zeros)

    def _flat(self, obs):
        batch_shape = obs.shape[: obs.ndim - self.obs_ndim]
        return obs.reshape(batch_shape + (-1,)).astype(jnp.float32)

    def __call__(self, obs):
        x = self._flat(obs)
        if self.shared_trunk:
            h_pi = h_v = self.trunk(x)
        else:
            h_pi, h_v = self.actor(x), self.critic(x)
        value = self.value_head(h_v)[..., 0]
        means = self.policy_head(h_pi).reshape(x.shape[:-1] + (self.components, self.action_dim))
        gate_logits = self.gate_head(h_pi)
        log_stds = jnp.broadcast_to(self.log_std, means.shape)
        return (gate_logits, means, log_stds), value

    def q_value(self, obs, action):
        x = self._flat(obs)
        extra = action.ndim - x.ndim  # 1 for per-component actions [..., K, D]
        x = x.reshape(x.shape[:-1] + (1,) * extra + x.shape[-1:])
        x = jnp.broadcast_to(x, action.shape[:-1] + x.shape[-1:])
        return self.q_out(self.q_critic(jnp.concatenate([x, action.astype(jnp.float32)], axis=-1)))[..., 0]

    def init_all(self, obs):
        """Touch every submodule (the Q-network too): ``network.init(key, obs, method="init_all")``."""
        out = self(obs)
        if self.q_head:
            self.q_value(obs, jnp.zeros(obs.shape[: obs.ndim - self.obs_ndim] + (self.action_dim,), jnp.float32))
        return out


def make_mixture_actor_critic(components, action_dim, obs_ndim=1, actor_hidden=(64, 64), critic_hidden=None,
                              activation="tanh", shared_trunk=False, log_std_init=0.0, mean_spread=0.0,
                              q_head=False) -> MixtureActorCritic:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not known; allowed: {sorted(ACTIVATIONS)}")
    return MixtureActorCritic(
        components=int(components), action_dim=int(action_dim), obs_ndim=obs_ndim, actor_hidden=tuple(actor_hidden),
        critic_hidden=tuple(critic_hidden if critic_hidden is not None else actor_hidden), activation=activation,
        shared_trunk=shared_trunk, log_std_init=float(log_std_init), mean_spread=float(mean_spread), q_head=q_head,
    )


# -- policy family -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MixturePolicy:
    """The mixture family (module docstring) over ``network`` (a :class:`MixtureActorCritic`,
    or any module with the same outputs).

    ``gate``: ``"likelihood"`` (the exact mixture likelihood trains the gate, no extra terms),
    ``"frequency"`` (plus PMOE's frequency loss and the Q-network's regression, returned as
    ``extras["penalty"]``; needs ``aux["returns"]``, added by the ``pmoe`` algorithm's
    ``prepare_batch``, and ``hp.pmoe_freq_coef`` / ``hp.pmoe_q_coef``) or ``"frequency_only"``
    (as ``"frequency"``, with the gate logits under stop-gradient inside the likelihood).
    """

    network: nn.Module
    entropy: str = "mc"
    gate: str = "likelihood"
    needs_hp = True

    def init(self, key, obs):
        if getattr(self.network, "q_head", False):
            return self.network.init(key, obs, method="init_all")
        return self.network.init(key, obs)

    def distribution(self, params, obs):
        (gate_logits, means, log_stds), value = self.network.apply(params, obs)
        return GaussianMixture(gate_logits, means, log_stds), value

    def act(self, params, obs, key):
        dist, value = self.distribution(params, obs)
        action = dist.sample(key)
        return action, {"log_prob": dist.log_prob(action), "value": value}

    def log_ratio(self, params, obs, action, aux, key=None, hp=None):
        dist, value = self.distribution(params, obs)
        k_ent, k_freq = jax.random.split(key if key is not None else jax.random.key(0))
        lik = dist if self.gate != "frequency_only" else dist.replace(gate_logits=jax.lax.stop_gradient(dist.gate_logits))
        log_prob = lik.log_prob(action)
        if self.entropy == "mc" and key is not None:
            entropy = dist.entropy_mc(k_ent)
        else:  # the bound (also where no key is given)
            entropy = dist.entropy_bound()
        extras = {"entropy": entropy, "value": value, "log_prob": log_prob,
                  "gate_entropy": categorical_entropy(dist.gate_logits)}
        if self.gate != "likelihood":
            freq, q_loss = self.frequency_terms(params, obs, action, dist, aux["returns"], k_freq)
            extras["freq_loss"], extras["q_loss"] = freq, q_loss
            if hp is not None:
                extras["penalty"] = hp.pmoe_freq_coef * freq + hp.pmoe_q_coef * q_loss
        return log_prob - aux["log_prob"], extras

    def frequency_terms(self, params, obs, action, dist, returns, key):
        """PMOE's frequency loss and the Q regression, per sample ``[B]``.

        One fresh action per component ``a_k = μ_k + σ_k ε_k`` (stop-gradient); the target is the
        one-hot of ``argmax_k Q(s, a_k)`` (a one-sample estimate of how often primitive ``k`` is
        the best); ``freq = mean_k (w_k − onehot_k)²``. ``q_loss = (Q(s, a) − R)²`` at the taken
        action, R the value target (GAE return). The Q-network gets no gradient from ``freq``.
        """
        eps = jax.random.normal(key, dist.means.shape, dist.means.dtype)
        samples = jax.lax.stop_gradient(dist.means + jnp.exp(dist.log_stds) * eps)
        q_k = jax.lax.stop_gradient(self.network.apply(params, obs, samples, method="q_value"))  # [B, K]
        target = jax.nn.one_hot(jnp.argmax(q_k, axis=-1), q_k.shape[-1], dtype=q_k.dtype)
        freq = jnp.mean(jnp.square(dist.weights - target), axis=-1)
        q_taken = self.network.apply(params, obs, action, method="q_value")
        return freq, jnp.square(q_taken - returns)

    def value(self, params, obs):
        return self.network.apply(params, obs)[1]

    def mode(self, params, obs):
        return self.distribution(params, obs)[0].mode()

    def weights(self, params, obs):
        """The gate weights ``w(s)``: ``[..., K]``."""
        return self.distribution(params, obs)[0].weights
