"""What an algorithm gives the engine: the :class:`Algorithm` protocol and its default pieces.

The engine (:mod:`prpo.train`) runs one loop for every algorithm — rollout, targets, epochs ×
minibatches of a loss, learner statistics — and asks the algorithm for what differs, through
the hooks of an :class:`Algorithm`. Each hook has a default here, the on-policy actor-critic
one, so an algorithm states only what it changes::

    Algorithm(name="ppo", ...)                                   # every default: PPO
    Algorithm(name="a2c", overrides=dict(update_epochs=1, ...))  # PPO's pieces, other settings
    Algorithm(name="pqn", make_policy=..., make_loss=..., targets=..., behaviour=...)

The hooks (all pure; called while tracing):

* ``make_policy(cfg, spec, network) -> policy`` — the policy family (``network`` injectable);
  default :func:`default_policy` (categorical / Gaussian actor-critic, or the registered family
  ``cfg.policy``).
* ``make_loss(cfg, policy, surrogate, axis_name) -> loss(params, minibatch, hp, key, progress)``
  — default :func:`prpo.update.make_loss` (surrogate + value loss + entropy + KL + penalties).
* ``targets(cfg, hp, rewards, values, next_values, terminated, truncated, axis_name, aux=)
  -> (advantages, returns)`` — default :func:`gae_targets` (GAE, optional whole-batch
  advantage normalisation); ``aux`` is the trajectory's record ``traj.aux`` (``[T, N, ...]``).
* ``behaviour(policy, hp, update, num_updates) -> (policy, metrics)`` — the policy that acts in
  this update's rollout (PQN: ε-greedy with this update's ε); default: the policy itself.
* ``collect(ctx, behaviour, params, env_state, obs, key) -> (env_state, last_obs, traj, ep_stats)``
  — the rollout (:class:`prpo.rollout.RolloutContext` holds the env, the transforms and ``hp``);
  default :func:`prpo.rollout.collect_with` (``num_steps`` steps of ``behaviour``). An
  algorithm may roll out differently (e.g. from cloned env states) and add its own per-step
  keys to ``traj.aux``; they reach ``targets`` (as ``aux``) and the training batch (``batch.aux``).
* ``init_state(params) -> pytree`` / ``update_state(algo_state, params, hp) -> pytree`` — extra
  train state (``TrainState.algo_state``; PPO-EWMA: the proximal parameters); default: none.
* ``prepare_batch(policy, algo_state, batch) -> batch`` — add to the training batch before the
  epochs (PPO-EWMA: log π_prox of the actions); default: unchanged.
* ``hyperparams(hp, algo_state) -> (hp, metrics)`` — this update's hyperparameters, where some
  are state (R²VPO: the dual variable ν); default: ``hp`` unchanged.
* ``adapt_state(algo_state, metrics, hp) -> algo_state`` — after the epochs, with the update's
  reduced metrics (R²VPO: dual ascent on ν from the measured ratio variance); ``hp`` is the
  run's (unadapted) set; default: unchanged.

Besides the hooks an algorithm owns its defaults (``overrides`` on top of the env kind's base
preset, ``family_overrides`` per env kind), its options (static ones and traced
hyperparameters, :class:`prpo.registry.Option`), the action spaces it supports and its checks.
Register it with :func:`prpo.algorithms.register`; adding an algorithm is one new file.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp

from prpo import envs as envs_lib
from prpo import registry
from prpo.advantages import gae, normalize
from prpo.config import Config, ConfigError, Hyperparams, apply_overrides, preset
from prpo.fused import FusedActorCritic, fused_actor_critic
from prpo.networks import make_actor_critic
from prpo.policies import CategoricalPolicy, GaussianPolicy
from prpo.registry import suggest
from prpo.rollout import collect_with
from prpo.update import make_loss

__all__ = [
    "Algorithm",
    "default_policy",
    "actor_critic_policy",
    "gae_targets",
    "check_env",
    "check_network_kernel",
    "env_options",
    "env_kind",
    "KINDS",
    "check_generative",
    "action_dim",
    "register",
    "get",
    "names",
]

#: env kinds, each with a base preset ``<base>-<kind>`` (the PPO module registers ``ppo-<kind>``)
KINDS = ("cartpole", "classic-continuous", "brax", "minatar")


# -- default hooks ------------------------------------------------------------------------------

def actor_critic_policy(cfg: Config, spec: envs_lib.EnvSpec, network=None, **network_kw):
    """Categorical (discrete) or diagonal-Gaussian (continuous) family over an actor-critic MLP.

    ``network_kw`` go to :func:`prpo.networks.make_actor_critic` (e.g. ``median_head=True``).
    """
    kind = policy_kind(cfg, spec)
    discrete = kind == "categorical"
    if network is None:
        network = make_actor_critic(
            action_dim=spec.action_space.n if discrete else action_dim(spec), discrete=discrete, obs_ndim=len(spec.obs_shape), actor_hidden=cfg.actor_hidden,
            critic_hidden=cfg.critic_hidden, activation=cfg.activation, shared_trunk=cfg.shared_trunk,
            log_std_init=cfg.log_std_init, **network_kw,
        )
        if cfg.network_kernel != "xla":  # same module and parameters, computed by prpo.fused
            try:
                impl = "blockdiag" if cfg.network_kernel == "blockdiag" else "auto"
                dot_dtype = "bfloat16" if cfg.network_kernel == "fused_bf16" else "float32"
                network = fused_actor_critic(network, impl, dot_dtype)
            except ValueError as e:
                raise ConfigError(f"network_kernel={cfg.network_kernel!r}: {e}; or network_kernel='xla'") from None
    family = CategoricalPolicy if discrete else GaussianPolicy
    return family(network, keep_dist=cfg.kl_schedule != "none")


def default_policy(cfg: Config, spec: envs_lib.EnvSpec, network=None):
    """The registered family ``cfg.policy``, or (``"auto"``) :func:`actor_critic_policy`."""
    if cfg.policy != "auto":
        policy_kind(cfg, spec)  # checks the action space
        return registry.POLICIES[cfg.policy].make(cfg, spec, network)
    return actor_critic_policy(cfg, spec, network)


def check_network_kernel(cfg: Config, policy) -> None:
    """``network_kernel`` other than ``'xla'`` needs the built-in actor-critic MLP: refused (before any compile)
    for an algorithm whose policy has another network, or for an injected network."""
    if cfg.network_kernel != "xla" and not isinstance(getattr(policy, "network", None), FusedActorCritic):
        raise ConfigError(
            f"network_kernel={cfg.network_kernel!r} computes the built-in actor-critic MLP; algo={cfg.algo!r} here uses another "
            "network (its own, or one passed as network=); allowed: network_kernel='xla'"
        )


def gae_targets(cfg: Config, hp, rewards, values, next_values, terminated, truncated, axis_name=None, aux=None):
    """GAE advantages and returns (bootstrapping at truncation through ``next_values``); with
    ``adv_norm="batch"`` the advantages are normalised over the whole batch (all devices)."""
    advantages, returns = gae(rewards, values, next_values, terminated, truncated, hp.gamma, hp.gae_lambda,
                              unroll=cfg.scan_unroll)
    if cfg.adv_norm == "batch":
        advantages = normalize(advantages, axis_name=axis_name)
    return advantages, returns


def _same_policy(policy, hp, update, num_updates):
    return policy, {}


def _no_state(params):
    return None


def _keep_state(algo_state, params, hp):
    return algo_state


def _same_batch(policy, algo_state, batch):
    return batch


def _same_hyperparams(hp, algo_state):
    return hp, {}


def _no_adaptation(algo_state, metrics, hp):
    return algo_state


# -- env checks ---------------------------------------------------------------------------------

def env_options(cfg: Config, env=None) -> dict:
    """The env options a config sets (backend, auto-reset, time limit) for a named env."""
    opts = {}
    if cfg.env_backend is not None:
        opts["backend"] = cfg.env_backend
    if env is None and envs_lib.env_family(cfg.env) in ("brax", "playground"):
        opts["auto_reset"] = cfg.brax_reset
    if cfg.episode_length is not None:
        opts["max_episode_steps"] = cfg.episode_length
    return opts


def _as_config_error(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_env(cfg: Config, env=None) -> envs_lib.EnvSpec:
    """Validate the env options of ``cfg`` (and ``env``, an env object, if given) and the policy's
    fit to its action space; return the spec. No stepping, no compilation."""
    if env is None:
        family = _as_config_error(envs_lib.env_family, cfg.env)
        if cfg.env_backend is not None and family != "brax":
            raise ConfigError(f"env_backend={cfg.env_backend!r} applies to brax envs only; env {cfg.env!r} is a {family} env")
        spec = _as_config_error(envs_lib.env_spec, cfg.env, **env_options(cfg))
    else:
        if cfg.env_backend is not None:
            raise ConfigError(f"env_backend={cfg.env_backend!r} applies to named brax envs only, not to an env object")
        spec = _as_config_error(envs_lib.spec_of, env, **env_options(cfg, env))
    policy_kind(cfg, spec)
    return spec


def policy_kind(cfg: Config, spec: envs_lib.EnvSpec) -> str:
    """``"categorical"``, ``"gaussian"`` or the registered family's name; checks the action space."""
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


