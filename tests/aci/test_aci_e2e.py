"""The diabetes example on `provider: aci`, end to end through the CLI: the real SDK over HTTPS to the ARM
double, whose container groups run the pushed image for real in the Docker engine.

One flow (the image is built once): validate -> plan -> apply -> call -> plan 0 -> tag change (PATCH,
no restart) -> model change (restarting update, said in the plan) -> cpu change (replacement) -> key
change (masked in the plan; old key 401, new key 200) -> destroy (a group without our tag is left
alone) -> a registry that denies the pull (Failed with ARM's message) -> a 429 storm (retried, then
one clear line).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import re
import secrets
import shutil
from pathlib import Path

import git
import pytest
from aci_fixtures import ROOT, apply_env, double_running, env_for, free_port, registry_or_skip
from docker_fixtures import _engine_or_skip
from support import project_data, run_cli

from planner.addresses import Address
from planner.project import Project
from providers.http import request

pytestmark = [pytest.mark.slow, pytest.mark.docker]
EXAMPLE = ROOT.parent / "examples" / "aci"
SERVICE = Address("service", "diabetes-api")
SAMPLE = json.loads((EXAMPLE / "sample-request.json").read_text())


def ok(*args: str, code: int = 0) -> str:
    result = run_cli(*args)
    assert result.code == code, f"mlops {' '.join(args)} exited {result.code}\n{result.out}\n{result.err}"
    return result.out + result.err


def retrain(path: Path, alpha: float) -> None:
    """A really different model (another Ridge alpha), as a data scientist would commit it."""
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    x, y = load_diabetes(return_X_y=True)
    joblib.dump(Ridge(alpha=alpha).fit(x, y), path)


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
        port = free_port()       # host network in the double: never the 5001 a hand-started example uses
        manifest.write_text(manifest.read_text().replace("port: 5001", f"port: {port}"))
        repo = git.Repo.init(root)
        repo.git.add(A=True)
        repo.index.commit("the aci example")
        yield double, manifest, port


def edit(manifest: Path, old: str, new: str) -> None:
    text = manifest.read_text()
    assert old in text, old
    manifest.write_text(text.replace(old, new))


def container_id(double) -> str:
    group = double.groups[("ml-dev", "diabetes-api")]
    return group["_runtime"]["containers"]["diabetes-api"]


def score(port: int, key: str | None) -> tuple[int, dict | None]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    reply = request(f"http://127.0.0.1:{port}/score", data=json.dumps(SAMPLE).encode(), headers=headers, timeout=30)
    return reply.status, (reply.json() if reply.status == 200 else None)


def test_the_example_lives_and_dies_on_aci(aci, monkeypatch):
    double, manifest, port = aci
    f = ("-f", str(manifest))
    keys_file = project_data(manifest) / "keys" / "diabetes-api.json"

    assert "The manifest is valid" in ok("validate", *f)
    planned = ok("plan", "--detailed-exitcode", *f, code=2)
    assert "service.diabetes-api will be created" in planned and "auth: none" not in planned

    applied = ok("apply", "--auto-approve", *f)
    assert re.search(r"waiting for provisioning: (Pending|Creating)", applied)
    assert "sending the sample request" in applied
    first = json.loads(ok("call", "diabetes-api", *f, "--data", json.dumps(SAMPLE)))
    assert len(first["predictions"]) == 2 and abs(first["predictions"][0] - 203.488) < 0.01, first
    status = ok("status", "--json", *f)
    row = {r["service"]: r for r in json.loads(status)["services"]}["diabetes-api"]
    assert row["state"] == "Healthy" and "diabetes-dev.westeurope.azurecontainer.io" in row["endpoint"]
    assert any("init() finished" in line for line in ok("logs", "diabetes-api", *f).splitlines())
    project = Project.load(manifest)
    live = project.live()[SERVICE]
    stream = project.provider_for(live).logs(live, follow=True, tail=2)   # --follow: polls list_logs
    assert len(list(itertools.islice(stream, 2))) == 2
    assert score(port, json.loads(keys_file.read_text())["primary"])[0] == 200
    follower = concurrent.futures.ThreadPoolExecutor(1).submit(next, stream)   # never hang the suite on it
    assert "path=/score" in follower.result(timeout=60), "a new line shows up while following"
    assert "No changes" in ok("plan", "--detailed-exitcode", *f, code=0)

    # Tags only: a PATCH, the container keeps running (no PUT, same container).
    puts, running = len(double.calls("PUT")), container_id(double)
    edit(manifest, "tags: {owner: ml-team}", "tags: {owner: ml-ops, cost-centre: cc-42}")
    planned = ok("plan", *f)
    assert "will be updated in-place" in planned and "restarts it" not in planned, planned
    ok("apply", "--auto-approve", *f)
    assert len(double.calls("PUT")) == puts and double.calls("PATCH") and container_id(double) == running
    assert double.groups[("ml-dev", "diabetes-api")]["tags"]["cost-centre"] == "cc-42"
    assert "No changes" in ok("plan", *f)

    # A new model: an in-place PUT, which restarts the containers; the plan says so.
    retrain(manifest.parent / "model.pkl", alpha=2.0)
    planned = ok("plan", *f)
    assert "restarts it to update it: callers briefly lose it" in planned, planned
    comment = ok("plan", "--format", "markdown", *f)
    assert "**Risk:** 1 restarting update" in comment and "`diabetes-api` restarts to update" in comment, comment
    ok("apply", "--auto-approve", *f)
    assert len(double.calls("PUT")) == puts + 1 and container_id(double) != running
    second = json.loads(ok("call", "diabetes-api", *f, "--data", json.dumps(SAMPLE)))
    assert second["predictions"] != first["predictions"], "the new model must answer"

    # CPU cannot change in place on ACI: the group is replaced (deleted first: one name per resource group).
    deletes = len(double.calls("DELETE"))
    edit(manifest, "cpu: 1 ", "cpu: 2 ")
    planned = ok("plan", *f)
    assert re.search(r"must be replaced|-/\+", planned) and "deploy.cpu" in planned, planned
    ok("apply", "--auto-approve", *f)
    assert len(double.calls("DELETE")) == deletes + 1
    assert double.groups[("ml-dev", "diabetes-api")]["properties"]["containers"][0]["properties"]["resources"][
        "requests"]["cpu"] == 2.0
    old_key = json.loads(keys_file.read_text())["primary"]
    assert score(port, old_key)[0] == 200

    # A new key from the environment: the plan shows it changed, never its value; the old key stops working.
    new_key = secrets.token_urlsafe(24)
    monkeypatch.setenv("ACI_E2E_KEY", new_key)
    edit(manifest, "auth: key ", 'auth: key\n      primary_key: "${ACI_E2E_KEY}"\n      # ')
    planned = ok("plan", *f)
    assert "primary_key" in planned and "sensitive" in planned and new_key not in planned and old_key not in planned
    applied = ok("apply", "--auto-approve", *f)
    assert new_key not in applied
    assert score(port, old_key)[0] == 401 and score(port, new_key)[0] == 200
    assert json.loads(ok("call", "diabetes-api", *f, "--data", json.dumps(SAMPLE)))["predictions"]
    rotated = secrets.token_urlsafe(24)
    monkeypatch.setenv("ACI_E2E_KEY", rotated)
    planned = ok("plan", *f)
    assert re.search(r"~ deploy.primary_key\s+= \(sensitive\) -> \(sensitive, changed\)|~ deploy.primary_key", planned)
    assert "restarts it" in planned and rotated not in planned and new_key not in planned, planned
    ok("apply", "--auto-approve", *f)
    assert score(port, new_key)[0] == 401 and score(port, rotated)[0] == 200
    new_key = rotated
    group = double.get_group(double.subscription_id, "ml-dev", "diabetes-api")
    envs = group["properties"]["containers"][0]["properties"]["environmentVariables"]
    assert {e["name"] for e in envs if "secureValue" in e or "value" not in e} >= {"MLOPS_PRIMARY_KEY"}
    assert new_key not in json.dumps(group)
    rendered = ok("render", *f)
    assert "secureValue: (sensitive)" in rendered and new_key not in rendered and "MLOPS_PRIMARY_KEY" in rendered

    # Destroy removes ours only: a group without our tags in the same resource group stays.
    foreign = double.groups[("ml-dev", "diabetes-api")]["properties"]["containers"][0]["properties"]["image"]
    status_code, _, _ = double.put_group(double.subscription_id, "ml-dev", "other-team-api", {
        "location": "westeurope", "tags": {"team": "other"}, "properties": {"osType": "Linux", "containers": [{
            "name": "other-team-api", "properties": {
                "image": foreign, "command": ["/opt/venv/bin/python", "-c", "import time; time.sleep(600)"],
                "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.2}}}}],
            "imageRegistryCredentials": [{"server": foreign.split("/")[0], "username": "mlops-double",
                                          "password": double.registry_auth[foreign.split("/")[0]][1]}]}})
    assert status_code == 201
    ok("destroy", "--auto-approve", *f)
    assert ("ml-dev", "diabetes-api") not in double.groups and ("ml-dev", "other-team-api") in double.groups
    assert "No changes" in ok("plan", "--destroy", *f)

    # The registry refuses the pull: provisioning fails with ARM's code and message.
    monkeypatch.setenv("MLOPS_REGISTRY_PASSWORD", "not-the-password")
    failed = run_cli("apply", "--auto-approve", *f)
    assert failed.code == 1
    text = failed.out + failed.err
    assert "InaccessibleImage" in text and "is not accessible. Please check the image and registry credential" in text
    assert "not-the-password" not in text
    assert "Failed" in ok("status", *f)
    replanned = ok("plan", *f)
    assert "service.diabetes-api" in replanned and "No changes" not in replanned

    # Throttling: a short storm is ridden out (Retry-After honoured), a long one ends in one clear line.
    double.throttle(2, retry_after=1)
    ok("status", *f)
    double.throttle(100, retry_after=1)
    stormy = run_cli("plan", *f)
    assert stormy.code == 1 and "kept throttling" in stormy.err and "TooManyRequests" in stormy.err
    assert "Traceback" not in stormy.err and len(stormy.err.strip().splitlines()) <= 2, stormy.err
    double.throttle(0)
    monkeypatch.setenv("MLOPS_REGISTRY_PASSWORD", double.registry_auth[foreign.split("/")[0]][1])
    ok("destroy", "--auto-approve", *f)
    assert ("ml-dev", "diabetes-api") not in double.groups
