"""A ring rollout through ``mlops apply`` on the IoT Hub double, whose simulated devices run real modules.

Two plant-3 devices (plant-4 outside the target): a canary of 50% is a ring of one device, 100% both.
The driver (planner.rollout) judges each interval by the sample request sent through ``call``, which
goes round the healthy devices, and by each version's health from the devices' own reports.

One flow: v1 -> a good v2, promoted ring by ring -> a candidate whose module dies on the ring's device:
rolled back naming it, the next apply refuses to retry it -> a v3 started with ``--no-wait``, which a
fresh plan shows at its step and the next apply finishes -> a v4 whose apply is killed (-9) in the
middle, continued by the next apply -> a v5 left at its first step, then a plain ``update`` to it (no
driver): the candidate itself is widened to every device. Short holds throughout.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from iotedge_fixtures import fleet_fixture, manifest
from support import make_project, run_cli

from planner.core.addresses import Address
from planner.core.events import Events
from planner.project import Project
from providers.iotedge import rings
from providers.iotedge.hub import ConnectionString, HubClient

pytestmark = [pytest.mark.slow, pytest.mark.docker]

PROJECT = "edge-rings"
PLANT3 = ["plant3-a", "plant3-b"]
FIRST_RING = rings.ring_members(PLANT3, 50)   # the device of the 50% step
ROLLOUT = """\
    rollout:
      strategy: canary
      steps: [{weight: 50, hold: 3s}, {weight: 100, hold: 2s}]
      analysis: {interval: 1s, min_requests: 4, max_error_rate: 5%, failure_limit: 1}
      progress_deadline: 90s
