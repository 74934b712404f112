"""The embedded Redis: every write durable before it is answered, and its append-only file rewritten rarely."""

from __future__ import annotations

from pathlib import Path

import redis

from gateway.embedded import EmbeddedRedis


def test_the_embedded_redis_fsyncs_every_write_and_rewrites_its_log_from_512_mb(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        client = redis.Redis(unix_socket_path=str(server.socket_path), decode_responses=True)
        try:
            config = {
                **client.config_get("appendonly"),
                **client.config_get("appendfsync"),
                **client.config_get("auto-aof-rewrite-*"),
            }
        finally:
            client.close()
    assert config == {
        "appendonly": "yes",
        "appendfsync": "always",
        "auto-aof-rewrite-min-size": str(512 * 1024 * 1024),
        "auto-aof-rewrite-percentage": "100",
    }
