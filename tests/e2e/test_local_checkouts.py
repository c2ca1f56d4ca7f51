"""Two checkouts of one project on one machine share its local services (providers/userdata.py),
while each keeps its own source snapshots: a service started from checkout A keeps running, from
A's snapshot, when checkout B applies a change to another service (and B's apply prunes only B's
snapshots)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import git
import pytest
from support import make_project, run_cli

pytestmark = pytest.mark.slow

MANIFEST = """\
version: 1
project: twoapps
models:
  m: {path: model.txt}
  n: {path: other.txt}
environments:
  e: {python: "3.11"}
services:
  api-a: {models: [m], environment: e, source_dir: src, entry_script: score.py, sample_request: sample.json}
  api-b: {models: [n], environment: e, source_dir: src, entry_script: score.py, sample_request: sample.json}
"""

SCORE = '''\
import json, os

def init():
    global prefix
    prefix = open(os.path.join(os.environ["AZUREML_MODEL_DIR"], os.listdir(os.environ["AZUREML_MODEL_DIR"])[0])).read()

def run(raw_data):
    return {"model": prefix.strip(), "cwd": os.getcwd()}
'''


def _cli(root: Path, *args: str):
    return run_cli(*args, "-f", str(root / "ml.yaml"))


def _services(root: Path) -> dict[str, dict]:
    result = _cli(root, "status", "--json")
    assert result.code == 0, result.err
    return {r["service"]: r for r in json.loads(result.out)["services"]}


def _answer(root: Path, service: str) -> dict:
    result = _cli(root, "call", service)
    assert result.code == 0, result.out + result.err
    return json.loads(result.out)


def test_a_service_started_from_one_checkout_keeps_running_when_another_applies(tmp_path: Path):
    a = tmp_path / "a"
    make_project(a, MANIFEST, score=SCORE, model="m1\n")
    (a / "other.txt").write_text("n1\n")
    repo_a = git.Repo(a)
    repo_a.git.add(A=True)
    repo_a.index.commit("second model")
    repo_a.git.branch("-M", "main")
    b = tmp_path / "b"
    git.Repo.clone_from(a, b)
    try:
        assert _cli(a, "apply", "--auto-approve").code == 0
        before = _services(a)
        from_a = _answer(a, "api-a")
        assert from_a["model"] == "m1" and from_a["cwd"].startswith(str(a / ".mlops" / "sources"))
        assert _cli(b, "plan", "--detailed-exitcode").code == 0

        (b / "other.txt").write_text("n2\n")
        repo_b = git.Repo(b)
        repo_b.git.add(A=True)
        repo_b.index.commit("new bytes for api-b's model")
        result = _cli(b, "apply", "--auto-approve")
        assert result.code == 0, result.err
        after = _services(b)
        assert after["api-a"]["endpoint"] == before["api-a"]["endpoint"]
        assert _answer(b, "api-a") == from_a, "api-a still runs from A's snapshot"
        assert _answer(a, "api-b")["cwd"].startswith(str(b / ".mlops" / "sources"))
        assert Path(from_a["cwd"]).is_dir() and os.listdir(from_a["cwd"])
        repo_a.git.pull(str(b), "main")
        assert _cli(a, "plan", "--detailed-exitcode").code == 0
    finally:
        destroyed = _cli(a, "destroy", "--auto-approve")
    assert destroyed.code == 0, destroyed.out + destroyed.err
    assert _services(b)["api-a"]["state"] == "NotDeployed"
