"""A blue_green rollout end to end on the local process target: real processes, real HTTP on 127.0.0.1.

The local target splits traffic (``SplitsTraffic``), so `mlops apply` runs the rollout driver, not the
bake window (``bake.py`` keeps targets without a split: tests/rollout/test_rollout_aci_e2e.py). A
candidate that answers 500 to one request in five is rolled back (exit code 5, the failed metric on
one line, the previous version serving); a good candidate is promoted; ``--no-wait`` starts the
rollout and leaves it to the next apply; Ctrl-C during a hold rolls back (exit 5, not 130).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import git
import pytest
from support import ECHO_SCORE, FAILS_ONE_IN_FIVE, Hammer, apply_interrupted, echo_manifest, make_project

pytestmark = pytest.mark.slow

MANIFEST = echo_manifest("bake", deploy="{port: auto, auth: none}", rollout="""\
    rollout:
      strategy: blue_green
      steps: [{weight: 100, hold: 3s}]
      analysis: {interval: 1s, min_requests: 10, max_error_rate: 5%, failure_limit: 2}
      progress_deadline: 60s
""")
FLAKY_SCORE = ECHO_SCORE + FAILS_ONE_IN_FIVE


def mlops(*args: str, cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env={**os.environ, **env})


def status(root: Path) -> dict:
    out = mlops("status", "--json", cwd=root)
    return {r["service"]: r for r in json.loads(out.stdout)["services"]}["echo-api"]


def commit(root: Path, message: str) -> None:
    repo = git.Repo(root)
    repo.git.add(A=True)
    repo.index.commit(message)


@pytest.fixture
def project(tmp_path: Path):
    root = tmp_path / "repo"
    make_project(root, MANIFEST)
    yield root
    mlops("destroy", "--auto-approve", cwd=root)


def test_a_failing_candidate_is_rolled_back_loudly_and_a_good_one_is_kept(project: Path):
    root = project
    first = mlops("apply", "--auto-approve", cwd=root)
    assert first.returncode == 0, first.stderr
    assert "rollout blue_green" not in first.stdout   # a new service has nothing to roll out from
    before = status(root)
    endpoint = before["endpoint"]

    (root / "src" / "score.py").write_text(FLAKY_SCORE)
    commit(root, "a candidate failing one request in five")
    plan = mlops("plan", cwd=root)
    assert "# (rollout blue_green 100% (bake 3s), analysis every 1s)" in plan.stdout
    summary = root.parent / "summary.md"
    with Hammer(endpoint, interval=0.01) as load:
        bad = mlops("apply", "--auto-approve", cwd=root, GITHUB_STEP_SUMMARY=str(summary))
    assert bad.returncode == 5, bad.stdout + bad.stderr
    job = summary.read_text()
    assert "**Apply ROLLED BACK: 1 rolled back (service.echo-api)" in job and "max_error_rate 5%" in job
    assert "rollout blue_green: starting version" in bad.stdout   # the driver, not the bake window
    assert "bake window" not in bad.stdout
    failed_line = next(ln for ln in bad.stderr.splitlines() if ln.startswith("Error: service.echo-api:"))
    assert f"ROLLED BACK to version {before['fingerprint'][:12]}" in failed_line, failed_line
    assert "max_error_rate 5%" in failed_line and "failure_limit 2" in failed_line
    assert "Apply ROLLED BACK: 1 rolled back (service.echo-api)" in bad.stderr
    assert 500 in load.statuses                        # the candidate did serve, and failed
    after = status(root)
    assert after["state"] == "Healthy" and after["fingerprint"] == before["fingerprint"]
    assert after["git_commit"] == before["git_commit"] != git.Repo(root).head.commit.hexsha   # its own provenance
    from providers.http import request

    for _ in range(10):                                  # the previous version, which never fails
        reply = request(endpoint, data=b'{"x": 2}', headers={"Content-Type": "application/json"})
        assert reply.status == 200 and reply.json()["model"] == "v1"
    again = mlops("plan", cwd=root).stdout   # the update is still to do, and is not retried by itself
    assert "rolled back earlier" in again and "not retried: `mlops rollout retry echo-api`" in again, again

    (root / "src" / "score.py").write_text((root / "src" / "score.py").read_text().replace(
        "if count % 5 == 0", "if count < 0"))
    (root / "model.txt").write_text("v2\n")
    commit(root, "a good candidate, with a new model")
    with Hammer(endpoint, interval=0.01) as load:
        good = mlops("apply", "--auto-approve", cwd=root)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "step 1/1: the candidate answers 100% of requests" in good.stdout
    assert "intervals passed" in next(ln for ln in good.stdout.splitlines() if "promoting version" in ln)
    assert set(load.statuses) == {200} and load.answers[-1] == "v2"
    assert status(root)["models"][0].startswith("m:2@")
    shown = mlops("rollout", "status", "echo-api", cwd=root)
    assert shown.returncode == 0, shown.stderr
    assert "service.echo-api: rollout blue_green 100% (bake 3s), analysis every 1s" in shown.stdout
    assert "pending: nothing" in shown.stdout
    figures = next(ln for ln in shown.stdout.splitlines() if "metrics since start" in ln)
    assert "error rate 0%" in figures or "error rate 0.00%" in figures


def test_no_wait_starts_the_rollout_and_the_next_apply_continues_it(project: Path):
    root = project
    assert mlops("apply", "--auto-approve", cwd=root).returncode == 0
    endpoint = status(root)["endpoint"]
    (root / "model.txt").write_text("v2\n")
    commit(root, "model v2")
    applied = mlops("apply", "--auto-approve", "--no-wait", cwd=root)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "--no-wait: the rollout stays at step 1/1 (100%)" in applied.stdout, applied.stdout
    assert "the next apply continues it" in applied.stdout
    assert "analysis 1:" not in applied.stdout and "promoting version" not in applied.stdout   # nothing judged
    shown = mlops("rollout", "status", "echo-api", cwd=root)
    assert shown.returncode == 0, shown.stderr
    assert "step 1/1" in shown.stdout, shown.stdout
    with Hammer(endpoint, interval=0.01) as load:
        continued = mlops("apply", "--auto-approve", cwd=root)
    assert continued.returncode == 0, continued.stdout + continued.stderr
    assert "continuing the rollout of" in continued.stdout and "promoting version" in continued.stdout
    assert set(load.statuses) == {200} and load.answers[-1] == "v2"
    assert status(root)["models"][0].startswith("m:2@")


def test_ctrl_c_during_a_hold_rolls_back_with_exit_5(project: Path):
    root = project
    (root / "ml.yaml").write_text(MANIFEST.replace("hold: 3s", "hold: 60s").replace("60s\n", "120s\n"))
    commit(root, "a long hold")
    assert mlops("apply", "--auto-approve", cwd=root).returncode == 0
    before = status(root)
    (root / "model.txt").write_text("v2\n")
    commit(root, "model v2")
    with Hammer(before["endpoint"], interval=0.01):   # requests, so the hold judges intervals instead of waiting
        code, out, err = apply_interrupted(cwd=root, once="analysis 1:")   # holding step 1/1, judged once
    assert code == 5, out + err
    assert f"ROLLED BACK to version {before['fingerprint'][:12]}: the apply was cancelled (Ctrl-C or SIGTERM) " \
           "at step 1/1 (100%)" in err, err
    after = status(root)
    assert after["state"] == "Healthy" and after["fingerprint"] == before["fingerprint"]
    assert after["models"][0].startswith("m:1@")