"""
SCORE = '''\
import json, os

def init():
    global prefix
    if os.environ.get("IOTEDGE_DEVICEID") in %r:
        raise RuntimeError("camera /dev/video0 not found on this device")
    prefix = open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt")).read().strip()

def run(raw_data):
    return {"model": prefix, "echo": json.loads(raw_data)}
'''


fleet = fleet_fixture(PROJECT)


def _ours(hub: HubClient) -> list[dict]:
    return [c for c in hub.list_configurations() if (c.get("labels") or {}).get("managed-by") == "mlops"]


def _tagged(fleet) -> set[str]:
    return {d for d, dev in fleet.hub.devices.items() if (dev["twin"]["tags"].get(rings.RING_TAG) or {})}


def _models(root) -> dict[str, str]:
    out = {}
    for device in PLANT3:
        result = run_cli("call", "echo-api", "--device", device, "--data", "{}", cwd=root)
        out[device] = json.loads(result.out)["model"] if result.code == 0 else f"error: {result.err.strip()}"
    return out


def _killed_at(root, text: str) -> str:
    """Run ``mlops apply`` in its own process and kill it (SIGKILL) once it prints ``text``; its output."""
    proc = subprocess.Popen([sys.executable, "-m", "planner.cli", "apply", "--auto-approve"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    seen: list[str] = []
    try:
        for line in proc.stdout:   # type: ignore[union-attr]
            seen.append(line)
            if text in line:
                break
        proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert any(text in line for line in seen), "".join(seen)
    return "".join(seen)


def test_a_ring_rollout_through_apply(tmp_path, fleet):
    root = tmp_path / "repo"
    make_project(root, manifest(PROJECT, deploy="{auth: key, rollout_timeout_s: 120}", rollout=ROLLOUT),
                 score=SCORE % ([],))
    hub = HubClient(ConnectionString.parse(fleet.connection_string, "hub"), what="hub")
    result = run_cli("validate", cwd=root)
    assert result.code == 0, result.err
    shadow = (root / "ml.yaml").read_text().replace("strategy: canary", "strategy: shadow").replace(
        "      steps: [{weight: 50, hold: 3s}, {weight: 100, hold: 2s}]\n", "      mirror: {percent: 20, hold: 2s}\n")
    (root / "shadow.yaml").write_text(shadow)
    result = run_cli("validate", "-f", str(root / "shadow.yaml"), cwd=root)
    assert result.code == 1 and "target 'plant3' (iotedge) cannot" in result.err, result.err
    assert "iotedge" not in result.err.split("targets that can:")[1].split(")")[0], result.err
    (root / "shadow.yaml").unlink()

    result = run_cli("apply", "--auto-approve", cwd=root)   # v1: a create, no rollout
    assert result.code == 0, result.out + result.err
    assert _models(root) == dict.fromkeys(PLANT3, "v1")

    # a good v2: ring of one device, then both; promoted; the stable deployment and ring tags gone
    (root / "model.txt").write_text("v2\n")
    result = run_cli("apply", "--auto-approve", cwd=root)
    assert result.code == 0, result.out + result.err
    assert f"ring of 50%: 1 of 2 device(s) run the candidate ({FIRST_RING[0]})" in result.out, result.out
    assert "ring of 100%: 2 of 2 device(s)" in result.out and "promoting version" in result.out
    [v2] = _ours(hub)
    assert v2["targetCondition"] == "tags.site='plant-3'" and rings.STATE_LABEL not in v2["labels"]
    assert _tagged(fleet) == set()
    assert _models(root) == dict.fromkeys(PLANT3, "v2")
    assert run_cli("plan", "--detailed-exitcode", cwd=root).code == 0

    # a candidate whose module dies on the ring's device: Unhealthy, rolled back, v2 everywhere again
    (root / "src" / "score.py").write_text(SCORE % (FIRST_RING,))
    result = run_cli("apply", "--auto-approve", cwd=root)
    assert result.code == 5, result.out + result.err
    assert "ROLLED BACK" in result.err and FIRST_RING[0] in result.err and "camera /dev/video0" in result.err
    [kept] = _ours(hub)
    assert kept["id"] == v2["id"] and json.loads(kept["labels"][rings.STATE_LABEL])["phase"] == "aborted"
    assert _tagged(fleet) == set()
    assert _models(root) == dict.fromkeys(PLANT3, "v2")
    again = run_cli("apply", "--auto-approve", cwd=root)
    assert again.code == 5 and "ROLLED BACK earlier" in again.err, again.out + again.err

    # v3 with --no-wait: left at its first step; a fresh plan shows it there; the next apply finishes it
    (root / "src" / "score.py").write_text(SCORE % ([],))
    (root / "model.txt").write_text("v3\n")
    result = run_cli("apply", "--auto-approve", "--no-wait", cwd=root)
    assert result.code == 0, result.out + result.err
    assert _tagged(fleet) == set(FIRST_RING) and len(_ours(hub)) == 2
    assert _models(root) == {d: "v3" if d in FIRST_RING else "v2" for d in PLANT3}
    plan = run_cli("plan", cwd=root)
    assert "step 1/2 (50%)" in plan.out, plan.out
    result = run_cli("apply", "--auto-approve", cwd=root)
    assert result.code == 0, result.out + result.err
    assert "continuing the rollout" in result.out
    assert len(_ours(hub)) == 1 and _tagged(fleet) == set()
    assert _models(root) == dict.fromkeys(PLANT3, "v3")

    # v4, and the apply killed (-9) once its ring is tagged: the next apply continues it, one candidate
    (root / "model.txt").write_text("v4\n")
    seen = _killed_at(root, "ring of 50%")
    assert len(_ours(hub)) == 2 and _tagged(fleet) == set(FIRST_RING), seen
    result = run_cli("apply", "--auto-approve", cwd=root)
    assert result.code == 0, seen + result.out + result.err
    assert "continuing the rollout" in result.out and "starting version" not in result.out
    assert len(_ours(hub)) == 1 and _tagged(fleet) == set()
    assert _models(root) == dict.fromkeys(PLANT3, "v4")

    # v5 left at its first step, then a plain update (no driver) to v5: the very candidate is widened
    (root / "model.txt").write_text("v5\n")
    assert run_cli("apply", "--auto-approve", "--no-wait", cwd=root).code == 0
    candidate = next(c for c in _ours(hub) if c["labels"].get(rings.ROLE_LABEL) == rings.CANDIDATE)
    project = Project.load(root / "ml.yaml")
    address = Address("service", "echo-api")
    live = project.live()[address]
    updated = project.provider_for(live).update(project.desired()[address], live, Events())
    assert [c["id"] for c in _ours(hub)] == [candidate["id"]] and _tagged(fleet) == set()
    assert updated.rollout is None and [v.traffic for v in updated.versions] == [1.0]
    assert _models(root) == dict.fromkeys(PLANT3, "v5")

    result = run_cli("destroy", "--auto-approve", cwd=root)
    assert result.code == 0, result.out + result.err
    assert [c["id"] for c in hub.list_configurations()] == ["factory-base"]
