"""Runs on disk: the run record, full-state checkpoints (orbax), resume checks and loading.

A run directory (``--out DIR`` / ``run_experiment(out_dir=DIR)``) holds::

    DIR/run.json            the run record: config, grid settings, seeds, versions, status (written first)
    DIR/metrics.jsonl       one line per update and setting, appended and flushed after every chunk
    DIR/checkpoints/<K>/    orbax checkpoint after update K: the whole TrainState of every
                            setting × seed, the per-update metrics so far, and a JSON record
    DIR/summary.json        written when the run has finished
    DIR/eval.json           evaluations of the trained policy (``python -m prpo eval DIR``; loading: ``prpo.load``)

A checkpoint holds everything the next update reads — parameters, optimizer state, env state
and current observations, normaliser and reward-scaler statistics, the RNG key, the update
counter and the algorithm's own state (``TrainState.algo_state``, ``eval_return``) — so a
resumed run continues bit for bit as if it had not stopped (on the same device count and
backend). The state is saved as global arrays: a checkpoint written on D devices restores on
any other count. Orbax writes each checkpoint to a temporary directory and renames it when
complete, so a run killed while writing keeps the previous checkpoint loadable.

This module is the driver layer's: the engine (``prpo.train``) knows nothing of files.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from prpo.config import Config, ConfigError, Hyperparams

__all__ = [
    "RUN_FILE",
    "CHECKPOINTS",
    "CheckpointError",
    "OutputError",
    "Checkpoints",
    "read_run",
    "write_json",
    "config_from_dict",
    "resume_config",
    "run_files",
    "check_custom",
]

FORMAT = 1  #: version of the run-directory layout
RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
#: the files and folders a run writes into its directory (``--overwrite`` removes exactly these)
RUN_OUTPUTS = (RUN_FILE, CHECKPOINTS, SUMMARY, METRICS, "eval.json", "tensorboard", "wandb")

#: static options a resumed run may change: the budget (to extend it) and the device layout
RESUMABLE_CHANGES = ("total_timesteps", "devices")


class CheckpointError(ConfigError):
    """A run directory or checkpoint that cannot be resumed or loaded (missing, partial, corrupt,
    of another run); raised before anything compiles."""


class OutputError(RuntimeError):
    """A run's file could not be written (disk full, read-only, ...). Every file written before
    stays valid; the message names the last complete checkpoint."""


# ---------------------------------------------------------------------------- small files


def write_json(path, obj, indent: int | None = 2) -> None:
    """Write JSON to ``path`` atomically: a temporary file, flushed and renamed, so ``path`` is
    either its old content or the whole new one. Raises :class:`OutputError` on a write error."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, default=_to_py)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise OutputError(f"could not write {path}: {e.strerror or e}") from None


def _to_py(x):
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def run_files(out_dir) -> list[str]:
    """The run outputs present in ``out_dir`` (names from :data:`RUN_OUTPUTS`)."""
    return [n for n in RUN_OUTPUTS if os.path.exists(os.path.join(out_dir, n))]


def read_run(run_dir) -> dict:
    """The run record ``run_dir/run.json``; :class:`CheckpointError` if there is none or it is unreadable."""
    if not isinstance(run_dir, (str, os.PathLike)) or not str(run_dir).strip():
        raise CheckpointError(f"a run directory must be a path, got {run_dir!r}")
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"{str(run_dir)!r} is not a directory" + (" (it is a file)" if os.path.exists(run_dir) else ""))
    path = os.path.join(run_dir, RUN_FILE)
    if not os.path.exists(path):
        hint = " (it has a summary.json from an older prpo, without checkpoints)" if os.path.exists(
            os.path.join(run_dir, SUMMARY)) else ""
        raise CheckpointError(f"{str(run_dir)!r} holds no prpo run: no {RUN_FILE}{hint}")
    try:
        with open(path) as f:
            record = json.load(f)
        if not isinstance(record, dict) or "config" not in record or record.get("format") != FORMAT:
            raise ValueError("not a prpo run record of this version")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is unreadable: {e}") from None
    return record


# ---------------------------------------------------------------------------- config round trip


def config_from_dict(d: dict) -> Config:
    """The :class:`Config` of ``Config.to_dict()`` (as stored in run.json), validated."""
    from prpo import config as config_lib

    d = dict(d)
    hp = dict(d.pop("hp", {}))
    fields = {}
    for name in config_lib._STATIC_FIELDS:
        if name in d:
            value = d.pop(name)
            fields[name] = tuple(value) if isinstance(value, list) else value
    shared = {k: hp.pop(k) for k in list(hp) if k in config_lib._HP_FIELDS}
    return Config(**fields, options=tuple(sorted(d.items())), hp=Hyperparams(**shared, own=hp))


