"""Open registries: algorithms, surrogates, policy families, presets — and the options they own.

This module imports nothing of prpo, so every layer may use it: the config validates an
algorithm's own options through it, the engine finds an algorithm's hooks through it, and an
algorithm module (in ``prpo.algorithms`` or in a user's file) registers itself into it.

An *owner* (an algorithm, a surrogate or a policy family) declares the options it owns as
:class:`Option` specs: static ones (hashed into the compile, e.g. ``diffusion_steps``) and
traced hyperparameters (pytree leaves, sweepable in one compile, e.g. ``bpo_temp``). A config
carries the options of the owners it selects — its ``algo``, its ``objective`` and its
``policy`` — and nothing else: ``Config(algo="pqn").hp.eps_start`` exists, ``Config().hp.eps_start``
does not. Two owners may share an option only with the same spec object (``dual_clip_c`` of
the dual-clip and CE-GPPO surrogates).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Callable

__all__ = [
    "ConfigError",
    "Option",
    "hyperparameter",
    "static",
    "ALGORITHMS",
    "SURROGATES",
    "POLICIES",
    "PRESETS",
    "register_surrogate",
    "register_policy",
    "register_preset",
    "owners",
    "owned_options",
    "suggest",
]


class ConfigError(ValueError):
    """A user-facing configuration error (raised before compilation)."""


def suggest(name, choices) -> str:
    """`` (did you mean a, b?)`` for close matches of ``name`` among ``choices``, else ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


@dataclasses.dataclass(frozen=True, eq=False)
class Option:
    """One option owned by an algorithm, a surrogate or a policy family.

    ``traced``: a hyperparameter (a float leaf of ``Hyperparams``) rather than a static option
    of ``Config``. ``type``: the annotation CLI strings are parsed by (``int``, ``float``,
    ``bool``, ``str``, ``tuple[int, ...]``, ``X | None``). ``choices``: the allowed values, or
    ``check`` + ``allowed`` (a predicate and its wording, e.g. ``"> 0"``).
    """

    default: Any
    doc: str = ""
    traced: bool = True
    type: Any = float
    choices: tuple | None = None
    check: Callable[[Any], bool] | None = None
    allowed: str = ""

    def validate(self, name: str, value: Any) -> None:
        """Raise :class:`ConfigError` unless ``value`` is allowed (hyperparameters: each element)."""
        if self.traced:
            for v in _floats(name, value):
                if not math.isfinite(v):
                    raise ConfigError(f"hyperparameter {name}={v!r} must be a finite number"
                                      + (f" {self.allowed}" if self.allowed and self.allowed != "finite" else ""))
                if abs(v) > FLOAT32_MAX:
                    raise ConfigError(f"hyperparameter {name}={v!r} is not representable in float32 "
                                      f"(|value| ≤ {FLOAT32_MAX:.3g}); allowed: {self.allowed or 'finite'}")
                if self.check is not None and not self.check(v):
                    raise ConfigError(f"hyperparameter {name}={v!r} must be {self.allowed}")
            return
        if self.choices is not None:
            if value not in self.choices or isinstance(value, bool) != any(isinstance(c, bool) for c in self.choices):
                raise ConfigError(f"{name}={value!r} is not allowed; allowed values: {fmt_choices(self.choices)}")
            return
        if self.check is not None and not _safe(self.check, value):
            raise ConfigError(f"{name} must be {self.allowed}, got {value!r}")


FLOAT32_MAX = 3.4028234663852886e38


def hyperparameter(default: float, doc: str = "", check=None, allowed: str = "") -> Option:
    """A traced hyperparameter: a pytree leaf of ``Hyperparams`` (``--set``, ``--grid``)."""
    return Option(default=default, doc=doc, traced=True, type=float, check=check, allowed=allowed)


def static(default, doc: str = "", type=str, choices=None, check=None, allowed: str = "") -> Option:
    """A static option of ``Config`` (part of the compile: shapes, structure, switches)."""
    return Option(default=default, doc=doc, traced=False, type=type, choices=choices, check=check, allowed=allowed)


def fmt_choices(allowed) -> str:
    return ", ".join("none" if a is None else repr(a) if isinstance(a, str) else str(a) for a in allowed)


def _safe(check, value) -> bool:
    try:
        return bool(check(value))
    except Exception:  # a wrong type fails the check
        return False


