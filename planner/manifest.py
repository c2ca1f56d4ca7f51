"""Loading ml.yaml: YAML with positions, ${VAR} interpolation, JSON Schema, references.

Every problem is collected (not just the first) and reported as ``file:line:col: message``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from .errors import ManifestError, MlopsError, Problem
from .yamlpos import Positions, YamlProblem, load

DEFAULT_TARGET = "local"
_VAR = re.compile(r"\$(\$)?\{([^}]*)\}")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SENSITIVE_NAME = re.compile(r"(^|_)(key|keys|secret|password|token|connection_string)$")


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema that ships with the package (also usable by editors)."""
    return json.loads(resources.files("planner").joinpath("schema/ml.schema.json").read_text())


def schema_path() -> Path:
    return Path(str(resources.files("planner").joinpath("schema/ml.schema.json")))


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: plain data plus where it came from."""

    path: Path
    data: Mapping[str, Any]
    positions: Positions = field(repr=False, compare=False)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def display(self) -> str:
        return _display(self.path)

    @property
    def project(self) -> str:
        return self.data["project"]

    @property
    def state_dir(self) -> Path:
        return (self.root / self.data.get("registry", {}).get("path", ".mlops")).resolve()

    @property
    def targets(self) -> dict[str, dict[str, Any]]:
        return self.section("targets") or {DEFAULT_TARGET: {"provider": "local"}}

    def service_target(self, service: Mapping[str, Any]) -> Any:
        """A service's target: as given, else the only declared target, else ``local``."""
        if "target" in service:
            return service["target"]
        targets = self.targets
        return next(iter(targets)) if len(targets) == 1 else DEFAULT_TARGET

    def section(self, name: str) -> dict[str, dict[str, Any]]:
        """A top-level mapping of named entries; entries of the wrong shape are left out."""
        value = self.data.get(name)
        if not isinstance(value, dict):
            return {}
        return {k: v for k, v in value.items() if isinstance(v, dict)}

    def where(self, *path: str | int, key: bool = False) -> str:
        line, col = self.positions.of(path, key=key)
        return f"{self.display}:{line}:{col}"


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def load_manifest(path: Path, env: Mapping[str, str] | None = None) -> Manifest:
    """Read, interpolate and validate a manifest; raise ManifestError listing every problem."""
    env = os.environ if env is None else env
    path = Path(path).absolute()
    shown = _display(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MlopsError(f"{shown}: manifest not found (create one from ml.yaml.example or pass -f FILE)") from None
    except OSError as exc:
        raise MlopsError(f"{shown}: cannot read manifest: {exc.strerror}") from None
    try:
        data, positions = load(text)
    except YamlProblem as exc:
        raise ManifestError([Problem(shown, exc.line, exc.col, exc.message)]) from None
    if not isinstance(data, dict):
        raise ManifestError([Problem(shown, 1, 1, "the manifest must be a mapping (start with `version: 1`)")])

    problems: list[Problem] = []

    def report(where: tuple[str | int, ...], message: str, *, key: bool = False) -> None:
        line, col = positions.of(where, key=key)
        problems.append(Problem(shown, line, col, message))

    data = _interpolate(data, (), env, report)
    _check_schema(data, report)
    manifest = Manifest(path, data, positions)
    # Later checks run even when the schema found problems (all errors at once); they skip
    # entries whose shape is already reported as wrong.
    _check_targets_and_deploy(manifest, report)
    _check_references(manifest, report)
    if problems:
        raise ManifestError(problems)
    return manifest


def _interpolate(value: Any, path: tuple, env: Mapping[str, str], report) -> Any:
    """Replace ``${VAR}`` in strings from the environment; ``$${`` escapes a literal ``${``."""
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), env, report) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), env, report) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def sub(match: re.Match[str]) -> str:
        if match.group(1):
            return "${" + match.group(2) + "}"
        name = match.group(2)
        if not _VAR_NAME.match(name):
            report(path, f"invalid variable reference ${{{name}}} (use ${{NAME}} with letters, digits, _)")
            return ""
        if name not in env:
            report(path, f"environment variable {name} is not set (export {name}=... before running mlops)")
            return ""
        return env[name]

    return _VAR.sub(sub, value)


def _check_schema(data: dict, report) -> None:
    validator = jsonschema.Draft202012Validator(schema())
    for error in validator.iter_errors(data):
        _report_schema_error(error, report)


def _report_schema_error(error: jsonschema.ValidationError, report, prefix: tuple = ()) -> None:
    """Turn a jsonschema error into one line that says what is wrong and how to fix it."""
    where = (*prefix, *error.absolute_path)
    field_name = ".".join(str(p) for p in where) or "(top level)"
    v = error.validator
    if v == "required":
        missing = error.message.split("'")[1]
        report(where, f"{field_name}: missing required field '{missing}'")
    elif v == "additionalProperties":
        allowed = sorted((error.schema.get("properties") or {}).keys())
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        for name in extra:
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            report((*where, name), f"{field_name}: unknown field '{name}'{hint}", key=True)
    elif v == "pattern" and "propertyNames" in error.absolute_schema_path:
        bad = error.instance
        report((*where, bad), f"{field_name}: invalid name {bad!r} ({_pattern_rule(error.validator_value)})", key=True)
    elif v == "pattern":
        report(where, f"{field_name}: invalid value {error.instance!r} ({_pattern_rule(error.validator_value)})")
    elif v == "const":
        report(where, f"{field_name}: must be {error.validator_value!r}")
    elif v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        report(where, f"{field_name}: expected {want}, got {_type_name(error.instance)}")
    elif v == "enum":
        options = ", ".join(repr(o) for o in error.validator_value)
        report(where, f"{field_name}: {error.instance!r} is not one of {options}")
    elif v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        report(where, f"{field_name}: {error.instance!r} must be {_BOUNDS[v]} {error.validator_value}")
    elif v == "anyOf" or v == "oneOf":
        report(where, f"{field_name}: {error.instance!r} is not valid ({error.schema.get('description', v)})")
    else:
        report(where, f"{field_name}: {error.message}")


