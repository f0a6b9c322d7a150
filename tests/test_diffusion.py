"""DPPO's diffusion family: schedule, chain log-probabilities, per-step ratios, fine-tuning."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prpo import algorithms, diffusion
from prpo.objectives import ppo_clip
from prpo.train import make_train
from prpo.update import Batch, make_loss, make_optimizer, sgd_epochs

from _diffusion_reference import np_schedule  # noqa: E402  (tests/ is on sys.path)

OBS_DIM, ACT_DIM, B, K = 3, 2, 32, 6


def _policy(finetune=None, reduce="mean", clamp=(-5.0, 2.0), sigma_sample=0.1, sigma_prob=0.05, low=-2.0, high=2.0):
    return diffusion.DiffusionPolicy(
        denoiser=diffusion.Denoiser(ACT_DIM, hidden=(32, 32)),
        critic=diffusion.Critic(hidden=(16,)),
        action_dim=ACT_DIM, steps=K, finetune_steps=finetune, ddim_steps=3,
        sigma_min_sample=sigma_sample, sigma_min_prob=sigma_prob, logprob_clamp=clamp, logprob_reduce=reduce,
        action_low=low, action_high=high,
    )


def _obs(seed=0):
    return jax.random.normal(jax.random.key(seed), (B, OBS_DIM))


def _np_step(pol, params, obs, x, t, sch):
    """Numpy DDPM posterior mean of one step from the network's ε̂."""
    eps = np.asarray(pol.denoiser.apply(params["denoiser"] if t < pol.K1 else params["base"], obs,
                                        jnp.asarray(x, jnp.float32), jnp.full(x.shape[:1], t)), np.float64)
    x0 = np.clip((x - np.sqrt(1 - sch["ac"][t]) * eps) / np.sqrt(sch["ac"][t]), -1, 1)
    return sch["c0"][t] * x0 + sch["ct"][t] * x, sch["std"][t]


def test_cosine_schedule_matches_formula():
    sch = np_schedule(K)
    s = diffusion.Schedule(diffusion.cosine_beta_schedule(K))
    np.testing.assert_allclose(s.alphas_cumprod, sch["ac"], rtol=1e-10)
    np.testing.assert_allclose(s.coef_x0, sch["c0"], rtol=1e-10)
    np.testing.assert_allclose(s.coef_xt, sch["ct"], rtol=1e-10)
    np.testing.assert_allclose(s.posterior_std, sch["std"], rtol=1e-10)
    assert s.posterior_std[0] < 1e-9  # the last step is deterministic without the σ floors


