"""Mutation testing of the validator on real data: valid corpus documents, each changed in one way R4 forbids, per
rule category (see ``mutation``), must be rejected; the documents unchanged must pass.

The sample is fixed (seed 14) and bounded: single resources from the corpus folders and the resources of their
Bundles, and whole Bundles for the Bundle rules. The test prints the table; it fails when a category catches less
than 97%, or an unchanged document has an error. ``hl7-codes`` counts warnings, which is what such a code gets
under a binding that is not required.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from typing import Any

import pytest

from conformance.outcome import Issue
from conformance.validator import validate_resource
from tests.conformance.mutation import CATEGORIES, KINDS, mutate, offers
from tests.conformance.test_validator import CORPUS, CORPUS_FOLDERS, KNOWN_DEFECTIVE

pytestmark = pytest.mark.corpus

SEED = 14
PER_CATEGORY = 160
MIN_CAUGHT = 0.97
BUNDLE_FOLDERS = (*CORPUS_FOLDERS, "fhir-test-cases/r4-examples")


def _documents() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return (resources, Bundles) of the valid corpus."""
    resources: list[dict[str, Any]] = []
    bundles: list[dict[str, Any]] = []
    for folder in BUNDLE_FOLDERS:
        for path in sorted((CORPUS / folder).rglob("*.json")):
            name = path.relative_to(CORPUS).as_posix()
            if name in KNOWN_DEFECTIVE or (folder == "fhir-test-cases/r4-examples" and "bundle" not in path.name):
                continue
            document = json.loads(path.read_bytes().decode("utf-8-sig"))
            if type(document) is not dict or "resourceType" not in document:
                continue
            if document["resourceType"] == "Bundle":
                bundles.append(document)
                entries = [e.get("resource") for e in document.get("entry", []) if type(e) is dict]
                resources.extend(r for r in entries if type(r) is dict)
            else:
                resources.append(document)
    return resources, bundles


def _caught(category: str, change: str, issues: list[Issue]) -> bool:
    """Tell whether the issues report the mutation as the category's rule would (not some other error)."""
    if category == "hl7-codes":
        return any(i.code == "code-invalid" for i in issues)
    failing = [i for i in issues if i.severity in ("error", "fatal")]
    if category == "primitives":
        return any(i.code in ("value", "structure") for i in failing)
    if category == "cardinality":
        return any(i.code in ("required", "structure") for i in failing)
    if category == "bindings":
        return any(i.code == "code-invalid" for i in failing)
    if category == "invariants":
        return any(i.diagnostics.startswith(change) for i in failing)
    return bool(failing)


def _errors(document: object) -> list[str]:
    return [f"{i.expression}: {i.diagnostics}" for i in validate_resource(document) if i.severity in ("error", "fatal")]


def test_mutated_corpus_documents_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the FHIR corpus is not at {CORPUS} (set GATEWAY_CORPUS_DIR)")
    rng = random.Random(SEED)
    resources, bundles = _documents()
    # A resource that needs its Bundle to be valid (a document's references) is not a fair base alone.
    resources = [r for r in rng.sample(resources, min(len(resources), 1200)) if not _errors(r)]
    small_bundles = [b for b in bundles if len(b.get("entry", [])) <= 300]
    false_alarms = {str(b.get("id")): _errors(b)[:2] for b in small_bundles if _errors(b)}
    table: dict[str, list[int]] = {}
    missed: dict[str, list[str]] = {}
    kinds: dict[str, Counter[str]] = {}
    for category in CATEGORIES:
        pool = small_bundles if category == "bundles" else resources
        tried = caught = 0
        kinds[category] = Counter()
        share = max(PER_CATEGORY // len(KINDS[category]), 4)
        for kind in KINDS[category]:
            done = 0
            for base in rng.sample(pool, len(pool)) * 3:
                if done >= share:
                    break
                if not offers(base, category, kind):
                    continue
                mutated = copy.deepcopy(base)
                change = mutate(mutated, category, rng, kind)
                if change is None:
                    continue
                done += 1
                kinds[category][kind or change.split(" ")[0]] += 1
                if _caught(category, change, validate_resource(mutated)):
                    caught += 1
                else:
                    missed.setdefault(category, []).append(f"{base.get('resourceType')}/{base.get('id')}: {change}")
            tried += done
        table[category] = [caught, tried]
    lines = ["", "| category | mutations | caught | rate |", "|---|---:|---:|---:|"]
    for category, (caught, tried) in table.items():
        lines.append(f"| {category} | {tried} | {caught} | {caught / max(tried, 1):.1%} |")
    caught_all = sum(c for name, (c, _t) in table.items() if name != "hl7-codes")
    tried_all = sum(t for name, (_c, t) in table.items() if name != "hl7-codes")
    lines.append(f"| **all (errors)** | **{tried_all}** | **{caught_all}** | **{caught_all / tried_all:.1%}** |")
    lines.append(
        f"unmutated: {len(resources)} resources and {len(small_bundles)} Bundles, {len(false_alarms)} rejected"
    )
    for category, counter in kinds.items():
        lines.append(f"{category}: " + ", ".join(f"{kind} {n}" for kind, n in counter.most_common()))
    for category, examples in missed.items():
        lines.append(f"missed ({category}): {'; '.join(examples[:6])}")
    with capsys.disabled():
        print("\n".join(lines))
    assert false_alarms == {}
    for category, (caught, tried) in table.items():
        assert tried >= 40, f"{category}: only {tried} documents could be mutated"
        assert caught >= MIN_CAUGHT * tried, f"{category}: {caught}/{tried}; missed {missed.get(category, [])[:10]}"


ODD_VALUES: list[object] = [
    None,
    [],
    {},
    [None],
    {"a": [1]},
    1,
    -1.5,
    True,
    "",
    "x",
    "\ud800",
    [{"id": "x"}],
    {"id": "x"},
]


def test_values_of_any_json_kind_anywhere_never_make_the_validator_fail() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the FHIR corpus is not at {CORPUS} (set GATEWAY_CORPUS_DIR)")
    rng = random.Random(SEED)
    resources, bundles = _documents()
    failures = []
    for base in rng.sample(resources, 400) + rng.sample(bundles, 20):
        document = copy.deepcopy(base)
        nodes = [node for node in _dicts(document) if node]
        for node in rng.sample(nodes, min(len(nodes), 12)):
            key = rng.choice(list(node))
            if key != "resourceType":
                node[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        failed = [i.diagnostics for i in validate_resource(document) if i.code == "exception"]
        if failed:
            failures.append(f"{base.get('resourceType')}/{base.get('id')}: {failed[0]}")
    assert failures == []


def _dicts(value: object) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            found.append(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return found
