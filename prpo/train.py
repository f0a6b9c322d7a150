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
from prpo import memory
from prpo import normalization as norm
from prpo.algorithm import check_env, check_network_kernel, env_options, get as get_algorithm
from prpo.config import Config, ConfigError, Hyperparams, check_split
from prpo.rollout import RolloutContext
from prpo.update import SURROGATES, Batch, lr_fraction, make_optimizer, schedule_fractions, sgd_epochs

__all__ = ["TrainState", "Trainer", "make_train", "make_policy", "check_env", "evaluate", "episode_returns",
           "NonFiniteLossError"]


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
    update: jax.Array  # number of updates done (int32: ≤ num_updates ≤ 2^31 − 1, see prpo.memory.check_sizes)
    last_return: jax.Array  # mean return of the most recent update with finished episodes
    nonfinite_update: jax.Array  # index of the first update with a non-finite loss, -1 if none
    algo_state: Any = None  # the algorithm's own state (Algorithm.init_state / update_state)
    eval_return: Any = None  # latest in-loop evaluation return (Config.eval_every > 0), NaN before the first
    ent_log_scale: Any = None  # Config.auto_entropy: log of (entropy coefficient / hp.ent_coef), 0 at the start


def make_policy(cfg: Config, spec: envs_lib.EnvSpec, network=None):
    """The policy family of ``cfg``'s algorithm for ``spec`` (``network`` injectable)."""
    return get_algorithm(cfg.algo).make_policy(cfg, spec, network)


def _obs_transform(cfg: Config, obs_rms):
    """Raw observation -> network input: normalised by the frozen ``obs_rms`` if asked for."""
    if not cfg.normalize_obs:
        return lambda o: o
    return partial(norm.rms_normalize, obs_rms, clip=cfg.obs_clip)


