"""The SSRF guard: a connector calls its EHR's registered base URL (and below it) and its token URL, nothing else.

Every request is checked before it is sent (and again by an httpx request hook, so nothing that reaches the pool
escapes it); a ``next`` link, a ``Location`` or any URL in incoming data is never followed to another origin.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from connectors.errors import UnsafeURL


class URLGuard:
    """Allow only URLs under the registered base URL, and the token URL itself."""

    def __init__(self, base_url: str, token_url: str | None) -> None:
        self.base = urlsplit(base_url.rstrip("/"))
        self.token = urlsplit(token_url) if token_url else None

    @staticmethod
    def _origin(parts: Any) -> tuple[str, str, int | None]:
        default = {"https": 443, "http": 80}.get(parts.scheme)
        return parts.scheme, (parts.hostname or "").lower(), parts.port or default

    def on_base(self, url: str) -> bool:
        """Tell whether ``url`` is the base URL or below it."""
        parts = urlsplit(url)
        if self._origin(parts) != self._origin(self.base) or parts.username or parts.password:
            return False
        path, base = parts.path.rstrip("/"), self.base.path.rstrip("/")
        return path == base or path.startswith(base + "/")

    def is_token_url(self, url: str) -> bool:
        """Tell whether ``url`` is the token URL."""
        if self.token is None:
            return False
        parts = urlsplit(url)
        return self._origin(parts) == self._origin(self.token) and parts.path == self.token.path and not parts.query

    def check(self, url: str) -> None:
        """Raise UnsafeURL unless ``url`` is on the base URL or is the token URL."""
        if not (self.on_base(url) or self.is_token_url(url)):
            raise UnsafeURL("refused a URL that is not on the EHR's registered base URL or token URL")
