"""End to end through the CLI on a real Kubernetes control plane (.ci/kube-up.sh: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) whose node agent runs the pods in the Docker engine.

One flow per target kind, sharing one cluster (and the engine's layer cache): the diabetes example
on ``provider: kubernetes`` (validate, plan, apply, call, idempotent plan, a rolling model update
that never stops answering, a broken score.py rolled back, scaling, destroy that leaves an
unlabelled Deployment alone), and on ``provider: fpga`` (Unschedulable with the real scheduler's
message, apply exit 1, the next plan exit 0, a node with the device appears -> Healthy by itself).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import git
import joblib
import pytest
from k8s_fixtures import FPGA, _engine_or_skip
from kubernetes import client, config
from real_cluster import RealCluster, shared_cluster
from support import ROOT, run_cli

from planner.project import Project

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    _engine_or_skip()
    if not os.environ.get("MLOPS_TEST_REGISTRY"):
        pytest.skip("no local registry: MLOPS_TEST_REGISTRY is not set (run .ci/docker-up.sh)")
    real = shared_cluster()
    try:
        yield real
    finally:
        real.remove_nodes()


@pytest.fixture
def kube(cluster, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    cfg = client.Configuration()
    config.load_kube_config(str(cluster.kubeconfig), client_configuration=cfg)
    api = client.ApiClient(cfg)
    return client.AppsV1Api(api), client.CoreV1Api(api)


def example(tmp: Path, name: str) -> tuple[Path, str]:
    """A git repository holding examples/NAME with a project name of its own."""
    root = tmp / "repo"
    shutil.copytree(ROOT / "examples" / name, root)
    project = f"e2e-{uuid.uuid4().hex[:6]}"
    manifest = root / "ml.yaml"
    text = manifest.read_text()
    old = next(line for line in text.splitlines() if line.startswith("project:"))
    manifest.write_text(text.replace(old, f"project: {project}"))
    repo = git.Repo.init(root)
    repo.git.add(A=True)
    repo.index.commit("initial")
    return manifest, project


def commit(root: Path, message: str) -> None:
    repo = git.Repo(root)
    repo.git.add(A=True)
    repo.index.commit(message)


def ok(*args: str) -> str:
    result = run_cli(*args)
    assert result.code == 0, f"mlops {' '.join(args)} exited {result.code}:\n{result.out}\n{result.err}"
    return result.out


def state(manifest: Path, service: str) -> dict:
    rows = json.loads(ok("status", "--json", "-f", str(manifest)))["services"]
    return {r["service"]: r for r in rows}[service]


class Caller:
    """Scores the service through the API server's proxy in a loop while an update rolls out."""

    def __init__(self, manifest: Path, service: str, body: bytes):
        project = Project.load(manifest)
        live = project.live()
        self.live = next(lv for a, lv in live.items() if a.name == service)
        self.provider = project.provider_for(self.live)
        self.body = body
        self.failures: list[str] = []
        self.answers: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, answer, _ = self.provider.call(self.live, self.body, timeout=30)
            except Exception as exc:
                self.failures.append(str(exc))
                continue
            if status == 200:
                self.answers.append(json.loads(answer)["predictions"])
            else:
                self.failures.append(f"HTTP {status}: {answer[:200]!r}")
            time.sleep(0.05)

    def __enter__(self) -> Caller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_kubernetes_example_through_the_cli(kube, tmp_path: Path):
    apps, core = kube
    manifest, project = example(tmp_path, "kubernetes")
    root, f = manifest.parent, ["-f", str(manifest)]
    sample = (root / "sample-request.json").read_bytes()

    assert run_cli("validate", *f).code == 0
    assert run_cli("plan", "--detailed-exitcode", *f).code == 2
    out = ok("apply", "--auto-approve", *f)
    assert "Apply complete! Resources: 3 added" in out
    first = json.loads(ok("call", "diabetes-api", *f))["predictions"]
    assert len(first) == 2 and all(isinstance(p, float) for p in first)
    bad = run_cli("call", "diabetes-api", "--data", '{"data": "not rows"}', *f)
    assert bad.code == 1 and "HTTP 500" in bad.err, "the scoring server's own answer reaches the caller"
    assert run_cli("plan", "--detailed-exitcode", *f).code == 0
    row = state(manifest, "diabetes-api")
    assert row["state"] == "Healthy" and row["health"]["ready"] == row["health"]["desired"] == 2

    # What runs: our labels everywhere, the image by digest, the keys only in the Secret.
    selector = f"app.kubernetes.io/managed-by=mlops,mlops.dev/project={project}"
    deployment = apps.read_namespaced_deployment("diabetes-api", "ml")
    assert deployment.metadata.labels["mlops.dev/service"] == "diabetes-api"
    assert "@sha256:" in deployment.spec.template.spec.containers[0].image
    assert {m.manager for m in deployment.metadata.managed_fields} >= {"mlops"}
    keys = json.loads((root / ".mlops" / "keys" / "diabetes-api.json").read_text())
    assert keys["primary"] not in json.dumps(client.ApiClient().sanitize_for_serialization(deployment))
    assert {s.metadata.name for s in core.list_namespaced_service("ml", label_selector=selector).items} == \
        {"diabetes-api"}
    logs = ok("logs", "diabetes-api", *f)
    pods = {p.metadata.name for p in core.list_namespaced_pod("ml", label_selector=selector).items}
    assert {line.split("]")[0].lstrip("[") for line in logs.splitlines() if line.startswith("[")} == pods
    one = sorted(pods)[0]
    assert all(line.startswith(f"[{one}]") for line in ok("logs", "diabetes-api", "--instance", one, *f).splitlines())

    # A new model rolls out pod by pod: the service answers all along, then with the new model.
    model = joblib.load(root / "model.pkl")
    model.intercept_ += 100.0
    joblib.dump(model, root / "model.pkl")
    commit(root, "a new model version")
    assert run_cli("plan", "--detailed-exitcode", *f).code == 2
    with Caller(manifest, "diabetes-api", sample) as caller:
        ok("apply", "--auto-approve", *f)
        time.sleep(0.5)
    assert not caller.failures, caller.failures[:3]
    assert caller.answers and caller.answers[-1] != first
    second = json.loads(ok("call", "diabetes-api", *f))["predictions"]
    assert second == pytest.approx([p + 100.0 for p in first])

    # A broken score.py: the new pods crash, apply rolls back and says so, the old version answers.
    score = root / "src" / "score.py"
    good = score.read_text()
    score.write_text("def init():\n    raise RuntimeError('broken on purpose')\n\n\ndef run(data):\n    return data\n")
    commit(root, "a broken entry script")
    broken = run_cli("apply", "--auto-approve", *f)
    assert broken.code == 1
    assert "rolled back" in broken.err and "broken on purpose" in broken.err
    assert json.loads(ok("call", "diabetes-api", *f))["predictions"] == pytest.approx(second)

    # Scale: replicas 2 -> 3 (the good score.py back).
    score.write_text(good)
    manifest.write_text(manifest.read_text().replace("replicas: 2", "replicas: 3"))
    commit(root, "three replicas")
    ok("apply", "--auto-approve", *f)
    row = state(manifest, "diabetes-api")
    assert row["state"] == "Healthy" and row["health"]["ready"] == row["health"]["desired"] == 3
    assert run_cli("plan", "--detailed-exitcode", *f).code == 0

    # Scaled behind our back (kubectl scale): the plan shows it, apply takes it back.
    apps.patch_namespaced_deployment("diabetes-api", "ml", {"spec": {"replicas": 1}}, field_manager="kubectl-scale")
    drifted = run_cli("plan", "--detailed-exitcode", *f)
    assert drifted.code == 2 and "spec.replicas is 1, not 3" in drifted.out
    ok("apply", "--auto-approve", *f)
    assert apps.read_namespaced_deployment("diabetes-api", "ml").spec.replicas == 3
    assert run_cli("plan", "--detailed-exitcode", *f).code == 0

    # Destroy: everything of ours goes; an unlabelled Deployment in the namespace stays.
    theirs = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "not-ours", "namespace": "ml"},
              "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "not-ours"}},
                       "template": {"metadata": {"labels": {"app": "not-ours"}},
                                    "spec": {"containers": [{"name": "c", "image": "example/none:1"}]}}}}
    apps.patch_namespaced_deployment("not-ours", "ml", theirs, field_manager="kubectl", force=True,
                                     _content_type="application/apply-patch+yaml")
    ok("destroy", "--auto-approve", *f)
    assert [d.metadata.name for d in apps.list_namespaced_deployment("ml").items] == ["not-ours"]
    for lister in (core.list_namespaced_service, core.list_namespaced_secret, core.list_namespaced_pod,
                   apps.list_namespaced_replica_set):
        assert not lister("ml", label_selector=selector).items, lister.__name__
    assert run_cli("plan", "--detailed-exitcode", *f).code == 2