def _action_transform(spec: envs_lib.EnvSpec):
    """Sampled action -> env action: clipped to a Box's bounds (discrete actions unchanged)."""
    if not isinstance(spec.action_space, envs_lib.Box):
        return lambda a: a
    low = jnp.asarray(spec.action_space.low, jnp.float32)
    high = jnp.asarray(spec.action_space.high, jnp.float32)
    return lambda a: jnp.clip(a, low, high)


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
    cfg: Config, policy=None, network=None, surrogate=None, init_params=None, axis_name=None, num_shards: int = 1,
    env=None,
) -> Trainer:
    """Build the pure training functions for ``cfg`` (validated here, before any compile).

    ``policy``: a policy family (see :mod:`prpo.policies`); ``network``: a Flax module for the
    default family. Both default from the algorithm and the env's action space. ``surrogate``:
    any ``f(log_ratio, adv, hp) -> (per-sample loss, diagnostics)``; defaults to
    ``SURROGATES[cfg.objective]``. ``init_params``: start from these parameters instead of
    ``policy.init`` (e.g. a pretrained denoiser to fine-tune,
    :func:`prpo.diffusion.finetune_params`). ``env``: an env object to train on instead of the
    named ``cfg.env`` — a gymnax environment (or ``(env, env_params)``) or any object with
    prpo's vectorised env protocol (:mod:`prpo.envs`, "Bring your own env").

    Everything that differs between algorithms comes from ``cfg.algo``'s
    :class:`~prpo.algorithm.Algorithm` hooks: the policy family, the loss, the targets, the
    behaviour policy, batch preparation and extra train state. This function names none.

    ``axis_name``/``num_shards``: build the *per-device* functions of a data-parallel run, to be
    called inside ``jax.shard_map`` over a mesh axis ``axis_name`` of ``num_shards`` devices
    (use :func:`prpo.parallel.make_sharded_train`, which does that). Each device then steps
    ``num_envs / num_shards`` envs with per-env keys, and gradients, normaliser statistics,
    episode statistics and metrics are combined over the axis.
    """
    if not isinstance(cfg, Config):
        from prpo.config import PRESETS

        hint = f"; use prpo.preset({cfg!r})" if isinstance(cfg, str) and cfg in PRESETS else ""
        raise ConfigError(f"make_train needs a prpo.Config as its first argument, got {type(cfg).__name__} {cfg!r}{hint}")
    if surrogate is not None and not callable(surrogate):
        raise ConfigError(f"surrogate must be a function f(log_ratio, adv, hp) -> (loss, diagnostics), got {surrogate!r}")
    algo = get_algorithm(cfg.algo)
    spec = algo.check(cfg, env)  # env, action space and the algorithm's own checks
    check_split(cfg, num_shards)
    memory.check_sizes(cfg, num_shards)  # every traced counter and index fits in int32
    n_local = cfg.num_envs // num_shards
    opts = env_options(cfg, env)
    vec_env = envs_lib.as_vec_env(cfg.env if env is None else env, n_local, **opts)
    if policy is None:
        policy = algo.make_policy(cfg, spec, network)
    check_network_kernel(cfg, policy)
    if surrogate is None:
        surrogate = SURROGATES[cfg.objective]
    num_updates = cfg.num_updates
    loss_fn = algo.make_loss(cfg, policy, surrogate, axis_name=axis_name)
    eval_env = None
    if cfg.eval_every:  # evaluation envs live on every device (each evaluates the same params)
        eval_env = envs_lib.as_vec_env(cfg.env if env is None else env, cfg.eval_envs or cfg.num_envs, **opts)
    action_transform = _action_transform(spec)

    def env_ids():  # global indices of this device's envs (per-env keys), None on one device
        if axis_name is None:
            return None
        return jax.lax.axis_index(axis_name) * n_local + jnp.arange(n_local)

    def init(key, hp: Hyperparams) -> TrainState:
        k_params, k_env, k_state = jax.random.split(key, 3)
        ids = env_ids()
        env_state, obs = vec_env.reset(k_env if ids is None else jax.vmap(jax.random.fold_in, (None, 0))(k_env, ids))
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
            algo_state=algo.init_state(params),
            eval_return=jnp.full((), jnp.nan, jnp.float32) if cfg.eval_every else None,
            ent_log_scale=jnp.zeros((), jnp.float32) if cfg.auto_entropy else None,
        )

    def update(state: TrainState, hp: Hyperparams):
        base_hp = hp
        hp, hp_metrics = algo.hyperparams(hp, state.algo_state)  # state-dependent hyperparameters, if any
        if cfg.auto_entropy:  # the learned entropy coefficient: ent_coef · exp(s)
            hp = hp.replace(ent_coef=hp.ent_coef * jnp.exp(state.ent_log_scale))
            hp_metrics = {**hp_metrics, "ent_coef": hp.ent_coef}
        key, k_roll, k_sgd = jax.random.split(state.key, 3)
        to_input = _obs_transform(cfg, state.obs_rms)  # frozen for the rollout and this update
        behaviour, behaviour_metrics = algo.behaviour(policy, hp, state.update, num_updates)

        # 1. rollout (default: num_steps steps of the behaviour policy)
        ctx = RolloutContext(cfg=cfg, env=vec_env, policy=policy, obs_transform=to_input,
                             action_transform=action_transform, env_ids=env_ids(), hp=hp)
        env_state, last_obs, traj, ep_stats = algo.collect(ctx, behaviour, state.params, state.env_state, state.obs,
                                                           k_roll)

        # 2. targets: V(s'_t) is V(s_{t+1}), or V(final obs) where the episode was truncated
        values = traj.aux["value"]
        last_value = policy.value(state.params, to_input(last_obs))
        next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)
        next_values = jnp.where(traj.truncated, traj.bootstrap_value, next_values)
        rewards, scaler = traj.reward * hp.reward_scale, state.reward_scaler
        if cfg.normalize_reward:
            done = jnp.logical_or(traj.terminated, traj.truncated)
            scaler = norm.reward_scaler_update(scaler, rewards, done, hp.gamma, axis_name=axis_name)
            rewards = norm.scale_rewards(scaler, rewards, clip=cfg.reward_clip)
        advantages, returns = algo.targets(cfg, hp, rewards, values, next_values, traj.terminated, traj.truncated,
                                           axis_name, aux=traj.aux)

        # 3. epochs × shuffled minibatches
        flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
        batch = Batch(
            obs=flat(to_input(traj.obs)),
            action=flat(traj.action),
            aux=jax.tree.map(flat, traj.aux),
            advantages=flat(advantages),
            returns=flat(returns),
        )
        batch = algo.prepare_batch(policy, state.algo_state, batch)
        tx = make_optimizer(cfg, hp, num_updates, state.update)  # lr from the update counter
        progress, remaining = schedule_fractions(state.update, num_updates)  # (k − 1)/K and 1 − (k − 1)/K
        params, opt_state, metrics = sgd_epochs(
            cfg, loss_fn, tx, state.params, state.opt_state, batch, hp, k_sgd, progress, axis_name=axis_name,
            remaining=remaining,
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
        metrics["lr"] = hp.lr * lr_fraction(cfg, state.update, num_updates)
        metrics.update(behaviour_metrics)
        metrics.update(hp_metrics)
        algo_state = algo.update_state(state.algo_state, params, hp)
        algo_state = keep(algo.adapt_state(algo_state, metrics, base_hp), algo_state)
        ent_log_scale = state.ent_log_scale
        if cfg.auto_entropy:  # dual ascent on the coefficient: up when the entropy is below the target
            if "entropy" not in metrics:
                raise ConfigError(f"auto_entropy=true needs a policy entropy; algo={cfg.algo!r} logs none "
                                  "(allowed here: auto_entropy=false)")
            step = base_hp.ent_lr * (base_hp.target_entropy - metrics["entropy"])
            ent_log_scale = jnp.where(finite, ent_log_scale + step, ent_log_scale)
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
            algo_state=algo_state,
            eval_return=state.eval_return,
            ent_log_scale=ent_log_scale,
        )
        if cfg.eval_every:
            metrics["eval_return"] = state.eval_return
        return new_state, metrics

    def evaluate_in_loop(state: TrainState) -> TrainState:
        key, k_eval = jax.random.split(state.key)
        ret = _greedy_return(cfg, eval_env, policy, state.params, state.obs_rms, k_eval)
        return state.replace(key=key, eval_return=ret)

    def run(state: TrainState, hp: Hyperparams, num_updates_to_run: int, active=None):
        """``num_updates_to_run`` updates; with ``eval_every`` = E, a greedy evaluation after every
        E-th update *of this call* (drivers call it with multiples of E), reported in the metric
        ``eval_return`` of that update and carried until the next evaluation.

        ``active`` (a traced int, optional): only the first ``active`` of the ``num_updates_to_run``
        updates run; the rest pass the state through with NaN metrics (integers: -1). One compiled
        program then serves chunks of any length up to ``num_updates_to_run``."""
        every = cfg.eval_every

        def one(s, i):  # update i of this call, and the evaluation after every E-th
            s, m = update(s, hp)
            if every:
                s = jax.lax.cond((i + 1) % every == 0, evaluate_in_loop, lambda x: x, s)
                m["eval_return"] = s.eval_return
            return s, m

        if active is not None:
            blank = jax.eval_shape(one, state, jnp.int32(0))[1]
            blank = jax.tree.map(lambda a: jnp.full(a.shape, jnp.nan if jnp.issubdtype(a.dtype, jnp.inexact) else -1,
                                                    a.dtype), blank)
            step = lambda s, i: jax.lax.cond(i < active, one, lambda s, i: (s, blank), s, i)  # noqa: E731
            return jax.lax.scan(step, state, jnp.arange(num_updates_to_run))
        scan_updates = lambda s, n: jax.lax.scan(lambda c, _: update(c, hp), s, None, length=n)  # noqa: E731
        if not every or num_updates_to_run < every:
            return scan_updates(state, num_updates_to_run)
        blocks, rest = divmod(num_updates_to_run, every)
        if rest:  # one scan, the evaluation under a cond: the update is compiled once, not twice
            return jax.lax.scan(one, state, jnp.arange(num_updates_to_run))

        def block(s, _):
            s, m = scan_updates(s, every)
            s = evaluate_in_loop(s)
            m["eval_return"] = m["eval_return"].at[-1].set(s.eval_return)
            return s, m

        state, metrics = jax.lax.scan(block, state, None, length=blocks)
        return state, jax.tree.map(lambda x: x.reshape((blocks * every,) + x.shape[2:]), metrics)

    def train(key, hp: Hyperparams):
        return run(init(key, hp), hp, num_updates)

    return Trainer(config=cfg, env=vec_env, policy=policy, init=init, update=update, run=run, train=train)


