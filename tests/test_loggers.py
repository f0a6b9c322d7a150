"""Logging sinks (prpo/loggers.py): what TensorBoard and W&B read back equals a numpy reference.

No JAX here: the sinks get numpy chunks ``{metric: [G, S, n]}`` as the driver hands them over.
TensorBoard event files are read with TensorBoard's own loader (``EventAccumulator``, which also
applies the resume purge); the W&B test runs offline and reads the run's transaction log.
"""

from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from prpo.loggers import SINKS, TensorboardSink, check_loggers, make_sinks, setting_labels
from prpo.registry import ConfigError

BATCH = 64
METRICS = ("last_return", "loss", "entropy")


def make_chunk(G: int, S: int, first: int, n: int, seed: int) -> dict:
    """A chunk of updates ``first + 1 .. first + n`` with NaNs (no value) and an inf (no value either)."""
    rng = np.random.default_rng(seed)
    chunk = {"update": np.broadcast_to(first + 1 + np.arange(n), (G, S, n)).astype(np.int32)}
    for k, name in enumerate(METRICS):
        chunk[name] = (rng.normal(size=(G, S, n)) * 10 ** k).astype(np.float32)
    ret = chunk["last_return"]
    ret[rng.random((G, S, n)) < 0.3] = np.nan  # episodes not finished on some updates
    ret[0, :, 1] = np.nan  # setting 0, 2nd update: no seed has a value -> no mean either
    ret[-1, 0, -1] = np.inf  # not finite: not written
    chunk["entropy"][..., 0] = np.nan  # a metric missing at an update for every setting
    return chunk


def reference(chunks: list[tuple[dict, int]], labels: list[str]) -> dict:
    """``{tag: {update: value}}`` by explicit loops: nanmean over the seeds' finite values, each
    seed's finite value; nothing for non-finite ones."""
    ref: dict = {}
    for chunk, first in chunks:
        for name in METRICS:
            v = np.asarray(chunk[name], np.float64)
            G, S, n = v.shape
            for g in range(G):
                prefix = f"{labels[g]}/" if labels[g] else ""
                for u in range(n):
                    update = first + 1 + u
                    col = v[g, :, u]
                    fin = col[np.isfinite(col)]
                    if fin.size:
                        ref.setdefault(prefix + name, {})[update] = float(np.mean(fin))
                    for s in range(S):
                        if np.isfinite(col[s]):
                            ref.setdefault(f"{prefix}{name}/seed_{s}", {})[update] = float(col[s])
    return ref


def read_tensorboard(logdir: str, purge: bool = True) -> dict:
    """``{tag: [(step, value), ...]}`` as TensorBoard's Python loader gives them."""
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea_mod.EventAccumulator(logdir, size_guidance={ea_mod.SCALARS: 0}, purge_orphaned_data=purge)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_matches(got: dict, ref: dict) -> None:
    assert sorted(got) == sorted(ref)
    for tag, points in ref.items():
        steps = [s for s, _ in got[tag]]
        assert steps == [u * BATCH for u in sorted(points)], tag  # each update once, in order, env steps
        want = np.array([points[u] for u in sorted(points)], np.float32)  # simple_value is float32
        np.testing.assert_allclose([v for _, v in got[tag]], want, rtol=1e-6, atol=0, err_msg=tag)


SETTINGS = [{"lr": 1e-4, "clip_eps": 0.2}, {"lr": 3e-4, "clip_eps": 0.2}]


def test_setting_labels():
    assert setting_labels([{}]) == [""]
    assert setting_labels([{"lr": 1e-4}]) == [""]
    # only what differs; %g when exact, repr otherwise; TensorBoard-safe; unique
    assert setting_labels(SETTINGS) == ["lr=0.0001", "lr=0.0003"]
    assert setting_labels([{"lr": 1e-4, "ent": 0.0}, {"lr": 1e-4, "ent": 0.01}, {"lr": 3e-4, "ent": 0.0}]) == [
        "lr=0.0001,ent=0", "lr=0.0001,ent=0.01", "lr=0.0003,ent=0"]
    assert setting_labels([{"lr": 0.1234567}, {"lr": 0.1234568}]) == ["lr=0.1234567", "lr=0.1234568"]
    assert setting_labels([{"a": "x/y z"}, {"a": "x/y!z"}]) == ["a=x_y_z_0", "a=x_y_z_1"]
    assert setting_labels([{}, {}]) == ["setting_0", "setting_1"]


