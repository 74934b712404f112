"""The platform API at ``/platform/v1``: normalized records, record queries, the change feed and risk flags.

Owns what a platform client reads (records the worker wrote, by id or by query through the worker's indexes), the
resumable change feed, which records a client may see (``disclosure``: sensitive ones only with the ``sensitive``
scope) and the risk-flag registry with its acknowledgement and escalation. Webhooks and write-backs are mounted
under the same prefix by ``gateway.app`` but live in their own packages.
"""

# The package's modules; each is imported where it is used, so importing the package loads none of them.
__all__ = [
    "disclosure",
    "feed",
    "queries",
    "risk",
    "risk_routes",
    "routes",
]
