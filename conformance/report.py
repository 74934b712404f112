"""The conformance runner: replay a corpus of FHIR JSON files through a running gateway and write a Markdown report.

The one module of ``conformance/`` that does I/O: it reads files and talks HTTP to a gateway (an
``httpx.AsyncClient`` the caller gives, so a test can drive the app in-process); it imports nothing from
``gateway/``. Each file is sent the way an EHR would send it:

- a Bundle of type transaction or batch is POSTed to the FHIR base, and so is a collection, searchset or history
  Bundle (the gateway imports those entry by entry);
- any other resource is PUT at its id, or POSTed to its type when it has none.

Every accepted resource is read back at the version the answer names (up to ``read_back_per_bundle`` entries of a
Bundle) and compared with what was sent, ignoring ``meta`` and ``id`` and references to a Bundle's own fullUrls
(the gateway rewrites those to the ids it gave). The validator's local verdict is taken for every file beside the
gateway's answer. Mapping coverage comes from the platform API: the records of each kind and the element paths
their ``unmapped`` lists name.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conformance.validator import validate_resource

BUNDLE_POSTS = ("transaction", "batch", "collection", "searchset", "history")
FHIR_BASE = "/fhir/R4"
PLATFORM_BASE = "/platform/v1"
_JSON = "application/fhir+json"
_TOP_PATHS = 12  # unmapped paths shown per record kind, most frequent first


@dataclass
class FileResult:
    """What the gateway and the local validator said about one file."""

    path: str
    folder: str
    sent_as: str
    status: int = 0
    accepted: bool = False
    entries: int = 0
    entries_accepted: int = 0
    defects: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    local_errors: int = 0
    local_warnings: int = 0
    local_first_error: str = ""


@dataclass
class Coverage:
    """Records of one kind and how often each element path went unmapped."""

    route: str
    records: int = 0
    with_unmapped: int = 0
    unmapped: Counter[str] = field(default_factory=Counter)


@dataclass
class Report:
    """Everything the Markdown report is written from."""

    corpus: str
    exclude: Sequence[str] = ()
    files: list[FileResult] = field(default_factory=list)
    coverage: list[Coverage] = field(default_factory=list)


def corpus_files(root: Path, exclude: Sequence[str] = ()) -> list[Path]:
    """Return every ``*.json`` file below ``root`` not matching an ``exclude`` glob (relative path), sorted."""
    found = []
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root).as_posix()
        if not any(fnmatch.fnmatch(rel, pattern) for pattern in exclude):
            found.append(path)
    return found


def _issue_texts(outcome: Any, limit: int = 3) -> list[str]:
    """Return ``expression: diagnostics`` of the error issues of an OperationOutcome (or all, if none is an error)."""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return []
    issues = [i for i in outcome.get("issue", []) if isinstance(i, dict)]
    errors = [i for i in issues if i.get("severity") in ("error", "fatal")] or issues
    texts = []
    for issue in errors[:limit]:
        where = ", ".join(issue.get("expression") or []) or "-"
        texts.append(f"{where}: {issue.get('diagnostics') or issue.get('code')}")
    if len(errors) > limit:
        texts.append(f"... and {len(errors) - limit} more")
    return texts


def differences(sent: Any, got: Any, path: str, local_urls: frozenset[str] = frozenset()) -> Iterator[str]:
    """Yield the element paths where ``got`` differs from ``sent`` (``meta`` and ``id`` at the root are ignored)."""
    if isinstance(sent, dict) and isinstance(got, dict):
        skip = {"meta", "id"} if "." not in path else set()
        for key in sorted((set(sent) | set(got)) - skip):
            if key == "reference" and isinstance(sent.get(key), str) and sent[key] in local_urls:
                continue  # rewritten to the id the gateway gave the entry it points at
            if key not in sent or key not in got:
                yield f"{path}.{key}"
            else:
                yield from differences(sent[key], got[key], f"{path}.{key}", local_urls)
    elif isinstance(sent, list) and isinstance(got, list):
        if len(sent) != len(got):
            yield path
            return
        for index, (a, b) in enumerate(zip(sent, got, strict=True)):
            yield from differences(a, b, f"{path}[{index}]", local_urls)
    elif sent != got or type(sent) is not type(got):
        yield path


class Runner:
    """Push files through a gateway and gather a Report."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        ehr_token: str,
        platform_token: str,
        read_back_per_bundle: int = 25,
    ) -> None:
        self._client = client
        self._ehr = {"Authorization": f"Bearer {ehr_token}", "Content-Type": _JSON, "Accept": _JSON}
        self._platform = {"Authorization": f"Bearer {platform_token}", "Accept": "application/json"}
        self._read_back = read_back_per_bundle

    async def run(
        self, root: Path, *, exclude: Sequence[str] = (), record_routes: Sequence[str] = (), settle_seconds: float = 2.0
    ) -> Report:
        """Push every corpus file, then read mapping coverage once the gateway's records stop changing."""
        report = Report(corpus=root.as_posix(), exclude=tuple(exclude))
        for path in corpus_files(root, exclude):
            report.files.append(await self.push(root, path))
        if record_routes:
            report.coverage = await self.coverage(record_routes, settle_seconds)
        return report

    async def push(self, root: Path, path: Path) -> FileResult:
        """Send one file and read back what it stored."""
        rel = path.relative_to(root)
        result = FileResult(path=rel.as_posix(), folder=rel.parent.as_posix() or ".", sent_as="-")
        try:
            resource = json.loads(_read(path))
        except (OSError, ValueError) as exc:
            result.defects.append(f"not JSON: {exc}")
            return result
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(rtype, str):
            result.defects.append("not a FHIR resource (no resourceType)")
            return result
        issues = validate_resource(resource)
        failing = [i for i in issues if i.severity in ("error", "fatal")]
        result.local_errors, result.local_warnings = len(failing), len(issues) - len(failing)
        if failing:
            result.local_first_error = f"{failing[0].expression or '-'}: {failing[0].diagnostics}"
        if rtype == "Bundle" and resource.get("type") in BUNDLE_POSTS:
            await self._push_bundle(resource, result)
        else:
            await self._push_resource(resource, rtype, result)
        return result

    async def _push_resource(self, resource: dict[str, Any], rtype: str, result: FileResult) -> None:
        rid = resource.get("id")
        if isinstance(rid, str) and rid:
            result.sent_as = f"PUT {rtype}/id"
            response = await self._client.put(f"{FHIR_BASE}/{rtype}/{rid}", json=resource, headers=self._ehr)
        else:
            result.sent_as = f"POST {rtype}"
            response = await self._client.post(f"{FHIR_BASE}/{rtype}", json=resource, headers=self._ehr)
        result.status, result.entries = response.status_code, 1
        if response.status_code not in (200, 201):
            result.defects = _issue_texts(_json(response)) or [f"HTTP {response.status_code}"]
            return
        result.accepted, result.entries_accepted = True, 1
        location = response.headers.get("location", "")
        if "/_history/" in location:
            await self._compare(resource, location[location.index(f"{FHIR_BASE}/") :], frozenset(), result, rtype)

    async def _push_bundle(self, bundle: dict[str, Any], result: FileResult) -> None:
        kind = bundle["type"]
        result.sent_as = f"POST base ({kind})"
        response = await self._client.post(FHIR_BASE, json=bundle, headers=self._ehr)
        result.status = response.status_code
        sent = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
        result.entries = len(sent)
        if response.status_code != 200:
            result.defects = _issue_texts(_json(response)) or [f"HTTP {response.status_code}"]
            return
        answers = (_json(response) or {}).get("entry") or []
        local_urls = frozenset(e["fullUrl"] for e in sent if isinstance(e.get("fullUrl"), str))
        read_backs = 0
        for index, (entry, answer) in enumerate(zip(sent, answers, strict=False)):
            reply = answer.get("response") or {}
            status = str(reply.get("status", ""))[:3]
            method = (entry.get("request") or {}).get("method")
            if method in ("GET", "HEAD") and status == "404":
                result.entries_accepted += 1  # reads something the Bundle never stored: not a defect of ours
                continue
            if not status.startswith("2"):
                texts = _issue_texts(reply.get("outcome")) or [f"status {reply.get('status')}"]
                result.defects += [f"entry[{index}] {t}" for t in texts]
                continue
            result.entries_accepted += 1
            location = reply.get("location")
            resource = entry.get("resource")
            if (
                read_backs < self._read_back
                and isinstance(location, str)
                and "/_history/" in location
                and isinstance(resource, dict)
                and method != "DELETE"
            ):
                read_backs += 1
                where = (
                    location[location.index(f"{FHIR_BASE}/") :] if FHIR_BASE in location else f"{FHIR_BASE}/{location}"
                )
                await self._compare(resource, where, local_urls, result, f"entry[{index}]")
        result.accepted = result.entries_accepted == result.entries
        if len(result.defects) > 6:
            result.defects = [*result.defects[:6], f"... and {len(result.defects) - 6} more"]

    async def _compare(
        self, sent: dict[str, Any], path: str, local_urls: frozenset[str], result: FileResult, label: str
    ) -> None:
        response = await self._client.get(path, headers=self._ehr)
        if response.status_code != 200:
            result.mismatches.append(f"{label}: read back {path} answered {response.status_code}")
            return
        diff = list(differences(sent, _json(response), str(sent.get("resourceType")), local_urls))
        if diff:
            shown = ", ".join(diff[:4]) + (f" (+{len(diff) - 4})" if len(diff) > 4 else "")
            result.mismatches.append(f"{label}: {shown}")

    async def coverage(self, routes: Sequence[str], settle_seconds: float) -> list[Coverage]:
        """Read every record of each kind, once two reads ``settle_seconds`` apart count the same."""
        previous: list[Coverage] | None = None
        for _ in range(60):
            current = [await self._records(route) for route in routes]
            if previous is not None and [c.records for c in current] == [c.records for c in previous]:
                return current
            previous = current
            await asyncio.sleep(settle_seconds)
        return previous or []

    async def _records(self, route: str) -> Coverage:
        coverage = Coverage(route)
        cursor: str | None = None
        while True:
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            response = await self._client.get(f"{PLATFORM_BASE}/{route}", params=params, headers=self._platform)
            if response.status_code != 200:
                return coverage
            page = response.json()
            for record in page.get("records", []):
                coverage.records += 1
                unmapped = record.get("unmapped") or []
                coverage.with_unmapped += bool(unmapped)
                coverage.unmapped.update(unmapped)
            cursor = page.get("next_cursor")
            if not cursor or not page.get("records"):
                return coverage


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(report: Report, *, command: str = "") -> str:
    """Return the report as Markdown."""
    files = report.files
    accepted = [f for f in files if f.accepted]
    rejected = [f for f in files if not f.accepted]
    entries = sum(f.entries for f in files)
    entries_ok = sum(f.entries_accepted for f in files)
    mismatched = [f for f in files if f.mismatches]
    local_invalid = [f for f in files if f.local_errors]
    disagree = [f for f in files if f.accepted == bool(f.local_errors)]
    pct = 100 * len(accepted) / len(files) if files else 0.0
    lines = [
        f"# Conformance report: `{report.corpus}`",
        "",
        "Generated by the conformance runner (`conformance/report.py`); do not edit by hand."
        + (f" Regenerate with `{command}`." if command else ""),
        "",
        *([f"Left out: {', '.join(f'`{p}`' for p in report.exclude)}.", ""] if report.exclude else []),
        f"- Files: **{len(files)}**; accepted whole: **{len(accepted)}** ({pct:.1f}%); rejected or partly "
        f"rejected: **{len(rejected)}**.",
        f"- Resources and entries: {entries}, of which {entries_ok} accepted.",
        f"- Read back different from what was sent (ignoring `meta`): {len(mismatched)} file(s).",
        f"- Local validator: {len(local_invalid)} file(s) with errors; gateway answer and local verdict disagree "
        f"on {len(disagree)} file(s).",
        "",
        "## Accepted and rejected per folder",
        "",
        "| Folder | Files | Accepted | Rejected | Entries accepted | Locally invalid |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    folders = sorted({f.folder for f in files})
    for folder in folders:
        group = [f for f in files if f.folder == folder]
        ok = sum(f.accepted for f in group)
        lines.append(
            f"| {folder} | {len(group)} | {ok} | {len(group) - ok} | "
            f"{sum(f.entries_accepted for f in group)}/{sum(f.entries for f in group)} | "
            f"{sum(1 for f in group if f.local_errors)} |"
        )
    lines += ["", "## Rejected files and their defects", ""]
    if not rejected:
        lines.append("None.")
    for f in rejected:
        lines.append(f"- `{f.path}` ({f.sent_as}, HTTP {f.status}, {f.entries_accepted}/{f.entries} accepted)")
        lines += [f"  - {_cell(d)}" for d in f.defects]
    lines += ["", "## Read-back mismatches", ""]
    if not mismatched:
        lines.append("None: every resource read back equals what was sent, `meta` aside.")
    for f in mismatched:
        lines.append(f"- `{f.path}`")
        lines += [f"  - {_cell(m)}" for m in f.mismatches[:5]]
    lines += ["", "## Where the gateway's answer and the local validator's verdict differ", ""]
    lines.append(
        "The edge checks more than the validator: Bundle request URLs and methods, and whether it offers the "
        "interaction asked for (it refuses an operation inside a Bundle, or a conditional URL other than "
        "`identifier=`, as `not-supported`). An import Bundle (collection, searchset, history) can be partly "
        "accepted while the Bundle as a whole has errors."
    )
    lines.append("")
    if not disagree:
        lines.append("None.")
    for f in disagree:
        verdict = f"{f.local_errors} error(s): {f.local_first_error}" if f.local_errors else "valid"
        lines.append(f"- `{f.path}`: gateway {'accepted' if f.accepted else 'rejected'}; local {_cell(verdict)}")
    lines += [
        "",
        "## Mapping coverage",
        "",
        "Records the worker made from the corpus, per kind, and the FHIR element paths records name as unmapped "
        "(how many records each).",
        "",
        "| Records | Made | With unmapped elements | Unmapped element paths (records) |",
        "|---|---:|---:|---|",
    ]
    for c in report.coverage:
        ranked = sorted(c.unmapped.items(), key=lambda kv: (-kv[1], kv[0]))
        paths = ", ".join(f"`{p}` ({n})" for p, n in ranked[:_TOP_PATHS])
        if len(ranked) > _TOP_PATHS:
            paths += f", and {len(ranked) - _TOP_PATHS} more paths"
        lines.append(f"| {c.route} | {c.records} | {c.with_unmapped} | {paths or '-'} |")
    lines += [
        "",
        "## Every file",
        "",
        "| File | Sent as | HTTP | Gateway | Local validator |",
        "|---|---|---:|---|---|",
    ]
    for f in files:
        local = f"{f.local_errors} error(s)" if f.local_errors else "valid"
        if f.local_warnings:
            local += f", {f.local_warnings} other"
        gateway = "accepted" if f.accepted else f"rejected ({f.entries_accepted}/{f.entries})"
        lines.append(f"| `{f.path}` | {f.sent_as} | {f.status} | {gateway} | {local} |")
    return "\n".join(lines) + "\n"


async def run_report(
    corpus: Path,
    out: Path,
    client: httpx.AsyncClient,
    *,
    ehr_token: str,
    platform_token: str,
    exclude: Sequence[str] = (),
    record_routes: Sequence[str] = (),
    command: str = "",
    settle_seconds: float = 2.0,
) -> Report:
    """Push ``corpus`` through the gateway ``client`` talks to and write the Markdown report to ``out``."""
    runner = Runner(client, ehr_token=ehr_token, platform_token=platform_token)
    report = await runner.run(corpus, exclude=exclude, record_routes=record_routes, settle_seconds=settle_seconds)
    _write(out, render(report, command=command))
    return report


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