@pytest.mark.parametrize("finetune", [None, 3])
def test_chain_log_prob_equals_direct_gaussian(finetune):
    pol = _policy(finetune)
    obs = _obs()
    params = pol.init(jax.random.key(1), obs)
    if finetune:  # a base denoiser different from the fine-tuned one
        params["base"] = pol.init(jax.random.key(2), obs)["denoiser"]
    action, aux = jax.jit(pol.act)(params, obs, jax.random.key(3))
    k1 = pol.K1
    chain = np.asarray(aux["chain"], np.float64)
    assert chain.shape == (B, k1 + 1, ACT_DIM) and aux["log_prob"].shape == (B, k1)
    sch = np_schedule(K)
    ref = np.zeros((B, k1))
    for i in range(k1):
        t = k1 - 1 - i
        mean, std = _np_step(pol, params, obs, chain[:, i], t, sch)
        s = max(std, 0.05)
        lp = -0.5 * ((chain[:, i + 1] - mean) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
        ref[:, i] = np.clip(lp, -5, 2).mean(-1)
        # the sample: mean + max(σ_t, σ_min_sample)·clip(ξ, −3, 3) (the final step also clipped to ±1)
        z = (chain[:, i + 1] - mean) / max(std, 0.1)
        assert np.abs(z).max() <= 3 + 1e-3 or t == 0
    np.testing.assert_allclose(aux["log_prob"], ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(action, -2.0 + (chain[:, -1] + 1.0) * 2.0, rtol=1e-5, atol=1e-5)  # [−1, 1] → [−2, 2]
    assert np.abs(chain[:, -1]).max() <= 1.0


def test_unclamped_summed_chain_log_prob_is_the_joint_gaussian_density():
    """reduce="sum", no clamp: Σ_k log π_k is log p(a^{K−1}, …, a^0 | a^K) of the Gaussian chain."""
    pol = _policy(reduce="sum", clamp=None, sigma_sample=0.3, sigma_prob=0.3)
    obs = _obs()
    params = pol.init(jax.random.key(1), obs)
    chain = jax.jit(pol.sample_chain)(params, obs, jax.random.key(4))
    total = jax.jit(pol.chain_log_prob)(params, obs, chain).sum(-1)
    sch = np_schedule(K)
    c = np.asarray(chain, np.float64)
    ref = np.zeros(B)
    for i in range(K):
        mean, std = _np_step(pol, params, obs, c[:, i], K - 1 - i, sch)
        s = max(std, 0.3)
        ref += np.sum(-0.5 * ((c[:, i + 1] - mean) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi), -1)
    np.testing.assert_allclose(total, ref, rtol=1e-4, atol=1e-3)


def test_sampling_shapes_and_determinism():
    pol = _policy(3)
    obs = _obs()
    params = pol.init(jax.random.key(1), obs)
    a1, x1 = jax.jit(pol.act)(params, obs, jax.random.key(5))
    a2, x2 = jax.jit(pol.act)(params, obs, jax.random.key(5))
    a3, _ = jax.jit(pol.act)(params, obs, jax.random.key(6))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(x1["chain"], x2["chain"])
    assert not np.allclose(a1, a3)
    assert a1.shape == (B, ACT_DIM) and x1["value"].shape == (B,)
    mode = jax.jit(pol.mode)
    m = mode(params, obs)
    assert m.shape == (B, ACT_DIM) and np.abs(np.asarray(m)).max() <= 2.0
    np.testing.assert_array_equal(m, mode(params, obs))


def test_per_step_ratio_weights_clip_schedule_and_generic_loss():
    """log-ratio [B, K′] is 0 at the rollout parameters; the generic loss with per-step γ_denoise
    weights and clip ε_i equals the numpy mean over (t, k) of the clipped surrogate."""
    cfg = algorithms.get("dppo").config(
        "Pendulum-v1", num_envs=4, num_steps=8, total_timesteps=32, num_minibatches=1, update_epochs=1,
        diffusion_steps=K, finetune_steps=4, adv_norm="none", vf_coef=0.0, gamma_denoise=0.9,
        clip_eps=0.2, dppo_clip_base=0.01,
    )
    pol = _policy(4)
    obs = _obs()
    params = pol.init(jax.random.key(1), obs)
    action, aux = pol.act(params, obs, jax.random.key(3))
    lr0, ex = pol.log_ratio(params, obs, action, aux, None, hp=cfg.hp)
    assert lr0.shape == (B, 4)
    np.testing.assert_allclose(lr0, 0.0, atol=1e-6)
    np.testing.assert_allclose(ex["adv_weight"], [0.9**3, 0.9**2, 0.9, 1.0], rtol=1e-6)
    u = np.arange(4) / 3
    np.testing.assert_allclose(ex["clip_eps"], 0.01 + 0.19 * (np.exp(3 * u) - 1) / (np.e**3 - 1), rtol=1e-5)
    assert abs(float(ex["clip_eps"][0]) - 0.01) < 1e-7 and abs(float(ex["clip_eps"][-1]) - 0.2) < 1e-6

    moved = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(8), p.shape), params)
    adv = jax.random.normal(jax.random.key(9), (B,))
    batch = Batch(obs=obs, action=action, aux=aux, advantages=adv, returns=aux["value"])
    loss, metrics = make_loss(cfg, pol, lambda lr, a, hp: ppo_clip(lr, a, hp.clip_eps))(moved, batch, cfg.hp, None)
    lr, _ = pol.log_ratio(moved, obs, action, aux, None)
    r = np.exp(np.asarray(lr, np.float64))
    a = np.asarray(adv)[:, None] * np.asarray(ex["adv_weight"])[None]
    eps = np.asarray(ex["clip_eps"])[None]
    ref = -np.mean(np.minimum(r * a, np.clip(r, 1 - eps, 1 + eps) * a))
    np.testing.assert_allclose(metrics["pg_loss"], ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["clip_frac"], np.mean(np.abs(r - 1) > eps), atol=1e-6)


