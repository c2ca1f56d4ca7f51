"""The import layers, by package, read from the source (no import-linter needed, nothing to install):

- the core (``planner/core/``) imports nothing else of ours;
- a provider package (the package of a kind named in pyproject's ``mlops.providers`` entry points)
  imports only the core, the shared provider modules (everything else under ``providers/`` except the
  runtime) and itself, never another provider package; shared modules import no provider package;
- the runtime (``providers/runtime/``) imports only the standard library, itself and the third-party
  server packages it declares (``REQUIREMENTS``), because it is copied verbatim into every image;
- nothing outside ``planner/cli/`` imports ``planner.cli``;
- the manifest loader (``planner/manifest/``) imports only the core, itself and the few helpers it
  names (YAML positions, schema checks, rollout blocks, the provider registry): never a later stage;
- the planner reaches providers only through the registry and the shared stores/types;
- renderers do no I/O;
- no import cycle between our modules (lazy imports inside functions count too).

Each rule is a function returning its violations, and ``test_each_rule_can_fail`` feeds every one a
violation, so a rule that stopped seeing anything fails too. An old module name that is an alias of a
core module (``planner.errors`` is ``planner.core.errors``) counts as the core module.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
import tomllib
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = "planner.core"
IMPORTERS = "planner.importers"
RUNTIME = "providers.runtime"
CLI = "planner.cli"
MANIFEST = "planner.manifest"
MANIFEST_MAY_USE = {"planner.yamlpos", "planner.schemacheck", "planner.envrefs", "planner.urlmask",
                    "planner.rollout.support", "providers.registry", "providers.base"}
PLANNER_MAY_USE = {"providers.registry", "providers.base", "providers.store", "providers.keys"}
RENDERERS = ("planner/render_text.py", "planner/render_json.py", "planner/render_markdown.py")
IO_MODULES = {"os", "io", "pathlib", "subprocess", "socket", "shutil", "tempfile", "urllib.request", "http",
              "requests", "sys"}
IO_CALLS = {"open", "print", "input"}

Sources = dict[str, str]
"""Module name -> source text: the tree as it is, or a tree a self-test made up."""


# -- reading the tree ------------------------------------------------------------------------------

def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(name: str) -> bool:
    return (ROOT.joinpath(*name.split(".")) / "__init__.py").exists()


def tree() -> Sources:
    return {module_name(p): p.read_text() for folder in ("planner", "providers") for p in
            sorted((ROOT / folder).rglob("*.py"))}


@cache
def imports(name: str, source: str) -> frozenset[str]:
    """Every module a module imports (relative imports resolved), top level or inside functions."""
    here = name.split(".")
    if not is_package(name):
        here = here[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return frozenset(found)


def ours(names: frozenset[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in ("planner", "providers")}


def known_module(name: str, sources: Sources) -> str:
    """``planner.plan.Action`` -> ``planner.core.plan``: the longest prefix that is a module, aliases followed."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in sources:
            return _alias_of(candidate)
    return name


