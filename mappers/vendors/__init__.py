"""Vendor profiles: what each EHR does differently that mapping must know, as data (one JSON file per vendor).

A tenant names its vendor in the clients file (``"vendor": "epic"``); mappers read ``profile(ctx.vendor)``, and
``mappers.vendors.outbound`` adjusts the typed resources written back to the vendor's EHR.
Every field is documented on ``VendorProfile``; a JSON file sets only what differs from these defaults, and says
in ``sources`` where the vendor documents each quirk.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from functools import cache
from importlib import resources
from typing import Any

from mappers.codes import LocalCodes

__all__ = ["VENDORS", "WRITEBACKS", "VendorProfile", "outbound", "profile"]

VENDORS = ("generic", "epic", "oracle-health", "athenahealth")
WRITEBACKS = ("message", "survey_response", "appointment", "treatment_plan")


@dataclass(frozen=True)
class VendorProfile:
    """One EHR vendor's quirks that mapping needs."""

    name: str
    # Identifier systems by role ("mrn", "npi", "patient"...), each a system URI or, ending in "*", a prefix
    # (Epic's organization OIDs urn:oid:1.2.840.114350.1.13.* differ per customer).
    identifier_systems: dict[str, list[str]] = field(default_factory=dict)
    # The same roles as full-match regular expressions, where a prefix cannot tell roles apart: Epic puts the
    # customer in the middle of its OIDs and the kind of identifier at the end. Where a role has patterns,
    # ``identifier_role`` uses them instead of that role's ``identifier_systems`` prefixes.
    identifier_patterns: dict[str, list[str]] = field(default_factory=dict)
    # Appointment extensions (by URL) that say whether a patient may cancel or reschedule it.
    appointment_cancelable_extension: str | None = None
    appointment_reschedulable_extension: str | None = None
    # Telehealth links carried in Appointment.contained: the index of the provider's and the patient's link.
    telehealth_contained: dict[str, int] = field(default_factory=dict)
    # Words in a contained link's type (or its participant's type) that say whose link it is, by role; they win
    # over the indexes, which the vendor's own examples contradict.
    telehealth_labels: dict[str, list[str]] = field(default_factory=dict)
    # Resource-level extensions (valueReference) naming the practice (tenant) and the department of a resource.
    practice_extension: str | None = None
    department_extension: str | None = None
    # A participant reference that names a department (full-match regular expression on the reference).
    department_reference: str | None = None
    # Communication bodies sent as base64 contentAttachment rather than contentString (write-backs: applied to the
    # typed resource by ``mappers.vendors.outbound``).
    communication_body_as_attachment: bool = False
    # CarePlan descriptions carried only in text.div (the narrative).
    careplan_description_in_narrative: bool = False
    # QuestionnaireResponse numeric answers sent as valueDecimal where the item is an integer (read as integers;
    # write-backs: applied to the typed resource by ``mappers.vendors.outbound``).
    qr_numbers_as_decimal: bool = False
    # Write-back families the EHR accepts ("message", "survey_response", "appointment", "treatment_plan").
    writebacks: list[str] = field(default_factory=lambda: list(WRITEBACKS))
    # Searches the EHR refuses without some parameters, by resource type: "one_of" (one of these must be given)
    # and "all_of" (each must be). The connectors check a tenant's poll settings against them.
    search_rules: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # Parameters every search carries, by resource type ("*": every type), "{practice_id}" filled from the
    # tenant's EHR settings.
    search_params: dict[str, dict[str, str]] = field(default_factory=dict)
    # The vendor's own codes read as LOINC, under every tenant's (``mappers.codes.LocalCodes``): codes that mean
    # the same at every customer of the vendor. Codes that differ per customer go in the tenant's block.
    local_codes: LocalCodes = field(default_factory=LocalCodes)
    # Where the vendor documents this (for maintainers), by topic.
    sources: dict[str, str] = field(default_factory=dict)

    def identifier_role(self, system: str | None) -> str | None:
        """Return the role ("mrn", "csn", "npi"...) of an identifier system, or None."""
        if not system:
            return None
        for role, patterns in self.identifier_patterns.items():
            if any(_pattern(p).fullmatch(system) for p in patterns):
                return role
        for role, systems in self.identifier_systems.items():
            if role in self.identifier_patterns:
                continue  # the prefix is the coarse form of patterns that did not match
            for known in systems:
                if system == known or (known.endswith("*") and system.startswith(known[:-1])):
                    return role
        return None


@cache
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


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
    if "local_codes" in raw:
        raw["local_codes"] = LocalCodes.model_validate(raw["local_codes"])
    return VendorProfile(**{"name": name, **raw})
