"""Ready a long-running process's heap before it serves: load what every request reads, then freeze it.

The R4 definitions, the validator's rules and the search-parameter table are built on first use and kept for the
process's life: some hundred thousand objects. Python's cyclic garbage collector walks every tracked object on
each full pass, and a busy edge allocates enough (a 100-entry Bundle is tens of thousands of objects) to set off
passes often; walking the tables each time cost a 20-entry Bundle more CPU than its validation did
(bench/README.md, "Garbage collection"). ``gc.freeze`` moves everything alive at start into a generation the
collector never walks, and a larger first-generation threshold runs young passes less often: most of what a
request allocates is acyclic and freed by reference counting anyway.
"""

from __future__ import annotations

import gc

from conformance.validator import validate_resource
from gateway.store.parameters import indexed

YOUNG_THRESHOLD = 10_000  # allocations (net of frees) between young-generation passes; Python's default is 700


def settle() -> None:
    """Load the tables every request reads, collect once, freeze what is alive and raise the young threshold."""
    entry = {
        "fullUrl": "urn:uuid:7f3e2c1a-0b9d-4e5f-8a6b-1c2d3e4f5a6b",
        "request": {"method": "POST", "url": "Patient"},
        "resource": {"resourceType": "Patient", "birthDate": "1980-01-01"},
    }
    validate_resource({"resourceType": "Bundle", "type": "transaction", "entry": [entry]})  # the R4 tables and rules
    indexed("Appointment")  # the whole search-parameter table
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
