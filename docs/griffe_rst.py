"""Griffe extension for the API pages: the reStructuredText layout of prpo's docstrings, as Markdown.

prpo's docstrings are Google style (``Args:`` / ``Returns:``, which griffe parses) with reST
layout in the free text. Markdown would merge some of it into paragraphs, so before parsing:

* an indented block after a blank line (a formula, or an example after ``::``) becomes a
  fenced code block, so its line breaks and alignment stay;
* a trailing ``::`` becomes ``:`` (a line that is only ``::`` goes);
* a simple reST table (``=====  =====`` borders) becomes a Markdown table;
* a reST definition list (a term line, its definition indented under it) becomes a Markdown
  list, the definition on the line after the term.

Indented text inside Google sections, list items and definition lists is left alone.
"""

from __future__ import annotations

import re

import griffe

_SECTION = re.compile(
    r"^(args|arguments|params|parameters|keyword args|keyword arguments|other args|other parameters|"
    r"raises|exceptions|returns|yields|receives|warns|attributes|functions|methods|classes|modules|"
    r"examples?|notes?|warnings?|deprecated|type aliases|type parameters)\s*:\s*$",
    re.I,
)
_BORDER = re.compile(r"^=+( +=+)+\s*$")
_LIST = re.compile(r"^(\*|-|\+|\d+[.)])\s")
_UNDERLINE = re.compile(r"^(-{3,}|={3,}|~{3,})\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _table(lines: list[str]) -> list[str]:
    """A simple reST table (border, rows, border) as Markdown; rows with an empty first column continue the last."""
    border = lines[0]
    starts = [m.start() for m in re.finditer(r"=+", border)]
    rows: list[list[str]] = []
    for line in lines[1:-1]:
        if not line.strip() or _BORDER.match(line):
            continue
        cells = [line[s : (starts[i + 1] if i + 1 < len(starts) else None)].strip() for i, s in enumerate(starts)]
        if rows and not cells[0]:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    out = ["| " + " | ".join(" " for _ in starts) + " |", "|" + "---|" * len(starts)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _definition(lines: list[str], i: int):
    """A reST definition list item starting at line ``i``: ``(term lines, dedented definition, next i)``.

    The term is one or more unindented lines, the definition the indented lines right after them
    (no blank line between). None when line ``i`` does not start one (e.g. a setext heading).
    """
    j = i
    while j < len(lines) and lines[j].strip() and _indent(lines[j]) == 0:
        if _UNDERLINE.match(lines[j]) or _BORDER.match(lines[j]) or (j > i and _LIST.match(lines[j])):
            return None
        j += 1
    if j == i or j >= len(lines) or not lines[j].strip():
        return None
    k = j
    while k < len(lines) and lines[k].strip() and _indent(lines[k]) > 0:
        k += 1
    cut = min(_indent(d) for d in lines[j:k])
    return lines[i:j], [d[cut:] for d in lines[j:k]], k


def convert(text: str) -> str:
    """The docstring ``text`` (dedented) with its reST layout turned into Markdown."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    in_section = False  # inside a Google section (its indented body belongs to griffe's parser)
    in_list = False  # the last top-level paragraph is a list item
    after_definition = False  # the last output was a definition list item
    while i < len(lines):
        line = lines[i]
        indent = _indent(line)
        if not line.strip():
            after_definition = False
        if line.strip() and indent == 0:
            in_section = bool(_SECTION.match(line))
            in_list = bool(_LIST.match(line)) or (in_list and bool(out) and out[-1].strip() != "")
            if _BORDER.match(line):  # a simple table: border ... border
                end = next((j for j in range(i + 1, len(lines)) if _BORDER.match(lines[j])), None)
                if end is not None:
                    out += [""] if out and out[-1].strip() else []
                    out += _table(lines[i : end + 1])
                    i = end + 1
                    continue
            if line.rstrip() == "::":
                i += 1
                continue
            if line.rstrip().endswith("::"):
                line = line.rstrip()[:-1]
            starts_paragraph = not out or not out[-1].strip() or bool(_UNDERLINE.match(out[-1])) or after_definition
            item = _definition(lines, i) if starts_paragraph and not in_section and not in_list else None
            if item is not None:
                term, definition, i = item
                if len(term) == 1 and term[0].rstrip().endswith(":"):  # "Groups:" + an indented block
                    out += [term[0], ""] + definition
                else:  # a reST definition list item: the term, then its definition on the next line
                    out += ["- " + " ".join(t.strip() for t in term) + "  "] + ["  " + d for d in definition]
                after_definition = True
                continue
            after_definition = False
            out.append(line)
            i += 1
            continue
        if line.strip() and indent > 0 and not in_section and not in_list and (not out or not out[-1].strip()):
            block = []
            j = i
            while j < len(lines) and (
                (lines[j].strip() and _indent(lines[j]) > 0)
                or (not lines[j].strip() and j + 1 < len(lines) and lines[j + 1].strip() and _indent(lines[j + 1]) > 0)
            ):
                block.append(lines[j])
                j += 1
            cut = min(_indent(b) for b in block if b.strip())
            out += ["```"] + [b[cut:] for b in block] + ["```"]
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RstLayout(griffe.Extension):
    """Rewrite each docstring's reST layout as Markdown when griffe creates the object."""

    def on_instance(self, *, obj, **kwargs) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
