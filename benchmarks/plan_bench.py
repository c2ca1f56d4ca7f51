"""How long `mlops plan` takes with a large model, with and without the content-hash cache.

Baseline (same script, same process): hashing every model file from scratch on each plan, as a
tool without a size+mtime cache would. Prints medians over several runs and the ratio.

    python benchmarks/plan_bench.py [--size-mb 512] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planner.planning import make_plan  # noqa: E402
from planner.project import Project  # noqa: E402

MANIFEST = """\
version: 1
project: bench
models:
  big: {path: model.bin}
environments:
  e: {python: "3.11"}
services:
  big-api: {models: [big], environment: e, source_dir: src, entry_script: score.py}
"""


def timed_plan(manifest: Path, *, keep_cache: bool) -> float:
    cache = manifest.parent / ".mlops" / "cache" / "hashes.json"
    if not keep_cache:
        cache.unlink(missing_ok=True)
    started = time.perf_counter()
    make_plan(Project.load(manifest))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        (root / "src" / "score.py").write_text("def init(): pass\ndef run(d): return d\n")
        with (root / "model.bin").open("wb") as fh:
            for _ in range(args.size_mb):
                fh.write(os.urandom(1 << 20))
        manifest = root / "ml.yaml"
        manifest.write_text(MANIFEST)
        os.environ.setdefault("MLOPS_CACHE_DIR", str(root / "cache"))
        timed_plan(manifest, keep_cache=True)  # warm the page cache and the hash cache once
        uncached = [timed_plan(manifest, keep_cache=False) for _ in range(args.runs)]
        cached = [timed_plan(manifest, keep_cache=True) for _ in range(args.runs)]
    u, c = statistics.median(uncached), statistics.median(cached)
    print(f"model size: {args.size_mb} MiB, runs: {args.runs}")
    print(f"plan, re-hashing every file (baseline): median {u * 1000:8.1f} ms")
    print(f"plan, size+mtime hash cache (mlops):    median {c * 1000:8.1f} ms")
    print(f"ratio: {u / c:.1f}x faster with the cache")


if __name__ == "__main__":
    main()
