"""A long-running process freezes its start-up heap (the R4 tables among it) before it serves."""

from __future__ import annotations

import json
import subprocess
import sys


def test_settling_freezes_the_tables_and_raises_the_young_threshold() -> None:
    # The collector walks generations 0-2 only (what gc.get_objects lists); frozen objects are never walked again.
    script = (
        "import gc, json; from gateway import heap; heap.settle(); walked = len(gc.get_objects()); "
        "from conformance.definitions import tables; from conformance.validator import validate_resource; "
        "from gateway.store.parameters import indexed; tables(); indexed('Patient'); "
        "validate_resource({'resourceType': 'Appointment', 'status': 'booked', "
        "'participant': [{'status': 'accepted'}]}); "
        "print(json.dumps([gc.get_freeze_count(), walked, len(gc.get_objects()), gc.get_threshold()[0]]))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    frozen, walked, after_use, young = json.loads(out.stdout)
    assert frozen > 50_000 and walked < frozen / 10  # the tables, rules and search parameters were loaded, then frozen
    assert after_use - walked < 1_000  # using them builds nothing more for the collector to walk
    assert young == 10_000
