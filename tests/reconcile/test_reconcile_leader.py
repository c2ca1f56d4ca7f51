"""Replicas of `mlops reconcile` on Kubernetes elect one leader on a Lease (the API double, as the
other reconcile Kubernetes test uses): only the leader writes, a follower observes, and takes over
when the leader leaves or its Lease expires; a leader that lost its Lease stops writing."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import git
import pytest
from support import ROOT

sys.path.insert(0, str(ROOT / "tests" / "kubernetes"))
import k8s_fixtures  # noqa: E402
from k8s_fixtures import _engine_or_skip, make_provider, running_double  # noqa: E402

api_double = k8s_fixtures.api_double


def lease(provider, name: str) -> dict | None:
    from providers.kubernetes.client import NotFound

    try:
        return provider.cluster.get("Lease", name, provider.namespace)
    except NotFound:
        return None


def write_lease(provider, name: str, holder: str, renewed: dt.datetime) -> None:
    """Another replica's write (or a stale one): what a second process would leave behind."""
    current = lease(provider, name)
    stamp = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    meta = {"name": name, "namespace": provider.namespace}
    if current:
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
    provider.cluster.apply({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30, "renewTime": stamp,
                                     "acquireTime": stamp}}, manager="someone-else")


def test_one_leader_a_follower_waits_and_takes_over_when_it_leaves(api_double, tmp_path: Path):
    provider = make_provider(api_double, tmp_path, project="lead")
    first = provider.leader_lease("reconcile-lead", "mlops reconcile")
    second = provider.leader_lease("reconcile-lead", "mlops reconcile")
    try:
        assert first.try_lead() is None and first.leading
        assert second.try_lead() == first.identity and not second.leading
        assert first.try_lead() is None                          # still the leader next cycle
        assert first.check() is None
        assert second.check() == "not the leader"
        assert lease(provider, "reconcile-lead")["spec"]["holderIdentity"] == first.identity
        first.release()
        assert lease(provider, "reconcile-lead") is None         # gone at once: no wait for the duration
        assert second.try_lead() is None and second.leading
        assert first.try_lead() == second.identity
    finally:
        first.release()
        second.release()
    assert lease(provider, "reconcile-lead") is None


