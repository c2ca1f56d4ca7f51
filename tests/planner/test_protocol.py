"""Provider protocol v2 as the planner uses it, on the in-memory provider: lifecycle, per-instance
rules, structured health, staleness, cancellation, unreachable targets, duplicates, the key
store, secret target settings, and the registry's handling of third-party plugins."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import memory_provider
import pytest
from support import make_project, project_data, run_cli

from planner.addresses import Address
from planner.errors import MlopsError
from planner.plan import Action
from planner.planning import make_plan
from planner.project import Project
from planner.resources import FAILED, HEALTHY, TRANSITIONING, UNSCHEDULABLE, Health, Live
from providers import registry
from providers.oci.models import ModelRegistry
from providers.store import open_repository

API = Address("service", "one-api")


def manifest(deploy: str = "{replicas: 2}", targets: str = "mem: {provider: memory}", target: str = "mem") -> str:
    return (
        "version: 1\nproject: proto\ntargets:\n  " + targets + "\n"
        "models:\n  m: {path: model.txt}\nenvironments:\n  e: {python: \"3.11\"}\n"
        "services:\n  one-api: {models: [m], environment: e, source_dir: src, entry_script: score.py, "
        f"target: {target}, deploy: {deploy}}}\n"
    )


@pytest.fixture(autouse=True)
def _memory(memory_target):
    yield


def set_state(project_path: Path, state: str, ready: int | None = None) -> None:
    """Change what the in-memory target reports, as a cluster would during a rollout."""
    for services in memory_provider.STATE.values():
        for name, lv in services.items():
            total = lv.health.desired if lv.health else 1
            health = Health(state, "", ready=total if ready is None else ready, desired=total)
            services[name] = Live(lv.address, lv.spec, state, lv.target, lv.provider, lv.details, lv.sensitive,
                                  health)


def test_unschedulable_is_not_replaced_on_every_plan(tmp_path: Path):
    path = make_project(tmp_path, manifest("{replicas: 2, state: Unschedulable}"))
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    assert Project.load(path).live()[API].status == UNSCHEDULABLE
    again = run_cli("plan", "--detailed-exitcode", "-f", str(path))
    assert again.code == 0, again.out   # recreating it would land in the same state: no change
    status = run_cli("status", "-f", str(path))
    assert "Unschedulable (0/2 replicas ready)" in status.out


def test_failed_is_replaced_and_the_plan_shows_the_counts(tmp_path: Path):
    path = make_project(tmp_path, manifest())
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    set_state(path, FAILED, ready=0)
    plan = make_plan(Project.load(path))
    change = next(c for c in plan.changes if c.address == API)
    assert change.action is Action.DELETE_THEN_CREATE and change.reason == "replace_because_failed"
    assert change.live_health is not None and change.live_health.counts() == "0/2 replicas ready"
    text = run_cli("plan", "-f", str(path)).out
    assert "# (because its live status is Failed, 0/2 replicas ready)" in text
    shown = run_cli("plan", "--json", "-f", str(path)).out
    assert '"live_health"' in shown and '"desired": 2' in shown


def test_a_finished_rollout_does_not_make_a_saved_plan_stale(tmp_path: Path):
    path = make_project(tmp_path, manifest())
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    set_state(path, TRANSITIONING, ready=1)
    path.write_text(manifest("{replicas: 3}"))
    saved = tmp_path / "plan.json"
    assert run_cli("plan", "-o", str(saved), "-f", str(path)).code == 0
    set_state(path, HEALTHY)                                  # the rollout finished meanwhile
    result = run_cli("apply", "-f", str(path), str(saved))
    assert result.code == 0, result.err


def test_a_state_that_forces_a_change_makes_a_saved_plan_stale(tmp_path: Path):
    path = make_project(tmp_path, manifest())
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    path.write_text(manifest("{replicas: 3}"))
    saved = tmp_path / "plan.json"
    assert run_cli("plan", "-o", str(saved), "-f", str(path)).code == 0
    set_state(path, FAILED, ready=0)                          # the plan said "update"; now it must replace
    result = run_cli("apply", "-f", str(path), str(saved))
    assert result.code == 3 and "service.one-api changed since the plan was made" in result.err


def test_moving_between_targets_keeps_serving_by_default(tmp_path: Path):
    two = "mem: {provider: memory}\n  other: {provider: memory}"
    path = make_project(tmp_path, manifest(targets=two))
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    path.write_text(manifest(targets=two, target="other"))
    change = next(c for c in make_plan(Project.load(path)).changes if c.address == API)
    assert change.action is Action.CREATE_THEN_DELETE and change.reason == "replace_because_target_changed"
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    live = Project.load(path).live()
    assert live[API].target == "other" and not run_cli("plan", "--detailed-exitcode", "-f", str(path)).code


def test_unreachable_targets_fail_with_one_line_each_and_nothing_is_applied(tmp_path: Path):
    targets = ("mem: {provider: memory}\n  down1: {provider: memory, unreachable: true, token: tok-AAAA-1111}\n"
               "  down2: {provider: memory, unreachable: true, token: tok-BBBB-2222}")
    path = make_project(tmp_path, manifest(targets=targets))
    for command in (["plan"], ["apply", "--auto-approve"]):
        result = run_cli(*command, "-f", str(path))
        lines = result.err.strip().splitlines()
        assert result.code == 1 and len(lines) == 2, result.err
        assert lines[0].startswith("Error: target 'down1' (memory) is unreachable: the memory API does not answer")
        assert lines[1].startswith("Error: target 'down2' (memory) is unreachable")
        assert "tok-AAAA-1111" not in result.err and "tok-BBBB-2222" not in result.err   # secret settings masked
        assert "(sensitive)" in result.err
    assert not any(memory_provider.STATE.values()) and not (tmp_path / ".mlops" / "models").exists()


def test_an_address_live_on_two_targets_is_an_error_not_hidden(tmp_path: Path):
    two = "mem: {provider: memory}\n  other: {provider: memory}"
    path = make_project(tmp_path, manifest(targets=two))
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    project = Project.load(path)
    copy = project.live()[API]
    memory_provider.STATE[(str(project.context.state_dir), "other")] = {
        "one-api": Live(copy.address, copy.spec, HEALTHY, "other", "memory", {"instance": 99})}
    result = run_cli("plan", "-f", str(path))
    assert result.code == 1 and "service.one-api is live on 2 targets (mem (memory), other (memory))" in result.err
    assert "one-api" in run_cli("status", "-f", str(path)).out   # status still shows what runs


def test_keys_survive_updates_and_go_with_the_service(tmp_path: Path):
    path = make_project(tmp_path, manifest("{replicas: 1, auth: key}"))
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    first = dict(memory_provider.KEYS_SEEN["one-api"])
    for replicas in (2, 3):
        path.write_text(manifest(f"{{replicas: {replicas}, auth: key}}"))
        assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
        assert memory_provider.KEYS_SEEN["one-api"] == first
    key_file = project_data(tmp_path) / "keys" / "one-api.json"
    assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
    assert run_cli("destroy", "--auto-approve", "-f", str(path)).code == 0
    assert not key_file.exists()


def test_cancellation_by_sigterm_stops_waiting_and_reports_what_is_left(tmp_path: Path):
    from gitops_shim_path import install

    path = make_project(tmp_path, manifest("{replicas: 2, slow_s: 60}"))
    shim = install(tmp_path)
    env = {**os.environ, "MLOPS_TEST_MEMORY_STATE": str(tmp_path / "state.pickle")}
    proc = subprocess.Popen([str(shim), "apply", "--auto-approve", "-f", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    seen = ""
    deadline = time.monotonic() + 60
    while "waiting for replicas: 0/2" not in seen and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert "waiting for replicas: 0/2" in seen, seen
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)      # stops waiting at once, not after slow_s
    assert proc.returncode == 130, (seen + out, err)
    assert "service.one-api: Creation cancelled" in seen + out
    assert "Apply cancelled: 2 of 3 changes completed, 1 stopped or not started" in err
    plan = run_cli("plan", "--detailed-exitcode", "-f", str(path))
    assert plan.code == 2 and "service.one-api will be created" in plan.out


# -- the registry -----------------------------------------------------------------------------

def _plugin(root: Path, dist: str, kind: str, target: str) -> None:
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[mlops.providers]\n{kind} = {target}\n")


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    (root / "broken_plugin.py").write_text("raise ImportError('libfoo.so.1: cannot open shared object file')\n")
    (root / "old_plugin.py").write_text(textwrap.dedent("""\
        from providers.base import Provider
        class OldProvider(Provider):
            protocol = 1
            kind = "old"
        """))
    registry.refresh()
    yield root
    registry.refresh()


def test_a_broken_plugin_fails_only_the_commands_that_use_its_kind(tmp_path: Path, plugins: Path):
    _plugin(plugins, "mlops_broken", "broken", "broken_plugin:Provider")
    registry.refresh()
    path = make_project(tmp_path, manifest())
    assert run_cli("validate", "-f", str(path)).code == 0
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    path.write_text(manifest(targets="mem: {provider: memory}\n  b: {provider: broken}"))
    result = run_cli("plan", "-f", str(path))
    assert result.code == 1
    assert ("ml.yaml:5:17: targets.b.provider: provider plugin 'broken' (broken_plugin:Provider, from mlops_broken "
            "1.0) failed to load: ImportError") in result.err


def test_a_kind_claimed_twice_names_both_packages(tmp_path: Path, plugins: Path):
    _plugin(plugins, "mlops_one", "twice", "one_plugin:P")
    _plugin(plugins, "mlops_two", "twice", "two_plugin:P")
    registry.refresh()
    with pytest.raises(MlopsError, match=r"claimed by several packages: mlops_\w+ 1.0 .* and mlops_\w+ 1.0"):
        registry.load("twice")
    assert "local" in registry.kinds() and registry.load("local").kind == "local"


def test_a_plugin_for_another_protocol_version_gets_a_clear_error(plugins: Path):
    _plugin(plugins, "mlops_old", "old", "old_plugin:OldProvider")
    registry.refresh()
    with pytest.raises(MlopsError, match="implements provider protocol 1; this mlops speaks protocol 3"):
        registry.load("old")


# -- status ------------------------------------------------------------------------------------

STATUS_KEYS = {"service", "target", "state", "endpoint", "models", "fingerprint", "git_commit", "dirty", "message",
               "in_manifest", "health"}


def test_status_json_has_the_same_keys_in_every_state_and_the_manifest_target(tmp_path: Path):
    """A service not deployed yet shows the target the manifest gives it (it showed `local`)."""
    two = manifest(targets="prod: {provider: memory}", target="prod").replace(
        "services:\n", "services:\n  two-api: {models: [m], environment: e, source_dir: src, entry_script: score.py}\n")
    path = make_project(tmp_path, two)

    before = json.loads(run_cli("status", "--json", "-f", str(path)).out)
    assert before["format_version"] == "1.0"
    assert [(r["service"], r["target"], r["state"]) for r in before["services"]] == [
        ("one-api", "prod", "NotDeployed"), ("two-api", "prod", "NotDeployed")]
    assert before["services"][1] == {
        "service": "two-api", "target": "prod", "state": "NotDeployed", "endpoint": None, "models": [],
        "fingerprint": None, "git_commit": None, "dirty": None, "message": "not deployed; run `mlops apply`",
        "in_manifest": True, "health": None}
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    after = json.loads(run_cli("status", "--json", "-f", str(path)).out)["services"]
    assert all(set(r) == STATUS_KEYS for r in before["services"] + after)
    one = after[0]
    assert (one["target"], one["state"], one["endpoint"], one["in_manifest"]) == \
        ("prod", "Healthy", "memory://one-api", True)
    assert one["models"] == [f"m:1@{one['models'][0].split('@')[1]}"] and len(one["fingerprint"]) == 12
    assert one["health"] == {"state": "Healthy", "message": "", "ready": 2, "desired": 2, "failed": None,
                             "unit": "replicas"}
    text = run_cli("status", "-f", str(path)).out
    assert text.splitlines()[0].split() == ["SERVICE", "TARGET", "STATE", "ENDPOINT", "MODELS", "FINGERPRINT",
                                            "COMMIT"]
    assert "two-api  prod" in text


def test_a_broken_local_plugin_does_not_fail_manifests_without_local_targets(tmp_path: Path, plugins: Path):
    """`local` is only the default kind: a manifest whose targets are all elsewhere never loads it."""
    _plugin(plugins, "mlops_shadow", "local", "broken_plugin:Provider")   # now `local` cannot load
    registry.refresh()
    with pytest.raises(MlopsError, match="local"):
        registry.load("local")
    path = make_project(tmp_path, manifest())
    for command in (["validate"], ["plan"], ["apply", "--auto-approve"], ["status"], ["destroy", "--auto-approve"]):
        result = run_cli(*command, "-f", str(path))
        assert result.code == 0, (command, result.err)
    path.write_text(manifest(targets="mem: {provider: memory}\n  box: {provider: local}"))
    result = run_cli("plan", "-f", str(path))
    assert result.code == 1 and "targets.box.provider: provider kind 'local' is claimed by several" in result.err


def test_the_core_decides_strays_left_by_an_interrupted_apply_are_an_update(tmp_path: Path):
    """No provider decides a change any more: strays are a typed field of Live the core acts on."""
    from planner.core.diff import decide
    from planner.resources import Resource

    desired = Resource(API, {"deploy": {"port": 8000}}, target="mem")
    live = Live(API, {"deploy": {"port": 8000}}, HEALTHY, "mem", "memory")
    assert decide(desired, live).action is Action.NOOP
    change = decide(desired, dataclasses.replace(live, strays=("b2",)))
    assert (change.action, change.reason) == (Action.UPDATE, "update_because_strays")
    from providers.base import Provider

    assert not any(hasattr(cls, "plan") for cls in (Provider, registry.load("local"), registry.load("iotedge")))


# -- removed targets --------------------------------------------------------------------------------

def test_removing_a_target_plans_the_deletion_of_its_services_and_an_unreadable_one_is_named(tmp_path: Path):
    two = manifest(targets="mem: {provider: memory}\n  old: {provider: memory, token: sixteen-characters}").replace(
        "services:\n", "services:\n  two-api: {models: [m], environment: e, source_dir: src, entry_script: score.py, "
        "target: old}\n")
    path = make_project(tmp_path, two)
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    assert applied_record()["old"] == {"provider": "memory"}      # the secret token is never written down
    path.write_text(manifest())                               # target `old` and its service are gone
    plan = run_cli("plan", "-f", str(path))
    assert plan.code == 0 and "service.two-api will be destroyed" in plan.out, plan.out
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    assert "old" not in applied_record()
    assert not any(name == "two-api" for services in memory_provider.STATE.values() for name in services)

    # A removed target that cannot be read any more is named in the plan, never silently forgotten.
    path.write_text(two)
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    registry_ = ModelRegistry(open_repository("proto", None))
    registry_.set_applied_targets({**applied_record(), "old": {"provider": "memory", "unreachable": True}})
    path.write_text(manifest())
    plan = run_cli("plan", "-f", str(path))
    assert "target 'old' (memory) was removed from the manifest but its services could not be read" in plan.out, \
        plan.out
    assert "service.two-api" not in plan.out.split("Warning")[0]


def applied_record() -> dict:
    """The record of applied targets in the project's (embedded) registry, where every runner reads it."""
    return ModelRegistry(open_repository("proto", None)).applied_targets() or {}