def test_step_raises_ratio_of_positive_advantage_and_keeps_base_frozen():
    cfg = algorithms.get("dppo").config(
        "Pendulum-v1", num_envs=4, num_steps=8, total_timesteps=32, num_minibatches=1, update_epochs=1,
        diffusion_steps=K, finetune_steps=3, adv_norm="none", vf_coef=0.0, anneal_lr=False, lr=1e-3,
    )
    pol = _policy(3)
    obs = _obs()
    params = pol.init(jax.random.key(1), obs)
    action, aux = pol.act(params, obs, jax.random.key(3))
    adv = jnp.where(jnp.arange(B) % 2 == 0, 1.0, -1.0)
    batch = Batch(obs=obs, action=action, aux=aux, advantages=adv, returns=aux["value"])
    loss_fn = make_loss(cfg, pol, lambda lr, a, hp: (-jnp.exp(lr) * a, {}))
    tx = make_optimizer(cfg, cfg.hp, 1)
    new, _, _ = sgd_epochs(cfg, loss_fn, tx, params, tx.init(params), batch, cfg.hp, jax.random.key(0))
    lr, _ = pol.log_ratio(new, obs, action, aux, None)
    lr = np.asarray(lr).mean(-1)
    assert lr[0::2].mean() > 1e-4 and lr[1::2].mean() < -1e-4
    for p0, p1 in zip(jax.tree.leaves(params["base"]), jax.tree.leaves(new["base"])):
        np.testing.assert_array_equal(p0, p1)
    assert any(not np.allclose(p0, p1) for p0, p1 in zip(jax.tree.leaves(params["denoiser"]), jax.tree.leaves(new["denoiser"])))


def test_pretrained_denoiser_ddim_mode_and_finetuning_from_it():
    """Behaviour-clone a constant action, check DDIM / DDPM reproduce it, then fine-tune the
    last K′ steps from the pretrained denoiser through make_train(init_params=...)."""
    cfg = algorithms.get("dppo").config(
        "Pendulum-v1", num_envs=4, num_steps=16, total_timesteps=4 * 16 * 2, num_minibatches=2, update_epochs=1,
        diffusion_steps=K, finetune_steps=2, ddim_eval_steps=3, actor_hidden=(32, 32),
    )
    trainer = make_train(cfg)
    pol = trainer.policy
    obs = jax.random.normal(jax.random.key(0), (512, 3))
    target = jnp.full((512, 1), 1.2)  # Pendulum torque, in [−2, 2]
    den, losses = diffusion.pretrain(pol, jax.random.key(1), obs, target, num_steps=400, lr=3e-3, batch_size=128)
    assert float(losses[-50:].mean()) < 0.5 * float(losses[:50].mean())
    init = diffusion.finetune_params(pol, den, jax.random.key(2), obs[:1])
    np.testing.assert_allclose(pol.mode(init, obs[:64]), 1.2, atol=0.1)  # DDIM, 3 steps
    sampled, _ = pol.act(init, obs[:64], jax.random.key(3))
    assert abs(float(sampled.mean()) - 1.2) < 0.15
    trainer = make_train(cfg, init_params=init)
    state, metrics = jax.jit(trainer.train)(jax.random.key(4), cfg.hp)
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    for p0, p1 in zip(jax.tree.leaves(den), jax.tree.leaves(state.params["base"])):
        np.testing.assert_array_equal(p0, p1)  # the frozen K − K′ steps
    assert any(not np.allclose(p0, p1) for p0, p1 in zip(jax.tree.leaves(den), jax.tree.leaves(state.params["denoiser"])))


@pytest.mark.slow
@pytest.mark.xdist_group("dppo_pendulum")
def test_dppo_learns_pendulum():
    """dppo-classic-continuous preset (K = K′ = 10), 3e5 steps, 2 seeds vmapped (≈ 1 min on 2 CPU
    cores). Measured: mean final return −213 (curve −1385 → −213); random ≈ −1200.
    Spread over 32 seeds (benchmarks/learning_spread.py, H200): mean −248, std 73, worst −475."""
    from prpo.experiment import run_experiment

    cfg = algorithms.get("dppo").config("Pendulum-v1", total_timesteps=300_000)
    assert cfg.policy == "diffusion" and cfg.diffusion_steps == 10
    result = run_experiment(cfg, seeds=2, progress=False)
    final = np.asarray(result.summary["final_returns"])
    assert final.mean() >= -500, final
