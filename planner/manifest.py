"""Loading ml.yaml: YAML with positions, ${VAR} interpolation, JSON Schema, references.

Every problem is collected (not just the first) and reported as ``file:line:col: message``.

A manifest may come from a pull request, so it is treated as hostile: its size and shape are
bounded (see yamlpos), paths must stay inside the manifest's folder and hold only regular files
(no symbolic links, FIFOs or devices), pip entries must be PEP 508 requirements (never pip
options), environment variable names that steer the loader or the interpreter are refused, and
no message ever echoes a value that is secret or came from the environment.

``${VAR}`` typing: interpolation yields text. Where a value is exactly one ``${VAR}`` reference
and the schema does not accept text there (``port: ${PORT}``), a value of the form ``8080``,
``-1``, ``1.5``, ``true`` or ``false`` takes that type; everywhere else it stays text.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .envrefs import EnvReferences
from .errors import ManifestError, MlopsError, Problem
from .hashing import SKIP_DIRS, UnsafeFile, iter_files
from .schemacheck import SchemaCheck
from .urlmask import mask_urls
from .yamlpos import (
    DEFAULT_MANIFEST_KIB,
    LIMIT_VARIABLE,
    Positions,
    YamlProblem,
    decode,
    load,
    max_manifest_kib,
    one_line,
)

if TYPE_CHECKING:
    import jsonschema

DEFAULT_TARGET = "local"
DEFAULT_KIND = "local"
"""The one target of a manifest that declares none: ``local: {provider: local}``."""
_VAR = re.compile(r"\$(\$)?\{([^}]*)\}")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
SENSITIVE_NAME = re.compile(r"(^|_)(key|keys|secret|password|token|connection_string)\Z")
ENVIRONMENT_VARIABLES = "environment_variables"
PUBLIC_VARS = "public_vars"
"""Top-level list of variable names whose values may be printed (``public_vars: [AZURE_LOCATION]``)."""
"""``deploy.environment_variables``: its values are secret everywhere (plans, messages)."""

MAX_MANIFEST_BYTES = DEFAULT_MANIFEST_KIB * 1024
"""The default; ``MLOPS_MAX_MANIFEST_KIB`` raises it (see yamlpos.max_manifest_kib)."""


def max_manifest_bytes() -> int:
    return max_manifest_kib() * 1024
"""Far above any real manifest (100 services take ~60 KB); keeps validate well under 2 s."""
MAX_SAMPLE_BYTES = 10 * 1024 * 1024
"""The scoring runtime's default body limit: a larger sample request could never be sent."""
MAX_PATH_CHARS = 1024

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}\Z")
# Variables the dynamic loader or an interpreter acts on: setting them runs other code.
_LOADER_PREFIXES = ("LD_", "DYLD_", "PYTHON")
_LOADER_NAMES = frozenset({"PATH", "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF",
                           "BASH_ENV", "ENV", "IFS", "PERL5LIB", "PERL5OPT", "NODE_OPTIONS", "RUBYOPT"})
# Set by mlops for the scoring runtime (Azure ML's contract); a manifest value would be overridden.
_RUNTIME_NAMES = {"AZUREML_MODEL_DIR": "the registered model folder", "AZUREML_ENTRY_SCRIPT": "entry_script",
                  "AML_APP_ROOT": "source_dir", "SCORING_TIMEOUT_MS": "deploy.scoring_timeout_ms",
                  "SERVICE_NAME": "the service's name"}
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_INT = re.compile(r"^-?[0-9]{1,18}\Z")
_FLOAT = re.compile(r"^-?[0-9]+\.[0-9]+\Z")

Report = Callable[..., None]


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema that ships with the package (also usable by editors)."""
    return json.loads(resources.files("planner").joinpath("schema/ml.schema.json").read_text())


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: plain data plus where it came from."""

    path: Path
    data: Mapping[str, Any]
    positions: Positions = field(repr=False, compare=False)
    references: EnvReferences = field(default_factory=EnvReferences, repr=False, compare=False)
    """Values taken from the environment (not in ``public_vars``): shown as ``${NAME}`` everywhere."""

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
        return self.section("targets") or {DEFAULT_TARGET: {"provider": DEFAULT_KIND}}

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
    raw = _read_manifest(path, shown)
    try:
        data, positions = load(decode(raw))
    except YamlProblem as exc:
        raise ManifestError([Problem(shown, exc.line, exc.col, exc.message)]) from None
    if not isinstance(data, dict):
        raise ManifestError([Problem(shown, 1, 1, "the manifest must be a mapping (start with `version: 1`)")])

    problems: list[Problem] = []

    def report(where: tuple[str | int, ...], message: str, *, key: bool = False) -> None:
        line, col = positions.of(where, key=key)
        problems.append(Problem(shown, line, col, checks.redact(one_line(message, 1000))))

    checks = _Checks(report)
    checks.public = _public_vars(data.get(PUBLIC_VARS))
    data = {k: v if k == PUBLIC_VARS else checks.interpolate(v, (k,), env) for k, v in data.items()}
    # A value equal to a declared name is public already (names are keys, never interpolated), and
    # masking it would hide which model or environment a service uses.
    names = {k for section in ("models", "environments", "services", "targets")
             if isinstance(data.get(section), dict) for k in data[section]}
    references = EnvReferences({v: r for v, r in checks.references.items() if v not in names}, checks.written)
    manifest = Manifest(path, data, positions, references)
    if checks.whole:
        _type_interpolated(manifest, checks)
    _check_schema(data, checks)
    # Later checks run even when the schema found problems (all errors at once); they skip
    # entries whose shape is already reported as wrong.
    _check_targets_and_deploy(manifest, checks)
    _check_environments(manifest, checks)
    _check_services(manifest, checks)
    _check_rollouts(manifest, checks)
    _check_references(manifest, checks)
    if problems:
        raise ManifestError(problems)
    return manifest


