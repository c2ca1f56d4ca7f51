"""The rollout block: golden validate output, the parsed policy, the one-line plan description."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import GOLDEN, check_golden, make_project, run_cli

from planner.manifest import load_manifest
from planner.rollout.spec import Rollout, describe, fraction, parse, seconds
from planner.rollout.support import policy_of, splitting_kinds


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_project(tmp_path, "version: 1\nproject: demo\n")
    return tmp_path


@pytest.mark.parametrize("case", ["errors", "valid"])
def test_validate_golden(case: str, project: Path):
    shutil.copy(GOLDEN / "rollout" / f"{case}.yaml", project / "ml.yaml")
    result = run_cli("validate", cwd=project)
    check_golden(f"rollout/{case}.txt", f"exit {result.code}\n{result.out}{result.err}")


def test_the_refusal_names_the_kinds_that_split_traffic(project: Path):
    shutil.copy(GOLDEN / "rollout" / "errors.yaml", project / "ml.yaml")
    err = run_cli("validate", cwd=project).err
    line = next(ln for ln in err.splitlines() if "services.on-aci.rollout.strategy" in ln)
    for kind in splitting_kinds("shadow"):   # (kubernetes mirrors only behind a gateway: not by default)
        assert kind in line
    assert "aci" not in splitting_kinds() and "local" in splitting_kinds() and "kubernetes" in splitting_kinds()


def test_parsed_policy_and_description(project: Path):
    shutil.copy(GOLDEN / "rollout" / "valid.yaml", project / "ml.yaml")
    services = load_manifest(project / "ml.yaml").section("services")
    canary = policy_of(services["canary-api"])
    assert canary is not None and canary.analysis is not None
    assert [(s.weight, s.hold) for s in canary.steps] == [(10, 120), (50, 300)]
    assert canary.analysis.max_error_rate == 0.01 and canary.progress_deadline == 1800
    assert Rollout.from_json(canary.to_json()) == canary
    assert describe(canary) == ("rollout canary mirror 20% (5m) -> 10% (2m) -> 50% (5m) -> 100%, "
                                "analysis every 30s")
    blue = policy_of(services["aci-api"])
    assert describe(blue) == "rollout blue_green 100% (bake 90s), analysis every 15s"
    assert blue.analysis.max_error_rate == 0.005 and blue.bake_seconds == 90


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])   # a busy shared machine
@given(st.lists(st.integers(1, 100), min_size=1, max_size=8))
def test_weights_are_accepted_exactly_when_they_increase(weights):
    policy, problems = parse({"strategy": "canary", "steps": [{"weight": w, "hold": "1s"} for w in weights]})
    increasing = all(a < b for a, b in zip(weights, weights[1:], strict=False))
    assert (policy is not None) == increasing
    assert all("greater than the previous" in p.message for p in problems)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])   # a busy shared machine
@given(st.floats(0, 10_000, allow_nan=False), st.sampled_from(["ms", "s", "m", "h"]))
def test_durations(value, unit):
    text = f"{value:.3f}{unit}"
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    assert abs(seconds(text) - float(f"{value:.3f}") * factor) < 1e-6 * max(1.0, value * factor)
    assert seconds("-1s") is None and seconds("10") is None and seconds(10) == 10.0


def test_percentages():
    assert fraction("1%") == 0.01 and fraction(1) == 0.01 and fraction("0.5 %") == 0.005
    assert fraction("101%") is None and fraction(True) is None and fraction("x") is None


json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 200) | st.floats(allow_nan=True)
                           | st.sampled_from(["30s", "2m", "1%", "x", "canary", "blue_green", "shadow", ""]),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(["weight", "hold", "percent", "interval"]), inner,
                                             max_size=3), max_leaves=8)
KEYS = ["strategy", "steps", "mirror", "analysis", "on_failure", "progress_deadline"]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])   # a busy shared machine
@given(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6),
       st.dictionaries(st.sampled_from(["interval", "min_requests", "max_error_rate", "max_p99_ms",
                                        "max_relative_p99", "failure_limit"]), json_values, max_size=6),
       st.sampled_from(["canary", "blue_green", "shadow", None]))
def test_any_block_gives_a_policy_or_located_problems_never_an_exception(block, analysis, strategy):
    if analysis:
        block = {**block, "analysis": analysis}
    if strategy:
        block = {**block, "strategy": strategy}
    policy, problems = parse(block)
    assert (policy is None) == bool(problems)
    for p in problems:
        assert p.where and "\n" not in p.message


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])   # a busy shared machine
@given(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6),
       st.dictionaries(st.sampled_from(["interval", "min_requests", "max_error_rate", "max_p99_ms",
                                        "max_relative_p99", "failure_limit"]), json_values, max_size=6),
       st.sampled_from(["canary", "blue_green", "shadow", None]))
def test_a_refused_block_is_always_reported_by_the_schema_or_by_us(block, analysis, strategy):
    """Problems we leave to the JSON Schema (``shape``) must really be ones it reports."""
    from planner.manifest import schema
    from planner.schemacheck import SchemaCheck

    if analysis:
        block = {**block, "analysis": analysis}
    if strategy:
        block = {**block, "strategy": strategy}
    policy, problems = parse(block)
    if policy is not None:
        return
    ours = [p for p in problems if not p.shape]
    check = SchemaCheck({"$ref": "#/$defs/rollout", "$defs": schema()["$defs"]})
    assert ours or list(check.errors(block)), problems
