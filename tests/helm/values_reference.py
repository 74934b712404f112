"""The values reference of docs/deploy.md, made from the comments in values.yaml.

``python -m tests.helm.values_reference`` prints the table; ``--write`` puts it into docs/deploy.md between the
``values-reference`` markers. The tests check that the document holds exactly what this makes.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.helm.rendering import CHART_DIR, REPO

VALUES = CHART_DIR / "values.yaml"
DOC = REPO / "docs" / "deploy.md"
START, END = "<!-- values-reference:start -->", "<!-- values-reference:end -->"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_-]+):(?: |$)")


@dataclass(frozen=True)
class Value:
    """One key of values.yaml: its dotted path, the comment above it, and whether other keys sit under it."""

    path: str
    comment: str
    section: bool


def read_values(path: Path = VALUES) -> list[Value]:
    """Return every block-style key of values.yaml, in file order, with the comment lines right above it."""
    entries: list[tuple[str, str, int]] = []
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped:
            comment = []
        elif stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
        elif (match := _KEY.match(line)) is None:
            comment = []  # a list item or a continuation line
        else:
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match["key"]))
            entries.append((".".join(k for _, k in stack), " ".join(comment), indent))
            comment = []
    paths = [p for p, _, _ in entries]
    return [Value(p, c, any(q.startswith(p + ".") for q in paths)) for p, c, _ in entries]


def lookup(values: dict[str, Any], path: str) -> Any:
    """Return the value at a dotted path."""
    node: Any = values
    for part in path.split("."):
        node = node[part]
    return node


def table(path: Path = VALUES) -> str:
    """Return the Markdown table of every value: key, default, description."""
    defaults = yaml.safe_load(path.read_text(encoding="utf-8"))
    rows = ["| Value | Default | Description |", "| --- | --- | --- |"]
    for value in read_values(path):
        default = "" if value.section else f"`{json.dumps(lookup(defaults, value.path))}`"
        comment = value.comment.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        key = f"**`{value.path}`**" if value.section else f"`{value.path}`"
        rows.append(f"| {key} | {default} | {comment} |")
    return "\n".join(rows)


def documented(doc: Path = DOC) -> str:
    """Return the table between the markers of the document."""
    text = doc.read_text(encoding="utf-8")
    return text[text.index(START) + len(START) : text.index(END)].strip()


def write(doc: Path = DOC) -> None:
    """Replace the table between the markers with a fresh one."""
    text = doc.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{table()}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        print(table())
