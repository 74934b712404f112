"""Render the conformance report (``docs/conformance.md``) as HTML: the little Markdown the runner writes.

Headings, paragraphs, bullet lists (nested by indentation), pipe tables, ``code`` and **bold**; everything else
is text. Every piece of the source is escaped before any markup is added, so the report cannot inject HTML.
"""

from __future__ import annotations

import re
from pathlib import Path

from markupsafe import Markup, escape

REPORT = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_HEADING = re.compile(r"^(#{1,4})\s+(.*)$")
_ITEM = re.compile(r"^(\s*)- (.*)$")
_RULE = re.compile(r"^\|?\s*:?-{3,}")


def inline(source: str) -> str:
    """Return one line of Markdown as escaped HTML with code spans and bold."""
    spans: list[str] = []

    def keep(match: re.Match[str]) -> str:
        spans.append(f"<code>{escape(match.group(1).replace(chr(92) + '|', '|'))}</code>")
        return f"\x00{len(spans) - 1}\x00"

    held = _CODE.sub(keep, source)
    html = _BOLD.sub(lambda m: f"<strong>{m.group(1)}</strong>", str(escape(held)))
    return re.sub(r"\x00(\d+)\x00", lambda m: spans[int(m.group(1))], html)


def _cells(line: str) -> list[str]:
    row = line.strip().removeprefix("|").removesuffix("|")
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row)]


def render(source: str) -> Markup:
    """Return the Markdown ``source`` as HTML."""
    out: list[str] = []
    lines = source.splitlines()
    depth = 0  # open <ul> levels
    i = 0

    def close_lists(to: int = 0) -> None:
        nonlocal depth
        while depth > to:
            out.append("</li></ul>")
            depth -= 1

    while i < len(lines):
        line = lines[i]
        if heading := _HEADING.match(line):
            close_lists()
            level = len(heading.group(1)) + 1  # the page has its own h1
            out.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif item := _ITEM.match(line):
            level = len(item.group(1)) // 2 + 1
            if level > depth:
                while depth < level:
                    out.append("<ul><li>")
                    depth += 1
            else:
                close_lists(level)
                out.append("</li><li>")
            out.append(inline(item.group(2)))
        elif line.lstrip().startswith("|"):
            close_lists()
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(lines[i])
                i += 1
            out.append(_table(rows))
            continue
        elif line.strip():
            close_lists()
            out.append(f"<p>{inline(line)}</p>")
        else:
            close_lists()
        i += 1
    close_lists()
    return Markup("\n".join(out))


def _table(rows: list[str]) -> str:
    head, body = rows[0], [r for r in rows[1:] if not _RULE.match(r.strip())]
    cells = "".join(f"<th>{inline(c)}</th>" for c in _cells(head))
    lines = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in _cells(r)) + "</tr>" for r in body)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{lines}</tbody></table>"


def report() -> Markup | None:
    """Return the latest conformance report as HTML, or None when this installation has none."""
    try:
        return render(REPORT.read_text(encoding="utf-8"))
    except OSError:
        return None
