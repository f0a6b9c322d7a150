"""Typed configuration: static structure vs traced hyperparameters, presets, validation.

* :class:`Hyperparams` — a ``flax.struct`` pytree of scalars (learning rate, γ, λ, clip ε,
  coefficients). They are *traced*: ``jax.vmap(train)(keys, hps)`` sweeps them in one compile.
* :class:`Config` — frozen dataclass of everything that fixes shapes or structure (env,
  sizes, network, which objective, switches). Changing it means a new compile.

Every option is checked before anything compiles; a bad value raises :class:`ConfigError`
naming the option and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

__all__ = [
    "ConfigError",
    "Hyperparams",
    "Config",
    "PRESETS",
    "preset",
    "default_preset_name",
    "apply_overrides",
    "option_names",
    "check_hyperparams",
]


class ConfigError(ValueError):
    """A user-facing configuration error (raised before compilation)."""


@flax.struct.dataclass
class Hyperparams:
    """Traced hyperparameters (pytree leaves; vmap over them to sweep in one compile)."""

    lr: float = 2.5e-4  # learning rate (annealed linearly to 0 when Config.anneal_lr)
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE λ
    clip_eps: float = 0.2  # PPO ratio clip ε
    vf_clip_eps: float = 0.2  # value clip range (reward units) when Config.clip_value
    vf_coef: float = 0.5  # value-loss coefficient c_v
    ent_coef: float = 0.01  # entropy coefficient c_e
    max_grad_norm: float = 0.5  # global gradient-norm clip
    dual_clip_c: float = 3.0  # dual-clip constant c (> 1), objective="dual_clip"
    adam_eps: float = 1e-5  # Adam / RMSprop epsilon
    rms_decay: float = 0.99  # RMSprop decay α, optimizer="rmsprop"
    pspo_alpha: float = 0.1  # PSPO ratio smoothing α (objective="pspo"; value UNVERIFIED)
    ce_beta_low: float = 0.5  # CE-GPPO gradient scale below the clip range (A < 0)
    ce_beta_high: float = 1.0  # CE-GPPO gradient scale above the clip range (A > 0)
    rv_nu: float = 0.1  # ratio-variance penalty weight ν (objective="ratio_var"; form UNVERIFIED)
    rv_delta: float = 0.0  # ratio-variance target δ
    bpo_eps_low: float = 0.3  # BPO ratio bound below 1 (ε_l)
    bpo_eps_high: float = 0.3  # BPO ratio bound above 1 (ε_h)
    bpo_temp: float = 1e-3  # BPO temperature λ of ρ* = 1 − ε_l + (ε_l + ε_h)σ((R − u)/λ)
    bpo_median_coef: float = 0.5  # BPO median-head loss coefficient c_u
    bpo_clamp: float = 0.0  # clip (R − u)/λ to ±bpo_clamp (rsl_rl: 10); 0 = no clamp (SB3 reference)
    ewma_decay: float = 0.9  # PPO-EWMA: π_prox ← β·π_prox + (1 − β)·π_θ after each update (β UNVERIFIED)
    kl_coef: float = 1.0  # scale of the KL(π‖π_k) regulariser (MDPO: times 1/t_k); kl_schedule picks the form
    reward_scale: float = 1.0  # rewards are multiplied by this before targets are computed (PQN CartPole: 0.1)
    eps_start: float = 1.0  # PQN ε-greedy: ε at the first update
    eps_finish: float = 0.05  # PQN: ε after the decay
    eps_decay: float = 0.1  # PQN: fraction of all updates over which ε decays linearly
    gamma_denoise: float = 0.99  # DPPO: advantage weight γ_denoise^(K′−1−i) of fine-tuned denoising step i
    dppo_clip_base: float = 1e-3  # DPPO: clip ε of the noisiest fine-tuned step (rises to clip_eps at the last)
    brownian_coef: float = 0.01  # PolicyFlow: Brownian regulariser weight w_b (value UNVERIFIED)

    def replace(self, **kw) -> "Hyperparams":  # typed alias of flax's replace
        return dataclasses.replace(self, **kw)


_CHOICES = {
    "distribution": ("auto", "categorical", "gaussian"),
    "objective": ("clip", "dual_clip", "pg", "spo", "pspo", "ce_gppo", "topr", "ratio_var", "bpo", "decoupled"),
    "kl_schedule": ("none", "constant", "mdpo"),
    "adv_norm": ("minibatch", "batch", "none"),
    "optimizer": ("adam", "rmsprop", "radam"),
    "activation": ("tanh", "relu", "silu", "gelu", "elu"),
    "env_backend": (None, "mjx", "positional", "generalized", "spring"),
    "brax_reset": ("cached", "fresh"),
    "truncation_value": ("always", "cond"),
    "shuffle": ("samples", "envs", "stratified"),
    "q_torso": ("auto", "mlp", "conv"),
    "policy": ("auto", "flow", "diffusion", "policyflow"),
    "fpo_loss": ("eps_mse", "u_mse"),
    "fpo_ratio": ("mean_exp", "per_sample_clip"),
    "brownian_ref": ("current", "frozen"),
    "dppo_logprob_reduce": ("mean", "sum"),
}

#: policy families without an explicit likelihood: only per-sample ratio surrogates apply
_GENERATIVE_POLICIES = ("flow", "diffusion", "policyflow")
_RATIO_OBJECTIVES = ("clip", "dual_clip", "pg", "spo", "pspo", "ce_gppo", "topr", "ratio_var")


@dataclasses.dataclass(frozen=True)
class Config:
    """Static configuration of one training run (hashed into the compile)."""

    algo: str = "ppo"
    env: str = "CartPole-v1"
    env_backend: str | None = None  # brax physics backend (None = the env module's default)
    brax_reset: str = "cached"  # brax auto-reset: "cached" initial state or "fresh" reset
    episode_length: int | None = None  # override the env's time limit (None = env default)
    num_envs: int = 4
    num_steps: int = 128  # rollout length per update
    total_timesteps: int = 500_000
    update_epochs: int = 4
    num_minibatches: int = 4
    fixed_minibatch_size: int | None = None  # co-scaling: keep this minibatch size, num_minibatches = batch / it
    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] | None = None  # None = same as actor_hidden
    activation: str = "tanh"
    shared_trunk: bool = False
    distribution: str = "auto"  # auto: categorical for Discrete, gaussian for Box
    log_std_init: float = 0.0
    objective: str = "clip"
    kl_schedule: str = "none"  # KL(π‖π_k) regulariser: none, constant kl_coef, or MDPO's kl_coef/t_k
    adv_norm: str = "minibatch"
    clip_value: bool = True
    optimizer: str = "adam"
    anneal_lr: bool = True
    normalize_obs: bool = False
    normalize_reward: bool = False
    obs_clip: float = 10.0
    reward_clip: float = 10.0
    bootstrap_truncation: bool = True  # False reproduces the truncation-as-termination bug
    truncation_value: str = "always"  # V(final obs): "always" computed (no host sync) or under lax.cond
    shuffle: str = "samples"  # minibatches of shuffled samples, whole env trajectories ("envs"), or "stratified"
    devices: int = 1  # data parallelism: envs split over this many devices (1 = the single-device path)
    unroll: int | None = None  # lax.scan unroll of rollout and GAE loops; None: 1 on CPU, 8 on GPU/TPU
    eval_every: int = 0  # in-loop deterministic (greedy) evaluation every this many updates; 0 = off
    eval_envs: int | None = None  # envs (one episode each) per in-loop evaluation; None = num_envs
    q_torso: str = "auto"  # PQN Q-network torso: "conv" for image observations (MinAtar), else "mlp"
    q_layer_norm: bool = True  # PQN: LayerNorm before every activation (False: the unstable ablation)
    # generative policy families (ALGORITHMS.md §9–11); "auto" = the explicit family of `distribution`
    policy: str = "auto"  # auto, flow (FPO), diffusion (DPPO), policyflow
    flow_steps: int = 10  # Euler steps of the flow sampler (flow, policyflow)
    n_mc: int = 8  # stored (t, ε) pairs per action (flow) / path times per action (policyflow)
    fpo_loss: str = "eps_mse"  # FPO per-pair CFM loss: eps_mse (reference) or u_mse
    fpo_ratio: str = "mean_exp"  # exp(mean ℓ_old − mean ℓ_new) (reference) or one clipped ratio per pair
    # FPO log-ratio clamp c: log ρ = clip(ℓ_old − ℓ_new, −c, c); None = no clamp (the reference). CFM-loss
    # differences are not log-likelihood ratios and can overflow exp (a non-finite loss on Brax halfcheetah)
    fpo_log_ratio_clamp: float | None = None
    brownian_ref: str = "current"  # PolicyFlow η_t: current velocity (spec) or the frozen rollout one
    diffusion_steps: int = 20  # DPPO denoising steps K
    finetune_steps: int | None = None  # DPPO fine-tuned (last) steps K′; None = all K
    ddim_eval_steps: int = 5  # DPPO evaluation: DDIM steps (0 = deterministic DDPM means)
    sigma_min_sample: float = 0.1  # DPPO σ floor when sampling (exploration)
    sigma_min_prob: float = 0.1  # DPPO σ floor in the per-step likelihood
    dppo_logprob_reduce: str = "mean"  # per-step log-prob over action dims: mean (reference) or sum
    dppo_logprob_clamp: bool = True  # clamp per-dim log-probs to [−5, 2] (reference)
    hp: Hyperparams = dataclasses.field(default_factory=Hyperparams)

    def __post_init__(self):
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name}={value!r} is not allowed; allowed values: {_fmt(allowed)}")
        for name in ("num_envs", "num_steps", "total_timesteps", "update_epochs", "num_minibatches", "unroll",
                     "devices", "fixed_minibatch_size"):
            value = getattr(self, name)
            if name in ("unroll", "fixed_minibatch_size") and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.eval_every, int) or isinstance(self.eval_every, bool) or self.eval_every < 0:
            raise ConfigError(f"eval_every must be an integer >= 0 (updates between evaluations; 0 = off), got {self.eval_every!r}")
        if self.eval_envs is not None and (not isinstance(self.eval_envs, int) or self.eval_envs <= 0):
            raise ConfigError(f"eval_envs must be a positive integer or None, got {self.eval_envs!r}")
        if self.episode_length is not None and self.episode_length <= 0:
            raise ConfigError(f"episode_length must be a positive integer or None, got {self.episode_length!r}")
        for name in ("actor_hidden", "critic_hidden"):
            value = getattr(self, name)
            if value is None and name == "critic_hidden":
                continue
            if not value or any((not isinstance(w, int)) or w <= 0 for w in value):
                raise ConfigError(f"{name} must be a non-empty tuple of positive widths, got {value!r}")
        if self.num_envs % self.devices:
            raise ConfigError(
                f"devices={self.devices} must divide num_envs={self.num_envs} (each device steps num_envs / devices "
                f"envs); choose devices among {_divisors_hint(self.num_envs)}"
            )
        if self.fixed_minibatch_size is not None:  # co-scaling: the number of minibatches follows the batch
            if self.batch_size % self.fixed_minibatch_size:
                raise ConfigError(
                    f"fixed_minibatch_size={self.fixed_minibatch_size} must divide num_envs × num_steps = "
                    f"{self.batch_size}; choose among {_divisors_hint(self.batch_size)}"
                )
            object.__setattr__(self, "num_minibatches", self.batch_size // self.fixed_minibatch_size)
        if self.batch_size % self.num_minibatches:
            raise ConfigError(
                f"num_envs × num_steps = {self.num_envs} × {self.num_steps} = {self.batch_size} is not divisible "
                f"by num_minibatches={self.num_minibatches}; choose num_minibatches among the divisors of "
                f"{self.batch_size} (e.g. {_divisors_hint(self.batch_size)})"
            )
        if self.shuffle == "envs" and self.num_envs % self.num_minibatches:
            raise ConfigError(
                f"shuffle='envs' splits the envs into minibatches: num_envs={self.num_envs} is not divisible by "
                f"num_minibatches={self.num_minibatches}; use shuffle='samples' or a divisor of num_envs"
            )
        if self.devices > 1:  # every device forms num_minibatches minibatches of its own shard
            local_envs, local_batch = self.num_envs // self.devices, self.batch_size // self.devices
            if local_batch % self.num_minibatches or (self.shuffle == "envs" and local_envs % self.num_minibatches):
                what = "envs" if self.shuffle == "envs" else "samples"
                have = local_envs if self.shuffle == "envs" else local_batch
                raise ConfigError(
                    f"devices={self.devices}: each device's {have} {what} must split into num_minibatches="
                    f"{self.num_minibatches} equal minibatches; lower devices or num_minibatches"
                )
        if self.total_timesteps < self.batch_size:
            raise ConfigError(
                f"total_timesteps={self.total_timesteps} is smaller than one update's batch "
                f"(num_envs × num_steps = {self.batch_size}); raise total_timesteps or lower num_envs/num_steps"
            )
        self._check_policy()
        check_hyperparams(self.hp)

    def _check_policy(self):
        for name in ("flow_steps", "n_mc", "diffusion_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.finetune_steps is not None and not (
            isinstance(self.finetune_steps, int) and 1 <= self.finetune_steps <= self.diffusion_steps
        ):
            raise ConfigError(
                f"finetune_steps must be None (all) or an integer in [1, diffusion_steps={self.diffusion_steps}], "
                f"got {self.finetune_steps!r}"
            )
        if not isinstance(self.ddim_eval_steps, int) or not 0 <= self.ddim_eval_steps <= self.diffusion_steps:
            raise ConfigError(
                f"ddim_eval_steps must be an integer in [0, diffusion_steps={self.diffusion_steps}] "
                f"(0 = deterministic DDPM means), got {self.ddim_eval_steps!r}"
            )
        c = self.fpo_log_ratio_clamp
        if c is not None and not (isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and c > 0):
            raise ConfigError(f"fpo_log_ratio_clamp must be None (no clamp) or a number > 0, got {c!r}")
        for name in ("sigma_min_sample", "sigma_min_prob"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if self.policy in _GENERATIVE_POLICIES:
            if self.objective not in _RATIO_OBJECTIVES:
                raise ConfigError(
                    f"objective={self.objective!r} needs an explicit likelihood; with policy={self.policy!r} "
                    f"allowed objectives: {_fmt(_RATIO_OBJECTIVES)}"
                )
            if self.kl_schedule != "none":
                raise ConfigError(f"kl_schedule={self.kl_schedule!r} needs an analytic KL; policy={self.policy!r} allows only 'none'")
            if self.distribution not in ("auto", "gaussian"):
                raise ConfigError(
                    f"policy={self.policy!r} is a continuous-action family; distribution={self.distribution!r} "
                    "conflicts with it (allowed: 'auto', 'gaussian')"
                )

    # -- derived sizes ---------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def scan_unroll(self) -> int:
        """``unroll``, or its platform default: loop trips cost a host round-trip on GPU, not on CPU."""
        if self.unroll is not None:
            return self.unroll
        return 1 if jax.default_backend() == "cpu" else 8

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size

    def replace(self, **kw) -> "Config":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "hp"}
        d["hp"] = {f.name: _py(getattr(self.hp, f.name)) for f in dataclasses.fields(self.hp)}
        return d


def _py(x):
    try:
        return float(x)
    except TypeError:
        return jax.tree.map(lambda v: v.tolist() if hasattr(v, "tolist") else v, x)


def _fmt(allowed) -> str:
    return ", ".join("none" if a is None else repr(a) if isinstance(a, str) else str(a) for a in allowed)


def _divisors_hint(n: int) -> str:
    divs = [d for d in range(1, min(n, 4096) + 1) if n % d == 0]
    return ", ".join(map(str, divs[:8])) + (", ..." if len(divs) > 8 else "")


def check_hyperparams(hp: Hyperparams) -> None:
    """Range checks on concrete hyperparameters (skipped for traced / batched values)."""

    def concrete(name):
        v = getattr(hp, name)
        try:
            arr = jnp.asarray(v)
            if isinstance(arr, jax.core.Tracer):
                return None
            return [float(x) for x in jnp.ravel(arr)]
        except Exception:
            return None

    rules = {
        "lr": (lambda v: v > 0, "> 0"),
        "gamma": (lambda v: 0 <= v <= 1, "in [0, 1]"),
        "gae_lambda": (lambda v: 0 <= v <= 1, "in [0, 1]"),
        "clip_eps": (lambda v: v > 0, "> 0"),
        "vf_clip_eps": (lambda v: v > 0, "> 0"),
        "vf_coef": (lambda v: v >= 0, ">= 0"),
        "ent_coef": (lambda v: math.isfinite(v), "finite"),
        "max_grad_norm": (lambda v: v > 0, "> 0"),
        "dual_clip_c": (lambda v: v > 1, "> 1"),
        "adam_eps": (lambda v: v > 0, "> 0"),
        "rms_decay": (lambda v: 0 < v < 1, "in (0, 1)"),
        "pspo_alpha": (lambda v: 0 <= v <= 1, "in [0, 1]"),
        "ce_beta_low": (lambda v: v >= 0, ">= 0"),
        "ce_beta_high": (lambda v: v >= 0, ">= 0"),
        "rv_nu": (lambda v: v >= 0, ">= 0"),
        "rv_delta": (lambda v: v >= 0, ">= 0"),
        "kl_coef": (lambda v: v >= 0, ">= 0"),
        "ewma_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
        "bpo_eps_low": (lambda v: 0 <= v < 1, "in [0, 1)"),
        "bpo_eps_high": (lambda v: v >= 0, ">= 0"),
        "bpo_temp": (lambda v: v > 0, "> 0"),
        "bpo_median_coef": (lambda v: v >= 0, ">= 0"),
        "bpo_clamp": (lambda v: v >= 0, ">= 0"),
        "reward_scale": (lambda v: v > 0, "> 0"),
        "eps_start": (lambda v: 0 <= v <= 1, "in [0, 1]"),
        "eps_finish": (lambda v: 0 <= v <= 1, "in [0, 1]"),
        "eps_decay": (lambda v: 0 < v <= 1, "in (0, 1]"),
        "gamma_denoise": (lambda v: 0 < v <= 1, "in (0, 1]"),
        "dppo_clip_base": (lambda v: v > 0, "> 0"),
        "brownian_coef": (lambda v: v >= 0, ">= 0"),
    }
    for name, (ok, text) in rules.items():
        values = concrete(name)
        if values is None:
            continue
        for v in values:
            if not (math.isfinite(v) and ok(v)):
                raise ConfigError(f"hyperparameter {name}={v!r} must be {text}")


# -- presets ------------------------------------------------------------------------------

def _cartpole() -> Config:
    """PureJaxRL's gymnax CartPole defaults (ALGORITHMS.md §2)."""
    return Config()


