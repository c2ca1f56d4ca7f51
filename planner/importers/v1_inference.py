"""The inference config: entry script, source folder and environment (conda files, pip entries,
base image, variables), and what the entry script imports.

v1 environments were conda environments served by Azure's own stack; mlops environments are pip
on the mlops runtime. This module turns one into the other and says in a warning what it left
out (conda-only packages, Azure's server packages, the v1 SDK the entry script imports, a Python
older than the runtime's); a conda file is read only from inside the project folder.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import MlopsError
from ..manifest import env_name_problem, pip_problem, read_regular
from ..yamlpos import YamlProblem, decode, load, one_line
from .v1_config import MAX_CONFIG_BYTES, V1ConfigError, _Config, _problem, _shown, read_config

MIN_PYTHON = (3, 11)
"""The oldest Python the scoring runtime runs on; older conda pins are raised to it."""
DEFAULT_PYTHON = "3.11"
SERVER_PACKAGES = {"azureml-defaults", "azureml-inference-server-http", "azureml-contrib-services"}
"""Azure's serving stack: the mlops runtime replaces it (and provides its import names)."""
V1_WEB_SERVERS = {"gunicorn": "gunicorn", "flask": "flask"}
"""Azure's v1 images served the entry script with gunicorn and flask; kept only when the entry
script imports them itself (pip name -> import name)."""
MAX_SCRIPT_BYTES = 1024 * 1024


def _python_version(spec: str) -> str | None:
    match = re.match(r"^python\s*(?:[=<>!~]=?|=)\s*(\d+)\.(\d+)", spec.strip())
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _conda_dependencies(deps: Any, where: str, warnings: list[str], pip: list[str]) -> str | None:
    """Collects pip packages into ``pip``; returns the conda python version; flags conda-only ones."""
    python = None
    for i, dep in enumerate(deps if isinstance(deps, list) else []):
        if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            pip.extend(str(p) for p in dep["pip"])
        elif isinstance(dep, str):
            version = _python_version(dep)
            if version is not None or re.match(r"^python\s*\Z", dep):
                python = version or python
            elif dep.strip() != "pip" and not dep.strip().startswith("pip="):
                warnings.append(
                    f"{where}[{i}]: conda package {one_line(dep, 80)!r} is not installed (mlops environments "
                    "use pip): add its pip name to environments.*.pip"
                )
    return python


def _inside_project(config: _Config, key: tuple[str, ...], relative: str, base: Path, project: Path) -> Path:
    """``base / relative`` when it stays in the project folder (symlinks followed); a v1 file from a
    pull request must not make the import read (and echo) files from elsewhere on the machine."""
    target = (base / relative).resolve()
    if not target.is_relative_to(project.resolve()):
        raise _problem(
            config,
            key,
            f"{'.'.join(key)} {one_line(relative, 80)!r} points outside the project folder ({project}): "
            "copy the conda file into the project",
        )
    return target


