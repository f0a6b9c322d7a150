"""PPO-EWMA / decoupled PPO (Hilton et al., 2022): clip against a proximal policy that is an EWMA of the parameters.

The proximal policy π_prox has parameters ``θ_prox ← β·θ_prox + (1 − β)·θ`` (the algorithm's
train state, ``TrainState.algo_state["prox_params"]``); the surrogate clips ``π_θ/π_prox`` and
importance-weights by ``π_prox/π_behaviour`` (capped at 100), which makes PPO batch-size
invariant. Simplification: the EWMA is taken once per update (the paper updates it after every
optimizer step). β = 0 is PPO (tested).
"""

from __future__ import annotations

import jax

from prpo import objectives
from prpo.algorithm import Algorithm, register
from prpo.registry import hyperparameter, register_surrogate

__all__ = ["PPO_EWMA", "decoupled_surrogate"]


def decoupled_surrogate(log_ratio, adv, hp, ctx):
    """Clip against π_prox, importance-weight by π_θ/π_behaviour with the weight capped at 100.

    ``log_ratio`` is log π_θ − log π_b (rollout policy); ``ctx["aux"]["log_prob_prox"]`` holds
    log π_prox of the batch's actions.
    """
    log_ratio_prox = ctx["log_prob"] - ctx["aux"]["log_prob_prox"]
    return objectives.decoupled_clip(log_ratio_prox, log_ratio, adv, hp.clip_eps)


register_surrogate("decoupled", decoupled_surrogate, needs_context=True, algorithm="ppo_ewma")


def _init_state(params):
    return {"prox_params": params}


def _prox_log_prob(policy, algo_state, batch):
    """log π_prox of the batch's actions, fixed during this update."""
    _, prox = policy.log_ratio(algo_state["prox_params"], batch.obs, batch.action, batch.aux, None)
    return batch.replace(aux={**batch.aux, "log_prob_prox": jax.lax.stop_gradient(prox["log_prob"])})


def _ewma(algo_state, params, hp):
    prox = jax.tree.map(lambda p, q: hp.ewma_decay * p + (1.0 - hp.ewma_decay) * q, algo_state["prox_params"], params)
    return {"prox_params": prox}


PPO_EWMA = register(Algorithm(
    name="ppo_ewma",
    description="PPO-EWMA / decoupled PPO: clip to an EWMA proximal policy (batch-size invariance)",
    overrides=dict(objective="decoupled"),
    options={
        "ewma_decay": hyperparameter(0.9, "π_prox ← β·π_prox + (1 − β)·π_θ after each update (β UNVERIFIED)",
                                     lambda v: 0 <= v < 1, "in [0, 1)"),
    },
    policies=("auto",),  # the decoupled surrogate needs the explicit log-probability
    init_state=_init_state,
    prepare_batch=_prox_log_prob,
    update_state=_ewma,
))
