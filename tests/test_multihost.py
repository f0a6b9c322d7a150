"""Multi-host through jax.distributed: two CPU processes on localhost (2 devices each) train
in lock-step over one global 4-device mesh and end with the same parameters as each other and
as the same run on one device (tests/_multihost_worker.py is one process)."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from prpo.parallel import make_mesh, make_sharded_train

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _parallel_common import TINY  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_in_lock_step(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)
    address = f"127.0.0.1:{_free_port()}"
    outs = [tmp_path / f"p{i}.npz" for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, os.path.join(HERE, "_multihost_worker.py"), address, "2", str(i), str(outs[i])],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-5000:]
    a, b = np.load(outs[0]), np.load(outs[1])
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:  # lock-step: bit-identical on both processes
        np.testing.assert_array_equal(a[k], b[k])
    # and the same run on this process's single device (per-env keys: any device count)
    trainer = make_sharded_train(TINY, make_mesh(1))
    state, metrics = jax.jit(trainer.train)(jax.random.key(0), TINY.hp)
    np.testing.assert_allclose(a["loss"], np.asarray(metrics["loss"]), rtol=2e-4, atol=2e-5)
    for i, x in enumerate(jax.tree.leaves(state.params)):
        np.testing.assert_allclose(a[str(i)], np.asarray(x), rtol=2e-4, atol=2e-5)
