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
from prpo.advantages import gae, lambda_returns, normalize
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
    eval_return: Any = None  # latest in-loop evaluation return (Config.eval_every > 0), NaN before the first


def _value_based(cfg: Config) -> bool:
    from prpo import algorithms

    return algorithms.get(cfg.algo).value_based


def make_policy(cfg: Config, spec: envs_lib.EnvSpec, network=None):
    """The default policy family for ``spec``'s action space (``network`` injectable)."""
    discrete = isinstance(spec.action_space, envs_lib.Discrete)
    if _value_based(cfg):  # PQN: ε-greedy over a LayerNorm Q-network
        from prpo.qlearning import QPolicy, make_q_network

        if network is None:
            network = make_q_network(
                spec.action_space.n, spec.obs_shape, cfg.actor_hidden, cfg.q_torso, cfg.activation, cfg.q_layer_norm
            )
        return QPolicy(network)
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
        return flow.FlowPolicy(network, action_dim, cfg.flow_steps, cfg.n_mc, cfg.fpo_loss, cfg.fpo_ratio,
                               cfg.fpo_log_ratio_clamp)
    return flow.PolicyFlowPolicy(network, action_dim, cfg.flow_steps, cfg.n_mc, cfg.brownian_ref)


def _env_options(cfg: Config) -> dict:
    opts = {}
    if cfg.env_backend is not None:
        opts["backend"] = cfg.env_backend
    if envs_lib.env_family(cfg.env) in ("brax", "playground"):
        opts["auto_reset"] = cfg.brax_reset
    if cfg.episode_length is not None:
        opts["max_episode_steps"] = cfg.episode_length
    return opts


def check_env(cfg: Config) -> envs_lib.EnvSpec:
    """Validate the env options of ``cfg`` and the policy's fit to its action space; return the spec."""
    try:
        family = envs_lib.env_family(cfg.env)
        if cfg.env_backend is not None and family != "brax":
            raise ConfigError(f"env_backend={cfg.env_backend!r} applies to brax envs only; env {cfg.env!r} is a {family} env")
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
    mesh: Any = None  # the device mesh of a sharded trainer (prpo.parallel), else None

    def __call__(self, key, hp: Hyperparams | None = None):
        return self.train(key, self.config.hp if hp is None else hp)

    @property
    def num_updates(self) -> int:
        return self.config.num_updates


