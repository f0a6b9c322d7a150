"""Typed configuration: static structure vs traced hyperparameters, validation, overrides.

* :class:`Hyperparams` — a ``flax.struct`` pytree of scalars. The shared ones (learning rate,
  γ, λ, clip ε, coefficients) are fields; the ones an algorithm, a surrogate or a policy
  family owns (``bpo_temp``, ``eps_start``, ``gamma_denoise``, ...) are leaves of ``own`` and
  read as attributes all the same (``hp.bpo_temp``). All are *traced*:
  ``jax.vmap(train)(keys, hps)`` sweeps them in one compile.
* :class:`Config` — frozen dataclass of everything that fixes shapes or structure (env, sizes,
  network, which algorithm / objective / policy family, switches). The static options an
  owner declares (``diffusion_steps``, ``q_torso``, ...) live in ``options`` and read as
  attributes (``cfg.diffusion_steps``). Changing a static option means a new compile.

A config holds exactly the options of the owners it selects (``algo``, ``objective``,
``policy``; see :mod:`prpo.registry`): defaults fill in what is not given, and
:func:`apply_overrides` refuses an option the config does not use. Every option is checked
before anything compiles; a bad value raises :class:`ConfigError` naming the option and what is
allowed. This module knows no particular algorithm: presets and owned options are registered by
the algorithm modules (``prpo.algorithms``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

import flax.struct
import jax
import numpy as np

from prpo import memory, registry
from prpo.registry import ConfigError, fmt_choices, suggest

__all__ = [
    "ConfigError",
    "Hyperparams",
    "Config",
    "PRESETS",
    "preset",
    "apply_overrides",
    "option_names",
    "check_hyperparams",
    "check_split",
]

PRESETS = registry.PRESETS  #: preset name -> () -> Config (registered by the algorithm modules)


@flax.struct.dataclass
class Hyperparams:
    """Traced hyperparameters (pytree leaves; vmap over them to sweep in one compile).

    The fields are shared by every algorithm; ``own`` holds the hyperparameters the selected
    algorithm / objective / policy family own (filled with their defaults by :class:`Config`),
    read as attributes: ``hp.eps_start``.
    """

    lr: float = 2.5e-4  # learning rate (annealed linearly to 0 when Config.anneal_lr)
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE λ (Q(λ) for value-based algorithms)
    clip_eps: float = 0.2  # ratio clip ε
    vf_clip_eps: float = 0.2  # value clip range (reward units) when Config.clip_value
    vf_coef: float = 0.5  # value-loss coefficient c_v
    ent_coef: float = 0.01  # entropy coefficient c_e
    max_grad_norm: float = 0.5  # global gradient-norm clip
    adam_eps: float = 1e-5  # Adam / RAdam / RMSprop epsilon
    rms_decay: float = 0.99  # RMSprop decay α, optimizer="rmsprop"
    kl_coef: float = 1.0  # scale of the KL(π‖π_k) regulariser (MDPO: times 1/t_k); kl_schedule picks the form
    reward_scale: float = 1.0  # rewards are multiplied by this before targets are computed
    target_entropy: float = 0.5  # Config.auto_entropy: the policy entropy the learned coefficient steers to
    ent_lr: float = 0.05  # Config.auto_entropy: step of log(entropy coefficient) per update, per nat of error
    own: dict = flax.struct.field(default_factory=dict)  # owned hyperparameters: name -> leaf

    def __getattr__(self, name):
        if name.startswith("__") or name == "own":
            raise AttributeError(name)
        own = self.__dict__.get("own") or {}
        if name in own:
            return own[name]
        raise AttributeError(
            f"Hyperparams has no {name!r}{suggest(name, list(_HP_FIELDS) + list(own))}; this set holds "
            f"{', '.join(list(_HP_FIELDS) + sorted(own))} (owned hyperparameters come with the algorithm, "
            "objective or policy family that declares them)"
        )

    def __hash__(self):  # the owned dict is not hashable; a Config (and so a Trainer) is
        return hash((tuple(getattr(self, n) for n in _HP_FIELDS), tuple(sorted(self.own.items()))))

    def names(self) -> list[str]:
        """Every hyperparameter of this set: the shared fields, then the owned ones."""
        return list(_HP_FIELDS) + list(self.own)

    def to_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.names()}

_HP_FIELDS = tuple(f.name for f in dataclasses.fields(Hyperparams) if f.name != "own")


def _hp_replace(self, **kw) -> "Hyperparams":
    """Replace shared or owned hyperparameters (an owned one must be registered by some owner)."""
    shared = {k: v for k, v in kw.items() if k in _HP_FIELDS}
    rest = {k: v for k, v in kw.items() if k not in _HP_FIELDS}
    if rest:
        known = {n for n, (spec, _) in registry.owned_options().items() if spec.traced}
        unknown = [k for k in rest if k not in known and k not in self.own]
        if unknown:
            raise ConfigError(
                f"unknown hyperparameter {unknown[0]!r}{suggest(unknown[0], list(_HP_FIELDS) + sorted(known))}; "
                f"hyperparameters: {', '.join(list(_HP_FIELDS) + sorted(known))}"
            )
        shared["own"] = {**self.own, **rest}
    return dataclasses.replace(self, **shared)


Hyperparams.replace = _hp_replace  # after the decorator, which installs a plain dataclasses.replace

#: range checks of the shared hyperparameters (owned ones carry theirs in their Option spec)
_HP_RULES = {
    "lr": (lambda v: v > 0, "> 0"),
    "gamma": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "gae_lambda": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "clip_eps": (lambda v: v > 0, "> 0"),
    "vf_clip_eps": (lambda v: v > 0, "> 0"),
    "vf_coef": (lambda v: v >= 0, ">= 0"),
    "ent_coef": (lambda v: v >= 0, ">= 0 (an entropy bonus)"),
    "max_grad_norm": (lambda v: v > 0, "> 0"),
    "adam_eps": (lambda v: v > 0, "> 0"),
    "rms_decay": (lambda v: 0 < v < 1, "in (0, 1)"),
    "kl_coef": (lambda v: v >= 0, ">= 0"),
    "reward_scale": (lambda v: v > 0, "> 0"),
    "target_entropy": (lambda v: True, "finite"),
    "ent_lr": (lambda v: v > 0, "> 0"),
}

_CHOICES = {
    "distribution": ("auto", "categorical", "gaussian"),
    "kl_schedule": ("none", "constant", "mdpo"),
    "adv_norm": ("minibatch", "batch", "none"),
    "optimizer": ("adam", "rmsprop", "radam"),
    "activation": ("tanh", "relu", "silu", "gelu", "elu"),
    "env_backend": (None, "mjx", "positional", "generalized", "spring"),
    "brax_reset": ("cached", "fresh"),
    "truncation_value": ("auto", "always", "cond"),
    "shuffle": ("samples", "envs", "stratified"),
    "network_kernel": ("xla", "fused", "blockdiag", "fused_bf16"),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Static configuration of one training run (hashed into the compile).

    Owned static options (those of the selected algorithm, objective and policy family) are in
    ``options`` as sorted ``(name, value)`` pairs and read as attributes; set them with
    :meth:`replace` or :func:`apply_overrides` like any field.
    """

    algo: str = "ppo"
    env: str = "CartPole-v1"
    env_backend: str | None = None  # brax physics backend (None = the env module's default)
    brax_reset: str = "cached"  # brax auto-reset: "cached" initial state or "fresh" reset
    episode_length: int | None = None  # override the env's time limit (None = env default)
    num_envs: int = 4
    num_steps: int = 128  # rollout length per update
    total_timesteps: int = 500_000
    update_epochs: int = 4
    num_minibatches: int = 4
    fixed_minibatch_size: int | None = None  # co-scaling: keep this minibatch size, num_minibatches = batch / it
    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] | None = None  # None = same as actor_hidden
    activation: str = "tanh"
    shared_trunk: bool = False
    auto_entropy: bool = False  # learn the entropy coefficient toward hp.target_entropy (starts at hp.ent_coef)
    # actor-critic MLP (prpo.fused): XLA ops, "fused" (one Pallas kernel per pass, GPU), "fused_bf16" (the same with
    # bfloat16 matmul operands, float32 accumulation: faster on GPU, other numerics) or "blockdiag"
    network_kernel: str = "xla"
    distribution: str = "auto"  # auto: categorical for Discrete, gaussian for Box
    log_std_init: float = 0.0
    objective: str = "clip"  # the surrogate: a name in prpo.registry.SURROGATES
    kl_schedule: str = "none"  # KL(π‖π_k) regulariser: none, constant kl_coef, or MDPO's kl_coef/t_k
    adv_norm: str = "minibatch"
    clip_value: bool = True
    optimizer: str = "adam"
    anneal_lr: bool = True
    normalize_obs: bool = False
    normalize_reward: bool = False
    obs_clip: float = 10.0
    reward_clip: float = 10.0
    bootstrap_truncation: bool = True  # False reproduces the truncation-as-termination bug
    truncation_value: str = "auto"  # V(final obs): "always" computed (no host sync), under lax.cond, or auto (platform)
    shuffle: str = "samples"  # minibatches of shuffled samples, whole env trajectories ("envs"), or "stratified"
    devices: int = 1  # data parallelism: envs split over this many devices (1 = the single-device path)
    unroll: int | None = None  # lax.scan unroll of rollout and GAE loops; None: 8 on GPU/TPU below 16,384 envs, else 1
    eval_every: int = 0  # in-loop deterministic (greedy) evaluation every this many updates; 0 = off
    eval_envs: int | None = None  # envs (one episode each) per in-loop evaluation; None = num_envs
    policy: str = "auto"  # policy family: auto (categorical / Gaussian) or a name in prpo.registry.POLICIES
    options: tuple = ()  # owned static options as sorted (name, value) pairs (read as attributes)
    hp: Hyperparams = dataclasses.field(default_factory=Hyperparams)

    def __getattr__(self, name):
        if name.startswith("__") or name == "options":
            raise AttributeError(name)
        for k, v in self.__dict__.get("options") or ():
            if k == name:
                return v
        raise AttributeError(
            f"Config has no option {name!r}{suggest(name, _STATIC_FIELDS + tuple(k for k, _ in self.options))} "
            f"for algo={self.__dict__.get('algo')!r}"
        )

    def __post_init__(self):
        self._check_types()
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name}={value!r} is not allowed; allowed values: {fmt_choices(allowed)}")
        for name in ("num_envs", "num_steps", "total_timesteps", "update_epochs", "num_minibatches", "unroll",
                     "devices", "fixed_minibatch_size"):
            value = getattr(self, name)
            if name in ("unroll", "fixed_minibatch_size") and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.eval_every, int) or isinstance(self.eval_every, bool) or self.eval_every < 0:
            raise ConfigError(f"eval_every must be an integer >= 0 (updates between evaluations; 0 = off), got {self.eval_every!r}")
        if self.eval_envs is not None and (not isinstance(self.eval_envs, int) or self.eval_envs <= 0):
            raise ConfigError(f"eval_envs must be a positive integer or None, got {self.eval_envs!r}")
        if self.episode_length is not None and self.episode_length <= 0:
            raise ConfigError(f"episode_length must be a positive integer or None, got {self.episode_length!r}")
        if self.update_epochs > MAX_EPOCHS:
            raise ConfigError(f"update_epochs={self.update_epochs} is more than {MAX_EPOCHS} passes over each batch; "
                              f"allowed: 1..{MAX_EPOCHS}")
        for name in ("obs_clip", "reward_clip"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a finite number > 0 (normalised values are clipped to ±{name}), "
                                  f"got {value!r}")
        if not math.isfinite(self.log_std_init):
            raise ConfigError(f"log_std_init must be a finite number (the initial log standard deviation), got {self.log_std_init!r}")
        if self.auto_entropy and not (isinstance(self.hp.ent_coef, (int, float)) and self.hp.ent_coef > 0):
            raise ConfigError(f"auto_entropy=true learns the entropy coefficient from its start ent_coef, which must "
                              f"be > 0; got ent_coef={self.hp.ent_coef!r}")
        if self.fixed_minibatch_size is not None:  # co-scaling: the number of minibatches follows the batch
            if self.batch_size % self.fixed_minibatch_size:
                raise ConfigError(
                    f"fixed_minibatch_size={self.fixed_minibatch_size} must divide num_envs × num_steps = "
                    f"{self.batch_size}; choose among {_divisors_hint(self.batch_size)}"
                )
            object.__setattr__(self, "num_minibatches", self.batch_size // self.fixed_minibatch_size)
        check_split(self, self.devices)
        memory.check_sizes(self)  # every traced counter and index fits in 32 bits
        if self.total_timesteps < self.batch_size:
            raise ConfigError(
                f"total_timesteps={self.total_timesteps} is smaller than one update's batch "
                f"(num_envs × num_steps = {self.batch_size}); raise total_timesteps or lower num_envs/num_steps"
            )
        self._resolve_owned()
        check_hyperparams(self.hp)

    def _check_types(self):
        """Each shared field has its declared type: ints (NumPy ints accepted), bools, numbers, widths."""
        for name, kinds in _FIELD_KINDS.items():
            value = getattr(self, name)
            if value is None and kinds[1]:
                continue
            kind = kinds[0]
            if kind == "int":
                if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                    raise ConfigError(f"{name} must be an integer, got {value!r}")
                object.__setattr__(self, name, int(value))
            elif kind == "bool":
                if not isinstance(value, (bool, np.bool_)):
                    raise ConfigError(f"{name} must be True or False, got {value!r}")
                object.__setattr__(self, name, bool(value))
            elif kind == "float":
                if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                    raise ConfigError(f"{name} must be a number, got {value!r}")
                object.__setattr__(self, name, float(value))
            elif kind == "tuple":
                if not isinstance(value, (tuple, list)) or not value or any(
                        isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, np.integer)) or w <= 0 for w in value):
                    hint = f" (one layer: ({value},))" if isinstance(value, (int, np.integer)) else ""
                    raise ConfigError(f"{name} must be a non-empty tuple of positive integer widths, e.g. (64, 64), "
                                      f"got {value!r}{hint}")
                object.__setattr__(self, name, tuple(int(w) for w in value))
            elif kind == "str" and not isinstance(value, str):
                raise ConfigError(f"{name} must be a string, got {value!r}")
        if not isinstance(self.hp, Hyperparams):
            raise ConfigError(f"hp must be a prpo.Hyperparams, got {type(self.hp).__name__}")

    def _resolve_owned(self):
        """Select the owners, fill their options' defaults, drop options no owner here uses, check."""
        if self.algo not in registry.ALGORITHMS:
            raise ConfigError(f"unknown algorithm {self.algo!r}{suggest(self.algo, registry.ALGORITHMS)}; "
                              f"available: {', '.join(registry.ALGORITHMS)}")
        if self.objective not in registry.SURROGATES:
            raise ConfigError(f"objective={self.objective!r} is not allowed; allowed values: "
                              f"{fmt_choices(list(registry.SURROGATES))}")
        needs = getattr(registry.SURROGATES[self.objective], "algorithm", None)
        if needs is not None and needs != self.algo:
            raise ConfigError(f"objective={self.objective!r} belongs to algorithm {needs!r} (it needs that "
                              f"algorithm's network and hooks); train {needs!r} instead of {self.algo!r}")
        if self.policy != "auto" and self.policy not in registry.POLICIES:
            raise ConfigError(f"policy={self.policy!r} is not allowed; allowed values: "
                              f"{fmt_choices(['auto', *registry.POLICIES])}")
        allowed = getattr(registry.ALGORITHMS[self.algo], "policies", None)
        if allowed is not None and self.policy not in allowed:
            raise ConfigError(f"policy={self.policy!r} is not allowed with algo={self.algo!r} (its own network and "
                              f"hooks); allowed values: {fmt_choices(allowed)}")
        owners = registry.owners(self.algo, self.objective, self.policy)
        static_specs, hyper_specs = {}, {}
        for _, opts, _ in owners:
            for name, spec in opts.items():
                (hyper_specs if spec.traced else static_specs).setdefault(name, spec)
        given = dict(self.options)
        options = {name: given.get(name, spec.default) for name, spec in static_specs.items()}
        for name, value in options.items():
            static_specs[name].validate(name, value)
        object.__setattr__(self, "options", tuple(sorted(options.items())))
        own = {name: self.hp.own.get(name, spec.default) for name, spec in hyper_specs.items()}
        if own != self.hp.own:
            object.__setattr__(self, "hp", dataclasses.replace(self.hp, own=own))
        for _, _, check in owners:
            if check is not None:
                check(self)

    # -- derived sizes ---------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def scan_unroll(self) -> int:
        """``unroll``, or its platform default: 8 on GPU/TPU for narrower batches (fewer than
        :data:`WIDE_BATCH_ENVS` envs per device), where a loop trip's device→host round-trip
        weighs against the step's work (H200, 2048 envs × 128: 22.9 M env-steps/s unrolled,
        18.6 M not); 1 on CPU and for wide batches, where unrolling changes no rate and only
        multiplies the compile (65,536 envs: 21.3 → 11.9 s, 2^20: 19.3 → 8.6 s, same rate;
        benchmarks/README.md). The crossover between 2048 and 65,536 envs is not measured."""
        if self.unroll is not None:
            return self.unroll
        if jax.default_backend() == "cpu" or self.num_envs // self.devices >= WIDE_BATCH_ENVS:
            return 1
        return 8

    @property
    def truncation_mode(self) -> str:
        """``truncation_value``, or its platform default: ``"cond"`` on CPU, where skipping the
        critic's pass on V(final observation) at steps where no env truncated is faster (2-core
        CPU, PPO CartPole 4 envs × 128: 164 k against 157 k env-steps/s; benchmarks/README.md),
        ``"always"`` on GPU/TPU, where the predicate would cost a device→host round-trip per
        step. Under ``vmap`` both branches of the cond run; the values are the same either way."""
        if self.truncation_value != "auto":
            return self.truncation_value
        return "cond" if jax.default_backend() == "cpu" else "always"

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size

    def option_names(self) -> list[str]:
        """Every option of this config: shared fields, owned static options, hyperparameters."""
        return list(_STATIC_FIELDS) + [k for k, _ in self.options] + self.hp.names()

    def replace(self, **kw) -> "Config":
        """A copy with fields, owned static options or hyperparameters (by name) replaced."""
        fields, owned, hps = {}, {}, {}
        statics = {n for n, (spec, _) in registry.owned_options().items() if not spec.traced}
        for name, value in kw.items():
            if name in _STATIC_FIELDS or name == "hp":
                fields[name] = value
            elif name in statics or name in dict(self.options):
                owned[name] = value
            else:
                hps[name] = value
        if owned:
            fields["options"] = tuple(sorted({**dict(self.options), **owned}.items()))
        if hps:
            fields["hp"] = fields.get("hp", self.hp).replace(**hps)
        return dataclasses.replace(self, **fields)

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in _STATIC_FIELDS}
        d.update(dict(self.options))
        d["hp"] = {name: _py(value) for name, value in self.hp.to_dict().items()}
        return d