def resume_config(saved: Config, given: Config, where: str) -> Config:
    """``given`` if it differs from the ``saved`` config of the run in ``where`` only in
    :data:`RESUMABLE_CHANGES` and hyperparameter values; otherwise :class:`CheckpointError`
    naming every differing option."""
    a, b = saved.to_dict(), given.to_dict()
    hp_a, hp_b = a.pop("hp"), b.pop("hp")
    differ = sorted(k for k in set(a) | set(b) if k not in RESUMABLE_CHANGES and a.get(k, "—") != b.get(k, "—"))
    if differ:
        shown = ", ".join(f"{k}={a.get(k, '—')!r} (saved) vs {b.get(k, '—')!r}" for k in differ[:4])
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        raise CheckpointError(f"cannot resume {where} with another configuration: {shown}{more}; a resumed run may "
                              f"change only {', '.join(RESUMABLE_CHANGES)} and hyperparameter values")
    if set(hp_a) != set(hp_b):
        raise CheckpointError(f"cannot resume {where}: its hyperparameters are {sorted(hp_a)}, got {sorted(hp_b)}")
    return given


# ---------------------------------------------------------------------------- the state on disk


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _storable(tree):
    """Typed PRNG keys as their raw uint32 data, empty arrays (a brax state's ``act`` of a
    model without actuators' shape) as a scalar stand-in: orbax stores plain, non-empty arrays."""

    def one(x):
        if _is_key(x):
            return jax.random.key_data(x)
        if getattr(x, "size", 1) == 0:
            return np.zeros((), x.dtype)
        return x

    return jax.tree.map(one, tree)


def _abstract_storable(abstract):
    """ShapeDtypeStructs of :func:`_storable` of a tree of ShapeDtypeStructs / arrays, shardings kept."""

    def one(x):
        if _is_key(x):
            data = jax.eval_shape(jax.random.key_data, x)
            sharding = getattr(x, "sharding", None)
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
        if x.size == 0:
            return np.zeros((), x.dtype)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

    return jax.tree.map(one, abstract)


class _quiet_orbax:
    """Orbax's writer threads report a failed write (logs with tracebacks, tensorstore callbacks
    on a closed event loop) before the error reaches us; the driver reports it in one line."""

    NAMES = ("absl", "asyncio", "concurrent.futures")

    def __enter__(self):
        import logging
        import sys
        import threading

        self._levels = {n: logging.getLogger(n).level for n in self.NAMES}
        for n in self.NAMES:
            logging.getLogger(n).setLevel(logging.CRITICAL)
        self._hooks = (sys.unraisablehook, threading.excepthook)
        sys.unraisablehook = threading.excepthook = lambda *a: None

    def __exit__(self, *exc):
        import logging
        import sys
        import threading

        for n, level in self._levels.items():
            logging.getLogger(n).setLevel(level)
        if exc[0] is None:  # after a failure the writer threads may still report it: stay quiet
            sys.unraisablehook, threading.excepthook = self._hooks
        return False


def _silence_orbax() -> None:
    import logging
    import sys
    import threading

    for n in _quiet_orbax.NAMES:
        logging.getLogger(n).setLevel(logging.CRITICAL + 1)
    sys.unraisablehook = threading.excepthook = lambda *a: None


def _reason(e: Exception) -> str:
    """The OS error inside an orbax / tensorstore error message, else its first line."""
    import re

    text = str(e)
    m = re.search(r"Failed to write [^:]*: ([^\[]+?) \[os_error_code", text) or re.search(r"\[Errno \d+\] ([^:'\]]+)", text)
    if m:
        return m.group(1).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _key_impl(t):
    """The PRNG implementation of a key array or a key ShapeDtypeStruct."""
    if isinstance(t, jax.Array):
        return jax.random.key_impl(t)
    return getattr(t.dtype, "_impl", None)  # a ShapeDtypeStruct's key dtype carries it


def _unstorable(template, raw):
    """Wrap the raw key data back into typed keys where ``template`` holds keys; empty arrays back."""

    def one(t, x):
        if _is_key(t):
            return jax.random.wrap_key_data(x, impl=_key_impl(t))
        if t.size == 0:
            sharding = getattr(t, "sharding", None)
            empty = jnp.zeros(t.shape, t.dtype)
            return jax.device_put(empty, sharding) if sharding is not None else empty
        return x

    return jax.tree.map(one, template, raw)