def _public_vars(value: Any) -> frozenset[str]:
    """The variables the manifest declares non-sensitive (their values print); the schema checks the shape."""
    if not isinstance(value, list):
        return frozenset()
    return frozenset(v for v in value if isinstance(v, str) and _VAR_NAME.fullmatch(v))


def _read_manifest(path: Path, shown: str) -> bytes:
    """The manifest's bytes: a regular file, at most MAX_MANIFEST_BYTES, never a blocking read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MlopsError(f"{shown}: manifest not found (create one from ml.yaml.example or pass -f FILE)") from None
    except (OSError, ValueError) as exc:
        raise MlopsError(f"{shown}: cannot read manifest: {_why(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ManifestError([Problem(shown, 1, 1, "the manifest is not a regular file (a FIFO, a device or a "
                                                  "folder); pass the path of an ml.yaml file")])
    limit = max_manifest_bytes()
    if st.st_size > limit:
        raise ManifestError([Problem(shown, 1, 1, f"the manifest is {st.st_size} bytes, over the limit of "
                                                  f"{limit // 1024} KiB; split the project (or raise "
                                                  f"{LIMIT_VARIABLE})")])
    try:
        raw = read_regular(path, limit)
    except OSError as exc:
        raise MlopsError(f"{shown}: cannot read manifest: {_why(exc)}") from None
    if raw is None:
        raise ManifestError([Problem(shown, 1, 1, f"the manifest is over the limit of "
                                                  f"{limit // 1024} KiB; split the project (or raise "
                                                  f"{LIMIT_VARIABLE})")])
    return raw


def read_regular(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes (None past ``limit``); opened non-blocking so a FIFO cannot hang us."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(0, "not a regular file")
        data = fh.read(limit + 1)
    return None if len(data) > limit else data


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "the name holds a NUL character" if "null" in str(exc) else one_line(str(exc), 80)


def show(value: Any, limit: int = 60) -> str:
    """A value for a message: repr, cut to ``limit`` characters with the full length said."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str) and "://" in value:
        value = mask_urls(value)
    text = repr(value)
    if len(text) <= limit + 2:
        return one_line(text, limit + 40)
    return one_line(repr(str(value)[:limit]), limit + 40) + f"... ({len(str(value))} characters)"


