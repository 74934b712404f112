"""The settings reference of docs/configuration.md, made from ``gateway.settings.Settings``.

``python tools/settings_doc.py`` prints the table; ``--write`` puts it into docs/configuration.md between the
``settings-reference`` markers. ``tests/gateway/test_settings.py`` checks the document holds what this makes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import AliasChoices

from gateway.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
START, END = "<!-- settings-reference:start -->", "<!-- settings-reference:end -->"


def table() -> str:
    """Return the Markdown table of every setting: variable, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        variable = alias.choices[0] if isinstance(alias, AliasChoices) else f"GATEWAY_{name.upper()}"
        default = "unset" if field.default is None else f"`{field.default}`"
        rows.append(f"| `{variable}` | {default} | {field.description or ''} |")
    return "\n".join(rows)


def documented(text: str) -> str:
    """Return what a document holds between the markers."""
    return text[text.index(START) + len(START) : text.index(END)].strip()


def write(doc: Path = DOC) -> None:
    """Put the table into ``doc`` between the markers."""
    text = doc.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{table()}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        print(table())
