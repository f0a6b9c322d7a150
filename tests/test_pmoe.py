"""PMOE's mixture-of-Gaussians policy family: the mixture density and responsibilities against
NumPy, the gate gradient against the hand-derived posterior, sampling frequencies against the
gate weights, the entropy estimates against quadrature, K = 1 against the Gaussian family (and
Gaussian PPO's training losses), the frequency loss by hand, and the config refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prpo
import prpo.algorithms.pmoe  # noqa: F401  (registers "mixture" and "pmoe")
from prpo import algorithms, envs, mixture
from prpo.config import ConfigError
from prpo.policies import GaussianPolicy
from prpo.train import make_policy


def _random_mixture(b=5, k=3, d=2, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(b, k)).astype(np.float32)
    means = rng.normal(size=(b, k, d)).astype(np.float32)
    log_stds = (0.3 * rng.normal(size=(b, k, d)) - 0.2).astype(np.float32)
    x = rng.normal(size=(b, d)).astype(np.float32)
    return logits, means, log_stds, x


def _numpy_components(logits, means, log_stds, x):
    """w_k Π_d N(x_d; μ_kd, σ_kd²) per sample and component, float64."""
    logits, means, log_stds, x = (np.asarray(a, np.float64) for a in (logits, means, log_stds, x))
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    std = np.exp(log_stds)
    dens = np.prod(np.exp(-0.5 * ((x[:, None, :] - means) / std) ** 2) / (np.sqrt(2 * np.pi) * std), axis=-1)
    return w, w * dens


def test_log_prob_and_responsibilities_match_numpy():
    logits, means, log_stds, x = _random_mixture()
    w, joint = _numpy_components(logits, means, log_stds, x)
    np.testing.assert_allclose(mixture.mixture_log_prob(logits, means, log_stds, x), np.log(joint.sum(-1)), rtol=1e-5)
    np.testing.assert_allclose(mixture.mixture_responsibilities(logits, means, log_stds, x),
                               joint / joint.sum(-1, keepdims=True), rtol=1e-4, atol=1e-6)
    # far from every component the log-sum-exp stays finite where the plain density underflows
    far = mixture.mixture_log_prob(logits, means, log_stds, x + 40.0)
    assert np.isfinite(np.asarray(far)).all() and (np.asarray(far) < -300).all()


def test_gradients_are_the_posterior_responsibilities():
    """∂ log π/∂g_k = γ_k − w_k and ∂ log π/∂μ_k = γ_k (x − μ_k)/σ_k² (hand-derived)."""
    logits, means, log_stds, x = _random_mixture(seed=1)
    w, joint = _numpy_components(logits, means, log_stds, x)
    gamma = joint / joint.sum(-1, keepdims=True)
    g_logits, g_means = jax.grad(lambda g, m: mixture.mixture_log_prob(g, m, log_stds, x).sum(), argnums=(0, 1))(
        jnp.asarray(logits), jnp.asarray(means))
    np.testing.assert_allclose(g_logits, gamma - w, atol=2e-6)
    want_means = gamma[..., None] * (x[:, None, :] - means) / np.exp(2 * log_stds.astype(np.float64))
    np.testing.assert_allclose(g_means, want_means, rtol=1e-4, atol=1e-6)


def test_sampling_frequencies_match_the_gate_weights():
    """Well-separated components (means −10, 0, 10; σ = 0.1): the chosen component and the
    nearest mean agree, and their frequencies are within 4 standard errors of w = (0.2, 0.5, 0.3)."""
    n = 40_000
    w = np.array([0.2, 0.5, 0.3])
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(w, jnp.float32)), (n, 3))
    means = jnp.broadcast_to(jnp.array([[-10.0], [0.0], [10.0]]), (n, 3, 1))
    log_stds = jnp.full((n, 3, 1), np.log(0.1), jnp.float32)
    x, comp = mixture.mixture_sample(jax.random.key(7), logits, means, log_stds)
    nearest = np.argmin(np.abs(np.asarray(x) - np.array([-10.0, 0.0, 10.0])), axis=-1)
    np.testing.assert_array_equal(nearest, np.asarray(comp))
    freq = np.bincount(nearest, minlength=3) / n
    assert (np.abs(freq - w) < 4 * np.sqrt(w * (1 - w) / n)).all(), freq
    # within a component: N(μ_k, σ²)
    for k, mu in enumerate((-10.0, 0.0, 10.0)):
        xs = np.asarray(x)[nearest == k, 0]
        assert abs(xs.mean() - mu) < 4 * 0.1 / np.sqrt(len(xs))
        assert abs(xs.std() - 0.1) < 0.005


def _quadrature_entropy(w, mu, sigma):
    grid = np.linspace(-15, 15, 300_001)
    p = sum(wk * np.exp(-0.5 * ((grid - m) / s) ** 2) / (np.sqrt(2 * np.pi) * s) for wk, m, s in zip(w, mu, sigma))
    return -np.trapezoid(np.where(p > 0, p * np.log(np.maximum(p, 1e-300)), 0.0), grid)


@pytest.mark.parametrize("mu", [(-1.0, 0.5, 0.8), (-4.0, 0.0, 5.0)], ids=["overlapping", "separated"])
def test_entropy_estimates_against_quadrature(mu):
    """1-D mixture: the MC estimate's mean over 4000 keys is within 4 standard errors of the
    quadrature entropy; the bound H(w) + Σ w_k H_k is above it (≈ it when separated)."""
    w, sigma = np.array([0.3, 0.5, 0.2]), np.array([0.5, 0.8, 0.6])
    exact = _quadrature_entropy(w, mu, sigma)
    logits = jnp.log(jnp.asarray(w, jnp.float32))
    means = jnp.asarray(mu, jnp.float32)[:, None]
    log_stds = jnp.log(jnp.asarray(sigma, jnp.float32))[:, None]
    keys = jax.random.split(jax.random.key(0), 4000)
    est = np.asarray(jax.vmap(lambda k: mixture.mixture_entropy_mc(k, logits, means, log_stds))(keys), np.float64)
    assert abs(est.mean() - exact) < 4 * est.std() / np.sqrt(len(est)), (est.mean(), exact)
    bound = float(mixture.mixture_entropy_bound(logits, means, log_stds))
    hand = -(w * np.log(w)).sum() + (w * (0.5 * np.log(2 * np.pi * np.e) + np.log(sigma))).sum()
    assert bound == pytest.approx(hand, rel=1e-5)
    assert bound > exact
    if mu[0] == -4.0:
        assert bound - exact < 0.02


def test_mode_is_the_mean_of_the_most_probable_component():
    logits = jnp.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    means = jnp.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[-1.0, -2.0], [0.0, 0.0], [9.0, 9.0]]])
    np.testing.assert_allclose(mixture.mixture_mode(logits, means), [[3.0, 4.0], [-1.0, -2.0]])


# -- K = 1: the Gaussian family ------------------------------------------------------------------

def _policies(k=1, entropy="bound", **kw):
    spec = envs.env_spec("Pendulum-v1")
    mix = make_policy(algorithms.get("pmoe").config("Pendulum-v1", mixture_components=k, mixture_entropy=entropy, **kw),
                      spec)
    gauss = make_policy(algorithms.get("ppo").config("Pendulum-v1"), spec)
    assert isinstance(gauss, GaussianPolicy) and isinstance(mix, mixture.MixturePolicy)
    return mix, gauss


def _as_gaussian_params(p):
    inner = {n: v for n, v in p["params"].items() if n != "gate_head"}
    inner["log_std"] = inner["log_std"].reshape(-1)
    return {"params": inner}


def test_one_component_is_the_gaussian_family():
    """Same key: the same parameters, actions and log-probs; after a random perturbation of
    the parameters the same log-ratio, value and (bound) entropy; the gate gets no gradient."""
    mix, gauss = _policies()
    obs = jax.random.normal(jax.random.key(1), (16, 3))
    pm, pg = mix.init(jax.random.key(0), obs), gauss.init(jax.random.key(0), obs)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), _as_gaussian_params(pm), pg)
    am, auxm = mix.act(pm, obs, jax.random.key(2))
    ag, auxg = gauss.act(pg, obs, jax.random.key(2))
    np.testing.assert_array_equal(am, ag)
    np.testing.assert_allclose(auxm["log_prob"], auxg["log_prob"], rtol=1e-6)
    leaves, tree = jax.tree.flatten(pm)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    pm2 = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    lr_m, ex_m = mix.log_ratio(pm2, obs, am, auxm, jax.random.key(4))
    lr_g, ex_g = gauss.log_ratio(_as_gaussian_params(pm2), obs, ag, auxg, None)
    np.testing.assert_allclose(lr_m, lr_g, rtol=1e-5, atol=1e-6)
    for name in ("value", "entropy", "log_prob"):
        np.testing.assert_allclose(ex_m[name], ex_g[name], rtol=1e-5, atol=1e-6)
    g = jax.grad(lambda p: mix.log_ratio(p, obs, am, auxm, None)[0].sum())(pm2)
    assert float(jnp.abs(g["params"]["gate_head"]["kernel"]).max()) == 0.0
    np.testing.assert_allclose(mix.mode(pm2, obs), gauss.mode(_as_gaussian_params(pm2), obs), rtol=1e-6)


def test_one_component_trains_as_gaussian_ppo_on_pendulum():
    """pmoe with K = 1 and ppo from the same seed: the same losses over the first updates."""
    kw = dict(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 3, num_minibatches=2, update_epochs=2)
    c1 = algorithms.get("pmoe").config("Pendulum-v1", mixture_components=1, mixture_entropy="bound", **kw)
    c0 = algorithms.get("ppo").config("Pendulum-v1", **kw)
    s1, m1 = jax.jit(prpo.make_train(c1).train)(jax.random.key(3), c1.hp)
    s0, m0 = jax.jit(prpo.make_train(c0).train)(jax.random.key(3), c0.hp)
    for name in ("loss", "value_loss", "entropy", "grad_norm"):
        np.testing.assert_allclose(m1[name], m0[name], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(m1["pg_loss"], m0["pg_loss"], atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), _as_gaussian_params(s1.params), s0.params)


# -- the paper's frequency loss ----------------------------------------------------------------

import flax.linen as nn  # noqa: E402


class _FixedNet(nn.Module):
    """Gate logits a parameter; means (−1, 1, 3) with σ = 0.05; Q(s, a) = −(a − 1.2)²."""

    q_head = True

    def setup(self):
        self.logits = self.param("logits", lambda k: jnp.array([0.5, -0.2, 0.1]))

    def __call__(self, obs):
        b = obs.shape[0]
        means = jnp.broadcast_to(jnp.array([[-1.0], [1.0], [3.0]]), (b, 3, 1))
        return (jnp.broadcast_to(self.logits, (b, 3)), means, jnp.full((b, 3, 1), np.log(0.05))), jnp.zeros(b)

    def q_value(self, obs, action):
        return -jnp.sum(jnp.square(action - 1.2), axis=-1)

    def init_all(self, obs):
        return self(obs)


class _HP:
    pmoe_freq_coef = 0.5
    pmoe_q_coef = 2.0


def test_frequency_loss_by_hand():
    """The best primitive (largest Q at its sample) is k = 1: target (0, 1, 0);
    freq = mean_k (w_k − onehot_k)²; q_loss = (Q(s, a) − R)²; penalty = 0.5·freq + 2·q_loss.
    With gate="frequency_only" the likelihood gives the gate no gradient, with "frequency" it
    gives γ − w; the frequency loss's own gate gradient is 2(w − t)/K through the softmax."""
    obs = jnp.zeros((2, 1))
    action = jnp.array([[0.0], [3.0]])  # component 2 generated the second action
    aux = {"log_prob": jnp.zeros(2), "value": jnp.zeros(2), "returns": jnp.array([-1.0, 0.5])}
    w = np.exp([0.5, -0.2, 0.1]) / np.exp([0.5, -0.2, 0.1]).sum()
    t = np.array([0.0, 1.0, 0.0])
    q = -np.square(np.array([0.0, 3.0]) - 1.2)
    for gate in ("frequency", "frequency_only"):
        pol = mixture.MixturePolicy(_FixedNet(), entropy="bound", gate=gate)
        params = pol.init(jax.random.key(0), obs)
        _, ex = pol.log_ratio(params, obs, action, aux, jax.random.key(1), hp=_HP)
        np.testing.assert_allclose(ex["freq_loss"], [np.mean((w - t) ** 2)] * 2, rtol=1e-5)
        np.testing.assert_allclose(ex["q_loss"], (q - np.array([-1.0, 0.5])) ** 2, rtol=1e-5)
        np.testing.assert_allclose(ex["penalty"], 0.5 * ex["freq_loss"] + 2.0 * ex["q_loss"], rtol=1e-6)
        g_lik = jax.grad(lambda p: pol.log_ratio(p, obs, action, aux, jax.random.key(1))[1]["log_prob"].sum())(params)
        g_freq = jax.grad(lambda p: pol.log_ratio(p, obs, action, aux, jax.random.key(1))[1]["freq_loss"].sum())(params)
        # the second action sits on component 2 (σ = 0.05): γ = (0, 0, 1); the first on none exactly,
        # nearest to component 0 (x = 0 is 1 from both −1 and 1, so γ ∝ w over those two)
        gamma = np.array([[w[0], w[1], 0.0] / (w[0] + w[1]), [0.0, 0.0, 1.0]])
        want_lik = (gamma - w).sum(0) if gate == "frequency" else np.zeros(3)
        np.testing.assert_allclose(g_lik["params"]["logits"], want_lik, atol=1e-5)
        dfreq_dw = 2 * (w - t) / 3
        want_freq = 2 * (w * (dfreq_dw - (w * dfreq_dw).sum()))  # softmax Jacobian, two samples
        np.testing.assert_allclose(g_freq["params"]["logits"], want_freq, rtol=1e-5)


