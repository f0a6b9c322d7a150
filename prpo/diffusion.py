"""Diffusion policy family for DPPO (Diffusion Policy Policy Optimization, Ren et al., 2024).

The K-step DDPM denoising chain is part of the MDP: each denoising step is a Gaussian, so each
fine-tuned step is its own PPO sample. In the normalised action space ``[−1, 1]^D``:

    a^K ~ N(0, I);  for k = K … 1 (index t = k − 1 = K−1 … 0):
      ε̂ = ε_θ(a^k, t, s);  x̂_0 = clip((a^k − √(1−ᾱ_t)·ε̂)/√ᾱ_t, ±1)
      μ_θ = c1_t·x̂_0 + c2_t·a^k                                   (DDPM posterior mean)
      a^{k−1} = μ_θ + max(σ_t, σ_min_sample)·clip(ξ, −3, 3)        (final a^0 clipped to ±1)
    log π_t = reduce_dims clamp(log N(a^{k−1}; μ_θ, max(σ_t, σ_min_prob)²), −5, 2)

``reduce_dims`` is the mean over action dims (the reference; ``logprob_reduce="sum"`` for the
usual Gaussian convention). Only the last ``K′`` steps (``t < K′``) are fine-tuned: the earlier
ones use a frozen copy of the denoiser (``params["base"]``, under stop-gradient). The rollout
stores the last ``K′ + 1`` latents and the ``K′`` old log-probabilities; ``log_ratio`` returns
``[B, K′]`` log-ratios with ``extras["adv_weight"] = γ_denoise^(K′−1−i)`` and the per-step clip
``ε_i = ε_base + (ε − ε_base)·(exp(3u) − 1)/(e³ − 1)``, ``u = i/(K′ − 1)`` (``i = 0`` is the
noisiest fine-tuned step), which the generic update step applies.

**GRPO-Guard ratio normalisation** (Wang et al., 2025, arXiv 2510.22319; ``ratio_norm``, off by
default). For a Gaussian step of std ``s_i = max(σ_t, σ_min_prob)`` the unclamped log-ratio of the
stored sample ``x = a^{k−1}`` is, with ``Δμ = μ_θ − μ_old`` and ``ξ = (x − μ_old)/s``,

    log r_i = reduce_d [ ξ·Δμ/s − Δμ²/(2s²) ]

so its mean given the state is ``−reduce_d Δμ²/(2s²) < 0`` (the log-ratio's mean is negative, the
median ratio below 1) and its spread, ``∝ |Δμ|/s``, grows as the step's noise shrinks. Choices:

* ``"guard"`` (the paper's RatioNorm as the VeRL-Omni ``grpo_guard`` loss implements it; the
  paper's own equations were not at hand, only its abstract and that implementation): add the
  analytic mean back and rescale by the step's noise, ``log r̂_i = s_i·(log r_i + reduce_d Δμ²/(2s_i²))
  = reduce_d (x − μ_old)·Δμ / s_i``, computed in the last form from the stored old means
  (``aux["mean"]``, kept at rollout only in this mode). Gradients flow through ``Δμ`` (the bias is
  not under stop-gradient, as in the reference). The per-dim log-prob clamp is not applied in
  this mode (UNVERIFIED choice: with a clamp the identity fails and a clamped dim's bias term
  would push ``μ_θ`` away from ``μ_old``).
* ``"batch"``: the empirical counterpart, ``log r̂_i = s_i·(log r_i − mean_B log r_i)`` over the
  minibatch, per step; ``"batch_center"``: ``log r_i − mean_B log r_i`` (no rescaling). The
  statistic is under stop-gradient by default (``ratio_norm_sg``; UNVERIFIED — the paper does
  not use batch statistics). Under ``shard_map`` the mean is the device's shard's.

``step_reweight="guard"`` is the paper's gradient reweighting ("1/Δt" for flow matching): step ``i``'s
advantage weight is multiplied by ``w_i ∝ 1/g_i``, with ``g_i`` the scale of ``∂ log r̂_i/∂ε̂`` at
``θ = θ_old``: ``κ_t = β_t/(√α_t·√(1 − ᾱ_t)) = |∂μ/∂ε̂|`` (unclipped ``x̂_0``) for the rescaled ratios
(``guard``, ``batch``) and ``κ_t/s_i`` for the raw ones (``none``, ``batch_center``); normalised to
mean 1 over the fine-tuned steps (our choice; the reference's ``1/Δt`` is unnormalised — UNVERIFIED
DDPM analogue of the flow-matching ``1/Δt``). With the cosine schedule the noisiest step has
``β = 0.999`` (clipped), a large ``κ`` and so a weight near 0; there ``x̂_0`` is nearly always
clipped to ±1 and ``μ`` barely depends on ``ε̂`` anyway.

Evaluation (``mode``) runs deterministic DDIM with ``ddim_steps`` steps from ``a^K = 0``
(``ddim_steps = 0``: the DDPM chain of means, no noise). Noise schedule: cosine (the reference's).
Pretrained denoisers: :func:`bc_loss` / :func:`pretrain` fit ε_θ to demonstrations, and
:func:`finetune_params` builds a parameter tree (base = ft = pretrained) for
``make_train(cfg, init_params=...)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from prpo.networks import MLP, orthogonal

__all__ = [
    "cosine_beta_schedule",
    "Schedule",
    "Denoiser",
    "Critic",
    "DiffusionPolicy",
    "clip_schedule",
    "gaussian_log_prob",
    "RATIO_NORMS",
    "STEP_REWEIGHTS",
    "guard_log_ratio",
    "center_log_ratio",
    "step_grad_scale",
    "bc_loss",
    "pretrain",
    "finetune_params",
]


def cosine_beta_schedule(steps: int, s: float = 0.008) -> np.ndarray:
    """Cosine schedule (Nichol & Dhariwal): ``β_t = 1 − ᾱ_{t+1}/ᾱ_t``, clipped to ≤ 0.999."""
    x = np.linspace(0, steps, steps + 1, dtype=np.float64)
    ac = np.cos(((x / steps) + s) / (1 + s) * np.pi * 0.5) ** 2
    ac = ac / ac[0]
    return np.clip(1 - ac[1:] / ac[:-1], 0, 0.999)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """DDPM constants (float64 numpy, cast to float32 where used)."""

    betas: np.ndarray

    @property
    def K(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod(self):
        return np.cumprod(1.0 - self.betas)

    @property
    def alphas_cumprod_prev(self):
        return np.concatenate([[1.0], self.alphas_cumprod[:-1]])

    @property
    def posterior_std(self):
        ac, acp = self.alphas_cumprod, self.alphas_cumprod_prev
        var = self.betas * (1.0 - acp) / (1.0 - ac)
        return np.sqrt(np.maximum(var, 1e-20))

    @property
    def coef_x0(self):
        return self.betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @property
    def coef_xt(self):
        return (1.0 - self.alphas_cumprod_prev) * np.sqrt(1.0 - self.betas) / (1.0 - self.alphas_cumprod)


def _timestep_embedding(t, dim: int = 16):
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    x = jnp.asarray(t, jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.sin(x), jnp.cos(x)], axis=-1)


class Denoiser(nn.Module):
    """``ε_θ(s, x, t) = MLP([s, x, emb(t)])`` (sinusoidal step embedding); ``obs`` broadcast to ``x``."""

    action_dim: int
    obs_ndim: int = 1
    hidden: Sequence[int] = (256, 256, 256)
    activation: str = "silu"
    emb_dim: int = 16

    @nn.compact
    def __call__(self, obs, x, t):
        o = obs.reshape(obs.shape[: obs.ndim - self.obs_ndim] + (-1,)).astype(jnp.float32)
        extra = x.ndim - o.ndim
        o = jnp.broadcast_to(o.reshape(o.shape[:-1] + (1,) * extra + o.shape[-1:]), x.shape[:-1] + o.shape[-1:])
        emb = _timestep_embedding(jnp.broadcast_to(t, x.shape[:-1]), self.emb_dim)
        h = MLP(tuple(self.hidden), self.activation)(jnp.concatenate([o, x, emb], axis=-1))
        return nn.Dense(self.action_dim)(h)


class Critic(nn.Module):
    obs_ndim: int = 1
    hidden: Sequence[int] = (256, 256, 256)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs):
        o = obs.reshape(obs.shape[: obs.ndim - self.obs_ndim] + (-1,)).astype(jnp.float32)
        h = MLP(tuple(self.hidden), self.activation)(o)
        return nn.Dense(1, kernel_init=orthogonal(1.0))(h)[..., 0]


def gaussian_log_prob(x, mean, std, clamp: tuple[float, float] | None = (-5.0, 2.0), reduce: str = "mean"):
    """Per-dim ``log N(x; mean, std²)``, clamped, reduced over the last axis (mean or sum)."""
    lp = -0.5 * jnp.square((x - mean) / std) - jnp.log(std) - 0.5 * math.log(2 * math.pi)
    if clamp is not None:
        lp = jnp.clip(lp, clamp[0], clamp[1])
    return lp.mean(-1) if reduce == "mean" else lp.sum(-1)


def clip_schedule(num_steps: int, clip_eps, clip_base, rate: float = 3.0):
    """DPPO's per-step clip ``ε_base + (ε − ε_base)·(exp(rate·u) − 1)/(exp(rate) − 1)``, ``u = i/(K′−1)``."""
    u = jnp.arange(num_steps, dtype=jnp.float32) / max(num_steps - 1, 1)
    if num_steps == 1:
        u = jnp.ones((1,), jnp.float32)
    return clip_base + (clip_eps - clip_base) * (jnp.exp(rate * u) - 1.0) / (math.exp(rate) - 1.0)


