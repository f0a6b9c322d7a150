"""FPO, Flow Matching Policy Gradients (McAllister et al., 2025): a flow policy trained by a PPO clip.

The policy is a flow-matching velocity field sampled with ``flow_steps`` Euler steps
(:class:`prpo.flow.FlowPolicy`). Its "ratio" is ``exp(mean ℓ_old − mean ℓ_new)`` over ``n_mc``
stored conditional-flow-matching ``(t, ε)`` pairs per action (``fpo_ratio="mean_exp"``, the
reference; ``"per_sample_clip"`` clips one ratio per pair), PPO-clipped with a small ε (0.05).
The CFM loss is the reference's ε-MSE (``fpo_loss``). CFM-loss differences are not
log-likelihood ratios and can overflow ``exp`` (a non-finite loss on Brax halfcheetah):
``fpo_log_ratio_clamp = c`` bounds log ρ to ±c first (off by default, as the reference).

This module registers the ``flow`` policy family (``Config.policy="flow"``) with the options it owns.
"""

from __future__ import annotations

import math

from prpo import flow
from prpo.algorithm import Algorithm, action_dim, check_generative, register
from prpo.registry import register_policy, static

__all__ = ["FPO", "FLOW_STEPS", "N_MC"]

#: shared by the flow and PolicyFlow families
FLOW_STEPS = static(10, "Euler steps of the flow sampler", type=int, check=lambda v: isinstance(v, int) and
                    not isinstance(v, bool) and v > 0, allowed="a positive integer")
N_MC = static(8, "stored (t, ε) pairs per action (flow) / path times per action (policyflow)", type=int,
              check=lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, allowed="a positive integer")


def velocity_network(cfg, spec, learn_std=False):
    critic_hidden = cfg.critic_hidden if cfg.critic_hidden is not None else cfg.actor_hidden
    return flow.make_velocity_network(action_dim(spec), len(spec.obs_shape), cfg.actor_hidden, critic_hidden,
                                      cfg.activation, learn_std=learn_std, log_std_init=cfg.log_std_init)


def _make_flow(cfg, spec, network=None):
    network = velocity_network(cfg, spec) if network is None else network
    return flow.FlowPolicy(network, action_dim(spec), cfg.flow_steps, cfg.n_mc, cfg.fpo_loss, cfg.fpo_ratio,
                           cfg.fpo_log_ratio_clamp)


def _clamp_ok(c):
    return c is None or (isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and c > 0)


register_policy(
    "flow", _make_flow, check=check_generative, doc="flow-matching policy, FPO ratio from CFM losses",
    options={
        "flow_steps": FLOW_STEPS,
        "n_mc": N_MC,
        "fpo_loss": static("eps_mse", "per-pair CFM loss: eps_mse (reference) or u_mse", choices=("eps_mse", "u_mse")),
        "fpo_ratio": static("mean_exp", "exp(mean ℓ_old − mean ℓ_new) (reference) or one clipped ratio per pair",
                            choices=("mean_exp", "per_sample_clip")),
        "fpo_log_ratio_clamp": static(None, "clamp log ρ to ±c before exp; None = no clamp (the reference)",
                                      type=float | None, check=_clamp_ok, allowed="None (no clamp) or a number > 0"),
    },
)

FPO = register(Algorithm(
    name="fpo",
    description="Flow Matching Policy Gradients: flow policy, ratio from CFM losses, PPO clip ε=0.05",
    overrides=dict(policy="flow", clip_eps=0.05, ent_coef=0.0, clip_value=False, activation="silu",
                   actor_hidden=(32, 32, 32, 32)),
    family_overrides={
        # the PPO Pendulum settings; velocity net 64-64 SiLU (the reference's 4×32 learned Pendulum
        # about half as fast: −750 vs −360 after 3e5 steps); plain value MSE × 0.5
        "classic-continuous": dict(actor_hidden=(64, 64), critic_hidden=(64, 64), vf_coef=0.5),
        # the reference's (Playground DMC) settings: 2048 envs × 30 steps, 32 minibatches, 16 epochs,
        # γ 0.995, 4×32 SiLU velocity and 5×256 SiLU critic
        "brax": dict(num_steps=30, update_epochs=16, num_minibatches=32, critic_hidden=(256,) * 5, gamma=0.995,
                     vf_coef=0.5),
    },
    presets=("classic-continuous", "brax"),
    preset_docs={
        "classic-continuous": "FPO on continuous gymnax control: PPO Pendulum settings, 10 Euler steps, 8 pairs, clip 0.05",
        "brax": "FPO reference (Playground DMC) settings on Brax: 2048 × 30, 16 epochs, γ 0.995, 5×256 critic",
    },
    action_spaces=("continuous",),
))
