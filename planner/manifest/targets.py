"""Targets and each service's place on one: the provider's own schemas, naming rule and shared ports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import MlopsError
from ..schemacheck import SchemaCheck
from ..yamlpos import one_line
from .document import Manifest
from .interpolation import Checks
from .schema_errors import report_schema_error


def check_targets_and_deploy(manifest: Manifest, checks: Checks) -> None:
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
            report_schema_error(error, checks, ("targets", name), root=target_schema)
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
            report_schema_error(error, checks, ("services", name, "deploy"), root=deploy_schema)
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
