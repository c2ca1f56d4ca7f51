"""End to end through the CLI: a fleet of three simulated devices whose modules really run.

One flow (issue 12): apply -> the plant-3 devices run the module, plant-4 does not -> call returns
predictions -> plan shows nothing -> a model change is a new deployment at a higher priority, the
old one deleted -> a module crashing on one device (Unhealthy naming it) -> retagging a device
moves the counts -> a condition matching nothing (Unschedulable, not replaced by the next plan)
-> destroy leaves the user's own base deployment untouched.
"""

from __future__ import annotations

import json
import time

import pytest
from iotedge_fixtures import fleet_fixture, manifest
from support import make_project, run_cli

from providers.iotedge.hub import ConnectionString, HubClient

pytestmark = [pytest.mark.slow, pytest.mark.docker]

CRASHES_ON_B = '''\
import json, os

def init():
    global prefix
    if os.environ.get("IOTEDGE_DEVICEID") == "plant3-b":
        raise RuntimeError("camera /dev/video0 not found on this device")
    prefix = open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt")).read().strip()

def run(raw_data):
    return {"model": prefix, "echo": json.loads(raw_data)}
'''


fleet = fleet_fixture("edge-e2e")


def _ours(hub: HubClient) -> list[dict]:
    return [c for c in hub.list_configurations() if (c.get("labels") or {}).get("managed-by") == "mlops"]


def _status(root) -> dict:
    result = run_cli("status", "--json", cwd=root)
    assert result.code == 0, result.err
    return next(s for s in json.loads(result.out)["services"] if s["service"] == "echo-api")


def _wait_status(root, done, tries: int = 120) -> dict:
    """The status once ``done(status)`` holds (the agents work in the background), or the last one."""
    status = _status(root)
    for _ in range(tries):
        if done(status):
            break
        time.sleep(0.5)
        status = _status(root)
    return status


def test_a_fleet_from_apply_to_destroy(tmp_path, fleet):
    root = tmp_path / "repo"
    path = make_project(root, manifest("edge-e2e"))
    hub = HubClient(ConnectionString.parse(fleet.connection_string, "hub"), what="hub")

    # apply: both plant-3 devices run the module, plant-4 does not
    result = run_cli("apply", "--auto-approve", cwd=root)
    assert result.code == 0, result.out + result.err
    assert "waiting for devices: 2/2" in result.out
    assert {c["device"] for c in fleet.containers()} == {"plant3-a", "plant3-b"}
    assert fleet.hub.key not in result.out + result.err
    first = _ours(hub)
    assert len(first) == 1 and first[0]["labels"]["mlops-service"] == "echo-api"

    # call: a healthy device, named; and one chosen with --device
    result = run_cli("call", "echo-api", "--data", '{"x": 1}', cwd=root)
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"model": "v1", "echo": {"x": 1}}
    assert "device plant3-a" in result.err
    result = run_cli("call", "echo-api", "--device", "plant3-b", "--data", '{"x": 2}', cwd=root)
    assert result.code == 0 and "device plant3-b" in result.err, result.err
    result = run_cli("call", "echo-api", "--device", "plant4-a", cwd=root)
    assert result.code == 1 and "not targeted" in result.err

    # logs through GetModuleLogs
    result = run_cli("logs", "echo-api", "--device", "plant3-b", "--tail", "20", cwd=root)
    assert result.code == 0 and "init()" in result.out, result.out + result.err

    # plan: nothing to do
    assert run_cli("plan", "--detailed-exitcode", cwd=root).code == 0

    # a model change: a new deployment at a higher priority; the old one is deleted; devices move over
    (root / "model.txt").write_text("v2\n")
    result = run_cli("apply", "--auto-approve", cwd=root)
    assert result.code == 0, result.out + result.err
    second = _ours(hub)
    assert len(second) == 1 and second[0]["id"] != first[0]["id"]
    assert second[0]["priority"] > first[0]["priority"]
    assert f"deleting deployment {first[0]['id']}" in result.out
    for device in ("plant3-a", "plant3-b"):
        result = run_cli("call", "echo-api", "--device", device, "--data", "{}", cwd=root)
        assert json.loads(result.out)["model"] == "v2", (device, result.out, result.err)

    # a module that crashes on one device: the apply fails naming it, status is Unhealthy
    (root / "src" / "score.py").write_text(CRASHES_ON_B)
    result = run_cli("apply", "--auto-approve", cwd=root)
    assert result.code == 1
    assert "plant3-b" in result.out + result.err and "camera /dev/video0" in result.out + result.err
    status = _status(root)
    assert status["state"] == "Unhealthy" and "plant3-b" in status["message"], status
    assert (status["health"]["ready"], status["health"]["desired"], status["health"]["failed"]) == (1, 2, 1)
    third = max(_ours(hub), key=lambda c: c["priority"])
    assert third["priority"] > second[0]["priority"]

    # retag plant4-a into plant-3 (a PATCH of its twin): it gets the module, the counts move
    hub.request("PATCH", "/twins/plant4-a", body={"tags": {"site": "plant-3"}})
    status = _wait_status(root, lambda s: s["health"]["ready"] == 2)
    assert (status["health"]["ready"], status["health"]["desired"], status["health"]["failed"]) == (2, 3, 1)
    assert "plant4-a" in {c["device"] for c in fleet.containers()}

    # a condition matching nothing: Unschedulable, and not replaced by the next plan
    path.write_text(manifest("edge-e2e", condition="tags.site='plant-9'"))
    result = run_cli("apply", "--auto-approve", cwd=root)
    assert result.code == 1 and "Unschedulable" in result.out + result.err, result.out + result.err
    status = _status(root)
    assert status["state"] == "Unschedulable", status
    result = run_cli("plan", "--detailed-exitcode", cwd=root)
    assert result.code == 0, result.out
    assert len(_ours(hub)) == 1   # the superseded deployment went with the condition change

    # destroy: none of ours left, the user's unlabelled base deployment untouched
    result = run_cli("destroy", "--auto-approve", cwd=root)
    assert result.code == 0, result.out + result.err
    left = hub.list_configurations()
    assert [c["id"] for c in left] == ["factory-base"]
    assert left[0]["labels"] == {"owner": "plant-it"}
    for _ in range(60):
        if not fleet.containers():
            break
        time.sleep(0.5)
    assert not fleet.containers()
