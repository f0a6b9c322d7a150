"""The package as released: ``python -m build`` makes an sdist and a wheel (built from the sdist,
in an isolated environment without JAX: the version is read from ``prpo/__init__.py`` without
importing it), ``twine check --strict`` passes both, and the wheel holds the library, ``py.typed``
and the license and nothing else (no tests, experiments, benchmarks, notebooks or docs). The
README is the package index's project page, so its links must be absolute.

The build runs once (one xdist group, one module fixture); build isolation installs the build
backend from the package index. Where that index cannot be reached the build tests are skipped,
saying so, except in CI (CI=true), where they fail.
"""

import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

import prpo

pytestmark = pytest.mark.xdist_group("package")

ROOT = Path(__file__).resolve().parents[1]
# pip's words when the package index cannot be reached (then the build is skipped, except in CI)
_NO_INDEX = (r"Failed to establish a new connection|NewConnectionError|Temporary failure in name resolution"
             r"|Network is unreachable|No matching distribution found for setuptools")
REPO_URL = "https://github.com/prpo-rl/prpo"


def _source_files() -> list[str]:
    """The files a clean clone would have: tracked plus untracked-but-not-ignored (git), else the
    tree without the usual build, cache and environment directories."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout
        return [f for f in out.decode().split("\0") if f and (ROOT / f).is_file()]
    skip = {".git", "build", "dist", "runs", "__pycache__", ".pytest_cache", ".venv", "venv"}
    return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if p.is_file() and not any(part in skip or part.startswith(".ci-venv") or part.endswith(".egg-info")
                                       for part in p.relative_to(ROOT).parts)]


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(sdist, wheel) built by ``python -m build`` from a copy of the source tree (so the build's
    egg-info never touches the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for f in _source_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(src)],
                       capture_output=True, text=True)
    log = f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    if r.returncode and os.environ.get("CI") != "true" and re.search(_NO_INDEX, log):
        pytest.skip("python -m build installs the build backend from the package index, unreachable here")
    assert r.returncode == 0, f"python -m build failed:\n{log}"
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return sdists[0], wheels[0]


def test_twine_check_strict_passes(dists):
    r = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dists)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_wheel_holds_the_library_typed_and_licensed_and_nothing_else(dists):
    _, wheel = dists
    names = zipfile.ZipFile(wheel).namelist()
    info = f"prpo-{prpo.__version__}.dist-info/"
    assert "prpo/__init__.py" in names and "prpo/py.typed" in names
    assert info + "licenses/LICENSE" in names, [n for n in names if n.startswith(info)]
    stray = sorted({n.split("/")[0] for n in names} - {"prpo", info.rstrip("/")})
    assert not stray, f"the wheel installs more than the prpo package: {stray}"


def test_wheel_metadata_version_license_and_urls(dists):
    _, wheel = dists
    with zipfile.ZipFile(wheel) as z:
        meta = email.parser.Parser().parsestr(z.read(f"prpo-{prpo.__version__}.dist-info/METADATA").decode())
    assert meta["Name"] == "prpo"
    assert meta["Version"] == prpo.__version__  # one version source
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["License-File"] == "LICENSE"
    assert meta["Description-Content-Type"] == "text/markdown"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Repository", "Documentation", "Issues"} <= set(urls), urls
    assert all(u.startswith(REPO_URL) for u in urls.values()), urls
    assert any(c.startswith("Programming Language :: Python :: 3.11") for c in meta.get_all("Classifier"))
    assert meta.get_payload().startswith((ROOT / "README.md").read_text().splitlines()[0])  # the README


def test_sdist_holds_the_package_and_its_license(dists):
    sdist, _ = dists
    top = f"prpo-{prpo.__version__}/"
    names = tarfile.open(sdist).getnames()
    for f in ("pyproject.toml", "README.md", "LICENSE", "prpo/__init__.py", "prpo/py.typed"):
        assert top + f in names, f
    # MANIFEST.in: the test suite needs the whole repository, so it is not shipped in part
    assert not [n for n in names if n.startswith(top + "tests")]


def test_license_is_the_apache_2_0_text_pyproject_names():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert re.search(r'^license = "Apache-2.0"$', (ROOT / "pyproject.toml").read_text(), re.M)


def test_readme_links_are_absolute():
    """The README is the package index's project page, where a relative link is broken: every
    markdown link and image is absolute (or an in-page anchor)."""
    text = (ROOT / "README.md").read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)", text)  # [text](target) and ![alt](target)
    targets += re.findall(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?\s*$", text, flags=re.M)  # [ref]: target
    targets += re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", text)  # HTML
    relative = [t for t in targets if not re.match(r"(https?:|mailto:|#)", t)]
    assert targets and not relative, f"relative links in README.md (use {REPO_URL}/blob/main/...): {relative}"
    # links into this repository name files that exist
    here = rf"^({re.escape(REPO_URL)}/(blob|tree)/main|https://raw\.githubusercontent\.com/prpo-rl/prpo/main)/"
    ours = [re.sub(here, "", t) for t in targets]
    missing = [t for t, p in zip(targets, ours) if p != t and not (ROOT / p.split("#")[0]).exists()]
    assert not missing, f"README.md links to files not in the repository: {missing}"


def test_readme_test_command_is_what_ci_runs_and_names_the_oldest_jax():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    main_suite = [line.strip() for line in ci.splitlines() if line.strip().startswith("python -m pytest")]
    assert main_suite and main_suite[-1] in readme, main_suite
    deps = {re.split(r"[<>=!~ ]", d)[0]: d for d in _project_dependencies()}
    jax_floor = re.search(r">=\s*([\w.]+)", deps["jax"]).group(1)
    assert f"JAX {jax_floor}" in readme  # the oldest JAX CI tests, as the README states it


def _project_dependencies() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