@cache
def _alias_of(name: str) -> str:
    """What a module really is: an old name kept as an alias resolves to the module it stands for."""
    source = _TREE.get(name, "")
    if "sys.modules[__name__]" not in source:
        return name
    return importlib.import_module(name).__name__


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@cache
def provider_packages() -> frozenset[str]:
    """The packages of the kinds pyproject installs as ``mlops.providers`` entry points."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    points = project["project"]["entry-points"]["mlops.providers"]
    return frozenset(".".join(value.split(":")[0].split(".")[:2]) for value in points.values())


def runtime_allowed() -> set[str]:
    """Third-party packages the runtime declares (pip names -> import names, lower case)."""
    from providers.runtime import REQUIREMENTS

    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower().replace("-", "_") for r in REQUIREMENTS}


# -- the rules: each returns its violations as "module imports [names]" ----------------------------------

def core_violations(sources: Sources) -> list[str]:
    out = []
    for name, source in sources.items():
        if within(name, CORE):
            bad = {known_module(n, sources) for n in ours(imports(name, source))} - {"planner"}
            bad = {b for b in bad if not within(b, CORE)}
            if bad:
                out.append(f"{name} imports {sorted(bad)}")
    return out


def provider_violations(sources: Sources, packages: frozenset[str]) -> list[str]:
    out = []
    for name, source in sources.items():
        if not within(name, "providers") or within(name, RUNTIME):
            continue
        home = next((p for p in packages if within(name, p)), None)
        used = {known_module(n, sources) for n in ours(imports(name, source))} - {"planner", "providers"}
        bad = set()
        for mod in used:
            if mod.startswith("planner"):
                if not within(mod, CORE):
                    bad.add(mod)
            elif any(within(mod, p) for p in packages if p != home):
                bad.add(mod)         # another provider package (or, from a shared module, any one)
        if bad:
            out.append(f"{name} imports {sorted(bad)}")
    return out


def runtime_violations(sources: Sources, allowed: set[str]) -> list[str]:
    out = []
    for name, source in sources.items():
        if not within(name, RUNTIME):
            continue
        bad = set()
        for mod in imports(name, source):
            top = mod.split(".")[0]
            if within(mod, RUNTIME) or top in sys.stdlib_module_names or top == "__future__":
                continue
            if top.lower() in allowed:
                continue
            bad.add(mod)
        if bad:
            out.append(f"{name} imports {sorted(bad)}")
    return out


def cli_violations(sources: Sources) -> list[str]:
    return [f"{name} imports {CLI}" for name, source in sources.items() if not within(name, CLI)
            and any(within(known_module(n, sources), CLI) for n in ours(imports(name, source)))]


def manifest_violations(sources: Sources) -> list[str]:
    """The manifest loader is the first stage after the core: plans, applies and the CLI build on it."""
    out = []
    for name, source in sources.items():
        if not within(name, MANIFEST):
            continue
        used = {known_module(n, sources) for n in ours(imports(name, source))} - {"planner", "providers"}
        bad = {m for m in used if not within(m, CORE) and not within(m, MANIFEST) and m not in MANIFEST_MAY_USE}
        if bad:
            out.append(f"{name} imports {sorted(bad)}")
    return out


def importer_violations(sources: Sources) -> list[str]:
    """Importers (another tool's files -> ml.yaml) are reached only from the CLI's `mlops import`."""
    return [f"{name} imports {IMPORTERS}" for name, source in sources.items()
            if not within(name, IMPORTERS) and not within(name, CLI)
            and any(within(known_module(n, sources), IMPORTERS) for n in ours(imports(name, source)))]


def planner_violations(sources: Sources) -> list[str]:
    out = []
    for name, source in sources.items():
        if not within(name, "planner"):
            continue
        used = {known_module(n, sources) for n in ours(imports(name, source)) if n.startswith("providers")}
        if name == "planner.cli.services":
            used -= {"providers.http"}       # `mlops call` is an HTTP client of the service
        if name == "planner.cli":
            used -= {"providers.runtime.cli", "providers.runtime"}   # `mlops serve` is the runtime itself
        bad = used - PLANNER_MAY_USE - {"providers"}
        if bad:
            out.append(f"{name} imports {sorted(bad)}")
    return out


def cycles(sources: Sources) -> list[str]:
    """Import cycles between our modules (a package's ``__init__`` re-exporting its own modules excepted)."""
    graph = {name: {m for n in ours(imports(name, source)) if (m := known_module(n, sources)) in sources
                    and m != name and not within(name, m)}
             for name, source in sources.items()}
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


_TREE = tree()


# -- the tree as it is -----------------------------------------------------------------------------------

def test_the_core_imports_nothing_else_of_ours():
    assert not core_violations(_TREE)


def test_provider_packages_import_only_the_core_and_shared_modules_never_each_other():
    assert {"providers.local", "providers.aci", "providers.kubernetes", "providers.iotedge"} <= provider_packages()
    assert not provider_violations(_TREE, provider_packages())


def test_the_runtime_imports_only_the_standard_library_itself_and_its_declared_server():
    assert not runtime_violations(_TREE, runtime_allowed())


def test_nothing_outside_the_cli_imports_the_cli():
    assert not cli_violations(_TREE)


def test_the_manifest_loader_imports_only_the_core_and_its_helpers():
    assert within(known_module("planner.manifest.loading.load_manifest", _TREE), MANIFEST)
    assert not manifest_violations(_TREE)


def test_only_the_cli_reaches_the_importers():
    assert not importer_violations(_TREE)


def test_the_planner_reaches_providers_only_through_the_registry():
    assert not planner_violations(_TREE)


def test_no_import_cycles():
    assert not cycles(_TREE)


@pytest.mark.parametrize("rel", RENDERERS)
def test_renderers_do_no_io(rel: str):
    path = ROOT / rel
    source = path.read_text()
    tree_ = ast.parse(source)
    io_imports = {n for n in imports(module_name(path), source)
                  if n in IO_MODULES or n.split(".")[0] in IO_MODULES}
    calls = {node.func.id for node in ast.walk(tree_)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_CALLS}
    assert not io_imports and not calls, f"{rel} does I/O: {sorted(io_imports | calls)}"


# -- every rule can fail ---------------------------------------------------------------------------------

def _with(module: str, source: str) -> Sources:
    return {**_TREE, module: source}


VIOLATIONS: dict[str, tuple[Callable[[Sources], list[str]], str, str]] = {
    "core -> manifest (relative, lazy)": (core_violations, "planner.core.plan",
                                          "def f():\n    from ..manifest import Manifest\n"),
    "core -> providers": (core_violations, "planner.core.diff", "import providers.base\n"),
    "provider -> planner (not core)": (lambda s: provider_violations(s, provider_packages()),
                                       "providers.aci.extra", "from planner.project import Project\n"),
    "provider -> another provider": (lambda s: provider_violations(s, provider_packages()),
                                     "providers.iotedge.extra", "from ..kubernetes.client import Cluster\n"),
    "shared -> a provider package": (lambda s: provider_violations(s, provider_packages()),
                                     "providers.images.extra", "from providers.local import LocalProvider\n"),
    "runtime -> third party": (lambda s: runtime_violations(s, runtime_allowed()),
                               "providers.runtime.extra", "import yaml\n"),
    "runtime -> ours": (lambda s: runtime_violations(s, runtime_allowed()),
                        "providers.runtime.extra", "from ..base import Provider\n"),
    "outside -> importer": (importer_violations, "planner.apply_extra",
                            "from .importers.azureml_v1 import import_v1\n"),
    "manifest -> a later stage (lazy)": (manifest_violations, "planner.manifest.extra",
                                         "def f():\n    from ..desired import build_desired\n"),
    "outside -> cli": (cli_violations, "planner.apply_extra", "from .cli.services import service_rows\n"),
    "planner -> provider internals": (planner_violations, "planner.extra", "from providers.local import engine\n"),
    "cycle": (cycles, "planner.core.errors", "from . import plan\n"),
}


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
def test_each_rule_can_fail(case: str):
    rule, module, source = VIOLATIONS[case]
    assert not rule(_TREE), "the tree itself must pass this rule for the self-test to mean something"
    found = rule(_with(module, source))
    assert found and all(module in line or " -> " in line for line in found), found


def test_an_old_core_name_counts_as_the_core_module():
    assert known_module("planner.errors.MlopsError", _TREE) == "planner.core.errors"
