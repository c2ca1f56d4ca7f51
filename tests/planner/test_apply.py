"""Apply semantics through the CLI with the in-memory provider: order, failure containment,
per-resource staleness of saved plans, --target, confirmation, locking."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from memory_provider import MemoryProvider
from support import make_project, run_cli

from planner.addresses import Address
from planner.apply import apply_plan
from planner.planning import make_plan
from planner.project import Project
from providers.base import LocksItself

MANIFEST = """\
version: 1
project: demo
targets:
  mem: {provider: memory}
models:
  m: {path: model.txt, tags: {stage: dev}}
environments:
  e: {python: "3.11"}
  f: {python: "3.11", pip: [numpy]}
services:
  one-api: {models: [m], environment: e, source_dir: src, entry_script: score.py, deploy: {port: 8001}}
  two-api: {models: [m], environment: f, source_dir: src, entry_script: score.py, deploy: {port: 8002}}
"""


@pytest.fixture(autouse=True)
def _memory(memory_target):
    yield


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path, MANIFEST)


def test_plan_exit_codes_and_apply(project: Path):
    assert run_cli("plan", "--detailed-exitcode", "-f", str(project)).code == 2
    result = run_cli("apply", "--auto-approve", "-f", str(project))
    assert result.code == 0, result.err
    assert "Apply complete! Resources: 5 added, 0 changed, 0 destroyed." in result.out
    again = run_cli("plan", "--detailed-exitcode", "-f", str(project))
    assert again.code == 0 and "No changes. Your deployment matches the manifest." in again.out


def test_apply_refuses_without_a_terminal(project: Path):
    result = run_cli("apply", "-f", str(project))
    assert result.code == 1 and "--auto-approve" in result.err
    assert not Project.load(project).live()


def test_models_and_environments_go_before_services(project: Path):
    events: list[tuple[str, str]] = []
    proj = Project.load(project)
    desired, live = proj.desired(), proj.live()
    apply_plan(proj, make_plan(proj, desired=desired, live=live), desired, live, parallelism=4,
               notify=lambda change, event: events.append((str(change.address), event)))
    done = [a for a, e in events if e == "done"]
    for svc, env in (("service.one-api", "environment.e"), ("service.two-api", "environment.f")):
        assert done.index("model.m") < [a for a, e in events].index(svc)
        assert done.index(env) < [a for a, e in events].index(svc)


def test_a_failure_is_contained_and_the_next_plan_shows_what_is_left(project: Path):
    project.write_text(MANIFEST.replace("deploy: {port: 8002}", "deploy: {port: 8002, fail: true}"))
    result = run_cli("apply", "--auto-approve", "-f", str(project))
    assert result.code == 1
    assert "Error: service.two-api: start failed (deploy.fail is set)" in result.err
    assert "Apply failed: 1 of 5 changes did not complete" in result.err
    plan = json.loads(run_cli("plan", "--json", "-f", str(project)).out)
    left = {c["address"]: c["change"]["actions"] for c in plan["resource_changes"]
            if c["change"]["actions"] != ["no-op"]}
    assert left == {"service.two-api": ["create"]}


def test_dependents_of_a_failed_change_are_skipped(project: Path):
    # A model whose file changes after planning fails to register; its services must not start.
    proj = Project.load(project)
    desired, live = proj.desired(), proj.live()
    plan = make_plan(proj, desired=desired, live=live)
    (project.parent / "model.txt").write_text("changed after planning\n")
    outcomes = {str(o.change.address): o for o in apply_plan(proj, plan, desired, live)}
    assert not outcomes["model.m"].ok and "changed after it was planned" in outcomes["model.m"].error
    assert outcomes["service.one-api"].skipped and outcomes["service.two-api"].skipped
    assert outcomes["environment.e"].ok and outcomes["environment.f"].ok


def test_saved_plan_staleness_is_per_resource(project: Path, tmp_path: Path):
    assert run_cli("apply", "--auto-approve", "-f", str(project)).code == 0
    # Two outstanding plans: one touches one-api, the other two-api.
    project.write_text(MANIFEST.replace("port: 8001", "port: 8011").replace("port: 8002", "port: 8012"))
    plan_one, plan_two = tmp_path / "one.json", tmp_path / "two.json"
    assert run_cli("plan", "-o", str(plan_one), "--target", "service.one-api", "-f", str(project)).code == 0
    assert run_cli("plan", "-o", str(plan_two), "--target", "service.two-api", "-f", str(project)).code == 0
    # Applying one must not make the other stale (Terraform's global serial would).
    first = run_cli("apply", str(plan_one), "-f", str(project))
    assert first.code == 0, first.err
    second = run_cli("apply", str(plan_two), "-f", str(project))
    assert second.code == 0, second.err
    # A plan whose own resource changed since is refused, and says why.
    project.write_text(MANIFEST)
    stale = tmp_path / "stale.json"
    assert run_cli("plan", "-o", str(stale), "-f", str(project)).code == 0
    proj = Project.load(project)
    MemoryProvider(target="mem", config={}, context=proj.context).kill("one-api")
    refused = run_cli("apply", str(stale), "-f", str(project))
    assert refused.code == 3   # a stale saved plan has its own exit code (plan again)
    assert "Saved plan is stale: service.one-api changed since the plan was made" in refused.err


def test_saved_plan_refused_when_the_manifest_changed(project: Path, tmp_path: Path):
    saved = tmp_path / "plan.json"
    assert run_cli("plan", "-o", str(saved), "-f", str(project)).code == 0
    project.write_text(MANIFEST.replace("stage: dev", "stage: prod"))
    refused = run_cli("apply", str(saved), "-f", str(project))
    assert refused.code == 3 and "model.m: the manifest or its files changed" in refused.err


def test_failed_service_is_replaced(project: Path):
    assert run_cli("apply", "--auto-approve", "-f", str(project)).code == 0
    proj = Project.load(project)
    MemoryProvider(target="mem", config={}, context=proj.context).kill("two-api")
    plan = run_cli("plan", "-f", str(project))
    assert "# service.two-api must be replaced" in plan.out
    assert "# (because its live status is Failed)" in plan.out
    assert run_cli("apply", "--auto-approve", "-f", str(project)).code == 0
    assert Project.load(project).live()[Address("service", "two-api")].status == "Healthy"


def test_target_limits_the_plan_to_a_resource_and_its_dependencies(project: Path):
    result = run_cli("plan", "--json", "--target", "service.one-api", "-f", str(project))
    addresses = sorted(c["address"] for c in json.loads(result.out)["resource_changes"])
    assert addresses == ["environment.e", "model.m", "service.one-api"]
    text = run_cli("plan", "--target", "service.one-api", "-f", str(project)).out
    assert text.startswith("Warning: resource targeting is in effect (service.one-api).")


def test_target_reaches_only_the_targets_the_selection_needs(project: Path):
    """A service's plan and apply do not need every other target to answer (issue 22, item 18)."""
    project.write_text(MANIFEST.replace("  mem: {provider: memory}\n", "  mem: {provider: memory}\n"
                                        "  far: {provider: memory, unreachable: true}\n")
                       .replace("deploy: {port", "target: mem, deploy: {port")
                       + "  far-api: {models: [m], environment: e, source_dir: src, entry_script: score.py, "
                         "target: far}\n")
    full = run_cli("plan", "-f", str(project))
    assert full.code == 1 and "unreachable" in full.err
    result = run_cli("plan", "--detailed-exitcode", "--target", "service.one-api", "-f", str(project))
    assert result.code == 2, result.err
    result = run_cli("apply", "--auto-approve", "--target", "service.one-api", "-f", str(project))
    assert result.code == 0, result.err
    assert run_cli("plan", "--detailed-exitcode", "--target", "service.one-api", "-f", str(project)).code == 0
    # The unreachable target's own service still needs its target.
    assert "unreachable" in run_cli("plan", "--target", "service.far-api", "-f", str(project)).err