_STATIC_FIELDS = tuple(f.name for f in dataclasses.fields(Config) if f.name not in ("options", "hp"))
MAX_EPOCHS = 1000  #: update_epochs above this is taken for a typo
WIDE_BATCH_ENVS = 16384  #: envs per device from which the accelerator default of ``unroll`` is 1

#: shared field -> (kind, None allowed), from the annotations
_FIELD_KINDS = {}
for _name, _ann in typing.get_type_hints(Config).items():
    if _name in _STATIC_FIELDS:
        _k, _opt = None, None
        _kinds_of = typing.get_args(_ann) if typing.get_origin(_ann) in (typing.Union, types.UnionType) else (_ann,)
        _opt = type(None) in _kinds_of
        _base = [a for a in _kinds_of if a is not type(None)][0]
        _k = "tuple" if (typing.get_origin(_base) is tuple or _base is tuple) else _base.__name__
        _FIELD_KINDS[_name] = (_k, _opt)
del _name, _ann, _k, _opt, _kinds_of, _base


def _py(x):
    try:
        return float(x)
    except TypeError:
        return jax.tree.map(lambda v: v.tolist() if hasattr(v, "tolist") else v, x)


def _divisors_hint(n: int) -> str:
    divs = [d for d in range(1, min(n, 4096) + 1) if n % d == 0]
    return ", ".join(map(str, divs[:8])) + (", ..." if len(divs) > 8 else "")