@pytest.mark.parametrize("settings", [SETTINGS, [{}]], ids=["grid", "nogrid"])
def test_tensorboard_scalars(tmp_path, settings):
    pytest.importorskip("tensorboardX")
    G, S = len(settings), 3
    chunks = [(make_chunk(G, S, 0, 5, seed=1), 0), (make_chunk(G, S, 5, 5, seed=2), 5)]
    sink = TensorboardSink(tmp_path, settings=settings, batch_size=BATCH)
    try:
        for chunk, first in chunks:
            sink.write(chunk, first)
            # flushed after every chunk: the loader sees it without close()
            assert_matches(read_tensorboard(str(tmp_path / "tensorboard")), reference(chunks[:1 + first // 5],
                                                                                       setting_labels(settings)))
    finally:
        sink.close()
    got = read_tensorboard(str(tmp_path / "tensorboard"))
    assert_matches(got, reference(chunks, setting_labels(settings)))
    if G > 1:
        assert "lr=0.0003/last_return/seed_2" in got and "last_return" not in got
    else:
        assert {"last_return", "last_return/seed_0", "loss/seed_2", "entropy"} <= set(got)
    assert not any("update" in tag for tag in got)
    # the NaN-only update of setting 0 and the inf are not written
    tag0 = "lr=0.0001/last_return" if G > 1 else "last_return"
    assert 2 * BATCH not in [s for s, _ in got[tag0]]
    assert all(np.isfinite(v) for points in got.values() for _, v in points)


def test_tensorboard_resume_purges_after_checkpoint(tmp_path):
    """An interrupted run wrote updates 1..10, its checkpoint holds 6; the resumed run writes 7..10
    with other values: TensorBoard shows 1..6 of the first and 7..10 of the resumed run, once each."""
    pytest.importorskip("tensorboardX")
    G, S = 2, 3
    first = make_chunk(G, S, 0, 10, seed=3)
    again = make_chunk(G, S, 6, 4, seed=4)
    again["last_return"][0, 1, 0] = np.nan  # update 7, seed 1: no value in the resumed run
    crashed = TensorboardSink(tmp_path, settings=SETTINGS, batch_size=BATCH)
    crashed.write(first, 0)  # never closed: the process died
    resumed = TensorboardSink(tmp_path, settings=SETTINGS, batch_size=BATCH, start_update=6)
    assert resumed.purge_step == 7 * BATCH
    resumed.write(again, 6)
    resumed.close()
    files = sorted(glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*")))
    assert files == sorted([crashed.path, resumed.path]) and files[-1] == resumed.path  # two files, read in order

    kept = {k: v[:, :, :6] for k, v in first.items()}
    labels = setting_labels(SETTINGS)
    ref = reference([(kept, 0), (again, 6)], labels)
    got = read_tensorboard(str(tmp_path / "tensorboard"))
    assert_matches(got, ref)  # update 6 (the checkpoint's own) kept, 7..10 replaced, none twice
    assert 7 * BATCH not in [s for s, _ in got["lr=0.0001/last_return/seed_1"]]  # purged, not re-written
    crashed.close()

    # control: without the purge event the reader shows both runs' points for 7..10
    raw = read_tensorboard(str(tmp_path / "tensorboard"), purge=False)
    assert len(raw["lr=0.0003/loss"]) == 14


# --------------------------------------------------------------------------- wandb


def read_wandb_log(path: str) -> list:
    """The records of a ``.wandb`` transaction log: wandb's ``Record`` protos in LevelDB's log
    framing (a 7-byte file header, then 32 KiB blocks of records with a 7-byte header each:
    CRC32C, length, type FULL/FIRST/MIDDLE/LAST). wandb ships no reader for it since its Go core."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B", data[:7]
    block, pos, parts, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            break
        payload, pos = data[pos:pos + length], pos + length
        if kind == 1:
            out.append(payload)
        elif kind == 2:
            parts = payload
        elif kind == 3:
            parts += payload
        elif kind == 4:
            out.append(parts + payload)
    return [pb.Record.FromString(r) for r in out]


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def test_wandb_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "prpo-test")
    G, S = len(SETTINGS), 3
    chunks = [(make_chunk(G, S, 0, 5, seed=5), 0), (make_chunk(G, S, 5, 3, seed=6), 5)]
    (sink,) = make_sinks(["wandb"], tmp_path, settings=SETTINGS, batch_size=BATCH, run_name="test-run",
                         run_id="prpotest01", config={"algo": "ppo", "lr": [1e-4, 3e-4]})
    assert sink.run_id == "prpotest01"
    for chunk, first in chunks:
        sink.write(chunk, first)
    sink.close()
    sink.close()  # idempotent
    # offline, run.finish() returns before wandb's service process has written the log out
    # (wandb 0.31: a busy machine still finds only the file header); teardown waits for it
    wandb.teardown()

    (log,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*-prpotest01" / "run-prpotest01.wandb"))
    records = read_wandb_log(log)
    assert records[-1].WhichOneof("record_type") == "exit"  # the whole log
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_id == "prpotest01" and run.display_name == "test-run" and run.project == "prpo-test"
    config = {_key(i): json.loads(i.value_json) for i in run.config.update}
    assert config["algo"] == "ppo" and config["lr"] == [1e-4, 3e-4]

    rows = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row = {_key(i): json.loads(i.value_json) for i in r.history.item}
            rows[row["_step"]] = {k: v for k, v in row.items() if not k.startswith("_")}
    assert sorted(rows) == list(range(1, 9))  # step = update
    ref = reference(chunks, setting_labels(SETTINGS))
    for update, row in rows.items():
        assert row.pop("env_steps") == update * BATCH
        want = {tag: pts[update] for tag, pts in ref.items() if update in pts}
        assert sorted(row) == sorted(want), update  # same tags as TensorBoard's, non-finite left out
        np.testing.assert_allclose([row[t] for t in sorted(want)], [want[t] for t in sorted(want)], rtol=1e-12)


# --------------------------------------------------------------------------- names


def test_check_loggers_names():
    assert SINKS == ("jsonl", "tensorboard", "wandb")
    assert check_loggers(None) == ("jsonl",)
    assert check_loggers([]) == ("jsonl",)
    assert check_loggers("jsonl") == ("jsonl",)
    with pytest.raises(ConfigError, match=r"unknown logger 'tensorbord' \(did you mean tensorboard\?\); "
                                          r"allowed values: 'jsonl', 'tensorboard', 'wandb'"):
        check_loggers("jsonl,tensorbord")
    with pytest.raises(ConfigError, match="unknown logger 'csv'; allowed values: 'jsonl', 'tensorboard', 'wandb'"):
        check_loggers(["csv"])
    with pytest.raises(ConfigError, match="logger 'jsonl' given twice"):
        check_loggers(["jsonl", "jsonl"])


def test_check_loggers_available():
    pytest.importorskip("tensorboardX")
    assert check_loggers("tensorboard") == ("jsonl", "tensorboard")
    assert check_loggers(" tensorboard , jsonl ") == ("jsonl", "tensorboard")
    assert check_loggers(("tensorboard",)) == ("jsonl", "tensorboard")
    with pytest.raises(ConfigError, match="logger 'tensorboard' given twice"):
        check_loggers("tensorboard,tensorboard")
    assert make_sinks("jsonl", "/nonexistent", settings=[{}], batch_size=1, run_name="x") == []


@pytest.mark.parametrize("name,module,extra", [("tensorboard", "tensorboardX", "tensorboard"),
                                               ("wandb", "wandb", "wandb")])
def test_check_loggers_missing_library(monkeypatch, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(ConfigError) as err:
        check_loggers(["jsonl", name])
    msg = str(err.value)
    assert f"--logger {name} needs the {module} package" in msg
    assert f"pip install 'prpo[{extra}]'" in msg and f"pip install {module}" in msg
    with pytest.raises(ConfigError, match=f"needs the {module} package"):
        make_sinks([name], "/nonexistent", settings=[{}], batch_size=1, run_name="x")


def test_import_prpo_imports_no_logging_library():
    code = ("import sys, prpo, prpo.loggers; bad = {'wandb', 'tensorboardX', 'tensorboard'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
