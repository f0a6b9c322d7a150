"""Every notebook in notebooks/ runs top to bottom (its cells assert their own results)."""

import pathlib

import nbformat
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path):
    nb = nbformat.read(path, as_version=4)
    namespace: dict = {"__name__": "__notebook__"}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        try:
            exec(compile(cell.source, f"{path.name}[cell {i}]", "exec"), namespace)
        except Exception as e:  # name the failing cell
            raise AssertionError(f"{path.name}: cell {i} failed: {e!r}") from e
