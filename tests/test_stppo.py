"""ST-PPO (prpo.algorithms.stppo): segments against a NumPy loop (with episode cuts), the segment
loss and its gradient by hand, the clipping-bias factor by hand, the engine's minibatch layout,
the L = 1, κ = 0 limit (plain PPO with shuffle="envs"), and the refusals."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import prpo
import prpo.algorithms
import prpo.algorithms.stppo as stppo
from prpo import objectives, registry
from prpo.config import ConfigError, apply_overrides
from prpo.rollout import RolloutContext
from prpo.update import Batch, sgd_epochs


def _clip(lr, adv, hp):
    return objectives.ppo_clip(lr, adv, hp.clip_eps)


def _hp(**kw):
    return prpo.algorithms.get("stppo").config("CartPole-v1").hp.replace(**kw)


# -- segments -----------------------------------------------------------------------------------

def _segments_numpy(done_col, length, cut):
    """The segments of one env row as index lists: split at episode ends (if ``cut``), then chunk
    each piece into ``length`` steps from its start (without cuts: the fixed grid)."""
    pieces, cur = [], []
    for t, d in enumerate(done_col):
        cur.append(t)
        if cut and d:
            pieces.append(cur)
            cur = []
    if cur:
        pieces.append(cur)
    return [p[i:i + length] for p in pieces for i in range(0, len(p), length)]


def _starts_numpy(done, length, cut):
    out = np.zeros(done.shape, bool)
    for j in range(done.shape[1]):
        for seg in _segments_numpy(done[:, j], length, cut):
            out[seg[0], j] = True
    return out


def test_segment_starts_by_hand_and_against_a_numpy_loop():
    done = np.zeros((10, 3), bool)
    done[2, 0] = True  # env 0: episode ends at t = 2 -> segments [0..2], [3..6], [7..9]
    done[5, 2] = done[6, 2] = True  # env 2: [0..3], [4, 5], [6], [7..9]
    got = np.asarray(stppo.segment_starts(jnp.asarray(done), 4, cut=True))
    assert [list(np.flatnonzero(got[:, j])) for j in range(3)] == [[0, 3, 7], [0, 4, 8], [0, 4, 6, 7]]
    no_cut = np.asarray(stppo.segment_starts(jnp.asarray(done), 4, cut=False))
    assert np.array_equal(no_cut, np.repeat((np.arange(10) % 4 == 0)[:, None], 3, axis=1))
    rng = np.random.default_rng(0)
    done = rng.random((32, 6)) < 0.12
    for length in (1, 3, 8):
        for cut in (True, False):
            np.testing.assert_array_equal(np.asarray(stppo.segment_starts(jnp.asarray(done), length, cut)),
                                          _starts_numpy(done, length, cut))


def test_segment_log_ratio_matches_a_numpy_loop_with_episode_cuts():
    rng = np.random.default_rng(1)
    T, N, L = 24, 5, 6
    lr = rng.normal(scale=0.3, size=(T, N)).astype(np.float32)
    done = rng.random((T, N)) < 0.15
    start = stppo.segment_starts(jnp.asarray(done), L, True)
    want_mean, want_sum = np.zeros((T, N)), np.zeros((T, N))
    for j in range(N):
        for seg in _segments_numpy(done[:, j], L, True):
            want_mean[seg, j] = np.mean(lr[seg, j].astype(np.float64))
            want_sum[seg, j] = np.sum(lr[seg, j].astype(np.float64))
    assert (want_mean != lr).any()  # segments of several steps exist
    np.testing.assert_allclose(np.asarray(stppo.segment_log_ratio(jnp.asarray(lr), start, "geomean")), want_mean,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(stppo.segment_log_ratio(jnp.asarray(lr), start, "product")), want_sum,
                               rtol=1e-5, atol=1e-6)


# -- the segment loss, its gradient and the clipping-bias factor ----------------------------------

# two envs, T = 4, time-major flat index t·2 + j. Env 0: segments [0, 1], [2, 3] (log-ratios
# 0.4, 0.2 | −0.1, 0.1: w₁ = e^0.3 > 1.2, w₂ = 1); env 1: one segment (mean 0.1, w = e^0.1).
LR = np.array([[0.4, 0.1], [0.2, 0.3], [-0.1, -0.2], [0.1, 0.2]], np.float32)
ADV = np.array([[1.0, 1.0], [-2.0, -1.0], [0.5, 2.0], [-1.0, 0.5]], np.float32)
START = np.array([[True, True], [False, False], [True, False], [False, False]])


def _segment_loss(coef, ratio="geomean", norm="absolute"):
    hp = _hp(stppo_bias_coef=coef)

    def f(lr):
        loss, diag = stppo.stppo_surrogate(lr, jnp.asarray(ADV).ravel(), jnp.asarray(START).ravel(), hp, _clip, 4,
                                           ratio, "step", norm)
        return loss.sum(), (loss, diag["metrics"])

    (_, (loss, metrics)), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(LR).ravel())
    return np.asarray(loss).reshape(4, 2), np.asarray(grad).reshape(4, 2), metrics


def test_segment_loss_and_gradient_by_hand():
    """Geometric mean, κ = 0. Env 0, segment 1 (w₁ = e^0.3 ≈ 1.35): A = 1 is clipped at 1.2
    (loss −1.2, no gradient); A = −2 keeps −2w₁ (loss 2w₁, ∂/∂log r_s = 2w₁/2 = w₁ for both
    steps). Segment 2 (w = 1): losses −0.5 and 1, ∂/∂log r_s = (−0.5 + 1)/2 = 0.25. Env 1, one
    segment of 4 (w = e^0.1, unclipped): losses −w·A, ∂/∂log r_s = −w·ΣA/4 = −w·2.5/4."""
    w1, w = math.exp(0.3), math.exp(0.1)
    loss, grad, m = _segment_loss(0.0)
    np.testing.assert_allclose(loss[:, 0], [-1.2, 2 * w1, -0.5, 1.0], rtol=1e-5)
    np.testing.assert_allclose(loss[:, 1], -w * ADV[:, 1], rtol=1e-5)
    np.testing.assert_allclose(grad[:, 0], [w1, w1, 0.25, 0.25], rtol=1e-5)
    np.testing.assert_allclose(grad[:, 1], [-w * 2.5 / 4] * 4, rtol=1e-5)
    assert float(m["stppo_scale"]) == 1.0
    np.testing.assert_allclose(np.asarray(m["clip_frac"]).reshape(4, 2), [[1, 0], [1, 0], [0, 0], [0, 0]])
    np.testing.assert_allclose(np.asarray(m["step_clip_frac"]).reshape(4, 2),
                               np.abs(np.exp(LR) - 1) > 0.2)  # per step: 0.4 and 0.3 (e^0.3 − 1 > 0.2)
    np.testing.assert_allclose(float(m["stppo_segment_len"]), 8 / 3, rtol=1e-6)
    # product: no 1/|k|. Env 0's segment 1 has ratio e^0.6 (still clipped for A = 1); env 1's
    # ratio is e^0.4 > 1.2, so its A > 0 steps are clipped too and only A = −1 (loss w) is left:
    # ∂/∂log r_s = w for all four steps
    loss_p, grad_p, _ = _segment_loss(0.0, ratio="product")
    w1p, wp = math.exp(0.6), math.exp(0.4)
    np.testing.assert_allclose(loss_p[:, 1], [-1.2, wp, -2.4, -0.6], rtol=1e-5)
    np.testing.assert_allclose(grad_p[:, 0], [2 * w1p, 2 * w1p, 0.5, 0.5], rtol=1e-5)
    np.testing.assert_allclose(grad_p[:, 1], [wp] * 4, rtol=1e-5)


def test_clipping_bias_factor_by_hand():
    """Only env 0's first step is clipped on its pessimistic side: gap (w₁ − 1.2)·1. Absolute
    b̄ = gap / 8; relative b̄ = gap / Σ|w·A| (Σ|w·A| = 3w₁ + 1.5 + 4.5·e^0.1). With κ = 2 every
    loss and gradient is the κ = 0 one times 1/(1 + 2b̄) (a stop-gradient factor)."""
    w1, w = math.exp(0.3), math.exp(0.1)
    gap = w1 - 1.2
    loss0, grad0, _ = _segment_loss(0.0)
    for norm, bias in (("absolute", gap / 8), ("relative", gap / (3 * w1 + 1.5 + 4.5 * w))):
        loss, grad, m = _segment_loss(2.0, norm=norm)
        scale = 1.0 / (1.0 + 2.0 * bias)
        np.testing.assert_allclose(float(m["stppo_bias"]), bias, rtol=1e-5)
        np.testing.assert_allclose(float(m["stppo_scale"]), scale, rtol=1e-5)
        np.testing.assert_allclose(loss, scale * loss0, rtol=1e-5)
        np.testing.assert_allclose(grad, scale * grad0, rtol=1e-5)
    # no binding clip (all ratios 1): the factor is exactly 1, the loss PPO's
    hp = _hp(stppo_bias_coef=5.0)
    scale, bias = stppo.clipping_bias_scale(jnp.zeros(4), jnp.array([1.0, -1.0, 2.0, 0.0]),
                                            _clip(jnp.zeros(4), jnp.array([1.0, -1.0, 2.0, 0.0]), hp)[0], 5.0)
    assert float(bias) == 0.0 and float(scale) == 1.0


def test_engine_loss_matches_a_numpy_recomputation():
    """The registered loss on a time-major minibatch: segments from aux["stppo_start"], A
    normalised per minibatch, pg_loss = mean(−min(w A, clip(w) A)) / (1 + κ b̄)."""
    cfg = prpo.algorithms.get("stppo").config("CartPole-v1", num_envs=4, num_steps=16, stppo_segment=4,
                                              stppo_bias_coef=3.0, clip_eps=0.05)
    trainer = prpo.make_train(cfg)
    policy = trainer.policy
    T, n = 16, 2
    rng = np.random.default_rng(2)
    obs = jnp.asarray(rng.normal(size=(T * n, 4)), jnp.float32)
    params = policy.init(jax.random.key(0), obs)
    action = jnp.asarray(rng.integers(0, 2, T * n))
    done = rng.random((T, n)) < 0.2
    start = stppo.segment_starts(jnp.asarray(done), 4, True)
    log_prob = policy.log_ratio(params, obs, action, {"log_prob": jnp.zeros(T * n)})[0]
    old = log_prob - jnp.asarray(rng.normal(scale=0.1, size=T * n), jnp.float32)  # ratios off 1
    adv = rng.normal(size=T * n).astype(np.float32)
    mb = Batch(obs=obs, action=action, aux={"log_prob": old, "value": jnp.zeros(T * n), "stppo_start": start.ravel()},
               advantages=jnp.asarray(adv), returns=jnp.zeros(T * n))
    loss_fn = stppo.make_stppo_loss(cfg, policy, registry.SURROGATES["clip"])
    _, metrics = loss_fn(params, mb, cfg.hp, jax.random.key(1))
    lr = np.asarray(log_prob - old, np.float64).reshape(T, n)
    a = ((adv - adv.mean()) / (adv.std() + 1e-8)).reshape(T, n)
    seg_lr = np.zeros((T, n))
    for j in range(n):
        for seg in _segments_numpy(done[:, j], 4, True):
            seg_lr[seg, j] = lr[seg, j].mean()
    w = np.exp(seg_lr)
    surr = np.minimum(w * a, np.clip(w, 0.95, 1.05) * a)
    bias = np.maximum(w * a - surr, 0).mean()
    assert bias > 0  # the case exercises the correction
    np.testing.assert_allclose(float(metrics["pg_loss"]), -surr.mean() / (1 + 3.0 * bias), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["clip_frac"]), (np.abs(w - 1) > 0.05).mean(), rtol=1e-6)


def test_envs_shuffle_gives_time_major_whole_env_minibatches():
    """The layout the loss relies on: with shuffle="envs", sgd_epochs' minibatch [T·n] reshaped
    to [T, n] holds whole env rows, column j one env's steps 0..T−1 in order."""
    cfg = prpo.algorithms.get("stppo").config("CartPole-v1", num_envs=8, num_steps=6, stppo_segment=3,
                                              num_minibatches=2, update_epochs=3)
    T, N = 6, 8
    code = (np.arange(T)[:, None] * 100 + np.arange(N)[None]).astype(np.float32).ravel()  # t·100 + env
    batch = Batch(obs=jnp.asarray(code), action=jnp.zeros(T * N), aux={}, advantages=jnp.zeros(T * N),
                  returns=jnp.zeros(T * N))

    def loss_fn(params, mb, hp, key, progress=0.0):
        x = mb.obs.reshape(T, -1)
        ok = jnp.all(x // 100 == jnp.arange(T)[:, None]) & jnp.all(x % 100 == x[:1] % 100)
        distinct = jnp.unique(x[0] % 100, size=N // 2, fill_value=-1).min() >= 0
        return params["w"] * 0.0, {"ok": (ok & distinct).astype(jnp.float32)}

    _, _, m = sgd_epochs(cfg, loss_fn, optax.sgd(0.0), {"w": jnp.zeros(())}, optax.sgd(0.0).init({"w": 0.0}),
                         batch, cfg.hp, jax.random.key(0))
    assert float(m["ok"]) == 1.0


def test_collect_marks_segments_from_the_rollouts_episode_ends():
    cfg = prpo.algorithms.get("stppo").config("CartPole-v1", num_envs=4, num_steps=64, stppo_segment=8)
    trainer = prpo.make_train(cfg)
    env, policy = trainer.env, trainer.policy
    env_state, obs = env.reset(jax.random.key(0))
    params = policy.init(jax.random.key(1), obs)
    ctx = RolloutContext(cfg=cfg, env=env, policy=policy, obs_transform=lambda o: o, action_transform=lambda a: a,
                         env_ids=None, hp=cfg.hp)
    _, _, traj, _ = jax.jit(lambda p, s, o, k: stppo.stppo_collect(ctx, policy, p, s, o, k))(
        params, env_state, obs, jax.random.key(2))
    done = np.asarray(traj.terminated | traj.truncated)
    start = np.asarray(traj.aux["stppo_start"])
    assert done.any()  # a random CartPole policy ends episodes within 64 steps
    np.testing.assert_array_equal(start, _starts_numpy(done, 8, True))
    assert (start & (np.arange(64) % 8 != 0)[:, None]).any()  # cuts moved segments off the fixed grid


# -- the limit: L = 1, κ = 0 is PPO ---------------------------------------------------------------

def test_segment_length_one_without_correction_is_ppo_with_envs_shuffle():
    kw = dict(num_envs=4, num_steps=16, total_timesteps=4 * 16 * 3, clip_eps=0.05, lr=0.01)
    st = prpo.algorithms.get("stppo").config("CartPole-v1", stppo_segment=1, stppo_bias_coef=0.0, **kw)
    ppo = prpo.algorithms.get("ppo").config("CartPole-v1", shuffle="envs", **kw)
    s1, m1 = jax.jit(prpo.make_train(st).train)(jax.random.key(3), st.hp)
    s2, m2 = jax.jit(prpo.make_train(ppo).train)(jax.random.key(3), ppo.hp)
    for name in ("loss", "pg_loss", "value_loss", "clip_frac", "approx_kl"):
        np.testing.assert_allclose(np.asarray(m1[name]), np.asarray(m2[name]), rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(np.asarray(m1["step_clip_frac"]), np.asarray(m2["clip_frac"]), rtol=1e-6)
    assert float(np.asarray(m2["clip_frac"]).max()) > 0  # the clip is active: the limit is not vacuous
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
                 s1.params, s2.params)
    # longer segments change the update
    seg = st.replace(stppo_segment=8)
    s3, _ = jax.jit(prpo.make_train(seg).train)(jax.random.key(3), seg.hp)
    diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(s3.params), jax.tree.leaves(s2.params)))
    assert diff > 1e-4


