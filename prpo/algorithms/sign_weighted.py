"""± sample reweighting (negative-sample reinforcement, Zhu et al., 2025; asymmetric REINFORCE):
the surrogate's A > 0 terms weighted by ``pos_weight``, its A < 0 terms by ``neg_weight``.

Objective ``sign_weighted`` weights PPO-clip's terms (``(1, 1)`` is PPO-clip exactly), and
``sign_weighted_pg`` weights the plain ratio policy gradient, the papers' REINFORCE setting.
``pos_weight = 0`` trains on the negative samples only, ``neg_weight = 0`` on the positive ones.
The claim to check: negative-only updates keep the entropy up and learn nearly as well, and
positive-only updates collapse the entropy.
"""

from __future__ import annotations

from prpo import objectives
from prpo.algorithm import Algorithm, register
from prpo.registry import hyperparameter, register_surrogate

__all__ = ["SIGN_WEIGHTED"]

_W = dict(check=lambda v: v >= 0, allowed=">= 0")
_OPTIONS = {
    "pos_weight": hyperparameter(1.0, "weight of the A > 0 terms of the surrogate", **_W),
    "neg_weight": hyperparameter(1.0, "weight of the A < 0 terms of the surrogate", **_W),
}

register_surrogate("sign_weighted", lambda lr, adv, hp: objectives.sign_weighted(
    lr, adv, hp.clip_eps, hp.pos_weight, hp.neg_weight), options=_OPTIONS)
register_surrogate("sign_weighted_pg", lambda lr, adv, hp: objectives.sign_weighted(
    lr, adv, hp.clip_eps, hp.pos_weight, hp.neg_weight, base="pg"), options=_OPTIONS)

SIGN_WEIGHTED = register(Algorithm(
    name="sign_weighted",
    description="± sample reweighting of PPO-clip (NSR / asymmetric REINFORCE: A<0-only, A>0-only updates)",
    overrides=dict(objective="sign_weighted"),
))
