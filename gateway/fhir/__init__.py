"""The FHIR R4 edge at ``/fhir/R4``: what EHRs and FHIR clients call.

Owns the routes (create, read, vread, update, patch, delete, conditional writes, history, search), Bundles
(transaction, batch, collection imports), the search parameters and the searchset Bundle, ``$validate``, the
CapabilityStatement, the per-tenant validation policy, and the offloading of large bodies from the event loop.
Writes go through ``gateway.store``; nothing here maps to platform records (that is ``gateway.work``).
"""

# The package's modules; each is imported where it is used, so importing the package loads none of them.
__all__ = [
    "answers",
    "bundle",
    "capability",
    "edge",
    "history",
    "matching",
    "offload",
    "patch",
    "policy",
    "requests",
    "routes",
    "search",
    "searchset",
    "validate_op",
]
