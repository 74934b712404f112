"""The words and files of a Communication's payload: plain text out of strings, base64 text or (X)HTML, and back.

Text is the body; any other content stays in the stored FHIR version and the record lists its metadata. Nothing
is ever fetched: an attachment's URL is kept as given, and a referenced Binary is read only when the gateway
already stores it (Oracle Health's read API returns message bodies that way).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mappers.elements import MAPPING, items, ref, text
from mappers.model import Part, Ref
from mappers.narrative import plain_text

_TEXT_TYPES: Final = frozenset({"text/plain", "text/html", "application/xhtml+xml"})
# How a body goes as an attachment, where a vendor wants one (``mappers.vendors.outbound``).
TEXT_BODY_TYPE: Final = "text/plain; charset=utf-8"
_BINARY: Final = re.compile(r"(?:^|/)Binary/([A-Za-z0-9.\-]{1,64})(?:/_history/[A-Za-z0-9.\-]{1,64})?$", re.ASCII)


class MessageAttachment(Part):
    """An attachment's metadata as given; its content is never fetched nor copied into the record."""

    content_type: str | None = None
    title: str | None = None
    size: int | None = None
    url: str | None = None
    # The data is inline in the stored FHIR version (read it there, through ``source.fhir_url``).
    inline: bool = False


@dataclass
class Payload:
    """What a Communication's payload says, as the platform shows it."""

    body: str | None = None
    attachments: list[MessageAttachment] = field(default_factory=list)
    # References that could not be read as text (never resolved beyond a Binary the gateway stores).
    unread: list[Ref] = field(default_factory=list)
    # The stored Binaries read, whose security labels the message carries.
    binaries: list[Mapping[str, Any]] = field(default_factory=list)


def binary_keys(payload: object) -> list[str]:
    """Return the ``related`` keys of the Binaries a payload references."""
    keys = (_binary_key(part.get("contentReference")) for part in items(payload) if isinstance(part, MAPPING))
    return [key for key in keys if key is not None]


def read_payload(payload: object, related: Mapping[str, Mapping[str, Any]]) -> Payload:
    """Read a Communication.payload: text parts joined into the body, the rest as metadata or references."""
    found, texts = Payload(), []
    for part in items(payload):
        if not isinstance(part, MAPPING):
            continue
        if (words := text(part.get("contentString"))) is not None:
            texts.append(words)
        elif isinstance(attachment := part.get("contentAttachment"), MAPPING):
            if (words := decoded(attachment.get("contentType"), attachment.get("data"))) is not None:
                # A body is the message's words, not a file to download: it is not listed as an attachment.
                texts.append(words)
            else:
                found.attachments.append(_attachment(attachment))
        elif (reference := ref(part.get("contentReference"))) is not None:
            key = _binary_key(part.get("contentReference"))
            binary = related.get(key) if key else None
            if isinstance(binary, MAPPING):
                found.binaries.append(binary)
                if (words := decoded(binary.get("contentType"), binary.get("data"))) is not None:
                    texts.append(words)
                    continue
            found.unread.append(reference)
    found.body = "\n\n".join(texts) if texts else None
    return found


def decoded(content_type: object, data: object) -> str | None:
    """Return the text of base64 text/plain or (X)HTML data, else None (other content is never a body)."""
    if not isinstance(content_type, str) or not isinstance(data, str):
        return None
    mime, _, params = content_type.partition(";")
    mime = mime.strip().lower()
    if mime not in _TEXT_TYPES:
        return None
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    words = raw.decode(_charset(params), errors="replace").removeprefix("\ufeff")
    # HTML becomes what a reader sees: no script or style content, entities decoded, one line per block.
    found = words if mime == "text/plain" else plain_text(words)
    return found if found and found.strip() else None


def encoded(body: str) -> str:
    """Return a body as base64 UTF-8 text, the data of a ``TEXT_BODY_TYPE`` attachment (``decoded`` reads it)."""
    return base64.b64encode(body.encode("utf-8")).decode("ascii")


def _binary_key(value: object) -> str | None:
    reference = text(value.get("reference")) if isinstance(value, MAPPING) else None
    match = _BINARY.search(reference.strip()) if reference else None
    return f"Binary/{match.group(1)}" if match else None


def _attachment(value: Mapping[str, Any]) -> MessageAttachment:
    size = value.get("size")
    return MessageAttachment(
        content_type=text(value.get("contentType")),
        title=text(value.get("title")),
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        url=text(value.get("url")),
        inline=text(value.get("data")) is not None,
    )


def _charset(params: str) -> str:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            try:
                return codecs.lookup(value.strip().strip('"')).name
            except LookupError:
                break
    return "utf-8"
