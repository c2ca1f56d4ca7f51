"""Kubernetes target figures against the real control plane of .ci/kube-up.sh and the local double
(tests/doubles/kubernetes_double.py), side by side.

1. `mlops plan` of N services in one namespace, all already applied: API requests it makes (counted
   by the provider's client; they must not grow with N: one LIST per kind) and its time, for N = 20
   and N = 200 (replicas 0: no pods), on the real API server and on the double. The real one is
   used when it runs (MLOPS_KUBE_STATE or /var/tmp/mlops-kube; start it with .ci/kube-up.sh).
2. apply-to-Healthy of one service whose image is already built and pushed (a real pod in the
   Docker engine): the time from `mlops apply` to a Healthy, smoke-tested service. Skipped without
   an engine or MLOPS_TEST_REGISTRY (eval "$(bash .ci/docker-up.sh)").

    python benchmarks/kubernetes_bench.py [--services 20,200] [--runs 3]

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from providers.base import ensure_connected

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "doubles"))
sys.path.insert(0, str(ROOT / "tests" / "kubernetes"))

import git  # noqa: E402
from kubernetes_double import KubernetesDouble  # noqa: E402

from planner.planning import make_plan  # noqa: E402
from planner.project import Project  # noqa: E402
from providers.kubernetes import manifests  # noqa: E402

SCORE = "import json\n\ndef init():\n    pass\n\ndef run(raw):\n    return {'echo': json.loads(raw)}\n"


def manifest(count: int, *, replicas: int, namespace: str = "bench") -> str:
    registry = os.environ.get("MLOPS_TEST_REGISTRY", "127.0.0.1:5000")
    services = "\n".join(
        f"  svc-{i:03d}: {{models: [m], environment: e, source_dir: src, entry_script: score.py, "
        f"sample_request: sample.json, deploy: {{replicas: {replicas}, auth: key}}}}" for i in range(count))
    return f"""\
version: 1
project: bench
targets:
  k8s: {{provider: kubernetes, namespace: {namespace}, registry: "{registry}"}}
models:
  m: {{path: model.txt}}
environments:
  e: {{python: "3.11"}}
services:
{services}
"""


def project_dir(root: Path, text: str) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "score.py").write_text(SCORE)
    (root / "model.txt").write_text("v1\n")
    (root / "sample.json").write_text('{"x": 1}\n')
    (root / "ml.yaml").write_text(text)
    repo = git.Repo.init(root)
    repo.git.add(A=True)
    repo.index.commit("bench")
    return root / "ml.yaml"


@contextlib.contextmanager
def double_cluster(tmp: Path):
    double = KubernetesDouble(tmp / "double", kubelet=False).start()
    try:
        yield double.kubeconfig, "bench"
    finally:
        double.stop()


@contextlib.contextmanager
def real_cluster(tmp: Path):
    """The running control plane of .ci/kube-up.sh, in a namespace of this run (deleted afterwards)."""
    from kubernetes import client, config
    from real_cluster import _running

    state = Path(os.environ.get("MLOPS_KUBE_STATE") or "/var/tmp/mlops-kube")
    if not _running(state):
        yield None, None
        return
    kubeconfig = state / "run" / "admin.kubeconfig"
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        yield kubeconfig, namespace
    finally:
        with contextlib.suppress(Exception):
            client.CoreV1Api(config.new_client_from_config(str(kubeconfig))).delete_namespace(namespace)


def plan_figures(backend, count: int, runs: int) -> tuple[int, float, int] | None:
    with tempfile.TemporaryDirectory() as tmp, backend(Path(tmp)) as (kubeconfig, namespace):
        if kubeconfig is None:
            return None
        os.environ["KUBECONFIG"] = str(kubeconfig)
        path = project_dir(Path(tmp) / "repo", manifest(count, replicas=0, namespace=namespace))
        project = Project.load(path)
        desired = project.desired()
        provider = project.providers["k8s"]
        ensure_connected(provider)
        provider._ensure_namespace()
        for r in desired.values():   # applied as apply writes them (an image digest instead of a build)
            if r.address.kind == "service":
                svc = provider._desired_service(r, f"r/bench/{r.address.name}@sha256:{'a' * 64}",
                                                {"primary": "p" * 20, "secondary": "s" * 20})
                for obj in manifests.objects(svc):
                    provider.cluster.apply(obj)
        time.sleep(2)   # controllers settle
        times, requests, changes = [], 0, 0
        for _ in range(runs):
            fresh = Project.load(path)
            started = time.perf_counter()
            plan = make_plan(fresh)
            times.append(time.perf_counter() - started)
            requests = fresh.providers["k8s"].cluster.requests
            changes = sum(1 for c in plan.actionable if c.address.kind == "service")
        return requests, statistics.median(times), changes


def apply_figure() -> float | None:
    try:
        import docker

        docker.from_env(timeout=10).ping()
    except Exception:
        return None
    if not os.environ.get("MLOPS_TEST_REGISTRY"):
        return None
    from support import run_cli

    with tempfile.TemporaryDirectory() as tmp:
        double = KubernetesDouble(Path(tmp) / "double").start()
        try:
            os.environ["KUBECONFIG"] = str(double.kubeconfig)
            path = project_dir(Path(tmp) / "repo", manifest(1, replicas=1))
            f = ["-f", str(path)]
            sink = io.StringIO()
            with contextlib.redirect_stdout(sink):
                assert run_cli("apply", "--auto-approve", *f).code == 0   # builds and pushes the image
                assert run_cli("destroy", "--auto-approve", *f).code == 0
                started = time.perf_counter()
                assert run_cli("apply", "--auto-approve", *f).code == 0   # image already pushed
                seconds = time.perf_counter() - started
                run_cli("destroy", "--auto-approve", *f)
            return seconds
        finally:
            double.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", default="20,200")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("plan of N applied services in one namespace (median of runs; requests counted by the client):")
    for count in (int(n) for n in args.services.split(",")):
        figures = {}
        for name, backend in (("real", real_cluster), ("double", double_cluster)):
            figures[name] = found = plan_figures(backend, count, args.runs)
            if found is None:
                print(f"  N={count:4d} {name:6s}: skipped (no control plane running: .ci/kube-up.sh)")
                continue
            requests, seconds, changes = found
            print(f"  N={count:4d} {name:6s}: {requests} API requests, {seconds * 1000:.0f} ms, "
                  f"{changes} service changes planned")
        if figures.get("real") and figures.get("double"):
            print(f"  N={count:4d} real/double time: {figures['real'][1] / figures['double'][1]:.2f}x")
    seconds = apply_figure()
    if seconds is None:
        print("apply-to-Healthy: skipped (no Docker engine or MLOPS_TEST_REGISTRY)")
    else:
        print(f"apply-to-Healthy of one service, image already pushed: {seconds:.1f} s")


if __name__ == "__main__":
    main()
