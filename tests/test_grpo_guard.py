"""GRPO-Guard's per-step ratio normalisation and gradient reweighting for DPPO's diffusion family."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prpo import algorithms, diffusion, envs
from prpo.config import ConfigError
from prpo.objectives import ppo_clip
from prpo.train import make_policy, make_train
from prpo.update import SURROGATES, Batch, make_loss

from _diffusion_reference import np_schedule  # noqa: E402  (tests/ is on sys.path)
from _experiments import load_experiment  # noqa: E402

OBS_DIM, ACT_DIM, B, K, K1 = 3, 2, 32, 6, 4


def _policy(ratio_norm="none", step_reweight="none", reduce="mean", clamp=(-5.0, 2.0), sigma_sample=0.1,
            sigma_prob=0.05, sg=True):
    return diffusion.DiffusionPolicy(
        denoiser=diffusion.Denoiser(ACT_DIM, hidden=(32, 32)), critic=diffusion.Critic(hidden=(16,)),
        action_dim=ACT_DIM, steps=K, finetune_steps=K1, ddim_steps=3, sigma_min_sample=sigma_sample,
        sigma_min_prob=sigma_prob, logprob_clamp=clamp, logprob_reduce=reduce, action_low=-2.0, action_high=2.0,
        ratio_norm=ratio_norm, ratio_norm_sg=sg, step_reweight=step_reweight,
    )


def _setup(pol, seed=0):
    obs = jax.random.normal(jax.random.key(seed), (B, OBS_DIM))
    params = pol.init(jax.random.key(1), obs)
    action, aux = pol.act(params, obs, jax.random.key(3))
    moved = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(8), p.shape), params)
    return obs, params, moved, action, aux


def _np_mean(pol, params, obs, x, t, sch):
    """NumPy DDPM posterior mean of one step from the network's ε̂."""
    eps = np.asarray(pol.denoiser.apply(params["denoiser"], obs, jnp.asarray(x, jnp.float32),
                                        jnp.full(x.shape[:1], t)), np.float64)
    x0 = np.clip((x - np.sqrt(1 - sch["ac"][t]) * eps) / np.sqrt(sch["ac"][t]), -1, 1)
    return sch["c0"][t] * x0 + sch["ct"][t] * x


def _np_logn(x, mean, s):
    return -0.5 * ((x - mean) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)


def _hp(**kw):
    cfg = algorithms.get("dppo").config(
        "Pendulum-v1", num_envs=4, num_steps=8, total_timesteps=32, num_minibatches=1, update_epochs=1,
        diffusion_steps=K, finetune_steps=K1, adv_norm="none", vf_coef=0.0, gamma_denoise=0.9, clip_eps=0.2,
        dppo_clip_base=0.01, **kw)
    return cfg


