"""The FHIR resource store on Redis: versions, tombstones, search indexes and the inbound job, written atomically.

``store.Store`` writes (``apply``: operations and results in ``operation``) and reads (``reads``). Owns the whole
keyspace (``keys``), the one atomic write primitive (``plan``, run by ``committer`` with ``commit.lua``), what each
decided write adds to a plan (``versions``), many reads in one round trip (``snapshot``), what a resource is
indexed by (``indexing``), reference rewriting (``references``), the EHR's version convention (``ehr_meta``) and
the Redis connection (``connection``). Imports no other gateway package.
"""

from gateway.store.committer import Committer
from gateway.store.connection import connect, text
from gateway.store.indexing import parse_condition
from gateway.store.keys import Keyspace
from gateway.store.operation import Create, Current, Delete, Operation, Result, Update, digest
from gateway.store.plan import Plan, PlanConflict, PlanOverloaded
from gateway.store.store import Store

__all__ = [
    "Committer",
    "Create",
    "Current",
    "Delete",
    "Keyspace",
    "Operation",
    "Plan",
    "PlanConflict",
    "PlanOverloaded",
    "Result",
    "Store",
    "Update",
    "connect",
    "digest",
    "parse_condition",
    "text",
]
