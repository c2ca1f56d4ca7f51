"""Manifest validation: golden `file:line:col: message` output for valid and invalid manifests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import GOLDEN, check_golden, make_project, run_cli

from planner.manifest import load_manifest

CASES = sorted(p.stem for p in (GOLDEN / "manifests").glob("*.yaml"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_project(tmp_path, "version: 1\nproject: demo\n")
    return tmp_path


@pytest.mark.parametrize("case", CASES)
def test_validate_golden(case: str, project: Path, monkeypatch):
    monkeypatch.delenv("MLOPS_TEST_UNSET_KEY", raising=False)
    shutil.copy(GOLDEN / "manifests" / f"{case}.yaml", project / "ml.yaml")
    result = run_cli("validate", cwd=project)
    check_golden(f"manifests/{case}.txt", f"exit {result.code}\n{result.out}{result.err}")


def test_all_errors_are_one_line_with_position(project: Path, monkeypatch):
    monkeypatch.delenv("MLOPS_TEST_UNSET_KEY", raising=False)
    shutil.copy(GOLDEN / "manifests" / "many-errors.yaml", project / "ml.yaml")
    result = run_cli("validate", cwd=project)
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) > 10
    for line in lines[:-1]:
        file, row, col, message = line.split(":", 3)
        assert file == "ml.yaml" and row.isdigit() and col.isdigit() and message.strip()


def test_interpolation_reads_environment_and_keeps_secret(project: Path, monkeypatch):
    monkeypatch.setenv("MLOPS_TEST_KEY", "s3cret-value-0123456789")
    (project / "ml.yaml").write_text((GOLDEN / "manifests" / "valid.yaml").read_text().replace(
        "{port: auto, auth: key}", "{port: auto, auth: key, primary_key: '${MLOPS_TEST_KEY}'}"))
    manifest = load_manifest(project / "ml.yaml")
    assert manifest.section("services")["echo-api"]["deploy"]["primary_key"] == "s3cret-value-0123456789"
    result = run_cli("plan", "--json", cwd=project)
    assert result.code == 0, result.err
    assert "s3cret" not in result.out and "(sensitive)" in result.out


def test_escaped_dollar_is_literal(project: Path):
    (project / "ml.yaml").write_text("version: 1\nproject: demo\nmodels:\n  m: {path: model.txt, "
                                     "description: 'costs $${PRICE}'}\n")
    assert load_manifest(project / "ml.yaml").section("models")["m"]["description"] == "costs ${PRICE}"


def test_missing_manifest_is_one_line(tmp_path: Path):
    result = run_cli("validate", "-f", str(tmp_path / "nope.yaml"))
    assert result.code == 1
    assert result.err.count("\n") == 1 and "manifest not found" in result.err