def test_status_detailed_exitcode_says_when_a_service_needs_attention(project: Path):
    """0: every service fine; 2: one is Failed (or Unhealthy, Unschedulable, not deployed); 1: an error."""
    assert run_cli("status", "--detailed-exitcode", "-f", str(project)).code == 2   # nothing deployed yet
    assert run_cli("apply", "--auto-approve", "-f", str(project)).code == 0
    assert run_cli("status", "--detailed-exitcode", "-f", str(project)).code == 0
    assert run_cli("status", "-f", str(project)).code == 0
    proj = Project.load(project)
    MemoryProvider(target="mem", config={}, context=proj.context).kill("two-api")
    result = run_cli("status", "--detailed-exitcode", "-f", str(project))
    assert result.code == 2 and "Failed" in result.out, result.out
    assert run_cli("status", "--json", "--detailed-exitcode", "-f", str(project)).code == 2
    assert run_cli("status", "-f", str(project)).code == 0   # without the flag, as before
    assert run_cli("status", "--detailed-exitcode", "-f", str(project.parent / "none.yaml")).code == 1


def test_removed_service_is_destroyed_after_dependents(project: Path):
    assert run_cli("apply", "--auto-approve", "-f", str(project)).code == 0
    project.write_text(MANIFEST.split("services:")[0].replace("  f: {python: \"3.11\", pip: [numpy]}\n", "")
                       + "services: {}\n")
    result = run_cli("apply", "--auto-approve", "-f", str(project))
    assert result.code == 0, result.err
    assert "Resources: 0 added, 0 changed, 3 destroyed." in result.out
    destroy = run_cli("destroy", "--auto-approve", "-f", str(project))
    assert destroy.code == 0 and "2 destroyed" in destroy.out
    assert not Project.load(project).live()


