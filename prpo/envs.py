"""One functional, batched environment protocol over gymnax and brax.

``make_env(name, num_envs, **options)`` returns a :class:`VecEnv`:

* ``env.spec`` -- static :class:`EnvSpec` (observation shape, action space,
  time limit).
* ``env.reset(key) -> (state, obs[N, ...])``
* ``env.step(state, action[N, ...], key) -> (state, TimeStep)``

``key`` is one key (split into ``N`` inside) or ``N`` keys, one per env: with per-env keys an
env's randomness depends on its own key only, not on ``N`` (the sharded trainer derives them
from the global env index, so a run is the same on any number of devices).

Both are pure functions of pytrees (jit / vmap / scan friendly); the VecEnv
itself is immutable and hashable (usable as a static argument or a closure
constant).  Finished episodes (terminated or truncated) are auto-reset inside
``step``; the observation reached by the step is kept in
``TimeStep.final_obs`` and the next observation to act on is ``TimeStep.obs``.
Per-env episode return / length are tracked inside the state.

Everything is batched with ``jax.vmap`` over the ``N`` envs, so a caller may
add more leading axes by vmapping the VecEnv functions themselves
(e.g. ``jax.vmap(env.reset)(seed_keys)``).

Backends
--------
gymnax (every name in ``gymnax.registered_envs``, plus ``prpo.toy_envs``: ``MultiGoal2D``)
    options: ``max_episode_steps`` (overrides ``params.max_steps_in_episode``),
    ``env_params`` (dict of further ``EnvParams`` overrides), ``env_kwargs``
    (dict passed to the environment constructor).
brax (``ant``, ``hopper``, ... or ``brax/ant``)
    options: ``backend`` in {"mjx", "positional", "generalized", "spring"}
    (default "mjx"), ``episode_length`` (default 1000; ``max_episode_steps`` is
    an alias), ``auto_reset`` in {"cached", "fresh"} (default "cached"),
    ``env_kwargs`` (dict passed to the brax env constructor, e.g. ``n_frames``).
MuJoCo Playground (``playground/<Name>``, e.g. ``playground/CheetahRun``; needs the optional
``playground`` package) with its JAX MJX implementation (``impl="jax"``)
    options: ``episode_length`` (default: the env's config, 1000 for DM Control), ``auto_reset``
    and ``env_kwargs`` (dict of ``config_overrides``) as for brax. Playground's own wrappers are not
    used: the time limit, truncation and auto-reset are prpo's (the same code as brax's).
Craftax (``craftax/<Name>``, e.g. ``craftax/Craftax-Classic-Symbolic-v1``) and NAVIX (``navix/<Name>``, e.g.
``navix/Navix-Empty-5x5-v0``), also by their bare names; optional extras ``prpo[craftax]`` / ``prpo[navix]``
    gymnax-API adapters in :mod:`prpo.envs_extra` (the time limit is a truncation; the libraries'
    own auto-reset is not used), wrapped like the gymnax envs. Options: see that module.

brax is an optional extra (``pip install 'prpo[brax]'``): nothing imports it until a brax env is
built or its spec is asked for. Its names (:data:`BRAX_ENV_NAMES`, a static copy of brax's
registry) resolve without it, so ``env_family("ant") == "brax"`` and the error messages list them;
building one without brax raises a one-line ``ValueError`` naming the extra. ``list_envs()`` lists
the brax family only when brax is installed (found without importing it).

Bring your own env
------------------
``as_vec_env(env, num_envs, **options)`` and ``spec_of(env, **options)`` take, besides a name
(then they are ``make_env`` / ``env_spec``):

* a gymnax (1.x API) environment object -- an instance of
  ``gymnax.environments.environment.Environment`` with ``reset_env(key, params) -> (obs, state)``,
  ``step_env(key, state, action, params) -> (obs, state, reward, terminated, info)``,
  ``is_truncated(state, params)`` (default: ``state.time >= params.max_steps_in_episode``),
  ``action_space(params)`` (``spaces.Discrete`` or ``spaces.Box``) and ``default_params`` -- or a
  tuple ``(env, env_params)``. It gets the same wrapper as the named gymnax envs (auto-reset,
  ``final_obs``, truncation, episode returns) and the options ``max_episode_steps`` and
  ``env_params`` (a dict of ``EnvParams`` overrides). Two wrappers of the same object, params,
  options and ``num_envs`` are equal (the object counts by identity).
* any object implementing the protocol below; it is returned as it is, or, when its
  ``num_envs`` differs from the one asked for, as ``env.with_num_envs(num_envs)`` (a ValueError
  if it has no such method). Options cannot be applied to it (a ValueError unless all are None).

The batched env protocol (what ``prpo``'s own envs implement, and what the trainer calls):

``spec``
    an :class:`EnvSpec`: ``name``, ``obs_shape`` (one env's), ``action_space`` (``Discrete(n)``
    or ``Box(low, high, shape)``), ``max_episode_steps``.
``num_envs``
    ``N``, the number of envs stepped together.
``reset(key) -> (state, obs)``
    ``state``: any pytree (each leaf with a leading ``[N]`` axis is the convention, not a
    requirement); ``obs``: float32 ``[N, *spec.obs_shape]``.
``step(state, action, key) -> (state, TimeStep)``
    ``action``: int32 ``[N]`` for ``Discrete``, float32 ``[N, *shape]`` for ``Box``. Envs that
    finish (terminated or truncated) at this step are reset inside ``step``. The :class:`TimeStep`
    fields all lead with ``[N]``: ``obs`` (the observation to act on next: the reset observation
    where done), ``reward`` float32, ``terminated`` bool, ``truncated`` bool (time limit hit and
    not terminated; never both), ``final_obs`` (the observation the step reached, before any
    reset; equal to ``obs`` where not done), ``episode_return`` float32 / ``episode_length``
    int32 (running totals of the episode including this step; where done, the finished
    episode's totals -- the next step starts again from 0).
``key`` (both methods)
    either one key (the env splits it into ``N``) or ``N`` keys, shape ``[N]``, one per env; with
    per-env keys env ``i`` must depend on ``key[i]`` only (the sharded trainer passes keys
    derived from the global env index). Typed keys (``jax.random.key``).
``with_num_envs(n)`` (optional)
    the same env with ``n`` copies (the trainer makes per-device and evaluation batches with it).

Both functions must be pure and traceable (they run under ``jit``, ``vmap`` and ``scan``), and the
object hashable (it is a static argument): identity hashing, a plain class's default, is fine.

A tiny worked example, ``N`` two-armed one-step bandits (arm 1 pays 1, arm 0 pays 0)::

    import jax.numpy as jnp
    from prpo.envs import Discrete, EnvSpec, TimeStep, as_vec_env

    class Bandit:
        spec = EnvSpec("Bandit", obs_shape=(1,), action_space=Discrete(2), max_episode_steps=1)

        def __init__(self, num_envs=1):
            self.num_envs = num_envs

        def with_num_envs(self, n):
            return Bandit(n)

        def reset(self, key):
            return (), jnp.zeros((self.num_envs, 1), jnp.float32)

        def step(self, state, action, key):
            n = self.num_envs
            obs, reward = jnp.zeros((n, 1), jnp.float32), (action == 1).astype(jnp.float32)
            done = jnp.ones((n,), bool)  # every episode ends after one step
            return state, TimeStep(obs=obs, reward=reward, terminated=done, truncated=~done, final_obs=obs,
                                   episode_return=reward, episode_length=jnp.ones((n,), jnp.int32))

    env = as_vec_env(Bandit(), 8)             # Bandit(8), through with_num_envs
    env = as_vec_env((MyGymnaxEnv(), params), 8, max_episode_steps=50)  # a gymnax env object
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import importlib.util
import sys
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = [
    "Discrete",
    "Box",
    "EnvSpec",
    "TimeStep",
    "VecEnvState",
    "VecEnv",
    "make_env",
    "env_spec",
    "as_vec_env",
    "spec_of",
    "list_envs",
    "env_family",
    "BRAX_BACKENDS",
    "BRAX_AUTO_RESET",
    "BRAX_ENV_NAMES",
]

BRAX_BACKENDS = ("mjx", "positional", "generalized", "spring")
BRAX_AUTO_RESET = ("cached", "fresh")
#: brax's env names (``sorted(brax.envs._envs)`` of brax 0.14.2), static so that names resolve and
#: errors list them without importing brax (an optional extra); tests/test_envs.py checks it.
BRAX_ENV_NAMES = (
    "ant", "fast", "halfcheetah", "hopper", "humanoid", "humanoidstandup", "inverted_double_pendulum",
    "inverted_pendulum", "pusher", "reacher", "swimmer", "walker2d",
)
BRAX_EXTRA = "pip install 'prpo[brax]'"

_COMMON_OPTIONS = ("max_episode_steps",)
_GYMNAX_OPTIONS = _COMMON_OPTIONS + ("env_params", "env_kwargs")
_BRAX_OPTIONS = _COMMON_OPTIONS + ("backend", "episode_length", "auto_reset", "env_kwargs")
_PLAYGROUND_OPTIONS = _COMMON_OPTIONS + ("episode_length", "auto_reset", "env_kwargs")
PLAYGROUND_PREFIX = "playground/"


# --------------------------------------------------------------------------- spaces / spec


@dataclasses.dataclass(frozen=True)
class Discrete:
    n: int


@dataclasses.dataclass(frozen=True)
class Box:
    low: float | tuple
    high: float | tuple
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    name: str
    obs_shape: tuple[int, ...]
    action_space: Discrete | Box
    max_episode_steps: int


@flax.struct.dataclass
class TimeStep:
    """Result of one batched step; every leaf has a leading ``[N]`` axis.

    ``episode_return`` / ``episode_length`` hold the totals of the episode that
    ended at this step where ``terminated | truncated``; elsewhere they hold the
    running totals of the ongoing episode (including this step).
    """

    obs: Array
    reward: Array
    terminated: Array
    truncated: Array
    final_obs: Array
    episode_return: Array
    episode_length: Array

    @property
    def done(self) -> Array:
        return self.terminated | self.truncated


@flax.struct.dataclass
class VecEnvState:
    """Wrapper state. ``env_state``: backend state with leading ``[N]`` axis.

    ``episode_length`` is the step count of the ongoing episode (and the time
    limit counter for brax); ``init`` is the cached initial brax
    ``(pipeline_state, obs)`` in ``auto_reset="cached"`` mode, else ``None``.
    """

    env_state: Any
    episode_return: Array  # float32 [N]
    episode_length: Array  # int32 [N]
    init: Any = None


# --------------------------------------------------------------------------- helpers


def _as_typed_key(key: Array) -> Array:
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def _freeze(value: Any) -> Any:
    """Turn (nested) dicts / lists into hashable tuples."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    try:
        hash(value)
    except TypeError as e:
        raise ValueError(f"env option value {value!r} is not hashable") from e
    return value


