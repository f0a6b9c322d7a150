"""Policy families: what the generic update step needs to know about a policy class.

A policy family is any object with these pure methods (see :class:`PolicyFamily`)::

    init(key, obs) -> params
    act(params, obs, key) -> (action, aux)        # aux: pytree stored in the rollout;
                                                  #      must hold aux["value"] (critic estimate)
    log_ratio(params, obs, action, aux, key) -> (log_ratio, extras)
                                                  # log π_θ(a|s) − log π_old(a|s), per sample;
                                                  # extras: "entropy" and "value" per sample, and
                                                  # "kl" = KL(π_θ‖π_old) where the family can
    value(params, obs) -> value
    mode(params, obs) -> action                   # deterministic action for evaluation

The update step never looks inside ``aux``: a Gaussian stores its old log-probability there, a
flow policy can store its sampled (t, ε) pairs and their losses, a diffusion policy its
denoising chain — without any change to the update step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import flax.linen as nn
import jax

from prpo.distributions import Categorical, DiagGaussian

__all__ = ["PolicyFamily", "CategoricalPolicy", "GaussianPolicy"]


class PolicyFamily(Protocol):
    def init(self, key: jax.Array, obs: jax.Array) -> Any: ...

    def act(self, params: Any, obs: jax.Array, key: jax.Array) -> tuple[jax.Array, Any]: ...

    def log_ratio(self, params: Any, obs: jax.Array, action: jax.Array, aux: Any, key: jax.Array) -> tuple[jax.Array, dict]: ...

    def value(self, params: Any, obs: jax.Array) -> jax.Array: ...

    def mode(self, params: Any, obs: jax.Array) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class _ActorCriticPolicy:
    """Shared code of the two explicit-likelihood families over an actor-critic network."""

    network: nn.Module
    keep_dist: bool = False  # store the rollout distribution in aux["dist"] (for KL(π‖π_old) terms)

    def _dist(self, out):  # pragma: no cover - overridden
        raise NotImplementedError

    def init(self, key, obs):
        return self.network.init(key, obs)

    def _apply(self, params, obs):
        out = self.network.apply(params, obs)
        return out if len(out) == 3 else (*out, None)

    def distribution(self, params, obs):
        out, value, _ = self._apply(params, obs)
        return self._dist(out), value

    def act(self, params, obs, key):
        dist, value = self.distribution(params, obs)
        action = dist.sample(key)
        aux = {"log_prob": dist.log_prob(action), "value": value}
        if self.keep_dist:
            aux["dist"] = dist
        return action, aux

    def log_ratio(self, params, obs, action, aux, key=None):
        out, value, median = self._apply(params, obs)
        dist = self._dist(out)
        log_prob = dist.log_prob(action)
        extras = {"entropy": dist.entropy(), "value": value, "log_prob": log_prob}
        if median is not None:  # BPO's median head u(s)
            extras["median"] = median
        if "dist" in aux:  # analytic KL(π_θ ‖ π_old) to the rollout policy
            extras["kl"] = dist.kl(aux["dist"])
        return log_prob - aux["log_prob"], extras

    def value(self, params, obs):
        return self._apply(params, obs)[1]

    def mode(self, params, obs):
        return self.distribution(params, obs)[0].mode()


@dataclasses.dataclass(frozen=True)
class CategoricalPolicy(_ActorCriticPolicy):
    """Categorical policy over logits from ``network(obs) -> (logits, value)``."""

    def _dist(self, out):
        return Categorical(out)


@dataclasses.dataclass(frozen=True)
class GaussianPolicy(_ActorCriticPolicy):
    """Diagonal Gaussian from ``network(obs) -> ((mean, log_std), value)``.

    Log-probabilities and entropies are summed over action dimensions. Actions are stored
    unclipped; clipping to the action bounds happens only when they are sent to the env.
    """

    def _dist(self, out):
        mean, log_std = out
        return DiagGaussian(mean, log_std)
