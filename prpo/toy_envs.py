"""Small JAX environments for demonstrations, in gymnax's API (served by ``prpo.envs``).

``MultiGoal2D`` — a one-step 2-D goal bandit with ``num_goals`` equally good, separated optima:
the observation is a constant, the action ``a ∈ [−2, 2]²`` is paid

    r(a) = max_g exp(−max(0, ‖a − g‖ − flat)² / (2·width²)),   goals g on the unit circle (angles 2πk/num_goals)

and the episode terminates. ``MultiGoal2D`` has ``flat = 0`` (a Gaussian bump per goal, width
0.3); ``MultiGoal2D-flat`` pays the full reward 1 anywhere within ``flat = 0.25`` of a goal
(width 0.1 outside), so a policy whose samples all land inside both discs gets zero advantages
and nothing left to pull one mode into the other. Every goal is an optimum with reward 1; between goals the reward is
≈ 0. A Gaussian policy can only cover one goal well and has to pick a mode; a flow or diffusion
policy can keep all of them (``experiments/multimodal.py``, ``tests/test_multimodal.py``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

__all__ = ["MultiGoal2D", "TOY_ENVS", "goals", "mode_fractions"]


@struct.dataclass
class EnvState(environment.EnvState):
    time: int


@struct.dataclass
class EnvParams(environment.EnvParams):
    num_goals: int = 2
    width: float = 0.3
    flat: float = 0.0
    max_steps_in_episode: int = 1


def goals(num_goals: int = 2) -> np.ndarray:
    """Goal positions ``[num_goals, 2]`` on the unit circle (two goals: (1, 0) and (−1, 0))."""
    ang = 2 * np.pi * np.arange(num_goals) / num_goals
    return np.stack([np.cos(ang), np.sin(ang)], axis=-1)


class MultiGoal2D(environment.Environment[EnvState, EnvParams]):
    """One-step bandit with ``num_goals`` symmetric optima (module docstring)."""

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def step_env(self, key, state, action, params) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[Any, Any]]:
        a = jnp.clip(jnp.asarray(action, jnp.float32).reshape(2), -2.0, 2.0)
        ang = 2 * jnp.pi * jnp.arange(params.num_goals) / params.num_goals
        g = jnp.stack([jnp.cos(ang), jnp.sin(ang)], axis=-1)
        d2 = jnp.sum(jnp.square(a - g), axis=-1)
        d2 = jnp.where(params.flat > 0, jnp.square(jnp.maximum(jnp.sqrt(d2) - params.flat, 0.0)), d2)
        reward = jnp.max(jnp.exp(-d2 / (2 * params.width**2)))
        state = EnvState(time=state.time + 1)
        return self.get_obs(state), state, reward, jnp.array(True), {}

    def reset_env(self, key, params) -> tuple[jax.Array, EnvState]:
        state = EnvState(time=0)
        return self.get_obs(state), state

    def get_obs(self, state, params=None, key=None) -> jax.Array:
        return jnp.ones((1,), jnp.float32)

    def is_terminated(self, state, params) -> jax.Array:
        return jnp.array(True)

    @property
    def name(self) -> str:
        return "MultiGoal2D"

    def action_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-2.0, 2.0, (2,), jnp.float32)

    def observation_space(self, params: EnvParams) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (1,), jnp.float32)


#: name -> constructor returning ``(env, default_params)`` like ``gymnax.make``
TOY_ENVS = {
    "MultiGoal2D": lambda **kw: (MultiGoal2D(**kw), MultiGoal2D(**kw).default_params),
    "MultiGoal2D-flat": lambda **kw: (MultiGoal2D(**kw), EnvParams(width=0.1, flat=0.25)),
}


def mode_fractions(actions, num_goals: int = 2, radius: float = 0.5) -> np.ndarray:
    """Fraction of ``actions`` ``[N, 2]`` within ``radius`` of each goal: ``[num_goals]``
    (the rest, between goals, is ``1 − sum``)."""
    a = np.asarray(actions, np.float64).reshape(-1, 2)
    d = np.linalg.norm(a[:, None, :] - goals(num_goals)[None], axis=-1)
    return (d < radius).mean(0)