class _Checks:
    """Where problems go, plus what interpolation learnt (which values came from the environment)."""

    def __init__(self, report: Report):
        self.report = report
        self.from_env: set[tuple] = set()
        """Paths of values built from ${VAR}: never echoed, they often hold secrets."""
        self.whole: set[tuple] = set()
        """Paths of values that were exactly one ${VAR} reference: candidates for typing."""
        self.unset: set[tuple] = set()
        """Paths whose ${VAR} is not set: reported once, not again by the schema."""
        self.samples: dict[Path, str | None] = {}
        """Sample request files read so far (services may share one): path -> problem or None."""
        self.entry_scripts: dict[tuple[Path, str], tuple[str, str]] = {}
        """Entry scripts looked at so far (services share them): (source_dir, script) -> verdict."""
        self.values: set[str] = set()
        """Values taken from the environment, blanked out of any message that still holds one."""
        self.public: frozenset[str] = frozenset()
        """Variables the manifest declares non-sensitive (``public_vars``)."""
        self.references: dict[str, str] = {}
        """Non-public values -> their ``${NAME}`` (see planner.envrefs)."""
        self.written: dict[tuple[str, str], str] = {}
        """(attribute, interpolated text) -> the text as the manifest wrote it, public values filled in."""

    def redact(self, message: str) -> str:
        """The backstop: no message holds a value from the environment, whatever check wrote it."""
        for value in sorted(self.values, key=len, reverse=True):
            for form in {value, one_line(value, len(value) * 6 + 8), repr(value)[1:-1]}:
                message = message.replace(form, self.references.get(value, "(a value from the environment)"))
        return message

    def secret(self, where: tuple, schema_secret: bool = False) -> bool:
        """Whether the value at ``where`` must not appear in a message."""
        return schema_secret or is_sensitive_path(where) or any(where[:i] in self.from_env
                                                                for i in range(len(where), 0, -1))

    def shown(self, where: tuple, value: Any, limit: int = 60) -> str:
        """``value`` for a message, or words in its place when it is secret or from the environment."""
        return "the value (from the environment or secret)" if self.secret(where) else show(value, limit)

    def interpolate(self, value: Any, path: tuple, env: Mapping[str, str]) -> Any:
        """Replace ``${VAR}`` in strings from the environment; ``$${`` escapes a literal ``${``."""
        if isinstance(value, dict):
            return {k: self.interpolate(v, (*path, k), env) for k, v in value.items()}
        if isinstance(value, list):
            return [self.interpolate(v, (*path, i), env) for i, v in enumerate(value)]
        if isinstance(value, float) and not math.isfinite(value):
            # YAML's .nan and .inf are numbers to JSON Schema, but no setting can mean them (NaN passes
            # every bound): one clear line here instead of a failure at apply.
            field_name = one_line(".".join(str(p) for p in path), 120) or "(top level)"
            self.report(path, f"{field_name}: {value!r} is not a usable number (NaN or infinity); write a finite "
                              "number")
            return value
        if not isinstance(value, str) or "${" not in value:
            return value
        used = False
        hidden = False

        def sub(match: re.Match[str]) -> str:
            nonlocal used, hidden
            if match.group(1):
                return "${" + match.group(2) + "}"
            used = True
            name = match.group(2)
            if not _VAR_NAME.fullmatch(name):
                self.report(path, f"invalid variable reference ${{{one_line(name, 40)}}} "
                                  "(use ${NAME} with letters, digits, _)")
                return ""
            if name not in env:
                self.report(path, f"environment variable {name} is not set (export {name}=... before running mlops)")
                self.unset.add(path)
                return ""
            if name not in self.public and env[name]:
                hidden = True
                self.references.setdefault(env[name], "${" + name + "}")
                if len(env[name]) >= 6:
                    self.values.add(env[name])
            return env[name]

        out = _VAR.sub(sub, value)
        if used:
            self.from_env.add(path)
            match = _VAR.fullmatch(value)
            if match and not match.group(1):
                self.whole.add(path)
        if hidden:
            attribute = next((p for p in reversed(path) if isinstance(p, str)), "")
            self.written[(attribute, out)] = _VAR.sub(
                lambda m: m.group(0) if m.group(1) or m.group(2) not in self.public else env.get(m.group(2), ""),
                value)
        return out


def is_sensitive_path(where: tuple) -> bool:
    """A secret-named setting (``primary_key``, ``*_secret``...) or an environment variable value."""
    return any(isinstance(p, str) and (SENSITIVE_NAME.search(p) is not None or p == ENVIRONMENT_VARIABLES)
               for p in where)


def _typed(text: str) -> Any:
    """The int, float or bool ``text`` spells, else None (text stays text)."""
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return {"true": True, "false": False}.get(text)


def _type_interpolated(manifest: Manifest, checks: _Checks) -> None:
    """Give a whole-``${VAR}`` value a type where the schema refuses it as text (see module doc)."""
    candidates = {p: t for p in checks.whole if (t := _typed(_get(manifest.data, p))) is not None}
    if not candidates:
        return
    refused: set[tuple] = set()

    def collect(where: tuple, message: str, *, key: bool = False) -> None:
        refused.add(tuple(where))

    dry = _Checks(collect)
    _check_schema(dict(manifest.data), dry)
    _check_targets_and_deploy(manifest, dry)
    for path, typed in candidates.items():
        if path in refused:
            _set(manifest.data, path, typed)


def _get(data: Any, path: tuple) -> Any:
    for p in path:
        data = data[p]
    return data


