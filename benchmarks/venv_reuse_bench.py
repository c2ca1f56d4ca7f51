"""How long a virtualenv takes after one pin change: built from scratch (before issue 22) vs
started as a copy of the nearest built one (providers/local/venvclone.py). Prints medians and
the ratio, both measured here in one run on the same machine and pip cache.

    python benchmarks/venv_reuse_bench.py [--repeat 3] [--old 'joblib>=1.3' --new 'joblib==1.4.2']

The base environment is the example's (ml.yaml.example: scikit-learn and joblib), built once
into a temporary cache; each repeat builds the changed environment both ways and removes it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import yaml  # noqa: E402

from providers.local.venvs import build_log, ensure_venv, venv_key  # noqa: E402


def example_environment() -> dict:
    manifest = yaml.safe_load((ROOT / "ml.yaml.example").read_text())
    return next(iter(manifest["environments"].values()))


def timed(cache: Path, spec: dict, reuse: bool) -> float:
    steps: list[str] = []
    start = time.perf_counter()
    venv = ensure_venv(cache, spec, steps.append, reuse=reuse)
    seconds = time.perf_counter() - start
    copied = any("copying virtualenv" in s for s in steps)
    assert copied == reuse, f"reuse={reuse} but steps were {steps}"
    shutil.rmtree(venv)
    build_log(cache, spec).unlink(missing_ok=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--old", default="joblib>=1.3", help="one of the example's pins")
    parser.add_argument("--new", default="joblib==1.4.2", help="what it changes to")
    args = parser.parse_args()
    old, new = args.old, args.new
    base = example_environment()
    changed = {**base, "pip": [new if p == old else p for p in base["pip"]]}
    assert changed["pip"] != base["pip"], f"{old!r} is not one of the example's pins {base['pip']}"
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        start = time.perf_counter()
        ensure_venv(cache, base, lambda s: None, reuse=False)
        print(f"base environment {base['pip']} built in {time.perf_counter() - start:.1f} s "
              f"({venv_key(base)})")
        fresh: list[float] = []
        reused: list[float] = []
        for i in range(args.repeat):
            order = [(False, fresh), (True, reused)] if i % 2 == 0 else [(True, reused), (False, fresh)]
            for reuse, into in order:
                into.append(timed(cache, changed, reuse))
            print(f"  run {i + 1}: from scratch {fresh[-1]:.1f} s, from the nearest copy {reused[-1]:.1f} s")
    print(f"one pin changed ({old} -> {new}), {args.repeat} runs each:")
    print(f"  from scratch (before):        median {statistics.median(fresh):.1f} s")
    print(f"  copy of the nearest (after):  median {statistics.median(reused):.1f} s")
    print(f"  ratio before/after: {statistics.median(fresh) / statistics.median(reused):.1f}x")


if __name__ == "__main__":
    main()
