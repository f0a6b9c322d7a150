"""Test-session settings, applied before JAX is imported by any test module."""

import os

# XLA's multi-threaded Eigen runtime on CPU has been seen to wedge (all pool threads parked
# inside block_until_ready) on vmapped training graphs under load, about once in tens of runs.
# Tests run one process per core under pytest-xdist, so single-threaded Eigen costs nothing.
flags = os.environ.get("XLA_FLAGS", "")
if "xla_cpu_multi_thread_eigen" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()

# The same wedge was then seen with single-threaded Eigen: every thread idle while the main thread
# waited for an async-dispatched computation's buffers (two pytest workers at once, in
# run_experiment's init). Running CPU computations inline, without async dispatch, removes that
# path; it only applies to single-device computations.
import jax  # noqa: E402  (after XLA_FLAGS; the CPU client is created later, on first use)

jax.config.update("jax_cpu_enable_async_dispatch", False)