#: ``DiffusionPolicy.ratio_norm`` choices (module docstring)
RATIO_NORMS = ("none", "guard", "batch", "batch_center")
#: ``DiffusionPolicy.step_reweight`` choices
STEP_REWEIGHTS = ("none", "guard")


def guard_log_ratio(x, mean_new, mean_old, std, reduce: str = "mean"):
    """GRPO-Guard RatioNorm of a Gaussian step: ``reduce_d (x − μ_old)·(μ_new − μ_old) / s``.

    Equals ``s·(log r + reduce_d (μ_new − μ_old)²/(2s²))`` for the unclamped log-ratio
    ``log r = log N(x; μ_new, s²) − log N(x; μ_old, s²)`` (reduced the same way). ``x``, ``mean_*``:
    ``[..., D]``; ``std``: broadcastable to them. Returns ``[...]``.
    """
    lr = (x - mean_old) * (mean_new - mean_old) / std
    return lr.mean(-1) if reduce == "mean" else lr.sum(-1)


def center_log_ratio(log_ratio, scale=1.0, stop_gradient: bool = True):
    """``scale·(log r − mean_B log r)``: per column (denoising step) of ``log r`` ``[B, K]``, the
    minibatch mean removed (under stop-gradient unless ``stop_gradient=False``)."""
    mean = log_ratio.mean(0, keepdims=True)
    if stop_gradient:
        mean = jax.lax.stop_gradient(mean)
    return scale * (log_ratio - mean)


