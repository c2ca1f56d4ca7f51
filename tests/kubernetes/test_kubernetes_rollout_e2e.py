"""A canary rollout through ``mlops apply`` on the Kubernetes double (pods run for real in Docker):
the driver walks the steps with analysis of each version's metrics, read from the runtimes' probe
ports through the double's pod proxy, while a client keeps calling the service; the candidate is
promoted and the next plan has nothing to do."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from support import ECHO_SCORE, FAILS_ONE_IN_FIVE, Background, run_cli
from test_kubernetes_rollout import _commit, applied, apps, double, manifest_text  # noqa: F401 (fixtures)

from planner.project import Project
from providers.base import ensure_connected

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ROLLOUT = """\
    rollout:
      strategy: canary
      steps: [{weight: 33, hold: 2s}, {weight: 66, hold: 2s}]   # 1 then 2 of 3 pods
      analysis: {interval: 1s, min_requests: 2, max_error_rate: 5%, failure_limit: 1}
      progress_deadline: 120s
"""

FLAKY = ECHO_SCORE + FAILS_ONE_IN_FIVE


class Load(Background):
    """Calls the service through the API server's service proxy on a thread: every answer's model."""

    def __init__(self, manifest: Path):
        super().__init__()
        project = Project.load(manifest)
        self.provider = project.provider_for("k8s")
        ensure_connected(self.provider)
        self.answers: list[str] = []
        self.failures: list[str] = []

    def once(self) -> None:
        try:
            live = next(iter(self.provider.read()))
            status, body, _where = self.provider.call(live, b'{"x": 1}', timeout=10)
        except Exception as exc:   # the test reports it
            self.failures.append(f"{type(exc).__name__}: {exc}")
            return
        if status == 200:
            self.answers.append(json.loads(body)["model"])
        else:
            self.failures.append(f"HTTP {status}: {body[:100]!r}")
        self.pause(0.05)


def test_a_canary_through_mlops_apply_is_promoted_step_by_step(double, apps, tmp_path: Path):  # noqa: F811
    root = tmp_path / "repo"
    with applied(root, manifest_text(f"re-{uuid.uuid4().hex[:6]}", rollout=ROLLOUT)) as (manifest, f):
        (root / "model.txt").write_text("v2\n")
        _commit(root, "a second model")
        planned = run_cli("plan", *f)
        assert planned.code == 0 and "canary" in planned.out, planned.out
        with Load(manifest) as load:
            rolled = run_cli("apply", "--auto-approve", *f)
        assert rolled.code == 0, rolled.out + rolled.err
        assert "promoting version" in rolled.out, rolled.out
        assert "traffic 33% to the candidate: 1 candidate and 2 stable replicas" in rolled.out, rolled.out
        assert "traffic 66% to the candidate: 2 candidate and 1 stable replicas" in rolled.out, rolled.out
        assert rolled.out.count("traffic 33% to the candidate") == 1, rolled.out   # when it moves, not per interval
        assert "analysis" in rolled.out and "pass" in rolled.out, rolled.out
        assert not load.failures, load.failures[:3]
        assert {"v1", "v2"} <= set(load.answers), "both versions answered while the canary held its steps"
        assert load.answers[-1] == "v2"
        names = {d.metadata.name for d in apps.list_namespaced_deployment("ro").items}
        assert "echo-api-canary" not in {n for n in names if n.startswith("echo-api")}
        assert run_cli("plan", "--detailed-exitcode", *f).code == 0


def test_a_failing_canary_through_mlops_apply_is_rolled_back_and_the_stable_keeps_serving(
        double, apps, tmp_path: Path):  # noqa: F811
    root = tmp_path / "repo"
    with applied(root, manifest_text(f"rb-{uuid.uuid4().hex[:6]}", rollout=ROLLOUT)) as (manifest, f):
        (root / "src" / "score.py").write_text(FLAKY)
        _commit(root, "a candidate failing one request in five")
        with Load(manifest) as load:
            rolled = run_cli("apply", "--auto-approve", *f)
        assert rolled.code == 5, rolled.out + rolled.err   # the rollback's own exit code
        assert "ROLLED BACK" in rolled.err and "max_error_rate" in rolled.err, rolled.err
        assert "traffic 66%" not in rolled.out, "rolled back at the first step"
        assert not [x for x in load.failures if not x.startswith("HTTP 500")], load.failures[:3]
        assert load.failures, "the candidate's errors reached the callers it served (1 pod of 3)"
        names = {d.metadata.name for d in apps.list_namespaced_deployment("ro").items}
        assert "echo-api-canary" not in names
        live = Load(manifest).provider.read()[0]
        assert live.rollout is not None and live.rollout.phase == "aborted" and live.status == "Healthy"
        assert live.health.ready == 3
        planned = run_cli("plan", *f)
        assert "rolled back earlier" in planned.out and "mlops rollout retry echo-api" in planned.out, planned.out


def test_apply_killed_in_the_middle_of_a_canary_continues_from_the_target(double, apps, tmp_path: Path):  # noqa: F811
    import os
    import signal
    import subprocess
    import sys
    import time

    from support import ROOT

    root = tmp_path / "repo"
    slow = ROLLOUT.replace("hold: 2s", "hold: 6s")
    with applied(root, manifest_text(f"rk-{uuid.uuid4().hex[:6]}", rollout=slow)) as (manifest, f):
        (root / "model.txt").write_text("v2\n")
        _commit(root, "a second model")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        with Load(manifest) as load:
            child = subprocess.Popen([sys.executable, "-m", "planner.cli", "apply", "--auto-approve", *f], cwd=root,
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while True:   # kill -9 once the first step holds: one candidate pod ready beside two stable ones
                assert child.poll() is None, "apply ended before it could be killed"
                assert time.monotonic() < deadline, "the first step was never reached"
                annotations = apps.read_namespaced_deployment("echo-api", "ro").metadata.annotations or {}
                if '"step":0' in annotations.get("mlops.dev/rollout", ""):
                    break
                time.sleep(0.2)
            child.send_signal(signal.SIGKILL)
            child.wait()
            provider = Load(manifest).provider
            stopped = provider.read()[0]
            assert stopped.rollout is not None and stopped.rollout.step == 0
            assert len(stopped.versions) == 2, "the candidate runs on after the kill"
            again = run_cli("apply", "--auto-approve", *f)
        assert again.code == 0, again.out + again.err
        assert "continuing the rollout" in again.out, again.out
        assert not load.failures, load.failures[:3]
        live = provider.read()[0]
        assert live.rollout is None and len(live.versions) == 1 and live.health.ready == 3
        assert "echo-api-canary" not in {d.metadata.name for d in apps.list_namespaced_deployment("ro").items}
        assert run_cli("plan", "--detailed-exitcode", *f).code == 0
