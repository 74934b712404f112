"""Describe FHIR R4 (4.0.1) elements on top of the fhir.resources R4B models.

This is the only module that imports ``fhir.resources`` (and ``fhir_core`` under it). fhir.resources ships
no R4 package; its R4B (4.3.0) models are the closest, so this module decides where R4 and R4B differ:

- R4 resource types that R4B dropped, and Evidence / EvidenceVariable whose R4B models have a different
  structure, get no model (``model_class`` returns None);
- elements R4 has and R4B lacks (``_R4_ONLY``, plus ``_valueX`` on Extension) are described here so the
  validator accepts them and checks them apart from the R4B model;
- elements R4B added (``_R4B_ONLY``) are left out, so they are unknown elements in R4;
- required code bindings come from the models' ``enum_values`` metadata, which fhir.resources parses from
  each element's short text: ``_R4_BINDINGS`` replaces the lists that are partial ("+") or differ from R4
  4.0.1, and ``_NOT_REQUIRED`` drops the ones whose R4 binding is not required.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.types import FhirBase
from pydantic import BaseModel

Kind = Literal["complex", "resource", "string", "boolean", "integer", "decimal"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


R4_RESOURCE_TYPES: frozenset[str] = _words("""
    Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse
    AuditEvent Basic Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement CarePlan
    CareTeam CatalogEntry ChargeItem ChargeItemDefinition Claim ClaimResponse ClinicalImpression
    CodeSystem Communication CommunicationRequest CompartmentDefinition Composition ConceptMap Condition
    Consent Contract Coverage CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue
    Device DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement DiagnosticReport
    DocumentManifest DocumentReference EffectEvidenceSynthesis Encounter Endpoint EnrollmentRequest
    EnrollmentResponse EpisodeOfCare EventDefinition Evidence EvidenceVariable ExampleScenario
    ExplanationOfBenefit FamilyMemberHistory Flag Goal GraphDefinition Group GuidanceResponse
    HealthcareService ImagingStudy Immunization ImmunizationEvaluation ImmunizationRecommendation
    ImplementationGuide InsurancePlan Invoice Library Linkage List Location Measure MeasureReport Media
    Medication MedicationAdministration MedicationDispense MedicationKnowledge MedicationRequest
    MedicationStatement MedicinalProduct MedicinalProductAuthorization MedicinalProductContraindication
    MedicinalProductIndication MedicinalProductIngredient MedicinalProductInteraction
    MedicinalProductManufactured MedicinalProductPackaged MedicinalProductPharmaceutical
    MedicinalProductUndesirableEffect MessageDefinition MessageHeader MolecularSequence NamingSystem
    NutritionOrder Observation ObservationDefinition OperationDefinition OperationOutcome Organization
    OrganizationAffiliation Parameters Patient PaymentNotice PaymentReconciliation Person PlanDefinition
    Practitioner PractitionerRole Procedure Provenance Questionnaire QuestionnaireResponse RelatedPerson
    RequestGroup ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject
    RiskAssessment RiskEvidenceSynthesis Schedule SearchParameter ServiceRequest Slot Specimen
    SpecimenDefinition StructureDefinition StructureMap Subscription Substance SubstanceNucleicAcid
    SubstancePolymer SubstanceProtein SubstanceReferenceInformation SubstanceSourceMaterial
    SubstanceSpecification SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport
    TestScript ValueSet VerificationResult VisionPrescription
    """)

# R4B keeps these names but models a different structure (the R4B evidence redesign).
_INCOMPATIBLE = frozenset({"Evidence", "EvidenceVariable"})

# Elements of R4 that R4B removed: (R4B class, JSON name) -> R4B class of the value. Meta left the open types.
_R4_ONLY: dict[tuple[str, str], str] = {
    ("Extension", "valueMeta"): "Meta",
    ("ElementDefinition", "defaultValueMeta"): "Meta",
    ("ElementDefinition", "fixedMeta"): "Meta",
    ("ElementDefinition", "patternMeta"): "Meta",
    ("ElementDefinitionExample", "valueMeta"): "Meta",
}

# Elements R4B added that R4 does not have.
_R4B_ONLY = frozenset(
    {
        ("ActivityDefinition", "subjectCanonical"),
        ("PlanDefinition", "subjectCanonical"),
        ("PlanDefinitionAction", "subjectCanonical"),
        *(
            (owner, f"{prefix}{type_}")
            for owner, prefix in (
                ("Extension", "value"),
                ("ElementDefinition", "defaultValue"),
                ("ElementDefinition", "fixed"),
                ("ElementDefinition", "pattern"),
                ("ElementDefinitionExample", "value"),
            )
            for type_ in ("CodeableReference", "RatioRange")
        ),
    }
)

_DATA_TYPE_CODES = _words("""
    Address Age Annotation Attachment BackboneElement CodeableConcept Coding ContactDetail ContactPoint
    Contributor Count DataRequirement Distance Dosage Duration Element ElementDefinition Expression
    Extension HumanName Identifier MarketingStatus Meta Money MoneyQuantity Narrative
    ParameterDefinition Period Population ProdCharacteristic ProductShelfLife Quantity Range Ratio
    Reference RelatedArtifact SampledData Signature SimpleQuantity SubstanceAmount Timing
    TriggerDefinition UsageContext base64Binary boolean canonical code date dateTime decimal id instant
    integer markdown oid positiveInt string time unsignedInt uri url uuid xhtml
    """)
_RESOURCE_TYPE_CODES = R4_RESOURCE_TYPES | {"Resource", "DomainResource"}
_DEFINED_TYPE_CODES = _DATA_TYPE_CODES | _RESOURCE_TYPE_CODES
_ALL_TYPE_CODES = _DEFINED_TYPE_CODES | {"Type", "Any"}
_COMPARATOR = frozenset({"<", "<=", ">=", ">"})
_FHIR_VERSION = _words(
    "0.01 0.05 0.06 0.11 0.0.80 0.0.81 0.0.82 0.4.0 0.5.0 1.0.0 1.0.1 1.0.2 1.1.0 1.4.0 1.6.0 1.8.0"
    " 3.0.0 3.0.1 3.3.0 3.5.0 4.0.0 4.0.1"
)
_OBSERVATION_STATUS = _words("registered preliminary final amended corrected cancelled entered-in-error unknown")
_ENCOUNTER_STATUS = _words("planned arrived triaged in-progress onleave finished cancelled entered-in-error unknown")

# Required bindings of R4 4.0.1 whose codes the R4B metadata lacks, cuts short or lists differently.
_R4_BINDINGS: dict[tuple[str, str], frozenset[str]] = {
    ("ActivityDefinition", "kind"): _words(
        "Appointment AppointmentResponse CarePlan Claim CommunicationRequest Contract DeviceRequest"
        " EnrollmentRequest ImmunizationRecommendation MedicationRequest NutritionOrder ServiceRequest"
        " SupplyRequest Task VisionPrescription"
    ),
    ("Age", "comparator"): _COMPARATOR,
    ("Count", "comparator"): _COMPARATOR,
    ("Distance", "comparator"): _COMPARATOR,
    ("Duration", "comparator"): _COMPARATOR,
    ("Quantity", "comparator"): _COMPARATOR,
    ("AuditEvent", "action"): _words("C R U D E"),
    ("AuditEvent", "outcome"): _words("0 4 8 12"),
    ("AuditEventAgentNetwork", "type"): _words("1 2 3 4 5"),
    ("CapabilityStatement", "fhirVersion"): _FHIR_VERSION,
    ("ImplementationGuide", "fhirVersion"): _FHIR_VERSION,
    ("ImplementationGuideDefinitionResource", "fhirVersion"): _FHIR_VERSION,
    ("StructureDefinition", "fhirVersion"): _FHIR_VERSION,
    ("CapabilityStatementRestResource", "type"): _RESOURCE_TYPE_CODES,
    ("CompartmentDefinitionResource", "code"): _RESOURCE_TYPE_CODES,
    ("ExampleScenarioInstance", "resourceType"): _RESOURCE_TYPE_CODES,
    ("GraphDefinition", "start"): _RESOURCE_TYPE_CODES,
    ("GraphDefinitionLinkTarget", "type"): _RESOURCE_TYPE_CODES,
    ("ImplementationGuideGlobal", "type"): _RESOURCE_TYPE_CODES,
    ("MessageDefinitionFocus", "code"): _RESOURCE_TYPE_CODES,
    ("OperationDefinition", "resource"): _RESOURCE_TYPE_CODES,
    ("Questionnaire", "subjectType"): _RESOURCE_TYPE_CODES,
    ("SearchParameter", "base"): _RESOURCE_TYPE_CODES,
    ("SearchParameter", "target"): _RESOURCE_TYPE_CODES,
    ("DataRequirement", "type"): _ALL_TYPE_CODES,
    ("OperationDefinitionParameter", "type"): _ALL_TYPE_CODES,
    ("ParameterDefinition", "type"): _ALL_TYPE_CODES,
    ("TestScriptSetupActionAssert", "resource"): _DEFINED_TYPE_CODES,
    ("TestScriptSetupActionOperation", "resource"): _DEFINED_TYPE_CODES,
    ("Composition", "confidentiality"): _words("U L M N R V"),
    ("DetectedIssue", "status"): _words("preliminary final entered-in-error mitigated"),
    ("DeviceUdiCarrier", "entryType"): _words("barcode rfid manual card self-reported unknown"),
    ("DeviceUseStatement", "status"): _words("active completed entered-in-error intended stopped on-hold"),
    ("DiagnosticReport", "status"): _words(
        "registered partial preliminary final amended corrected appended cancelled entered-in-error unknown"
    ),
    ("Encounter", "status"): _ENCOUNTER_STATUS,
    ("EncounterStatusHistory", "status"): _ENCOUNTER_STATUS,
    ("Observation", "status"): _OBSERVATION_STATUS,
    ("RiskAssessment", "status"): _OBSERVATION_STATUS,
    ("OperationOutcomeIssue", "code"): _words(
        "invalid structure required value invariant security login unknown expired forbidden suppressed"
        " processing not-supported duplicate multiple-matches not-found deleted too-long code-invalid"
        " extension too-costly business-rule conflict transient lock-error no-store exception timeout"
        " incomplete throttled informational"
    ),
    ("QuestionnaireItem", "type"): _words(
        "group display question boolean decimal integer date dateTime time string text url choice"
        " open-choice attachment reference quantity"
    ),
    ("StructureMapGroupRuleTarget", "transform"): _words(
        "create copy truncate escape cast append translate reference dateOp uuid pointer evaluate cc c qty id cp"
    ),
    ("SupplyRequest", "status"): _words("draft active suspended cancelled completed entered-in-error unknown"),
    ("Task", "status"): _words(
        "draft requested received accepted rejected ready cancelled in-progress on-hold failed"
        " completed entered-in-error"
    ),
    ("TimingRepeat", "when"): _words(
        "MORN MORN.early MORN.late NOON AFT AFT.early AFT.late EVE EVE.early EVE.late NIGHT PHS HS WAKE"
        " C CM CD CV AC ACM ACD ACV PC PCM PCD PCV"
    ),
}

# R4 binds these extensibly (or to a grammar), so the R4B short-text lists must not reject other codes.
_NOT_REQUIRED = frozenset({("Expression", "language"), ("CapabilityStatement", "format")})

# fhir_core metadata class name -> (FHIR primitive type, JSON kind of its value).
_PRIMITIVES: dict[str, tuple[str, Kind]] = {
    "String": ("string", "string"),
    "Code": ("code", "string"),
    "Id": ("id", "string"),
    "Uri": ("uri", "string"),
    "Url": ("url", "string"),
    "Canonical": ("canonical", "string"),
    "Oid": ("oid", "string"),
    "UuidVersion": ("uuid", "string"),
    "Markdown": ("markdown", "string"),
    "Xhtml": ("xhtml", "string"),
    "Base64Binary": ("base64Binary", "string"),
    "Date": ("date", "string"),
    "DateTime": ("dateTime", "string"),
    "Instant": ("instant", "string"),
    "Time": ("time", "string"),
    "Integer": ("integer", "integer"),
    "UnsignedInt": ("unsignedInt", "integer"),
    "PositiveInt": ("positiveInt", "integer"),
    "Decimal": ("decimal", "decimal"),
}


_PLAIN: dict[str, type] = {"string": str, "boolean": bool, "integer": int}
# Strings the validator checks beyond JSON kind (R4 rules the R4B models do not enforce).
_CHECKED_STRINGS = frozenset({"id", "uri", "url", "canonical", "uuid", "xhtml"})


@dataclass(frozen=True, slots=True)
class ElementDef:
    """One JSON property of an R4 type, as the validator walks it."""

    name: str
    kind: Kind
    type_name: str
    repeats: bool
    model: type[BaseModel] | None
    codes: frozenset[str] | None
    choice: str | None
    r4_only: bool
    # The Python type of a JSON value that needs no check beyond being non-empty; None when it needs more.
    plain: type | None = None


def model_class(resource_type: str) -> type[BaseModel] | None:
    """Return the R4B model class for an R4 resource type, or None when R4B has no model that fits."""
    if resource_type not in R4_RESOURCE_TYPES or resource_type in _INCOMPATIBLE:
        return None  # checked before the cache, so that arbitrary input cannot grow it
    return _resource_model(resource_type)


@cache
def _resource_model(resource_type: str) -> type[BaseModel] | None:
    try:
        return typing.cast(type[BaseModel], get_fhir_model_class(resource_type))
    except ValueError:
        return None


def named_model(name: str) -> type[BaseModel]:
    """Return the R4B model class of a data type or backbone element by its class name."""
    return typing.cast(type[BaseModel], get_fhir_model_class(name))


@dataclass(frozen=True, slots=True)
class Shape:
    """The R4 elements of one type by JSON name, and the groups of names one of which must be present."""

    elements: Mapping[str, ElementDef]
    required: tuple[tuple[str, ...], ...]


def shape(model: type[BaseModel]) -> Shape:
    """Return the R4 shape of a model class (built once per class)."""
    found = _SHAPES.get(model)
    if found is None:
        found = _SHAPES[model] = _build(model)
    return found


def elements(model: type[BaseModel]) -> Mapping[str, ElementDef]:
    """Return the R4 elements of a model class by JSON name."""
    return shape(model).elements


_SHAPES: dict[type[BaseModel], Shape] = {}


def _build(model: type[BaseModel]) -> Shape:
    owner = model.__name__
    table: dict[str, ElementDef] = {}
    required: list[tuple[str, ...]] = []
    required_choices: set[str] = set()
    for field_name, field in model.model_fields.items():
        name = field.alias or field_name
        if name == "fhir_comments" or (owner, name.lstrip("_")) in _R4B_ONLY:
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        table[name] = _element(owner, name, field.annotation, extra)
        if field.is_required():
            required.append((name,))
        if extra.get("one_of_many_required"):
            required_choices.add(str(extra["one_of_many"]))
    for (r4_owner, name), type_name in _R4_ONLY.items():
        if r4_owner == owner:
            choice = name[: -len(type_name)]
            table[name] = ElementDef(name, "complex", type_name, False, named_model(type_name), None, choice, True)
    if owner == "Extension":
        # R4B has no _valueX siblings for Extension's primitive value[x]; R4 JSON allows them.
        siblings = named_model("FHIRPrimitiveExtension")
        for name, element in list(table.items()):
            if element.choice == "value" and element.kind != "complex" and f"_{name}" not in table:
                table[f"_{name}"] = ElementDef(f"_{name}", "complex", "Element", False, siblings, None, None, True)
    # A required primitive may carry only its _x sibling (an extension saying why the value is absent).
    # The generated get_required_fields returns a constant list and never reads self.
    get_required_fields = getattr(model, "get_required_fields", None)
    for name, sibling in get_required_fields(None) if get_required_fields else ():
        sibling_field = model.model_fields.get(sibling) if sibling else None
        sibling_name = sibling_field.alias if sibling_field is not None else None
        required.append((name, sibling_name) if sibling_name in table else (name,))
    for choice in sorted(required_choices):
        options = [name for name, element in table.items() if element.choice == choice]
        required.append(tuple(options + [f"_{name}" for name in options if f"_{name}" in table]))
    return Shape(table, tuple(required))


def _element(owner: str, name: str, annotation: Any, extra: Mapping[str, Any]) -> ElementDef:
    repeats = False
    model: type[BaseModel] | None = None
    primitive: tuple[str, Kind] | None = None
    stack = [annotation]
    while stack:
        node = stack.pop()
        if typing.get_origin(node) is list:
            repeats = True
        if isinstance(node, type) and issubclass(node, FhirBase):
            model = node.get_model_klass()
        elif node is bool:
            primitive = ("boolean", "boolean")
        for meta in getattr(node, "__metadata__", ()):
            primitive = _PRIMITIVES.get(type(meta).__name__, primitive)
        stack.extend(typing.get_args(node))
    choice = extra.get("one_of_many")
    if model is not None:
        kind: Kind = "resource" if model.__name__ == "Resource" else "complex"
        return ElementDef(name, kind, model.__name__, repeats, model, None, choice, False)
    type_name, json_kind = primitive or ("string", "string")
    codes = _codes(owner, name, extra)
    plain = _PLAIN.get(json_kind) if codes is None and type_name not in _CHECKED_STRINGS else None
    return ElementDef(name, json_kind, type_name, repeats, None, codes, choice, False, plain)


def _codes(owner: str, name: str, extra: Mapping[str, Any]) -> frozenset[str] | None:
    key = (owner, name)
    if key in _R4_BINDINGS:
        return _R4_BINDINGS[key]
    listed = extra.get("enum_values")
    if key in _NOT_REQUIRED or not listed or "+" in listed or "etc." in listed:
        return None
    return frozenset(listed)
