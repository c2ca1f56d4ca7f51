"""`mlops reconcile` end to end on the real local target: real detached processes, real HTTP on
127.0.0.1, the real `mlops` command in subprocesses, a real git repository."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import echo_manifest, make_project, project_data

pytestmark = pytest.mark.slow

FLAG = "__FAIL_FLAG__"
SLOW = "__SLOW_FLAG__"
SCORE = '''\
import json, os, time

def init():
    global prefix
    if os.path.exists(__SLOW_FLAG__):
        time.sleep(6)   # a slow start: the heal holds the lock a while
    if os.path.exists(__FAIL_FLAG__):
        raise RuntimeError("the disk holding the cache is gone")
    prefix = open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt")).read().strip()

def run(raw_data):
    return {"model": prefix, "echo": json.loads(raw_data)}
'''
MANIFEST = echo_manifest("recon", deploy="{port: auto, auth: key, startup_timeout_s: 60}")


def mlops(*args: str, cwd: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"mlops {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def spawn(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "planner.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=_env())


def processes_under(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if str(path) in cmdline and stat[stat.rindex(")") + 2] != "Z" and "planner.cli" not in cmdline:
                found.append(int(entry.name))
    return found


@pytest.fixture
def project(tmp_path: Path):
    root = tmp_path / "repo"
    make_project(root, MANIFEST, score=SCORE.replace(FLAG, repr(str(tmp_path / "broken")))
                 .replace(SLOW, repr(str(tmp_path / "slow"))))
    mlops("apply", "--auto-approve", cwd=root)
    yield root
    mlops("destroy", "--auto-approve", cwd=root, check=False)
    for pid in processes_under(tmp_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def status(root: Path) -> dict:
    [row] = json.loads(mlops("status", "--json", cwd=root).stdout)["services"]
    return row


def kill_service(root: Path) -> None:
    for pid in processes_under(root):
        os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while processes_under(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status(root)["state"] == "Failed"


def events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def keys(root: Path) -> str:
    return (project_data(root) / "keys" / "echo-api.json").read_text()


def test_observe_reports_a_killed_service_as_drifted_and_changes_nothing(project: Path):
    assert mlops("reconcile", "--once", cwd=project).returncode == 0
    kill_service(project)
    records = {p: p.read_bytes() for p in (project_data(project) / "local").glob("*.json")}
    result = mlops("reconcile", "--once", "--mode", "observe", cwd=project, check=False)
    assert result.returncode == 2, result.stderr
    [cycle] = [e for e in events(result.stdout) if e["event"] == "cycle"]
    assert cycle["drifted"] == ["echo-api"] and cycle["unhealthy"] == ["echo-api"] and cycle["changes"] == {}
    assert "service.echo-api: drifted (Failed: process exited" in result.stderr
    assert processes_under(project) == []
    assert {p: p.read_bytes() for p in (project_data(project) / "local").glob("*.json")} == records


def test_heal_restores_a_killed_service_on_the_same_port_with_the_same_keys(project: Path):
    before, key_file = status(project), keys(project)
    kill_service(project)
    result = mlops("reconcile", "--once", "--mode", "heal", cwd=project, check=False)
    assert result.returncode == 0, result.stderr
    changes = [e for e in events(result.stdout) if e["event"] == "change"]
    assert [(c["address"], c["result"]) for c in changes] == [("service.echo-api", "ok")]
    after = status(project)
    assert after["state"] == "Healthy" and after["endpoint"] == before["endpoint"]
    assert keys(project) == key_file
    assert json.loads(mlops("call", "echo-api", "--data", '{"x": 1}', cwd=project).stdout)["echo"] == {"x": 1}


def test_a_heal_that_fails_three_times_stops_and_says_so(project: Path, tmp_path: Path):
    kill_service(project)
    (tmp_path / "broken").write_text("")
    heal = ("reconcile", "--once", "--mode", "heal", "--backoff", "0")
    for attempt in (1, 2, 3):
        result = mlops(*heal, cwd=project, check=False)
        assert result.returncode == 1, result.stderr
        [change] = [e for e in events(result.stdout) if e["event"] == "change"]
        assert change["result"] == "failed" and change["failures"] == attempt
        assert "the disk holding the cache is gone" in change["error"]
    assert "3 failed heals of this desired state: not trying again until the manifest changes it" in result.stderr
    result = mlops(*heal, cwd=project, check=False)
    assert result.returncode == 2
    [change] = [e for e in events(result.stdout) if e["event"] == "change"]
    assert change["result"] == "stopped"
    assert "3 heals of this desired state failed; not trying again until the manifest changes it" in result.stderr
    assert processes_under(project) == []      # it really did not try a fourth time
    # The cause goes away, the desired state stays: still stopped. A new desired state is a sync.
    (tmp_path / "broken").unlink()
    assert mlops(*heal, cwd=project, check=False).returncode == 2
    (project / "ml.yaml").write_text(MANIFEST.replace("startup_timeout_s: 60", "startup_timeout_s: 61"))
    result = mlops("reconcile", "--once", "--mode", "sync", cwd=project, check=False)
    assert result.returncode == 0, result.stderr
    assert status(project)["state"] == "Healthy"


def wait_for(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_two_reconcilers_at_once_never_write_concurrently(project: Path, tmp_path: Path):
    kill_service(project)
    (tmp_path / "slow").write_text("")
    holder = project / ".mlops" / "apply.lock.json"
    first = spawn("reconcile", "--once", "--mode", "heal", cwd=project)
    try:
        wait_for(lambda: holder.exists() or first.poll() is not None)
        second = mlops("reconcile", "--once", "--mode", "heal", cwd=project, check=False)
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert holder.exists() is False
    # The second one saw the drift, found the lock taken, and wrote nothing.
    assert second.returncode == 2, second.stderr
    assert "another mlops reconcile heal holds the lock" in second.stderr
    assert [e for e in events(second.stdout) if e["event"] == "change"] == []
    assert [e["result"] for e in events(out) if e["event"] == "change"] == ["ok"]
    assert status(project)["state"] == "Healthy"


def test_sigterm_finishes_the_current_change_and_leaves_a_state_the_next_plan_reads(project: Path, tmp_path: Path):
    kill_service(project)
    (tmp_path / "slow").write_text("")
    holder = project / ".mlops" / "apply.lock.json"
    proc = spawn("reconcile", "--mode", "heal", "--interval", "3600", cwd=project)
    try:
        # The heal has started: the new instance (or its port keeper) runs, init() is still sleeping.
        wait_for(lambda: processes_under(project) or proc.poll() is not None)
        assert proc.poll() is None and holder.exists()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Received SIGTERM: finishing the current change, then exiting." in err
    assert [e["result"] for e in events(out) if e["event"] == "change"] == ["ok"]
    plan = mlops("plan", "--detailed-exitcode", cwd=project, check=False)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert status(project)["state"] == "Healthy"


def test_a_running_reconciler_serves_metrics_on_loopback_and_stops_on_sigterm(project: Path):
    from providers.http import request

    kill_service(project)
    proc = spawn("reconcile", "--metrics-port", "0", "--interval", "0.5", "--jitter", "0.5", cwd=project)
    try:
        url = None
        cycles = 0
        for line in proc.stdout:   # the server is up before the first cycle; wait for two cycles
            event = json.loads(line)
            url = event.get("url", url)
            cycles += event["event"] == "cycle"
            if cycles == 2:
                break
        assert url and url.startswith("http://127.0.0.1:")
        text = request(url).body.decode()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert 'mlops_resource_drift{service="echo-api",target="local"} 1' in text
    assert 'mlops_resource_health{service="echo-api",target="local",state="Failed"} 1' in text
    assert "mlops_reconcile_cycles_total 2" in text or "mlops_reconcile_cycles_total 3" in text
    assert status(project)["state"] == "Failed"     # observe (the default) changed nothing
