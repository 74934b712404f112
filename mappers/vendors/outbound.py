"""What a vendor's EHR asks of the resources the gateway writes to it, applied to the typed (R4B model) resource.

A mapper's ``to_fhir`` writes a record as plain R4, the same for every vendor; the write-back builders construct
it as its fhir.resources model (``conformance.fhir_models.written``) and ``adjust`` then applies the tenant's
vendor profile to that object, one function per quirk (``ADJUSTMENTS``):

- ``communication_body_as_attachment`` (Oracle Health): a message body goes as base64 UTF-8 ``text/plain`` in
  ``contentAttachment`` instead of ``contentString``;
- ``qr_numbers_as_decimal`` (Epic): a QuestionnaireResponse's integer answers go as ``valueDecimal``.

Reading needs no adjustment: ``to_platform`` reads both forms back to the same record. Where a vendor names an
element of the record itself (athenahealth's practice and department extensions), ``to_fhir`` and
``to_platform`` write and read it, as they do any other element.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Final

from conformance import fhir_models
from mappers.message_body import TEXT_BODY_TYPE, encoded
from mappers.vendors import VendorProfile

Adjustment = Callable[["fhir_models.DomainResource", VendorProfile], None]


def adjust(resource: fhir_models.DomainResource, vendor: VendorProfile) -> None:
    """Apply every adjustment the vendor's profile asks for to an outbound resource, in place."""
    for adjustment in ADJUSTMENTS:
        adjustment(resource, vendor)


def body_as_attachment(resource: fhir_models.DomainResource, vendor: VendorProfile) -> None:
    """Send each text part of a Communication's payload as a base64 UTF-8 text/plain attachment."""
    if not vendor.communication_body_as_attachment or not isinstance(resource, fhir_models.Communication):
        return
    if resource.payload:
        resource.payload = [_attached(part) for part in resource.payload]


def numbers_as_decimal(resource: fhir_models.DomainResource, vendor: VendorProfile) -> None:
    """Send a QuestionnaireResponse's integer answers as valueDecimal, at every depth."""
    if not vendor.qr_numbers_as_decimal or not isinstance(resource, fhir_models.QuestionnaireResponse):
        return
    for item in _items(resource.item or []):
        if item.answer:
            item.answer = [_decimal(answer) for answer in item.answer]


ADJUSTMENTS: Final[tuple[Adjustment, ...]] = (body_as_attachment, numbers_as_decimal)


def _attached(part: fhir_models.CommunicationPayload) -> fhir_models.CommunicationPayload:
    if part.contentString is None:
        return part
    attachment = fhir_models.Attachment(contentType=TEXT_BODY_TYPE, data=encoded(part.contentString))
    return fhir_models.CommunicationPayload(
        id=part.id, extension=part.extension, modifierExtension=part.modifierExtension, contentAttachment=attachment
    )


def _items(
    items: Sequence[fhir_models.QuestionnaireResponseItem],
) -> Iterator[fhir_models.QuestionnaireResponseItem]:
    """Yield every item, depth first; the caller may replace an item's answers (each keeps its sub-items)."""
    for item in items:
        yield item
        yield from _items(item.item or [])
        for answer in item.answer or []:
            yield from _items(answer.item or [])


def _decimal(answer: fhir_models.QuestionnaireResponseItemAnswer) -> fhir_models.QuestionnaireResponseItemAnswer:
    if answer.valueInteger is None:
        return answer
    return fhir_models.QuestionnaireResponseItemAnswer(
        id=answer.id, extension=answer.extension, modifierExtension=answer.modifierExtension, item=answer.item,
        valueDecimal=Decimal(answer.valueInteger), valueDecimal__ext=answer.valueInteger__ext,
    )  # fmt: skip
