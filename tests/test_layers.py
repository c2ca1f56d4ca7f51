"""The import layers, read from the source (no import-linter needed, nothing to install):

- the core (addresses, resources, plan, errors, hashing, and the pure helpers beside them)
  imports nothing else of ours;
- providers import only the core;
- the planner reaches providers only through the registry and the shared stores/types;
- renderers do no I/O.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = {"planner.addresses", "planner.resources", "planner.plan", "planner.errors", "planner.hashing",
        "planner.diff", "planner.events", "planner.retrying", "planner.redact"}
PLANNER_MAY_USE = {"providers.registry", "providers.base", "providers.store", "providers.keys"}
RENDERERS = ("planner/render_text.py", "planner/render_json.py", "planner/render_markdown.py")
IO_MODULES = {"os", "io", "pathlib", "subprocess", "socket", "shutil", "tempfile", "urllib.request", "http",
              "requests", "sys"}
IO_CALLS = {"open", "print", "input"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, source: str | None = None) -> set[str]:
    """Every module a file imports (relative imports resolved), top level or inside functions."""
    tree = ast.parse(path.read_text() if source is None else source)
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return found


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in ("planner", "providers")}


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def known_module(name: str) -> str:
    """``planner.plan.Action`` -> ``planner.plan`` (the longest prefix that is a module file)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ROOT.joinpath(*parts[:n])
        if candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists():
            return ".".join(parts[:n])
    return name


@pytest.mark.parametrize("path", [ROOT / (m.replace(".", "/") + ".py") for m in sorted(CORE)], ids=sorted(CORE))
def test_core_imports_nothing_else_of_ours(path: Path):
    bad = {known_module(n) for n in ours(imports(path))} - CORE - {"planner"}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", files("providers"), ids=lambda p: str(p.relative_to(ROOT)))
def test_providers_import_only_the_core(path: Path):
    bad = {known_module(n) for n in ours(imports(path)) if n.startswith("planner")} - CORE - {"planner"}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", files("planner"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_planner_reaches_providers_only_through_the_registry(path: Path):
    used = {known_module(n) for n in ours(imports(path)) if n.startswith("providers")}
    if module_name(path) == "planner.cli.services":
        used -= {"providers.http"}       # `mlops call` is an HTTP client of the service
    if module_name(path) == "planner.cli":
        used -= {"providers.runtime.cli", "providers.runtime"}   # `mlops serve` is the runtime itself
    bad = used - PLANNER_MAY_USE - {"providers"}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("rel", RENDERERS)
def test_renderers_do_no_io(rel: str):
    path = ROOT / rel
    tree = ast.parse(path.read_text())
    io_imports = {n for n in imports(path) if n.split(".")[0] in {m.split(".")[0] for m in IO_MODULES}
                  and (n in IO_MODULES or n.split(".")[0] in IO_MODULES)}
    calls = {node.func.id for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_CALLS}
    assert not io_imports and not calls, f"{rel} does I/O: {sorted(io_imports | calls)}"


def test_the_checker_sees_a_violation():
    """The reader itself works: relative and lazy imports out of the core are seen."""
    source = "from .project import Project\ndef f():\n    from providers.local import LocalProvider\n"
    found = {known_module(n) for n in ours(imports(ROOT / "planner" / "plan.py", source))}
    assert found - CORE == {"planner.project", "providers.local"}
