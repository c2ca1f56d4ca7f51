"""ACI has no traffic split: a canary or a shadow is refused at validate (naming the kinds that can, by
their SplitsTraffic capability), and a blue_green bake window still watches the new version (through
the sample request: ACI reports no metrics address to this machine) and re-applies the previous one
on failure. The real SDK over HTTPS to the ARM double,
whose container groups run the pushed image in the Docker engine."""

from __future__ import annotations

import json
import secrets
import shutil
import sys
from pathlib import Path

import git
import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "aci"), str(HERE.parent / "docker")]

from aci_fixtures import ROOT, apply_env, double_running, env_for, free_port, registry_or_skip  # noqa: E402
from docker_fixtures import _engine_or_skip  # noqa: E402
from support import FAILS_ONE_IN_FIVE, run_cli  # noqa: E402

from planner.rollout.support import splitting_kinds  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.docker]
EXAMPLE = ROOT.parent / "examples" / "aci"
ROLLOUT = """\
    rollout:
      strategy: {strategy}
      steps: [{{weight: 100, hold: 4s}}]
      analysis: {{interval: 1s, min_requests: 10, max_error_rate: 5%, failure_limit: 2}}
      progress_deadline: 60s
"""


@pytest.fixture
def aci(tmp_path, monkeypatch):
    _engine_or_skip()
    registry = registry_or_skip()
    password = secrets.token_urlsafe(12)
    with double_running(tmp_path / "double", registry_auth={registry: ("mlops-double", password)}) as double:
        apply_env(monkeypatch, env_for(double))
        root = tmp_path / "repo"
        shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".mlops"))
        manifest = root / "ml.yaml"
        manifest.write_text(manifest.read_text().replace("port: 5001", f"port: {free_port()}"))
        repo = git.Repo.init(root)
        repo.git.add(A=True)
        repo.index.commit("the aci example")
        yield double, manifest


def commit(root: Path, message: str) -> None:
    repo = git.Repo(root)
    repo.git.add(A=True)
    repo.index.commit(message)


def test_canary_refused_and_a_failing_candidate_rolled_back_on_aci(aci):
    double, manifest = aci
    f = ("-f", str(manifest))
    base = manifest.read_text()
    manifest.write_text(base + ROLLOUT.format(strategy="canary"))
    refused = run_cli("validate", *f)
    assert refused.code == 1
    assert "rollout.strategy: strategy canary needs a target that splits traffic; target 'aci' (aci) cannot " \
           f"(targets that can: {', '.join(splitting_kinds('canary'))})" in refused.err, refused.err
    manifest.write_text(base + ROLLOUT.format(strategy="shadow").replace(
        "      steps: [{weight: 100, hold: 4s}]\n", "      mirror: {percent: 20, hold: 4s}\n"))
    refused = run_cli("validate", *f)
    assert refused.code == 1
    assert "rollout.strategy: strategy shadow needs a target that splits traffic; target 'aci' (aci) cannot " \
           f"(targets that can: {', '.join(splitting_kinds('shadow'))})" in refused.err, refused.err
    # by capability: ACI splits nothing; IoT Edge splits by rings of devices, which cannot mirror requests
    assert "aci" not in splitting_kinds("canary") + splitting_kinds("shadow")
    assert "iotedge" in splitting_kinds("canary") and "iotedge" not in splitting_kinds("shadow")

    manifest.write_text(base + ROLLOUT.format(strategy="blue_green"))
    commit(manifest.parent, "a bake window")
    first = run_cli("apply", "--auto-approve", *f)
    assert first.code == 0, first.out + first.err
    before = {r["service"]: r for r in json.loads(run_cli("status", "--json", *f).out)["services"]}["diabetes-api"]

    score = manifest.parent / "src" / "score.py"
    score.write_text(score.read_text() + FAILS_ONE_IN_FIVE)
    commit(manifest.parent, "a candidate failing one request in five")
    bad = run_cli("apply", "--auto-approve", *f)
    assert bad.code == 5, bad.out + bad.err
    assert "watching the new version through the sample request" in bad.out
    assert "ROLLED BACK to the previous version" in bad.err and "max_error_rate 5%" in bad.err
    after = {r["service"]: r for r in json.loads(run_cli("status", "--json", *f).out)["services"]}["diabetes-api"]
    assert after["state"] == "Healthy" and after["fingerprint"] == before["fingerprint"]
    assert after["git_commit"] == before["git_commit"]
    for _ in range(10):   # the previous version, which never fails
        assert json.loads(run_cli("call", "diabetes-api", *f).out)["predictions"]
    run_cli("destroy", "--auto-approve", *f)
