"""Shared inputs of the surrogate tests: a grid of ratios × advantages with float64 references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

EPS = 0.2
C = 3.0
# ratios inside/outside the clip range (boundaries 0.8 / 1.2 avoided), and > C
RATIOS = [0.3, 0.5, 0.75, 0.9, 1.0, 1.1, 1.15, 1.3, 2.0, 5.0]
ADVS = [-2.0, -0.5, 0.7, 1.5]
GRID = np.array(list(itertools.product(RATIOS, ADVS)), np.float64)
R, A = GRID[:, 0], GRID[:, 1]
LOG_R = np.log(R).astype(np.float32)
A32 = A.astype(np.float32)
TOL = dict(rtol=1e-5, atol=1e-5)


def ref_ppo(r, a, eps):
    return -min(r * a, min(max(r, 1 - eps), 1 + eps) * a)


def ref_ppo_grad(r, a, eps):
    """d/d(log r) of the PPO loss, derived by hand."""
    if (a > 0 and r > 1 + eps) or (a < 0 and r < 1 - eps):
        return 0.0
    return -r * a


def per_sample_grad(loss_fn):
    """Gradient of sum(loss) w.r.t. log_ratio == per-sample derivatives."""
    return jax.grad(lambda lr, a: jnp.sum(loss_fn(lr, a)[0]))
