"""Rollouts on the local target's process engine (issue 20), through ``SplitsTraffic`` as the driver
calls it: real detached runtimes, the real port keeper, real HTTP on 127.0.0.1, under load from a
keep-alive client and a new-connection client the whole time."""

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

from planner.core.resources import spec_fingerprint
from planner.rollout.analysis import parse_metrics
from providers.local import processes, routefile
from tests.local.rollout_harness import SERVICE, candidate, deploy_stable

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stable(tmp_path):
    """A deployed v1 of the service (process engine); destroyed afterwards, whatever runs then."""
    project = f"rl-{uuid.uuid4().hex[:8]}"
    path = deploy_stable(tmp_path, project, "{provider: local}")
    try:
        yield path
    finally:
        run_cli("destroy", "--auto-approve", "-f", str(path), cwd=tmp_path)


def marked(path: Path) -> list[str]:
    """Instances of the service that run (by their marker), whatever any record says."""
    from providers.local.provider import MARKER

    found = processes.find_marked(MARKER, "")
    return sorted(v.split("/")[3] for _pid, _start, v in found if f"/{SERVICE}/" in v
                  and (project_data(path) / "local" / "instances" / f"{SERVICE}-{v.split('/')[3]}").exists())


def test_canary_shares_then_promote_under_load(stable):
    roll = candidate(stable, "v2")
    with roll.load() as load:
        live = roll.start()
        assert live.rollout is not None and live.rollout.phase == "canary"
        assert [(v.spec_fingerprint, v.traffic) for v in live.versions] == [
            (spec_fingerprint(live.spec), 1.0), (spec_fingerprint(roll.desired.spec), 0.0)]
        assert live.versions[1].health.state == "Healthy"
        assert not live.strays
        since = load.mark()
        until = load.wait_for(30, since)
        assert load.share("keep-alive", "v2", since, until)[0] == 0   # held back: 0 % before the first step
        for weight in (10, 50):
            live = roll.provider.set_traffic(live, roll.state(live, weight=float(weight), step=0), roll.events)
            assert [v.traffic for v in live.versions] == [1 - weight / 100, weight / 100]
            since = load.mark()
            until = load.wait_for(400, since)   # each client: about 1.1 points of spread at 10 %
            for kind in ("keep-alive", "new-connection"):
                got, count = load.share(kind, "v2", since, until)
                assert abs(got - weight) <= 5, (kind, weight, got, count)
        text = roll.provider.metrics(live, spec_fingerprint(roll.desired.spec))
        answered_v2 = sum(1 for a in load.answers if a[3] == "v2")
        version = spec_fingerprint(roll.desired.spec)
        assert parse_metrics(text)[version].codes["2xx"] >= answered_v2 - 2   # the runtimes' instances summed
        assert f'version="{spec_fingerprint(live.spec)}"' not in text
        live = roll.provider.promote(live, roll.desired, roll.events)
        since = load.mark()
        load.wait_for(30, since + 0.5)
    assert load.failures == []
    assert live.rollout is None and spec_fingerprint(live.spec) == spec_fingerprint(roll.desired.spec)
    assert len(live.versions) == 1 and not live.strays
    assert {a[3] for a in load.answers if a[1] > since} == {"v2"}   # the previous version is gone
    assert not routefile.path_of(project_data(stable), "dev", SERVICE).exists()
    assert marked(stable) == [live.details["instance"]]


def test_shadow_clients_see_only_stable_while_the_candidate_counts_the_copies(stable):
    roll = candidate(stable, "v2", env={"TEST_FAIL_EVERY": "2"})   # passes its smoke test, then fails half
    with roll.load() as load:
        live = roll.start(phase="mirror")
        before = load.mark()
        live = roll.provider.set_traffic(live, roll.state(live, phase="mirror", mirror=20.0), roll.events)
        since = load.mark()
        until = load.wait_for(150, since)
        time.sleep(0.5)   # the last copies arrive
        after = load.mark()
    assert load.failures == []
    assert {a[3] for a in load.answers} == {"v1"}
    version = spec_fingerprint(roll.desired.spec)
    text = roll.provider.metrics(live, version)
    counts = parse_metrics(text)[version].codes
    copies = counts["2xx"] + counts["5xx"] - 1   # all but the smoke test
    possible = sum(1 for a in load.answers if before <= a[1] <= after)
    surely = sum(1 for a in load.answers if since <= a[1] <= until)
    assert 0.2 * surely - 5 <= copies <= 0.2 * possible + 5, (copies, surely, possible)
    assert counts["5xx"] >= copies / 2 - 2   # the analysis sees the candidate fail
    assert live.versions[1].traffic == 0.0 and live.rollout.mirror == 20.0


def test_abort_under_load_keeps_the_state_and_stable_serves(stable):
    roll = candidate(stable, "v2")
    with roll.load() as load:
        live = roll.start()
        live = roll.provider.set_traffic(live, roll.state(live, weight=50.0, step=0), roll.events)
        load.wait_for(50, load.mark())
        live = roll.provider.abort(live, roll.state(live, phase="aborted", reason="p99 too high"), roll.events)
        since = load.mark()
        load.wait_for(50, since)
    assert load.failures == []
    assert {a[3] for a in load.answers if a[1] > since} == {"v1"}
    assert live.rollout is not None and live.rollout.phase == "aborted" and live.rollout.reason == "p99 too high"
    assert len(live.versions) == 1 and live.versions[0].traffic == 1.0
    assert marked(stable) == [live.details["instance"]]
    live = roll.provider.clear(live, roll.events)
    assert live.rollout is None


