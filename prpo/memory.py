"""Does a run fit? In 32-bit indices (:func:`check_sizes`) and in device memory (:func:`check_fits`).

Both refuse a run with a :class:`~prpo.config.ConfigError` *before* it runs:

* :func:`check_sizes` (no compile, no JAX call) — the sizes that JAX's default 32-bit integers
  (no ``jax_enable_x64``) must index: the samples of one update on one device (the minibatch
  shuffle permutes them with int32 indices), the global env ids and stratified group ids
  (per-env / per-group keys), and the number of updates (the int32 update counter and
  ``lax.scan`` trip count). Each must be at most ``2^31 − 1``. :func:`prpo.make_train` calls
  it; every counter that is traced is bounded by one of these sizes, so none can overflow.
* :func:`check_fits` — compares XLA's memory estimate of a compiled executable
  (``jax.jit(f).lower(...).compile()``) with the device's memory and names the ``num_envs``
  that would fit. :func:`estimate_bytes` compiles a function for its estimate alone.

This module imports nothing of prpo but :mod:`prpo.registry` (for ``ConfigError``), so any
layer may call it.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from prpo.registry import ConfigError

__all__ = ["INT32_MAX", "check_sizes", "compiled_bytes", "device_memory", "estimate_bytes", "check_fits"]

INT32_MAX = 2**31 - 1  #: the largest count / index a default (32-bit) JAX integer holds
GB = 1e9


def check_sizes(cfg, devices: int | None = None) -> None:
    """Refuse a config whose sizes overflow 32-bit indices or counters (``ConfigError``).

    ``cfg``: a :class:`~prpo.config.Config` (only its sizes are read); ``devices``: how many
    devices share the envs (default ``cfg.devices``). Python-side sizes (``num_updates``,
    ``batch_size``, env steps) are Python ints and never overflow; these are the ones that
    become traced int32 values or int32 index arrays.
    """
    devices = getattr(cfg, "devices", 1) if devices is None else devices
    n_envs, n_steps = cfg.num_envs, cfg.num_steps
    batch = n_envs * n_steps
    local = batch // devices
    if local > INT32_MAX:
        where = "" if devices == 1 else f" per device ({devices} devices: {local} each)"
        raise ConfigError(
            f"num_envs × num_steps = {n_envs} × {n_steps} = {batch} samples per update{where} is more than "
            f"2^31 − 1 = {INT32_MAX}, the most samples 32-bit indices address (the minibatch shuffle indexes "
            f"every sample of a device's batch); lower num_envs or num_steps (num_envs ≤ {INT32_MAX // n_steps} "
            f"at num_steps={n_steps}{' per device' if devices > 1 else ''}) or split the envs over more devices"
        )
    if n_envs > INT32_MAX:
        raise ConfigError(f"num_envs={n_envs} is more than 2^31 − 1 = {INT32_MAX} (env ids are 32-bit); lower num_envs")
    if getattr(cfg, "shuffle", None) == "stratified" and batch // cfg.num_minibatches > INT32_MAX:
        raise ConfigError(
            f"shuffle='stratified' keys every group of num_minibatches samples by its global index: "
            f"num_envs × num_steps / num_minibatches = {batch // cfg.num_minibatches} groups is more than "
            f"2^31 − 1 = {INT32_MAX}; raise num_minibatches or use shuffle='samples'"
        )
    num_updates = cfg.total_timesteps // batch
    if num_updates > INT32_MAX:
        raise ConfigError(
            f"total_timesteps / (num_envs × num_steps) = {cfg.total_timesteps} / {batch} = {num_updates} updates is "
            f"more than 2^31 − 1 = {INT32_MAX} (the update counter is a 32-bit integer); raise num_envs or "
            f"num_steps to at least {-(-cfg.total_timesteps // INT32_MAX)} samples per update"
        )


def compiled_bytes(compiled) -> int | None:
    """XLA's estimate of the device memory ``compiled`` needs: arguments + outputs − donated
    (aliased) buffers + temporaries + generated code, in bytes; ``None`` where the backend gives
    no memory analysis."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 -- unsupported on this backend
        return None
    if m is None:
        return None
    if isinstance(m, (list, tuple)):  # one per device program on some versions: they are alike
        if not m:
            return None
        m = m[0]
    get = lambda name: int(getattr(m, name, 0) or 0)  # noqa: E731
    return (get("argument_size_in_bytes") + get("output_size_in_bytes") - get("alias_size_in_bytes")
            + get("temp_size_in_bytes") + get("generated_code_size_in_bytes"))


