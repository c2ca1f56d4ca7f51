"""The model registry: time to register and to read back versions, first and second time.

Two workloads, on the embedded registry (an OCI layout on disk) and, when MLOPS_TEST_REGISTRY is
set, on the real `docker-registry` on 127.0.0.1:

- one 100 MB model: register (first: uploads the blob; second: HEAD finds it, nothing uploaded),
  read back (first: pull the blob by digest into an empty cache; second: the cache has it);
- 100 small models: register each (first / second), read back every model's current version
  (what a plan does) and fetch every model's files.

The baseline is what the registry replaces: copying the files into the checkout's `.mlops/`
(the previous embedded store), measured in the same run. Prints medians; asserts nothing.

    python benchmarks/registry_bench.py [--mb 100] [--models 100] [--repeat 3] [--settle 1.0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from planner.hashing import ContentHasher  # noqa: E402
from providers.oci.distribution import RemoteRepository  # noqa: E402
from providers.oci.layout import LayoutRepository  # noqa: E402
from providers.oci.models import ModelRegistry  # noqa: E402

GIT = {"commit": "0" * 40, "dirty": False}


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class Uploads:
    """Counts blob uploads (the second registration must make none)."""

    def __init__(self, inner):
        self.inner, self.count = inner, 0

    def put_blob(self, digest, path=None, data=None):
        self.count += 1
        return self.inner.put_blob(digest, path=path, data=data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def backends(scratch: Path, settle: float) -> dict[str, Callable[[], object]]:
    out: dict[str, Callable[[], object]] = {}
    out["embedded"] = lambda: LayoutRepository(scratch / f"layout-{uuid.uuid4().hex[:8]}")
    host = os.environ.get("MLOPS_TEST_REGISTRY")
    if host:
        out["remote"] = lambda: RemoteRepository(f"oci://{host}/mlops-bench/b{uuid.uuid4().hex[:10]}",
                                                 settle_s=settle)
    return out


def big_model(scratch: Path, mb: int) -> tuple[Path, str]:
    path = scratch / "big" / "model.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for _ in range(mb):
            fh.write(os.urandom(1 << 20))
    return path, ContentHasher().tree_hash(path)


def small_models(scratch: Path, n: int) -> list[tuple[str, Path, str]]:
    out = []
    for i in range(n):
        path = scratch / "small" / f"m{i:03d}" / "model.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(2048))
        out.append((f"m{i:03d}", path, ContentHasher().tree_hash(path)))
    return out


def bench_big(make_repo, path: Path, sha: str, scratch: Path) -> dict[str, float]:
    repo = Uploads(make_repo())
    first = timed(lambda: ModelRegistry(repo).register("big", path, sha, "model.bin", GIT))
    uploads_first = repo.count
    second = timed(lambda: ModelRegistry(repo).register("big", path, sha, "model.bin", GIT))
    cache = scratch / f"cache-{uuid.uuid4().hex[:8]}" / sha
    read_first = timed(lambda: ModelRegistry(repo).fetch("big", sha, cache))
    read_second = timed(lambda: ModelRegistry(repo).fetch("big", sha, cache))
    shutil.rmtree(cache.parent)
    return {"register 1st": first, "register 2nd": second, "read 1st": read_first, "read 2nd": read_second,
            "uploads 1st": uploads_first, "uploads 2nd": repo.count - uploads_first}


def bench_many(make_repo, models: list[tuple[str, Path, str]], scratch: Path) -> dict[str, float]:
    repo = Uploads(make_repo())

    def register_all() -> None:
        registry = ModelRegistry(repo)
        for name, path, sha in models:
            registry.register(name, path, sha, "model.txt", GIT)
            registry.set_current(name, sha, source_rel="model.txt", tags={}, description="", git=GIT)

    first = timed(register_all)
    uploads_first = repo.count
    second = timed(register_all)
    cache = scratch / f"cache-{uuid.uuid4().hex[:8]}"

    def read_all() -> None:
        registry = ModelRegistry(repo)
        current = registry.current_models()
        assert len(current) == len(models)
        for m in current:
            registry.fetch(m["name"], m["sha256"], cache / m["sha256"])

    read_first = timed(read_all)
    read_second = timed(read_all)
    shutil.rmtree(cache, ignore_errors=True)
    return {"register 1st": first, "register 2nd": second, "read 1st": read_first, "read 2nd": read_second,
            "uploads 1st": uploads_first, "uploads 2nd": repo.count - uploads_first}


def baseline_copy(paths: list[Path], scratch: Path) -> float:
    """The previous embedded store: one copy of each model into the checkout's .mlops/models/."""
    dest = scratch / f"baseline-{uuid.uuid4().hex[:8]}"

    def copy_all() -> None:
        for i, p in enumerate(paths):
            target = dest / str(i)
            target.mkdir(parents=True)
            shutil.copy2(p, target / p.name)

    took = timed(copy_all)
    shutil.rmtree(dest)
    return took


def report(title: str, runs: list[dict[str, float]], baseline: float) -> None:
    print(f"\n{title}  (median of {len(runs)}; baseline: copy into .mlops/ = {baseline:.3f}s)")
    for key in runs[0]:
        value = statistics.median(r[key] for r in runs)
        if key.startswith("uploads"):
            print(f"  {key:<14} {value:>8.0f} blob(s)")
        else:
            print(f"  {key:<14} {value:>8.3f}s   {value / baseline:>7.2f}x baseline")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--settle", type=float, default=1.0,
                        help="remote settle window (s); each new registration waits it out (default 20 in ml.yaml)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="registry-bench-", dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        scratch = Path(tmp)
        path, sha = big_model(scratch, args.mb)
        models = small_models(scratch, args.models)
        base_big = statistics.median(baseline_copy([path], scratch) for _ in range(args.repeat))
        base_many = statistics.median(baseline_copy([p for _, p, _ in models], scratch) for _ in range(args.repeat))
        for name, make_repo in backends(scratch, args.settle).items():
            extra = f", settle {args.settle}s per new registration" if name == "remote" else ""
            report(f"{name}: one {args.mb} MB model{extra}",
                   [bench_big(make_repo, path, sha, scratch) for _ in range(args.repeat)], base_big)
            report(f"{name}: {args.models} models of 2 KB{extra}",
                   [bench_many(make_repo, models, scratch) for _ in range(args.repeat)], base_many)
        if "MLOPS_TEST_REGISTRY" not in os.environ:
            print("\n(remote skipped: set MLOPS_TEST_REGISTRY, e.g. eval \"$(bash .ci/docker-up.sh)\")")


if __name__ == "__main__":
    main()