def check_split(cfg: Config, devices: int) -> None:
    """The one check that ``cfg``'s batch splits over ``devices`` devices into equal minibatches.

    Used by :class:`Config` (``cfg.devices``), the trainer and the sharded trainer (its mesh).
    """
    if cfg.num_envs % devices:
        raise ConfigError(
            f"devices={devices} must divide num_envs={cfg.num_envs} (each device steps num_envs / devices "
            f"envs); choose devices among {_divisors_hint(cfg.num_envs)}"
        )
    if cfg.batch_size % cfg.num_minibatches:
        raise ConfigError(
            f"num_envs × num_steps = {cfg.num_envs} × {cfg.num_steps} = {cfg.batch_size} is not divisible "
            f"by num_minibatches={cfg.num_minibatches}; choose num_minibatches among the divisors of "
            f"{cfg.batch_size} (e.g. {_divisors_hint(cfg.batch_size)})"
        )
    if cfg.shuffle == "envs" and cfg.num_envs % cfg.num_minibatches:
        raise ConfigError(
            f"shuffle='envs' splits the envs into minibatches: num_envs={cfg.num_envs} is not divisible by "
            f"num_minibatches={cfg.num_minibatches}; use shuffle='samples' or a divisor of num_envs"
        )
    if devices > 1:  # every device forms num_minibatches minibatches of its own shard
        local_envs, local_batch = cfg.num_envs // devices, cfg.batch_size // devices
        if local_batch % cfg.num_minibatches or (cfg.shuffle == "envs" and local_envs % cfg.num_minibatches):
            what = "envs" if cfg.shuffle == "envs" else "samples"
            have = local_envs if cfg.shuffle == "envs" else local_batch
            raise ConfigError(
                f"devices={devices}: each device's {have} {what} must split into num_minibatches="
                f"{cfg.num_minibatches} equal minibatches; lower devices or num_minibatches"
            )


