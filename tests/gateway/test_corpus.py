"""Every resource and Bundle of the shared FHIR R4 corpus goes through the FHIR edge and is accepted.

One test per corpus folder, so a failure names its folder. Each file is pushed the way an EHR would send it:

- a transaction or batch Bundle is POSTed to the base and every entry must answer 2xx (a GET entry that
  answers 404 reads something the Bundle never stored; that is not a defect of ours);
- a collection, searchset or history Bundle is POSTed to the base as an import, and every entry must be 2xx;
- any other resource (documents, messages and transaction/batch responses included: a Bundle is a resource too)
  is PUT at its id, or POSTed to its type when it has none, and must answer 200 or 201.

What was written is then read back at the version each answer names (every directly stored resource, and up to
``READ_BACK_PER_BUNDLE`` entries of each Bundle) and must equal what was sent, except for the gateway's own meta
(versionId, lastUpdated, ``urn:fhir-gateway:`` meta extensions) and for references to other entries' fullUrls,
which the gateway rewrites to the ids it gave; an EHR's meta.versionId and meta.lastUpdated must be kept in
those extensions. Two entries of one Bundle must never both be answered 201 Created at the same version.

A file with a real defect is listed in ``KNOWN_DEFECTS`` with the defect named; it must be rejected, so the list
cannot go stale. A valid file that needs an interaction the gateway does not offer is listed in
``NOT_SUPPORTED``; it must be refused with a ``not-supported`` issue. Everything else must be accepted. All
failures of a folder are collected and printed together, each with the OperationOutcome issues (expression and
diagnostics) that explain it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, corpus_dir
from tests.support import rewritten_references

pytestmark = pytest.mark.corpus

FOLDERS = [
    "hl7-r4-spec-examples",
    "us-core-examples",
    "sdc-ig-examples",
    "lforms-fhir-app-r4",
    "medplum-examples",
    "synthea-r4-smart",
    "fhir-test-cases/r4-examples",
]

# Files the edge must reject, relative to the corpus folder, each with the defect that makes it invalid R4.
KNOWN_DEFECTS: dict[str, str] = {
    "hl7-r4-spec-examples/Bundle-ussg-fht.json": (
        "Bundle.entry[*].request.url is absolute (http://hl7.org/fhir/us/sdc/Questionnaire/54127-6, "
        "http://hl7.org/fhir/us/sdc/ValueSet/...); R4 requires a URL relative to the server's base"
    ),
    "hl7-r4-spec-examples/Questionnaire-qs1.json": (
        "32 display items (Questionnaire.item[0].item[0].linkId, ...) have no linkId, which is 1..1 in R4"
    ),
    "fhir-test-cases/r4-examples/bundle-questionnaire.json": (
        "Questionnaire qs1 again: 50 display items (Questionnaire.item[0].item[0].linkId, ...) have no linkId, "
        "which is 1..1 in R4"
    ),
    "lforms-fhir-app-r4/phq9.json": (
        "Questionnaire.item[2].answerOption[1].extension[0].valueString is the JSON number 1, not a string; "
        "and ten variable extensions' valueExpression.name ('q1_value', ..., 'any_questions_answered') "
        "contain '_', which an R4 id (Expression.name) may not"
    ),
    "medplum-examples/medplum-provider/patient-david-james-williams.json": (
        "every entry's meta carries Medplum-only author, project and compartment, which R4 Meta does not "
        "have; and Condition.onsetDateTime '1980-01-13T10:22:21' has a time but no time zone"
    ),
    "hl7-r4-spec-examples/Bundle-10bb101f-a121-4264-a920-67be9cb82c74.json": (
        "an entry's fullUrl ends Patient/pat12 but its resource's id is pat2"
    ),
    "hl7-r4-spec-examples/Bundle-3a0707d3-549e-4467-b8b8-5a2ab3800efe.json": (
        "an entry's fullUrl ends Patient/pat12 but its resource's id is pat2"
    ),
    "hl7-r4-spec-examples/Bundle-lri-example.json": "16 entries whose fullUrl ids differ from their resources' ids",
    "hl7-r4-spec-examples/Questionnaire-zika-virus-exposure-assessment.json": (
        "txt-2: the narrative is an empty <pre>, with no content"
    ),
    "medplum-examples/medplum-demo-bots/patient-data.json": (
        "per-1: entries 2 and 3 have periods whose end is before their start; and a urn:uuid:undefined reference "
        "that no entry defines"
    ),
    "medplum-examples/medplum-provider/order-set-example-bundle.json": (
        "qty-3: dose quantities with a unit code but no system"
    ),
}

# Valid R4 files that need an interaction the gateway does not offer, and which one. Each must be refused with a
# ``not-supported`` issue (not as invalid: the file is not wrong).
NOT_SUPPORTED: dict[str, str] = {
    "hl7-r4-spec-examples/Bundle-bundle-transaction.json": (
        "an operation in a transaction (entry[7] POST ValueSet/$lookup); the CapabilityStatement offers only "
        '$validate. (Beyond it, entry[4] PUT Patient/123a with ifMatch W/"2" can only succeed on a server '
        "that already holds that version.)"
    ),
    "medplum-examples/medplum-demo-bots/sick-note-questionnaire.json": (
        "conditional update on a search other than identifier (entry[0] PUT Questionnaire?name=...); "
        "conditions are indexed by identifier only"
    ),
    "hl7-r4-spec-examples/Bundle-bundle-request-medsallergies.json": (
        "searches by _list (entries 1 to 3, e.g. MedicationStatement?patient=example&_list=$current-medications); "
        "list membership is not indexed, and ignoring it would widen the result, so those entries are refused"
    ),
}

GATEWAY_EXTENSION = "urn:fhir-gateway:"
EXT_EHR_VERSION_ID = "urn:fhir-gateway:extension:ehr-versionId"
EXT_EHR_LAST_UPDATED = "urn:fhir-gateway:extension:ehr-lastUpdated"
BASE_PROCESSED = ("transaction", "batch", "collection", "searchset", "history")
READ_BACK_PER_BUNDLE = 40  # entries of one Bundle read back and compared, evenly spread (Synthea has ~5,600)


@dataclass
class Verdict:
    """What the edge made of one file: why it was refused (empty when accepted) and what went wrong after."""

    refused: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    codes: set[str] = field(default_factory=set)  # the issue codes of the refusal
    read_back: int = 0  # resources read back and compared
    ehr_meta: int = 0  # of those, how many came with an EHR meta.versionId or meta.lastUpdated


def _codes(outcome: Any) -> set[str]:
    if not isinstance(outcome, dict):
        return set()
    return {str(i.get("code")) for i in outcome.get("issue", []) if i.get("severity") in ("error", "fatal")}


def _issues(outcome: Any, indent: str = "    ") -> list[str]:
    """Render the error and fatal issues of an OperationOutcome, one line each."""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return [f"{indent}(no OperationOutcome: {json.dumps(outcome)[:300]})"]
    lines = []
    for issue in outcome.get("issue", []):
        if issue.get("severity") not in ("error", "fatal"):
            continue
        where = ", ".join(issue.get("expression", [])) or "(no expression)"
        lines.append(f"{indent}{where}: {issue.get('diagnostics', issue.get('code'))}")
    return lines or [f"{indent}(no error issue) {json.dumps(outcome)[:300]}"]


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:300]


def _without_gateway_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """Return the resource without the meta the gateway owns: versionId, lastUpdated, its own extensions."""
    out = dict(resource)
    meta = out.pop("meta", None)
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        extensions = [
            e
            for e in meta.pop("extension", [])
            if not (isinstance(e, dict) and str(e.get("url", "")).startswith(GATEWAY_EXTENSION))
        ]
        if extensions:
            meta["extension"] = extensions
        if meta:
            out["meta"] = meta
    return out


def _differences(sent: Any, stored: Any, path: str) -> list[str]:
    """Name the paths where the stored resource differs from what was sent (values are not shown)."""
    if isinstance(sent, dict) and isinstance(stored, dict):
        found = []
        for key in sorted(set(sent) | set(stored)):
            if key not in stored:
                found.append(f"{path}.{key} was dropped")
            elif key not in sent:
                found.append(f"{path}.{key} was added")
            else:
                found += _differences(sent[key], stored[key], f"{path}.{key}")
        return found
    if isinstance(sent, list) and isinstance(stored, list) and len(sent) == len(stored):
        return [
            d for i, (a, b) in enumerate(zip(sent, stored, strict=True)) for d in _differences(a, b, f"{path}[{i}]")
        ]
    return [] if sent == stored and type(sent) is type(stored) else [f"{path} differs"]


def _round_trip(sent: dict[str, Any], stored: dict[str, Any], rid: str) -> list[str]:
    """Compare a resource read back with the one sent; return what does not match."""
    rtype = sent["resourceType"]
    problems = []
    if stored.get("id") != rid:
        problems.append(f"    {rtype}.id is not the id written")
    expected = {**_without_gateway_meta(sent), "id": rid}
    problems += [f"    {d}" for d in _differences(expected, _without_gateway_meta(stored), rtype)]
    meta = sent.get("meta") if isinstance(sent.get("meta"), dict) else {}
    kept = {e.get("url"): e for e in stored.get("meta", {}).get("extension", []) if isinstance(e, dict)}
    if "versionId" in meta and kept.get(EXT_EHR_VERSION_ID, {}).get("valueId") != meta["versionId"]:
        problems.append(f"    {rtype}.meta.versionId of the EHR is not kept in {EXT_EHR_VERSION_ID}")
    if "lastUpdated" in meta and kept.get(EXT_EHR_LAST_UPDATED, {}).get("valueInstant") != meta["lastUpdated"]:
        problems.append(f"    {rtype}.meta.lastUpdated of the EHR is not kept in {EXT_EHR_LAST_UPDATED}")
    return problems


async def _read_back(gateway: Gateway, verdict: Verdict, sent: dict[str, Any], location: str, where: str) -> None:
    """Read the version a write answered with and compare it with what was sent."""
    rid = location.split("/")[1]
    read = await gateway.ehr("GET", f"/{location}")
    verdict.read_back += 1
    meta = sent.get("meta")
    verdict.ehr_meta += int(isinstance(meta, dict) and ("versionId" in meta or "lastUpdated" in meta))
    if read.status_code != 200:
        verdict.mismatched.append(f"  {where}: GET /{location} answered {read.status_code}")
        return
    problems = _round_trip(sent, read.json(), rid)
    if problems:
        verdict.mismatched += [f"  {where}: GET /{location} differs from what was sent:", *problems]


async def _push_bundle(gateway: Gateway, raw: bytes, bundle: dict[str, Any]) -> Verdict:
    """POST a transaction, batch or import Bundle to the base; every entry must answer 2xx.

    Each entry written is then read back at the version its answer names and compared with what was sent,
    references to other entries' fullUrls rewritten to the ids the answer gives (as the gateway does).
    """
    verdict = Verdict()
    response = await gateway.ehr("POST", "", content=raw)
    answer = _body(response)
    if response.status_code != 200:
        verdict.refused = [f"  POST [base] answered {response.status_code}", *_issues(answer)]
        verdict.codes = _codes(answer)
        return verdict
    sent = [e if isinstance(e, dict) else {} for e in bundle.get("entry") or []]
    got = answer.get("entry") or []
    if len(got) != len(sent):
        verdict.refused.append(f"  the answer has {len(got)} entries for {len(sent)} sent")
    written: list[tuple[int, dict[str, Any], str]] = []  # (index, resource sent, location)
    links: dict[str, str] = {}  # fullUrl -> the Type/id the gateway gave it
    for index, (entry, result) in enumerate(zip(sent, got, strict=False)):
        reply = result.get("response", {})
        status = str(reply.get("status", ""))
        request = entry.get("request") or {}
        if not (status.startswith("2") or (request.get("method") == "GET" and status.startswith("404"))):
            verdict.refused.append(f"  Bundle.entry[{index}] answered {status!r}")
            verdict.refused += _issues(reply.get("outcome"))
            verdict.codes |= _codes(reply.get("outcome"))
            continue
        resource, location = entry.get("resource"), reply.get("location")
        if not isinstance(resource, dict) or not location or request.get("method") == "GET":
            continue
        if isinstance(entry.get("fullUrl"), str):
            links[entry["fullUrl"]] = "/".join(str(location).split("/")[:2])
        matched = request.get("ifNoneExist") and status.startswith("200")  # an existing resource, not this one
        not_applied = "outcome" in reply  # e.g. an older EHR version than the one held: acknowledged only
        if not (matched or not_applied):
            written.append((index, resource, str(location)))
    if verdict.refused:
        return verdict
    created: dict[str, int] = {}
    for index, result in enumerate(got):
        reply = result.get("response", {})
        if str(reply.get("status", "")).startswith("201") and reply.get("location"):
            if reply["location"] in created:
                verdict.mismatched.append(
                    f"  Bundle.entry[{created[reply['location']]}] and Bundle.entry[{index}] were both answered"
                    f" 201 Created at {reply['location']}: one version holds only one of them"
                )
            created.setdefault(reply["location"], index)
    step = max(1, -(-len(written) // READ_BACK_PER_BUNDLE))
    for index, resource, location in written[::step]:
        if bundle.get("type") == "batch":  # batch entries are written one by one, each on its own
            own = sent[index].get("fullUrl")
            mapping = {own: links[own]} if own in links else {}
        else:
            mapping = links
        await _read_back(gateway, verdict, rewritten_references(resource, mapping), location, f"Bundle.entry[{index}]")
    return verdict


async def _store(gateway: Gateway, raw: bytes, resource: dict[str, Any]) -> Verdict:
    """PUT a resource at its id (POST it when it has none), then read it back and compare."""
    verdict = Verdict()
    rtype, rid = resource["resourceType"], resource.get("id")
    if isinstance(rid, str):
        method, path = "PUT", f"/{rtype}/{rid}"
    else:
        method, path = "POST", f"/{rtype}"
    response = await gateway.ehr(method, path, content=raw)
    if response.status_code not in (200, 201):
        answer = _body(response)
        verdict.refused = [f"  {method} {path} answered {response.status_code}", *_issues(answer)]
        verdict.codes = _codes(answer)
        return verdict
    location = response.headers.get("location", "").split("/fhir/R4/", 1)[-1]
    await _read_back(gateway, verdict, resource, location or f"{rtype}/{rid}", f"{method} {path}")
    return verdict


async def _push(gateway: Gateway, raw: bytes) -> Verdict:
    try:
        document = json.loads(raw.decode("utf-8-sig"))
    except ValueError as exc:
        return Verdict(refused=[f"  not JSON: {exc}"])
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        return Verdict(refused=["  not a FHIR resource (no resourceType)"])
    if document["resourceType"] == "Bundle" and document.get("type") in BASE_PROCESSED:
        return await _push_bundle(gateway, raw, document)
    return await _store(gateway, raw, document)


def _corpus_files(root: Path, folder: str) -> list[tuple[str, bytes]]:
    """Return (path relative to the corpus, bytes) of every JSON file of a folder, in name order."""
    paths = sorted(p for p in (root / folder).rglob("*.json") if p.is_file())
    return [(p.relative_to(root).as_posix(), p.read_bytes()) for p in paths]


@pytest.mark.parametrize("folder", FOLDERS)
async def test_every_corpus_file_is_accepted(gateway: Gateway, folder: str) -> None:
    root = corpus_dir()
    files = _corpus_files(root, folder)
    assert files, f"{root / folder} holds no JSON files"
    failures: list[str] = []
    accepted = refused = read_back = ehr_meta = 0
    started = time.monotonic()
    for name, raw in files:
        verdict = await _push(gateway, raw)
        refused += bool(verdict.refused)
        accepted += not verdict.refused
        read_back += verdict.read_back
        ehr_meta += verdict.ehr_meta
        if name in KNOWN_DEFECTS:
            if not verdict.refused:
                failures.append(f"{name}: listed in KNOWN_DEFECTS ({KNOWN_DEFECTS[name]}) but was accepted")
            continue
        if name in NOT_SUPPORTED:
            if "not-supported" not in verdict.codes:
                head = f"{name}: listed in NOT_SUPPORTED ({NOT_SUPPORTED[name]}) but not refused as not-supported"
                failures.append("\n".join([head, *verdict.refused]))
            continue
        if verdict.refused:
            failures.append("\n".join([f"{name}: rejected", *verdict.refused]))
        if verdict.mismatched:
            failures.append("\n".join([f"{name}: stored, but", *verdict.mismatched]))
    elapsed = time.monotonic() - started
    print(
        f"\n{folder}: {len(files)} files, {accepted} accepted, {refused} rejected; {read_back} read back"
        f" ({ehr_meta} with EHR meta) in {elapsed:.1f}s"
    )
    if failures:
        pytest.fail(f"{len(failures)} corpus file(s) of {folder} failed:\n" + "\n".join(failures), pytrace=False)


def test_listed_files_are_corpus_files() -> None:
    root = corpus_dir()
    assert not set(KNOWN_DEFECTS) & set(NOT_SUPPORTED), "a file is either defective or valid, not both"
    for name, why in {**KNOWN_DEFECTS, **NOT_SUPPORTED}.items():
        assert (root / name).is_file(), f"{name} is listed but is not in the corpus"
        assert any(name.startswith(f"{folder}/") for folder in FOLDERS), f"{name} is in no tested folder"
        assert why.strip(), f"{name} must say what is wrong or unsupported"
