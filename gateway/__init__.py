"""The gateway: the FHIR edge, the durable queue, the worker, the platform API, webhooks and write-backs.

``app`` builds the FastAPI application, ``services`` is the one composition root (``Services.build``), ``settings``
reads the environment, ``deps`` turns a request into a principal, ``errors`` maps every error to its HTTP answer
once, and ``cli`` is ``fhir-gateway``. The features live in the subpackages: ``fhir``, ``store``, ``work``,
``platform``, ``webhooks``, ``writebacks``, ``console`` and ``web``.
"""

__all__ = ["console", "fhir", "platform", "store", "web", "webhooks", "work", "writebacks"]
