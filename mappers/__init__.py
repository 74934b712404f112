"""Pure mappers between FHIR R4 and the platform's normalized model: no I/O, no Redis, no gateway imports.

Each mapped family (appointments, messages, treatment plans, surveys and survey responses, people and providers)
reads FHIR into records and the change a new version makes, and writes platform requests back to FHIR; ``registry``
lists them for the worker, ``vendors`` holds what differs by EHR vendor, and ``instruments``/``scoring`` score
PHQ-9, PHQ-2 and GAD-7 however a form codes them.
"""

# The package's modules; each is imported where it is used, so importing the package loads none of them.
__all__ = [
    "answer",
    "answer_reader",
    "appointment",
    "codes",
    "context",
    "elements",
    "errors",
    "family",
    "goal",
    "instruments",
    "message",
    "message_body",
    "modality",
    "model",
    "narrative",
    "participant",
    "patient",
    "person",
    "provider",
    "recognition",
    "registry",
    "scoring",
    "survey",
    "survey_response",
    "treatment_plan",
    "vendors",
    "writer",
]