def _set(data: Any, path: tuple, value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


def _check_schema(data: dict, checks: _Checks) -> None:
    """The manifest against the shipped schema; service entries one by one, each distinct entry once.

    Platform manifests hold thousands of services that differ only in their names: validating
    each distinct entry once (and the rest of the document with services taken as opaque) gives
    the same errors, at the same positions, in a fraction of the time.
    """
    full = schema()
    whole = SchemaCheck(full)
    if whole.passes(data):
        return
    services = data.get("services") if isinstance(data, dict) else None
    entry_schema = full["properties"]["services"].get("additionalProperties")
    if not isinstance(services, dict) or not isinstance(entry_schema, Mapping):
        for error in whole.errors(data):
            _report_schema_error(error, checks, root=full)
        return
    outline = {**full, "properties": {**full["properties"],
                                      "services": {**full["properties"]["services"], "additionalProperties": True}}}
    for error in SchemaCheck(outline).errors(data):
        _report_schema_error(error, checks, root=outline)
    entry_check = SchemaCheck(entry_schema, within=full)
    seen: dict[str, list[jsonschema.ValidationError]] = {}
    for name, entry in services.items():
        if entry_check.passes(entry):
            continue
        try:
            key = json.dumps(entry, sort_keys=True)
        except (TypeError, ValueError):
            key = None
        errors = seen.get(key) if key is not None else None
        if errors is None:
            errors = list(entry_check.validator().iter_errors(entry))
            if key is not None:
                seen[key] = errors
        for error in errors:
            _report_schema_error(error, checks, ("services", name), root=entry_schema)


def _schema_secret(root: Mapping[str, Any] | None, error: jsonschema.ValidationError) -> bool:
    """Whether the schema marks the failing setting secret (``writeOnly: true``) on the way down."""
    node: Any = root
    for part in error.absolute_schema_path:
        if isinstance(node, Mapping) and node.get("writeOnly"):
            return True
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(error.schema, Mapping) and bool(error.schema.get("writeOnly"))


def _report_schema_error(error: jsonschema.ValidationError, checks: _Checks, prefix: tuple = (),
                         root: Mapping[str, Any] | None = None) -> None:
    """Turn a jsonschema error into one line that says what is wrong and how to fix it.

    The value is echoed only when it is short plain data that is neither secret nor from the
    environment; otherwise the line says "the value" (``'S3cr3t-shortk' is too short`` leaked).
    """
    report = checks.report
    where = (*prefix, *error.absolute_path)
    if where in checks.unset:
        return  # "environment variable X is not set" says it already
    field_name = one_line(".".join(str(p) for p in where), 120) or "(top level)"
    v = error.validator
    secret = checks.secret(where, _schema_secret(root, error))
    value = "the value" if secret else show(error.instance)
    if v == "required":
        missing = error.message.split("'")[1]
        report(where, f"{field_name}: missing required field '{missing}'")
    elif v == "additionalProperties":
        allowed = sorted((error.schema.get("properties") or {}).keys())
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        for name in extra:
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            report((*where, name), f"{field_name}: unknown field {show(name)}{hint}", key=True)
    elif v == "pattern" and "propertyNames" in error.absolute_schema_path:
        bad = error.instance
        report((*where, bad), f"{field_name}: invalid name {show(bad)} ({_pattern_rule(error.validator_value)})",
               key=True)
    elif v == "maxLength" and "propertyNames" in error.absolute_schema_path:
        bad = error.instance
        report((*where, bad), f"{field_name}: the name {show(bad)} is too long (at most "
                              f"{error.validator_value} characters)", key=True)
    elif v == "pattern":
        report(where, f"{field_name}: invalid value{'' if secret else ' ' + value} "
                      f"({_pattern_rule(error.validator_value)})")
    elif v == "const":
        report(where, f"{field_name}: must be {error.validator_value!r}")
    elif v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        report(where, f"{field_name}: expected {want}, got {_type_name(error.instance)}")
    elif v == "enum":
        options = ", ".join(repr(o) for o in error.validator_value)
        report(where, f"{field_name}: {value} is not one of {options}")
    elif v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        report(where, f"{field_name}: {value} must be {_BOUNDS[v]} {error.validator_value}")
    elif v in ("minLength", "maxLength"):
        bound = "at least" if v == "minLength" else "at most"
        size = f" ({len(error.instance)} characters)" if secret and isinstance(error.instance, str) else ""
        report(where, f"{field_name}: {value}{size} is too {'short' if v == 'minLength' else 'long'} "
                      f"({bound} {error.validator_value} characters)"
                      + ("; it is not shown because it is secret" if secret else ""))
    elif v in ("anyOf", "oneOf"):
        report(where, f"{field_name}: {value} is not valid ({error.schema.get('description', v)})")
    elif v in ("minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties"):
        n = error.validator_value
        report(where, f"{field_name}: {_COUNTS[v].format(n=n, entries='entry' if n == 1 else 'entries')}")
    elif secret:
        report(where, f"{field_name}: the value is not valid ({v}); it is not shown because it is secret")
    else:
        report(where, f"{field_name}: {one_line(error.message, 300)}")


_BOUNDS = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
_COUNTS = {"minItems": "needs at least {n} {entries}", "maxItems": "takes at most {n} {entries}",
           "uniqueItems": "has duplicate entries (list each once)",
           "minProperties": "needs at least {n} {entries}", "maxProperties": "takes at most {n} {entries}"}


def _pattern_rule(pattern: str) -> str:
    """Say the rule a pattern encodes in words; the schema's patterns are few and known."""
    defs = schema()["$defs"]
    rules = {
        defs["dnsName"]["pattern"]: "use 3-32 lowercase letters, digits and dashes, starting with a letter",
        defs["name"]["pattern"]: "use letters, digits, '.', '_' and '-', starting with a letter or digit",
        defs["path"]["pattern"]: "use a relative path without control characters",
        defs["image"]["pattern"]: "use an image reference such as python:3.11-slim",
        schema()["properties"]["environments"]["additionalProperties"]["properties"]["python"]["pattern"]:
            'use a version like "3.11"',
    }
    return rules.get(pattern, f"must match {one_line(pattern, 80)}")


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


def _check_targets_and_deploy(manifest: Manifest, checks: _Checks) -> None:
    """Each target's and each service's deploy settings against the provider's own schema."""
    from providers.registry import available

    report = checks.report
    kinds = available()
    variants: dict[str, Any] = {}
    for name, config in manifest.targets.items():
        kind = config.get("provider")
        if not isinstance(kind, str):
            continue  # reported by the schema
        if kind not in kinds:
            shown = checks.shown(("targets", name, "provider"), kind)
            report(("targets", name, "provider"), f"targets.{name}.provider: unknown provider {shown} "
                   f"(installed: {', '.join(sorted(kinds))})")
            continue
        try:
            variant = kinds[kind].variant(config)
            target_schema = variant.target_schema()
        except MlopsError as exc:  # a broken plugin fails where its kind is used, on one line
            report(("targets", name, "provider"), f"targets.{name}.provider: {exc}")
            continue
        errors = SchemaCheck(target_schema).errors(config)
        for error in errors:
            _report_schema_error(error, checks, ("targets", name), root=target_schema)
        if not errors:
            variants[name] = variant
    ports: dict[tuple[str, int], str] = {}
    validators: dict[str, tuple[dict[str, Any], Any]] = {}
    for name, service in manifest.section("services").items():
        target = manifest.service_target(service)
        if not isinstance(target, str):
            continue
        if target not in manifest.targets:
            known = ", ".join(sorted(manifest.targets))
            if "target" in service:
                shown = checks.shown(("services", name, "target"), target)
                report(("services", name, "target"),
                       f"services.{name}.target: unknown target {shown} (declared targets: {known})")
            else:
                report(("services", name), f"services.{name}: no target given and several targets declared "
                       f"(add `target:` with one of: {known})", key=True)
            continue
        if target not in variants:
            continue
        name_problem = _service_name_problem(variants[target], name)
        if name_problem:
            report(("services", name), f"services.{one_line(name, 60)}: {name_problem}", key=True)
        deploy = service.get("deploy") or {}
        if not isinstance(deploy, dict):
            continue
        if target not in validators:  # one per target: a big manifest has many services, few targets
            deploy_schema = variants[target].deploy_schema()
            validators[target] = (deploy_schema, SchemaCheck(deploy_schema))
        deploy_schema, check = validators[target]
        errors = check.errors(deploy)
        for error in errors:
            _report_schema_error(error, checks, ("services", name, "deploy"), root=deploy_schema)
        port = deploy.get("port")
        if isinstance(port, int) and not isinstance(port, bool) and not any(e.path and e.path[0] == "port"
                                                                              for e in errors):
            scope = _port_scope(variants[target], manifest.targets[target])
            other = ports.setdefault((scope, port), name) if scope else name
            if other != name:
                report(("services", name, "deploy", "port"),
                       f"services.{name}.deploy.port: port {port} is already taken by services.{other} "
                       f"(both bind {one_line(str(scope), 60)}); choose another port or `auto`")


def _service_name_problem(variant: Any, name: str) -> str | None:
    """The target kind's own naming rule for services (ACI's names), as the provider says; None: fine."""
    hook = getattr(variant, "service_name_problem", None)
    if not callable(hook):
        return None
    try:
        problem = hook(name)
    except Exception:  # noqa: BLE001 - a plugin's hook must not turn validate into a traceback
        return None
    return one_line(str(problem), 200) if problem else None


def _port_scope(variant: Any, config: Mapping[str, Any]) -> str | None:
    """Where a fixed ``deploy.port`` must be unique, as the provider says; None: no such rule.

    A provider whose services bind ports of one shared host (processes and containers on
    127.0.0.1, IoT Edge modules on one device) says so with a classmethod
    ``port_scope(config) -> str | None``, e.g. ``"127.0.0.1"``: two services whose targets give the
    same scope cannot both ask for one port. Cloud targets, where each service has its own
    address, declare nothing.
    """
    hook = getattr(variant, "port_scope", None)
    if not callable(hook):
        return None
    try:
        scope = hook(config)
    except Exception:  # noqa: BLE001 - a plugin's hook must not turn validate into a traceback
        return None
    return scope if isinstance(scope, str) and scope else None


def _check_environments(manifest: Manifest, checks: _Checks) -> None:
    """pip entries are PEP 508 requirements; the index is its own https setting (finding: `-r/proc/...`)."""
    report = checks.report
    for name, environment in manifest.section("environments").items():
        base = ("environments", name)
        pip = environment.get("pip")
        for i, entry in enumerate(pip if isinstance(pip, list) else []):
            if not isinstance(entry, str) or not entry.strip():
                continue  # reported by the schema
            problem = pip_problem(entry)
            if problem:
                shown = "the value" if checks.secret((*base, "pip", i)) else show(entry)
                report((*base, "pip", i), f"environments.{name}.pip[{i}]: {shown} {problem}")
        url = environment.get("pip_index_url")
        if isinstance(url, str):
            problem = index_url_problem(url)
            if problem:
                report((*base, "pip_index_url"), f"environments.{name}.pip_index_url: {problem}")


_VERSION = r"[0-9]+(?:\.[0-9]+)*"
_SIMPLE_REQUIREMENT = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"            # a project name (PEP 508)
    rf"(?:(?:==|!=){_VERSION}(?:\.\*)?|(?:<=|>=|<|>){_VERSION}|~={_VERSION}\.[0-9]+)"
    rf"(?:,(?:(?:==|!=){_VERSION}(?:\.\*)?|(?:<=|>=|<|>){_VERSION}|~={_VERSION}\.[0-9]+))*"
    r"|[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", re.ASCII)
