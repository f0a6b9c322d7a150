"""DISPO (Karaman et al., 2026): sign-decoupled clip ranges, four bounds.

A sample with advantage sign s has the trust region ``[1 − ε_low^s, 1 + ε_high^s]``; outside
it the sample gives no gradient (objective ``dispo``; ``prpo.objectives.dispo`` states the
reading taken and its limits). The alternative reading is objective ``dispo_cispo``: the
clipped weight with the gradient kept everywhere, CISPO-style.

PPO-clip is ``dispo_pos_high = dispo_neg_low = ε`` with the two restoring sides open
(``dispo_pos_low ≥ 1``, a large ``dispo_neg_high``). The defaults close all four sides at 0.2:
the paper's four regimes. The paper's claim to check: for A > 0, admitting weights > 1 (a
larger ``dispo_pos_high``) raises the policy's entropy.
"""

from __future__ import annotations

from prpo import objectives
from prpo.algorithm import Algorithm, register
from prpo.registry import hyperparameter, register_surrogate

__all__ = ["DISPO", "DISPO_OPTIONS"]

_BOUND = dict(check=lambda v: v >= 0, allowed=">= 0")

#: the four bounds, shared by both readings
DISPO_OPTIONS = {
    "dispo_pos_low": hyperparameter(0.2, "DISPO ε_low for A ≥ 0 (≥ 1 opens the side)", **_BOUND),
    "dispo_pos_high": hyperparameter(0.2, "DISPO ε_high for A ≥ 0 (weights > 1 of good actions)", **_BOUND),
    "dispo_neg_low": hyperparameter(0.2, "DISPO ε_low for A < 0 (weights < 1 of bad actions)", **_BOUND),
    "dispo_neg_high": hyperparameter(0.2, "DISPO ε_high for A < 0 (a large value opens the side)", **_BOUND),
}


def _bounds(hp):
    return hp.dispo_pos_low, hp.dispo_pos_high, hp.dispo_neg_low, hp.dispo_neg_high


register_surrogate("dispo", lambda lr, adv, hp: objectives.dispo(lr, adv, *_bounds(hp)), options=DISPO_OPTIONS)
register_surrogate("dispo_cispo", lambda lr, adv, hp: objectives.dispo(lr, adv, *_bounds(hp), gradient="cispo"),
                   options=DISPO_OPTIONS)

DISPO = register(Algorithm(
    name="dispo",
    description="DISPO: sign-decoupled clip ranges (four bounds; no gradient outside a sample's region)",
    overrides=dict(objective="dispo"),
    policies=("auto",),
))
