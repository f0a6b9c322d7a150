"""Networks (orthogonal init, trunks) and policy families (act / log_ratio against NumPy)."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from prpo.networks import make_actor_critic, orthogonal
from prpo.policies import CategoricalPolicy, GaussianPolicy


def _orthonormal_scaled(w, scale):
    w = np.asarray(w)
    small = min(w.shape)
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, scale**2 * np.eye(small), atol=1e-4 * max(scale**2, 1e-2) + 1e-6)


def test_orthogonal_init_scales():
    net = make_actor_critic(action_dim=3, discrete=True, actor_hidden=(16, 8), critic_hidden=(16, 8))
    params = net.init(jax.random.key(0), jnp.zeros((2, 5)))["params"]
    _orthonormal_scaled(params["actor"]["Dense_0"]["kernel"], np.sqrt(2.0))
    _orthonormal_scaled(params["critic"]["Dense_1"]["kernel"], np.sqrt(2.0))
    _orthonormal_scaled(params["policy_head"]["kernel"], 0.01)
    _orthonormal_scaled(params["value_head"]["kernel"], 1.0)
    assert np.all(np.asarray(params["actor"]["Dense_0"]["bias"]) == 0)


def _qr_operand_ranks(jaxpr):
    """Ranks of every QR-type primitive's operand in ``jaxpr``, sub-jaxprs (scan, map) included."""
    ranks = []
    for eqn in jaxpr.eqns:
        if any(k in eqn.primitive.name for k in ("qr", "geqrf", "householder")):
            ranks.append(eqn.invars[0].aval.ndim)
        for sub in _sub_jaxprs(eqn.params):
            ranks += _qr_operand_ranks(sub)
    return ranks


def _sub_jaxprs(params):
    """The jaxprs in an equation's params (``jax.extend.core.jaxprs_in_params``, which the oldest
    JAX the package allows lacks: there the same walk by hand)."""
    core = jax.extend.core
    if hasattr(core, "jaxprs_in_params"):
        return list(core.jaxprs_in_params(params))
    found = []

    def walk(v):
        if isinstance(v, core.ClosedJaxpr):
            found.append(v.jaxpr)
        elif isinstance(v, core.Jaxpr):
            found.append(v)
        elif isinstance(v, (tuple, list)):
            for x in v:
                walk(x)

    for v in params.values():
        walk(v)
    return found


def test_orthogonal_is_jax_orthogonal_and_never_a_batched_qr():
    """prpo's orthogonal init gives JAX's values for every key, also under nested vmap (seeds ×
    sweep), but as one unbatched QR at a time: a batched CPU QR blocks an XLA pool thread on
    the pool itself, and two at once hung `vmap(train)` on a 2-core machine."""
    shapes = [(5, 7), (7, 5), (4, 3, 6), (16, 1)]

    def init(key):
        return [orthogonal(2.0)(k, s) for k, s in zip(jax.random.split(key, len(shapes)), shapes)]

    keys = jax.random.split(jax.random.key(0), 6).reshape(2, 3)
    got = jax.jit(jax.vmap(jax.vmap(init)))(keys)
    for i, shape in enumerate(shapes):
        ref = np.stack([np.asarray(jax.nn.initializers.orthogonal(2.0)(jax.random.split(k, len(shapes))[i], shape))
                        for k in keys.reshape(-1)])
        np.testing.assert_array_equal(np.asarray(got[i]).reshape(ref.shape), ref)
    ranks = _qr_operand_ranks(jax.make_jaxpr(jax.vmap(jax.vmap(init)))(keys).jaxpr)
    assert ranks and all(r == 2 for r in ranks), ranks
    # JAX's own initializer would batch it (what the test guards against)
    plain = jax.make_jaxpr(jax.vmap(lambda k: jax.nn.initializers.orthogonal()(k, (5, 7))))(keys[0]).jaxpr
    assert max(_qr_operand_ranks(plain)) == 3


def test_shared_vs_separate_trunk():
    obs = jnp.ones((4, 3))
    sep = make_actor_critic(2, True, actor_hidden=(8,)).init(jax.random.key(0), obs)["params"]
    shared = make_actor_critic(2, True, actor_hidden=(8,), shared_trunk=True).init(jax.random.key(0), obs)["params"]
    assert set(sep) == {"actor", "critic", "policy_head", "value_head"}
    assert set(shared) == {"trunk", "policy_head", "value_head"}


def test_observations_are_flattened():
    net = make_actor_critic(4, True, obs_ndim=3, actor_hidden=(8,))
    obs = jnp.ones((5, 10, 10, 2))
    params = net.init(jax.random.key(0), obs)
    logits, value = net.apply(params, obs)
    assert logits.shape == (5, 4) and value.shape == (5,)
    assert params["params"]["actor"]["Dense_0"]["kernel"].shape == (200, 8)


def test_gaussian_policy_log_prob_and_ratio_against_numpy():
    net = make_actor_critic(2, False, actor_hidden=(8,), log_std_init=-0.5)
    policy = GaussianPolicy(net)
    obs = jax.random.normal(jax.random.key(1), (6, 3))
    params = policy.init(jax.random.key(0), obs)
    action, aux = policy.act(params, obs, jax.random.key(2))
    (mean, log_std), value = net.apply(params, obs)
    mean, std, a = np.asarray(mean), np.exp(np.asarray(log_std)), np.asarray(action)
    ref = np.sum(-0.5 * ((a - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), axis=-1)
    np.testing.assert_allclose(aux["log_prob"], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(aux["value"], value, rtol=1e-6)
    # same parameters: ratio exactly 1
    lr, extra = policy.log_ratio(params, obs, action, aux, None)
    np.testing.assert_allclose(lr, 0.0, atol=1e-6)
    # shift log_std by +0.1: log π_new − log π_old = Σ_d [−0.1 − ½ z²(e^{−0.2} − 1)]
    shifted = jax.tree.map(lambda x: x, params)
    shifted["params"]["log_std"] = params["params"]["log_std"] + 0.1
    lr, extra = policy.log_ratio(shifted, obs, action, aux, None)
    z2 = ((a - mean) / std) ** 2
    expected = np.sum(-0.1 - 0.5 * z2 * (np.exp(-0.2) - 1.0), axis=-1)
    np.testing.assert_allclose(lr, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(extra["entropy"], np.sum(0.5 + 0.5 * np.log(2 * np.pi) + np.log(std) + 0.1, -1), rtol=1e-5)


def test_categorical_policy_samples_follow_softmax():
    net = make_actor_critic(3, True, actor_hidden=(8,))
    policy = CategoricalPolicy(net)
    obs = jnp.ones((1, 2))
    params = policy.init(jax.random.key(0), obs)
    params["params"]["policy_head"]["bias"] = jnp.array([0.0, 1.0, -1.0])
    logits, _ = net.apply(params, obs)
    probs = np.asarray(jax.nn.softmax(logits[0]))
    obs_many = jnp.ones((20000, 2))
    actions, aux = jax.jit(policy.act)(params, obs_many, jax.random.key(3))
    freq = np.bincount(np.asarray(actions), minlength=3) / 20000
    np.testing.assert_allclose(freq, probs, atol=0.015)
    np.testing.assert_allclose(aux["log_prob"][:3], np.log(probs[np.asarray(actions[:3])]), rtol=1e-5)
    assert int(policy.mode(params, obs)[0]) == int(np.argmax(probs))


@pytest.mark.parametrize("activation", ["bogus"])
def test_unknown_activation_is_a_clear_error(activation):
    with pytest.raises(ValueError, match="activation='bogus' is not known; allowed"):
        make_actor_critic(2, True, activation=activation)
