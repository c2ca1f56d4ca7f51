"""What `mlops reconcile` costs: one observe cycle at 10, 100, 1,000 services, and the time from a
killed service to healed.

1. Observe cycle (in-process, the in-memory test target so the numbers are the tool's own work,
   not a target's latency): a full ``Reconciler.cycle()`` — load the manifest, build the desired
   state, read live, plan, classify every service, update the memory file. Baseline in the same
   run: ``make_plan`` alone on the same project (what `mlops plan` computes), so the ratio is what
   reconciling adds on top of planning.
2. Observe cycle with the real local process reader (``mlops reconcile --once`` in process on
   the embedded local target). Starting 1,000 scoring processes does not fit this machine, so the
   services are *records of stopped processes*: one service is really applied, its record and
   log are copied to N names, then it is destroyed (nothing keeps running). Each cycle really
   reads N record files, checks N pids in /proc, tails N log files (a dead process's reason),
   scans the process table for strays and the port keepers, plans and classifies N services as
   drifted. Not measured: N HTTP readiness probes of live services (a live service costs one
   more 127.0.0.1 round trip, run PROBE_PARALLELISM at a time). Baseline: ``make_plan`` alone.
3. The same on Kubernetes when a cluster is reachable (``--kubeconfig`` or $KUBECONFIG; the
   tests' control plane from .ci/kube-up.sh): N Deployments are written with server-side apply
   as records (replicas 0, so no pod starts), read back by the provider's real LISTs and planned;
   skipped with the reason when no cluster answers.
4. Killed to healed (the real local target: a real service process, a real reconciler process
   with ``--interval 1 --jitter 0``): SIGKILL the service, then time until the reconciler logs the
   heal done and the endpoint answers again. Baseline in the same run: the manual path, a person
   running `mlops apply --auto-approve` right after the kill.

    python benchmarks/reconcile_bench.py [--sizes 10,100,1000] [--runs 5] [--heal-runs 3] [--skip-heal]
                                         [--skip-local] [--kubeconfig PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]


def manifest(n: int, provider: str = "memory") -> str:
    lines = ["version: 1", "project: bench", "targets:", f"  t: {{provider: {provider}}}", "models:"]
    lines += [f"  m{i}: {{path: model.txt}}" for i in range(10)]
    lines += ["environments:", '  e: {python: "3.11"}', "services:"]
    lines += [f"  s{i:05d}: {{models: [m{i % 10}], environment: e, source_dir: src, entry_script: score.py, "
              f"deploy: {{port: {10000 + i}}}}}" for i in range(n)]
    return "\n".join(lines) + "\n"


def project_dir(base: Path, text: str) -> Path:
    from support import make_project

    base.mkdir(parents=True)
    return make_project(base, text)


def observe_cycle(sizes: list[int], runs: int) -> None:
    import memory_provider
    from support import run_cli

    from planner.planning import make_plan
    from planner.project import Project
    from planner.reconcile import Options, Reconciler
    from providers import registry

    registry.register("memory", memory_provider.MemoryProvider)
    print("1. one observe cycle, in-memory target (median of", runs, "runs)")
    print(f"{'services':>9} {'plan (baseline)':>16} {'observe cycle':>14} {'ratio':>6} {'per service':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = project_dir(Path(tmp) / f"n{n}", manifest(n))
            if run_cli("apply", "--auto-approve", "-f", str(path)).code != 0:
                raise SystemExit(f"apply of {n} services failed")
            memory_provider.MemoryProvider(target="t", config={"provider": "memory"},
                                           context=Project.load(path).context).kill("s00000")
            plans, cycles = [], []
            reconciler = Reconciler(path, Options("observe"))
            for _ in range(runs):
                started = time.perf_counter()
                make_plan(Project.load(path))
                plans.append(time.perf_counter() - started)
                started = time.perf_counter()
                report = reconciler.cycle()
                cycles.append(time.perf_counter() - started)
                assert [s.name for s in report.services if s.sync == "drifted"] == ["s00000"], report.to_json()
            plan, cycle = statistics.median(plans), statistics.median(cycles)
            print(f"{n:>9} {plan * 1000:>14.1f}ms {cycle * 1000:>12.1f}ms {cycle / plan:>6.2f} "
                  f"{cycle / n * 1e6:>10.0f}us", flush=True)
            memory_provider.STATE.clear()


LOCAL_SERVICE = ("{{models: [m], environment: e, source_dir: src, entry_script: score.py, "
                 "deploy: {{port: {port}, auth: none}}}}")


def local_manifest(n: int) -> str:
    lines = ["version: 1", "project: localbench", "models:", "  m: {path: model.txt}", "environments:",
             '  e: {python: "3.11"}', "services:"]
    lines += [f"  s{i:05d}: " + LOCAL_SERVICE.format(port=20000 + i) for i in range(n)]
    return "\n".join(lines) + "\n"


def _stopped_records(root: Path, n: int) -> None:
    """Apply one real service, keep its record and log, destroy it, write N copies (dead pid)."""
    (root / "ml.yaml").write_text(local_manifest(1))
    _mlops("apply", "--auto-approve", cwd=root)
    folder = root / ".mlops" / "local"
    record = json.loads((folder / "s00000.json").read_text())
    log = (folder / "logs" / "s00000.log").read_text()
    _mlops("destroy", "--auto-approve", cwd=root)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"s{i:05d}"
        copy = {**record, "name": name, "port": 20000 + i,
                "spec": {**record["spec"], "deploy": {**record["spec"]["deploy"], "port": 20000 + i}}}
        (folder / f"{name}.json").write_text(json.dumps(copy))
        (folder / "logs" / f"{name}.log").write_text(log)
    (root / "ml.yaml").write_text(local_manifest(n))


def local_observe_cycle(sizes: list[int], runs: int) -> None:
    from planner.planning import make_plan
    from planner.project import Project
    from planner.reconcile import Options, Reconciler

    print(f"\n2. one observe cycle, real local process reader, N records of stopped processes (median of {runs})")
    print(f"{'services':>9} {'plan (baseline)':>16} {'observe cycle':>14} {'ratio':>6} {'per service':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            root = project_dir(Path(tmp) / f"local{n}", local_manifest(1)).parent
            _stopped_records(root, n)
            reconciler = Reconciler(root / "ml.yaml", Options("observe"))
            plans, cycles = [], []
            for _ in range(runs):
                started = time.perf_counter()
                make_plan(Project.load(root / "ml.yaml"))
                plans.append(time.perf_counter() - started)
                started = time.perf_counter()
                report = reconciler.cycle()
                cycles.append(time.perf_counter() - started)
                failed = [s for s in report.services if s.health == "Failed"]
                assert len(report.services) == n and len(failed) == n, report.to_json()
            plan, cycle = statistics.median(plans), statistics.median(cycles)
            print(f"{n:>9} {plan * 1000:>14.1f}ms {cycle * 1000:>12.1f}ms {cycle / plan:>6.2f} "
                  f"{cycle / n * 1e6:>10.0f}us", flush=True)


KUBE_STATE_CONFIG = Path(os.environ.get("MLOPS_KUBE_STATE") or "/var/tmp/mlops-kube") / "run" / "admin.kubeconfig"


def kube_manifest(n: int, namespace: str) -> str:
    lines = ["version: 1", "project: kbench", "targets:",
             f"  k8s: {{provider: kubernetes, namespace: {namespace}, registry: 127.0.0.1:5000}}",
             "models:", "  m: {path: model.txt}", "environments:", '  e: {python: "3.11"}', "services:"]
    lines += [f"  s{i:05d}: {{models: [m], environment: e, source_dir: src, entry_script: score.py, target: k8s, "
              "deploy: {auth: none}}" for i in range(n)]
    return "\n".join(lines) + "\n"


def _kube_records(project, n: int) -> None:
    """Each service's objects as apply renders them, written with server-side apply, replicas 0
    (no image is built and no pod starts: what is measured is reading N services back)."""
    provider = project.providers["k8s"]
    provider.ensure_connected()
    provider._ensure_namespace()
    from concurrent.futures import ThreadPoolExecutor

    from providers.kubernetes import manifests

    objects = []
    for address, desired in sorted(project.desired().items()):
        if address.kind != "service":
            continue
        svc = provider._desired_service(desired, "127.0.0.1:5000/kbench:0", {})
        for obj in manifests.objects(svc):
            if obj["kind"] == "Deployment":
                obj = {**obj, "spec": {**obj["spec"], "replicas": 0}}
            objects.append(obj)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(provider.cluster.apply, objects))


def kubernetes_observe_cycle(sizes: list[int], runs: int, kubeconfig: str | None) -> None:
    import uuid

    from planner.planning import make_plan
    from planner.project import Project
    from planner.reconcile import Options, Reconciler

    kubeconfig = kubeconfig or (str(KUBE_STATE_CONFIG) if KUBE_STATE_CONFIG.is_file() else None)
    print(f"\n3. one observe cycle on Kubernetes, N services written as objects (median of {runs} runs)")
    if not kubeconfig:
        print("  skipped: no cluster (pass --kubeconfig, set KUBECONFIG, or run .ci/kube-up.sh)")
        return
    os.environ["KUBECONFIG"] = kubeconfig
    print(f"{'services':>9} {'write (setup)':>14} {'plan (baseline)':>16} {'observe cycle':>14} {'ratio':>6} "
          f"{'per service':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            namespace = f"rbench-{uuid.uuid4().hex[:8]}"
            path = project_dir(Path(tmp) / f"k{n}", kube_manifest(n, namespace))
            project = Project.load(path)
            try:
                started = time.perf_counter()
                try:
                    _kube_records(project, n)
                except Exception as exc:   # noqa: BLE001 - a benchmark reports why it could not measure
                    print(f"  skipped: the cluster at {kubeconfig} did not take the objects: {exc}")
                    return
                write = time.perf_counter() - started
                reconciler = Reconciler(path, Options("observe"))
                plans, cycles = [], []
                for _ in range(runs):
                    started = time.perf_counter()
                    make_plan(Project.load(path))
                    plans.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    report = reconciler.cycle()
                    cycles.append(time.perf_counter() - started)
                    assert not report.error and len(report.services) == n, report.to_json()
                    assert all(s.health != "Missing" for s in report.services), report.to_json()
                plan, cycle = statistics.median(plans), statistics.median(cycles)
                print(f"{n:>9} {write:>12.1f}s {plan * 1000:>14.1f}ms {cycle * 1000:>12.1f}ms {cycle / plan:>6.2f} "
                      f"{cycle / n * 1e6:>10.0f}us", flush=True)
            finally:
                import contextlib

                with contextlib.suppress(Exception):
                    project.providers["k8s"].cluster.delete("Namespace", namespace)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _mlops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=_env(), stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"mlops {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return proc


def _kill(root: Path) -> tuple[float, int]:
    from support import project_data

    record = json.loads((project_data(root) / "local" / "echo-api.json").read_text())
    os.killpg(record["pid"], signal.SIGKILL)
    return time.perf_counter(), int(record["port"])


def _answers(port: int) -> bool:
    from providers.http import request

    try:
        return request(f"http://127.0.0.1:{port}/", timeout=1).status == 200
    except OSError:
        return False


def _wait_dead(root: Path, port: int) -> None:
    from support import project_data

    from providers.local import processes

    record = json.loads((project_data(root) / "local" / "echo-api.json").read_text())
    deadline = time.monotonic() + 10
    while processes.is_running(record["pid"], record["start_id"]) and time.monotonic() < deadline:
        time.sleep(0.01)


def killed_to_healed(runs: int) -> None:
    from support import echo_manifest

    print(f"\n4. killed to healed, real local service (median of {runs} runs)")
    with tempfile.TemporaryDirectory() as tmp:
        root = project_dir(Path(tmp) / "heal", echo_manifest("healbench")).parent
        _mlops("apply", "--auto-approve", cwd=root)
        manual, detected, healed, served = [], [], [], []
        try:
            for _ in range(runs):
                t0, port = _kill(root)
                _wait_dead(root, port)
                _mlops("apply", "--auto-approve", cwd=root)
                while not _answers(port):
                    time.sleep(0.01)
                manual.append(time.perf_counter() - t0)
            reconciler = subprocess.Popen(
                [sys.executable, "-m", "planner.cli", "reconcile", "--mode", "heal", "--interval", "1", "--jitter", "0",
                 "--backoff", "0"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())
            try:
                for _ in range(runs):
                    _next_cycle(reconciler)
                    t0, port = _kill(root)
                    _wait_dead(root, port)
                    change = _next_change(reconciler)
                    healed.append(time.perf_counter() - t0)
                    detected.append(healed[-1] - change["elapsed"])
                    while not _answers(port):
                        time.sleep(0.01)
                    served.append(time.perf_counter() - t0)
            finally:
                reconciler.send_signal(signal.SIGTERM)
                reconciler.wait(timeout=120)
        finally:
            _mlops("destroy", "--auto-approve", cwd=root)
    med = statistics.median
    print(f"  manual (`mlops apply` right after the kill): {med(manual):6.2f}s  (baseline)")
    print(f"  reconcile --mode heal --interval 1:          {med(served):6.2f}s  to answering again, ratio "
          f"{med(served) / med(manual):.2f}")
    print(f"    of which detection (waiting for the next cycle + reading live): {med(detected):5.2f}s, "
          f"the heal itself: {med(healed) - med(detected):5.2f}s")


def _next_cycle(proc: subprocess.Popen) -> dict:
    for line in proc.stdout:   # type: ignore[union-attr]
        event = json.loads(line)
        if event.get("event") == "cycle":
            return event
    raise SystemExit("the reconciler exited")


def _next_change(proc: subprocess.Popen) -> dict:
    for line in proc.stdout:   # type: ignore[union-attr]
        event = json.loads(line)
        if event.get("event") == "change":
            if event["result"] != "ok":
                raise SystemExit(f"heal failed: {event}")
            return event
    raise SystemExit("the reconciler exited")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--heal-runs", type=int, default=3)
    parser.add_argument("--skip-heal", action="store_true")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                        help="a cluster for section 3 (default $KUBECONFIG; none: skipped)")
    args = parser.parse_args()
    os.environ.setdefault("MLOPS_CACHE_DIR", os.environ.get("MLOPS_TEST_CACHE", "/var/tmp/mlops-test-cache"))
    sizes = [int(s) for s in args.sizes.split(",")]
    observe_cycle(sizes, args.runs)
    if not args.skip_local:
        local_observe_cycle(sizes, args.runs)
    kubernetes_observe_cycle(sizes, args.runs, args.kubeconfig)
    if not args.skip_heal:
        killed_to_healed(args.heal_runs)


if __name__ == "__main__":
    main()