def check_hyperparams(hp: Hyperparams) -> None:
    """Range checks on concrete hyperparameters (skipped for traced / batched-traced values)."""
    for name, (ok, text) in _HP_RULES.items():
        registry.Option(default=0.0, check=ok, allowed=text).validate(name, getattr(hp, name))
    owned = registry.owned_options()
    for name, value in hp.own.items():
        if name in owned:
            owned[name][0].validate(name, value)


# -- presets ------------------------------------------------------------------------------

def preset(name: str, **overrides) -> Config:
    """Return the named preset, with ``overrides`` applied (static fields or hyperparameters)."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is not known; available presets: {', '.join(PRESETS)}" + suggest(name, PRESETS))
    return apply_overrides(PRESETS[name](), overrides)


# -- overrides ----------------------------------------------------------------------------

def option_names() -> dict[str, str]:
    """All settable option names -> 'static' or 'hyperparameter' (owned ones: '... of <owners>')."""
    names = {name: "static" for name in _STATIC_FIELDS}
    names.update({name: "hyperparameter" for name in _HP_FIELDS})
    for name, (spec, labels) in registry.owned_options().items():
        names[name] = ("hyperparameter" if spec.traced else "static") + " of " + ", ".join(labels)
    return names


def _kinds(annotation: Any) -> tuple[set, bool]:
    """(base kinds among {'int','float','bool','str','tuple'}, accepts None) of an annotation."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    kinds, optional = set(), False
    for a in args:
        if a is type(None):
            optional = True
        elif typing.get_origin(a) is tuple or a is tuple:
            kinds.add("tuple")
        elif isinstance(a, type):
            kinds.add(a.__name__)
    return kinds, optional


