"""`mlops reconcile` semantics on the in-memory provider (fast, many cases): observe changes
nothing, heal restores only what was deployed, sync applies the manifest, prune and its guard,
suspend, backoff and giving up, locks, metrics and transition-only notifications."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from memory_provider import STATE, MemoryProvider
from support import make_project, memory_manifest, run_cli

from planner.lock import apply_lock
from planner.project import Project
from planner.reconcile import DRIFTED, IN_SYNC, ORPHAN, PENDING, Options, Reconciler
from planner.reconcile_state import Backoff, read_memory
from providers import registry
from providers.base import ProviderError

MANIFEST = memory_manifest("demo")


class FlakyProvider(MemoryProvider):
    """Creates fail while ``BROKEN`` is set: a heal that cannot succeed though the manifest is unchanged."""

    kind: ClassVar[str] = "memory"
    BROKEN: ClassVar[bool] = False
    creates: ClassVar[int] = 0

    def create(self, desired, events):
        FlakyProvider.creates += 1
        if FlakyProvider.BROKEN:
            raise ProviderError(f"{desired.address}: the node is out of memory")
        return super().create(desired, events)


@pytest.fixture(autouse=True)
def _flaky():
    registry.register("memory", FlakyProvider)
    FlakyProvider.BROKEN, FlakyProvider.creates = False, 0
    yield
    registry.unregister("memory")
    STATE.clear()


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = make_project(tmp_path, MANIFEST)
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    return path


def provider(manifest: Path) -> MemoryProvider:
    return Project.load(manifest).providers["mem"]


def instances(manifest: Path) -> dict[str, object]:
    return {name: live.details["instance"] for name, live in provider(manifest)._services.items()}


def lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def cycle_of(out: str) -> dict:
    [cycle] = [e for e in lines(out) if e["event"] == "cycle"]
    return cycle


def test_observe_reports_a_killed_service_as_drifted_exits_2_and_changes_nothing(manifest: Path):
    assert run_cli("reconcile", "--once", "-f", str(manifest)).code == 0
    provider(manifest).kill("one-api")
    before = instances(manifest)
    result = run_cli("reconcile", "--once", "-f", str(manifest))
    assert result.code == 2, result.err
    cycle = cycle_of(result.out)
    assert cycle["drifted"] == ["one-api"] and cycle["unhealthy"] == ["one-api"] and cycle["changes"] == {}
    assert "service.one-api: drifted (Failed" in result.err
    assert instances(manifest) == before
    assert provider(manifest)._services["one-api"].status == "Failed"


def test_heal_restores_a_killed_service_and_then_all_is_in_sync(manifest: Path):
    provider(manifest).kill("one-api")
    result = run_cli("reconcile", "--once", "--mode", "heal", "-f", str(manifest))
    assert result.code == 0, result.err
    changes = [e for e in lines(result.out) if e["event"] == "change"]
    assert [(c["address"], c["result"]) for c in changes] == [("service.one-api", "ok")]
    assert provider(manifest)._services["one-api"].status == "Healthy"
    assert run_cli("reconcile", "--once", "-f", str(manifest)).code == 0


def test_heal_never_applies_a_new_desired_change_but_sync_does(manifest: Path):
    manifest.write_text(manifest.read_text().replace("port: 8002", "port: 8003"))
    before = instances(manifest)
    result = run_cli("reconcile", "--once", "--mode", "heal", "-f", str(manifest))
    assert result.code == 2 and cycle_of(result.out)["pending"] == ["two-api"]
    assert "service.two-api: changes pending" in result.err
    assert instances(manifest) == before
    result = run_cli("reconcile", "--once", "--mode", "sync", "-f", str(manifest))
    assert result.code == 0, result.err
    assert provider(manifest)._services["two-api"].spec["deploy"]["port"] == 8003


def test_a_live_service_changed_behind_our_back_is_drift_and_healed(manifest: Path):
    assert run_cli("reconcile", "--once", "-f", str(manifest)).code == 0   # the reconciler sees it in sync
    services = provider(manifest)._services
    live = services["two-api"]
    import dataclasses

    services["two-api"] = dataclasses.replace(live, spec={**live.spec, "deploy": {**live.spec["deploy"],
                                                                                  "replicas": 0}})
    result = run_cli("reconcile", "--once", "--mode", "heal", "-f", str(manifest))
    assert result.code == 0, result.err
    assert provider(manifest)._services["two-api"].spec["deploy"]["replicas"] == 1


def test_a_change_no_reconciler_saw_coming_is_pending_not_healed(manifest: Path):
    """Without history or a fingerprint label, a changed live spec may be a new desired state: hands off."""
    import dataclasses

    services = provider(manifest)._services
    live = services["two-api"]
    services["two-api"] = dataclasses.replace(live, spec={**live.spec, "deploy": {**live.spec["deploy"],
                                                                                  "replicas": 0}})
    result = run_cli("reconcile", "--once", "--mode", "heal", "-f", str(manifest))
    assert result.code == 2 and "service.two-api: changes pending" in result.err
    assert services["two-api"].spec["deploy"]["replicas"] == 0
    # A target that labels what it runs with its fingerprint proves it: then it is drift.
    desired = Project.load(manifest).desired()
    fingerprint = next(r.fingerprint for a, r in desired.items() if a.name == "two-api")
    services["two-api"] = dataclasses.replace(services["two-api"],
                                              details={**live.details, "fingerprint_label": fingerprint})
    result = run_cli("reconcile", "--once", "--mode", "heal", "-f", str(manifest))
    assert result.code == 0, result.err
    assert provider(manifest)._services["two-api"].spec["deploy"]["replicas"] == 1


def test_sync_deletes_only_with_prune_and_never_every_service(manifest: Path):
    text = manifest.read_text()
    manifest.write_text(text[:text.index("  two-api:")])
    result = run_cli("reconcile", "--once", "--mode", "sync", "-f", str(manifest))
    assert result.code == 2 and "service.two-api: not in manifest" in result.err
    assert "two-api" in instances(manifest)
    assert run_cli("reconcile", "--once", "--mode", "sync", "--prune", "-f", str(manifest)).code == 0
    assert set(instances(manifest)) == {"one-api"}
    # The last one: pruning it would leave nothing; refused.
    manifest.write_text(text[:text.index("services:")] + "services: {}\n")
    result = run_cli("reconcile", "--once", "--mode", "sync", "--prune", "-f", str(manifest))
    assert result.code == 2 and "refusing to delete every live service" in result.err
    assert set(instances(manifest)) == {"one-api"}


def test_prune_is_refused_outside_sync(manifest: Path):
    result = run_cli("reconcile", "--once", "--prune", "-f", str(manifest))
    assert result.code == 1 and "--prune deletes only with --mode sync" in result.err


def test_a_suspended_service_is_reported_and_left_alone(manifest: Path):
    manifest.write_text(manifest.read_text().replace(
        "deploy: {port: 8001}}", "deploy: {port: 8001}, reconcile: {suspend: true}}"))
    provider(manifest).kill("one-api")
    result = run_cli("reconcile", "--once", "--mode", "heal", "-f", str(manifest))
    assert result.code == 2
    assert "service.one-api: drifted (Failed) [suspended]" in result.err
    assert "suspended in the manifest" in result.err
    assert provider(manifest)._services["one-api"].status == "Failed"


def test_suspend_must_be_a_boolean(manifest: Path):
    manifest.write_text(manifest.read_text().replace(
        "deploy: {port: 8001}}", "deploy: {port: 8001}, reconcile: {suspend: maybe}}"))
    result = run_cli("reconcile", "--once", "-f", str(manifest))
    assert result.code == 1 and "Traceback" not in result.err
    assert "services.one-api.reconcile.suspend" in result.err and "ml.yaml:" in result.err


def test_failed_heals_back_off_then_stop_until_the_desired_state_changes(manifest: Path):
    now = [1000.0]
    reconciler = Reconciler(manifest, Options("heal", max_heals=3, backoff=Backoff(10, 3, 25)), clock=lambda: now[0])
    provider(manifest).kill("one-api")
    FlakyProvider.BROKEN, FlakyProvider.creates = True, 0
    results = []
    for advance in (0, 5, 6, 30, 30, 30):
        now[0] += advance
        report = reconciler.cycle()
        results.append([(c.address, c.result) for c in report.changes])
    assert results == [
        [("service.one-api", "failed")],      # 1st failure: next attempt after 10 s
        [("service.one-api", "backoff")],     # 5 s later: still waiting
        [("service.one-api", "failed")],      # 11 s: 2nd failure, next after 30 s (capped at 25)
        [("service.one-api", "failed")],      # 3rd failure: give up on this desired state
        [("service.one-api", "stopped")],
        [("service.one-api", "stopped")],
    ]
    assert FlakyProvider.creates == 3
    assert "3 heals of this desired state failed" in reconciler.cycle().changes[0].error
    # The cause is fixed, but the desired state is the same: still stopped.
    FlakyProvider.BROKEN = False
    assert [c.result for c in reconciler.cycle().changes] == ["stopped"]
    # A new desired state (here: a new port) starts over; it is a new change, so it takes sync.
    manifest.write_text(manifest.read_text().replace("port: 8001", "port: 8011"))
    report = Reconciler(manifest, Options("sync"), clock=lambda: now[0]).cycle()
    assert [(c.address, c.result) for c in report.changes] == [("service.one-api", "ok")]
    memory = read_memory(manifest.parent / ".mlops").resources["service.one-api"]
    assert memory.failures == 0 and memory.next_attempt == 0


def test_a_successful_heal_resets_the_backoff(manifest: Path):
    now = [0.0]
    reconciler = Reconciler(manifest, Options("heal", backoff=Backoff(10, 3, 600)), clock=lambda: now[0])
    provider(manifest).kill("one-api")
    FlakyProvider.BROKEN = True
    assert [c.result for c in reconciler.cycle().changes] == ["failed"]
    FlakyProvider.BROKEN = False
    now[0] += 11
    assert [c.result for c in reconciler.cycle().changes] == ["ok"]
    provider(manifest).kill("one-api")
    FlakyProvider.BROKEN = True
    assert [c.result for c in reconciler.cycle().changes] == ["failed"]
    assert read_memory(manifest.parent / ".mlops").resources["service.one-api"].failures == 1


def test_heal_waits_for_the_apply_lock_and_writes_nothing_while_another_holds_it(manifest: Path):
    provider(manifest).kill("one-api")
    with apply_lock(manifest.parent / ".mlops", "apply"):
        result = run_cli("reconcile", "--once", "--mode", "heal", "-f", str(manifest))
    assert result.code == 2 and "another mlops apply holds the lock" in result.err
    assert provider(manifest)._services["one-api"].status == "Failed"
    assert run_cli("reconcile", "--once", "--mode", "heal", "-f", str(manifest)).code == 0


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        return


@pytest.fixture
def webhook():
    Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", Hook.received
    server.shutdown()
    server.server_close()


def test_notifications_fire_on_transitions_only(manifest: Path, webhook):
    url, received = webhook

    def events() -> list[str]:
        out = [e["event"] + ":" + (e.get("service") or e.get("address")) for batch in received
               for e in batch["events"]]
        received.clear()
        return out

    args = ("reconcile", "--once", "--notify-url", url, "-f", str(manifest))
    run_cli(*args)
    assert events() == []                                   # in sync from the start: nothing to say
    provider(manifest).kill("one-api")
    run_cli(*args)
    assert events() == ["drift_appeared:one-api", "health_changed:one-api"]
    run_cli(*args)
    assert events() == []                                   # still drifted: no news
    run_cli(*args, "--mode", "heal", "--backoff", "0")
    assert events() == ["drift_cleared:one-api", "health_changed:one-api", "healed:service.one-api"]
    assert all(batch["project"] == "demo" for batch in received)


def test_metrics_are_served_on_loopback(manifest: Path):
    from planner.reconcile_signals import Metrics, MetricsServer
    from providers.http import request

    provider(manifest).kill("one-api")
    metrics = Metrics()
    metrics.record(Reconciler(manifest, Options()).cycle())
    with MetricsServer(metrics, 0) as server:
        text = request(f"http://127.0.0.1:{server.port}/metrics").body.decode()
    assert 'mlops_resource_drift{service="one-api",target="mem"} 1' in text
    assert 'mlops_resource_drift{service="two-api",target="mem"} 0' in text
    assert 'mlops_resource_health{service="one-api",target="mem",state="Failed"} 1' in text
    assert "mlops_reconcile_cycles_total 1" in text and "mlops_reconcile_duration_seconds " in text
    assert "mlops_last_success_timestamp_seconds " in text


def test_sync_state_names(manifest: Path):
    provider(manifest).kill("one-api")
    manifest.write_text(manifest.read_text().replace("port: 8002", "port: 8003"))
    report = Reconciler(manifest, Options()).cycle()
    assert {s.name: s.sync for s in report.services} == {"one-api": DRIFTED, "two-api": PENDING}
    assert IN_SYNC != ORPHAN


def test_an_unreachable_target_is_an_error_line_and_nothing_is_changed(manifest: Path):
    broken = "mem: {provider: memory, unreachable: true, token: tok-123456789}"
    manifest.write_text(manifest.read_text().replace("mem: {provider: memory}", broken))
    result = run_cli("reconcile", "--once", "--mode", "heal", "-f", str(manifest))
    assert result.code == 1 and "Traceback" not in result.err
    assert "Error: target 'mem' (memory) is unreachable: the memory API does not answer" in result.err
    assert "tok-123456789" not in result.out + result.err
    assert cycle_of(result.out)["error"]


def test_a_bad_manifest_is_one_line_per_problem(manifest: Path):
    manifest.write_text(manifest.read_text().replace("environment: e, source_dir: src, entry_script: score.py, "
                                                     "deploy: {port: 8001}", "environment: nope, source_dir: src, "
                                                     "entry_script: score.py, deploy: {port: 8001}"))
    result = run_cli("reconcile", "--once", "-f", str(manifest))
    assert result.code == 1 and "Traceback" not in result.err
    assert "services.one-api.environment: unknown environment 'nope'" in result.err


def test_a_service_in_the_middle_of_its_rollout_is_not_healed(tmp_path: Path):
    import dataclasses

    rolling = "deploy: {port: 8002, state: Transitioning}"
    path = make_project(tmp_path, MANIFEST.replace("deploy: {port: 8002}", rolling))
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    assert run_cli("reconcile", "--once", "-f", str(path)).code == 0   # seen as deployed, rolling out
    services = provider(path)._services
    live = services["two-api"]
    scaled = {**live.spec, "deploy": {**live.spec["deploy"], "replicas": 0}}
    services["two-api"] = dataclasses.replace(live, spec=scaled)
    result = run_cli("reconcile", "--once", "--mode", "heal", "-f", str(path))
    assert result.code == 2
    [change] = [e for e in lines(result.out) if e["event"] == "change"]
    assert change["result"] == "rollout" and "rollout in progress" in change["error"]
    assert services["two-api"].spec["deploy"]["replicas"] == 0
