"""Canary rollouts through `mlops apply` and the rollout driver on the docker engine (issue 20), with
short holds, under load from a keep-alive and a new-connection client: a good candidate is promoted
with each step's share near its weight; a failing one is rolled back (exit 5) having answered about
the first step's share."""

from __future__ import annotations

import pytest
from docker_fixtures import containers_of, engine, project_name  # noqa: F401
from support import run_cli

from tests.local.rollout_harness import CANARY, deploy_stable, promoted_under_load, rolled_back_under_load

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
    promoted_under_load(stable, TARGET)
    assert len(containers_of(engine, project_name, all=False)) == 1


def test_a_failing_candidate_is_rolled_back(stable, engine, project_name):  # noqa: F811
    rolled_back_under_load(stable, TARGET)
    assert len(containers_of(engine, project_name, all=False)) == 1
