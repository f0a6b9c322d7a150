"""BAPO (Xi et al., 2025): PPO-clip with ratio bounds adapted per minibatch so that the
positive-advantage samples carry at least ``bapo_target`` of the gradient.

``prpo.objectives.bapo`` states the search taken (a ladder of ``bapo_steps`` + 1 bound pairs,
from ``[bapo_low0, bapo_high0]`` to ``[bapo_low_max, bapo_high_max]``). The ± gradient shares
and the chosen bounds are logged (``pos_share``, ``pos_share_after``, ``c_low``, ``c_high``).
``bapo_target = 0`` is PPO-clip with bounds ``[bapo_low0, bapo_high0]``. The claim to check:
with many epochs the negative samples dominate the gradient, and fixed clipping blocks the
updates that would raise entropy.
"""

from __future__ import annotations

from prpo import objectives
from prpo.algorithm import Algorithm, register
from prpo.registry import hyperparameter, register_surrogate

__all__ = ["BAPO"]

_LOW = dict(check=lambda v: 0 < v < 1, allowed="in (0, 1): a ratio bound below 1")
_HIGH = dict(check=lambda v: v > 1, allowed="> 1: a ratio bound above 1")

register_surrogate(
    "bapo",
    lambda lr, adv, hp: objectives.bapo(lr, adv, hp.bapo_low0, hp.bapo_high0, hp.bapo_low_max, hp.bapo_high_max,
                                        hp.bapo_target),
    options={
        "bapo_low0": hyperparameter(0.8, "BAPO starting lower ratio bound c_low (UNVERIFIED for control)", **_LOW),
        "bapo_high0": hyperparameter(1.2, "BAPO starting upper ratio bound c_high", **_HIGH),
        "bapo_low_max": hyperparameter(0.95, "BAPO last c_low of the ladder (more negative samples clipped)", **_LOW),
        "bapo_high_max": hyperparameter(2.0, "BAPO last c_high of the ladder (more positive samples admitted)", **_HIGH),
        "bapo_target": hyperparameter(0.4, "BAPO target share of the positive samples in the gradient "
                                      "(UNVERIFIED)", lambda v: 0 <= v <= 1, "in [0, 1]"),
    },
)


BAPO = register(Algorithm(
    name="bapo",
    description="BAPO: PPO-clip with per-minibatch adaptive bounds balancing the ± samples' gradient shares",
    overrides=dict(objective="bapo"),
    policies=("auto",),
))
