"""What `mlops reconcile` costs: one observe cycle at 10, 100, 1,000 services, and the time from a
killed service to healed.

1. Observe cycle (in-process, the in-memory test target so the numbers are the tool's own work,
   not a target's latency): a full ``Reconciler.cycle()`` — load the manifest, build the desired
   state, read live, plan, classify every service, update the memory file. Baseline in the same
   run: ``make_plan`` alone on the same project (what `mlops plan` computes), so the ratio is what
   reconciling adds on top of planning.
2. Killed to healed (the real local target: a real service process, a real reconciler process
   with ``--interval 1 --jitter 0``): SIGKILL the service, then time until the reconciler logs the
   heal done and the endpoint answers again. Baseline in the same run: the manual path, a person
   running `mlops apply --auto-approve` right after the kill.

    python benchmarks/reconcile_bench.py [--sizes 10,100,1000] [--runs 5] [--heal-runs 3] [--skip-heal]
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


HEAL_MANIFEST = """\
version: 1
project: healbench
models:
  m: {path: model.txt}
environments:
  e: {python: "3.11"}
services:
  echo-api:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    sample_request: sample.json
    deploy: {port: auto, auth: key}
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _mlops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=_env(), stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"mlops {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return proc


def _kill(root: Path) -> tuple[float, int]:
    record = json.loads((root / ".mlops" / "local" / "echo-api.json").read_text())
    os.killpg(record["pid"], signal.SIGKILL)
    return time.perf_counter(), int(record["port"])


def _answers(port: int) -> bool:
    from providers.http import request

    try:
        return request(f"http://127.0.0.1:{port}/", timeout=1).status == 200
    except OSError:
        return False


def _wait_dead(root: Path, port: int) -> None:
    from providers.local import processes

    record = json.loads((root / ".mlops" / "local" / "echo-api.json").read_text())
    deadline = time.monotonic() + 10
    while processes.is_running(record["pid"], record["start_id"]) and time.monotonic() < deadline:
        time.sleep(0.01)


def killed_to_healed(runs: int) -> None:
    print(f"\n2. killed to healed, real local service (median of {runs} runs)")
    with tempfile.TemporaryDirectory() as tmp:
        root = project_dir(Path(tmp) / "heal", HEAL_MANIFEST).parent
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
    args = parser.parse_args()
    os.environ.setdefault("MLOPS_CACHE_DIR", os.environ.get("MLOPS_TEST_CACHE", "/var/tmp/mlops-test-cache"))
    observe_cycle([int(s) for s in args.sizes.split(",")], args.runs)
    if not args.skip_heal:
        killed_to_healed(args.heal_runs)


if __name__ == "__main__":
    main()
