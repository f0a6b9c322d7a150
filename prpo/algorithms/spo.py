"""SPO, Simple Policy Optimization: PPO's pipeline with the clip replaced by a quadratic penalty.

``L = −r·A + |A|/(2ε)·(r − 1)²``, whose optimum is exactly r* = 1 + sign(A)·ε, so every sample
keeps a restoring gradient. The paper's point is a deep policy, where PPO's ratio deviation
grows: on continuous control the defaults use a 7-layer policy.
"""

from __future__ import annotations

from prpo import objectives
from prpo.algorithm import Algorithm, register
from prpo.registry import register_surrogate

__all__ = ["SPO"]

register_surrogate("spo", lambda lr, adv, hp: objectives.spo(lr, adv, hp.clip_eps))

_DEEP = dict(actor_hidden=(256, 256, 128, 128, 64, 64), critic_hidden=(64, 64))

SPO = register(Algorithm(
    name="spo",
    description="Simple Policy Optimization: quadratic ratio penalty instead of the clip (spo-brax: 7-layer policy)",
    overrides=dict(objective="spo"),
    family_overrides={"brax": _DEEP, "classic-continuous": _DEEP},
))
