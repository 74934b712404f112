"""Plain text from XHTML narrative (``text.div``) and HTML bodies, for platform screens that show no markup."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Final

# Elements that start a new line of text; table cells only a new word.
_BLOCK: Final = frozenset(
    {
        "address", "article", "blockquote", "br", "caption", "dd", "div", "dl", "dt", "footer", "h1", "h2", "h3",
        "h4", "h5", "h6", "header", "hr", "li", "ol", "p", "pre", "section", "table", "tbody", "tfoot", "thead",
        "tr", "ul",
    }
)  # fmt: skip
_CELL: Final = frozenset({"td", "th"})
# Content that is code or metadata, never words for a reader (narrative must not carry script, but some does).
_HIDDEN: Final = frozenset({"script", "style", "head", "title", "template"})


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag in _BLOCK:
            self.parts.append("\n")
        elif tag in _CELL:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")
        elif tag in _CELL:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def plain_text(markup: object) -> str | None:
    """Return the words of an XHTML or HTML fragment, one line per block, or None when it has none."""
    if not isinstance(markup, str):
        return None
    parser = _TextOnly()
    try:
        parser.feed(markup)
        parser.close()
    except (AssertionError, ValueError):
        # Older html.parser versions assert on some malformed declarations; keep what was read before it.
        pass
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return "\n".join(line for line in lines if line) or None