"""`name` or `name` with plain release specifiers (numpy, scikit-learn==1.5.*, a>=1,<2): a strict
subset of PEP 508 that needs no further checks. Anything else goes to packaging, which words the error."""


def pip_problem(entry: str) -> str | None:
    """Why a pip entry is refused, or None: only PEP 508 requirements reach pip, never options."""
    text = entry.strip()
    if text.startswith("-"):
        return ("is a pip option, not a requirement; list packages only (e.g. numpy==2.1.*) and set "
                "pip_index_url for another index")
    if _SIMPLE_REQUIREMENT.fullmatch(text):
        return None  # the common case, valid PEP 508 by construction: no need to load packaging
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "invalid"
        return f"is not a PEP 508 requirement ({one_line(detail, 120)}); write it like scikit-learn==1.5.*"
    if re.search(r"(^|\s)-|\s#|\$\{|\\", text):
        # A requirements file (container builds) reads " -x" as an option, " #" as a comment and
        # expands ${VAR}; a marker's quoted text could smuggle them in.
        return "holds ' -', ' #', '${' or a backslash, which pip would read as options; remove them"
    if req.url is not None:
        # A URL (git+https://, a .whl, file:) installs whatever is there when pip runs: not pinned by the
        # manifest, not reviewable in the plan, and a place for credentials to leak. Indexes only.
        return ("is a URL requirement (name @ URL); mlops installs packages from an index only: publish it "
                "to one and set pip_index_url, then list it as name==version")
    return None


