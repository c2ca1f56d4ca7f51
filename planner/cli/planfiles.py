"""Reading a saved plan file: one clear line for every way it can be wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import MlopsError
from ..plan import Plan
from ..project import Project


def read_plan_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise MlopsError(f"{path}: cannot read plan file: {exc.strerror}") from None
    except ValueError as exc:
        raise MlopsError(f"{path}: not a plan file (invalid JSON: {exc})") from None
    if not isinstance(data, dict) or "resource_changes" not in data:
        raise MlopsError(f"{path}: not a plan file (make one with `mlops plan -o FILE`)")
    return data


def load_plan(path: Path, project: Project) -> Plan:
    plan = Plan.from_json(read_plan_json(path))
    if plan.project != project.manifest.project:
        raise MlopsError(f"{path}: this plan is for project {plan.project!r}, the manifest declares "
                         f"{project.manifest.project!r}")
    return plan
