"""The layering rules of docs/architecture.md, checked on the source: no import cycles between prpo's
modules (imports inside functions included), the engine names no algorithm and imports none,
and the low layers import nothing above them."""

import ast
import pathlib
import re

import pytest

from prpo import registry

ROOT = pathlib.Path(__file__).resolve().parents[1] / "prpo"


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(path: pathlib.Path) -> set[str]:
    """Every prpo module ``path`` imports, at any depth (functions too); ``from prpo import x`` is prpo.x."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("prpo")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prpo"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in MODULES else node.module)
    return {m for m in out if m in MODULES}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def test_no_module_imports_a_module_that_imports_it_back():
    assert len(MODULES) > 20
    pairs = sorted((a, b) for a, deps in GRAPH.items() for b in deps if a in GRAPH.get(b, ()) and a < b)
    assert not pairs, pairs


def test_no_import_cycles_below_the_package_roots():
    """Apart from the packages' ``__init__`` re-exports, the import graph is acyclic."""
    graph = {a: {b for b in deps if b not in ("prpo", "prpo.algorithms")} for a, deps in GRAPH.items()
             if a not in ("prpo", "prpo.algorithms")}
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                pytest.fail("import cycle: " + " -> ".join(stack + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [])


@pytest.mark.parametrize("engine", ["prpo.train", "prpo.update", "prpo.rollout"])
def test_the_engine_names_no_algorithm_and_imports_none(engine):
    text = MODULES[engine].read_text()
    names = set(registry.ALGORITHMS) | {"ppo-ewma", "decoupled", "median", "ewma", "q-learning", "value_based"}
    found = sorted(n for n in names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text, flags=re.I))
    assert not found, f"{engine} names {found}"
    assert not {m for m in GRAPH[engine] if m.startswith("prpo.algorithms")}, GRAPH[engine]


@pytest.mark.parametrize("module, allowed", [
    ("prpo.registry", set()),
    ("prpo.memory", {"prpo.registry"}),
    ("prpo.config", {"prpo.registry", "prpo.memory"}),
    ("prpo.advantages", set()), ("prpo.objectives", set()), ("prpo.distributions", set()),
    ("prpo.regularizers", set()), ("prpo.normalization", set()),
    ("prpo.envs", {"prpo.toy_envs", "prpo.envs_extra"}), ("prpo.envs_extra", set()),
])
def test_low_layers_import_nothing_above_them(module, allowed):
    assert GRAPH[module] <= allowed, GRAPH[module]
