"""PolicyFlow (no reference code): a CNF policy with learned Gaussian noise and a Brownian regulariser.

The ratio is that of the terminal noise, from velocity differences along the interpolation
path (:class:`prpo.flow.PolicyFlowPolicy`), PPO-clipped at 0.2; the Brownian regulariser
(weight ``brownian_coef``, value UNVERIFIED) is added to the loss as the family's ``penalty``.
``brownian_ref`` picks its reference velocity: the current one (the formulas) or the frozen
rollout one.

This module registers the ``policyflow`` policy family (``Config.policy="policyflow"``).
"""

from __future__ import annotations

from prpo import flow
from prpo.algorithm import Algorithm, action_dim, check_generative, register
from prpo.algorithms.fpo import FLOW_STEPS, N_MC, velocity_network
from prpo.registry import hyperparameter, register_policy, static

__all__ = ["POLICYFLOW"]


def _make(cfg, spec, network=None):
    network = velocity_network(cfg, spec, learn_std=True) if network is None else network
    return flow.PolicyFlowPolicy(network, action_dim(spec), cfg.flow_steps, cfg.n_mc, cfg.brownian_ref)


register_policy(
    "policyflow", _make, check=check_generative, doc="CNF + learned noise, velocity-variation ratio",
    options={
        "flow_steps": FLOW_STEPS,
        "n_mc": N_MC,
        "brownian_ref": static("current", "η_t reference velocity: current (spec) or the frozen rollout one",
                               choices=("current", "frozen")),
        "brownian_coef": hyperparameter(0.01, "Brownian regulariser weight w_b (value UNVERIFIED)", lambda v: v >= 0,
                                        ">= 0"),
    },
)

POLICYFLOW = register(Algorithm(
    name="policyflow",
    description="PolicyFlow: velocity-variation ratio + Brownian regulariser (formulas only; choices flagged)",
    overrides=dict(policy="policyflow", activation="silu"),
    presets=("classic-continuous", "brax"),
    preset_docs={
        "classic-continuous": "PolicyFlow on continuous gymnax control: PPO Pendulum settings, clip 0.2, Brownian w_b 0.01",
        "brax": "PolicyFlow on Brax: PPO Brax pipeline, clip 0.2, Brownian w_b 0.01 (UNVERIFIED)",
    },
    action_spaces=("continuous",),
))
