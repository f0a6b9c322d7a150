"""BPO, Bounded Policy Optimization: fit π to a bounded target ratio with an advantage-weighted TV loss.

``L = |r − ρ*|·|R − sg V(s)| + c_u·g(R − u(s))`` with the target ratio
``ρ* = 1 − ε_l + (ε_l + ε_h)·σ((R − u(s))/λ)``, where ``R`` are the GAE returns and ``u(s)`` is a
median head on the critic trunk, trained by ``g(x) = softplus(x) − x/2`` (its minimiser is the
median of R given s). Defaults as the SB3 reference: no advantage normalisation, ε 0.3, λ 1e-3,
c_v 0.5, c_u 0.5, no value clipping, no entropy bonus, gradient clip 1 on continuous control.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prpo import objectives
from prpo.algorithm import Algorithm, actor_critic_policy, register
from prpo.registry import hyperparameter, register_surrogate

__all__ = ["BPO", "bpo_surrogate"]


def bpo_surrogate(log_ratio, adv, hp, ctx):
    """BPO: ``|r − ρ*|·|R − sg V(s)| + c_u·g(R − u(s))`` with ``ρ* = 1 − ε_l + (ε_l + ε_h)σ((R − u)/λ)``.

    ``R`` are the GAE returns (``A + V_old``); ``adv`` is unused (BPO weights by ``R − V``);
    ``hp.bpo_clamp > 0`` clips ``(R − u)/λ`` to ±bpo_clamp first (rsl_rl), 0 disables it (SB3).
    """
    del adv
    returns, median = ctx["returns"], ctx["median"]
    x = returns - median
    bound = hp.bpo_clamp * hp.bpo_temp
    x_target = jnp.where(hp.bpo_clamp > 0, jnp.clip(x, -bound, bound), x)
    rho_star = objectives.bpo_target_ratio(x_target, hp.bpo_eps_low, hp.bpo_eps_high, hp.bpo_temp)
    weight = returns - jax.lax.stop_gradient(ctx["value"])
    loss, diag = objectives.bpo(log_ratio, rho_star, weight)
    return loss + hp.bpo_median_coef * objectives.median_loss(x), diag


register_surrogate("bpo", bpo_surrogate, needs_context=True, algorithm="bpo")


def _policy_with_median_head(cfg, spec, network=None):
    return actor_critic_policy(cfg, spec, network, median_head=True)


BPO = register(Algorithm(
    name="bpo",
    description="Bounded Policy Optimization: |r − ρ*|·|R − V| with ρ* from a learned median head",
    overrides=dict(objective="bpo", adv_norm="none", clip_value=False, ent_coef=0.0),
    # its MuJoCo gradient clip 1.0 on continuous control, the PPO preset's 0.5 on CartPole
    # (1.0 left one of 4 seeds at ≈ 300 there)
    family_overrides={kind: dict(max_grad_norm=1.0) for kind in ("brax", "classic-continuous")},
    options={
        "bpo_eps_low": hyperparameter(0.3, "ratio bound below 1 (ε_l)", lambda v: 0 <= v < 1, "in [0, 1)"),
        "bpo_eps_high": hyperparameter(0.3, "ratio bound above 1 (ε_h)", lambda v: v >= 0, ">= 0"),
        "bpo_temp": hyperparameter(1e-3, "temperature λ of ρ* = 1 − ε_l + (ε_l + ε_h)σ((R − u)/λ)", lambda v: v > 0, "> 0"),
        "bpo_median_coef": hyperparameter(0.5, "median-head loss coefficient c_u", lambda v: v >= 0, ">= 0"),
        "bpo_clamp": hyperparameter(0.0, "clip (R − u)/λ to ±bpo_clamp (rsl_rl: 10); 0 = no clamp (SB3)",
                                    lambda v: v >= 0, ">= 0"),
    },
    policies=("auto",),  # the actor-critic with a median head
    make_policy=_policy_with_median_head,
))
