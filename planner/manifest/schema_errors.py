"""The manifest against JSON Schemas, one worded line per error (the shipped schema here; providers' in ``targets``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..schemacheck import SchemaCheck
from ..yamlpos import one_line
from .interpolation import Checks
from .wording import show

if TYPE_CHECKING:
    import jsonschema


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema that ships with the package (also usable by editors)."""
    return json.loads(resources.files("planner").joinpath("schema/ml.schema.json").read_text())


def check_schema(data: dict, checks: Checks) -> None:
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
            report_schema_error(error, checks, root=full)
        return
    outline = {**full, "properties": {**full["properties"],
                                      "services": {**full["properties"]["services"], "additionalProperties": True}}}
    for error in SchemaCheck(outline).errors(data):
        report_schema_error(error, checks, root=outline)
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
            report_schema_error(error, checks, ("services", name), root=entry_schema)


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


def report_schema_error(error: jsonschema.ValidationError, checks: Checks, prefix: tuple = (),
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
