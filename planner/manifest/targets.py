"""Targets and each service's place on one: the kind's schemas, naming rule and shared ports (``Provider.schema``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import MlopsError
from ..schemacheck import SchemaCheck
from ..yamlpos import one_line
from .document import Manifest
from .interpolation import Checks
from .schema_errors import report_schema_error

if TYPE_CHECKING:
    from providers.base import KindSchema


def check_targets_and_deploy(manifest: Manifest, checks: Checks) -> None:
    """Each target's and each service's deploy settings against the provider's own schema."""
    from providers.registry import available

    report = checks.report
    kinds = available()
    schemas: dict[str, KindSchema] = {}
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
            schema = kinds[kind].variant(config).schema()
        except MlopsError as exc:  # a broken plugin fails where its kind is used, on one line
            report(("targets", name, "provider"), f"targets.{name}.provider: {exc}")
            continue
        errors = SchemaCheck(schema.target).errors(config)
        for error in errors:
            report_schema_error(error, checks, ("targets", name), root=schema.target)
        if not errors:
            schemas[name] = schema
    ports: dict[tuple[str, int], str] = {}
    validators: dict[str, SchemaCheck] = {}
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
        if target not in schemas:
            continue
        schema = schemas[target]
        name_problem = _ask(schema.service_name_problem, name)
        if name_problem:
            report(("services", name), f"services.{one_line(name, 60)}: {one_line(str(name_problem), 200)}",
                   key=True)
        deploy = service.get("deploy") or {}
        if not isinstance(deploy, dict):
            continue
        if target not in validators:  # one per target: a big manifest has many services, few targets
            validators[target] = SchemaCheck(schema.deploy)
        errors = validators[target].errors(deploy)
        for error in errors:
            report_schema_error(error, checks, ("services", name, "deploy"), root=schema.deploy)
        port = deploy.get("port")
        if isinstance(port, int) and not isinstance(port, bool) and not any(e.path and e.path[0] == "port"
                                                                              for e in errors):
            scope = _ask(schema.port_scope, manifest.targets[target])
            scope = scope if isinstance(scope, str) and scope else None
            other = ports.setdefault((scope, port), name) if scope else name
            if other != name:
                report(("services", name, "deploy", "port"),
                       f"services.{name}.deploy.port: port {port} is already taken by services.{other} "
                       f"(both bind {one_line(str(scope), 60)}); choose another port or `auto`")


def _ask(rule: Callable[[Any], Any], value: Any) -> Any:
    """A kind's own rule (``KindSchema.port_scope``, ``service_name_problem``) on one value; None when it
    fails: a plugin's rule must not turn validate into a traceback."""
    try:
        return rule(value)
    except Exception:  # noqa: BLE001
        return None
