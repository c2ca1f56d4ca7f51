"""The event-stream loader (planner.yamlpos._load_plain) gives exactly what the node-graph path gives.

The fast path takes the common document (no anchors, aliases, merge keys or tags) in one pass;
everything else, every error and every limit, goes to the node-graph path. These tests hold it to
that: the same data and the same positions (every file:line:col message is built from them), or
no answer at all. Inputs: every shipped manifest, generated platform manifests, the fuzz suite's
600 seeded mutations and hypothesis documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import mutation

from planner import yamlpos

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "ml.yaml.example", *sorted(ROOT.glob("examples/*/ml.yaml")), *sorted(ROOT.glob("tests/**/*.yaml"))]


def slow(text: str) -> tuple[Any, yamlpos.Positions] | str:
    """The node-graph path alone, or the problem it reports."""
    try:
        node = yamlpos._compose(text)
        builder = yamlpos._Builder()
        return (None if node is None else builder.value(node, ())), builder.positions
    except yamlpos.YamlProblem as exc:
        return f"{exc.line}:{exc.col}: {exc.message}"


def agree(text: str) -> bool:
    """True when the fast path answered (and matched); False when it left the document to the slow one."""
    fast = yamlpos._load_plain(text)
    if fast is None:
        return False
    expected = slow(text)
    assert not isinstance(expected, str), f"the fast path accepted what the slow path refuses: {expected}"
    data, positions = expected
    assert fast[0] == data and type(fast[0]) is type(data)
    assert _types(fast[0]) == _types(data), "same values, other types (1 vs 1.0 vs True)"
    assert fast[1].values == positions.values
    assert fast[1].keys == positions.keys
    return True


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_manifests(path: Path) -> None:
    text = path.read_text(errors="replace")
    if isinstance(slow(text), str) or any(mark in text for mark in ("&", "*", "!", "<<", "---")):
        agree(text)   # left to the slow path (or, if answered, it must match)
    else:
        assert agree(text), "a plain manifest should take the fast path"


def test_generated_platform_manifest() -> None:
    lines = ["version: 1", "project: p", "services:"]
    lines += [f"  s{i}: {{models: [m{i % 3}], deploy: {{replicas: {i % 4}, port: auto, cpu: 0.5, on: yes}}}}"
              for i in range(300)]
    assert agree("\n".join(lines) + "\n")


def test_fuzz_mutations() -> None:
    answered = 0
    for seed in range(600):
        raw = mutation(seed)
        try:
            text = yamlpos.decode(raw)
        except yamlpos.YamlProblem:
            continue
        answered += agree(text)
    assert answered > 50, "the mutations should exercise the fast path, not only the fallback"


def test_documents_the_fast_path_must_leave_alone() -> None:
    for text in ["a: &x 1\nb: *x\n", "a: {b: 1}\n<<: {c: 2}\n", "a: !!str 1\n", "a: 1\na: 2\n",
                 "---\na: 1\n---\nb: 2\n", "a: 1" + "9" * 40 + "\n", "[" * 60 + "]" * 60, "a: [1, 2\n", "",
                 "? [a]\n: 1\n", "a: !\n"]:
        assert yamlpos._load_plain(text) is None, text


SCALARS = st.one_of(
    st.sampled_from(["1", "-1", "0x1f", "0o17", "1_000", "1.5", ".inf", "-.Inf", ".nan", "1e3", "true", "True", "yes",
                     "no", "off", "~", "null", "Null", "''", '""', "2024-01-01", "=", "'quoted'", '"a\\tb"', "'1'",
                     "a b", "3.11", "1:30", "a#b", "-", "|\n  block\n", ">-\n  folded\n"]),
    st.from_regex(r"[a-z][a-z0-9_.-]{0,8}", fullmatch=True),
)


def _render(value: Any, indent: int) -> str:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "\n" + "\n".join(f"{pad}{k}:{' ' if not isinstance(v, (dict, list)) or not v else ''}"
                                f"{_render(v, indent + 2)}" for k, v in value.items())
    if isinstance(value, list):
        if not value:
            return "[]"
        if any(isinstance(v, str) and v.startswith(("|", ">")) for v in value):
            return "[" + ", ".join(str(i) for i in range(len(value))) + "]"
        return "[" + ", ".join(str(v) if not isinstance(v, (dict, list)) else "{}" for v in value) + "]"
    return str(value)


DOCS = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), inner, max_size=4),
                    max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCS.filter(lambda d: isinstance(d, dict) and d))
def test_generated_documents(doc: dict) -> None:
    text = _render(doc, 0).lstrip("\n") + "\n"
    try:
        yaml.safe_load(text)
    except yaml.YAMLError:
        assert yamlpos._load_plain(text) is None or not isinstance(slow(text), str)
        return
    agree(text)