def make_train(
    cfg: Config, policy=None, network=None, surrogate=None, init_params=None, axis_name=None, num_shards: int = 1
) -> Trainer:
    """Build the pure training functions for ``cfg`` (validated here, before any compile).

    ``policy``: a policy family (see :mod:`prpo.policies`); ``network``: a Flax module for the
    default family. Both default from the config and the env's action space. ``surrogate``:
    any ``f(log_ratio, adv, hp) -> (per-sample loss, diagnostics)``; defaults to
    ``SURROGATES[cfg.objective]``. ``init_params``: start from these parameters instead of
    ``policy.init`` (e.g. a pretrained denoiser for DPPO fine-tuning,
    :func:`prpo.diffusion.finetune_params`).

    ``axis_name``/``num_shards``: build the *per-device* functions of a data-parallel run, to be
    called inside ``jax.shard_map`` over a mesh axis ``axis_name`` of ``num_shards`` devices
    (use :func:`prpo.parallel.make_sharded_train`, which does that). Each device then steps
    ``num_envs / num_shards`` envs with per-env keys, and gradients, normaliser statistics,
    episode statistics and metrics are combined over the axis.
    """
    from prpo import algorithms

    spec = algorithms.get(cfg.algo).check(cfg)  # env, action space and the algorithm's own checks
    if cfg.num_envs % num_shards:
        raise ConfigError(f"num_envs={cfg.num_envs} is not divisible by the {num_shards} devices of the data axis")
    n_local = cfg.num_envs // num_shards
    env = envs_lib.make_env(cfg.env, n_local, **_env_options(cfg))
    if policy is None:
        policy = make_policy(cfg, spec, network)
    value_based = _value_based(cfg)
    if surrogate is None:
        surrogate = SURROGATES[cfg.objective]
    num_updates = cfg.num_updates
    if value_based:
        from prpo.qlearning import linear_epsilon, make_td_loss

        loss_fn = make_td_loss(cfg, policy)
    else:
        loss_fn = make_loss(cfg, policy, surrogate, axis_name=axis_name)
    eval_env = None
    if cfg.eval_every:  # evaluation envs live on every device (each evaluates the same params)
        eval_env = envs_lib.make_env(cfg.env, cfg.eval_envs or cfg.num_envs, **_env_options(cfg))

    def env_ids():  # global indices of this device's envs (per-env keys), None on one device
        if axis_name is None:
            return None
        return jax.lax.axis_index(axis_name) * n_local + jnp.arange(n_local)

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
        ids = env_ids()
        env_state, obs = env.reset(k_env if ids is None else jax.vmap(jax.random.fold_in, (None, 0))(k_env, ids))
        params = policy.init(k_params, obs) if init_params is None else init_params
        opt_state = make_optimizer(cfg, hp, num_updates).init(params)
        return TrainState(
            params=params,
            opt_state=opt_state,
            env_state=env_state,
            obs=obs,
            obs_rms=norm.rms_init(spec.obs_shape),
            reward_scaler=norm.reward_scaler_init(n_local),
            key=k_state,
            update=jnp.zeros((), jnp.int32),
            last_return=jnp.full((), jnp.nan, jnp.float32),
            nonfinite_update=jnp.full((), -1, jnp.int32),
            prox_params=params if cfg.objective == "decoupled" else None,
            eval_return=jnp.full((), jnp.nan, jnp.float32) if cfg.eval_every else None,
        )

    def update(state: TrainState, hp: Hyperparams):
        key, k_roll, k_sgd = jax.random.split(state.key, 3)
        to_input = obs_transform(state.obs_rms)  # frozen for the rollout and this update
        behaviour = policy
        if value_based:  # ε-greedy with this update's ε
            epsilon = linear_epsilon(state.update, num_updates, hp.eps_start, hp.eps_finish, hp.eps_decay)
            behaviour = policy.behaviour(epsilon)

        # 1. rollout
        env_state, last_obs, traj, ep_stats = collect(
            env, behaviour, state.params, state.env_state, state.obs, k_roll, cfg.num_steps,
            to_input, action_transform, cfg.bootstrap_truncation, cfg.truncation_value, cfg.scan_unroll, env_ids(),
        )

        # 2. advantages: V(s'_t) is V(s_{t+1}), or V(final obs) where the episode was truncated
        #    (PQN: V = max_a Q at act time, so the returns below are the Q(λ) targets)
        values = traj.aux["value"]
        last_value = policy.value(state.params, to_input(last_obs))
        next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)
        next_values = jnp.where(traj.truncated, traj.bootstrap_value, next_values)
        rewards, scaler = traj.reward * hp.reward_scale, state.reward_scaler
        if cfg.normalize_reward:
            done = jnp.logical_or(traj.terminated, traj.truncated)
            scaler = norm.reward_scaler_update(scaler, rewards, done, hp.gamma, axis_name=axis_name)
            rewards = norm.scale_rewards(scaler, rewards, clip=cfg.reward_clip)
        if value_based:  # Q(λ) targets, fixed across the epochs of this update
            returns = lambda_returns(
                rewards, next_values, traj.terminated, traj.truncated, hp.gamma, hp.gae_lambda, unroll=cfg.scan_unroll
            )
            advantages = jnp.zeros_like(returns)
        else:
            advantages, returns = gae(
                rewards, values, next_values, traj.terminated, traj.truncated, hp.gamma, hp.gae_lambda,
                unroll=cfg.scan_unroll,
            )
        if cfg.adv_norm == "batch" and not value_based:
            advantages = normalize(advantages, axis_name=axis_name)

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
        params, opt_state, metrics = sgd_epochs(
            cfg, loss_fn, tx, state.params, state.opt_state, batch, hp, k_sgd, progress, axis_name=axis_name
        )

        # 4. learner-side statistics and the non-finite guard
        obs_rms = norm.rms_update(state.obs_rms, traj.obs, axis=(0, 1), axis_name=axis_name) if cfg.normalize_obs else state.obs_rms
        finite = jnp.isfinite(metrics["loss"]) & jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)])
        )
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        nonfinite = jnp.where((state.nonfinite_update < 0) & ~finite, state.update, state.nonfinite_update)

        if axis_name is not None:  # episodes of all devices' envs
            ep_stats = jax.tree.map(lambda x: jax.lax.psum(x, axis_name), ep_stats)
        ep = ep_stats.summary()
        last_return = jnp.where(ep["episodes"] > 0, ep["episode_return_mean"], state.last_return)
        metrics.update(ep)
        metrics["last_return"] = last_return
        metrics["update"] = state.update + 1
        lr_scale = (1.0 - state.update / num_updates) if cfg.anneal_lr else 1.0
        metrics["lr"] = hp.lr * lr_scale
        if value_based:
            metrics["epsilon"] = epsilon
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
            eval_return=state.eval_return,
        )
        if cfg.eval_every:
            metrics["eval_return"] = state.eval_return
        return new_state, metrics

    def evaluate_in_loop(state: TrainState) -> TrainState:
        key, k_eval = jax.random.split(state.key)
        ret = _greedy_return(cfg, eval_env, policy, state.params, state.obs_rms, k_eval)
        return state.replace(key=key, eval_return=ret)

    def run(state: TrainState, hp: Hyperparams, num_updates_to_run: int):
        """``num_updates_to_run`` updates; with ``eval_every`` = E, a greedy evaluation after every
        E-th update *of this call* (drivers call it with multiples of E), reported in the metric
        ``eval_return`` of that update and carried until the next evaluation."""
        scan_updates = lambda s, n: jax.lax.scan(lambda c, _: update(c, hp), s, None, length=n)  # noqa: E731
        every = cfg.eval_every
        if not every or num_updates_to_run < every:
            return scan_updates(state, num_updates_to_run)
        blocks, rest = divmod(num_updates_to_run, every)

        def block(s, _):
            s, m = scan_updates(s, every)
            s = evaluate_in_loop(s)
            m["eval_return"] = m["eval_return"].at[-1].set(s.eval_return)
            return s, m

        state, metrics = jax.lax.scan(block, state, None, length=blocks)
        metrics = jax.tree.map(lambda x: x.reshape((blocks * every,) + x.shape[2:]), metrics)
        if rest:
            state, tail = scan_updates(state, rest)
            metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), metrics, tail)
        return state, metrics

    def train(key, hp: Hyperparams):
        return run(init(key, hp), hp, num_updates)

    return Trainer(config=cfg, env=env, policy=policy, init=init, update=update, run=run, train=train)