def _classic_continuous() -> Config:
    """Continuous gymnax control (Pendulum-v1, MountainCarContinuous-v0)."""
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


def _brax() -> Config:
    """PureJaxRL's continuous (Brax) PPO defaults (ALGORITHMS.md §2)."""
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


def _minatar() -> Config:
    """PureJaxRL-style MinAtar settings (BENCHMARKS.md anchor: 64 × 128, 8 minibatches, relu)."""
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


def _pqn_cartpole() -> Config:
    """purejaxql's PQN CartPole defaults (ALGORITHMS.md §3)."""
    return Config(
        algo="pqn",
        env="CartPole-v1",
        num_envs=32,
        num_steps=64,
        total_timesteps=500_000,
        update_epochs=4,
        num_minibatches=16,
        actor_hidden=(256, 256),
        activation="relu",
        optimizer="radam",
        anneal_lr=True,
        eval_every=12,  # purejaxql: every 5% of the 244 updates (int(12.2)), 128 greedy episodes
        eval_envs=128,
        hp=Hyperparams(
            lr=1e-4, gamma=0.99, gae_lambda=0.95, max_grad_norm=10.0, adam_eps=1e-8, reward_scale=0.1,
            eps_start=1.0, eps_finish=0.2, eps_decay=0.2,
        ),
    )


