"""Read a request body within limits and parse it as strict JSON.

Strict means: UTF-8 (a byte-order mark is tolerated), no duplicate keys, no NaN or Infinity, nesting no deeper
than the configured limit and no string longer than the configured limit, no integer longer than Python converts
(4,300 digits), no number too large for a float, and no lone UTF-16 surrogate escape (``"\\ud800"``: JSON text may
spell it, Unicode text may not hold it). Every failure is a GatewayError with a 4xx status, naming the element
where one is to blame; nothing here can raise anything else for any input.

Most bodies take the fast path: orjson parses them, and three byte-level checks done in C prove the strict rules
held (see ``_parse_plain``). Any body the fast path cannot vouch for (a BOM, ``\\u`` escapes, integers past 64
bits, anything orjson refuses) is parsed again by the standard library, whose errors say exactly what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import orjson

from conformance.primitive import bad_unicode
from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


def check_content_type(content_type: str | None) -> None:
    """Refuse a body that is not declared as FHIR JSON."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in JSON_TYPES:
        shown = media or "none"
        raise UnsupportedMediaType(
            f"content type {shown!r} is not supported; send application/fhir+json or application/json"
        )


async def read_limited(chunks: AsyncIterator[bytes], content_length: str | None, max_bytes: int) -> bytes:
    """Collect a body, refusing it as soon as it passes ``max_bytes`` (chunked bodies too)."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if declared > max_bytes:
            raise PayloadTooLarge(f"the body is larger than the limit of {max_bytes} bytes")
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) > max_bytes:
            raise PayloadTooLarge(f"the body is larger than the limit of {max_bytes} bytes")
    return bytes(buffer)


class _TooLong:
    """Stands in for an integer literal too long to convert, so that the check after parsing can name its place."""


_TOO_LONG = _TooLong()


def _parse_int(literal: str) -> Any:
    try:
        return int(literal)
    except ValueError:  # past sys.get_int_max_str_digits() (4,300 digits)
        return _TOO_LONG


def _bad_number(node: Any) -> bool:
    return node is _TOO_LONG or (type(node) is float and node - node != 0)  # inf - inf is nan


def _bad_text(node: Any) -> bool:
    return type(node) is str and bad_unicode(node)


def _bad_key(node: Any) -> bool:
    return type(node) is dict and any(bad_unicode(key) for key in node)


def _locate(value: Any, bad: Any) -> str | None:
    """Return the element path (``Patient.name[0].family``) of the first node ``bad`` picks, breadth first."""
    root = value.get("resourceType") if isinstance(value, dict) else None
    start = root if isinstance(root, str) and root.isascii() and root.isalpha() and len(root) <= 64 else ""
    queue: list[tuple[Any, str]] = [(value, start)]
    for node, path in queue:  # grows while it is read
        if bad(node):
            return path or None
        if isinstance(node, dict):
            for key, child in node.items():
                name = key if key.isascii() and key.isidentifier() and len(key) <= 64 else "?"
                queue.append((child, f"{path}.{name}" if path else name))
        elif isinstance(node, list):
            queue.extend((child, f"{path}[{i}]") for i, child in enumerate(node))
    return None


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequest(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def _check_shape(value: Any, max_depth: int, max_string: int) -> None:
    # Iterative, so a deep document cannot exhaust the Python stack here.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                raise BadRequest(f"JSON is nested deeper than {max_depth} levels")
            for key, child in node.items():
                if len(key) > max_string:
                    raise BadRequest(f"a JSON key is longer than {max_string} characters")
                if bad_unicode(key):
                    raise BadRequest(
                        "a JSON key holds a lone UTF-16 surrogate escape, which is not a valid Unicode character",
                        expression=_locate(value, _bad_key),
                    )
                stack.append((child, depth + 1))
        elif isinstance(node, list):
            if depth > max_depth:
                raise BadRequest(f"JSON is nested deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in node)
        elif isinstance(node, str):
            if len(node) > max_string:
                raise BadRequest(f"a JSON string is longer than {max_string} characters")
            if bad_unicode(node):
                raise BadRequest(
                    "a JSON string holds a lone UTF-16 surrogate escape, which is not a valid Unicode character",
                    expression=_locate(value, _bad_text),
                )
        elif _bad_number(node):
            raise BadRequest(
                "a JSON number is out of range (an integer of more than 4300 digits, or beyond a float)",
                expression=_locate(value, _bad_number),
            )


_UNSURE = object()  # what _parse_plain answers when the standard parser must decide
_BRACKETS = bytes.maketrans(b"[]", b"{}")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'{}[]"')


def _parse_plain(raw: bytes, max_depth: int, max_string: int) -> Any:
    """Parse ``raw`` with orjson when the strict rules provably hold; else return ``_UNSURE``.

    orjson refuses NaN, Infinity, invalid UTF-8 and lone surrogates, but keeps the last of duplicate keys and
    allows deeper nesting. So, on orjson's compact re-serialisation ``out`` of what it read:

    - Duplicate keys: without ``\\u`` escapes in ``raw``, each string decodes to as many colons as it shows, so
      ``raw`` holds one colon per key plus those in strings, and ``out`` the same for what was kept; a dropped
      duplicate would leave ``raw`` with at least one colon more.
    - Depth: in ``out`` every quote inside a string is escaped, so splitting on the bare quotes leaves the text
      outside strings at even positions; its brackets, one kind, lose one level per ``replace`` of ``{}``.
    - String length: a string cannot be longer than the body.
    - Integers: orjson reads one past 64 bits as a float, written back with an exponent (``-9.2e+18``); ``out``
      then holds more ``e+`` than ``raw`` (strings, without ``\\u`` escapes, hold the same text in both).
    """
    # One byte first: ``in`` and ``count`` find a byte with memchr, but search for two bytes far more slowly (8-9 us
    # per search of a 20-entry Bundle's 10 KB): the pairs below are looked for only where one of their bytes is.
    if len(raw) > max_string or (b"\\" in raw and b"\\u" in raw):
        return _UNSURE
    try:
        value = orjson.loads(raw)
        out = orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # refused, or nested past orjson's 254 levels
        return _UNSURE
    if raw.count(b":") != out.count(b":"):
        return _UNSURE
    if (b"+" in out or b"+" in raw) and out.count(b"e+") != raw.count(b"e+"):
        return _UNSURE  # an integer past 64 bits, which orjson reads as a float
    if b"\\" in out:  # escaped quotes and backslashes go first, so that every quote left is a bare one
        out = out.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Only brackets (one kind) and bare quotes are kept. Most strings hold no bracket and become ``""``: taking out
    # each such pair leaves no quote at all only when every string was one (the first quote can pair with none but
    # the second, and so on), and then the rest is the structure. Else the text outside strings is at even positions.
    kept = out.translate(_BRACKETS, _NOT_STRUCTURE)
    brackets = kept.replace(b'""', b"")
    if b'"' in brackets:
        brackets = b"".join(kept.split(b'"')[::2])
    for _ in range(max_depth):
        if not brackets:
            return value
        brackets = brackets.replace(b"{}", b"")
    return value if not brackets else _UNSURE


def parse_json(raw: bytes, *, max_depth: int, max_string: int) -> Any:
    """Parse a body as strict JSON, or raise BadRequest saying what is wrong (never the content)."""
    if not raw.strip():
        raise BadRequest("the request body is empty")
    value = _parse_plain(raw, max_depth, max_string)
    if value is not _UNSURE:
        return value
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant, parse_int=_parse_int
        )
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise BadRequest(f"JSON is nested deeper than {max_depth} levels") from None
    _check_shape(value, max_depth, max_string)
    return value
