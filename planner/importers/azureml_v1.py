"""Azure ML v1 deployment files -> an ``ml.yaml``: what ``mlops import`` does, as pure functions.

Reads ``inferenceconfig.json`` (entry script, source folder, environment), one or more
``deploymentconfig.json`` files (``computeType`` local / ACI / AKS), each JSON or YAML (as
``az ml model deploy --ic/--dc`` took them; MLOpsPython ships ``inference_config.yml`` and
``deployment_config_aci.yml``), and ``az ml model deploy`` /
``az ml model register`` lines, and returns the manifest text, its data and warnings. Nothing
here prints; bad input raises ``MlopsError`` with one line (``file:line:col: message`` for a
bad file, ``V1ConfigError``).

Decisions (the README's "Coming from Azure ML v1" says the same):

* **One service per stage.** A service in ``ml.yaml`` runs on one target with one ``deploy``
  block, and v1 stages (local, ACI, AKS) each had their own deployment settings, so each
  deployment config becomes its own target and its own service, all sharing the models, the
  environment and the source folder; one ``mlops plan`` shows every stage. With one deployment
  config the service keeps its name; with several, each is ``<name>-<stage>``.
* **Targets that exist.** Each stage's target uses the provider of its ``computeType`` when one
  is installed; otherwise the nearest installed one (a local Docker container for ACI/AKS, a
  local process for ``local``), so the manifest validates and runs today. Settings the chosen
  target cannot take are listed as comments in the service and as warnings.
* **Secrets stay out.** Keys in ``keys.primaryKey`` become ``${VAR}`` references; registry
  passwords are not imported; no value of either is ever in a message.
* **Idempotent.** Importing the same files again gives the same text; importing into an
  existing ``ml.yaml`` adds or replaces only the entries the import generates, keeping the rest
  of the file (and its comments) as it was.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import math
import os
import re
import shlex
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..errors import MlopsError, Problem
from ..manifest import MAX_MANIFEST_BYTES, env_name_problem, pip_problem, read_regular
from ..urlmask import mask_url_credentials, mask_urls
from ..yamlpos import MAX_INT_DIGITS, Positions, YamlProblem, decode, load, one_line
from .pincheck import IndexConfig, check_pins, pip_index_config

MAX_CONFIG_BYTES = 1024 * 1024
MIN_PYTHON = (3, 11)
"""The oldest Python the scoring runtime runs on; older conda pins are raised to it."""
DEFAULT_PYTHON = "3.11"
SERVER_PACKAGES = {"azureml-defaults", "azureml-inference-server-http", "azureml-contrib-services"}
"""Azure's serving stack: the mlops runtime replaces it (and provides its import names)."""
V1_WEB_SERVERS = {"gunicorn": "gunicorn", "flask": "flask"}
"""Azure's v1 images served the entry script with gunicorn and flask; kept only when the entry
script imports them itself (pip name -> import name)."""
MAX_SCRIPT_BYTES = 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z")
_DNS = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]\Z")
_STAGE_PROVIDER = {"local": "local", "aci": "aci", "aks": "aks"}
_NO_EQUIVALENT = {
    "appInsightsEnabled": "Application Insights has no equivalent; read `mlops logs` instead",
    "sslEnabled": "TLS is terminated in front of the service (a proxy or ingress), not by mlops",
    "sslCertificate": "SSL certificate files are not used; terminate TLS in front of the service",
    "sslKey": "SSL key files are not used; terminate TLS in front of the service",
    "cname": "SSL CNAME has no equivalent",
    "vnetName": "VNet placement has no equivalent",
    "subnetName": "VNet placement has no equivalent",
    "vaultBaseUrl": "customer-managed keys have no equivalent",
    "keyName": "customer-managed keys have no equivalent",
    "keyVersion": "customer-managed keys have no equivalent",
    "dataCollection": "model data collection (collect_model_data) has no equivalent",
    "tokenAuthEnabled": "Azure ML token auth has no equivalent; key auth is used",
    "versionName": "AKS endpoint versions (a retired preview) have no equivalent",
    "trafficPercentile": "AKS endpoint traffic splits (a retired preview) have no equivalent",
}
_DEPLOY_KEYS = {
    "computeType",
    "port",
    "containerResourceRequirements",
    "authEnabled",
    "keys",
    "autoScaler",
    "numReplicas",
    "scoringTimeoutMs",
    "maxConcurrentRequestsPerContainer",
    "maxQueueWaitMs",
    "gpuCores",
    "livenessProbeRequirements",
    "dnsNameLabel",
    "location",
    "namespace",
    "computeTargetName",
    *_NO_EQUIVALENT,
}