def env_kind(env) -> str:
    """The preset kind of an env name or spec: brax (MuJoCo), minatar, classic-continuous, cartpole."""
    if isinstance(env, str):
        family = _as_config_error(envs_lib.env_family, env)
        if family in ("brax", "playground"):  # MuJoCo continuous control
            return "brax"
        if env.endswith("-MinAtar") or family in ("craftax", "navix"):  # symbolic / grid, discrete, many envs
            return "minatar"
        spec = _as_config_error(envs_lib.env_spec, env)
    else:
        spec = env if isinstance(env, envs_lib.EnvSpec) else _as_config_error(envs_lib.spec_of, env)
    return "cartpole" if isinstance(spec.action_space, envs_lib.Discrete) else "classic-continuous"


# -- the protocol -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Algorithm:
    """A named composition: defaults, options, checks and the engine hooks (see the module doc)."""

    name: str
    description: str
    overrides: dict = dataclasses.field(default_factory=dict)  # defaults on top of the kind's base preset
    family_overrides: dict = dataclasses.field(default_factory=dict)  # kind -> more defaults
    presets: tuple[str, ...] = ()  # kinds with a named preset "<name>-<kind>" (listed by `prpo list`)
    preset_docs: dict = dataclasses.field(default_factory=dict)  # kind -> one line for `prpo list`
    options: dict = dataclasses.field(default_factory=dict)  # name -> registry.Option (owned)
    action_spaces: tuple[str, ...] = ("discrete", "continuous")
    policies: tuple[str, ...] | None = None  # the policy families (Config.policy) it works with; None: any
    check_config: Callable[[Config], None] | None = None  # env-free checks, run by Config itself
    base: str = "ppo"  # whose presets "<base>-<kind>" this algorithm's defaults start from
    # engine hooks
    make_policy: Callable = default_policy
    make_loss: Callable = make_loss
    targets: Callable = gae_targets
    behaviour: Callable = _same_policy
    collect: Callable = collect_with
    init_state: Callable = _no_state
    update_state: Callable = _keep_state
    prepare_batch: Callable = _same_batch
    hyperparams: Callable = _same_hyperparams
    adapt_state: Callable = _no_adaptation

    def defaults(self, kind: str) -> Config:
        """This algorithm's defaults for an env kind: base preset, then overrides, then the kind's."""
        if kind not in KINDS:
            raise ConfigError(f"env kind {kind!r} is not known; kinds: {', '.join(KINDS)}")
        base = preset(f"{self.base}-{kind}")
        mine = {**self.overrides, **self.family_overrides.get(kind, {})}
        return apply_overrides(base, {**mine, "algo": self.name} if self.name != base.algo else mine)

    def config(self, env="CartPole-v1", preset_name: str | None = None, **overrides) -> Config:
        """The config of this algorithm on ``env`` (a name): its defaults for the env's kind — or
        the named preset, which must be this algorithm's or a base preset — then ``overrides``."""
        if "algo" in overrides:
            raise ConfigError(f"algo is fixed by the algorithm ({self.name!r}); use "
                              f"prpo.algorithms.get({overrides['algo']!r}).config(...) for another")
        if not isinstance(env, str):
            raise ConfigError(f"env must be an env name (a string), got {type(env).__name__}; to train on an env "
                              "object pass it as make_train(cfg, env=...) / run_experiment(cfg, env=...)")
        if preset_name is None:
            if isinstance(env, str):  # the action space first: its error says more than a default's
                self._check_action_space(_as_config_error(envs_lib.env_spec, env))
            cfg = self.defaults(env_kind(env))
        else:
            base = preset(preset_name)
            kind = getattr(registry.PRESETS[preset_name], "kind", None)
            if base.algo == self.name:
                cfg = base
            elif base.algo == self.base and kind is not None:
                cfg = self.defaults(kind)
            else:
                mine = sorted(n for n, f in registry.PRESETS.items() if f().algo in (self.name, self.base))
                raise ConfigError(
                    f"preset={preset_name!r} is algorithm {base.algo!r}'s; for {self.name!r} use one of "
                    f"{', '.join(mine)}{suggest(preset_name, mine)}"
                )
        cfg = apply_overrides(cfg, {"env": env, **overrides})
        self.check(cfg)
        return cfg

    def check(self, cfg: Config, env=None) -> envs_lib.EnvSpec:
        """Validate ``cfg`` for this algorithm and its env (no compilation); return the env spec."""
        spec = check_env(cfg, env)
        self._check_action_space(spec)
        return spec

    def _check_action_space(self, spec: envs_lib.EnvSpec) -> None:
        kind = "discrete" if isinstance(spec.action_space, envs_lib.Discrete) else "continuous"
        if kind not in self.action_spaces:
            raise ConfigError(
                f"algorithm {self.name!r} supports {' and '.join(self.action_spaces)} action spaces only; "
                f"env {spec.name!r} is {kind}"
            )


