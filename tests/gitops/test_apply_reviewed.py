"""`mlops apply --reviewed PLANFILE`: exactly what was reviewed, or a fresh plan and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import make_project, memory_manifest, run_cli

MANIFEST = memory_manifest("shop")


@pytest.fixture(autouse=True)
def _memory(memory_target):
    yield


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = make_project(tmp_path / "repo", MANIFEST)
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    return path


def test_the_reviewed_plan_is_applied_as_is(manifest: Path, tmp_path: Path):
    manifest.write_text(MANIFEST.replace("port: 8001", "port: 8011"))
    saved = tmp_path / "plan.json"
    assert run_cli("plan", "-o", str(saved), "-f", str(manifest)).code == 0
    result = run_cli("apply", "--reviewed", str(saved), "-f", str(manifest))
    assert result.code == 0, result.err
    assert result.out.startswith(f"Applying the reviewed plan {saved}: everything it touches is unchanged")
    assert "Apply complete! Resources: 1 added, 0 changed, 1 destroyed." in result.out


def test_changes_the_review_did_not_show_cause_a_new_plan(manifest: Path, tmp_path: Path):
    manifest.write_text(MANIFEST.replace("port: 8001", "port: 8011").replace("port: 8002", "port: 8012"))
    saved = tmp_path / "plan.json"
    assert run_cli("plan", "-o", str(saved), "--target", "service.one-api", "-f", str(manifest)).code == 0
    result = run_cli("apply", "--reviewed", str(saved), "--auto-approve", "-f", str(manifest))
    assert result.code == 0, result.err
    assert "needs changes the reviewed plan" in result.out and "(service.two-api)" in result.out
    assert "Apply complete! Resources: 2 added, 0 changed, 2 destroyed." in result.out
    assert run_cli("plan", "--detailed-exitcode", "-f", str(manifest)).code == 0


def test_a_missing_reviewed_plan_plans_again_but_still_asks(manifest: Path, tmp_path: Path):
    manifest.write_text(MANIFEST.replace("port: 8001", "port: 8011"))
    refused = run_cli("apply", "--reviewed", str(tmp_path / "none.json"), "-f", str(manifest))
    assert refused.code == 1 and "--auto-approve" in refused.err
    assert "No reviewed plan was found" in refused.out


def test_job_summary_is_written_in_actions(manifest: Path, tmp_path: Path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    manifest.write_text(MANIFEST.replace("port: 8001", "port: 8011"))
    assert run_cli("apply", "--auto-approve", "-f", str(manifest)).code == 0
    text = summary.read_text()
    assert text.startswith("### :white_check_mark: mlops apply for")
    assert "| `service.one-api` | create-then-delete | done in" in text
    assert "| `one-api` | mem | Healthy | memory://one-api |" in text
    assert "| `two-api` | mem | Healthy | memory://two-api |" in text