# -- refusals -----------------------------------------------------------------------------------

def test_refusals():
    get = prpo.algorithms.get("stppo").config
    for bad, needle in [({"shuffle": "samples"}, "shuffle='samples'.*allowed: shuffle='envs'"),
                        ({"num_steps": 12}, "stppo_segment=8 must divide num_steps=12; allowed: 1, 2, 3, 4, 6, 12"),
                        ({"stppo_segment": 0}, "stppo_segment must be an integer >= 1"),
                        ({"stppo_ratio": "mean"}, "stppo_ratio='mean' is not allowed; allowed values: 'geomean', "
                                                  "'product'"),
                        ({"stppo_adv": "segment"}, "allowed values: 'step', 'mean'"),
                        ({"stppo_norm": "l2"}, "allowed values: 'absolute', 'relative'"),
                        ({"stppo_bias_coef": -1.0}, "stppo_bias_coef=-1.0 must be >= 0"),
                        ({"policy": "flow"}, "policy='flow' is not allowed with algo='stppo'")]:
        with pytest.raises(ConfigError, match=needle):
            get("CartPole-v1", **bad)
    with pytest.raises(ConfigError, match="stppo_segment.*does not use it"):  # owned by stppo
        apply_overrides(prpo.algorithms.get("ppo").config("CartPole-v1"), {"stppo_segment": "4"})
    registry.register_surrogate("_stppo_ctx_probe", lambda lr, adv, hp, ctx: (lr, {}), needs_context=True)
    try:
        with pytest.raises(ConfigError, match="objective='_stppo_ctx_probe' is not a ratio surrogate"):
            get("CartPole-v1", objective="_stppo_ctx_probe")
    finally:
        del registry.SURROGATES["_stppo_ctx_probe"]
    assert prpo.algorithms.get("stppo").defaults("brax").stppo_segment == 5  # brax rollouts are 10 steps
