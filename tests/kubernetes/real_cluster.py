"""The real control plane of .ci/kube-up.sh (etcd, kube-apiserver, controller-manager, scheduler and a
node agent running pods in Docker) for the tests, and extra nodes on demand.

Used when ``.ci/run`` (or a developer) started it and exported MLOPS_KUBE_STATE; otherwise the
session starts it with .ci/kube-up.sh and stops it at the end. When it cannot be started the tests
that need it skip with kube-up's reason (MLOPS_KUBE_UNAVAILABLE).
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / ".ci" / "kube" / "node_agent.py"


class RealCluster:
    """One running control plane: its admin kubeconfig, and nodes a test adds and removes."""

    def __init__(self, state: Path):
        self.state = state
        self.run = state / "run"
        self.kubeconfig = self.run / "admin.kubeconfig"
        self.agents: dict[str, subprocess.Popen] = {}

    def add_node(self, name: str, *, labels: dict[str, str] | None = None,
                 allocatable: dict[str, str] | None = None, timeout: float = 60) -> None:
        """Start a node agent for NAME (its pods run in Docker like node-1's) and wait until it is Ready."""
        from kubernetes import client, config

        index = 2 + zlib.crc32(name.encode()) % 250
        pki = self.run / "pki"
        command = [sys.executable, str(AGENT), "--kubeconfig", str(self.kubeconfig), "--node", name,
                   "--index", str(index), "--ca", str(pki / "ca.crt"), "--cert", str(pki / "node-agent.crt"),
                   "--key", str(pki / "node-agent.key"), "--delete-node"]
        command += [a for k, v in (labels or {}).items() for a in ("--label", f"{k}={v}")]
        command += [a for k, v in (allocatable or {}).items() for a in ("--resource", f"{k}={v}")]
        log = open(self.run / "log" / f"node-agent-{name}.log", "w")   # noqa: SIM115 (the agent's lifetime)
        self.agents[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        api = client.CoreV1Api(config.new_client_from_config(str(self.kubeconfig)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.agents[name].poll() is None, f"node agent {name} exited: {shlex.join(command)}"
            try:
                node = api.read_node(name)
                if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []):
                    return
            except client.ApiException:
                pass
            time.sleep(0.3)
        raise AssertionError(f"node {name} not Ready within {timeout} s")

    def remove_node(self, name: str) -> None:
        agent = self.agents.pop(name, None)
        if agent is None:
            return
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(60)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()

    def remove_nodes(self) -> None:
        for name in list(self.agents):
            self.remove_node(name)


def _running(state: Path) -> bool:
    pid = (state / "run" / "kube-apiserver.pid")
    try:
        os.kill(int(pid.read_text()), 0)
    except (OSError, ValueError):
        return False
    return (state / "run" / "admin.kubeconfig").is_file()


def _kube_up() -> dict[str, str]:
    """Run .ci/kube-up.sh and return the variables it exports."""
    done = subprocess.run(["bash", str(ROOT / ".ci" / "kube-up.sh")], capture_output=True, text=True, timeout=2400)
    found = {}
    for line in done.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export "):].split("=", 1)
            found[key] = shlex.split(value)[0] if value else ""
    if not found:
        found["MLOPS_KUBE_UNAVAILABLE"] = f"kube-up.sh printed nothing (exit {done.returncode}): {done.stderr[-300:]}"
    return found


_SHARED: list[RealCluster] = []


def shared_cluster() -> RealCluster:
    """The one control plane of this test session (started here when nothing runs it); skips when impossible.

    A plain function, not only a fixture, so the contract suite's setup can ask for it too. What
    this session starts it stops at exit (atexit), so no process outlives the run.
    """
    if _SHARED:
        return _SHARED[0]
    if os.environ.get("MLOPS_KUBE_UNAVAILABLE"):
        pytest.skip(f"no real Kubernetes control plane: {os.environ['MLOPS_KUBE_UNAVAILABLE']}")
    if not os.environ.get("DOCKER_HOST"):
        pytest.skip("no real Kubernetes control plane: its pods need the Docker engine (run .ci/docker-up.sh)")
    state = Path(os.environ.get("MLOPS_KUBE_STATE") or "/var/tmp/mlops-kube")
    if not _running(state):
        if not (state / "bin" / ".built-from").is_file():   # never a surprise half-hour build inside pytest
            pytest.skip(f"no real Kubernetes control plane: not built in {state}/bin; run "
                        '`eval "$(bash .ci/kube-up.sh)"` once (it builds it: 10-30 min)')
        found = _kube_up()
        if "MLOPS_KUBE_UNAVAILABLE" in found:
            os.environ["MLOPS_KUBE_UNAVAILABLE"] = found["MLOPS_KUBE_UNAVAILABLE"]   # said once, not per test
            pytest.skip(f"no real Kubernetes control plane: {found['MLOPS_KUBE_UNAVAILABLE']}")
        state = Path(found["MLOPS_KUBE_STATE"])
        atexit.register(subprocess.run, ["bash", str(ROOT / ".ci" / "kube-down.sh")], capture_output=True,
                        timeout=300, env={**os.environ, "MLOPS_KUBE_STATE": str(state)})
    cluster = RealCluster(state)
    atexit.register(cluster.remove_nodes)
    _SHARED.append(cluster)
    return cluster


@pytest.fixture(scope="session")
def real_cluster() -> RealCluster:
    """The real control plane; skips with kube-up's reason when it cannot run here."""
    return shared_cluster()