def get(name) -> Algorithm:
    """The registered algorithm ``name`` (ConfigError with suggestions if unknown)."""
    if not isinstance(name, str) or name not in registry.ALGORITHMS:
        raise ConfigError(f"unknown algorithm {name!r}{suggest(name, registry.ALGORITHMS)}; "
                          f"available: {', '.join(registry.ALGORITHMS)}")
    return registry.ALGORITHMS[name]


def check_generative(cfg: Config) -> None:
    """Checks of a policy family without an explicit likelihood (flow, diffusion): only per-sample
    ratio surrogates apply (none that needs the log-probability or a median head), no analytic KL,
    and the action space is continuous (no categorical distribution)."""
    ratio_only = [n for n, f in registry.SURROGATES.items() if not getattr(f, "needs_context", False)]
    if cfg.objective not in ratio_only:
        raise ConfigError(
            f"objective={cfg.objective!r} needs an explicit likelihood; with policy={cfg.policy!r} "
            f"allowed objectives: {registry.fmt_choices(ratio_only)}"
        )
    if cfg.kl_schedule != "none":
        raise ConfigError(f"kl_schedule={cfg.kl_schedule!r} needs an analytic KL; policy={cfg.policy!r} allows only 'none'")
    if cfg.distribution not in ("auto", "gaussian"):
        raise ConfigError(
            f"policy={cfg.policy!r} is a continuous-action family; distribution={cfg.distribution!r} "
            "conflicts with it (allowed: 'auto', 'gaussian')"
        )