def _pqn_minatar() -> Config:
    """purejaxql's PQN MinAtar defaults (ALGORITHMS.md §3): conv torso, 128 envs × 32 steps."""
    return Config(
        algo="pqn",
        env="Breakout-MinAtar",
        num_envs=128,
        num_steps=32,
        total_timesteps=10_000_000,
        update_epochs=2,
        num_minibatches=32,
        actor_hidden=(128,),
        activation="relu",
        optimizer="radam",
        anneal_lr=True,
        eval_every=122,  # about 5% of the 2441 updates
        eval_envs=128,
        hp=Hyperparams(
            lr=5e-4, gamma=0.99, gae_lambda=0.65, max_grad_norm=10.0, adam_eps=1e-8,
            eps_start=1.0, eps_finish=0.05, eps_decay=0.1,
        ),
    )


def _fpo_classic_continuous() -> Config:
    """FPO on continuous gymnax control: the PPO Pendulum settings and the reference's flow (10
    Euler steps, 8 pairs, ε-MSE, clip 0.05, plain value MSE ×0.25, no entropy); velocity net 64-64
    SiLU (the reference's 4×32 learned Pendulum about half as fast: −750 vs −360 after 3e5 steps)."""
    base = _classic_continuous()
    return base.replace(
        algo="fpo", policy="flow", actor_hidden=(64, 64), critic_hidden=(64, 64), activation="silu",
        clip_value=False, hp=base.hp.replace(clip_eps=0.05, ent_coef=0.0, vf_coef=0.5),
    )