def _thaw_dict(frozen: Any) -> dict:
    return {} if frozen is None else {k: v for k, v in frozen}


def _bound(x: Any) -> float | tuple:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        return float(arr)
    return tuple(float(v) for v in arr.reshape(-1))


def _gymnax_names() -> list[str]:
    import gymnax

    from prpo.toy_envs import TOY_ENVS  # prpo's own gymnax-API envs (MultiGoal2D)

    return list(gymnax.registered_envs) + list(TOY_ENVS)


def _brax_names() -> list[str]:
    return list(BRAX_ENV_NAMES)  # static: resolving a name must not import brax


def _brax_installed() -> bool:
    """Whether brax can be imported (found without importing it: importing brax prints warnings)."""
    try:
        return importlib.util.find_spec("brax") is not None
    except (ImportError, ValueError):
        return False


def _require_brax(name: str) -> None:
    """ValueError (one line, naming the extra) when brax, needed for env ``name``, does not import."""
    try:
        from brax import envs as _  # noqa: F401
    except ImportError as e:
        raise ValueError(f"brax env {name!r} needs the optional brax extra: {BRAX_EXTRA} ({e})") from None


def _playground_names() -> list[str]:
    """DM Control suite and locomotion names of MuJoCo Playground; ValueError when it is not installed."""
    try:
        from mujoco_playground import registry
    except ImportError:
        raise ValueError(
            "MuJoCo Playground envs need the optional 'playground' package: pip install playground"
        ) from None
    return sorted(registry.dm_control_suite.ALL_ENVS) + sorted(registry.locomotion.ALL_ENVS)