def action_dim(spec: envs_lib.EnvSpec) -> int:
    """Number of action dimensions of a Box spec (flattened)."""
    return int(jnp.prod(jnp.asarray(spec.action_space.shape)))


def register(algo: Algorithm) -> Algorithm:
    """Register ``algo`` (and its named presets ``<name>-<kind>``); returns it.

    Its option names must not clash with the shared config fields / hyperparameters, and an
    option another owner already declares must be the same :class:`~prpo.registry.Option`.
    """
    if not isinstance(algo, Algorithm):
        raise TypeError(f"register() takes a prpo.algorithm.Algorithm, got {type(algo).__name__}")
    shared = {f for f in Config.__dataclass_fields__} | set(Hyperparams.__dataclass_fields__)
    owned = registry.owned_options()
    for name, spec in algo.options.items():
        if name in shared:
            raise ConfigError(f"algorithm {algo.name!r}: option {name!r} is a shared config field; choose another name")
        if name in owned and owned[name][0] is not spec and algo.name not in " ".join(owned[name][1]):
            raise ConfigError(f"algorithm {algo.name!r}: option {name!r} is already declared by "
                              f"{', '.join(owned[name][1])} with another spec")
    registry.ALGORITHMS[algo.name] = algo
    for kind in algo.presets:
        def make(algo=algo, kind=kind):
            return algo.defaults(kind)

        make.kind = kind
        make.__doc__ = algo.preset_docs.get(kind) or f"{algo.description} ({kind} defaults)"
        registry.register_preset(f"{algo.name}-{kind}", make)
    return algo


def names() -> list[str]:
    """Registered algorithm names, in registration order."""
    return list(registry.ALGORITHMS)
