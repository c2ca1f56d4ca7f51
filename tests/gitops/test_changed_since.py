"""`mlops plan --changed-since REF`: why each resource is in the plan, from git; and the plan formats."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest
from support import make_project, run_cli

from planner.manifest import load_manifest
from planner.provenance import changed_since

MANIFEST = """\
version: 1
project: shop
targets:
  mem: {provider: memory}
models:
  m: {path: model.txt}
  other: {path: other-model}
environments:
  e: {python: "3.11"}
services:
  shop-api: {models: [m], environment: e, source_dir: src, entry_script: score.py, deploy: {port: 8001}}
  batch-api: {models: [other], environment: e, source_dir: batch, entry_script: score.py,
              deploy: {port: 8002, primary_key: "${SHOP_KEY}"}}
"""


@pytest.fixture(autouse=True)
def memory_provider(monkeypatch, memory_target):
    monkeypatch.setenv("SHOP_KEY", "super-secret-key-value-1")


@pytest.fixture
def repo(tmp_path: Path) -> git.Repo:
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    (tmp_path / "other-model").mkdir()
    (tmp_path / "other-model" / "weights.bin").write_text("w1")
    make_project(tmp_path, MANIFEST)
    r = git.Repo(tmp_path)
    r.git.branch("-M", "main")
    r.git.checkout("-b", "change")
    return r


def commit(repo: git.Repo, message: str) -> None:
    repo.git.add(A=True)
    repo.index.commit(message)


def reasons(repo: git.Repo, ref: str = "main") -> dict[str, tuple[str, ...]]:
    return dict(changed_since(load_manifest(Path(repo.working_tree_dir) / "ml.yaml"), ref).reasons)


def test_source_and_model_files_explain_their_resources(repo: git.Repo):
    root = Path(repo.working_tree_dir)
    (root / "src" / "score.py").write_text("# v2\n")
    (root / "other-model" / "weights.bin").write_text("w2")
    (root / "other-model" / "extra.bin").write_text("e")
    commit(repo, "edits")
    assert reasons(repo) == {
        "model.other": ("`other-model/extra.bin` added, `other-model/weights.bin` changed: new version",),
        "service.batch-api": ("model `other` changed",),
        "service.shop-api": ("`src/score.py` changed",),
    }


def test_manifest_entries_name_what_changed_but_never_values(repo: git.Repo, monkeypatch):
    monkeypatch.setenv("OTHER_KEY", "another-secret-value-2")
    root = Path(repo.working_tree_dir)
    text = MANIFEST.replace("port: 8001", "port: 8011").replace('e: {python: "3.11"}', 'e: {python: "3.12"}')
    (root / "ml.yaml").write_text(text.replace("${SHOP_KEY}", "${OTHER_KEY}"))
    commit(repo, "manifest")
    got = reasons(repo)
    assert got["service.shop-api"] == ("its entry in ml.yaml changed (deploy.port)", "environment `e` changed")
    assert got["service.batch-api"] == ("its entry in ml.yaml changed (deploy.primary_key)", "environment `e` changed")
    assert got["environment.e"] == ("its entry in ml.yaml changed (python)",)
    assert "OTHER_KEY" not in json.dumps(got)


def test_uncommitted_and_untracked_edits_count(repo: git.Repo):
    root = Path(repo.working_tree_dir)
    (root / "src" / "helper.py").write_text("X = 1\n")
    assert reasons(repo) == {"service.shop-api": ("`src/helper.py` added",)}


def test_added_and_removed_entries(repo: git.Repo):
    root = Path(repo.working_tree_dir)
    text = MANIFEST.split("  batch-api:")[0].replace("  other: {path: other-model}\n", "")
    (root / "ml.yaml").write_text(text + "  new-api: {models: [m], environment: e, source_dir: src, "
                                  "entry_script: score.py}\n")
    commit(repo, "swap")
    got = reasons(repo)
    assert got["service.batch-api"] == ("removed from ml.yaml",)
    assert got["model.other"] == ("removed from ml.yaml",)
    assert got["service.new-api"] == ("added to ml.yaml",)


def test_unknown_ref_is_a_clear_error(repo: git.Repo):
    result = run_cli("plan", "--changed-since", "origin/nope", "-f", str(Path(repo.working_tree_dir) / "ml.yaml"))
    assert result.code == 1
    assert result.err.startswith("Error: --changed-since origin/nope: no such revision")
    assert "fetch-depth: 0" in result.err


def test_plan_formats_and_changed_since_through_the_cli(repo: git.Repo, tmp_path: Path):
    manifest = str(Path(repo.working_tree_dir) / "ml.yaml")
    (Path(repo.working_tree_dir) / "src" / "score.py").write_text("# v2\n")
    commit(repo, "score")
    text = run_cli("plan", "--changed-since", "main", "-f", manifest)
    assert "Changes since main (merge base " in text.out and "service.shop-api: src/score.py changed" in text.out
    assert "super-secret" not in text.out
    as_json = run_cli("plan", "--json", "--changed-since", "main", "-f", manifest)
    same = run_cli("plan", "--format", "json", "--changed-since", "main", "-f", manifest)
    assert as_json.out == same.out
    data = json.loads(as_json.out)
    assert data["changed_since"]["resources"]["service.shop-api"] == ["`src/score.py` changed"]
    md = run_cli("plan", "--format", "markdown", "--changed-since", "main", "--detailed-exitcode", "-f", manifest)
    assert md.code == 2
    assert md.out.startswith("<!-- mlops:plan manifest=ml.yaml part=1 -->")
    assert "- `service.shop-api`: `src/score.py` changed" in md.out
    assert "super-secret" not in md.out and "(sensitive)" in md.out
    saved = tmp_path / "plan.json"
    assert run_cli("plan", "--format", "markdown", "-o", str(saved), "-f", manifest).code == 0
    assert json.loads(saved.read_text())["resource_changes"]