_BOUNDS = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}


def _pattern_rule(pattern: str) -> str:
    """Say the rule a pattern encodes in words; the schema's patterns are few and known."""
    defs = schema()["$defs"]
    rules = {
        defs["dnsName"]["pattern"]: "use 3-32 lowercase letters, digits and dashes, starting with a letter",
        defs["name"]["pattern"]: "use letters, digits, '.', '_' and '-', starting with a letter or digit",
        schema()["properties"]["environments"]["additionalProperties"]["properties"]["python"]["pattern"]:
            'use a version like "3.11"',
    }
    return rules.get(pattern, f"must match {pattern}")


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


def _check_targets_and_deploy(manifest: Manifest, report) -> None:
    """Each target's and each service's deploy settings against the provider's own schema."""
    from providers.registry import available

    kinds = available()
    variants: dict[str, Any] = {}
    for name, config in manifest.targets.items():
        kind = config.get("provider")
        if not isinstance(kind, str):
            continue  # reported by the schema
        if kind not in kinds:
            report(("targets", name, "provider"),
                   f"targets.{name}.provider: unknown provider {kind!r} (installed: {', '.join(sorted(kinds))})")
            continue
        variant = kinds[kind].variant(config)
        validator = jsonschema.Draft202012Validator(variant.target_schema())
        errors = list(validator.iter_errors(config))
        for error in errors:
            _report_schema_error(error, report, ("targets", name))
        if not errors:
            variants[name] = variant
    for name, service in manifest.section("services").items():
        target = manifest.service_target(service)
        if not isinstance(target, str):
            continue
        if target not in manifest.targets:
            known = ", ".join(sorted(manifest.targets))
            if "target" in service:
                report(("services", name, "target"),
                       f"services.{name}.target: unknown target {target!r} (declared targets: {known})")
            else:
                report(("services", name), f"services.{name}: no target given and several targets declared "
                       f"(add `target:` with one of: {known})", key=True)
            continue
        if target not in variants:
            continue
        deploy = service.get("deploy") or {}
        if not isinstance(deploy, dict):
            continue
        validator = jsonschema.Draft202012Validator(variants[target].deploy_schema())
        for error in validator.iter_errors(deploy):
            _report_schema_error(error, report, ("services", name, "deploy"))


def _check_references(manifest: Manifest, report) -> None:
    """Service -> models/environment exist; every path exists inside the project folder."""
    root = manifest.root.resolve()
    models = manifest.section("models")
    environments = manifest.section("environments")

    def inside(rel: str, where: tuple, field_name: str, *, kind: str) -> Path | None:
        p = (manifest.root / rel).resolve()
        if not p.is_relative_to(root):
            report(where, f"{field_name}: {rel!r} is outside the project folder "
                          "(use a path inside the manifest's folder)")
            return None
        if not p.exists():
            report(where, f"{field_name}: {kind} {rel!r} does not exist (path is relative to the manifest)")
            return None
        return p

    for name, model in models.items():
        if isinstance(model.get("path"), str):
            inside(model["path"], ("models", name, "path"), f"models.{name}.path", kind="file or folder")
    for name, service in manifest.section("services").items():
        base = ("services", name)
        refs = service.get("models")
        for i, ref in enumerate(refs if isinstance(refs, list) else []):
            if isinstance(ref, str) and ref not in models:
                known = ", ".join(sorted(models)) or "none declared"
                report((*base, "models", i), f"services.{name}.models: unknown model {ref!r} (models: {known})")
        env_name = service.get("environment")
        if isinstance(env_name, str) and env_name not in environments:
            known = ", ".join(sorted(environments)) or "none declared"
            report((*base, "environment"),
                   f"services.{name}.environment: unknown environment {env_name!r} (environments: {known})")
        if not isinstance(service.get("source_dir"), str):
            continue
        src = inside(service["source_dir"], (*base, "source_dir"), f"services.{name}.source_dir", kind="folder")
        if src is not None and isinstance(service.get("entry_script"), str):
            if not src.is_dir():
                report((*base, "source_dir"), f"services.{name}.source_dir: {service['source_dir']!r} is not a folder")
            elif not (src / service["entry_script"]).is_file():
                report((*base, "entry_script"),
                       f"services.{name}.entry_script: {service['entry_script']!r} not found in "
                       f"{service['source_dir']} (it is relative to source_dir)")
        if isinstance(service.get("sample_request"), str):
            sample = inside(service["sample_request"], (*base, "sample_request"),
                            f"services.{name}.sample_request", kind="file")
            if sample is not None:
                try:
                    json.loads(sample.read_text())
                except (ValueError, OSError) as exc:
                    report((*base, "sample_request"),
                           f"services.{name}.sample_request: {service['sample_request']!r} is not valid JSON ({exc})")
