"""The offline FHIR R4 (4.0.1) validator and the conformance runner; imports nothing from the gateway.

``validator.validate_resource`` walks a resource against tables generated from the R4 definitions (types,
cardinalities, required bindings, compiled invariants) and returns issues with their element paths;
``outcome`` turns them into an OperationOutcome; ``report`` replays a corpus through a running gateway.
"""

# The package's modules; each is imported where it is used, so importing the package loads none of them.
__all__ = [
    "answer",
    "bundled",
    "capability",
    "coded",
    "datatypes",
    "definitions",
    "engine",
    "fhir_models",
    "fhirpath",
    "fhirpath_strings",
    "instance",
    "invariants",
    "narrative",
    "outcome",
    "primitive",
    "profile",
    "questionnaire",
    "r4_invariants",
    "reference",
    "report",
    "resources",
    "rules",
    "support",
    "terminology",
    "ucum",
    "validator",
]
