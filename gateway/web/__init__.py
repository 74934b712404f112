"""HTTP plumbing every route shares: reading and parsing bodies within limits, content negotiation, FHIR JSON
responses and what the OpenAPI document says beyond the route signatures. Knows no feature."""

# The package's modules; each is imported where it is used, so importing the package loads none of them.
__all__ = [
    "access_log",
    "body",
    "negotiation",
    "openapi",
    "responses",
]
