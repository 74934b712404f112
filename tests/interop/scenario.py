"""Synthetic data every client library's tests store first, and what each search over it must find.

``SEARCHES`` pairs a type and query (the parameters issue #11 names) with the ids it must return, in order when
``ordered``; the ids are the seeds' names, suffixed with the test's tag so that tests on one server stay apart.
"""

from __future__ import annotations

from typing import Any

SYSTEM = "urn:example:interop:mrn"


def seeds(tag: str) -> list[dict[str, Any]]:
    """Return the resources to PUT, each with its id (``name-tag``)."""

    def ref(name: str, rtype: str) -> dict[str, str]:
        return {"reference": f"{rtype}/{name}-{tag}"}

    return [
        {"resourceType": "Patient", "id": f"pa-{tag}", "identifier": [{"system": SYSTEM, "value": f"A-{tag}"}],
         "name": [{"family": f"Rivera{tag}", "given": ["Álex"]}], "gender": "female", "birthDate": "1990-04-02"},
        {"resourceType": "Patient", "id": f"pb-{tag}", "identifier": [{"system": SYSTEM, "value": f"B-{tag}"}],
         "name": [{"family": f"Okafor{tag}", "given": ["Sam"]}], "gender": "male", "birthDate": "1985-11-20"},
        {"resourceType": "Practitioner", "id": f"dr-{tag}", "name": [{"family": f"Lee{tag}"}]},
        {"resourceType": "ServiceRequest", "id": f"sr-{tag}", "status": "active", "intent": "order",
         "subject": ref("pa", "Patient")},
        {"resourceType": "Appointment", "id": f"ap1-{tag}", "status": "booked",
         "basedOn": [ref("sr", "ServiceRequest")], "start": "2026-12-10T09:00:00Z", "end": "2026-12-10T09:50:00Z",
         "participant": [{"actor": ref("pa", "Patient"), "status": "accepted"},
                         {"actor": ref("dr", "Practitioner"), "status": "accepted"}]},
        {"resourceType": "Appointment", "id": f"ap2-{tag}", "status": "cancelled",
         "start": "2026-12-12T09:00:00Z", "end": "2026-12-12T09:50:00Z",
         "participant": [{"actor": ref("pb", "Patient"), "status": "accepted"}]},
        {"resourceType": "Appointment", "id": f"ap3-{tag}", "status": "booked",
         "start": "2026-12-11T09:00:00Z", "end": "2026-12-11T09:50:00Z",
         "participant": [{"actor": ref("pa", "Patient"), "status": "accepted"}]},
        {"resourceType": "Encounter", "id": f"en-{tag}", "status": "finished", "class": {"code": "AMB"},
         "subject": ref("pa", "Patient"), "participant": [{"individual": ref("dr", "Practitioner")}],
         "period": {"start": "2026-11-01T10:00:00Z", "end": "2026-11-01T11:00:00Z"}},
        {"resourceType": "Observation", "id": f"ob-{tag}", "status": "final", "subject": ref("pa", "Patient"),
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                   "code": "survey"}]}],
         "code": {"coding": [{"system": "http://loinc.org", "code": "44249-1"}]},
         "effectiveDateTime": "2026-11-02T10:00:00Z"},
        {"resourceType": "Observation", "id": f"ob2-{tag}", "status": "final", "subject": ref("pb", "Patient"),
         "code": {"coding": [{"system": "http://loinc.org", "code": "69737-5"}]},
         "effectiveDateTime": "2026-11-03T10:00:00Z"},
    ]  # fmt: skip


def searches(tag: str) -> list[tuple[str, dict[str, str], list[str], bool]]:
    """Return (type, parameters, ids found, whether the order counts) for every parameter the suite checks."""
    t = tag
    return [
        ("Appointment", {"patient": f"Patient/pa-{t}"}, [f"ap1-{t}", f"ap3-{t}"], False),
        ("Appointment", {"actor": f"Practitioner/dr-{t}"}, [f"ap1-{t}"], False),
        ("Appointment", {"based-on": f"ServiceRequest/sr-{t}"}, [f"ap1-{t}"], False),
        ("Appointment", {"patient": f"pa-{t}", "status": "booked", "date": "ge2026-12-11"}, [f"ap3-{t}"], False),
        ("Appointment", {"patient": f"pa-{t}", "date": "lt2026-12-11"}, [f"ap1-{t}"], False),
        ("Appointment", {"actor:Patient": f"pb-{t}", "status": "cancelled"}, [f"ap2-{t}"], False),
        ("Encounter", {"subject": f"Patient/pa-{t}"}, [f"en-{t}"], False),
        ("Encounter", {"participant": f"Practitioner/dr-{t}", "date": "2026-11-01"}, [f"en-{t}"], False),
        ("Observation", {"subject": f"Patient/pa-{t}", "code": "http://loinc.org|44249-1"}, [f"ob-{t}"], False),
        ("Observation", {"patient": f"pa-{t}", "category": "survey"}, [f"ob-{t}"], False),
        ("Observation", {"subject": f"Patient/pb-{t}", "code": "44249-1"}, [], False),
        ("Patient", {"name": f"rivera{t}"}, [f"pa-{t}"], False),
        ("Patient", {"family": f"Okafor{t}", "gender": "male"}, [f"pb-{t}"], False),
        ("Patient", {"given": "alex", "family": f"Rivera{t}"}, [f"pa-{t}"], False),
        ("Patient", {"birthdate": "1985-11-20", "identifier": f"{SYSTEM}|B-{t}"}, [f"pb-{t}"], False),
        ("Patient", {"identifier": f"{SYSTEM}|", "_id": f"pa-{t},pb-{t}"}, [f"pa-{t}", f"pb-{t}"], False),
        ("Appointment", {"patient": f"pa-{t}", "_sort": "date"}, [f"ap1-{t}", f"ap3-{t}"], True),
        ("Appointment", {"patient": f"pa-{t}", "_sort": "-date"}, [f"ap3-{t}", f"ap1-{t}"], True),
        ("Appointment", {"_id": f"ap1-{t},ap2-{t},ap3-{t}", "_sort": "_lastUpdated"},
         [f"ap1-{t}", f"ap2-{t}", f"ap3-{t}"], True),
        ("Appointment", {"_id": f"ap1-{t},ap2-{t},ap3-{t}", "_sort": "-_lastUpdated"},
         [f"ap3-{t}", f"ap2-{t}", f"ap1-{t}"], True),
    ]  # fmt: skip