def _fpo_brax() -> Config:
    """FPO reference (Playground DMC) settings on Brax: 2048 envs × 30 steps, 32 minibatches,
    16 epochs, lr 3e-4, γ 0.995, 4×32 SiLU velocity and 5×256 SiLU critic (ALGORITHMS.md §9)."""
    base = _brax()
    return base.replace(
        algo="fpo", policy="flow", num_steps=30, update_epochs=16, num_minibatches=32,
        actor_hidden=(32, 32, 32, 32), critic_hidden=(256,) * 5, activation="silu", clip_value=False,
        hp=base.hp.replace(lr=3e-4, gamma=0.995, gae_lambda=0.95, clip_eps=0.05, ent_coef=0.0, vf_coef=0.5),
    )


def _dppo_classic_continuous() -> Config:
    """DPPO from scratch on continuous gymnax control: K = K′ (all steps fine-tuned), γ_denoise
    0.99, clip 0.1 (scheduled from dppo_clip_base), σ floors 0.1, no value clipping."""
    base = _classic_continuous()
    return base.replace(
        algo="dppo", policy="diffusion", diffusion_steps=10, finetune_steps=None, ddim_eval_steps=5,
        actor_hidden=(64, 64), activation="silu", clip_value=False,
        hp=base.hp.replace(clip_eps=0.1, dppo_clip_base=0.1, ent_coef=0.0, gamma_denoise=0.99),
    )