DeployFields = Callable[[Mapping[str, Any]], "frozenset[str] | str"]
"""For a target's config, the deploy settings its provider accepts, or why that target cannot be
used as it is (``"is not installed"``, ``"needs subscription_id, ..."``)."""


class V1ConfigError(MlopsError):
    """A v1 file is unusable; the message is one ``file:line:col: what and how to fix`` line."""

    def __init__(self, file: str, line: int, col: int, message: str) -> None:
        super().__init__(str(Problem(file, line, col, one_line(mask_urls(message), 400))))


@dataclass(frozen=True)
class Imported:
    """What an import produced: the text to write, its data, and one line per warning."""

    text: str
    data: dict[str, Any]
    warnings: list[str]
    changed: bool
    """False when the output file already said exactly this (re-importing is idempotent)."""

    def __post_init__(self) -> None:
        self.warnings[:] = [mask_urls(w) for w in self.warnings]  # index URLs may carry passwords


@dataclass
class _Stage:
    file: str
    compute: str
    target: str
    target_config: dict[str, Any]
    deploy: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    target_notes: list[str] = field(default_factory=list)


@dataclass
class _Az:
    service: str | None = None
    models: list[str] = field(default_factory=list)
    inference_config: str | None = None
    deploy_config: str | None = None
    registered: dict[str, dict[str, Any]] = field(default_factory=dict)


# -- reading ----------------------------------------------------------------------------------------


def _shown(path: Path) -> str:
    """A file as messages name it: relative to the working directory when it is inside it."""
    if path.is_absolute():
        with contextlib.suppress(ValueError, OSError):
            return path.relative_to(Path.cwd()).as_posix()
    return str(path)


@dataclass(frozen=True)
class _Config:
    """A v1 config file's mapping and where its keys are (JSON or YAML, as ``az ml`` took both)."""

    path: Path
    data: dict[str, Any]
    text: str
    positions: Positions | None = None
    """Set for YAML files (positions of every key); JSON keys are found in the text."""

    def at(self, key: str | tuple[str, ...] | None) -> tuple[int, int]:
        """Line and column of ``key`` (a top-level key or a path of keys), else 1:1; in JSON the
        first occurrence of the last key."""
        if key is None:
            return 1, 1
        path = (key,) if isinstance(key, str) else key
        if self.positions is not None:
            return self.positions.of(path, key=True) if path in self.positions.keys else (1, 1)
        index = self.text.find(f'"{path[-1]}"')
        if index < 0:
            return 1, 1
        line = self.text.count("\n", 0, index) + 1
        return line, index - (self.text.rfind("\n", 0, index) + 1) + 1


def _problem(config: _Config, key: str | tuple[str, ...] | None, message: str) -> V1ConfigError:
    return V1ConfigError(_shown(config.path), *config.at(key), message)


class _NumberProblem(ValueError):
    """A JSON number Python would refuse or a manifest cannot hold (raised from json's hooks)."""

    def __init__(self, literal: str, why: str) -> None:
        super().__init__(why)
        self.literal = literal
        self.why = why


def _bounded_int(literal: str) -> int:
    if sum(ch.isdigit() for ch in literal) > MAX_INT_DIGITS:
        raise _NumberProblem(literal, f"an integer with {len(literal.lstrip('-'))} digits is too large "
                             f"(at most {MAX_INT_DIGITS})")
    return int(literal)


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _NumberProblem(literal, f"{one_line(literal, 20)} is not a finite number")
    return value


def _no_constant(literal: str) -> float:
    raise _NumberProblem(literal, f"{literal} is not a JSON number")


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise V1ConfigError(_shown(path), exc.lineno, exc.colno, f"not valid JSON: {exc.msg}") from None
    except _NumberProblem as exc:
        index = max(text.find(exc.literal), 0)
        line = text.count("\n", 0, index) + 1
        raise V1ConfigError(_shown(path), line, index - (text.rfind("\n", 0, index) + 1) + 1, exc.why) from None
    except RecursionError:
        raise V1ConfigError(_shown(path), 1, 1, "nested too deeply") from None


def _is_yaml(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".yml", ".yaml"):
        return True
    return suffix != ".json" and not text.lstrip().startswith("{")


