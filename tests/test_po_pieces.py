"""The policy-optimisation pieces of the sign-aware / adaptive clipping family (DISPO, BAPO, ±
reweighting, D-PPO dropout) and VC-PPO's decoupled λ: hand-derived values and gradients, their
limits (where each is an existing surrogate exactly) against prpo's PPO-clip, NumPy loops as
references, and the registrations (CLI names, logged metrics, refusals)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prpo
from prpo import objectives
from prpo.algorithm import gae_targets
from prpo.algorithms.vcppo import decoupled_gae_targets
from prpo.config import ConfigError, apply_overrides

RATIOS = np.array([0.5, 0.9, 1.1, 1.5, 0.5, 0.9, 1.1, 1.5], np.float32)
ADV = np.array([1.0, 1.0, 1.0, 1.0, -2.0, -2.0, -2.0, -2.0], np.float32)


def _value_and_grad(fn, ratios=RATIOS, adv=ADV):
    """Per-sample loss values and d loss_i / d log r_i."""
    lr = jnp.log(jnp.asarray(ratios))
    val = fn(lr, jnp.asarray(adv))[0]
    grad = jax.grad(lambda x: fn(x, jnp.asarray(adv))[0].sum())(lr)
    return np.asarray(val), np.asarray(grad)


def _random(n=512, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return 0.4 * jax.random.normal(k1, (n,)), jax.random.normal(k2, (n,))


def _assert_same(f, g, seed=0):
    lr, adv = _random(seed=seed)
    np.testing.assert_allclose(np.asarray(f(lr, adv)[0]), np.asarray(g(lr, adv)[0]), rtol=1e-6, atol=1e-7)
    gf = jax.grad(lambda x: f(x, adv)[0].sum())(lr)
    gg = jax.grad(lambda x: g(x, adv)[0].sum())(lr)
    np.testing.assert_allclose(np.asarray(gf), np.asarray(gg), rtol=1e-6, atol=1e-7)


# -- DISPO ------------------------------------------------------------------------------------

def test_dispo_by_hand():
    """Bounds A ≥ 0: [0.8, 1.3]; A < 0: [0.7, 1.2]. Inside: L = −A r, ∂L/∂log r = −A r;
    outside: L = −A·clip(r), no gradient."""
    val, grad = _value_and_grad(lambda lr, a: objectives.dispo(lr, a, 0.2, 0.3, 0.3, 0.2))
    # A = +1: r 0.5 (below 0.8: out), 0.9 in, 1.1 in, 1.5 (above 1.3: out)
    # A = −2: r 0.5 (below 0.7: out), 0.9 in, 1.1 in, 1.5 (above 1.2: out)
    np.testing.assert_allclose(val, [-0.8, -0.9, -1.1, -1.3, 1.4, 1.8, 2.2, 2.4], rtol=1e-6)
    np.testing.assert_allclose(grad, [0.0, -0.9, -1.1, 0.0, 0.0, 1.8, 2.2, 0.0], rtol=1e-6, atol=1e-7)


def test_dispo_cispo_reading_by_hand():
    """L = −A·sg(clip(r))·log r: the gradient −A·clip(r) everywhere, even outside the region."""
    _, grad = _value_and_grad(lambda lr, a: objectives.dispo(lr, a, 0.2, 0.3, 0.3, 0.2, gradient="cispo"))
    np.testing.assert_allclose(grad, [-0.8, -0.9, -1.1, -1.3, 1.4, 1.8, 2.2, 2.4], rtol=1e-6)


def test_dispo_reduces_to_ppo_clip_with_the_restoring_sides_open():
    for eps in (0.1, 0.2, 0.35):
        _assert_same(lambda lr, a: objectives.dispo(lr, a, 1.0, eps, eps, 1e9),
                     lambda lr, a: objectives.ppo_clip(lr, a, eps))


def test_dispo_with_four_equal_bounds_also_stops_restoring_gradients():
    """All four at ε: unlike PPO-clip, A > 0 with r < 1 − ε and A < 0 with r > 1 + ε get no gradient."""
    _, g_dispo = _value_and_grad(lambda lr, a: objectives.dispo(lr, a, 0.2, 0.2, 0.2, 0.2))
    _, g_ppo = _value_and_grad(lambda lr, a: objectives.ppo_clip(lr, a, 0.2))
    np.testing.assert_allclose(g_ppo[[0, 7]], [-0.5, 3.0], rtol=1e-6)  # PPO keeps them
    np.testing.assert_allclose(g_dispo[[0, 7]], [0.0, 0.0])
    keep = [1, 2, 5, 6]  # inside the region both agree
    np.testing.assert_allclose(g_dispo[keep], g_ppo[keep], rtol=1e-6)


# -- BAPO -------------------------------------------------------------------------------------

def _shares_numpy(lr, adv, low, high):
    r = np.exp(np.asarray(lr, np.float64))
    a = np.asarray(adv, np.float64)
    num = den = 0.0
    for ri, ai in zip(r, a):
        active = not ((ai > 0 and ri > high) or (ai < 0 and ri < low))
        if active:
            den += ri * abs(ai)
            num += ri * abs(ai) if ai > 0 else 0.0
    return num / den if den > 0 else 0.5


def test_sign_shares_match_a_numpy_loop():
    lr, adv = _random(300, seed=3)
    for low, high in ((0.8, 1.2), (0.9, 1.5), (0.5, 3.0)):
        np.testing.assert_allclose(float(objectives.sign_shares(lr, adv, low, high)),
                                   _shares_numpy(lr, adv, low, high), rtol=1e-5)


def test_bapo_target_zero_is_ppo_clip():
    _assert_same(lambda lr, a: objectives.bapo(lr, a, 0.8, 1.2, 0.95, 2.0, 0.0),
                 lambda lr, a: objectives.ppo_clip(lr, a, 0.2))


def test_bapo_climbs_the_ladder_to_the_first_rung_that_reaches_the_target():
    """Positive samples with r ≫ 1 are clipped at c_high = 1.2, so the positive share starts
    low; the rung is the first k (c_high = 1.2 + k·0.08) whose share reaches the target."""
    ratios = np.array([1.5, 1.5, 1.5, 1.0, 0.6, 1.0, 1.0, 1.0], np.float32)
    adv = np.array([1.0, 1.0, 1.0, 0.2, -1.0, -1.0, -1.0, -1.0], np.float32)
    lr = jnp.log(jnp.asarray(ratios))
    target = 0.5
    want_k = None
    for k in range(11):
        low, high = 0.8 + k * (0.95 - 0.8) / 10, 1.2 + k * (2.0 - 1.2) / 10
        if _shares_numpy(lr, adv, low, high) >= target:
            want_k = k
            break
    assert want_k is not None and want_k > 0  # the case needs a climb
    loss, diag = objectives.bapo(lr, jnp.asarray(adv), 0.8, 1.2, 0.95, 2.0, target)
    m = diag["metrics"]
    np.testing.assert_allclose(float(m["c_high"]), 1.2 + want_k * 0.08, rtol=1e-6)
    np.testing.assert_allclose(float(m["c_low"]), 0.8 + want_k * 0.015, rtol=1e-6)
    assert float(m["pos_share"]) < target <= float(m["pos_share_after"])
    # and the loss is PPO-clip with those bounds
    r, a = jnp.asarray(ratios), jnp.asarray(adv)
    want = -jnp.minimum(r * a, jnp.clip(r, float(m["c_low"]), float(m["c_high"])) * a)
    np.testing.assert_allclose(np.asarray(loss), np.asarray(want), rtol=1e-6)


def test_bapo_unreachable_target_uses_the_last_rung():
    lr, adv = jnp.zeros(4), jnp.array([1.0, -1.0, -1.0, -1.0])
    m = objectives.bapo(lr, adv, 0.8, 1.2, 0.95, 2.0, 0.99)[1]["metrics"]
    np.testing.assert_allclose([float(m["c_low"]), float(m["c_high"])], [0.95, 2.0], rtol=1e-6)


# -- ± reweighting ----------------------------------------------------------------------------

def test_sign_weighted_limits_and_weights():
    _assert_same(lambda lr, a: objectives.sign_weighted(lr, a, 0.2, 1.0, 1.0),
                 lambda lr, a: objectives.ppo_clip(lr, a, 0.2))
    val, grad = _value_and_grad(lambda lr, a: objectives.sign_weighted(lr, a, 0.2, 0.0, 1.0))
    assert np.all(val[:4] == 0) and np.all(grad[:4] == 0)  # A > 0 terms gone
    _, g_ppo = _value_and_grad(lambda lr, a: objectives.ppo_clip(lr, a, 0.2))
    np.testing.assert_allclose(grad[4:], g_ppo[4:], rtol=1e-6)
    # the REINFORCE base: L = −w·r·A, ∂/∂log r = −w·r·A
    val, grad = _value_and_grad(lambda lr, a: objectives.sign_weighted(lr, a, 0.2, 0.5, 2.0, base="pg"))
    w = np.where(ADV > 0, 0.5, 2.0)
    np.testing.assert_allclose(val, -w * RATIOS * ADV, rtol=1e-6)
    np.testing.assert_allclose(grad, -w * RATIOS * ADV, rtol=1e-6)


# -- D-PPO dropout ----------------------------------------------------------------------------

def test_dropout_clip_by_hand_and_its_limit():
    # |r − 1|·|A|: 0.5, 0.1, 0.1, 0.5, 1.0, 0.2, 0.2, 1.0 -> threshold 0.3 drops 0, 3, 4, 7
    val, grad = _value_and_grad(lambda lr, a: objectives.dropout_clip(lr, a, 0.2, 0.3))
    v_ppo, g_ppo = _value_and_grad(lambda lr, a: objectives.ppo_clip(lr, a, 0.2))
    dropped = [0, 3, 4, 7]
    kept = [1, 2, 5, 6]
    assert np.all(val[dropped] == 0) and np.all(grad[dropped] == 0)
    np.testing.assert_allclose(val[kept], v_ppo[kept], rtol=1e-6)
    np.testing.assert_allclose(grad[kept], g_ppo[kept], rtol=1e-6)
    frac = objectives.dropout_clip(jnp.log(jnp.asarray(RATIOS)), jnp.asarray(ADV), 0.2, 0.3)[1]["metrics"]["dropped"]
    assert float(frac.mean()) == 0.5
    _assert_same(lambda lr, a: objectives.dropout_clip(lr, a, 0.2, 1e9), lambda lr, a: objectives.ppo_clip(lr, a, 0.2))


# -- VC-PPO: decoupled λ ----------------------------------------------------------------------

def _lambda_returns_numpy(r, v, nv, term, trunc, gamma, lam):
    """λ-returns by a backward loop: G_t = r_t + γ(1 − term_t)·[(1 − λ)·V' + λ·G_{t+1}] with
    G_{t+1} replaced by V' where the episode ended (or at the end of the rollout)."""
    T = r.shape[0]
    out = np.zeros_like(r, np.float64)
    nxt = np.zeros(r.shape[1:])
    for t in reversed(range(T)):
        done = np.logical_or(term[t], trunc[t]) | (t == T - 1)
        cont = np.where(done, nv[t], (1 - lam) * nv[t] + lam * nxt)
        out[t] = r[t] + gamma * (1 - term[t]) * cont
        nxt = out[t]
    return out


def test_vcppo_targets_against_a_numpy_loop():
    rng = np.random.default_rng(0)
    T, N = 12, 3
    r = rng.normal(size=(T, N)).astype(np.float32)
    v = rng.normal(size=(T, N)).astype(np.float32)
    nv = np.concatenate([v[1:], rng.normal(size=(1, N))]).astype(np.float32)
    term = rng.random((T, N)) < 0.15
    trunc = (rng.random((T, N)) < 0.1) & ~term
    nv = np.where(trunc, rng.normal(size=(T, N)), nv).astype(np.float32)  # V(final obs) at truncation
    cfg = prpo.algorithms.get("vcppo").config("CartPole-v1", adv_norm="none", critic_lambda=1.0, gae_lambda=0.9)
    adv, ret = decoupled_gae_targets(cfg, cfg.hp, *map(jnp.asarray, (r, v, nv, term, trunc)))
    np.testing.assert_allclose(np.asarray(ret), _lambda_returns_numpy(r, v, nv, term, trunc, 0.99, 1.0), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(adv) + v, _lambda_returns_numpy(r, v, nv, term, trunc, 0.99, 0.9),
                               rtol=1e-5, atol=1e-5)
    # critic_lambda = gae_lambda: PPO's targets exactly
    same = cfg.replace(hp=cfg.hp.replace(critic_lambda=0.9))
    a1, r1 = decoupled_gae_targets(same, same.hp, *map(jnp.asarray, (r, v, nv, term, trunc)))
    a2, r2 = gae_targets(same, same.hp, *map(jnp.asarray, (r, v, nv, term, trunc)))
    np.testing.assert_array_equal(np.asarray(a1), np.asarray(a2))
    np.testing.assert_array_equal(np.asarray(r1), np.asarray(r2))


# -- registrations ----------------------------------------------------------------------------

@pytest.mark.parametrize("algo,logged", [
    ("dispo", ["out_pos_high", "out_pos_low", "out_neg_high", "out_neg_low", "entropy"]),
    ("bapo", ["pos_share", "pos_share_after", "c_low", "c_high"]),
    ("sign_weighted", ["pos_frac"]),
    ("dropout_ppo", ["dropped"]),
    ("vcppo", ["entropy"]),
])
def test_each_piece_trains_and_logs_its_metrics(algo, logged):
    """Registered: configurable by name, its surrogate's metrics reach the per-update metrics
    (abstract evaluation: shapes only, no compile)."""
    cfg = prpo.algorithms.get(algo).config("CartPole-v1", num_envs=4, num_steps=8, total_timesteps=64)
    trainer = prpo.make_train(cfg)
    _, metrics = jax.eval_shape(trainer.train, jax.random.key(0), cfg.hp)
    for name in logged:
        assert metrics[name].shape == (cfg.num_updates,), name


def test_pieces_sweep_in_a_grid_and_refuse_nonsense():
    from prpo.experiment import grid_hyperparams

    cfg = prpo.algorithms.get("sign_weighted").config("CartPole-v1")
    hps, settings = grid_hyperparams(cfg.hp, {"pos_weight": [0.0, 1.0], "neg_weight": [0.0, 1.0]})
    assert len(settings) == 4 and hps.pos_weight.shape == (4,)
    for algo, bad, needle in [("bapo", {"bapo_low0": 1.2}, "bapo_low0=1.2 must be in \\(0, 1\\)"),
                              ("bapo", {"bapo_high_max": 0.9}, "must be > 1"),
                              ("dispo", {"dispo_pos_high": -0.1}, "must be >= 0"),
                              ("vcppo", {"critic_lambda": 1.5}, "in \\[0, 1\\]"),
                              ("dropout_ppo", {"dropout_threshold": 0.0}, "must be > 0")]:
        with pytest.raises(ConfigError, match=needle):
            prpo.algorithms.get(algo).config("CartPole-v1", **bad)
    with pytest.raises(ConfigError, match="critic_lambda"):  # owned by vcppo: refused elsewhere
        apply_overrides(prpo.algorithms.get("ppo").config("CartPole-v1"), {"critic_lambda": "1.0"})


# -- R²VPO: ν by dual ascent ------------------------------------------------------------------

def test_r2vpo_dual_ascent_by_hand():
    from prpo.algorithms import r2vpo

    cfg = prpo.algorithms.get("r2vpo").config("CartPole-v1", rv_nu=0.1, rv_delta=0.01, rv_dual_lr=2.0)
    state = r2vpo._init_state(None)
    hp, logged = r2vpo._hyperparams(cfg.hp, state)
    assert float(hp.rv_nu) == pytest.approx(0.1) and float(logged["rv_nu"]) == pytest.approx(0.1)
    state = r2vpo._dual_ascent(state, {"ratio_var": jnp.float32(0.06)}, cfg.hp)  # ν ← 0.1 + 2·(0.06 − 0.01)
    assert float(r2vpo._hyperparams(cfg.hp, state)[0].rv_nu) == pytest.approx(0.2)
    state = r2vpo._dual_ascent(state, {"ratio_var": jnp.float32(0.0)}, cfg.hp)  # ν ← 0.2 − 0.02
    assert float(r2vpo._hyperparams(cfg.hp, state)[0].rv_nu) == pytest.approx(0.18)
    for _ in range(20):  # below the budget ν falls to 0 and stays there
        state = r2vpo._dual_ascent(state, {"ratio_var": jnp.float32(0.0)}, cfg.hp)
    assert float(r2vpo._hyperparams(cfg.hp, state)[0].rv_nu) == 0.0


def test_r2vpo_without_dual_steps_is_the_fixed_penalty():
    """rv_dual_lr = 0: the same run as PPO with objective=ratio_var (ν fixed), and the logged ν
    follows the recursion from the logged variance when the step is on."""
    kw = dict(num_envs=4, num_steps=16, total_timesteps=4 * 16 * 6, rv_nu=0.2, rv_delta=1e-3)
    fixed = prpo.algorithms.get("r2vpo").config("CartPole-v1", rv_dual_lr=0.0, **kw)
    plain = prpo.algorithms.get("ppo").config("CartPole-v1", objective="ratio_var", **kw)
    p1 = jax.jit(prpo.make_train(fixed).train)(jax.random.key(1), fixed.hp)[0].params
    p2 = jax.jit(prpo.make_train(plain).train)(jax.random.key(1), plain.hp)[0].params
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7), p1, p2)
    on = prpo.algorithms.get("r2vpo").config("CartPole-v1", rv_dual_lr=50.0, **kw)
    m = jax.jit(prpo.make_train(on).train)(jax.random.key(1), on.hp)[1]
    nu, var = np.asarray(m["rv_nu"], np.float64), np.asarray(m["ratio_var"], np.float64)
    np.testing.assert_allclose(nu[1:], np.maximum(nu[:-1] + 50.0 * (var[:-1] - 1e-3), 0.0), rtol=1e-5, atol=1e-7)