def _int_text(text: str) -> int:
    value = float(text)
    if not math.isfinite(value) or value != int(value):
        raise ValueError(text)
    return int(value)


def _parse(name: str, raw: Any, annotation: Any) -> Any:
    """Parse a CLI string for option ``name`` according to its annotation."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    kinds, optional = _kinds(annotation)
    if optional and text.lower() in ("none", "null"):
        return None
    try:
        if "tuple" in kinds:
            return tuple(_int_text(t) for t in text.strip("()[] ").replace(" ", ",").split(",") if t)
        if "bool" in kinds:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if "int" in kinds:
            if name == "devices" and text.lower() == "all":
                return jax.device_count()
            return _int_text(text)
        if "float" in kinds:
            return float(text)
    except ValueError:
        want = "/".join(sorted(kinds)) + ("/none" if optional else "")
        if "tuple" in kinds:
            want = "comma-separated positive integers, e.g. 64,64"
        elif name == "devices":
            want = "a positive integer or 'all'"
        raise ConfigError(f"option {name}={raw!r}: expected a value of type {want}") from None
    return text


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Apply ``{name: value}`` (values may be strings from the CLI) to fields, owned options or
    hyperparameters. An owned option that the resulting config does not use is refused."""
    hints = typing.get_type_hints(Config)
    owned = registry.owned_options()
    parsed = {}
    for name, raw in overrides.items():
        if name in _STATIC_FIELDS:
            parsed[name] = _parse(name, raw, hints[name])
        elif name in _HP_FIELDS:
            parsed[name] = _parse(name, raw, float)
        elif name in owned:
            parsed[name] = _parse(name, raw, owned[name][0].type)
        else:
            allowed = sorted(_STATIC_FIELDS) + sorted(_HP_FIELDS) + sorted(owned)
            raise ConfigError(f"unknown option {name!r}{suggest(name, allowed)}; settable options: {', '.join(allowed)}")
    new = cfg.replace(**parsed)
    used = set(new.option_names())
    for name in parsed:
        if name not in used:
            raise ConfigError(
                f"option {name!r} belongs to {', '.join(owned[name][1])}; this config (algo={new.algo!r}, "
                f"objective={new.objective!r}, policy={new.policy!r}) does not use it"
            )
        if name in _USED_ONLY_WITH and not _USED_ONLY_WITH[name][0](new):
            raise ConfigError(f"option {name!r} has no effect here: {_USED_ONLY_WITH[name][1]}")
    if "fixed_minibatch_size" in parsed and "num_minibatches" in parsed and new.fixed_minibatch_size is not None:
        raise ConfigError("num_minibatches and fixed_minibatch_size both set the number of minibatches; give one")
    return new


