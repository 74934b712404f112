"""New resource ids: random (version 4) UUIDs in their usual text form, made many at a time.

``str(uuid.uuid4())`` costs about 3.5 us (a ``UUID`` object built and checked, then formatted); a transaction
Bundle's creates each need one. ``new_ids`` reads the randomness for all of them at once and writes each id from
its 16 bytes as ``uuid.UUID(bytes=..., version=4)`` would: the same text, the same version and variant bits.
"""

from __future__ import annotations

import os

# The hex digit of a UUID's variant (the first of its fourth group): the two high bits of its nibble set to "10".
_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


def formatted(raw: bytes) -> str:
    """Return the version-4 UUID made from 16 random bytes, as ``str(uuid.UUID(bytes=raw, version=4))``."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def new_ids(count: int) -> list[str]:
    """Return ``count`` new random ids (version-4 UUIDs)."""
    if count <= 0:
        return []
    raw = os.urandom(16 * count)
    return [formatted(raw[at : at + 16]) for at in range(0, 16 * count, 16)]