def test_frequency_with_zero_weights_is_the_likelihood_version():
    """pmoe_gate="frequency" with both coefficients 0 trains exactly as "likelihood" (the Q-network
    gets zero gradients, the rest the same updates); the batch carries the returns."""
    kw = dict(num_envs=4, num_steps=16, total_timesteps=4 * 16 * 2, num_minibatches=2, update_epochs=2)
    lik = algorithms.get("pmoe").config("Pendulum-v1", **kw)
    freq = algorithms.get("pmoe").config("Pendulum-v1", pmoe_gate="frequency", pmoe_freq_coef=0.0, pmoe_q_coef=0.0, **kw)
    s_l, m_l = jax.jit(prpo.make_train(lik).train)(jax.random.key(5), lik.hp)
    s_f, m_f = jax.jit(prpo.make_train(freq).train)(jax.random.key(5), freq.hp)
    np.testing.assert_allclose(m_f["loss"], m_l["loss"], rtol=1e-5)
    np.testing.assert_allclose(m_f["penalty"], 0.0)
    q_parts = {n for n in s_f.params["params"] if n.startswith("q_")}
    assert q_parts == {"q_critic", "q_out"}
    same = {"params": {n: v for n, v in s_f.params["params"].items() if n not in q_parts}}
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), same, s_l.params)
    from prpo.algorithms.pmoe import add_returns
    from prpo.update import Batch

    batch = Batch(obs=jnp.zeros((3, 3)), action=jnp.zeros((3, 1)), aux={"log_prob": jnp.zeros(3)},
                  advantages=jnp.zeros(3), returns=jnp.arange(3.0))
    np.testing.assert_array_equal(add_returns(prpo.make_train(freq).policy, None, batch).aux["returns"], [0, 1, 2])
    assert "returns" not in add_returns(prpo.make_train(lik).policy, None, batch).aux


