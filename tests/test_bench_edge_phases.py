"""``bench/edge_phases.py`` prints each phase's CPU per resource and, with an append-only file, the bytes each
accepted resource added to it."""

from __future__ import annotations

import os

import pytest

from tests.support import bench_script


def _row(out: str, size: int) -> dict[str, str]:
    """Return the table's row for ``size``-entry Bundles, by column heading."""
    lines = out.splitlines()
    [heading] = [line for line in lines if line.startswith("| Bundle |")]
    [line] = [line for line in lines if line.startswith(f"| {size}-entry |")]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    return dict(zip([h.strip() for h in heading.strip("|").split("|")], cells, strict=True))


def test_the_phases_and_the_aof_bytes_per_resource(capsys: pytest.CaptureFixture[str]) -> None:
    phases = bench_script("edge_phases")
    assert phases.main(["--sizes", "5", "--bundles", "4", "--embedded"]) == 0
    row = _row(capsys.readouterr().out, 5)
    assert float(row["total us/resource"]) > 0
    # A 5-entry Bundle's resources each add their body, current state, indexes, job and audit entry: kilobytes.
    assert 1_000 < int(row["AOF bytes/resource"].replace(",", "")) < 10_000


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL is not set")
def test_no_aof_figure_without_an_aof(capsys: pytest.CaptureFixture[str]) -> None:
    import redis

    if int(redis.Redis.from_url(os.environ["REDIS_URL"]).info("persistence").get("aof_enabled", 0)):
        pytest.skip("REDIS_URL's server keeps an append-only file")
    phases = bench_script("edge_phases")
    assert phases.main(["--sizes", "3", "--bundles", "2"]) == 0
    assert _row(capsys.readouterr().out, 3)["AOF bytes/resource"] == "-"
