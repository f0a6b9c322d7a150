"""Craftax and NAVIX behind prpo's env protocol, as gymnax (1.x API) environments.

``prpo.envs.make_env`` dispatches the names ``craftax/<Name>`` and ``navix/<Name>`` here. Each
suite gets a small :class:`gymnax.environments.environment.Environment` subclass that turns the
library's own functional API into gymnax's ``reset_env`` / ``step_env`` / ``is_truncated``; prpo's
gymnax wrapper then does the rest, as for any gymnax env: batching, auto-reset keeping
``final_obs``, terminated vs truncated, episode statistics. The adapters are also plain gymnax
environments, so ``prpo.envs.as_vec_env(CraftaxEnv(...), n)`` works on them directly. Nothing here
imports the libraries until an env is built; a missing one raises a one-line ``ValueError`` naming
its extra.

Craftax (``pip install 'prpo[craftax]'``)
    ``craftax/Craftax-Classic-Symbolic-v1`` (also the bare ``Craftax-Classic-Symbolic-v1``; the
    other three: ``Craftax-Classic-Pixels-v1``, ``Craftax-Symbolic-v1``, ``Craftax-Pixels-v1``).
    Built without Craftax's auto-reset (prpo's keeps the final observation). Craftax's ``done``
    mixes the time limit (``EnvParams.max_timesteps``, 10000 for Classic) with game over (death,
    lava, ...); the adapter splits them: ``terminated`` is game over judged with no time limit,
    and the time limit is a truncation (``state.timestep >= max_episode_steps``).
    Options: ``max_episode_steps`` (sets ``max_timesteps``), ``env_params`` (a dict of further
    ``EnvParams`` overrides, e.g. ``{"day_length": 100}``).
NAVIX (``pip install 'prpo[navix]'``)
    ``navix/<Name>`` for every name in ``navix.registry()``, e.g. ``navix/Navix-Empty-5x5-v0`` (also the
    bare ``Navix-...`` names).
    NAVIX reports ``step_type`` 1 (truncation: its ``max_steps`` reached) and 2 (termination)
    itself; the adapter maps them to ``truncated`` / ``terminated``. NAVIX keeps its random key in
    its state (seeded by the reset key), so the per-step key is unused. Observations are the
    env's ``observation_fn`` output (default: the symbolic ``[H, W, 3]`` grid) as float32.
    Options: ``max_episode_steps`` (NAVIX's ``max_steps``; NAVIX's default is 100),
    ``env_kwargs`` (a dict passed to ``navix.make``, e.g. ``{"observation_fn": navix.observations.rgb}``).

Why NAVIX rather than Jumanji: NAVIX's API is the one closest to prpo's protocol -- a
functional ``reset(key)`` / ``step(timestep, action)`` on one flax pytree, a single array
observation, discrete MiniGrid actions, and an explicit truncation / termination step type (the
distinction prpo keeps). Jumanji's observations are structured named tuples with action masks,
which prpo's policies do not consume, and its end-of-episode signal is dm_env's discount; it also
pulls in heavier unrelated dependencies (huggingface-hub, gymnasium).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from gymnax.environments import environment as gym_env
from gymnax.environments import spaces

FAMILIES = ("craftax", "navix")
PREFIXES = {"craftax": "craftax/", "navix": "navix/"}
EXTRAS = {"craftax": "pip install 'prpo[craftax]'", "navix": "pip install 'prpo[navix]'"}
MODULES = {"craftax": "craftax", "navix": "navix"}
#: the options each family takes (validated by prpo.envs like the gymnax options)
OPTIONS = {"craftax": ("max_episode_steps", "env_params"), "navix": ("max_episode_steps", "env_kwargs")}
#: Craftax's env names (``craftax.craftax_env.make_craftax_env_from_name``), static so that they resolve
#: without Craftax installed; the bare names are aliases of ``craftax/<name>`` (no other family uses them)
CRAFTAX_ENV_NAMES = (
    "Craftax-Classic-Symbolic-v1", "Craftax-Classic-Pixels-v1", "Craftax-Symbolic-v1", "Craftax-Pixels-v1",
)
#: NAVIX's env names (``sorted(navix.registry())`` of NAVIX 0.7.4), static for the same reason and so that
#: listing them does not import NAVIX (which imports distrax, TensorFlow Probability and wandb: seconds);
#: a name a newer NAVIX registers resolves too, by asking its registry. The bare names are aliases as well.
NAVIX_ENV_NAMES = (
    "Navix-DistShift1-v0", "Navix-DistShift2-v0", "Navix-DoorKey-16x16-v0", "Navix-DoorKey-5x5-v0",
    "Navix-DoorKey-6x6-v0", "Navix-DoorKey-8x8-v0", "Navix-DoorKey-Random-16x16-v0", "Navix-DoorKey-Random-5x5-v0",
    "Navix-DoorKey-Random-6x6-v0", "Navix-DoorKey-Random-8x8-v0", "Navix-Dynamic-Obstacles-16x16-v0",
    "Navix-Dynamic-Obstacles-5x5-Random-v0", "Navix-Dynamic-Obstacles-5x5-v0", "Navix-Dynamic-Obstacles-6x6-Random-v0",
    "Navix-Dynamic-Obstacles-6x6-v0", "Navix-Dynamic-Obstacles-8x8-v0", "Navix-Empty-16x16-v0", "Navix-Empty-5x5-v0",
    "Navix-Empty-6x6-v0", "Navix-Empty-8x8-v0", "Navix-Empty-Random-16x16-v0", "Navix-Empty-Random-5x5-v0",
    "Navix-Empty-Random-6x6-v0", "Navix-Empty-Random-8x8-v0", "Navix-FourRooms-v0", "Navix-GoToDoor-5x5-v0",
    "Navix-GoToDoor-6x6-v0", "Navix-GoToDoor-8x8-v0", "Navix-KeyCorridorS3R1-v0", "Navix-KeyCorridorS3R2-v0",
    "Navix-KeyCorridorS3R3-v0", "Navix-KeyCorridorS4R3-v0", "Navix-KeyCorridorS5R3-v0", "Navix-KeyCorridorS6R3-v0",
    "Navix-LavaGapS5-v0", "Navix-LavaGapS6-v0", "Navix-LavaGapS7-v0", "Navix-SimpleCrossingS11N5-v0",
    "Navix-SimpleCrossingS9N1-v0", "Navix-SimpleCrossingS9N2-v0", "Navix-SimpleCrossingS9N3-v0",
)
_STATIC_NAMES = {"craftax": CRAFTAX_ENV_NAMES, "navix": NAVIX_ENV_NAMES}

_INT32_MAX = int(jnp.iinfo(jnp.int32).max)


@flax.struct.dataclass
class ExtraParams:
    """gymnax-style params of an adapter: the library's own params (Craftax's ``EnvParams``; ``None``
    for NAVIX, whose settings live on the env object) and the time limit."""

    inner: Any
    max_steps_in_episode: int


def installed(family: str) -> bool:
    """Whether the family's library can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec(MODULES[family]) is not None
    except (ImportError, ValueError):
        return False


