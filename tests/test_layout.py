"""The layout the design promises: no import cycles, dependencies one way, no reach into private modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "mappers", "connectors", "conformance")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Return the project modules ``path`` imports anywhere (top level, in functions, under TYPE_CHECKING)."""
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets.add(node.module)
            targets |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {t for t in targets if t in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        # A module importing its own package's __init__ is Python's normal way in, not a cycle.
        graph[name] = {t for t in _imports(path, modules) if t != name and not name.startswith(f"{t}.")}
    return graph


def test_no_import_cycle_between_project_modules() -> None:
    graph = _graph()
    cycles: list[str] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_nothing_imports_the_gateway_and_mappers_and_the_validator_do_no_io() -> None:
    graph = _graph()
    upward = sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts if t.startswith("gateway") and
                    not m.startswith("gateway"))  # fmt: skip
    assert upward == []
    io = ("redis", "httpx", "fastapi", "socket")
    for package in ("mappers", "conformance"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "report.py":  # the conformance runner: the one module there that does I/O
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert not names & set(io), f"{path.relative_to(ROOT)} imports {sorted(names & set(io))}"


def test_no_package_imports_another_packages_private_module() -> None:
    graph = _graph()
    reaching = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        for t in targets
        if t.rsplit(".", 1)[-1].startswith("_") and t.rsplit(".", 1)[0] != m.rsplit(".", 1)[0]
    )
    assert reaching == []


def test_gateway_packages_depend_one_way() -> None:
    """fhir -> store <- work; platform, webhooks and writebacks build on store and work. Nothing imports the
    composition modules (app, services, cli, admin), which import everything, except the HTTP boundary (deps, ops
    and each package's routes), which is handed the services."""
    graph = _graph()
    composition = {"gateway.app", "gateway.services", "gateway.cli", "gateway.admin"}
    boundary = {"gateway.deps", "gateway.ops", "gateway.__main__"}
    allowed = {
        "gateway.store": set(),
        "gateway.work": {"gateway.store", "gateway.platform"},
        "gateway.fhir": {"gateway.store", "gateway.web", "gateway.deps", "gateway.identity"},
        "gateway.platform": {"gateway.store", "gateway.web", "gateway.deps"},
        "gateway.webhooks": {"gateway.store", "gateway.work", "gateway.platform", "gateway.web", "gateway.deps"},
        # writebacks asks platform's disclosure whether a client may name a record as its target
        "gateway.writebacks": {"gateway.store", "gateway.work", "gateway.platform", "gateway.web", "gateway.deps"},
        "gateway.web": set(),
        "gateway.access": {"gateway.store", "gateway.web", "gateway.deps"},
        "gateway.identity": {"gateway.store", "gateway.web", "gateway.deps"},
        "gateway.console": {"gateway.store", "gateway.work", "gateway.platform", "gateway.webhooks", "gateway.web",
                            "gateway.deps"},
    }  # fmt: skip
    wrong = []
    for module, targets in graph.items():
        package = next((p for p in allowed if module == p or module.startswith(f"{p}.")), None)
        for target in targets:
            at_boundary = module in boundary or module.rsplit(".", 1)[-1].endswith("routes")
            if (
                target in composition
                and module not in composition
                and not (at_boundary and target in ("gateway.services", "gateway.cli"))
            ):
                wrong.append(f"{module} -> {target}")
            if package is None or not target.startswith("gateway."):
                continue
            other = next((p for p in allowed if target == p or target.startswith(f"{p}.")), None)
            if other is not None and other != package and other not in allowed[package]:
                wrong.append(f"{module} -> {target}")
    assert sorted(wrong) == []


def test_every_package_says_what_it_owns_and_what_it_exports() -> None:
    for package in sorted({p.parent for name in PACKAGES for p in (ROOT / name).rglob("__init__.py")}):
        tree = ast.parse((package / "__init__.py").read_text(encoding="utf-8"))
        doc = ast.get_docstring(tree) or ""
        where = package.relative_to(ROOT)
        assert len(doc) > 40 and "TODO" not in doc, f"{where}: its docstring must say what the package owns"
        exported = [n for n in tree.body if isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)]  # fmt: skip
        assert exported, f"{where}: no __all__"
        names = ast.literal_eval(exported[0].value)
        modules = {p.stem for p in package.glob("*.py")} | {p.parent.name for p in package.glob("*/__init__.py")}
        defined = {a.asname or a.name for a in ast.walk(tree) if isinstance(a, ast.alias)}
        defined |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        for name in names:
            assert name in modules or name in defined, (
                f"{where}: __all__ names {name!r}, which it neither defines nor holds"
            )


def test_the_readme_stays_short_and_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) < 12_000, "README.md past 12 KB: move detail to docs/"
    first_screen = "\n".join(readme.splitlines()[:20])
    assert ".venv/bin/fhir-gateway run" in first_screen and ".venv/bin/pytest" in first_screen
