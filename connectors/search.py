"""The incremental search of one resource type, with the vendor's rules (from ``mappers.vendors``) applied.

Every poll searches ``_lastUpdated=gt<cursor - overlap>`` with ``_count`` (and ``_sort=_lastUpdated`` unless the
tenant turned it off), plus what the vendor needs: athenahealth names its practice on every search
(``ah-practice``), and Oracle Health's Appointment search needs a patient, practitioner or location (from the
tenant's ``poll.params``) plus a ``date``, which the connector fills with the window ``date_past_days`` back to
``date_future_days`` ahead. ``check_rules`` refuses a configuration the vendor would refuse, when the clients file
is read rather than at the first poll.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from connectors.config import EHRConfig
from mappers.vendors import VendorProfile


def instant(moment: datetime) -> str:
    """Return a FHIR instant in UTC, to the second."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _vendor_params(vendor: VendorProfile, ehr: EHRConfig, rtype: str) -> dict[str, str]:
    fixed = {**vendor.search_params.get("*", {}), **vendor.search_params.get(rtype, {})}
    values = {"practice_id": ehr.practice_id or ""}
    return {name: template.format(**values) for name, template in fixed.items()}


def check_rules(vendor: VendorProfile, ehr: EHRConfig) -> None:
    """Raise ValueError when the tenant's poll settings miss what the vendor's searches need."""
    needs_practice = any("{practice_id}" in v for params in vendor.search_params.values() for v in params.values())
    if needs_practice and not ehr.practice_id:
        raise ValueError(f"{vendor.name} needs the tenant's practice_id in its ehr block")
    if ehr.poll is None:
        return
    for rtype in ehr.poll.types:
        rule = vendor.search_rules.get(rtype)
        if not rule:
            continue
        given = set(ehr.poll.params.get(rtype, {}))
        one_of = rule.get("one_of", [])
        if one_of and not given & set(one_of):
            raise ValueError(
                f"{vendor.name} searches {rtype} only with one of {', '.join(one_of)}: "
                f'set it in poll.params, e.g. {{"{rtype}": {{"{one_of[0]}": "..."}}}}'
            )
        missing = [p for p in rule.get("all_of", []) if p not in given and p != "date"]
        if missing:
            raise ValueError(f"{vendor.name} searches {rtype} only with {', '.join(missing)} in poll.params")


def search_params(
    vendor: VendorProfile, ehr: EHRConfig, rtype: str, cursor: datetime, now: datetime
) -> list[tuple[str, str]]:
    """Return the query of one incremental search of ``rtype`` from ``cursor`` (already less the overlap)."""
    poll = ehr.poll
    assert poll is not None
    params: list[tuple[str, str]] = [("_lastUpdated", f"gt{instant(cursor)}"), ("_count", str(poll.page_size))]
    if poll.sort:
        params.append(("_sort", "_lastUpdated"))
    params += sorted(_vendor_params(vendor, ehr, rtype).items())
    own = poll.params.get(rtype, {})
    params += sorted(own.items())
    if "date" in vendor.search_rules.get(rtype, {}).get("all_of", []) and "date" not in own:
        params.append(("date", f"ge{instant(now - timedelta(days=poll.date_past_days))}"))
        params.append(("date", f"le{instant(now + timedelta(days=poll.date_future_days))}"))
    return params
