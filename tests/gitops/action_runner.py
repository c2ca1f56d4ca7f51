"""Runs the composite action's `run:` steps the way GitHub Actions does, for tests.

It reads .github/actions/mlops/action.yml, evaluates the few expression forms the action uses
(``${{ inputs.x }}``, ``${{ github.a.b }}``, ``${{ steps.id.outputs.k }}``, ``${{ runner.temp }}``
and ``if: steps.id.outputs.k == 'v'``; anything else fails loudly, so the action cannot quietly
outgrow this runner), and runs each script with ``bash --noprofile --norc -eo pipefail`` in the
step's working directory with the step's ``env`` plus the ``GITHUB_*`` variables Actions sets,
collecting ``$GITHUB_OUTPUT``. ``uses:`` steps are emulated by the caller (``uses`` callback):
setup-python is a no-op (the test's Python runs mlops), upload-artifact stores into the double.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ACTION = ROOT / ".github" / "actions" / "mlops" / "action.yml"
_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass
class StepRun:
    name: str
    code: int
    out: str
    err: str


@dataclass
class ActionRun:
    steps: list[StepRun] = field(default_factory=list)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def log(self) -> str:
        return "\n".join(f"## {s.name}\n{s.out}{s.err}" for s in self.steps)


def run_action(*, inputs: Mapping[str, str], github: Mapping[str, Any], env: Mapping[str, str], cwd: Path,
               temp: Path, uses: Callable[[str, Mapping[str, str]], None],
               skip: frozenset[str] | set[str] = frozenset()) -> ActionRun:
    """Run the action's steps in order; steps named in ``skip`` must exist (the test replaces them)."""
    spec = yaml.safe_load(ACTION.read_text())
    values = {name: str(v.get("default", "")) for name, v in spec["inputs"].items()}
    run = ActionRun()
    context = {"github": github, "runner": {"temp": str(temp)}}
    for name, value in values.items():
        values[name] = _render(value, {**context, "inputs": {}, "steps": run.outputs})
    values.update(inputs)
    names = {step.get("name") for step in spec["runs"]["steps"]}
    assert set(skip) <= names, f"no such steps to skip: {set(skip) - names}"
    for step in spec["runs"]["steps"]:
        if step.get("name") in skip:
            continue
        scope = {**context, "inputs": values, "steps": run.outputs}
        condition = step.get("if")
        if condition and not _condition(condition, scope):
            continue
        if "uses" in step:
            uses(step["uses"], {k: _render(str(v), scope) for k, v in (step.get("with") or {}).items()})
            continue
        output = temp / f"output-{len(run.steps)}"
        output.write_text("")
        step_env = {**env, **{k: _render(str(v), scope) for k, v in (step.get("env") or {}).items()},
                    "GITHUB_OUTPUT": str(output), "RUNNER_TEMP": str(temp)}
        workdir = cwd / _render(step.get("working-directory", "."), scope)
        assert step["shell"] == "bash", step
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", _render(step["run"], scope)],
                              cwd=workdir, env=step_env, capture_output=True, text=True, timeout=300)
        run.steps.append(StepRun(step.get("name", step.get("id", "?")), proc.returncode, proc.stdout, proc.stderr))
        if step.get("id"):
            run.outputs[step["id"]] = {"outputs": _outputs(output.read_text())}
        if proc.returncode != 0:
            break
    return run


def _render(text: str, scope: Mapping[str, Any]) -> str:
    return _EXPR.sub(lambda m: _lookup(m[1], scope), text)


def _lookup(expr: str, scope: Mapping[str, Any]) -> str:
    if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[\w-]+)*", expr):
        raise AssertionError(f"action_runner does not evaluate the expression {expr!r}")
    value: Any = scope
    for part in expr.split("."):
        value = value.get(part, "") if isinstance(value, Mapping) else ""
    return "" if value is None else str(value)


def _condition(expr: str, scope: Mapping[str, Any]) -> bool:
    match = re.fullmatch(r"\s*([\w.-]+)\s*==\s*'([^']*)'\s*", expr)
    if not match:
        raise AssertionError(f"action_runner does not evaluate the condition {expr!r}")
    return _lookup(match[1], scope) == match[2]


def _outputs(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out
