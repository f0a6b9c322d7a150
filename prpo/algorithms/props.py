"""PROPS (Corrado & Hanna, "On-Policy Policy Gradient Reinforcement Learning Without On-Policy
Sampling", arXiv 2311.08290): Proximal Robust On-Policy Sampling. PPO updates the target policy
π_θ; the data come from an adaptive behaviour policy π_φ that over-samples the actions the data
collected so far have under-sampled relative to π_θ, so that the batch as a whole looks more like
π_θ's expected data than i.i.d. on-policy sampling (lower *sampling error*).

Behaviour update, every ``props_num_steps`` = m rollout steps (the paper updates the behaviour
policy during collection, every m steps): φ ← θ, then ``props_epochs`` × ``props_minibatches``
Adam steps (rate ``props_lr``; PPO's ``max_grad_norm`` and ``adam_eps``) minimising, over the
data D collected so far in this rollout,

    L(φ) = mean_D max(r, clip(r, 1 − ε_b, 1 + ε_b)) + λ · mean_D KL(π_θ(·|s) ‖ π_φ(·|s)),
    r = π_φ(a|s) / π_θ(a|s)

— PPO's clipped surrogate with every advantage −1: it lowers the probability of the actions
already sampled and stops where r < 1 − ε_b (ε_b = ``props_clip``; λ = ``props_kl``) — and stopping
after the first step whose minibatch has KL(π_θ‖π_φ) > δ (``props_target_kl``; 0: never). The next
m steps are collected with π_φ (the first m with φ = θ: there are no data yet). The rollout
records log π_θ(a|s) and V_θ(s) (and π_θ with a KL schedule), so the PPO update on the target
treats the batch as on-policy data, as the paper does (no importance weights π_θ/π_φ).

Data reuse: the paper keeps the last b batches; here b = 1, the current rollout (the default of
the authors' code). b > 1 needs a training batch larger than one rollout: not done.

Logged (per update): ``props_sampling_error`` (below), ``props_behaviour_kl`` (mean over the
behaviour updates of the final KL(π_θ‖π_φ) on their data) and ``props_steps`` (mean Adam steps a
behaviour update took; fewer than epochs × minibatches when the KL stop fired). With
``props_num_steps = num_steps`` there is no behaviour update and this is PPO exactly (tested),
as it is with ``props_lr = 0`` (then only the rollout's random keys are split per chunk).

Sampling error: the paper measures KL(π_D ‖ π_θ) over the batch's states, π_D the
maximum-likelihood policy of the batch. Here (cheap, in the loop) π_D is restricted to π_θ with a
state-independent correction — a logit bias for a categorical policy, a mean shift and log-std
scale of the standardised action z = (a − μ_θ(s))/σ_θ(s) for a Gaussian — and the KL is its
second-order (score-test) value ½ ḡᵀ F̄⁻¹ ḡ, ḡ the mean score at π_θ and F̄ the mean Fisher
information: categorical ḡ = mean(e_a − π_θ(·|s)), F̄ = mean(diag π − π πᵀ) (last action
dropped); Gaussian ½ Σ_d [mean(z_d)² + ½ mean(z_d² − 1)²]. Under on-policy sampling its
expectation is k / (2B) (k = A − 1, resp. 2·dims; B = batch size). A proxy of the paper's
neural-network fit: UNVERIFIED as a stand-in for its numbers.

Defaults (the authors' code; the paper's hyperparameter tables were not checked): m = 16 steps
(the code counts single-env steps: with N envs one rollout step here is N transitions, UNVERIFIED
mapping), 16 epochs × 4 minibatches, lr 1e-3, ε_b = 0.3, δ = 0.03 (the code: 0.01 discrete, 0.1
continuous; UNVERIFIED), λ = 0.1 (the paper's KL regulariser; the code sets 0; UNVERIFIED).
Continuous kinds: 16 minibatches and δ = 0.1 (the code's continuous defaults); brax m = 5.
Adam restarts with each behaviour update (φ is reset to θ each time; the code keeps its Adam
moments across updates). On a sharded run each device fits φ to its own envs' data.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from prpo.algorithm import Algorithm, register
from prpo.config import ConfigError
from prpo.distributions import Categorical, DiagGaussian
from prpo.registry import hyperparameter, static
from prpo.rollout import collect_with
from prpo.update import make_loss as actor_critic_loss

__all__ = ["PROPS", "props_loss", "fit_behaviour", "BehaviourPolicy", "props_collect", "sampling_error", "METRICS"]

#: per-update metrics (each rides in the rollout's aux as a [T, N] constant and is logged by the loss)
METRICS = ("props_sampling_error", "props_behaviour_kl", "props_steps")


def props_loss(dist_phi, dist_theta, log_prob_theta, action, weight, clip, kl_coef):
    """``(L(φ), KL)``: weighted means over the samples (weight 0: a sample not collected yet).

    ``dist_phi``/``dist_theta``: π_φ and π_θ at the samples' states; ``log_prob_theta``: log π_θ(a|s)."""
    r = jnp.exp(dist_phi.log_prob(action) - log_prob_theta)
    surrogate = jnp.maximum(r, jnp.clip(r, 1.0 - clip, 1.0 + clip))
    n = jnp.maximum(weight.sum(), 1.0)
    kl = (weight * dist_theta.kl(dist_phi)).sum() / n
    return (weight * surrogate).sum() / n + kl_coef * kl, kl


