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


# -- a trailing newline never passes a name or enum check ------------------------------------------

def _shipped_schemas() -> list[tuple[str, dict]]:
    """The manifest schema and every installed provider's target and deploy schemas."""
    from planner.manifest import schema
    from providers.registry import available, provider_class

    out = [("ml.schema.json", schema())]
    for kind in sorted(available()):
        for variant in provider_class(kind).variants():
            out += [(f"{kind}/{variant.__name__}.target_schema", variant.schema().target),
                    (f"{kind}/{variant.__name__}.deploy_schema", variant.schema().deploy)]
    return out


def _shipped_patterns() -> list[tuple[str, str]]:
    from planner.schemacheck import _patterns

    return sorted({(where, p) for where, s in _shipped_schemas() for p in _patterns(s)})


def _shipped_regexes() -> list[tuple[str, object]]:
    """Every module-level compiled regular expression in planner/ and providers/."""
    import importlib
    import pkgutil
    import re

    import planner
    import providers

    found = []
    for package in (planner, providers):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith("__main__"):
                continue  # running it is what importing it does
            try:
                module = importlib.import_module(info.name)
            except ImportError:
                continue  # an optional extra that is not installed
            found += [(f"{info.name}.{name}", value) for name, value in vars(module).items()
                      if isinstance(value, re.Pattern) and value.pattern and isinstance(value.pattern, str)]
    return found


def test_every_schema_pattern_refuses_a_trailing_newline_in_both_checkers():
    """`$` in a schema is the end of the text (ECMA-262) for jsonschema as for jsonschema-rs."""
    import jsonschema_rs
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from planner.schemacheck import SchemaCheck, _validator_class, engine_neutral, python_pattern

    def checker(where: str, pattern: str):
        slow = _validator_class()({"type": "string", "pattern": pattern})
        fast = jsonschema_rs.Draft202012Validator({"type": "string", "pattern": pattern})

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(st.from_regex(python_pattern(pattern), fullmatch=True))
        def check(value: str) -> None:
            # Where the engines read a class differently (\\w), only jsonschema judges (schemacheck).
            assert slow.is_valid(value) and (fast.is_valid(value) or not engine_neutral(pattern)), (where, value)
            for bad in (value + "\n", value + "\r\n"):
                assert not slow.is_valid(bad), (where, pattern, bad)
                assert not fast.is_valid(bad), (where, pattern, bad)
                assert SchemaCheck({"type": "string", "pattern": pattern}).errors(bad), (where, pattern, bad)

        return check

    patterns = _shipped_patterns()
    assert len(patterns) >= 15, patterns   # the manifest's names, ACI's, IoT Edge's, registries...
    for where, pattern in patterns:
        checker(where, pattern)()


def test_every_python_regex_we_ship_anchors_at_the_very_end():
    """No module-level pattern uses `$` (it matches before a final newline in Python): `\\Z` instead."""
    from planner.schemacheck import python_pattern

    regexes = _shipped_regexes()
    assert len(regexes) >= 20
    loose = [(name, r.pattern) for name, r in regexes if python_pattern(r.pattern) != r.pattern]  # type: ignore[attr-defined]
    assert not loose, loose


@pytest.mark.parametrize("field, text", [
    ("service", "services:\n  \"api-x\\n\": {models: [m], environment: e, source_dir: src, entry_script: score.py}\n"),
    ("model", "models:\n  \"m2\\n\": {path: model.txt}\n"),
    ("python", "environments:\n  e2: {python: \"3.11\\n\"}\n"),
    ("project", None),
    ("base_image", "environments:\n  e3: {python: \"3.11\", base_image: \"python:3.11-slim\\n\"}\n"),
    ("target", "targets:\n  \"dev\\n\": {provider: local}\n"),
    ("variable", "services:\n  api-y: {models: [m], environment: e, source_dir: src, entry_script: score.py,"
                 " deploy: {environment_variables: {\"OK\\n\": x}}}\n"),
    ("public_vars", "public_vars: [\"HOME\\n\"]\n"),
])
def test_a_trailing_newline_fails_every_name_check(tmp_path: Path, field: str, text: str | None):
    base = ("version: 1\nproject: demo\nmodels:\n  m: {path: model.txt}\nenvironments:\n  e: {python: \"3.11\"}\n"
            "services:\n  api: {models: [m], environment: e, source_dir: src, entry_script: score.py}\n")
    if text is None:
        manifest = base.replace("project: demo", 'project: "demo\\n"')
    else:
        section = text.split(":", 1)[0] + ":\n"
        manifest = base.replace(section, text, 1) if section in base else base + text
    make_project(tmp_path, manifest)
    result = run_cli("validate", cwd=tmp_path)
    assert result.code == 1, (field, result.out)
    assert "Traceback" not in result.err
    (tmp_path / "ml.yaml").write_text(manifest.replace("\\n", ""))   # the same without the newline passes
    assert run_cli("validate", cwd=tmp_path).code == 0, field


# -- values from the environment print as their reference (issue 22, item 1) -----------------------

def test_environment_values_show_as_references_and_changes_stay_visible(tmp_path: Path):
    from planner.addresses import Address
    from planner.plan import Action, Change

    make_project(tmp_path, 'version: 1\nproject: demo\npublic_vars: [REGION]\nmodels:\n'
                           '  ridge: {path: model.txt, description: "${DESC} in ${REGION}", tags: {n: "${N}"}}\n'
                           '  m2: {path: model.txt, description: "${WHICH}"}\n')
    env = {"DESC": "s3cret-description", "REGION": "westeurope", "N": "7", "WHICH": "ridge"}
    refs = load_manifest(tmp_path / "ml.yaml", env=env).references
    assert "westeurope" not in refs.values and "ridge" not in refs.values   # public; a declared name
    before = {"description": "old-s3cret in westeurope", "tags": {"n": "7"}, "sha256": "ab8080cd7"}
    after = {"description": "s3cret-description in westeurope", "tags": {"n": "7"}, "sha256": "ab8080cd7"}
    change = refs.mask_change(Change(Address("model", "ridge"), Action.UPDATE, before, after))
    assert change.after == {"description": "${DESC} in westeurope", "tags": {"n": "${N}"}, "sha256": "ab8080cd7"}
    assert change.before["description"] == "(earlier value)" and change.before["tags"] == {"n": "${N}"}
    rotated = refs.mask_change(Change(Address("model", "ridge"), Action.UPDATE, after, {**after, "tags": {"n": "8"}}))
    assert rotated.after["tags"] == {"n": "8"}   # a literal 8 is not from the environment: shown as is
    same = load_manifest(tmp_path / "ml.yaml", env={**env, "N": "8"}).references
    rotated = same.mask_change(Change(Address("model", "ridge"), Action.UPDATE, {"tags": {"n": "7"}},
                                      {"tags": {"n": "8"}}))
    assert rotated.before["tags"]["n"] == "(earlier value)" and rotated.after["tags"]["n"] == "${N}"
