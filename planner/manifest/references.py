"""Cross-references: every model and environment a service names is declared."""

from __future__ import annotations

from .document import Manifest
from .interpolation import Checks


def check_references(manifest: Manifest, checks: Checks) -> None:
    """Service -> models/environment exist (the names' shapes are the schema's)."""
    report = checks.report
    models = manifest.section("models")
    environments = manifest.section("environments")
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
