#!/usr/bin/env python3
"""CPU of a resource's index bookkeeping per version written (issue #13): the current-state hash read
(``Current.from_hash``), the previous version's ``idx`` read, the new version's index entries computed, moved in a
plan (``move_index``) and encoded for ``cur``. No Redis: the hash is the one the store would have read.

Three cases, for the ``bench/memory.py`` Appointment: a create (no previous state), an update that changes the
status (two token entries move), and an update that changes no indexed value. ``PYTHONPATH=<an older checkout>``
measures that checkout's code (figures before a change).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from memory import _appointment

from gateway import encoding
from gateway.store.keys import Keyspace
from gateway.store.maintenance import move_index
from gateway.store.operation import Current
from gateway.store.plan import Plan

try:  # the compact idx form
    from gateway.store.indexing import compact_entries, decode_index, encode_index

    COMPACT = True
except ImportError:  # an older checkout: full-key entries
    from gateway.store.indexing import index_entries

    COMPACT = False

KEYS, TENANT = Keyspace("mem-0123abcd"), "mem"  # the key prefix bench/memory.py uses (12 characters)
PREFIX = KEYS.index_prefix(TENANT, "Appointment") if COMPACT else ""
WRITTEN = {"compact": False}  # --compact: the form GATEWAY_COMPACT_INDEX_LISTS writes (else the one all gateways read)


def _stored(version: int) -> dict[str, Any]:
    body = _appointment(7, version)
    body["meta"] = {"versionId": str(version + 1), "lastUpdated": "2026-12-01T10:00:00.000Z"}
    return body


def _idx(stored: dict[str, Any]) -> bytes:
    if COMPACT:
        return encode_index(compact_entries(stored), PREFIX, compact=WRITTEN["compact"])
    return encoding.dumps(index_entries(KEYS, TENANT, stored))


def _hash(stored: dict[str, Any]) -> dict[bytes, bytes]:
    fields = {"vid": "2", "lu": "2026-12-01T10:00:00.000Z", "hash": "ab" * 32, "deleted": "0", "evid": "", "elu": ""}
    raw = {k.encode(): v.encode() for k, v in fields.items()}
    raw[b"idx"] = _idx(stored)
    return raw


def _write(raw: dict[bytes, bytes] | None, stored: dict[str, Any]) -> bytes:
    """What the store does with the index for one version: read the state, compute, move, encode."""
    plan = Plan()
    cur = Current.from_hash(raw) if raw else None
    if COMPACT:
        new = compact_entries(stored)
        move_index(plan, PREFIX, "a7", decode_index(cur.index, PREFIX) if cur else [], new)
        return encode_index(new, PREFIX, compact=WRITTEN["compact"])
    new_full = index_entries(KEYS, TENANT, stored)
    move_index(plan, "a7", cur.index if cur else [], new_full)
    return encoding.dumps(new_full)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=20000, help="writes per measurement (default 20000)")
    parser.add_argument("--repeat", type=int, default=5, help="measurements per case; the median is printed")
    parser.add_argument("--compact", action="store_true", help="write the compact form (GATEWAY_COMPACT_INDEX_LISTS)")
    args = parser.parse_args()
    WRITTEN["compact"] = args.compact and COMPACT
    second, third = _stored(1), _stored(2)  # version 2 is cancelled: the status entries move
    cases = {
        "create": (None, second),
        "update, status changed": (_hash(second), third),
        "update, no indexed value changed": (_hash(second), second),
    }
    print(f"{'compact' if WRITTEN['compact'] else 'full-key'} idx: {len(_idx(second))} bytes for the Appointment")
    for name, (raw, stored) in cases.items():
        runs = []
        for _ in range(args.repeat):
            start = time.process_time()
            for _ in range(args.loops):
                _write(raw, stored)
            runs.append((time.process_time() - start) / args.loops * 1e6)
        print(f"{name}: {statistics.median(runs):.2f} us CPU per version")
    return 0


if __name__ == "__main__":
    sys.exit(main())
