"""The training loop: ``make_train(config) -> train(key, hp)``, pure and jit-compiled.

Read top to bottom::

    init(key, hp)                 -> TrainState
    update(state, hp)             -> (state, metrics)     # rollout → GAE → epochs × minibatches
    run(state, hp, num_updates)   -> (state, metrics)     # lax.scan of update
    train(key, hp)                -> (state, metrics)     # init + run over the whole budget

``jax.vmap(trainer)(keys)`` trains many seeds in one compile; ``jax.vmap(trainer)(keys, hps)``
with batched :class:`~prpo.config.Hyperparams` leaves sweeps hyperparameters too. Metrics are
scalars per update (reduced on device), so their size is ``num_updates``, never
``num_envs × num_steps``.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

from prpo import envs as envs_lib
from prpo import normalization as norm
from prpo.advantages import gae, normalize
from prpo.config import Config, ConfigError, Hyperparams
from prpo.networks import make_actor_critic
from prpo.policies import CategoricalPolicy, GaussianPolicy
from prpo.rollout import collect
from prpo.update import SURROGATES, Batch, make_loss, make_optimizer, sgd_epochs

__all__ = ["TrainState", "Trainer", "make_train", "make_policy", "check_env", "evaluate", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """Raised by drivers when a run produced a non-finite loss (see ``TrainState.nonfinite_update``)."""


@flax.struct.dataclass
class TrainState:
    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    obs_rms: norm.RunningMeanStd
    reward_scaler: norm.RewardScaler
    key: jax.Array
    update: jax.Array  # number of updates done (int32)
    last_return: jax.Array  # mean return of the most recent update with finished episodes
    nonfinite_update: jax.Array  # index of the first update with a non-finite loss, -1 if none
    prox_params: Any = None  # PPO-EWMA: the proximal policy's parameters (EWMA of params)


def make_policy(cfg: Config, spec: envs_lib.EnvSpec, network=None):
    """The default policy family for ``spec``'s action space (``network`` injectable)."""
    discrete = isinstance(spec.action_space, envs_lib.Discrete)
    kind = _policy_kind(cfg, spec)
    if kind in ("flow", "diffusion", "policyflow"):
        return _generative_policy(cfg, spec, kind, network)
    if network is None:
        action_dim = spec.action_space.n if discrete else int(jnp.prod(jnp.asarray(spec.action_space.shape)))
        network = make_actor_critic(
            action_dim=action_dim,
            discrete=discrete,
            obs_ndim=len(spec.obs_shape),
            actor_hidden=cfg.actor_hidden,
            critic_hidden=cfg.critic_hidden,
            activation=cfg.activation,
            shared_trunk=cfg.shared_trunk,
            log_std_init=cfg.log_std_init,
            median_head=cfg.objective == "bpo",
        )
    family = CategoricalPolicy if kind == "categorical" else GaussianPolicy
    return family(network, keep_dist=cfg.kl_schedule != "none")


def _generative_policy(cfg: Config, spec: envs_lib.EnvSpec, kind: str, network=None):
    """Flow (FPO), PolicyFlow or diffusion (DPPO) family over a continuous action space."""
    from prpo import diffusion, flow

    action_dim = int(jnp.prod(jnp.asarray(spec.action_space.shape)))
    obs_ndim = len(spec.obs_shape)
    critic_hidden = cfg.critic_hidden if cfg.critic_hidden is not None else cfg.actor_hidden
    if kind == "diffusion":
        policy = diffusion.make_diffusion_policy(cfg, action_dim, obs_ndim, spec.action_space.low, spec.action_space.high)
        return policy if network is None else dataclasses.replace(policy, denoiser=network)
    if network is None:
        network = flow.make_velocity_network(
            action_dim, obs_ndim, cfg.actor_hidden, critic_hidden, cfg.activation,
            learn_std=kind == "policyflow", log_std_init=cfg.log_std_init,
        )
    if kind == "flow":
        return flow.FlowPolicy(network, action_dim, cfg.flow_steps, cfg.n_mc, cfg.fpo_loss, cfg.fpo_ratio)
    return flow.PolicyFlowPolicy(network, action_dim, cfg.flow_steps, cfg.n_mc, cfg.brownian_ref)


def _env_options(cfg: Config) -> dict:
    opts = {}
    if cfg.env_backend is not None:
        opts["backend"] = cfg.env_backend
    if envs_lib.env_family(cfg.env) == "brax":
        opts["auto_reset"] = cfg.brax_reset
    if cfg.episode_length is not None:
        opts["max_episode_steps"] = cfg.episode_length
    return opts


def check_env(cfg: Config) -> envs_lib.EnvSpec:
    """Validate the env options of ``cfg`` and the policy's fit to its action space; return the spec."""
    try:
        if cfg.env_backend is not None and envs_lib.env_family(cfg.env) != "brax":
            raise ConfigError(f"env_backend={cfg.env_backend!r} applies to brax envs only; env {cfg.env!r} is a gymnax env")
        spec = envs_lib.env_spec(cfg.env, **_env_options(cfg))
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _policy_kind(cfg, spec)
    return spec