def _floats(name: str, value) -> list[float]:
    """Concrete values of a scalar / array hyperparameter; [] for traced (abstract) values.

    A hyperparameter is a number (or an array of numbers, e.g. a sweep's column); ``None``, a
    bool, a string or a Python list is refused with a pointer to the right form."""
    if value is None or isinstance(value, (bool, str, list, tuple, dict)) or type(value).__name__ == "bool_":
        hint = f" (to sweep several values use grid={{{name!r}: [...]}})" if isinstance(value, (list, tuple)) else ""
        raise ConfigError(f"hyperparameter {name} must be a number, got {value!r}{hint}")
    try:
        import numpy as np

        arr = np.asarray(value)
    except Exception:  # tracers under jit / vmap
        return []
    if arr.dtype.kind not in "iuf":
        raise ConfigError(f"hyperparameter {name} must be a number, got {value!r}")
    return [float(x) for x in arr.astype(np.float64).ravel()]


# -- the registries --------------------------------------------------------------------------

#: algorithm name -> algorithm object (``prpo.algorithm.Algorithm``: presets, options, hooks)
ALGORITHMS: dict[str, Any] = {}

#: surrogate name (``Config.objective``) -> ``f(log_ratio, adv, hp) -> (per-sample loss, diagnostics)``.
#: A function may carry ``options`` (its own hyperparameters), ``needs_context`` (it is called as
#: ``f(log_ratio, adv, hp, ctx)``) and ``algorithm`` (it only works inside that algorithm).
SURROGATES: dict[str, Callable] = {}

#: policy family name (``Config.policy``) -> entry with ``make(cfg, spec, network)``, ``options``, ``check``
POLICIES: dict[str, Any] = {}

#: preset name -> ``() -> Config``
PRESETS: dict[str, Callable[[], Any]] = {}


def register_surrogate(name: str, fn: Callable, options: dict[str, Option] | None = None,
                       needs_context: bool = False, algorithm: str | None = None) -> Callable:
    """Register ``fn`` as ``Config(objective=name)``, with the hyperparameters it owns."""
    fn.options = dict(options or {})
    if needs_context:
        fn.needs_context = True
    if algorithm is not None:
        fn.algorithm = algorithm
    SURROGATES[name] = fn
    return fn


@dataclasses.dataclass(frozen=True)
class PolicyEntry:
    """A policy family selectable as ``Config(policy=name)`` (continuous actions only for now)."""

    name: str
    make: Callable  # (cfg, spec, network | None) -> policy family object
    options: dict = dataclasses.field(default_factory=dict)
    check: Callable | None = None  # (cfg) -> None, raises ConfigError
    doc: str = ""


def register_policy(name: str, make: Callable, options: dict[str, Option] | None = None, check=None,
                    doc: str = "") -> PolicyEntry:
    entry = PolicyEntry(name=name, make=make, options=dict(options or {}), check=check, doc=doc)
    POLICIES[name] = entry
    return entry


def register_preset(name: str, fn: Callable[[], Any]) -> None:
    PRESETS[name] = fn


def owners(algo: str, objective: str, policy: str) -> list[tuple[str, dict, Callable | None]]:
    """``(label, options, check)`` of the registered owners a config selects (unknown names skipped)."""
    out = []
    a = ALGORITHMS.get(algo)
    if a is not None:
        out.append((f"algorithm {algo!r}", dict(getattr(a, "options", {}) or {}), getattr(a, "check_config", None)))
    s = SURROGATES.get(objective)
    if s is not None:
        out.append((f"objective {objective!r}", dict(getattr(s, "options", {}) or {}), None))
    p = POLICIES.get(policy)
    if p is not None:
        out.append((f"policy {policy!r}", dict(p.options), p.check))
    return out


def owned_options() -> dict[str, tuple[Option, list[str]]]:
    """Every registered owned option: name -> (spec, labels of its owners)."""
    out: dict[str, tuple[Option, list[str]]] = {}
    groups = [(f"algorithm {n!r}", getattr(a, "options", {}) or {}) for n, a in ALGORITHMS.items()]
    groups += [(f"objective {n!r}", getattr(f, "options", {}) or {}) for n, f in SURROGATES.items()]
    groups += [(f"policy {n!r}", p.options) for n, p in POLICIES.items()]
    for label, opts in groups:
        for name, spec in opts.items():
            if name in out:
                out[name][1].append(label)
            else:
                out[name] = (spec, [label])
    return out