def step_grad_scale(schedule: "Schedule", ts, std_floor: float, rescaled: bool) -> np.ndarray:
    """Per-step scale ``g`` of ``∂ log r̂/∂ε̂`` at the rollout parameters, for steps ``ts``:
    ``κ_t = β_t/(√(1 − β_t)·√(1 − ᾱ_t))`` if the ratio is rescaled by ``s_t`` (``guard``,
    ``batch``), else ``κ_t/s_t`` with ``s_t = max(σ_t, std_floor)`` (float64 numpy)."""
    ts = np.asarray(ts)
    b, ac = schedule.betas[ts], schedule.alphas_cumprod[ts]
    kappa = b / (np.sqrt(1.0 - b) * np.sqrt(1.0 - ac))
    return kappa if rescaled else kappa / np.maximum(schedule.posterior_std[ts], std_floor)


@dataclasses.dataclass(frozen=True)
class DiffusionPolicy:
    """DPPO's diffusion policy family (module docstring). Params: ``{"denoiser", "base", "critic"}``."""

    denoiser: nn.Module
    critic: nn.Module
    action_dim: int
    steps: int = 20  # K
    finetune_steps: int | None = None  # K′ (None = K)
    ddim_steps: int = 5  # evaluation; 0 = deterministic DDPM means
    sigma_min_sample: float = 0.1
    sigma_min_prob: float = 0.1
    logprob_clamp: tuple[float, float] | None = (-5.0, 2.0)
    logprob_reduce: str = "mean"
    denoised_clip: float = 1.0
    final_clip: float | None = 1.0
    noise_clip: float = 3.0
    action_low: float | tuple = -1.0  # env bounds: a_env = low + (a + 1)/2·(high − low)
    action_high: float | tuple = 1.0
    ratio_norm: str = "none"  # RATIO_NORMS (module docstring: GRPO-Guard)
    ratio_norm_sg: bool = True  # stop-gradient on the minibatch mean ("batch", "batch_center")
    step_reweight: str = "none"  # STEP_REWEIGHTS
    needs_hp = True

    def __post_init__(self):
        if self.ratio_norm not in RATIO_NORMS:
            raise ValueError(f"ratio_norm={self.ratio_norm!r}; allowed: {', '.join(map(repr, RATIO_NORMS))}")
        if self.step_reweight not in STEP_REWEIGHTS:
            raise ValueError(f"step_reweight={self.step_reweight!r}; allowed: {', '.join(map(repr, STEP_REWEIGHTS))}")

    @property
    def K1(self) -> int:
        return self.steps if self.finetune_steps is None else self.finetune_steps

    @property
    def schedule(self) -> Schedule:
        return Schedule(cosine_beta_schedule(self.steps))

    def _consts(self):
        s = self.schedule
        f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        return dict(ac=f(s.alphas_cumprod), c0=f(s.coef_x0), ct=f(s.coef_xt), std=f(s.posterior_std))

    # -- parameters ------------------------------------------------------------------------
    def init(self, key, obs):
        k_d, k_c = jax.random.split(key)
        x = jnp.zeros(obs.shape[:1] + (self.action_dim,), jnp.float32)
        den = self.denoiser.init(k_d, obs, x, jnp.zeros(obs.shape[:1], jnp.int32))
        return {"denoiser": den, "base": den, "critic": self.critic.init(k_c, obs)}

    def value(self, params, obs):
        return self.critic.apply(params["critic"], obs)

    def _eps(self, params, obs, x, t):
        """ε̂ with the fine-tuned denoiser where ``t < K′``, the frozen base elsewhere."""
        ft = self.denoiser.apply(params["denoiser"], obs, x, t)
        if self.K1 >= self.steps:
            return ft
        base = self.denoiser.apply(jax.lax.stop_gradient(params["base"]), obs, x, t)
        return jnp.where((t < self.K1)[..., None], ft, base)

    def _x0(self, c, x, t, eps):
        ac = c["ac"][t][..., None]
        x0 = (x - jnp.sqrt(1.0 - ac) * eps) / jnp.sqrt(ac)
        return jnp.clip(x0, -self.denoised_clip, self.denoised_clip)

    def mean_std(self, params, obs, x, t):
        """Posterior mean ``μ_θ(x, t, s)`` and unfloored ``σ_t`` of one denoising step."""
        c = self._consts()
        t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), x.shape[:-1])
        x0 = self._x0(c, x, t, self._eps(params, obs, x, t))
        mean = c["c0"][t][..., None] * x0 + c["ct"][t][..., None] * x
        return mean, c["std"][t][..., None]

    def step_log_prob(self, params, obs, x_prev, x_next, t):
        mean, std = self.mean_std(params, obs, x_prev, t)
        return gaussian_log_prob(x_next, mean, jnp.maximum(std, self.sigma_min_prob), self.logprob_clamp, self.logprob_reduce)

    # -- sampling --------------------------------------------------------------------------
    def sample_chain(self, params, obs, key):
        """Full DDPM chain ``[B, K + 1, D]`` (``a^K`` first, ``a^0`` last)."""
        b = obs.shape[0]
        k0, k_steps = jax.random.split(key)
        x = jax.random.normal(k0, (b, self.action_dim), jnp.float32)

        def step(x, inp):
            t, k = inp
            mean, std = self.mean_std(params, obs, x, t)
            xi = jnp.clip(jax.random.normal(k, x.shape, jnp.float32), -self.noise_clip, self.noise_clip)
            x_new = mean + jnp.maximum(std, self.sigma_min_sample) * xi
            if self.final_clip is not None:
                x_new = jnp.where(t == 0, jnp.clip(x_new, -self.final_clip, self.final_clip), x_new)
            return x_new, x_new

        ts = jnp.arange(self.steps - 1, -1, -1, dtype=jnp.int32)
        _, xs = jax.lax.scan(step, x, (ts, jax.random.split(k_steps, self.steps)))
        return jnp.concatenate([x[:, None], jnp.swapaxes(xs, 0, 1)], axis=1)

    def _ft_ts(self):
        return jnp.arange(self.K1 - 1, -1, -1, dtype=jnp.int32)  # step t of fine-tuned step i

    def chain_log_prob(self, params, obs, chain):
        """``[B, K′]`` log-probabilities of the fine-tuned steps of ``chain`` (``[B, K′ + 1, D]``)."""
        return self.step_log_prob(params, obs, chain[:, :-1], chain[:, 1:], self._ft_ts()[None, :])

    def chain_means(self, params, obs, chain):
        """``[B, K′, D]`` posterior means ``μ_θ`` of the fine-tuned steps of ``chain``."""
        return self.mean_std(params, obs, chain[:, :-1], self._ft_ts()[None, :])[0]

    def step_std(self):
        """``[K′]`` likelihood stds ``s_i = max(σ_t, σ_min_prob)`` of the fine-tuned steps."""
        return jnp.maximum(self._consts()["std"][self._ft_ts()], self.sigma_min_prob)

    def step_weights(self) -> np.ndarray:
        """``[K′]`` GRPO-Guard gradient reweighting ``w_i ∝ 1/g_i`` (mean 1); ones when off."""
        if self.step_reweight == "none":
            return np.ones(self.K1)
        g = step_grad_scale(self.schedule, np.arange(self.K1 - 1, -1, -1), self.sigma_min_prob,
                            rescaled=self.ratio_norm in ("guard", "batch"))
        w = 1.0 / g
        return w / w.mean()

    def to_env(self, x):
        low, high = jnp.asarray(self.action_low, jnp.float32), jnp.asarray(self.action_high, jnp.float32)
        return low + (x + 1.0) * 0.5 * (high - low)

    def act(self, params, obs, key):
        chain = self.sample_chain(params, obs, key)[:, self.steps - self.K1:]
        aux = {"value": self.value(params, obs), "chain": chain}
        if self.ratio_norm == "guard":  # the old means too, for the analytic RatioNorm
            aux["mean"] = self.chain_means(params, obs, chain)
            aux["log_prob"] = gaussian_log_prob(chain[:, 1:], aux["mean"], self.step_std()[None, :, None],
                                                self.logprob_clamp, self.logprob_reduce)
        else:
            aux["log_prob"] = self.chain_log_prob(params, obs, chain)
        return self.to_env(chain[:, -1]), jax.tree.map(jax.lax.stop_gradient, aux)

    def log_ratio(self, params, obs, action, aux, key=None, hp=None):
        chain = aux["chain"]
        if self.ratio_norm == "guard":  # one denoiser pass for the means and the log-probs
            mean = self.chain_means(params, obs, chain)
            std = self.step_std()[None, :, None]
            logp = gaussian_log_prob(chain[:, 1:], mean, std, self.logprob_clamp, self.logprob_reduce)
        else:
            logp = self.chain_log_prob(params, obs, chain)
        value = self.value(params, obs)
        extras = {"entropy": jnp.zeros_like(value), "value": value, "log_prob": logp.sum(-1)}
        if hp is not None:
            i = jnp.arange(self.K1, dtype=jnp.float32)
            extras["adv_weight"] = hp.gamma_denoise ** (self.K1 - 1 - i)
            if self.step_reweight != "none":
                extras["adv_weight"] = extras["adv_weight"] * jnp.asarray(self.step_weights(), jnp.float32)
            extras["clip_eps"] = clip_schedule(self.K1, hp.clip_eps, hp.dppo_clip_base)
        log_ratio = logp - aux["log_prob"]
        if self.ratio_norm == "none":
            return log_ratio, extras
        extras["log_ratio_raw"] = log_ratio  # the unnormalised ratio, for diagnostics
        if self.ratio_norm == "guard":
            log_ratio = guard_log_ratio(chain[:, 1:], mean, aux["mean"], std, self.logprob_reduce)
        else:
            scale = self.step_std()[None, :] if self.ratio_norm == "batch" else 1.0
            log_ratio = center_log_ratio(log_ratio, scale, self.ratio_norm_sg)
        return log_ratio, extras

    def mode(self, params, obs):
        """Deterministic DDIM (η = 0) with ``ddim_steps`` steps from ``a^K = 0``."""
        c = self._consts()
        x = jnp.zeros(obs.shape[:1] + (self.action_dim,), jnp.float32)
        if self.ddim_steps == 0:
            for t in range(self.steps - 1, -1, -1):
                x, _ = self.mean_std(params, obs, x, t)
        else:
            ts = list(range(0, self.steps, max(self.steps // self.ddim_steps, 1)))[::-1]
            for j, t in enumerate(ts):
                tt = jnp.full(x.shape[:-1], t, jnp.int32)
                x0 = self._x0(c, x, tt, self._eps(params, obs, x, tt))
                ac = c["ac"][t]
                eps = (x - jnp.sqrt(ac) * x0) / jnp.sqrt(1.0 - ac)
                ac_prev = c["ac"][ts[j + 1]] if j + 1 < len(ts) else 1.0
                x = jnp.sqrt(ac_prev) * x0 + jnp.sqrt(1.0 - ac_prev) * eps
        if self.final_clip is not None:
            x = jnp.clip(x, -self.final_clip, self.final_clip)
        return self.to_env(x)


# -- pretraining and fine-tuning ----------------------------------------------------------------

def bc_loss(policy: DiffusionPolicy, denoiser_params, obs, actions, key):
    """DDPM ε-prediction loss of demonstrations (``actions`` in env units): mean ‖ε_θ(x_t, t, s) − ε‖²."""
    low, high = jnp.asarray(policy.action_low, jnp.float32), jnp.asarray(policy.action_high, jnp.float32)
    x0 = 2.0 * (actions - low) / (high - low) - 1.0
    k_t, k_e = jax.random.split(key)
    t = jax.random.randint(k_t, x0.shape[:1], 0, policy.steps)
    eps = jax.random.normal(k_e, x0.shape, jnp.float32)
    ac = jnp.asarray(policy.schedule.alphas_cumprod, jnp.float32)[t][:, None]
    x_t = jnp.sqrt(ac) * x0 + jnp.sqrt(1.0 - ac) * eps
    return jnp.mean(jnp.square(policy.denoiser.apply(denoiser_params, obs, x_t, t) - eps))


def pretrain(policy: DiffusionPolicy, key, obs, actions, num_steps: int = 500, lr: float = 1e-3, batch_size: int = 256):
    """Fit a denoiser to demonstrations ``(obs [N, ...], actions [N, D])`` by behaviour cloning."""
    k_init, k_run = jax.random.split(key)
    params = policy.denoiser.init(k_init, obs[:1], jnp.zeros((1, policy.action_dim)), jnp.zeros((1,), jnp.int32))
    tx = optax.adam(lr)

    def step(carry, k):
        params, opt = carry
        k_b, k_l = jax.random.split(k)
        idx = jax.random.randint(k_b, (batch_size,), 0, obs.shape[0])
        loss, g = jax.value_and_grad(lambda p: bc_loss(policy, p, obs[idx], actions[idx], k_l))(params)
        upd, opt = tx.update(g, opt, params)
        return (optax.apply_updates(params, upd), opt), loss

    (params, _), losses = jax.jit(lambda c, ks: jax.lax.scan(step, c, ks))((params, tx.init(params)), jax.random.split(k_run, num_steps))
    return params, losses


def finetune_params(policy: DiffusionPolicy, pretrained_denoiser, key, obs):
    """Full parameter tree for fine-tuning: fine-tuned and frozen copies of ``pretrained_denoiser``
    and a freshly initialised critic."""
    return {"denoiser": pretrained_denoiser, "base": pretrained_denoiser, "critic": policy.critic.init(key, obs)}
