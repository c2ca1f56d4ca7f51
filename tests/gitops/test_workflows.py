"""Offline lint of the shipped workflows and the composite action, so a broken one cannot land.

Three layers: the SchemaStore schemas for workflows and actions (vendored by `check-jsonschema`,
no network), checks of our own that a schema cannot express (every expression names a declared
input or an earlier step's output, every script parses with `bash -n`, actions are pinned), and
`actionlint` too when it is on PATH.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted([*(ROOT / ".github" / "workflows").glob("*.yml"), *(ROOT / "examples" / "github").glob("*.yml")])
ACTION = ROOT / ".github" / "actions" / "mlops" / "action.yml"
_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if True in data:  # YAML 1.1 reads the key `on` as a boolean; GitHub reads YAML 1.2
        data["on"] = data.pop(True)
    return data


def schema(name: str) -> dict[str, Any]:
    """A SchemaStore schema as vendored by check-jsonschema (a test dependency)."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath(name).read_text())


def schema_errors(data: dict[str, Any], name: str) -> list[str]:
    validator = jsonschema.Draft7Validator(schema(name))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


def test_there_is_something_to_lint():
    names = {p.name for p in WORKFLOWS}
    assert {"ci.yml", "mlops.yml"} <= names and ACTION.exists()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_schema(path: Path):
    assert schema_errors(load(path), "github-workflows.json") == []


def test_action_matches_the_schema():
    assert schema_errors(load(ACTION), "github-actions.json") == []


def test_the_schema_check_can_fail():
    broken = load(ROOT / ".github" / "workflows" / "ci.yml")
    broken["jobs"]["test"]["steps"] = {"run": "bash .ci/run"}   # a mapping where a list belongs
    del broken["jobs"]["test"]["runs-on"]
    assert schema_errors(broken, "github-workflows.json")


def test_action_expressions_name_declared_inputs_and_earlier_outputs():
    action = load(ACTION)
    inputs = set(action["inputs"])
    written: dict[str, set[str]] = {}
    for step in action["runs"]["steps"]:
        text = yaml.safe_dump(step)
        for expr in _EXPR.findall(text):
            for name in re.findall(r"\binputs\.([\w-]+)", expr):
                assert name in inputs, f"step {step.get('name')!r} uses undeclared input {name!r}"
            for sid, key in re.findall(r"\bsteps\.([\w-]+)\.outputs\.([\w-]+)", expr):
                assert key in written.get(sid, set()), f"step {step.get('name')!r} reads {sid}.{key} before it is set"
        if "run" in step:
            assert step.get("shell") == "bash", f"composite run steps need a shell: {step.get('name')!r}"
            if step.get("id"):
                written[step["id"]] = set(re.findall(r'echo "([\w-]+)=', step["run"]))
    for name, out in action["outputs"].items():
        for sid, key in re.findall(r"\bsteps\.([\w-]+)\.outputs\.([\w-]+)", out["value"]):
            assert key in written.get(sid, set()), f"output {name} reads {sid}.{key}, which no step sets"


def _scripts() -> list[tuple[str, str]]:
    found = []
    for path in [*WORKFLOWS, ACTION]:
        data = load(path)
        steps = data.get("runs", {}).get("steps", []) + [s for job in (data.get("jobs") or {}).values()
                                                          for s in job.get("steps", [])]
        found += [(f"{path.name}: {s.get('name', s['run'][:30])}", s["run"]) for s in steps if "run" in s]
    return found


@pytest.mark.parametrize("name,script", _scripts(), ids=[n for n, _ in _scripts()])
def test_every_script_parses(name: str, script: str):
    plain = _EXPR.sub("EXPR", script)
    result = subprocess.run(["bash", "-n", "-c", plain], capture_output=True, text=True)
    assert result.returncode == 0, f"{name}: {result.stderr}"


def test_actions_are_pinned_and_jobs_have_least_privilege():
    for path in [*WORKFLOWS, ACTION]:
        for ref in re.findall(r"uses:\s*(\S+)", path.read_text()):
            assert ref.startswith("./") or "@" in ref, f"{path.name}: {ref} is not pinned to a version"
    example = load(ROOT / "examples" / "github" / "mlops.yml")
    assert example["permissions"] == {"contents": "read", "pull-requests": "write", "actions": "read"}
    assert "concurrency" in example
    ci = load(ROOT / ".github" / "workflows" / "ci.yml")
    assert any(s.get("run") == "bash .ci/run" for s in ci["jobs"]["test"]["steps"])


@pytest.mark.skipif(shutil.which("actionlint") is None, reason="actionlint is not installed")
def test_actionlint():
    result = subprocess.run(["actionlint", *map(str, WORKFLOWS)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
