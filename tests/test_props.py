"""PROPS: the behaviour loss by hand (value and gradient), the behaviour fit's fixed point and KL
stop, the behaviour policy's record (the target's log-probability and value), the sampling-error
measure against NumPy and its on-policy expectation, its limits (one chunk, or a behaviour
learning rate of 0, is PPO exactly) and the refusals."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prpo
import prpo.algorithms.props  # noqa: F401  (registers "props")
from prpo import registry
from prpo.algorithm import Algorithm, register
from prpo.algorithms.props import BehaviourPolicy, fit_behaviour, props_collect, props_loss, sampling_error
from prpo.config import ConfigError
from prpo.distributions import Categorical, DiagGaussian
from prpo.rollout import RolloutContext, collect_with

TINY = dict(num_envs=2, num_steps=8, num_minibatches=2, total_timesteps=2 * 8 * 3, actor_hidden=(8,),
            critic_hidden=(8,), props_num_steps=4, props_minibatches=2, props_epochs=2)


def _cfg(algo="props", **kw):
    kw = {**TINY, **kw}
    own = prpo.algorithms.get(algo).options
    kw = {k: v for k, v in kw.items() if not k.startswith("props_") or k in own}
    return prpo.algorithms.get(algo).config("CartPole-v1", **kw)


# -- the behaviour loss -----------------------------------------------------------------------

def test_props_loss_value_and_gradient_by_hand():
    """Per sample max(r, clip(r, 1 − ε, 1 + ε)), r = π_φ(a)/π_θ(a); ∂r/∂logits_φ = r·(e_a − π_φ) where
    r ≥ 1 − ε, else 0; ∂KL(π_θ‖π_φ)/∂logits_φ = π_φ − π_θ. Weighted means (weight 0: not collected)."""
    p_theta = np.array([[0.5, 0.3, 0.2]] * 4)
    p_phi = np.array([[0.5, 0.3, 0.2], [0.25, 0.45, 0.3], [0.3, 0.5, 0.2], [0.1, 0.1, 0.8]])
    action = np.array([0, 0, 1, 2])  # r = 1 (inside), 0.5 (below 1 − ε: clipped), 5/3 (above: kept), weight 0
    weight = np.array([1.0, 1.0, 1.0, 0.0])
    eps, lam = 0.3, 0.5
    r = p_phi[np.arange(4), action] / p_theta[np.arange(4), action]
    np.testing.assert_allclose(r[:3], [1.0, 0.5, 5 / 3])
    surr = np.array([1.0, 0.7, 5 / 3])
    kl = (p_theta * np.log(p_theta / p_phi)).sum(-1)[:3]
    want = surr.mean() + lam * kl.mean()
    e = np.eye(3)[action]
    grad = np.zeros((4, 3))
    grad[[0, 2]] = (r[:, None] * (e - p_phi))[[0, 2]] / 3  # sample 1 is clipped: no surrogate gradient
    grad[:3] += lam * (p_phi - p_theta)[:3] / 3

    def f(logits_phi):
        return props_loss(Categorical(logits_phi), Categorical(jnp.log(p_theta)), jnp.log(p_theta[np.arange(4), action]),
                          jnp.asarray(action), jnp.asarray(weight), eps, lam)

    (loss, kl_mean), g = jax.value_and_grad(f, has_aux=True)(jnp.log(jnp.asarray(p_phi, jnp.float32)))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(kl_mean), kl.mean(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g), grad, rtol=1e-5, atol=1e-7)
    # at φ = θ a gradient step lowers the sampled action's probability and raises the others
    assert g[0, 0] > 0 and g[0, 1] < 0 and g[0, 2] < 0


@dataclasses.dataclass(frozen=True)
class _Logits:
    """A state-independent categorical family: params are the logits."""

    keep_dist: bool = False

    def distribution(self, params, obs):
        return Categorical(jnp.broadcast_to(params["logits"], (obs.shape[0], params["logits"].shape[-1]))), jnp.zeros(
            obs.shape[0])


def _hp(**kw):
    return _cfg().hp.replace(**kw)


def test_behaviour_fit_settles_where_the_clip_holds_the_over_sampled_action():
    """Two actions, π_θ = (½, ½), data a = (0, 0, 0, 1), λ = 0: the loss (3·max(r₀, 1 − ε) + r₁)/4 falls
    with π_φ(0) down to (1 − ε)·½ and rises below it, so the fit ends at π_φ(0) = 0.35 (ε = 0.3):
    the under-sampled action 1 is now over-sampled."""
    theta = {"logits": jnp.zeros(2)}
    obs, action, weight = jnp.zeros((4, 1)), jnp.array([0, 0, 0, 1]), jnp.ones(4)
    fit = jax.jit(lambda w, hp: fit_behaviour(_Logits(), theta, obs, action, w, hp, 400, 1, jax.random.key(0)))
    hp = _hp(props_lr=3e-3, props_kl=0.0, props_target_kl=0.0, props_clip=0.3)
    phi, info = fit(weight, hp)
    p0 = float(jax.nn.softmax(phi["logits"])[0])
    assert abs(p0 - 0.35) < 0.01, p0
    assert float(info["steps"]) == 400
    # the KL stop: step 1 starts at KL 0 (taken), step 2 starts above δ (taken, then stop)
    _, info = fit(weight, hp.replace(props_target_kl=1e-9))
    assert float(info["steps"]) == 2 and float(info["kl"]) > 0
    # no data (weights 0) or a zero rate: φ = θ exactly
    for w, lr in ((jnp.zeros(4), 3e-3), (weight, 0.0)):
        phi, info = fit(w, hp.replace(props_lr=lr))
        np.testing.assert_array_equal(np.asarray(phi["logits"]), np.zeros(2))
        assert float(info["kl"]) == 0.0


def test_behaviour_policy_samples_with_phi_and_records_the_target():
    cfg = _cfg()
    trainer = prpo.make_train(cfg)
    policy = trainer.policy
    obs = jax.random.normal(jax.random.key(0), (16, 4))
    theta, phi = policy.init(jax.random.key(1), obs), policy.init(jax.random.key(2), obs)
    key = jax.random.key(3)
    action, aux = BehaviourPolicy(policy, phi).act(theta, obs, key)
    np.testing.assert_array_equal(np.asarray(action), np.asarray(policy.act(phi, obs, key)[0]))
    dist, value = policy.distribution(theta, obs)
    np.testing.assert_allclose(np.asarray(aux["log_prob"]), np.asarray(dist.log_prob(action)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(aux["value"]), np.asarray(value), rtol=1e-6)
    assert not np.allclose(np.asarray(aux["log_prob"]), np.asarray(policy.distribution(phi, obs)[0].log_prob(action)))
    # φ = θ: the target's own act, bit for bit
    a2, aux2 = BehaviourPolicy(policy, theta).act(theta, obs, key)
    a1, aux1 = policy.act(theta, obs, key)
    np.testing.assert_array_equal(np.asarray(a1), np.asarray(a2))
    for name in ("log_prob", "value"):
        np.testing.assert_array_equal(np.asarray(aux1[name]), np.asarray(aux2[name]))


# -- the sampling-error measure ---------------------------------------------------------------

def _se_numpy(p, action):
    """½ gᵀ F⁺ g over all A actions (pseudo-inverse: F's null space is the all-ones direction)."""
    p = np.asarray(p, np.float64)
    g = (np.eye(p.shape[1])[action] - p).mean(0)
    fisher = np.mean([np.diag(q) - np.outer(q, q) for q in p], axis=0)
    return 0.5 * g @ np.linalg.pinv(fisher) @ g


def test_sampling_error_by_hand_against_numpy_and_its_on_policy_expectation():
    # π = (½, ½) at 4 states, a = (0, 0, 0, 1): ḡ₀ = ¼, F̄ = ¼ -> ½ · (1/16) / (1/4) = 1/8
    se = sampling_error(Categorical(jnp.zeros((4, 2))), jnp.array([0, 0, 0, 1]))
    np.testing.assert_allclose(float(se), 1 / 8, rtol=1e-6)
    # a constant π: ½ Pearson χ²/n, here f = (1, 0, 0), π uniform over 3 -> ½ Σ (f − π)²/π = 1
    np.testing.assert_allclose(float(sampling_error(Categorical(jnp.zeros((3, 3))), jnp.zeros(3, jnp.int32))), 1.0,
                               rtol=1e-5)
    # state-dependent π against the NumPy pseudo-inverse form
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4)).astype(np.float32)
    action = rng.integers(0, 4, 50)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(float(sampling_error(Categorical(jnp.asarray(logits)), jnp.asarray(action))),
                               _se_numpy(p, action), rtol=1e-4)
    # on-policy sampling: E = (A − 1)/(2B) (categorical), dims/B (Gaussian)
    B, reps = 100, 4000
    keys = jax.random.split(jax.random.key(1), reps)
    dist = Categorical(jnp.asarray(logits[:, :3].repeat(2, 0)))
    cat = jax.jit(jax.vmap(lambda k: sampling_error(dist, dist.sample(k))))(keys)
    np.testing.assert_allclose(float(cat.mean()), 2 / (2 * B), rtol=0.05)
    g = DiagGaussian(jnp.asarray(rng.normal(size=(B, 2)), jnp.float32), jnp.asarray(rng.normal(size=(B, 2)) * 0.3, jnp.float32))
    gau = jax.jit(jax.vmap(lambda k: sampling_error(g, g.sample(k))))(keys)
    np.testing.assert_allclose(float(gau.mean()), 2 / B, rtol=0.05)
    # Gaussian by hand: z = (1, 1, 1, 1) -> ½ (1 + ½·0) = ½; z = (1, −1, 1, −1) -> 0
    one = DiagGaussian(jnp.zeros((4, 1)), jnp.log(2.0) * jnp.ones(1))
    np.testing.assert_allclose(float(sampling_error(one, 2.0 * jnp.ones((4, 1)))), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(sampling_error(one, jnp.array([[2.0], [-2.0], [2.0], [-2.0]]))), 0.0, atol=1e-7)