def _policy_kind(cfg: Config, spec: envs_lib.EnvSpec) -> str:
    discrete = isinstance(spec.action_space, envs_lib.Discrete)
    if cfg.policy != "auto":
        if discrete:
            raise ConfigError(
                f"policy={cfg.policy!r} needs a continuous action space, but env {spec.name!r} is discrete "
                f"({spec.action_space.n} actions); allowed here: 'auto'"
            )
        return cfg.policy
    kind = cfg.distribution
    if kind == "auto":
        kind = "categorical" if discrete else "gaussian"
    if kind == "categorical" and not discrete:
        raise ConfigError(
            f"distribution='categorical' needs a discrete action space, but env {spec.name!r} has a continuous "
            f"one (Box{spec.action_space.shape}); allowed here: 'auto', 'gaussian'"
        )
    if kind == "gaussian" and discrete:
        raise ConfigError(
            f"distribution='gaussian' needs a continuous action space, but env {spec.name!r} is discrete "
            f"({spec.action_space.n} actions); allowed here: 'auto', 'categorical'"
        )
    return kind


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The pure functions of one configured run; calling it is ``train(key, hp)``."""

    config: Config
    env: Any
    policy: Any
    init: Callable
    update: Callable
    run: Callable
    train: Callable

    def __call__(self, key, hp: Hyperparams | None = None):
        return self.train(key, self.config.hp if hp is None else hp)

    @property
    def num_updates(self) -> int:
        return self.config.num_updates


def make_train(cfg: Config, policy=None, network=None, surrogate=None, init_params=None) -> Trainer:
    """Build the pure training functions for ``cfg`` (validated here, before any compile).

    ``policy``: a policy family (see :mod:`prpo.policies`); ``network``: a Flax module for the
    default family. Both default from the config and the env's action space. ``surrogate``:
    any ``f(log_ratio, adv, hp) -> (per-sample loss, diagnostics)``; defaults to
    ``SURROGATES[cfg.objective]``. ``init_params``: start from these parameters instead of
    ``policy.init`` (e.g. a pretrained denoiser for DPPO fine-tuning,
    :func:`prpo.diffusion.finetune_params`).
    """
    from prpo import algorithms

    algorithms.get(cfg.algo)  # a known algorithm name (its own checks run in Algorithm.config)
    spec = check_env(cfg)
    env = envs_lib.make_env(cfg.env, cfg.num_envs, **_env_options(cfg))
    if policy is None:
        policy = make_policy(cfg, spec, network)
    if surrogate is None:
        surrogate = SURROGATES[cfg.objective]
    num_updates = cfg.num_updates
    loss_fn = make_loss(cfg, policy, surrogate)

    if isinstance(spec.action_space, envs_lib.Box):
        low = jnp.asarray(spec.action_space.low, jnp.float32)
        high = jnp.asarray(spec.action_space.high, jnp.float32)
        action_transform = lambda a: jnp.clip(a, low, high)  # noqa: E731
    else:
        action_transform = lambda a: a  # noqa: E731

    def obs_transform(obs_rms):
        if not cfg.normalize_obs:
            return lambda o: o
        return partial(norm.rms_normalize, obs_rms, clip=cfg.obs_clip)

    def init(key, hp: Hyperparams) -> TrainState:
        k_params, k_env, k_state = jax.random.split(key, 3)
        env_state, obs = env.reset(k_env)
        params = policy.init(k_params, obs) if init_params is None else init_params
        opt_state = make_optimizer(cfg, hp, num_updates).init(params)
        return TrainState(
            params=params,
            opt_state=opt_state,
            env_state=env_state,
            obs=obs,
            obs_rms=norm.rms_init(spec.obs_shape),
            reward_scaler=norm.reward_scaler_init(cfg.num_envs),
            key=k_state,
            update=jnp.zeros((), jnp.int32),
            last_return=jnp.full((), jnp.nan, jnp.float32),
            nonfinite_update=jnp.full((), -1, jnp.int32),
            prox_params=params if cfg.objective == "decoupled" else None,
        )

    def update(state: TrainState, hp: Hyperparams):
        key, k_roll, k_sgd = jax.random.split(state.key, 3)
        to_input = obs_transform(state.obs_rms)  # frozen for the rollout and this update

        # 1. rollout
        env_state, last_obs, traj, ep_stats = collect(
            env, policy, state.params, state.env_state, state.obs, k_roll, cfg.num_steps,
            to_input, action_transform, cfg.bootstrap_truncation, cfg.truncation_value, cfg.scan_unroll,
        )

        # 2. advantages: V(s'_t) is V(s_{t+1}), or V(final obs) where the episode was truncated
        values = traj.aux["value"]
        last_value = policy.value(state.params, to_input(last_obs))
        next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)
        next_values = jnp.where(traj.truncated, traj.bootstrap_value, next_values)
        rewards, scaler = traj.reward, state.reward_scaler
        if cfg.normalize_reward:
            done = jnp.logical_or(traj.terminated, traj.truncated)
            scaler = norm.reward_scaler_update(scaler, rewards, done, hp.gamma)
            rewards = norm.scale_rewards(scaler, rewards, clip=cfg.reward_clip)
        advantages, returns = gae(
            rewards, values, next_values, traj.terminated, traj.truncated, hp.gamma, hp.gae_lambda, unroll=cfg.scan_unroll
        )
        if cfg.adv_norm == "batch":
            advantages = normalize(advantages)

        # 3. epochs × shuffled minibatches
        flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
        batch = Batch(
            obs=flat(to_input(traj.obs)),
            action=flat(traj.action),
            aux=jax.tree.map(flat, traj.aux),
            advantages=flat(advantages),
            returns=flat(returns),
        )
        if cfg.objective == "decoupled":  # log π_prox of the batch, fixed during this update
            _, prox = policy.log_ratio(state.prox_params, batch.obs, batch.action, batch.aux, None)
            batch = batch.replace(aux={**batch.aux, "log_prob_prox": jax.lax.stop_gradient(prox["log_prob"])})
        tx = make_optimizer(cfg, hp, num_updates)
        progress = state.update / num_updates  # (k − 1)/K for iteration k = 1..K
        params, opt_state, metrics = sgd_epochs(cfg, loss_fn, tx, state.params, state.opt_state, batch, hp, k_sgd, progress)

        # 4. learner-side statistics and the non-finite guard
        obs_rms = norm.rms_update(state.obs_rms, traj.obs, axis=(0, 1)) if cfg.normalize_obs else state.obs_rms
        finite = jnp.isfinite(metrics["loss"]) & jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)])
        )
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        nonfinite = jnp.where((state.nonfinite_update < 0) & ~finite, state.update, state.nonfinite_update)

        ep = ep_stats.summary()
        last_return = jnp.where(ep["episodes"] > 0, ep["episode_return_mean"], state.last_return)
        metrics.update(ep)
        metrics["last_return"] = last_return
        metrics["update"] = state.update + 1
        lr_scale = (1.0 - state.update / num_updates) if cfg.anneal_lr else 1.0
        metrics["lr"] = hp.lr * lr_scale
        new_state = TrainState(
            params=params,
            opt_state=opt_state,
            env_state=env_state,
            obs=last_obs,
            obs_rms=obs_rms,
            reward_scaler=scaler,
            key=key,
            update=state.update + 1,
            last_return=last_return,
            nonfinite_update=nonfinite,
            prox_params=None if state.prox_params is None else jax.tree.map(
                lambda p, q: hp.ewma_decay * p + (1.0 - hp.ewma_decay) * q, state.prox_params, params
            ),
        )
        return new_state, metrics

    def run(state: TrainState, hp: Hyperparams, num_updates_to_run: int):
        return jax.lax.scan(lambda s, _: update(s, hp), state, None, length=num_updates_to_run)

    def train(key, hp: Hyperparams):
        return run(init(key, hp), hp, num_updates)

    return Trainer(config=cfg, env=env, policy=policy, init=init, update=update, run=run, train=train)


def evaluate(trainer: Trainer, state: TrainState, key, num_episodes: int | None = None, deterministic: bool = True):
    """Return the mean return of one episode per env of a fresh batch, with frozen statistics.

    Runs ``max_episode_steps`` steps of ``trainer.env`` (its ``num_envs`` envs) with the mode
    action (``deterministic``) or a sample, observation normalisation frozen at ``state.obs_rms``,
    and averages the first finished episode of every env. Pure; jit it if called often.
    """
    cfg, env, policy = trainer.config, trainer.env, trainer.policy
    del num_episodes  # one episode per env of the trainer's batch
    to_input = (lambda o: norm.rms_normalize(state.obs_rms, o, clip=cfg.obs_clip)) if cfg.normalize_obs else (lambda o: o)
    spec = env.spec
    if isinstance(spec.action_space, envs_lib.Box):
        low, high = jnp.asarray(spec.action_space.low), jnp.asarray(spec.action_space.high)
        clip = lambda a: jnp.clip(a, low, high)  # noqa: E731
    else:
        clip = lambda a: a  # noqa: E731
    k_reset, k_run = jax.random.split(key)
    env_state, obs = env.reset(k_reset)

    def step(carry, k):
        env_state, obs, done_before, returns = carry
        k_act, k_env = jax.random.split(k)
        x = to_input(obs)
        action = policy.mode(state.params, x) if deterministic else policy.act(state.params, x, k_act)[0]
        env_state, ts = env.step(env_state, clip(action), k_env)
        done = jnp.logical_or(ts.terminated, ts.truncated)
        returns = jnp.where(done & ~done_before, ts.episode_return, returns)
        return (env_state, ts.obs, done_before | done, returns), None

    init = (env_state, obs, jnp.zeros(cfg.num_envs, bool), jnp.zeros(cfg.num_envs, jnp.float32))
    (_, _, finished, returns), _ = jax.lax.scan(step, init, jax.random.split(k_run, spec.max_episode_steps))
    return returns.sum() / jnp.maximum(finished.sum(), 1)
