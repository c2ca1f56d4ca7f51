"""Crash safety of the local target: `mlops apply`/`destroy` killed with SIGKILL at random moments of
create, update and destroy always converge after one recovery run (CI-sized: 51 trials; the
benchmark runs more, on the real example)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from crash_harness import listeners, our_processes, run_trials
from support import Hammer, echo_manifest, make_project, project_data

from providers.local.processes import free_port

pytestmark = pytest.mark.slow

MANIFEST = echo_manifest("crash")


def test_killed_applies_always_converge(tmp_path: Path):
    root = tmp_path / "repo"
    make_project(root, MANIFEST)
    cache = Path(os.environ["MLOPS_CACHE_DIR"])
    try:
        trials = run_trials(root, int(os.environ.get("CRASH_TRIALS", "51")), cache, max_delay=2.0)
    finally:
        from crash_harness import mlops

        mlops("destroy", "--auto-approve", cwd=root)
    failed = [t for t in trials if not t.converged]
    assert not failed, [(t.phase, round(t.delay, 2), t.problems) for t in failed[:5]]


# -- port keepers: killed, left behind by failed creates, kept across heals ----------------------------


def _status(root: Path) -> dict:
    from crash_harness import mlops

    return {r["service"]: r for r in json.loads(mlops("status", "--json", cwd=root).stdout)["services"]}


def _port_of(row: dict) -> int:
    return int(row["endpoint"].rsplit(":", 1)[1].split("/")[0])


def _keeper_pids(root: Path) -> list[int]:
    return our_processes(root / ".mlops")["keepers"]


def _applied(root: Path, *args: str) -> subprocess.CompletedProcess:
    from crash_harness import mlops

    result = mlops("apply", "--auto-approve", *args, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
        if stat and stat[stat.rindex(")") + 2] == "Z":
            return
        time.sleep(0.05)


@pytest.mark.parametrize("port", ["auto", "fixed"])
def test_a_killed_port_keeper_shows_in_the_plan_and_apply_heals_it_on_the_same_port(tmp_path: Path, port: str):
    from crash_harness import mlops

    root = tmp_path / "repo"
    fixed = free_port()
    manifest = MANIFEST.replace("auth: key", "auth: none")
    make_project(root, manifest.replace("port: auto", f"port: {fixed}") if port == "fixed" else manifest)
    try:
        _applied(root)
        before = _status(root)["echo-api"]
        [keeper] = _keeper_pids(root)
        os.kill(keeper, signal.SIGKILL)
        _wait_gone(keeper)

        plan = mlops("plan", "--detailed-exitcode", cwd=root)
        assert plan.returncode == 2, plan.stdout
        assert "port keeper of port" in plan.stdout and "must be replaced" in plan.stdout
        assert _status(root)["echo-api"]["state"] == "Unhealthy"

        with Hammer(before["endpoint"]) as hammer:
            _applied(root)
        assert not hammer.failures, hammer.failures[:3]
        after = _status(root)["echo-api"]
        assert after["state"] == "Healthy" and after["endpoint"] == before["endpoint"]
        assert listeners(_port_of(after)) == 1 and len(_keeper_pids(root)) == 1
        assert mlops("plan", "--detailed-exitcode", cwd=root).returncode == 0

        # Not frozen: a new version still gets the port.
        (root / "model.txt").write_text("v2\n")
        _applied(root)
        assert json.loads(mlops("call", "echo-api", "--data", "{}", cwd=root).stdout)["model"] == "v2"
        assert _status(root)["echo-api"]["endpoint"] == before["endpoint"]
    finally:
        mlops("destroy", "--auto-approve", cwd=root)
    assert _keeper_pids(root) == []


def test_healing_a_killed_supervisor_keeps_an_auto_port(tmp_path: Path):
    from crash_harness import mlops

    root = tmp_path / "repo"
    make_project(root, MANIFEST)
    try:
        _applied(root)
        before = _status(root)["echo-api"]
        record = json.loads((project_data(root) / "local" / "echo-api.json").read_text())
        os.kill(record["pid"], signal.SIGKILL)
        _wait_gone(record["pid"])
        assert _status(root)["echo-api"]["state"] == "Failed"
        _applied(root)
        after = _status(root)["echo-api"]
        assert after["state"] == "Healthy" and after["endpoint"] == before["endpoint"]
        assert len(_keeper_pids(root)) == 1 and listeners(_port_of(after)) == 1
    finally:
        mlops("destroy", "--auto-approve", cwd=root)
    assert _keeper_pids(root) == []


FAILING_DEPLOYS = {
    "nan memory": "memory_gb: .nan",
    "tiny memory": "memory_gb: 0.001",
    "huge environment value": "environment_variables: {BIG: " + "x" * 400_000 + "}",
    "init fails": None,
}


@pytest.mark.parametrize("case", sorted(FAILING_DEPLOYS))
def test_a_failed_create_leaves_no_port_keeper(tmp_path: Path, case: str):
    from crash_harness import mlops

    root = tmp_path / "repo"
    extra = FAILING_DEPLOYS[case]
    manifest = MANIFEST.replace("auth: key}", f"auth: key, {extra}}}") if extra else MANIFEST
    score = "def init():\n    raise ValueError('no model here')\n\ndef run(data):\n    return data\n"
    make_project(root, manifest, **({} if extra else {"score": score}))
    try:
        for _ in range(2):
            result = mlops("apply", "--auto-approve", cwd=root)
            assert result.returncode != 0
            assert _keeper_pids(root) == [], result.stderr[-500:]
    finally:
        mlops("destroy", "--auto-approve", cwd=root)
    assert _keeper_pids(root) == []


def test_a_keeper_left_by_a_killed_apply_is_planned_reused_and_destroyed(tmp_path: Path):
    """What an apply killed between starting the keeper and starting the instance leaves behind."""
    from crash_harness import mlops

    from providers.local.ports import PortKeepers

    root = tmp_path / "repo"
    make_project(root, MANIFEST)
    try:
        _applied(root, "--target", "model.m")
        left = PortKeepers(project_data(root), "127.0.0.1").ensure("echo-api", free_port(), root / "keeper.log",
                                                                     target="local")
        plan = mlops("plan", cwd=root)
        assert "only a port keeper runs" in plan.stdout and "must be replaced" in plan.stdout, plan.stdout
        destroy_plan = mlops("plan", "--destroy", cwd=root)
        assert "service.echo-api will be destroyed" in destroy_plan.stdout, destroy_plan.stdout
        _applied(root)
        row = _status(root)["echo-api"]
        assert row["state"] == "Healthy" and _port_of(row) == left.port
        assert _keeper_pids(root) == [left.pid]
    finally:
        mlops("destroy", "--auto-approve", cwd=root)
    assert _keeper_pids(root) == []


def test_destroy_removes_a_keeper_left_without_any_instance(tmp_path: Path):
    from crash_harness import mlops

    from providers.local.ports import PortKeepers

    root = tmp_path / "repo"
    make_project(root, MANIFEST)
    _applied(root, "--target", "model.m")
    # Left by a version that kept keeper records in the checkout: still found, and freed.
    left = PortKeepers(root / ".mlops", "127.0.0.1").ensure("echo-api", free_port(), root / "keeper.log",
                                                              target="local")
    destroyed = mlops("destroy", "--auto-approve", cwd=root)
    assert destroyed.returncode == 0, destroyed.stderr
    _wait_gone(left.pid)
    assert _keeper_pids(root) == [] and listeners(left.port) == 0
