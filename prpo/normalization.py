"""Learner-side observation / reward normalisation.

All state is a small pytree meant to live inside the train state; every
function is pure and works unchanged under ``jax.vmap`` (e.g. over seeds).

* :class:`RunningMeanStd` -- running mean / variance, merged with each batch's
  moments by Chan et al.'s parallel algorithm (initial count ``1e-4`` as in
  gym's ``RunningMeanStd``). Count, mean and variance carry their float32 rounding
  errors (``*_lo``), so the merge weight ``batch / count`` and the moments stay right at
  ``10^12`` samples and beyond; ordinary runs compute the same floats as a plain float32 merge.
* :class:`RewardScaler` -- gym ``NormalizeReward``-style reward scaling: keep a
  per-env discounted return and divide rewards by the std of those returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = [
    "RunningMeanStd",
    "rms_init",
    "rms_update",
    "rms_normalize",
    "RewardScaler",
    "reward_scaler_init",
    "reward_scaler_update",
    "scale_rewards",
]


@flax.struct.dataclass
class RunningMeanStd:
    """Running moments. ``mean``, ``var`` and ``count`` are the float32 values to use; the
    ``*_lo`` fields hold what float32 rounding lost from them (``count + count_lo`` is the count
    to ~2^-48, likewise the moments), folded back in once it matters (see :func:`_fold`).

    Why: a float32 count stops growing once a batch is below half its spacing (count >
    2^24 · batch, e.g. 512-sample batches past 8.6·10^9 samples), which freezes the merge weight
    ``batch / count`` and turns the average into a moving one; and the moments then move by less
    than their own spacing per merge, so a float32 sum would not move at all. Constructed without
    them (``RunningMeanStd(mean, var, count)``) the low parts are 0.
    """

    mean: Array
    var: Array
    count: Array  # float32 scalar: the number of samples seen
    count_lo: Array = 0.0
    mean_lo: Array = 0.0
    var_lo: Array = 0.0


def rms_init(shape: int | Sequence[int] = ()) -> RunningMeanStd:
    """Mean 0, variance 1, count 1e-4 (like gym's RunningMeanStd)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return RunningMeanStd(
        mean=jnp.zeros(shape, jnp.float32),
        var=jnp.ones(shape, jnp.float32),
        count=jnp.asarray(1e-4, jnp.float32),
        count_lo=jnp.zeros((), jnp.float32),
        mean_lo=jnp.zeros(shape, jnp.float32),
        var_lo=jnp.zeros(shape, jnp.float32),
    )


def _two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """``s + e == a + b`` exactly, ``s = fl(a + b)`` (Knuth's TwoSum; float32 throughout)."""
    s = a + b
    b_virtual = s - a
    return s, (a - (s - b_virtual)) + (b - b_virtual)


def _fold(hi: Array, lo: Array, scale: Array, tol: float) -> tuple[Array, Array]:
    """``(hi, lo)``, or ``hi + lo`` renormalised into ``(fl(hi + lo), rest)`` where ``|lo|``
    exceeds ``tol · scale``. ``hi`` is thus the plain float32 recurrence for as long as that stays
    within ``tol`` of the exact value (every ordinary run: the same values as a float32-only
    merge, up to how XLA fuses it), and within ``tol`` of the exact value at any size."""
    fixed_hi, fixed_lo = _two_sum(hi, lo)
    drifted = jnp.abs(lo) > tol * scale
    return jnp.where(drifted, fixed_hi, hi), jnp.where(drifted, fixed_lo, lo)


def _combine(rms: RunningMeanStd, b_mean: Array, b_var: Array, b_count) -> RunningMeanStd:
    """Chan et al.'s merge in float32 (``w = batch / total``), plus the exact rounding error of
    each running value carried in its low part (weighted by ``1 − w`` like the value itself)."""
    b_count = jnp.asarray(b_count, jnp.float32)
    tot, err = _two_sum(rms.count, b_count)
    tot, tot_lo = _fold(tot, rms.count_lo + err, tot, 2.0**-20)
    w = b_count / tot
    delta = b_mean - rms.mean
    mean = rms.mean + delta * w
    # M2 / tot = var_a * (1 - w) + var_b * w + delta^2 * (1 - w) * w
    var = rms.var * (1.0 - w) + b_var * w + jnp.square(delta) * (1.0 - w) * w
    # What float32 lost: each update written as value + increment, summed exactly (TwoSum) and
    # compared with the float32 result. The increments divide by total / batch rather than
    # multiply by w, so that no product of the merge above gains a second use (XLA:CPU then
    # contracts it into FMAs the same way as before).
    per = tot / b_count
    m_sum, m_err = _two_sum(rms.mean, delta / per)
    v_sum, v_err = _two_sum(rms.var, (b_var - rms.var + jnp.square(delta) * (1.0 - w)) / per)
    keep = 1.0 - w  # the old values' weight: their low parts decay like them
    mean, mean_lo = _fold(mean, rms.mean_lo * keep + ((m_sum - mean) + m_err), jnp.abs(mean) + jnp.sqrt(var), 2.0**-20)
    var, var_lo = _fold(var, rms.var_lo * keep + ((v_sum - var) + v_err), var, 2.0**-20)
    return RunningMeanStd(mean=mean, var=var, count=tot, count_lo=tot_lo, mean_lo=mean_lo, var_lo=var_lo)


