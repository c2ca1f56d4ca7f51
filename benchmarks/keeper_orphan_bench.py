"""Count the port keepers left holding a port no service serves on, after SIGKILLed applies and
failed creates (issue 22, item 7). A keeper is found by what runs (its command line names the
project's state folder, or its control socket is one a record names), not only by records.

    python benchmarks/keeper_orphan_bench.py [--kills 50] [--failed-creates 10] [--max-delay 2.5]

Each kill trial is the crash harness's (tests/crash_harness.py): bring the project to the phase's
starting state, SIGKILL `apply`/`destroy` at a random moment, recover with one more run, and count
orphans. Each failed create applies a service that cannot start (a NaN or tiny memory limit, a
400 KB environment value, an init() that raises), then destroys it, and counts orphans after each.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from crash_harness import keeper_processes, mlops, orphan_keepers, run_trials  # noqa: E402
from support import echo_manifest, make_project  # noqa: E402

MANIFEST = echo_manifest("orphans")
FAILING = ["memory_gb: .nan", "memory_gb: 0.001", "environment_variables: {BIG: " + "x" * 400_000 + "}", None]
RAISING = "def init():\n    raise ValueError('no model here')\n\ndef run(data):\n    return data\n"


def failed_creates(base: Path, count: int) -> tuple[int, int]:
    """(creates that failed as they should, orphan keepers counted after them)."""
    failed = orphans = 0
    for i in range(count):
        root = base / f"failing-{i}"
        extra = FAILING[i % len(FAILING)]
        manifest = MANIFEST.replace("auth: key}", f"auth: key, {extra}}}") if extra else MANIFEST
        make_project(root, manifest, **({} if extra else {"score": RAISING}))
        failed += mlops("apply", "--auto-approve", cwd=root).returncode != 0
        orphans += len(orphan_keepers(root / ".mlops", set()))
        mlops("destroy", "--auto-approve", cwd=root)
        orphans += len(keeper_processes(root / ".mlops"))
    return failed, orphans


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--failed-creates", type=int, default=10)
    parser.add_argument("--max-delay", type=float, default=2.5)
    parser.add_argument("--seed", type=int, default=22)
    args = parser.parse_args()
    cache = Path(os.environ.setdefault("MLOPS_CACHE_DIR", str(Path.home() / ".cache" / "mlops")))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = base / "killed"
        make_project(root, MANIFEST)
        try:
            trials = run_trials(root, args.kills, cache, seed=args.seed, max_delay=args.max_delay)
        finally:
            mlops("destroy", "--auto-approve", cwd=root)
        left_after_kills = sum(1 for t in trials for p in t.problems if p.startswith("orphan port keepers"))
        left_at_end = len(keeper_processes(root / ".mlops"))
        failed, orphans = failed_creates(base, args.failed_creates)
    print(f"{args.kills} SIGKILLed applies/destroys (0 to {args.max_delay:g} s), each followed by one recovery run:")
    print(f"  trials with an orphan keeper after recovery: {left_after_kills}")
    print(f"  keepers left after the final destroy:        {left_at_end}")
    print(f"  trials not converged (any reason):           {sum(not t.converged for t in trials)}")
    print(f"{args.failed_creates} failed creates ({failed} failed as expected), each followed by destroy:")
    print(f"  orphan keepers counted:                      {orphans}")
    for t in trials:
        if not t.converged:
            print(f"  not converged: {t.phase} killed at {t.delay:.2f} s: {'; '.join(t.problems)[:300]}")


if __name__ == "__main__":
    main()