def device_memory(device=None) -> tuple[int | None, str]:
    """``(bytes, description)`` of the memory a program on ``device`` (default: the first
    device) may use: the allocator's ``bytes_limit`` on accelerators, the machine's available RAM
    on CPU (``MemAvailable``, else free pages); ``None`` bytes where unknown."""
    if device is None:
        import jax

        device = jax.devices()[0]
    kind = str(getattr(device, "device_kind", device))
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 -- not implemented for this device
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), kind
    if getattr(device, "platform", "cpu") != "cpu":
        return None, kind
    try:  # the kernel's estimate of what can be allocated without swapping
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, f"this machine ({kind}, available RAM)"
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), f"this machine ({kind}, free RAM)"
    except (ValueError, OSError, AttributeError):
        return None, kind


def estimate_bytes(fn: Callable, *args, **kwargs) -> int | None:
    """Compile ``jax.jit(fn)`` for ``args`` (arrays or ``jax.ShapeDtypeStruct``: nothing is
    allocated or run) and return :func:`compiled_bytes` of it."""
    import jax

    return compiled_bytes(jax.jit(fn).lower(*args, **kwargs).compile())


def _round_down(n: float) -> int:
    """``n`` rounded down to two significant digits (an estimate, not a promise)."""
    n = int(n)
    if n < 100:
        return max(n, 0)
    scale = 10 ** (len(str(n)) - 2)
    return n // scale * scale


def check_fits(compiled, *, what: str = "this run", num_envs: int | None = None,
               baseline: tuple[int, Any] | None = None, device=None, limit_bytes: int | None = None) -> int | None:
    """Refuse (``ConfigError``) a compiled run whose memory estimate exceeds the device's memory.

    ``compiled``: a compiled executable (``jax.jit(f).lower(...).compile()``), or its size in
    bytes. ``what``: names the run in the message. ``num_envs``: the run's ``num_envs``; the
    message then estimates the largest ``num_envs`` that fits — by the line ``a + b·num_envs``
    through ``compiled`` and ``baseline`` when ``baseline = (other_num_envs, compiled_or_bytes)``
    (a second compile of the same run with fewer envs), otherwise proportionally (all the
    memory taken to scale with ``num_envs``; fixed costs make that estimate a little high).
    ``device``: the device it runs on (default: the first); ``limit_bytes`` overrides its memory.

    Returns the estimate in bytes, or ``None`` (and checks nothing) where the backend has no
    memory analysis or the device's memory is unknown.
    """
    need = compiled if isinstance(compiled, int) else compiled_bytes(compiled)
    if limit_bytes is None:
        limit_bytes, kind = device_memory(device)
    else:
        kind = "the device" if device is None else str(getattr(device, "device_kind", device))
    if need is None or limit_bytes is None or need <= limit_bytes:
        return need
    msg = (f"{what} needs {need / GB:.1f} GB of device memory (XLA's compiled estimate) but {kind} has "
           f"{limit_bytes / GB:.1f} GB")
    if num_envs:
        fit, how = None, "proportionally"
        if baseline is not None:
            n0, c0 = baseline
            need0 = c0 if isinstance(c0, int) else compiled_bytes(c0)
            if need0 is not None and n0 != num_envs and need != need0:
                per_env = (need - need0) / (num_envs - n0)
                if per_env > 0:
                    fit, how = (limit_bytes - (need - per_env * num_envs)) / per_env, "by a + b·num_envs from two compiles"
        if fit is None:
            fit = num_envs * limit_bytes / need
        fits = (f"about {_round_down(fit)} would (estimated {how})" if fit >= 1 else
                f"not even num_envs=1 would: the fixed costs alone exceed it (estimated {how})")
        msg += (f"; num_envs={num_envs} does not fit, {fits}: lower num_envs, or the seeds / grid settings "
                f"that run together, or split the envs over devices")
    raise ConfigError(msg)
