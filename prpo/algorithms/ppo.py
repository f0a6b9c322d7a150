"""PPO (Schulman et al., 2017) and its ratio surrogates; the base presets every algorithm starts from.

PPO is the engine's default composition: a categorical / Gaussian actor-critic, GAE with the
truncation bootstrap, epochs × shuffled minibatches of ``surrogate + c_v·value loss −
c_e·entropy``. What this module adds is data: the surrogates selectable as ``objective`` (each
with the hyperparameters it owns) and the base presets ``ppo-<kind>`` (PureJaxRL's settings per
env kind) that the other algorithms' defaults are written on top of.
"""

from __future__ import annotations

from prpo import objectives
from prpo.algorithm import Algorithm, register
from prpo.config import Config, Hyperparams
from prpo.registry import hyperparameter, register_preset, register_surrogate

__all__ = ["PPO", "DUAL_CLIP_C"]

# -- surrogates ``f(log_ratio, adv, hp) -> (per-sample loss, diagnostics)`` -------------------------

#: dual-clip constant c (> 1): shared by the dual-clip and CE-GPPO surrogates
DUAL_CLIP_C = hyperparameter(3.0, "dual-clip constant c (> 1), objective dual_clip / ce_gppo", lambda v: v > 1, "> 1")

register_surrogate("clip", lambda lr, adv, hp: objectives.ppo_clip(lr, adv, hp.clip_eps))
register_surrogate("dual_clip", lambda lr, adv, hp: objectives.dual_clip(lr, adv, hp.clip_eps, hp.dual_clip_c),
                   options={"dual_clip_c": DUAL_CLIP_C})
register_surrogate("pg", lambda lr, adv, hp: objectives.policy_gradient(lr, adv))
register_surrogate("pspo", lambda lr, adv, hp: objectives.pspo(lr, adv, hp.pspo_alpha), options={
    "pspo_alpha": hyperparameter(0.1, "PSPO ratio smoothing α (value UNVERIFIED)", lambda v: 0 <= v <= 1, "in [0, 1]"),
})
register_surrogate(
    "ce_gppo",
    lambda lr, adv, hp: objectives.ce_gppo(lr, adv, hp.clip_eps, hp.ce_beta_low, hp.ce_beta_high, hp.dual_clip_c),
    options={
        "ce_beta_low": hyperparameter(0.5, "CE-GPPO gradient scale below the clip range (A < 0)", lambda v: v >= 0, ">= 0"),
        "ce_beta_high": hyperparameter(1.0, "CE-GPPO gradient scale above the clip range (A > 0)", lambda v: v >= 0, ">= 0"),
        "dual_clip_c": DUAL_CLIP_C,
    },
)
register_surrogate("topr", lambda lr, adv, hp: objectives.topr(lr, adv))
register_surrogate(
    "ratio_var", lambda lr, adv, hp: objectives.ratio_variance_penalty(lr, adv, hp.rv_nu, hp.rv_delta),
    options={
        "rv_nu": hyperparameter(0.1, "ratio-variance penalty weight ν (form UNVERIFIED)", lambda v: v >= 0, ">= 0"),
        "rv_delta": hyperparameter(0.0, "ratio-variance target δ", lambda v: v >= 0, ">= 0"),
    },
)


# -- base presets ---------------------------------------------------------------------------------

def _base(kind: str):
    def deco(fn):
        fn.kind = kind
        register_preset(f"ppo-{kind}", fn)
        return fn

    return deco


@_base("cartpole")
def cartpole() -> Config:
    """PureJaxRL's gymnax CartPole defaults: 4 envs × 128 steps, 4 epochs × 4 minibatches, lr 2.5e-4."""
    return Config()


@_base("classic-continuous")
def classic_continuous() -> Config:
    """Continuous gymnax control (Pendulum-v1, MountainCarContinuous-v0): 16 × 256, normalised obs and rewards."""
    return Config(
        env="Pendulum-v1",
        num_envs=16,
        num_steps=256,
        total_timesteps=1_000_000,
        update_epochs=4,
        num_minibatches=8,
        actor_hidden=(64, 64),
        normalize_obs=True,
        normalize_reward=True,
        hp=Hyperparams(lr=1e-3, gamma=0.95, gae_lambda=0.95, ent_coef=0.0, vf_clip_eps=10.0, max_grad_norm=0.5),
    )


@_base("brax")
def brax() -> Config:
    """PureJaxRL's continuous (Brax) PPO defaults: 2048 envs × 10 steps, 32 minibatches, 256-256, lr 3e-4."""
    return Config(
        env="ant",
        num_envs=2048,
        num_steps=10,
        total_timesteps=50_000_000,
        update_epochs=4,
        num_minibatches=32,
        actor_hidden=(256, 256),
        anneal_lr=False,
        normalize_obs=True,
        normalize_reward=True,
        unroll=1,  # physics dominates the rollout; unrolling it only multiplies compile time
        hp=Hyperparams(lr=3e-4, ent_coef=0.0),
    )


@_base("minatar")
def minatar() -> Config:
    """PureJaxRL-style MinAtar settings: 64 envs × 128 steps, 8 minibatches, relu, lr 5e-3."""
    return Config(
        env="Breakout-MinAtar",
        num_envs=64,
        num_steps=128,
        total_timesteps=10_000_000,
        update_epochs=4,
        num_minibatches=8,
        actor_hidden=(64, 64),
        activation="relu",
        hp=Hyperparams(lr=5e-3),
    )


PPO = register(Algorithm(
    name="ppo",
    description="PPO (clip / dual-clip / plain PG surrogate; GAE with truncation bootstrap)",
))