def index_url_problem(url: str) -> str | None:
    """Why an index URL is refused, or None: https (http only to this machine), no credentials."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "the URL holds spaces or control characters"
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    if "@" in host:
        return ("the URL holds credentials (they would show in plans); set them in pip's configuration "
                "or PIP_INDEX_URL on the machine instead")
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if scheme == "https" and host:
        return None
    if scheme == "http" and hostname in _LOOPBACK:
        return None
    return "use an https:// URL (http:// only for 127.0.0.1 or localhost)"


def _check_services(manifest: Manifest, checks: _Checks) -> None:
    """Provider-independent deploy rules: environment variable names that are safe to set."""
    for name, service in manifest.section("services").items():
        deploy = service.get("deploy")
        variables = deploy.get(ENVIRONMENT_VARIABLES) if isinstance(deploy, dict) else None
        if not isinstance(variables, dict):
            continue
        base = ("services", name, "deploy", ENVIRONMENT_VARIABLES)
        for var, value in variables.items():
            field_name = f"services.{name}.deploy.{ENVIRONMENT_VARIABLES}"
            problem = env_name_problem(var)
            if problem:
                checks.report((*base, var), f"{field_name}: {show(var)} {problem}", key=True)
            elif isinstance(value, str) and "\0" in value:
                checks.report((*base, var), f"{field_name}.{var}: the value holds a NUL character, which no "
                                            "environment variable can hold; remove it")


def _check_rollouts(manifest: Manifest, checks: _Checks) -> None:
    """Each ``rollout:`` block's relations (planner.rollout.spec), and whether its target can split traffic."""
    from .rollout.support import rollout_problems

    for where, message in rollout_problems(manifest):
        checks.report(where, message)


@cache   # a platform manifest repeats a few names thousands of times
def env_name_problem(name: str) -> str | None:
    """Why a variable name is refused, or None."""
    if not _ENV_NAME.match(name):
        return "is not a valid name (use letters, digits and _, not starting with a digit)"
    upper = name.upper()
    if upper.startswith("MLOPS_"):
        return "is reserved: names starting with MLOPS_ belong to mlops (service keys travel in them); rename it"
    if upper in _RUNTIME_NAMES:
        return f"is set by mlops from {_RUNTIME_NAMES[upper]}; remove it"
    if upper in _LOADER_NAMES or upper.startswith(_LOADER_PREFIXES):
        return ("steers the loader or the interpreter (like PATH, LD_PRELOAD, PYTHONPATH) and cannot be set; "
                "put code in source_dir and packages in the environment instead")
    return None


