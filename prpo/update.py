"""The generic on-policy update step: epochs × shuffled minibatches of a surrogate loss.

``loss = mean surrogate(log_ratio, A, hp) + c_v · mean value_loss − c_e · mean entropy``

Everything algorithm-specific enters as a function: the surrogate (a clipped ratio, a
plain policy gradient, ...) and the policy family's ``log_ratio``. The step itself is the same
for every on-policy algorithm.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from prpo import objectives, registry, regularizers
from prpo.advantages import normalize

__all__ = ["Batch", "SURROGATES", "needs_context", "kl_coefficient", "make_optimizer", "lr_fraction",
           "schedule_fractions", "make_loss", "sgd_epochs"]


@flax.struct.dataclass
class Batch:
    """Flat training batch (leaves ``[B, ...]``)."""

    obs: jax.Array  # network inputs (already normalised)
    action: jax.Array
    aux: Any  # policy family's rollout record (holds "value")
    advantages: jax.Array
    returns: jax.Array


Surrogate = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, dict]]


def needs_context(fn):
    """Mark a surrogate as ``f(log_ratio, adv, hp, ctx)``: ``ctx`` holds the minibatch's
    ``returns``, ``old_value`` and ``aux`` and the policy family's extras (``value``,
    ``entropy``, ``log_prob``, ...) for objectives that need more than the advantage."""
    fn.needs_context = True
    return fn


#: Named surrogates ``f(log_ratio, adv, hp) -> (per-sample loss, diagnostics)`` (``Config.objective``);
#: the algorithm modules register theirs (:func:`prpo.registry.register_surrogate`). A function
#: added here by hand is a valid objective too.
SURROGATES = registry.SURROGATES


def make_optimizer(cfg, hp, num_updates: int, update=None) -> optax.GradientTransformation:
    """Gradient clip → Adam/RAdam/RMSprop → learning rate (linearly annealed per update if asked).

    Built inside the traced train function so that ``hp`` leaves may be tracers (sweeps).
    ``update``: the number of updates done (``TrainState.update``, int32); the learning rate of
    this update is then ``lr · (1 − update / num_updates)`` (:func:`lr_fraction`), computed from
    the update counter and not from optax's step count: that int32 count saturates at
    ``2^31 − 1`` optimizer steps (``num_updates × update_epochs × num_minibatches`` reaches it
    at about 10^12 env steps), which would freeze the annealing. Without ``update`` the rate
    follows optax's count (``count // (update_epochs × num_minibatches)`` updates done), for
    an optimizer built once and used over several updates.
    """
    steps_per_update = cfg.update_epochs * cfg.num_minibatches

    if update is not None:
        lr_now = hp.lr * lr_fraction(cfg, update, num_updates)
        lr_schedule = lambda count: lr_now  # noqa: E731 -- same state (a count) as the schedule below
    else:
        def lr_schedule(count):
            return hp.lr * lr_fraction(cfg, count // steps_per_update, num_updates)

    if cfg.optimizer == "adam":
        scale = optax.scale_by_adam(eps=hp.adam_eps)
    elif cfg.optimizer == "radam":  # rectified Adam
        scale = optax.scale_by_radam(eps=hp.adam_eps)
    else:  # RMSprop as in PyTorch: g / (sqrt(v) + eps)
        scale = optax.scale_by_rms(decay=hp.rms_decay, eps=hp.adam_eps, eps_in_sqrt=False)
    return optax.chain(
        optax.clip_by_global_norm(hp.max_grad_norm),
        scale,
        optax.scale_by_learning_rate(lr_schedule),
    )


def lr_fraction(cfg, update, num_updates: int):
    """The learning-rate factor of update ``update`` (0-based, int32): ``1 − update / num_updates``
    with ``cfg.anneal_lr``, else 1. In float32: absolute error below 2·10^-7 at any ``num_updates``
    up to ``2^31 − 1`` (a learning rate off by at most that fraction of ``lr``), and the same
    value, bit for bit, as the optax-count schedule of earlier versions."""
    if not cfg.anneal_lr:
        return 1.0
    return 1.0 - update / num_updates


def schedule_fractions(update, num_updates: int):
    """``(progress, remaining)`` of update ``update`` (0-based, int32) of ``num_updates``:
    ``update / num_updates`` and ``(num_updates − update) / num_updates`` in float32, each within
    two roundings of the exact value. ``remaining`` comes from the exact integer difference, so
    it stays accurate where ``1 − progress`` would round to 0 (``num_updates`` > 2^24)."""
    progress = update / num_updates
    remaining = (num_updates - update) / num_updates
    return progress, remaining


def kl_coefficient(cfg, hp, progress, remaining=None):
    """Weight of the KL(π‖π_k) term: 0, ``kl_coef``, or the mirror-descent ``kl_coef / t_k`` with
    ``t_k = 1 − (k − 1)/K`` (``progress`` = (k − 1)/K), which grows ≈ K× over training.
    ``remaining``: ``t_k`` itself (:func:`schedule_fractions`), used instead of ``1 − progress``,
    which in float32 rounds to 0 at the last updates of a run of more than 2^25 updates."""
    if cfg.kl_schedule == "none":
        return 0.0
    if cfg.kl_schedule == "constant":
        return hp.kl_coef
    return hp.kl_coef / ((1.0 - progress) if remaining is None else remaining)


def make_loss(cfg, policy, surrogate: Surrogate, axis_name=None):
    """``loss(params, batch, hp, key, progress) -> (loss, metrics)`` for one minibatch.

    ``progress`` is the fraction of updates done before this one (used by KL schedules).
    ``axis_name``: the minibatch is one device's shard (inside ``jax.shard_map``); per-minibatch
    advantage normalisation then uses the statistics of the global minibatch.
    A family's ``log_ratio`` may return several log-ratios per action (``[B, K]``); each is a
    sample of the surrogate, with the action's advantage broadcast. Optional ``extras`` keys:
    ``adv_weight`` (multiplies the advantages, broadcast against the log-ratio), ``clip_eps``
    (replaces ``hp.clip_eps``, e.g. a per-denoising-step clip schedule) and ``penalty`` (a
    per-sample loss term added as is). A family with ``needs_hp = True`` is passed ``hp=``.
    ``remaining`` (optional, ``1 − progress`` computed accurately; see :func:`schedule_fractions`)
    is passed by :func:`sgd_epochs` to losses marked ``takes_remaining``, as this one is.
    A surrogate's diagnostics may hold ``metrics``, a dict of quantities to log: each is averaged
    over the minibatch and logged under its own name (e.g. a share of the samples, a chosen bound).
    """

    def loss_fn(params, mb: Batch, hp, key, progress=0.0, remaining=None):
        if getattr(policy, "needs_hp", False):  # families with traced hyperparameters of their own
            log_ratio, extra = policy.log_ratio(params, mb.obs, mb.action, mb.aux, key, hp=hp)
        else:
            log_ratio, extra = policy.log_ratio(params, mb.obs, mb.action, mb.aux, key)
        adv = normalize(mb.advantages, axis_name=axis_name) if cfg.adv_norm == "minibatch" else mb.advantages
        # several ratios per action ([B, K]: denoising steps, per-pair flow ratios): each
        # is its own sample; the action's advantage is broadcast, optionally weighted per ratio
        # (extra["adv_weight"]) and clipped with a per-ratio ε (extra["clip_eps"])
        adv = adv.reshape(adv.shape + (1,) * (log_ratio.ndim - adv.ndim))
        if "adv_weight" in extra:
            adv = adv * extra["adv_weight"]
        if "clip_eps" in extra:
            hp = hp.replace(clip_eps=extra["clip_eps"])
        if getattr(surrogate, "needs_context", False):
            ctx = {**extra, "returns": mb.returns, "old_value": mb.aux["value"], "aux": mb.aux}
            pg_loss, sdiag = surrogate(log_ratio, adv, hp, ctx)
        else:
            pg_loss, sdiag = surrogate(log_ratio, adv, hp)
        if cfg.clip_value:
            v_loss = regularizers.clipped_value_loss(extra["value"], mb.aux["value"], mb.returns, hp.vf_clip_eps)
        else:
            v_loss = regularizers.value_loss(extra["value"], mb.returns)
        entropy = extra["entropy"]
        pg_loss, v_loss = pg_loss.mean(), v_loss.mean()
        loss = pg_loss + hp.vf_coef * v_loss + hp.ent_coef * regularizers.entropy_loss(entropy).mean()
        if cfg.kl_schedule != "none":
            kl_loss = regularizers.kl_penalty(extra["kl"], kl_coefficient(cfg, hp, progress, remaining)).mean()
            loss = loss + kl_loss
        if "penalty" in extra:  # a family's own regulariser, already weighted
            loss = loss + extra["penalty"].mean()
        diag = objectives.ratio_diagnostics(log_ratio, hp.clip_eps)
        metrics = {
            "loss": loss,
            "pg_loss": pg_loss,
            "value_loss": v_loss,
            "entropy": entropy.mean(),
            "approx_kl": diag["approx_kl"].mean(),
            "clip_frac": diag["clipped"].mean(),
            "ratio_dev_mean": diag["ratio_dev"].mean(),
            "ratio_dev_max": diag["ratio_dev"].max(),
        }
        if cfg.kl_schedule != "none":
            metrics["kl_old"] = extra["kl"].mean()
        if "penalty" in extra:
            metrics["penalty"] = extra["penalty"].mean()
        for name, value in (sdiag or {}).get("metrics", {}).items():  # a surrogate's own logged quantities
            metrics[name] = jnp.mean(value)
        return loss, metrics

    loss_fn.takes_remaining = True
    return loss_fn


def sgd_epochs(cfg, loss_fn, tx: optax.GradientTransformation, params, opt_state, batch: Batch, hp, key, progress=0.0,
               axis_name=None, remaining=None):
    """``update_epochs`` passes of shuffled minibatch SGD over ``batch``.

    Returns ``(params, opt_state, metrics)`` with metrics averaged over all minibatch steps
    (``ratio_dev_max`` is the maximum). ``batch`` is time-major flat (``[T·N, ...]``); any loss
    ``loss_fn(params, minibatch, hp, key, progress) -> (loss, metrics)`` fits; a loss marked
    ``takes_remaining`` (:func:`make_loss`'s) is also passed ``remaining=`` when it is given.

    Data parallelism (``axis_name`` set, inside ``jax.shard_map``): ``batch`` is this device's
    shard (its own envs) and ``params`` are the same on every device. Each device forms
    ``num_minibatches`` local minibatches with the same key, the global minibatch is the union
    of the local ones, and the gradient is the mean of the local mean-gradients
    (``lax.pmean``: equal shard sizes, so this is the global minibatch's mean gradient), so
    parameters stay identical on all devices. Metrics are averaged over devices too.
    ``shuffle="stratified"`` partitions the samples the same way on any number of devices;
    ``"samples"``/``"envs"`` permute within each device (same distribution, other minibatches).
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    schedule = {"remaining": remaining} if remaining is not None and getattr(loss_fn, "takes_remaining", False) else {}
    n_mb = cfg.num_minibatches
    local_size = jax.tree.leaves(batch)[0].shape[0]  # T·N on this device
    size = local_size // n_mb

    def minibatch_step(carry, inputs):
        params, opt_state = carry
        mb, k = inputs
        (_, metrics), grads = grad_fn(params, mb, hp, k, progress, **schedule)
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        return (params, opt_state), metrics

    def epoch(carry, k):
        k_perm, k_loss = jax.random.split(k)
        if cfg.shuffle == "samples":  # a permutation of all T·N samples
            perm = jax.random.permutation(k_perm, n_mb * size)
            shuffled = jax.tree.map(lambda x: jnp.take(x, perm, axis=0).reshape((n_mb, size) + x.shape[1:]), batch)
        elif cfg.shuffle == "stratified":
            shuffled = jax.tree.map(_stratified(k_perm, local_size // cfg.num_steps, cfg.num_steps, n_mb, axis_name), batch)
        else:  # "envs": a permutation of the N env trajectories, each minibatch whole trajectories
            n_envs = local_size // cfg.num_steps
            perm = jax.random.permutation(k_perm, n_envs)

            def split(x):
                x = x.reshape((-1, n_envs) + x.shape[1:])  # [T, N, ...] (the batch is time-major)
                x = jnp.take(x, perm, axis=1).reshape((x.shape[0], n_mb, n_envs // n_mb) + x.shape[2:])
                return jnp.swapaxes(x, 0, 1).reshape((n_mb, size) + x.shape[3:])

            shuffled = jax.tree.map(split, batch)
        return jax.lax.scan(minibatch_step, carry, (shuffled, jax.random.split(k_loss, n_mb)))

    (params, opt_state), metrics = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, cfg.update_epochs))
    reduced = {k: (v.max() if k == "ratio_dev_max" else v.mean()) for k, v in metrics.items()}
    if axis_name is not None:
        reduced = {k: (jax.lax.pmax(v, axis_name) if k == "ratio_dev_max" else jax.lax.pmean(v, axis_name))
                   for k, v in reduced.items()}
    return params, opt_state, reduced


def _stratified(key, n_envs: int, num_steps: int, n_mb: int, axis_name=None):
    """Stratified minibatches that do not depend on how the envs are split over devices.

    The samples in env-major order (env ``i``'s steps ``0..T-1``, then env ``i+1``'s) are cut
    into groups of ``n_mb`` consecutive samples; every group deals one sample to each minibatch
    by its own random permutation, keyed by the group's global index. A device owning a
    contiguous block of envs owns whole groups, so the global minibatches are the same on 1
    or D devices. Returns ``x [T·N, ...] -> [n_mb, T·N / n_mb, ...]``.
    """
    n_groups = n_envs * num_steps // n_mb
    first = 0 if axis_name is None else jax.lax.axis_index(axis_name) * n_groups
    group_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, first + jnp.arange(n_groups))
    perms = jax.vmap(lambda k: jax.random.permutation(k, n_mb))(group_keys)  # [G, n_mb]

    def split(x):
        x = x.reshape((num_steps, n_envs) + x.shape[1:])
        x = jnp.swapaxes(x, 0, 1).reshape((n_groups, n_mb) + x.shape[2:])  # env-major groups
        idx = perms.reshape(perms.shape + (1,) * (x.ndim - 2))
        x = jnp.take_along_axis(x, idx, axis=1)
        return jnp.swapaxes(x, 0, 1)  # [n_mb, G, ...]

    return split
