"""Test-session settings.

Tests run with JAX's default CPU settings, as users do. (An intermittent hang of this suite on a
2-core machine was a batched LAPACK QR in the orthogonal initializer under ``vmap``, waiting on
XLA's intra-op thread pool from inside that pool; ``prpo.networks.orthogonal`` maps the QR over
the batch instead, and ``test_networks.py`` checks that no batched QR is traced.) A per-test
``timeout`` (pyproject.toml, pytest-timeout) turns any future hang into a failure with stacks.
"""

import pytest


@pytest.fixture(params=[False, True], ids=["nojit", "jit"])
def maybe_jit(request):
    """Run a test's function both as is and under jax.jit."""
    import jax

    return jax.jit if request.param else (lambda f: f)


def pytest_configure(config):
    """One persistent JAX compilation cache for the session (xdist workers and the CLI
    subprocesses inherit it): the many tests that compile the same tiny trainers — a run and its
    resume, the CLI runs — compile each once. Same HLO, same executable: results are unchanged."""
    import os
    import tempfile

    if "JAX_COMPILATION_CACHE_DIR" not in os.environ and not hasattr(config, "workerinput"):
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="prpo-test-jax-cache-")
