"""Live reading across targets: sequential (the old planner, one target after another) vs parallel.

Each target is the in-memory test provider with an artificial 50 ms read latency (a cloud API's
round trip) and 25 services. Baseline, in the same script: the same reads with parallelism 1.
Prints the median of several runs for 1, 4 and 16 targets and the ratio.

    python benchmarks/live_read_bench.py [--runs 5] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from memory_provider import STATE, MemoryProvider  # noqa: E402

from planner.apply import apply_plan  # noqa: E402
from planner.planning import make_plan  # noqa: E402
from planner.project import Project  # noqa: E402
from providers import registry  # noqa: E402

SERVICES_PER_TARGET = 25


def manifest(targets: int, latency_ms: int) -> str:
    lines = ["version: 1", "project: bench", "targets:"]
    lines += [f"  t{i}: {{provider: memory, read_latency_ms: {latency_ms}}}" for i in range(targets)]
    lines += ["models:", "  m: {path: model.txt}", "environments:", '  e: {python: "3.11"}', "services:"]
    for i in range(targets):
        for j in range(SERVICES_PER_TARGET):
            lines.append(f"  s{i}-{j:02d}: {{models: [m], environment: e, source_dir: src, entry_script: score.py, "
                         f"target: t{i}}}")
    return "\n".join(lines) + "\n"


def timed_read(path: Path, parallelism: int) -> float:
    project = Project.load(path)
    project.read_parallelism = parallelism
    started = time.perf_counter()
    project.live()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-ms", type=int, default=50)
    args = parser.parse_args()
    registry.register("memory", MemoryProvider)
    print(f"live read, {SERVICES_PER_TARGET} services per target, {args.latency_ms} ms per target read, "
          f"median of {args.runs}")
    print(f"{'targets':>8} {'sequential (baseline)':>22} {'parallel (mlops)':>17} {'ratio':>7}")
    for targets in (1, 4, 16):
        STATE.clear()
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "src").mkdir()
            (root / "src" / "score.py").write_text("def init(): pass\ndef run(d): return d\n")
            (root / "model.txt").write_text("m\n")
            path = root / "ml.yaml"
            path.write_text(manifest(targets, args.latency_ms))
            project = Project.load(path)
            desired, live = project.desired(), project.live()
            apply_plan(project, make_plan(project, desired=desired, live=live), desired, live, parallelism=8)
            assert len(Project.load(path).live()) == targets * SERVICES_PER_TARGET + 2
            seq = statistics.median(timed_read(path, 1) for _ in range(args.runs))
            par = statistics.median(timed_read(path, 8) for _ in range(args.runs))
        print(f"{targets:>8} {seq * 1000:>19.1f} ms {par * 1000:>14.1f} ms {seq / par:>6.1f}x")


if __name__ == "__main__":
    main()
