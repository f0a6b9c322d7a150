"""DPPO, Diffusion Policy Policy Optimization (Ren et al., 2024): PPO on the denoising chain.

A K-step DDPM policy (:class:`prpo.diffusion.DiffusionPolicy`: cosine schedule, ε-prediction);
each of the last K′ denoising steps (``finetune_steps``) is a Gaussian PPO sample with
advantage ``γ_denoise^(K′−1−i)·A`` and a per-step clip ε_i rising from ``dppo_clip_base`` to
``clip_eps``; earlier steps run a frozen copy. Per-step log-likelihoods use separate σ floors
(``sigma_min_sample``, ``sigma_min_prob``), clamped to [−5, 2] and averaged over action
dimensions as in the reference (``dppo_logprob_reduce="sum"``, ``dppo_logprob_clamp=False``
for the alternatives). Evaluation uses DDIM (``ddim_eval_steps``).

GRPO-Guard (Wang et al., 2025) as options of the family, off by default: ``ratio_norm="guard"``
(RatioNorm: the per-step log-ratio with its analytic mean shift removed and rescaled by the
step's noise std, ``log r̂_i = s_i·(log r_i + reduce_d Δμ²/(2s_i²))``), ``"batch"`` /
``"batch_center"`` (the minibatch mean per step removed, rescaled by ``s_i`` or not;
``ratio_norm_sg``), and ``step_reweight="guard"`` (per-step gradient reweighting, the DDPM
analogue of the paper's ``1/Δt``). Formulas and the choices made: :mod:`prpo.diffusion`.

This module registers the ``diffusion`` policy family (``Config.policy="diffusion"``).
"""

from __future__ import annotations

from prpo import diffusion
from prpo.algorithm import Algorithm, action_dim, check_generative, register
from prpo.config import ConfigError
from prpo.registry import hyperparameter, register_policy, static

__all__ = ["DPPO"]


def _positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _make_diffusion(cfg, spec, network=None):
    critic_hidden = cfg.critic_hidden if cfg.critic_hidden is not None else cfg.actor_hidden
    obs_ndim, dim = len(spec.obs_shape), action_dim(spec)
    denoiser = network if network is not None else diffusion.Denoiser(
        action_dim=dim, obs_ndim=obs_ndim, hidden=tuple(cfg.actor_hidden), activation=cfg.activation)
    return diffusion.DiffusionPolicy(
        denoiser=denoiser,
        critic=diffusion.Critic(obs_ndim=obs_ndim, hidden=tuple(critic_hidden), activation=cfg.activation),
        action_dim=dim,
        steps=cfg.diffusion_steps,
        finetune_steps=cfg.finetune_steps,
        ddim_steps=cfg.ddim_eval_steps,
        sigma_min_sample=cfg.sigma_min_sample,
        sigma_min_prob=cfg.sigma_min_prob,
        logprob_clamp=(-5.0, 2.0) if cfg.dppo_logprob_clamp else None,
        logprob_reduce=cfg.dppo_logprob_reduce,
        action_low=spec.action_space.low,
        action_high=spec.action_space.high,
        ratio_norm=cfg.ratio_norm,
        ratio_norm_sg=cfg.ratio_norm_sg,
        step_reweight=cfg.step_reweight,
    )


def _check(cfg):
    check_generative(cfg)
    k = cfg.diffusion_steps
    if cfg.finetune_steps is not None and not (_positive_int(cfg.finetune_steps) and cfg.finetune_steps <= k):
        raise ConfigError(f"finetune_steps must be None (all) or an integer in [1, diffusion_steps={k}], "
                          f"got {cfg.finetune_steps!r}")
    if not isinstance(cfg.ddim_eval_steps, int) or not 0 <= cfg.ddim_eval_steps <= k:
        raise ConfigError(f"ddim_eval_steps must be an integer in [0, diffusion_steps={k}] "
                          f"(0 = deterministic DDPM means), got {cfg.ddim_eval_steps!r}")


_POSITIVE = dict(check=lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and v < float("inf"),
                 allowed="> 0")

register_policy(
    "diffusion", _make_diffusion, check=_check, doc="K-step DDPM policy, per-denoising-step Gaussian ratios",
    options={
        "diffusion_steps": static(20, "denoising steps K", type=int, check=_positive_int, allowed="a positive integer"),
        "finetune_steps": static(None, "fine-tuned (last) steps K′; None = all K", type=int | None),
        "ddim_eval_steps": static(5, "DDIM steps for evaluation (0 = deterministic DDPM means)", type=int),
        "sigma_min_sample": static(0.1, "σ floor when sampling (exploration)", type=float, **_POSITIVE),
        "sigma_min_prob": static(0.1, "σ floor in the per-step likelihood", type=float, **_POSITIVE),
        "dppo_logprob_reduce": static("mean", "per-step log-prob over action dims: mean (reference) or sum",
                                      choices=("mean", "sum")),
        "dppo_logprob_clamp": static(True, "clamp per-dim log-probs to [−5, 2] (reference)", type=bool,
                                     choices=(True, False)),
        "ratio_norm": static("none", "GRPO-Guard per-step ratio normalisation: none (DPPO), guard (RatioNorm: analytic "
                             "mean shift removed, × step noise std), batch (minibatch mean per step removed, × step "
                             "noise std), batch_center (minibatch mean removed)", choices=diffusion.RATIO_NORMS),
        "ratio_norm_sg": static(True, "stop-gradient on the minibatch mean of ratio_norm=batch/batch_center", type=bool,
                                choices=(True, False)),
        "step_reweight": static("none", "GRPO-Guard per-step gradient reweighting: none, or guard (advantage of step i "
                                "× w_i ∝ 1/(scale of ∂ log r_i/∂ε̂), mean 1)", choices=diffusion.STEP_REWEIGHTS),
        "gamma_denoise": hyperparameter(0.99, "advantage weight γ_denoise^(K′−1−i) of fine-tuned step i",
                                        lambda v: 0 < v <= 1, "in (0, 1]"),
        "dppo_clip_base": hyperparameter(1e-3, "clip ε of the noisiest fine-tuned step (rises to clip_eps at the last)",
                                         lambda v: v > 0, "> 0"),
    },
)

DPPO = register(Algorithm(
    name="dppo",
    description="Diffusion Policy Policy Optimization: per-denoising-step Gaussian ratios, fine-tune last K' steps",
    overrides=dict(policy="diffusion", clip_eps=0.1, dppo_clip_base=0.1, ent_coef=0.0, clip_value=False,
                   activation="silu"),
    family_overrides={
        # from scratch: K = K′ = 10 (all steps fine-tuned), 64-64 SiLU denoiser
        "classic-continuous": dict(diffusion_steps=10, actor_hidden=(64, 64)),
        # the PPO Brax pipeline with K = K′ = 20 and a 256-256-256 SiLU denoiser
        "brax": dict(diffusion_steps=20, actor_hidden=(256, 256, 256)),
    },
    presets=("classic-continuous", "brax"),
    preset_docs={
        "classic-continuous": "DPPO from scratch on continuous gymnax control: K = K′ = 10, clip 0.1, γ_denoise 0.99",
        "brax": "DPPO from scratch on Brax: K = K′ = 20, 256-256-256 SiLU denoiser, clip 0.1",
    },
    action_spaces=("continuous",),
))
