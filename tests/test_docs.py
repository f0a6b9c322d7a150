"""docs/architecture.md's worked examples (add an algorithm, an env, a policy family) run as written."""

import pathlib
import re

from prpo import registry

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_architecture_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 3
    namespace = {}
    try:
        for block in blocks:  # one namespace, in order, as a reader would paste them
            exec(compile(block, str(DOC), "exec"), namespace)
    finally:
        registry.ALGORITHMS.pop("tempered_ppo", None)
        registry.SURROGATES.pop("tempered_clip", None)
        registry.POLICIES.pop("wide_gaussian", None)
