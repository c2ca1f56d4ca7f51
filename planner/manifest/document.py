"""The validated manifest as the rest of mlops reads it: plain data plus where it came from."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..envrefs import EnvReferences
from ..yamlpos import Positions

DEFAULT_TARGET = "local"
DEFAULT_KIND = "local"
"""The one target of a manifest that declares none: ``local: {provider: local}``."""


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
        return display_path(self.path)

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


def display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
