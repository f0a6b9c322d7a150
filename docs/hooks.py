"""mkdocs build hook: render the docstrings' reStructuredText roles as plain code.

prpo's docstrings write cross-references the Sphinx way (``:func:`gae```, ``:class:`~prpo.envs.VecEnv```).
Markdown renders the backticked name as code and leaves the role in front of it; this hook drops the
role (and the ``~`` that shortens a dotted name to its last part) from the built HTML.
"""

import re

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const|ref|term):(<code>)(~)?([^<]*)</code>")


def _plain(match: re.Match) -> str:
    name = match.group(3)
    if match.group(2):  # ~a.b.c -> c
        name = name.rsplit(".", 1)[-1]
    return f"<code>{name}</code>"


def on_page_content(html, page, config, files):
    return _ROLE.sub(_plain, html)