def test_the_rollout_logs_its_sampling_error_and_lowers_it():
    """The rollout's logged sampling error is the NumPy one of its batch under π_θ; averaged over 16
    rollouts from the initial policy (8 envs × 32 steps, a behaviour update every 4 steps), PROPS's
    is below half of on-policy sampling's (props_lr = 0) — measured: about 5× lower."""
    cfg = _cfg(num_envs=8, num_steps=32, num_minibatches=2, total_timesteps=8 * 32, props_num_steps=4,
               props_minibatches=4, props_epochs=8)
    trainer = prpo.make_train(cfg)
    state = trainer.init(jax.random.key(0), cfg.hp)

    def rollout(lr, key):
        ctx = RolloutContext(cfg=cfg, env=trainer.env, policy=trainer.policy, obs_transform=lambda x: x,
                             action_transform=lambda a: a, env_ids=None, hp=cfg.hp.replace(props_lr=lr))
        return props_collect(ctx, trainer.policy, state.params, state.env_state, state.obs, key)[2]

    run = jax.jit(rollout)  # one compile (a vmap over the rate compiles 3× slower on CPU)
    trajs = [run(lr, k) for lr in (0.0, 1e-2) for k in jax.random.split(jax.random.key(6), 16)]
    one = trajs[-1]
    p = jax.nn.softmax(trainer.policy.distribution(state.params, one.obs.reshape(-1, 4))[0].logits)
    np.testing.assert_allclose(float(one.aux["props_sampling_error"][0, 0]), _se_numpy(p, np.asarray(one.action).ravel()),
                               rtol=1e-3)
    kl = np.array([float(t.aux["props_behaviour_kl"][0, 0]) for t in trajs])
    assert np.all(np.abs(kl[:16]) < 1e-6) and np.all(kl[16:] > 0)
    se = np.array([float(t.aux["props_sampling_error"][0, 0]) for t in trajs])
    assert se[16:].mean() < 0.5 * se[:16].mean(), se