def _dppo_brax() -> Config:
    """DPPO from scratch on Brax: the PPO Brax pipeline with the diffusion family (K = K′ = 20,
    256-256-256 SiLU denoiser, clip 0.1, γ_denoise 0.99, σ floors 0.1; ALGORITHMS.md §10)."""
    base = _brax()
    return base.replace(
        algo="dppo", policy="diffusion", diffusion_steps=20, finetune_steps=None, ddim_eval_steps=5,
        actor_hidden=(256, 256, 256), activation="silu", clip_value=False,
        hp=base.hp.replace(clip_eps=0.1, dppo_clip_base=0.1, ent_coef=0.0, gamma_denoise=0.99),
    )


def _policyflow_classic_continuous() -> Config:
    """PolicyFlow on continuous gymnax control: PPO Pendulum settings, clip 0.2, Brownian w_b 0.01."""
    base = _classic_continuous()
    return base.replace(algo="policyflow", policy="policyflow", actor_hidden=(64, 64), activation="silu",
                        hp=base.hp.replace(brownian_coef=0.01))


def _policyflow_brax() -> Config:
    """PolicyFlow on Brax: PPO Brax pipeline, clip 0.2, Brownian w_b 0.01 (UNVERIFIED)."""
    base = _brax()
    return base.replace(algo="policyflow", policy="policyflow", activation="silu", hp=base.hp.replace(brownian_coef=0.01))