def _plain_path(value: Any) -> bool:
    """A path string the schema accepts (short, no control characters); others are reported there."""
    return isinstance(value, str) and 0 < len(value) <= MAX_PATH_CHARS and value.isprintable()


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (OSError, ValueError):
        return None


def _check_references(manifest: Manifest, checks: _Checks) -> None:
    """Service -> models/environment exist; every path exists inside the project folder."""
    report = checks.report
    root = manifest.root.resolve()
    models = manifest.section("models")
    environments = manifest.section("environments")

    resolved: dict[str, Path] = {}   # services share paths: resolve and stat each one once

    def inside(rel: str, where: tuple, field_name: str, *, kind: str) -> Path | None:
        if rel in resolved:
            return resolved[rel]
        try:
            p = (manifest.root / rel).resolve()
        except (OSError, ValueError, RuntimeError) as exc:
            report(where, f"{field_name}: {checks.shown(where, rel)} cannot be used ({_why(exc)})")
            return None
        if not p.is_relative_to(root):
            report(where, f"{field_name}: {checks.shown(where, rel)} is outside the project folder "
                          "(use a path inside the manifest's folder)")
            return None
        try:
            os.stat(p)
        except FileNotFoundError:
            report(where, f"{field_name}: {kind} {checks.shown(where, rel)} does not exist "
                          "(path is relative to the manifest)")
            return None
        except (OSError, ValueError) as exc:
            report(where, f"{field_name}: {checks.shown(where, rel)} cannot be used ({_why(exc)})")
            return None
        resolved[rel] = p
        return p

    def regular_tree(p: Path, rel: str, where: tuple, field_name: str, *, quiet: bool = False) -> bool:
        """Nothing but regular files and folders under ``p`` (and ``rel`` itself is not a link).

        ``quiet``: a problem was reported for this folder already (its entry script); say no more.
        """
        if rel not in linked:
            st = _lstat(manifest.root / rel)
            linked[rel] = st is not None and stat.S_ISLNK(st.st_mode)
        if linked[rel]:
            report(where, f"{field_name}: {checks.shown(where, rel)} is a symbolic link; mlops never follows links "
                          "in model and source folders (use the real path, or a copy)")
            return False
        if p not in walked:  # services often share one source folder: walk it once
            try:
                iter_files(p)
                walked[p] = None
            except UnsafeFile as exc:
                walked[p] = exc
        exc = walked[p]
        if exc is not None:
            if not quiet:
                what = "a file in it" if checks.secret(where) else show(_relative(exc.path, root), 120)
                report(where, f"{field_name}: {what} {exc.reason}")
            return False
        return True

    walked: dict[Path, UnsafeFile | None] = {}
    linked: dict[str, bool] = {}
    hashed: list[tuple[Path, str]] = []
    for name, model in models.items():
        rel = model.get("path")
        if _plain_path(rel):
            where, field_name = ("models", name, "path"), f"models.{name}.path"
            p = inside(rel, where, field_name, kind="file or folder")
            if p == root:
                report(where, f"{field_name}: {checks.shown(where, rel)} is the project folder itself (it holds "
                              "ml.yaml, the code and the registry); point at the model file or its own folder")
                continue
            if p is not None and regular_tree(p, rel, where, field_name):
                hashed.append((p, field_name))
    for name, service in manifest.section("services").items():
        base = ("services", name)
        refs = service.get("models")
        for i, ref in enumerate(refs if isinstance(refs, list) else []):
            if isinstance(ref, str) and ref not in models:
                known = ", ".join(sorted(models)) or "none declared"
                shown = checks.shown((*base, "models", i), ref)
                report((*base, "models", i), f"services.{name}.models: unknown model {shown} (models: {known})")
        env_name = service.get("environment")
        if isinstance(env_name, str) and env_name not in environments:
            known = ", ".join(sorted(environments)) or "none declared"
            shown = checks.shown((*base, "environment"), env_name)
            report((*base, "environment"),
                   f"services.{name}.environment: unknown environment {shown} (environments: {known})")
        source_dir = service.get("source_dir")
        if _plain_path(source_dir):
            field_name = f"services.{name}.source_dir"
            src = inside(source_dir, (*base, "source_dir"), field_name, kind="folder")
            if src is not None:
                if not src.is_dir():
                    shown = checks.shown((*base, "source_dir"), source_dir)
                    report((*base, "source_dir"), f"{field_name}: {shown} is not a folder")
                else:
                    entry_ok = _check_entry_script(service, src, name, checks)
                    if regular_tree(src, source_dir, (*base, "source_dir"), field_name, quiet=not entry_ok):
                        hashed.append((src, field_name))
        sample = service.get("sample_request")
        if _plain_path(sample):
            _check_sample_request(sample, (*base, "sample_request"), name, inside, checks)
    _check_registry(manifest, root, hashed, checks)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _check_entry_script(service: Mapping[str, Any], src: Path, name: str, checks: _Checks) -> bool:
    """The entry script: a regular file inside source_dir, not a link (it would run another file)."""
    entry = service.get("entry_script")
    if not _plain_path(entry):
        return True
    key = (src, entry)
    verdict = checks.entry_scripts.get(key)   # services share scripts: look once
    if verdict is None:
        verdict = checks.entry_scripts[key] = _entry_script_verdict(src, entry)
    kind, detail = verdict
    if not kind:
        return True
    where, field_name = ("services", name, "entry_script"), f"services.{name}.entry_script"
    report, shown = checks.report, checks.shown(where, entry)
    if kind == "unusable":
        report(where, f"{field_name}: {shown} cannot be used ({detail})")
        return False
    if kind == "outside":
        report(where, f"{field_name}: {shown} is outside source_dir (it is relative to source_dir)")
        return False
    if kind == "link":
        report(where, f"{field_name}: {shown} is a symbolic link; mlops runs only regular files "
                      "(replace the link with the script)")
        return False
    secret = checks.secret(("services", name, "source_dir"))
    folder = "source_dir" if secret else one_line(service["source_dir"], 120)
    report(where, f"{field_name}: {shown} not found in {folder} (it is relative to source_dir)")
    return True


