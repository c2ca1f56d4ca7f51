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


# -- the bounded YAML loader (planner/yamlpos.py) --------------------------------------------------
def test_loader_keeps_plain_yaml_semantics():
    from planner.yamlpos import load

    data, positions = load("d: &d {x: 1, y: 2}\nm: {<<: *d, y: 3}\nn: {<<: [{x: 1}, {x: 2}]}\n"
                           "when: 2024-01-01\ns: !!str 12\ni: 0x10\n")
    assert data["m"] == {"x": 1, "y": 3} and list(data["m"]) == ["x", "y"]
    assert data["n"] == {"x": 1}  # the first merged mapping wins, as in PyYAML
    assert data["when"] == "2024-01-01" and data["s"] == "12" and data["i"] == 16
    assert positions.of(("m", "y")) == (2, 16) and positions.of(("m", "y"), key=True) == (2, 13)


def test_loader_accepts_a_bom_and_crlf_and_refuses_utf16():
    import pytest as _pytest

    from planner.yamlpos import YamlProblem, decode, load

    assert load(decode(b"\xef\xbb\xbfa: 1\r\nb: [2]\r\n"))[0] == {"a": 1, "b": [2]}
    with _pytest.raises(YamlProblem) as info:
        decode("a: 1\n".encode("utf-16"))
    assert info.value.line == 1 and "UTF-16" in info.value.message


def test_loader_fast_and_pure_python_paths_agree_on_errors():
    from planner import yamlpos

    for text in ("a: {b: 1\nc: 2\n", "a: *nope\n", "a: 1\na: 2\n", "- a\nb: 1\n", "a: b: c\n"):
        problems = []
        for fast in (yamlpos._CLoader, None):
            saved, yamlpos._CLoader = yamlpos._CLoader, fast
            try:
                yamlpos.load(text)
                problems.append(None)
            except yamlpos.YamlProblem as exc:
                problems.append((exc.line, exc.col, exc.message))
            finally:
                yamlpos._CLoader = saved
        assert problems[0] == problems[1], (text, problems)
