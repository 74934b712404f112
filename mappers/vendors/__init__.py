"""Vendor profiles: what each EHR does differently that mapping must know, as data (one JSON file per vendor).

A tenant names its vendor in the clients file (``"vendor": "epic"``); mappers read ``profile(ctx.vendor)``.
Every field is documented on ``VendorProfile``; a JSON file sets only what differs from the generic profile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cache
from importlib import resources
from typing import Any

VENDORS = ("generic", "epic", "oracle-health", "athenahealth")
WRITEBACKS = ("message", "survey_response", "appointment", "treatment_plan")


@dataclass(frozen=True)
class VendorProfile:
    """One EHR vendor's quirks that mapping needs."""

    name: str
    # Identifier systems by role ("mrn", "npi", "practice", "department"...), each a system URI or, ending in
    # "*", a prefix (Epic's organization OIDs urn:oid:1.2.840.114350.1.13.* differ per customer).
    identifier_systems: dict[str, list[str]] = field(default_factory=dict)
    # Appointment extensions (by URL) that say whether a patient may cancel or reschedule it.
    appointment_cancelable_extension: str | None = None
    appointment_reschedulable_extension: str | None = None
    # Telehealth links carried in Appointment.contained: the index of the provider's and the patient's link.
    telehealth_contained: dict[str, int] = field(default_factory=dict)
    # Communication bodies sent as base64 contentAttachment rather than contentString.
    communication_body_as_attachment: bool = False
    # CarePlan descriptions carried only in text.div (the narrative).
    careplan_description_in_narrative: bool = False
    # QuestionnaireResponse numeric answers sent as valueDecimal where the item is an integer.
    qr_numbers_as_decimal: bool = False
    # Write-back families the EHR accepts ("message", "survey_response", "appointment", "treatment_plan").
    writebacks: list[str] = field(
        default_factory=lambda: ["message", "survey_response", "appointment", "treatment_plan"]
    )
    # Where the vendor documents this (for maintainers), by topic.
    sources: dict[str, str] = field(default_factory=dict)


@cache
def profile(name: str) -> VendorProfile:
    """Return the profile of a vendor (the generic one for an unknown name)."""
    if name not in VENDORS:
        name = "generic"
    raw: dict[str, Any] = json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8"))
    known = {f.name for f in fields(VendorProfile)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"vendor profile {name} has unknown fields: {', '.join(sorted(unknown))}")
    return VendorProfile(**{"name": name, **raw})
