"""Tests for prpo.advantages.grpo_advantages (GRPO / Dr. GRPO) against numpy loops."""

import numpy as np
import pytest

from prpo.advantages import grpo_advantages


TOL = dict(rtol=1e-5, atol=1e-5)
RNG = np.random.default_rng(0)


def ref_group_slice(x, ids=None, scale=True, eps=1e-8, ddof=0):
    """One 1-D slice: explicit loop over samples and their group members."""
    x = np.asarray(x, np.float64)
    ids = np.zeros(len(x), int) if ids is None else np.asarray(ids)
    out = np.zeros_like(x)
    for i in range(len(x)):
        members = [x[j] for j in range(len(x)) if ids[j] == ids[i]]
        mean = sum(members) / len(members)
        if scale:
            denom = max(len(members) - ddof, 1)
            std = np.sqrt(sum((m - mean) ** 2 for m in members) / denom)
            out[i] = (x[i] - mean) / (std + eps)
        else:
            out[i] = x[i] - mean
    return out


def ref_grpo(x, axis=-1, ids=None, **kw):
    """Apply ref_group_slice to every 1-D slice along axis (ids: same shape as x)."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    if ids is not None:
        ids = np.moveaxis(np.broadcast_to(ids, np.moveaxis(x, -1, axis).shape), axis, -1)
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        out[idx] = ref_group_slice(x[idx], None if ids is None else ids[idx], **kw)
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("scale", [True, False], ids=["grpo", "drgrpo"])
@pytest.mark.parametrize(
    "shape,axis", [((5, 4), -1), ((6, 3), 0), ((2, 5, 3), 1), ((8,), 0)]
)
def test_layout_groups(maybe_jit, scale, shape, axis):
    x = RNG.normal(size=shape).astype(np.float32) * 3.0 + 1.0
    got = maybe_jit(lambda r: grpo_advantages(r, axis=axis, scale=scale))(x)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref_grpo(x, axis=axis, scale=scale), **TOL)


def test_grpo_hand_values(maybe_jit):
    # group [1, 2, 3, 6]: mean 3, population std sqrt((4+1+0+9)/4) = sqrt(3.5)
    x = np.array([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 1.0, 1.0]], np.float32)
    got = maybe_jit(grpo_advantages)(x)
    np.testing.assert_allclose(got[0], (x[0] - 3.0) / np.sqrt(3.5), **TOL)
    np.testing.assert_allclose(got[1], [-1.0, -1.0, 1.0, 1.0], **TOL)
    dr = maybe_jit(lambda r: grpo_advantages(r, scale=False))(x)
    np.testing.assert_allclose(dr, [[-2.0, -1.0, 0.0, 3.0], [-0.5, -0.5, 0.5, 0.5]], **TOL)
    # ddof=1 (TRL-style unbiased std)
    got1 = maybe_jit(lambda r: grpo_advantages(r, ddof=1))(x)
    np.testing.assert_allclose(got1[0], (x[0] - 3.0) / np.sqrt(14.0 / 3.0), **TOL)
    np.testing.assert_allclose(got1, ref_grpo(x, ddof=1), **TOL)


def test_drgrpo_has_no_std_scaling(maybe_jit):
    x = RNG.normal(size=(4, 6)).astype(np.float32)
    grpo = maybe_jit(grpo_advantages)
    dr = maybe_jit(lambda r: grpo_advantages(r, scale=False))
    # Dr. GRPO is exactly R - mean_G, equivariant to scaling; GRPO is scale invariant
    np.testing.assert_allclose(dr(x), x - x.mean(-1, keepdims=True), **TOL)
    np.testing.assert_allclose(dr(10.0 * x), 10.0 * np.asarray(dr(x)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(grpo(10.0 * x), grpo(x), rtol=1e-4, atol=1e-4)
    # per-group std differs, so GRPO != Dr. GRPO / global constant
    ratio = np.asarray(grpo(x)) / np.asarray(dr(x))
    inv_std = 1.0 / (x.std(-1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(ratio, np.broadcast_to(inv_std, x.shape), rtol=1e-4)
    assert np.ptp(ratio[:, 0]) > 1e-3
    # unit group std: both coincide; constant groups: both give 0 (no NaN)
    c = np.array([[2.0, 2.0, 2.0], [-1.0, -1.0, -1.0]], np.float32)
    np.testing.assert_array_equal(grpo(c), 0.0)
    np.testing.assert_array_equal(dr(c), 0.0)
    u = np.array([[-1.0, 1.0, -1.0, 1.0]], np.float32) + 5.0
    np.testing.assert_allclose(grpo(u), dr(u), rtol=1e-6)


@pytest.mark.parametrize("scale", [True, False], ids=["grpo", "drgrpo"])
def test_group_ids_flat(maybe_jit, scale):
    n = 13
    x = RNG.normal(size=n).astype(np.float32)
    ids = np.array([3, 0, 3, 7, 0, 0, 7, 3, 9, 7, 0, 3, 7])  # 9: singleton group
    got = maybe_jit(lambda r, g: grpo_advantages(r, g, scale=scale))(x, ids)
    np.testing.assert_allclose(got, ref_group_slice(x, ids, scale=scale), **TOL)
    assert got[8] == 0.0  # singleton
    # ddof=1 with a singleton group stays finite (0 there)
    got1 = maybe_jit(lambda r, g: grpo_advantages(r, g, scale=scale, ddof=1))(x, ids)
    np.testing.assert_allclose(got1, ref_group_slice(x, ids, scale=scale, ddof=1), **TOL)
    assert np.all(np.isfinite(got1))


def test_group_ids_match_layout(maybe_jit):
    # ids laid out like a [B, G] reshape (shuffled) == the axis layout
    b, g = 4, 5
    x = RNG.normal(size=(b, g)).astype(np.float32)
    perm = RNG.permutation(b * g)
    flat_x = x.reshape(-1)[perm]
    flat_ids = np.repeat(np.arange(b), g)[perm]
    got = maybe_jit(grpo_advantages)(flat_x, flat_ids)
    want = np.asarray(grpo_advantages(x)).reshape(-1)[perm]
    np.testing.assert_allclose(got, want, **TOL)


def test_group_ids_with_axis(maybe_jit):
    x = RNG.normal(size=(6, 3)).astype(np.float32)  # groups along axis 0, 3 slices
    ids_1d = np.array([1, 1, 2, 2, 2, 5])
    got = maybe_jit(lambda r, g: grpo_advantages(r, g, axis=0))(x, ids_1d)
    np.testing.assert_allclose(got, ref_grpo(x, axis=0, ids=ids_1d[:, None]), **TOL)
    # full-shape ids: a different grouping per column
    ids_full = RNG.integers(0, 3, size=(6, 3))
    got = maybe_jit(lambda r, g: grpo_advantages(r, g, axis=0, scale=False))(x, ids_full)
    np.testing.assert_allclose(got, ref_grpo(x, axis=0, ids=ids_full, scale=False), **TOL)
    got = maybe_jit(lambda r, g: grpo_advantages(r, g, axis=-1))(x.T, ids_full.T)
    np.testing.assert_allclose(got, ref_grpo(x.T, axis=-1, ids=ids_full.T), **TOL)


def test_integer_returns_and_eps(maybe_jit):
    x = np.array([[0, 1, 1, 0], [1, 1, 1, 1]], np.int32)  # binary rewards
    got = maybe_jit(grpo_advantages)(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[-1.0, 1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]], **TOL)
    got = maybe_jit(lambda r: grpo_advantages(r, eps=0.5))(x.astype(np.float32))
    # centred +-0.5, std 0.5: 0.5 / (0.5 + 0.5)
    np.testing.assert_allclose(got[0], [-0.5, 0.5, 0.5, -0.5], **TOL)