def read_config(path: Path) -> _Config:
    """A v1 config file (JSON, or YAML as MLOpsPython ships them: ``.yml``/``.yaml``, or any other
    name whose text does not start with ``{``) as a mapping; located errors for bad files."""
    try:
        raw = read_regular(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise MlopsError(f"{_shown(path)}: file not found") from None
    except OSError as exc:
        raise MlopsError(f"{_shown(path)}: cannot read: {exc.strerror or exc}") from None
    if raw is None:
        raise V1ConfigError(_shown(path), 1, 1, f"over the limit of {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        text = decode(raw)
    except YamlProblem as exc:
        raise V1ConfigError(_shown(path), exc.line, exc.col, exc.message) from None
    if _is_yaml(path, text):
        try:
            data, positions = load(text)
        except YamlProblem as exc:
            raise V1ConfigError(_shown(path), exc.line, exc.col, exc.message) from None
        if not isinstance(data, dict):
            raise V1ConfigError(_shown(path), 1, 1, "must be a YAML mapping (key: value lines)")
        return _Config(path, data, text, positions)
    data = _parse_json(path, text)
    if not isinstance(data, dict):
        raise V1ConfigError(_shown(path), 1, 1, "must be a JSON object ({...})")
    return _Config(path, data, text)


def parse_az(line: str) -> _Az:
    """An ``az ml model deploy`` or ``az ml model register`` command line (other flags ignored)."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise MlopsError(f"--from-az: cannot split the command line: {exc}") from None
    if words[:1] == ["az"]:
        words = words[1:]
    if words[:3] not in (["ml", "model", "deploy"], ["ml", "model", "register"]):
        raise MlopsError("--from-az: expected an `az ml model deploy` or `az ml model register` command line")
    verb, args, az = words[2], words[3:], _Az()
    options: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        word = args[i]
        name, eq, value = word.partition("=")
        if word.startswith("-") and eq:
            options.setdefault(name, []).append(value)
        elif word.startswith("-") and i + 1 < len(args) and not args[i + 1].startswith("-"):
            options.setdefault(word, []).append(args[i + 1])
            i += 1
        elif word.startswith("-"):
            options.setdefault(word, []).append("")
        i += 1

    def get(*names: str) -> list[str]:
        return [v for n in names for v in options.get(n, [])]

    if verb == "deploy":
        az.service = (get("-n", "--name") or [None])[-1]
        az.models = [m.split(":", 1)[0] for m in get("-m", "--model")]
        az.inference_config = (get("--ic", "--inference-config-file") or [None])[-1]
        az.deploy_config = (get("--dc", "--deploy-config-file") or [None])[-1]
        return az
    name = (get("-n", "--name") or [""])[-1]
    path = (get("-p", "--model-path", "--asset-path") or [""])[-1]
    if not name or not path:
        raise MlopsError("--from-az: `az ml model register` needs -n NAME and -p PATH")
    tags = dict(t.partition("=")[::2] for t in get("--tag", "-t") if t)
    entry: dict[str, Any] = {"path": path}
    if get("-d", "--description"):
        entry["description"] = get("-d", "--description")[-1]
    if tags:
        entry["tags"] = tags
    az.registered[name] = entry
    return az


# -- the inference configuration -------------------------------------------------------------------


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


# -- deployment configurations ---------------------------------------------------------------------


def _installed_deploy_fields(config: Mapping[str, Any]) -> frozenset[str] | str:
    """The deploy settings the installed provider of ``config`` accepts, or why it cannot be used
    with what a v1 file says (not installed, broken, or its target needs more settings)."""
    import jsonschema

    from providers import registry

    kind = config.get("provider")
    if kind not in registry.kinds():
        return "is not installed"
    try:
        variant = registry.load(str(kind)).variant(config)
    except MlopsError:  # a broken plugin: as if it were not installed (the fallback validates)
        return "failed to load"
    kind_schema = variant.schema()
    schema = kind_schema.target
    missing = [key for key in schema.get("required", []) if key not in config]
    if missing:
        return f"needs {', '.join(missing)} (not in the v1 file)"
    error = next(iter(jsonschema.Draft202012Validator(schema).iter_errors(dict(config))), None)
    if error is not None:
        return f"does not accept this target ({one_line(error.message, 100)})"
    return frozenset(kind_schema.deploy.get("properties", {}))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _map_deploy(data: dict[str, Any], compute: str, key_var: str) -> tuple[dict[str, Any], list[str]]:
    """v1 deployment settings in our vocabulary, plus ``key (reason)`` notes for what has none."""
    deploy: dict[str, Any] = {}
    notes: list[str] = []
    if _number(data.get("port")):
        deploy["port"] = int(data["port"])
    resources = data.get("containerResourceRequirements")
    if isinstance(resources, dict):
        for v1, ours in (
            ("cpu", "cpu"),
            ("memoryInGB", "memory_gb"),
            ("cpuLimit", "cpu_limit"),
            ("memoryInGBLimit", "memory_gb_limit"),
        ):
            if _number(resources.get(v1)):
                deploy[ours] = resources[v1]
    auth_default = compute == "aks"  # AKS turns key auth on by default, local and ACI do not
    auth = data.get("authEnabled", auth_default)
    deploy["auth"] = "key" if auth is True else "none"
    keys = data.get("keys")
    if isinstance(keys, dict):
        for v1, ours, suffix in (
            ("primaryKey", "primary_key", "PRIMARY_KEY"),
            ("secondaryKey", "secondary_key", "SECONDARY_KEY"),
        ):
            if keys.get(v1):
                deploy[ours] = f"${{{key_var}_{suffix}}}"
                notes.append(f"keys.{v1} (not copied: set {key_var}_{suffix} in the environment to its value)")
    scaler = data.get("autoScaler")
    replicas = data.get("numReplicas")
    if isinstance(scaler, dict) and scaler.get("autoscaleEnabled", replicas is None) is not False:
        autoscale = {
            ours: scaler[v1]
            for v1, ours in (
                ("minReplicas", "min_replicas"),
                ("maxReplicas", "max_replicas"),
                ("targetUtilization", "target_utilization"),
                ("refreshPeriodInSeconds", "refresh_seconds"),
            )
            if _number(scaler.get(v1))
        }
        if autoscale:
            deploy["autoscale"] = autoscale
    if _number(replicas):
        deploy["replicas"] = int(replicas)
    for v1, ours in (
        ("scoringTimeoutMs", "scoring_timeout_ms"),
        ("maxConcurrentRequestsPerContainer", "max_concurrent_requests"),
        ("maxQueueWaitMs", "max_queue_wait_ms"),
        ("gpuCores", "gpu"),
    ):
        if _number(data.get(v1)):
            deploy[ours] = data[v1]
    probe = data.get("livenessProbeRequirements")
    if isinstance(probe, dict):
        mapped = {
            ours: probe[v1]
            for v1, ours in (
                ("periodSeconds", "period_s"),
                ("initialDelaySeconds", "initial_delay_s"),
                ("timeoutSeconds", "timeout_s"),
                ("successThreshold", "success_threshold"),
                ("failureThreshold", "failure_threshold"),
            )
            if _number(probe.get(v1))
        }
        if mapped:
            deploy["liveness_probe"] = mapped
    if isinstance(data.get("dnsNameLabel"), str):
        deploy["dns_name_label"] = data["dnsNameLabel"]
    for key, reason in _NO_EQUIVALENT.items():
        value = data.get(key)
        if value not in (None, False, "", {}) and not (
            key == "dataCollection" and isinstance(value, dict) and not value.get("storageEnabled")
        ):
            notes.append(f"{key} ({reason})")
    for key in sorted(set(data) - _DEPLOY_KEYS):
        notes.append(f"{key} (not a v1 deployment setting; ignored)")
    return deploy, notes


def _stage(path: Path, deploy_fields: DeployFields, key_var: str, warnings: list[str]) -> _Stage:
    v1_config = read_config(path)
    data = v1_config.data
    compute_raw = data.get("computeType")
    if not isinstance(compute_raw, str) or not compute_raw.strip():
        raise _problem(v1_config, None, 'computeType is missing: set "computeType" to local, ACI or AKS')
    compute = compute_raw.strip().lower()
    if compute not in _STAGE_PROVIDER:
        raise _problem(
            v1_config,
            "computeType",
            f"unknown computeType {one_line(compute_raw, 40)!r}: use local, "
            "ACI or AKS (IoT Edge deployments cannot be imported)",
        )
    deploy, notes = _map_deploy(data, compute, key_var)
    config: dict[str, Any] = {"provider": _STAGE_PROVIDER[compute]}
    for v1, ours in (("location", "location"), ("namespace", "namespace"), ("computeTargetName", "cluster")):
        if isinstance(data.get(v1), str):
            config[ours] = data[v1]
    fit = deploy_fields(config)
    target_notes: list[str] = []
    if isinstance(fit, str):
        wanted = ", ".join(f"{k}: {v}" for k, v in config.items())
        target_notes.append(f"stands in for {wanted} (that provider {fit})")
        fallback = {"provider": "local"} if compute == "local" else {"provider": "local", "engine": "docker"}
        how = "a local process" if compute == "local" else "a local Docker container (cpu and memory limits kept)"
        warnings.append(
            f"{_shown(path)}: computeType {compute_raw}: the {config['provider']!r} provider {fit}; "
            f"its target runs the service as {how}"
        )
        for key in sorted(set(config) - {"provider"}):
            notes.append(f"{key}: {config[key]} (a setting of the {config['provider']} target)")
        config = fallback
        fit = deploy_fields(config)
    accepted = fit if isinstance(fit, frozenset) else frozenset()
    for key in sorted(set(deploy) - accepted):
        value = deploy.pop(key)
        if key == "auth" and value == "none":
            continue
        notes.append(f"{key}: {json.dumps(value)} (the target does not take it)")
    port = deploy.get("port")
    if isinstance(port, int) and not 1024 <= port <= 65535:
        notes.append(f"port: {port} (outside 1024-65535; auto used)")
        deploy["port"] = "auto"
    if "port" in accepted:
        deploy.setdefault("port", "auto")
    for note in notes:
        warnings.append(f"{_shown(path)}: {note}")
    return _Stage(_shown(path), compute, compute, config, dict(sorted(deploy.items())), notes, target_notes)


# -- assembling -------------------------------------------------------------------------------------


def _dns(name: str, what: str) -> str:
    if not _DNS.match(name):
        raise MlopsError(
            f"{what} {one_line(name, 60)!r} is not a valid service name: 3-32 lowercase letters, digits "
            "and dashes, starting with a letter (pass --service NAME)"
        )
    return name


_GENERIC_FOLDERS = frozenset(
    {"scoring", "score", "src", "source", "sources", "source_dir", "app", "code", "deploy", "deployment",
     "inference", "service", "scripts", "model", "models"}
)
"""Folder names that say nothing about the service; the search goes up past them."""
_CONFIG_WORDS = re.compile(r"inference|configuration|config|deployment|deploy")
_MEANINGLESS_STEMS = frozenset({"ic", "dc", "cfg", "conf", "my", "default", "file"})


def service_name_from(text: str) -> str | None:
    """``text`` normalised to Azure ML's service-name rule (3-32 lowercase letters, digits and
    dashes, starting with a letter, not ending with a dash), or None when nothing is left."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower())
    name = re.sub(r"^[^a-z]+", "", name)[:32].rstrip("-")
    if not name:
        return None
    if len(name) < 3:
        name = f"{name}-svc"
    return name


def derive_service_name(inference_config: Path, entry_script: Path, project: Path) -> tuple[str, str]:
    """A service name when none is given, and what it was taken from, the first that gives one:

    1. the inference config's file name without the words inference/config/deployment
       (``diabetes_inference_config.json`` -> ``diabetes``; ``ic.json`` and the like say nothing);
    2. the entry script's folder, then its parents up to the project folder (the folder of
       ``ml.yaml``), skipping generic names such as ``scoring``, ``src`` or ``source_dir``
       (MLOpsPython's ``diabetes_regression/scoring/score.py`` -> ``diabetes-regression``);
    3. the entry script's file name, unless it is ``score``/``main``/``entry``;
    4. ``ml-service``.

    Each is normalised by :func:`service_name_from`.
    """
    stem = re.sub(r"[^a-z0-9]+", " ", _CONFIG_WORDS.sub("", inference_config.stem.lower())).strip()
    name = service_name_from(stem) if stem not in _MEANINGLESS_STEMS else None
    if name:
        return name, f"the inference config's file name {inference_config.name!r}"
    folder = entry_script.parent.resolve()
    root = project.resolve()
    while folder.is_relative_to(root):
        if folder.name.lower() not in _GENERIC_FOLDERS and (name := service_name_from(folder.name)):
            return name, f"the folder {folder.name}"
        if folder == root:
            break
        folder = folder.parent
    if entry_script.stem.lower() not in ("score", "main", "entry", "entry_script", "scoring") and (
        name := service_name_from(entry_script.stem)
    ):
        return name, f"the entry script {entry_script.name}"
    return "ml-service", "nothing more specific (no telling folder or file name)"


def _env_key(service: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", service.upper())


def import_v1(
    *,
    inference_config: Path | None,
    deploy_configs: Sequence[Path] = (),
    models: Sequence[str] = (),
    service: str | None = None,
    from_az: Sequence[str] = (),
    output: Path,
    deploy_fields: DeployFields | None = None,
    pin_index: Callable[[], IndexConfig | None] | None = None,
) -> Imported:
    """The manifest for these v1 files, merged into ``output`` when it exists (see the module doc).

    ``models`` are ``NAME=PATH`` (relative to the working directory); ``from_az`` are ``az ml model
    deploy/register`` lines whose ``--ic``/``--dc`` files, service name and models are used when
    not given directly. ``deploy_fields`` tells which deploy settings a target takes (default:
    ask the installed providers); ``pin_index`` where the environment's pins are checked (default:
    the index pip is configured with).
    """
    fields = deploy_fields or _installed_deploy_fields
    warnings: list[str] = []
    az = _Az()
    lines: list[_Az] = []
    for line in from_az:
        parsed = parse_az(line)
        az.registered.update(parsed.registered)
        if parsed.registered:
            continue
        lines.append(parsed)
        az.models += [m for m in parsed.models if m not in az.models]
    ic_paths = list(dict.fromkeys(Path(x.inference_config) for x in lines if x.inference_config))
    if inference_config is None and len({p.resolve() for p in ic_paths}) > 1:
        raise MlopsError(
            f"--from-az: the deploy lines name {len(ic_paths)} inference configs "
            f"({', '.join(map(str, ic_paths))}): import one at a time, or pass --inference-config FILE"
        )
    ic_path = inference_config or (ic_paths[0] if ic_paths else None)
    if ic_path is None:
        raise MlopsError(
            "no inference configuration: pass --inference-config FILE (or an `az ml model deploy "
            "--ic FILE` line with --from-az)"
        )
    # One stage per deploy line (in order) and per --deploy-config; a --deploy-config repeating a
    # line's file is that line's stage.
    stage_names: dict[tuple[Path, str | None], None] = {}
    for x in lines:
        if x.deploy_config:
            stage_names[(Path(x.deploy_config), x.service)] = None
    for dc in deploy_configs:
        if not any(p.resolve() == dc.resolve() for p, _ in stage_names):
            stage_names[(dc, None)] = None
    wanted_stages = list(stage_names)
    if not wanted_stages:
        raise MlopsError("no deployment configuration: pass --deploy-config FILE (one per stage)")
    if service:
        _dns(service, "service name")
    else:  # --service overrides the lines' names: only the names that will be used are checked
        for x in lines:
            if x.service:
                _dns(x.service, "`az ml model deploy -n`")
    # Deploy lines naming different services keep their names (MLOpsPython's mlops-aci and
    # mlops-aks); otherwise the stages are NAME-<computeType>.
    own = [n for _, n in wanted_stages]
    own_names = not service and len(own) > 1 and None not in own and len(set(own)) == len(own)
    line_names = list(dict.fromkeys(x.service for x in lines if x.service))
    given = service or (line_names[0] if len(line_names) == 1 else None)

    out_dir = output.absolute().parent
    model_entries: dict[str, dict[str, Any]] = {}
    model_sources: dict[str, str] = {}
    for spec in models:
        model, eq, model_path = spec.partition("=")
        if not eq or not model or not model_path:
            raise MlopsError(f"--model {one_line(spec, 80)!r}: write it as NAME=PATH (e.g. ridge=models/ridge.pkl)")
        model_entries[model] = {"path": model_path}
        model_sources[model] = f"from --model {model}={model_path}"
    for model, entry in az.registered.items():
        if model not in model_entries:
            model_entries[model] = dict(entry)
            model_sources[model] = f"from `az ml model register -n {model}`"
    wanted = list(dict.fromkeys([*az.models, *model_entries]))
    if not wanted:
        raise MlopsError("no model: pass --model NAME=PATH (or `az ml model register -n NAME -p PATH` with --from-az)")
    for model in wanted:
        if not _NAME.match(model):
            raise MlopsError(f"model name {one_line(model, 60)!r} is invalid: letters, digits, '.', '_' and '-'")
        if model not in model_entries:
            raise MlopsError(
                f"model {model!r} (from `az ml model deploy -m {model}:…`) has no files: pass --model "
                f"{model}=PATH or its `az ml model register` line"
            )
        path = Path(model_entries[model]["path"]).absolute()
        if not path.exists():
            raise MlopsError(f"--model {model}: {path} does not exist")
        model_entries[model]["path"] = _relative(path, out_dir)

    inference = _inference(ic_path, out_dir, warnings)
    name = given
    if name is None:
        name, reason = derive_service_name(ic_path, inference.source_dir / inference.entry_script, out_dir)
        if not own_names:
            why = (
                f"the deploy lines name {', '.join(map(repr, line_names))}, not one for every stage"
                if line_names
                else "no service name given"
            )
            warnings.append(f"{why}: named the service {name!r} after {reason} (pass --service NAME to choose another)")
    env_name = inference.env_name if inference.env_name and _NAME.match(inference.env_name) else name
    if inference.pip:
        index = (pin_index or pip_index_config)()
        where = f"{_shown(ic_path)}: environment"
        warnings += [f"{where}: {w}" for w in check_pins(inference.pip, inference.python, index)]
    environment: dict[str, Any] = {"python": inference.python}
    if inference.pip:
        environment["pip"] = inference.pip
    if inference.base_image:
        environment["base_image"] = inference.base_image

    stages = [_stage(p, fields, _env_key(own_name if own_names else name), warnings) for p, own_name in wanted_stages]
    counts: dict[str, int] = {}
    for stage in stages:
        counts[stage.compute] = counts.get(stage.compute, 0) + 1
    seen: dict[str, int] = {}
    entries: list[tuple[str, str, dict[str, Any], list[str]]] = []
    sources = [_shown(ic_path), *(s.file for s in stages)]
    for model in wanted:
        entries.append(("models", model, model_entries[model], [model_sources[model]]))
    entries.append(("environments", env_name, environment, [f"from {_shown(ic_path)} (environment)"]))
    for stage, (_, own_name) in zip(stages, wanted_stages, strict=True):
        seen[stage.compute] = seen.get(stage.compute, 0) + 1
        suffix = stage.compute if counts[stage.compute] == 1 else f"{stage.compute}{seen[stage.compute]}"
        target = suffix
        if own_names and own_name:
            svc = own_name
        else:
            svc = name if len(stages) == 1 else _dns(f"{name}-{suffix}"[:32].rstrip("-"), "service name")
        comments = [f"from {stage.file} (computeType {stage.compute})", *stage.target_notes]
        entries.append(("targets", target, stage.target_config, comments))
        service_entry: dict[str, Any] = {
            "models": wanted,
            "environment": env_name,
            "source_dir": _relative(inference.source_dir, out_dir),
            "entry_script": inference.entry_script,
            "target": target,
        }
        deploy = dict(stage.deploy)
        if inference.variables:
            deploy["environment_variables"] = dict(sorted(inference.variables.items()))
        if deploy:
            service_entry["deploy"] = deploy
        comments = [f"from {_shown(ic_path)} + {stage.file}"]
        comments += [f"not carried over: {note}" for note in stage.notes]
        entries.append(("services", svc, service_entry, comments))
    result = _merge(output, name, entries, sources, warnings)
    return dataclasses.replace(result, warnings=[mask_url_credentials(w) for w in result.warnings])


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix() or "."
    except ValueError:
        return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


# -- writing ----------------------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z0-9_/.${}][A-Za-z0-9_./@:=<>!*~,+${}-]*\Z")
_SECTIONS = ("targets", "models", "environments", "services")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and yaml.safe_load(text) == text and ": " not in text and not text.endswith(":"):
        return text
    return json.dumps(text)


def _block(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            lines.append(f"{pad}{_scalar(key)}:")
            lines += _block(item, indent + 2)
        elif (
            isinstance(item, list)
            and all(not isinstance(x, dict | list) for x in item)
            and len(item) <= 3
            and sum(len(str(x)) for x in item) < 60
        ):
            lines.append(f"{pad}{_scalar(key)}: [{', '.join(_scalar(x) for x in item)}]")
        elif isinstance(item, list):
            lines.append(f"{pad}{_scalar(key)}:")
            lines += [f"{pad}  - {_scalar(x)}" for x in item]
        else:
            lines.append(f"{pad}{_scalar(key)}: {_scalar(item) if item != {} else '{}'}")
    return lines


def _entry_text(name: str, value: dict[str, Any], comments: list[str], indent: int) -> list[str]:
    pad = " " * indent
    lines = [f"{pad}{_scalar(name)}:"]
    lines += [f"{pad}  # {one_line(c, 200)}" for c in comments]
    return lines + _block(value, indent + 2)


def _fresh(project: str, entries: list[tuple[str, str, dict[str, Any], list[str]]], sources: list[str]) -> str:
    lines = [
        f"# Imported from Azure ML v1 by `mlops import` ({', '.join(sources)}).",
        "# Importing the same files again changes nothing; edit freely, then run `mlops validate`.",
        "version: 1",
        f"project: {_scalar(project)}",
    ]
    for section in _SECTIONS:
        chosen = [e for e in entries if e[0] == section]
        if chosen:
            lines += ["", f"{section}:"]
            for _, name, value, comments in chosen:
                lines += _entry_text(name, value, comments, 2)
    return "\n".join(lines) + "\n"


def _merge(
    output: Path,
    project: str,
    entries: list[tuple[str, str, dict[str, Any], list[str]]],
    sources: list[str],
    warnings: list[str],
) -> Imported:
    try:
        raw = read_regular(output, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raw = b""
    except OSError as exc:
        raise MlopsError(f"{_shown(output)}: cannot read: {exc.strerror or exc}") from None
    if raw is None:
        raise MlopsError(f"{_shown(output)}: over the manifest limit of {MAX_MANIFEST_BYTES // 1024} KiB")
    if not raw.strip():
        text = _fresh(project, entries, sources)
        data, _ = load(text)
        return Imported(text, data, warnings, True)
    try:
        old_text = decode(raw)
        data, positions = load(old_text)
    except YamlProblem as exc:
        raise V1ConfigError(_shown(output), exc.line, exc.col, exc.message) from None
    if not isinstance(data, dict):
        raise V1ConfigError(_shown(output), 1, 1, "the manifest must be a mapping")
    lines = old_text.splitlines()
    # Work bottom-up so line numbers found earlier stay valid.
    edits: list[tuple[int, int, list[str]]] = []
    appended: dict[str, list[str]] = {}
    for section, name, value, comments in entries:
        existing = data.get(section)
        if existing is not None and not isinstance(existing, dict):
            raise V1ConfigError(_shown(output), *positions.of((section,)), f"{section}: must be a mapping")
        if isinstance(existing, dict) and name in existing:
            if existing[name] == value:
                continue
            start = positions.of((section, name), key=True)[0] - 1
            indent = len(lines[start]) - len(lines[start].lstrip())
            end = _block_end(lines, start, indent)
            edits.append((start, end, _entry_text(name, value, comments, indent)))
            warnings.append(
                f"{_shown(output)}:{start + 1}: {section}.{name} replaced by the imported one (it differed)"
            )
        elif isinstance(existing, dict) and existing:
            first = positions.of((section, next(iter(existing))), key=True)[0] - 1
            indent = len(lines[first]) - len(lines[first].lstrip())
            if lines[positions.of((section,), key=True)[0] - 1].rstrip().endswith("}"):
                raise MlopsError(
                    f"{_shown(output)}: `{section}:` is written in flow style ({{...}}); write it as a "
                    "block to import into it, or import into a new file with -o"
                )
            head = positions.of((section,), key=True)[0] - 1
            end = _block_end(lines, head, 0)
            edits.append((end, end, _entry_text(name, value, comments, indent)))
        else:
            appended.setdefault(section, []).extend(_entry_text(name, value, comments, 2))
    if not edits and not appended:
        return Imported(old_text, data, warnings, False)
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        lines[start:end] = new
    for section in _SECTIONS:
        if section in appended:
            if section in data and data[section] is not None:  # an empty `section:` line
                head = positions.of((section,), key=True)[0] - 1
                lines[head] = f"{section}:"
                lines[head + 1 : head + 1] = appended[section]
            else:
                lines += ["", f"{section}:", *appended[section]]
    text = "\n".join(lines) + "\n"
    try:
        new_data, _ = load(text)
    except YamlProblem as exc:  # pragma: no cover - a layout this merge does not handle
        raise MlopsError(
            f"{_shown(output)}: cannot merge into this layout ({exc.message}); import into a new file with -o"
        ) from None
    return Imported(text, new_data, warnings, True)


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index after the last content line of the block whose key is on line ``start``."""
    end = start + 1
    last = start
    while end < len(lines):
        line = lines[end]
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            if len(line) - len(line.lstrip()) <= indent:
                break
            last = end
        elif stripped.startswith("#") and len(line) - len(line.lstrip()) > indent:
            last = end
        end += 1
    return last + 1


def write(result: Imported, output: Path) -> None:
    """Write the import's text atomically (a partial manifest never appears)."""
    output = output.absolute()
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(result.text)
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
