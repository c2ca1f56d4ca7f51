"""Canary rollouts through `mlops apply` and the rollout driver on the docker engine (issue 20), with
short holds, under load from a keep-alive and a new-connection client: a good candidate is promoted
with each step's share near its weight; a failing one is rolled back (exit 5) having answered about
the first step's share."""

from __future__ import annotations

import json

import pytest
from docker_fixtures import containers_of, engine, project_name  # noqa: F401
from support import run_cli

from tests.local.rollout_harness import CANARY, applied_under_load, deploy_stable, route_file, step_shares

pytest.importorskip("planner.rollout.driver")   # the driver (issue 20) drives these; merged separately
pytestmark = pytest.mark.docker
TARGET = "{provider: local, engine: docker}"


@pytest.fixture
def stable(tmp_path, project_name):  # noqa: F811
    path = deploy_stable(tmp_path, project_name, TARGET, CANARY)
    try:
        yield path
    finally:
        run_cli("destroy", "--auto-approve", "-f", str(path), cwd=tmp_path)


def test_a_good_candidate_is_promoted_through_every_step(stable, engine, project_name):  # noqa: F811
    result, load, weights = applied_under_load(stable, who="v2", target=TARGET)
    assert result.code == 0, result.out + result.err
    assert load.failures == []
    shares = step_shares(load, weights, "v2")
    assert [w for w, _s, _n in shares] == [10.0, 50.0], weights
    for weight, share, count in shares:
        assert abs(share - weight) <= 5, (weight, share, count)
    assert load.answers[-1][3] == "v2" and not route_file(stable).exists()
    assert len(containers_of(engine, project_name, all=False)) == 1


def test_a_failing_candidate_is_rolled_back(stable, engine, project_name):  # noqa: F811
    result, load, weights = applied_under_load(stable, who="v2", env={"TEST_FAIL_EVERY": "5"}, target=TARGET)
    assert result.code == 5, result.out + result.err
    assert "ROLLED BACK" in result.err
    assert not [f for f in load.failures if "HTTP 500" not in f]
    by_candidate = sum(1 for a in load.answers if a[3] == "v2" or a[2] >= 500)
    assert by_candidate <= (10 + 5) / 100 * len(load.answers), (by_candidate, len(load.answers))
    assert load.answers[-1][3] == "v1"
    assert json.loads(route_file(stable).read_text())["rollout"]["phase"] == "aborted"
    assert len(containers_of(engine, project_name, all=False)) == 1
