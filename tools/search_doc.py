"""The table of search parameters per type in docs/fhir.md, made from what the gateway serves.

``python tools/search_doc.py`` prints the table; ``--write`` puts it into docs/fhir.md between the
``search-parameters`` markers. ``tests/gateway/test_search.py`` checks the document holds what this makes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from conformance.definitions import R4_RESOURCE_TYPES
from gateway.store.parameters import indexed

DOC = Path(__file__).resolve().parents[1] / "docs" / "fhir.md"
START, END = "<!-- search-parameters:start -->", "<!-- search-parameters:end -->"


def table() -> str:
    """Return the Markdown table: per type, its served parameters by search type (besides _id, _lastUpdated)."""
    rows = ["| type | reference | token | date | string, uri |", "|---|---|---|---|---|"]
    for rtype in sorted(R4_RESOURCE_TYPES):
        cells = [_names(rtype, kinds) for kinds in (("reference",), ("token",), ("date",), ("string", "uri"))]
        rows.append(f"| {rtype} | {' | '.join(cells)} |")
    return "\n".join(rows)


def _names(rtype: str, kinds: tuple[str, ...]) -> str:
    return " ".join(f"`{name}`" for name, p in sorted(indexed(rtype).items()) if p.type in kinds)


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