def list_envs() -> dict[str, list[str]]:
    """Available environment names by backend family: gymnax's always, brax's (:data:`BRAX_ENV_NAMES`)
    when brax is installed, MuJoCo Playground's as ``playground/<Name>`` when it is installed, Craftax's
    and NAVIX's as ``craftax/<Name>`` / ``navix/<Name>`` when installed."""
    from prpo import envs_extra

    out = {"gymnax": _gymnax_names()}
    if _brax_installed():
        out["brax"] = _brax_names()
    try:
        out["playground"] = [PLAYGROUND_PREFIX + n for n in _playground_names()]
    except ValueError:
        pass
    for family in envs_extra.FAMILIES:
        if envs_extra.installed(family):
            out[family] = [envs_extra.PREFIXES[family] + n for n in envs_extra.names(family)]
    return out


def _unknown_env(name: str) -> ValueError:
    gymnax_names, brax_names = _gymnax_names(), _brax_names()
    lowered = {c.lower(): c for c in gymnax_names + brax_names}
    lowered.update({f"brax/{c}": f"brax/{c}" for c in brax_names})
    bare = name.lower()
    close = difflib.get_close_matches(bare, list(lowered), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(lowered[c]) for c in close)}?" if close else ""
    extra = "" if _brax_installed() else f"; they need the optional brax extra: {BRAX_EXTRA}"
    return ValueError(
        f"Unknown environment {name!r}.{hint} Available gymnax envs: {gymnax_names}; "
        f"available brax envs (also as 'brax/<name>'{extra}): {brax_names}; "
        "and with their extras 'craftax/<Name>', 'navix/<Name>', 'playground/<Name>' (see `python -m prpo list`)."
    )


