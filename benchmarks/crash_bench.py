"""Kill `mlops apply` / `mlops destroy` of the real example with SIGKILL at random moments of
create, update and destroy, recover with one run of the same command, and count the trials that
converged (plan exit 0, one listener per port, nothing of ours running that status does not show,
no leaked build folder, no stray pip). Prints the count per phase and the problems of the others.

    python benchmarks/crash_bench.py [--trials 90] [--max-delay 6] [--seed 7]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from crash_harness import mlops, run_trials  # noqa: E402
from support import copy_example  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=90)
    parser.add_argument("--max-delay", type=float, default=6.0, help="latest kill, in seconds after the start")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    cache = Path(os.environ.setdefault("MLOPS_CACHE_DIR", str(Path.home() / ".cache" / "mlops")))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        example = copy_example(root)
        example.rename(root / "ml.yaml")
        import git

        repo = git.Repo.init(root)
        repo.git.add(A=True)
        repo.index.commit("example")
        try:
            trials = run_trials(root, args.trials, cache, seed=args.seed, max_delay=args.max_delay,
                                bump_file="examples/diabetes/src/score.py")
        finally:
            mlops("destroy", "--auto-approve", cwd=root)
    by_phase: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for t in trials:
        by_phase[t.phase][0] += t.converged
        by_phase[t.phase][1] += 1
    total = sum(t.converged for t in trials)
    print(f"SIGKILL at a random moment (0 to {args.max_delay:g} s), then one recovery run; the example manifest")
    for phase, (ok, n) in sorted(by_phase.items()):
        print(f"  {phase:<8} {ok}/{n} converged")
    print(f"  total    {total}/{len(trials)} converged ({100 * total / max(1, len(trials)):.0f}%)")
    for t in trials:
        if not t.converged:
            print(f"  not converged: {t.phase} killed at {t.delay:.2f} s: {'; '.join(t.problems)[:300]}")


if __name__ == "__main__":
    main()