def _require(family: str, name: str) -> None:
    """ValueError (one line, naming the extra) when the library of env ``name`` does not import."""
    try:
        __import__(MODULES[family])
    except ImportError as e:
        raise ValueError(
            f"{family} env {name!r} needs the optional {family} extra: {EXTRAS[family]} ({e})"
        ) from None


def names(family: str) -> list[str]:
    """The family's env names, without the prefix (a static list: nothing is imported)."""
    return list(_STATIC_NAMES[family])


def _registered_navix_name(bare: str) -> bool:
    """Whether an installed NAVIX newer than :data:`NAVIX_ENV_NAMES` registers ``bare``."""
    if not bare.startswith("Navix-") or not installed("navix"):
        return False
    import navix

    return bare in navix.registry()


def resolve(name: str) -> tuple[str, str] | None:
    """``(family, bare name)`` for a ``craftax/`` or ``navix/`` name or a bare Craftax / NAVIX name; None
    for other names; ValueError for an unknown name under one of the prefixes."""
    for family, known in _STATIC_NAMES.items():
        if name in known:
            return family, name
    for family, prefix in PREFIXES.items():
        if name.startswith(prefix):
            bare = name[len(prefix):]
            known = names(family)
            if bare in known or (family == "navix" and _registered_navix_name(bare)):
                return family, bare
            close = difflib.get_close_matches(bare, known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(prefix + c) for c in close)}?" if close else ""
            raise ValueError(f"Unknown {family} environment {bare!r}.{hint} Available: {known}.")
    return None


# --------------------------------------------------------------------------- Craftax