def test_lock_refuses_a_concurrent_apply(project: Path):
    from planner.lock import apply_lock

    proj = Project.load(project)
    with apply_lock(proj.manifest.state_dir, "apply"):
        result = run_cli("apply", "--auto-approve", "-f", str(project))
    assert result.code == 4 and "another mlops apply holds the lock" in result.err


def test_another_checkout_of_the_project_cannot_apply_at_the_same_time(project: Path, tmp_path: Path):
    """Checkouts of one project on one machine share its local services and keys (providers/userdata.py)."""
    import git

    from planner.lock import apply_lock

    other = tmp_path / "other-checkout"
    git.Repo.clone_from(project.parent, other)
    proj = Project.load(project)
    with apply_lock(proj.manifest.state_dir, "apply", proj.context.data_dir):
        result = run_cli("apply", "--auto-approve", "-f", str(other / project.name))
    assert result.code == 4 and f"holds the lock on {proj.context.data_dir / 'apply.lock'}" in result.err, result.err
    assert run_cli("apply", "--auto-approve", "-f", str(other / project.name)).code == 0


class LyingProvider(MemoryProvider):
    """Runs what it is asked, then answers with a Live that does not describe it (a provider bug)."""

    kind = "liar"
    lie: dict = {}

    @classmethod
    def schema(cls):
        target = {"type": "object", "properties": {"provider": {"const": "liar"}}}
        return dataclasses.replace(super().schema(), target=target)

    def create(self, desired, events):
        live = super().create(desired, events)
        return dataclasses.replace(live, **self.lie) if self.lie else live


LIES = {
    "target": ({"target": "elsewhere"}, "says it runs on target 'elsewhere', not 'mem'"),
    "spec": ({"spec": {"deploy": {"port": 1}}}, "reports a spec that differs from the one asked for at "),
    "address": ({"address": Address("service", "other-api")}, "returned the live state of service.other-api"),
    "versions": ({"versions": ()}, "reports no running version"),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_live_that_does_not_match_the_request_is_reported_as_a_provider_bug(tmp_path: Path, lie: str):
    from providers import registry

    registry.register("liar", LyingProvider)
    LyingProvider.lie = LIES[lie][0]
    try:
        path = make_project(tmp_path, MANIFEST.replace("{provider: memory}", "{provider: liar}"))
        result = run_cli("apply", "--auto-approve", "-f", str(path))
    finally:
        registry.unregister("liar")
        LyingProvider.lie = {}
    assert result.code == 1
    assert "service.one-api: provider bug in target 'mem' (liar) (test_apply.LyingProvider): create " in result.out + \
        result.err, result.out + result.err
    assert LIES[lie][1] in result.out + result.err
    assert "Apply failed" in result.err


class CountingProvider(LocksItself, MemoryProvider):
    """Counts reads of its live state; locks itself, as a shared cluster does."""

    kind = "counted"
    reads = 0
    locks: list[str] = []

    @classmethod
    def schema(cls):
        target = {"type": "object", "properties": {"provider": {"const": "counted"}}}
        return dataclasses.replace(super().schema(), target=target)

    def read(self):
        CountingProvider.reads += 1
        return super().read()

    def apply_lock(self, holder, cancel=None):
        import contextlib

        CountingProvider.locks.append(holder)
        return contextlib.nullcontext()


def test_one_apply_reads_live_state_once_for_the_plan_the_lock_check_and_the_job_summary(
        tmp_path: Path, monkeypatch):
    from providers import registry

    registry.register("counted", CountingProvider)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    CountingProvider.reads, CountingProvider.locks = 0, []
    try:
        path = make_project(tmp_path / "repo", MANIFEST.replace("{provider: memory}", "{provider: counted}"))
        result = run_cli("apply", "--auto-approve", "-f", str(path))
        assert result.code == 0, result.err
        assert CountingProvider.locks == ["mlops apply"]     # the target was locked, once
        assert CountingProvider.reads == 1                   # was 3: plan, again under the lock, the summary
        text = summary.read_text()
        assert "| `one-api` | mem | Healthy |" in text and "| `two-api` | mem | Healthy |" in text, text
        CountingProvider.reads = 0
        assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0   # nothing to do
        assert CountingProvider.reads == 1
    finally:
        registry.unregister("counted")
