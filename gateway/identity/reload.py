"""The clients file read again while the API runs: when it changes (polled every
``GATEWAY_CLIENTS_RELOAD_SECONDS``) or on SIGHUP.

A reload is all or nothing: a file that does not parse or validate leaves the clients in use as they were and logs
an error naming where the file is wrong (never its content, which holds tokens). A client removed from the file is
refused from the next request on, its access tokens too (``gateway.auth``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import ValidationError

from gateway.settings import ClientsConfig

__all__ = ["ClientsReloader"]

log = logging.getLogger("gateway.identity")


def _why(exc: Exception) -> str:
    """Say what is wrong with the file without quoting it (a YAML error's own text shows the line)."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['type']}" for e in exc.errors()[:10])
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON (line {exc.lineno})"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        return f"not YAML (line {exc.problem_mark.line + 1})"
    return type(exc).__name__


class ClientsReloader:
    """Watch a clients file and hand each good new version to ``apply``."""

    def __init__(
        self, path: Path, apply: Callable[[ClientsConfig], None], *, interval: float, placeholders: bool = False
    ) -> None:
        self._path = path
        self._placeholders = placeholders  # accept tokens that look copied from documentation (development only)
        self._apply = apply
        self._interval = interval
        self._stamp = self._stat()
        self._hangup = asyncio.Event()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self._path.stat()  # follows a symlink: a Kubernetes volume swaps the link, not the file
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def check(self, *, force: bool = False) -> bool:
        """Reload when the file changed (or ``force``); tell whether new clients are in use."""
        stamp = self._stat()
        if stamp == self._stamp and not force:
            return False
        self._stamp = stamp
        try:
            config = ClientsConfig.load(self._path)
        except (OSError, ValueError, yaml.YAMLError) as exc:  # ValidationError and JSONDecodeError are ValueErrors
            log.error("clients file not reloaded; the clients in use stay", extra={"why": _why(exc)})
            return False
        if not self._placeholders and (names := config.weak_clients()):
            why = f"weak or placeholder tokens: {', '.join(names)}"  # client names, as `fhir-gateway api` refuses them
            log.error("clients file not reloaded; the clients in use stay", extra={"why": why})
            return False
        self._apply(config)
        log.info("clients file reloaded", extra={"clients": len(config.clients)})
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Check every interval and on SIGHUP until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
            loop.add_signal_handler(signal.SIGHUP, self._hangup.set)
        try:
            while not stop.is_set():
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._hangup.wait())]
                await asyncio.wait(waits, timeout=self._interval or None, return_when=asyncio.FIRST_COMPLETED)
                for waiting in waits:
                    waiting.cancel()
                if stop.is_set():
                    break
                forced = self._hangup.is_set()
                self._hangup.clear()
                await asyncio.to_thread(self.check, force=forced)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