PRESETS: dict[str, typing.Callable[[], Config]] = {
    "ppo-cartpole": _cartpole,
    "ppo-classic-continuous": _classic_continuous,
    "ppo-brax": _brax,
    "ppo-minatar": _minatar,
    "pqn-cartpole": _pqn_cartpole,
    "pqn-minatar": _pqn_minatar,
    "fpo-classic-continuous": _fpo_classic_continuous,
    "fpo-brax": _fpo_brax,
    "dppo-classic-continuous": _dppo_classic_continuous,
    "dppo-brax": _dppo_brax,
    "policyflow-classic-continuous": _policyflow_classic_continuous,
    "policyflow-brax": _policyflow_brax,
}


def preset(name: str, **overrides) -> Config:
    """Return the named preset, with ``overrides`` applied (static fields or hyperparameters)."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is not known; available presets: {', '.join(PRESETS)}" + _suggest(name, PRESETS))
    return apply_overrides(PRESETS[name](), overrides)


def default_preset_name(algo: str, env: str) -> str:
    """Pick the preset whose defaults fit ``env`` (brax, MinAtar, continuous classic, else CartPole)."""
    from prpo import envs as _envs

    try:
        family = _envs.env_family(env)
        spec = _envs.env_spec(env) if family == "gymnax" else None
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if family in ("brax", "playground"):  # MuJoCo continuous control: the Brax presets (FPO's are Playground's)
        kind = "brax"
    elif env.endswith("-MinAtar"):
        kind = "minatar"
    elif not isinstance(spec.action_space, _envs.Discrete):
        kind = "classic-continuous"
    else:
        kind = "cartpole"
    own = f"{algo}-{kind}"
    return own if own in PRESETS else f"ppo-{kind}"


# -- overrides ----------------------------------------------------------------------------

def option_names() -> dict[str, str]:
    """All settable option names -> 'static' or 'hyperparameter'."""
    names = {f.name: "static" for f in dataclasses.fields(Config) if f.name != "hp"}
    names.update({f.name: "hyperparameter" for f in dataclasses.fields(Hyperparams)})
    return names


def _suggest(name, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _kinds(annotation: Any) -> tuple[set, bool]:
    """(base kinds among {'int','float','bool','str','tuple'}, accepts None) of an annotation."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    kinds, optional = set(), False
    for a in args:
        if a is type(None):
            optional = True
        elif typing.get_origin(a) is tuple or a is tuple:
            kinds.add("tuple")
        elif isinstance(a, type):
            kinds.add(a.__name__)
    return kinds, optional


