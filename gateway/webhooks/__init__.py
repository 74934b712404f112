"""Webhooks: platform subscriptions to the change feed, delivered signed, in feed order, retried and dead-lettered.

Owns the subscription routes at ``/platform/v1/subscriptions`` (mounted by ``gateway.app``), the subscriptions and
their URL policy in Redis, one subscription's delivery, and the dispatcher the worker process runs.
"""

# The package's modules; each is imported where it is used, so importing the package loads none of them.
__all__ = [
    "delivery",
    "dispatch",
    "routes",
    "subscriptions",
]
