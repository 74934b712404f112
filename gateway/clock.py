"""Time, from one place: code that reads the time takes a ``Clock``; ``services.py`` hands out the system's.

A clock is any zero-argument callable returning epoch seconds (``time.time`` is one), so a test passes its own
and never sleeps to make two timestamps differ.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]

system_clock: Clock = time.time


def instant(epoch: float) -> str:
    """Return epoch seconds as a FHIR instant: UTC, milliseconds, ``Z``."""
    return f"{_utc_second(math.floor(epoch))}.{int(epoch * 1000) % 1000:03d}Z"


def instant_ms(ms: int) -> str:
    """Return epoch milliseconds as a FHIR instant, as ``instant`` writes one (exact: no float on the way)."""
    return f"{_utc_second(ms // 1000)}.{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=8)
def _utc_second(second: int) -> str:
    # A worker stamps every event of a batch within the same second or two: format each second once.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def epoch_of(value: str | None) -> float | None:
    """Return the epoch seconds of an ISO 8601 date-time (no zone means UTC), or None when it is not one."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