def _resolve(name: str) -> tuple[str, str]:
    """Map a user-facing name to (family, canonical name)."""
    if not isinstance(name, str):
        raise ValueError(f"env name must be a string, got {name!r}")
    from prpo import envs_extra  # craftax/<Name>, navix/<Name>

    extra = envs_extra.resolve(name)
    if extra is not None:
        return extra
    if name.startswith("gymnax/"):
        bare = name[len("gymnax/"):]
        if bare in _gymnax_names():
            return "gymnax", bare
        raise _unknown_env(name)
    if name.startswith("brax/"):
        bare = name[len("brax/"):]
        if bare in _brax_names():
            return "brax", bare
        raise _unknown_env(name)
    if name.startswith(PLAYGROUND_PREFIX):
        bare = name[len(PLAYGROUND_PREFIX):]
        names = _playground_names()
        if bare in names:
            return "playground", bare
        close = difflib.get_close_matches(bare, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(PLAYGROUND_PREFIX + c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown MuJoCo Playground environment {bare!r}.{hint} Available: {names}.")
    if name in _gymnax_names():
        return "gymnax", name
    if name in _brax_names():
        return "brax", name
    raise _unknown_env(name)


def env_family(name: Any) -> str:
    """Backend family (``"gymnax"``, ``"brax"`` or ``"playground"``) of an env name; ValueError if unknown.

    Also takes what :func:`as_vec_env` takes: a gymnax env object or ``(env, params)`` is
    ``"gymnax"``; a VecEnv protocol object has its ``family`` attribute, else ``"custom"``."""
    if isinstance(name, str):
        return _resolve(name)[0]
    if _gymnax_object(name, {}) is not None:
        return "gymnax"
    _check_protocol(name, {})
    family = getattr(name, "family", None)
    return family if isinstance(family, str) else "custom"


def _positive_int(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"option {option!r} must be a positive int, got {value!r}")
    return int(value)


def _normalize_options(family: str, name: str, options: dict) -> tuple:
    """Validate options, fill defaults; returns a hashable sorted tuple."""
    from prpo import envs_extra

    allowed = {"gymnax": _GYMNAX_OPTIONS, "brax": _BRAX_OPTIONS, "playground": _PLAYGROUND_OPTIONS,
               **envs_extra.OPTIONS}[family]
    bad = sorted(set(options) - set(allowed))
    if bad:
        hint = ""
        if family == "gymnax" and ({"backend", "auto_reset", "episode_length"} & set(bad)):
            hint = " ('backend', 'auto_reset' and 'episode_length' apply to brax envs only)"
        raise ValueError(
            f"Unknown option(s) {bad} for {family} env {name!r}; allowed options: "
            f"{list(allowed)}{hint}."
        )
    out: dict[str, Any] = {}
    if family == "gymnax" or family in envs_extra.FAMILIES:
        if options.get("max_episode_steps") is not None:
            out["max_episode_steps"] = _positive_int("max_episode_steps", options["max_episode_steps"])
        for k in ("env_params", "env_kwargs"):
            v = options.get(k)
            if v is not None:
                if not isinstance(v, dict):
                    raise ValueError(f"option {k!r} must be a dict, got {type(v).__name__}")
                out[k] = _freeze(v)
    else:
        backend = options.get("backend") or "mjx"  # None -> default (brax)
        if family == "brax" and backend not in BRAX_BACKENDS:
            raise ValueError(
                f"Invalid option backend={backend!r} for brax env {name!r}; "
                f"allowed values: {list(BRAX_BACKENDS)}."
            )
        auto_reset = options.get("auto_reset") or "cached"
        if auto_reset not in BRAX_AUTO_RESET:
            raise ValueError(
                f"Invalid option auto_reset={auto_reset!r} for brax env {name!r}; "
                f"allowed values: {list(BRAX_AUTO_RESET)}."
            )
        ep_len = options.get("episode_length")
        max_steps = options.get("max_episode_steps")
        if ep_len is not None and max_steps is not None and ep_len != max_steps:
            raise ValueError(
                f"options episode_length={ep_len!r} and max_episode_steps={max_steps!r} "
                "disagree (they are aliases for brax envs)."
            )
        length = ep_len if ep_len is not None else (max_steps if max_steps is not None else 1000)
        if family == "playground" and ep_len is None and max_steps is None:
            length = int(_playground_env(name, _freeze(options.get("env_kwargs") or {}) or None)[1])
        if family == "brax":
            out["backend"] = backend
        out["auto_reset"] = auto_reset
        out["episode_length"] = _positive_int("episode_length", length)
        v = options.get("env_kwargs")
        if v is not None:
            if not isinstance(v, dict):
                raise ValueError(f"option 'env_kwargs' must be a dict, got {type(v).__name__}")
            if family == "brax" and "backend" in v:
                raise ValueError("pass 'backend' as a top-level option, not inside env_kwargs")
            if family == "playground" and "impl" in v:
                raise ValueError("playground envs run with impl='jax' (JAX MJX); 'impl' cannot be overridden")
            out["env_kwargs"] = _freeze(v)
    return tuple(sorted(out.items()))


# --------------------------------------------------------------------------- backend construction (cached)


@functools.lru_cache(maxsize=64)
def _gymnax_env(name: str, opts: tuple):
    import gymnax

    from prpo.toy_envs import TOY_ENVS

    o = dict(opts)
    env, params = (TOY_ENVS[name] if name in TOY_ENVS else functools.partial(gymnax.make, name))(**_thaw_dict(o.get("env_kwargs")))
    return env, _override_params(name, params, o)


def _override_params(name: str, params: Any, o: dict) -> Any:
    """``params`` with the ``env_params`` / ``max_episode_steps`` options of ``o`` applied."""
    overrides = _thaw_dict(o.get("env_params"))
    if "max_episode_steps" in o:
        other = overrides.get("max_steps_in_episode", o["max_episode_steps"])
        if other != o["max_episode_steps"]:
            raise ValueError(
                f"max_episode_steps={o['max_episode_steps']} disagrees with "
                f"env_params['max_steps_in_episode']={other}"
            )
        overrides["max_steps_in_episode"] = o["max_episode_steps"]
    if overrides:
        fields = {f.name for f in dataclasses.fields(params)}
        bad = sorted(set(overrides) - fields)
        if bad:
            raise ValueError(f"env_params {bad} are not fields of {name}'s EnvParams {sorted(fields)}")
        params = params.replace(**overrides)
    return params


def _gymnax_spec(name: str, opts: tuple) -> EnvSpec:
    return _gymnax_spec_of(name, *_gymnax_env(name, opts))


def _gymnax_spec_of(name: str, env: Any, params: Any) -> EnvSpec:
    from gymnax.environments import spaces as gspaces

    obs = jax.eval_shape(lambda k: env.reset_env(k, params)[0], jax.random.key(0))
    space = env.action_space(params)
    if isinstance(space, gspaces.Discrete):
        action_space = Discrete(int(space.n))
    elif isinstance(space, gspaces.Box):
        action_space = Box(_bound(space.low), _bound(space.high), tuple(int(s) for s in space.shape))
    else:
        raise ValueError(f"gymnax env {name!r} has unsupported action space {space!r}")
    return EnvSpec(
        name=name,
        obs_shape=tuple(int(s) for s in obs.shape),
        action_space=action_space,
        max_episode_steps=int(params.max_steps_in_episode),
    )


@functools.lru_cache(maxsize=32)
def _brax_env(name: str, backend: str, env_kwargs: Any):
    from brax import envs as brax_envs

    return brax_envs.get_environment(name, backend=backend, **_thaw_dict(env_kwargs))


def _brax_spec(name: str, opts: tuple) -> EnvSpec:
    o = dict(opts)
    env = _brax_env(name, o["backend"], o.get("env_kwargs"))
    obs = jax.eval_shape(lambda k: env.reset(k).obs, jax.random.key_data(jax.random.key(0)))
    if not hasattr(obs, "shape"):
        raise ValueError(f"brax env {name!r} has non-array observations {obs!r}; not supported")
    return EnvSpec(
        name=name,
        obs_shape=tuple(int(s) for s in obs.shape),
        action_space=Box(-1.0, 1.0, (int(env.action_size),)),
        max_episode_steps=o["episode_length"],
    )


@functools.lru_cache(maxsize=32)
def _playground_env(name: str, env_kwargs: Any):
    """``(env, episode_length)`` of a MuJoCo Playground env with the JAX MJX implementation."""
    from mujoco_playground import registry

    overrides = {**_thaw_dict(env_kwargs), "impl": "jax"}
    env = registry.load(name, config_overrides=overrides)
    return env, int(getattr(env._config, "episode_length", 1000))


def _playground_spec(name: str, opts: tuple) -> EnvSpec:
    o = dict(opts)
    env, _ = _playground_env(name, o.get("env_kwargs"))
    obs = jax.eval_shape(lambda k: env.reset(k).obs, jax.random.key_data(jax.random.key(0)))
    if not hasattr(obs, "shape"):
        raise ValueError(f"playground env {name!r} has dict observations; not supported")
    return EnvSpec(
        name=PLAYGROUND_PREFIX + name,
        obs_shape=tuple(int(s) for s in obs.shape),
        action_space=Box(-1.0, 1.0, (int(env.action_size),)),
        max_episode_steps=o["episode_length"],
    )


def _extra_spec(family: str, name: str, opts: tuple) -> EnvSpec:
    from prpo import envs_extra

    env, params = envs_extra.load(family, name, opts)
    return _gymnax_spec_of(env.name, env, params)


@functools.lru_cache(maxsize=128)
def _spec_cached(family: str, name: str, opts: tuple) -> EnvSpec:
    from prpo import envs_extra

    if family in envs_extra.FAMILIES:
        return _extra_spec(family, name, opts)
    return {"gymnax": _gymnax_spec, "brax": _brax_spec, "playground": _playground_spec}[family](name, opts)


def env_spec(name: str, **options) -> EnvSpec:
    """Static spec of an env (no stepping, no compilation; cached)."""
    family, canonical = _resolve(name)
    opts = _normalize_options(family, canonical, options)
    if family == "brax":
        _require_brax(canonical)
    return _spec_cached(family, canonical, opts)


# --------------------------------------------------------------------------- VecEnv


class VecEnv:
    """Batched functional env over ``num_envs`` copies. Immutable and hashable."""

    family: str

    def __init__(self, name: str, num_envs: int, opts: tuple, spec: EnvSpec):
        self._name = name
        self._num_envs = num_envs
        self._opts = opts
        self._spec = spec

    # identity ------------------------------------------------------------
    def _key(self):
        return (type(self).__name__, self._name, self._num_envs, self._opts)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other._key() == self._key()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._opts)
        return f"{type(self).__name__}({self._name!r}, num_envs={self._num_envs}{', ' if opts else ''}{opts})"

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    @property
    def name(self) -> str:
        return self._name

    @property
    def num_envs(self) -> int:
        return self._num_envs

    @property
    def options(self) -> dict:
        return dict(self._opts)

    def with_num_envs(self, n: int) -> "VecEnv":
        """The same env (backend, options) with ``n`` copies."""
        n = _num_envs_arg(n)
        if n == self._num_envs:
            return self
        new = copy.copy(self)  # immutable: a shallow copy shares the backend env
        new._num_envs = n
        return new

    # helpers ---------------------------------------------------------------
    def sample_actions(self, key: Array) -> Array:
        """Uniformly random actions ``[N, ...]`` from the action space."""
        space = self._spec.action_space
        n = self._num_envs
        if isinstance(space, Discrete):
            return jax.random.randint(key, (n,), 0, space.n, dtype=jnp.int32)
        low = jnp.asarray(space.low, jnp.float32)
        high = jnp.asarray(space.high, jnp.float32)
        return jax.random.uniform(key, (n, *space.shape), jnp.float32, low, high)

    def _split(self, key: Array) -> Array:
        key = _as_typed_key(key)
        if key.ndim == 1:  # already one key per env (shape [N]): see ``reset`` / ``step``
            return key
        return jax.random.split(key, self._num_envs)

    def reset(self, key: Array) -> tuple[VecEnvState, Array]:
        raise NotImplementedError

    def step(self, state: VecEnvState, action: Array, key: Array) -> tuple[VecEnvState, TimeStep]:
        raise NotImplementedError


def _episode_step(ep_ret, ep_len, reward, terminated, truncated, obs, final_obs):
    """One env's episode bookkeeping: ``(episode_return, episode_length, TimeStep)`` after a step,
    the carried counters reset to 0 where the episode ended (see :class:`TimeStep`)."""
    ret = ep_ret + reward
    length = jnp.minimum(ep_len, jnp.iinfo(jnp.int32).max - 1) + 1  # saturates: an episode without a time limit cannot wrap
    done = terminated | truncated
    ts = TimeStep(
        obs=obs,
        reward=reward,
        terminated=terminated,
        truncated=truncated,
        final_obs=final_obs,
        episode_return=ret,
        episode_length=length,
    )
    return jnp.where(done, 0.0, ret), jnp.where(done, 0, length), ts


def _tree_key(tree: Any) -> Any:
    """A hashable value key of a pytree of arrays / scalars (gymnax ``EnvParams``)."""
    leaves, treedef = jax.tree.flatten(tree)

    def leaf(x):
        if isinstance(x, (jax.Array, np.ndarray, np.generic)):
            try:
                a = np.asarray(x)
            except Exception:  # noqa: BLE001 -- not concrete (a tracer): count it by identity
                return ("id", id(x))
            return (a.dtype.str, a.shape, a.tobytes())
        try:
            hash(x)
        except TypeError:
            return ("id", id(x))  # the VecEnv keeps ``tree`` alive, so the id stays unique
        return (type(x).__name__, x)

    key = (treedef, tuple(leaf(x) for x in leaves))
    try:
        hash(key)
    except TypeError:  # unhashable static fields in the treedef
        return ("id", id(tree))
    return key


class GymnaxVecEnv(VecEnv):
    family = "gymnax"

    def __init__(self, name, num_envs, opts, spec, env=None, params=None):
        """A named gymnax env (``env=None``: built from ``name`` and ``opts``) or the gymnax
        environment object ``env`` with ``params`` (options already applied; see :func:`as_vec_env`)."""
        super().__init__(name, num_envs, opts, spec)
        if env is None:
            self._env, self._params = _gymnax_env(name, opts)
            self._ident = None
        else:
            self._env, self._params = env, params
            self._ident = ("object", id(env), _tree_key(params))  # the object by identity, params by value

    def _key(self):
        return super()._key() + (self._ident,)

    def __repr__(self) -> str:
        r = super().__repr__()
        return r if self._ident is None else r.replace(f"({self._name!r}", f"(<{self._name} object>", 1)

    def reset(self, key):
        env, params = self._env, self._params

        def one(k):
            obs, s = env.reset_env(k, params)
            return jnp.asarray(obs, jnp.float32), s

        obs, env_state = jax.vmap(one)(self._split(key))
        n = self._num_envs
        state = VecEnvState(
            env_state=env_state,
            episode_return=jnp.zeros((n,), jnp.float32),
            episode_length=jnp.zeros((n,), jnp.int32),
        )
        return state, obs

    def step(self, state, action, key):
        env, params = self._env, self._params
        discrete = isinstance(self._spec.action_space, Discrete)
        action = jnp.asarray(action, jnp.int32 if discrete else jnp.float32)
        key = _as_typed_key(key)
        if key.ndim == 1:  # one key per env
            pairs = jax.vmap(jax.random.split)(key)
            step_keys, reset_keys = pairs[:, 0], pairs[:, 1]
        else:
            k_step, k_reset = jax.random.split(key)
            # separate key batches: when step_env ignores its key, XLA drops that split
            step_keys = self._split(k_step)
            reset_keys = self._split(k_reset)

        def one(s, ep_ret, ep_len, a, ks, kr):
            obs_st, s_st, reward, terminated, _ = env.step_env(ks, s, a, params)
            reward = jnp.asarray(reward, jnp.float32).reshape(())
            terminated = jnp.asarray(terminated, jnp.bool_).reshape(())
            truncated = jnp.asarray(env.is_truncated(s_st, params), jnp.bool_).reshape(()) & ~terminated
            done = terminated | truncated
            obs_re, s_re = env.reset_env(kr, params)
            new_s = jax.tree.map(
                lambda r, x: jnp.where(done, r, x).astype(jnp.result_type(x)), s_re, s_st
            )
            obs_st = jnp.asarray(obs_st)
            obs = jnp.where(done, obs_re, obs_st).astype(jnp.float32)
            ret, length, ts = _episode_step(
                ep_ret, ep_len, reward, terminated, truncated, obs, obs_st.astype(jnp.float32)
            )
            return new_s, ret, length, ts

        env_state, ep_ret, ep_len, ts = jax.vmap(one)(
            state.env_state, state.episode_return, state.episode_length, action, step_keys, reset_keys
        )
        return state.replace(env_state=env_state, episode_return=ep_ret, episode_length=ep_len), ts


def _dtypes(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.result_type(x), tree)


def _cast(tree: Any, dtypes: Any) -> Any:
    """Cast leaves to the given dtypes (brax mixes python floats / weak types)."""
    return jax.tree.map(lambda x, d: jnp.asarray(x).astype(d), tree, dtypes)


class BraxVecEnv(VecEnv):
    family = "brax"
    #: the state field with the physics state (brax ``State.pipeline_state``)
    physics_field = "pipeline_state"

    def __init__(self, name, num_envs, opts, spec):
        super().__init__(name, num_envs, opts, spec)
        o = dict(opts)
        self._env = self._make(name, o)
        self._episode_length = o["episode_length"]
        self._cached = o["auto_reset"] == "cached"

    @staticmethod
    def _make(name, o):
        return _brax_env(name, o["backend"], o.get("env_kwargs"))

    def _reset_one(self, k):
        s = self._env.reset(jax.random.key_data(k))  # brax expects raw uint32 keys
        return s.replace(
            obs=jnp.asarray(s.obs, jnp.float32),
            reward=jnp.asarray(s.reward, jnp.float32),
            done=jnp.asarray(s.done, jnp.float32),
        )

    def reset(self, key):
        bstate = jax.vmap(self._reset_one)(self._split(key))
        n = self._num_envs
        init = (getattr(bstate, self.physics_field), bstate.obs) if self._cached else None
        state = VecEnvState(
            env_state=bstate,
            episode_return=jnp.zeros((n,), jnp.float32),
            episode_length=jnp.zeros((n,), jnp.int32),
            init=init,
        )
        return state, bstate.obs

    def step(self, state, action, key):
        env = self._env
        cached = self._cached
        limit = self._episode_length
        field = self.physics_field
        action = jnp.asarray(action, jnp.float32)
        reset_keys = None if cached else self._split(key)

        def one(s, ep_ret, ep_len, a, init, kr):
            dtypes = _dtypes(s)  # before step: some brax envs mutate state.metrics in place
            nxt = env.step(s, a)
            reward = jnp.asarray(nxt.reward, jnp.float32).reshape(())
            terminated = (jnp.asarray(nxt.done) > 0.5).reshape(())
            truncated = (ep_len + 1 >= limit) & ~terminated
            done = terminated | truncated
            final_obs = jnp.asarray(nxt.obs, jnp.float32)
            nxt = _cast(nxt.replace(obs=final_obs, reward=reward), dtypes)
            where = lambda r, x: jnp.where(done, r, x)  # noqa: E731
            if cached:
                init_ps, init_obs = init
                nxt = nxt.replace(
                    **{field: jax.tree.map(where, init_ps, getattr(nxt, field))},
                    obs=where(init_obs, nxt.obs),
                )
            else:
                nxt = jax.tree.map(where, self._reset_one(kr), nxt)
            ret, length, ts = _episode_step(ep_ret, ep_len, reward, terminated, truncated, nxt.obs, final_obs)
            return nxt, ret, length, ts

        in_axes = (0, 0, 0, 0, 0 if cached else None, None if cached else 0)
        bstate, ep_ret, ep_len, ts = jax.vmap(one, in_axes=in_axes)(
            state.env_state, state.episode_return, state.episode_length, action, state.init, reset_keys
        )
        return state.replace(env_state=bstate, episode_return=ep_ret, episode_length=ep_len), ts


class PlaygroundVecEnv(BraxVecEnv):
    """MuJoCo Playground env (``impl="jax"``): brax's wrapper logic on Playground's ``State``,
    whose physics state is ``data`` (an ``mjx.Data``) instead of ``pipeline_state``."""

    family = "playground"
    physics_field = "data"

    @staticmethod
    def _make(name, o):
        return _playground_env(name, o.get("env_kwargs"))[0]


class _ExtraVecEnv(GymnaxVecEnv):
    """A :mod:`prpo.envs_extra` adapter (a gymnax-API environment) in the gymnax wrapper."""

    def __init__(self, name, num_envs, opts, spec):
        from prpo import envs_extra

        VecEnv.__init__(self, name, num_envs, opts, spec)
        self._env, self._params = envs_extra.load(self.family, name, opts)
        self._ident = None


class CraftaxVecEnv(_ExtraVecEnv):
    family = "craftax"


class NavixVecEnv(_ExtraVecEnv):
    family = "navix"


# --------------------------------------------------------------------------- factory


def _num_envs_arg(num_envs: Any) -> int:
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    return int(num_envs)


def make_env(name: str, num_envs: int, **options) -> VecEnv:
    """Create a batched env of ``num_envs`` copies. See module docstring for options."""
    num_envs = _num_envs_arg(num_envs)
    family, canonical = _resolve(name)
    opts = _normalize_options(family, canonical, options)
    if family == "brax":
        _require_brax(canonical)
    spec = _spec_cached(family, canonical, opts)
    cls = {"gymnax": GymnaxVecEnv, "brax": BraxVecEnv, "playground": PlaygroundVecEnv, "craftax": CraftaxVecEnv,
           "navix": NavixVecEnv}[family]
    return cls(canonical, num_envs, opts, spec)


# --------------------------------------------------------------------------- bring your own env

_PROTOCOL = ("spec", "num_envs", "reset", "step")


def _short_repr(obj: Any, limit: int = 120) -> str:
    r = repr(obj)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _is_gymnax_object(obj: Any) -> bool:
    # an instance of gymnax's Environment implies gymnax is imported: no need to import it here
    mod = sys.modules.get("gymnax.environments.environment")
    return mod is not None and isinstance(obj, mod.Environment)


def _gymnax_object(env: Any, options: dict):
    """``(env, params)`` tuple or env object -> ``(name, opts, env, params)`` with options applied, or None."""
    params = None
    if isinstance(env, tuple) and len(env) == 2 and _is_gymnax_object(env[0]):
        env, params = env
    elif not _is_gymnax_object(env):
        return None
    if params is None:
        params = env.default_params
    try:
        name = str(env.name)
    except Exception:  # noqa: BLE001 -- a user env whose ``name`` is not implemented
        name = type(env).__name__
    opts = _normalize_options("gymnax", name, options)
    if "env_kwargs" in dict(opts):
        raise ValueError(
            f"option 'env_kwargs' applies to gymnax env names only; construct the env object {name!r} with them"
        )
    return name, opts, env, _override_params(name, params, dict(opts))


def _check_protocol(env: Any, options: dict) -> None:
    """ValueError unless ``env`` implements the VecEnv protocol (module docstring) and ``options`` are unset."""
    missing = [a for a in _PROTOCOL if not hasattr(env, a)]
    if missing:
        raise ValueError(
            f"env object {_short_repr(env)} is not a gymnax Environment and does not implement prpo's "
            f"VecEnv protocol: missing {', '.join(repr(a) for a in missing)} "
            "(see 'Bring your own env' in prpo.envs)"
        )
    not_callable = [a for a in ("reset", "step") if not callable(getattr(env, a))]
    if not_callable:
        raise ValueError(
            f"env object {_short_repr(env)}: {', '.join(repr(a) for a in not_callable)} must be methods "
            "of prpo's VecEnv protocol"
        )
    if not isinstance(env.spec, EnvSpec):
        raise ValueError(
            f"env object {_short_repr(env)}: 'spec' must be a prpo.envs.EnvSpec, got {_short_repr(env.spec)}"
        )
    n = env.num_envs
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"env object {_short_repr(env)}: 'num_envs' must be a positive int, got {n!r}")
    given = sorted(k for k, v in options.items() if v is not None)
    if given:
        raise ValueError(
            f"options {given} cannot be applied to the VecEnv object {_short_repr(env)}; configure the object itself"
        )


