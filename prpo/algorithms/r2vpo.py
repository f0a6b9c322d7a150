"""R²VPO's ratio-variance constraint with dual ascent: the policy gradient with the penalty
``ν·(Var_B(r) − δ)`` (objective ``ratio_var``, ``prpo.objectives.ratio_variance_penalty``), where
ν is part of the train state and climbs toward the variance budget ``rv_delta``:

    ν_{k+1} = max(0, ν_k + rv_dual_lr · (Var_k(r) − rv_delta)),    ν_0 = rv_nu

``Var_k(r)`` is the mean over the update's minibatch steps of their batch variance of r
(metric ``ratio_var``). ``rv_dual_lr = 0`` is the fixed-ν penalty of objective ``ratio_var``.
The current ν is logged as ``rv_nu``.
"""

from __future__ import annotations

import jax.numpy as jnp

from prpo.algorithm import Algorithm, register
from prpo.registry import hyperparameter

__all__ = ["R2VPO"]


def _init_state(params):
    return {"nu_offset": jnp.zeros((), jnp.float32)}  # ν − rv_nu (rv_nu is a hyperparameter: init sees none)


def _hyperparams(hp, state):
    nu = jnp.maximum(hp.rv_nu + state["nu_offset"], 0.0)
    return hp.replace(rv_nu=nu), {"rv_nu": nu}


def _dual_ascent(state, metrics, hp):
    nu = jnp.maximum(hp.rv_nu + state["nu_offset"] + hp.rv_dual_lr * (metrics["ratio_var"] - hp.rv_delta), 0.0)
    return {"nu_offset": nu - hp.rv_nu}


R2VPO = register(Algorithm(
    name="r2vpo",
    description="R²VPO: ratio-variance penalty with its weight ν learned by dual ascent toward rv_delta",
    overrides=dict(objective="ratio_var", rv_delta=0.01),
    options={"rv_dual_lr": hyperparameter(1.0, "R²VPO dual-ascent step on ν per update (UNVERIFIED)",
                                          lambda v: v >= 0, ">= 0")},
    init_state=_init_state,
    hyperparams=_hyperparams,
    adapt_state=_dual_ascent,
))
