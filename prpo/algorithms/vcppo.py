"""VC-PPO's decoupled GAE (Yuan et al., 2025): one λ for the policy's advantages (``gae_lambda``)
and another for the value targets (``critic_lambda``, default 1: Monte-Carlo-like targets, the
paper's choice). ``critic_lambda = gae_lambda`` is PPO exactly. The claim to check: a value
target with less bias (λ_critic = 1) helps, with the policy's λ kept lower for variance.
"""

from __future__ import annotations

from prpo.advantages import gae, normalize
from prpo.algorithm import Algorithm, register
from prpo.registry import hyperparameter

__all__ = ["VCPPO", "decoupled_gae_targets"]


def decoupled_gae_targets(cfg, hp, rewards, values, next_values, terminated, truncated, axis_name=None, aux=None):
    """Advantages from GAE(``gae_lambda``), returns = GAE(``critic_lambda``) + V: two estimators
    on the same trajectory (the actor's normalised as ``adv_norm`` says, as in PPO)."""
    advantages, _ = gae(rewards, values, next_values, terminated, truncated, hp.gamma, hp.gae_lambda,
                        unroll=cfg.scan_unroll)
    _, returns = gae(rewards, values, next_values, terminated, truncated, hp.gamma, hp.critic_lambda,
                     unroll=cfg.scan_unroll)
    if cfg.adv_norm == "batch":
        advantages = normalize(advantages, axis_name=axis_name)
    return advantages, returns


VCPPO = register(Algorithm(
    name="vcppo",
    description="VC-PPO's decoupled GAE: λ for the advantages, critic_lambda for the value targets",
    options={"critic_lambda": hyperparameter(1.0, "GAE λ of the value targets (the advantages use gae_lambda)",
                                             lambda v: 0 <= v <= 1, "in [0, 1]")},
    targets=decoupled_gae_targets,
))
