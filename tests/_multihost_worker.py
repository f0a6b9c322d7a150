"""One process of the two-process test (tests/test_multihost.py); not a test module itself.

usage: python _multihost_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID OUT_FILE
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from prpo import parallel  # noqa: E402  (JAX is imported but not initialised yet)

coordinator, num_processes, process_id, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
parallel.initialize_distributed(coordinator, num_processes, process_id)

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _parallel_common import TINY  # noqa: E402

assert jax.process_count() == num_processes and jax.device_count() == 2 * num_processes, jax.devices()
mesh = parallel.make_mesh("all")  # every process's devices: one global "data" axis
trainer = parallel.make_sharded_train(TINY, mesh)
key, hp = parallel.replicated(mesh, (jax.random.key(0), TINY.hp))
state, metrics = jax.jit(trainer.train)(key, hp)
params = parallel.fetch(state.params)
np.savez(out, loss=parallel.fetch(metrics["loss"]), **{str(i): x for i, x in enumerate(jax.tree.leaves(params))})
print("process", process_id, "done", flush=True)
