"""A blue_green rollout on `engine: docker`: the docker engine splits traffic, so apply runs the rollout
driver; the candidate's metrics are read from its probe port (the container shares the host's
network), and the rollback leaves the previous container alone serving."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docker"))

from docker_fixtures import commit_all, engine, project_name  # noqa: E402, F401
from support import Hammer, make_project  # noqa: E402
from test_rollout_bake_e2e import FLAKY_SCORE, mlops  # noqa: E402

pytestmark = pytest.mark.slow

ROLLOUT = """\
    rollout:
      strategy: blue_green
      steps: [{weight: 100, hold: 3s}]
      analysis: {interval: 1s, min_requests: 10, max_error_rate: 5%, failure_limit: 2}
      progress_deadline: 60s
"""


def status(root: Path) -> dict:
    import json

    return json.loads(mlops("status", "--json", cwd=root).stdout)["services"][0]


def test_a_failing_candidate_on_docker_is_rolled_back(tmp_path: Path, project_name: str):  # noqa: F811
    from docker_fixtures import docker_manifest

    root = tmp_path / "repo"
    make_project(root, docker_manifest(project_name, deploy="{port: auto, auth: none}") + ROLLOUT)
    try:
        first = mlops("apply", "--auto-approve", cwd=root)
        assert first.returncode == 0, first.stdout + first.stderr
        before = status(root)
        (root / "src" / "score.py").write_text(FLAKY_SCORE)
        commit_all(root, "a candidate failing one request in five")
        with Hammer(before["endpoint"], interval=0.01) as load:
            bad = mlops("apply", "--auto-approve", cwd=root)
        assert bad.returncode == 5, bad.stdout + bad.stderr
        assert "rollout blue_green: starting version" in bad.stdout and "bake window" not in bad.stdout
        assert f"ROLLED BACK to version {before['fingerprint'][:12]}" in bad.stderr, bad.stderr
        assert "max_error_rate 5%" in bad.stderr and 500 in load.statuses
        after = status(root)
        assert after["state"] == "Healthy" and after["fingerprint"] == before["fingerprint"]
    finally:
        mlops("destroy", "--auto-approve", cwd=root)
