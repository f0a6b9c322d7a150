"""The documentation site builds in strict mode and shows what it promises.

`mkdocs build --strict` fails on any warning: a broken link or anchor, a page missing from the
nav, an API reference (`::: prpo.x`) that cannot be collected, a docstring griffe cannot parse,
or a README section (`--8<-- "README.md:name"`) whose markers are gone. The build goes to a
temporary directory; the checks below read the built HTML, so a page that builds but is empty
fails too.
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

import prpo

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # mkdocs-material's banner about MkDocs 2.0
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    print(f"mkdocs build --strict: {time.perf_counter() - start:.1f} s")
    return out


def _text(site, page):
    """The built page's HTML with tags removed and whitespace collapsed."""
    html = (site / page / "index.html").read_text()
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.mark.xdist_group("docs_site")  # one build per run under pytest -n
def test_api_pages_render_docstrings(site):
    adv = (site / "api" / "advantages" / "index.html").read_text()
    assert 'id="prpo.advantages.gae"' in adv
    assert "Generalised Advantage Estimation" in _text(site, "api/advantages")
    # the Google-style sections are parsed into tables, the formula block stays a code block
    assert "next_values" in adv and "<code>delta_t = r_t + gamma" in adv
    assert 'id="prpo.objectives.ppo_clip"' in (site / "api" / "objectives" / "index.html").read_text()
    assert "PPO clipped surrogate" in _text(site, "api/objectives")
    assert 'id="prpo.train.make_train"' in (site / "api" / "train" / "index.html").read_text()
    assert 'id="prpo.envs.make_env"' in (site / "api" / "envs" / "index.html").read_text()
    assert "Bring your own env" in _text(site, "api/envs")
    for module in ("ppo", "pqn", "fpo", "dppo"):
        assert f'id="prpo.algorithms.{module}"' in (site / "api" / "algorithms" / "index.html").read_text()


@pytest.mark.xdist_group("docs_site")  # one build per run under pytest -n
def test_pages_have_their_content(site):
    # README sections included by the snippet markers
    assert "Exact resume" in _text(site, "long-runs")
    assert "python -m prpo train" in _text(site, "getting-started")
    assert "auto-reset" in _text(site, "envs")
    assert "Schulman" in _text(site, "algorithms")
    assert "po-r2vpo-dual-ascent" in _text(site, "results")
    for html in site.rglob("*.html"):
        text = html.read_text()
        assert "--8&lt;--" not in text and "--8<--" not in text, f"{html}: a snippet was not included"
        assert not re.search(r":(func|class|mod|meth|attr|data):<code>", text), f"{html}: a reST role is left"


def test_every_registered_algorithm_is_documented():
    """docs/algorithms.md has a section for every registered algorithm (its name in a heading)."""
    headings = [line for line in (DOCS / "algorithms.md").read_text().splitlines() if line.startswith("#")]
    missing = [name for name in prpo.algorithms.names() if not any(f"`{name}`" in h for h in headings)]
    assert not missing, f"algorithms without a section in docs/algorithms.md: {missing}"


def test_every_module_has_an_api_page():
    pages = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
    modules = [f"prpo.{p.stem}" for p in (ROOT / "prpo").glob("*.py") if not p.stem.startswith("_")]
    modules += [f"prpo.algorithms.{p.stem}" for p in (ROOT / "prpo" / "algorithms").glob("*.py")
                if not p.stem.startswith("_")]
    missing = sorted(m for m in modules if not re.search(rf"^::: {re.escape(m)}\s*$", pages, flags=re.M))
    assert not missing, f"modules without an API page (a '::: module' line in docs/api/*.md): {missing}"


def _griffe_rst():
    spec = importlib.util.spec_from_file_location("griffe_rst", DOCS / "griffe_rst.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rst_layout_becomes_markdown():
    """docs/griffe_rst.py: formulas stay blocks, tables and definition lists convert, Google sections stay."""
    convert = _griffe_rst().convert
    doc = "\n".join([
        "Summary.",
        "",
        "  L = -min(r * A, clip(r) * A)",
        "  r = exp(log_ratio)",
        "",
        "An example::",
        "",
        "    f(x)",
        "",
        "=====  ==========",
        "``a``  first row",
        "``b``  second row,",
        "       continued",
        "=====  ==========",
        "",
        "``spec``",
        "    the env's spec.",
        "``num_envs``",
        "    N.",
        "",
        "Args:",
        "  x: the input.",
        "    More about x.",
    ])
    assert convert(doc).split("\n") == [
        "Summary.",
        "",
        "```", "L = -min(r * A, clip(r) * A)", "r = exp(log_ratio)", "```",
        "",
        "An example:",
        "",
        "```", "f(x)", "```",
        "",
        "|   |   |", "|---|---|", "| ``a`` | first row |", "| ``b`` | second row, continued |",
        "",
        "- ``spec``  ", "  the env's spec.",
        "- ``num_envs``  ", "  N.",
        "",
        "Args:",
        "  x: the input.",
        "    More about x.",
    ]
