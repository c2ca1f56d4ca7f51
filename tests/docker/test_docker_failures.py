"""What goes wrong on `engine: docker`, against a real engine: a container killed or removed behind
the tool's back, a failing build, an init() crash, no engine at all; and pushing to a registry."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from docker_fixtures import (  # noqa: F401 - fixtures
    commit_all,
    containers_of,
    docker_manifest,
    engine,
    images_of,
    project_name,
    registry,
)
from support import Hammer, make_project, run_cli

CRASHING_SCORE = '''\
def init():
    raise RuntimeError("model file is corrupt: cannot unpickle")

def run(raw_data):
    return {}
'''


def ok(*args: str) -> str:
    result = run_cli(*args)
    assert result.code == 0, f"mlops {' '.join(args)} exited {result.code}\n{result.out}\n{result.err}"
    return result.out


def status_of(manifest: Path) -> dict:
    rows = json.loads(ok("status", "--json", "-f", str(manifest)))["services"]
    return {r["service"]: r for r in rows}["echo-api"]


@pytest.mark.docker
def test_a_killed_container_is_failed_and_replaced_by_the_next_apply(tmp_path, engine, project_name):  # noqa: F811
    manifest = make_project(tmp_path, docker_manifest(project_name))
    f = ["-f", str(manifest)]
    ok("apply", "--auto-approve", *f)
    [container] = containers_of(engine, project_name)
    container.kill()          # behind the tool's back; the restart policy leaves a killed container down
    container.wait(timeout=30)

    row = status_of(manifest)
    assert row["state"] == "Failed"
    assert "container exited (code 137)" in row["message"]
    planned = run_cli("plan", "--detailed-exitcode", *f)
    assert planned.code == 2 and "Failed" in planned.out

    ok("apply", "--auto-approve", *f)
    [replacement] = containers_of(engine, project_name)
    assert replacement.id != container.id and replacement.status == "running"
    assert status_of(manifest)["state"] == "Healthy"
    assert json.loads(ok("call", "echo-api", *f))["model"] == "v1"
    ok("destroy", "--auto-approve", *f)
    assert containers_of(engine, project_name) == [] and images_of(engine, project_name) == []


@pytest.mark.docker
def test_a_container_removed_by_hand_is_missing_and_recreated(tmp_path, engine, project_name):  # noqa: F811
    manifest = make_project(tmp_path, docker_manifest(project_name))
    f = ["-f", str(manifest)]
    ok("apply", "--auto-approve", *f)
    endpoint = status_of(manifest)["endpoint"]
    [container] = containers_of(engine, project_name)
    container.remove(force=True)

    # Its port keeper still holds the port clients know: shown, and the service comes back on it.
    row = status_of(manifest)
    assert row["state"] == "Failed" and "only a port keeper runs" in row["message"], row
    planned = run_cli("plan", *f)
    assert planned.code == 0 and "service.echo-api must be replaced" in planned.out, planned.out
    ok("apply", "--auto-approve", *f)
    assert status_of(manifest)["state"] == "Healthy" and status_of(manifest)["endpoint"] == endpoint
    ok("destroy", "--auto-approve", *f)
    assert _live_keepers(tmp_path) == []


@pytest.mark.docker
def test_a_failing_build_shows_the_pip_error(tmp_path, engine, project_name):  # noqa: F811
    manifest = make_project(tmp_path, docker_manifest(project_name, pip="[no-such-package-mlops-test==0.0.1]"))
    result = run_cli("apply", "--auto-approve", "-f", str(manifest))
    assert result.code == 1
    [line] = [ln for ln in result.err.splitlines() if ln.startswith("Error: service.echo-api")]
    assert "image build of" in line and "(pip install)" in line, line
    assert "No matching distribution found for no-such-package-mlops-test==0.0.1" in line, line
    assert "mlops logs --build echo-api" in line
    assert containers_of(engine, project_name) == []

    from planner.build import build_log
    from planner.project import Project

    log = list(build_log(Project.load(manifest), "echo-api"))
    assert log[0].startswith("--- mlops: building ")
    assert any("Could not find a version that satisfies the requirement" in ln for ln in log)


@pytest.mark.docker
def test_an_init_crash_shows_the_log_lines(tmp_path, engine, project_name):  # noqa: F811
    manifest = make_project(tmp_path, docker_manifest(project_name), score=CRASHING_SCORE)
    result = run_cli("apply", "--auto-approve", "-f", str(manifest))
    assert result.code == 1
    [line] = [ln for ln in result.err.splitlines() if ln.startswith("Error: service.echo-api")]
    assert "the container exited during start-up" in line, line
    # One clean line: the exception in the user's file (not the image's copy), and where the rest is.
    assert "RuntimeError: model file is corrupt: cannot unpickle (src/score.py, line 2, in init)" in line, line
    assert "`mlops logs echo-api`" in line and "^" not in line and " | " not in line and "azureml-app" not in line
    assert containers_of(engine, project_name) == [], "a container that failed to start is removed"
    assert status_of(manifest)["state"] == "NotDeployed"
    logs = run_cli("logs", "echo-api", "-f", str(manifest))
    assert logs.code == 0 and "the log of its last start attempt (instance " in logs.err, logs.err
    assert "Traceback" in logs.out and "RuntimeError: model file is corrupt" in logs.out
    assert _live_keepers(manifest.parent) == [], "a failed create stops the port keeper it started"


def _live_keepers(root: Path) -> list[int]:
    from crash_harness import keeper_processes

    return sorted(keeper_processes(root / ".mlops"))


@pytest.mark.docker
def test_a_killed_port_keeper_is_healed_on_the_same_port(tmp_path, engine, project_name):  # noqa: F811
    import os
    import signal
    import time

    manifest = make_project(tmp_path, docker_manifest(project_name))
    f = ["-f", str(manifest)]
    ok("apply", "--auto-approve", *f)
    endpoint = status_of(manifest)["endpoint"]
    [keeper] = _live_keepers(tmp_path)
    os.kill(keeper, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _live_keepers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    row = status_of(manifest)
    assert row["state"] == "Unhealthy" and "port keeper" in row["message"], row
    planned = run_cli("plan", "--detailed-exitcode", *f)
    assert planned.code == 2 and "must be replaced" in planned.out, planned.out
    ok("apply", "--auto-approve", *f)
    row = status_of(manifest)
    assert row["state"] == "Healthy" and row["endpoint"] == endpoint
    assert len(_live_keepers(tmp_path)) == 1 and len(containers_of(engine, project_name)) == 1
    assert run_cli("plan", "--detailed-exitcode", *f).code == 0
    ok("destroy", "--auto-approve", *f)
    assert _live_keepers(tmp_path) == []


@pytest.mark.docker
def test_an_update_starts_the_new_container_before_the_old_one_stops(tmp_path, engine, project_name):  # noqa: F811
    manifest = make_project(tmp_path, docker_manifest(project_name, deploy="{port: auto, auth: none}"))
    f = ["-f", str(manifest)]
    ok("apply", "--auto-approve", *f)
    endpoint = status_of(manifest)["endpoint"]
    (tmp_path / "model.txt").write_text("v2\n")
    commit_all(tmp_path, "model v2")
    with Hammer(endpoint) as load:
        ok("apply", "--auto-approve", *f)
    # Nothing refused, nothing reset: both containers accept from the one listener the port keeper
    # holds, so connections queued when the old one stops are taken by the new one.
    assert load.failures == [], load.failures[:5]
    assert set(load.answers) == {"v1", "v2"}
    assert status_of(manifest)["endpoint"] == endpoint, "an update keeps the port"
    assert len(containers_of(engine, project_name)) == 1
    ok("destroy", "--auto-approve", *f)


@pytest.mark.docker
def test_push_to_the_registry_and_pull_back_by_digest(tmp_path, engine, project_name, registry):  # noqa: F811
    manifest = make_project(tmp_path, docker_manifest(project_name, registry=registry))
    f = ["-f", str(manifest)]
    ok("apply", "--auto-approve", *f)
    [container] = containers_of(engine, project_name)
    ref = container.labels["mlops.image"]
    repository, digest = ref.split("@")
    assert repository == f"{registry}/{project_name}/echo-api" and digest.startswith("sha256:")
    image_id = container.attrs["Image"]
    # The repository's own tag list (the catalog is paged: a busy registry lists it past page one).
    with urllib.request.urlopen(f"http://{registry}/v2/{project_name}/echo-api/tags/list", timeout=10) as resp:
        assert json.load(resp)["tags"], "the image was pushed with a tag"
    assert json.loads(ok("call", "echo-api", *f))["model"] == "v1"

    ok("destroy", "--auto-approve", *f)
    assert images_of(engine, project_name) == []
    pulled = engine.images.pull(ref)          # from the registry only: nothing local is left
    try:
        assert pulled.id == image_id
        assert pulled.labels["mlops.project"] == project_name
    finally:
        engine.images.remove(pulled.id, force=True)


def test_no_engine_is_one_clear_line_and_nothing_is_touched(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    manifest = make_project(tmp_path / "repo", docker_manifest("nothing-here"))
    for command in (["plan"], ["apply", "--auto-approve"]):
        result = run_cli(*command, "-f", str(manifest))
        assert result.code == 1
        assert result.err.count("\n") == 1, result.err
        assert result.err.startswith("Error: target 'box' (local, engine: docker) is unreachable: "
                                     "no Docker engine reachable at DOCKER_HOST=unix://"), result.err
        assert "start Docker" in result.err and ".ci/" not in result.err   # what to run in the user's repository
    assert not (tmp_path / "repo" / ".mlops" / "models").exists(), "nothing may be registered without an engine"
