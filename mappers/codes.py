"""A tenant's or a vendor's own codes read as LOINC, so that forms coded their way are still recognized.

EHRs code forms with local codes (Epic flowsheet rows, a clinic's own panel codes and answer codes) or spell
LOINC another way (``urn:oid:2.16.840.1.113883.6.1``, which every map reads as LOINC). The tenant's map lives in
its block of the clients file (``local_codes``), a vendor's in its profile (``mappers/vendors/<vendor>.json``);
the tenant's entries win. ``items`` maps a form's own linkIds to LOINC item codes, for forms coded only at the
panel whose items the gateway cannot recognize by position (see ``mappers.recognition``).
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mappers import instruments
from mappers.model import Coding

# A LOINC code (44249-1) or a LOINC answer code (LA6568-5).
_LOINC_CODE: Final = re.compile(r"(?:LA)?\d{1,8}-\d", re.ASCII)


class LocalCodes(BaseModel):
    """Local codes and LOINC spellings read as LOINC, and forms' linkIds read as LOINC item codes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    loinc_systems: frozenset[str] = Field(
        default=frozenset(),
        description="code systems whose codes are LOINC codes (another spelling of http://loinc.org)",
    )
    loinc: dict[str, str] = Field(
        default_factory=dict,
        description='"<system>|<code>" of a local code (a flowsheet row, a panel, an answer) -> its LOINC code',
    )
    items: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description='a form (its Questionnaire url, or "Questionnaire/<id>") -> its linkIds -> LOINC item codes',
    )

    @field_validator("loinc")
    @classmethod
    def _local_to_loinc(cls, value: dict[str, str]) -> dict[str, str]:
        for local, code in value.items():
            system, bar, own = local.partition("|")
            if not (system and bar and own):
                raise ValueError(f'local code {local[:80]!r} is not "<system>|<code>"')
            _check(code)
        return value

    @field_validator("items")
    @classmethod
    def _item_maps(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for linked in value.values():
            for code in linked.values():
                _check(code)
        return value

    def under(self, other: LocalCodes) -> LocalCodes:
        """Return these codes with ``other``'s added, ``other``'s entries winning (a vendor's under a tenant's)."""
        return LocalCodes(
            loinc_systems=self.loinc_systems | other.loinc_systems,
            loinc=self.loinc | other.loinc,
            items=self.items | other.items,
        )

    def loinc_of(self, coding: Coding) -> str | None:
        """Return the LOINC code a coding means (its own in a LOINC system, else its mapped one), or None."""
        if coding.code is None:
            return None
        if instruments.is_loinc(coding.system) or coding.system in self.loinc_systems:
            return coding.code
        return self.loinc.get(f"{coding.system}|{coding.code}")

    def normalized(self, coding: Coding) -> Coding:
        """Return the coding as LOINC (its display kept) when it means a LOINC code, else as it is."""
        if coding.system is None or coding.system == instruments.LOINC:
            return coding
        code = self.loinc_of(coding)
        return Coding(system=instruments.LOINC, code=code, display=coding.display) if code else coding

    def item_map(self, url: str | None, form_id: str | None) -> dict[str, str]:
        """Return a form's linkId -> LOINC item code map, by its canonical url (unversioned), else by its id."""
        unversioned = url.partition("|")[0] if url else None
        found = self.items.get(unversioned) if unversioned else None
        if found is None and form_id:
            found = self.items.get(f"Questionnaire/{form_id}")
        return found or {}


NO_CODES: Final = LocalCodes()


def _check(code: str) -> None:
    if not _LOINC_CODE.fullmatch(code):
        raise ValueError(f"{code[:40]!r} is not a LOINC code (like 44250-9) or answer code (like LA6568-5)")
