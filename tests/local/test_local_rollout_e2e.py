"""Canary rollouts through `mlops apply` and the rollout driver on the process engine (issue 20),
with short holds, under load from a keep-alive and a new-connection client: a good candidate is
promoted with each step's share near its weight; a failing one is rolled back (exit 5) having
answered about the first step's share, and is not retried; an apply killed with SIGKILL in the
middle is continued by the next one (one keeper, no orphan version)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from support import project_data, run_cli

from planner.project import Project
from providers.local.provider import MARKER
from tests.local.rollout_harness import (
    CANARY,
    SERVICE,
    Load,
    deploy_stable,
    promoted_under_load,
    rewrite,
    rolled_back_under_load,
    route_file,
)

pytest.importorskip("planner.rollout.driver")   # the driver (issue 20) drives these; merged separately
pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stable(tmp_path):
    path = deploy_stable(tmp_path, f"rl-{uuid.uuid4().hex[:8]}", "{provider: local}", CANARY)
    try:
        yield path
    finally:
        run_cli("destroy", "--auto-approve", "-f", str(path), cwd=tmp_path)


def instances(path: Path) -> list[str]:
    """Instances of the service that run (found by their marker), whatever any record says."""
    from providers.local import processes

    mine = project_data(path) / "local" / "instances"
    return sorted(v.split("/")[3] for _pid, _start, v in processes.find_marked(MARKER, "")
                  if f"/{SERVICE}/" in v and (mine / f"{SERVICE}-{v.split('/')[3]}").exists())


def keepers(path: Path) -> list[Path]:
    return sorted((project_data(path) / "ports").glob("*.json"))


def test_a_good_candidate_is_promoted_through_every_step(stable):
    promoted_under_load(stable)
    assert len(instances(stable)) == 1 and len(keepers(stable)) == 1


def test_a_failing_candidate_is_rolled_back_loudly_and_not_retried(stable):
    result, weights = rolled_back_under_load(stable)
    assert "max_error_rate" in result.err
    assert max(w for _t, w in weights) == 10.0   # never past the first step
    assert "max_error_rate" in json.loads(route_file(stable).read_text())["rollout"]["reason"]
    assert len(instances(stable)) == 1
    again = run_cli("apply", "--auto-approve", "-f", str(stable), cwd=stable.parent)
    assert again.code == 5 and "rollout retry" in again.err
    assert len(instances(stable)) == 1


def test_apply_killed_mid_rollout_is_continued_by_the_next_one(stable):
    rewrite(stable, "v2", rollout=CANARY)
    apply = subprocess.Popen([sys.executable, "-m", "planner.cli", "apply", "--auto-approve", "-f", str(stable)],
                             cwd=stable.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert apply.poll() is None, apply.stdout.read().decode()
        try:
            if json.loads(route_file(stable).read_text())["rollout"]["weight"] == 10.0:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    os.kill(apply.pid, signal.SIGKILL)   # in the middle of step 1
    apply.wait()
    assert len(keepers(stable)) == 1 and len(instances(stable)) == 2
    live = next(lv for lv in Project.load(stable).providers["dev"].read() if lv.address.name == SERVICE)
    assert live.rollout is not None and (live.rollout.phase, live.rollout.weight) == ("canary", 10.0)
    assert [v.traffic for v in live.versions] == [0.9, 0.1] and not live.strays
    provider = Project.load(stable).providers["dev"]
    endpoint = provider.endpoint(live)
    with Load(int(endpoint.scoring_url.split(":")[2].split("/")[0]), dict(endpoint.headers)) as load:
        result = run_cli("apply", "--auto-approve", "-f", str(stable), cwd=stable.parent)
    assert result.code == 0, result.out + result.err
    assert "continuing the rollout" in result.out + result.err
    assert load.failures == [] and load.answers[-1][3] == "v2"
    assert len(keepers(stable)) == 1 and len(instances(stable)) == 1
    assert not route_file(stable).exists()