def test_fpga_service_is_unschedulable_until_a_node_offers_the_device(cluster, kube, tmp_path: Path):
    manifest, _ = example(tmp_path, "fpga")
    f = ["-f", str(manifest)]
    # A node the service's node_selector matches, without the device: the real scheduler reports each
    # node's first failing filter, so only a matching node says "Insufficient <resource>".
    cluster.add_node("fpga-node-0", labels={"accelerator": "u250"})
    planned = run_cli("plan", *f)
    assert planned.code == 0 and f"no node offers {FPGA}" in planned.out + planned.err

    applied = run_cli("apply", "--auto-approve", *f)
    assert applied.code == 1
    assert "Unschedulable" in applied.err
    assert re.search(rf"0/\d+ nodes are available: .*\d+ Insufficient {re.escape(FPGA)}", applied.err), applied.err
    assert run_cli("plan", "--detailed-exitcode", *f).code == 0, "an Unschedulable service must not be replaced"
    assert state(manifest, "diabetes-fpga")["state"] == "Unschedulable"

    cluster.add_node("fpga-node-1", labels={"accelerator": "u250"}, allocatable={FPGA: "1"})
    deadline = time.monotonic() + 120
    while (row := state(manifest, "diabetes-fpga"))["state"] != "Healthy":
        assert time.monotonic() < deadline, row
        time.sleep(1)
    assert len(json.loads(ok("call", "diabetes-fpga", *f))["predictions"]) == 2
    ok("destroy", "--auto-approve", *f)
