"""A property of the driver: resumed from any position a target can record, with a good or a bad
candidate, cancelled or not, a rollout ends promoted (one version, no state) or rolled back (the
stable version alone, state aborted) or paused (both, state paused) — never two versions without a
state saying why, never a state that names a version that does not run."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import memory_provider
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import make_project, run_cli

from planner.addresses import Address
from planner.core.events import Events
from planner.planning import make_plan
from planner.project import Project
from planner.resources import RolloutState, spec_fingerprint
from planner.rollout import driver
from planner.rollout.bake import RolledBack, RolloutPaused

API = Address("service", "api")
MANIFEST = """\
version: 1
project: prop
targets:
  mem: {provider: memory}
models:
  m: {path: model.txt}
environments:
  e: {python: "3.11"}
services:
  api: {models: [m], environment: e, source_dir: src, entry_script: score.py, target: mem, deploy: {}}
"""


def policy(mirror: bool, on_failure: str) -> dict:
    out = {"strategy": "canary", "on_failure": on_failure, "progress_deadline": 2.0,
           "steps": [{"weight": 10.0, "hold": 0.05}, {"weight": 50.0, "hold": 0.05}],
           "analysis": {"interval": 0.03, "min_requests": 5, "max_error_rate": 0.01, "max_p99_ms": None,
                        "max_relative_p99": None, "failure_limit": 1}}
    if mirror:
        out["mirror"] = {"percent": 20.0, "hold": 0.05}
    return out


@pytest.fixture
def world(tmp_path: Path, memory_target):
    path = make_project(tmp_path, MANIFEST)
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    project = Project.load(path)
    provider = project.providers["mem"]
    provider.ensure_connected()
    base = provider.read()[0]
    desired = project.desired()[API]
    yield project, provider, base, desired
    memory_provider.COUNTERS.clear()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mirror=st.booleans(), step=st.integers(-1, 1), passed=st.integers(0, 5), extra=st.integers(0, 3),
       age=st.floats(0, 0.2), bad=st.booleans(), cancel=st.booleans(), pause=st.booleans(),
       fresh=st.booleans())
def test_any_recorded_position_ends_promoted_rolled_back_or_paused(world, mirror, step, passed, extra, age, bad,
                                                                  cancel, pause, fresh):
    project, provider, base, desired = world
    services = next(iter(memory_provider.STATE.values()))
    services["api"] = base                                   # the stable version alone, as deployed
    rules = policy(mirror, "pause" if pause else "rollback")
    spec = {**desired.spec, "deploy": {**desired.spec["deploy"], "error_rate": 0.5 if bad else 0.0}}
    want = dataclasses.replace(desired, spec=spec, inputs={**desired.inputs, "rollout": rules})
    candidate, stable = spec_fingerprint(spec), spec_fingerprint(base.spec)
    live = base
    if not fresh:                                            # a position an interrupted apply left on the target
        step = step if mirror else max(step, 0)
        weight = 0.0 if step < 0 else rules["steps"][step]["weight"]
        recorded = RolloutState(candidate=candidate, stable=stable, phase="mirror" if step < 0 else "canary",
                                step=step, weight=weight, mirror=20.0 if step < 0 else 0.0, passed=passed,
                                judged=passed + extra, policy=rules, updated=time.time() - age)
        live = provider.start_candidate(want, live, recorded, Events())
        live = provider.set_traffic(live, recorded, Events())
    change = next(c for c in make_plan(project, desired={API: want}, live={API: live}).changes if c.address == API)
    assert (change.reason == "rollout_continue") == (not fresh)
    events = Events(cancel=threading.Event())
    if cancel:
        events.cancel.set()
    try:
        driver.update(change, want, live, provider, events)
        ended = "promoted"
    except RolledBack:
        ended = "rolled back"
    except RolloutPaused:
        ended = "paused"
    now = services["api"]
    versions = [v.spec_fingerprint for v in now.versions]
    if ended == "promoted":
        assert not bad and not cancel
        assert now.rollout is None and versions == [candidate] and spec_fingerprint(now.spec) == candidate
    elif ended == "rolled back":
        assert bad or cancel
        assert not pause
        assert now.rollout is not None and now.rollout.phase == "aborted" and now.rollout.reason
        assert versions == [stable]
    else:
        assert pause and (bad or cancel)
        assert now.rollout is not None and now.rollout.phase == "paused" and versions == [stable, candidate]
    assert len(versions) == 1 or now.rollout is not None     # never two versions without a state saying why