KILL_DURING_START = """\
import sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
from tests.local.rollout_harness import candidate
from pathlib import Path
roll = candidate(Path({path!r}), "v2")
roll.start()
print("started", flush=True)
"""


def test_kill_9_of_apply_while_the_candidate_starts_leaves_a_state_read_reports(stable):
    route = routefile.path_of(project_data(stable), "dev", SERVICE)
    code = KILL_DURING_START.format(repo=str(REPO), tests=str(REPO / "tests"), path=str(stable))
    child = subprocess.Popen([sys.executable, "-c", code], cwd=stable.parent, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (route.exists() and len(marked(stable)) == 2):
        assert child.poll() is None, child.stdout.read().decode()
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)   # the candidate runs and is named; its apply is gone
    child.wait()
    roll = candidate(stable, "v2")
    live = roll.live()
    named = json.loads(route.read_text())["candidate"]["instance"]
    assert live.rollout is not None and live.rollout.candidate == spec_fingerprint(roll.desired.spec)
    assert not live.strays, live.details.get("message")
    assert [v.revision for v in live.versions] == [live.details["instance"], named]
    assert sorted(marked(stable)) == sorted([live.details["instance"], named])
    # The next apply continues: the same candidate (once ready) is reused, nothing else starts.
    live = roll.provider.start_candidate(roll.desired, live, roll.state(live), roll.events)
    assert sorted(marked(stable)) == sorted([live.details["instance"], live.versions[1].revision])
    assert live.versions[1].health.state == "Healthy"
    keepers = list((project_data(stable) / "ports").glob("*.json"))
    assert len(keepers) == 1


def test_a_promote_interrupted_after_the_record_moved_is_finished_never_undone(stable):
    roll = candidate(stable, "v2")
    live = roll.start()
    live = roll.provider.set_traffic(live, roll.state(live, weight=50.0, step=0), roll.events)
    new = live.versions[1].revision
    entry = json.loads(routefile.path_of(project_data(stable), "dev", SERVICE).read_text())["candidate"]
    roll.provider._go_live(SERVICE, entry)   # promote's first two moves, then the apply dies
    roll.provider._adopt(SERVICE, entry)
    live = roll.live()
    assert live.details["instance"] == new and live.rollout is None
    assert len(live.strays) == 1   # the previous version, which the next apply stops
    live = roll.provider.promote(live, roll.desired, roll.events)   # a resumed apply finishes it
    assert live.details["instance"] == new and not live.strays
    assert marked(stable) == [new]
    assert not routefile.path_of(project_data(stable), "dev", SERVICE).exists()


def test_a_new_rollout_after_a_promote_killed_before_it_tidied_up_never_stops_the_serving_instance(stable):
    roll = candidate(stable, "v2")
    live = roll.live()
    live = roll.provider.start_candidate(roll.desired, live, roll.state(live), roll.events)
    v2 = live.versions[1].revision
    entry = json.loads(routefile.path_of(project_data(stable), "dev", SERVICE).read_text())["candidate"]
    roll.provider._go_live(SERVICE, entry)   # promote's first two moves, then the apply dies:
    roll.provider._adopt(SERVICE, entry)     # the route file's candidate is the serving instance now
    roll = candidate(stable, "v3")           # and the next apply rolls out another version
    live = roll.live()
    assert live.details["instance"] == v2
    with roll.load() as load:
        live = roll.provider.start_candidate(roll.desired, live, roll.state(live), roll.events)
        since = load.mark()
        load.wait_for(20, since)
    assert load.failures == []
    assert live.details["instance"] == v2 and live.versions[0].revision == v2
    v3 = live.versions[1].revision
    assert v3 != v2 and live.versions[1].health.state == "Healthy"
    assert v2 in marked(stable) and v3 in marked(stable)
    assert {a[3] for a in load.answers if a[1] > since} <= {"v1", "v2"}   # v2 serves; v3 is held back


def test_a_cancelled_abort_still_stops_the_candidate(stable):
    from planner.core.events import Events

    roll = candidate(stable, "v2")
    live = roll.live()
    live = roll.provider.start_candidate(roll.desired, live, roll.state(live), roll.events)
    live = roll.provider.set_traffic(live, roll.state(live, weight=50.0, step=0), roll.events)
    cancelled = Events()
    cancelled.cancel.set()   # Ctrl-C came while the abort waited for the stable version to pick it up
    live = roll.provider.abort(live, roll.state(live, phase="aborted", reason="p99 too high"), cancelled)
    assert marked(stable) == [live.details["instance"]]
    entry = json.loads(routefile.path_of(project_data(stable), "dev", SERVICE).read_text())["candidate"]
    assert entry["stopped"] is True
    assert live.rollout is not None and live.rollout.phase == "aborted"
    assert len(live.versions) == 1


def test_the_route_file_carries_the_candidates_scoring_timeout(stable):
    # The stable version forwards requests to the candidate: it waits as long as the candidate may take.
    roll = candidate(stable, "v2")
    live = roll.live()
    roll.provider.start_candidate(roll.desired, live, roll.state(live), roll.events)
    entry = json.loads(routefile.path_of(project_data(stable), "dev", SERVICE).read_text())["candidate"]
    assert entry["scoring_timeout_ms"] == roll.desired.spec["deploy"]["scoring_timeout_ms"] == 60000
