"""Logging sinks for the experiment driver: TensorBoard and Weights & Biases (besides ``metrics.jsonl``).

The driver (:func:`prpo.experiment.run_experiment`) trains ``G`` settings × ``S`` seeds in chunks
of updates. After each chunk it hands every sink the chunk's per-update metrics,
``{name: array [G, S, n]}`` (``"update"``: the 1-based update numbers; NaN: no value that update,
e.g. no episode finished), and the number of updates done before the chunk. ``metrics.jsonl``
(always written, by the driver itself) is the ``"jsonl"`` sink; this module holds the others:

``--logger tensorboard`` (:class:`TensorboardSink`, needs ``tensorboardX``: ``pip install 'prpo[tensorboard]'``)
    Event files under ``<out_dir>/tensorboard/``; view with ``tensorboard --logdir <out_dir>/tensorboard``.
``--logger wandb`` (:class:`WandbSink`, needs ``wandb``: ``pip install 'prpo[wandb]'``)
    One W&B run per experiment, project ``$WANDB_PROJECT`` (default ``prpo``), files under
    ``<out_dir>/wandb/``; ``WANDB_MODE=offline`` (or ``disabled``) and the other ``WANDB_*``
    variables are honoured as wandb reads them.

Neither library is imported by ``import prpo`` or by importing this module: only a sink that is
asked for imports its library (:func:`check_loggers` does, to fail before anything compiles).

**Tags.** For every metric except ``"update"``: ``<metric>`` is the mean over the seeds' finite
values (the mean ``metrics.jsonl`` holds) and ``<metric>/seed_<s>`` each seed's value. Values
that are not finite (NaN: nothing this update; ±inf) are not written at all, so a curve has a gap
rather than a fake point, and a mean is written wherever at least one seed has a value. With more
than one setting every tag is prefixed by the setting's label (:func:`setting_labels`), e.g.
``lr=0.0003/last_return/seed_0``: the hyperparameters that differ between the settings, as
``name=value`` joined by ``,``.

**Step axis.** TensorBoard's step is the env-step count ``update × batch_size`` (per seed, as in
``metrics.jsonl``'s ``env_steps``). W&B's ``step`` is the update number, and every row also holds
``env_steps`` (pick it as the x-axis in the W&B UI to match TensorBoard).

**Resume** (``start_update > 0``: the run continues from a checkpoint after that many updates;
an interrupted run may have logged updates past it). TensorBoard: the new event file starts with
a ``SessionLog.START`` event at step ``(start_update + 1) × batch_size`` — the step the resumed run
writes first — and TensorBoard's loader drops every earlier-written point at that step or later,
so updates after the checkpoint show only the resumed run's values, and updates up to the
checkpoint (the last one included) the first run's. (This is ``SummaryWriter(purge_step=...)``'s
event; note that ``purge_step = start_update × batch_size`` would also drop the checkpoint's own
update, which the resumed run does not write again.) TensorBoard's Rust loader
(``--load_fast``) ignores that event and instead, per tag, drops the points at or after the first
step that a later file writes again: the same result, except for a tag (a seed's return, say)
whose first value after the resume is NaN, which keeps the interrupted run's points until its next
value. W&B: the run is resumed by id (``resume="allow"``; the driver stores the id and passes it
back), and W&B drops rows whose step is below the run's current step (a resumed run's current
step is one past the last it holds), so an interrupted run's rows past the checkpoint are never
shown twice: they stay, the resumed run's rows for those updates are dropped (with a warning), and
its rows after them are appended. (W&B's "rewind", ``resume_from="<id>?_step=<n>"``, would replace
them, but is a server-side beta feature that offline runs cannot use.)
"""

from __future__ import annotations

import importlib
import math
import os
import re
import socket
import time
from typing import Any, Iterable, Protocol

import numpy as np

from prpo.registry import ConfigError, fmt_choices, suggest

__all__ = [
    "SINKS",
    "Sink",
    "TensorboardSink",
    "WandbSink",
    "check_loggers",
    "make_sinks",
    "scalar_table",
    "setting_labels",
]

#: the names ``--logger`` accepts ("jsonl": metrics.jsonl, always written by the driver)
SINKS = ("jsonl", "tensorboard", "wandb")

#: the module each optional sink imports, and the extra that installs it
_NEEDS = {
    "tensorboard": ("tensorboardX", "pip install 'prpo[tensorboard]'"),
    "wandb": ("wandb", "pip install 'prpo[wandb]'"),
}


