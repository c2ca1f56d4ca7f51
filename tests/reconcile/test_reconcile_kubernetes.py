"""`mlops reconcile` on Kubernetes (the API double with its kubelet: pods run for real in the
Docker engine): a Deployment scaled to 0 by hand is reported as drift by observe, which changes
nothing, and restored by heal under the target's Lease."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import git
import pytest
from support import ROOT, run_cli

sys.path.insert(0, str(ROOT / "tests" / "kubernetes"))
from k8s_fixtures import _engine_or_skip, running_double  # noqa: E402
from kubernetes import client, config  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    _engine_or_skip()
    if not os.environ.get("MLOPS_TEST_REGISTRY"):
        pytest.skip("no local registry: MLOPS_TEST_REGISTRY is not set (run .ci/docker-up.sh)")
    with running_double(tmp_path_factory.mktemp("k8s-reconcile"), kubelet=True) as double:
        yield double


def test_a_deployment_scaled_to_zero_by_hand_is_drift_and_heal_restores_it(cluster, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    cfg = client.Configuration()
    config.load_kube_config(str(cluster.kubeconfig), client_configuration=cfg)
    apps = client.AppsV1Api(client.ApiClient(cfg))
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "kubernetes", root)
    manifest = root / "ml.yaml"
    text = manifest.read_text()
    old = next(line for line in text.splitlines() if line.startswith("project:"))
    manifest.write_text(text.replace(old, f"project: rec-{uuid.uuid4().hex[:6]}"))
    repo = git.Repo.init(root)
    repo.git.add(A=True)
    repo.index.commit("initial")
    f = ["-f", str(manifest)]
    try:
        applied = run_cli("apply", "--auto-approve", *f)
        assert applied.code == 0, applied.err
        assert run_cli("reconcile", "--once", *f).code == 0

        apps.patch_namespaced_deployment("diabetes-api", "ml", {"spec": {"replicas": 0}},
                                         field_manager="kubectl-scale")
        observed = run_cli("reconcile", "--once", "--mode", "observe", *f)
        assert observed.code == 2, observed.err
        [cycle] = [json.loads(line) for line in observed.out.splitlines() if '"event": "cycle"' in line]
        assert cycle["drifted"] == ["diabetes-api"] and cycle["changes"] == {}
        assert apps.read_namespaced_deployment("diabetes-api", "ml").spec.replicas == 0

        healed = run_cli("reconcile", "--once", "--mode", "heal", *f)
        assert healed.code == 0, healed.out + healed.err
        changes = [json.loads(line) for line in healed.out.splitlines() if '"event": "change"' in line]
        assert [(c["address"], c["result"]) for c in changes] == [("service.diabetes-api", "ok")]
        assert apps.read_namespaced_deployment("diabetes-api", "ml").spec.replicas == 2
        assert run_cli("plan", "--detailed-exitcode", *f).code == 0
    finally:
        run_cli("destroy", "--auto-approve", *f)
