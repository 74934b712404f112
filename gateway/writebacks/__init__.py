"""Write-backs: what the platform asks the tenant's EHR to store, built, checked and queued for the connectors.

Owns the write-back routes under ``/platform/v1``, the request models, the builders (typed fhir.resources models,
adjusted for the tenant's vendor, checked by both those models and the project's R4 validator), the write-back
state in Redis and the outbound queue (on ``gateway.work.streams``). Delivery to the EHR is ``connectors``' work.
"""

# The package's modules; each is imported where it is used, so importing the package loads none of them.
__all__ = [
    "builders",
    "models",
    "queue",
    "routes",
    "store",
]
