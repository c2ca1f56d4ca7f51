"""`mlops graph`: golden DOT and Mermaid drawings of the example manifests, the planned action on
each node, and the part of the graph a pull-request comment shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import ROOT, check_golden, make_project, run_cli

from planner.graph_render import changed_part, mermaid_of_changes, plan_graph
from planner.plan import Action

EXAMPLES = ["ml.yaml.example", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*/ml.yaml"))]
SECRET = "HostName=hub.example;SharedAccessKeyName=owner;SharedAccessKey=c2VjcmV0LWtleS12YWx1ZQ=="


@pytest.fixture(autouse=True)
def _example_environment(monkeypatch):
    """The examples take their cloud settings from the environment; a secret among them must not show."""
    for name, value in {"AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
                        "ACR_LOGIN_SERVER": "127.0.0.1:5000", "AZURE_ARM_ENDPOINT": "https://127.0.0.1:1",
                        "IOTHUB_CONNECTION_STRING": SECRET, "IOTEDGE_REGISTRY": "127.0.0.1:5000",
                        "MLOPS_TEST_REGISTRY": "127.0.0.1:5000"}.items():
        monkeypatch.setenv(name, value)


def golden_name(example: str, fmt: str) -> str:
    stem = "example" if example == "ml.yaml.example" else Path(example).parent.name
    return f"graph/{stem}.{'dot' if fmt == 'dot' else 'mmd'}"


@pytest.mark.parametrize("fmt", ["dot", "mermaid"])
@pytest.mark.parametrize("example", EXAMPLES)
def test_example_graphs_match_their_golden_files(example: str, fmt: str):
    result = run_cli("graph", "--format", fmt, "-f", str(ROOT / example))
    assert result.code == 0, result.err
    assert SECRET not in result.out and "SharedAccessKey" not in result.out
    check_golden(golden_name(example, fmt), result.out)


MANIFEST = """\
version: 1
project: demo
targets:
  mem: {provider: memory}
  other: {provider: memory}
models:
  m: {path: model.txt}
  unused: {path: model.txt}
environments:
  e: {python: "3.11"}
services:
  one-api: {models: [m], environment: e, source_dir: src, entry_script: score.py, target: mem,
            deploy: {port: 8001, primary_key: "${KEY_ONE}"}}
  two-api: {models: [m, unused], environment: e, source_dir: src, entry_script: score.py, target: other,
            deploy: {port: 8002}}
"""


def test_a_saved_plan_marks_each_node_and_adds_what_only_the_plan_knows(tmp_path: Path, memory_target,
                                                                         monkeypatch):
    monkeypatch.setenv("KEY_ONE", "one-secret-key-value-123")
    manifest = make_project(tmp_path, MANIFEST)
    assert run_cli("apply", "--auto-approve", "-f", str(manifest)).code == 0
    text = manifest.read_text()
    # two-api leaves the manifest (so it is deleted) and one-api changes in place.
    manifest.write_text(text[:text.index("  two-api:")].replace("port: 8001", "port: 8001, replicas: 2"))
    planfile = tmp_path / "plan.json"
    assert run_cli("plan", "-o", str(planfile), "-f", str(manifest)).code == 0
    result = run_cli("graph", "--format", "mermaid", "--plan", str(planfile), "-f", str(manifest))
    assert result.code == 0, result.err
    assert "one-secret-key-value-123" not in result.out and "sensitive" not in result.out
    check_golden("graph/plan-saved.mmd", result.out)
    dot = run_cli("graph", "--planned", "-f", str(manifest))
    assert dot.code == 0, dot.err
    check_golden("graph/plan-computed.dot", dot.out)
    changes = run_cli("graph", "--format", "mermaid", "--planned", "--changes-only", "-f", str(manifest))
    assert "unused" in changes.out            # a neighbour of the deleted service
    assert "target other" in changes.out      # where the deleted service ran


def test_the_comment_graph_is_empty_without_changes_and_holds_only_changes_and_neighbours(tmp_path: Path,
                                                                                        memory_target):
    from planner.planning import make_plan
    from planner.project import Project

    manifest = make_project(tmp_path, MANIFEST.replace('"${KEY_ONE}"', "k-123456789012"))
    plan = make_plan(Project.load(manifest))
    assert {str(k) for k in plan_graph(plan).changed} == {"model.m", "model.unused", "environment.e",
                                                         "service.one-api", "service.two-api"}
    assert run_cli("apply", "--auto-approve", "-f", str(manifest)).code == 0
    plan = make_plan(Project.load(manifest))
    assert not plan.has_changes and mermaid_of_changes(plan) == ""
    manifest.write_text(manifest.read_text().replace("port: 8002}", "port: 8002, replicas: 3}"))
    plan = make_plan(Project.load(manifest))
    part = changed_part(plan_graph(plan))
    assert {str(k): a for k, a in part.nodes.items()} == {
        "model.m": Action.NOOP, "model.unused": Action.NOOP, "environment.e": Action.NOOP,
        "service.two-api": Action.UPDATE, "target.other": None}
    section = mermaid_of_changes(plan)
    assert "```mermaid" in section and "one-api" not in section and "k-123456789012" not in section


def test_graph_of_a_bad_manifest_is_one_line_per_problem(tmp_path: Path):
    manifest = make_project(tmp_path, MANIFEST.replace("environment: e, source_dir: src, entry_script: score.py, "
                                                       "target: mem", "environment: nope, source_dir: src, "
                                                       "entry_script: score.py, target: mem"))
    result = run_cli("graph", "-f", str(manifest))
    assert result.code == 1 and "Traceback" not in result.err
    assert "services.one-api.environment: unknown environment 'nope'" in result.err


def test_a_plan_file_for_another_project_is_refused(tmp_path: Path, memory_target):
    manifest = make_project(tmp_path, MANIFEST.replace('"${KEY_ONE}"', "k-123456789012"))
    planfile = tmp_path / "plan.json"
    assert run_cli("plan", "-o", str(planfile), "-f", str(manifest)).code == 0
    data = json.loads(planfile.read_text())
    data["project"] = "elsewhere"
    planfile.write_text(json.dumps(data))
    result = run_cli("graph", "--plan", str(planfile), "-f", str(manifest))
    assert result.code == 1 and "this plan is for project 'elsewhere'" in result.err