class Sink(Protocol):
    """A logging sink: gets every chunk of per-update metrics, in order, then ``close()``."""

    def write(self, chunk: dict, first_update: int) -> None:
        """Log ``chunk`` (``{name: [G, S, n]}``); ``first_update``: updates done before it."""
        ...

    def close(self) -> None:
        """Flush and release the sink (idempotent)."""
        ...


# --------------------------------------------------------------------------- names


def check_loggers(names: str | Iterable[str] | None) -> tuple[str, ...]:
    """Validate logger names (a list/tuple or a comma-separated string) before anything compiles.

    Returns a tuple that starts with ``"jsonl"`` (``metrics.jsonl`` is always written) followed by
    the others in the given order. Raises :class:`~prpo.registry.ConfigError` for an unknown name,
    a name given twice, or a sink whose library is not installed (with the pip command)."""
    if names is None:
        names = ()
    elif isinstance(names, str):
        names = names.split(",")
    given = [str(n).strip() for n in names]
    given = [n for n in given if n]
    for name in given:
        if name not in SINKS:
            raise ConfigError(f"unknown logger {name!r}{suggest(name, SINKS)}; allowed values: {fmt_choices(SINKS)}")
    seen: set[str] = set()
    for name in given:
        if name in seen:
            raise ConfigError(f"logger {name!r} given twice; allowed values (each at most once): {fmt_choices(SINKS)}")
        seen.add(name)
    for name in given:
        if name in _NEEDS:
            _require(name)
    return ("jsonl", *(n for n in given if n != "jsonl"))


def _require(name: str):
    """Import the library of sink ``name``; a :class:`ConfigError` with the pip command if absent."""
    module, pip = _NEEDS[name]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"--logger {name} needs the {module} package, which is not installed: {pip} "
                          f"(or pip install {module}) ({e})") from None


def make_sinks(names: str | Iterable[str] | None, out_dir: str | os.PathLike, *, settings: list[dict],
               batch_size: int, run_name: str, start_update: int = 0, run_id: str | None = None,
               config: dict | None = None) -> list[Sink]:
    """The sinks for ``names`` other than ``"jsonl"`` (the driver writes ``metrics.jsonl``).

    ``settings``: one dict per grid setting (``[{}]`` without a grid). ``start_update > 0``: a
    resumed run (see the module docstring). ``run_id``/``config``/``run_name``: the W&B run's id
    (keep it across resumes), config and display name."""
    sinks: list[Sink] = []
    try:
        for name in check_loggers(names)[1:]:
            if name == "tensorboard":
                sinks.append(TensorboardSink(out_dir, settings=settings, batch_size=batch_size,
                                             start_update=start_update))
            elif name == "wandb":
                sinks.append(WandbSink(out_dir, settings=settings, batch_size=batch_size, run_name=run_name,
                                       start_update=start_update, run_id=run_id, config=config))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


# --------------------------------------------------------------------------- tags and values


