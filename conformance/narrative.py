"""Narrative safety: a ``Narrative.div`` must be the XHTML subset R4 allows (txt-1), and nothing that runs.

A small tokenizer rather than an XML parser: the edge checks every narrative it receives, and most are a few
hundred bytes. It checks that the markup is well formed, that the root is a ``div`` in the XHTML namespace, that
only the elements and attributes of the narrative subset are used (so no ``script``, ``iframe``, ``on*`` event
handler or ``style`` element), that entities are XML's five or numeric, and that links are not ``javascript:``.
The lists are those of the reference validator (HTML 4 formatting, tables, lists, links and images).
"""

from __future__ import annotations

import re

XHTML_NS = "http://www.w3.org/1999/xhtml"

ELEMENTS = frozenset(
    [
        "p",
        "br",
        "div",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "a",
        "span",
        "b",
        "em",
        "i",
        "strong",
        "small",
        "big",
        "tt",
        "dfn",
        "q",
        "var",
        "abbr",
        "acronym",
        "cite",
        "blockquote",
        "hr",
        "address",
        "bdo",
        "kbd",
        "sub",
        "sup",
        "ul",
        "ol",
        "li",
        "dl",
        "dt",
        "dd",
        "pre",
        "table",
        "caption",
        "colgroup",
        "col",
        "thead",
        "tr",
        "tfoot",
        "tbody",
        "th",
        "td",
        "code",
        "samp",
        "img",
        "map",
        "area",
    ]
)
ATTRIBUTES = frozenset(
    [
        "title",
        "style",
        "class",
        "id",
        "lang",
        "xml:lang",
        "dir",
        "accesskey",
        "tabindex",
        "span",
        "width",
        "align",
        "valign",
        "char",
        "charoff",
        "abbr",
        "axis",
        "headers",
        "scope",
        "rowspan",
        "colspan",
    ]
)
COMBINATIONS = frozenset(
    [
        "a.href",
        "a.name",
        "img.src",
        "img.border",
        "div.xmlns",
        "blockquote.cite",
        "q.cite",
        "a.charset",
        "a.type",
        "a.hreflang",
        "a.rel",
        "a.rev",
        "a.shape",
        "a.coords",
        "img.alt",
        "img.longdesc",
        "img.height",
        "img.width",
        "img.usemap",
        "img.ismap",
        "map.name",
        "area.shape",
        "area.coords",
        "area.href",
        "area.nohref",
        "area.alt",
        "table.summary",
        "table.width",
        "table.border",
        "table.frame",
        "table.rules",
        "table.cellspacing",
        "table.cellpadding",
        "pre.space",
        "td.nowrap",
    ]
)
_ENTITIES = frozenset({"lt", "gt", "amp", "quot", "apos"})