def _entry_script_verdict(src: Path, entry: str) -> tuple[str, str]:
    """What is wrong with ``entry`` in ``src``: ("", "") nothing, else unusable/outside/link/missing."""
    target = src / entry
    try:
        resolved = target.resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        return "unusable", _why(exc)
    try:
        st: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as exc:
        return "unusable", _why(exc)
    if Path(entry).is_absolute() or not resolved.is_relative_to(src):
        return "outside", ""
    if st is not None and stat.S_ISLNK(st.st_mode):
        return "link", ""
    if st is None or not stat.S_ISREG(st.st_mode):
        return "missing", ""
    return "", ""


def _check_sample_request(sample: str, where: tuple, name: str, inside: Callable[..., Path | None],
                          checks: _Checks) -> None:
    field_name = f"services.{name}.sample_request"
    path = inside(sample, where, field_name, kind="file")
    if path is None:
        return
    if path not in checks.samples:
        checks.samples[path] = sample_problem(path)
    problem = checks.samples[path]
    if problem:
        checks.report(where, f"{field_name}: {checks.shown(where, sample)} {problem}")


def sample_problem(path: Path) -> str | None:
    """Why a sample request file cannot be sent, or None: a regular file of bounded, valid JSON."""
    try:
        raw = read_regular(path, MAX_SAMPLE_BYTES)
    except (OSError, ValueError) as exc:
        return f"cannot be read ({_why(exc)}); it must be a regular file"
    if raw is None:
        return f"is over {MAX_SAMPLE_BYTES // (1024 * 1024)} MiB, more than a service accepts"
    try:
        json.loads(raw.decode("utf-8"))
    except RecursionError:
        return "is not valid JSON (nested too deeply)"
    except UnicodeDecodeError as exc:
        return f"is not valid JSON (invalid UTF-8 at byte {exc.start})"
    except ValueError as exc:
        return f"is not valid JSON ({one_line(str(exc), 120)})"
    return None


def _check_registry(manifest: Manifest, root: Path, hashed: list[tuple[Path, str]], checks: _Checks) -> None:
    """registry.path stays inside the manifest's folder and out of what is hashed (or plans never settle)."""
    registry = manifest.data.get("registry")
    rel = registry.get("path") if isinstance(registry, dict) else None
    if rel is None and not (isinstance(registry, dict) and "path" in registry):
        rel, where, name = ".mlops", (), "the registry folder .mlops"  # a committed link counts too
    elif _plain_path(rel):
        where, name = ("registry", "path"), "registry.path"
    else:
        return  # reported by the schema
    report, shown = checks.report, checks.shown(where, rel) if where else "'.mlops'"
    try:
        state = (manifest.root / rel).resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        report(where, f"{name}: {shown} cannot be used ({_why(exc)})")
        return
    if state == root or not state.is_relative_to(root):
        fix = "use a folder inside it, such as .mlops" if where else "remove the link (mlops creates the folder)"
        report(where, f"{name}: {shown} is outside the manifest's folder (plan writes there); {fix}")
        return
    if state.exists() and not state.is_dir():
        report(where, f"{name}: {shown} is a file, not a folder (mlops keeps its registry there); remove the file "
                      "or name another path, such as .mlops")
        return
    inside: dict[Path, bool] = {}   # thousands of services share a few folders: decide each once
    for folder, field_name in hashed:
        if folder not in inside:
            inside[folder] = False
            if state.is_relative_to(folder) and folder.is_dir():
                first = state.relative_to(folder).parts[:1]
                inside[folder] = not first or first[0] not in SKIP_DIRS
        if inside[folder]:
            report(where, f"{name}: {shown} is inside {field_name}, which is hashed: every plan "
                          "would change it; use a folder outside it, such as .mlops")
