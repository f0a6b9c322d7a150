"""Load a script of ``experiments/`` as a module, for the tests of its helpers."""

import importlib.util
import pathlib


def load_experiment(name: str):
    """``experiments/<name>.py`` imported as a fresh module (the folder is not a package)."""
    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