# -- limits: PPO exactly ----------------------------------------------------------------------

def _train(cfg, *hps):
    """Final states and metrics of ``cfg`` trained (one compile) with each hyperparameter set (default: its own)."""
    train = jax.jit(prpo.make_train(cfg).train)
    return [train(jax.random.key(0), hp) for hp in (hps or (cfg.hp,))]


def _assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_one_chunk_is_ppo_exactly():
    """props_num_steps = num_steps: the behaviour is never refitted within a rollout: PPO's
    parameters and losses over three updates, bit for bit."""
    [(ppo, m_ppo)] = _train(_cfg("ppo"))
    [(props, m_props)] = _train(_cfg(props_num_steps=8, props_lr=1e-2))
    _assert_same_params(ppo, props)
    np.testing.assert_array_equal(np.asarray(m_ppo["loss"]), np.asarray(m_props["loss"]))
    assert np.all(np.asarray(m_props["props_steps"]) == 0)


def _chunked_on_policy(ctx, behaviour, params, env_state, obs, key):
    """On-policy sampling in PROPS's chunks (chunk c with key split(key, C)[c]), written independently."""
    m = ctx.cfg.props_num_steps
    parts, stats = [], None
    for k in jax.random.split(key, ctx.cfg.num_steps // m):
        env_state, obs, traj, s = collect_with(ctx, behaviour, params, env_state, obs, k, num_steps=m)
        parts.append(traj)
        stats = s if stats is None else jax.tree.map(jnp.add, stats, s)
    return env_state, obs, jax.tree.map(lambda *x: jnp.concatenate(x), *parts), stats


@pytest.fixture(scope="module")
def chunked_ppo():
    algo = register(Algorithm(name="_ppo_in_chunks", description="PPO, rollout in PROPS's chunks (test)",
                              options=dict(props_num_steps=prpo.algorithms.get("props").options["props_num_steps"]),
                              collect=_chunked_on_policy))
    yield algo
    registry.ALGORITHMS.pop("_ppo_in_chunks")


def test_zero_behaviour_rate_is_ppo_on_the_same_keys(chunked_ppo):
    """props_lr = 0 with two behaviour updates per rollout: φ stays θ, so PPO's parameters over three
    updates, bit for bit, given the same per-chunk keys; props_lr > 0 moves φ and changes them."""
    [(ref, _)] = _train(_cfg("_ppo_in_chunks"))
    cfg = _cfg()
    (zero, m_zero), (moved, m_moved) = _train(cfg, cfg.hp.replace(props_lr=0.0), cfg.hp.replace(props_lr=0.1))
    _assert_same_params(ref, zero)
    assert np.all(np.abs(np.asarray(m_zero["props_behaviour_kl"])) < 1e-6)  # φ = θ (to rounding: two forward passes)
    assert np.all(np.asarray(m_moved["props_behaviour_kl"]) > 1e-4)
    assert not all(np.array_equal(np.asarray(x), np.asarray(y))
                   for x, y in zip(jax.tree.leaves(moved.params), jax.tree.leaves(zero.params)))


# -- registration and refusals ----------------------------------------------------------------

def test_metrics_are_logged_for_discrete_and_continuous_actions():
    for env in ("CartPole-v1", "Pendulum-v1"):
        cfg = prpo.algorithms.get("props").config(env, num_envs=2, num_steps=8, total_timesteps=32, num_minibatches=2,
                                                  props_num_steps=4, props_minibatches=2)
        _, metrics = jax.eval_shape(prpo.make_train(cfg).train, jax.random.key(0), cfg.hp)
        for name in ("props_sampling_error", "props_behaviour_kl", "props_steps", "loss"):
            assert metrics[name].shape == (cfg.num_updates,), (env, name)
    assert prpo.algorithms.get("props").config("Pendulum-v1").props_minibatches == 16


@pytest.mark.parametrize("bad, needle", [
    ({"props_num_steps": 5}, r"props_num_steps=5 must divide num_steps=128; allowed: 1, 2, 4, 8, 16"),
    ({"props_num_steps": 0}, r"props_num_steps must be an integer >= 1"),
    ({"props_minibatches": 3}, r"props_minibatches=3 must divide num_envs × num_steps = 512"),
    ({"props_epochs": -1}, r"props_epochs must be an integer >= 0"),
    ({"props_clip": 1.0}, r"props_clip=1.0 must be in \(0, 1\)"),
    ({"props_lr": -1e-3}, r"props_lr=-0.001 must be >= 0"),
    ({"props_kl": -0.1}, r"props_kl=-0.1 must be >= 0"),
    ({"props_target_kl": -1.0}, r"props_target_kl=-1.0 must be >= 0"),
])
def test_refusals(bad, needle):
    with pytest.raises(ConfigError, match=needle):
        prpo.algorithms.get("props").config("CartPole-v1", **bad)


def test_props_options_are_refused_elsewhere():
    with pytest.raises(ConfigError, match="props_lr"):
        prpo.algorithms.get("ppo").config("CartPole-v1", props_lr=1e-3)