def test_an_expired_lease_is_taken_over_and_the_old_leader_stops_writing(api_double, tmp_path: Path):
    provider = make_provider(api_double, tmp_path, project="expire")
    old = provider.leader_lease("reconcile-expire", "mlops reconcile")
    new = provider.leader_lease("reconcile-expire", "mlops reconcile")
    try:
        assert old.try_lead() is None
        # The old leader paused (a long GC, a frozen node) past the duration: its Lease looks stale.
        write_lease(provider, "reconcile-expire", old.identity, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
        assert new.try_lead() is None and new.leading
        assert lease(provider, "reconcile-expire")["spec"]["holderIdentity"] == new.identity
        refused = old.check()                                      # asked right before its next write
        assert refused is not None and "lost the leader Lease" in refused and not old.leading
        assert old.try_lead() == new.identity
        old.release()                                              # must not delete the new leader's Lease
        assert lease(provider, "reconcile-expire")["spec"]["holderIdentity"] == new.identity
    finally:
        old.release()
        new.release()


def test_a_bad_lease_name_is_one_line(api_double, tmp_path: Path):
    from planner.errors import MlopsError

    provider = make_provider(api_double, tmp_path, project="bad")
    with pytest.raises(MlopsError, match="a Lease name is lowercase"):
        provider.leader_lease("Not_A_Name", "mlops reconcile")


# -- two real reconciler processes, two checkouts (as two pods), the double with its kubelet ---------------

def _env(kubeconfig: Path) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(kubeconfig),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def mlops(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL, env=env)


def events(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def wait_for(predicate, logs: dict[str, Path], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out; " + "\n".join(
            f"--- {name}:\n{path.read_text()[-3000:]}" for name, path in logs.items())
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.docker
def test_two_replicas_only_the_leader_heals_and_the_follower_takes_over(tmp_path: Path, tmp_path_factory):
    _engine_or_skip()
    if not os.environ.get("MLOPS_TEST_REGISTRY"):
        pytest.skip("no local registry: MLOPS_TEST_REGISTRY is not set (run .ci/docker-up.sh)")
    from kubernetes import client, config

    with running_double(tmp_path_factory.mktemp("k8s-leader"), kubelet=True) as cluster:
        env = _env(cluster.kubeconfig)
        cfg = client.Configuration()
        config.load_kube_config(str(cluster.kubeconfig), client_configuration=cfg)
        apps = client.AppsV1Api(client.ApiClient(cfg))
        origin = tmp_path / "origin"
        shutil.copytree(ROOT / "examples" / "kubernetes", origin)
        manifest = origin / "ml.yaml"
        text = manifest.read_text()
        first_line = next(line for line in text.splitlines() if line.startswith("project:"))
        manifest.write_text(text.replace(first_line, f"project: lead-{uuid.uuid4().hex[:6]}"))
        repo = git.Repo.init(origin)
        repo.git.add(A=True)
        repo.index.commit("initial")
        applied = mlops("apply", "--auto-approve", "-f", "ml.yaml", cwd=origin, env=env)
        assert applied.returncode == 0, applied.stderr
        replicas = {}
        for name in ("a", "b"):   # each replica its own checkout and state folder, as two pods have
            git.Repo.clone_from(origin, tmp_path / name)
            replicas[name] = tmp_path / name
        procs: dict[str, subprocess.Popen] = {}
        logs = {name: tmp_path / f"{name}.log" for name in replicas}
        try:
            apps.patch_namespaced_deployment("diabetes-api", "ml", {"spec": {"replicas": 0}},
                                             field_manager="kubectl-scale")
            for name, root in replicas.items():
                with logs[name].open("w") as out:
                    procs[name] = subprocess.Popen(
                        [sys.executable, "-m", "planner.cli", "reconcile", "--mode", "heal", "--interval", "1",
                         "--jitter", "0", "--leader-elect", "reconcile-leader", "-f", "ml.yaml"],
                        cwd=root, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

            def changes(name: str) -> list[dict]:
                return [e for e in events(logs[name]) if e["event"] == "change"]

            wait_for(lambda: any(c["result"] == "ok" for n in replicas for c in changes(n)), logs)
            [leader] = [n for n in replicas if changes(n)]
            [follower] = [n for n in replicas if n != leader]
            wait_for(lambda: sum(e["event"] == "cycle" for e in events(logs[follower])) >= 2, logs)
            assert apps.read_namespaced_deployment("diabetes-api", "ml").spec.replicas == 2
            cycles = [e for e in events(logs[follower]) if e["event"] == "cycle"]
            assert {c["role"] for c in cycles} == {"follower"} and changes(follower) == []
            assert [(c["address"], c["result"]) for c in changes(leader)] == [("service.diabetes-api", "ok")]

            procs[leader].terminate()                     # SIGTERM: it releases the Lease on the way out
            assert procs[leader].wait(timeout=120) == 0

            def leading_cycles() -> list[dict]:
                return [e for e in events(logs[follower]) if e["event"] == "cycle" and e["role"] == "leader"]

            wait_for(lambda: len(leading_cycles()) >= 2, logs)   # it took over; nothing else to do
            assert changes(follower) == [], "the new leader changed something nobody had touched"
            assert all(c["exit_code"] == 0 for c in leading_cycles()), leading_cycles()
            apps.patch_namespaced_deployment("diabetes-api", "ml", {"spec": {"replicas": 0}},
                                             field_manager="kubectl-scale")
            wait_for(lambda: any(c["result"] == "ok" for c in changes(follower)), logs)
            assert [(c["address"], c["result"]) for c in changes(follower)] == [("service.diabetes-api", "ok")]
            assert apps.read_namespaced_deployment("diabetes-api", "ml").spec.replicas == 2
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=120)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            mlops("destroy", "--auto-approve", "-f", "ml.yaml", cwd=origin, env=env)


def test_leader_election_on_a_target_without_leases_is_one_line(memory_target, tmp_path: Path):
    from support import make_project, run_cli

    manifest = make_project(tmp_path, "version: 1\nproject: lonely\ntargets:\n  mem: {provider: memory}\nmodels:\n"
                                      "  m: {path: model.txt}\nservices: {}\n")
    result = run_cli("reconcile", "--once", "--leader-elect", "rec", "-f", str(manifest))
    assert result.code == 1 and "no target of" in result.err and "offers a leader Lease" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    wrong = run_cli("reconcile", "--once", "--leader-elect", "rec", "--leader-target", "nope", "-f", str(manifest))
    assert wrong.code == 1 and "--leader-target 'nope' is not a target" in wrong.err