def _fmt_value(v: Any) -> str:
    """A short exact text of a setting's value: ``%g`` when that round-trips, else ``repr``."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, float, np.integer, np.floating)):
        f = float(v)
        if math.isfinite(f) and float(f"{f:g}") == f:
            return f"{f:g}"
        return repr(f)
    return str(v)


_UNSAFE = re.compile(r"[^\w.+\-=,]")


def setting_labels(settings: list[dict]) -> list[str]:
    """One short, unique, TensorBoard-safe label per setting (``""`` when there is one setting).

    A label is ``name=value`` of the hyperparameters that differ between the settings, joined by
    ``,`` (``lr=0.0003,clip_eps=0.2``); characters other than letters, digits, ``_ . + - = ,``
    (a ``/`` would start a new tag level) become ``_``. Labels that still coincide get
    ``_<index>`` appended; ``setting_<index>`` when nothing tells them apart."""
    if len(settings) <= 1:
        return [""] * len(settings)
    names = list(dict.fromkeys(k for s in settings for k in s))
    varying = [k for k in names if len({_fmt_value(s.get(k)) if k in s else None for s in settings}) > 1]
    labels = [_UNSAFE.sub("_", ",".join(f"{k}={_fmt_value(s[k])}" for k in varying if k in s)) for s in settings]
    labels = [lab or f"setting_{g}" for g, lab in enumerate(labels)]
    if len(set(labels)) < len(labels):
        dup = {lab for lab in labels if labels.count(lab) > 1}
        labels = [f"{lab}_{g}" if lab in dup else lab for g, lab in enumerate(labels)]
    if len(set(labels)) < len(labels):
        labels = [f"setting_{g}" for g in range(len(settings))]
    return labels


def scalar_table(chunk: dict, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """All scalars of a chunk: ``tags`` ``[T]`` and ``values`` ``[n, T]`` (float64, NaN: don't write).

    For each setting ``g`` (prefix ``labels[g] + "/"`` unless ``labels[g]`` is ``""``) and each
    metric but ``"update"`` (in the chunk's order): the mean over the seeds' finite values, then
    each seed's value. Non-finite values are NaN here. Vectorised over settings, seeds, updates."""
    keys = [k for k in chunk if k != "update"]
    if not keys:
        return [], np.zeros((0, 0))
    arrays = [np.asarray(chunk[k], np.float64) for k in keys]
    G, S, n = arrays[0].shape
    if len(labels) != G:
        raise ValueError(f"the chunk has {G} setting(s) but {len(labels)} setting label(s) were given")
    for k, v in zip(keys, arrays):
        if v.shape != (G, S, n):
            raise ValueError(f"metric {k!r} has shape {v.shape}, expected {(G, S, n)} like {keys[0]!r}")
    v = np.stack(arrays, axis=1)  # [G, K, S, n]
    finite = np.isfinite(v)
    count = finite.sum(axis=2, keepdims=True)
    mean = np.where(finite, v, 0.0).sum(axis=2, keepdims=True) / np.maximum(count, 1)
    mean = np.where(count > 0, mean, np.nan)
    table = np.concatenate([mean, np.where(finite, v, np.nan)], axis=2)  # [G, K, 1 + S, n]
    tags = [f"{lab}/" * bool(lab) + f"{k}{'' if j == 0 else f'/seed_{j - 1}'}"
            for lab in labels for k in keys for j in range(1 + S)]
    return tags, table.reshape(-1, n).T


def _chunk_updates(chunk: dict, first_update: int) -> np.ndarray:
    """The update numbers of a chunk's columns, ``first_update + 1 ...`` (as in metrics.jsonl)."""
    n = next(iter(np.asarray(a).shape[-1] for a in chunk.values()))
    return first_update + 1 + np.arange(n, dtype=np.int64)


# --------------------------------------------------------------------------- TensorBoard


def _varint(x: int) -> bytes:
    out = bytearray()
    while True:
        b, x = x & 0x7F, x >> 7
        out.append(b | 0x80 if x else b)
        if not x:
            return bytes(out)


class TensorboardSink(Sink):
    """Scalars into a TensorBoard event file under ``<out_dir>/tensorboard`` (see the module docstring).

    Each update is one event holding all of its scalars (``Summary.Value.simple_value``, float32),
    at step ``update × batch_size``. The event bytes are built with numpy and written straight
    through ``tensorboardX.RecordWriter`` (TFRecord framing, CRC32C: tensorboardX uses the
    ``crc32c`` package when installed, a slow pure-Python CRC otherwise), not through
    ``SummaryWriter``, whose ``add_*`` calls cost a Python object per scalar and whose queue
    pickles every event to a worker thread that ``flush()`` does not wait for. The file holds the
    same events ``SummaryWriter(purge_step=...)`` writes first, and is flushed (fsync) after every
    chunk, so a run killed between chunks leaves whole events only."""

    #: updates encoded per numpy block (bounds the memory of a long chunk)
    BLOCK = 1024

    def __init__(self, out_dir: str | os.PathLike, *, settings: list[dict], batch_size: int,
                 start_update: int = 0) -> None:
        tbx = _require("tensorboard")
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self._Event = Event
        self.logdir = os.path.join(os.fspath(out_dir), "tensorboard")
        os.makedirs(self.logdir, exist_ok=True)
        self.labels = setting_labels(settings)
        self.batch_size = int(batch_size)
        self.start_update = int(start_update)
        now = time.time()
        # names sort by creation time (TensorBoard reads a run's files in name order; the resume's
        # purge must come after the interrupted run's file): whole seconds first, as TensorFlow's
        # and tensorboardX's, then nanoseconds, so two files made within a second neither clash
        # (tensorboardX's name would: same second, same host) nor sort out of order
        name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{time.time_ns()}.{os.getpid()}"
        self.path = os.path.join(self.logdir, name)
        self._writer = tbx.RecordWriter(self.path)
        self._writer.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        #: the step from which TensorBoard drops earlier files' points (resume only)
        self.purge_step = (self.start_update + 1) * self.batch_size if self.start_update > 0 else None
        if self.purge_step is not None:
            self._writer.write(Event(wall_time=now, step=self.purge_step,
                                     session_log=SessionLog(status=SessionLog.START)).SerializeToString())
        self._writer.flush()
        self._last_time = now
        self._tags: list[str] | None = None
        self._closed = False

    def _encoding(self, tags: list[str]):
        """Per tag: the bytes of a ``Summary.Value{tag, simple_value}`` (repeated field 1 of
        ``Summary``) but its float, and where the float goes in the row of all tags."""
        if tags != self._tags:
            pre = []
            for tag in tags:
                t = tag.encode()
                inner = b"\x0a" + _varint(len(t)) + t  # field 1 (tag), length-delimited
                pre.append(b"\x0a" + _varint(len(inner) + 5) + inner + b"\x15")  # field 2 (simple_value), fixed32
            self._sizes = np.array([len(p) + 4 for p in pre], np.int64)
            self._template = np.frombuffer(b"".join(p + b"\0\0\0\0" for p in pre), np.uint8)
            self._float_cols = ((np.cumsum(self._sizes) - 4)[:, None] + np.arange(4)).ravel()
            self._tags = list(tags)
        return self._sizes, self._template, self._float_cols

    def write(self, chunk: dict, first_update: int) -> None:
        if self._closed:
            raise RuntimeError("TensorboardSink.write after close()")
        tags, values = scalar_table(chunk, self.labels)
        n = values.shape[0]
        if n == 0 or not tags:
            return
        sizes, template, cols = self._encoding(tags)
        steps = _chunk_updates(chunk, first_update) * self.batch_size
        now = time.time()  # the chunk's wall times, spread evenly since the previous chunk
        walls = self._last_time + (now - self._last_time) * np.arange(1, n + 1) / n
        self._last_time = now
        write = self._writer.write
        for a in range(0, n, self.BLOCK):
            v = values[a:a + self.BLOCK]
            ok = ~np.isnan(v)
            rows = np.tile(template, (len(v), 1))
            rows[:, cols] = np.ascontiguousarray(v, "<f4").view(np.uint8).reshape(len(v), -1)
            flat = rows[np.repeat(ok, sizes, axis=1)].tobytes()  # each row's written values, in order
            ends = np.cumsum((ok * sizes).sum(axis=1))
            begin = 0
            for i, end in enumerate(ends.tolist()):
                head = self._Event(wall_time=float(walls[a + i]), step=int(steps[a + i])).SerializeToString()
                summary = flat[begin:end]
                write(head + b"\x2a" + _varint(len(summary)) + summary)  # Event field 5 (summary)
                begin = end
        self._writer.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.flush()
            self._writer.close()


# --------------------------------------------------------------------------- Weights & Biases


class WandbSink(Sink):
    """Scalars into a W&B run (see the module docstring): ``run.log({tag: value, ...,
    "env_steps": update × batch_size}, step=update)`` once per update, non-finite values left out.

    ``wandb.init(project=$WANDB_PROJECT or "prpo", dir=out_dir, name=run_name, id=run_id,
    resume="allow", config=config, reinit="create_new")``: the run is this sink's own (other runs
    in the process and ``wandb.run`` are left alone); ``WANDB_MODE`` and the other ``WANDB_*``
    variables apply as wandb reads them. ``close()`` finishes the run. (Offline, ``run.finish()``
    returns before wandb's service process has written the run's ``.wandb`` log out; the process's
    exit, or ``wandb.teardown()``, waits for it.)"""

    def __init__(self, out_dir: str | os.PathLike, *, settings: list[dict], batch_size: int, run_name: str,
                 start_update: int = 0, run_id: str | None = None, config: dict | None = None) -> None:
        wandb = _require("wandb")
        self.labels = setting_labels(settings)
        self.batch_size = int(batch_size)
        self.start_update = int(start_update)
        os.makedirs(out_dir, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "prpo"), dir=os.fspath(out_dir),
                              name=run_name, id=run_id, resume="allow", config=config, reinit="create_new")
        #: the run's id: store it to resume the same run
        self.run_id: str = self.run.id
        self._closed = False

    def write(self, chunk: dict, first_update: int) -> None:
        if self._closed:
            raise RuntimeError("WandbSink.write after close()")
        tags, values = scalar_table(chunk, self.labels)
        updates = _chunk_updates(chunk, first_update)
        ok = ~np.isnan(values)
        rows = values.tolist()
        oks = ok.tolist()
        for update, row, keep in zip(updates.tolist(), rows, oks):
            data = {t: x for t, x, k in zip(tags, row, keep) if k}
            data["env_steps"] = update * self.batch_size
            self.run.log(data, step=update)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.run.finish()
