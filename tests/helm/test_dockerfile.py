"""The image's hardening, read from the Dockerfile (no Docker engine here): two stages on python:3.11-slim, a wheel
built in the first, only its virtual environment in the second, no build tools or installer there, a numeric
non-root user, and nothing written outside /tmp."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helm.rendering import REPO, render

DOCKERFILE = REPO / "Dockerfile"
BASE = "python:3.11-slim"
BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|apk|dnf|yum|gcc|g\+\+|cc|make|build-essential|git|curl|wget|pip3? install|pip wheel|-m pip "
    r"(install|wheel)|pip --python)\b"
)


@dataclass
class Stage:
    """One FROM ... stage: its base, name and instructions as (keyword, arguments)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Split a Dockerfile into its global ARGs and its stages (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))[1]


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def test_multi_stage_on_the_slim_python_base(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert all(stage.base == BASE for stage in stages), [s.base for s in stages]
    builder, final = stages[0], stages[-1]
    assert builder.name
    assert any("pip wheel" in run for run in builder.all("RUN")), "the builder does not build a wheel"
    assert any("venv" in run for run in builder.all("RUN")), "the builder makes no virtual environment"
    copies = final.all("COPY")
    assert f"--from={builder.name} /opt/venv /opt/venv" in copies
    # The final stage takes nothing from the build context: only the builder's environment.
    assert all(c.startswith("--from=") for c in copies), copies


def test_final_stage_installs_no_build_tools(stages: list[Stage]) -> None:
    final = stages[-1]
    for run in final.all("RUN"):
        assert not BUILD_TOOLS.search(run.replace("pip uninstall", "")), run
    assert not final.all("ADD")
    # The base image's own installer goes too.
    assert any(re.search(r"pip uninstall --yes pip setuptools wheel", run) for run in final.all("RUN"))


def test_final_stage_runs_as_a_numeric_non_root_user(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid == "10001" and gid in ("", "10001")
    # The last USER comes after the last RUN, so nothing after it runs as root.
    keywords = [k for k, _ in stages[-1].instructions]
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert "RUN" not in keywords[last_user:]
    assert any("--uid 10001" in run for run in stages[-1].all("RUN"))


def test_the_chart_runs_the_image_as_its_user() -> None:
    api = render().get("Deployment", "api")["spec"]["template"]["spec"]
    assert api["securityContext"]["runAsUser"] == 10001
    assert api["securityContext"]["runAsGroup"] == 10001


def test_final_stage_writes_only_to_tmp(stages: list[Stage]) -> None:
    final = stages[-1]
    env = _env(final)
    assert env["HOME"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert final.all("WORKDIR")[-1] == "/tmp"
    assert not final.all("VOLUME")


def test_entrypoint_is_the_gateway_command_and_the_default_is_the_api(stages: list[Stage]) -> None:
    final = stages[-1]
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["fhir-gateway"]
    assert json.loads(final.all("CMD")[-1]) == ["api"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "fhir-gateway" in scripts
    assert final.all("EXPOSE") == ["8080"]


def _context_sources(stages: list[Stage]) -> set[str]:
    """Paths the Dockerfile copies from the build context (not from another stage)."""
    copied: set[str] = set()
    for stage in stages:
        for copy in stage.all("COPY"):
            *sources, _ = copy.split()
            if not any(s.startswith("--from=") for s in sources):
                copied.update(s for s in sources if not s.startswith("--"))
    return copied


def test_builder_copies_every_package_the_wheel_needs(stages: list[Stage]) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = _context_sources(stages)
    assert packages <= copied, sorted(packages - copied)
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    for source in copied:
        assert (REPO / source).exists(), source


def test_the_wheel_carries_every_data_file_of_the_packages() -> None:
    """The image installs the wheel only, so a data file pyproject's package-data misses is missing at run time."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    tops = [p.rstrip("*") for p in setuptools["packages"]["find"]["include"]]
    globs: dict[str, list[str]] = setuptools.get("package-data", {})
    missing = []
    for top in tops:
        for path in sorted((REPO / top).rglob("*")):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            package = ".".join(path.parent.relative_to(REPO).parts)
            if not (path.parent / "__init__.py").exists():
                continue  # not inside a package: setuptools would not ship it either way
            patterns = globs.get(package, []) + globs.get("*", [])
            if not any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns):
                missing.append(str(path.relative_to(REPO)))
    assert missing == [], f"not in [tool.setuptools.package-data], so not in the image: {missing}"


def test_dockerignore_keeps_local_state_out_of_the_build(stages: list[Stage]) -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".gateway-data", "*.aof"} <= ignored
    copied = {Path(source).parts[0] for source in _context_sources(stages)}
    assert not copied & ignored, "the Dockerfile copies something .dockerignore leaves out"


def test_parser_sees_a_root_user_and_a_compiler() -> None:
    """The checks above can fail: a Dockerfile that installs gcc and stays root is caught."""
    _, bad = parse(
        f"FROM {BASE} AS builder\nRUN pip wheel .\nFROM {BASE}\nRUN apt-get update \\\n && apt-get install -y gcc\n"
        "USER root\n"
    )
    assert BUILD_TOOLS.search(bad[-1].all("RUN")[0])
    assert bad[-1].all("USER") == ["root"]