# -- automatic entropy coefficient ------------------------------------------------------------

def test_auto_entropy_coefficient_follows_its_dual_ascent():
    """c_{k+1} = c_k · exp(ent_lr · (target − H_k)) from the logged entropy: up while the entropy
    is below the target, down while above (a wrong sign fails here)."""
    cfg = apply_overrides(prpo.algorithms.get("ppo").config("CartPole-v1", num_envs=4, num_steps=16,
                                                            total_timesteps=4 * 16 * 8),
                          {"auto_entropy": "true", "target_entropy": "0.8", "ent_lr": "0.5"})
    m = jax.jit(prpo.make_train(cfg).train)(jax.random.key(0), cfg.hp)[1]
    c, h = np.asarray(m["ent_coef"], np.float64), np.asarray(m["entropy"], np.float64)
    assert c[0] == pytest.approx(0.01)
    np.testing.assert_allclose(c[1:], c[:-1] * np.exp(0.5 * (0.8 - h[:-1])), rtol=1e-5)
    assert np.all(h < 0.8) and np.all(np.diff(c) > 0)  # CartPole's entropy is at most log 2 < 0.8


def test_auto_entropy_works_for_other_on_policy_algorithms():
    for algo in ("spo", "dispo"):
        cfg = prpo.algorithms.get(algo).config("CartPole-v1", num_envs=4, num_steps=8, total_timesteps=64,
                                               auto_entropy=True)
        _, m = jax.eval_shape(prpo.make_train(cfg).train, jax.random.key(0), cfg.hp)
        assert m["ent_coef"].shape == (cfg.num_updates,)
    cfg = prpo.algorithms.get("pqn").config("CartPole-v1", auto_entropy=True)
    with pytest.raises(ConfigError, match="needs a policy entropy"):
        jax.eval_shape(prpo.make_train(cfg).train, jax.random.key(0), cfg.hp)
    with pytest.raises(ConfigError, match="set auto_entropy=true too"):
        apply_overrides(prpo.algorithms.get("ppo").config("CartPole-v1"), {"target_entropy": "0.3"})