def evaluate(trainer: Trainer, state: TrainState, key, num_episodes: int | None = None, deterministic: bool = True):
    """Return the mean return of one episode per env of a fresh batch, with frozen statistics.

    Runs ``max_episode_steps`` steps of ``trainer.env`` (its ``num_envs`` envs) with the mode
    action (``deterministic``) or a sample, observation normalisation frozen at ``state.obs_rms``,
    and averages the first finished episode of every env. Pure; jit it if called often.
    """
    del num_episodes  # one episode per env of the trainer's batch
    return _greedy_return(trainer.config, trainer.env, trainer.policy, state.params, state.obs_rms, key, deterministic)


def _greedy_return(cfg: Config, env, policy, params, obs_rms, key, deterministic: bool = True):
    to_input = (lambda o: norm.rms_normalize(obs_rms, o, clip=cfg.obs_clip)) if cfg.normalize_obs else (lambda o: o)
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
        action = policy.mode(params, x) if deterministic else policy.act(params, x, k_act)[0]
        env_state, ts = env.step(env_state, clip(action), k_env)
        done = jnp.logical_or(ts.terminated, ts.truncated)
        returns = jnp.where(done & ~done_before, ts.episode_return, returns)
        return (env_state, ts.obs, done_before | done, returns), None

    n = env.num_envs
    init = (env_state, obs, jnp.zeros(n, bool), jnp.zeros(n, jnp.float32))
    (_, _, finished, returns), _ = jax.lax.scan(step, init, jax.random.split(k_run, spec.max_episode_steps))
    return returns.sum() / jnp.maximum(finished.sum(), 1)
