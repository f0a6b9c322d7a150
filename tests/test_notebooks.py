"""Every notebook in notebooks/ runs top to bottom through a real Jupyter kernel (its cells assert
their own results).

Each notebook is executed with ``nbclient`` on an IPython kernel of the interpreter running the
tests (a kernelspec written to a temporary ``JUPYTER_PATH``, so it needs no setup and never picks
up another Python's ``python3`` kernel). ``PRPO_NB_SMALL=1`` in the kernel's environment makes
each notebook pick its tiny CI budget; the outputs saved in the files come from their full-size
run (``python notebooks/execute.py``). The notebooks share one xdist group, so that they run one
after another on one worker instead of competing with each other for the cores.
"""

import json
import pathlib
import sys
import time

import ipykernel  # noqa: F401  (the kernel the notebooks run on: the test extra installs it)
import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
KERNEL = "python3"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A ``python3`` kernelspec for this interpreter, first on ``JUPYTER_PATH``."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (prpo tests)",
        "language": "python",
    }))
    return root


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6, [p.name for p in NOTEBOOKS]


@pytest.mark.xdist_group("notebooks")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, kernel_env, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_env))
    monkeypatch.setenv("PRPO_NB_SMALL", "1")  # the kernel inherits the environment: tiny budgets
    monkeypatch.delenv("PRPO_NB_SCALE", raising=False)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name=KERNEL, resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:  # names the cell and shows its traceback
        raise AssertionError(f"{path.name}: {e}") from None
    print(f"{path.name}: {time.perf_counter() - t0:.1f} s")
    # every code cell ran and none left an error output
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
