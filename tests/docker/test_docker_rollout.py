"""Rollouts on the local target's docker engine (issue 20), through ``SplitsTraffic`` as the driver
calls it: real containers on the host network, the real port keeper, the route file mounted
read-only into each container, under load from a keep-alive and a new-connection client."""

from __future__ import annotations

import pytest
from docker_fixtures import containers_of, engine, project_name  # noqa: F401
from support import project_data, run_cli

from planner.core.resources import spec_fingerprint
from planner.rollout.analysis import parse_metrics
from providers.local import routefile
from tests.local.rollout_harness import SERVICE, candidate, deploy_stable

pytestmark = pytest.mark.docker
TARGET = "{provider: local, engine: docker}"


@pytest.fixture
def stable(tmp_path, project_name):  # noqa: F811
    path = deploy_stable(tmp_path, project_name, TARGET)
    try:
        yield path
    finally:
        run_cli("destroy", "--auto-approve", "-f", str(path), cwd=tmp_path)


def running(engine, project: str) -> list[str]:  # noqa: F811
    return sorted(c.labels["mlops.instance"] for c in containers_of(engine, project, all=False))


def test_canary_shares_then_promote_under_load(stable, engine, project_name):  # noqa: F811
    roll = candidate(stable, "v2", target=TARGET)
    with roll.load() as load:
        live = roll.start()
        assert live.rollout is not None and not live.strays
        assert [v.traffic for v in live.versions] == [1.0, 0.0] and live.versions[1].health.state == "Healthy"
        for weight in (10, 50):
            live = roll.provider.set_traffic(live, roll.state(live, weight=float(weight), step=0), roll.events)
            since = load.mark()
            until = load.wait_for(400, since)   # each client: about 1.1 points of spread at 10 %
            for kind in ("keep-alive", "new-connection"):
                got, count = load.share(kind, "v2", since, until)
                assert abs(got - weight) <= 5, (kind, weight, got, count)
        version = spec_fingerprint(roll.desired.spec)
        assert parse_metrics(roll.provider.metrics(live, version))[version].codes["2xx"] > 0
        live = roll.provider.promote(live, roll.desired, roll.events)
        since = load.mark()
        load.wait_for(30, since + 0.5)
    assert load.failures == []
    assert live.rollout is None and spec_fingerprint(live.spec) == version and not live.strays
    assert {a[3] for a in load.answers if a[1] > since} == {"v2"}
    assert running(engine, project_name) == [live.details["instance"]]
    assert not routefile.path_of(project_data(stable), "dev", SERVICE).exists()


def test_shadow_then_abort_under_load(stable, engine, project_name):  # noqa: F811
    roll = candidate(stable, "v2", env={"TEST_FAIL_EVERY": "2"}, target=TARGET)
    with roll.load() as load:
        live = roll.start(phase="mirror")
        live = roll.provider.set_traffic(live, roll.state(live, phase="mirror", mirror=50.0), roll.events)
        load.wait_for(100, load.mark())
        version = spec_fingerprint(roll.desired.spec)
        counts = parse_metrics(roll.provider.metrics(live, version))[version].codes
        assert counts["5xx"] > 0   # the copies failed
        live = roll.provider.abort(live, roll.state(live, phase="aborted", reason="error rate"), roll.events)
        load.wait_for(30, load.mark())
    assert load.failures == []
    assert {a[3] for a in load.answers} == {"v1"}
    assert live.rollout is not None and live.rollout.phase == "aborted"
    assert running(engine, project_name) == [live.details["instance"]]
