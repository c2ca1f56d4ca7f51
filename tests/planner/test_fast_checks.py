"""The fast paths of validation never accept what the slow, message-giving paths refuse.

planner/schemacheck.py lets jsonschema-rs say "valid" and leaves every error to jsonschema;
planner/manifest/packages.py lets a regular expression accept plain pip requirements before packaging is
imported. Both are only safe if the fast side is never more permissive: these tests try to make
it so, with mutations of real manifests against every shipped schema, and generated strings.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement

from planner import manifest as manifest_mod
from planner.manifest.packages import _SIMPLE_REQUIREMENT
from planner.schemacheck import SchemaCheck, engine_neutral
from providers import registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [ROOT / "ml.yaml.example", *sorted((ROOT / "examples").glob("*/ml.yaml"))]

# Values where engines are known to differ: newline before the end, Unicode digits and marks,
# control characters, huge and non-finite numbers, look-alike types.
TRICKY = st.sampled_from([
    "abc\n", "a\u0301", "\u0663", "\u00e9t\u00e9", "x\x00", "a b", "", " ", "3.11\n", "3.\u0661",
    "https://x/\n", "AbC", "ab-", "-ab", "a" * 300, 10 ** 30, -1, 0, 2 ** 63, 1.5, math.inf, -math.inf,
    math.nan, True, False, None, [], {}, [1, "a"], {"a": 1}, "12", "auto", "1e3", 65536, 0.1,
])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | TRICKY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _examples() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in EXAMPLES]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, path: tuple, how: str, new: Any, key: str) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return new
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if how == "replace":
        parent[last] = new
    elif how == "delete":
        del parent[last]
    elif how == "add" and isinstance(parent[last], dict):
        parent[last][key] = new
    return doc


def _agree(check: SchemaCheck, schema: dict, instance: Any) -> None:
    if check.passes(instance):
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(instance))
        assert not errors, f"jsonschema-rs accepted what jsonschema refuses: {errors[0].message}"


MUTATION = st.tuples(st.integers(0, 10 ** 6), st.sampled_from(["replace", "delete", "add"]), JSON,
                     st.text(max_size=10))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(EXAMPLES))), st.lists(MUTATION, min_size=1, max_size=3))
def test_manifest_schema_fast_path_is_never_more_permissive(which: int, mutations: list) -> None:
    full = manifest_mod.schema()
    check = SchemaCheck(full)
    assert check._fast is not None, "the manifest schema's patterns should let the fast engine judge"
    doc = _examples()[which]
    for pick, how, new, key in mutations:
        paths = _paths(doc)
        doc = _mutate(doc, paths[pick % len(paths)], how, new, key)
    _agree(check, full, doc)


def _provider_schemas() -> list[tuple[str, dict]]:
    out = []
    for kind in registry.kinds():
        cls = registry.load(kind)
        for variant in cls.variants():
            out.append((f"{kind}:{variant.__name__}:target", variant.schema().target))
            out.append((f"{kind}:{variant.__name__}:deploy", variant.schema().deploy))
    return out


@pytest.mark.parametrize(("name", "schema"), _provider_schemas(), ids=lambda v: v if isinstance(v, str) else "")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(value=st.dictionaries(st.text(max_size=20) | st.sampled_from(
    ["replicas", "port", "cpu", "memory_gb", "provider", "engine", "registry", "namespace", "location",
     "resource_group", "subscription_id", "device_id", "environment_variables", "autoscale", "gpu",
     "auth_enabled", "dns_name_label", "tags", "node_selector"]), JSON, max_size=5))
def test_provider_schema_fast_path_is_never_more_permissive(name: str, schema: dict, value: dict) -> None:
    _agree(SchemaCheck(schema), schema, value)


def test_engine_specific_patterns_are_left_to_jsonschema() -> None:
    r"""Python's \w does not match a combining mark; Rust's does. Such schemas skip the fast engine."""
    schema = {"type": "string", "pattern": r"^\w+$"}
    check = SchemaCheck(schema)
    assert check._fast is None
    assert [e.validator for e in check.errors("a\u0301")] == ["pattern"]
    for pattern in (r"^\d+$", r"[[:alpha:]]", r"[a[bc]]", r"(?i)abc", r"a{,3}", r"[a-z&&[^x]]", r"\bx"):
        assert not engine_neutral(pattern), pattern
    for pattern in (r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$", r"^3\.[0-9]+$", r"^[^\u0000-\u001f\u007f]+$",
                    r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$"):
        assert engine_neutral(pattern), pattern


def test_fragment_references_resolve_like_jsonschema() -> None:
    full = manifest_mod.schema()
    entry = full["properties"]["services"]["additionalProperties"]
    check = SchemaCheck(entry, within=full)
    good = _examples()[0]["services"]
    for service in good.values():
        assert check.errors(service) == []
        assert check.passes(service)
    bad = {**next(iter(good.values())), "entry_script": 5, "no_such_field": 1}
    assert not check.passes(bad)
    assert [e.validator for e in check.errors(bad)]


def test_a_value_the_fast_engine_cannot_take_goes_to_jsonschema() -> None:
    check = SchemaCheck({"type": "string"})
    assert not check.passes("\ud800")      # a lone surrogate (YAML "\ud800") cannot be UTF-8
    assert check.errors("\ud800") == []     # and jsonschema, which can, says it is a string


@settings(max_examples=400, deadline=None)
@given(st.from_regex(_SIMPLE_REQUIREMENT, fullmatch=True))
def test_simple_requirements_are_valid_pep508(text: str) -> None:
    Requirement(text)                       # packaging accepts it …
    assert manifest_mod.pip_problem(text) is None


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="az09._-=<>!~,*[]; @:/", max_size=16))
def test_pip_fast_path_accepts_only_what_packaging_accepts(text: str) -> None:
    if _SIMPLE_REQUIREMENT.fullmatch(text):
        Requirement(text)
