"""Learner-side observation / reward normalisation.

All state is a small pytree meant to live inside the train state; every
function is pure and works unchanged under ``jax.vmap`` (e.g. over seeds).

* :class:`RunningMeanStd` -- running mean / variance, merged with each batch's
  moments by Chan et al.'s parallel algorithm (initial count ``1e-4`` as in
  gym's ``RunningMeanStd``).
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
    mean: Array
    var: Array
    count: Array  # float32 scalar


def rms_init(shape: int | Sequence[int] = ()) -> RunningMeanStd:
    """Mean 0, variance 1, count 1e-4 (like gym's RunningMeanStd)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return RunningMeanStd(
        mean=jnp.zeros(shape, jnp.float32),
        var=jnp.ones(shape, jnp.float32),
        count=jnp.asarray(1e-4, jnp.float32),
    )


def _combine(rms: RunningMeanStd, b_mean: Array, b_var: Array, b_count) -> RunningMeanStd:
    b_count = jnp.asarray(b_count, jnp.float32)
    tot = rms.count + b_count
    w = b_count / tot
    delta = b_mean - rms.mean
    mean = rms.mean + delta * w
    # M2 / tot = var_a * (1 - w) + var_b * w + delta^2 * (1 - w) * w
    var = rms.var * (1.0 - w) + b_var * w + jnp.square(delta) * (1.0 - w) * w
    return RunningMeanStd(mean=mean, var=var, count=tot)


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
        count = count * jax.lax.psum(1, axis_name)
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