def rms_update(rms: RunningMeanStd, batch: Array, axis: int | Sequence[int] = 0, axis_name=None) -> RunningMeanStd:
    """Merge the moments of ``batch`` (reduced over the leading ``axis``) into ``rms``.

    ``axis`` is an int or a tuple of axes; the remaining axes must match
    ``rms.mean.shape``. ``axis_name`` (inside ``jax.shard_map``): ``batch`` is one device's
    equal-sized shard of a global batch; the moments are those of the global batch (exact
    merge: mean of means, and mean of variances plus the spread of the means), so every
    device ends with the same statistics.
    """
    batch = jnp.asarray(batch, jnp.float32)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(a % batch.ndim for a in axes)
    count = 1
    for a in axes:
        count *= batch.shape[a]
    b_mean = jnp.mean(batch, axis=axes)
    b_var = jnp.mean(jnp.square(batch - jnp.expand_dims(b_mean, axes)), axis=axes)
    if axis_name is not None:  # equal shard sizes: the global moments from the local ones
        g_mean = jax.lax.pmean(b_mean, axis_name)
        b_var = jax.lax.pmean(b_var + jnp.square(b_mean - g_mean), axis_name)
        b_mean = g_mean
        count = count * jax.lax.psum(1, axis_name)  # Python ints (psum of a constant is the axis size): no int32 wrap
    return _combine(rms, b_mean, b_var, count)


def rms_normalize(rms: RunningMeanStd, x: Array, clip: float | None = 10.0, eps: float = 1e-8) -> Array:
    """``(x - mean) / sqrt(var + eps)``, clipped to ``[-clip, clip]`` (no clip if ``None``)."""
    y = (x - rms.mean) / jnp.sqrt(rms.var + eps)
    if clip is not None:
        y = jnp.clip(y, -clip, clip)
    return y


@flax.struct.dataclass
class RewardScaler:
    ret: Array  # [N] running discounted return per env
    rms: RunningMeanStd  # scalar statistics of those returns


def reward_scaler_init(num_envs: int | Sequence[int]) -> RewardScaler:
    shape = (num_envs,) if isinstance(num_envs, int) else tuple(num_envs)
    return RewardScaler(ret=jnp.zeros(shape, jnp.float32), rms=rms_init(()))


def reward_scaler_update(scaler: RewardScaler, rewards: Array, dones: Array, gamma: float, axis_name=None) -> RewardScaler:
    """Scan over time (axis 0 of ``rewards``/``dones``, shape ``[T, N]``).

    ``ret = ret * gamma + r_t``; every ``ret`` value enters the return
    statistics; then ``ret`` is reset to 0 where ``done_t``. ``axis_name``: the envs are
    sharded over that mesh axis; the statistics are those of all shards' returns.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    dones = jnp.asarray(dones, jnp.bool_)

    def body(ret, xs):
        r, d = xs
        ret = ret * gamma + r
        return jnp.where(d, 0.0, ret), ret

    ret, returns = jax.lax.scan(body, scaler.ret, (rewards, dones))
    rms = rms_update(scaler.rms, returns, axis=tuple(range(returns.ndim)), axis_name=axis_name)
    return RewardScaler(ret=ret, rms=rms)


def scale_rewards(scaler: RewardScaler, rewards: Array, clip: float | None = 10.0, eps: float = 1e-8) -> Array:
    """``rewards / sqrt(var + eps)`` of the discounted-return statistics, clipped."""
    y = rewards / jnp.sqrt(scaler.rms.var + eps)
    if clip is not None:
        y = jnp.clip(y, -clip, clip)
    return y
