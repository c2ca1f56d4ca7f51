"""The provider contract: what every target kind must do, run over every provider we ship.

Parametrised over the in-memory provider, the local process engine and the local docker engine,
plus every kind that adds a ``tests/contract/kind_<name>.py`` defining ``KIND`` (aci, kubernetes, iotedge,
and ``minimal``: a kind written in ~100 lines against the interface alone, minimal_provider.py) (a ``ContractKind``:
its target settings, deploy settings, pytest marks, and a context manager that starts what the
kind needs, e.g. its cloud double, and yields the environment variables to set). Each case goes
through the planner's own plan/apply, so a provider is held to what users get, not to a private API.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import echo_manifest, make_project

from planner.addresses import Address
from planner.apply import apply_plan, check_returned
from planner.build import build_log, build_services
from planner.plan import Action
from planner.planning import make_plan
from planner.project import Project
from planner.resources import spec_fingerprint
from providers.base import BuildsImages

SERVICE = Address("service", "echo-api")


@dataclass(frozen=True)
class ContractKind:
    name: str
    target: str                                   # the flow mapping under targets.t
    deploy: dict[str, Any]
    marks: tuple[Any, ...] = ()
    setup: Callable[[Path], contextlib.AbstractContextManager[dict[str, str]]] = \
        lambda tmp: contextlib.nullcontext({})   # start doubles; yields env vars for the target


def _needs_engine(tmp: Path) -> contextlib.AbstractContextManager[dict[str, str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docker"))
    from docker_fixtures import _engine_or_skip

    _engine_or_skip()
    return contextlib.nullcontext({})


BUILTIN = [
    ContractKind("memory", "{provider: memory}", {"auth": "key"}),
    ContractKind("process", "{provider: local}", {"port": "auto", "auth": "key"}, (pytest.mark.slow,)),
    ContractKind("docker", "{provider: local, engine: docker}", {"port": "auto", "auth": "key"},
                 (pytest.mark.slow, pytest.mark.docker), _needs_engine),
]


def _plugged_in() -> list[ContractKind]:
    found = []
    for path in sorted(Path(__file__).resolve().parent.glob("kind_*.py")):
        spec = importlib.util.spec_from_file_location(f"contract_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)   # type: ignore[arg-type]
        spec.loader.exec_module(module)                  # type: ignore[union-attr]
        found.append(module.KIND)
    return found


KINDS = {k.name: k for k in [*BUILTIN, *_plugged_in()]}


def _flow(deploy: dict) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in deploy.items()) + "}"


@pytest.fixture(params=[pytest.param(k.name, marks=list(k.marks)) for k in KINDS.values()])
def kind(request, memory_target):
    return request.param


class Target:
    """One project on one kind of target, driven through plan/apply like the CLI does."""

    def __init__(self, root: Path, kind: str):
        self.kind = kind
        self.root = root
        self.project_name = f"contract-{uuid.uuid4().hex[:8]}"   # runs on a shared engine never mix
        self.target, self.deploy = KINDS[kind].target, KINDS[kind].deploy
        self.path = make_project(root, self.manifest())

    def manifest(self, **deploy) -> str:
        return echo_manifest(self.project_name, targets={"t": self.target}, deploy=_flow({**self.deploy, **deploy}))

    def rewrite(self, **deploy) -> None:
        self.path.write_text(self.manifest(**deploy))

    def project(self) -> Project:
        return Project.load(self.path)     # a fresh project: nothing kept in memory between calls

    def plan(self, *, destroy: bool = False):
        return make_plan(self.project(), destroy=destroy)

    def apply(self, *, destroy: bool = False, cancel: threading.Event | None = None, notify=None):
        project = self.project()
        desired, live = project.desired(), project.live()
        plan = make_plan(project, desired=desired, live=live, destroy=destroy)
        return apply_plan(project, plan, desired, live, cancel=cancel, notify=notify or (lambda change, event: None))

    def live(self):
        return self.project().live().get(SERVICE)

    def endpoint_and_keys(self):
        project = self.project()
        live = project.live()[SERVICE]
        endpoint = project.provider_for(live).endpoint(live)
        return (endpoint.scoring_url if endpoint else None), project.keys.load("echo-api")


@pytest.fixture
def target(tmp_path: Path, kind: str, monkeypatch):
    with KINDS[kind].setup(tmp_path) as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        t = Target(tmp_path / "repo", kind)
        yield t
        with contextlib.suppress(Exception):   # teardown must not hide the test's own failure
            t.apply(destroy=True)


def test_create_then_plan_is_a_noop_and_a_fresh_read_finds_it(target: Target):
    outcomes = target.apply()
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    plan = target.plan()
    assert not plan.has_changes, [(str(c.address), c.action.value, c.reason) for c in plan.actionable]
    live = target.live()
    assert live is not None and live.status == "Healthy" and live.target == "t"


def test_same_inputs_give_the_same_fingerprint(target: Target):
    first = target.project().desired()[SERVICE].fingerprint
    second = target.project().desired()[SERVICE].fingerprint
    assert first == second
    target.rewrite(auth="none")
    assert target.project().desired()[SERVICE].fingerprint != first


def test_update_keeps_the_endpoint_and_the_keys_twice(target: Target):
    assert all(o.ok for o in target.apply())
    endpoint, keys = target.endpoint_and_keys()
    assert keys.get("primary")
    for n in (1, 2):
        (target.root / "src" / "score.py").write_text((target.root / "src" / "score.py").read_text() + f"\n# v{n}\n")
        plan = target.plan()
        assert [c.action for c in plan.actionable] == [Action.UPDATE]
        assert all(o.ok for o in target.apply()), "update failed"
        assert target.endpoint_and_keys() == (endpoint, keys), f"endpoint or keys changed by update {n}"


def test_delete_is_idempotent_and_missing_is_not_an_error(target: Target):
    assert all(o.ok for o in target.apply())
    project = target.project()
    live = project.live()[SERVICE]
    provider = project.provider_for(live)
    provider.ensure_connected()
    provider.delete(live, lambda text: None)
    provider.delete(live, lambda text: None)   # again: gone already, still fine
    assert target.live() is None
    assert all(o.ok for o in target.apply(destroy=True))
    assert not target.plan(destroy=True).has_changes


def test_a_failing_create_leaves_nothing_or_something_the_next_plan_shows(target: Target):
    if target.kind == "memory":
        target.rewrite(fail="true")
    else:
        (target.root / "src" / "score.py").write_text("def init():\n    raise ValueError('bad model')\n")
    outcomes = target.apply()
    service = [o for o in outcomes if o.change.address == SERVICE]
    assert service and not service[0].ok
    live = target.live()
    plan = target.plan()
    change = next(c for c in plan.changes if c.address == SERVICE)
    assert live is None or live.status != "Healthy"
    assert change.action is not Action.NOOP, "a failed create must show in the next plan"


def test_cancellation_leaves_a_state_the_next_plan_describes(target: Target):
    # Ctrl-C before anything started: nothing starts, everything is still to do.
    cancel = threading.Event()
    cancel.set()
    outcomes = target.apply(cancel=cancel)
    assert outcomes and all(o.cancelled for o in outcomes)
    assert target.live() is None and SERVICE in {c.address for c in target.plan().actionable}

    # Ctrl-C while the service waits to become ready: the provider stops what it started.
    if target.kind == "memory":
        target.rewrite(slow_s=30)
    cancel = threading.Event()
    waits: list[str] = []

    def notify(change, event: str) -> None:
        if change.address == SERVICE and event.startswith("waiting for"):
            waits.append(event)
            cancel.set()

    outcomes = target.apply(cancel=cancel, notify=notify)
    service = next(o for o in outcomes if o.change.address == SERVICE)
    assert waits and service.cancelled and not service.ok, service
    assert target.live() is None, "a cancelled create must leave nothing running"
    plan = target.plan()
    assert next(c for c in plan.changes if c.address == SERVICE).action is Action.CREATE


def test_build_makes_the_image_the_plan_names_and_keeps_its_log(target: Target):
    """Every kind that runs images builds through `mlops build` (the shared image capability)."""
    project = target.project()
    provider = project.providers["t"]
    if not isinstance(provider, BuildsImages):
        pytest.skip(f"{target.kind} runs no image")
    steps: list[str] = []
    [result] = build_services(project, [], lambda service, step: steps.append(step))
    planned = project.desired()[SERVICE].spec["image"]
    assert result.service == "echo-api" and result.image == planned, (result, planned)
    assert result.image_id.startswith("sha256:")
    registry = provider.image_registry()
    if registry:
        assert result.pushed and result.pushed.startswith(f"{planned.rsplit(':', 1)[0]}@sha256:"), result
    log = list(build_log(project, "echo-api"))
    assert log and any(f"building {planned}" in line for line in log), log[:3]
    [again] = build_services(project, ["echo-api"], lambda service, step: None)
    assert not again.built and again.image_id == result.image_id, "same inputs must not rebuild"
    assert all(o.ok for o in target.apply()), "apply after build"
    assert target.live().spec["image"] == planned


def test_every_resource_records_its_commit_and_dirty_state(target: Target):
    """Provenance (issue 18): the service on its target, the model and environment in the registry."""
    if target.kind == "memory":
        pytest.skip("the in-memory test provider keeps no provenance")
    import git

    (target.root / "untracked.txt").write_text("makes the tree dirty\n")
    head = git.Repo(target.root).head.commit.hexsha
    outcomes = target.apply()
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    live = target.project().live()
    for address in (SERVICE, Address("model", "m"), Address("environment", "e")):
        recorded = live[address].details.get("git") or {}
        assert (recorded.get("commit"), recorded.get("dirty")) == (head, True), (address, recorded)


def test_create_and_update_answer_the_live_state_asked_for(target: Target):
    """The Live a provider returns names the service, its target and the spec it was asked to run (the
    core checks it on every apply); every read reports the version that runs, with that spec."""
    assert all(o.ok for o in target.apply())        # apply checked create's answer already
    project = target.project()
    live = project.live()[SERVICE]
    desired = project.desired()[SERVICE]
    assert [v.spec_fingerprint for v in live.versions] == [spec_fingerprint(desired.spec)], live.versions
    assert live.versions[0].revision and live.versions[0].traffic == 1.0
    (target.root / "src" / "score.py").write_text((target.root / "src" / "score.py").read_text() + "\n# v2\n")
    project = target.project()
    wanted = project.desired()[SERVICE]
    provider = project.provider_for(live)
    provider.ensure_connected()
    returned = check_returned(provider, "update", wanted, provider.update(wanted, live, lambda text: None))
    assert returned.address == SERVICE and returned.target == "t"
    assert spec_fingerprint(returned.spec) == spec_fingerprint(wanted.spec) != spec_fingerprint(desired.spec)
    reread = target.live()
    assert spec_fingerprint(reread.spec) in {v.spec_fingerprint for v in reread.versions}