def _conda_file(path: Path, where: str, warnings: list[str], pip: list[str]) -> str | None:
    try:
        raw = read_regular(path, MAX_CONFIG_BYTES)
    except OSError:
        raise MlopsError(f"{where}: conda file {_shown(path)} not found") from None
    if raw is None:
        raise MlopsError(f"{where}: conda file {_shown(path)} is over {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        data, _ = load(decode(raw))
    except YamlProblem as exc:
        raise V1ConfigError(_shown(path), exc.line, exc.col, exc.message) from None
    if not isinstance(data, dict):
        raise V1ConfigError(_shown(path), 1, 1, "a conda file must be a mapping with `dependencies:`")
    return _conda_dependencies(data.get("dependencies"), f"{_shown(path)}: dependencies", warnings, pip)


@dataclass
class _Inference:
    source_dir: Path
    entry_script: str
    env_name: str | None
    python: str
    pip: list[str]
    base_image: str | None
    variables: dict[str, str]


def _inference(path: Path, project: Path, warnings: list[str]) -> _Inference:
    config = read_config(path)
    data = config.data
    shown = _shown(path)
    entry = data.get("entryScript") or data.get("entry_script")
    if not isinstance(entry, str) or not entry.strip():
        raise _problem(
            config,
            None,
            'entryScript is missing: name the scoring script (init()/run()), e.g. "entryScript": "score.py"',
        )
    source = data.get("sourceDirectory") or data.get("source_directory") or "."
    if not isinstance(source, str):
        raise _problem(config, "sourceDirectory", "sourceDirectory must be a folder path")
    source_dir = (path.parent / source).resolve()
    if not source_dir.is_dir():
        raise _problem(
            config, "sourceDirectory", f"sourceDirectory {source!r} is not a folder (looked for {source_dir})"
        )
    entry_path = PurePosixPath(entry.replace("\\", "/"))
    entry = str(PurePosixPath(*[p for p in entry_path.parts if p not in (".",)]))
    if not (source_dir / entry).is_file():
        raise _problem(config, "entryScript", f"entryScript {entry!r} is not a file in {source_dir}")

    pip: list[str] = []
    python: str | None = None
    env = data.get("environment")
    env_name = None
    base_image = None
    variables: dict[str, str] = {}
    where = f"{shown}: environment"
    if isinstance(env, dict):
        env_name = env.get("name") if isinstance(env.get("name"), str) else None
        py = env.get("python") if isinstance(env.get("python"), dict) else {}
        conda = py.get("condaDependencies")
        if isinstance(conda, dict):
            python = _conda_dependencies(
                conda.get("dependencies"), f"{where}.python.condaDependencies.dependencies", warnings, pip
            )
        conda_file = py.get("condaDependenciesFile")
        if isinstance(conda_file, str) and conda_file:
            key = ("environment", "python", "condaDependenciesFile")
            conda_path = _inside_project(config, key, conda_file, source_dir, project)
            python = _conda_file(conda_path, f"{shown}: {'.'.join(key)}", warnings, pip) or python
        if py.get("userManagedDependencies"):
            warnings.append(
                f"{where}.python.userManagedDependencies: a user-managed environment lists no packages; "
                "add what it needs under environments.*.pip"
            )
        docker = env.get("docker") if isinstance(env.get("docker"), dict) else {}
        base_image = docker.get("baseImage") if isinstance(docker.get("baseImage"), str) else None
        if docker.get("baseDockerfile"):
            warnings.append(f"{where}.docker.baseDockerfile: a Dockerfile has no equivalent; use a base image")
        if docker.get("baseImageRegistry") and any(
            isinstance(docker["baseImageRegistry"], dict) and docker["baseImageRegistry"].get(k)
            for k in ("username", "password")
        ):
            warnings.append(
                f"{where}.docker.baseImageRegistry: registry credentials are not imported; log in "
                "to the registry on the machine that builds images"
            )
        raw_vars = env.get("environmentVariables")
        for name, value in raw_vars.items() if isinstance(raw_vars, dict) else []:
            problem = env_name_problem(str(name))
            if problem:
                warnings.append(f"{where}.environmentVariables.{one_line(str(name), 60)}: left out: it {problem}")
            else:
                variables[str(name)] = "" if value is None else str(value)
    elif isinstance(env, str):
        warnings.append(
            f"{where}: environment {one_line(env, 60)!r} is a reference to a workspace environment; "
            "list its packages under environments.*.pip"
        )
    # The legacy "image" keys of older CLI versions.
    if isinstance(data.get("condaFile"), str) and data["condaFile"]:
        conda_path = _inside_project(config, ("condaFile",), data["condaFile"], source_dir, project)
        python = _conda_file(conda_path, f"{shown}: condaFile", warnings, pip) or python
    if isinstance(data.get("baseImage"), str):
        base_image = data["baseImage"]
    for key in ("extraDockerfileSteps", "enableGpu", "cudaVersion", "runtime"):
        if data.get(key) and key != "runtime":
            warnings.append(f"{shown}: {key}: no equivalent (left out)")

    script_imports = _entry_script_imports(source_dir / entry, warnings)
    kept: list[str] = []
    for entry_text in pip:
        package = re.split(r"[\s\[<>=!~;@]", entry_text.strip(), maxsplit=1)[0].lower()
        if package in SERVER_PACKAGES:
            warnings.append(
                f"{where}: pip package {package} left out: the mlops runtime serves the entry script "
                "(and provides azureml.contrib.services for @rawhttp scripts)"
            )
            continue
        if package in V1_WEB_SERVERS and V1_WEB_SERVERS[package] not in script_imports:
            warnings.append(
                f"{where}: pip package {package} left out: Azure ML v1 images served the entry script with "
                f"gunicorn and flask; the mlops runtime serves it (add {package} back if your code imports it)"
            )
            continue
        problem = pip_problem(entry_text)
        if problem:
            warnings.append(f"{where}: pip entry {one_line(entry_text, 80)!r} left out: it {problem}")
            continue
        if entry_text.strip() not in kept:
            kept.append(entry_text.strip())
    if python is not None and tuple(int(p) for p in python.split(".")) < MIN_PYTHON:
        warnings.append(
            f"{where}: python {python} is older than the runtime supports; set to {DEFAULT_PYTHON} "
            "(its pins are checked against the package index)"
        )
        python = DEFAULT_PYTHON
    if base_image is not None and base_image.startswith("mcr.microsoft.com/azureml/"):
        warnings.append(
            f"{where}.docker.baseImage: {one_line(base_image, 100)} is Azure ML's own conda image; "
            "left out (container targets start from a Python image)"
        )
        base_image = None
    return _Inference(source_dir, entry, env_name, python or DEFAULT_PYTHON, kept, base_image, variables)


def _entry_script_imports(script: Path, warnings: list[str]) -> set[str]:
    """The top-level modules the entry script imports; flags the v1 SDK (``azureml.core``), which
    the mlops runtime does not provide: ``Model.get_model_path`` needs a workspace or Azure's
    model folder layout, while ``AZUREML_MODEL_DIR`` works everywhere."""
    try:
        raw = read_regular(script, MAX_SCRIPT_BYTES)
        tree = ast.parse(raw or b"", filename=script.name)
    except (OSError, SyntaxError, ValueError):
        return set()  # the runtime reports a script that cannot load, where it happens
    found: set[str] = set()
    sdk_lines: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module]
            if isinstance(node, ast.ImportFrom) and node.module and not node.level
            else []
        )
        for name in names:
            found.add(name.split(".")[0])
            if (name == "azureml" or name.startswith("azureml.")) and not name.startswith("azureml.contrib.services"):
                sdk_lines.append((node.lineno, name))
    calls = sorted(
        n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "get_model_path"
    )
    if sdk_lines:
        line, name = min(sdk_lines)
        shown = _shown(script)
        uses = f"; line {calls[0]} calls Model.get_model_path" if calls else ""
        warnings.append(
            f"{shown}:{line}: imports {name} (Azure ML SDK v1: azureml-sdk/azureml-core, out of support and not "
            f"part of the mlops runtime){uses}: load the model from the folder in os.environ['AZUREML_MODEL_DIR'] "
            "instead (see the README's \"Coming from Azure ML v1\")"
        )
    return found
