"""D-PPO (Xie et al., 2022): PPO-clip with sample dropout. A sample whose term in the variance
of the surrogate is large, ``|r − 1|·|A| > dropout_threshold``, is left out of the update
(``prpo.objectives.dropout_clip`` states the reading taken; the fraction dropped is logged as
``dropped``). ``dropout_threshold`` larger than any deviation is PPO-clip. The claim to check:
bounding the surrogate's variance helps PPO, most visibly with many epochs.
"""

from __future__ import annotations

from prpo import objectives
from prpo.algorithm import Algorithm, register
from prpo.registry import hyperparameter, register_surrogate

__all__ = ["DROPOUT_PPO"]

register_surrogate("dropout_clip", lambda lr, adv, hp: objectives.dropout_clip(lr, adv, hp.clip_eps,
                                                                                hp.dropout_threshold), options={
    "dropout_threshold": hyperparameter(0.3, "D-PPO: drop samples with |r − 1|·|A| above this (UNVERIFIED)",
                                        lambda v: v > 0, "> 0"),
})

DROPOUT_PPO = register(Algorithm(
    name="dropout_ppo",
    description="D-PPO: PPO-clip without the samples of largest |r − 1|·|A| (surrogate variance)",
    overrides=dict(objective="dropout_clip"),
))
