"""On-policy MDPO (Tomar et al., 2022): mirror-descent policy optimisation.

Plain surrogate −r·A plus KL(π_θ‖π_k)/t_k to the policy frozen at the start of the iteration
(the rollout policy; ``kl_schedule="mdpo"``, t_k = 1 − (k − 1)/K), m full-batch steps per
iteration, whole-batch advantage normalisation. The value function trains jointly in the same
steps (the reference code trains it separately: 5 epochs × minibatch 128).
"""

from __future__ import annotations

from prpo.algorithm import Algorithm, register

__all__ = ["MDPO"]

MDPO = register(Algorithm(
    name="mdpo",
    description="Mirror-descent policy optimisation (on-policy): −r·A + KL(π‖π_k)/t_k, m full-batch steps",
    overrides=dict(objective="pg", kl_schedule="mdpo", adv_norm="batch", update_epochs=10, num_minibatches=1),
    # 10 full-batch steps per iteration take far fewer SGD steps than PPO's 4 × 4 minibatches
    family_overrides={"cartpole": dict(lr=1e-3)},
))