#: shared options that only act together with another setting: setting them otherwise is refused
_USED_ONLY_WITH = {
    "eval_envs": (lambda c: c.eval_every > 0, "eval_envs is used only by in-loop evaluation; set eval_every > 0 too"),
    "vf_clip_eps": (lambda c: c.clip_value, "vf_clip_eps is the value clip range; it needs clip_value=true"),
    "rms_decay": (lambda c: c.optimizer == "rmsprop", "rms_decay is RMSprop's decay; it needs optimizer=rmsprop"),
    "kl_coef": (lambda c: c.kl_schedule != "none", "kl_coef weights the KL regulariser; set kl_schedule=constant|mdpo"),
    "obs_clip": (lambda c: c.normalize_obs, "obs_clip clips normalised observations; it needs normalize_obs=true"),
    "reward_clip": (lambda c: c.normalize_reward, "reward_clip clips scaled rewards; it needs normalize_reward=true"),
    "truncation_value": (lambda c: c.bootstrap_truncation, "truncation_value picks how V(final obs) is computed; "
                         "it needs bootstrap_truncation=true"),
    "target_entropy": (lambda c: c.auto_entropy, "target_entropy is the learned entropy coefficient's target; "
                       "set auto_entropy=true too"),
    "ent_lr": (lambda c: c.auto_entropy, "ent_lr is the learned entropy coefficient's step; set auto_entropy=true too"),
}