def _per_sample(dist, batch: int):
    """Broadcast a distribution's leaves to ``[batch, event]`` (a Gaussian's log-std may be shared)."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (batch,) + x.shape[-1:]), dist)


def fit_behaviour(policy, params, obs, action, weight, hp, epochs: int, minibatches: int, key):
    """φ ← θ (``params``), then ``epochs`` × ``minibatches`` Adam steps on :func:`props_loss` over
    ``(obs, action)`` [B, ...] with per-sample ``weight`` [B]; returns ``(φ, {"kl", "steps"})``.

    A minibatch without weight takes no step; after the first step whose minibatch KL exceeded
    ``hp.props_target_kl`` (when > 0) no more steps are taken."""
    b = weight.shape[0]
    if b % minibatches:
        raise ConfigError(f"props_minibatches={minibatches} must divide the rollout batch of {b} samples "
                          "(per device); allowed: a divisor of it")
    dist_theta = jax.lax.stop_gradient(_per_sample(policy.distribution(params, obs)[0], b))
    log_prob_theta = dist_theta.log_prob(action)
    tx = optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), optax.scale_by_adam(eps=hp.adam_eps),
                     optax.scale_by_learning_rate(hp.props_lr))
    take = lambda tree, idx: jax.tree.map(lambda x: x[idx], tree)  # noqa: E731

    def loss_fn(phi, idx):
        dist_phi = policy.distribution(phi, obs[idx])[0]
        return props_loss(dist_phi, take(dist_theta, idx), log_prob_theta[idx], action[idx], weight[idx],
                          hp.props_clip, hp.props_kl)

    def step(carry, idx):
        phi, opt_state, stopped, steps = carry
        (_, kl), grads = jax.value_and_grad(loss_fn, has_aux=True)(phi, idx)
        apply = jnp.logical_and(~stopped, weight[idx].sum() > 0)
        updates, new_opt_state = tx.update(grads, opt_state, phi)
        keep = lambda new, old: jax.tree.map(lambda u, v: jnp.where(apply, u, v), new, old)  # noqa: E731
        phi, opt_state = keep(optax.apply_updates(phi, updates), phi), keep(new_opt_state, opt_state)
        stopped = stopped | (apply & (hp.props_target_kl > 0) & (kl > hp.props_target_kl))
        return (phi, opt_state, stopped, steps + apply.astype(jnp.int32)), None

    def epoch(carry, k):
        perm = jax.random.permutation(k, b).reshape(minibatches, b // minibatches)
        return jax.lax.scan(step, carry, perm)[0], None

    init = (params, tx.init(params), jnp.zeros((), bool), jnp.zeros((), jnp.int32))
    (phi, _, _, steps), _ = jax.lax.scan(epoch, init, jax.random.split(key, epochs))
    dist_phi = policy.distribution(phi, obs)[0]
    kl = (weight * dist_theta.kl(dist_phi)).sum() / jnp.maximum(weight.sum(), 1.0)
    return phi, {"kl": kl, "steps": steps.astype(jnp.float32)}


@dataclasses.dataclass(frozen=True)
class BehaviourPolicy:
    """Acts with π_φ (``behaviour_params``) and records the target's log π_θ(a|s) and V_θ(s) —
    ``params`` passed to ``act``/``value`` are θ — so the learner sees on-policy data."""

    target: Any
    behaviour_params: Any

    def act(self, params, obs, key):
        action = self.target.distribution(self.behaviour_params, obs)[0].sample(key)
        dist, value = self.target.distribution(params, obs)
        aux = {"log_prob": dist.log_prob(action), "value": value}
        if self.target.keep_dist:
            aux["dist"] = dist
        return action, aux

    def value(self, params, obs):
        return self.target.value(params, obs)

    def mode(self, params, obs):
        return self.target.mode(params, obs)


def sampling_error(dist, action):
    """The score-test sampling error of ``action`` [B, ...] under ``dist`` (π_θ at their states;
    see the module doc): categorical ½ ḡᵀ F̄⁻¹ ḡ, Gaussian ½ Σ_d [mean(z_d)² + ½ mean(z_d² − 1)²]."""
    if isinstance(dist, Categorical):
        p = jax.nn.softmax(dist.logits.reshape(-1, dist.logits.shape[-1]).astype(jnp.float32), axis=-1)
        k = p.shape[-1] - 1
        if k == 0:
            return jnp.zeros((), jnp.float32)
        g = (jax.nn.one_hot(action.reshape(-1), k + 1) - p).mean(0)[:k]
        q = p[:, :k]
        fisher = jnp.mean(q[:, :, None] * (jnp.eye(k) - q[:, None, :]), axis=0)
        return 0.5 * g @ jnp.linalg.solve(fisher + 1e-8 * jnp.eye(k), g)
    if isinstance(dist, DiagGaussian):
        z = (action - dist.mean) * jnp.exp(-dist.log_std)
        z = z.reshape(-1, z.shape[-1])
        return 0.5 * (jnp.sum(z.mean(0) ** 2) + 0.5 * jnp.sum(jnp.mean(z**2 - 1.0, axis=0) ** 2))
    raise ConfigError(f"props measures the sampling error of categorical or Gaussian policies, not {type(dist).__name__}")


def props_collect(ctx, behaviour, params, env_state, obs, key):
    """The rollout: ``num_steps / props_num_steps`` chunks, each collected with a behaviour policy
    fitted (:func:`fit_behaviour`) to the chunks before it; chunk c uses key ``split(key, C)[c]``
    (one chunk: ``key`` itself, PPO's rollout). Adds the :data:`METRICS` to ``traj.aux``."""
    cfg, hp, target = ctx.cfg, ctx.hp, behaviour
    steps, m = cfg.num_steps, cfg.props_num_steps
    chunks = steps // m
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731  [T, N, ...] -> [T·N, ...]
    if chunks == 1:  # no data to correct before the rollout ends: π_φ = π_θ throughout
        env_state, last_obs, traj, stats = collect_with(ctx, target, params, env_state, obs, key)
        fit = {"kl": jnp.zeros((), jnp.float32), "steps": jnp.zeros((), jnp.float32)}
    else:
        x0 = ctx.obs_transform(obs)
        action0 = jax.eval_shape(lambda: target.act(params, x0, key)[0])
        n = x0.shape[0]
        buf_x = jnp.zeros((steps,) + x0.shape, x0.dtype)
        buf_a = jnp.zeros((steps,) + action0.shape, action0.dtype)
        t = jnp.arange(steps)

        def chunk(carry, inputs):
            env_state, obs, buf_x, buf_a = carry
            c, k = inputs
            weight = jnp.broadcast_to((t < c * m)[:, None], (steps, n)).reshape(-1).astype(jnp.float32)
            phi, fit = jax.lax.cond(
                c > 0,
                lambda: fit_behaviour(target, params, flat(buf_x), flat(buf_a), weight, hp, cfg.props_epochs,
                                      cfg.props_minibatches, jax.random.fold_in(k, 1)),
                lambda: (params, {"kl": jnp.zeros((), jnp.float32), "steps": jnp.zeros((), jnp.float32)}),
            )
            env_state, obs, traj, stats = collect_with(ctx, BehaviourPolicy(target, phi), params, env_state, obs, k,
                                                       num_steps=m)
            buf_x = jax.lax.dynamic_update_slice_in_dim(buf_x, ctx.obs_transform(traj.obs), c * m, axis=0)
            buf_a = jax.lax.dynamic_update_slice_in_dim(buf_a, traj.action, c * m, axis=0)
            return (env_state, obs, buf_x, buf_a), (traj, stats, fit)

        (env_state, last_obs, _, _), (trajs, stats, fits) = jax.lax.scan(
            chunk, (env_state, obs, buf_x, buf_a), (jnp.arange(chunks), jax.random.split(key, chunks)))
        traj = jax.tree.map(lambda x: x.reshape((steps,) + x.shape[2:]), trajs)
        stats = jax.tree.map(lambda x: x.sum(0), stats)
        fit = {name: v[1:].mean() for name, v in fits.items()}  # the behaviour updates (chunk 0 acts with θ)
    dist = target.distribution(params, flat(ctx.obs_transform(traj.obs)))[0]
    values = {"props_sampling_error": sampling_error(dist, flat(traj.action)),
              "props_behaviour_kl": fit["kl"], "props_steps": fit["steps"]}
    extra = {name: jnp.full(traj.reward.shape, v, jnp.float32) for name, v in values.items()}
    return env_state, last_obs, traj.replace(aux={**traj.aux, **extra}), stats


def make_props_loss(cfg, policy, surrogate, axis_name=None):
    """PPO's loss (:func:`prpo.update.make_loss`), also logging the :data:`METRICS` from the batch."""
    inner = actor_critic_loss(cfg, policy, surrogate, axis_name=axis_name)

    def loss_fn(params, mb, hp, key, progress=0.0, remaining=None):
        loss, metrics = inner(params, mb, hp, key, progress, remaining)
        return loss, {**metrics, **{name: mb.aux[name].mean() for name in METRICS}}

    loss_fn.takes_remaining = True
    return loss_fn


def _check(cfg):
    if cfg.num_steps % cfg.props_num_steps:
        divisors = [d for d in range(1, cfg.num_steps + 1) if cfg.num_steps % d == 0]
        shown = ", ".join(map(str, divisors[:12])) + (", ..." if len(divisors) > 12 else "")
        raise ConfigError(f"props_num_steps={cfg.props_num_steps} must divide num_steps={cfg.num_steps}; "
                          f"allowed: {shown}")
    if cfg.batch_size % cfg.props_minibatches:
        raise ConfigError(f"props_minibatches={cfg.props_minibatches} must divide num_envs × num_steps = "
                          f"{cfg.batch_size}; allowed: a divisor of it")


def _positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


PROPS = register(Algorithm(
    name="props",
    description="PROPS: PPO on data from an adaptive behaviour policy that over-samples under-sampled actions",
    family_overrides={
        "classic-continuous": dict(props_minibatches=16, props_target_kl=0.1),
        "brax": dict(props_num_steps=5, props_minibatches=16, props_target_kl=0.1),
    },
    options={
        "props_num_steps": static(16, "PROPS: rollout steps between behaviour updates (divides num_steps; "
                                      "= num_steps: PPO)", type=int, check=_positive_int,
                                  allowed="an integer >= 1 dividing num_steps"),
        "props_epochs": static(16, "PROPS: passes over the data per behaviour update (0: PPO)", type=int,
                               check=lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                               allowed="an integer >= 0"),
        "props_minibatches": static(4, "PROPS: minibatches per behaviour pass (over the whole rollout buffer)",
                                    type=int, check=_positive_int, allowed="an integer >= 1"),
        "props_lr": hyperparameter(1e-3, "PROPS: behaviour Adam learning rate (0: PPO)", lambda v: v >= 0, ">= 0"),
        "props_clip": hyperparameter(0.3, "PROPS: ε_b of the behaviour's clipped ratio", lambda v: 0 < v < 1,
                                     "in (0, 1)"),
        "props_kl": hyperparameter(0.1, "PROPS: λ, weight of KL(π_θ‖π_φ) in the behaviour loss (UNVERIFIED)",
                                   lambda v: v >= 0, ">= 0"),
        "props_target_kl": hyperparameter(0.03, "PROPS: stop a behaviour update once KL(π_θ‖π_φ) > this "
                                                "(0: never; UNVERIFIED)", lambda v: v >= 0, ">= 0"),
    },
    policies=("auto",),  # the categorical / Gaussian actor-critic (the behaviour fit needs its distribution)
    check_config=_check,
    make_loss=make_props_loss,
    collect=props_collect,
))