class CraftaxEnv(gym_env.Environment):
    """A Craftax env (built without Craftax's auto-reset) as a gymnax environment; time limit = truncation."""

    def __init__(self, craftax_env: Any, name: str):
        super().__init__()
        self._inner = craftax_env
        self._name = name

    @property
    def name(self) -> str:
        return PREFIXES["craftax"] + self._name

    @property
    def default_params(self) -> ExtraParams:
        p = self._inner.default_params
        return ExtraParams(inner=p, max_steps_in_episode=int(p.max_timesteps))

    @staticmethod
    def _inner_params(params: ExtraParams) -> Any:
        return params.inner.replace(max_timesteps=params.max_steps_in_episode)

    def reset_env(self, key, params):
        obs, state = self._inner.reset_env(key, self._inner_params(params))
        # Craftax's reset builds 24 state leaves from Python scalars (weakly typed); its step returns
        # them strongly typed, so without this the rollout's step compiles twice
        return obs, jax.tree.map(lambda x: jnp.asarray(x, jnp.result_type(x)), state)

    def step_env(self, key, state, action, params):
        inner = self._inner_params(params)
        obs, state, reward, _, info = self._inner.step_env(key, state, action, inner)
        # Craftax's done is "game over or time up"; game over alone is the termination
        terminated = self._inner.is_terminal(state, inner.replace(max_timesteps=_INT32_MAX))
        return obs, state, reward, terminated, info

    def is_truncated(self, state, params):
        return state.timestep >= params.max_steps_in_episode

    def action_space(self, params=None):
        return spaces.Discrete(int(self._inner.num_actions))


# --------------------------------------------------------------------------- NAVIX


class NavixEnv(gym_env.Environment):
    """A NAVIX env as a gymnax environment: the state is NAVIX's ``Timestep``; its ``step_type``
    gives ``terminated`` (2) and truncation (1, or ``t`` at the params' time limit)."""

    def __init__(self, navix_env: Any, name: str):
        super().__init__()
        self._inner = navix_env
        self._name = name

    @property
    def name(self) -> str:
        return PREFIXES["navix"] + self._name

    @property
    def default_params(self) -> ExtraParams:
        return ExtraParams(inner=None, max_steps_in_episode=int(self._inner.max_steps))

    def reset_env(self, key, params):
        timestep = self._inner.reset(key)
        return timestep.observation, timestep

    def step_env(self, key, state, action, params):
        del key  # NAVIX draws from the key it keeps in its state
        # prpo resets finished episodes itself, so ``state`` is never done here and NAVIX's own
        # auto-reset branch in ``step`` is not taken
        timestep = self._inner.step(state, action)
        return timestep.observation, timestep, timestep.reward, timestep.step_type == 2, {}

    def is_truncated(self, state, params):
        return (state.step_type == 1) | (state.t >= params.max_steps_in_episode)

    def action_space(self, params=None):
        return spaces.Discrete(int(len(self._inner.action_set)))


# --------------------------------------------------------------------------- construction


def _thaw(frozen: Any) -> dict:
    return {} if frozen is None else {k: v for k, v in frozen}


@functools.lru_cache(maxsize=32)
def load(family: str, name: str, opts: tuple) -> tuple[gym_env.Environment, ExtraParams]:
    """``(adapter, params)`` of env ``name`` of ``family`` with prpo's normalised ``opts`` (a sorted
    tuple of ``(option, value)``, dicts frozen to tuples) applied; cached, so equal arguments give
    the same adapter object."""
    _require(family, PREFIXES[family] + name)
    o = dict(opts)
    if family == "craftax":
        from craftax.craftax_env import make_craftax_env_from_name

        env = CraftaxEnv(make_craftax_env_from_name(name, auto_reset=False), name)
        params = env.default_params
        overrides = _thaw(o.get("env_params"))
        if overrides:
            fields = {f.name for f in dataclasses.fields(params.inner)}
            bad = sorted(set(overrides) - fields)
            if bad:
                raise ValueError(f"env_params {bad} are not fields of Craftax's EnvParams {sorted(fields)}")
            if "max_timesteps" in overrides:
                raise ValueError("set Craftax's time limit with max_episode_steps, not env_params['max_timesteps']")
            params = params.replace(inner=params.inner.replace(**overrides))
        if "max_episode_steps" in o:
            params = params.replace(max_steps_in_episode=int(o["max_episode_steps"]))
        return env, params
    import navix

    kwargs = _thaw(o.get("env_kwargs"))
    if "max_steps" in kwargs:
        raise ValueError("set NAVIX's time limit with max_episode_steps, not env_kwargs['max_steps']")
    if "max_episode_steps" in o:
        kwargs["max_steps"] = int(o["max_episode_steps"])
    env = NavixEnv(navix.make(name, **kwargs), name)
    return env, env.default_params