# -- config ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("env, kw, words", [
    ("Pendulum-v1", dict(mixture_components=0), "mixture_components"),
    ("Pendulum-v1", dict(mixture_components=2.5), "mixture_components"),
    ("Pendulum-v1", dict(mixture_entropy="exact"), "mixture_entropy"),
    ("Pendulum-v1", dict(mixture_mean_spread=-1.0), "mixture_mean_spread"),
    ("Pendulum-v1", dict(pmoe_gate="gumbel"), "pmoe_gate"),
    ("Pendulum-v1", dict(pmoe_freq_coef=-1.0), "pmoe_freq_coef"),
    ("Pendulum-v1", dict(kl_schedule="constant"), "kl_schedule"),
    ("Pendulum-v1", dict(policy="auto"), "policy"),
    ("CartPole-v1", {}, "continuous"),
])
def test_bad_options_are_refused(env, kw, words):
    with pytest.raises(ConfigError, match=words):
        algorithms.get("pmoe").config(env, **kw)


def test_defaults_and_presets():
    cfg = algorithms.get("pmoe").config("Pendulum-v1")
    assert (cfg.policy, cfg.mixture_components, cfg.mixture_entropy, cfg.pmoe_gate) == ("mixture", 4, "mc", "likelihood")
    base = algorithms.get("ppo").config("Pendulum-v1")
    assert (cfg.hp.lr, cfg.num_envs, cfg.num_steps, cfg.hp.clip_eps) == (base.hp.lr, base.num_envs, base.num_steps,
                                                                          base.hp.clip_eps)
    assert prpo.preset("pmoe-brax").policy == "mixture"


def test_learns_the_two_goal_bandit():
    """MultiGoal2D after 24 updates of 1024 one-step episodes: the mean reward rises to more than
    twice the initial policy's (N(0, I) at init: ≈ 0.10, NumPy estimate)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200_000, 2))
    r0 = np.max(np.exp(-np.sum((a[:, None] - np.array([[1.0, 0.0], [-1.0, 0.0]])) ** 2, -1) / 0.18), -1).mean()
    assert 0.09 < r0 < 0.12
    cfg = algorithms.get("pmoe").config(
        "MultiGoal2D", num_envs=512, num_steps=2, num_minibatches=4, update_epochs=4, total_timesteps=24 * 1024,
        normalize_reward=False, normalize_obs=False, anneal_lr=False, lr=3e-3, adv_norm="none")
    _, m = jax.jit(prpo.make_train(cfg).train)(jax.random.key(0), cfg.hp)
    ret = np.asarray(m["episode_return_mean"])
    assert abs(ret[0] - r0) < 0.03, ret  # the first update's episodes: the initial policy
    assert ret[-3:].mean() > 2 * r0, ret
