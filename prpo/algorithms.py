"""Algorithm registry: each algorithm is a name bound to a composition of core pieces.

An :class:`Algorithm` names its surrogate (``Config.objective``), the action spaces it
supports and the checks it makes on a config before compilation. PPO is the first; SPO, BPO,
MDPO, A2C, PQN and the flow/diffusion families plug in here.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Callable

from prpo.config import Config, ConfigError

__all__ = ["Algorithm", "register", "get", "names"]


@dataclasses.dataclass(frozen=True)
class Algorithm:
    name: str
    description: str
    action_spaces: tuple[str, ...] = ("discrete", "continuous")
    extra_check: Callable[[Config], None] | None = None

    def check(self, cfg: Config) -> None:
        """Validate ``cfg`` for this algorithm and its env (no compilation)."""
        from prpo import envs
        from prpo.train import check_env

        spec = check_env(cfg)
        kind = "discrete" if isinstance(spec.action_space, envs.Discrete) else "continuous"
        if kind not in self.action_spaces:
            raise ConfigError(
                f"algorithm {self.name!r} supports {' and '.join(self.action_spaces)} action spaces only; "
                f"env {cfg.env!r} is {kind}"
            )
        if self.extra_check is not None:
            self.extra_check(cfg)


_REGISTRY: dict[str, Algorithm] = {}


def register(algo: Algorithm) -> Algorithm:
    _REGISTRY[algo.name] = algo
    return algo


def get(name: str) -> Algorithm:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown algorithm {name!r}{hint}; available: {', '.join(names())}")
    return _REGISTRY[name]


def names() -> list[str]:
    return list(_REGISTRY)


register(
    Algorithm(
        name="ppo",
        description="PPO (clip / dual-clip / plain PG surrogate; GAE with truncation bootstrap)",
    )
)