def evaluate(trainer: Trainer, state: TrainState, key, num_episodes: int | None = None, deterministic: bool = True):
    """The mean return of ``num_episodes`` full episodes (default: the trainer's ``num_envs``),
    one per env of a fresh batch, with the mode action (``deterministic``) or a sample and the
    observation normaliser frozen at ``state.obs_rms``. ``state`` is one run's. Pure; jit it if
    called often. :func:`episode_returns` gives the returns themselves."""
    return _mean_finished(*episode_returns(trainer, state, key, num_episodes, deterministic))


def episode_returns(trainer: Trainer, state: TrainState, key, num_episodes: int | None = None,
                    deterministic: bool = True):
    """``(returns [N], finished [N])``: the return of the first episode of each of ``N =
    num_episodes`` fresh envs, run for the env's ``max_episode_steps`` (so every episode of an env
    with a time limit finishes; ``finished`` says which did). Same policy, normaliser and
    randomness rules as :func:`evaluate`."""
    env = trainer.env
    if num_episodes is not None and num_episodes != env.num_envs:
        if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes <= 0:
            raise ConfigError(f"num_episodes must be a positive integer, got {num_episodes!r}")
        env = env.with_num_envs(num_episodes)
    return _episodes(trainer.config, env, trainer.policy, state.params, state.obs_rms, key, deterministic)


def _greedy_return(cfg: Config, env, policy, params, obs_rms, key, deterministic: bool = True):
    return _mean_finished(*_episodes(cfg, env, policy, params, obs_rms, key, deterministic))


def _mean_finished(returns, finished):
    """Mean return of the finished episodes (unfinished ones hold 0)."""
    return returns.sum() / jnp.maximum(finished.sum(), 1)


def _episodes(cfg: Config, env, policy, params, obs_rms, key, deterministic: bool = True):
    to_input = _obs_transform(cfg, obs_rms)
    spec = env.spec
    clip = _action_transform(spec)
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
    return returns, finished