class Checkpoints:
    """The orbax checkpoints of one run directory (``DIR/checkpoints/<update>``).

    ``keep``: keep the last this many (older ones are deleted after a new one is complete);
    ``None`` keeps all. ``read_only``: for resume checks and loading.
    """

    def __init__(self, out_dir, keep: int | None = None, read_only: bool = False):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.dir = os.path.abspath(os.path.join(out_dir, CHECKPOINTS))
        if read_only and not os.path.isdir(self.dir):
            self.manager = None
            return
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=False, create=not read_only, read_only=read_only,
            cleanup_tmp_directories=not read_only,
        )
        self.manager = ocp.CheckpointManager(self.dir, options=options)

    def steps(self) -> list[int]:
        """The updates of the complete checkpoints, oldest first."""
        if self.manager is None:
            return []
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def path(self, step: int) -> str:
        return os.path.join(self.dir, str(step))

    def save(self, step: int, state, history: dict, record: dict) -> float:
        """Save ``state`` (global arrays), the metrics ``history`` ({name: [G, S, step]}) and the
        JSON ``record`` as checkpoint ``step``; the seconds it took. :class:`OutputError` if it
        could not be written (the partial one is removed; earlier ones stay)."""
        ocp = self._ocp
        t0 = time.perf_counter()
        record = {**record, "update": int(step), "metrics": {k: str(np.asarray(v).dtype) for k, v in history.items()}}
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(_storable(state)),
            history=ocp.args.StandardSave({k: np.asarray(v) for k, v in history.items()}),
            record=ocp.args.JsonSave(json.loads(json.dumps(record, default=_to_py))),
        )
        try:
            with _quiet_orbax():
                self.manager.save(int(step), args=args, force=True)
                self.manager.wait_until_finished()
        except Exception as e:  # orbax / tensorstore wrap OSErrors in ValueError and others
            _silence_orbax()  # its writer threads would log the same error again, with tracebacks
            self._remove_partial(step)
            raise OutputError(f"could not write checkpoint {self.path(step)}: {_reason(e)}") from None
        return time.perf_counter() - t0

    def _remove_partial(self, step: int) -> None:
        for name in os.listdir(self.dir) if os.path.isdir(self.dir) else ():
            if name.startswith(f"{step}.orbax-checkpoint-tmp") or (name == str(step) and step not in self._listed()):
                shutil.rmtree(os.path.join(self.dir, name), ignore_errors=True)

    def _listed(self) -> list[int]:
        try:
            return self.steps()
        except Exception:  # noqa: BLE001
            return []

    def record(self, step: int) -> dict:
        """The JSON record of checkpoint ``step`` (:class:`CheckpointError` if unreadable)."""
        ocp = self._ocp
        try:
            with _quiet_orbax():
                out = self.manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))
            record = out.record
            if not isinstance(record, dict) or "update" not in record:
                raise ValueError("no update count in its record")
            return record
        except Exception as e:  # noqa: BLE001
            _silence_orbax()
            raise CheckpointError(self._corrupt(step, e)) from None

    def restore(self, step: int, abstract_state, record: dict, history_shape: tuple[int, int]):
        """``(state, history)`` of checkpoint ``step``: the state into the structure, shapes and
        shardings of ``abstract_state`` (ShapeDtypeStructs or arrays), the metrics as numpy
        ``[G, S, step]``. :class:`CheckpointError` if it does not fit or is corrupt."""
        ocp = self._ocp
        target = _abstract_storable(abstract_state)
        n_groups, n_seeds = history_shape
        metrics = {k: np.zeros((n_groups, n_seeds, step), np.dtype(d)) for k, d in record["metrics"].items()}
        try:
            with _quiet_orbax():
                out = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), history=ocp.args.StandardRestore(metrics)))
        except Exception as e:  # noqa: BLE001
            _silence_orbax()  # tensorstore's callbacks would report it again, with tracebacks
            raise CheckpointError(self._corrupt(step, e)) from None
        got = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), out.state)
        want = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), target)
        if got != want:
            raise CheckpointError(f"checkpoint {self.path(step)} does not match this run's state (shapes or dtypes differ)")
        return _unstorable(abstract_state, out.state), {k: np.asarray(v) for k, v in out.history.items()}

    def _corrupt(self, step: int, e: Exception) -> str:
        reason = (str(e).splitlines()[0] if str(e) else type(e).__name__)[:200]
        earlier = [s for s in self.steps() if s < step]
        hint = (f"; the earlier checkpoint {earlier[-1]} is complete: delete {self.path(step)} to resume from it"
                if earlier else "")
        return f"checkpoint {self.path(step)} is corrupt or incomplete ({reason}){hint}"


# ---------------------------------------------------------------------------- load


def _on_device(abstract, device=None):
    """ShapeDtypeStructs placed on one device (the restore target of a single-device run)."""
    sharding = jax.sharding.SingleDeviceSharding(device or jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract)


#: Python objects a run can be trained with that a run directory cannot hold
CUSTOM = ("env", "policy", "network", "surrogate")


def check_custom(record: dict, given: dict, run_dir) -> None:
    """A run trained with custom Python objects needs them again to resume or load."""
    missing = [k for k in record.get("custom", []) if given.get(k) is None]
    if missing:
        args = ", ".join(f"{k}=..." for k in missing)
        raise CheckpointError(f"the run in {str(run_dir)!r} was trained with a custom {', '.join(missing)} from Python; "
                              f"pass the same ({args}) to resume or load it")


def writable_dir_error(path) -> str | None:
    """Create the folder ``path`` if needed and write a probe file there: ``None`` if that worked,
    else the operating system's reason (a read-only or full disk, no permission)."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".prpo-write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        return str(e.strerror or e)
    return None
