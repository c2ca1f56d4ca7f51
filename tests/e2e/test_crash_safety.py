"""Crash safety of the local target: `mlops apply`/`destroy` killed with SIGKILL at random moments of
create, update and destroy always converge after one recovery run (CI-sized: 51 trials; the
benchmark runs more, on the real example)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from crash_harness import run_trials
from support import make_project

pytestmark = pytest.mark.slow

MANIFEST = """\
version: 1
project: crash
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


def test_killed_applies_always_converge(tmp_path: Path):
    root = tmp_path / "repo"
    make_project(root, MANIFEST)
    cache = Path(os.environ["MLOPS_CACHE_DIR"])
    try:
        trials = run_trials(root, int(os.environ.get("CRASH_TRIALS", "51")), cache, max_delay=2.0)
    finally:
        from crash_harness import mlops

        mlops("destroy", "--auto-approve", cwd=root)
    failed = [t for t in trials if not t.converged]
    assert not failed, [(t.phase, round(t.delay, 2), t.problems) for t in failed[:5]]