def test_option_none_is_todays_dppo():
    """Default config → ratio_norm="none": same rollout record, same log-ratio, same extras as DPPO."""
    cfg = algorithms.get("dppo").config("Pendulum-v1")
    assert (cfg.ratio_norm, cfg.step_reweight, cfg.ratio_norm_sg) == ("none", "none", True)
    built = make_policy(cfg, envs.env_spec("Pendulum-v1"))
    assert (built.ratio_norm, built.step_reweight) == ("none", "none")

    pol = _policy()
    obs, params, moved, action, aux = _setup(pol)
    assert set(aux) == {"value", "chain", "log_prob"}
    np.testing.assert_array_equal(aux["log_prob"], pol.chain_log_prob(params, obs, aux["chain"]))
    hp = _hp().hp
    lr, ex = pol.log_ratio(moved, obs, action, aux, None, hp=hp)
    np.testing.assert_array_equal(lr, pol.chain_log_prob(moved, obs, aux["chain"]) - aux["log_prob"])
    assert set(ex) == {"entropy", "value", "log_prob", "adv_weight", "clip_eps"}
    np.testing.assert_array_equal(ex["adv_weight"], 0.9 ** (K1 - 1 - jnp.arange(K1, dtype=jnp.float32)))
    np.testing.assert_array_equal(pol.step_weights(), np.ones(K1))

    # a normalising family: same rollout chain and log-probs (same key), and its raw diagnostic
    # ratio is DPPO's
    guard = _policy("guard")
    _, aux_g = guard.act(params, obs, jax.random.key(3))
    np.testing.assert_array_equal(aux_g["chain"], aux["chain"])
    np.testing.assert_allclose(aux_g["log_prob"], aux["log_prob"], rtol=1e-6, atol=1e-6)
    _, ex_g = guard.log_ratio(moved, obs, action, aux_g, None, hp=hp)
    np.testing.assert_allclose(ex_g["log_ratio_raw"], lr, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_guard_log_ratio_matches_numpy(reduce):
    """log r̂_i = s_i·(log r_i + reduce_d Δμ²/(2s_i²)) with the unclamped Gaussian log r (NumPy),
    s_i = max(σ_t, σ_min_prob); zero at the rollout parameters."""
    pol = _policy("guard", reduce=reduce)
    obs, params, moved, action, aux = _setup(pol)
    lr0, _ = pol.log_ratio(params, obs, action, aux)
    np.testing.assert_array_equal(lr0, 0.0)
    lr, _ = pol.log_ratio(moved, obs, action, aux)
    sch = np_schedule(K)
    chain = np.asarray(aux["chain"], np.float64)
    red = (lambda v: v.mean(-1)) if reduce == "mean" else (lambda v: v.sum(-1))
    ref = np.zeros((B, K1))
    for i in range(K1):
        t = K1 - 1 - i
        x = chain[:, i + 1]
        mu_old = _np_mean(pol, params, obs, chain[:, i], t, sch)
        mu_new = _np_mean(pol, moved, obs, chain[:, i], t, sch)
        np.testing.assert_allclose(aux["mean"][:, i], mu_old, rtol=1e-5, atol=1e-5)
        s = max(sch["std"][t], 0.05)
        raw = red(_np_logn(x, mu_new, s) - _np_logn(x, mu_old, s))
        ref[:, i] = s * (raw + red((mu_new - mu_old) ** 2) / (2 * s * s))
    assert np.abs(ref).max() > 1e-3  # the parameters moved
    np.testing.assert_allclose(lr, ref, rtol=2e-3, atol=2e-5)


@pytest.mark.parametrize("mode", ["batch", "batch_center"])
def test_batch_modes_match_numpy(mode):
    """batch_center: log r_i − mean_B log r_i per step; batch: the same × s_i (NumPy)."""
    pol = _policy(mode)
    obs, params, moved, action, aux = _setup(pol)
    raw = np.asarray(_policy().log_ratio(moved, obs, action, aux)[0], np.float64)
    lr, ex = pol.log_ratio(moved, obs, action, aux)
    np.testing.assert_allclose(ex["log_ratio_raw"], raw, rtol=1e-6, atol=1e-7)
    sch = np_schedule(K)
    s = np.maximum(sch["std"][K1 - 1 - np.arange(K1)], 0.05) if mode == "batch" else np.ones(K1)
    ref = s[None] * (raw - raw.mean(0, keepdims=True))
    assert np.abs(raw.mean(0)).max() > 1e-4  # a real shift removed
    np.testing.assert_allclose(lr, ref, rtol=1e-4, atol=1e-6)


def test_guard_gradients_hand_derived():
    """∂/∂μ_new of reduce_d (x − μ_old)(μ_new − μ_old)/s is w_d·(x − μ_old)/s, w_d = 1/D (mean); the
    same as the reference form s·(log r + b) differentiated; through the network at θ_old the
    guard ratio's gradient is s_i × DPPO's (unclamped)."""
    k = jax.random.split(jax.random.key(4), 4)
    x, mn, mo = (jax.random.normal(kk, (5, 3, 2)) for kk in k[:3])
    s = jnp.array([0.1, 0.5, 1.3])[None, :, None]
    c = jax.random.normal(k[3], (5, 3))
    g_new, g_old = jax.grad(lambda a, b: jnp.sum(c * diffusion.guard_log_ratio(x, a, b, s)), argnums=(0, 1))(mn, mo)
    np.testing.assert_allclose(g_new, c[..., None] * (x - mo) / s / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_old, c[..., None] * (-(mn - mo) - (x - mo)) / s / 2, rtol=1e-5, atol=1e-6)

    def reference_form(a):  # the paper's s·(log r + reduce Δμ²/(2s²)), Gaussian log r unclamped
        raw = diffusion.gaussian_log_prob(x, a, s, None) - diffusion.gaussian_log_prob(x, mo, s, None)
        return jnp.sum(c * s[..., 0] * (raw + jnp.mean((a - mo) ** 2, -1) / (2 * s[..., 0] ** 2)))

    np.testing.assert_allclose(jax.grad(reference_form)(mn), g_new, rtol=1e-4, atol=1e-5)

    # through the denoiser, at the rollout parameters
    guard, none = _policy("guard", clamp=None, sigma_prob=0.1), _policy(clamp=None, sigma_prob=0.1)
    obs, params, _, action, aux = _setup(guard)
    coef = jnp.array([0.3, -1.0, 2.0, 0.7])
    step_s = guard.step_std()
    g_guard = jax.grad(lambda p: jnp.sum(coef * guard.log_ratio(p, obs, action, aux)[0]))(params)
    g_dppo = jax.grad(lambda p: jnp.sum(coef * step_s * none.log_ratio(p, obs, action, aux)[0]))(params)
    leaves_g, leaves_d = jax.tree.leaves(g_guard["denoiser"]), jax.tree.leaves(g_dppo["denoiser"])
    assert max(float(jnp.abs(g).max()) for g in leaves_g) > 1e-3
    for a, b in zip(leaves_g, leaves_d):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def test_center_gradients_hand_derived():
    """With the statistic under stop-gradient ∂(Σ c·r̂)/∂ log r = scale·c; without, scale·(c − mean_B c)."""
    lr = jax.random.normal(jax.random.key(0), (6, 3))
    c = jax.random.normal(jax.random.key(1), (6, 3))
    scale = jnp.array([0.2, 1.0, 3.0])[None]
    out = diffusion.center_log_ratio(lr, scale)
    np.testing.assert_allclose(out, scale * (lr - lr.mean(0)), rtol=1e-5, atol=1e-6)
    g_sg = jax.grad(lambda v: jnp.sum(c * diffusion.center_log_ratio(v, scale)))(lr)
    g = jax.grad(lambda v: jnp.sum(c * diffusion.center_log_ratio(v, scale, stop_gradient=False)))(lr)
    np.testing.assert_allclose(g_sg, scale * c, rtol=1e-6)
    np.testing.assert_allclose(g, scale * (c - c.mean(0)), rtol=1e-5, atol=1e-6)
    # the option reaches the family: without stop-gradient the per-step gradient sums to zero
    pol = _policy("batch_center", sg=False)
    obs, params, moved, action, aux = _setup(pol)
    g_mu = jax.grad(lambda p: jnp.sum(pol.log_ratio(p, obs, action, aux)[0]))(moved)
    for leaf in jax.tree.leaves(g_mu["denoiser"]):
        np.testing.assert_allclose(leaf, 0.0, atol=1e-4)


def test_step_reweight_weights_and_generic_loss():
    """κ_t = β_t/(√(1−β_t)√(1−ᾱ_t)) is |∂μ/∂ε̂| (chain rule through x̂_0); w_i ∝ 1/κ_t (rescaled
    ratios) or s_i/κ_t (raw), mean 1; the generic loss with guard + reweight equals NumPy's."""
    sch = np_schedule(K)
    sched = diffusion.Schedule(diffusion.cosine_beta_schedule(K))
    ts = K1 - 1 - np.arange(K1)
    kappa = sch["betas"][ts] / (np.sqrt(1 - sch["betas"][ts]) * np.sqrt(1 - sch["ac"][ts]))
    # |∂μ/∂ε̂| of μ = c0·(x − √(1−ᾱ)ε̂)/√ᾱ + ct·x
    np.testing.assert_allclose(sched.coef_x0[ts] * np.sqrt(1 - sched.alphas_cumprod[ts]) / np.sqrt(sched.alphas_cumprod[ts]),
                               kappa, rtol=1e-10)
    np.testing.assert_allclose(diffusion.step_grad_scale(sched, ts, 0.05, True), kappa, rtol=1e-10)
    s = np.maximum(sch["std"][ts], 0.05)
    for mode, w in (("guard", 1 / kappa), ("none", s / kappa), ("batch", 1 / kappa), ("batch_center", s / kappa)):
        np.testing.assert_allclose(_policy(mode, "guard").step_weights(), w / w.mean(), rtol=1e-8)

    cfg = _hp(ratio_norm="guard", step_reweight="guard")
    pol = _policy("guard", "guard")
    obs, params, moved, action, aux = _setup(pol)
    adv = jax.random.normal(jax.random.key(9), (B,))
    batch = Batch(obs=obs, action=action, aux=aux, advantages=adv, returns=aux["value"])
    _, metrics = make_loss(cfg, pol, lambda lr, a, hp: ppo_clip(lr, a, hp.clip_eps))(moved, batch, cfg.hp, None)
    lr, ex = pol.log_ratio(moved, obs, action, aux, None, hp=cfg.hp)
    w = (1 / kappa) / np.mean(1 / kappa)
    np.testing.assert_allclose(ex["adv_weight"], 0.9 ** (K1 - 1 - np.arange(K1)) * w, rtol=1e-5)
    r = np.exp(np.asarray(lr, np.float64))
    a = np.asarray(adv)[:, None] * 0.9 ** (K1 - 1 - np.arange(K1))[None] * w[None]
    eps = 0.01 + 0.19 * (np.exp(3 * np.arange(K1) / (K1 - 1)) - 1) / (np.e**3 - 1)
    ref = -np.mean(np.minimum(r * a, np.clip(r, 1 - eps, 1 + eps) * a))
    np.testing.assert_allclose(metrics["pg_loss"], ref, rtol=1e-4, atol=1e-6)


def test_bad_values_refused_before_compile():
    dppo = algorithms.get("dppo")
    with pytest.raises(ConfigError, match=r"ratio_norm='step'.*'none', 'guard', 'batch', 'batch_center'"):
        dppo.config("Pendulum-v1", ratio_norm="step")
    with pytest.raises(ConfigError, match=r"step_reweight='1/dt'.*'none', 'guard'"):
        dppo.config("Pendulum-v1", step_reweight="1/dt")
    with pytest.raises(ConfigError, match="ratio_norm_sg"):
        dppo.config("Pendulum-v1", ratio_norm_sg=1)
    with pytest.raises(ConfigError, match="ratio_norm"):  # not an option of a Gaussian policy
        algorithms.get("ppo").config("Pendulum-v1", ratio_norm="guard")
    with pytest.raises(ValueError, match="ratio_norm='bogus'"):
        _policy("bogus")
    with pytest.raises(ValueError, match="step_reweight='x'"):
        _policy(step_reweight="x")


def _experiment():
    return load_experiment("dppo_step_ratios")


def test_measuring_surrogate_matches_numpy():
    """The measurement wrapper keeps the surrogate's loss and logs per-step statistics (NumPy)."""
    mod = _experiment()
    lr = 0.1 * jax.random.normal(jax.random.key(0), (64, 3))
    adv = jax.random.normal(jax.random.key(1), (64, 1))
    hp = _hp().hp.replace(clip_eps=jnp.array([0.05, 0.1, 0.2]))
    base = SURROGATES["clip"]
    wrapped = mod.measuring(base, 3)
    loss, diag = wrapped(lr, adv, hp, {"log_ratio_raw": lr - 0.5})
    np.testing.assert_array_equal(loss, base(lr, adv, hp)[0])
    m = diag["metrics"]
    assert float(m["sr_valid"]) == 1.0
    r, a, e = np.exp(np.asarray(lr, np.float64)), np.broadcast_to(np.asarray(adv), (64, 3)), np.array([0.05, 0.1, 0.2])
    for i in range(3):
        np.testing.assert_allclose(m[f"sr_norm_rmean_{i}"], r[:, i].mean(), rtol=1e-5)
        np.testing.assert_allclose(m[f"sr_norm_rstd_{i}"], r[:, i].std(), rtol=1e-4)
        np.testing.assert_allclose(m[f"sr_norm_rmed_{i}"], np.median(r[:, i]), rtol=1e-5)
        np.testing.assert_allclose(m[f"sr_raw_lmean_{i}"], np.asarray(lr)[:, i].mean() - 0.5, rtol=1e-5)
        pos = a[:, i] > 0
        np.testing.assert_allclose(m[f"sr_norm_posclip_{i}"], np.mean(r[pos, i] > 1 + e[i]), rtol=1e-6)
        np.testing.assert_allclose(m[f"sr_norm_negclip_{i}"], np.mean(r[~pos, i] < 1 - e[i]), rtol=1e-6)
    _, d0 = wrapped(jnp.zeros((64, 3)), adv, hp, {})
    assert float(d0["metrics"]["sr_valid"]) == 0.0 and float(d0["metrics"]["sr_raw_rmean_1"]) == 0.0
    # per-update reduction: the mean over the valid SGD steps
    fake = {"sr_valid": np.array([[0.75]])}
    for kind in ("raw", "norm"):
        for name in mod.STATS:
            for i in range(3):
                fake[f"sr_{kind}_{name}_{i}"] = np.array([[0.75 * (i + 1)]])
    out = mod.summarise(fake, 3)
    np.testing.assert_allclose(out["steps"]["raw"]["rmean"]["mean"], [1.0, 2.0, 3.0])
    assert mod.variant_overrides("guard+reweight") == {"ratio_norm": "guard", "step_reweight": "guard"}


def test_training_with_guard_and_measurement():
    """Two updates of DPPO with RatioNorm + reweighting through the engine, with the measuring
    surrogate: finite losses; 3 of the 4 SGD steps of an update are off the rollout parameters."""
    mod = _experiment()
    cfg = algorithms.get("dppo").config(
        "Pendulum-v1", num_envs=4, num_steps=16, total_timesteps=4 * 16 * 2, num_minibatches=2, update_epochs=2,
        diffusion_steps=4, ddim_eval_steps=2, actor_hidden=(16, 16), critic_hidden=(16,), ratio_norm="guard", step_reweight="guard")
    trainer = make_train(cfg, surrogate=mod.measuring(SURROGATES[cfg.objective], 4))
    _, metrics = jax.jit(trainer.train)(jax.random.key(0), cfg.hp)
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    np.testing.assert_allclose(metrics["sr_valid"], 0.75)
    out = mod.summarise({k: np.asarray(v)[None] for k, v in metrics.items()}, 4)
    assert np.isfinite(out["steps"]["raw"]["rmean"]["mean"]).all()
    assert np.isfinite(out["steps"]["norm"]["lstd"]["mean"]).all()