_MARKUP = re.compile(r"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<[^<>]*>|&[^;&<\s]*;?|[<>]", re.S)
_TAG = re.compile(r"<(/?)([A-Za-z_][\w.:-]*)((?:\s+[^\s=/>]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*)\s*(/?)>")
_NUMERIC = re.compile(r"#(?:[0-9]+|x[0-9a-fA-F]+)")
# Most narratives are one div of plain text: accepted without tokenizing.
_PLAIN = re.compile(r'\s*<div xmlns="http://www\.w3\.org/1999/xhtml">[^<&>]*</div>\s*')
_ATTRIBUTE = re.compile(r"([^\s=/>]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_SCRIPT_URL = re.compile(r"\s*(?:javascript|vbscript)\s*:", re.I)
# Names echoed in diagnostics: HTML's own (so a report can say 'script'), never arbitrary markup, which may be PHI.
_HTML_NAMES = (
    ELEMENTS
    | ATTRIBUTES
    | frozenset(
        [
            "script",
            "iframe",
            "frame",
            "object",
            "embed",
            "applet",
            "style",
            "link",
            "meta",
            "base",
            "form",
            "input",
            "button",
            "textarea",
            "select",
            "svg",
            "math",
            "video",
            "audio",
            "source",
            "html",
            "head",
            "body",
            "title",
            "font",
            "center",
            "u",
            "s",
            "strike",
            "del",
            "ins",
            "nav",
            "section",
            "article",
            "header",
            "footer",
            "main",
            "figure",
            "src",
            "href",
            "name",
            "alt",
            "action",
            "formaction",
            "srcdoc",
        ]
    )
)
_EVENT = re.compile(r"on[a-z]{2,20}")


def div_problems(value: str) -> list[str]:
    """Return what is wrong with a narrative div (at most a few problems), or an empty list."""
    if _PLAIN.fullmatch(value):
        return []
    problems: list[str] = []
    stack: list[str] = []
    root_seen = False
    position = 0
    for token in _MARKUP.finditer(value):
        text = token.group()
        if not stack and value[position : token.start()].strip():
            problems.append("The narrative must be one <div> element, with no text outside it")
        position = token.end()
        first = text[0]
        if first == "&":
            entity = text[1:-1]
            if text[-1] != ";" or not (entity in _ENTITIES or _NUMERIC.fullmatch(entity)):
                problems.append("Invalid entity in the XHTML: only XML's five and numeric references are allowed")
            continue
        if text.startswith("<!"):
            if (text.startswith("<!--") and text[4:].lstrip().startswith("DOCTYPE")) or text.startswith("<!DOCTYPE"):
                problems.append("A DOCTYPE is not allowed in the narrative")
            elif not text.startswith(("<!--", "<![CDATA[")):
                problems.append("The narrative is not well-formed XHTML")
            continue
        if text == ">":
            continue
        tag = _TAG.fullmatch(text)
        if tag is None:
            problems.append("The narrative is not well-formed XHTML (a bare '<' or a broken tag)")
            break
        closing, name, attrs, empty = tag.groups()
        if closing:
            if not stack or stack[-1] != name:
                problems.append("The narrative is not well-formed XHTML (mismatched end tag)")
                break
            stack.pop()
            continue
        if not stack:
            if root_seen:
                problems.append("The narrative must be one <div> element")
                break
            root_seen = True
            _root(name, attrs, problems)
        elif name not in ELEMENTS:
            problems.append(f"Invalid element name in the XHTML ('{_shown(name)}')")
        else:
            _attributes(name, attrs, problems)
        if not empty:
            stack.append(name)
        if len(problems) > 4:
            break
    if not problems:
        if stack:
            problems.append("The narrative is not well-formed XHTML (an element is not closed)")
        elif not root_seen:
            problems.append("The narrative must be a <div> element in the XHTML namespace")
        elif value[position:].strip():
            problems.append("The narrative must be one <div> element, with no text outside it")
    return problems


def _shown(name: str) -> str:
    """Echo a tag or attribute name only when it is HTML's own (never arbitrary content, which may be PHI)."""
    lower = name.lower()
    return lower if lower in _HTML_NAMES or _EVENT.fullmatch(lower) else "?"


def _root(name: str, attrs: str, problems: list[str]) -> None:
    if name != "div":
        problems.append(f"Wrong name on the XHTML ('{_shown(name)}'): the narrative must start with div")
    namespace = None
    for attribute, double, single in _ATTRIBUTE.findall(attrs):
        if attribute == "xmlns":
            namespace = double or single
    if namespace != XHTML_NS:
        problems.append(f"The narrative <div> must be in the XHTML namespace ({XHTML_NS})")
    _attributes(name, attrs, problems)


def _attributes(element: str, attrs: str, problems: list[str]) -> None:
    if not attrs:
        return
    for attribute, double, single in _ATTRIBUTE.findall(attrs):
        if attribute.startswith("xmlns"):
            if attribute == "xmlns" and (double or single) != XHTML_NS:
                problems.append("An element of the narrative is not in the XHTML namespace")
            continue
        if attribute == "xml:space":
            continue
        if attribute not in ATTRIBUTES and f"{element}.{attribute}" not in COMBINATIONS:
            problems.append(f"Illegal attribute name in the XHTML ('{_shown(attribute)}' on '{element}')")
        elif attribute in ("href", "src") and _SCRIPT_URL.match(double or single):
            problems.append(f"A script URL is not allowed in the narrative ('{attribute}' on '{element}')")


_HREF = re.compile(r"""<a\s[^>]*?href\s*=\s*["']#([^"']+)["']""")
_ANCHOR = re.compile(r"""\s(?:id|name)\s*=\s*["']([^"']*)["']""")


def internal_links(div: str) -> list[str]:
    """Return the fragments (``#x``) the narrative's links point to."""
    return _HREF.findall(div)


def anchors(div: str) -> list[str]:
    """Return the ids and anchor names a narrative defines."""
    return _ANCHOR.findall(div)


_IMAGE = re.compile(r"<img[\s/>]", re.I)


def has_content(div: str) -> bool:
    """Tell whether a narrative shows something: text other than whitespace, an entity, or an image (txt-2)."""
    inner = div[div.find(">") + 1 : div.rfind("<")]
    if "<" not in inner and "&" not in inner:
        return not inner.isspace() and inner != ""  # the common case: a div of plain text
    for piece in _MARKUP.split(div):
        if piece.strip():
            return True
    return "&" in div or _IMAGE.search(div) is not None