def _parse(name: str, raw: Any, annotation: Any) -> Any:
    """Parse a CLI string for option ``name`` according to its annotation."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    kinds, optional = _kinds(annotation)
    if optional and text.lower() in ("none", "null"):
        return None
    try:
        if "tuple" in kinds:
            return tuple(int(float(t)) for t in text.strip("()[] ").replace(" ", ",").split(",") if t)
        if "bool" in kinds:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if "int" in kinds:
            value = float(text)
            if value != int(value):
                raise ValueError(text)
            return int(value)
        if "float" in kinds:
            return float(text)
    except ValueError:
        want = "/".join(sorted(kinds)) + ("/none" if optional else "")
        raise ConfigError(f"option {name}={raw!r}: expected a value of type {want}") from None
    return text


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Apply ``{name: value}`` (values may be strings from the CLI) to static fields or hyperparameters."""
    static_fields = {f.name: f for f in dataclasses.fields(Config) if f.name != "hp"}
    hp_fields = {f.name: f for f in dataclasses.fields(Hyperparams)}
    hints_cfg = typing.get_type_hints(Config)
    hints_hp = typing.get_type_hints(Hyperparams)
    static_kw, hp_kw = {}, {}
    for name, raw in overrides.items():
        if name in static_fields:
            static_kw[name] = _parse(name, raw, hints_cfg[name])
        elif name in hp_fields:
            hp_kw[name] = _parse(name, raw, hints_hp[name])
        else:
            allowed = sorted(static_fields) + sorted(hp_fields)
            raise ConfigError(
                f"unknown option {name!r}{_suggest(name, allowed)}; settable options: {', '.join(allowed)}"
            )
    hp = cfg.hp.replace(**hp_kw) if hp_kw else cfg.hp
    return dataclasses.replace(cfg, **static_kw, hp=hp)