def as_vec_env(env: Any, num_envs: int, **options) -> VecEnv:
    """A :class:`VecEnv` of ``num_envs`` copies from an env name (= :func:`make_env`), a gymnax
    environment object or ``(env, env_params)`` tuple (options ``max_episode_steps``,
    ``env_params``), or an object implementing the VecEnv protocol (returned as it is, or through
    its ``with_num_envs``). See "Bring your own env" in the module docstring."""
    if isinstance(env, str):
        return make_env(env, num_envs, **options)
    num_envs = _num_envs_arg(num_envs)
    gym = _gymnax_object(env, options)
    if gym is not None:
        name, opts, genv, params = gym
        spec = _gymnax_spec_of(name, genv, params)
        return GymnaxVecEnv(name, num_envs, opts, spec, env=genv, params=params)
    _check_protocol(env, options)
    if int(env.num_envs) == num_envs:
        return env
    if not callable(getattr(env, "with_num_envs", None)):
        raise ValueError(
            f"env object {_short_repr(env)} has num_envs={env.num_envs} but {num_envs} are asked for, and it has "
            "no with_num_envs(n) method to make that many copies"
        )
    out = env.with_num_envs(num_envs)
    _check_protocol(out, {})
    if int(out.num_envs) != num_envs:
        raise ValueError(
            f"env object {_short_repr(env)}: with_num_envs({num_envs}) returned an env with num_envs={out.num_envs}"
        )
    return out


def spec_of(env: Any, **options) -> EnvSpec:
    """Static :class:`EnvSpec` of anything :func:`as_vec_env` takes (a name: :func:`env_spec`)."""
    if isinstance(env, str):
        return env_spec(env, **options)
    gym = _gymnax_object(env, options)
    if gym is not None:
        name, _, genv, params = gym
        return _gymnax_spec_of(name, genv, params)
    _check_protocol(env, options)
    return env.spec
