"""Property: for generated manifests, apply followed by plan shows no changes — also after
moving from one generated manifest to another. Runs against the in-memory test provider and
the real embedded model/environment store (the real local provider has its own end-to-end test).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memory_provider import MemoryProvider

from planner.apply import apply_plan
from planner.planning import make_plan
from planner.project import Project
from providers import registry

NAMES = st.sampled_from(["alpha", "beta", "gamma", "delta"])
PACKAGES = st.lists(st.sampled_from(["numpy", "pandas<3", "scikit-learn==1.9.1", "joblib"]), unique=True,
                    max_size=3)


@st.composite
def manifests(draw) -> dict:
    models = {
        name: {"content": draw(st.binary(min_size=1, max_size=16)),
               "tags": draw(st.dictionaries(st.sampled_from(["area", "owner"]), st.sampled_from(["a", "b"]),
                                            max_size=2)),
               "description": draw(st.sampled_from(["", "first", "second"]))}
        for name in draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    }
    envs = {name: {"python": "3.11", "pip": draw(PACKAGES)}
            for name in draw(st.lists(st.sampled_from(["env-a", "env-b"]), min_size=1, max_size=2, unique=True))}
    services = {}
    for name in draw(st.lists(st.sampled_from(["svc-one", "svc-two", "svc-three"]), max_size=3, unique=True)):
        deploy = {"port": draw(st.integers(8000, 8003)), "replicas": draw(st.integers(1, 3))}
        if draw(st.booleans()):
            deploy["primary_key"] = draw(st.sampled_from(["k" * 20, "z" * 20]))
        services[name] = {
            "models": draw(st.lists(st.sampled_from(sorted(models)), min_size=1, max_size=2, unique=True)),
            "environment": draw(st.sampled_from(sorted(envs))),
            "script": draw(st.sampled_from(["v1", "v2"])),
            "deploy": deploy,
        }
    return {"models": models, "environments": envs, "services": services}


def write(root: Path, spec: dict) -> Path:
    (root / "src").mkdir(exist_ok=True)
    manifest = {"version": 1, "project": "prop", "targets": {"mem": {"provider": "memory"}}, "models": {},
                "environments": spec["environments"], "services": {}}
    for name, m in spec["models"].items():
        (root / f"{name}.bin").write_bytes(m["content"])
        manifest["models"][name] = {"path": f"{name}.bin", "tags": m["tags"], "description": m["description"]}
    for name, s in spec["services"].items():
        (root / "src" / f"{name}.py").write_text(f"# {s['script']}\ndef init(): pass\ndef run(d): return d\n")
        manifest["services"][name] = {"models": s["models"], "environment": s["environment"], "source_dir": "src",
                                      "entry_script": f"{name}.py", "target": "mem", "deploy": s["deploy"]}
    path = root / "ml.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def converge(path: Path) -> None:
    project = Project.load(path)
    desired, live = project.desired(), project.live()
    plan = make_plan(project, desired=desired, live=live)
    outcomes = apply_plan(project, plan, desired, live, parallelism=3)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=manifests(), second=manifests())
def test_apply_then_plan_is_a_noop(first: dict, second: dict):
    registry.register("memory", MemoryProvider)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for spec in (first, second):
                path = write(root, spec)
                converge(path)
                again = make_plan(Project.load(path))
                assert not again.has_changes, [(str(c.address), c.action.value) for c in again.actionable]
    finally:
        registry.unregister("memory")
